"""End-to-end figures of the pipelines on one torch device (a CUDA GPU, or the CPU).

Random-initialised torchvision backbones (``weights=None``) and random images, so it runs
anywhere with nothing to download; speed does not depend on the weights. It prints and
writes:

- scoring throughput with maps (``predict_anomaly_maps``: scores, labels and pixel maps)
  of the standard PatchCore, PaDiM and DFKDE pipelines on wide_resnet50_2, layer2 + layer3,
  256 px, fitted on 200 images (PatchCore: 1 % coreset), with the time split into the
  backbone, the aggregation or projection, the detector and the maps;
- batch-1 latency of the resnet18 PatchCore pipeline, scores and maps, median of
  ``--repeats`` calls;
- the fit of a PatchCore detector on 500,000 patches (random features of the width of
  wide_resnet50_2's layer2 + layer3), coreset selection and calibration.

The goals of issue 19 on one H200: at least 1,500 images/s for wide_resnet50_2 PatchCore
with maps, batch-1 latency at most 5 ms, the 500,000-patch fit within 10 s.

::

    python benchmarks/gpu.py --device cuda               # the full setting, on a GPU
    python benchmarks/gpu.py --device cpu --tiny         # a tiny setting: shows it runs

``--tiny`` shrinks every setting (resnet18, 64 px, 24 training images, 5,000 patches).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from merge_quality import load_average, run_meta  # benchmarks/merge_quality.py

from sklearn_memad import PatchCoreDetector
from sklearn_memad.maps import patch_to_pixel_maps, predict_anomaly_maps
from sklearn_memad.pipelines import make_detector_pipeline
from sklearn_memad.utils import devices
from sklearn_memad.utils.devices import resolve_device

ROOT = Path(__file__).resolve().parent
METHODS = ("patchcore", "padim", "dfkde")
FULL = {
    "backbone": "wide_resnet50_2",
    "layers": ("layer2", "layer3"),
    "image_size": 256,
    "n_train": 200,
    "n_test": 1024,
    "batch_size": 64,
    "chunk_size": 256,
    "latency_backbone": "resnet18",
    "fit_patches": 500_000,
    "fit_features": 1536,
}
TINY = {
    **FULL,
    "backbone": "resnet18",
    "image_size": 64,
    "n_train": 24,
    "n_test": 32,
    "batch_size": 16,
    "chunk_size": 32,
    "fit_patches": 5_000,
    "fit_features": 128,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cpu, cuda, cuda:<index> or auto")
    p.add_argument("--tiny", action="store_true", help="a tiny setting, to show it runs")
    p.add_argument("--detectors", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--repeats", type=int, default=50, help="batch-1 calls timed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--accelerator-code",
        action="store_true",
        help="run the accelerator's algorithms (plain coreset selection, large search "
        "blocks) even on the CPU, as the tests do",
    )
    p.add_argument("--name", default=None, help="results file name (default: gpu_<device>)")
    return p.parse_args(argv)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(function, device):
    _sync(device)
    start = time.perf_counter()
    out = function()
    _sync(device)
    return time.perf_counter() - start, out


def _images(n, size, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def throughput(method, setting, device):
    """Fit the standard pipeline, then time ``predict_anomaly_maps`` and its parts."""
    size = setting["image_size"]
    pipe = make_detector_pipeline(
        method,
        backbone=setting["backbone"],
        layers=setting["layers"],
        weights=None,
        image_size=size,
        coreset_ratio=0.01,
        batch_size=setting["batch_size"],
        chunk_size=setting["chunk_size"],
        device=str(device),
    )
    fit_s, _ = _seconds(lambda: pipe.fit(_images(setting["n_train"], size, 0)), device)
    test = _images(setting["n_test"], size, 1)
    predict_anomaly_maps(pipe, test[: setting["batch_size"]])  # warm-up: kernels, caches
    total_s, result = _seconds(lambda: predict_anomaly_maps(pipe, test), device)
    # The same work step by step, on one chunk, to show where the time goes.
    chunk = test[: setting["chunk_size"]]
    steps, grids = {}, chunk
    for name, step in pipe.steps[:-1]:
        steps[name], grids = _seconds(lambda s=step, g=grids: s.transform(g), device)
    detector_s, patch_scores = _seconds(lambda: pipe[-1].score_patches(grids), device)
    maps_s, _ = _seconds(lambda: patch_to_pixel_maps(patch_scores, (size, size)), device)
    per_image_ms = {
        **{name: 1e3 * s / len(chunk) for name, s in steps.items()},
        "detector": 1e3 * detector_s / len(chunk),
        "maps": 1e3 * maps_s / len(chunk),
    }
    return {
        "method": method,
        "fit_s": fit_s,
        "images": len(test),
        "images_per_s": len(test) / total_s,
        "grid": list(grids.shape[1:]),
        "memory_mib": pipe[-1].memory_bytes_ / 2**20,
        "ms_per_image": per_image_ms,
        "maps_shape": list(result.maps.shape),
    }


def latency(setting, device, repeats):
    size = setting["image_size"]
    pipe = make_detector_pipeline(
        "patchcore",
        backbone=setting["latency_backbone"],
        weights=None,
        image_size=size,
        coreset_ratio=0.01,
        device=str(device),
    ).fit(_images(setting["n_train"], size, 0))
    test = _images(repeats + 5, size, 2)
    for i in range(5):
        predict_anomaly_maps(pipe, test[i : i + 1])
    times = [
        _seconds(lambda i=i: predict_anomaly_maps(pipe, test[i : i + 1]), device)[0]
        for i in range(5, 5 + repeats)
    ]
    return {
        "backbone": setting["latency_backbone"],
        "median_ms": 1e3 * float(np.median(times)),
        "p90_ms": 1e3 * float(np.percentile(times, 90)),
    }


def coreset_fit(setting, device):
    """PatchCore's fit (selection and calibration) on random features, 32 x 32 grids."""
    per_image = 32 * 32
    n_images = -(-setting["fit_patches"] // per_image)
    grids = (
        np.random.default_rng(3)
        .normal(size=(n_images, 32, 32, setting["fit_features"]))
        .astype(np.float32)
    )
    detector = PatchCoreDetector(coreset_ratio=0.01, random_state=0, device=str(device))
    detector.fit(grids[:4])  # warm-up
    seconds, _ = _seconds(lambda: detector.fit(grids), device)
    return {
        "patches": int(grids.shape[0] * per_image),
        "features": setting["fit_features"],
        "coreset": int(detector.coreset_.shape[0]),
        "fit_s": seconds,
    }


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


def write(report, name):
    (ROOT / "results" / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Pipelines on {report['device_name']} ({report['setting_name']} setting"
        + (", the accelerator's algorithms)" if report["accelerator_code"] else ")"),
        "",
        f"`{report['meta']['command']}`, {report['meta']['date']}, {report['meta']['machine']}",
        "",
        "| pipeline | images/s with maps | backbone | middle step | detector | maps "
        f"| fit of {report['setting']['n_train']} images |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["throughput"]:
        ms = row["ms_per_image"]
        middle = [v for k, v in ms.items() if k not in ("featuretransformer", "detector", "maps")]
        lines.append(
            f"| {row['method']} | {row['images_per_s']:.1f} | "
            f"{ms['featuretransformer']:.2f} ms | "
            f"{(f'{middle[0]:.2f} ms' if middle else '-')} | {ms['detector']:.2f} ms | "
            f"{ms['maps']:.2f} ms | {row['fit_s']:.1f} s |"
        )
    lat, fit = report["latency"], report["coreset_fit"]
    lines += [
        "",
        f"Batch-1 latency, {lat['backbone']} PatchCore with maps: median "
        f"{lat['median_ms']:.1f} ms, 90th percentile {lat['p90_ms']:.1f} ms.",
        "",
        f"PatchCore fit of {fit['patches']:,} patches ({fit['features']} features, coreset "
        f"{fit['coreset']:,}): {fit['fit_s']:.2f} s.",
        "",
    ]
    (ROOT / "results" / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.accelerator_code:
        devices.is_accelerator = lambda device: True
    setting = TINY if args.tiny else FULL
    report = {
        "device": str(device),
        "device_name": device_name(device),
        "setting_name": "tiny" if args.tiny else "full",
        "setting": setting,
        "accelerator_code": bool(args.accelerator_code or devices.is_accelerator(device)),
        "throughput": [throughput(method, setting, device) for method in args.detectors],
        "latency": latency(setting, device, args.repeats),
        "coreset_fit": coreset_fit(setting, device),
    }
    report["meta"] = run_meta("gpu", argv, load_start)
    write(report, args.name or f"gpu_{device.type}{'_tiny' if args.tiny else ''}")


if __name__ == "__main__":
    main()
