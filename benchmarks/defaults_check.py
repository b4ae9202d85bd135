"""The defaults a user gets, against the previous ones, per data set; and the grid's border.

Issue 22, items 1 and 4. On the sets and cached features of ``defaults_sweep.py`` (MTD, ELPV
mono and poly; EfficientNet-Lite0 at 256 px; 200 training images each), every detector is
fitted twice, with the previous defaults and with the current ones (layers, aggregation,
channels, projection, ``top_k``), its patch scores kept whole. The detector's ``border``
(outer rings of patches left out of the image score; in the maps they repeat their inner
neighbour) is then applied to those patch scores for every ``--borders`` value, as the
detectors do. As in the sweep, the border is chosen on half A of each set's test images (the
best mean image AUROC over the sets) and half B confirms it.

The current tables (features cached by ``defaults_sweep.py`` in ``results/tmp/sweep_*``;
about 15 minutes on 2 shared cores)::

    python benchmarks/defaults_check.py
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_curve

from sklearn_memad import defaults
from sklearn_memad.datasets import GOOD, MASK_FOLDER, mask_name, read_mask
from sklearn_memad.detectors import fill_border, image_scores_from_patches
from sklearn_memad.maps import patch_to_pixel_maps
from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from defaults_sweep import (  # noqa: E402
    LAYER_SETS,
    SETS,
    SIGMA,
    _dfkde,
    _halved,
    _padim,
    _patchcore,
    cached_features,
    layer_channels,
    load_set,
    padim_channels,
)
from merge_quality import load_average, run_header, run_meta, save_results  # noqa: E402

SIZE = 256
#: False-positive rates at which the recall of the test images is reported.
FPRS = (0.1, 0.2)
#: The defaults before issue 22, and now (``sklearn_memad/defaults.py``).
DEFAULTS = {
    "previous": {
        "layers": "b4+b10",
        "top_k": 1,
        "patchcore": 3,
        "padim": 100,
        "dfkde": 16,
    },
    "current": {
        "layers": "b4+b10+b14",
        "top_k": defaults.TOP_K,
        "patchcore": defaults.AGGREGATION_SIZE,
        "padim": defaults.N_COMPONENTS["padim"],
        "dfkde": defaults.N_COMPONENTS["dfkde"],
    },
}
DESCRIBED = {
    ("previous", "patchcore"): "`_blocks.4`+`_blocks.10`, 3 x 3 aggregation, largest patch",
    ("previous", "padim"): "`_blocks.4`+`_blocks.10`, 100 channels, largest patch",
    ("previous", "dfkde"): "`_blocks.4`+`_blocks.10`, 16-d projection, largest patch",
    ("current", "patchcore"): "+ `_blocks.14`, 5 x 5 aggregation, mean of the 30 largest",
    ("current", "padim"): "+ `_blocks.14`, 200 channels, mean of the 30 largest",
    ("current", "dfkde"): "+ `_blocks.14`, 32-d projection, mean of the 30 largest",
}
DETECTORS = ("patchcore", "padim", "dfkde")
NAMES = {"patchcore": "PatchCore", "padim": "PaDiM", "dfkde": "DFKDE"}
SET_NAMES = {"mtd": "MTD", "elpv_mono": "ELPV mono", "elpv_poly": "ELPV poly"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mtd", default=str(HERE.parents[1] / "shared" / "data" / "mtd"))
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--borders", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--name", default="defaults_check")
    return p.parse_args(argv)


def patch_scores(detector, which, train, test):
    """Patch scores (every patch kept) of ``detector`` with the ``which`` defaults."""
    setting = DEFAULTS[which]
    n = layer_channels(SIZE)[setting["layers"]]
    train, test = train[..., :n], test[..., :n]
    if detector == "patchcore":
        patches, _, _ = _patchcore(train, test, setting["patchcore"], "auto")
    elif detector == "padim":
        layers = LAYER_SETS[setting["layers"]]
        patches, _, _ = _padim(train, test, padim_channels(layers, SIZE, setting["padim"]))
    else:
        patches, _, _ = _dfkde(train, test, setting["dfkde"], "scott")
    return patches


def native_masks(root, data):
    """Each test tile's mask at the tile's own size (all False for good tiles)."""
    masks = []
    for path, kind, size in zip(data["paths"], data["kinds"], data["original_sizes"]):
        size = tuple(int(v) for v in size)
        if kind == GOOD:
            masks.append(np.zeros(size, dtype=bool))
        else:
            mask_path = Path(root) / MASK_FOLDER / kind / mask_name(Path(path).name)
            masks.append(read_mask(mask_path, path, size))
    return masks


def at_native_size(maps, masks):
    """Each map resized (bilinear) to the size of its mask, as float32 arrays."""
    return [
        F.interpolate(torch.from_numpy(m[None, None]), size=mask.shape, mode="bilinear")[0, 0]
        .numpy()
        .astype(np.float32)
        for m, mask in zip(maps.astype(np.float32), masks)
    ]


def mvtec_pixel_metrics(maps, masks):
    """Pixel AUROC and AUPRO as MVTec AD reads them: each map at its image's own size."""
    native = at_native_size(maps, masks)
    return pixel_auroc(masks, native), aupro(masks, native)


