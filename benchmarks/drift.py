"""Drift alarms on real images: how often ``DriftMonitor`` cries wolf, and how fast it sees
a change of the camera or the material.

The model is what ``memad fit --train MTD/train/good`` builds (the standard PatchCore
pipeline, EfficientNet-Lite0 at 256 px, fitted on all of MTD's training tiles); its monitor
is ``DriftMonitor.from_model`` with the default settings (KS blocks of 50 at alpha 0.001, a
CUSUM with a run length of 10,000). The production images are MTD's held-out ``test/good``
tiles, scored as they are and changed at the model's input size (256 x 256): 10 % brighter,
gamma 1.3, a Gaussian blur of sigma 1.5 px, and a camera shift of 8 px (the content moved 8
px right and down, the edge repeated).

Streams are drawn from the scores with replacement (the held-out tiles are too few for long
streams): for the false alarms, ``--streams`` streams of ``--length`` unchanged images; for
each change, ``--streams`` streams of ``--before`` unchanged images followed by changed ones,
and the number of changed images until the first alarm.

::

    python benchmarks/drift.py
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sklearn_memad.datasets import image_files, read_images
from sklearn_memad.monitoring import DriftMonitor
from sklearn_memad.pipelines import make_detector_pipeline

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_quality import DEFAULT_DATA, load_average, run_meta  # noqa: E402

SIZE = 256


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--streams", type=int, default=200)
    p.add_argument("--length", type=int, default=2000, help="images per unchanged stream")
    p.add_argument("--before", type=int, default=100, help="unchanged images before a change")
    p.add_argument("--horizon", type=int, default=1000, help="changed images watched at most")
    p.add_argument(
        "--drift",
        type=float,
        nargs="+",
        default=[0.15],
        help="CUSUM reference values to compare (DriftMonitor's drift)",
    )
    p.add_argument("--name", default="drift")
    return p.parse_args(argv)


def brighter(images):
    return np.clip(images.astype(np.float32) * 1.1, 0, 255).astype(np.uint8)


def gamma(images):
    return (255.0 * (images / 255.0) ** 1.3).round().astype(np.uint8)


def blur(images, sigma=1.5):
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = torch.from_numpy((taps / taps.sum()).astype(np.float32))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    channels = x.shape[1]
    rows = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    cols = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), rows, groups=channels)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), cols, groups=channels)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def shifted(images, pixels=8):
    moved = np.pad(images, ((0, 0), (pixels, 0), (pixels, 0), (0, 0)), mode="edge")
    return moved[:, : images.shape[1], : images.shape[2]]


CHANGES = {
    "brightness +10 %": brighter,
    "gamma 1.3": gamma,
    "blur sigma 1.5": blur,
    "shift 8 px": shifted,
}


def stream_alarms(monitor, scores, rng):
    """The monitor's alarms on one stream, after a reset."""
    monitor.reset()
    return monitor.update(scores).alarms


def false_alarms(monitor, clean, args, rng):
    counts = [
        len(stream_alarms(monitor, rng.choice(clean, args.length), rng))
        for _ in range(args.streams)
    ]
    images = args.streams * args.length
    return {
        "images": images,
        "ks_blocks": images // monitor.window,
        "alarms": int(np.sum(counts)),
        "streams_with_an_alarm": int(np.count_nonzero(counts)),
        "alarms_per_10000_images": 1e4 * float(np.sum(counts)) / images,
        "expected_per_10000_images": 1e4
        * (1 / monitor.run_length + monitor.alpha / monitor.window),
    }


def delays(monitor, clean, changed, args, rng):
    found, early = [], 0
    for _ in range(args.streams):
        stream = np.concatenate(
            [rng.choice(clean, args.before), rng.choice(changed, args.horizon)]
        )
        alarms = stream_alarms(monitor, stream, rng)
        if alarms and alarms[0]["image"] < args.before:
            early += 1  # a false alarm before the change: not a detection
            continue
        found.append(alarms[0]["image"] - args.before + 1 if alarms else np.inf)
    found = np.array(found)
    caught = np.isfinite(found)
    return {
        "median_images_to_alarm": _quantile(found, 0.5),
        "p90_images_to_alarm": _quantile(found, 0.9),
        "caught_within_horizon": float(caught.mean()),
        "alarms_before_the_change": early,
        "first_test": _first_tests(monitor, clean, changed, args),
    }


def _quantile(values, q):
    """A quantile of images-to-alarm, inf where more than that share were never caught."""
    ordered = np.sort(values)
    return float(ordered[min(int(np.ceil(q * len(ordered))) - 1, len(ordered) - 1)])


def _first_tests(monitor, clean, changed, args):
    rng = np.random.default_rng(1)
    tests = []
    for _ in range(20):
        stream = np.concatenate(
            [rng.choice(clean, args.before), rng.choice(changed, args.horizon)]
        )
        alarms = [a for a in stream_alarms(monitor, stream, rng) if a["image"] >= args.before]
        tests.append(alarms[0]["test"] if alarms else "none")
    return {name: tests.count(name) for name in sorted(set(tests))}


