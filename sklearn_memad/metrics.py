"""Anomaly-detection metrics: image AUROC, pixel AUROC, AUPRO, F1-max, and scorers.

Conventions
-----------
All metrics follow :mod:`sklearn.metrics`: the ground truth comes first, the scores second, and
greater is better.

- **Image labels** ``y_true`` are either scikit-learn outlier labels (``+1`` normal, ``-1``
  anomaly), or booleans (``True`` = anomaly). Both forms give the same result.
- **Masks** are boolean arrays of shape ``(n, H, W)`` (``True`` = defect pixel); integer masks
  holding only 0 and 1 are accepted too. Images of different sizes are passed as lists of
  ``(H, W)`` masks and maps, one pair per image: the MVTec AD protocol evaluates each map at
  its image's own resolution, and counts the pixels of the normal test images too.
- **Scores and maps are anomaly scores: higher = more abnormal.** An estimator's
  ``score_samples`` (and ``decision_function``) follows scikit-learn and is *lower* = more
  abnormal, so pass ``-est.score_samples(X)``. The scorers (:data:`image_auroc_scorer`,
  :data:`f1_max_scorer`) do this sign change themselves.

The anomaly is the positive class everywhere. With the ``+1``/``-1`` labels of scikit-learn, the
image AUROC equals ``roc_auc_score(y, est.score_samples(X))``, i.e. ``scoring="roc_auc"``, because
the AUROC is symmetric under swapping both the classes and the sign of the score.

The pixel metrics (:func:`pixel_auroc`, :func:`pixel_f1_max`, :func:`aupro`, :func:`pro_curve`)
are exact and need a single sort of the normal pixels (plus a sort of the defect pixels), so they
stay fast on large sets of maps.

Scorers for model selection
---------------------------
:data:`image_auroc_scorer` and :data:`f1_max_scorer` call the estimator's ``score_samples`` (or,
failing that, ``decision_function``), negate it, and apply the metric, so they plug into
``GridSearchCV(..., scoring=image_auroc_scorer)`` with ``+1``/``-1`` labels. They are picklable.

>>> import numpy as np
>>> from sklearn.ensemble import IsolationForest
>>> from sklearn_memad.metrics import image_auroc, image_auroc_scorer
>>> rng = np.random.RandomState(0)
>>> X_train = rng.normal(size=(30, 2))
>>> X_test = np.r_[rng.normal(size=(10, 2)), rng.normal(6, 1, size=(5, 2))]
>>> y_test = np.r_[np.ones(10), -np.ones(5)]            # +1 normal, -1 anomaly
>>> est = IsolationForest(random_state=0).fit(X_train)
>>> image_auroc(y_test, -est.score_samples(X_test))     # note the minus sign
1.0
>>> float(image_auroc_scorer(est, X_test, y_test))
1.0
"""

from numbers import Integral, Real

import numpy as np
from scipy import ndimage
from sklearn.metrics import make_scorer, precision_recall_curve, roc_auc_score
from sklearn.utils._param_validation import Interval, Options, validate_params

from .utils.labels import check_both_classes, check_labels, check_pixels, check_scores

__all__ = [
    "image_auroc",
    "pixel_auroc",
    "pro_curve",
    "aupro",
    "f1_max",
    "pixel_f1_max",
    "image_auroc_scorer",
    "f1_max_scorer",
    "SCORERS",
]


def _split_pixels(m, a):
    """Sorted (ascending) normal-pixel scores and the defect-pixel scores."""
    flat_m = m.ravel()
    flat_a = a.ravel()
    normal = flat_a[~flat_m]  # a copy, sorted in place below
    normal.sort()
    return normal, flat_a[flat_m]


# --------------------------------------------------------------------------------------------
# Image metrics
# --------------------------------------------------------------------------------------------


