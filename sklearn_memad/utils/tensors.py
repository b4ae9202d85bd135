"""NumPy arrays seen as torch tensors without a copy, and why hot loops run in torch.

The library's numerical hot loops (distances, products, reductions over patches) run in
torch, not NumPy, even on NumPy data. Both keep a pool of BLAS worker threads, and a thread
of one pool that has just finished spins for a while before it sleeps: alternating NumPy and
torch kernels makes each pool spin against the other on the same cores and slows both. So a
loop stays in one library, torch, and NumPy arrays enter it through :func:`read_tensor`.
"""

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
