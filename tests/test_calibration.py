"""Calibration of ``offset_``: contamination=c flags about a fraction c of held-out normal images.

Every check scores normal images the detector never saw. Synthetic grids first (fast, many
images, tight bounds), then real features of the Magnetic-Tile (MTD) images.
"""

import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_memad import (
    DFKDEDetector,
    FeatureTransformer,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
)
from sklearn_memad.datasets import load_mvtec

MTD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtd"

# PatchCore with coreset_ratio=1.0 keeps every patch: its leave-one-image-out score is then
# exactly the score of a memory without that image. With a thinned coreset, the image's own
# entries are replaced by those a coreset without it would hold.
EXACT = [
    PaDiMDetector(),
    DFKDEDetector(),
    PatchCoreDetector(coreset_ratio=1.0, random_state=0),
    PatchCoreDetector(coreset_ratio=0.1, random_state=0),
]
EXACT_IDS = ["padim", "dfkde", "patchcore-full", "patchcore"]
ALL = [PaDiMDetector(), DFKDEDetector(), PatchCoreDetector(coreset_ratio=0.1, random_state=0)]
ALL_IDS = ["padim", "dfkde", "patchcore"]


def _grids(n, seed, h=6, w=5, d=8):
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(123).normal(scale=2.0, size=(1, h, w, d))
    return (means + rng.normal(size=(n, h, w, d))).astype(np.float32)


@pytest.fixture(scope="module")
def synthetic():
    return _grids(200, seed=0), _grids(600, seed=100)


# The c-quantile of 200 training scores is itself uncertain (about +-0.4 c at 2 sd for
# c=0.1 and one training set): the fractions checked are means over independent draws.
DRAWS = range(8)


def _mean_flagged(detector, contaminations):
    """Per contamination, the mean over ``DRAWS`` (a training set of 200 images, 300 new
    normal images) of the fraction of the new images flagged; the in-sample check's too."""
    flagged = {c: [] for c in contaminations}
    in_sample = []
    for draw in DRAWS:
        train, held_out = _grids(200, seed=draw), _grids(300, seed=100 + draw)
        est = clone(detector).fit(train)
        scores = est.score_samples(held_out)
        for c in contaminations:
            flagged[c].append(_flagged(est, c, scores))
        in_sample.append(np.mean(scores < np.percentile(est.score_samples(train), 10)))
    return {c: float(np.mean(f)) for c, f in flagged.items()}, float(np.mean(in_sample))


def _flagged(detector, contamination, scores):
    """Fraction of held-out ``scores`` below the offset ``contamination`` gives (no refit)."""
    offset = (
        clone(detector)
        .set_params(contamination=contamination)
        ._offset_from(detector.train_scores_)
    )
    return float(np.mean(scores < offset))


@pytest.mark.parametrize("detector", EXACT, ids=EXACT_IDS)
def test_contamination_flags_about_c_of_held_out_normals(detector, synthetic):
    train, _ = synthetic
    flagged, _ = _mean_flagged(detector, (0.05, 0.1, 0.2))
    for c, fraction in flagged.items():
        assert 0.6 * c <= fraction <= 1.4 * c, (c, fraction)
    # The shortcut is what fit + predict do.
    est = clone(detector).fit(train)
    fitted = clone(detector).set_params(contamination=0.1).fit(train)
    assert fitted.offset_ == clone(est).set_params(contamination=0.1)._offset_from(
        est.train_scores_
    )


def test_patchcore_calibration_fills_the_holes_a_held_out_image_leaves(synthetic):
    """Only leaving an image's own entries out of the single coreset leaves holes that a
    coreset built without that image would have filled: training images would then score
    worse than new normal images and about c / 2 of those would be flagged (measured). The
    replacements can only bring entries closer, and they restore the flagged fraction."""
    train, held_out = synthetic
    est = PatchCoreDetector(coreset_ratio=0.1, random_state=0, top_k=1).fit(train)
    n, h, w, d = train.shape
    source = np.repeat(np.arange(n), h * w)
    distances, _ = est._searcher.kneighbors(
        train.reshape(-1, d), est.n_neighbors, exclude=(source, est.coreset_source_)
    )
    holes_left = distances.mean(axis=1).reshape(n, h * w).max(axis=1)
    calibrated = -est.train_scores_
    assert np.all(calibrated <= holes_left + 1e-5)
    assert np.mean(calibrated < holes_left - 1e-5) > 0.2

    new_anomaly = -est.score_samples(held_out)
    for c in (0.1, 0.2):
        flagged_with_holes = np.mean(new_anomaly > np.percentile(holes_left, 100 * (1 - c)))
        flagged = np.mean(new_anomaly > np.percentile(calibrated, 100 * (1 - c)))
        assert flagged_with_holes < 0.75 * c < flagged, (c, flagged_with_holes, flagged)


