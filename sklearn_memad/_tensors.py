"""numpy arrays seen as torch tensors without a copy, read-only arrays included."""

import warnings

import torch

__all__ = ["read_tensor"]


def read_tensor(array):
    """``torch.from_numpy(array)`` for an array that will only be read.

    torch warns when it wraps a read-only array (a memory map from ``joblib.load(...,
    mmap_mode="r")`` or from joblib's parallel workers), since writing to the tensor would be
    undefined. Callers of this function never write to it, so the warning is silenced rather
    than paid for with a copy of the data.
    """
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)
