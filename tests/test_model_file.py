"""The model file: every model round-trips exactly, without pickle; bad files are refused."""

import json
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import make_pipeline

from sklearn_memad import (
    DFKDEDetector,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
    anomaly_maps,
)
from sklearn_memad.persistence import (
    MODEL_FORMAT,
    ModelFileError,
    load_model,
    read_model_info,
    save_model,
)
from sklearn_memad.pipelines import make_detector_pipeline
from sklearn_memad.thresholds import ThresholdedDetector

SIZE = 32
OPTIONS = dict(backbone="resnet18", weights=None, image_size=SIZE, n_components=8)


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, SIZE, SIZE, 3), dtype=np.uint8)


def _grids(n=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4, 4, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def images():
    return _images(12, seed=0), _images(4, seed=1)


@pytest.fixture(scope="module")
def pipelines(images):
    train, _ = images
    return {
        method: make_detector_pipeline(method, **OPTIONS).fit(train)
        for method in ("padim", "patchcore", "dfkde")
    }


def _round_trip(model, path, **metadata):
    save_model(model, path, **metadata)
    return load_model(path)


def _same(a, b, where="model"):
    """Assert that ``b`` is ``a`` again: same types, dtypes, shapes and values."""
    assert type(a) is type(b), where
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, np.random.RandomState):
        _same(a.get_state(), b.get_state(), where)
    elif scipy.sparse.issparse(a):
        assert a.format == b.format, where
        _same(a.toarray(), b.toarray(), where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (float, np.floating)) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


# --------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("method", ["padim", "patchcore", "dfkde"])
def test_standard_pipelines_round_trip_with_identical_scores(method, pipelines, images, tmp_path):
    pipe, (_, test) = pipelines[method], images
    path = tmp_path / "model.safetensors"
    loaded = _round_trip(pipe, path, train="tiles")
    assert type(loaded) is type(pipe)
    assert [name for name, _ in loaded.steps] == [name for name, _ in pipe.steps]
    np.testing.assert_array_equal(loaded.score_samples(test), pipe.score_samples(test))
    np.testing.assert_array_equal(loaded.predict(test), pipe.predict(test))
    np.testing.assert_array_equal(anomaly_maps(loaded, test), anomaly_maps(pipe, test))
    info = read_model_info(path)
    assert info["image_size"] == (SIZE, SIZE) and info["train"] == "tiles"
    assert info["method"] == type(pipe[-1]).__name__
    assert info["sklearn_memad_model"] == MODEL_FORMAT


@pytest.mark.parametrize("projection", ["gaussian", "sparse", "channels"])
def test_pipelines_on_grids_round_trip_with_each_projection(projection, tmp_path):
    grids = _grids()
    pipe = make_pipeline(
        RandomProjection(n_components=4, method=projection, random_state=0), DFKDEDetector()
    ).fit(grids)
    loaded = _round_trip(pipe, tmp_path / "model.safetensors")
    assert type(loaded[0].projection_) is type(pipe[0].projection_)
    np.testing.assert_array_equal(loaded[0].transform(grids), pipe[0].transform(grids))
    np.testing.assert_array_equal(loaded.score_samples(grids), pipe.score_samples(grids))
    assert read_model_info(tmp_path / "model.safetensors")["image_size"] is None


@pytest.mark.parametrize("cv", [0.5, "prefit"])
def test_thresholded_detector_round_trips(cv, pipelines, images, tmp_path):
    train, test = images
    X, y = np.concatenate([train, test]), np.r_[np.ones(len(train)), -np.ones(len(test))]
    if cv == "prefit":
        model = ThresholdedDetector(pipelines["patchcore"], cv="prefit").fit(test[:2], [1, -1])
    else:
        unfitted = make_detector_pipeline("padim", **OPTIONS)
        model = ThresholdedDetector(unfitted, cv=cv, random_state=0).fit(X, y)
    loaded = _round_trip(model, tmp_path / "model.safetensors")
    assert loaded.threshold_ == model.threshold_ and loaded.cv == cv
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # Shared objects stay shared; the unfitted template stays unfitted.
    assert (loaded.estimator is loaded.estimator_) == (cv == "prefit")
    assert hasattr(loaded.estimator[-1], "offset_") == (cv == "prefit")


@pytest.mark.parametrize(
    "detector",
    [PaDiMDetector(), PatchCoreDetector(coreset_ratio=0.3, random_state=0), DFKDEDetector()],
    ids=lambda detector: type(detector).__name__,
)
def test_bare_detectors_round_trip_with_identical_scores(detector, tmp_path):
    grids, test = _grids(), _grids(seed=1)
    detector.fit(grids)
    loaded = _round_trip(detector, tmp_path / "model.safetensors")
    np.testing.assert_array_equal(loaded.score_patches(test), detector.score_patches(test))
    np.testing.assert_array_equal(loaded.score_samples(test), detector.score_samples(test))
    np.testing.assert_array_equal(loaded.predict(test), detector.predict(test))
    state = dict(detector.__getstate__())
    _same(state, {key: vars(loaded)[key] for key in state})


