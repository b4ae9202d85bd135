"""MultiCategoryDetector: one backbone, one memory per category, one model file."""

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from sklearn_memad import (
    DFKDEDetector,
    FeatureTransformer,
    LocalAggregation,
    MultiCategoryDetector,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
    anomaly_maps,
)
from sklearn_memad.persistence import (
    ModelFileError,
    inner_pipeline,
    load_model,
    read_model_info,
    save_model,
)
from sklearn_memad.pipelines import make_detector_pipeline, set_device

SIZE = 32
NAMES = ("bolt", "nut", "washer")
HEADS = {
    "patchcore": lambda: make_pipeline(
        LocalAggregation(), PatchCoreDetector(coreset_ratio=0.5, random_state=0)
    ),
    "padim": lambda: PaDiMDetector(),
    "dfkde": lambda: make_pipeline(
        RandomProjection(n_components=8, random_state=0), DFKDEDetector()
    ),
}


def _features(**changes):
    params = dict(backbone="resnet18", weights=None, layers=("layer1",), image_size=SIZE)
    return FeatureTransformer(**{**params, "random_state": 0, **changes})


def _images(n, seed, brightness=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 200, size=(n, SIZE, SIZE, 3), dtype=np.uint8)
    return images + np.uint8(brightness)  # each part looks different


@pytest.fixture(scope="module")
def data():
    """Training and test images of three categories; the test categories interleaved."""
    train = {name: _images(6, seed=i, brightness=20 * i) for i, name in enumerate(NAMES)}
    test = {name: _images(3, seed=10 + i, brightness=20 * i) for i, name in enumerate(NAMES)}
    X = np.concatenate([train[name] for name in NAMES])
    labels = np.repeat(NAMES, 6)
    order = np.random.default_rng(0).permutation(9)
    X_test = np.concatenate([test[name] for name in NAMES])[order]
    test_labels = np.repeat(NAMES, 3)[order]
    return train, X, labels, X_test, test_labels


@pytest.fixture(scope="module")
def fitted(data):
    _, X, labels, _, _ = data
    return MultiCategoryDetector(_features(), HEADS["patchcore"]()).fit(X, categories=labels)


@pytest.fixture(scope="module")
def separate(data):
    """One pipeline per category, as a user would fit them without this class."""
    train = data[0]
    return {
        name: make_pipeline(_features(), HEADS["patchcore"]()).fit(train[name]) for name in NAMES
    }


def _expected(pipelines, method, X, labels):
    """Each image's result from its own category's pipeline, in the order of X."""
    out = None
    for name in NAMES:
        rows = np.flatnonzero(labels == name)
        result = getattr(pipelines[name], method)(X[rows])
        out = np.empty((len(X),) + result.shape[1:], result.dtype) if out is None else out
        out[rows] = result
    return out


def _kept(model, before):
    """Assert that ``model`` holds exactly the attributes ``before`` (a copy of its vars)."""
    assert vars(model).keys() == before.keys()
    assert all(vars(model)[key] is value for key, value in before.items())


# ------------------------------------------------------------------------ scores
@pytest.mark.parametrize("kind", sorted(HEADS))
def test_scores_are_those_of_separate_pipelines_in_input_order(kind, data):
    train, X, labels, X_test, test_labels = data
    model = MultiCategoryDetector(_features(), HEADS[kind]()).fit(X, categories=labels)
    pipelines = {
        name: make_pipeline(_features(), HEADS[kind]()).fit(train[name]) for name in NAMES
    }
    for method in ("score_samples", "decision_function"):
        got = getattr(model, method)(X_test, categories=test_labels)
        want = _expected(pipelines, method, X_test, test_labels)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=method)
    np.testing.assert_array_equal(
        model.predict(X_test, categories=test_labels),
        _expected(pipelines, "predict", X_test, test_labels),
    )
    assert list(model.heads_) == list(NAMES) and model.categories_.tolist() == list(NAMES)


