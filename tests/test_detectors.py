"""Behaviour of the three detectors on synthetic patch-feature grids."""

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_memad import DFKDEDetector, PaDiMDetector, PatchCoreDetector
from sklearn_memad.detectors import image_scores_from_patches

# The image score of the largest patch (top_k=1): these grids have 30 patches, one of them
# defective, which the default mean of the 30 largest would average away.
DETECTORS = [
    PaDiMDetector(top_k=1),
    PatchCoreDetector(coreset_ratio=0.1, random_state=0, top_k=1),
    DFKDEDetector(top_k=1),
]
IDS = ["padim", "patchcore", "dfkde"]


def _grids(n, h=6, w=5, d=8, seed=0):
    """Normal grids: every position has its own mean, so position-wise models have work to do."""
    rng = np.random.default_rng(seed)
    position_means = np.random.default_rng(123).normal(scale=2.0, size=(1, h, w, d))
    return (position_means + rng.normal(size=(n, h, w, d))).astype(np.float32)


@pytest.fixture(scope="module")
def train():
    return _grids(60)


@pytest.fixture(scope="module")
def test_set():
    normal = _grids(20, seed=1)
    abnormal = _grids(20, seed=2)
    abnormal[:, 2, 3] += 6.0  # one defective patch per image
    return normal, abnormal


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_scores_separate_defects(detector, train, test_set):
    normal, abnormal = test_set
    est = clone(detector).fit(train)
    patch = est.score_patches(abnormal)
    assert patch.shape == (20, 6, 5)
    assert patch.dtype == np.float64
    # The defective patch is the most abnormal one in every image.
    assert (patch.reshape(20, -1).argmax(axis=1) == 2 * 5 + 3).all()
    assert est.score_samples(abnormal).max() < est.score_samples(normal).min()
    assert (est.predict(abnormal) == -1).all()


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_outlier_api_conventions(detector, train, test_set):
    normal, abnormal = test_set
    X = np.concatenate([normal, abnormal])
    est = clone(detector).fit(train)
    scores = est.score_samples(X)
    np.testing.assert_allclose(est.decision_function(X), scores - est.offset_)
    np.testing.assert_array_equal(est.predict(X), np.where(scores - est.offset_ < 0, -1, 1))
    # score_samples is minus the image anomaly score (here the largest patch score).
    np.testing.assert_allclose(-scores, est.score_patches(X).reshape(len(X), -1).max(axis=1))
    assert est.memory_bytes_ > 0 and isinstance(est.memory_bytes_, int)
    assert est.train_scores_.shape == (len(train),)


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_top_k_mean(detector, train, test_set):
    normal, _ = test_set
    est = clone(detector).set_params(top_k=4, border=0).fit(train)
    patch = est.score_patches(normal).reshape(len(normal), -1)
    expected = np.sort(patch, axis=1)[:, -4:].mean(axis=1)
    np.testing.assert_allclose(-est.score_samples(normal), expected)


def test_image_scores_top_k_capped():
    patches = np.arange(6, dtype=float).reshape(1, 2, 3)
    assert image_scores_from_patches(patches, top_k=100)[0] == pytest.approx(2.5)
    assert image_scores_from_patches(patches, top_k=2)[0] == pytest.approx(4.5)


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_same_random_state_same_results(detector, train, test_set):
    normal, abnormal = test_set
    a = clone(detector).fit(train)
    b = clone(detector).fit(train)
    np.testing.assert_array_equal(a.score_patches(abnormal), b.score_patches(abnormal))
    assert a.offset_ == b.offset_


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_contamination_flags_that_fraction_of_new_normal_images(detector):
    """offset_ is calibrated out of sample: a fraction c of *held-out* normal images is flagged.

    An in-sample offset would flag far more (the memory matches its own images too well).
    """
    train = _grids(150, seed=3)
    held_out = _grids(400, seed=4)
    est = clone(detector).set_params(contamination=0.1).fit(train)
    flagged = np.mean(est.predict(held_out) == -1)
    assert 0.04 <= flagged <= 0.2, flagged
    # Out-of-sample training scores are worse than in-sample ones.
    in_sample = est.score_samples(train)
    assert np.median(est.train_scores_) < np.median(in_sample)


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_auto_contamination_flags_few_normals_and_defects(detector, test_set):
    train = _grids(150, seed=3)
    held_out = _grids(400, seed=4)
    est = clone(detector).fit(train)
    assert np.mean(est.predict(held_out) == -1) <= 0.06
    _, abnormal = test_set
    assert (est.predict(abnormal) == -1).all()
    q1, q3 = np.percentile(est.train_scores_, [25, 75])
    assert est.offset_ == pytest.approx(q1 - 1.5 * (q3 - q1))


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_fit_predict_uses_out_of_sample_scores(detector):
    train = _grids(100, seed=5)
    est = clone(detector).set_params(contamination=0.1)
    labels = est.fit_predict(train)
    assert labels.dtype.kind == "i"
    assert np.sum(labels == -1) == 10


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_labels_minus_one_are_left_out(detector, train, test_set):
    _, abnormal = test_set
    X = np.concatenate([train, abnormal])
    y = np.r_[np.ones(len(train)), -np.ones(len(abnormal))]
    with_labels = clone(detector).fit(X, y)
    normal_only = clone(detector).fit(train)
    np.testing.assert_allclose(
        with_labels.score_samples(abnormal), normal_only.score_samples(abnormal)
    )


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_2d_input_is_one_patch_per_sample(detector):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    est = clone(detector).fit(X)
    assert est.n_features_in_ == 4
    np.testing.assert_allclose(est.score_patches(X[:5]).reshape(5), -est.score_samples(X[:5]))
    grids = clone(detector).fit(X.reshape(50, 1, 1, 4))
    np.testing.assert_allclose(grids.score_samples(X[:5]), est.score_samples(X[:5]), rtol=1e-6)


