"""Many part numbers, one camera: one MultiCategoryDetector against one pipeline per category.

``--categories`` categories are made from Magnetic-Tile tiles: category ``c`` gets its own
``--n-train`` training tiles and ``--n-test`` test tiles (disjoint slices of the sorted files;
test tiles of every kind), turned by the ``c % 8``-th flip or quarter turn so that the parts
look different. Both variants use the standard pipeline's settings
(:func:`~sklearn_memad.pipelines.make_detector_pipeline`; EfficientNet-Lite0 with its ImageNet
weights, 256 px, by default):

- ``one``: a :class:`~sklearn_memad.MultiCategoryDetector` of the pipeline's feature step and
  the rest of it as the head: one backbone, one head per category, one model file;
- ``separate``: one fitted pipeline per category, one model file each, as a user would keep
  them without it; each category's images scored by its own pipeline.

Each variant runs in fresh processes. A ``fit`` process reads the training images, fits (timed),
records its peak RSS growth (VmHWM, reset after reading, minus the RSS before fitting) and
saves the model file(s). A ``score`` process reads the test images (the categories
interleaved), then loads the model file(s), scores every image once (the first call also
builds the backbones) and ``--repeats`` times more (warm: the fastest of them), timed; it
records the peak RSS growth from before
loading to the end, the RSS still held after scoring, and the bytes the models hold:
backbone weights (parameters and buffers, once per backbone built) and detector memories
(``memory_bytes_``). The two variants' scores are compared. Before each process the script
waits until the one-minute load average is below ``--max-load`` (at most ``--max-wait`` s).

Example::

    python benchmarks/categories.py --categories 20 --n-train 10 --n-test 5
"""

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_quality import DEFAULT_DATA, load_average, run_meta  # noqa: E402
from streaming import (  # noqa: E402
    _augmented,
    _status_bytes,
    run_worker_process,
    wait_for_quiet,
)

MIB = 1 << 20
VARIANTS = ("one", "separate")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MVTec-layout folder")
    p.add_argument("--categories", type=int, default=20)
    p.add_argument("--n-train", type=int, default=10, help="training images per category")
    p.add_argument("--n-test", type=int, default=5, help="test images per category")
    p.add_argument("--method", choices=["patchcore", "padim", "dfkde"], default="patchcore")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="DEFAULT", help="'DEFAULT', a path or 'none'")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16, help="images per backbone pass")
    p.add_argument("--repeats", type=int, default=3, help="warm scoring calls timed")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each process")
    p.add_argument("--max-load", type=float, default=1.5)
    p.add_argument("--max-wait", type=float, default=300.0, help="seconds to wait for quiet")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per process")
    p.add_argument("--name", default="categories")
    p.add_argument("--worker", choices=["fit", "score"], help=argparse.SUPPRESS)
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- worker side
def category_images(args, split):
    """(images, category names) of ``split``; the test categories interleaved."""
    from sklearn_memad.datasets import image_files, read_images, training_files

    if split == "train":
        files, per_category = training_files(args.data), args.n_train
    else:
        files, per_category = image_files(Path(args.data) / "test", recursive=True), args.n_test
    needed = args.categories * per_category
    if needed > len(files):
        raise SystemExit(f"{needed} {split} images asked; {args.data} has {len(files)}")
    size = (args.image_size, args.image_size)
    images, _, skipped = read_images(sorted(files)[:needed], size)
    if skipped:
        raise SystemExit(f"unreadable files: {skipped}")
    names = np.repeat([f"part{c:02d}" for c in range(args.categories)], per_category)
    turns = np.repeat(np.arange(args.categories) % 8, per_category)
    images = np.stack([_augmented(image, int(turn)) for image, turn in zip(images, turns)])
    if split == "test":  # images of one category rarely come in a row on a line
        order = np.argsort(np.tile(np.arange(per_category), args.categories), kind="stable")
        images, names = images[order], names[order]
    return images, names


