"""Scoring in bounded memory: pipelines and maps run the whole model a chunk of images at a
time, with the results of scoring all images at once."""

import numpy as np
import pytest
from sklearn.pipeline import Pipeline, make_pipeline

from sklearn_memad import (
    FeatureTransformer,
    PatchCoreDetector,
    ThresholdedDetector,
    anomaly_maps,
    defaults,
)
from sklearn_memad.maps import predict_anomaly_maps
from sklearn_memad.persistence import load_model, save_model
from sklearn_memad.pipelines import DetectorPipeline, make_detector_pipeline

METHODS = ["padim", "patchcore", "dfkde"]
BATCH = 4  # images per backbone pass
N_TEST = 11  # not a multiple of any chunk below: the last chunk is short
RTOL = 1e-5


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(12 + N_TEST, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=METHODS)
def fitted(request, images):
    pipe = make_detector_pipeline(
        request.param, backbone="resnet18", weights=None, image_size=32, batch_size=BATCH
    )
    return pipe.fit(images[:12])


def _close(scores):
    """Tolerances: relative, and absolute on the scale of the image scores (a decision near
    zero is as exact as the score it is taken from)."""
    return {"rtol": RTOL, "atol": RTOL * np.abs(scores).max()}


def _spy(monkeypatch, cls, method):
    """Record the number of samples each call of ``cls.method`` receives."""
    seen = []
    original = getattr(cls, method)

    def spied(self, X, *args, **kwargs):
        seen.append(len(X))
        return original(self, X, *args, **kwargs)

    monkeypatch.setattr(cls, method, spied)
    return seen


@pytest.mark.parametrize("chunk_size", [3, BATCH])
def test_chunked_scores_equal_the_scores_of_all_images_at_once(fitted, images, chunk_size):
    test = images[12:]
    # scikit-learn's own Pipeline path: every image's grids before the detector runs.
    whole = {
        method: getattr(Pipeline, method)(fitted, test)
        for method in ("score_samples", "decision_function", "predict")
    }
    fitted.set_params(chunk_size=chunk_size)
    try:
        chunked = {method: getattr(fitted, method)(test) for method in whole}
    finally:
        fitted.set_params(chunk_size=defaults.SCORE_CHUNK)
    close = _close(whole["score_samples"])
    for method, expected in whole.items():
        assert chunked[method].shape == expected.shape == (N_TEST,)
        assert chunked[method].dtype == expected.dtype
        # Equal to float rounding: matrix products over fewer rows may round differently.
        np.testing.assert_allclose(chunked[method], expected, **close, err_msg=method)
    np.testing.assert_array_equal(chunked["predict"], whole["predict"])


def test_every_step_sees_one_chunk_at_a_time(fitted, images, monkeypatch):
    features = _spy(monkeypatch, FeatureTransformer, "transform")
    detector = _spy(monkeypatch, type(fitted[-1]), "score_samples")
    fitted.set_params(chunk_size=5)
    try:
        fitted.predict(images[12:])
    finally:
        fitted.set_params(chunk_size=defaults.SCORE_CHUNK)
    assert features == detector == [5, 5, 1]


def test_maps_are_computed_by_chunks_with_the_same_results(fitted, images, monkeypatch):
    test = images[12:]
    whole = predict_anomaly_maps(fitted, test, chunk_size=N_TEST)
    whole_maps = anomaly_maps(fitted, test, chunk_size=N_TEST)
    seen = _spy(monkeypatch, type(fitted[-1]), "score_patches")
    chunked = predict_anomaly_maps(fitted, test, chunk_size=BATCH)
    assert seen == [4, 4, 3]
    assert chunked.maps.shape == (N_TEST, 32, 32) and chunked.maps.dtype == np.float32
    np.testing.assert_allclose(chunked.maps, whole.maps, rtol=RTOL, atol=1e-6)
    for key in ("scores", "decision", "percentiles"):
        np.testing.assert_allclose(chunked[key], whole[key], **_close(whole.scores), err_msg=key)
    np.testing.assert_array_equal(chunked.labels, whole.labels)
    np.testing.assert_allclose(chunked.scores, -fitted.score_samples(test), rtol=RTOL)
    chunked_maps = anomaly_maps(fitted, test, chunk_size=2)
    np.testing.assert_allclose(chunked_maps, whole_maps, rtol=RTOL, atol=1e-6)
    np.testing.assert_array_equal(whole_maps, whole.maps)