@pytest.mark.parametrize("detector", ALL, ids=ALL_IDS)
def test_an_in_sample_offset_would_flag_far_more(detector):
    """Why offset_ must come from out-of-sample scores: the memory knows its own images."""
    flagged, in_sample = _mean_flagged(detector, (0.1,))
    assert in_sample >= 0.2
    assert flagged[0.1] <= 0.14


@pytest.mark.parametrize("detector", ALL, ids=ALL_IDS)
def test_auto_is_tukeys_fence_and_flags_few_normals(detector, synthetic):
    train, held_out = synthetic
    est = clone(detector).fit(train)
    anomaly = -est.train_scores_
    q1, q3 = np.percentile(anomaly, [25, 75])
    # "auto": flag images whose anomaly score is beyond Q3 + 1.5 IQR of the out-of-sample ones.
    assert -est.offset_ == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert np.mean(est.predict(held_out) == -1) <= 0.08


# ------------------------------------------------------------------------------ real data
N_TRAIN = 80
IMAGE_SIZE = 96


@pytest.fixture(scope="module")
def mtd_grids():
    if not MTD.is_dir():
        pytest.skip(
            f"the MTD data set is not at {MTD} (../shared/data/mtd next to the repository)"
        )
    start = time.perf_counter()
    train = load_mvtec(MTD, "train", image_size=IMAGE_SIZE, n_jobs=2).images
    held_out = load_mvtec(MTD, "test", image_size=IMAGE_SIZE, kinds="good", n_jobs=2).images
    subset = np.random.default_rng(0).choice(len(train), N_TRAIN, replace=False)
    features = FeatureTransformer(
        backbone="efficientnet_lite0", layers=None, image_size=IMAGE_SIZE
    ).fit(train[:1])
    grids = features.transform(train[subset]), features.transform(held_out)
    print(f"MTD features in {time.perf_counter() - start:.1f} s")
    return grids


def _real_detectors(train):
    """(name, fitted detector, transform of the held-out grids), as each method is used."""
    aggregate = LocalAggregation(size=3).fit(train)
    padim_proj = RandomProjection(n_components=32, random_state=0).fit(train)
    kde_proj = RandomProjection(n_components=16, random_state=0).fit(train)
    return [
        ("padim", PaDiMDetector().fit(padim_proj.transform(train)), padim_proj.transform),
        ("dfkde", DFKDEDetector().fit(kde_proj.transform(train)), kde_proj.transform),
        (
            "patchcore",
            PatchCoreDetector(coreset_ratio=0.1, random_state=0).fit(aggregate.transform(train)),
            aggregate.transform,
        ),
    ]


def test_calibration_on_held_out_mtd_normals(mtd_grids):
    """80 training tiles, the 190 test/good tiles held out (efficientnet_lite0, 96 px)."""
    train, held_out = mtd_grids
    n_test = held_out.shape[0]
    for name, detector, transform in _real_detectors(train):
        scores = detector.score_samples(transform(held_out))
        for c in (0.1, 0.2):
            flagged = _flagged(detector, c, scores)
            # Sampling noise of the training quantile and of the held-out fraction, 2.5 sd.
            tolerance = 2.5 * np.sqrt(c * (1 - c) * (1 / N_TRAIN + 1 / n_test))
            assert c - tolerance <= flagged <= c + tolerance, (name, c, flagged)
        # "auto" flags few normal tiles (measured 0-5 %, see docs/decisions.md).
        assert np.mean(scores < detector.offset_) <= 0.08, name
