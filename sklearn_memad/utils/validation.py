"""Input checks shared by every estimator: image batches, patch-feature grids, image sizes.

Every check raises a ``ValueError`` (or ``TypeError``) that names the argument, what was seen
and what was expected, before any state is touched, so a failed call never changes a fitted
estimator.
"""

import numbers
from contextlib import contextmanager

import numpy as np
import torch
from sklearn import get_config
from sklearn.utils import assert_all_finite
from sklearn.utils.validation import check_array, validate_data

from .tensors import read_tensor

__all__ = [
    "as_input_grids",
    "check_grid_shape",
    "check_grids",
    "as_image_array",
    "check_image_layout",
    "check_image_size",
    "check_image_values",
    "check_images",
    "check_objective_target",
    "restore_on_error",
]


@contextmanager
def restore_on_error(estimator):
    """Put back ``estimator``'s attributes if the block raises, so a failed fit changes nothing.

    Fitting code replaces attributes instead of mutating arrays in place, so a shallow copy of
    ``__dict__`` is a complete snapshot.
    """
    snapshot = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(snapshot)
        raise


def _describe(X):
    shape = getattr(X, "shape", None)
    return f"shape {shape}" if shape is not None else f"type {type(X).__name__}"


def as_input_grids(X, name="X"):
    """Return ``X`` as an array, refusing objects that are not array-like."""
    if isinstance(X, (str, bytes)) or X is None or isinstance(X, numbers.Number):
        raise TypeError(
            f"{name} must be an array of patch-feature grids (n, h, w, d) or of "
            f"feature vectors (n, d); got {type(X).__name__}."
        )
    return X


def check_grids(estimator, X, *, reset, name="X"):
    """Validate patch-feature grids for ``estimator``.

    Parameters
    ----------
    estimator : estimator instance
        Owner of ``n_features_in_`` (set when ``reset`` is True, checked otherwise).
    X : array-like of shape (n, h, w, d) or (n, d)
        Grids, or feature vectors read as ``(n, 1, 1, d)``.
    reset : bool
        True in ``fit``: record ``n_features_in_``; False afterwards: check it.
    name : str, default="X"
        Argument name used in error messages.

    Returns
    -------
    grids : ndarray of shape (n, h, w, d), float32, C-contiguous
    was_2d : bool
        True when ``X`` was given as ``(n, d)``; transformers then return 2-D output.
    """
    as_input_grids(X, name)
    _refuse_complex(X, name)
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        ndim = np.asarray(X, dtype=object).ndim if not hasattr(X, "iloc") else 2
    if ndim == 2:
        # scikit-learn's own path: feature names, n_features_in_, messages its checks expect.
        with np.errstate(over="ignore"):
            X2 = validate_data(
                estimator,
                X,
                reset=reset,
                dtype=np.float32,  # converted before its finiteness check, as the grids below
                ensure_min_samples=1,
            )
        grids = np.ascontiguousarray(X2, dtype=np.float32)
        return grids.reshape(grids.shape[0], 1, 1, grids.shape[1]), True
    if ndim != 4:
        hint = (
            " Reshape your data either using array.reshape(-1, 1) if it has a single feature "
            "or array.reshape(1, -1) if it is a single sample."
            if ndim < 2
            else ""
        )
        raise ValueError(
            f"{name} must be patch-feature grids of shape (n, h, w, d) or feature vectors "
            f"of shape (n, d); got an array with {ndim} dimension(s), {_describe(X)}.{hint}"
        )
    grids = check_array(
        X,
        allow_nd=True,
        dtype=[np.float32, np.float64],
        ensure_min_samples=1,
        ensure_all_finite=False,
        input_name=name,
    )
    # Checked once in float32, the models' dtype: a float64 value beyond its range is refused
    # rather than turned into infinity (so the cast's overflow warning would say nothing more).
    with np.errstate(over="ignore"):
        grids = np.ascontiguousarray(grids, dtype=np.float32)
    _check_finite(grids, name)
    if min(grids.shape[1:]) < 1:
        raise ValueError(f"{name} has an empty grid: shape {grids.shape}; expected h, w, d >= 1.")
    d = grids.shape[-1]
    if reset:
        estimator.n_features_in_ = d
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    else:
        expected = getattr(estimator, "n_features_in_", None)
        if expected is not None and d != expected:
            raise ValueError(
                f"{name} has {d} features (last axis d), but {type(estimator).__name__} "
                f"is expecting {expected} features as input."
            )
    return grids, False


