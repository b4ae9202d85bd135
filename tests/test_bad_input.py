"""Bad input raises a clear error naming the argument, and never changes a fitted model."""

import pickle
from functools import partial

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from sklearn_memad import (
    DFKDEDetector,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
    anomaly_maps,
)

DETECTORS = [PaDiMDetector(), PatchCoreDetector(random_state=0), DFKDEDetector()]
ESTIMATORS = DETECTORS + [LocalAggregation(), RandomProjection(n_components=3, random_state=0)]
IDS = ["padim", "patchcore", "dfkde", "aggregation", "projection"]


def _grids(n=12, h=4, w=3, d=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, d)).astype(np.float32)


def _apply(est):
    """The method that uses a fitted estimator: transform or score_samples."""
    return est.transform if hasattr(est, "transform") else est.score_samples


def _state(est):
    return pickle.dumps(est.__dict__)


def _bad_inputs():
    nan = _grids()
    nan[0, 1, 1, 2] = np.nan
    inf = _grids()
    inf[3, 0, 0, 0] = np.inf
    return {
        "3-d": (np.zeros((4, 3, 5)), "got an array with 3 dimension"),
        "1-d": (np.zeros(5), "1 dimension"),
        "5-d": (np.zeros((2, 1, 4, 3, 5)), "5 dimension"),
        "nan": (nan, "NaN"),
        "inf": (inf, "infinity"),
        "empty": (np.zeros((0, 4, 3, 5), dtype=np.float32), "0 sample"),
        "strings": ("images", "X must be an array"),
        "other d": (_grids(d=7), "X has 7 features.*expecting 5"),
    }


BAD = _bad_inputs()


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=IDS)
def test_bad_input_after_fit_raises_and_leaves_model_unchanged(estimator, case):
    X, message = BAD[case]
    est = clone(estimator).fit(_grids())
    before = _state(est)
    reference = _apply(est)(_grids(3, seed=1))
    with pytest.raises((ValueError, TypeError), match=message):
        _apply(est)(X)
    assert _state(est) == before
    np.testing.assert_array_equal(_apply(est)(_grids(3, seed=1)), reference)


@pytest.mark.parametrize("case", ["3-d", "nan", "inf", "empty", "strings"])
@pytest.mark.parametrize("estimator", ESTIMATORS, ids=IDS)
def test_failed_refit_leaves_fitted_model_unchanged(estimator, case):
    X, message = BAD[case]
    est = clone(estimator).fit(_grids())
    before = _state(est)
    with pytest.raises((ValueError, TypeError), match=message):
        est.fit(X)
    assert _state(est) == before


@pytest.mark.parametrize("detector", [PaDiMDetector(), DFKDEDetector()], ids=["padim", "dfkde"])
def test_position_models_refuse_other_grid_shape(detector):
    est = clone(detector).fit(_grids())
    before = _state(est)
    with pytest.raises(ValueError, match=r"\(h, w\) = \(5, 3\).*fitted on"):
        est.score_samples(_grids(h=5))
    assert _state(est) == before


@pytest.mark.parametrize("detector", [PaDiMDetector(), DFKDEDetector()], ids=["padim", "dfkde"])
def test_too_few_samples(detector):
    with pytest.raises(ValueError, match="needs at least 2 normal samples.*got 1 sample"):
        clone(detector).fit(_grids(n=1))
    y = np.array([1, -1, -1])
    with pytest.raises(ValueError, match="got 1 sample"):
        clone(detector).fit(_grids(n=3), y)


def test_labels_of_wrong_length():
    with pytest.raises(ValueError, match=r"y must have shape \(12,\).*\(3,\)"):
        PaDiMDetector().fit(_grids(), np.ones(3))


def test_partial_fit_failure_keeps_running_statistics():
    est = PaDiMDetector().partial_fit(_grids())
    before = _state(est)
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        est.partial_fit(_grids(h=2))
    with pytest.raises(ValueError, match="X has 4 features"):
        est.partial_fit(_grids(d=4))
    assert _state(est) == before


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=IDS)
def test_not_fitted(estimator):
    with pytest.raises(NotFittedError):
        _apply(clone(estimator))(_grids())


