"""Pixel decisions: boolean defect masks from anomaly maps, with a threshold of their own.

The image decision (is this part defective?) and the pixel decision (which pixels are the
defect?) need different thresholds: they are on different scales (an image score is the peak
of the patch map, a pixel map is that map upsampled and smoothed, which lowers peaks) and serve
different goals. :func:`select_pixel_threshold` chooses the pixel threshold on validation
masks; :func:`predict_masks` applies it to new images; :func:`mask_scores` measures masks
against ground truth.

Every threshold here is on the anomaly-map scale of :func:`~sklearn_memad.anomaly_maps`
(higher = more abnormal) and a pixel is flagged where ``map >= threshold``. Use the same
``sigma`` when choosing and when applying a threshold: smoothing changes the scale.
"""

from numbers import Real

import numpy as np
from scipy import ndimage
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params

from .maps import anomaly_maps
from .metrics import pro_curve
from .utils.labels import check_both_classes, check_masks_maps

__all__ = ["mask_scores", "predict_masks", "select_pixel_threshold"]

# 8-connectivity within an image (as the MVTec AD evaluation), none across images.
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else float("nan")


def _check_mask_pair(masks_true, masks_pred):
    true = np.asarray(masks_true)
    pred = np.asarray(masks_pred)
    for name, m in (("masks_true", true), ("masks_pred", pred)):
        if m.dtype != bool:
            raise TypeError(
                f"{name} must be a boolean array (True = defect pixel); got dtype {m.dtype}. "
                "For 0/255 masks pass masks > 0."
            )
    if true.shape != pred.shape or true.ndim not in (2, 3):
        raise ValueError(
            "masks_true and masks_pred must have the same shape (n, H, W) or (H, W); got "
            f"{true.shape} and {pred.shape}."
        )
    return (true, pred) if true.ndim == 3 else (true[None], pred[None])


