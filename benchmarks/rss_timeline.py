"""Where one standard pipeline's peak RSS comes from: the peak growth inside each step.

``run.py`` reports one peak per phase (fit, score). This script fits and scores one detector's
pipeline, exactly as ``run.py``'s worker builds it, while a thread samples the resident set
every 0.5 ms and files each sample under the step running at that moment (feature
extraction, aggregation, the detector's memory, its calibration, ...). It prints, per phase,
each step's peak growth over the RSS at the start of the phase. Two switches show what a
change would save: ``--in-place`` aggregates PatchCore's grids with ``copy=False`` (one grid
set instead of two), ``--trim`` returns glibc's free heap to the system after the named
methods. ``--prebuild`` builds the backbone before the fit phase, as ``run.py`` does.

Examples::

    python benchmarks/rss_timeline.py patchcore --n-train 200 --n-test 100
    python benchmarks/rss_timeline.py patchcore --n-train 200 --n-test 100 --in-place
    python benchmarks/rss_timeline.py patchcore --n-train 200 --n-test 100 \\
        --trim FeatureTransformer.transform
"""

import argparse
import ctypes
import functools
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402
from anomalib_peer import Phase  # noqa: E402

_PAGE = 4096
_DETECTOR_STEPS = ("_fit_memory", "_out_of_sample_patch_scores", "_score_patches")
_LABELLED = {
    "FeatureTransformer": ("fit", "transform"),
    "LocalAggregation": ("fit_transform", "transform"),
    "RandomProjection": ("transform",),
    "PaDiMDetector": _DETECTOR_STEPS,
    "PatchCoreDetector": _DETECTOR_STEPS,
    "DFKDEDetector": _DETECTOR_STEPS,
}


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class StepSampler:
    """Peak RSS per labelled step, sampled by a daemon thread."""

    def __init__(self, period=0.0005):
        self.step = "idle"
        self.peaks = {}
        self.period = period
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            rss, step = _rss_bytes(), self.step
            if rss > self.peaks.get(step, 0):
                self.peaks[step] = rss
            time.sleep(self.period)

    def label(self, owner, name, step):
        """While ``owner.name`` runs, samples are filed under ``step``."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def labelled(*args, **kwargs):
            outer, self.step = self.step, step
            try:
                return original(*args, **kwargs)
            finally:
                self.step = outer

        setattr(owner, name, labelled)

    def report(self, title, phase):
        print(
            f"{title}: start {phase.rss_start / 2**20:.0f} MiB, peak {phase.peak_rss / 2**20:.0f}"
            f" MiB, growth {(phase.peak_rss - phase.rss_start) / 2**20:.0f} MiB"
        )
        for step, peak in sorted(self.peaks.items(), key=lambda item: -item[1]):
            print(f"    {step:46s} {(peak - phase.rss_start) / 2**20:7.0f} MiB")
        self.peaks.clear()


def _trim_after(owner, name):
    libc = ctypes.CDLL("libc.so.6")
    original = getattr(owner, name)

    @functools.wraps(original)
    def trimmed(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            libc.malloc_trim(0)

    setattr(owner, name, trimmed)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("detector", choices=["padim", "patchcore", "dfkde"])
    p.add_argument(
        "--in-place", action="store_true", help="PatchCore: LocalAggregation(copy=False)"
    )
    p.add_argument(
        "--trim",
        nargs="+",
        default=[],
        metavar="CLASS.METHOD",
        help="malloc_trim after these methods (e.g. FeatureTransformer.transform)",
    )
    p.add_argument("--prebuild", action="store_true", help="build the backbone before the fit")
    ours, rest = p.parse_known_args(argv)
    # Everything else is run.py's: data, sizes, backbone (random-init resnet18 by default here).
    defaults = ["--backbone", "resnet18", "--weights", "none"]
    return ours, run.parse_args(defaults + rest)


def main(argv=None):
    ours, args = parse_args(argv)
    import torchvision.models  # noqa: F401  (imports before any measurement, as in run.py)

    import sklearn_memad
    from sklearn_memad.detectors import BaseMemoryDetector
    from sklearn_memad.maps import patch_to_pixel_maps

    with tempfile.TemporaryDirectory() as tmp:
        run.load_arrays(args, Path(tmp))
        train = np.load(Path(tmp) / "train.npy")
        test = np.load(Path(tmp) / "test.npy")

    # The estimators whose methods are labelled (and may be trimmed after), by class name.
    classes = {name: getattr(sklearn_memad, name) for name in _LABELLED}
    sampler = StepSampler()
    for name, methods in _LABELLED.items():
        for method in methods:
            sampler.label(classes[name], method, f"{name}.{method}")
    sampler.label(BaseMemoryDetector, "_validated_training_grids", "detector: validation")
    sampler.label(BaseMemoryDetector, "_calibrate", "detector: calibration")
    for where in ours.trim:
        owner, name = where.split(".")
        _trim_after(classes[owner], name)

    pipe = run.build_pipeline(args, ours.detector)
    if ours.in_place:
        for _, step in pipe.steps:
            if isinstance(step, sklearn_memad.LocalAggregation):
                step.set_params(copy=False)
    features, rest = pipe[0], pipe[1:]
    if ours.prebuild:
        run.prebuild_backbone(features)

    with Phase() as fit_phase:
        sampler.step = "fit (between steps)"
        pipe.fit(train)
        sampler.step = "idle"
    time.sleep(0.05)
    sampler.report("fit", fit_phase)

    with Phase() as score_phase:
        for start in range(0, len(test), args.batch_size):
            sampler.step = "score (between steps)"
            grids = features.transform(test[start : start + args.batch_size])
            if len(rest) > 1:
                grids = rest[:-1].transform(grids)
            patch_scores = rest[-1].score_patches(grids)
            sampler.step = "pixel maps"
            patch_to_pixel_maps(patch_scores, test.shape[1:3])
        sampler.step = "idle"
    time.sleep(0.05)
    sampler.report("score", score_phase)


if __name__ == "__main__":
    main()
