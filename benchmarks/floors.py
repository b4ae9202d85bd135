"""What the issue's share and RSS targets leave once the work both libraries share is counted.

Two measurements, each against the latest peer run's numbers (``--peer-results``, default
``benchmarks/results/peer_resnet18_random_fifth.json``):

* **Detector share.** Floating-point operations of the backbone (random-init resnet18 to
  ``layer3`` at the benchmark's size, counted by ``torch.utils.flop_counter``) and of
  PatchCore's exact 1-NN product (``queries x bank x d``); both timed here, the backbone as
  the benchmark's clock sees it (``FeatureTransformer.transform`` of one batch) and the search
  as the detector runs it (``NearestNeighborSearch.kneighbors`` on a random bank of the
  benchmark's shape). The share the search alone takes is a floor under the detector's share.
* **RSS floor.** A fresh process imports torch, torchvision, scikit-learn and sklearn_memad,
  builds the benchmark's backbone and extracts one batch of features, reading VmRSS after
  each step and VmHWM at the end. Any process that scores with that backbone pays this; the
  bound 0.6 x anomalib's peak is printed next to it.

::

    python benchmarks/floors.py
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MIB = 1 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--bank", type=int, default=2048, help="PatchCore entries (1 %% of 200 images)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument(
        "--peer-results", default=str(HERE / "results" / "peer_resnet18_random_fifth.json")
    )
    p.add_argument("--rss-worker", nargs="*", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _rss(field="VmRSS"):
    # anomalib_peer._status_bytes reads the same field, but importing that module imports
    # torch, and the worker's first reading must come before torch.
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return -1


def _median_seconds(run, repeats):
    run()  # warm-up: first calls touch code pages and allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def rss_worker(image_size, batch_size, layers):
    """Print, as JSON, this fresh process's RSS after each shared step."""
    steps = {"start": _rss()}
    import torch  # noqa: F401

    steps["import torch"] = _rss()
    import torchvision  # noqa: F401

    steps["import torchvision"] = _rss()
    import sklearn  # noqa: F401

    from sklearn_memad import FeatureTransformer

    steps["import scikit-learn, sklearn_memad"] = _rss()
    images = np.random.default_rng(0).integers(
        0, 256, (batch_size, image_size, image_size, 3), dtype=np.uint8
    )
    features = FeatureTransformer(
        backbone="resnet18",
        layers=layers,
        weights=None,
        image_size=None,
        batch_size=batch_size,
    ).fit(images[:1])
    steps["build the backbone"] = _rss()
    features.transform(images)
    steps["features of one batch"] = _rss()
    steps["peak (VmHWM)"] = _rss("VmHWM")
    print(json.dumps(steps))


def share_floor(args):
    from torch.utils.flop_counter import FlopCounterMode

    from sklearn_memad import FeatureTransformer
    from sklearn_memad.neighbors._search import NearestNeighborSearch

    rng = np.random.default_rng(0)
    images = rng.integers(
        0, 256, (args.batch_size, args.image_size, args.image_size, 3), dtype=np.uint8
    )
    features = FeatureTransformer(
        backbone="resnet18",
        layers=("layer2", "layer3"),
        weights=None,
        image_size=None,
        batch_size=args.batch_size,
    ).fit(images[:1])
    grids = features.transform(images)
    n, h, w, d = grids.shape
    with FlopCounterMode(display=False) as counter:
        features.transform(images[:1])
    backbone_flops = counter.get_total_flops()
    search_flops = 2 * h * w * args.bank * d
    bank = rng.standard_normal((args.bank, d), dtype=np.float32)
    search = NearestNeighborSearch(bank)
    queries = grids.reshape(-1, d)
    backbone_s = _median_seconds(lambda: features.transform(images), args.repeats) / n
    search_s = _median_seconds(lambda: search.kneighbors(queries, 1), args.repeats) / n
    return {
        "grid": [h, w, d],
        "backbone_gflop_per_image": backbone_flops / 1e9,
        "search_gflop_per_image": search_flops / 1e9,
        "backbone_ms_per_image": 1e3 * backbone_s,
        "search_ms_per_image": 1e3 * search_s,
        "backbone_gflop_per_s": backbone_flops / 1e9 / backbone_s,
        "search_gflop_per_s": search_flops / 1e9 / search_s,
        "search_share_floor": search_s / (search_s + backbone_s),
        "search_share_at_equal_rates": search_flops / (search_flops + backbone_flops),
    }


def rss_floor(args, layers):
    cmd = [
        sys.executable,
        __file__,
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--rss-worker",
        *layers,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peer_peaks(path):
    """anomalib's peak RSS (fit, score) per detector in the saved peer run, in bytes."""
    try:
        saved = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    return {
        detector: (r["peak_rss_fit_bytes"], r["peak_rss_score_bytes"])
        for detector, r in saved.get("anomalib", {}).items()
    }


def main(argv=None):
    args = parse_args(argv)
    if args.rss_worker is not None:
        rss_worker(args.image_size, args.batch_size, tuple(args.rss_worker))
        return
    share = share_floor(args)
    print(
        f"# detector share floor (resnet18 to layer3, {args.image_size} px, batches of "
        f"{args.batch_size}; PatchCore bank {args.bank} x {share['grid'][2]})"
    )
    print(
        f"backbone: {share['backbone_gflop_per_image']:.2f} GFLOP, "
        f"{share['backbone_ms_per_image']:.1f} ms per image "
        f"({share['backbone_gflop_per_s']:.0f} GFLOP/s)"
    )
    print(
        f"exact 1-NN search: {share['search_gflop_per_image']:.2f} GFLOP, "
        f"{share['search_ms_per_image']:.1f} ms per image "
        f"({share['search_gflop_per_s']:.0f} GFLOP/s)"
    )
    print(
        f"share of scoring taken by the search alone: {100 * share['search_share_floor']:.0f} % "
        f"(at equal GFLOP/s: {100 * share['search_share_at_equal_rates']:.0f} %)"
    )
    peaks = peer_peaks(args.peer_results)
    layer_sets = {"padim": ("layer1", "layer2", "layer3"), "patchcore": ("layer2", "layer3")}
    for detector, layers in layer_sets.items():
        steps = rss_floor(args, layers)
        print(f"\n# RSS floor, {detector}'s backbone ({', '.join(layers)}), fresh process")
        for step, value in steps.items():
            print(f"{step}: {value / MIB:.0f} MiB")
        if detector in peaks:
            fit, score = peaks[detector]
            print(
                f"0.6 x anomalib's peak in {Path(args.peer_results).name}: fit "
                f"{0.6 * fit / MIB:.0f} MiB, score {0.6 * score / MIB:.0f} MiB"
            )


if __name__ == "__main__":
    main()