def test_every_chunking_gives_the_same_results(fitted, data):
    _, _, _, X_test, test_labels = data
    whole = fitted.score_samples(X_test, categories=test_labels)
    for chunk_size in (1, 2, 4):
        model = clone(fitted).set_params(chunk_size=chunk_size)
        vars(model).update(
            {key: value for key, value in vars(fitted).items() if key.endswith("_")}
        )
        scores = model.score_samples(X_test, categories=test_labels)
        np.testing.assert_allclose(scores, whole, rtol=1e-6, atol=1e-6)


def test_each_head_is_called_once_per_chunk_with_its_images(fitted, data, monkeypatch):
    _, _, _, X_test, test_labels = data
    calls = []
    for name, head in fitted.heads_.items():
        original = head.score_samples
        monkeypatch.setattr(
            head,
            "score_samples",
            lambda grids, name=name, original=original: (
                calls.append((name, len(grids))) or original(grids)
            ),
        )
    fitted.score_samples(X_test, categories=test_labels)
    assert sorted(calls) == [(name, 3) for name in NAMES]


def test_patch_scores_and_maps_are_those_of_each_category_pipeline(fitted, separate, data):
    _, _, _, X_test, test_labels = data
    patches = fitted.score_patches(X_test, categories=test_labels)
    maps = fitted.anomaly_maps(X_test, categories=test_labels, sigma=2.0)
    assert patches.shape == (9, 8, 8) and maps.shape == (9, SIZE, SIZE)
    for name in NAMES:
        rows = test_labels == name
        pipeline = separate[name]
        aggregation, detector = pipeline[-1]
        want = detector.score_patches(aggregation.transform(pipeline[0].transform(X_test[rows])))
        np.testing.assert_allclose(patches[rows], want, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(
            maps[rows], anomaly_maps(pipeline, X_test[rows], sigma=2.0), rtol=1e-5, atol=1e-5
        )
    resized = fitted.anomaly_maps(X_test[:2], categories="nut", output_size=(16, 24))
    assert resized.shape == (2, 16, 24)


def test_category_pipeline_shares_the_fitted_parts(fitted, data):
    _, _, _, X_test, _ = data
    pipeline = fitted.category_pipeline("washer")
    assert pipeline[0] is fitted.features_ and pipeline[-1] is fitted.heads_["washer"][-1]
    np.testing.assert_array_equal(
        pipeline.score_samples(X_test), fitted.score_samples(X_test, categories="washer")
    )


def test_integer_categories_and_a_single_name_for_all_images(data):
    train, X, labels, X_test, _ = data
    codes = np.searchsorted(NAMES, labels) + 100
    model = MultiCategoryDetector(_features(), PaDiMDetector()).fit(X, categories=codes)
    assert model.categories_.dtype == np.int64 and model.categories_.tolist() == [100, 101, 102]
    one = model.score_samples(X_test, categories=101)
    np.testing.assert_array_equal(one, model.score_samples(X_test, categories=[101] * 9))
    separate = make_pipeline(_features(), PaDiMDetector()).fit(train["nut"])
    np.testing.assert_allclose(one, separate.score_samples(X_test), rtol=1e-6, atol=1e-6)


def test_fit_predict_labels_as_the_pipelines_and_labels_reach_the_heads(data):
    train, X, labels, _, _ = data
    model = MultiCategoryDetector(_features(), PaDiMDetector(contamination=0.2))
    got = model.fit_predict(X, categories=labels)
    want = [
        make_pipeline(_features(), PaDiMDetector(contamination=0.2)).fit_predict(train[name])
        for name in NAMES
    ]
    np.testing.assert_array_equal(got, np.concatenate(want))
    assert (got == -1).any()
    y = np.ones(18)
    y[0] = -1  # left out of bolt's memory
    model.fit(X, y, categories=labels)
    assert [head.n_samples_seen_ for head in model.heads_.values()] == [5, 6, 6]


# ------------------------------------------------------------------------ from_pipelines
def test_from_pipelines_keeps_one_backbone_and_scores_as_the_pipelines(separate, data, tmp_path):
    _, _, _, X_test, test_labels = data
    model = MultiCategoryDetector.from_pipelines(
        {np.str_(name): separate[name] for name in NAMES[::-1]}  # keys as NumPy gives them
    )
    assert list(model.heads_) == list(NAMES) and all(type(key) is str for key in model.head)
    save_model(model, tmp_path / "line.safetensors")
    assert model.features_ is separate["washer"][0]  # the first one given
    assert model.heads_["nut"] is separate["nut"][-1]  # shared, not copied
    assert not any(
        isinstance(step, FeatureTransformer)
        for head in model.heads_.values()
        for _, step in head.steps
    )
    np.testing.assert_allclose(
        model.score_samples(X_test, categories=test_labels),
        _expected(separate, "score_samples", X_test, test_labels),
        rtol=1e-6,
        atol=1e-6,
    )


def test_from_pipelines_with_other_heads_refits_each_category_with_its_own(data):
    train, X, labels, X_test, test_labels = data
    pipelines = {
        "bolt": make_pipeline(_features(), PaDiMDetector()).fit(train["bolt"]),
        "nut": make_pipeline(_features(), HEADS["patchcore"]()).fit(train["nut"]),
        "washer": make_pipeline(_features(), HEADS["dfkde"]()).fit(train["washer"]),
    }
    model = MultiCategoryDetector.from_pipelines(pipelines, chunk_size=4)
    assert sorted(model.head) == list(NAMES) and model.chunk_size == 4
    refitted = clone(model).fit(X, categories=labels)
    assert type(refitted.heads_["bolt"]) is PaDiMDetector
    np.testing.assert_allclose(
        refitted.score_samples(X_test, categories=test_labels),
        model.score_samples(X_test, categories=test_labels),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"image_size": 48}, r"image_size=\(48, 48\) where the other has \(32, 32\)"),
        ({"layers": ("layer2",)}, r"layers=\('layer2',\)"),
        ({"random_state": 1}, "init_seed_=.*one int random_state"),
    ],
    ids=["image_size", "layers", "random weights"],
)
def test_from_pipelines_refuses_other_features_naming_the_category(changes, named, data):
    train = data[0]
    pipelines = {
        "bolt": make_pipeline(_features(), PaDiMDetector()).fit(train["bolt"]),
        "nut": make_pipeline(_features(**changes), PaDiMDetector()).fit(train["nut"]),
    }
    with pytest.raises(ValueError, match=rf"pipelines\['nut'\] computes other .*{named}"):
        MultiCategoryDetector.from_pipelines(pipelines)


