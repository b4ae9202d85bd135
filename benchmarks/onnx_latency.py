"""ONNX graph in onnxruntime (CPU) against the Python pipeline: latency, throughput, agreement.

For each standard pipeline (``make_detector_pipeline``: PaDiM, PatchCore, DFKDE), fitted on
defect-free Magnetic-Tile images, this exports the graph with ``sklearn_memad.export.to_onnx``
and times, on the same test images, the Python path that gives the same outputs
(``predict_anomaly_maps``: scores, maps, labels) and ``InferenceSession.run``: batch-1 latency
(median over ``--repeats`` images) and batch-16 throughput. It also records how far the
graph's outputs are from the Python ones on every test image.

Both run with ``--threads`` intra-op threads (default 1): on a machine shared with other
work, torch's extra threads wait at every operation for a busy core and slow the backbone
many times over, so one thread each is the setting that compares the two fairly.

::

    python benchmarks/onnx_latency.py --backbone efficientnet_lite0 --image-size 256
"""

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from sklearn_memad.datasets import image_files, read_images
from sklearn_memad.export import to_onnx
from sklearn_memad.maps import predict_anomaly_maps
from sklearn_memad.pipelines import make_detector_pipeline

ROOT = Path(__file__).resolve().parent
METHODS = ("padim", "patchcore", "dfkde")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent.parent / "shared" / "data" / "mtd"))
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="DEFAULT", help="'none' for a random initialisation")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=50)
    p.add_argument("--n-test", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20, help="batch-1 calls timed")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--detectors", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--name", default="onnx_latency")
    return p.parse_args(argv)


def _spread(files, k):
    files = sorted(files)
    return [files[i] for i in np.linspace(0, len(files) - 1, k).astype(int)]


def load_images(args):
    data, size = Path(args.data), (args.image_size, args.image_size)
    train = _spread(image_files(data / "train" / "good"), args.n_train)
    test = _spread(image_files(data / "test", recursive=True), args.n_test)
    return read_images(train, size=size)[0], read_images(test, size=size)[0]


def _timed(function, batches):
    """Median seconds per call of ``function`` over ``batches`` (after one warm-up call)."""
    function(batches[0])
    times = []
    for batch in batches:
        start = time.perf_counter()
        function(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(method, args, train, test, folder):
    import onnxruntime as ort

    weights = None if args.weights.lower() == "none" else args.weights
    pipe = make_detector_pipeline(
        method, backbone=args.backbone, weights=weights, image_size=args.image_size
    ).fit(train)
    path = to_onnx(pipe, Path(folder) / f"{method}.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    reference = predict_anomaly_maps(pipe, test)
    scores, maps, labels = session.run(None, {"images": test})
    ones = [test[i : i + 1] for i in range(min(args.repeats, len(test)))]
    batch = [test[: args.batch]] * 5
    python_1 = _timed(lambda x: predict_anomaly_maps(pipe, x), ones)
    onnx_1 = _timed(lambda x: session.run(None, {"images": x}), ones)
    python_b = _timed(lambda x: predict_anomaly_maps(pipe, x), batch)
    onnx_b = _timed(lambda x: session.run(None, {"images": x}), batch)
    return {
        "method": method,
        "graph_mib": os.path.getsize(path) / 2**20,
        "python_latency_ms": 1e3 * python_1,
        "onnx_latency_ms": 1e3 * onnx_1,
        "python_images_per_s": len(batch[0]) / python_b,
        "onnx_images_per_s": len(batch[0]) / onnx_b,
        "max_score_rel_diff": float(np.max(np.abs(scores - reference.scores) / reference.scores)),
        "max_map_diff_over_range": float(
            np.abs(maps - reference.maps).max() / np.ptp(reference.maps)
        ),
        "labels_identical": bool(np.array_equal(labels, reference.labels)),
    }


def write(rows, args):
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "threads": args.threads,
        "args": vars(args),
    }
    (ROOT / "results" / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    lines = [
        f"ONNX (onnxruntime, CPU) against the Python pipeline: {args.backbone}, "
        f"{args.image_size} px, {args.n_train} training images, {args.n_test} test images, "
        f"intra-op threads: {args.threads}; {meta['machine']}, {meta['date']}.",
        "",
        "| detector | Python batch 1 (ms) | ONNX batch 1 (ms) | Python batch "
        f"{args.batch} (img/s) | ONNX batch {args.batch} (img/s) | graph (MiB) "
        "| max score rel. diff | max map diff / range | labels identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['python_latency_ms']:.1f} | {r['onnx_latency_ms']:.1f} "
            f"| {r['python_images_per_s']:.1f} | {r['onnx_images_per_s']:.1f} "
            f"| {r['graph_mib']:.1f} | {r['max_score_rel_diff']:.1e} "
            f"| {r['max_map_diff_over_range']:.1e} | {r['labels_identical']} |"
        )
    (ROOT / "results" / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train, test = load_images(args)
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(method, args, train, test, folder) for method in args.detectors]
    write(rows, args)


if __name__ == "__main__":
    main()
