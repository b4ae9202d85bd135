"""Nearest-normal explanations, and the provenance of the memories they read."""

import numpy as np
import pytest

from sklearn_memad import DFKDEDetector, PaDiMDetector, PatchCoreDetector
from sklearn_memad.detectors import merge_detectors
from sklearn_memad.explain import nearest_normal
from sklearn_memad.pipelines import make_detector_pipeline


def _grids(n, seed, size=5, d=6):
    return np.random.default_rng(seed).normal(size=(n, size, size, d)).astype(np.float32)


def _check_coreset_provenance(detector, grids):
    rows, cols = detector.coreset_position_.T
    np.testing.assert_array_equal(detector.coreset_, grids[detector.coreset_source_, rows, cols])


def test_patchcore_entries_know_their_image_and_position_after_fit_growth_and_merge():
    grids = _grids(24, 0)
    fitted = PatchCoreDetector(coreset_ratio=0.3, random_state=0).fit(grids)
    _check_coreset_provenance(fitted, grids)
    grown = PatchCoreDetector(coreset_ratio=0.3, random_state=0)
    for start in range(0, 24, 8):
        grown.partial_fit(grids[start : start + 8])
    _check_coreset_provenance(grown, grids)
    assert set(grown.coreset_source_) > set(range(16, 24)) & set(grown.coreset_source_)
    shards = [
        PatchCoreDetector(coreset_ratio=0.3, random_state=0).fit(g)
        for g in (grids[:10], grids[10:])
    ]
    merged = merge_detectors(shards)
    _check_coreset_provenance(merged, grids)
    assert merged.coreset_source_.max() >= 10


def _check_sample_provenance(detector, grids):
    samples = detector.features_ * detector.scale_[:, None] + detector.mean_[:, None]
    h, w = detector.grid_shape_
    expected = grids[detector.sample_source_].reshape(-1, h * w, grids.shape[-1])
    np.testing.assert_allclose(samples, expected.transpose(1, 0, 2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("max_samples", [None, 9])
def test_dfkde_samples_know_their_image_after_fit_growth_and_merge(max_samples):
    grids = _grids(24, 1)
    fitted = DFKDEDetector(max_samples=max_samples, random_state=0).fit(grids)
    _check_sample_provenance(fitted, grids)
    grown = DFKDEDetector(max_samples=max_samples, random_state=0)
    for start in range(0, 24, 8):
        grown.partial_fit(grids[start : start + 8])
    _check_sample_provenance(grown, grids)
    shards = [
        DFKDEDetector(max_samples=max_samples, random_state=0).fit(g)
        for g in (grids[:10], grids[10:])
    ]
    _check_sample_provenance(merge_detectors(shards, random_state=0), grids)


@pytest.mark.parametrize(
    "detector",
    [PatchCoreDetector(coreset_ratio=1.0, random_state=0), DFKDEDetector(), PaDiMDetector()],
    ids=lambda d: type(d).__name__,
)
def test_a_copy_of_a_training_image_is_matched_with_it_and_the_defect_comes_first(detector):
    train = _grids(30, 2)
    detector.fit(train)
    test = train[[7, 12]].copy()
    test[0, 3, 1] += 8.0
    found = nearest_normal(detector, test, top=3, train_images=train)
    assert len(found.image) == 6 and list(found.rank) == [0, 1, 2, 0, 1, 2]
    np.testing.assert_array_equal(found.position[0], [3, 1])
    np.testing.assert_allclose(found.box[0], [0.6, 0.2, 0.8, 0.4])
    untouched = np.arange(6) != 0
    expected_image = np.where(found.image == 0, 7, 12)
    np.testing.assert_array_equal(found.train_image[untouched], expected_image[untouched])
    np.testing.assert_array_equal(found.train_position[untouched], found.position[untouched])
    np.testing.assert_allclose(found.distance[untouched], 0.0, atol=1e-3)
    assert found.distance[0] > 1.0
    # Each pick hides its 8 neighbours from the next.
    first, second = found.position[3], found.position[4]
    assert np.abs(first - second).max() > 1


def test_explanations_of_images_name_the_training_files():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(14, 48, 48, 3), dtype=np.uint8)
    paths = [f"train/{i:03d}.png" for i in range(12)]
    for method in ("patchcore", "dfkde", "padim"):
        pipe = make_detector_pipeline(method, backbone="resnet18", weights=None, image_size=48)
        pipe.fit(images[:12])
        found = nearest_normal(
            pipe, images[12:], top=2, train_images=images[:12], train_paths=paths
        )
        assert found.train_path == [paths[i] for i in found.train_image]
        assert (found.box >= 0).all() and (found.box <= 1).all()
        assert found.score.shape == (4,) and np.all(np.diff(found.score[:2]) <= 0)


def test_what_cannot_be_explained_says_why():
    train = _grids(12, 3)
    with pytest.raises(ValueError, match="pass its training images as train_images"):
        nearest_normal(PaDiMDetector().fit(train), train[:1])
    with pytest.raises(ValueError, match="pass the images it was fitted on"):
        nearest_normal(PaDiMDetector().fit(train), train[:1], train_images=_grids(3, 4, size=4))
    old = PatchCoreDetector(coreset_ratio=0.5, random_state=0).fit(train)
    del old.coreset_position_
    with pytest.raises(ValueError, match=r"earlier version of sklearn_memad\); fit it again"):
        nearest_normal(old, train[:1])
    with pytest.raises(ValueError, match="top"):
        nearest_normal(old, train[:1], top=0)


def test_picks_are_capped_at_the_grid_and_repeat_once_all_are_hidden():
    train = _grids(12, 5, size=2)
    found = nearest_normal(PatchCoreDetector(random_state=0).fit(train), train[:1], top=6)
    assert len(found.image) == 4  # a 2 x 2 grid
    np.testing.assert_array_equal(found.position[1:], found.position[[0, 0, 0]])


def test_patchcore_kneighbors_finds_its_own_entries_and_checks_the_width():
    detector = PatchCoreDetector(coreset_ratio=0.3, random_state=0).fit(_grids(10, 6))
    distances, indices = detector.kneighbors(detector.coreset_[:5], 2)
    np.testing.assert_array_equal(indices[:, 0], np.arange(5))
    np.testing.assert_allclose(distances[:, 0], 0.0, atol=1e-3)
    assert distances.shape == (5, 2) and (distances[:, 1] > 0).all()
    with pytest.raises(ValueError, match="features"):
        detector.kneighbors(np.zeros((2, 3), dtype=np.float32))