def template(args):
    from sklearn_memad.pipelines import make_detector_pipeline

    return make_detector_pipeline(
        args.method,
        backbone=args.backbone,
        weights=None if args.weights.lower() == "none" else args.weights,
        image_size=args.image_size,
        batch_size=args.batch_size,
    )


def _reset_peak():
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS, so the peak read later is what follows
    return _status_bytes("VmRSS")


def run_fit(args):
    from sklearn.base import clone

    from sklearn_memad import MultiCategoryDetector
    from sklearn_memad.persistence import save_model

    images, names = category_images(args, "train")
    pipe, folder = template(args), Path(args.folder)
    rss_before = _reset_peak()
    start = time.perf_counter()
    if args.variant == "one":
        head = pipe[1:] if len(pipe.steps) > 2 else pipe[-1]
        models = {"all": MultiCategoryDetector(pipe[0], head).fit(images, categories=names)}
    else:
        models = {c: clone(pipe).fit(images[names == c]) for c in np.unique(names).tolist()}
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    for key, model in models.items():
        save_model(model, folder / f"{args.variant}_{key}.safetensors")
    files = folder.glob(f"{args.variant}_*.safetensors")
    return {
        "n_images": len(images),
        "fit_seconds": seconds,
        "fit_growth_bytes": peak - rss_before,
        "files": len(models),
        "file_bytes": sum(path.stat().st_size for path in files),
    }


def held_bytes(models):
    """(backbone bytes, detector bytes, backbones built) held by the loaded models."""
    from sklearn_memad import MultiCategoryDetector
    from sklearn_memad.utils.pipeline import model_parts

    transformers, detectors = [], []
    for model in models.values():
        if isinstance(model, MultiCategoryDetector):
            transformers.append(model.features_)
            detectors += [model_parts(head).detector for head in model.heads_.values()]
        else:
            transformers.append(model[0])
            detectors.append(model_parts(model).detector)
    built = [ft.feature_extractor().model for ft in transformers if "_extractor_cache" in vars(ft)]
    weights = sum(
        tensor.numel() * tensor.element_size()
        for network in built
        for tensor in [*network.parameters(), *network.buffers()]
    )
    return weights, sum(int(d.memory_bytes_) for d in detectors), len(built)


def _score(models, images, names):
    if "all" in models:
        return models["all"].score_samples(images, categories=names)
    scores = np.empty(len(images))
    for category, model in models.items():
        rows = names == category
        scores[rows] = model.score_samples(images[rows])
    return scores


def run_score(args):
    from sklearn_memad.persistence import load_model

    images, names = category_images(args, "test")
    folder = Path(args.folder)
    rss_before = _reset_peak()
    start = time.perf_counter()
    paths = sorted(folder.glob(f"{args.variant}_*.safetensors"))
    models = {path.stem.split("_", 1)[1]: load_model(path) for path in paths}
    loaded = time.perf_counter()
    scores = _score(models, images, names)
    first = time.perf_counter()
    warm = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        np.testing.assert_array_equal(_score(models, images, names), scores)
        warm.append(time.perf_counter() - began)
    peak = _status_bytes("VmHWM")
    gc.collect()
    backbone_bytes, detector_bytes, backbones = held_bytes(models)
    np.save(folder / f"{args.variant}_scores.npy", scores)
    return {
        "n_images": len(images),
        "load_seconds": loaded - start,
        "first_score_seconds": first - loaded,
        "warm_score_seconds": min(warm),
        "score_growth_bytes": peak - rss_before,
        "held_rss_bytes": _status_bytes("VmRSS") - rss_before,
        "backbone_bytes": backbone_bytes,
        "detector_bytes": detector_bytes,
        "backbones_built": backbones,
    }


def run_worker(args):
    import torch

    torch.set_num_threads(args.threads)
    record = run_fit(args) if args.worker == "fit" else run_score(args)
    record.update(worker=args.worker, variant=args.variant, torch_threads=args.threads)
    print(json.dumps(record))


