"""Property-based fuzzing of the public API with hypothesis.

Random shapes, dtypes, value ranges, NaN and infinity positions, parameter values and call
orders. The properties: a call either raises a ``ValueError`` or ``TypeError`` whose message
names the argument at fault, or returns a finite result of the documented shape; and a fitted
model is exactly as it was after any failed call.

Every test is derandomised with a fixed number of examples, on tiny grids and images, so the
whole file stays within a few tens of seconds of CI time.
"""

import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.base import clone

from sklearn_memad import (
    DFKDEDetector,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
    anomaly_maps,
)
from sklearn_memad.maps import patch_to_pixel_maps, predict_anomaly_maps


def fuzz(max_examples):
    """Derandomised settings with a fixed number of examples: the same run every time."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


CLEAR = (ValueError, TypeError)

DETECTORS = {
    "padim": PaDiMDetector(),
    "patchcore": PatchCoreDetector(random_state=0),
    "dfkde": DFKDEDetector(),
}
TRANSFORMERS = {
    "aggregation": LocalAggregation(),
    "projection": RandomProjection(n_components=2, random_state=0),
}
ESTIMATORS = {**DETECTORS, **TRANSFORMERS}


def _state(estimator):
    return pickle.dumps(estimator.__dict__)


def _good_grids(n=6, h=2, w=2, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, d)).astype(np.float32)


def _apply(estimator, X):
    if hasattr(estimator, "score_samples"):
        return estimator.score_samples(X)
    return estimator.transform(X)


def _check_error(exc, *names):
    """A clear error: the message names one of ``names``."""
    message = str(exc)
    assert any(name in message for name in names), f"{type(exc).__name__}: {message}"


# --------------------------------------------------------------------------- strategies
DTYPES = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int32, np.uint8, np.bool_, np.complex64]
)


@st.composite
def arrays(draw, max_ndim=5, max_side=3):
    """Arrays of random rank, sides (0 included), dtype and values (NaN, infinity)."""
    ndim = draw(st.integers(1, max_ndim))
    shape = tuple(draw(st.lists(st.integers(0, max_side), min_size=ndim, max_size=ndim)))
    dtype = draw(DTYPES)
    if np.issubdtype(dtype, np.floating):
        special = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0])
        elements = st.one_of(special, st.floats(-1e4, 1e4, width=16))
        if dtype != np.float16:
            elements = st.one_of(elements, st.floats(-1e6, 1e6, width=32))
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


def _extreme_grids(magnitude):
    """Grids of the fitted shape (n, 2, 2, 3) with finite values up to ``magnitude``."""
    return hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        st.tuples(st.integers(1, 3), st.just(2), st.just(2), st.just(3)),
        elements=st.floats(-magnitude, magnitude, width=32),
    )


# --------------------------------------------------------------------------- grids
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@fuzz(40)
@given(X=arrays())
def test_fit_on_random_arrays_is_clear_or_finite(name, X):
    estimator = clone(ESTIMATORS[name])
    try:
        estimator.fit(X)
    except CLEAR as exc:
        _check_error(exc, "X", "sample", "feature", "needs at least")
        return
    out = _apply(estimator, X)
    assert out.shape[0] == X.shape[0]
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@fuzz(40)
@given(X=arrays())
def test_scoring_random_arrays_is_clear_or_finite_and_changes_nothing(name, X):
    estimator = clone(ESTIMATORS[name]).fit(_good_grids())
    before = _state(estimator)
    try:
        out = _apply(estimator, X)
    except CLEAR as exc:
        _check_error(exc, "X", "feature", "sample")
    else:
        assert out.shape[0] == np.shape(X)[0]
        if hasattr(estimator, "score_samples"):
            assert out.shape == (X.shape[0],)
        assert np.isfinite(out).all()
    assert _state(estimator) == before


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@fuzz(30)
@given(data=st.data())
def test_extreme_finite_values_are_clear_or_finite(name, data):
    """Finite values of any size: refused with a message naming X, or a finite result."""
    X = data.draw(_extreme_grids(float(np.finfo(np.float32).max)))
    estimator = clone(ESTIMATORS[name]).fit(_good_grids())
    before = _state(estimator)
    try:
        out = _apply(estimator, X)
    except CLEAR as exc:
        _check_error(exc, "X")
    else:
        assert np.isfinite(out).all()
    assert _state(estimator) == before
    try:
        out = _apply(clone(ESTIMATORS[name]).fit(np.concatenate([X, _good_grids()])), X)
    except CLEAR as exc:
        _check_error(exc, "X")
    else:
        assert np.isfinite(out).all()


# --------------------------------------------------------------------------- parameters
ODD_VALUES = st.one_of(
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "auto", "scott", "wide", (1, 2), True, 1e-30, 1e30, 0.5, 1.0]),
)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@fuzz(40)
@given(data=st.data())
def test_random_parameter_values_are_clear_or_work(name, data):
    estimator = clone(ESTIMATORS[name])
    param = data.draw(st.sampled_from(sorted(estimator.get_params())))
    value = data.draw(ODD_VALUES)
    estimator.set_params(**{param: value})
    try:
        estimator.fit(_good_grids())
    except CLEAR as exc:
        _check_error(exc, param)
        return
    assert np.isfinite(_apply(estimator, _good_grids(3, seed=1))).all()


# --------------------------------------------------------------------------- call orders
CALLS = st.sampled_from(["fit", "partial_fit", "set_params", "score", "bad_fit", "bad_score"])
VALID = {
    "padim": {"reg": [1e-3, 1.0], "top_k": [1, 2], "contamination": ["auto", 0.1]},
    "patchcore": {"n_neighbors": [1, 3], "top_k": [1, 3], "coreset_ratio": [0.5, 1.0]},
    "dfkde": {"bandwidth": ["scott", 0.5], "top_k": [1, 2], "contamination": [0.2]},
}


@pytest.mark.parametrize("name", sorted(DETECTORS))
@fuzz(25)
@given(calls=st.lists(st.tuples(CALLS, st.integers(0, 7)), min_size=1, max_size=6))
def test_random_call_orders_keep_models_consistent(name, calls):
    """Valid parameter changes, partial fits, refits after failures, in any order."""
    detector = clone(DETECTORS[name])
    params = VALID[name]
    for call, seed in calls:
        fitted = hasattr(detector, "offset_")
        before = _state(detector)
        if call == "set_params":
            param = sorted(params)[seed % len(params)]
            detector.set_params(**{param: params[param][seed % len(params[param])]})
            continue
        try:
            if call == "fit":
                detector.fit(_good_grids(n=2 + seed, seed=seed))
            elif call == "partial_fit":
                detector.partial_fit(_good_grids(n=2 + seed % 3, seed=seed))
            elif call == "bad_fit":
                bad = _good_grids(seed=seed)
                bad[seed % 6, 0, 0, seed % 3] = np.nan
                detector.fit(bad)
            elif call == "bad_score":
                detector.score_samples(_good_grids(d=4, seed=seed))
            else:
                scores = detector.score_samples(_good_grids(n=3, seed=seed))
                assert scores.shape == (3,) and np.isfinite(scores).all()
                labels = detector.predict(_good_grids(n=3, seed=seed))
                assert set(labels) <= {-1, 1}
        except CLEAR as exc:
            _check_error(exc, "X", "feature", "fitted", "NaN")
            assert _state(detector) == before
            continue
        except Exception as exc:  # NotFittedError is a ValueError; anything else is a bug
            raise AssertionError(f"{call} after {calls}: {type(exc).__name__}: {exc}") from exc
        assert call in ("fit", "partial_fit", "score") or not fitted


# --------------------------------------------------------------------------- images
@pytest.fixture(scope="module")
def image_pipe():
    from sklearn_memad.pipelines import make_detector_pipeline

    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    pipe = make_detector_pipeline(
        "padim", backbone="resnet18", weights=None, image_size=16, n_components=4
    )
    return pipe.fit(images)


@st.composite
def image_inputs(draw):
    """Image batches of random layout, dtype and values, as arrays or lists."""
    ndim = draw(st.integers(2, 5))
    sides = [draw(st.integers(0, 3)), *draw(st.lists(st.integers(0, 9), min_size=ndim - 1))]
    shape = tuple(sides[:ndim])
    if draw(st.booleans()) and ndim >= 3:
        shape = shape[:-1] + (3,)
    dtype = draw(DTYPES)
    if np.issubdtype(dtype, np.floating):
        scale = draw(st.sampled_from([1.0, 255.0, -1.0]))
        X = draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=16))) * scale
        if X.size and draw(st.booleans()):
            X.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
    else:
        X = draw(hnp.arrays(dtype, shape))
    if draw(st.booleans()) and X.ndim >= 3 and len(X) > 1:
        return [X[0], X[1][..., : max(X.shape[2] - 1, 0)]] if draw(st.booleans()) else list(X)
    return X


@fuzz(60)
@given(X=image_inputs())
def test_random_images_are_clear_or_scored(image_pipe, X):
    before = pickle.dumps(image_pipe)
    try:
        scores = image_pipe.score_samples(X)
    except CLEAR as exc:
        _check_error(exc, "X")
    else:
        n = len(X)
        assert scores.shape == (n,) and np.isfinite(scores).all()
        assert np.shape(X)[-1] == 3 or np.ndim(X) == 3
    assert pickle.dumps(image_pipe) == before


@fuzz(30)
@given(
    sigma=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2000)),
    size=st.tuples(st.integers(-1, 40), st.integers(-1, 40)),
)
def test_random_map_settings_are_clear_or_finite(image_pipe, sigma, size):
    images = np.zeros((1, 16, 16, 3), np.uint8)
    try:
        maps = anomaly_maps(image_pipe, images, sigma=sigma, output_size=size)
    except CLEAR as exc:
        _check_error(exc, "sigma", "output_size")
    else:
        assert maps.shape == (1, *size) and np.isfinite(maps).all()
    try:
        result = predict_anomaly_maps(image_pipe, images, sigma=sigma)
    except CLEAR as exc:
        _check_error(exc, "sigma")
    else:
        assert result.maps.shape == (1, 16, 16) and np.isfinite(result.maps).all()
    assume(min(size) > 0)
    try:
        maps = patch_to_pixel_maps(np.ones((2, 3, 3)), size, sigma=sigma)
    except CLEAR as exc:
        _check_error(exc, "sigma")
    else:
        np.testing.assert_allclose(maps, 1.0, rtol=1e-4)  # a flat map stays flat


FEATURE_VALUES = {
    "image_size": st.one_of(
        st.integers(-1, 40), st.tuples(st.integers(0, 24), st.integers(0, 24)), st.just("16")
    ),
    "max_features": st.one_of(st.none(), st.integers(-1, 500), st.just(2.5)),
    "batch_size": st.one_of(st.integers(-1, 3), st.just(1.5)),
    "layers": st.sampled_from([None, "layer1", ("layer1", "layer1"), (), "layer9", 3]),
    "device": st.sampled_from(["cpu", "auto", "gpu", "cuda:x", 0]),
}


@fuzz(20)
@given(data=st.data())
def test_random_feature_parameters_are_clear_or_work(data):
    from sklearn_memad import FeatureTransformer

    param = data.draw(st.sampled_from(sorted(FEATURE_VALUES)))
    value = data.draw(FEATURE_VALUES[param])
    assume(not (param == "device" and value == "auto"))  # the same as "cpu" without a GPU
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    features = FeatureTransformer(backbone="resnet18", weights=None, image_size=16)
    features.set_params(**{param: value})
    try:
        grids = features.fit(images).transform(images)
    except CLEAR as exc:
        _check_error(exc, param)
        return
    assert grids.shape == (2, *features.feature_shape_) and np.isfinite(grids).all()


PIPELINE_CALLS = st.sampled_from(["fit", "partial_fit", "batch_size", "score", "bad_images"])


@fuzz(12)
@given(calls=st.lists(st.tuples(PIPELINE_CALLS, st.integers(-1, 4)), min_size=2, max_size=5))
def test_random_pipeline_call_orders_keep_it_consistent(calls):
    """A standard pipeline with random_state=None: any failed call leaves every step as it
    was; set_params after fit is checked where the value is used."""
    from sklearn_memad.pipelines import make_detector_pipeline, partial_fit

    pipe = make_detector_pipeline(
        "dfkde",
        backbone="resnet18",
        weights=None,
        image_size=16,
        n_components=3,
        random_state=None,
    )
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    for call, k in calls:
        before = pickle.dumps(pipe)
        try:
            if call == "fit":
                pipe.fit(images[: max(k, 0) + 1])
            elif call == "partial_fit":
                partial_fit(pipe, images[: max(k, 0) + 1])
            elif call == "batch_size":
                pipe.set_params(featuretransformer__batch_size=k)
                continue
            elif call == "bad_images":
                pipe.score_samples(images[0])  # no batch axis
            else:
                scores = pipe.score_samples(images[:2])
                assert scores.shape == (2,) and np.isfinite(scores).all()
        except CLEAR as exc:
            _check_error(exc, "X", "batch_size", "fitted", "needs at least")
            assert pickle.dumps(pipe) == before
            continue


# --------------------------------------------------------------------------- files and options
@fuzz(40)
@given(
    values=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 4)),
        elements=st.floats(-2, 300, width=32) | st.just(float("nan")),
    )
)
def test_float_image_files_are_read_or_refused(tmp_path_factory, values):
    from PIL import Image

    from sklearn_memad.datasets import read_images

    path = tmp_path_factory.mktemp("f") / "x.tif"
    Image.fromarray(values, mode="F").save(path)
    images, kept, skipped = read_images([path])
    in_range = bool(np.all((values >= 0) & (values <= 1)))
    assert (kept == [path]) == in_range
    if in_range:
        np.testing.assert_array_equal(images[0, ..., 1], np.rint(values * 255).astype(np.uint8))
    else:
        assert "[0, 1] scale" in skipped[0][1]


@fuzz(80)
@given(text=st.text(max_size=12) | st.floats(allow_nan=True).map(str))
def test_command_line_number_options_parse_or_refuse(text):
    import argparse

    from sklearn_memad.cli.parser import MAX_IMAGE_SIDE, image_size, positive_int, sigma

    for parse in (image_size, sigma, positive_int):
        try:
            value = parse(text)
        except argparse.ArgumentTypeError as exc:
            assert repr(text) in str(exc)
            continue
        if parse is sigma:
            assert 0 <= value <= 1000
        elif parse is image_size:
            sides = value if isinstance(value, tuple) else (value,)
            assert all(16 <= side <= MAX_IMAGE_SIDE for side in sides)
        else:
            assert value >= 1
