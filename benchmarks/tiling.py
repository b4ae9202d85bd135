"""Squashed or tiled: does passing large images through the backbone in tiles find small
defects that squashing them to 256 px hides?

Two cases, both from MTD's real tiles (Lite0, the standard pipelines):

- ``mtd``: MTD itself (tiles of 100-630 px, most about 300 px), 200 training tiles, all
  test tiles: squashed to 256 x 256 against resized to 512 x 512 and passed in 256-px tiles
  overlapping by 32 px.
- ``mosaic``: high-resolution images made of real tiles: 3 x 3 MTD tiles of 320 x 320 px
  side by side (960 x 960 px). Normal mosaics hold good tiles only; a defective mosaic holds
  one defective tile (with its mask) among eight good ones, so its defect covers a small
  part of the image (a blowhole: about 0.01 %). Training: ``--n-train`` normal mosaics of
  training tiles; test: normal mosaics of held-out good tiles and one defective mosaic per
  defective test tile (``--per-kind`` per kind). Squashed to 256 x 256 against 960 x 960
  in 256-px tiles overlapping by 32 px.

For each: pixel AUROC, AUPRO (to 30 % FPR), image AUROC per defect kind (good against that
kind) and overall, and the time per image (features and detector, scoring).

::

    python benchmarks/tiling.py --cases mtd mosaic
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sklearn_memad.datasets import load_mvtec
from sklearn_memad.maps import predict_anomaly_maps
from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc
from sklearn_memad.pipelines import make_detector_pipeline

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_quality import DEFAULT_DATA, load_average, run_meta  # noqa: E402

TILE, OVERLAP = 256, 32


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--cases", nargs="+", default=["mtd", "mosaic"], choices=["mtd", "mosaic"])
    p.add_argument("--methods", nargs="+", default=["patchcore", "padim", "dfkde"])
    p.add_argument("--n-train", type=int, default=200, help="training tiles (mtd)")
    p.add_argument("--n-mosaics", type=int, default=40, help="training mosaics (mosaic)")
    p.add_argument("--per-kind", type=int, default=12, help="defective mosaics per kind")
    p.add_argument("--name", default="tiling")
    return p.parse_args(argv)


def mtd_case(args):
    rng = np.random.default_rng(0)
    train = load_mvtec(args.data, "train", image_size=512)
    test = load_mvtec(args.data, "test", image_size=512)
    pick = np.sort(rng.choice(len(train.images), args.n_train, replace=False))
    kinds = np.asarray(test.kinds)
    return train.images[pick], test.images, test.labels, kinds, test.masks, 512


def _mosaic(tiles, masks=None):
    rows = [np.concatenate(list(tiles[i : i + 3]), axis=1) for i in (0, 3, 6)]
    image = np.concatenate(rows, axis=0)
    if masks is None:
        return image, None
    mask_rows = [np.concatenate(list(masks[i : i + 3]), axis=1) for i in (0, 3, 6)]
    return image, np.concatenate(mask_rows, axis=0)


def mosaic_case(args):
    rng = np.random.default_rng(0)
    train = load_mvtec(args.data, "train", image_size=320).images
    test = load_mvtec(args.data, "test", image_size=320)
    test_kinds = np.asarray(test.kinds)
    good = test.images[test.labels == 1]
    images, masks, labels, kinds = [], [], [], []
    train_mosaics = [_mosaic(train[rng.choice(len(train), 9, replace=False)])[0]]
    train_mosaics += [
        _mosaic(train[rng.choice(len(train), 9, replace=False)])[0]
        for _ in range(args.n_mosaics - 1)
    ]
    blank = np.zeros((9, 320, 320), dtype=bool)
    for _ in range(args.per_kind * 2):  # normal test mosaics of held-out good tiles
        image, mask = _mosaic(good[rng.choice(len(good), 9, replace=False)], blank)
        images.append(image), masks.append(mask), labels.append(1), kinds.append("good")
    for kind in sorted(set(test_kinds) - {"good"}):
        mine = np.flatnonzero(test_kinds == kind)
        for index in rng.choice(mine, min(args.per_kind, mine.size), replace=False):
            tiles = good[rng.choice(len(good), 9, replace=False)].copy()
            tile_masks = blank.copy()
            where = rng.integers(9)
            tiles[where], tile_masks[where] = test.images[index], test.masks[index]
            image, mask = _mosaic(tiles, tile_masks)
            images.append(image), masks.append(mask), labels.append(-1), kinds.append(kind)
    return (
        np.stack(train_mosaics),
        np.stack(images),
        np.array(labels),
        np.array(kinds),
        np.stack(masks),
        960,
    )


def evaluate(method, mode, train, test, labels, kinds, masks, size):
    tiled = mode == "tiled"
    pipe = make_detector_pipeline(
        method,
        image_size=size if tiled else 256,
        tile_size=TILE if tiled else None,
        tile_overlap=OVERLAP if tiled else 0,
        random_state=0,
    )
    start = time.perf_counter()
    pipe.fit(train)
    fitted = time.perf_counter()
    result = predict_anomaly_maps(pipe, test)
    scored = time.perf_counter()
    maps, scores = result.maps, result.scores
    row = {
        "method": method,
        "mode": mode,
        "input": f"{size} px in {TILE}-px tiles, overlap {OVERLAP}" if tiled else "256 px",
        "grid": list(pipe[-1].grid_shape_),
        "fit_s": fitted - start,
        "ms_per_image": 1e3 * (scored - fitted) / len(test),
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps),
        "aupro": aupro(masks, maps),
        "per_kind": {},
    }
    for kind in sorted(set(kinds) - {"good"}):
        keep = (kinds == "good") | (kinds == kind)
        row["per_kind"][kind] = image_auroc(labels[keep], scores[keep])
    return row


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    report = {"cases": {}}
    for case in args.cases:
        data = mtd_case(args) if case == "mtd" else mosaic_case(args)
        train, test, labels, kinds, masks, size = data
        rows = [
            evaluate(method, mode, train, test, labels, kinds, masks, size)
            for method in args.methods
            for mode in ("squashed", "tiled")
        ]
        report["cases"][case] = {
            "n_train": len(train),
            "n_test": len(test),
            "n_defective": int((labels == -1).sum()),
            "size": size,
            "rows": rows,
        }
        print(json.dumps(report["cases"][case], indent=1)[:2000], flush=True)
    report["meta"] = run_meta("tiling", argv, load_start)
    (HERE / "results" / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown(report, args.name)


def markdown(report, name):
    meta = report["meta"]
    lines = [
        "# Squashed or tiled",
        "",
        f"`{meta['command']}`, {meta['date']}, {meta['machine']}",
        "",
    ]
    for case, result in report["cases"].items():
        kinds = sorted(result["rows"][0]["per_kind"])
        lines += [
            f"## {case}: {result['n_train']} training images, {result['n_test']} test images "
            f"({result['n_defective']} defective), {result['size']} px",
            "",
            "| detector | input | grid | image AUROC | pixel AUROC | AUPRO | "
            + " | ".join(kinds)
            + " | ms / image |",
            "|---" * (7 + len(kinds)) + "|",
        ]
        for row in result["rows"]:
            lines.append(
                f"| {row['method']} | {row['input']} | {row['grid'][0]} x {row['grid'][1]} | "
                f"{row['image_auroc']:.3f} | {row['pixel_auroc']:.3f} | {row['aupro']:.3f} | "
                + " | ".join(f"{row['per_kind'][k]:.3f}" for k in kinds)
                + f" | {row['ms_per_image']:.0f} |"
            )
        lines.append("")
    text = "\n".join(lines)
    (HERE / "results" / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