def evaluate(patches, data, top_k, border):
    """Image AUROC on all / half A / half B; pixel AUROC and AUPRO where there are masks."""
    first, labels = data["first"], data["labels"]
    scores = image_scores_from_patches(patches, top_k, border)
    row = {"image_auroc": _halved(image_auroc, labels, scores, first)}
    fpr, tpr, _ = roc_curve(labels == -1, scores)
    row["recall_at_fpr"] = {str(rate): float(tpr[fpr <= rate].max()) for rate in FPRS}
    if data["masks"] is not None:
        maps = patch_to_pixel_maps(fill_border(patches, border), (SIZE, SIZE), sigma=SIGMA)
        bad = labels == -1
        row["pixel_auroc"] = pixel_auroc(data["masks"], maps)
        row["aupro"] = aupro(data["masks"][bad], maps[bad])
        row["aupro_all_tiles"] = aupro(data["masks"], maps)
        row["pixel_auroc_native"], row["aupro_native"] = mvtec_pixel_metrics(
            maps, data["native_masks"]
        )
    return row


def measure(args):
    rows = []
    for name in args.sets:
        data = load_set(name, SIZE, args)
        if data["masks"] is not None:
            data["native_masks"] = native_masks(args.mtd, data)
        (train, test), _ = cached_features(name, SIZE, data)
        for detector in DETECTORS:
            for which in DEFAULTS:
                start = time.perf_counter()
                patches = patch_scores(detector, which, train, test)
                seconds = time.perf_counter() - start
                borders = [0] if which == "previous" else args.borders
                for border in borders:
                    row = evaluate(patches, data, DEFAULTS[which]["top_k"], border)
                    row.update(set=name, detector=detector, defaults=which, border=border)
                    row["fit_and_score_s"] = seconds
                    rows.append(row)
                    print(
                        f"{name} {detector} {which} border {border}: "
                        f"{row['image_auroc']['all']:.3f}",
                        flush=True,
                    )
    return rows


