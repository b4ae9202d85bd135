"""Which normal pixels outrank which defect pixels: PatchCore's pixel AUROC by pairs of kinds.

Pooled pixel AUROC ranks every defect pixel against every normal pixel of the whole test split.
This table splits that ranking: cell (row kind, column kind) is the AUROC of the row kind's
defect pixels against the normal (unmasked) pixels of the column kind's tiles, so it shows
whose normal pixels a kind's defects are confused with. Each cell uses up to 400,000 pixels of
each side, drawn at random (seed 0).

Example::

    python benchmarks/pixel_confusion.py --layers _blocks.4 _blocks.10 _blocks.14 \\
        --aggregation 9 --sigma 4
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from sklearn_memad import FeatureTransformer, LocalAggregation
from sklearn_memad.datasets import load_mvtec
from sklearn_memad.maps import patch_to_pixel_maps
from sklearn_memad.metrics import pixel_auroc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from patchcore_levers import _RankingOnlyPatchCore  # noqa: E402

DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"
MAX_PIXELS = 400_000


def patchcore_parser(description):
    """Options of a PatchCore run on MTD's splits (shared with ``map_baseline.py``)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--layers", nargs="+", default=["_blocks.4", "_blocks.10"])
    p.add_argument("--aggregation", type=int, default=3)
    p.add_argument("--sigma", type=float, default=4.0)
    p.add_argument("--coreset-ratio", type=float, default=0.01)
    return p


def parse_args(argv=None):
    p = patchcore_parser(__doc__.split("\n")[0])
    p.add_argument("--name", default="pixel_confusion")
    return p.parse_args(argv)


def test_patches(args):
    """PatchCore (without its ``offset_`` pass) fitted on the training split: the test split
    and its patch scores."""
    size = (args.image_size, args.image_size)
    train = load_mvtec(args.data, "train", image_size=size)
    test = load_mvtec(args.data, "test", image_size=size)
    features = FeatureTransformer(
        "efficientnet_lite0", layers=tuple(args.layers), image_size=None, random_state=0
    )
    aggregation = LocalAggregation(args.aggregation)
    detector = _RankingOnlyPatchCore(coreset_ratio=args.coreset_ratio, random_state=0, border=0)
    detector.fit(aggregation.fit_transform(features.fit_transform(train.images)))
    return test, detector.score_patches(aggregation.transform(features.transform(test.images)))


def _sample(values, rng):
    return values if len(values) <= MAX_PIXELS else rng.choice(values, MAX_PIXELS, replace=False)


def main(argv=None):
    args = parse_args(argv)
    size = (args.image_size, args.image_size)
    test, patches = test_patches(args)
    maps = patch_to_pixel_maps(patches, size, sigma=args.sigma)

    kinds, masks = test.kinds, test.masks
    rng = np.random.default_rng(0)
    columns = sorted(set(kinds))
    rows = [k for k in columns if k != "good"]
    defect = {k: _sample(maps[kinds == k][masks[kinds == k]], rng) for k in rows}
    normal = {k: _sample(maps[kinds == k][~masks[kinds == k]], rng) for k in columns}
    lines = [
        f"PatchCore on MTD at {args.image_size} px, EfficientNet-Lite0 {' + '.join(args.layers)}, "
        f"{args.aggregation} x {args.aggregation} aggregation, coreset {args.coreset_ratio:g}, "
        f"sigma {args.sigma:g}. Pooled pixel AUROC of the whole split: "
        f"{pixel_auroc(masks, maps):.3f}. Cell: AUROC of the row kind's defect pixels against "
        "the normal pixels of the column kind's tiles.",
        "",
        "| defect pixels of \\ normal pixels of | " + " | ".join(columns) + " | defect pixels |",
        "|" + "---|" * (len(columns) + 2),
    ]
    for k in rows:
        cells = []
        for c in columns:
            truth = np.r_[np.ones(len(defect[k]), bool), np.zeros(len(normal[c]), bool)]
            cells.append(f"{pixel_auroc(truth[None], np.r_[defect[k], normal[c]][None]):.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {int(masks[kinds == k].sum()):,} |")
    table = "\n".join(lines) + "\n"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
