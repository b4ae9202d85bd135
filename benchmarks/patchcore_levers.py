"""What moves PatchCore's accuracy on an MVTec-layout folder: layers, aggregation, image score.

Features are extracted once per layer set (EfficientNet-Lite0, offline weights); then, for
each aggregation size, one PatchCore memory is built and every image-score rule (``top_k``)
and pixel-map smoothing (``sigma``) is read off the same patch scores. Metrics are given on
the whole test split and on two fixed halves of it (each defect kind and the good images split
in two at random, seed 0), so that a setting picked on half A can be checked on half B.

The memory is built without its ``offset_`` calibration: no ranking metric reads it.

Example::

    python benchmarks/patchcore_levers.py --image-size 256 \\
        --layer-sets _blocks.4,_blocks.10 _blocks.4,_blocks.10,_blocks.14 \\
        --aggregation 3 5 7 9 --top-k 1 10 30 --sigma 4 8
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sklearn_memad import FeatureTransformer, LocalAggregation, PatchCoreDetector
from sklearn_memad.datasets import load_mvtec
from sklearn_memad.detectors import image_scores_from_patches
from sklearn_memad.maps import patch_to_pixel_maps
from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from decisions import halves  # noqa: E402  (the same split as the decisions benchmark)

DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"


class _RankingOnlyPatchCore(PatchCoreDetector):
    """PatchCore without the leave-one-image-out pass that only sets ``offset_``."""

    def _out_of_sample_patch_scores(self, grids):
        self.__dict__.pop("_selection", None)
        return np.zeros(grids.shape[:3])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--layer-sets", nargs="+", default=["_blocks.4,_blocks.10"])
    p.add_argument("--aggregation", type=int, nargs="+", default=[3])
    p.add_argument("--top-k", type=int, nargs="+", default=[1])
    p.add_argument("--sigma", type=float, nargs="+", default=[4.0])
    p.add_argument("--coreset-ratio", type=float, default=0.01)
    p.add_argument("--name", default="patchcore_levers")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    size = (args.image_size, args.image_size)
    train = load_mvtec(args.data, "train", image_size=size)
    test = load_mvtec(args.data, "test", image_size=size)
    kinds = test.kinds
    first = halves(test.labels, kinds, np.random.RandomState(0))
    defective = test.labels == -1
    # Each defect kind with the good images: the per-kind AUROCs.
    by_kind = {k: (kinds == k) | (kinds == "good") for k in sorted(set(kinds) - {"good"})}
    rows = []
    for layer_set in args.layer_sets:
        layers = tuple(layer_set.split(","))
        features = FeatureTransformer(
            "efficientnet_lite0", layers=layers, image_size=None, random_state=0
        )
        train_grids = features.fit_transform(train.images)
        test_grids = features.transform(test.images)
        for aggregation_size in args.aggregation:
            aggregation = LocalAggregation(aggregation_size)
            start = time.perf_counter()
            detector = _RankingOnlyPatchCore(
                coreset_ratio=args.coreset_ratio, random_state=0, border=0
            )
            detector.fit(aggregation.fit_transform(train_grids))
            fit_s = time.perf_counter() - start
            patches = detector.score_patches(aggregation.transform(test_grids))
            row = {"layers": layer_set, "aggregation": aggregation_size, "fit_seconds": fit_s}
            for top_k in args.top_k:
                anomaly = image_scores_from_patches(patches, top_k)
                row[f"image_top{top_k}"] = _by_subset(
                    image_auroc, test.labels, anomaly, first, by_kind
                )
            for sigma in args.sigma:
                maps = patch_to_pixel_maps(patches, size, sigma=sigma)
                row[f"pixel_sigma{sigma:g}"] = {
                    **_by_subset(pixel_auroc, test.masks, maps, first, by_kind),
                    "aupro": aupro(test.masks[defective], maps[defective]),
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = markdown(rows, args)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(rows, indent=1))
    (out / f"{args.name}.md").write_text(table)
    print(table)


def _by_subset(metric, truth, scores, first, by_kind):
    """``metric`` on the whole split, on halves A and B, and on each kind with the good images."""
    return {
        "all": metric(truth, scores),
        "a": metric(truth[first], scores[first]),
        "b": metric(truth[~first], scores[~first]),
        **{kind: metric(truth[rows], scores[rows]) for kind, rows in by_kind.items()},
    }


def _halves_cell(m):
    return f"{m['all']:.3f} ({m['a']:.3f} / {m['b']:.3f})"


def _kinds_cell(m, kinds):
    return " / ".join(f"{m[k]:.3f}" for k in kinds)


def markdown(rows, args):
    kinds = sorted(k for k in rows[0][f"image_top{args.top_k[0]}"] if k not in ("all", "a", "b"))
    head = (
        f"{args.image_size} x {args.image_size} px, EfficientNet-Lite0, coreset "
        f"{args.coreset_ratio:g}, 1 nearest neighbour; A / B: the two halves of the test split; "
        f"per kind: {', '.join(kinds)} (each with the good images)."
    )
    lines = [
        head,
        "",
        "Image AUROC, by the image score (mean of the top_k patch scores):",
        "",
        "| layers | aggregation | top_k | all (A / B) | per kind |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        for top_k in args.top_k:
            m = r[f"image_top{top_k}"]
            lines.append(
                f"| {r['layers']} | {r['aggregation']} | {top_k} | {_halves_cell(m)} | "
                f"{_kinds_cell(m, kinds)} |"
            )
    lines += [
        "",
        "Pixel AUROC and AUPRO, by the smoothing of the maps:",
        "",
        "| layers | aggregation | sigma | pixel AUROC all (A / B) | AUPRO | per kind |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for sigma in args.sigma:
            m = r[f"pixel_sigma{sigma:g}"]
            lines.append(
                f"| {r['layers']} | {r['aggregation']} | {sigma:g} | {_halves_cell(m)} | "
                f"{m['aupro']:.3f} | {_kinds_cell(m, kinds)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
