"""Greedy k-center coreset selection (farthest-point sampling) with triangle-inequality pruning.

Each step adds the bank entry farthest from the entries chosen so far. A plain implementation
computes the distance of every bank entry to the new centre at every step. Here every entry
remembers its nearest centre ``o`` and its distance to it; the new centre ``c`` can only come
closer if ``dist(c, o) < 2 * dist(x, o)``. That test needs one distance per centre, not per
entry, so only the few entries that pass it are measured. When the bound leaves too many
entries (high-dimensional features, early steps), the step measures every entry, and in the
same memory-bound pass also its distances to the rows likely to be chosen next; a later step
that picks one of them reuses them. The selection is the same as the plain algorithm's (up to
float rounding of near-ties).
"""

import numpy as np
import torch
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_limits

from ..utils import devices
from ..utils.devices import to_device, to_host
from ..utils.progress import progress

__all__ = ["greedy_coreset", "project_for_coreset"]

# Above this fraction of candidate rows a full pass beats gathering them.
_GATHER_BELOW = 0.2
# 4 (the squared factor 2 of the bound), widened for float32 rounding.
_SLACK = 4.0 * 1.001
# When a step must measure every row anyway, it also measures about this many of the next
# farthest rows: the pass is memory-bound, so the extra targets cost little, and a later step
# whose centre is among them needs no pass of its own.
_LOOK_AHEAD = 32
_BLOCK_ROWS = 256


