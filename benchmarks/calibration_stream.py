"""Does a streamed or merged detector's threshold still flag the share of normal images it should?

With ``contamination=c``, a detector's ``offset_`` is the ``c`` quantile of out-of-sample
scores of its training images, so about a fraction ``c`` of new normal images should be
flagged (``predict == -1``). After ``partial_fit`` or merging those scores are of a reservoir
of training images, each left out of the final memory (``_keep_for_calibration`` in
``sklearn_memad/detectors/_base.py``).
This script fits each standard detector on all the training grids of an MVTec-layout folder,
three ways (one ``fit``; ``merge_detectors`` of K consecutive shards; ``partial_fit`` in
batches of B images), for each contamination, and reports the share of the held-out
``test/good`` images flagged, and for reference the share of defective test images flagged.

The grids come from ``merge_quality.py``'s cache (``benchmarks/results/tmp/``), computed on
the first run.

Example::

    python benchmarks/calibration_stream.py --contamination 0.05 0.1 --shards 4 --batch-size 64
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_quality import (  # noqa: E402  (the same data, detectors and fitting code)
    DEFAULT_DATA,
    METHODS,
    NAMES,
    build,
    cached_grids,
    label,
    load_average,
    run_meta,
    standard_detector,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--detectors", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--contamination", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--shuffle",
        type=int,
        default=None,
        metavar="SEED",
        help="shuffle the training images (seeded) before splitting them into shards and "
        "batches; default: the files' sorted order",
    )
    p.add_argument("--name", default="calibration_stream")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    variants = [("fit", None), ("merge", args.shards), ("partial", args.batch_size)]
    rows = []
    for method in args.detectors:
        data = cached_grids(args.data, method, args.image_size)
        train, test = data["train"], data["test"]
        if args.shuffle is not None:
            order = np.random.RandomState(args.shuffle).permutation(train.shape[0])
            train = np.asarray(train)[order]
        good = data["kinds"] == "good"
        defective = data["labels"] == -1
        for c in args.contamination:
            proto = standard_detector(method, contamination=c)
            for variant in variants:
                detector, timing = build(proto, train, variant)
                flagged = detector.predict(np.asarray(test)) == -1
                share = float(flagged[good].mean())
                row = {
                    "detector": method,
                    "contamination": c,
                    "variant": label(variant),
                    "good_flagged": share,
                    "n_good": int(good.sum()),
                    "defective_flagged": float(flagged[defective].mean()),
                    "offset": float(detector.offset_),
                    "n_calibration_scores": int(detector.train_scores_.size),
                    "calibration_images": _images(detector),
                    "in_target": bool(0.5 * c <= share <= 2 * c),
                    "fit_seconds": timing["seconds"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {
        **run_meta("calibration_stream", argv, load_start),
        "data": str(args.data),
        "order": "sorted file names"
        if args.shuffle is None
        else f"shuffled (seed {args.shuffle})",
    }
    out = HERE / "results"
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = markdown(rows, meta)
    (out / f"{args.name}.md").write_text(table)
    print(table)


def _images(detector):
    """First and last training image (in the order they came) of the calibration sample;
    None after a plain fit, which calibrates on every training image."""
    ids = vars(detector).get("_calibration_ids")
    return None if ids is None else [int(ids.min()), int(ids.max())]


def markdown(rows, meta):
    n_good = rows[0]["n_good"]
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; load average at start "
        f"{meta['load_start']}. Share of the {n_good} held-out `test/good` images flagged "
        f"(`predict == -1`); training images in {meta['order']} order, consecutive runs of "
        "them make the shards and batches. Target after `partial_fit`: within [0.5 c, 2 c]. "
        "Calibration "
        "scores: how many `offset_` comes from (each image left out of the final memory), "
        "and which training images they score: all (a plain fit), the first and last of a "
        "reservoir sample, or an even subset of the images DFKDE holds.",
        "",
        "| detector | contamination c | variant | good flagged | in [0.5c, 2c] | defective "
        "flagged | calibration scores |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        images = r["calibration_images"]
        if images is not None:
            images = f"images {images[0]}-{images[1]}"
        else:  # a fit's every image, or DFKDE's even subset of the images it holds
            images = "all" if r["variant"] == "fit" else "held images"
        lines.append(
            f"| {NAMES[r['detector']]} | {r['contamination']:g} | {r['variant']} | "
            f"{r['good_flagged']:.3f} ({round(r['good_flagged'] * r['n_good'])}) | "
            f"{'yes' if r['in_target'] else 'no'} | {r['defective_flagged']:.3f} | "
            f"{r['n_calibration_scores']} ({images}) |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