def test_from_pipelines_ignores_settings_that_do_not_change_features(data):
    train = data[0]
    pipelines = {
        "bolt": make_pipeline(_features(), PaDiMDetector()).fit(train["bolt"]),
        "nut": make_pipeline(_features(batch_size=2, image_size=(32, 32)), PaDiMDetector()).fit(
            train["nut"]
        ),
    }
    assert MultiCategoryDetector.from_pipelines(pipelines).categories_.tolist() == ["bolt", "nut"]


@pytest.mark.parametrize(
    "pipelines, error, named",
    [
        ({}, TypeError, "non-empty dict"),
        ([("bolt", None)], TypeError, "non-empty dict"),
        ({"bolt": PaDiMDetector()}, TypeError, r"pipelines\['bolt'\] must be a Pipeline"),
        (
            {"bolt": make_pipeline(_features(), PaDiMDetector())},
            ValueError,
            r"pipelines\['bolt'\] is not fitted",
        ),
        ({1.5: None}, TypeError, r"the keys of pipelines must hold .*\['float'\]"),
    ],
    ids=["empty", "not a dict", "no features", "unfitted", "float key"],
)
def test_from_pipelines_refuses_what_it_cannot_join(pipelines, error, named):
    with pytest.raises(error, match=named):
        MultiCategoryDetector.from_pipelines(pipelines)


