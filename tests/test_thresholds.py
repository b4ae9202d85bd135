"""Thresholds chosen for a goal (ThresholdedDetector, select_threshold) and readable scores."""

import doctest

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import IsolationForest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline

from sklearn_memad import (
    DFKDEDetector,
    PaDiMDetector,
    PatchCoreDetector,
    RandomProjection,
    masks,
    thresholds,
)
from sklearn_memad.metrics import f1_max
from sklearn_memad.thresholds import ThresholdedDetector, anomaly_percentile, select_threshold

DETECTORS = [
    PaDiMDetector(),
    PatchCoreDetector(coreset_ratio=0.2, random_state=0),
    DFKDEDetector(),
]
IDS = ["padim", "patchcore", "dfkde"]


def _grids(n, seed, defect=None, h=4, w=4, d=6):
    """Normal grids with a mean per position; ``defect``: per-image strength added at (1, 2)."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(scale=2.0, size=(1, h, w, d))
    grids = means + rng.normal(size=(n, h, w, d))
    if defect is not None:
        grids[:, 1, 2] += np.asarray(defect, dtype=float)[:, None]
    return grids.astype(np.float32)


def _labelled(n_normal, n_defective, seed):
    """A labelled set whose defects range from faint to obvious, so thresholds matter."""
    strengths = np.random.default_rng(seed + 1000).uniform(1.0, 7.0, n_defective)
    X = np.concatenate([_grids(n_normal, seed), _grids(n_defective, seed + 1, strengths)])
    return X, np.r_[np.ones(n_normal, dtype=int), -np.ones(n_defective, dtype=int)]


@pytest.fixture(scope="module")
def labelled():
    return _labelled(120, 40, seed=0)


@pytest.fixture(scope="module")
def held_out():
    return _labelled(300, 300, seed=50)


# ------------------------------------------------------------------------- select_threshold
def _random_validation(seed, n=60, ties=False):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random(n) < 0.4, -1, 1)
    y[:2] = [1, -1]
    scores = rng.normal(size=n) - 1.5 * (y == -1)
    if ties:
        scores = np.round(scores, 1)
    return y, scores


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 1.0])
def test_recall_target_reached_with_fewest_flags(seed, target):
    y, scores = _random_validation(seed, ties=seed % 2 == 1)
    r = select_threshold(y, scores, objective="recall", target=target)
    flagged = scores < r.threshold
    assert np.mean(flagged[y == -1]) == pytest.approx(r.recall)
    assert np.mean(flagged[y == 1]) == pytest.approx(r.false_positive_rate)
    assert r.recall >= target
    # The next less aggressive decision (un-flag the highest flagged score) misses the target.
    fewer = scores < scores[flagged].max()
    assert np.mean(fewer[y == -1]) < target


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.0, 0.05, 0.2])
def test_fpr_target_respected_with_most_catches(seed, target):
    y, scores = _random_validation(seed, ties=seed % 2 == 1)
    r = select_threshold(y, scores, objective="fpr", target=target)
    flagged = scores < r.threshold
    assert np.mean(flagged[y == 1]) == pytest.approx(r.false_positive_rate)
    assert r.false_positive_rate <= target
    assert np.mean(flagged[y == -1]) == pytest.approx(r.recall)
    # Flagging the next distinct score as well breaks the target.
    more = scores <= scores[~flagged].min()
    assert np.mean(more[y == 1]) > target


@pytest.mark.parametrize("seed", range(4))
def test_f1_objective_reaches_f1_max(seed):
    y, scores = _random_validation(seed, ties=seed % 2 == 1)
    r = select_threshold(y, scores)
    assert r.f1 == pytest.approx(f1_max(y, -scores))
    # Thresholds sit between scores, never on one, so a tie cannot flip a decision.
    assert not np.isin(r.threshold, scores)


def test_count_targets_tolerate_float_rounding():
    # 0.95 * 20 is 18.999999999999996 in floating point: 19 of 20 is enough.
    y = np.r_[np.ones(20), -np.ones(20)]
    scores = np.r_[np.zeros(20), -np.arange(1.0, 21.0)]
    scores[20] = 5.0  # one anomaly looks more normal than every normal image
    r = select_threshold(y, scores, objective="recall", target=0.95)
    assert r.recall == 0.95 and r.false_positive_rate == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"objective": "recall"}, "objective='recall' needs a target"),
        ({"objective": "fpr"}, "objective='fpr' needs a target"),
        ({"objective": "f1", "target": 0.9}, "not used with objective='f1'"),
        ({"objective": "recall", "target": 1.5}, "'target' parameter"),
        ({"objective": "precision", "target": 0.5}, "'objective' parameter"),
    ],
)
def test_select_threshold_bad_objective_or_target(kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_threshold([1, -1], [0.0, -1.0], **kwargs)


def test_select_threshold_bad_labels_and_scores():
    with pytest.raises(ValueError, match="both normal .* no anomalous"):
        select_threshold([1, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match=r"shape \(3,\); got shape \(2,\)"):
        select_threshold([1, -1, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="NaN or infinity"):
        select_threshold([1, -1], [0.0, np.nan])
    with pytest.raises(ValueError, match=r"\+1 \(normal\) and -1"):
        select_threshold([0, 1], [0.0, 1.0])


# ---------------------------------------------------------------------- ThresholdedDetector
@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_recall_target_holds_on_held_out_images(detector, labelled, held_out):
    X, y = labelled
    td = ThresholdedDetector(detector, objective="recall", target=0.9, random_state=0).fit(X, y)
    # All anomalies validate the threshold; a quarter of the normal images do.
    assert (td.n_val_anomalies_, td.n_val_normals_) == (40, 30)
    assert td.recall_ >= 0.9
    np.testing.assert_allclose(td.recall_, np.mean(td.predict(X[y == -1]) == -1))
    # The memory holds the other 90 normal images only.
    assert td.estimator_.train_scores_.shape == (90,)
    # On new images the recall stays near its target (40 validation anomalies: +-0.1).
    X_new, y_new = held_out
    labels = td.predict(X_new)
    assert np.mean(labels[y_new == -1] == -1) >= 0.8
    assert np.mean(labels[y_new == 1] == -1) == pytest.approx(td.false_positive_rate_, abs=0.15)


def test_fpr_objective_on_held_out_normals(labelled, held_out):
    X, y = labelled
    td = ThresholdedDetector(
        PaDiMDetector(), objective="fpr", target=0.1, cv=0.5, random_state=0
    ).fit(X, y)
    assert td.false_positive_rate_ <= 0.1
    X_new, y_new = held_out
    assert np.mean(td.predict(X_new[y_new == 1]) == -1) <= 0.2


def test_stricter_recall_target_flags_more(labelled):
    X, y = labelled
    params = {"objective": "recall", "random_state": 0}
    loose = ThresholdedDetector(PaDiMDetector(), target=0.5, **params).fit(X, y)
    strict = ThresholdedDetector(PaDiMDetector(), target=1.0, **params).fit(X, y)
    assert strict.threshold_ > loose.threshold_
    assert strict.recall_ == 1.0 and loose.recall_ >= 0.5
    assert strict.false_positive_rate_ >= loose.false_positive_rate_


def test_outlier_api(labelled, held_out):
    X, y = labelled
    td = ThresholdedDetector(DFKDEDetector(), random_state=0).fit(X, y)
    X_new, _ = held_out
    scores = td.score_samples(X_new)
    np.testing.assert_array_equal(scores, td.estimator_.score_samples(X_new))
    np.testing.assert_allclose(td.decision_function(X_new), scores - td.threshold_)
    np.testing.assert_array_equal(td.predict(X_new), np.where(scores < td.threshold_, -1, 1))
    assert 0.0 <= td.f1_ <= 1.0


def test_prefit_uses_the_given_detector_and_all_validation_images(labelled, held_out):
    X, y = labelled
    detector = PaDiMDetector().fit(X[y == 1])
    X_val, y_val = held_out
    td = ThresholdedDetector(detector, objective="recall", target=0.95, cv="prefit")
    td.fit(X_val, y_val)
    assert td.estimator_ is detector
    assert (td.n_val_normals_, td.n_val_anomalies_) == (300, 300)
    labels = td.predict(X_val)
    assert np.mean(labels[y_val == -1] == -1) == td.recall_ >= 0.95
    assert np.mean(labels[y_val == 1] == -1) == td.false_positive_rate_


def test_prefit_needs_a_fitted_detector(labelled):
    X, y = labelled
    with pytest.raises(ValueError, match="cv='prefit' needs a fitted estimator"):
        ThresholdedDetector(PaDiMDetector(), cv="prefit").fit(X, y)


def test_failed_fit_leaves_the_fitted_state(labelled):
    X, y = labelled
    td = ThresholdedDetector(PaDiMDetector(), cv=0.5, random_state=0).fit(X, y)
    before = dict(td.__dict__)
    # Two normal images: one for the memory, which PaDiM refuses after the split was made.
    few = np.r_[np.flatnonzero(y == 1)[:2], np.flatnonzero(y == -1)[:3]]
    with pytest.raises(ValueError, match="at least 2 normal samples"):
        td.fit(X[few], y[few])
    assert td.__dict__.keys() == before.keys()
    assert all(td.__dict__[k] is before[k] for k in before)


@pytest.mark.parametrize(
    "params, fit_y, message",
    [
        ({}, None, "y is required"),
        ({}, "normal_only", r"got 120 images, all normal \(\+1\)"),
        ({}, "zero_one", r"y must hold \+1 \(normal\) and -1"),
        ({"objective": "recall"}, "ok", "objective='recall' needs a target"),
        ({"cv": 0.001}, "ok", r"cv=0.001 holds out 0 of the 120 normal images"),
        ({"cv": 1.5}, "ok", "'cv' parameter"),
    ],
)
def test_thresholded_detector_bad_input(labelled, params, fit_y, message):
    X, y = labelled
    if fit_y == "normal_only":
        X, y = X[y == 1], y[y == 1]
    labels = {"zero_one": (y == -1).astype(int), None: None}.get(fit_y, y)
    with pytest.raises(ValueError, match=message):
        ThresholdedDetector(PaDiMDetector(), **params).fit(X, labels)


def test_inside_a_pipeline_both_ways(labelled, held_out):
    X, y = labelled
    X_new, _ = held_out
    kwargs = {"objective": "recall", "target": 0.9, "random_state": 0}
    outer = make_pipeline(
        RandomProjection(n_components=4, random_state=0),
        ThresholdedDetector(PaDiMDetector(), **kwargs),
    ).fit(X, y)
    inner = ThresholdedDetector(
        make_pipeline(RandomProjection(n_components=4, random_state=0), PaDiMDetector()), **kwargs
    ).fit(X, y)
    assert outer[-1].recall_ >= 0.9
    np.testing.assert_array_equal(outer.predict(X_new), inner.predict(X_new))
    np.testing.assert_allclose(outer.score_samples(X_new), inner.score_samples(X_new))
    np.testing.assert_allclose(anomaly_percentile(outer, X_new), anomaly_percentile(inner, X_new))


def test_joblib_round_trip(labelled, held_out, tmp_path):
    X, y = labelled
    X_new, _ = held_out
    td = ThresholdedDetector(
        PatchCoreDetector(coreset_ratio=0.2, random_state=0),
        objective="fpr",
        target=0.1,
        random_state=0,
    ).fit(X, y)
    joblib.dump(td, tmp_path / "td.joblib")
    loaded = joblib.load(tmp_path / "td.joblib")
    for name in ("threshold_", "recall_", "false_positive_rate_"):
        assert getattr(loaded, name) == getattr(td, name)
    np.testing.assert_array_equal(loaded.decision_function(X_new), td.decision_function(X_new))


def test_grid_search(labelled):
    X, y = labelled
    td = ThresholdedDetector(
        PatchCoreDetector(coreset_ratio=0.2, random_state=0),
        objective="recall",
        target=0.9,
        random_state=0,
    )
    search = GridSearchCV(
        td,
        {"estimator__n_neighbors": [1, 5], "target": [0.8, 0.95]},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring="balanced_accuracy",
    ).fit(X, y)
    assert search.best_estimator_.recall_ >= search.best_params_["target"]
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert set(search.best_estimator_.predict(X[:5])) <= {-1, 1}


def test_clone_and_params():
    td = ThresholdedDetector(PaDiMDetector(reg=0.1), objective="fpr", target=0.01)
    copy = clone(td)
    assert copy.get_params()["estimator__reg"] == 0.1
    assert copy.target == 0.01 and copy.cv == 0.25


# ----------------------------------------------------------------------- anomaly_percentile
@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_percentile_definition_and_monotone(detector, held_out):
    train = _grids(80, seed=7)
    est = clone(detector).fit(train)
    X_new, _ = held_out
    p = anomaly_percentile(est, X_new)
    raw = -est.score_samples(X_new)
    reference = -est.train_scores_
    expected = 100 * (
        np.mean(reference[None] < raw[:, None], axis=1)
        + 0.5 * np.mean(reference[None] == raw[:, None], axis=1)
    )
    np.testing.assert_allclose(p, expected)
    order = np.argsort(raw)
    assert (np.diff(p[order]) >= 0).all()
    assert p.min() >= 0 and p.max() <= 100


def test_percentile_is_one_scale_for_every_detector(held_out):
    """Held-out normal images spread evenly over 0-100 whichever detector scores them.

    PatchCore keeps its whole bank here (coreset_ratio=1.0), where its out-of-sample reference
    is exact; a thinned coreset makes the reference pessimistic (tests/test_calibration.py).
    """
    train = _grids(150, seed=8)
    X_new, y_new = held_out
    exact = [PaDiMDetector(), DFKDEDetector(), PatchCoreDetector(coreset_ratio=1.0)]
    for est in (clone(detector).fit(train) for detector in exact):
        normal = anomaly_percentile(est, X_new[y_new == 1])
        # The median of 150 reference scores is itself uncertain by about 4 points (1 sd).
        assert 35 <= np.median(normal) <= 65, type(est).__name__
        assert 0.04 <= np.mean(normal > 90) <= 0.2, type(est).__name__
    obvious = _grids(5, seed=9, defect=np.full(5, 12.0))
    for detector in DETECTORS:
        np.testing.assert_array_equal(anomaly_percentile(clone(detector).fit(train), obvious), 100)


def test_percentile_needs_a_memad_detector(labelled):
    X, y = labelled
    forest = IsolationForest(random_state=0).fit(X[y == 1].reshape(120, -1))
    with pytest.raises(TypeError, match="IsolationForest as the final step"):
        anomaly_percentile(forest, X[:3].reshape(3, -1))


@pytest.mark.parametrize("module", [thresholds, masks], ids=["thresholds", "masks"])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
