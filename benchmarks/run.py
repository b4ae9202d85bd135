"""Benchmark sklearn_memad's detectors on an MVTec-layout folder, optionally next to anomalib.

One command measures, for each detector in its standard pipeline, image AUROC, pixel AUROC,
AUPRO and F1-max on the test split; fit seconds split into feature extraction, memory building
(and within it PatchCore's coreset) and calibration; scoring ms per image with the backbone's
share; peak RSS of fit and score; and the fitted memory's bytes. Each detector runs in a fresh
process so that peak RSS is its own. With ``--peer``, anomalib's torch models run on the same
images (``benchmarks/anomalib_peer.py`` in ``benchmarks/.venv-anomalib``, set up by
``benchmarks/setup_anomalib.sh``), and the ratios sklearn_memad / anomalib are printed.

Examples::

    # accuracy: full training set, offline pretrained EfficientNet-Lite0
    python benchmarks/run.py --backbone efficientnet_lite0 --image-size 256 --name accuracy

    # speed and memory next to anomalib: random-init resnet18, 200 training images, 256 px
    python benchmarks/run.py --backbone resnet18 --weights none --n-train 200 \\
        --image-size 256 --peer --name peer
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from anomalib_peer import Phase  # noqa: E402  (the same measuring code on both sides)

DEFAULT_DATA = HERE.parents[1] / "shared" / "data" / "mtd"
PEER_PYTHON = HERE / ".venv-anomalib" / "bin" / "python"

# Layers of each pipeline for each backbone family (the standard pipelines of the issue).
LAYERS = {
    "resnet": {
        "padim": ("layer1", "layer2", "layer3"),
        "patchcore": ("layer2", "layer3"),
        "dfkde": ("layer2", "layer3"),
    },
    "efficientnet_lite": {
        "padim": ("_blocks.2", "_blocks.4", "_blocks.10"),
        "patchcore": ("_blocks.4", "_blocks.10"),
        "dfkde": ("_blocks.4", "_blocks.10"),
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--n-train", type=int, default=None, help="training images (default: all)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default: all)")
    p.add_argument("--image-size", default="256", help="side, or HxW (e.g. 256x384)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument(
        "--weights", default="DEFAULT", help="'DEFAULT', a weights name, a path or 'none'"
    )
    p.add_argument("--layers", nargs="+", default=None, help="override every pipeline's layers")
    p.add_argument("--detectors", nargs="+", default=["padim", "patchcore", "dfkde"])
    p.add_argument("--coreset-ratio", type=float, default=0.01)
    p.add_argument("--n-neighbors", type=int, default=1, help="our PatchCore's neighbours")
    p.add_argument(
        "--search",
        choices=["exact", "approximate"],
        default="exact",
        help="our PatchCore's neighbour search (approximate: pynndescent; scores change)",
    )
    p.add_argument(
        "--peer-n-neighbors",
        type=int,
        default=9,
        help="anomalib's num_neighbors (its patch scores are 1-NN; this is its re-weighting set)",
    )
    p.add_argument(
        "--aggregation", type=int, default=3, help="PatchCore's LocalAggregation size (3 x 3)"
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=1,
        help="image score: mean of the top_k largest patch scores (1: the max), every detector",
    )
    p.add_argument(
        "--border",
        type=int,
        default=0,
        help="outer rings of patches left out of the image score, every detector",
    )
    p.add_argument("--padim-components", type=int, default=100)
    p.add_argument("--dfkde-components", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--score-repeats",
        type=int,
        default=3,
        help="scoring passes timed on both sides (the median counts); the first gives the results",
    )
    p.add_argument("--peer", action="store_true", help="also run anomalib on the same images")
    p.add_argument(
        "--name", default="latest", help="results go to benchmarks/results/NAME.{json,md}"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--arrays", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def image_size(text):
    parts = [int(v) for v in str(text).lower().split("x")]
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def layers_for(args, detector):
    if args.layers:
        return tuple(args.layers)
    family = "efficientnet_lite" if args.backbone.startswith("efficientnet_lite") else "resnet"
    return LAYERS[family][detector]


def build_pipeline(args, detector):
    from sklearn.pipeline import make_pipeline

    from sklearn_memad import (
        DFKDEDetector,
        FeatureTransformer,
        LocalAggregation,
        PaDiMDetector,
        PatchCoreDetector,
        RandomProjection,
    )

    weights = None if args.weights.lower() == "none" else args.weights
    features = FeatureTransformer(
        backbone=args.backbone,
        layers=layers_for(args, detector),
        weights=weights,
        image_size=None,  # the images are already at the benchmark size
        # PaDiM's random channel subset, picked inside the feature step before resampling.
        max_features=args.padim_components if detector == "padim" else None,
        batch_size=args.batch_size,
        random_state=0,
    )
    if detector == "padim":
        steps = [PaDiMDetector(top_k=args.top_k, border=args.border)]
    elif detector == "patchcore":
        steps = [
            LocalAggregation(args.aggregation),
            PatchCoreDetector(
                coreset_ratio=args.coreset_ratio,
                n_neighbors=args.n_neighbors,
                search=args.search,
                top_k=args.top_k,
                border=args.border,
                random_state=0,
            ),
        ]
    else:
        steps = [
            RandomProjection(args.dfkde_components, random_state=0),
            DFKDEDetector(top_k=args.top_k, border=args.border),
        ]
    return make_pipeline(features, *steps)


def prebuild_backbone(features):
    """Build ``features``' network as its ``fit`` would (same seed), without a forward pass.

    ``FeatureTransformer`` caches the network under its parameters and seed, so the following
    ``fit`` reuses it.
    """
    from sklearn.utils import check_random_state

    seed = int(check_random_state(features.random_state).randint(np.iinfo(np.int32).max))
    features._get_extractor(seed)


class _Clock:
    """Accumulates the wall time spent inside one function (patched in for the run)."""

    def __init__(self, owner, name):
        self.seconds = 0.0
        original = getattr(owner, name)

        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.seconds += time.perf_counter() - start

        setattr(owner, name, timed)


def run_worker(args):
    """Fit and score one detector in this process; print its JSON record."""
    import torch

    import sklearn_memad.detectors._patchcore as patchcore_module
    from sklearn_memad.detectors import BaseMemoryDetector, image_scores_from_patches
    from sklearn_memad.maps import patch_to_pixel_maps
    from sklearn_memad.metrics import aupro, f1_max, image_auroc, pixel_auroc

    arrays = Path(args.arrays)
    train = np.load(arrays / "train.npy")
    test = np.load(arrays / "test.npy")
    labels = np.load(arrays / "labels.npy")
    masks = np.load(arrays / "masks.npy")
    detector = args.worker

    coreset = _Clock(patchcore_module, "greedy_coreset")
    projection = _Clock(patchcore_module, "project_for_coreset")
    calibration = _Clock(BaseMemoryDetector, "_calibrate")
    pipe = build_pipeline(args, detector)
    features, rest = pipe[0], pipe[1:]
    oos = _Clock(type(rest[-1]), "_out_of_sample_patch_scores")

    # The peer imports its libraries (timm, torchvision, anomalib's models) before its clocks;
    # so do we, so that neither side's fit time holds import time.
    import torchvision.models  # noqa: F401

    # The whole pipeline is fitted on the images, as a user would: a grid set is then freed
    # as soon as the next step has made its own (holding the feature grids here through the
    # detector's fit added 315 MB to PatchCore's peak). Clocks split the time by step.
    # anomalib's network is built before its fit phase starts, so that phase's RSS growth
    # leaves the weights out; ours is built (and cached) the same way here, and the fit below
    # finds it. The whole fit time adds the build back on both sides.
    t0 = time.perf_counter()
    prebuild_backbone(features)
    prebuild_seconds = time.perf_counter() - t0
    build = _Clock(type(features), "fit")  # checks, then one probe image through the network
    extraction = _Clock(type(features), "transform")
    with Phase() as fit_phase:
        pipe.fit(train)
    build_seconds, feature_seconds = prebuild_seconds + build.seconds, extraction.seconds
    fit_seconds = prebuild_seconds + fit_phase.seconds
    memory_seconds = (
        fit_phase.seconds - build.seconds - feature_seconds - oos.seconds - calibration.seconds
    )

    def score_pass():
        backbone = 0.0
        scores, maps = [], []
        for start in range(0, len(test), args.batch_size):
            batch = test[start : start + args.batch_size]
            t0 = time.perf_counter()
            grids = features.transform(batch)
            backbone += time.perf_counter() - t0
            # One detector pass gives both the image scores and the pixel maps.
            if len(rest) > 1:
                grids = rest[:-1].transform(grids)
            patches = rest[-1].score_patches(grids)
            scores.append(-image_scores_from_patches(patches, rest[-1].top_k, rest[-1].border))
            maps.append(patch_to_pixel_maps(patches, test.shape[1:3]))
        return scores, maps, backbone

    with Phase() as score_phase:
        scores, maps, backbone = score_pass()
    # Timing-only passes, as on the peer's side: the scoring time is the median pass, and the
    # detector share is that of the median pass.
    passes = [(score_phase.seconds, backbone)]
    for _ in range(args.score_repeats - 1):
        t0 = time.perf_counter()
        pass_backbone = score_pass()[2]
        passes.append((time.perf_counter() - t0, pass_backbone))
    median_seconds, median_backbone = sorted(passes)[len(passes) // 2]
    scores = np.concatenate(scores)
    maps = np.concatenate(maps)
    anomaly = -scores
    model = rest[-1]
    record = {
        "library": "sklearn_memad",
        "detector": detector,
        "layers": list(layers_for(args, detector)),
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "image_auroc": image_auroc(labels, anomaly),
        "pixel_auroc": pixel_auroc(masks, maps),
        "aupro": aupro(masks[labels == -1], maps[labels == -1]) if (labels == -1).any() else None,
        "f1_max": f1_max(labels, anomaly),
        "fit_seconds": fit_seconds,
        "fit_build_seconds": build_seconds,
        "fit_feature_seconds": feature_seconds,
        "fit_without_build_seconds": fit_seconds - build_seconds,
        "fit_memory_seconds": memory_seconds,
        "coreset_seconds": coreset.seconds + projection.seconds,
        "calibration_seconds": oos.seconds + calibration.seconds,
        "score_seconds": score_phase.seconds,
        "score_pass_seconds": [seconds for seconds, _ in passes],
        "score_ms_per_image": 1e3 * median_seconds / len(test),
        "score_backbone_seconds": median_backbone,
        "detector_share_of_scoring": 1 - median_backbone / median_seconds,
        "peak_rss_fit_bytes": fit_phase.peak_rss,
        "peak_rss_score_bytes": score_phase.peak_rss,
        # Growth over the phase's starting RSS: excludes what importing torch and building the
        # network cost both libraries alike.
        "peak_rss_fit_delta_bytes": fit_phase.peak_rss - fit_phase.rss_start,
        "peak_rss_score_delta_bytes": score_phase.peak_rss - score_phase.rss_start,
        "memory_bytes": int(model.memory_bytes_),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(record))


def load_arrays(args, folder):
    from sklearn_memad.datasets import load_mvtec

    size = image_size(args.image_size)
    train = load_mvtec(args.data, "train", image_size=size)
    test = load_mvtec(args.data, "test", image_size=size)
    train_idx = _spread(len(train.labels), args.n_train)
    test_idx = _spread(len(test.labels), args.n_test)
    np.save(folder / "train.npy", train.images[train_idx])
    np.save(folder / "test.npy", test.images[test_idx])
    np.save(folder / "labels.npy", test.labels[test_idx])
    np.save(folder / "masks.npy", test.masks[test_idx])
    return len(train_idx), len(test_idx)


def _spread(n, k):
    """``k`` indices spread evenly over ``n`` sorted files (all when k is None)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, k).astype(int)