def test_padim_matches_direct_mahalanobis(train):
    est = PaDiMDetector(reg=0.05, border=0).fit(train)
    x = _grids(3, seed=9)
    flat = train.reshape(len(train), 30, 8).astype(np.float64)
    expected = np.empty((3, 30))
    for p in range(30):  # a direct reference, one position at a time
        mean = flat[:, p].mean(axis=0)
        cov = np.cov(flat[:, p], rowvar=False) + 0.05 * np.eye(8)
        diff = x.reshape(3, 30, 8)[:, p] - mean
        expected[:, p] = np.sqrt(np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff))
    np.testing.assert_allclose(est.score_patches(x).reshape(3, 30), expected, rtol=1e-4)


def test_padim_leave_one_out_is_exact_for_held_out_model():
    train = _grids(12, h=2, w=2, d=3, seed=6)
    est = PaDiMDetector().fit(train)
    loo = est._out_of_sample_patch_scores(train)
    for i in (0, 7):
        rest = np.delete(train, i, axis=0)
        # Same model on n - 1 images, covariance divisor n - 1 as documented.
        flat = rest.reshape(11, 4, 3).astype(np.float64)
        for p in range(4):
            mean = flat[:, p].mean(axis=0)
            centred = flat[:, p] - mean
            cov = centred.T @ centred / 11 + 0.01 * np.eye(3)
            diff = train.reshape(12, 4, 3)[i, p] - mean
            ref = np.sqrt(diff @ np.linalg.solve(cov, diff))
            assert loo.reshape(12, 4)[i, p] == pytest.approx(ref, rel=1e-5)


def test_padim_works_with_fewer_images_than_features():
    train = _grids(5, d=32)
    est = PaDiMDetector().fit(train)
    assert np.isfinite(est.score_samples(_grids(3, d=32, seed=1))).all()


