"""Peak memory of scoring with the standard pipelines: all images at once against chunks.

For each detector, a first process fits its standard pipeline
(:func:`~sklearn_memad.pipelines.make_detector_pipeline`; EfficientNet-Lite0 with its ImageNet
weights, 256 px, by default) on ``--n-train`` MTD training tiles and saves it with
``save_model``. Then, for each number of images ``n`` and each way of scoring, a fresh
process loads the model, reads ``n`` MTD test tiles (all kinds; past the 582 files, their
flips and quarter turns, as ``streaming.py`` makes them), scores two of them (the backbone is
built, the code paths warmed up), resets its peak RSS (``/proc/self/clear_refs``) and scores
the ``n`` images with ``score_samples``:

- ``before``: ``Pipeline.score_samples(pipe, X)``, scikit-learn's own path, as the library
  scored before: the grids of every image exist before the detector runs;
- ``after``: ``pipe.score_samples(X)``, the :class:`~sklearn_memad.pipelines.DetectorPipeline`
  that ``make_detector_pipeline`` returns: ``chunk_size`` images end to end at a time.

The growth is the peak RSS of the scoring call (VmHWM) minus the RSS just before it (the
images and the model already in memory). The goal (issue 19): the growth for the largest
``n`` at most 1.2x that for the smallest, for every detector. The scores of the two ways are
compared too. Before each process the script waits until the one-minute load average is
below ``--max-load`` (at most ``--max-wait`` seconds).

Example::

    python benchmarks/scoring_memory.py --n 64 1024
"""

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from streaming import (  # benchmarks/streaming.py
    _status_bytes,
    image_chunks,
    run_worker_process,
    wait_for_quiet,
)

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"
MIB = 1 << 20
MODES = ("before", "after")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--methods", nargs="+", default=["padim", "patchcore", "dfkde"])
    p.add_argument("--n", type=int, nargs="+", default=[64, 1024], help="images scored")
    p.add_argument(
        "--before-n", type=int, nargs="*", help="n scored the 'before' way (default: --n)"
    )
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="DEFAULT", help="'DEFAULT', a path or 'none'")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--max-wait", type=float, default=900.0, help="seconds to wait for quiet")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per process")
    p.add_argument("--name", default="scoring_memory")
    p.add_argument("--worker", choices=["fit", "score"], help=argparse.SUPPRESS)
    p.add_argument("--worker-method", help=argparse.SUPPRESS)
    p.add_argument("--worker-mode", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--worker-n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--scores", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- worker side
def _images(files, n, size):
    return np.concatenate(list(image_chunks(files, n, 64, size)))


def run_fit(args):
    from sklearn_memad.datasets import training_files
    from sklearn_memad.persistence import save_model
    from sklearn_memad.pipelines import make_detector_pipeline

    size = (args.image_size, args.image_size)
    train = _images(training_files(args.data), args.n_train, size)
    pipe = make_detector_pipeline(
        args.worker_method,
        backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=size,
    )
    start = time.perf_counter()
    pipe.fit(train)
    seconds = time.perf_counter() - start
    save_model(pipe, args.model)
    record = {
        "worker": "fit",
        "method": args.worker_method,
        "n_train": len(train),
        "seconds": seconds,
        "chunk_size": int(pipe.chunk_size),
        "grid_shape": list(pipe[:-1].transform(train[:1]).shape[1:]),
        "memory_bytes": int(pipe[-1].memory_bytes_),
    }
    print(json.dumps(record))


def run_score(args):
    import torch
    from sklearn.pipeline import Pipeline

    from sklearn_memad.datasets import image_files
    from sklearn_memad.persistence import load_model

    size = (args.image_size, args.image_size)
    pipe = load_model(args.model)
    images = _images(image_files(Path(args.data) / "test", recursive=True), args.worker_n, size)
    if args.worker_mode == "after":
        score = pipe.score_samples
    else:  # scikit-learn's own Pipeline.score_samples, on the same fitted pipeline
        score = partial(Pipeline.score_samples, pipe)
    score(images[:2])
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS, so the peak below is the scoring call's
    rss_before = _status_bytes("VmRSS")
    start = time.perf_counter()
    scores = score(images)
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    np.save(args.scores, scores)
    record = {
        "worker": "score",
        "method": args.worker_method,
        "mode": args.worker_mode,
        "n": int(len(images)),
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
        "growth_bytes": peak - rss_before,
        "seconds": seconds,
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(record))


# ----------------------------------------------------------------------------- driver side
def run_one(args, extra):
    load, _ = wait_for_quiet(args.max_load, args.max_wait)
    cmd = [sys.executable, __file__, "--data", args.data, "--image-size", str(args.image_size)]
    cmd += ["--n-train", str(args.n_train), "--backbone", args.backbone]
    cmd += ["--weights", args.weights] + extra
    return run_worker_process(cmd, args.timeout, load)


def measure(args, method, folder):
    """The fit record and the scoring records of one detector; scores compared by n."""
    model = folder / f"{method}.safetensors"
    fit = run_one(args, ["--worker", "fit", "--worker-method", method, "--model", str(model)])
    print(json.dumps(fit), flush=True)
    records, differences = [], {}
    if "failed" in fit:
        return fit, records, differences
    for n in args.n:
        for mode in MODES:
            if mode == "before" and n not in args.before_n:
                continue
            scores = folder / f"{method}_{mode}_{n}.npy"
            extra = ["--worker", "score", "--worker-method", method, "--worker-mode", mode]
            extra += ["--worker-n", str(n), "--model", str(model), "--scores", str(scores)]
            record = run_one(args, extra)
            record.update(method=method, mode=mode, n=n)
            records.append(record)
            print(json.dumps(record), flush=True)
        found = [folder / f"{method}_{mode}_{n}.npy" for mode in MODES]
        if all(path.exists() for path in found):
            before, after = (np.load(path) for path in found)
            differences[n] = float(np.max(np.abs(before - after)))
    return fit, records, differences


def _row(method, mode, by_n, ns):
    """One table row: the growth for each n, their ratio, the time per image at the last n."""

    def growth(n):
        r = by_n.get(n)
        return None if r is None or "failed" in r else r["growth_bytes"] / MIB

    cells = []
    for n in ns:
        r = by_n.get(n)
        cells.append("-" if r is None else r.get("failed") or f"{growth(n):.0f}")
    first, last = growth(ns[0]), growth(ns[-1])
    ratio = f"{last / first:.2f}" if first and last is not None else "-"
    timing = "-"
    if last is not None:
        r = by_n[ns[-1]]
        timing = f"{100 * r['seconds'] / r['n']:.1f}"
    return f"| {method} | {mode} | " + " | ".join(cells) + f" | {ratio} | {timing} |"


def markdown(meta, fits, records, differences):
    ns = meta["n"]
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}. Standard pipelines "
        f"({meta['backbone']}, weights {meta['weights']}, {meta['image_size']} px) fitted on "
        f"{meta['n_train']} MTD training tiles, scoring MTD test tiles. One fresh process per "
        "cell: the model loaded and the images read first, then the peak RSS of the "
        "`score_samples` call (VmHWM, reset just before it) minus the RSS just before it. "
        "before: scikit-learn's `Pipeline.score_samples` (all grids at once); after: the "
        f"`DetectorPipeline` of `make_detector_pipeline` ({meta['chunk_size']} images per "
        "chunk, end to end).",
        "",
        "| detector | scoring | "
        + " | ".join(f"growth, {n:,} images MiB" for n in ns)
        + f" | growth {ns[-1]:,} / {ns[0]:,} | s per 100 images ({ns[-1]:,}) |",
        "|---|---|" + "---|" * (len(ns) + 2),
    ]
    for method in meta["methods"]:
        for mode in MODES:
            by_n = {r["n"]: r for r in records if r["method"] == method and r["mode"] == mode}
            lines.append(_row(method, mode, by_n, ns))
    lines += ["", "Patch grids (h, w, d per image) and memory held by each fitted detector:"]
    for method in meta["methods"]:
        fit = fits.get(method, {})
        if "failed" in fit or not fit:
            lines.append(f"- {method}: fit failed: {fit.get('failed', 'not run')}")
            continue
        grid = " x ".join(map(str, fit["grid_shape"]))
        lines.append(f"- {method}: {grid}; {fit['memory_bytes'] / MIB:.1f} MiB")
    lines += ["", "Largest absolute difference between the two ways' scores:"]
    for method in meta["methods"]:
        found = differences.get(method, {})
        shown = ", ".join(f"{v:.3g} ({n:,} images)" for n, v in sorted(found.items()))
        lines.append(f"- {method}: {shown or 'not compared'}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.worker == "fit":
        return run_fit(args)
    if args.worker == "score":
        return run_score(args)
    args.before_n = args.n if args.before_n is None else args.before_n
    fits, records, differences = {}, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            fits[method], found, differences[method] = measure(args, method, Path(tmp))
            records += found
    chunk = next((f["chunk_size"] for f in fits.values() if "chunk_size" in f), None)
    meta = {
        "command": "python benchmarks/scoring_memory.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "date": time.strftime("%Y-%m-%d"),
        "methods": args.methods,
        "n": args.n,
        "n_train": args.n_train,
        "backbone": args.backbone,
        "weights": args.weights,
        "image_size": args.image_size,
        "chunk_size": chunk,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    result = {"meta": meta, "fits": fits, "records": records, "differences": differences}
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    table = markdown(meta, fits, records, differences)
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
