"""Memories that grow and merge: partial_fit, merge_detectors, and calibration after both."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_memad import DFKDEDetector, PaDiMDetector, PatchCoreDetector
from sklearn_memad.detectors import merge_detectors
from sklearn_memad.neighbors import project_for_coreset
from sklearn_memad.pipelines import make_detector_pipeline, partial_fit

DETECTORS = {
    "padim": PaDiMDetector(keep_statistics=True),
    "patchcore": PatchCoreDetector(coreset_ratio=0.1, random_state=0),
    "dfkde": DFKDEDetector(),
}


def _grids(n, h=6, w=5, d=8, seed=0):
    rng = np.random.default_rng(seed)
    position_means = np.random.default_rng(123).normal(scale=2.0, size=(1, h, w, d))
    return (position_means + rng.normal(size=(n, h, w, d))).astype(np.float32)


@pytest.fixture(scope="module")
def train():
    return _grids(80)


def _held_out_without_replacements(detector):
    """Each reservoir image's score against the coreset without the image's own entries."""
    grids, ids = detector._calibration_grids, detector._calibration_ids
    n, h, w, d = grids.shape
    distances = np.linalg.norm(
        grids.reshape(n, h * w, 1, d) - detector.coreset_[None, None], axis=-1
    )
    own = detector.coreset_source_[None, None, :] == ids[:, None, None]
    return -np.where(own, np.inf, distances).min(axis=2).max(axis=1)


@pytest.mark.parametrize("variant", ["partial_fit", "merge"])
def test_patchcore_grown_or_merged_calibrates_its_reservoir_against_the_whole_memory(
    variant, train
):
    if variant == "partial_fit":
        model = clone(DETECTORS["patchcore"])
        for batch in np.split(train, 4):
            model.partial_fit(batch)
    else:
        shards = [clone(DETECTORS["patchcore"]).partial_fit(p) for p in np.split(train, 4)]
        model = merge_detectors(shards, random_state=0)
    assert model.n_samples_seen_ == len(train)
    ids = model._calibration_ids
    assert ids.size == model.train_scores_.size == len(train)  # fewer than the reservoir holds
    np.testing.assert_array_equal(model._calibration_grids, train[ids])
    # Each image's own entries are left out, and replacement entries (patches of other
    # images) can only come nearer than the rest of the coreset.
    without_own = _held_out_without_replacements(model)
    assert np.all(model.train_scores_ >= without_own - 1e-5)
    assert np.any(model.train_scores_ > without_own + 1e-3)
    in_sample = model.score_samples(model._calibration_grids)
    assert np.any(model.train_scores_ < in_sample - 1e-3)
    assert model.offset_ == pytest.approx(model._offset_from(model.train_scores_))


@pytest.mark.parametrize("variant", ["fit", "partial_fit", "merge"])
def test_patchcore_threshold_flags_about_the_contamination_of_new_normal_grids(variant):
    train, new = _grids(160, seed=1), _grids(600, seed=2)
    proto = PatchCoreDetector(coreset_ratio=0.05, contamination=0.1, random_state=0)
    if variant == "fit":
        model = clone(proto).fit(train)
    elif variant == "partial_fit":
        model = clone(proto)
        for batch in np.split(train, 8):
            model.partial_fit(batch)
    else:
        shards = [
            clone(proto).set_params(keep_calibration=True).fit(p) for p in np.split(train, 4)
        ]
        model = merge_detectors(shards)
    assert 0.05 <= np.mean(model.predict(new) == -1) <= 0.2


def test_patchcore_keeps_its_calibration_sample_in_a_pickle_only_when_asked(train):
    plain = PatchCoreDetector(coreset_ratio=0.1, random_state=0)
    for batch in np.split(train, 2):
        plain.partial_fit(batch)
    assert plain._calibration_grids.shape[0] == len(train)
    loaded = pickle.loads(pickle.dumps(plain))
    assert "_calibration_grids" not in vars(loaded) and "_spare_entries" not in vars(loaded)
    # The reservoir starts again with the images added after loading.
    loaded.partial_fit(train[:10])
    np.testing.assert_array_equal(loaded._calibration_ids, np.arange(80, 90))

    kept = clone(plain).set_params(keep_calibration=True).fit(train)
    again = pickle.loads(pickle.dumps(kept))
    np.testing.assert_array_equal(again._calibration_grids, kept._calibration_grids)
    np.testing.assert_array_equal(again.train_scores_, kept.train_scores_)


@pytest.mark.parametrize("name", ["padim", "dfkde"])
def test_streamed_and_merged_calibration_leaves_each_image_out_as_fit_does(name, train):
    """PaDiM and DFKDE hold (a reservoir of) their images: each is left out exactly."""
    fitted = clone(DETECTORS[name]).fit(train)
    streamed = clone(DETECTORS[name])
    for batch in np.split(train, 4):
        streamed.partial_fit(batch)
    merged = merge_detectors([clone(DETECTORS[name]).fit(p) for p in np.split(train, 4)])
    for model in (streamed, merged):
        np.testing.assert_allclose(
            np.sort(model.train_scores_), np.sort(fitted.train_scores_), rtol=1e-5
        )
        assert model.offset_ == pytest.approx(fitted.offset_, rel=1e-5)


def test_calibration_images_are_a_bounded_uniform_sample():
    grids = _grids(400, h=2, w=2, d=3)
    streamed = PaDiMDetector()
    for batch in np.split(grids, 20):
        streamed.partial_fit(batch)
    assert streamed.train_scores_.size == 128
    assert streamed._calibration_grids.shape == (128, 2, 2, 3)
    # The reservoir holds early and late images alike.
    index = [
        int(np.flatnonzero((grids == g).all(axis=(1, 2, 3)))[0])
        for g in streamed._calibration_grids
    ]
    assert 0.25 < np.mean(np.asarray(index) < 200) < 0.75


@pytest.mark.parametrize("name", DETECTORS)
def test_labelled_anomalies_stay_out_and_an_empty_batch_changes_nothing(name, train):
    streamed = clone(DETECTORS[name]).partial_fit(train[:40])
    snapshot = pickle.dumps(streamed)
    streamed.partial_fit(train[40:50], y=-np.ones(10))
    assert pickle.dumps(streamed) == snapshot
    streamed.partial_fit(train[40:50], y=np.r_[np.ones(5), -np.ones(5)])
    assert streamed.n_samples_seen_ == 45


def test_padim_fit_merge_and_partial_fit_agree_exactly(train):
    x = _grids(15, seed=5)
    single = PaDiMDetector().fit(train)
    shards = [PaDiMDetector(keep_statistics=True).fit(part) for part in np.split(train, 4)]
    merged = merge_detectors(shards)
    streamed = PaDiMDetector()
    for batch in np.split(train, 8):
        streamed.partial_fit(batch)
    for model in (merged, streamed):
        np.testing.assert_allclose(model.score_samples(x), single.score_samples(x), rtol=1e-6)
        np.testing.assert_allclose(model.mean_, single.mean_, rtol=1e-6, atol=1e-6)
    # A merged model merges again, with the rest of the data.
    more = _grids(20, seed=9)
    again = merge_detectors([merged, PaDiMDetector(keep_statistics=True).fit(more)])
    whole = PaDiMDetector().fit(np.concatenate([train, more]))
    np.testing.assert_allclose(again.score_samples(x), whole.score_samples(x), rtol=1e-6)


def test_padim_merge_needs_statistics(train):
    shards = [PaDiMDetector().fit(part) for part in np.split(train, 2)]
    with pytest.raises(ValueError, match=r"keep_statistics=True.*\[0, 1\]|\[0, 1\].*keep_stat"):
        merge_detectors(shards)


def _distances_to_coreset(detector, grids):
    """Distance of every training patch to the coreset, in the selection's projection."""
    projection = project_for_coreset(
        np.concatenate([detector.coreset_, grids.reshape(-1, grids.shape[-1])]),
        detector.projection_dim,
        detector.random_state,
    )
    entries, patches = projection[: len(detector.coreset_)], projection[len(detector.coreset_) :]
    sq = (patches**2).sum(1)[:, None] - 2 * patches @ entries.T + (entries**2).sum(1)[None]
    return np.sqrt(np.maximum(sq, 0).min(axis=1))