def project_for_coreset(features, projection_dim, random_state, device=None):
    """Seeded Gaussian projection used only to measure distances during selection.

    The products run on ``device`` (a ``torch.device``) when it is not the CPU; the
    projected rows come back as a NumPy array.
    """
    features = np.asarray(features, dtype=np.float32)
    d = features.shape[1]
    if projection_dim is None or projection_dim >= d:
        return np.ascontiguousarray(features)
    rng = check_random_state(random_state)
    matrix = rng.standard_normal((d, projection_dim)).astype(np.float32)
    matrix /= np.float32(np.sqrt(projection_dim))
    out = np.empty((features.shape[0], projection_dim), dtype=np.float32)
    step = max(1, (1 << 24) // max(d, 1))  # ~64 MiB of input rows per product
    on_device = device is not None and devices.is_accelerator(device)
    if on_device:
        matrix = to_device(matrix, device)
    for start in range(0, features.shape[0], step):
        rows = features[start : start + step]
        if on_device:
            with torch.inference_mode():
                out[start : start + step] = to_host(to_device(rows, device) @ matrix)
        else:
            np.matmul(rows, matrix, out=out[start : start + step])
    return out


def greedy_coreset(
    features,
    n_select,
    *,
    projection_dim=64,
    random_state=None,
    verbose=False,
    return_cover=False,
    device=None,
):
    """Select ``n_select`` rows of ``features`` by greedy k-center.

    Parameters
    ----------
    features : ndarray of shape (n_samples, d)
        The bank to thin.
    n_select : int
        Number of entries to keep (capped at ``n_samples``).
    projection_dim : int or None, default=64
        Distances are measured after a seeded Gaussian projection to this many dimensions
        (None or >= d: on the features themselves).
    random_state : int, RandomState instance or None, default=None
        Seeds the projection and the first centre.
    verbose : bool, default=False
        Show a progress bar.
    return_cover : bool, default=False
        Also return which entry covers each row and how far it is.
    device : torch.device, default=None
        Where the selection runs. On the CPU (the default), the pruned selection above; on
        another device, the plain one (every row measured at every step, all on the device),
        which selects the same rows up to float rounding of near-ties.

    Returns
    -------
    indices : ndarray of shape (n_select,)
        Row indices of the selected entries, in selection order.
    owner : ndarray of shape (n_samples,), int32
        Only with ``return_cover``: position in ``indices`` of each row's nearest entry.
    cover_sq : ndarray of shape (n_samples,), float32
        Only with ``return_cover``: squared (projected) distance of each row to that entry.
    """
    rng = check_random_state(random_state)
    n_samples = features.shape[0]
    n_select = int(min(max(n_select, 1), n_samples))
    if n_select == n_samples:
        everything = np.arange(n_samples)
        if return_cover:
            return everything, everything.astype(np.int32), np.zeros(n_samples, np.float32)
        return everything
    points = project_for_coreset(features, projection_dim, rng, device)
    first = rng.randint(n_samples)
    if device is not None and devices.is_accelerator(device):
        selected, owner, nearest_sq = dense_greedy_coreset(
            to_device(points, device), n_select, first, verbose
        )
        if return_cover:
            return selected, owner, nearest_sq
        return selected
    sq_norms = np.einsum("ij,ij->i", points, points)

    selected = np.empty(n_select, dtype=np.intp)
    selected[0] = first
    centres = np.empty((n_select, points.shape[1]), dtype=np.float32)
    centres[0] = points[selected[0]]
    centre_sq = np.empty(n_select, dtype=np.float32)
    centre_sq[0] = sq_norms[selected[0]]

    nearest_sq = _sq_dist_to(points, sq_norms, centres[0], centre_sq[0])
    # The bound's right-hand side, kept up to date with nearest_sq rather than recomputed.
    reach_sq = _SLACK * nearest_sq
    owner = np.zeros(n_samples, dtype=np.intp)  # intp: indexing with it needs no conversion

    ahead = {}  # row -> its squared distances to every row, measured by an earlier pass
    pass_buffer = None  # one buffer for every full pass: fresh pages cost a pass of their own
    # numpy's BLAS runs single-threaded in the loop: its threads would spin after every small
    # product and starve torch's, which does the large passes (see sklearn_memad.utils.tensors).
    with threadpool_limits(limits=1, user_api="blas"):
        for step in progress(range(1, n_select), verbose, "coreset"):
            new = int(np.argmax(nearest_sq))
            selected[step] = new
            centre = points[new]
            centres[step] = centre
            centre_sq[step] = sq_norms[new]

            sq = ahead.pop(new, None)
            if sq is None:
                between_sq = centres[:step] @ (-2.0 * centre)
                between_sq += centre_sq[:step]
                between_sq += centre_sq[step]
                # Triangle inequality: |c - x| >= |c - o| - |x - o| for x's nearest centre o, so
                # the new centre c can only come closer to x if |c - o| < 2 |x - o|. The slack
                # absorbs float32 rounding so no candidate is lost.
                rows = np.flatnonzero(between_sq[owner] < reach_sq)
                if rows.size == 0:
                    continue
                if rows.size <= _GATHER_BELOW * n_samples:
                    # torch gathers the rows faster than numpy.
                    sq = _sq_dist_to_rows(points, sq_norms, rows, centre, centre_sq[step])
                    closer = sq < nearest_sq[rows]
                    moved = rows[closer]
                    nearest_sq[moved] = sq[closer]
                    reach_sq[moved] = _SLACK * sq[closer]
                    owner[moved] = step
                    continue
                # Copying many scattered rows costs more than one contiguous pass over all.
                if pass_buffer is None:
                    pass_buffer = torch.empty((_n_ahead(n_samples) + 1, n_samples))
                ahead = _measure_ahead(points, sq_norms, nearest_sq, new, pass_buffer)
                sq = ahead.pop(new)
            moved = np.flatnonzero(sq < nearest_sq)
            # A full pass leaves rounding negatives unclamped; only the rows that move need it.
            moved_sq = np.maximum(sq[moved], 0.0)
            nearest_sq[moved] = moved_sq
            reach_sq[moved] = _SLACK * moved_sq
            owner[moved] = step
    if return_cover:
        return selected, owner.astype(np.int32), nearest_sq
    return selected


def dense_greedy_coreset(points, n_select, first, verbose=False):
    """Greedy k-center measuring every row at every step, all in torch on ``points``' device.

    The steps are queued without a round trip to the host (the farthest row is found and
    used on the device), so an accelerator runs them back to back: on one, this beats the
    pruned selection, whose bookkeeping is what makes it fast on a CPU.

    Parameters
    ----------
    points : torch.Tensor of shape (n_samples, d), float32
    n_select : int
        Number of entries to keep, at most ``n_samples``.
    first : int
        Row of the first entry.
    verbose : bool, default=False
        Show a progress bar.

    Returns
    -------
    indices : ndarray of shape (n_select,)
        Selected rows, in selection order.
    owner : ndarray of shape (n_samples,), int32
        Position in ``indices`` of each row's nearest entry.
    cover_sq : ndarray of shape (n_samples,), float32
        Squared distance of each row to that entry.
    """
    device = points.device
    with torch.inference_mode():
        sq_norms = points.square().sum(dim=1)
        selected = torch.empty(n_select, dtype=torch.long, device=device)
        owner = torch.zeros(points.shape[0], dtype=torch.int32, device=device)
        new = torch.tensor([first], device=device)
        nearest_sq = torch.full_like(sq_norms, torch.inf)
        for step in progress(range(n_select), verbose, "coreset"):
            # index_select with a one-element tensor: indexing by a tensor scalar would read
            # it back to the host and wait for the device at every step.
            selected[step : step + 1] = new
            centre = torch.index_select(points, 0, new)[0]
            sq = torch.mv(points, centre).mul_(-2.0).add_(sq_norms)
            sq.add_(torch.index_select(sq_norms, 0, new)).clamp_(min=0.0)
            closer = sq < nearest_sq
            torch.where(closer, sq, nearest_sq, out=nearest_sq)
            owner.masked_fill_(closer, step)
            new = torch.argmax(nearest_sq).view(1)
        return to_host(selected).astype(np.intp), to_host(owner), to_host(nearest_sq)


def _n_ahead(n_rows):
    """Look-ahead targets per full pass: at most 128 MiB of distances."""
    return min(_LOOK_AHEAD, max(1, (128 << 20) // (4 * n_rows) - 1))


def _measure_ahead(points, sq_norms, nearest_sq, new, buffer):
    """Squared distances of every row to ``new`` and to rows likely to be the next centres.

    The candidates are the farthest rows of the blocks of rows holding the largest
    distances: nearly the farthest rows overall, found without partitioning every row. Which
    rows they are only decides how often a later step finds its distances ready. The
    distances are written into ``buffer``, whose rows the returned dict views: they are valid
    until the next call.
    """
    n_rows = points.shape[0]
    n_ahead = buffer.shape[0] - 1
    targets = [new]
    n_blocks = n_rows // _BLOCK_ROWS
    if n_blocks > n_ahead:
        blocks = nearest_sq[: n_blocks * _BLOCK_ROWS].reshape(n_blocks, _BLOCK_ROWS)
        top = np.argpartition(blocks.max(axis=1), -n_ahead)[-n_ahead:]
        targets.extend((top * _BLOCK_ROWS + blocks[top].argmax(axis=1)).tolist())
    targets = np.unique(np.array(targets, dtype=np.intp))
    # One product reads the points once for all targets, and adds both norms as it goes:
    # |t|^2 - 2 t.x by addmm, then |x|^2 in place (torch's product here is faster than
    # numpy's, and each separate addition would be another pass over the distances).
    rows = torch.from_numpy(targets)
    every = torch.from_numpy(points)
    norms = torch.from_numpy(sq_norms)
    sq = buffer[: targets.size]
    with torch.inference_mode():
        torch.addmm(norms[rows, None], every[rows], every.T, beta=1.0, alpha=-2.0, out=sq)
        sq += norms
    sq = sq.numpy()
    return dict(zip(targets.tolist(), sq))


def _sq_dist_to(points, sq_norms, centre, centre_sq):
    sq = points @ (-2.0 * centre)
    sq += sq_norms
    sq += centre_sq
    return np.maximum(sq, 0.0, out=sq)


def _sq_dist_to_rows(points, sq_norms, rows, centre, centre_sq):
    with torch.inference_mode():
        gathered = torch.from_numpy(points).index_select(0, torch.from_numpy(rows))
        sq = torch.mv(gathered, torch.from_numpy(-2.0 * centre)).numpy()
    sq += sq_norms[rows]
    sq += centre_sq
    return np.maximum(sq, 0.0, out=sq)
