"""Pixel masks: the pixel threshold chosen on validation masks, applied to held-out images."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score
from sklearn.pipeline import Pipeline, make_pipeline

from sklearn_memad import FeatureTransformer, PaDiMDetector, PatchCoreDetector, anomaly_maps
from sklearn_memad.masks import mask_scores, predict_masks, select_pixel_threshold
from sklearn_memad.metrics import pixel_f1_max
from sklearn_memad.thresholds import ThresholdedDetector

CELL = 4  # pixels per patch side in the synthetic set
H = W = 8  # patch grid


def _defect_set(n, seed):
    """Grids with one rectangular defect (2-3 patches a side) each, and pixel masks."""
    rng = np.random.default_rng(seed)
    grids = rng.normal(size=(n, H, W, 6)).astype(np.float32)
    patch_masks = np.zeros((n, H, W), dtype=bool)
    for i in range(n):
        rows, cols = rng.integers(2, 4, size=2)
        top, left = rng.integers(0, H - rows + 1), rng.integers(0, W - cols + 1)
        patch_masks[i, top : top + rows, left : left + cols] = True
    grids[patch_masks] += rng.uniform(3.0, 6.0, size=(patch_masks.sum(), 1)).astype(np.float32)
    masks = patch_masks.repeat(CELL, axis=1).repeat(CELL, axis=2)
    return grids, masks


@pytest.fixture(scope="module")
def detector():
    train = np.random.default_rng(0).normal(size=(60, H, W, 6)).astype(np.float32)
    return PatchCoreDetector(coreset_ratio=0.2, n_neighbors=3, random_state=0).fit(train)


def _maps(detector, grids):
    return anomaly_maps(detector, grids, sigma=1.0, output_size=(H * CELL, W * CELL))


# ------------------------------------------------------------------------------ mask_scores
def test_mask_scores_match_sklearn_and_count_regions_equally():
    rng = np.random.default_rng(0)
    truth = np.zeros((2, 10, 10), dtype=bool)
    truth[0, :2, :2] = True  # a small region (4 px), fully found
    truth[1, 4:, 4:] = True  # a large region (36 px), a quarter found
    pred = np.zeros_like(truth)
    pred[0, :2, :2] = True
    pred[1, 4:7, 4:7] = True
    pred |= rng.random(truth.shape) < 0.05
    s = mask_scores(truth, pred)
    assert s.f1 == pytest.approx(f1_score(truth.ravel(), pred.ravel()))
    assert s.iou == pytest.approx(jaccard_score(truth.ravel(), pred.ravel()))
    found_big = pred[1, 4:, 4:].mean()
    assert s.per_region_overlap == pytest.approx((1.0 + found_big) / 2)


def test_mask_scores_without_defects_are_nan_not_errors():
    none = np.zeros((1, 4, 4), dtype=bool)
    s = mask_scores(none, none)
    assert np.isnan(s.recall) and np.isnan(s.iou) and np.isnan(s.per_region_overlap)


def test_mask_scores_refuse_non_boolean_or_mismatched_masks():
    with pytest.raises(TypeError, match="masks_true must be a boolean array"):
        mask_scores(np.zeros((1, 4, 4), dtype=np.uint8), np.zeros((1, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"same shape .* got \(1, 4, 4\) and \(1, 4, 5\)"):
        mask_scores(np.zeros((1, 4, 4), dtype=bool), np.zeros((1, 4, 5), dtype=bool))


# ----------------------------------------------------------------- select_pixel_threshold
@pytest.mark.parametrize("rounded", [False, True])
def test_f1_threshold_reaches_pixel_f1_max(rounded):
    rng = np.random.default_rng(1)
    masks = rng.random((3, 16, 16)) < 0.1
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    if rounded:  # many ties
        maps = np.round(maps, 1)
    r = select_pixel_threshold(masks, maps)
    assert r.threshold in maps
    assert r.f1 == pytest.approx(pixel_f1_max(masks, maps))
    assert r.f1 == pytest.approx(mask_scores(masks, maps >= r.threshold).f1)


@pytest.mark.parametrize("target", [0.3, 0.6, 0.9])
def test_pro_threshold_is_the_least_aggressive_reaching_the_target(target):
    rng = np.random.default_rng(2)
    grids, masks = _defect_set(6, seed=2)
    maps = rng.normal(size=masks.shape) + 2.0 * masks
    r = select_pixel_threshold(masks, maps, objective="pro", target=target)
    assert r.per_region_overlap >= target
    assert r.per_region_overlap == mask_scores(masks, maps >= r.threshold).per_region_overlap
    stricter = maps[maps > r.threshold].min()
    assert mask_scores(masks, maps >= stricter).per_region_overlap < target


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"objective": "f1", "target": 0.5}, "not used with objective='f1'"),
        ({"objective": "pro"}, "objective='pro' needs a target"),
        ({"objective": "iou"}, "'objective' parameter"),
    ],
)
def test_select_pixel_threshold_bad_objective(kwargs, message):
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match=message):
        select_pixel_threshold(masks, np.zeros((1, 4, 4)), **kwargs)


def test_select_pixel_threshold_needs_defect_and_normal_pixels():
    with pytest.raises(ValueError, match="Only one class is present in masks"):
        select_pixel_threshold(np.zeros((2, 4, 4), dtype=bool), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="same shape"):
        select_pixel_threshold(np.ones((2, 4, 4), dtype=bool), np.zeros((2, 4, 5)))


# ------------------------------------------------------------------ held-out segmentation
def test_threshold_chosen_on_validation_segments_held_out_images(detector):
    val_grids, val_masks = _defect_set(20, seed=10)
    test_grids, test_masks = _defect_set(20, seed=11)
    chosen = select_pixel_threshold(val_masks, _maps(detector, val_grids))
    masks = predict_masks(
        detector, test_grids, chosen.threshold, sigma=1.0, output_size=(H * CELL, W * CELL)
    )
    assert masks.shape == test_masks.shape and masks.dtype == bool
    held_out = mask_scores(test_masks, masks)
    assert held_out.f1 >= 0.7 and held_out.iou >= 0.55
    assert abs(held_out.f1 - chosen.f1) <= 0.1
    # The best threshold for the held-out images themselves would do only a little better.
    assert held_out.f1 >= pixel_f1_max(test_masks, _maps(detector, test_grids)) - 0.05


@pytest.fixture
def one_torch_thread():
    # A tiny network: one thread avoids OpenMP stalls when the CPUs are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_predict_masks_through_pipelines_and_wrappers(one_torch_thread):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    images[20:, 8:16, 8:16] = 255  # a bright square defect
    y = np.r_[np.ones(20, dtype=int), -np.ones(4, dtype=int)]
    features = FeatureTransformer(
        backbone="resnet18", layers="layer1", weights=None, image_size=None, random_state=0
    )
    plain = make_pipeline(features, PaDiMDetector()).fit(images[:15])
    # The same fitted detector, thresholded around the pipeline and as its last step.
    around = ThresholdedDetector(plain, cv="prefit").fit(images[15:], y[15:])
    last = ThresholdedDetector(plain[-1], cv="prefit")
    last.fit(plain[:-1].transform(images[15:]), y[15:])
    inside = Pipeline(plain.steps[:-1] + [("thresholded", last)])

    threshold = float(np.median(anomaly_maps(plain, images[20:])))
    expected = predict_masks(plain, images[20:], threshold)
    assert expected.shape == (4, 32, 32) and expected.dtype == bool and expected.any()
    for estimator in (around, inside):
        np.testing.assert_array_equal(predict_masks(estimator, images[20:], threshold), expected)


def test_predict_masks_bad_threshold(detector):
    grids, _ = _defect_set(1, seed=0)
    with pytest.raises(ValueError, match="threshold must be a finite pixel threshold; got nan"):
        predict_masks(detector, grids, float("nan"), output_size=(8, 8))
    with pytest.raises(ValueError, match="'threshold' parameter"):
        predict_masks(detector, grids, "high", output_size=(8, 8))
