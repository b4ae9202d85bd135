"""How much a merged or streamed detector loses next to one ``fit`` on all the data.

The standard pipelines' feature steps (:func:`~sklearn_memad.pipelines.make_detector_pipeline`,
EfficientNet-Lite0) turn every training and test image into grids once; the grids are cached
in ``benchmarks/results/tmp/`` (git-ignored) for later runs and for ``calibration_stream.py``.
Then, for each detector in its standard settings, three memories are built from the same
training grids:

* ``fit``: one ``fit`` on all of them;
* ``merge K``: ``K`` detectors fitted on consecutive shards (PaDiM with
  ``keep_statistics=True``), combined by :func:`~sklearn_memad.detectors.merge_detectors`;
* ``partial_fit B``: ``partial_fit`` on consecutive batches of ``B`` images.

Each is scored on the whole test split: image AUROC, pixel AUROC, AUPRO, the detector's time
(memory building and calibration, not the backbone). For PatchCore also the coreset size and
how well it covers the training patches: the detector's own bound ``cover_radius_.max()``
(measured in its 64-d selection projection), and the true distance of every training patch
(the aggregated features the detector saw, full dimension) to its nearest coreset entry, max,
99th percentile and mean. For PaDiM and DFKDE the largest relative difference of the image
and patch scores from the ``fit`` ones.

Example::

    python benchmarks/merge_quality.py --shards 4 --batch-sizes 64
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"
CACHE = HERE / "results" / "tmp"
METHODS = ("patchcore", "padim", "dfkde")
NAMES = {"patchcore": "PatchCore", "padim": "PaDiM", "dfkde": "DFKDE"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--detectors", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--shards", type=int, nargs="+", default=[4], help="shard counts to merge")
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[64], help="partial_fit batch sizes"
    )
    p.add_argument(
        "--track-cover",
        action="store_true",
        help="PatchCore partial_fit: the true cover radius of the patches seen after each batch",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="PatchCore's random_state values (each runs every variant); the first is tabled",
    )
    p.add_argument("--no-aupro", action="store_true", help="skip AUPRO")
    p.add_argument("--name", default="merge_quality")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- data
def cached_grids(data, method, image_size, n_jobs=2):
    """Train and test grids of ``method``'s standard feature steps, and the test truth.

    Computed once per (data, method, size) and cached as .npy files under ``CACHE``; the
    returned train and test grids are memory-mapped.
    """
    from sklearn_memad.pipelines import make_detector_pipeline

    CACHE.mkdir(parents=True, exist_ok=True)
    tag = f"{Path(data).name}_{image_size}"
    head = make_detector_pipeline(method, image_size=image_size)[:-1]
    # The feature steps' settings name the grids, so changed defaults never read stale ones.
    steps = hashlib.sha1(repr(head.get_params()).encode()).hexdigest()[:10]
    files = {
        "train": CACHE / f"{tag}_{method}_{steps}_train.npy",
        "test": CACHE / f"{tag}_{method}_{steps}_test.npy",
        "labels": CACHE / f"{tag}_labels.npy",
        "masks": CACHE / f"{tag}_masks.npy",
        "kinds": CACHE / f"{tag}_kinds.npy",
    }
    info_file = CACHE / f"{tag}_{method}_{steps}_info.json"
    if not all(f.exists() for f in files.values()) or not info_file.exists():
        from sklearn_memad.datasets import load_mvtec

        train = load_mvtec(data, "train", image_size=image_size, n_jobs=n_jobs)
        test = load_mvtec(data, "test", image_size=image_size, n_jobs=n_jobs)
        start = time.perf_counter()
        train_grids = head.fit_transform(train.images)
        test_grids = head.transform(test.images)
        seconds = time.perf_counter() - start
        np.save(files["train"], train_grids)
        np.save(files["test"], test_grids)
        np.save(files["labels"], test.labels)
        np.save(files["masks"], test.masks)
        np.save(files["kinds"], test.kinds)
        info = {
            "n_train": int(len(train.labels)),
            "n_test": int(len(test.labels)),
            "grid_shape": list(train_grids.shape[1:]),
            "head_seconds": seconds,
            "head_ms_per_image": 1e3 * seconds / (len(train.labels) + len(test.labels)),
        }
        info_file.write_text(json.dumps(info))
        del train, test, train_grids, test_grids
    out = {
        key: np.load(f, mmap_mode="r" if key in ("train", "test") else None)
        for key, f in files.items()
    }
    out["info"] = json.loads(info_file.read_text())
    return out


def standard_detector(method, **params):
    from sklearn_memad.pipelines import make_detector_pipeline

    return make_detector_pipeline(method)[-1].set_params(**params)


# ----------------------------------------------------------------------------- building
def build(proto, train, variant, random_state=0, after_batch=None):
    """Fit ``variant`` of ``proto`` on ``train``; the detector and its timings.

    ``after_batch(detector, n_seen)``, if given, runs after each ``partial_fit`` batch (outside
    the clock)."""
    from sklearn.base import clone

    from sklearn_memad.detectors import merge_detectors

    kind, size = variant
    timing = {}
    if kind == "fit":
        detector = clone(proto)
        start = time.perf_counter()
        detector.fit(train)
        timing["seconds"] = time.perf_counter() - start
    elif kind == "merge":
        shard_proto = clone(proto)
        # As distributed.fit does: each shard keeps what merging needs.
        for name in ("keep_statistics", "keep_calibration"):
            if name in shard_proto.get_params():
                shard_proto.set_params(**{name: True})
        shards, shard_seconds = [], []
        for part in np.array_split(np.arange(train.shape[0]), size):
            shard = clone(shard_proto)
            start = time.perf_counter()
            shard.fit(np.asarray(train[part[0] : part[-1] + 1]))
            shard_seconds.append(time.perf_counter() - start)
            shards.append(shard)
        start = time.perf_counter()
        detector = merge_detectors(shards, random_state=random_state)
        merge_seconds = time.perf_counter() - start
        timing.update(
            seconds=sum(shard_seconds) + merge_seconds,
            shard_seconds=shard_seconds,
            merge_seconds=merge_seconds,
            # The shards fitted side by side (one machine each): the slowest, then the merge.
            parallel_seconds=max(shard_seconds) + merge_seconds,
        )
    else:
        detector = clone(proto)
        batch_seconds = []
        for start_row in range(0, train.shape[0], size):
            batch = np.asarray(train[start_row : start_row + size])
            start = time.perf_counter()
            detector.partial_fit(batch)
            batch_seconds.append(time.perf_counter() - start)
            if after_batch is not None:
                after_batch(detector, start_row + batch.shape[0])
        timing.update(seconds=sum(batch_seconds), batch_seconds=batch_seconds)
    return detector, timing


def label(variant):
    kind, size = variant
    if kind == "fit":
        return "fit"
    if kind == "merge":
        return f"merge {size} shards"
    return f"partial_fit {size}"


def true_cover(patches, coreset, rows=16384):
    """Distance of every row of ``patches`` (n, d) to its nearest row of ``coreset``."""
    import torch

    bank = torch.from_numpy(np.ascontiguousarray(coreset, dtype=np.float32))
    out = np.empty(patches.shape[0], dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, patches.shape[0], rows):
            chunk = torch.from_numpy(np.ascontiguousarray(patches[start : start + rows]))
            nearest = torch.cdist(chunk, bank).argmin(dim=1)
            # The matrix-product distances round; the chosen entry's distance is measured
            # directly.
            exact = torch.linalg.vector_norm(chunk - bank[nearest], dim=1)
            out[start : start + rows] = exact.numpy()
    return out


def cover_stats(distances):
    return {
        "max": float(distances.max()),
        "p99": float(np.percentile(distances, 99)),
        "mean": float(distances.mean()),
    }


def evaluate(detector, grids, truth, image_size, with_aupro=True):
    """Test patch scores and the metrics."""
    from sklearn_memad.defaults import SIGMA
    from sklearn_memad.detectors import image_scores_from_patches
    from sklearn_memad.maps import patch_to_pixel_maps
    from sklearn_memad.metrics import aupro, image_auroc, pixel_auroc

    start = time.perf_counter()
    patches = detector.score_patches(np.asarray(grids))
    score_seconds = time.perf_counter() - start
    anomaly = image_scores_from_patches(patches, detector.top_k, detector.border)
    maps = patch_to_pixel_maps(patches, (image_size, image_size), sigma=SIGMA)
    labels, masks = truth["labels"], truth["masks"]
    defective = labels == -1
    out = {
        "image_auroc": image_auroc(labels, anomaly),
        "pixel_auroc": pixel_auroc(masks, maps),
        "aupro": aupro(masks[defective], maps[defective]) if with_aupro else None,
        "score_seconds": score_seconds,
    }
    return out, patches, anomaly


def max_relative(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def run_method(args, method, variants):
    data = cached_grids(args.data, method, args.image_size)
    train, test = data["train"], data["test"]
    rows = []
    flat_train = None
    if method == "patchcore":
        flat_train = np.asarray(train).reshape(-1, train.shape[-1])
    # Only PatchCore draws anything (projection, first entry): the others run once.
    seeds = args.seeds if method == "patchcore" else args.seeds[:1]
    for seed in seeds:
        seeded = {"random_state": seed} if method == "patchcore" else {}
        proto = standard_detector(method, **seeded)
        reference = None
        for variant in variants:
            growth, after_batch = [], None
            track = args.track_cover and seed == seeds[0]
            if method == "patchcore" and variant[0] == "partial" and track:

                def after_batch(detector, n_seen, growth=growth):
                    seen = flat_train[: n_seen * train.shape[1] * train.shape[2]]
                    stats = cover_stats(true_cover(seen, detector.coreset_))
                    growth.append(
                        {
                            "images": n_seen,
                            "coreset": int(detector.coreset_.shape[0]),
                            "bound": float(detector.cover_radius_.max()),
                            **stats,
                        }
                    )
                    print(f"  after {n_seen} images: {json.dumps(growth[-1])}", flush=True)

            detector, timing = build(
                proto, train, variant, random_state=seed, after_batch=after_batch
            )
            metrics, patches, anomaly = evaluate(
                detector, test, data, args.image_size, not args.no_aupro
            )
            row = {
                "detector": method,
                "variant": label(variant),
                "seed": seed if method == "patchcore" else None,
                **metrics,
                "fit_seconds": timing["seconds"],
                "timing": timing,
                "memory_bytes": int(detector.memory_bytes_),
                "n_samples_seen": int(detector.n_samples_seen_),
                "offset": float(detector.offset_),
                "n_calibration_scores": int(detector.train_scores_.size),
            }
            if method == "patchcore":
                row["coreset_size"] = int(detector.coreset_.shape[0])
                row["cover_bound"] = float(detector.cover_radius_.max())
                start = time.perf_counter()
                row["cover"] = cover_stats(true_cover(flat_train, detector.coreset_))
                row["cover_seconds"] = time.perf_counter() - start
                if growth:
                    row["cover_growth"] = growth
            if reference is None:
                reference = (patches, anomaly)
            else:
                row["max_rel_image"] = max_relative(anomaly, reference[1])
                row["max_rel_patch"] = max_relative(patches, reference[0])
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "cover_growth"}), flush=True)
            del detector
    if method == "padim":
        # The float64 statistics path alone (fit with keep_statistics=True) next to the
        # float32 fit: how much of the merged model's difference is the path, not the merge.
        detector = standard_detector(method, keep_statistics=True)
        start = time.perf_counter()
        detector.fit(np.asarray(train))
        seconds = time.perf_counter() - start
        metrics, patches, anomaly = evaluate(
            detector, test, data, args.image_size, not args.no_aupro
        )
        rows.append(
            {
                "detector": method,
                "variant": "fit keep_statistics",
                "seed": None,
                **metrics,
                "fit_seconds": seconds,
                "timing": {"seconds": seconds},
                "memory_bytes": int(detector.memory_bytes_),
                "n_samples_seen": int(detector.n_samples_seen_),
                "offset": float(detector.offset_),
                "n_calibration_scores": int(detector.train_scores_.size),
                "max_rel_image": max_relative(anomaly, reference[1]),
                "max_rel_patch": max_relative(patches, reference[0]),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows, data["info"]


# ----------------------------------------------------------------------------- report
def _f(value, fmt):
    return "-" if value is None else format(value, fmt)


def markdown(rows, meta):
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    first = seeds[0] if seeds else None
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; load average at start "
        f"{meta['load_start']}, at the end {meta['load_end']}. {meta['n_train']} training and "
        f"{meta['n_test']} test images of `{meta['data']}` at {meta['image_size']} px; standard "
        "pipelines (EfficientNet-Lite0); shards and batches are consecutive runs of the "
        "training files in sorted order. Fit s: the detector only (memory and calibration; "
        "features computed beforehand); for merges the shards' fits one after another plus "
        "the merge (in brackets: the slowest shard plus the merge, as on one machine per "
        "shard)."
        + (
            f" PatchCore with random_state={first} here; other seeds below."
            if len(seeds) > 1
            else ""
        ),
        "",
        "| detector | variant | image AUROC | pixel AUROC | AUPRO | fit s | memory MiB |"
        " max rel. diff. image / patch scores vs fit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["seed"] not in (None, first):
            continue
        t = r["timing"]
        fit = f"{r['fit_seconds']:.1f}"
        if "parallel_seconds" in t:
            fit += f" ({t['parallel_seconds']:.1f})"
        diff = "-"
        if "max_rel_image" in r:
            diff = f"{r['max_rel_image']:.1e} / {r['max_rel_patch']:.1e}"
        lines.append(
            f"| {NAMES[r['detector']]} | {r['variant']} | {r['image_auroc']:.4f} | "
            f"{r['pixel_auroc']:.4f} | {_f(r['aupro'], '.4f')} | {fit} | "
            f"{r['memory_bytes'] / 2**20:.2f} | {diff} |"
        )
    cores = [r for r in rows if r["detector"] == "patchcore"]
    if cores:
        lines += [
            "",
            "PatchCore's coreset and how far the training patches lie from it (true: every "
            "aggregated training patch, full dimension, to its nearest entry; bound: "
            "`cover_radius_.max()`, in the 64-d selection projection); differences against "
            "the single fit of the same seed:",
            "",
            "| seed | variant | coreset | true max | true p99 | true mean | max / fit's max | "
            "bound | image AUROC - fit | pixel AUROC - fit |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        base = {r["seed"]: r for r in cores if r["variant"] == "fit"}
        for r in cores:
            b, c = base[r["seed"]], r["cover"]
            lines.append(
                f"| {r['seed']} | {r['variant']} | {r['coreset_size']} | {c['max']:.3f} | "
                f"{c['p99']:.3f} | {c['mean']:.3f} | {c['max'] / b['cover']['max']:.2f} | "
                f"{r['cover_bound']:.3f} | {r['image_auroc'] - b['image_auroc']:+.4f} | "
                f"{r['pixel_auroc'] - b['pixel_auroc']:+.4f} |"
            )
        if len(seeds) > 1:
            lines += [
                "",
                f"PatchCore over the {len(seeds)} seeds {', '.join(map(str, seeds))}: mean "
                "(smallest, largest):",
                "",
                "| variant | image AUROC | pixel AUROC | image AUROC - fit | pixel AUROC - fit |"
                " true max / fit's |",
                "|---|---|---|---|---|---|",
            ]
            for variant in dict.fromkeys(r["variant"] for r in cores):
                group = [r for r in cores if r["variant"] == variant]
                image = [r["image_auroc"] for r in group]
                pixel = [r["pixel_auroc"] for r in group]
                d_image = [r["image_auroc"] - base[r["seed"]]["image_auroc"] for r in group]
                d_pixel = [r["pixel_auroc"] - base[r["seed"]]["pixel_auroc"] for r in group]
                ratio = [r["cover"]["max"] / base[r["seed"]]["cover"]["max"] for r in group]
                lines.append(
                    f"| {variant} | {_spread(image, '.4f')} | {_spread(pixel, '.4f')} | "
                    f"{_spread(d_image, '+.4f')} | {_spread(d_pixel, '+.4f')} | "
                    f"{_spread(ratio, '.2f')} |"
                )
        for r in cores:
            if "cover_growth" not in r:
                continue
            lines += [
                "",
                f"PatchCore {r['variant']} (seed {r['seed']}): the cover after each batch "
                "(the patches seen so far):",
                "",
                "| images seen | coreset | true max | true mean | bound |",
                "|---|---|---|---|---|",
            ]
            for g in r["cover_growth"]:
                lines.append(
                    f"| {g['images']} | {g['coreset']} | {g['max']:.3f} | {g['mean']:.3f} | "
                    f"{g['bound']:.3f} |"
                )
    return "\n".join(lines) + "\n"


def _spread(values, fmt):
    mean, low, high = (format(v, fmt) for v in (np.mean(values), min(values), max(values)))
    return f"{mean} ({low}, {high})"


def run_meta(script, argv, load_start):
    """What every results file records: the command, the machine, the date, the load."""
    return {
        "command": f"python benchmarks/{script}.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load_start": load_start,
        "load_end": load_average(),
    }


def run_header(meta, description):
    """The opening lines of a results table: the command; the machine, date, load and
    ``description`` of what was measured."""
    return [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; load {meta['load_start']} at the "
        f"start, {meta['load_end']} at the end. {description}",
    ]


def save_results(name, result, text):
    """Write ``results/NAME.json`` (every number) and ``results/NAME.md`` (the table); print it."""
    out = HERE / "results"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=float))
    (out / f"{name}.md").write_text(text)
    print(text)


def machine():
    return (
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}"
    )


def load_average():
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    variants = [("fit", None)]
    variants += [("merge", k) for k in args.shards]
    variants += [("partial", b) for b in args.batch_sizes]
    rows, infos = [], {}
    for method in args.detectors:
        method_rows, info = run_method(args, method, variants)
        rows += method_rows
        infos[method] = info
    info = next(iter(infos.values()))
    meta = {
        **run_meta("merge_quality", argv, load_start),
        "data": str(args.data),
        "n_train": info["n_train"],
        "n_test": info["n_test"],
        "image_size": args.image_size,
        "features": infos,
    }
    out = HERE / "results"
    (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = markdown(rows, meta)
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
