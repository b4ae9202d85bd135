"""How accuracy grows with the number of good training images, at the shipped defaults.

Issue 22, item 3 sets its goals at 200 of MTD's 762 training tiles. This measures the three
detectors, each in its standard pipeline (:func:`~sklearn_memad.pipelines.make_detector_pipeline`,
EfficientNet-Lite0 at 256 px), on ``n`` training tiles drawn at random (``RandomState(seed)``,
the draw of ``defaults_sweep.py`` for seed 0), for every ``--sizes`` value and ``--seeds``
seed (PatchCore's coreset takes the same seed; with all tiles only the coreset changes, so
PaDiM and DFKDE run once). The feature grids are those of ``merge_quality.py`` (cached in
``results/tmp/``).

Metrics on all 582 test tiles: image AUROC, the recall of the defective tiles at a
false-positive rate of 0.2, and with ``--pixel mvtec`` pixel AUROC and AUPRO as the MVTec AD
evaluation reads them (every test tile, each map resized to its tile's own size). PatchCore's
and DFKDE's offset (calibration) is not computed: no metric here reads it.

The current table (about 30 minutes on 2 shared cores)::

    python benchmarks/learning_curve.py
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_curve

from sklearn_memad.defaults import SIGMA
from sklearn_memad.detectors import fill_border, image_scores_from_patches
from sklearn_memad.maps import patch_to_pixel_maps
from sklearn_memad.metrics import image_auroc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from defaults_check import mvtec_pixel_metrics, native_masks  # noqa: E402
from defaults_sweep import _RankingOnlyDFKDE, _RankingOnlyPatchCore  # noqa: E402
from merge_quality import (  # noqa: E402
    DEFAULT_DATA,
    METHODS,
    NAMES,
    cached_grids,
    load_average,
    run_header,
    run_meta,
    save_results,
    standard_detector,
)

SIZE = 256
FPR = 0.2
CHUNK = 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--detectors", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 400, 762])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pixel", choices=["mvtec", "none"], default="mvtec")
    p.add_argument("--name", default="learning_curve")
    return p.parse_args(argv)


#: Detectors without the held-out pass that only sets ``offset_`` (PaDiM's costs little).
RANKING_ONLY = {"patchcore": _RankingOnlyPatchCore, "dfkde": _RankingOnlyDFKDE}


def ranking_detector(method, seed):
    """The standard pipeline's detector of ``method``, seeded, without its calibration pass."""
    detector = standard_detector(method)
    if "random_state" in detector.get_params():
        detector.set_params(random_state=seed)
    if method in RANKING_ONLY:
        return RANKING_ONLY[method](**detector.get_params())
    return detector


def test_truth(data):
    """Labels, and the masks at each tile's own size, of the test split."""
    from sklearn_memad.datasets import load_mvtec

    test = load_mvtec(data, "test", image_size=(8, 8))  # the paths and sizes only
    truth = {
        "labels": test.labels,
        "paths": test.paths,
        "kinds": test.kinds,
        "original_sizes": test.original_sizes,
    }
    truth["native_masks"] = native_masks(data, truth)
    return truth


def evaluate(detector, test, truth, pixel):
    patches = np.concatenate(
        [
            detector.score_patches(np.ascontiguousarray(test[i : i + CHUNK]))
            for i in range(0, len(test), CHUNK)
        ]
    )
    labels = truth["labels"]
    scores = image_scores_from_patches(patches, detector.top_k, detector.border)
    fpr, tpr, _ = roc_curve(labels == -1, scores)
    row = {
        "image_auroc": image_auroc(labels, scores),
        "recall_at_fpr": float(tpr[fpr <= FPR].max()),
    }
    if pixel == "mvtec":
        maps = patch_to_pixel_maps(fill_border(patches, detector.border), (SIZE, SIZE), SIGMA)
        row["pixel_auroc"], row["aupro"] = mvtec_pixel_metrics(maps, truth["native_masks"])
    return row


def measure(args):
    truth = test_truth(args.data)
    rows = []
    for method in args.detectors:
        grids = cached_grids(args.data, method, SIZE)
        assert np.array_equal(grids["labels"], truth["labels"]), "test order differs"
        n_all = len(grids["train"])
        for n in args.sizes:
            n = min(n, n_all)
            seeds = args.seeds if n < n_all or method == "patchcore" else args.seeds[:1]
            for seed in seeds:
                pick = np.sort(np.random.RandomState(seed).choice(n_all, n, replace=False))
                train = np.asarray(grids["train"][pick])
                start = time.perf_counter()
                detector = ranking_detector(method, seed).fit(train)
                fit_s = time.perf_counter() - start
                del train
                row = evaluate(detector, grids["test"], truth, args.pixel)
                row.update(detector=method, n_train=int(n), seed=seed, fit_s=fit_s)
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def _cell(values, fmt=".3f"):
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{np.mean(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def markdown(result, args):
    meta = result["meta"]
    metrics = [("image_auroc", "image AUROC"), ("recall_at_fpr", f"recall at FPR {FPR}")]
    if args.pixel == "mvtec":
        metrics += [("pixel_auroc", "pixel AUROC (MVTec AD)"), ("aupro", "AUPRO (MVTec AD)")]
    lines = [
        *run_header(
            meta,
            f"MTD, standard pipelines (EfficientNet-Lite0, "
            f"{SIZE} px), n training tiles drawn at random per seed; all 582 test tiles. Mean "
            "(min-max) over the seeds.",
        ),
        "",
        "| detector | training tiles | seeds | " + " | ".join(m[1] for m in metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    rows = result["rows"]
    for method in args.detectors:
        for n in sorted({r["n_train"] for r in rows if r["detector"] == method}):
            found = [r for r in rows if r["detector"] == method and r["n_train"] == n]
            cells = [_cell([r[key] for r in found]) for key, _ in metrics]
            lines.append(f"| {NAMES[method]} | {n} | {len(found)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    rows = measure(args)
    result = {"meta": run_meta("learning_curve", argv, load_start), "rows": rows}
    save_results(args.name, result, markdown(result, args))


if __name__ == "__main__":
    main()
