"""Detectors and transformers on a torch device: the CPU always, CUDA where there is one.

The accelerator's own algorithms (the plain coreset selection, large search blocks) are run
on the CPU too, by patching ``is_accelerator``, so CI checks them without a GPU.
"""

import numpy as np
import pytest
import torch

from sklearn_memad import (
    DFKDEDetector,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
)
from sklearn_memad.neighbors import greedy_coreset
from sklearn_memad.persistence import load_model, save_model
from sklearn_memad.pipelines import make_detector_pipeline, set_device
from sklearn_memad.thresholds import ThresholdedDetector
from sklearn_memad.utils import devices
from sklearn_memad.utils.devices import resolve_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def _grids(n, seed, size=6, d=24):
    return np.random.default_rng(seed).normal(size=(n, size, size, d)).astype(np.float32)


def _detectors():
    return [
        PaDiMDetector(),
        PatchCoreDetector(coreset_ratio=0.2, n_neighbors=3, random_state=0),
        DFKDEDetector(),
    ]


def _fitted_arrays(detector):
    return {
        name: value
        for name, value in vars(detector).items()
        if name.endswith("_") and not name.startswith("_")
    }


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("detector", _detectors(), ids=lambda d: type(d).__name__)
def test_detectors_score_the_same_on_a_device_and_keep_numpy(detector, device):
    train, test = _grids(30, 0), _grids(5, 1)
    test[0, 2, 3] += 6.0
    on_cpu = detector.fit(train)
    expected = on_cpu.score_patches(test)
    on_device = type(detector)(**{**detector.get_params(), "device": device}).fit(train)
    np.testing.assert_allclose(on_device.score_patches(test), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(on_device.train_scores_, on_cpu.train_scores_, rtol=1e-4)
    for name, value in _fitted_arrays(on_device).items():
        assert not isinstance(value, torch.Tensor), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("detector", _detectors(), ids=lambda d: type(d).__name__)
def test_streaming_on_a_device_matches_the_cpu(detector, device):
    train, test = _grids(30, 0), _grids(4, 1)
    on_cpu = type(detector)(**detector.get_params())
    on_device = type(detector)(**{**detector.get_params(), "device": device})
    for start in range(0, 30, 10):
        on_cpu.partial_fit(train[start : start + 10])
        on_device.partial_fit(train[start : start + 10])
    np.testing.assert_allclose(
        on_device.score_samples(test), on_cpu.score_samples(test), rtol=1e-4
    )
    assert on_device.offset_ == pytest.approx(on_cpu.offset_, rel=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_transformers_give_the_same_grids_on_a_device(device):
    grids = _grids(4, 2)
    for transformer in (LocalAggregation(), RandomProjection(n_components=8, random_state=0)):
        expected = transformer.fit_transform(grids)
        moved = transformer.set_params(device=device).transform(grids)
        assert isinstance(moved, np.ndarray)
        np.testing.assert_allclose(moved, expected, rtol=1e-5, atol=1e-6)


def test_the_plain_selection_matches_the_pruned_one(monkeypatch):
    points = np.random.default_rng(3).normal(size=(3000, 16)).astype(np.float32)
    cpu = torch.device("cpu")
    pruned = greedy_coreset(
        points, 60, projection_dim=None, random_state=0, return_cover=True, device=cpu
    )
    monkeypatch.setattr(devices, "is_accelerator", lambda device: True)
    plain = greedy_coreset(
        points, 60, projection_dim=None, random_state=0, return_cover=True, device=cpu
    )
    np.testing.assert_array_equal(plain[0], pruned[0])
    np.testing.assert_array_equal(plain[1], pruned[1])
    np.testing.assert_allclose(plain[2], pruned[2], rtol=1e-4, atol=1e-5)


def test_the_accelerator_path_of_patchcore_runs_on_the_cpu(monkeypatch):
    train, test = _grids(30, 0), _grids(5, 1)
    reference = PatchCoreDetector(coreset_ratio=0.2, n_neighbors=3, random_state=0).fit(train)
    monkeypatch.setattr(devices, "is_accelerator", lambda device: True)
    accelerated = PatchCoreDetector(coreset_ratio=0.2, n_neighbors=3, random_state=0).fit(train)
    np.testing.assert_array_equal(accelerated.coreset_, reference.coreset_)
    np.testing.assert_allclose(
        accelerated.score_samples(test), reference.score_samples(test), rtol=1e-5
    )
    assert accelerated.offset_ == pytest.approx(reference.offset_, rel=1e-5)


@pytest.mark.parametrize("detector", _detectors(), ids=lambda d: type(d).__name__)
def test_the_memory_moves_to_the_device_once(detector):
    train, test = _grids(20, 0), _grids(3, 1)
    detector.fit(train)
    detector.score_samples(test)
    held = _held_tensors(detector)
    detector.score_samples(test)
    assert all(a is b for a, b in zip(held, _held_tensors(detector)))
    detector.fit(_grids(20, 5))  # a new memory replaces the copies
    detector.score_samples(test)
    assert not any(a is b for a, b in zip(held, _held_tensors(detector)))


def _held_tensors(detector):
    if isinstance(detector, PatchCoreDetector):
        return list(detector._searcher._device_bank())
    return [tensor for _, tensor in detector._device_arrays._held.values()]


@pytest.mark.parametrize("detector", _detectors(), ids=lambda d: type(d).__name__)
def test_device_copies_are_never_saved(detector, tmp_path):
    detector.fit(_grids(20, 0)).score_samples(_grids(2, 1))
    assert "_device_arrays" not in detector.__getstate__()
    save_model(detector, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.device == "cpu"
    np.testing.assert_array_equal(
        loaded.score_samples(_grids(2, 1)), detector.score_samples(_grids(2, 1))
    )


def test_set_device_reaches_every_step_of_a_wrapped_pipeline():
    images = np.random.default_rng(0).integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    labels = np.array([1] * 8 + [-1] * 4)
    for method in ("patchcore", "padim", "dfkde"):
        pipe = make_detector_pipeline(
            method, backbone="resnet18", weights=None, image_size=32, device="auto"
        )
        assert {step.device for _, step in pipe.steps} == {"auto"}
    model = ThresholdedDetector(
        make_detector_pipeline("padim", backbone="resnet18", weights=None, image_size=32), cv=0.5
    ).fit(images, labels)
    assert set_device(model, "cpu") is model
    inner = [model.estimator, model.estimator_]
    assert {step.device for pipe in inner for _, step in pipe.steps} == {"cpu"}
    with pytest.raises(ValueError, match="device='tpu' is not a torch device"):
        set_device(model, "tpu")


@pytest.mark.parametrize(
    "device, message",
    [
        ("tpu", "device='tpu' is not a torch device"),
        ("cuda:x", "device='cuda:x' is not a torch device"),
    ],
)
@pytest.mark.parametrize("detector", _detectors(), ids=lambda d: type(d).__name__)
def test_a_bad_device_is_refused_and_leaves_the_model_alone(detector, device, message):
    train = _grids(20, 0)
    detector.fit(train)
    before = detector.score_samples(train[:2])
    detector.set_params(device=device)
    with pytest.raises(ValueError, match=message):
        detector.score_samples(train[:2])
    with pytest.raises(ValueError, match=message):
        detector.partial_fit(train[:4])
    detector.set_params(device="cpu")
    np.testing.assert_array_equal(detector.score_samples(train[:2]), before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_a_gpu_says_how_to_go_on():
    with pytest.raises(ValueError, match="CUDA is not available here; use device='cpu'"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