# ------------------------------------------------------------------------ model file
def test_a_model_file_round_trips_with_identical_scores(fitted, data, tmp_path):
    _, _, _, X_test, test_labels = data
    path = tmp_path / "line.safetensors"
    info = save_model(fitted, path, line="press 3")
    loaded = load_model(path)
    assert type(loaded) is MultiCategoryDetector
    assert loaded.categories_.dtype == fitted.categories_.dtype
    np.testing.assert_array_equal(loaded.categories_, fitted.categories_)
    for method in ("score_samples", "decision_function", "predict", "score_patches"):
        np.testing.assert_array_equal(
            getattr(loaded, method)(X_test, categories=test_labels),
            getattr(fitted, method)(X_test, categories=test_labels),
        )
    assert info == read_model_info(path)
    assert info["categories"] == list(NAMES) and info["method"] == "PatchCoreDetector"
    assert info["image_size"] == (SIZE, SIZE) and info["line"] == "press 3"
    assert inner_pipeline(loaded) is None  # one pipeline per category
    with safe_open(path, "np") as handle:  # the backbone is built from its spec, not stored
        assert not any(key.startswith("model.features") for key in handle.keys())


def test_a_model_file_of_integer_categories_and_mixed_heads_round_trips(data, tmp_path):
    train, X, labels, X_test, _ = data
    heads = {7: PaDiMDetector(), 8: HEADS["dfkde"](), 9: HEADS["patchcore"]()}
    codes = np.searchsorted(NAMES, labels) + 7
    model = MultiCategoryDetector(_features(), heads).fit(X, categories=codes)
    path = tmp_path / "line.safetensors"
    info = save_model(model, path)
    loaded = load_model(path)
    assert info["categories"] == [7, 8, 9]
    assert info["method"] == "DFKDEDetector, PaDiMDetector, PatchCoreDetector"
    assert list(loaded.heads_) == [7, 8, 9] and sorted(loaded.head) == [7, 8, 9]
    test_codes = np.tile([9, 7, 8], 3)
    np.testing.assert_array_equal(
        loaded.score_samples(X_test, categories=test_codes),
        model.score_samples(X_test, categories=test_codes),
    )


def test_saving_an_unfitted_detector_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="not a fitted MultiCategoryDetector"):
        save_model(MultiCategoryDetector(_features(), PaDiMDetector()), tmp_path / "m.st")
    assert not list(tmp_path.iterdir())


def _edit_model(path, edit):
    """Rewrite the model JSON of a model file with ``edit(document)``."""
    with safe_open(path, "np") as handle:
        header = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    document = json.loads(header["model"])
    edit(document)
    header["model"] = json.dumps(document)
    save_file(tensors, path, metadata=header)


def _rename_head(document):
    heads = document["state"]["heads_"]
    renamed = {("screw" if key == "nut" else key): value for key, value in heads.items()}
    document["state"]["heads_"] = renamed


def _set_categories(items):
    def edit(document):
        document["state"]["categories_"]["items"] = items

    return edit


@pytest.mark.parametrize(
    "edit, named",
    [
        (_set_categories(["bolt", 3, "washer"]), "a strings entry holds str items only"),
        (_set_categories(["bolt", "nut"]), r"of shape \[3\] cannot hold 2 items"),
        (_set_categories(["nut", "bolt", "washer"]), "not a fitted MultiCategoryDetector"),
        (_set_categories(["bolt", "nut", "screw"]), "not a fitted MultiCategoryDetector"),
        (_rename_head, "not a fitted MultiCategoryDetector"),
    ],
    ids=["not str", "wrong count", "unsorted", "renamed category", "renamed head"],
)
def test_altered_category_files_are_refused(edit, named, fitted, tmp_path):
    path = tmp_path / "line.safetensors"
    save_model(fitted, path)
    _edit_model(path, edit)
    with pytest.raises(ModelFileError, match=named):
        load_model(path)


