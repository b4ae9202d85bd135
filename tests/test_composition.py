"""Pipelines from images: fit/score/predict, pixel maps, GridSearchCV, joblib, caching."""

import pickle
import pickletools
import subprocess
import sys
import textwrap
import warnings

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline, make_pipeline

from sklearn_memad import (
    DFKDEDetector,
    FeatureTransformer,
    LocalAggregation,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
    anomaly_maps,
)
from sklearn_memad.model_selection import NormalOnlyKFold

SIZE = 48


def _features(**kwargs):
    params = dict(
        backbone="resnet18",
        layers=("layer2", "layer3"),
        weights=None,
        image_size=SIZE,
        random_state=0,
    )
    params.update(kwargs)
    return FeatureTransformer(**params)


def _textures(n, seed):
    """Smooth random textures: a stand-in for defect-free surfaces."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, SIZE // 4, SIZE // 4, 1))
    images = np.kron(base, np.ones((1, 4, 4, 1)))  # blocky, low frequency
    images = 0.5 + 0.1 * images + 0.02 * rng.normal(size=(n, SIZE, SIZE, 1))
    return np.clip(np.repeat(images, 3, axis=-1), 0, 1).astype(np.float32)


def _with_defects(images):
    """Paste a bright square at a known, varying place; return images and defect masks."""
    images = images.copy()
    masks = np.zeros(images.shape[:3], dtype=bool)
    for i in range(len(images)):  # test-data construction, not a hot path
        r, c = 8 + (i * 7) % 24, 8 + (i * 11) % 24
        images[i, r : r + 10, c : c + 10] = 1.0
        masks[i, r : r + 10, c : c + 10] = True
    return images, masks


@pytest.fixture(scope="module")
def data():
    train = _textures(30, seed=0)
    normal = _textures(8, seed=1)
    defective, masks = _with_defects(_textures(8, seed=2))
    return train, normal, defective, masks


PIPELINES = {
    "padim": lambda: make_pipeline(
        _features(),
        RandomProjection(n_components=40, method="channels", random_state=0),
        PaDiMDetector(),
    ),
    "patchcore": lambda: make_pipeline(
        _features(), LocalAggregation(), PatchCoreDetector(coreset_ratio=0.1, random_state=0)
    ),
    "dfkde": lambda: make_pipeline(
        _features(), RandomProjection(n_components=16, random_state=0), DFKDEDetector()
    ),
}


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_pipeline_from_images_scores_predicts_and_maps(name, data):
    train, normal, defective, masks = data
    pipe = PIPELINES[name]().fit(train)
    scores_normal = pipe.score_samples(normal)
    scores_defective = pipe.score_samples(defective)
    assert scores_normal.shape == (8,) and scores_normal.dtype == np.float64
    assert np.median(scores_defective) < np.median(scores_normal)
    assert set(np.unique(pipe.predict(np.concatenate([normal, defective])))) <= {-1, 1}
    maps = anomaly_maps(pipe, defective)
    assert maps.shape == (8, SIZE, SIZE) and maps.dtype == np.float32
    # The map is higher on the pasted defect than elsewhere.
    inside = np.array([m[k].mean() for m, k in zip(maps, masks)])
    outside = np.array([m[~k].mean() for m, k in zip(maps, masks)])
    assert np.mean(inside > outside) >= 0.75


def test_anomaly_maps_on_bare_detector_matches_pipeline(data):
    train, _, defective, _ = data
    pipe = PIPELINES["patchcore"]().fit(train)
    grids = pipe[:-1].transform(defective)
    bare = anomaly_maps(pipe[-1], grids, output_size=(SIZE, SIZE))
    np.testing.assert_allclose(bare, anomaly_maps(pipe, defective), rtol=1e-5)
    unsmoothed = anomaly_maps(pipe[-1], grids, sigma=0, output_size=(SIZE, SIZE))
    assert unsmoothed.max() >= bare.max()


def test_normal_only_kfold_training_folds_hold_normals_only():
    y = np.r_[np.ones(20, dtype=int), -np.ones(7, dtype=int)]
    splits = list(NormalOnlyKFold().split(np.zeros((27, 1)), y))
    assert len(splits) == 5
    tested = np.concatenate([test for _, test in splits])
    np.testing.assert_array_equal(np.sort(tested), np.arange(27))  # each sample tested once
    for train, test in splits:
        assert (y[train] == 1).all()
        assert (y[test] == -1).any() and (y[test] == 1).any()
    with pytest.raises(ValueError, match="got also \\[0\\]"):
        next(NormalOnlyKFold().split(np.zeros((3, 1)), [1, 0, -1]))


def test_grid_search_tunes_detectors_and_refits_on_normals_only(data, tmp_path):
    train, normal, defective, _ = data
    X = np.concatenate([train, defective])
    y = np.r_[np.ones(len(train), dtype=int), -np.ones(len(defective), dtype=int)]
    pipe = Pipeline(
        [
            ("features", _features()),
            ("aggregate", LocalAggregation()),
            ("detector", PatchCoreDetector(random_state=0)),
        ],
        memory=str(tmp_path),  # features are computed once per fold, not per candidate
    )
    search = GridSearchCV(
        pipe,
        {"detector__coreset_ratio": [0.05, 0.2], "detector__n_neighbors": [1, 5]},
        scoring="roc_auc",
        cv=NormalOnlyKFold(n_splits=3),
    ).fit(X, y)
    assert search.best_score_ > 0.7
    assert set(search.best_params_) == {"detector__coreset_ratio", "detector__n_neighbors"}
    # The refit memory holds patches of the normal images only.
    best = search.best_estimator_[-1]
    assert best.train_scores_.shape == (len(train),)
    assert best.coreset_source_.max() < len(train)

    kde = GridSearchCV(
        make_pipeline(
            _features(),
            RandomProjection(n_components=8, random_state=0),
            DFKDEDetector(),
            memory=str(tmp_path),
        ),
        {"dfkdedetector__bandwidth": ["scott", 0.5, 2.0]},
        scoring="roc_auc",
        cv=NormalOnlyKFold(n_splits=3),
    ).fit(X, y)
    assert kde.best_params_["dfkdedetector__bandwidth"] in ("scott", 0.5, 2.0)
    assert kde.best_score_ > 0.7


def _pickled_modules(obj):
    """Module names of every class or function the pickle of ``obj`` refers to."""
    names = set()
    for opcode, arg, _ in pickletools.genops(pickle.dumps(obj)):
        if opcode.name == "GLOBAL":
            names.add(arg.split()[0])
        elif opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            names.add(arg)  # STACK_GLOBAL takes its module name from a preceding string
    return names


@pytest.mark.parametrize("name", ["patchcore", "padim"])
def test_joblib_round_trip_in_fresh_process(name, data, tmp_path):
    train, normal, defective, _ = data
    pipe = PIPELINES[name]().fit(train)
    X = np.concatenate([normal, defective])
    path = tmp_path / "model.joblib"
    joblib.dump(pipe, path)
    np.save(tmp_path / "X.npy", X)
    assert not any(n.startswith("torch") for n in _pickled_modules(pipe))
    assert b"torch" not in path.read_bytes()
    script = textwrap.dedent(
        f"""
        import joblib, numpy as np
        pipe = joblib.load({str(path)!r})
        X = np.load({str(tmp_path / "X.npy")!r})
        np.save({str(tmp_path / "scores.npy")!r}, pipe.score_samples(X))
        np.save({str(tmp_path / "maps.npy")!r}, __import__("sklearn_memad").anomaly_maps(pipe, X))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "scores.npy"), pipe.score_samples(X))
    np.testing.assert_array_equal(np.load(tmp_path / "maps.npy"), anomaly_maps(pipe, X))


