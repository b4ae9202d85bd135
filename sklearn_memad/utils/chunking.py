"""Work split into chunks, so peak memory stays bounded on large banks and large test sets."""

from numbers import Integral

import numpy as np
from sklearn.utils import _safe_indexing, gen_batches
from sklearn.utils.validation import _num_samples

__all__ = [
    "WORK_BYTES",
    "check_chunk_size",
    "chunk_rows",
    "chunked",
    "sample_chunks",
    "sample_count",
]

#: Rows of intermediate work arrays are sized to stay near this many bytes.
WORK_BYTES = 128 << 20


def chunk_rows(bytes_per_row, budget=WORK_BYTES):
    """How many rows of ``bytes_per_row`` fit in the work budget (at least one)."""
    return int(max(1, budget // max(int(bytes_per_row), 1)))


def chunked(items, size):
    """Consecutive slices of ``items`` with at most ``size`` elements each."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def sample_count(X):
    """Samples on the first axis of array-like ``X``; None when it has none to split."""
    try:
        return _num_samples(X)
    except TypeError:  # a scalar, a generator: left whole, for the estimator to judge
        return None


def sample_chunks(X, size):
    """Consecutive chunks of at most ``size`` samples of ``X``, made one at a time.

    A generator, so that only the chunk being worked on exists when slicing copies (a
    DataFrame); array chunks are views.
    """
    for batch in gen_batches(_num_samples(X), size):
        yield _safe_indexing(X, batch)


def check_chunk_size(chunk_size, name="chunk_size"):
    """Return ``chunk_size`` as an int, or raise a ValueError naming it; a bool is refused."""
    valid = isinstance(chunk_size, Integral) and not isinstance(chunk_size, (bool, np.bool_))
    if not valid or chunk_size < 1:
        raise ValueError(
            f"{name} must be a positive integer (samples per chunk); got {chunk_size!r}."
        )
    return int(chunk_size)
