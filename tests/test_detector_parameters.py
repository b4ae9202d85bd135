"""Detectors refuse parameters and inputs they cannot give meaningful scores for: too few
images, extreme bandwidths, parameters changed after fit, features out of float32's reach."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_memad import DFKDEDetector, PaDiMDetector, PatchCoreDetector

DETECTORS = {
    "padim": PaDiMDetector(),
    "patchcore": PatchCoreDetector(random_state=0),
    "dfkde": DFKDEDetector(),
}


def _grids(n=12, h=4, w=3, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, d)).astype(np.float32)


# --------------------------------------------------------------------------- item 6
@pytest.mark.parametrize("how", ["fit", "partial_fit"])
def test_patchcore_refuses_a_single_training_image(how):
    """One image cannot be scored out of sample: its offset_ then flags most normal images."""
    detector = PatchCoreDetector(random_state=0)
    with pytest.raises(ValueError, match="PatchCoreDetector needs at least 2.*got 1 sample"):
        getattr(detector, how)(_grids(n=1))
    assert not hasattr(detector, "offset_")


# --------------------------------------------------------------------------- bandwidth
@pytest.mark.parametrize("bandwidth", [1e-30, 1e-300, 1e300])
def test_dfkde_refuses_a_bandwidth_whose_scores_mean_nothing(bandwidth):
    """Such bandwidths give scores near -3e46, a ZeroDivisionError or an OverflowError."""
    with pytest.raises(ValueError, match="bandwidth"):
        DFKDEDetector(bandwidth=bandwidth).fit(_grids())


@pytest.mark.parametrize("bandwidth", [0.01, 10.0])
def test_dfkde_small_and_large_sensible_bandwidths_work(bandwidth):
    scores = DFKDEDetector(bandwidth=bandwidth).fit(_grids()).score_samples(_grids(3, seed=1))
    assert np.isfinite(scores).all()


# --------------------------------------------------------------------------- set_params
SCORING = [
    ("patchcore", "n_neighbors", 0),  # ZeroDivisionError
    ("patchcore", "n_neighbors", -3),  # "negative dimensions are not allowed"
    ("patchcore", "n_neighbors", None),
    ("padim", "top_k", 0),  # "kth(=12) out of bounds"
    ("padim", "top_k", -1),
    ("patchcore", "top_k", 0),
    ("dfkde", "top_k", 0),
    ("dfkde", "top_k", 2.5),  # used silently
]


@pytest.mark.parametrize("method, param, value", SCORING)
def test_parameters_changed_after_fit_are_checked_when_scoring(method, param, value):
    detector = clone(DETECTORS[method]).fit(_grids())
    detector.set_params(**{param: value})
    before = pickle.dumps(detector.__dict__)
    with pytest.raises((ValueError, TypeError), match=f"'{param}' parameter"):
        detector.score_samples(_grids(3, seed=1))
    assert pickle.dumps(detector.__dict__) == before


GROWING = [
    ("padim", "contamination", "x"),  # TypeError: can't multiply sequence
    ("padim", "reg", -1.0),  # LinAlgError
    ("patchcore", "coreset_ratio", 0),  # RuntimeError: index 0 is out of bounds
    ("patchcore", "n_neighbors", 2.5),  # TypeError: 'float' object cannot be interpreted
    ("dfkde", "bandwidth", "wide"),  # "could not convert string to float"
    ("dfkde", "max_samples", 0),  # ZeroDivisionError
    ("dfkde", "max_samples", 1),  # NaN calibration, no error
]


@pytest.mark.parametrize("method, param, value", GROWING)
def test_parameters_changed_after_fit_are_checked_by_partial_fit(method, param, value):
    """scikit-learn's _fit_context skips validation in partial_fit once fitted."""
    detector = clone(DETECTORS[method]).fit(_grids())
    detector.set_params(**{param: value})
    before = pickle.dumps(detector.__dict__)
    with pytest.raises((ValueError, TypeError), match=f"'{param}' parameter"):
        detector.partial_fit(_grids(4, seed=2))
    assert pickle.dumps(detector.__dict__) == before


# --------------------------------------------------------------------------- found by fuzzing
@pytest.mark.parametrize(
    "X",
    [
        np.concatenate([_grids(6), np.full((1, 4, 3, 5), 3043.0, np.float32)]),
        np.array([[249995.0, 1523.0], [0.0, 0.0]], np.float32),
    ],
    ids=["far-outlier-image", "two-samples"],
)
def test_padim_fits_a_far_outlier(X):
    """The covariance summed in float32 loses ``reg`` when one direction's variance dwarfs
    it: the fit sums again in float64, or says why it cannot."""
    try:
        detector = PaDiMDetector().fit(X)
    except ValueError as exc:
        assert "X" in str(exc)
        return
    assert np.isfinite(detector.score_samples(X)).all()


@pytest.mark.parametrize("method", ["padim", "patchcore"])
def test_huge_finite_features_score_finite_or_clear(method):
    """A patch of 1e30 would score -inf (its squared distance overflows float32)."""
    detector = clone(DETECTORS[method]).fit(_grids())
    X = _grids(2, seed=1)
    X[0, 0, 0, 0] = 1e30
    try:
        scores = detector.score_samples(X)
    except ValueError as exc:
        assert "X" in str(exc)
        return
    assert np.isfinite(scores).all()


@pytest.mark.parametrize("param", ["n_neighbors", "projection_dim"])
def test_bool_parameters_are_refused_or_read_as_ints(param):
    """scikit-learn's Interval(Integral) lets True through."""
    try:
        detector = PatchCoreDetector(random_state=0, **{param: True}).fit(_grids())
    except (ValueError, TypeError) as exc:
        assert param in str(exc)
        return
    assert np.isfinite(detector.score_samples(_grids(2, seed=1))).all()
