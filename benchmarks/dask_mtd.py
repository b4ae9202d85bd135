"""MTD fitted and scored on a Dask LocalCluster of worker processes, against one process.

Every one of MTD's training tiles is fitted (the standard pipeline of ``--method``) and every
test tile scored, from the image files, twice:

* **one process**: ``memad fit``'s way (``pipelines.partial_fit`` over chunks of files read as
  it goes), then scoring in chunks of 64 files with ``maps.predict_anomaly_maps``;
* **cluster**: ``distributed.fit`` and ``distributed.score_samples`` on a
  ``LocalCluster(n_workers, threads_per_worker=1, processes=True)``.

Each run is a fresh subprocess. Reported: wall time of fit and of scoring, peak RSS (VmHWM)
of the one process, of the client and of each worker, the image AUROC of both models, and
the largest relative difference between the cluster's scores and one-process scores of the
*same* model (the one-process model scored on the cluster), which must be float rounding.

::

    python benchmarks/dask_mtd.py --method patchcore --name dask_mtd_patchcore
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MTD = HERE.parent.parent / "shared" / "data" / "mtd"
MIB = 1 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(MTD))
    p.add_argument("--method", default="patchcore", choices=("patchcore", "padim", "dfkde"))
    p.add_argument("--n-workers", type=int, default=2)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=64, help="images per fit chunk / task")
    p.add_argument("--name", default=None)
    p.add_argument("--run", choices=("single", "cluster"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _peak_rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def _files(root):
    from sklearn_memad.datasets import find_images, folder_labels

    train = find_images([Path(root) / "train" / "good"])
    test = find_images([Path(root) / "test"])
    return [str(p) for p in train], [str(p) for p in test], folder_labels(test)


def _run_single(args):
    from sklearn_memad.datasets import read_images
    from sklearn_memad.maps import predict_anomaly_maps
    from sklearn_memad.persistence import save_model
    from sklearn_memad.pipelines import make_detector_pipeline, partial_fit

    train, test, _ = _files(args.data)
    size = (args.image_size, args.image_size)
    pipe = make_detector_pipeline(args.method, image_size=args.image_size)
    start = time.perf_counter()
    for begin in range(0, len(train), args.chunk_size):
        images, _, _ = read_images(train[begin : begin + args.chunk_size], size)
        partial_fit(pipe, images)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = []
    for begin in range(0, len(test), args.chunk_size):
        images, _, _ = read_images(test[begin : begin + args.chunk_size], size)
        scores.append(predict_anomaly_maps(pipe, images).scores)
    score_s = time.perf_counter() - start
    save_model(pipe, args.model)
    return dict(
        fit_s=fit_s,
        score_s=score_s,
        scores=np.concatenate(scores).tolist(),
        peak_rss=_peak_rss(),
        torch_threads=__import__("torch").get_num_threads(),
    )


def _run_cluster(args):
    from distributed import Client, LocalCluster

    from sklearn_memad import distributed
    from sklearn_memad.persistence import load_model
    from sklearn_memad.pipelines import make_detector_pipeline

    train, test, _ = _files(args.data)
    cluster = LocalCluster(n_workers=args.n_workers, threads_per_worker=1, processes=True)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(args.n_workers)
        pipe = make_detector_pipeline(args.method, image_size=args.image_size)
        start = time.perf_counter()
        pipe = distributed.fit(pipe, train, client=client, chunk_size=args.chunk_size)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        result = distributed.score_samples(pipe, test, client=client, chunk_size=args.chunk_size)
        score_s = time.perf_counter() - start
        single = load_model(args.model)
        same_model = distributed.score_samples(
            single, test, client=client, chunk_size=args.chunk_size
        )
        workers = client.run(_peak_rss)
        threads = client.run(lambda: __import__("torch").get_num_threads())
    return dict(
        fit_s=fit_s,
        score_s=score_s,
        scores=result.scores.tolist(),
        single_model_scores=same_model.scores.tolist(),
        peak_rss=_peak_rss(),
        worker_peak_rss=sorted(workers.values()),
        torch_threads=sorted(threads.values()),
    )


def _subprocess(args, run, model):
    argv = [sys.executable, __file__, "--run", run, "--model", model]
    argv += ["--data", args.data, "--method", args.method, "--n-workers", str(args.n_workers)]
    argv += ["--image-size", str(args.image_size), "--chunk-size", str(args.chunk_size)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(args, single, cluster, labels, load):
    from sklearn_memad.metrics import image_auroc

    ones = np.asarray(single["scores"])
    same = np.asarray(cluster["single_model_scores"])
    difference = float(np.max(np.abs(same - ones) / np.maximum(np.abs(ones), 1e-12)))
    workers = " / ".join(f"{b / MIB:.0f}" for b in cluster["worker_peak_rss"])
    rows = [
        "| run | fit s | score s | peak RSS MiB | image AUROC |",
        "|---|---|---|---|---|",
        f"| 1 process (torch threads {single['torch_threads']}) | {single['fit_s']:.1f} | "
        f"{single['score_s']:.1f} | {single['peak_rss'] / MIB:.0f} | "
        f"{image_auroc(labels, ones):.4f} |",
        f"| LocalCluster, {args.n_workers} workers x 1 thread (torch threads "
        f"{cluster['torch_threads']}) | {cluster['fit_s']:.1f} | {cluster['score_s']:.1f} | "
        f"client {cluster['peak_rss'] / MIB:.0f}; workers {workers} | "
        f"{image_auroc(labels, np.asarray(cluster['scores'])):.4f} |",
    ]
    notes = [
        f"Same model scored on the cluster and in one process: largest relative score "
        f"difference {difference:.1e}.",
        f"Load average before the runs: {load}.",
    ]
    return "\n".join(rows), notes, difference


def main(argv=None):
    args = parse_args(argv)
    if args.run:
        run = _run_single if args.run == "single" else _run_cluster
        print(json.dumps(run(args)))
        return
    _, _, labels = _files(args.data)
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    model = str(HERE / "results" / "tmp" / f"dask_mtd_{args.method}.safetensors")
    Path(model).parent.mkdir(parents=True, exist_ok=True)
    single = _subprocess(args, "single", model)
    cluster = _subprocess(args, "cluster", model)
    table, notes, difference = _table(args, single, cluster, labels, load)
    command = "python benchmarks/dask_mtd.py " + " ".join(sys.argv[1:])
    text = "\n\n".join([f"Command: `{command}`", table, "\n".join(notes)])
    print(text)
    if args.name:
        results = HERE / "results"
        (results / f"{args.name}.md").write_text(text + "\n")
        summary = {k: v for k, v in single.items() if k != "scores"}
        clustered = {k: v for k, v in cluster.items() if not k.endswith("scores")}
        payload = dict(single=summary, cluster=clustered, max_relative_difference=difference)
        (results / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
