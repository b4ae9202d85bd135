"""Tests for sklearn_memad.metrics: hand-computed cases, brute-force references, scorers."""

import pickle

import numpy as np
import pytest
from scipy import ndimage
from sklearn.ensemble import IsolationForest
from sklearn.metrics import get_scorer, precision_recall_curve, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.neighbors import LocalOutlierFactor

from sklearn_memad.metrics import (
    SCORERS,
    aupro,
    f1_max,
    f1_max_scorer,
    image_auroc,
    image_auroc_scorer,
    pixel_auroc,
    pixel_f1_max,
    pro_curve,
)

# --------------------------------------------------------------------------------------------
# References written independently of the library code
# --------------------------------------------------------------------------------------------


def _brute_aupro(masks, maps, max_fpr, connectivity=8):
    """Loop over every distinct threshold and every region (small inputs only)."""
    structure = np.ones((3, 3)) if connectivity == 8 else None
    labelled = [ndimage.label(mk, structure=structure) for mk in masks]
    normal = np.concatenate([mp[~mk].ravel() for mk, mp in zip(masks, maps)])
    fpr, pro = [0.0], [0.0]
    for t in np.unique(np.concatenate([mp.ravel() for mp in maps]))[::-1]:
        fpr.append(np.mean(normal >= t))
        overlaps = [
            np.mean(mp[lab == k] >= t)
            for (lab, n), mp in zip(labelled, maps)
            for k in range(1, n + 1)
        ]
        pro.append(np.mean(overlaps))
    fpr, pro = np.array(fpr), np.array(pro)
    i = np.searchsorted(fpr, max_fpr, side="right")
    x, y = list(fpr[:i]), list(pro[:i])
    if x[-1] < max_fpr:
        y.append(
            pro[i - 1] + (pro[i] - pro[i - 1]) * (max_fpr - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        )
        x.append(max_fpr)
    return np.trapezoid(y, x) / max_fpr


def _argsort_aupro(masks, maps, max_fpr):
    """Vectorised reference with one argsort of all pixels (the textbook curve)."""
    st = np.zeros((3, 3, 3), dtype=bool)
    st[1] = True
    lab, n = ndimage.label(masks, structure=st)
    size = np.bincount(lab.ravel())
    order = np.argsort(-maps.ravel(), kind="stable")
    s, lb = maps.ravel()[order], lab.ravel()[order]
    w = np.where(lb > 0, 1.0 / (n * size[lb]), 0.0)
    pro = np.cumsum(w)
    fpr = np.cumsum(lb == 0) / np.count_nonzero(lb == 0)
    last = np.r_[s[1:] != s[:-1], True]
    fpr, pro = np.r_[0, fpr[last]], np.r_[0, pro[last]]
    i = np.searchsorted(fpr, max_fpr, side="right")
    x, y = fpr[:i], pro[:i]
    if x[-1] < max_fpr:
        y = np.r_[y, np.interp(max_fpr, fpr[i - 1 : i + 1], pro[i - 1 : i + 1])]
        x = np.r_[x, max_fpr]
    return np.trapezoid(y, x) / max_fpr


def _hand_case():
    """Two 4x4 images; image 0 has two defect regions, image 1 none.

    Image 0 (scores; A = region A, B = region B, others normal, score 0)::

        A:3 A:3  0   0
        A:1 A:1  0   0
         0   0   0   0
         0   0   0  B:2

    Image 1: three normal pixels at 2.5, the rest 0.
    5 defect pixels (A: 4, B: 1), 27 normal pixels.
    """
    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.zeros((2, 4, 4))
    masks[0, :2, :2] = True
    maps[0, 0, :2] = 3.0
    maps[0, 1, :2] = 1.0
    masks[0, 3, 3] = True
    maps[0, 3, 3] = 2.0
    maps[1, 0, :3] = 2.5
    return masks, maps


# --------------------------------------------------------------------------------------------
# AUPRO and the PRO curve
# --------------------------------------------------------------------------------------------


def test_aupro_hand_computed():
    masks, maps = _hand_case()
    # Curve by threshold (FPR over the 27 normal pixels, PRO = mean over regions A and B):
    #   t=3   : A 2/4, B 0 -> PRO 0.25, FPR 0
    #   t=2.5 : FPR 3/27 = 1/9, PRO 0.25
    #   t=2   : B 1    -> PRO (0.5 + 1) / 2 = 0.75, FPR 1/9
    #   t=1   : A 4/4  -> PRO 1,  FPR 1/9
    #   t=0   : FPR 1, PRO 1
    # Area on [0, 0.3]: 0.25 * 1/9 + 1 * (0.3 - 1/9) = 0.3 - 1/12; / 0.3 -> 13/18.
    assert aupro(masks, maps) == pytest.approx(13 / 18, abs=1e-12)
    # max_fpr = 0.05 < 1/9 stops on the horizontal segment at PRO 0.25.
    assert aupro(masks, maps, max_fpr=0.05) == pytest.approx(0.25, abs=1e-12)
    # Full curve, area on [0, 1]: 1/36 + 8/9 = 11/12.
    assert aupro(masks, maps, max_fpr=1.0) == pytest.approx(11 / 12, abs=1e-12)

    fpr, pro, thr = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 9, 1 / 9, 1 / 9, 1])
    np.testing.assert_allclose(pro, [0, 0.25, 0.25, 0.75, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 3, 2.5, 2, 1, 0])