def test_padim_keeps_its_statistics_and_goes_on_learning(tmp_path):
    grids, more, test = _grids(), _grids(seed=1), _grids(seed=2)
    detector = PaDiMDetector(keep_statistics=True).fit(grids)
    loaded = _round_trip(detector, tmp_path / "model.safetensors")
    _same(detector._statistics, loaded._statistics)
    detector.partial_fit(more)
    loaded.partial_fit(more)
    assert loaded.n_samples_seen_ == 32
    np.testing.assert_array_equal(loaded.score_samples(test), detector.score_samples(test))
    # Without keep_statistics, the float64 statistics stay out of the file.
    plain = _round_trip(PaDiMDetector().partial_fit(grids), tmp_path / "plain.safetensors")
    assert "_statistics" not in vars(plain)


@pytest.mark.parametrize(
    "detector",
    [
        PaDiMDetector(),
        PaDiMDetector(keep_statistics=True),
        PatchCoreDetector(coreset_ratio=0.3, random_state=0),
        DFKDEDetector(max_samples=10, random_state=0),
    ],
    ids=["padim", "padim-statistics", "patchcore", "dfkde-reservoir"],
)
def test_streamed_detectors_go_on_learning_as_their_pickle_would(detector, tmp_path):
    """The file keeps exactly what a pickle keeps: both continue to the same memory."""
    grids = _grids(24)
    for part in np.split(grids[:16], 2):
        detector.partial_fit(part)
    loaded = _round_trip(detector, tmp_path / "model.safetensors")
    pickled = pickle.loads(pickle.dumps(detector))
    loaded.partial_fit(grids[16:])
    pickled.partial_fit(grids[16:])
    _same(dict(pickled.__getstate__()), dict(loaded.__getstate__()))
    np.testing.assert_array_equal(loaded.score_samples(grids), pickled.score_samples(grids))


def test_new_fitted_attributes_round_trip_without_code_changes(tmp_path):
    detector = PatchCoreDetector(coreset_ratio=0.3, random_state=0).fit(_grids())
    shared = np.arange(6, dtype=np.int64)
    added = {
        "calibration_grids_": _grids(3),
        "image_ids_": shared,
        "same_ids_": shared,
        "flags_": np.array([True, False]),
        "empty_": np.zeros((0, 3), dtype=np.float16),
        "zero_d_": np.array(2.5),
        "big_endian_": np.arange(4, dtype=">f8"),
        "fortran_": np.asfortranarray(np.arange(6, dtype=np.uint16).reshape(2, 3)),
        "scalars_": [np.float32(1.5), np.int64(-7), np.uint8(255), np.bool_(True)],
        "plain_": {"a": (1, 2.5, None, "x"), "nested": [[True], ()], "__type__": "tuple"},
        "keys_": {1: "one", (2, "b"): [3], None: {}},
        "special_": (float("nan"), float("inf"), -float("inf"), np.float64("nan")),
        "path_": Path("weights") / "backbone.pt",
        "rng_": np.random.RandomState(3),
        "sparse_": scipy.sparse.csc_array(np.eye(3, dtype=np.float32)),
    }
    for name, value in added.items():
        setattr(detector, name, value)
    loaded = _round_trip(detector, tmp_path / "model.safetensors")
    for name, value in added.items():
        _same(value.astype("=f8") if name == "big_endian_" else value, vars(loaded)[name], name)
    assert loaded.same_ids_ is loaded.image_ids_
    assert loaded.fortran_.flags.c_contiguous
    np.testing.assert_array_equal(loaded.score_samples(_grids()), detector.score_samples(_grids()))


@pytest.mark.parametrize(
    "value, named",
    [
        ({1, 2}, r"model\.bad_ is a builtins\.set"),
        ([1, {"a": lambda: 0}], r"model\.bad_\[1\]\['a'\] is a builtins\.function"),
        (np.array(["a", None], dtype=object), r"model\.bad_ is an array of dtype object"),
        (np.complex64(1j), r"model\.bad_ is a NumPy scalar of dtype complex64"),
        (IsolationForest(), "IsolationForest, which is not among the estimators"),
        (object(), r"model\.bad_ is a builtins\.object"),
    ],
    ids=["set", "function", "object array", "complex", "foreign estimator", "object"],
)
def test_unsupported_attributes_are_refused_when_saving(value, named, tmp_path):
    detector = PaDiMDetector().fit(_grids())
    detector.bad_ = value
    with pytest.raises(TypeError, match=named):
        save_model(detector, tmp_path / "model.safetensors")
    assert not list(tmp_path.iterdir())


