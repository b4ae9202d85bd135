"""Peak memory and time of fitting the standard PatchCore pipeline by streaming, against ``fit``.

The training set is an MVTec-layout folder's ``train/good`` images (256 x 256 px), made as
large as asked with their eight flips and 90-degree rotations: image ``i`` is file
``i % n_files`` under transform ``i // n_files`` (rotation by ``k`` quarter turns, then a
left-right flip for the second four). Each image is read and transformed when its chunk comes
up, so a streamed fit never holds more than one chunk of images.

For each ``n`` a fresh process builds :func:`~sklearn_memad.pipelines.make_detector_pipeline`
("patchcore") and either streams (``pipelines.partial_fit`` on chunks of ``--chunk`` images,
read as it goes) or fits plainly (all ``n`` images read into memory, then ``Pipeline.fit``).
It reports its peak resident memory (VmHWM of ``/proc/self/status``: the process's whole
life, imports and backbone included), the RSS before the first image (imports and backbone
built) and the wall time of the fit, split into reading, features (backbone and aggregation)
and the detector. Before each process the script waits until the one-minute load average is
below ``--max-load`` (at most ``--max-wait`` seconds) and records the load it started at.
A last process times the backbone alone (ms per image, ``--chunk`` images, median of 3 passes).

Example::

    python benchmarks/streaming.py --n 500 1000 2000 5000 --fit-n 500 1000 2000
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from run import _Clock  # the benchmark harness's method timer (benchmarks/run.py)

from sklearn_memad.defaults import AGGREGATION_SIZE

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"
MIB = 1 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--n", type=int, nargs="+", default=[500, 1000, 2000, 5000])
    p.add_argument(
        "--fit-n", type=int, nargs="*", default=[500, 1000, 2000], help="n for a plain fit"
    )
    p.add_argument("--chunk", type=int, default=64, help="images per partial_fit")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument(
        "--max-wait", type=float, default=900.0, help="seconds to wait for a quiet machine"
    )
    p.add_argument("--timeout", type=float, default=7200.0, help="seconds per process")
    p.add_argument("--name", default="streaming")
    p.add_argument("--worker", choices=["stream", "fit", "backbone"], help=argparse.SUPPRESS)
    p.add_argument("--worker-n", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- worker side
def _status_bytes(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1


def _augmented(image, transform):
    """One of the eight flips and quarter turns of a square image."""
    out = np.rot90(image, transform % 4)
    if transform >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def image_chunks(files, n, chunk, size):
    """``n`` augmented training images, ``chunk`` at a time, read as they are needed."""
    from sklearn_memad.datasets import read_images

    n_files = len(files)
    if n > 8 * n_files:
        raise SystemExit(f"{n} images asked; {n_files} files give at most {8 * n_files}")
    for start in range(0, n, chunk):
        index = np.arange(start, min(start + chunk, n))
        images, kept, skipped = read_images([files[i % n_files] for i in index], size)
        if skipped:
            raise SystemExit(f"unreadable training files: {skipped}")
        yield np.stack([_augmented(im, int(i // n_files)) for im, i in zip(images, index)])


def run_worker(args):
    import torch

    from sklearn_memad.datasets import training_files
    from sklearn_memad.pipelines import make_detector_pipeline, partial_fit

    size = (args.image_size, args.image_size)
    files = training_files(args.data)
    pipe = make_detector_pipeline("patchcore", image_size=size)
    detector_clock = _Clock(type(pipe[-1]), "fit" if args.worker == "fit" else "partial_fit")
    # The backbone is built (and cached) before the clock and the baseline RSS, as a
    # long-running service would hold it.
    pipe[0].fit(np.zeros((1,) + size + (3,), dtype=np.uint8))
    rss_setup = _status_bytes("VmRSS")
    load_start = os.getloadavg()[0]
    read_seconds = 0.0
    start = time.perf_counter()
    if args.worker == "backbone":
        images = next(image_chunks(files, args.chunk, args.chunk, size))
        features = pipe[0]
        features.transform(images)  # warm-up
        passes = []
        for _ in range(3):
            t0 = time.perf_counter()
            features.transform(images)
            passes.append(time.perf_counter() - t0)
        record = {
            "worker": "backbone",
            "images": int(images.shape[0]),
            "batch_size": int(features.batch_size),
            "ms_per_image": 1e3 * float(np.median(passes)) / images.shape[0],
            "torch_threads": torch.get_num_threads(),
            "load_start": load_start,
        }
        print(json.dumps(record))
        return
    if args.worker == "stream":
        chunks = image_chunks(files, args.worker_n, args.chunk, size)
        while True:
            t0 = time.perf_counter()
            batch = next(chunks, None)
            read_seconds += time.perf_counter() - t0
            if batch is None:
                break
            partial_fit(pipe, batch)
            del batch
    else:
        t0 = time.perf_counter()
        images = np.empty((args.worker_n,) + size + (3,), dtype=np.uint8)
        for i, batch in enumerate(image_chunks(files, args.worker_n, args.chunk, size)):
            images[i * args.chunk : i * args.chunk + batch.shape[0]] = batch
        read_seconds = time.perf_counter() - t0
        pipe.fit(images)
    seconds = time.perf_counter() - start
    detector = pipe[-1]
    record = {
        "worker": args.worker,
        "n": args.worker_n,
        "chunk": args.chunk if args.worker == "stream" else None,
        "seconds": seconds,
        "read_seconds": read_seconds,
        "detector_seconds": detector_clock.seconds,
        "feature_seconds": seconds - read_seconds - detector_clock.seconds,
        "peak_rss_bytes": _status_bytes("VmHWM"),
        "rss_setup_bytes": rss_setup,
        "rss_end_bytes": _status_bytes("VmRSS"),
        "coreset_size": int(detector.coreset_.shape[0]),
        "n_samples_seen": int(detector.n_samples_seen_),
        "memory_bytes": int(detector.memory_bytes_),
        "torch_threads": torch.get_num_threads(),
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
    }
    print(json.dumps(record))


# ----------------------------------------------------------------------------- driver side
def run_worker_process(cmd, timeout, load):
    """Run a worker process that prints its record as a JSON last line; the record, with the
    load found before it started, or why it failed."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        reason = "killed (out of memory?)" if out.returncode < 0 else out.stderr[-2000:]
        return {"failed": f"exit {out.returncode}: {reason}"}
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["load_before"] = round(load[0], 2)
    return record