def test_padim_partial_fit_equals_fit(train):
    full = PaDiMDetector().fit(train)
    chunked = PaDiMDetector()
    for start in range(0, len(train), 17):
        chunked.partial_fit(train[start : start + 17])
    assert chunked.n_samples_seen_ == len(train)
    np.testing.assert_allclose(chunked.mean_, full.mean_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(chunked.whitening_, full.whitening_, rtol=1e-4, atol=1e-5)
    x = _grids(10, seed=7)
    np.testing.assert_allclose(chunked.score_samples(x), full.score_samples(x), rtol=1e-5)


def test_padim_model_file_holds_its_statistics_only_when_asked(train):
    import pickle

    fitted = PaDiMDetector().fit(train)
    # The file is the model (mean and packed factor), not the float64 statistics.
    assert len(pickle.dumps(fitted)) < 1.2 * fitted.memory_bytes_ + 20_000
    streamed = PaDiMDetector().partial_fit(train)
    assert len(pickle.dumps(streamed)) < 1.2 * fitted.memory_bytes_ + 20_000
    kept = PaDiMDetector(keep_statistics=True).partial_fit(train)
    assert len(pickle.dumps(kept)) > 2 * fitted.memory_bytes_
    # Either way a loaded model goes on learning: exactly with its statistics, and from its
    # Gaussians (float32) without them.
    exact = PaDiMDetector().fit(np.concatenate([train, train[:20]]))
    x = _grids(10, seed=7)
    for model, rtol in ((kept, 1e-6), (streamed, 1e-3)):
        resumed = pickle.loads(pickle.dumps(model)).partial_fit(train[:20])
        assert resumed.n_samples_seen_ == len(train) + 20
        np.testing.assert_allclose(resumed.score_samples(x), exact.score_samples(x), rtol=rtol)


def test_padim_model_file_from_an_older_packing_is_refused(train):
    """whitening_ was a row-major packed triangle before 2026-12-03, then single bands: such a
    model file would score silently wrong with the paired bands, so it is refused clearly."""
    import pickle

    state = PaDiMDetector().fit(train).__getstate__()
    state.pop("_whitening_layout")
    state["_whitening_band"] = 32  # the marker of the single-band layout
    old = PaDiMDetector()
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    with pytest.raises(ValueError, match="earlier version of sklearn_memad"):
        old.score_samples(train[:2])
    with pytest.raises(ValueError, match="earlier version of sklearn_memad"):
        old.partial_fit(train[:5])


def test_padim_partial_fit_continues_a_fitted_model(train):
    more = _grids(20, seed=3)
    continued = PaDiMDetector().fit(train).partial_fit(more)
    both = PaDiMDetector().fit(np.concatenate([train, more]))
    assert continued.n_samples_seen_ == len(train) + len(more)
    np.testing.assert_allclose(continued.mean_, both.mean_, rtol=1e-5, atol=1e-6)
    x = _grids(10, seed=7)
    np.testing.assert_allclose(continued.score_samples(x), both.score_samples(x), rtol=1e-4)


def test_padim_memory_is_packed_triangle(train):
    est = PaDiMDetector().fit(train)
    d = train.shape[-1]
    assert est.memory_bytes_ == 30 * (d + d * (d + 1) // 2) * 4


def test_patchcore_scores_other_grid_sizes(train):
    est = PatchCoreDetector(coreset_ratio=0.1, random_state=0).fit(train)
    assert est.score_patches(_grids(2, h=9, w=3)).shape == (2, 9, 3)


def test_patchcore_coreset_size_and_neighbours_capped(train):
    est = PatchCoreDetector(coreset_ratio=0.01, n_neighbors=50, random_state=0).fit(train)
    assert est.coreset_.shape == (int(np.ceil(0.01 * 60 * 30)), 8)
    assert np.isfinite(est.score_samples(train[:3])).all()
    full = PatchCoreDetector(coreset_ratio=1.0, n_neighbors=1).fit(train)
    assert full.coreset_.shape == (60 * 30, 8)
    np.testing.assert_allclose(full.score_patches(train[:2]), 0.0, atol=1e-3)


def test_patchcore_leave_one_image_out_excludes_own_entries(train):
    est = PatchCoreDetector(coreset_ratio=1.0, n_neighbors=1, contamination=0.1, top_k=1)
    est.fit(train)
    # With the full bank, in-sample patch scores are 0; held out they are not.
    assert (est.train_scores_ < -0.5).all()
    image = train[4:5]
    rest = np.delete(train, 4, axis=0).reshape(-1, 8)
    d = np.sqrt(((image.reshape(-1, 1, 8) - rest[None]) ** 2).sum(-1)).min(axis=1)
    assert est.train_scores_[4] == pytest.approx(-d.max(), rel=1e-5)


def test_patchcore_coreset_is_greedy_k_center():
    from sklearn.utils import check_random_state

    from sklearn_memad.neighbors._coreset import greedy_coreset, project_for_coreset

    rng = np.random.default_rng(0)
    X = (rng.normal(size=(2000, 16)) * rng.random((2000, 1)) * 3).astype(np.float32)
    chosen = greedy_coreset(X, 60, projection_dim=8, random_state=0)
    # Reference: the plain algorithm, one full pass per step, same projection and start.
    state = check_random_state(0)
    points = project_for_coreset(X, 8, state)
    ref = [state.randint(len(X))]
    nearest = ((points - points[ref[0]]) ** 2).sum(1)
    for _ in range(59):
        ref.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((points - points[ref[-1]]) ** 2).sum(1))
    np.testing.assert_array_equal(chosen, ref)


def test_coreset_look_ahead_keeps_the_greedy_selection(monkeypatch):
    """Steps that measure every row also measure the likely next centres; the selection is
    still the plain algorithm's, and later steps do reuse those distances."""
    import sklearn_memad.neighbors._coreset as coreset

    rng = np.random.default_rng(1)
    # Many rows in few dimensions: the bound prunes little, so full passes are common.
    X = rng.normal(size=(12_000, 6)).astype(np.float32)
    passes = []
    measure = coreset._measure_ahead
    monkeypatch.setattr(coreset, "_measure_ahead", lambda *a: passes.append(1) or measure(*a))
    chosen = coreset.greedy_coreset(X, 150, projection_dim=None, random_state=0)
    points = X.astype(np.float64)
    ref = [np.random.RandomState(0).randint(len(X))]
    nearest = ((points - points[ref[0]]) ** 2).sum(1)
    for _ in range(149):
        ref.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((points - points[ref[-1]]) ** 2).sum(1))
    np.testing.assert_array_equal(chosen, ref)
    # Measured: 27 measuring passes serve the 149 steps.
    assert 0 < len(passes) < 75