def test_string_arrays_of_any_shape_round_trip(tmp_path):
    detector = PaDiMDetector().fit(np.random.default_rng(0).normal(size=(6, 2, 2, 3)))
    values = {
        "names_": np.array(["a", "bc", ""]),
        "grid_": np.array([["x", "yy"], ["zzz", "é"]]),
        "empty_": np.array([], dtype=str),
        "same_": None,
    }
    values["same_"] = values["names_"]
    vars(detector).update(values)
    path = tmp_path / "model.safetensors"
    save_model(detector, path)
    loaded = load_model(path)
    for name, value in values.items():
        assert vars(loaded)[name].dtype == value.dtype, name
        np.testing.assert_array_equal(vars(loaded)[name], value)
    assert loaded.same_ is loaded.names_
    detector.bad_ = np.array([b"bytes"])
    with pytest.raises(TypeError, match="an array of dtype"):
        save_model(detector, path)


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "categories, error, named",
    [
        (None, ValueError, "categories is required"),
        (["bolt"] * 17, ValueError, r"shape \(18,\); got shape \(17,\)"),
        ([["bolt"] * 18], ValueError, r"shape \(18,\); got shape \(1, 18\)"),
        ([1.0] * 18, TypeError, r"categories must hold category names, str or int.*'float'"),
        ([True, False] * 9, TypeError, r"\['bool'\]"),
        (["bolt", None] * 9, TypeError, r"\['NoneType'\]"),
        (["bolt", 1] * 9, TypeError, "mixes str and int names"),
        ({"bolt", "nut"}, TypeError, "a sequence with one category"),
        (2.5, TypeError, "got float"),
    ],
    ids=["none", "short", "2-d", "float", "bool", "None", "mixed", "set", "float scalar"],
)
def test_bad_categories_are_refused_and_a_fitted_model_is_kept(
    categories, error, named, fitted, data
):
    _, X, _, X_test, test_labels = data
    before = dict(vars(fitted))
    scores = fitted.score_samples(X_test, categories=test_labels)
    with pytest.raises(error, match=named):
        fitted.fit(X, categories=categories)
    _kept(fitted, before)
    np.testing.assert_array_equal(fitted.score_samples(X_test, categories=test_labels), scores)


def test_unknown_categories_at_scoring_are_named(fitted, data):
    _, _, _, X_test, test_labels = data
    wrong = test_labels.copy()
    wrong[[1, 4]] = ["screw", "gear"]
    with pytest.raises(ValueError, match=r"2 category\(ies\) .* \['gear', 'screw'\]; it knows"):
        fitted.score_samples(X_test, categories=wrong)
    with pytest.raises(ValueError, match=r"not fitted on: \[1\]"):
        fitted.predict(X_test, categories=1)
    with pytest.raises(ValueError, match=r"shape \(9,\); got shape \(3,\)"):
        fitted.anomaly_maps(X_test, categories=NAMES)
    with pytest.raises(ValueError, match="not fitted on"):
        fitted.category_pipeline("screw")
    with pytest.raises(TypeError, match="one category name"):
        fitted.category_pipeline(["bolt"])


def test_a_category_with_too_few_images_is_named_and_the_model_is_kept(fitted, data):
    _, X, labels, X_test, test_labels = data
    before = dict(vars(fitted))
    short = labels.copy()
    short[6] = "spring"  # one image only
    with pytest.raises(
        ValueError, match=r"head of category 'spring' .* 1 image\(s\): .*at least 2"
    ):
        fitted.fit(X, categories=short)
    _kept(fitted, before)


def test_a_dict_head_must_cover_every_category(data):
    _, X, labels, _, _ = data
    model = MultiCategoryDetector(_features(), {"bolt": PaDiMDetector(), "nut": PaDiMDetector()})
    with pytest.raises(ValueError, match=r"\['washer'\], for which the dict head has no entry"):
        model.fit(X, categories=labels)
    model.set_params(head={name: "padim" for name in NAMES})
    with pytest.raises(TypeError, match=r"head\['bolt'\] must be an estimator"):
        model.fit(X, categories=labels)
    assert not hasattr(model, "heads_")