@pytest.mark.parametrize(
    "estimator",
    [
        PaDiMDetector(),
        PatchCoreDetector(random_state=0),
        DFKDEDetector(),
        LocalAggregation(size=3),
        RandomProjection(n_components=4, random_state=0),
    ],
    ids=lambda est: type(est).__name__,
)
def test_read_only_grids_and_memory_mapped_models_score_without_warnings(estimator, tmp_path):
    """joblib hands parallel workers read-only memory maps, and ``joblib.load(mmap_mode="r")``
    gives a model read-only arrays: torch warns when it wraps one, so none may reach it."""
    grids = np.random.default_rng(0).normal(size=(12, 4, 4, 8)).astype(np.float32)
    grids.flags.writeable = False
    method = "score_samples" if hasattr(estimator, "score_samples") else "transform"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = estimator.fit(grids)
        expected = getattr(fitted, method)(grids)
        joblib.dump(fitted, tmp_path / "model.joblib")
        mapped = joblib.load(tmp_path / "model.joblib", mmap_mode="r")
        np.testing.assert_array_equal(getattr(mapped, method)(grids), expected)


@pytest.mark.parametrize("method", ["patchcore", "padim", "dfkde"])
def test_standard_sub_pipelines_leave_shared_grids_as_they_were(method):
    """The demo fits ``pipe[1:]`` of every standard pipeline on one shared set of grids: no
    step may write over them (an in-place aggregation once did, changing the others' input)."""
    from sklearn_memad.pipelines import make_detector_pipeline

    grids = np.random.default_rng(0).normal(size=(12, 4, 4, 8)).astype(np.float32)
    before = grids.copy()
    head = make_detector_pipeline(method, weights=None, random_state=0)[1:]
    if method == "dfkde":
        head.set_params(randomprojection__n_components=4)
    head.fit(grids).score_samples(grids)
    np.testing.assert_array_equal(grids, before)


def test_pipeline_memory_cache_hits_on_second_fit(data, tmp_path, monkeypatch):
    train = data[0]
    calls = []
    original = FeatureTransformer.transform

    def counting_transform(self, X):
        calls.append(len(X))
        return original(self, X)

    monkeypatch.setattr(FeatureTransformer, "transform", counting_transform)
    make = lambda: Pipeline(  # noqa: E731
        [("features", _features()), ("detector", PaDiMDetector())], memory=str(tmp_path)
    )
    first = make().fit(train)
    n_after_first = len(calls)
    assert n_after_first >= 1
    second = make().fit(train)
    assert len(calls) == n_after_first  # features came from the cache
    np.testing.assert_array_equal(first[-1].mean_, second[-1].mean_)
