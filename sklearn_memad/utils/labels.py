"""Checks of what the metrics and decisions compare: image labels, scores, masks and maps."""

import numpy as np

__all__ = [
    "check_both_classes",
    "check_labels",
    "check_masks_maps",
    "check_pixels",
    "check_scores",
]


def check_labels(y_true, name="y_true"):
    """Return image labels as a boolean array, True = anomaly."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of image labels; got an array of shape {y.shape}."
        )
    if y.dtype == bool:
        return y
    if y.dtype.kind in "iuf":
        values = np.unique(y)
        if np.isin(values, (-1, 1)).all():
            return y == -1
    else:
        values = np.unique(y.astype(object).astype(str)) if y.size else y
    shown = values[:10].tolist()
    raise ValueError(
        f"{name} must hold +1 (normal) and -1 (anomaly), as scikit-learn outlier detectors "
        f"predict, or booleans (True = anomaly); got values {shown}"
        f"{' ...' if len(values) > 10 else ''}. For 0/1 labels with 1 = anomaly, pass "
        f"{name}.astype(bool)."
    )


def check_scores(y_score, n, name="y_score"):
    """Return 1-D finite float scores of length ``n``."""
    s = np.asarray(y_score)
    if s.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of anomaly scores; got an array of shape {s.shape}."
        )
    if s.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be numeric anomaly scores; got dtype {s.dtype}.")
    if s.shape[0] != n:
        raise ValueError(
            f"y_true and {name} have different lengths: y_true has shape ({n},), "
            f"{name} has shape {s.shape}."
        )
    s = s.astype(np.float64, copy=False)
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or infinity; anomaly scores must be finite.")
    return s


def check_both_classes(anomaly, what, name):
    n_anomaly = int(np.count_nonzero(anomaly))
    if n_anomaly == 0 or n_anomaly == anomaly.size:
        bad = "defect" if what == "pixel" else "anomalous"
        present = bad if n_anomaly else "normal"
        raise ValueError(
            f"Only one class is present in {name}: all {anomaly.size} {what}s are {present}. "
            f"The metric is not defined in that case; {name} must hold both normal and "
            f"{bad} {what}s."
        )


def check_masks_maps(masks, maps):
    """Return (masks bool (n, H, W), maps float (n, H, W)), checked against each other."""
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.dtype != bool:
        if m.dtype.kind not in "iuf":
            raise TypeError(f"masks must be boolean (True = defect pixel); got dtype {m.dtype}.")
        if m.size and not ((m == 0) | (m == 1)).all():
            raise ValueError(
                "masks must be boolean (True = defect pixel) or hold only 0 and 1; got "
                f"values in [{m.min()}, {m.max()}]. For 0/255 masks pass masks > 0."
            )
        m = m.astype(bool)
    if a.dtype.kind not in "iufb":
        raise TypeError(f"maps must be numeric anomaly maps; got dtype {a.dtype}.")
    if m.ndim not in (2, 3) or a.ndim not in (2, 3):
        raise ValueError(
            "masks and maps must have shape (n, H, W) (or (H, W) for one image); got "
            f"masks of shape {m.shape} and maps of shape {a.shape}."
        )
    if m.shape != a.shape:
        raise ValueError(
            f"masks and maps must have the same shape; got masks of shape {m.shape} and "
            f"maps of shape {a.shape}."
        )
    if m.size == 0:
        raise ValueError(f"masks and maps are empty: shape {m.shape}.")
    if m.ndim == 2:
        m, a = m[None], a[None]
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError("maps contains NaN or infinity; anomaly maps must be finite.")
    return m, a


def _is_ragged(images):
    """Whether ``images`` is a list or tuple of arrays that do not all share one shape."""
    if not isinstance(images, (list, tuple)) or len(images) < 2:
        return False
    return len({np.shape(image) for image in images}) > 1


def check_pixels(masks, maps):
    """Checked pixels of masks and maps given as stacks or as images of different sizes.

    Returns ``(masks, maps, shapes)``. A stack (``(n, H, W)`` or ``(H, W)``) comes back as
    ``check_masks_maps`` returns it, with ``shapes=None``. Lists of 2-D arrays that differ in
    size (each image at its own resolution, as the MVTec AD evaluation reads them) come back
    as 1-D concatenations of their pixels, with ``shapes`` the list of each image's
    ``(H, W)``.
    """
    if not (_is_ragged(masks) or _is_ragged(maps)):
        m, a = check_masks_maps(masks, maps)
        return m, a, None
    if not isinstance(masks, (list, tuple)) or not isinstance(maps, (list, tuple)):
        raise ValueError(
            "masks and maps of images of different sizes must both be lists of 2-D arrays, "
            f"one per image; got masks as {type(masks).__name__} and maps as "
            f"{type(maps).__name__}."
        )
    if len(masks) != len(maps):
        raise ValueError(
            f"masks and maps must hold the same number of images; got {len(masks)} masks "
            f"and {len(maps)} maps."
        )
    flat_m, flat_a, shapes = [], [], []
    for i, (mask, anomaly_map) in enumerate(zip(masks, maps)):
        if np.ndim(mask) != 2 or np.ndim(anomaly_map) != 2:
            raise ValueError(
                "masks and maps of images of different sizes must be lists of 2-D (H, W) "
                f"arrays; image {i} has a mask of shape {np.shape(mask)} and a map of shape "
                f"{np.shape(anomaly_map)}."
            )
        try:
            m, a = check_masks_maps(mask, anomaly_map)
        except (TypeError, ValueError) as error:
            raise type(error)(f"Image {i}: {error}") from None
        flat_m.append(m.ravel())
        flat_a.append(a.ravel())
        shapes.append(m.shape[1:])
    return np.concatenate(flat_m), np.concatenate(flat_a), shapes
