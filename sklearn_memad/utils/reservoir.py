"""A seeded reservoir: a uniform sample of a stream, kept in bounded memory."""

import numpy as np

__all__ = ["reservoir_indices"]


def reservoir_indices(n_held, n_new, n_seen, capacity, seed):
    """Which of ``n_held`` kept items followed by ``n_new`` new ones a reservoir keeps.

    Item ``t`` of the stream (counting from 1) enters a full reservoir with probability
    ``capacity / t``, in place of a random one, so the reservoir stays a uniform sample of
    every item seen. ``n_seen`` items came before the new ones; ``seed`` (with ``n_seen``)
    makes the draw repeatable.

    Returns
    -------
    index : ndarray of int
        Sorted positions in ``held + new`` of the items kept (at most ``capacity``).
    """
    total = n_held + n_new
    if total <= capacity:
        return np.arange(total)
    rng = np.random.RandomState((int(seed) + int(n_seen)) % np.iinfo(np.int32).max)
    filled = max(capacity - n_held, 0)
    index = np.arange(capacity)
    late = np.arange(n_held + filled, total)
    ranks = n_seen + filled + np.arange(1, late.size + 1)
    accepted = late[rng.random_sample(late.size) < capacity / ranks]
    for item, slot in zip(accepted, rng.randint(capacity, size=accepted.size)):
        index[slot] = item  # in stream order: a later item may replace an earlier one
    return np.sort(index)
