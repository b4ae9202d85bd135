"""Does subtracting each image's own baseline from its patch map help pooled pixel AUROC?

An experiment for the "uneven" tiles of MTD, which score high almost everywhere: each test
image's patch map is shifted (or scaled) by its own median or 25th percentile before
upsampling, and the pooled pixel AUROC and AUPRO are compared with the raw maps. PatchCore on
EfficientNet-Lite0 features (1 % coreset unless ``--coreset-ratio`` says otherwise), built as
``pixel_confusion.py`` builds it, without its ``offset_`` pass (no ranking metric reads it).

Example::

    python benchmarks/map_baseline.py --layers _blocks.4 _blocks.10 _blocks.14 --aggregation 9
"""

import sys
import time
from pathlib import Path

import numpy as np

from sklearn_memad.detectors import image_scores_from_patches
from sklearn_memad.maps import patch_to_pixel_maps
from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pixel_confusion import patchcore_parser, test_patches  # noqa: E402


def main(argv=None):
    args = patchcore_parser(__doc__.split("\n")[0]).parse_args(argv)
    size = (args.image_size, args.image_size)
    t0 = time.perf_counter()
    test, patches = test_patches(args)
    print(f"built and scored in {time.perf_counter() - t0:.0f} s")

    flat = patches.reshape(len(patches), -1)
    median = np.median(flat, axis=1)[:, None, None]
    variants = {
        "raw": patches,
        "minus the median": patches - median,
        "minus half the median": patches - 0.5 * median,
        "minus the 25th percentile": patches - np.percentile(flat, 25, axis=1)[:, None, None],
        "over the median": patches / median,
    }
    defective = test.labels == -1
    image = image_auroc(test.labels, image_scores_from_patches(patches, 1))
    print(
        f"layers {' + '.join(args.layers)}, {args.aggregation} x {args.aggregation} "
        f"aggregation, sigma {args.sigma}; image AUROC (top 1) {image:.3f}\n"
    )
    print("| map | pixel AUROC | AUPRO |\n|---|---|---|")
    for name, shifted in variants.items():
        maps = patch_to_pixel_maps(shifted, size, sigma=args.sigma)
        print(
            f"| {name} | {pixel_auroc(test.masks, maps):.3f} | "
            f"{aupro(test.masks[defective], maps[defective]):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