@pytest.mark.parametrize("way", ["merged", "streamed"])
def test_patchcore_cover_radius_bounds_every_training_patch(way, train):
    grids = _grids(80, d=96)
    detector = PatchCoreDetector(coreset_ratio=0.05, projection_dim=16, random_state=0)
    if way == "merged":
        shards = [clone(detector).fit(part) for part in np.split(grids, 4)]
        detector = merge_detectors(shards, random_state=0)
    else:
        for batch in np.split(grids, 5):
            detector.partial_fit(batch)
    n_patches = grids.shape[0] * 6 * 5
    assert detector.n_patches_seen_ == n_patches
    assert len(detector.coreset_) == int(np.ceil(0.05 * n_patches))
    assert detector.coreset_source_.max() < len(grids)
    distances = _distances_to_coreset(detector, grids)
    assert distances.max() <= detector.cover_radius_.max() * (1 + 1e-4) + 1e-4
    single = PatchCoreDetector(coreset_ratio=0.05, projection_dim=16, random_state=0).fit(grids)
    assert detector.cover_radius_.max() < 2 * single.cover_radius_.max()


def test_dfkde_merge_keeps_every_sample_or_a_seeded_reservoir(train):
    x = _grids(10, seed=3)
    single = DFKDEDetector().fit(train)
    merged = merge_detectors([DFKDEDetector().fit(part) for part in np.split(train, 4)])
    assert merged.features_.shape[1] == len(train)
    np.testing.assert_allclose(merged.score_samples(x), single.score_samples(x), rtol=1e-5)
    bounded = DFKDEDetector(max_samples=30, random_state=0)
    for batch in np.split(train, 8):
        bounded.partial_fit(batch)
    assert bounded.features_.shape[1] == 30 and bounded.n_samples_seen_ == len(train)
    again = DFKDEDetector(max_samples=30, random_state=0)
    for batch in np.split(train, 8):
        again.partial_fit(batch)
    np.testing.assert_array_equal(again.features_, bounded.features_)
    shards = [DFKDEDetector(max_samples=30, random_state=0).fit(p) for p in np.split(train, 4)]
    assert merge_detectors(shards, random_state=0).features_.shape[1] == 30