def test_maps_follow_the_pipelines_chunk_size(fitted, images, monkeypatch):
    seen = _spy(monkeypatch, FeatureTransformer, "transform")
    fitted.set_params(chunk_size=6)
    try:
        predict_anomaly_maps(fitted, images[12:])
        anomaly_maps(fitted, images[12:])
    finally:
        fitted.set_params(chunk_size=defaults.SCORE_CHUNK)
    assert seen == [6, 5, 6, 5]


def test_any_pipeline_ending_in_a_detector_maps_by_chunks(images, monkeypatch):
    pipe = make_pipeline(
        FeatureTransformer(backbone="resnet18", weights=None, image_size=32, random_state=0),
        PatchCoreDetector(random_state=0),
    ).fit(images[:12])
    test = images[12:]
    whole = predict_anomaly_maps(pipe, test)
    seen = _spy(monkeypatch, PatchCoreDetector, "score_patches")
    chunked = predict_anomaly_maps(pipe, test, chunk_size=BATCH)
    assert seen == [4, 4, 3]
    np.testing.assert_allclose(chunked.maps, whole.maps, rtol=RTOL, atol=1e-6)
    np.testing.assert_allclose(chunked.scores, whole.scores, rtol=RTOL)
    np.testing.assert_array_equal(chunked.labels, whole.labels)


def test_a_thresholded_pipeline_scores_by_chunks(fitted, images, monkeypatch):
    test = images[12:]
    labels = np.where(np.arange(N_TEST) % 3 == 0, -1, 1)
    wrapped = ThresholdedDetector(fitted, cv="prefit").fit(test, labels)
    scores = Pipeline.score_samples(fitted, test)
    seen = _spy(monkeypatch, type(fitted[-1]), "score_samples")
    fitted.set_params(chunk_size=BATCH)
    try:
        decision = wrapped.decision_function(test)
    finally:
        fitted.set_params(chunk_size=defaults.SCORE_CHUNK)
    assert seen == [4, 4, 3]
    np.testing.assert_allclose(decision, scores - wrapped.threshold_, **_close(scores))


def test_chunk_size_is_a_parameter_that_travels(fitted, tmp_path):
    assert make_detector_pipeline("padim").chunk_size == defaults.SCORE_CHUNK
    assert DetectorPipeline([("d", PatchCoreDetector())]).chunk_size == defaults.SCORE_CHUNK
    assert make_detector_pipeline("padim", chunk_size=8).get_params()["chunk_size"] == 8
    fitted.set_params(chunk_size=7)
    try:
        save_model(fitted, tmp_path / "model.safetensors")
    finally:
        fitted.set_params(chunk_size=defaults.SCORE_CHUNK)
    assert load_model(tmp_path / "model.safetensors").chunk_size == 7


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_a_bad_chunk_size_is_refused_by_name(fitted, images, bad):
    fitted.set_params(chunk_size=bad)
    try:
        with pytest.raises((ValueError, TypeError), match="chunk_size"):
            fitted.score_samples(images[12:])
    finally:
        fitted.set_params(chunk_size=defaults.SCORE_CHUNK)
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
        make_detector_pipeline("padim", chunk_size=bad)
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
        predict_anomaly_maps(fitted, images[12:], chunk_size=bad)


def test_a_bad_batch_is_refused_whole_before_any_chunk_is_scored(fitted, images, monkeypatch):
    seen = _spy(monkeypatch, FeatureTransformer, "transform")
    fitted.set_params(chunk_size=2)
    floats = images[12:].astype(np.float32) / 255
    floats[-1, 0, 0, 0] = np.nan  # in the last chunk only
    ragged = list(images[12:17]) + [images[0, :16, :16]]
    try:
        with pytest.raises(ValueError, match="NaN"):
            fitted.score_samples(floats)
        with pytest.raises(ValueError, match=r"X\[5\] has shape \(16, 16, 3\)"):
            fitted.predict(ragged)
        with pytest.raises(ValueError, match=r"shape \(11, 32, 32, 2\)"):
            predict_anomaly_maps(fitted, images[12:, ..., :2])
    finally:
        fitted.set_params(chunk_size=defaults.SCORE_CHUNK)
    assert seen == []
