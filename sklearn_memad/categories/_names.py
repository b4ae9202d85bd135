"""Category names: one per image, str or int, checked before any work."""

import reprlib
from numbers import Integral

import numpy as np

__all__ = ["SHOWN", "category_labels", "is_category_name"]

#: How values are shown in messages: a long list or a long name is cut short.
SHOWN = reprlib.Repr()
SHOWN.maxlist = SHOWN.maxtuple = 10
SHOWN.maxstring = 60


def is_category_name(value):
    """True for one category name: a str, or an int that is not a bool."""
    return _is_name_type(type(value))


def _is_name_type(kind):
    """True for the type of a category name."""
    return issubclass(kind, (str, Integral)) and not issubclass(kind, (bool, np.bool_))


def category_labels(categories, n_samples, name="categories"):
    """``categories`` as a 1-D array of ``n_samples`` names: str, or int64.

    A single name stands for every sample. Anything else is refused, naming ``name``: a
    float, a bool or None among them (no silent rounding or string conversion), str mixed
    with int, or the wrong length.
    """
    if is_category_name(categories):
        value = categories.item() if isinstance(categories, np.generic) else categories
        return np.full(n_samples, value, dtype=None if isinstance(value, str) else np.int64)
    if categories is None:
        raise ValueError(
            f"{name} is required: the category (str or int) of each of the {n_samples} "
            "images, or one name for all of them."
        )
    array = _as_object_array(categories, name)
    if array.shape != (n_samples,):
        raise ValueError(
            f"{name} must hold one category per image, shape ({n_samples},); got shape "
            f"{array.shape}."
        )
    kinds = {type(value) for value in array}
    wrong = sorted({kind.__name__ for kind in kinds if not _is_name_type(kind)})
    if wrong:
        raise TypeError(
            f"{name} must hold category names, str or int; got values of type {wrong} "
            f"({SHOWN.repr(array.tolist())})."
        )
    strings = [issubclass(kind, str) for kind in kinds]
    if any(strings) and not all(strings):
        raise TypeError(
            f"{name} mixes str and int names ({SHOWN.repr(array.tolist())}); use one kind, "
            "so that 1 and '1' are not two categories by accident."
        )
    return np.array(array.tolist(), dtype=str if all(strings) else np.int64)


def _as_object_array(categories, name):
    """``categories`` as a NumPy array of Python objects, so no value is converted."""
    if isinstance(categories, np.ndarray) and categories.dtype.kind in "Uiu":
        return categories.astype(object)
    try:
        array = np.asarray(categories, dtype=object)
    except ValueError as exc:  # a ragged nested list
        raise ValueError(f"{name} is not a sequence of category names: {exc}") from None
    if array.ndim == 0:
        raise TypeError(
            f"{name} must be a sequence with one category (str or int) per image, or one "
            f"name for all of them; got {type(categories).__name__}."
        )
    return array
