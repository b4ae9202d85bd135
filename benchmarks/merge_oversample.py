"""Does a merged PatchCore rank images as one fit does when its shards keep more entries?

Merge-and-reduce loses image AUROC against one ``fit`` (``merge_quality.py``). If the loss
came from each shard's coreset being too coarse, shards that keep ``k`` times as many entries
(before the merge thins their union to the size one fit keeps) would close it. This script
fits the standard PatchCore on MTD's training grids once, and for each ``k`` merges 4 shards
fitted with ``k`` times the entries "auto" gives them; image AUROC on the test split against
the fit of the same seed.

The grids come from ``merge_quality.py``'s cache (``benchmarks/results/tmp/``).

Example::

    python benchmarks/merge_oversample.py --seeds 0 1 2 --factors 1 2 4
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_quality import (  # noqa: E402  (the same data and detector)
    DEFAULT_DATA,
    cached_grids,
    load_average,
    run_meta,
    standard_detector,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--name", default="merge_oversample")
    return p.parse_args(argv)


def merged_auroc(proto, train, parts, factor, seed, auroc):
    """Image AUROC of the merge of shards that each keep ``factor`` times "auto"'s entries."""
    from sklearn.base import clone

    from sklearn_memad.detectors import auto_coreset_ratio, merge_detectors

    shards = []
    for part in parts:
        n_patches = len(part) * int(np.prod(train.shape[1:3]))
        ratio = min(1.0, factor * auto_coreset_ratio(n_patches))
        shard = clone(proto).set_params(coreset_ratio=ratio).fit(train[part])
        shards.append(shard.set_params(coreset_ratio=proto.coreset_ratio))
    merged = merge_detectors(shards, random_state=seed)
    entries = sum(shard.coreset_.shape[0] for shard in shards)
    return auroc(merged), entries, merged.coreset_.shape[0]


def main(argv=None):
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score

    args = parse_args(argv)
    load_start = load_average()
    data = cached_grids(args.data, "patchcore", args.image_size)
    train, test, labels = np.asarray(data["train"]), np.asarray(data["test"]), data["labels"]
    parts = np.array_split(np.arange(train.shape[0]), args.shards)
    rows = []
    for seed in args.seeds:
        proto = standard_detector("patchcore", random_state=seed)

        def auroc(detector):
            return float(roc_auc_score(labels, detector.score_samples(test)))

        fit = auroc(clone(proto).fit(train))
        for factor in args.factors:
            value, union, kept = merged_auroc(proto, train, parts, factor, seed, auroc)
            row = {"seed": seed, "factor": factor, "fit_auroc": fit, "merged_auroc": value}
            row.update(union_entries=union, coreset=kept, difference=value - fit)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        **run_meta("merge_oversample", argv, load_start),
    }
    out = HERE / "results"
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / f"{args.name}.md").write_text(markdown(rows, meta, args))
    print(markdown(rows, meta, args))


def markdown(rows, meta, args):
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}. Standard PatchCore on MTD's "
        f"training grids; {args.shards} consecutive shards, each keeping `factor` times the "
        'entries `coreset_ratio="auto"` gives it, merged to the size one fit keeps.',
        "",
        "| seed | factor | entries in the union | merged coreset | image AUROC fit | merged | "
        "merged - fit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['factor']} | {r['union_entries']} | {r['coreset']} | "
            f"{r['fit_auroc']:.4f} | {r['merged_auroc']:.4f} | {r['difference']:+.4f} |"
        )
    lines += ["", "Mean of merged - fit over the seeds, per factor:", ""]
    for factor in args.factors:
        diffs = [r["difference"] for r in rows if r["factor"] == factor]
        lines.append(
            f"- factor {factor}: {np.mean(diffs):+.4f} ({min(diffs):+.4f}, {max(diffs):+.4f})"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