@pytest.mark.parametrize(
    "estimator, message",
    [
        (PaDiMDetector(reg=0), "'reg' parameter"),
        (PaDiMDetector(contamination=0.7), "'contamination' parameter"),
        (PaDiMDetector(top_k=0), "'top_k' parameter"),
        (PatchCoreDetector(coreset_ratio=0), "'coreset_ratio' parameter"),
        (PatchCoreDetector(coreset_ratio=1.5), "'coreset_ratio' parameter"),
        (PatchCoreDetector(n_neighbors=0), "'n_neighbors' parameter"),
        (PatchCoreDetector(search="fast"), "'search' parameter"),
        (DFKDEDetector(bandwidth="wide"), "'bandwidth' parameter"),
        (DFKDEDetector(bandwidth=-1.0), "'bandwidth' parameter"),
        (LocalAggregation(size=0), "'size' parameter"),
        (RandomProjection(method="pca"), "'method' parameter"),
        (RandomProjection(n_components=0), "'n_components' parameter"),
    ],
)
def test_invalid_parameters(estimator, message):
    with pytest.raises(ValueError, match=message):
        estimator.fit(_grids())


def test_anomaly_maps_bad_arguments():
    est = PaDiMDetector().fit(_grids())
    with pytest.raises(ValueError, match="output_size is required"):
        anomaly_maps(est, _grids(2))
    with pytest.raises(ValueError, match="output_size must be two positive integers"):
        anomaly_maps(est, _grids(2), output_size=(0, 5))
    with pytest.raises(ValueError, match="'sigma' parameter"):
        anomaly_maps(est, _grids(2), sigma=-1.0, output_size=(8, 8))
    with pytest.raises(TypeError, match="got LocalAggregation as the final step"):
        anomaly_maps(LocalAggregation().fit(_grids()), _grids(2), output_size=(8, 8))


def test_finiteness_check_accepts_large_values_whose_sum_overflows():
    """The check's first pass is one sum: an overflow to infinity must not be taken for one."""
    from sklearn_memad.utils.validation import check_grids

    big = np.full((4, 2, 2, 3), np.finfo(np.float32).max / 2, dtype=np.float32)
    grids, _ = check_grids(RandomProjection(n_components=2), big, reset=True)
    assert np.isfinite(grids).all()
    big[0, 0, 0, 0] = -np.inf
    with pytest.raises(ValueError, match="infinity"):
        check_grids(RandomProjection(n_components=2), big, reset=True)


@pytest.mark.parametrize("shape", [(4, 2, 2, 3), (4, 3)])
def test_float64_values_beyond_float32_are_refused_not_made_infinite(shape):
    """The models work in float32: 1e300 would become infinity there, so it is refused."""
    X = np.ones(shape)
    X[1] = 1e300
    with pytest.raises(ValueError, match="infinity or a value too large for dtype\\('float32'\\)"):
        PaDiMDetector().fit(X)


def test_finiteness_check_follows_scikit_learns_assume_finite():
    from sklearn import config_context

    from sklearn_memad.utils.validation import check_grids

    X, _ = BAD["nan"]
    with config_context(assume_finite=True):
        grids, _ = check_grids(LocalAggregation(), X, reset=True)
    assert np.isnan(grids).any()


# --------------------------------------------------------------------------- images
@pytest.fixture(scope="module")
def image_pipes():
    """The three standard pipelines with random_state=None, fitted on tiny images."""
    from sklearn_memad.pipelines import make_detector_pipeline

    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    pipes = {}
    for method in ("patchcore", "padim", "dfkde"):
        pipe = make_detector_pipeline(
            method,
            backbone="resnet18",
            weights=None,
            image_size=32,
            n_components=None if method == "patchcore" else 4,
            random_state=None,
        )
        pipes[method] = pipe.fit(images)
    return pipes, images


def _pipe_state(pipe):
    return pickle.dumps(pipe)


@pytest.mark.parametrize("method", ["patchcore", "padim", "dfkde"])
@pytest.mark.parametrize("how", ["fit", "fit_predict", "partial_fit"])
def test_failed_refit_leaves_a_standard_pipeline_unchanged(image_pipes, method, how):
    """random_state=None: a refit that the detector refuses must not leave the feature and
    projection steps refitted with new random weights, channels or projections."""
    from sklearn_memad.pipelines import partial_fit

    pipes, images = image_pipes
    pipe = pipes[method]
    before, labels = _pipe_state(pipe), pipe.predict(images)
    call = partial(partial_fit, pipe) if how == "partial_fit" else getattr(pipe, how)
    with pytest.raises(ValueError, match=r"y must have shape \(6,\)"):
        call(images, np.ones(2))
    assert _pipe_state(pipe) == before
    np.testing.assert_array_equal(pipe.predict(images), labels)