def test_metadata_round_trips_and_holds_plain_values_only(tmp_path):
    detector, path = PaDiMDetector().fit(_grids()), tmp_path / "model.safetensors"
    written = save_model(detector, path, size=(3, 4), scores={"f1": np.float64(0.5)}, n=None)
    _same(written, read_model_info(path))
    _same(written, load_model(path, return_info=True)[1])
    with pytest.raises(TypeError, match=r"metadata\['grid'\] is a numpy.ndarray"):
        save_model(detector, path, grid=np.zeros(3))
    with pytest.raises(ValueError, match="writes the metadata \\['version'\\] itself"):
        save_model(detector, path, version="mine")


def test_saving_replaces_the_file_in_one_step_with_ordinary_permissions(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(PaDiMDetector().fit(_grids()), path)
    save_model(DFKDEDetector().fit(_grids()), path)
    assert type(load_model(path)) is DFKDEDetector
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    (tmp_path / "plain").write_bytes(b"")
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode
    with pytest.raises(FileNotFoundError):
        save_model(PaDiMDetector().fit(_grids()), tmp_path / "missing" / "model.safetensors")


def test_a_model_file_loads_and_scores_the_same_in_a_fresh_process(pipelines, images, tmp_path):
    pipe, (_, test) = pipelines["patchcore"], images
    save_model(pipe, tmp_path / "model.safetensors")
    np.save(tmp_path / "X.npy", test)
    script = textwrap.dedent(
        f"""
        import numpy as np
        from sklearn_memad.persistence import load_model
        pipe = load_model({str(tmp_path / "model.safetensors")!r})
        np.save({str(tmp_path / "scores.npy")!r}, pipe.score_samples(np.load({str(tmp_path / "X.npy")!r})))
        """  # noqa: E501
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), pipe.score_samples(test))