@validate_params(
    {"y_true": ["array-like"], "y_score": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def image_auroc(y_true, y_score):
    """Area under the ROC curve of image anomaly scores.

    The anomaly is the positive class.

    Parameters
    ----------
    y_true : array-like of shape (n_images,)
        ``+1`` normal / ``-1`` anomaly (scikit-learn outlier labels), or booleans with
        ``True`` = anomaly.
    y_score : array-like of shape (n_images,)
        Anomaly scores, **higher = more abnormal**. For an estimator whose
        ``score_samples`` is lower = more abnormal, pass ``-est.score_samples(X)``.

    Returns
    -------
    auroc : float
        In [0, 1]; 1 ranks every anomaly above every normal image, 0.5 is chance.

    Raises
    ------
    ValueError
        If only one class is present, the lengths differ, or a score is NaN.

    See Also
    --------
    pixel_auroc : The same metric over the pixels of anomaly maps.
    sklearn.metrics.roc_auc_score : Used for the computation.

    Examples
    --------
    >>> from sklearn_memad.metrics import image_auroc
    >>> y = [1, 1, -1, -1]                 # +1 normal, -1 anomaly
    >>> image_auroc(y, [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> image_auroc([False, False, True, True], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    anomaly = check_labels(y_true)
    score = check_scores(y_score, anomaly.shape[0])
    check_both_classes(anomaly, "image", "y_true")
    return float(roc_auc_score(anomaly, score))


@validate_params(
    {"y_true": ["array-like"], "y_score": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def f1_max(y_true, y_score):
    """Best F1 score over all thresholds of image anomaly scores.

    The anomaly is the positive class; every threshold ``t`` flags the images with
    ``y_score >= t``, and the largest F1 reached is returned.

    Parameters
    ----------
    y_true : array-like of shape (n_images,)
        ``+1`` normal / ``-1`` anomaly, or booleans with ``True`` = anomaly.
    y_score : array-like of shape (n_images,)
        Anomaly scores, **higher = more abnormal** (pass ``-est.score_samples(X)``).

    Returns
    -------
    f1 : float
        In [0, 1].

    Raises
    ------
    ValueError
        If only one class is present, the lengths differ, or a score is NaN.

    See Also
    --------
    pixel_f1_max : The same metric over the pixels of anomaly maps.
    sklearn.metrics.precision_recall_curve : Used for the computation.

    Examples
    --------
    >>> from sklearn_memad.metrics import f1_max
    >>> # threshold 0.35 flags both anomalies and one normal image: P = 2/3, R = 1
    >>> round(f1_max([1, 1, -1, -1], [0.1, 0.4, 0.35, 0.8]), 4)
    0.8
    """
    anomaly = check_labels(y_true)
    score = check_scores(y_score, anomaly.shape[0])
    check_both_classes(anomaly, "image", "y_true")
    precision, recall, _ = precision_recall_curve(anomaly, score)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


# --------------------------------------------------------------------------------------------
# Pixel metrics
# --------------------------------------------------------------------------------------------


@validate_params(
    {"masks": ["array-like"], "maps": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def pixel_auroc(masks, maps):
    """Area under the ROC curve of all pixels of anomaly maps.

    Every pixel of every image counts once; defect pixels are the positive class. The value is
    exact (ties count one half, as in :func:`sklearn.metrics.roc_auc_score`), computed from a
    single sort of the normal pixels as the Mann-Whitney statistic.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W) or (H, W), or list of (H_i, W_i) arrays
        Ground truth, boolean with ``True`` = defect pixel; images of different sizes as a
        list, one mask per image (0/1 integers are accepted).
    maps : array-like of the same shape as ``masks``, or a list of the same shapes
        Anomaly maps, **higher = more abnormal**.

    Returns
    -------
    auroc : float
        In [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ, a value is NaN, or the masks hold no defect pixel or
        only defect pixels.

    See Also
    --------
    aupro : Region-wise overlap, which weighs small defects as much as large ones.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.metrics import pixel_auroc
    >>> masks = np.zeros((1, 2, 2), dtype=bool)
    >>> masks[0, 0, 0] = True
    >>> maps = np.array([[[0.9, 0.5], [0.95, 0.1]]])
    >>> round(pixel_auroc(masks, maps), 4)     # the defect beats 2 of 3 normal pixels
    0.6667
    """
    m, a, _ = check_pixels(masks, maps)
    check_both_classes(m, "pixel", "masks")
    normal, defect = _split_pixels(m, a)
    defect.sort()  # sorted keys make the binary searches cache-friendly
    below = np.searchsorted(normal, defect, side="left").sum(dtype=np.float64)
    below_or_tied = np.searchsorted(normal, defect, side="right").sum(dtype=np.float64)
    return float((below + below_or_tied) / (2.0 * normal.size * defect.size))


@validate_params(
    {"masks": ["array-like"], "maps": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def pixel_f1_max(masks, maps):
    """Best F1 score over all thresholds of the pixels of anomaly maps.

    Defect pixels are the positive class; every threshold ``t`` flags the pixels with
    ``maps >= t``. Exact: the best threshold is always one of the defect-pixel scores, and each
    is evaluated with one sort of the normal pixels.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W) or (H, W), or list of (H_i, W_i) arrays
        Ground truth, boolean with ``True`` = defect pixel; images of different sizes as a
        list, one mask per image.
    maps : array-like of the same shape as ``masks``, or a list of the same shapes
        Anomaly maps, **higher = more abnormal**.

    Returns
    -------
    f1 : float
        In [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ, a value is NaN, or the masks hold no defect pixel or
        only defect pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.metrics import pixel_f1_max
    >>> masks = np.array([[[True, True], [False, False]]])
    >>> maps = np.array([[[0.9, 0.3], [0.5, 0.1]]])
    >>> round(pixel_f1_max(masks, maps), 4)   # t = 0.3: P = 2/3, R = 1
    0.8
    """
    m, a, _ = check_pixels(masks, maps)
    check_both_classes(m, "pixel", "masks")
    normal, defect = _split_pixels(m, a)
    defect = np.sort(defect)[::-1]
    # one candidate per distinct defect score: the last position of each run of ties
    last = np.flatnonzero(np.r_[defect[1:] != defect[:-1], True])
    tp = last + 1.0
    fp = normal.size - np.searchsorted(normal, defect[last], side="left")
    f1 = 2.0 * tp / (tp + fp + defect.size)
    return float(f1.max())


_CONNECTIVITY = {
    4: np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool),
    8: np.ones((3, 3), dtype=bool),
}


@validate_params(
    {
        "masks": ["array-like"],
        "maps": ["array-like"],
        "connectivity": [Options(Integral, {4, 8})],
    },
    prefer_skip_nested_validation=True,
)
def pro_curve(masks, maps, *, connectivity=8):
    """Per-region overlap (PRO) against false-positive rate, for every threshold.

    This is the curve of the MVTec AD benchmark (Bergmann et al., 2021). For a threshold ``t``,
    the pixels with ``maps >= t`` are flagged.

    - The **false-positive rate** is the fraction of all normal pixels (``masks == False``, in
      every image) that are flagged.
    - The **per-region overlap** is the mean, over every connected component (defect region)
      of every mask, of the fraction of that region's pixels that are flagged. Each region
      counts equally, whatever its size.

    Regions are found per image with :func:`scipy.ndimage.label`, with 8-connectivity by
    default (as the MVTec AD evaluation code does).

    The curve is exact: it holds every vertex of the curve over all distinct thresholds.
    Thresholds at which only normal pixels change, with no defect pixel in between, move along
    a horizontal segment and are merged; ties of normal and defect pixels give a diagonal
    segment.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W) or (H, W), or list of (H_i, W_i) arrays
        Ground truth, boolean with ``True`` = defect pixel; images of different sizes as a
        list, one mask per image. Must hold both defect and normal pixels.
    maps : array-like of the same shape as ``masks``, or a list of the same shapes
        Anomaly maps, **higher = more abnormal**.
    connectivity : {4, 8}, default=8
        Pixel connectivity of a defect region: 8 joins diagonal neighbours, 4 does not.

    Returns
    -------
    fpr : ndarray of shape (n_points,)
        Non-decreasing false-positive rates, from 0 to 1.
    pro : ndarray of shape (n_points,)
        Non-decreasing per-region overlaps, from 0 to 1.
    thresholds : ndarray of shape (n_points,)
        Decreasing thresholds; the first is ``inf`` (nothing flagged), as in
        :func:`sklearn.metrics.roc_curve`.

    Raises
    ------
    ValueError
        If the shapes differ, a value is NaN, or the masks hold no defect pixel or
        only defect pixels.

    See Also
    --------
    aupro : The normalised area under this curve up to a false-positive rate.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.metrics import pro_curve
    >>> masks = np.array([[[True, False], [False, False]]])
    >>> maps = np.array([[[0.8, 0.9], [0.1, 0.1]]])
    >>> fpr, pro, thr = pro_curve(masks, maps)
    >>> fpr.round(4).tolist(), pro.tolist(), thr.tolist()
    ([0.0, 0.3333, 0.3333, 1.0], [0.0, 0.0, 1.0, 1.0], [inf, 0.9, 0.8, 0.1])
    """
    m, a, shapes = check_pixels(masks, maps)
    return _pro_curve(m, a, shapes, int(connectivity))


def _defect_regions(m, shapes, connectivity):
    """Region number of every pixel (0 on normal pixels) and the number of regions."""
    if shapes is None:
        structure = np.zeros((3, 3, 3), dtype=bool)
        structure[1] = _CONNECTIVITY[connectivity]  # no connection across images
        return ndimage.label(m, structure=structure)
    regions = np.zeros(m.size, dtype=np.int64)
    n_regions = start = 0
    for h, w in shapes:  # images of different sizes are labelled one by one
        stop = start + h * w
        part, n = ndimage.label(m[start:stop].reshape(h, w), structure=_CONNECTIVITY[connectivity])
        regions[start:stop] = np.where(part > 0, part + n_regions, 0).ravel()
        n_regions += n
        start = stop
    return regions, n_regions


def _pro_curve(m, a, shapes, connectivity):
    check_both_classes(m, "pixel", "masks")
    regions, n_regions = _defect_regions(m, shapes, connectivity)
    normal, defect = _split_pixels(m, a)
    defect_region = regions.ravel()[m.ravel()]
    region_size = np.bincount(defect_region, minlength=n_regions + 1)
    # a defect pixel adds 1 / (n_regions * |its region|) to PRO once it is flagged
    weight = 1.0 / (n_regions * region_size[defect_region].astype(np.float64))

    order = np.argsort(defect, kind="stable")[::-1]
    d = defect[order]
    pro_cum = np.cumsum(weight[order])
    last = np.flatnonzero(np.r_[d[1:] != d[:-1], True])  # end of each run of ties
    d = d[last]  # distinct defect scores, decreasing
    pro_after = pro_cum[last]
    pro_after[-1] = 1.0  # exact at the end, whatever the rounding of the sum
    pro_before = np.r_[0.0, pro_after[:-1]]
    n_normal = normal.size
    # normal pixels flagged strictly above / at-or-above each defect score
    fp_above = n_normal - np.searchsorted(normal, d, side="right")
    fp_at = n_normal - np.searchsorted(normal, d, side="left")
    fp_prev_at = np.r_[0, fp_at[:-1]]
    # corner (fp_above, pro_before): normal pixels strictly between two defect scores;
    # its threshold is the smallest normal score above d
    has_corner = fp_above > fp_prev_at
    idx = np.minimum(np.searchsorted(normal, d, side="right"), n_normal - 1)
    corner_thr = normal[idx]

    k = d.size
    fp = np.empty(2 * k, dtype=np.float64)
    pro = np.empty(2 * k, dtype=np.float64)
    thr = np.empty(2 * k, dtype=np.float64)
    fp[0::2], fp[1::2] = fp_above, fp_at
    pro[0::2], pro[1::2] = pro_before, pro_after
    thr[0::2], thr[1::2] = corner_thr, d
    keep = np.ones(2 * k, dtype=bool)
    keep[0::2] = has_corner
    fp, pro, thr = fp[keep], pro[keep], thr[keep]

    fpr = np.r_[0.0, fp / n_normal]
    pro = np.r_[0.0, pro]
    thr = np.r_[np.inf, thr]
    if fp_at[-1] < n_normal:  # normal pixels below the lowest defect score
        fpr = np.r_[fpr, 1.0]
        pro = np.r_[pro, 1.0]
        thr = np.r_[thr, normal[0]]
    return fpr, pro, thr


@validate_params(
    {
        "masks": ["array-like"],
        "maps": ["array-like"],
        "max_fpr": [Interval(Real, 0, 1, closed="right")],
        "connectivity": [Options(Integral, {4, 8})],
    },
    prefer_skip_nested_validation=True,
)
def aupro(masks, maps, max_fpr=0.3, *, connectivity=8):
    """Normalised area under the per-region-overlap curve up to a false-positive rate.

    The AUPRO of the MVTec AD benchmark (Bergmann et al., 2021): the area under
    :func:`pro_curve` from a false-positive rate of 0 to ``max_fpr`` (trapezoidal rule, the
    curve linearly interpolated at ``max_fpr`` exactly), divided by ``max_fpr`` so that a
    perfect detector scores 1. Unlike :func:`pixel_auroc`, each defect region weighs the same,
    so small defects count as much as large ones.

    Reference values: a perfect map gives 1; a constant map (the curve is the diagonal) gives
    ``max_fpr / 2``; a map that ranks every normal pixel above every defect pixel gives 0.

    The computation is exact and vectorised: one sort of the normal pixels, one of the defect
    pixels, and per-region weights from :func:`numpy.bincount`.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W) or (H, W), or list of (H_i, W_i) arrays
        Ground truth, boolean with ``True`` = defect pixel; images of different sizes as a
        list, one mask per image. Must hold at least one defect pixel and one normal pixel;
        images without defect add normal pixels only.
    maps : array-like of the same shape as ``masks``, or a list of the same shapes
        Anomaly maps, **higher = more abnormal**.
    max_fpr : float in (0, 1], default=0.3
        Upper integration limit on the false-positive rate (0.3 in MVTec AD).
    connectivity : {4, 8}, default=8
        Pixel connectivity of a defect region (8, the default, as MVTec AD).

    Returns
    -------
    aupro : float
        In [0, 1].

    Raises
    ------
    ValueError
        If the shapes differ, a value is NaN, ``max_fpr`` is outside (0, 1], or the masks hold
        no defect pixel or only defect pixels.

    See Also
    --------
    pro_curve : The curve integrated here.
    pixel_auroc : Pixel-wise AUROC, dominated by large defects.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.metrics import aupro
    >>> masks = np.zeros((2, 4, 4), dtype=bool)
    >>> masks[0, :2, :2] = True                     # one 2x2 defect in the first image
    >>> aupro(masks, masks.astype(float))           # a perfect map
    1.0
    >>> round(aupro(masks, np.zeros((2, 4, 4))), 6)  # a constant map: max_fpr / 2
    0.15

    Images of different sizes, each evaluated at its own resolution, go in as lists:

    >>> small, large = np.zeros((2, 3), dtype=bool), np.zeros((4, 5), dtype=bool)
    >>> large[1:3, 1:3] = True
    >>> aupro([small, large], [small.astype(float), large.astype(float)])
    1.0
    """
    m, a, shapes = check_pixels(masks, maps)
    fpr, pro, _ = _pro_curve(m, a, shapes, int(connectivity))
    max_fpr = float(max_fpr)
    i = np.searchsorted(fpr, max_fpr, side="right")  # fpr[:i] <= max_fpr < fpr[i:]
    x, y = fpr[:i], pro[:i]
    if x[-1] < max_fpr:  # the curve always reaches fpr = 1, so fpr[i] exists here
        t = (max_fpr - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        x = np.r_[x, max_fpr]
        y = np.r_[y, pro[i - 1] + t * (pro[i] - pro[i - 1])]
    area = np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0
    return float(min(area / max_fpr, 1.0))


# --------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------


def _image_auroc_of_normality(y_true, normality):
    """image_auroc of a response that is lower = more abnormal (score_samples)."""
    return image_auroc(y_true, -np.asarray(normality, dtype=np.float64))


def _f1_max_of_normality(y_true, normality):
    """f1_max of a response that is lower = more abnormal (score_samples)."""
    return f1_max(y_true, -np.asarray(normality, dtype=np.float64))


_RESPONSE = ("score_samples", "decision_function")

#: Scorer for ``GridSearchCV(..., scoring=image_auroc_scorer)``: the :func:`image_auroc` of
#: ``-score_samples(X)`` (or ``-decision_function(X)``), labels +1 normal / -1 anomaly.
image_auroc_scorer = make_scorer(_image_auroc_of_normality, response_method=_RESPONSE)

#: Scorer for ``GridSearchCV(..., scoring=f1_max_scorer)``: the :func:`f1_max` of
#: ``-score_samples(X)`` (or ``-decision_function(X)``), labels +1 normal / -1 anomaly.
f1_max_scorer = make_scorer(_f1_max_of_normality, response_method=_RESPONSE)

#: Scorers by name; ``GridSearchCV(..., scoring=SCORERS, refit="image_auroc")`` evaluates both.
SCORERS = {"image_auroc": image_auroc_scorer, "f1_max": f1_max_scorer}