def _refuse_complex(X, name):
    dtype = getattr(X, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind == "c":
        # scikit-learn's own message ("Complex data not supported") does not name the argument.
        raise ValueError(
            f"Complex data not supported: {name} has dtype {dtype}; expected real patch features."
        )


def _check_finite(array, name):
    """scikit-learn's finiteness check, with its first pass (one sum) summed by torch.

    The sum is the whole cost of the check on large grids, and torch's threads take it
    faster than numpy's. Only when the sum is not finite (a NaN or infinity, or an overflow)
    does scikit-learn look at every element, and raise with its usual message.
    """
    if get_config()["assume_finite"]:
        return
    with torch.inference_mode():
        if bool(torch.isfinite(read_tensor(array).sum())):
            return
    with np.errstate(over="ignore", invalid="ignore"):
        assert_all_finite(array, input_name=name)


def check_grid_shape(estimator, grids, fitted_shape, name="X"):
    """Refuse grids whose (h, w) differs from the one a position-wise model was fitted on."""
    if tuple(grids.shape[1:3]) != tuple(fitted_shape):
        raise ValueError(
            f"{name} has grids of (h, w) = {tuple(grids.shape[1:3])}, but "
            f"{type(estimator).__name__} models each position of the (h, w) = "
            f"{tuple(fitted_shape)} grid it was fitted on; resize the images the same way."
        )


def as_image_array(X, name="X"):
    """``X`` as an ndarray, without copying an array; a ragged list is refused.

    A list of images of different shapes cannot be one array: the message names the first
    image whose shape differs from the first one's.
    """
    as_input_grids(X, name)
    if isinstance(X, (list, tuple)) and len(X) > 1:
        first = np.shape(X[0]) if _is_array_like(X[0]) else None
        for i, image in enumerate(X[1:], start=1):
            shape = np.shape(image) if _is_array_like(image) else None
            if first is not None and shape is not None and shape != first:
                raise ValueError(
                    f"{name} is a list of images of different shapes: {name}[0] has shape "
                    f"{first} but {name}[{i}] has shape {shape}; resize them to one size "
                    "first (sklearn_memad.datasets.read_images does) or pass them separately."
                )
    try:
        return np.asarray(X)
    except ValueError as exc:  # e.g. a ragged nested list
        raise ValueError(
            f"{name} cannot be read as an array of images (n, H, W, 3): {exc}"
        ) from None


def _is_array_like(value):
    try:
        np.shape(value)
    except ValueError:
        return False
    return True


def check_image_layout(X, name="X"):
    """Check the shape and dtype of a batch of images, without converting its values.

    Parameters
    ----------
    X : array-like of shape (n, H, W, 3) or (n, H, W)
        uint8 in [0, 255] or float in [0, 1]; greyscale images are replicated to 3 channels.
    name : str, default="X"
        Argument name used in error messages.

    Returns
    -------
    images : ndarray of shape (n, H, W, 3) or (n, H, W)
        ``X`` as an array (no copy of an array); its values are checked by
        :func:`check_image_values`.
    """
    images = as_image_array(X, name)
    dtype = images.dtype
    if dtype.kind not in "biufc":  # bool, integers, floats, complex
        raise TypeError(
            f"{name} must be a numeric image array (uint8 in [0, 255] or float in [0, 1]); "
            f"got dtype {dtype}."
        )
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(
            f"{name} has complex dtype {dtype}; expected real images, uint8 in [0, 255] or "
            "float in [0, 1] (take np.abs or the real part yourself if that is what you mean)."
        )
    if dtype.kind in "biu" and dtype != np.uint8:
        raise TypeError(
            f"{name} has integer dtype {dtype}; expected uint8 in [0, 255] or float in [0, 1]."
        )
    if images.ndim == 3 and images.shape[-1] == 3:
        # (H, W, 3) would otherwise be read as H greyscale images of width W.
        raise ValueError(
            f"{name} has shape {images.shape}: one RGB image without the batch axis. Add the "
            f"batch axis, {name}[np.newaxis] (shape (1, {images.shape[0]}, "
            f"{images.shape[1]}, 3)); a batch of greyscale images 3 pixels wide is not "
            "accepted."
        )
    if images.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be images of shape (n, H, W, 3) or greyscale (n, H, W); got "
            f"an array with {images.ndim} dimension(s), shape {images.shape}."
        )
    if images.ndim == 4 and images.shape[-1] != 3:
        raise ValueError(
            f"{name} must have 3 colour channels on the last axis (n, H, W, 3); got "
            f"shape {images.shape} with {images.shape[-1]} channel(s)."
        )
    if min(images.shape[:3]) == 0:
        raise ValueError(f"{name} is empty: shape {images.shape}; expected n, H, W >= 1.")
    return images