def test_aupro_reference_values():
    masks, _ = _hand_case()
    ideal = masks.astype(float)
    assert aupro(masks, ideal) == 1.0
    assert aupro(masks, ideal * 5 + 1) == 1.0  # only the order of the scores matters
    # constant map: the curve is the diagonal, area max_fpr^2 / 2, normalised max_fpr / 2
    for max_fpr in (0.05, 0.3, 1.0):
        assert aupro(masks, np.zeros(masks.shape), max_fpr) == pytest.approx(max_fpr / 2)
    # inverted: every normal pixel above every defect pixel
    assert aupro(masks, -ideal) == 0.0
    assert aupro(masks, 1 - ideal, max_fpr=1.0) == 0.0


def test_aupro_regions_weigh_equally_and_connectivity():
    masks = np.zeros((1, 5, 5), dtype=bool)
    maps = np.zeros((1, 5, 5))
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours
    masks[0, 3:5, 2:5] = True  # a 6-pixel region
    maps[0, 0, 0] = 1.0  # detect one of the diagonal pair only
    maps[0, 3:5, 2:5] = 1.0  # and the whole large region
    # 8-connectivity: regions {(0,0),(1,1)} half found, large one fully -> PRO 0.75 at FPR 0
    # 4-connectivity: three regions, 2 of 3 fully found                    -> PRO 2/3
    # The next threshold (0) jumps to FPR 1, so AUPRO(max_fpr) = PRO + (1 - PRO) * max_fpr / 2.
    assert aupro(masks, maps) == pytest.approx(0.75 + 0.25 * 0.15)
    assert aupro(masks, maps, connectivity=4) == pytest.approx(2 / 3 + 1 / 3 * 0.15)
    # regions in different images never merge
    two = np.zeros((2, 2, 2), dtype=bool)
    two[:, 0, 0] = True
    m2 = np.zeros((2, 2, 2))
    m2[0, 0, 0] = 1.0
    assert aupro(two, m2, max_fpr=1.0) == pytest.approx(0.5 + 0.5 * 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(15):
        shape = (rng.integers(1, 4), rng.integers(2, 7), rng.integers(2, 7))
        masks = rng.random(shape) < rng.uniform(0.05, 0.5)
        if masks.all() or not masks.any():
            continue
        # few distinct values: many ties between normal and defect pixels
        maps = rng.integers(0, rng.integers(2, 12), size=shape) + masks * rng.integers(0, 3)
        maps = maps.astype(float)
        max_fpr = float(rng.choice([0.01, 0.1, 0.3, 0.5, 1.0]))
        conn = int(rng.choice([4, 8]))
        expected = _brute_aupro(masks, maps, max_fpr, conn)
        assert aupro(masks, maps, max_fpr, connectivity=conn) == pytest.approx(expected, abs=1e-10)


def test_aupro_matches_argsort_reference_medium():
    rng = np.random.default_rng(0)
    masks = np.zeros((20, 64, 64), dtype=bool)
    for i in range(0, 20, 2):
        y, x = rng.integers(0, 56, size=2)
        masks[i, y : y + rng.integers(1, 8), x : x + rng.integers(1, 8)] = True
    maps = np.round(rng.random(masks.shape) + 0.4 * masks, 2)  # ties
    for max_fpr in (0.01, 0.3, 1.0):
        assert aupro(masks, maps, max_fpr) == pytest.approx(
            _argsort_aupro(masks, maps, max_fpr), abs=1e-10
        )
    fpr, pro, thr = pro_curve(masks, maps)
    assert fpr[0] == pro[0] == 0 and fpr[-1] == pro[-1] == 1 and thr[0] == np.inf
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0) and np.all(np.diff(thr) < 0)


