"""The detectors' ``border``: outer rings of patches left out of image scores and maps."""

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_memad import DFKDEDetector, PaDiMDetector, PatchCoreDetector, defaults
from sklearn_memad.detectors import image_scores_from_patches, merge_detectors
from sklearn_memad.explain import nearest_normal

DETECTORS = [
    PaDiMDetector(top_k=3, border=1),
    PatchCoreDetector(coreset_ratio=0.2, random_state=0, top_k=3, border=1),
    DFKDEDetector(top_k=3, border=1),
]
IDS = ["padim", "patchcore", "dfkde"]


def _grids(n, seed, h=7, w=6, d=6):
    rng = np.random.default_rng(seed)
    position_means = np.random.default_rng(99).normal(scale=2.0, size=(1, h, w, d))
    return (position_means + rng.normal(size=(n, h, w, d))).astype(np.float32)


@pytest.fixture(scope="module")
def train():
    return _grids(40, 0)


def test_image_scores_leave_the_rings_out():
    patches = np.zeros((1, 5, 6))
    patches[0, 1:4, 1:5] = np.arange(12).reshape(3, 4)
    patches[0, 0, 0] = patches[0, 4, 5] = 100.0
    assert image_scores_from_patches(patches, top_k=1, border=1)[0] == 11.0
    assert image_scores_from_patches(patches, top_k=2, border=1)[0] == 10.5
    assert image_scores_from_patches(patches, top_k=1, border=0)[0] == 100.0
    # Two rings leave one row of two patches: 5 and 6.
    assert image_scores_from_patches(patches, top_k=5, border=2)[0] == 5.5


@pytest.mark.parametrize("shape", [(2, 2), (2, 9), (4, 1), (1, 1)])
def test_grids_without_inner_patches_are_taken_whole(shape):
    patches = np.random.default_rng(0).normal(size=(3,) + shape)
    np.testing.assert_array_equal(
        image_scores_from_patches(patches, top_k=2, border=1),
        image_scores_from_patches(patches, top_k=2, border=0),
    )


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_rings_repeat_their_inner_neighbour_in_the_maps(detector, train):
    test = _grids(5, 1)
    whole = clone(detector).set_params(border=0).fit(train)
    framed = clone(detector).set_params(border=1).fit(train)
    raw, shown = whole.score_patches(test), framed.score_patches(test)
    np.testing.assert_allclose(shown[:, 1:-1, 1:-1], raw[:, 1:-1, 1:-1], rtol=1e-6)
    np.testing.assert_allclose(shown[:, 0, 1:-1], raw[:, 1, 1:-1], rtol=1e-6)
    np.testing.assert_allclose(shown[:, -1, -1], raw[:, -2, -2], rtol=1e-6)
    np.testing.assert_allclose(shown[:, 1:-1, 0], raw[:, 1:-1, 1], rtol=1e-6)
    # The image score is the one computed from the map the detector shows.
    np.testing.assert_allclose(
        -framed.score_samples(test), image_scores_from_patches(shown, 3, border=1)
    )


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_a_hot_spot_on_the_ring_no_longer_decides_the_image(detector, train):
    test = _grids(6, 2)
    hot = test.copy()
    hot[:, 0, 0] += 25.0
    hot[:, 6, 3] += 25.0
    framed = clone(detector).fit(train)
    np.testing.assert_allclose(framed.score_samples(hot), framed.score_samples(test), rtol=1e-5)
    whole = clone(detector).set_params(border=0).fit(train)
    assert (whole.score_samples(hot) < whole.score_samples(test) - 1.0).all()
    # An inner defect still counts.
    inner = test.copy()
    inner[:, 3, 3] += 25.0
    assert (framed.score_samples(inner) < framed.score_samples(test) - 1.0).all()


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_calibration_leaves_the_rings_out_as_scoring_does(detector, train):
    """A threshold from image scores over the whole grid (the mean of the largest of 42
    patches, not of 20) would flag far fewer new normal images than ``contamination``."""
    framed = clone(detector).set_params(contamination=0.2).fit(train)
    flagged = (framed.predict(_grids(300, 4)) == -1).mean()
    assert 0.1 <= flagged <= 0.35, flagged


@pytest.mark.parametrize("detector", DETECTORS, ids=IDS)
def test_detectors_of_other_borders_do_not_merge(detector, train):
    first = clone(detector).fit(train[:20])
    second = clone(detector).set_params(border=0).fit(train[20:])
    with pytest.raises(ValueError, match="border"):
        merge_detectors([first, second])


@pytest.mark.parametrize("border", [-1, 1.5, "1"])
def test_bad_border_is_refused(border, train):
    with pytest.raises((ValueError, TypeError), match="border"):
        PaDiMDetector(border=border).fit(train)


def test_a_bool_border_is_refused(train):
    with pytest.raises(TypeError, match="border"):
        PaDiMDetector(border=True).fit(train)


def test_each_detector_takes_its_border_from_the_defaults():
    assert PatchCoreDetector().border == defaults.BORDER["patchcore"] == 1
    assert PaDiMDetector().border == defaults.BORDER["padim"] == 1
    assert DFKDEDetector().border == defaults.BORDER["dfkde"] == 0


def test_explanations_pick_inner_patches(train):
    detector = PatchCoreDetector(coreset_ratio=0.2, random_state=0).fit(train)
    test = _grids(3, 3)
    test[:, 1, 1] += 30.0  # next to the ring, whose corner repeats it in the map
    found = nearest_normal(detector, test, top=4)
    rows, cols = found.position.T
    assert ((rows >= 1) & (rows <= 5) & (cols >= 1) & (cols <= 4)).all()
    np.testing.assert_array_equal(found.position[found.rank == 0], [[1, 1]] * 3)