def run_ours(args, folder, detector):
    cmd = [sys.executable, __file__, "--worker", detector, "--arrays", str(folder)]
    cmd += _forwarded(args)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _forwarded(args):
    out = [
        "--backbone",
        args.backbone,
        "--weights",
        args.weights,
        "--batch-size",
        str(args.batch_size),
        "--score-repeats",
        str(args.score_repeats),
        "--coreset-ratio",
        str(args.coreset_ratio),
        "--n-neighbors",
        str(args.n_neighbors),
        "--search",
        args.search,
        "--padim-components",
        str(args.padim_components),
        "--dfkde-components",
        str(args.dfkde_components),
        "--aggregation",
        str(args.aggregation),
        "--top-k",
        str(args.top_k),
    ]
    if args.layers:
        out += ["--layers", *args.layers]
    return out


def run_peer(args, folder, detector):
    if not PEER_PYTHON.exists():
        raise SystemExit("anomalib venv missing: run `bash benchmarks/setup_anomalib.sh` first")
    result = folder / f"peer_{detector}.json"
    layers = layers_for(args, detector)
    cmd = [
        str(PEER_PYTHON),
        str(HERE / "anomalib_peer.py"),
        "--model",
        detector,
        "--train",
        str(folder / "train.npy"),
        "--test",
        str(folder / "test.npy"),
        "--test-labels",
        str(folder / "labels.npy"),
        "--backbone",
        args.backbone,
        "--layers",
        *layers,
        "--pretrained",
        "false",
        "--coreset-ratio",
        str(args.coreset_ratio),
        "--n-neighbors",
        str(args.peer_n_neighbors),
        "--batch-size",
        str(args.batch_size),
        "--score-repeats",
        str(args.score_repeats),
        "--out",
        str(result),
    ]
    if detector == "padim":
        cmd += ["--n-features", str(args.padim_components)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    peer = json.loads(result.read_text())
    # anomalib builds its network before fit, sklearn_memad inside fit: the whole fit of both
    # includes the build, and "without build" excludes it on both sides.
    peer["fit_without_build_seconds"] = peer["fit_seconds"]
    peer["fit_seconds"] = peer["fit_seconds"] + peer["model_build_seconds"]
    return peer


RATIOS = [  # (our key, peer key, label)
    ("fit_seconds", "fit_seconds", "fit time (with building the backbone)"),
    ("fit_without_build_seconds", "fit_without_build_seconds", "fit time without the build"),
    ("fit_memory_seconds", "fit_memory_seconds", "memory building time"),
    ("coreset_seconds", "coreset_seconds", "coreset time"),
    ("score_ms_per_image", "score_ms_per_image", "scoring ms / image"),
    ("peak_rss_fit_bytes", "peak_rss_fit_bytes", "peak RSS, fit"),
    ("peak_rss_score_bytes", "peak_rss_score_bytes", "peak RSS, score"),
    ("peak_rss_fit_delta_bytes", "peak_rss_fit_delta_bytes", "peak RSS growth, fit"),
    ("peak_rss_score_delta_bytes", "peak_rss_score_delta_bytes", "peak RSS growth, score"),
    ("memory_bytes", "memory_bytes", "fitted memory bytes"),
]


def markdown(results, peers, meta):
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; {meta['n_train']} training and "
        f"{meta['n_test']} test images at {meta['image_size']}; backbone "
        f"{meta['backbone']} (weights {meta['weights']}).",
        "",
    ]
    head = (
        "| detector | image AUROC | pixel AUROC | AUPRO | F1-max | fit s (build + features"
        " + memory + calibration) | coreset s | score ms/img (detector share) | peak RSS fit /"
        " score MiB | memory MiB |"
    )
    lines += [head, "|" + "---|" * 10]
    for r in results:
        aupro = "-" if r["aupro"] is None else f"{r['aupro']:.3f}"
        lines.append(
            f"| {r['detector']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {aupro} | "
            f"{r['f1_max']:.3f} | {r['fit_seconds']:.1f} ({r['fit_build_seconds']:.1f} + "
            f"{r['fit_feature_seconds']:.1f} + "
            f"{r['fit_memory_seconds']:.1f} + {r['calibration_seconds']:.1f}) | "
            f"{r['coreset_seconds']:.2f} | {r['score_ms_per_image']:.1f} "
            f"({100 * r['detector_share_of_scoring']:.0f}%) | "
            f"{r['peak_rss_fit_bytes'] / 2**20:.0f} / {r['peak_rss_score_bytes'] / 2**20:.0f} | "
            f"{r['memory_bytes'] / 2**20:.1f} |"
        )
    if peers:
        lines += [
            "",
            "anomalib 2.7 on the same images (ratio = sklearn_memad / anomalib; "
            "below 1 is better for time and memory):",
            "",
            "| detector | quantity | sklearn_memad | anomalib | ratio |",
            "|---|---|---|---|---|",
        ]
        for r in results:
            peer = peers.get(r["detector"])
            if not peer:
                continue
            for ours_key, peer_key, label in RATIOS:
                a, b = r.get(ours_key), peer.get(peer_key)
                if not a or not b:
                    continue
                lines.append(
                    f"| {r['detector']} | {label} | {_fmt(ours_key, a)} | "
                    f"{_fmt(ours_key, b)} | {a / b:.2f} |"
                )
            if peer.get("image_auroc") is not None:
                lines.append(
                    f"| {r['detector']} | image AUROC | {r['image_auroc']:.3f} | "
                    f"{peer['image_auroc']:.3f} | - |"
                )
    return "\n".join(lines) + "\n"


def _fmt(key, value):
    return f"{value / 2**20:.1f} MiB" if key.endswith("bytes") else f"{value:.2f}"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n_train, n_test = load_arrays(args, folder)
        results, peers = [], {}
        for detector in args.detectors:
            results.append(run_ours(args, folder, detector))
            print(json.dumps(results[-1]), flush=True)
            if args.peer:
                peers[detector] = run_peer(args, folder, detector)
                print(json.dumps(peers[detector]), flush=True)
    meta = {
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "n_train": n_train,
        "n_test": n_test,
        "image_size": "x".join(map(str, image_size(args.image_size))),
        "backbone": args.backbone,
        "weights": args.weights,
    }
    (out_dir / f"{args.name}.json").write_text(
        json.dumps({"meta": meta, "sklearn_memad": results, "anomalib": peers}, indent=1)
    )
    table = markdown(results, peers, meta)
    (out_dir / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