def test_aupro_float32_and_int_inputs_and_single_image():
    masks, maps = _hand_case()
    ref = aupro(masks, maps)
    assert aupro(masks.astype(np.uint8), maps.astype(np.float32)) == pytest.approx(ref)
    assert aupro(masks, (maps * 2).astype(int)) == pytest.approx(ref)
    assert aupro(masks.tolist(), maps.tolist()) == pytest.approx(ref)
    # (H, W) is one image
    assert aupro(masks[0], maps[0]) == pytest.approx(aupro(masks[:1], maps[:1]))


def _images_of_different_sizes(rng, n_images):
    """Masks and maps, one (H, W) pair per image, of random sizes, with ties."""
    masks, maps = [], []
    for _ in range(n_images):
        shape = (int(rng.integers(2, 8)), int(rng.integers(2, 8)))
        mask = rng.random(shape) < rng.uniform(0.0, 0.4)
        masks.append(mask)
        maps.append((rng.integers(0, 6, size=shape) + 2 * mask).astype(float))
    masks[0][0, 0], masks[-1][-1, -1] = True, False  # both classes present
    return masks, maps


@pytest.mark.parametrize("seed", range(4))
def test_pixel_metrics_of_images_of_different_sizes(seed):
    rng = np.random.default_rng(seed)
    masks, maps = _images_of_different_sizes(rng, int(rng.integers(2, 5)))
    all_masks = np.concatenate([m.ravel() for m in masks])
    all_maps = np.concatenate([a.ravel() for a in maps])
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(all_masks, all_maps))
    p, r, _ = precision_recall_curve(all_masks, all_maps)
    f1 = np.max(np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=p + r > 0))
    assert pixel_f1_max(masks, maps) == pytest.approx(f1)
    for max_fpr, conn in ((0.3, 8), (1.0, 4), (0.05, 8)):
        expected = _brute_aupro(masks, maps, max_fpr, conn)
        assert aupro(masks, maps, max_fpr, connectivity=conn) == pytest.approx(expected, abs=1e-10)
    fpr, pro, thr = pro_curve(tuple(masks), tuple(maps))
    assert fpr[-1] == pro[-1] == 1 and thr[0] == np.inf


def test_regions_of_images_of_different_sizes_never_merge():
    # flattened one after the other, the last pixel of the first image touches the first of
    # the second: they must stay two regions, so finding one is half the overlap
    masks = [np.zeros((2, 3), dtype=bool), np.zeros((3, 2), dtype=bool)]
    masks[0][1, 2] = masks[1][0, 0] = True
    maps = [m.astype(float) for m in masks]
    maps[1][0, 0] = 0.0
    assert aupro(masks, maps, max_fpr=1.0) == pytest.approx(0.5 + 0.5 * 0.5)
    # images of one size give the same, as a list or as a stack
    rng = np.random.default_rng(0)
    stack = rng.random((3, 5, 6)) < 0.3
    stack_maps = rng.random(stack.shape) + stack
    assert aupro(list(stack), list(stack_maps)) == aupro(stack, stack_maps)