# ----------------------------------------------------------------------------- driver side
def run_one(args, worker, variant, folder):
    load, _ = wait_for_quiet(args.max_load, args.max_wait)
    cmd = [sys.executable, __file__, "--worker", worker, "--variant", variant]
    cmd += ["--folder", str(folder), "--data", args.data, "--method", args.method]
    cmd += ["--categories", str(args.categories), "--n-train", str(args.n_train)]
    cmd += ["--n-test", str(args.n_test), "--backbone", args.backbone, "--weights", args.weights]
    cmd += ["--image-size", str(args.image_size), "--threads", str(args.threads)]
    cmd += ["--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
    record = run_worker_process(cmd, args.timeout, load)
    print(json.dumps(record), flush=True)
    return record


def _cell(record, key, scale=1.0, fmt=".1f"):
    if "failed" in record or key not in record:
        return "-"
    return format(record[key] / scale, fmt)


def markdown(meta, results, difference):
    lines = [
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; date {meta['date']}; load {meta['load_start']} at the "
        f"start, {meta['load_end']} at the end; {meta['threads']} torch thread(s) per process. "
        f"{meta['categories']} categories of MTD tiles (a flip or quarter turn each), "
        f"{meta['n_train']} training and {meta['n_test']} test images per category, the "
        f"standard {meta['method']} pipeline ({meta['backbone']}, weights {meta['weights']}, "
        f"{meta['image_size']} px, {meta['batch_size']} images per backbone pass). Warm "
        f"scoring: the fastest of {meta['repeats']} calls after the first. one: a "
        "MultiCategoryDetector, one backbone and one model file; separate: one pipeline and "
        "one model file per category. Every cell from fresh processes: fit in one, load and "
        "score in another.",
        "",
        "| variant | model files | file MiB | fit s | fit peak growth MiB | load s "
        "| first scoring s | warm scoring s | scoring peak growth MiB | RSS held MiB "
        "| backbones | backbone weights MiB | detector memories MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        fit, score = results[variant]["fit"], results[variant]["score"]
        cells = [
            _cell(fit, "files", fmt=".0f"),
            _cell(fit, "file_bytes", MIB),
            _cell(fit, "fit_seconds"),
            _cell(fit, "fit_growth_bytes", MIB, ".0f"),
            _cell(score, "load_seconds", fmt=".2f"),
            _cell(score, "first_score_seconds", fmt=".2f"),
            _cell(score, "warm_score_seconds", fmt=".2f"),
            _cell(score, "score_growth_bytes", MIB, ".0f"),
            _cell(score, "held_rss_bytes", MIB, ".0f"),
            _cell(score, "backbones_built", fmt=".0f"),
            _cell(score, "backbone_bytes", MIB),
            _cell(score, "detector_bytes", MIB),
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    shown = "not compared" if difference is None else f"{difference:.2g}"
    lines += ["", f"Largest absolute difference between the two variants' scores: {shown}."]
    for variant, records in results.items():
        for worker, record in records.items():
            if "failed" in record:
                lines.append(f"- {variant} {worker} failed: {record['failed']}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    load_start = load_average()
    results, difference = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            fit = run_one(args, "fit", variant, tmp)
            score = {"failed": "not run"} if "failed" in fit else None
            results[variant] = {"fit": fit, "score": score or run_one(args, "score", variant, tmp)}
        found = [Path(tmp) / f"{variant}_scores.npy" for variant in VARIANTS]
        if all(path.exists() for path in found):
            one, separate = (np.load(path) for path in found)
            difference = float(np.max(np.abs(one - separate)))
    meta = {
        **run_meta("categories", argv, load_start),
        **{key: getattr(args, key) for key in ("categories", "n_train", "n_test", "method")},
        **{key: getattr(args, key) for key in ("backbone", "weights", "image_size", "threads")},
        **{key: getattr(args, key) for key in ("batch_size", "repeats")},
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    result = {"meta": meta, "results": results, "max_score_difference": difference}
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    table = markdown(meta, results, difference)
    (out / f"{args.name}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
