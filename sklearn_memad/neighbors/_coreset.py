"""Greedy k-center coreset selection (farthest-point sampling) with triangle-inequality pruning.

Each step adds the bank entry farthest from the entries chosen so far. A plain implementation
updates the distance of every bank entry to its nearest centre at every step. Here every entry
remembers its nearest centre and every centre the radius of its cluster; a new centre ``c`` can
only come closer to entries of a cluster ``j`` if ``dist(c, centre_j) < 2 * radius_j``, so
whole clusters are skipped. The selection is the same as the plain algorithm's.
"""

import numpy as np
from sklearn.utils import check_random_state

from .._progress import progress

__all__ = ["greedy_coreset", "project_for_coreset"]

# Above this fraction of reachable rows a full pass beats gathering them (measured here).
_GATHER_BELOW = 0.08


def project_for_coreset(features, projection_dim, random_state):
    """Seeded Gaussian projection used only to measure distances during selection."""
    features = np.asarray(features, dtype=np.float32)
    d = features.shape[1]
    if projection_dim is None or projection_dim >= d:
        return np.ascontiguousarray(features)
    rng = check_random_state(random_state)
    matrix = rng.standard_normal((d, projection_dim)).astype(np.float32)
    matrix /= np.float32(np.sqrt(projection_dim))
    out = np.empty((features.shape[0], projection_dim), dtype=np.float32)
    step = max(1, (1 << 24) // max(d, 1))  # ~64 MiB of input rows per product
    for start in range(0, features.shape[0], step):
        np.matmul(features[start : start + step], matrix, out=out[start : start + step])
    return out


def greedy_coreset(
    features, n_select, *, projection_dim=128, random_state=None, verbose=False
):
    """Select ``n_select`` rows of ``features`` by greedy k-center.

    Parameters
    ----------
    features : ndarray of shape (n_samples, d)
        The bank to thin.
    n_select : int
        Number of entries to keep (capped at ``n_samples``).
    projection_dim : int or None, default=128
        Distances are measured after a seeded Gaussian projection to this many dimensions
        (None or >= d: on the features themselves).
    random_state : int, RandomState instance or None, default=None
        Seeds the projection and the first centre.
    verbose : bool, default=False
        Show a progress bar.

    Returns
    -------
    indices : ndarray of shape (n_select,)
        Row indices of the selected entries, in selection order.
    """
    rng = check_random_state(random_state)
    n_samples = features.shape[0]
    n_select = int(min(max(n_select, 1), n_samples))
    if n_select == n_samples:
        return np.arange(n_samples)
    points = project_for_coreset(features, projection_dim, rng)
    sq_norms = np.einsum("ij,ij->i", points, points)

    selected = np.empty(n_select, dtype=np.intp)
    selected[0] = rng.randint(n_samples)
    centres = np.empty((n_select, points.shape[1]), dtype=np.float32)
    centres[0] = points[selected[0]]
    centre_sq = np.empty(n_select, dtype=np.float32)
    centre_sq[0] = sq_norms[selected[0]]

    nearest_sq = _sq_dist_to(points, sq_norms, centres[0], centre_sq[0])
    owner = np.zeros(n_samples, dtype=np.int32)
    radius = np.zeros(n_select, dtype=np.float32)
    radius[0] = np.sqrt(nearest_sq.max())

    for step in progress(range(1, n_select), verbose, "coreset"):
        new = int(np.argmax(nearest_sq))
        selected[step] = new
        centre = points[new]
        centres[step] = centre
        centre_sq[step] = sq_norms[new]

        between = np.sqrt(
            np.maximum(
                centre_sq[:step] - 2.0 * (centres[:step] @ centre) + centre_sq[step], 0.0
            )
        )
        reachable = between < 2.0 * radius[:step]
        member = reachable[owner]
        rows = np.flatnonzero(member)
        if rows.size == 0:
            continue
        if rows.size > _GATHER_BELOW * n_samples:
            # Copying many scattered rows costs more than one contiguous product over all.
            sq = _sq_dist_to(points, sq_norms, centre, centre_sq[step])[rows]
        else:
            sq = _sq_dist_to(points[rows], sq_norms[rows], centre, centre_sq[step])
        current = nearest_sq[rows]
        closer = sq < current
        np.minimum(current, sq, out=current)
        nearest_sq[rows] = current
        members_owner = owner[rows]
        members_owner[closer] = step
        owner[rows] = members_owner
        # Radii of the touched clusters shrink (and the new one starts): recompute them from
        # their members, which are all among ``rows``.
        new_radius_sq = np.zeros(step + 1, dtype=np.float32)
        np.maximum.at(new_radius_sq, members_owner, current)
        touched = np.append(reachable, True)
        radius[: step + 1][touched] = np.sqrt(new_radius_sq[touched])
    return selected


def _sq_dist_to(points, sq_norms, centre, centre_sq):
    sq = points @ (-2.0 * centre)
    sq += sq_norms
    sq += centre_sq
    return np.maximum(sq, 0.0, out=sq)