def test_failed_first_partial_fit_leaves_the_steps_unfitted(image_pipes):
    from sklearn_memad.pipelines import partial_fit

    pipes, images = image_pipes
    fresh = clone(pipes["dfkde"])
    with pytest.raises(ValueError, match="y must have shape"):
        partial_fit(fresh, images, np.ones(2))
    assert not hasattr(fresh[0], "init_seed_") and not hasattr(fresh[1], "projection_")


@pytest.mark.parametrize(
    "X, error, match",
    [
        (np.zeros((32, 32, 3), np.uint8), ValueError, r"without the batch axis.*X\[np.newaxis\]"),
        (np.zeros((2, 32, 32, 3), np.complex64), TypeError, "complex dtype complex64"),
        (np.full((2, 32, 32, 3), 42.0), ValueError, r"values in \[42, 42\]"),
        (
            [np.zeros((32, 32, 3), np.uint8), np.zeros((32, 30, 3), np.uint8)],
            ValueError,
            r"X\[0\] has shape \(32, 32, 3\) but X\[1\] has shape \(32, 30, 3\)",
        ),
        (np.zeros((2, 32, 32, 3), "datetime64[s]"), TypeError, "numeric image array"),
    ],
    ids=["one-image", "complex", "float-42", "ragged", "datetime"],
)
def test_bad_images_are_refused_by_a_pipeline(image_pipes, X, error, match):
    pipes, _ = image_pipes
    pipe = pipes["patchcore"]
    before = _pipe_state(pipe)
    for method in (pipe.score_samples, pipe.predict, pipe[0].transform):
        with pytest.raises(error, match=match):
            method(X)
    assert _pipe_state(pipe) == before


def test_float_image_message_reports_the_whole_range(image_pipes):
    pipes, _ = image_pipes
    X = np.zeros((3, 32, 32, 3))
    X[0, 0, 0, 0], X[2, 5, 5, 1] = 42.0, 255.0
    with pytest.raises(ValueError, match=r"values in \[0, 255\]; expected float images"):
        pipes["padim"].score_samples(X)


def test_one_image_with_its_batch_axis_is_scored(image_pipes):
    pipes, images = image_pipes
    assert pipes["padim"].score_samples(images[0][np.newaxis]).shape == (1,)


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_batch_size_changed_after_fit_is_checked(image_pipes, value):
    pipes, images = image_pipes
    pipe = clone(pipes["patchcore"]).fit(images)
    pipe.set_params(featuretransformer__batch_size=value)
    with pytest.raises(ValueError, match="'batch_size' parameter of FeatureTransformer"):
        pipe.score_samples(images)


def test_aggregation_size_changed_after_fit_is_checked():
    est = LocalAggregation().fit(_grids())
    for value, match in ((0, "'size' parameter"), (2, "odd integer")):
        est.set_params(size=value)
        with pytest.raises(ValueError, match=match):
            est.transform(_grids())


@pytest.mark.parametrize("sigma", [np.nan, np.inf, -1.0, 1e5, "4"])
def test_map_smoothing_is_checked_before_any_work(image_pipes, sigma):
    from sklearn_memad.maps import patch_to_pixel_maps, predict_anomaly_maps

    pipes, images = image_pipes
    with pytest.raises(ValueError, match=r"sigma must be a number of pixels in \[0, 1000\]"):
        predict_anomaly_maps(pipes["padim"], images, sigma=sigma)
    with pytest.raises(ValueError, match="sigma"):
        patch_to_pixel_maps(np.zeros((1, 4, 4)), (8, 8), sigma=sigma)
    with pytest.raises(ValueError, match="'sigma' parameter"):
        anomaly_maps(pipes["padim"], images, sigma=sigma)


def test_transformers_on_huge_finite_features():
    """The neighbourhood mean of huge values is representable; their projection may not be."""
    X = _grids()
    X[0] = 3e38
    np.testing.assert_allclose(LocalAggregation().fit_transform(X)[0], 3e38, rtol=1e-6)
    projection = RandomProjection(n_components=3, random_state=0)
    before = _state(projection.fit(_grids()))
    with pytest.raises(ValueError, match="X holds values so large"):
        projection.transform(X)
    with pytest.raises(ValueError, match="X holds values so large"):
        projection.fit_transform(X)
    assert _state(projection) == before


def test_complex_grids_and_bool_parameters_are_refused_by_name():
    with pytest.raises(ValueError, match="Complex data not supported: X has dtype complex128"):
        LocalAggregation().fit(_grids().astype(complex))
    with pytest.raises(TypeError, match="n_components must be an int >= 1, not a bool"):
        RandomProjection(n_components=True).fit(_grids())