# --------------------------------------------------------------------------- no code runs
class _WritesMarker:
    """Unpickling this creates the file ``marker``: code run by loading a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_crafted_pickle_runs_code_when_unpickled(tmp_path):
    """The payload of the next test is live: unpickling it does create its marker."""
    pickle.loads(pickle.dumps(_WritesMarker(tmp_path / "ran"))).close()
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("kind", ["bare pickle", "old model file", "compressed old model file"])
def test_pickles_are_refused_without_being_unpickled(kind, pipelines, tmp_path):
    path, marker = tmp_path / "model.joblib", tmp_path / "ran"
    payload = _WritesMarker(marker)
    if kind == "bare pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        # A valid model file of sklearn_memad 0.1 (format 1), with code hidden in it.
        header = {"sklearn_memad_model": 1, "version": "0.1.0", "image_size": (SIZE, SIZE)}
        content = {**header, "pipeline": pipelines["padim"], "extra": payload}
        joblib.dump(content, path, compress=3 if kind.startswith("compressed") else 0)
    expected = "zlib-compressed" if kind.startswith("compressed") else "is a pickle"
    for read in (load_model, read_model_info):
        with pytest.raises(ModelFileError, match=expected) as caught:
            read(path)
        assert "joblib.load" in str(caught.value) and "refit" in str(caught.value)
    assert not marker.exists()


def test_a_model_file_whose_header_length_looks_like_a_pickle_loads(tmp_path):
    # safetensors opens with the header's length: 0x0580 bytes reads as b"\x80\x05", the
    # opening of a protocol-5 pickle.
    detector = PatchCoreDetector(coreset_ratio=0.5, random_state=0).fit(_grids(4))
    path = tmp_path / "model.safetensors"

    def opening(note):
        save_model(detector, path, note=note)
        return path.read_bytes()[:2]

    base = int.from_bytes(path.read_bytes()[:8], "little") if opening("") else 0
    target = next(t for t in (0x280, 0x380, 0x480, 0x580, 0x10280) if t > base + 16)
    notes = ("x" * (target - base + shift) for shift in range(-16, 17))
    assert any(opening(note) == bytes([0x80, (target >> 8) & 0xFF]) for note in notes)
    np.testing.assert_array_equal(
        load_model(path).score_samples(_grids(2, 1)), detector.score_samples(_grids(2, 1))
    )
    assert read_model_info(path)["note"].startswith("x")


def test_loading_never_unpickles(pipelines, tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_model(pipelines["dfkde"], path)

    def refuse(*args, **kwargs):
        raise AssertionError("a model file was unpickled")

    for module, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (joblib, "load"),
        (np, "load"),
    ]:
        monkeypatch.setattr(module, name, refuse)
    assert load_model(path).steps[-1][0] == "dfkdedetector"


# --------------------------------------------------------------------------- altered files
def _parts(path):
    with safe_open(path, framework="numpy") as handle:
        header = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    return header, tensors


def _edit_model(header, change):
    document = json.loads(header["model"])
    change(document)
    header["model"] = json.dumps(document)


def _set_class(name):
    return lambda document: document.update({"class": name})


def _alter(case, header, tensors):
    """Damage the parts of a saved PaDiMDetector as ``case`` says."""
    key = "model.whitening_"
    state = lambda document: document["state"]  # noqa: E731
    changes = {
        "malformed JSON": lambda: header.update(model=header["model"][:-1]),
        "missing array": lambda: tensors.pop(key),
        "extra array": lambda: tensors.update(extra=np.zeros(2)),
        "wrong dtype": lambda: tensors.update({key: tensors[key].astype(np.float64)}),
        "wrong shape": lambda: tensors.update({key: tensors[key].reshape(-1)}),
        "class outside the list": lambda: _edit_model(header, _set_class("os.system")),
        "foreign estimator": lambda: _edit_model(
            header, _set_class("sklearn.ensemble.IsolationForest")
        ),
        "newer format": lambda: header.update(sklearn_memad_model=str(MODEL_FORMAT + 1)),
        "no marker": lambda: header.pop("sklearn_memad_model"),
        "unknown entry type": lambda: _edit_model(
            header, lambda d: state(d).update(grid_shape_={"__type__": "pickle"})
        ),
        "dunder attribute": lambda: _edit_model(
            header, lambda d: state(d).update(__class__="PatchCoreDetector")
        ),
        "unknown parameter": lambda: _edit_model(
            header, lambda d: d["params"].update(exec="print(1)")
        ),
        "dangling reference": lambda: _edit_model(
            header, lambda d: state(d).update(mean_={"__type__": "ref", "path": "elsewhere"})
        ),
        "bad scalar": lambda: _edit_model(
            header,
            lambda d: state(d).update(
                offset_={"__type__": "scalar", "dtype": "int8", "value": 1e9}
            ),
        ),
    }
    changes[case]()


ALTERED = {
    "malformed JSON": "'model' entry is not valid JSON",
    "missing array": "the array 'model.whitening_' is missing from the file",
    "extra array": "holds arrays that its model does not use \\(extra\\)",
    "wrong dtype": "has dtype float64 and shape \\[16, 36\\]; the model expects dtype float32",
    "wrong shape": "has dtype float32 and shape \\[576\\]; the model expects dtype float32 and "
    "shape \\[16, 36\\]",
    "class outside the list": "the class 'os.system' is not among the estimators",
    "foreign estimator": "the class 'sklearn.ensemble.IsolationForest' is not among",
    "newer format": f"format {MODEL_FORMAT + 1}, newer than this sklearn_memad",
    "no marker": "is a safetensors file but not a sklearn_memad model file",
    "unknown entry type": "model.grid_shape_: unknown entry type 'pickle'",
    "dunder attribute": "the attributes \\['__class__'\\] cannot be set from a file",
    "unknown parameter": "PaDiMDetector takes no parameter \\['exec'\\]",
    "dangling reference": "refers to 'elsewhere', which comes nowhere before it",
    "bad scalar": "model.offset_: a int8 scalar cannot hold 1000000000.0",
}


@pytest.mark.parametrize("case", sorted(ALTERED))
def test_altered_files_are_refused_with_a_clear_message(case, tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(PaDiMDetector().fit(_grids()), path)
    header, tensors = _parts(path)
    _alter(case, header, tensors)
    save_file(tensors, path, metadata=header)
    with pytest.raises(ModelFileError, match=ALTERED[case]) as caught:
        load_model(path)
    assert str(caught.value).startswith(f"'{path}'")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a safetensors file"),
        (b"hello, not a model file at all", "not a safetensors file"),
        ("truncated", "damaged model file: it cannot be read as a safetensors file"),
    ],
    ids=["empty", "garbage", "truncated"],
)
def test_files_that_are_not_whole_safetensors_are_refused(content, message, tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(PaDiMDetector().fit(_grids()), path)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 7] if content == "truncated" else content)
    for read in (load_model, read_model_info):
        with pytest.raises(ModelFileError, match=message):
            read(path)


def test_a_file_of_another_scikit_learn_loads_without_warnings(pipelines, images, tmp_path):
    """The file records the scikit-learn that wrote it; nothing depends on its pickling."""
    path = tmp_path / "model.safetensors"
    save_model(pipelines["dfkde"], path)
    header, tensors = _parts(path)
    assert "_sklearn_version" not in header["model"]
    info = json.loads(header["info"])
    header["info"] = json.dumps({**info, "sklearn_version": "1.0.2"})
    save_file(tensors, path, metadata=header)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded, info = load_model(path, return_info=True)
    assert info["sklearn_version"] == "1.0.2"
    test = images[1]
    np.testing.assert_array_equal(
        loaded.score_samples(test), pipelines["dfkde"].score_samples(test)
    )