def test_pixel_metric_errors_of_images_of_different_sizes():
    masks = [np.eye(3, dtype=bool), np.eye(4, dtype=bool)]
    maps = [np.eye(3), np.eye(4)]
    with pytest.raises(ValueError, match="same number of images; got 2 masks and 1 maps"):
        aupro(masks, maps[:1] + [])
    with pytest.raises(ValueError, match="both be lists.*masks as list and maps as ndarray"):
        pixel_auroc(masks, np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"Image 1: masks and maps must have the same shape"):
        pixel_auroc(masks, [np.eye(3), np.eye(5)])
    with pytest.raises(ValueError, match=r"image 0 has a mask of shape \(1, 3, 3\)"):
        pixel_f1_max([masks[0][None], masks[1]], maps)
    with pytest.raises(ValueError, match="Image 1: maps contains NaN"):
        aupro(masks, [maps[0], np.full((4, 4), np.nan)])


# --------------------------------------------------------------------------------------------
# Pixel AUROC / F1
# --------------------------------------------------------------------------------------------


def test_pixel_metrics_hand_computed():
    masks, maps = _hand_case()
    # defect pixels beat: the two 3s all 27 normals, B (2) the 24 zeros, the two 1s the 24 zeros
    # (2*27 + 24 + 2*24) / (5*27) = 126 / 135
    assert pixel_auroc(masks, maps) == pytest.approx(126 / 135)
    # F1 = 2TP / (TP + FP + P) at t=3: 4/7, t=2: 6/11, t=1: 10/13 (TP 5, FP 3)
    assert pixel_f1_max(masks, maps) == pytest.approx(10 / 13)
    assert pixel_auroc(masks, masks.astype(float)) == 1.0
    assert pixel_auroc(masks, -masks.astype(float)) == 0.0
    assert pixel_auroc(masks, np.zeros(masks.shape)) == 0.5
    assert pixel_f1_max(masks, masks.astype(float)) == 1.0


def test_pixel_metrics_agree_with_sklearn():
    rng = np.random.default_rng(1)
    masks = rng.random((5, 16, 16)) < 0.1
    maps = np.round(rng.random(masks.shape) + 0.3 * masks, 1)  # ties
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    p, r, _ = precision_recall_curve(masks.ravel(), maps.ravel())
    f1 = np.max(np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=p + r > 0))
    assert pixel_f1_max(masks, maps) == pytest.approx(f1)


# --------------------------------------------------------------------------------------------
# Image metrics
# --------------------------------------------------------------------------------------------