def _find(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return found[0] if found else None


def chosen_borders(rows, args):
    """Per detector: the border with the best mean image AUROC over the sets on half A."""
    choice = {}
    for detector in DETECTORS:
        mean_a = {
            b: np.mean(
                [
                    _find(rows, set=s, detector=detector, defaults="current", border=b)[
                        "image_auroc"
                    ]["a"]
                    for s in args.sets
                ]
            )
            for b in args.borders
        }
        choice[detector] = {"border": max(mean_a, key=mean_a.get), "mean_a": mean_a}
    return choice


def gaps(rows, args, border):
    """Per set: best minus worst detector's image AUROC with the current defaults."""
    out = {}
    for s in args.sets:
        by = {
            d: _find(rows, set=s, detector=d, defaults="current", border=border)["image_auroc"][
                "all"
            ]
            for d in DETECTORS
        }
        out[s] = {"gap": max(by.values()) - min(by.values()), "by_detector": by}
    return out


def markdown(result, args):
    meta = result["meta"]
    lines = [
        *run_header(
            meta,
            f"EfficientNet-Lite0 (ImageNet weights) at "
            f"{SIZE} px, {args.n_train} training images per set, features cached by "
            "`defaults_sweep.py`; maps smoothed with sigma 4. Image AUROC on all test images "
            "(half A / half B); MTD's pixel AUROC and AUPRO on all test tiles.",
        ),
        "",
        "| detector | defaults | border | "
        + " | ".join(SET_NAMES[s] for s in args.sets)
        + " | MTD pixel AUROC | MTD AUPRO (defective tiles) |",
        "|---|---|---|" + "---|" * len(args.sets) + "---|---|",
    ]
    rows = result["rows"]
    for detector in DETECTORS:
        for which in DEFAULTS:
            borders = [0] if which == "previous" else args.borders
            for border in borders:
                cells = []
                for s in args.sets:
                    auc = _find(rows, set=s, detector=detector, defaults=which, border=border)
                    a = auc["image_auroc"]
                    cells.append(f"{a['all']:.3f} ({a['a']:.3f} / {a['b']:.3f})")
                mtd = _find(rows, set="mtd", detector=detector, defaults=which, border=border)
                pixel = f"{mtd['pixel_auroc']:.3f} | {mtd['aupro']:.3f}" if mtd else "- | -"
                lines.append(
                    f"| {NAMES[detector]} | {which}: {DESCRIBED[(which, detector)]} | "
                    f"{border} | " + " | ".join(cells) + f" | {pixel} |"
                )
    if "mtd" in args.sets:
        lines += [
            "",
            "MTD's maps three ways: at 256 px (AUPRO on the defective tiles, as above, and on "
            "all test tiles), and as the MVTec AD evaluation reads them (all test tiles, each "
            "map resized to its tile's own size):",
            "",
            "| detector | defaults | border | pixel AUROC 256 px | AUPRO 256 px, defective "
            "tiles | AUPRO 256 px, all tiles | pixel AUROC, MVTec AD | AUPRO, MVTec AD |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for detector in DETECTORS:
            for which in DEFAULTS:
                for border in [0] if which == "previous" else args.borders:
                    r = _find(rows, set="mtd", detector=detector, defaults=which, border=border)
                    values = (
                        r["pixel_auroc"],
                        r["aupro"],
                        r["aupro_all_tiles"],
                        r["pixel_auroc_native"],
                        r["aupro_native"],
                    )
                    lines.append(
                        f"| {NAMES[detector]} | {which} | {border} | "
                        + " | ".join(f"{v:.3f}" for v in values)
                        + " |"
                    )
    lines += [
        "",
        "Recall of the defective test images at a false-positive rate of "
        + " and ".join(str(r) for r in FPRS)
        + " (current defaults, all test images):",
        "",
        "| detector | border | " + " | ".join(SET_NAMES[s] for s in args.sets) + " |",
        "|---|---|" + "---|" * len(args.sets),
    ]
    for detector in DETECTORS:
        for border in args.borders:
            cells = []
            for s in args.sets:
                row = _find(rows, set=s, detector=detector, defaults="current", border=border)
                cells.append(" / ".join(f"{v:.2f}" for v in row["recall_at_fpr"].values()))
            lines.append(f"| {NAMES[detector]} | {border} | " + " | ".join(cells) + " |")
    lines += ["", "Border chosen on half A (mean image AUROC over the sets):", ""]
    for detector, c in result["choice"].items():
        means = ", ".join(f"{b}: {v:.4f}" for b, v in c["mean_a"].items())
        lines.append(f"- {NAMES[detector]}: border {c['border']} ({means})")
    lines += ["", "Gap between the best and the worst detector (current defaults):", ""]
    for border, by_set in result["gaps"].items():
        text = ", ".join(f"{SET_NAMES[s]} {g['gap']:.3f}" for s, g in by_set.items())
        lines.append(f"- border {border}: {text}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    rows = measure(args)
    result = {
        "meta": run_meta("defaults_check", argv, load_start),
        "rows": rows,
        "choice": chosen_borders(rows, args),
        "gaps": {str(b): gaps(rows, args, b) for b in args.borders},
    }
    save_results(args.name, result, markdown(result, args))


if __name__ == "__main__":
    main()