def wait_for_quiet(max_load, max_wait):
    """Wait until the one-minute load is below ``max_load``; the load found and the wait."""
    start = time.perf_counter()
    while True:
        load = os.getloadavg()
        waited = time.perf_counter() - start
        if load[0] < max_load or waited >= max_wait:
            return load, waited
        print(f"  load {load[0]:.2f} >= {max_load}: waiting", flush=True)
        time.sleep(30)


def run_one(args, worker, n=None):
    load, waited = wait_for_quiet(args.max_load, args.max_wait)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        worker,
        "--data",
        args.data,
        "--image-size",
        str(args.image_size),
        "--chunk",
        str(args.chunk),
    ]
    if n is not None:
        cmd += ["--worker-n", str(n)]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"worker": worker, "n": n, "failed": f"timed out after {args.timeout:.0f} s"}
    if out.returncode != 0:
        reason = "killed (out of memory?)" if out.returncode < 0 else out.stderr[-2000:]
        return {"worker": worker, "n": n, "failed": f"exit {out.returncode}: {reason}"}
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record.update(
        load_before=[round(v, 2) for v in load],
        waited_seconds=waited,
        process_seconds=time.perf_counter() - start,
    )
    return record


def markdown(records, backbone, meta):
    streamed = [r for r in records if r["worker"] == "stream" and "failed" not in r]
    base = streamed[0] if streamed else None
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; one process per row, started when "
        f"the one-minute load average was below {meta['max_load']} (the load at each start "
        "is in the table). Standard PatchCore pipeline (EfficientNet-Lite0, "
        f'{AGGREGATION_SIZE} x {AGGREGATION_SIZE} aggregation, coreset "auto", '
        f"defaults of the day), {meta['image_size']} px; the {meta['n_files']} "
        "MTD training tiles with their flips and quarter turns. Peak RSS: VmHWM of the "
        "process (imports and backbone included); setup: RSS once the backbone is built, "
        "before the first image. Time: the fit alone (backbone built before), split into "
        "reading images, features (backbone and aggregation) and the detector.",
        "",
        "| fit | images | peak RSS MiB | setup RSS MiB | peak - setup MiB | peak / streamed "
        "peak at the smallest n | time s | s per 100 images | read / features / detector s"
        " | coreset | load at start |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        kind = f"stream ({r.get('chunk') or meta['chunk']})" if r["worker"] == "stream" else "fit"
        if "failed" in r:
            lines.append(f"| {kind} | {r['n']} | {r['failed']} | | | | | | | | |")
            continue
        ratio = f"{r['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}" if base else "-"
        lines.append(
            f"| {kind} | {r['n']} | {r['peak_rss_bytes'] / MIB:.0f} | "
            f"{r['rss_setup_bytes'] / MIB:.0f} | "
            f"{(r['peak_rss_bytes'] - r['rss_setup_bytes']) / MIB:.0f} | {ratio} | "
            f"{r['seconds']:.0f} | {100 * r['seconds'] / r['n']:.1f} | "
            f"{r['read_seconds']:.1f} / {r['feature_seconds']:.1f} / "
            f"{r['detector_seconds']:.1f} | {r['coreset_size']} | {r['load_before'][0]:.2f} |"
        )
    if backbone and "failed" not in backbone:
        lines += [
            "",
            f"Backbone alone: {backbone['ms_per_image']:.1f} ms per image (EfficientNet-Lite0 "
            f"features at {meta['image_size']} px, batches of {backbone['batch_size']}, "
            f"{backbone['torch_threads']} torch threads, median of 3 passes over "
            f"{backbone['images']} images).",
        ]
    if meta.get("skipped_fit"):
        lines += ["", meta["skipped_fit"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    import platform

    from sklearn_memad.datasets import training_files

    n_files = len(training_files(args.data))
    print(f"load average at start: {os.getloadavg()}", flush=True)
    records = []
    for n in args.n:
        records.append(run_one(args, "stream", n))
        print(json.dumps(records[-1]), flush=True)
    for n in args.fit_n:
        records.append(run_one(args, "fit", n))
        print(json.dumps(records[-1]), flush=True)
    backbone = run_one(args, "backbone")
    print(json.dumps(backbone), flush=True)
    skipped = sorted(set(args.n) - set(args.fit_n))
    meta = {
        "command": "python benchmarks/streaming.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "date": time.strftime("%Y-%m-%d"),
        "max_load": args.max_load,
        "image_size": args.image_size,
        "chunk": args.chunk,
        "n_files": n_files,
        "skipped_fit": (
            f"No plain fit for n = {', '.join(map(str, skipped))} (not asked: `--fit-n`)."
            if skipped
            else ""
        ),
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "records": records, "backbone": backbone}, indent=1)
    )
    table = markdown(records, backbone, meta)
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
