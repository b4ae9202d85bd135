"""Does subtracting each image's own baseline from its patch map help pooled pixel AUROC?

An experiment for the "uneven" tiles of MTD, which score high almost everywhere: each test
image's patch map is shifted (or scaled) by its own median or 25th percentile before
upsampling, and the pooled pixel AUROC and AUPRO are compared with the raw maps. PatchCore on
EfficientNet-Lite0 features, 1 % coreset, built without its ``offset_`` pass (no ranking
metric reads it).

Example::

    python benchmarks/map_baseline.py --layers _blocks.4 _blocks.10 _blocks.14 --aggregation 9
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from sklearn_memad import FeatureTransformer, LocalAggregation
from sklearn_memad.datasets import load_mvtec
from sklearn_memad.detectors._base import image_scores_from_patches
from sklearn_memad.maps import patch_to_pixel_maps
from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from patchcore_levers import _RankingOnlyPatchCore  # noqa: E402

DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--layers", nargs="+", default=["_blocks.4", "_blocks.10"])
    p.add_argument("--aggregation", type=int, default=3)
    p.add_argument("--sigma", type=float, default=4.0)
    args = p.parse_args(argv)

    size = (args.image_size, args.image_size)
    train = load_mvtec(args.data, "train", image_size=size)
    test = load_mvtec(args.data, "test", image_size=size)
    features = FeatureTransformer(
        backbone="efficientnet_lite0", layers=tuple(args.layers), image_size=None, random_state=0
    )
    aggregation = LocalAggregation(args.aggregation)
    t0 = time.perf_counter()
    detector = _RankingOnlyPatchCore(random_state=0).fit(
        aggregation.fit_transform(features.fit_transform(train.images))
    )
    patches = detector.score_patches(aggregation.transform(features.transform(test.images)))
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
    print(f"layers {' + '.join(args.layers)}, {args.aggregation} x {args.aggregation} "
          f"aggregation, sigma {args.sigma}; image AUROC (top 1) {image:.3f}\n")
    print("| map | pixel AUROC | AUPRO |\n|---|---|---|")
    for name, shifted in variants.items():
        maps = patch_to_pixel_maps(shifted, size, sigma=args.sigma)
        print(f"| {name} | {pixel_auroc(test.masks, maps):.3f} | "
              f"{aupro(test.masks[defective], maps[defective]):.3f} |", flush=True)


if __name__ == "__main__":
    main()