def test_patchcore_approximate_search_agrees_with_exact():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 8, 8, 16)).astype(np.float32)
    test = rng.normal(size=(5, 8, 8, 16)).astype(np.float32)
    test[:, 3, 3] += 5
    exact = PatchCoreDetector(coreset_ratio=0.2, random_state=0).fit(train)
    approx = PatchCoreDetector(coreset_ratio=0.2, search="approximate", random_state=0).fit(train)
    a, b = exact.score_patches(test), approx.score_patches(test)
    assert approx.coreset_.shape[0] > 64  # large enough that pynndescent is really used
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    np.testing.assert_allclose(
        approx.score_patches(test),
        PatchCoreDetector(coreset_ratio=0.2, search="approximate", random_state=0)
        .fit(train)
        .score_patches(test),
    )


def test_dfkde_matches_reference_kde_on_one_position():
    from sklearn.neighbors import KernelDensity

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3)) * [1.0, 2.0, 0.5]
    est = DFKDEDetector(bandwidth=0.4).fit(X)
    query = rng.normal(size=(6, 3))
    # Reference: an isotropic Gaussian KDE on standardised features, plus the Jacobian term.
    mean, std = X.mean(axis=0), X.std(axis=0)
    kde = KernelDensity(bandwidth=0.4).fit((X - mean) / std)
    ref = -kde.score_samples((query - mean) / std) + np.log(std).sum()
    np.testing.assert_allclose(est.score_patches(query).ravel(), ref, rtol=1e-4)


def test_dfkde_finite_far_from_everything(train):
    est = DFKDEDetector(bandwidth=0.1).fit(train)
    far = _grids(2, seed=8) + 1e4
    scores = est.score_patches(far)
    assert np.isfinite(scores).all() and (scores > 1e3).all()


@pytest.mark.parametrize("bandwidth", ["scott", "silverman", 0.5])
def test_dfkde_bandwidth_rules(bandwidth, train):
    est = DFKDEDetector(bandwidth=bandwidth).fit(train)
    n, d = len(train), train.shape[-1]
    expected = {
        "scott": n ** (-1 / (d + 4)),
        "silverman": (n * (d + 2) / 4) ** (-1 / (d + 4)),
    }.get(bandwidth, bandwidth)
    assert est.bandwidth_ == pytest.approx(expected)


def test_dfkde_leave_one_out_drops_own_kernel():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    est = DFKDEDetector(contamination=0.1).fit(X)
    ref = DFKDEDetector().fit(np.delete(X, 3, axis=0))
    # Held-out density of sample 3 uses the other 29 kernels, with the fit's standardisation.
    oos = est._out_of_sample_patch_scores(X.reshape(30, 1, 1, 2).astype(np.float32))
    z = (X - est.mean_[0]) / est.scale_[0]
    sq = ((z[3] - np.delete(z, 3, axis=0)) ** 2).sum(1)
    h = est.bandwidth_
    log_density = (
        np.log(np.exp(-sq / (2 * h * h)).sum())
        - np.log(29)
        - np.log(2 * np.pi * h * h)
        - np.log(est.scale_[0].astype(float)).sum()
    )
    assert oos.ravel()[3] == pytest.approx(-log_density, rel=1e-4)
    assert ref.score_samples(X[3:4])[0] != pytest.approx(est.score_samples(X[3:4])[0])