@validate_params(
    {"masks_true": ["array-like"], "masks_pred": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def mask_scores(masks_true, masks_pred):
    """Pixel precision, recall, F1, IoU and per-region overlap of predicted masks.

    All pixels of all images are pooled (a large defect weighs more than a small one), except
    in ``per_region_overlap``, the mean over the ground-truth defect regions (8-connected, per
    image) of the fraction of each region's pixels that is flagged, where every region weighs
    the same. A ratio whose denominator is zero (e.g. recall without any defect pixel) is NaN.

    Parameters
    ----------
    masks_true : array-like of shape (n, H, W) or (H, W), bool
        Ground truth, True = defect pixel.
    masks_pred : array-like of the same shape, bool
        Predicted masks, e.g. from :func:`predict_masks`.

    Returns
    -------
    scores : :class:`~sklearn.utils.Bunch`
        ``precision``, ``recall``, ``f1``, ``iou`` (intersection over union,
        ``TP / (TP + FP + FN)``) and ``per_region_overlap``, floats.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.masks import mask_scores
    >>> truth = np.zeros((1, 4, 4), dtype=bool)
    >>> truth[0, :2, :2] = True                       # a 4-pixel defect
    >>> pred = np.zeros_like(truth)
    >>> pred[0, :2, :3] = True                        # 6 flagged, 4 of them right
    >>> s = mask_scores(truth, pred)
    >>> round(s.precision, 3), s.recall, s.f1, round(s.iou, 3), s.per_region_overlap
    (0.667, 1.0, 0.8, 0.667, 1.0)
    """
    true, pred = _check_mask_pair(masks_true, masks_pred)
    tp = int(np.count_nonzero(true & pred))
    n_true = int(np.count_nonzero(true))
    n_pred = int(np.count_nonzero(pred))
    regions, n_regions = ndimage.label(true, structure=_REGION_STRUCTURE)
    if n_regions:
        size = np.bincount(regions.ravel(), minlength=n_regions + 1)[1:]
        hit = np.bincount(regions[pred], minlength=n_regions + 1)[1:]
        overlap = float(np.mean(hit / size))
    else:
        overlap = float("nan")
    return Bunch(
        precision=_ratio(tp, n_pred),
        recall=_ratio(tp, n_true),
        f1=_ratio(2 * tp, n_true + n_pred),
        iou=_ratio(tp, n_true + n_pred - tp),
        per_region_overlap=overlap,
    )


def _best_f1_threshold(masks, maps):
    """The map value whose threshold (flag ``maps >= t``) gives the largest pooled pixel F1."""
    values = maps.ravel()
    order = np.argsort(values, kind="stable")[::-1]
    ordered = values[order]
    true_positives = np.cumsum(masks.ravel()[order])
    # Only the end of each run of tied values is a reachable cut.
    ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
    flagged = ends + 1
    f1 = 2.0 * true_positives[ends] / (flagged + true_positives[-1])
    return float(ordered[ends[int(np.argmax(f1))]])  # first maximum: the fewest pixels flagged


@validate_params(
    {
        "masks": ["array-like"],
        "maps": ["array-like"],
        "objective": [StrOptions({"f1", "pro"})],
        "target": [Interval(Real, 0, 1, closed="right"), None],
    },
    prefer_skip_nested_validation=True,
)
def select_pixel_threshold(masks, maps, *, objective="f1", target=None):
    """Choose the pixel threshold on validation masks and their anomaly maps.

    - ``objective="f1"``: the threshold with the largest pixel F1, all pixels pooled (on ties,
      the one flagging fewer pixels).
    - ``objective="pro"``: the least aggressive threshold at which the mean per-region overlap
      (the fraction of each ground-truth defect region that is flagged, every region weighing
      the same) reaches ``target``; it favours covering small defects.

    The threshold is a value of ``maps``; pixels with ``map >= threshold`` are flagged.

    Parameters
    ----------
    masks : array-like of shape (n, H, W), bool
        Validation ground truth, True = defect pixel; must hold defect and normal pixels.
        Normal images may be included: they add normal pixels (false positives) to the choice.
    maps : array-like of shape (n, H, W)
        Their anomaly maps (higher = more abnormal), e.g. ``anomaly_maps(pipe, X_val)``.
    objective : {"f1", "pro"}, default="f1"
        What the threshold is chosen for.
    target : float in (0, 1] or None, default=None
        Required per-region overlap for ``"pro"``; must be None for ``"f1"``.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``threshold`` (float), and what it achieves on the validation masks: ``precision``,
        ``recall``, ``f1``, ``iou``, ``per_region_overlap`` (see :func:`mask_scores`).

    Raises
    ------
    ValueError
        If the shapes differ, a value is NaN, the masks hold only one class, or ``target``
        does not fit ``objective``.

    See Also
    --------
    predict_masks : Apply the threshold to new images.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.masks import select_pixel_threshold
    >>> masks = np.zeros((1, 4, 4), dtype=bool)
    >>> masks[0, :2, :2] = True
    >>> maps = np.zeros((1, 4, 4))
    >>> maps[0, :2, :2] = [[0.9, 0.8], [0.7, 0.4]]     # one defect pixel scored low
    >>> maps[0, 3, 2:] = 0.5                           # two normal pixels scored high
    >>> r = select_pixel_threshold(masks, maps)
    >>> r.threshold, r.f1
    (0.7, 0.8571428571428571)
    >>> select_pixel_threshold(masks, maps, objective="pro", target=1.0).threshold
    0.4
    """
    if objective == "f1" and target is not None:
        raise ValueError(
            f"target={target!r} is not used with objective='f1' (the threshold with the largest "
            "pixel F1 is chosen); leave target=None, or choose objective='pro'."
        )
    if objective == "pro" and target is None:
        raise ValueError(
            "objective='pro' needs a target: the per-region overlap to reach, a float in "
            "(0, 1], e.g. target=0.5."
        )
    m, a = check_masks_maps(masks, maps)
    check_both_classes(m, "pixel", "masks")
    if objective == "f1":
        threshold = _best_f1_threshold(m, a)
    else:
        _, overlap, thresholds = pro_curve(m, a)
        # overlap grows as the threshold falls: take the first (largest) that reaches target.
        threshold = float(thresholds[np.argmax(overlap >= target - 1e-12)])
    return Bunch(threshold=threshold, **mask_scores(m, a >= threshold))


@validate_params(
    {
        "estimator": [HasMethods(["score_samples"])],
        "X": ["array-like"],
        "threshold": [Real],
        "sigma": [Interval(Real, 0, None, closed="left")],
        "output_size": [tuple, list, None],
    },
    prefer_skip_nested_validation=True,
)
def predict_masks(estimator, X, threshold, *, sigma=4.0, output_size=None):
    """Boolean defect masks at input resolution: anomaly-map pixels at or above ``threshold``.

    The pixel threshold is separate from the image threshold (``offset_`` or a
    :class:`~sklearn_memad.thresholds.ThresholdedDetector`'s ``threshold_``); choose it with
    :func:`select_pixel_threshold` on validation masks, with the same ``sigma``. Masks are
    computed for every image; to draw them only on images judged defective, clear the others
    (``masks[estimator.predict(X) == 1] = False``).

    Parameters
    ----------
    estimator : Pipeline or detector
        A fitted Pipeline ending in a sklearn_memad detector, the detector itself, or a
        :class:`~sklearn_memad.thresholds.ThresholdedDetector` wrapping either (or ending a
        Pipeline).
    X : array-like of shape (n, H, W, 3), (n, H, W) or (n, h, w, d)
        Images for a pipeline, grids for a bare detector (then ``output_size`` is needed).
    threshold : float
        Pixel threshold on the anomaly-map scale.
    sigma : float, default=4.0
        Gaussian smoothing of the maps, as in :func:`~sklearn_memad.anomaly_maps`.
    output_size : tuple of int, default=None
        ``(H, W)`` of the masks; default: the size of the images ``X``.

    Returns
    -------
    masks : ndarray of shape (n, H, W), bool
        True = defect pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import PatchCoreDetector
    >>> from sklearn_memad.masks import predict_masks
    >>> rng = np.random.default_rng(0)
    >>> detector = PatchCoreDetector(random_state=0).fit(rng.normal(size=(20, 4, 4, 8)))
    >>> grids = rng.normal(size=(1, 4, 4, 8))
    >>> grids[0, 1, 1] += 10.0                        # a defect in patch (1, 1)
    >>> masks = predict_masks(detector, grids, threshold=6.0, output_size=(16, 16))
    >>> masks.shape, bool(masks[0, 5, 5]), bool(masks[0, 15, 15])
    ((1, 16, 16), True, False)
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite pixel threshold; got {threshold}.")
    maps = anomaly_maps(estimator, X, sigma=sigma, output_size=output_size)
    return maps >= threshold