def test_image_metrics_hand_computed():
    y = np.array([1, 1, -1, -1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert image_auroc(y, s) == 0.75  # 3 of the 4 (anomaly, normal) pairs ranked right
    assert image_auroc(y, -s) == 0.25
    # t=0.8: P 1, R 1/2 -> 2/3; t=0.4: 1/2; t=0.35: P 2/3, R 1 -> 0.8
    assert f1_max(y, s) == pytest.approx(0.8)
    assert image_auroc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_image_metrics_agree_with_sklearn_and_label_forms():
    rng = np.random.default_rng(0)
    anomaly = rng.random(200) < 0.3
    score = rng.normal(size=200) + anomaly
    y_pm = np.where(anomaly, -1, 1)
    expected = roc_auc_score(anomaly, score)
    for y in (y_pm, anomaly, y_pm.astype(float), y_pm.tolist(), anomaly.tolist()):
        assert image_auroc(y, score) == pytest.approx(expected)
        assert f1_max(y, score) == pytest.approx(f1_max(anomaly, score))
    # with +1/-1 labels, the AUROC of the anomaly score equals sklearn's AUROC of the
    # normality score with the normal class (+1) as positive
    assert image_auroc(y_pm, score) == pytest.approx(roc_auc_score(y_pm, -score))


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", [image_auroc, f1_max])
def test_image_metric_errors(metric):
    with pytest.raises(
        ValueError, match=r"Only one class is present in y_true: all 3 images are normal"
    ):
        metric([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(
        ValueError, match=r"Only one class is present in y_true: all 2 images are anomalous"
    ):
        metric([True, True], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"y_true has shape \(3,\), y_score has shape \(2,\)"):
        metric([1, -1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="y_score contains NaN"):
        metric([1, -1], [0.1, np.nan])
    with pytest.raises(ValueError, match=r"\+1 \(normal\) and -1 \(anomaly\).*\[0, 1\].*astype"):
        metric([0, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="1-D"):
        metric([[1, -1]], [[0.1, 0.2]])
    with pytest.raises(TypeError, match="numeric"):
        metric([1, -1], ["a", "b"])


@pytest.mark.parametrize("metric", [pixel_auroc, pixel_f1_max, aupro, pro_curve])
def test_pixel_metric_errors(metric):
    masks, maps = _hand_case()
    with pytest.raises(ValueError, match=r"masks of shape \(2, 4, 4\).*maps of shape \(2, 4, 5\)"):
        metric(masks, np.zeros((2, 4, 5)))
    with pytest.raises(
        ValueError, match=r"Only one class is present in masks: all 32 pixels are normal"
    ):
        metric(np.zeros_like(masks), maps)
    with pytest.raises(
        ValueError, match=r"Only one class is present in masks: all 32 pixels are defect"
    ):
        metric(np.ones_like(masks), maps)
    bad = maps.copy()
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="maps contains NaN"):
        metric(masks, bad)
    with pytest.raises(ValueError, match="masks > 0"):
        metric(masks * 255, maps)
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        metric(masks[None], maps[None])


def test_aupro_parameter_errors():
    masks, maps = _hand_case()
    for max_fpr in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="max_fpr"):
            aupro(masks, maps, max_fpr=max_fpr)
    with pytest.raises(ValueError, match="connectivity"):
        aupro(masks, maps, connectivity=6)


# --------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------


def _outlier_data():
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(size=(60, 2)), rng.normal(4, 1, size=(20, 2))]
    y = np.r_[np.ones(60, dtype=int), -np.ones(20, dtype=int)]
    return X, y


def test_scorers_sign_and_equivalence_with_roc_auc():
    X, y = _outlier_data()
    est = IsolationForest(random_state=0).fit(X[y == 1][:40])
    Xt, yt = X[40:], y[40:]
    expected = image_auroc(yt, -est.score_samples(Xt))
    assert expected > 0.9
    assert image_auroc_scorer(est, Xt, yt) == pytest.approx(expected)
    assert image_auroc_scorer(est, Xt, yt == -1) == pytest.approx(expected)
    assert get_scorer("roc_auc")(est, Xt, yt) == pytest.approx(expected)
    assert f1_max_scorer(est, Xt, yt) == pytest.approx(f1_max(yt, -est.score_samples(Xt)))


@pytest.mark.parametrize(
    "estimator, grid",
    [
        (IsolationForest(random_state=0), {"n_estimators": [10, 50]}),
        (LocalOutlierFactor(novelty=True), {"n_neighbors": [5, 20]}),
    ],
)
def test_scorers_in_grid_search(estimator, grid):
    # mechanics only: the training folds here hold anomalies too
    X, y = _outlier_data()
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(estimator, grid, scoring=image_auroc_scorer, cv=cv).fit(X, y)
    assert 0.5 < search.best_score_ <= 1.0
    multi = GridSearchCV(estimator, grid, scoring=SCORERS, refit="image_auroc", cv=cv)
    multi.fit(X, y)
    np.testing.assert_allclose(
        multi.cv_results_["mean_test_image_auroc"], search.cv_results_["mean_test_score"]
    )
    assert np.all(multi.cv_results_["mean_test_f1_max"] > 0)


def test_scorers_pickle():
    X, y = _outlier_data()
    est = IsolationForest(random_state=0).fit(X)
    for scorer in (image_auroc_scorer, f1_max_scorer):
        loaded = pickle.loads(pickle.dumps(scorer))
        assert loaded(est, X, y) == scorer(est, X, y)