def test_dfkde_reservoir_is_a_uniform_sample_of_the_stream():
    grids = np.arange(400, dtype=np.float32).reshape(400, 1, 1, 1)
    counts = np.zeros(400)
    for seed in range(60):
        detector = DFKDEDetector(max_samples=40, random_state=seed)
        for batch in np.split(grids, 10):
            detector.partial_fit(batch)
        counts[np.rint(detector._samples()[0, :, 0]).astype(int)] += 1
    # Each image is kept with probability 40 / 400: early and late images alike.
    assert counts[:100].mean() == pytest.approx(6.0, abs=1.5)
    assert counts[300:].mean() == pytest.approx(6.0, abs=1.5)


def test_dfkde_fit_with_a_reservoir_scores_kept_images_without_their_kernel(train):
    detector = DFKDEDetector(max_samples=50, random_state=0).fit(train)
    kept = detector._samples().transpose(1, 0, 2).reshape(50, 1, -1)
    flat = train.reshape(1, len(train), -1)
    held = (np.abs(kept - flat).max(axis=2) < 1e-4).any(axis=0)
    assert held.sum() == 50
    in_sample = detector.score_samples(train)
    # Images the reservoir left out are new to the memory: scored as any new image.
    np.testing.assert_allclose(detector.train_scores_[~held], in_sample[~held], rtol=1e-6)
    # Images it holds are scored without their own kernel: less normal than in sample.
    assert (detector.train_scores_[held] < in_sample[held] - 1e-6).all()


@pytest.mark.parametrize(
    "shards, error, match",
    [
        ([], ValueError, "detectors is empty"),
        ([PaDiMDetector(), PaDiMDetector()], Exception, "not fitted"),
        (["a model"], TypeError, "expected sklearn_memad detectors"),
    ],
)
def test_merge_refuses_what_cannot_merge(shards, error, match):
    with pytest.raises(error, match=match):
        merge_detectors(shards)


def test_merge_refuses_mixed_classes_settings_features_and_grids(train):
    padim = PaDiMDetector(keep_statistics=True).fit(train[:40])
    with pytest.raises(TypeError, match="only detectors of one class"):
        merge_detectors([padim, DFKDEDetector().fit(train[40:])])
    with pytest.raises(ValueError, match=r"reg=0\.1 vs 0\.01"):
        merge_detectors([padim, PaDiMDetector(reg=0.1, keep_statistics=True).fit(train[40:])])
    with pytest.raises(ValueError, match="fitted on 4 features"):
        merge_detectors([padim, PaDiMDetector(keep_statistics=True).fit(train[40:, ..., :4])])
    with pytest.raises(ValueError, match=r"\(3, 5\) grid"):
        merge_detectors([padim, PaDiMDetector(keep_statistics=True).fit(train[40:, :3])])
    # PatchCore's memory is position-free: other grids merge.
    patchcore = PatchCoreDetector(random_state=0)
    merged = merge_detectors([clone(patchcore).fit(train[:40]), patchcore.fit(train[40:, :3])])
    assert merged.n_samples_seen_ == 80


@pytest.mark.parametrize("method", ["patchcore", "padim", "dfkde"])
def test_pipeline_partial_fit_streams_images(method):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 32, 32, 3), dtype=np.uint8)
    options = dict(backbone="resnet18", weights=None, image_size=32, n_components=8)
    streamed = make_detector_pipeline(method, **options)
    for batch in np.split(images, 3):
        partial_fit(streamed, batch)
    fitted = make_detector_pipeline(method, **options).fit(images)
    assert streamed[-1].n_samples_seen_ == 30
    test = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    if method == "padim":  # exact
        np.testing.assert_allclose(
            streamed.score_samples(test), fitted.score_samples(test), rtol=1e-5
        )
    assert streamed.predict(test).shape == (4,)
    with pytest.raises(TypeError, match="Pipeline ending in a sklearn_memad detector"):
        partial_fit(fitted[:-1], images)


def test_patchcore_from_an_earlier_version_is_refused_clearly(train):
    old = PatchCoreDetector(random_state=0).fit(train[:40])
    del old.cover_radius_  # what a model file of the previous version holds
    with pytest.raises(ValueError, match="earlier version.*fit it again"):
        old.partial_fit(train[40:])
    with pytest.raises(ValueError, match="earlier version"):
        merge_detectors([old, PatchCoreDetector(random_state=0).fit(train[40:])])