def check_image_values(images, name="X"):
    """Refuse float images that hold NaN, infinity or values outside [0, 1].

    Reads the values without a float copy (a minimum and a maximum), so it costs no memory
    on large images. uint8 images need no check.
    """
    if images.dtype == np.uint8:
        return
    lo, hi = images.min(), images.max()  # NaN propagates through both
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or infinity; expected float images in [0, 1].")
    if lo < 0 or hi > 1:
        raise ValueError(
            f"{name} is float with values in [{float(lo):.4g}, {float(hi):.4g}]; expected "
            "float images in [0, 1] (or uint8 in [0, 255])."
        )


def check_images(X, name="X"):
    """Validate a batch of images and convert it to float32 in [0, 1].

    Parameters
    ----------
    X : array-like of shape (n, H, W, 3) or (n, H, W)
        uint8 in [0, 255] or float in [0, 1]; greyscale images are replicated to 3 channels.
    name : str, default="X"
        Argument name used in error messages.

    Returns
    -------
    images : ndarray of shape (n, H, W, 3), float32 in [0, 1]
    """
    images = check_image_layout(X, name)
    check_image_values(images, name)
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    return images.astype(np.float32, copy=False)


def check_image_size(image_size, name="image_size"):
    """Return None or ``(height, width)`` of positive ints; an int means a square."""
    if image_size is None:
        return None
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    elif (
        isinstance(image_size, (tuple, list))
        and len(image_size) == 2
        and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in image_size)
    ):
        size = (int(image_size[0]), int(image_size[1]))
    else:
        size = (0, 0)
    if min(size) < 1:
        raise ValueError(
            f"{name} must be None, a positive int (square images) or a (height, width) pair "
            f"of positive ints; got {image_size!r}."
        )
    return size


def check_objective_target(objective, target):
    """Refuse a ``target`` that does not fit the threshold ``objective``."""
    if objective == "f1":
        if target is not None:
            raise ValueError(
                f"target={target!r} is not used with objective='f1' (the threshold with the "
                "largest F1 is chosen); leave target=None, or choose objective='recall' or 'fpr'."
            )
    elif target is None:
        if objective == "recall":
            goal = "the fraction of defective"
        else:
            goal = "the largest fraction of normal"
        raise ValueError(
            f"objective={objective!r} needs a target: {goal} validation images to flag, a "
            f"float in [0, 1], e.g. target={0.95 if objective == 'recall' else 0.05}."
        )