def scores(args):
    """The model's anomaly scores of the unchanged and changed held-out tiles (cached), and
    the model's out-of-sample training scores and threshold."""
    cache = HERE / "results" / "tmp" / "drift_scores.npz"
    if cache.exists():
        held = dict(np.load(cache))
        return held.pop("reference"), float(held.pop("threshold")), held
    data = Path(args.data)
    train = read_images(image_files(data / "train" / "good"), size=(SIZE, SIZE))[0]
    good = read_images(image_files(data / "test" / "good"), size=(SIZE, SIZE))[0]
    pipe = make_detector_pipeline().fit(train)
    monitor = DriftMonitor.from_model(pipe)
    held = {"unchanged": -pipe.score_samples(good)}
    held.update({name: -pipe.score_samples(change(good)) for name, change in CHANGES.items()})
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, reference=monitor.reference_, threshold=monitor.threshold_, **held)
    return monitor.reference_, monitor.threshold_, held


def evaluate(reference, threshold, held, drift, args):
    monitor = DriftMonitor(drift=drift).fit(reference, threshold=threshold)
    clean = held["unchanged"]
    changed = {name: held[name] for name in CHANGES}
    rng = np.random.default_rng(0)
    return {
        "monitor": monitor.get_params(),
        "limit": monitor.limit_,
        "no_change": false_alarms(monitor, clean, args, rng),
        "changes": {name: delays(monitor, clean, s, args, rng) for name, s in changed.items()},
    }


def main(argv=None):
    args = parse_args(argv)
    load_start = load_average()
    reference, threshold, held = scores(args)
    report = {
        "model": "make_detector_pipeline() (PatchCore, Lite0, 256 px)",
        "n_train": len(image_files(Path(args.data) / "train" / "good")),
        "n_held_out_good": int(held["unchanged"].size),
        "reference_scores": int(reference.size),
        "expected_share": float(np.mean(reference > threshold)),
        "share_beyond_threshold": {k: float(np.mean(v > threshold)) for k, v in held.items()},
        "median_percentile": {
            k: float(np.median(DriftMonitor().fit(reference).percentiles(v)))
            for k, v in held.items()
        },
        "runs": [evaluate(reference, threshold, held, drift, args) for drift in args.drift],
        "meta": run_meta("drift", argv, load_start),
    }
    (HERE / "results" / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown(report, args)


def markdown(report, args):
    lines = [
        "# Drift alarms on MTD",
        "",
        f"`{report['meta']['command']}`, {report['meta']['date']}, {report['meta']['machine']}",
        "",
        f"Model: {report['model']} on {report['n_train']} training tiles; monitor: "
        f"`DriftMonitor.from_model` ({report['reference_scores']} reference scores). "
        f"Production: {report['n_held_out_good']} held-out good tiles, resampled.",
        "",
        "| change | median percentile | beyond threshold |",
        "|---|---|---|",
    ]
    for name in ["unchanged", *CHANGES]:
        lines.append(
            f"| {name} | {report['median_percentile'][name]:.2f} | "
            f"{report['share_beyond_threshold'][name]:.1%} |"
        )
    lines += ["", f"Expected share beyond the threshold: {report['expected_share']:.1%}.", ""]
    for run in report["runs"]:
        none, params = run["no_change"], run["monitor"]
        lines += [
            f"## drift={params['drift']:g} (CUSUM limit {run['limit']:.2f}), KS blocks of "
            f"{params['window']} at alpha {params['alpha']:g}",
            "",
            f"No change: {none['alarms']} alarms in {none['images']:,} images "
            f"({none['alarms_per_10000_images']:.2f} per 10,000; the settings promise at most "
            f"{none['expected_per_10000_images']:.2f}); {none['ks_blocks']:,} KS blocks; "
            f"{none['streams_with_an_alarm']} of {args.streams} streams of {args.length} "
            "images alarmed at least once.",
            "",
            f"| change | images to alarm: median | 90th percentile | caught within "
            f"{args.horizon} | first alarm by (20 streams) |",
            "|---|---|---|---|---|",
        ]
        for name, row in run["changes"].items():
            lines.append(
                f"| {name} | {_count(row['median_images_to_alarm'], args.horizon)} | "
                f"{_count(row['p90_images_to_alarm'], args.horizon)} | "
                f"{row['caught_within_horizon']:.0%} | "
                + ", ".join(f"{k} {v}" for k, v in row["first_test"].items())
                + " |"
            )
        lines.append("")
    text = "\n".join(lines)
    (HERE / "results" / f"{args.name}.md").write_text(text)
    print(text)


def _count(value, horizon):
    return f"> {horizon}" if not np.isfinite(value) else f"{value:g}"


if __name__ == "__main__":
    main()