def test_bad_images_labels_and_settings_are_refused(fitted, data):
    _, X, labels, X_test, test_labels = data
    with pytest.raises(ValueError, match=r"y must have shape \(18,\)"):
        clone(fitted).fit(X, np.ones(5), categories=labels)
    with pytest.raises(ValueError, match="3 colour channels"):
        fitted.score_samples(X_test[..., :2], categories=test_labels)
    with pytest.raises(ValueError, match="output_size must be"):
        fitted.anomaly_maps(X_test, categories=test_labels, output_size=(0, 3))
    with pytest.raises(ValueError, match="chunk_size"):
        clone(fitted).set_params(chunk_size=0).fit(X, categories=labels)


# ------------------------------------------------------------------------ scikit-learn API
def test_clone_and_params_follow_scikit_learn(fitted):
    params = fitted.get_params(deep=True)
    assert params["features__backbone"] == "resnet18"
    assert params["head__patchcoredetector__coreset_ratio"] == 0.5
    copy = clone(fitted)
    assert not hasattr(copy, "heads_") and copy.chunk_size == fitted.chunk_size
    copy.set_params(head__patchcoredetector__n_neighbors=3, features__batch_size=4)
    assert copy.head[-1].n_neighbors == 3 and fitted.head[-1].n_neighbors != 3
    assert copy.features.batch_size == 4
    assert fitted.__sklearn_tags__().estimator_type == "outlier_detector"


def test_set_device_reaches_the_features_and_every_head(data):
    _, X, labels, X_test, _ = data
    heads = {"bolt": PaDiMDetector(), "nut": HEADS["patchcore"](), "washer": HEADS["dfkde"]()}
    model = MultiCategoryDetector(_features(), heads).fit(X, categories=labels)
    scores = model.score_samples(X_test, categories="nut")
    set_device(model, "auto")
    estimators = [model.features, model.features_]
    for head in [*model.head.values(), *model.heads_.values()]:
        estimators += [step for _, step in head.steps] if hasattr(head, "steps") else [head]
    devices = {estimator.get_params(deep=False)["device"] for estimator in estimators}
    assert devices == {"auto"}
    np.testing.assert_allclose(
        model.score_samples(X_test, categories="nut"), scores, rtol=1e-5, atol=1e-5
    )


def test_a_scoring_model_is_unfitted_until_fit(data):
    _, _, _, X_test, test_labels = data
    from sklearn.exceptions import NotFittedError

    model = MultiCategoryDetector(_features(), PaDiMDetector())
    with pytest.raises(NotFittedError):
        model.score_samples(X_test, categories=test_labels)


def test_the_standard_pipeline_parts_make_a_multi_category_detector(data):
    train, X, labels, X_test, test_labels = data
    template = make_detector_pipeline(
        "padim", backbone="resnet18", weights=None, image_size=SIZE, n_components=8
    )
    model = MultiCategoryDetector(template[0], template[1:]).fit(X, categories=labels)
    want = clone(template).fit(train["washer"]).score_samples(X_test)
    np.testing.assert_allclose(
        model.score_samples(X_test, categories="washer"), want, rtol=1e-6, atol=1e-6
    )


def test_memad_score_names_a_multi_category_file_and_what_to_do(tmp_path, capsys):
    from sklearn_memad import FeatureTransformer, PaDiMDetector, cli
    from sklearn_memad.persistence import save_model

    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    model = MultiCategoryDetector(
        FeatureTransformer(backbone="resnet18", weights=None, image_size=32, random_state=0),
        PaDiMDetector(),
    ).fit(images, categories=["a"] * 4 + ["b"] * 4)
    path = tmp_path / "parts.safetensors"
    save_model(model, path)
    folder = tmp_path / "images"
    folder.mkdir()
    code = cli.main(["score", "--model", str(path), str(folder), "--out", str(tmp_path / "o")])
    assert code == 4
    assert "MultiCategoryDetector of 2 categories" in capsys.readouterr().err
