"""Merge-and-reduce for k-center coresets: a union of coresets thinned again, radii kept.

Every coreset entry stands for training patches within its cover radius. A union of
coresets of disjoint data is a coreset of all of it; the reduction thins it by the same
farthest-point rule a single fit applies to the patches, over the union's entries. Each kept
entry's radius then becomes the largest distance-plus-radius of the entries it now stands
for, so the radii still bound the distance of every original patch to the coreset.

Choosing by distance plus radius instead (greedy k-center over balls) would minimise that
bound, but it spends entries on large balls next to kept ones rather than on the regions
the union has sparsely covered, and the coreset then ranks images worse.
"""

import numpy as np
import torch

__all__ = ["cover_radii", "reduce_coreset"]


def cover_radii(owner, cover_sq, n_entries):
    """Each entry's radius: the largest distance of the rows it covers (``greedy_coreset``'s
    ``owner`` and squared ``cover_sq``)."""
    radii = np.zeros(n_entries, dtype=np.float32)
    np.maximum.at(radii, owner, np.sqrt(np.maximum(cover_sq, 0.0)).astype(np.float32))
    return radii


def reduce_coreset(points, radii, n_select):
    """Keep ``n_select`` of the entries ``points`` by farthest-point selection; carry radii.

    Parameters
    ----------
    points : ndarray of shape (n, d), float32
        Entry positions (in the space the radii are measured in).
    radii : ndarray of shape (n,)
        Cover radius of each entry.
    n_select : int
        Number of entries to keep.

    Returns
    -------
    selected : ndarray of shape (n_select,)
        Indices of the kept entries, in selection order.
    new_radii : ndarray of shape (n_select,), float32
        Each kept entry's radius: the largest reach of the entries it now stands for.
    """
    n = points.shape[0]
    radii = np.asarray(radii, dtype=np.float32)
    if n_select >= n:
        return np.arange(n), radii.copy()
    every = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    own = torch.from_numpy(radii)
    sq_norms = every.square().sum(dim=1)
    nearest = torch.full((n,), torch.inf)
    owner = torch.zeros(n, dtype=torch.long)
    selected = np.empty(n_select, dtype=np.intp)
    taken = torch.zeros(n, dtype=torch.bool)
    current = int(torch.argmax(own))  # the entry standing for the widest spread of patches
    with torch.inference_mode():
        for step in range(n_select):
            selected[step] = current
            taken[current] = True
            sq = sq_norms - 2.0 * (every @ every[current]) + sq_norms[current]
            distance = sq.clamp_(min=0.0).sqrt_()
            closer = distance < nearest
            nearest = torch.where(closer, distance, nearest)
            owner[closer] = step
            current = int(torch.argmax(nearest.masked_fill(taken, -torch.inf)))
        nearest[taken] = 0.0
        new_radii = torch.zeros(n_select).scatter_reduce_(
            0, owner, nearest + own, reduce="amax", include_self=True
        )
    return selected, new_radii.numpy()
