"""k-nearest-neighbour search in a memory bank: exact (chunked products) or approximate."""

import numpy as np
import torch

from ..utils import devices
from ..utils.devices import to_device, to_host

__all__ = ["NearestNeighborSearch"]

# Bytes of the distance block held at once by the exact search: small enough to stay near the
# cache.
_BLOCK_BYTES = 8 << 20
# On an accelerator, whose memory is wide and whose launches cost more than a cache miss.
_DEVICE_BLOCK_BYTES = 256 << 20


class NearestNeighborSearch:
    """Euclidean k-NN over a fixed bank of vectors.

    ``"exact"`` computes squared distances as ``|q|^2 - 2 q.b + |b|^2`` in blocks of queries, so
    peak memory stays near ``_BLOCK_BYTES`` whatever the number of queries. ``"approximate"``
    uses a pynndescent graph built once, lazily, and never pickled.

    Parameters
    ----------
    bank : ndarray of shape (n_bank, d), float32
    method : {"exact", "approximate"}
    random_state : int or None
        Seed of the approximate index.
    device : torch.device or None
        Where the exact search runs (the CPU by default); the bank is copied there once.
        The approximate search runs on the CPU.
    """

    def __init__(self, bank, method="exact", random_state=None, device=None):
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.method = method
        self.random_state = random_state
        self.device = torch.device("cpu") if device is None else device
        self._bank_sq = np.einsum("ij,ij->i", self.bank, self.bank)
        self._index = None
        self._on_device = None

    def __getstate__(self):
        state = self.__dict__.copy()
        # Rebuilt on first use: the index is cheap to rebuild, bulky and fragile to pickle,
        # and a device copy of the bank belongs to this process.
        state["_index"] = None
        state["_on_device"] = None
        return state

    def _device_bank(self):
        """The bank and its squared norms on the search's device, copied there once."""
        if self._on_device is None:
            self._on_device = (
                to_device(self.bank, self.device),
                to_device(self._bank_sq, self.device),
            )
        return self._on_device

    def kneighbors(self, queries, n_neighbors, exclude=None):
        """Distances and indices of the ``n_neighbors`` nearest bank rows, nearest first.

        Parameters
        ----------
        queries : ndarray of shape (n_queries, d)
        n_neighbors : int
            Capped at the bank size.
        exclude : tuple of two int arrays, default=None
            ``(query_groups, bank_groups)``: a query never gets a bank row of its own group
            (e.g. the patches of one image, for leave-one-image-out scores). Missing
            neighbours (fewer rows outside the group than asked) have distance ``inf``.

        Returns
        -------
        distances : ndarray of shape (n_queries, k), float32
        indices : ndarray of shape (n_queries, k), int64
        """
        k = int(min(n_neighbors, self.bank.shape[0]))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        # pynndescent needs a graph with more entries than neighbours asked for.
        if self.method == "approximate" and self.bank.shape[0] > max(4 * k, 64):
            if exclude is None:
                return self._approximate(queries, k)
            return self._approximate_excluding(queries, k, *exclude)
        return self._exact(queries, k, exclude)

    def _approximate_excluding(self, queries, k, query_groups, bank_groups):
        # Asking for k plus the most rows any group holds leaves k outside the query's group.
        n_ask = int(min(k + np.bincount(bank_groups).max(), self.bank.shape[0]))
        distances, indices = self._approximate(queries, n_ask)
        other = bank_groups[indices] != np.asarray(query_groups)[:, None]
        # Stable sort on "own group" moves the kept neighbours to the front, in order.
        order = np.argsort(~other, axis=1, kind="stable")[:, :k]
        distances = np.take_along_axis(np.where(other, distances, np.inf), order, axis=1)
        return distances.astype(np.float32), np.take_along_axis(indices, order, axis=1)

    def _exact(self, queries, k, exclude=None):
        # All in torch: see sklearn_memad.utils.tensors; torch's top-k also beats
        # np.argpartition.
        n, d = queries.shape
        distances = np.empty((n, k), dtype=np.float32)
        indices = np.empty((n, k), dtype=np.int64)
        device = self.device
        bank, bank_sq = self._device_bank()
        step = max(1, _BLOCK_BYTES // (4 * max(self.bank.shape[0], k * d, 1)))
        if devices.is_accelerator(device):
            # An accelerator wants fewer, larger products; the block stays bounded.
            step = max(step, _DEVICE_BLOCK_BYTES // (4 * max(self.bank.shape[0], k * d, 1)))
        if exclude is not None:
            excluded = _GroupMembers(*exclude)
        with torch.inference_mode():
            # One buffer for every block: fresh pages would add their first-touch cost to each.
            buffer = torch.empty(
                (min(step, n), self.bank.shape[0]), dtype=torch.float32, device=device
            )
            for start in range(0, n, step):
                block = to_device(queries[start : start + step], device)
                # The expanded form finds the candidates fast; it loses precision when
                # distances are small next to the norms, so the k winners are measured again.
                sq = torch.addmm(bank_sq, block, bank.T, alpha=-2.0, out=buffer[: len(block)])
                if exclude is not None:
                    rows, cols = excluded.pairs(start, start + block.shape[0])
                    sq.index_put_(
                        (rows.to(device), cols.to(device)),
                        torch.tensor(float("inf"), device=device),
                    )
                if k == 1:  # min with indices is faster than argmin here
                    nearest = sq.min(dim=1, keepdim=True).indices
                else:
                    _, nearest = torch.topk(sq, k, dim=1, largest=False, sorted=False)
                exact_sq = _exact_sq(bank, block, nearest)
                if exclude is not None:
                    exact_sq.masked_fill_(torch.isinf(sq.gather(1, nearest)), float("inf"))
                exact_sq, order = torch.sort(exact_sq, dim=1, stable=True)
                indices[start : start + step] = to_host(nearest.gather(1, order))
                distances[start : start + step] = to_host(exact_sq.sqrt_())
        return distances, indices

    def _approximate(self, queries, k):
        if self._index is None:
            from pynndescent import NNDescent

            self._index = NNDescent(
                self.bank,
                metric="euclidean",
                n_neighbors=min(30, self.bank.shape[0] - 1),
                random_state=self.random_state,
                n_jobs=1,
                compressed=True,
            )
            self._index.prepare()
        indices, distances = self._index.query(queries, k=k)
        return distances.astype(np.float32), indices.astype(np.int64)


class _GroupMembers:
    """For each query, the bank rows of its own group, as (row, column) pairs.

    A query excludes only its group's few rows (an image's coreset entries), so writing inf
    at those pairs replaces a dense (queries x bank) comparison of group labels.
    """

    def __init__(self, query_groups, bank_groups):
        self.query_groups = np.asarray(query_groups, dtype=np.intp)
        bank_groups = np.asarray(bank_groups, dtype=np.intp)
        n_groups = int(max(self.query_groups.max(initial=-1), bank_groups.max(initial=-1))) + 1
        self.members = np.argsort(bank_groups, kind="stable")
        self.counts = np.bincount(bank_groups, minlength=n_groups)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def pairs(self, start, stop):
        groups = self.query_groups[start:stop]
        counts = self.counts[groups]
        total = int(counts.sum())
        rows = np.repeat(np.arange(stop - start), counts)
        # Position of each pair within its group's run of members, then the member itself.
        offsets = np.repeat(self.starts[groups] - np.cumsum(counts) + counts, counts)
        cols = self.members[offsets + np.arange(total)]
        return torch.from_numpy(rows), torch.from_numpy(cols)


def _exact_sq(bank, queries, nearest):
    """Squared distances of each query to its ``nearest`` bank rows, from the differences.

    In slices of queries small enough for the differences to stay in cache, gathered with
    ``index_select``: one advanced-indexing gather of all of them is memory-bound and takes
    longer than the distance product itself.
    """
    k, d = nearest.shape[1], bank.shape[1]
    budget = (64 << 20) if devices.is_accelerator(bank.device) else (4 << 20)
    step = max(1, budget // (4 * k * d))
    out = torch.empty(nearest.shape, dtype=bank.dtype, device=bank.device)
    for start in range(0, queries.shape[0], step):
        rows = slice(start, start + step)
        diff = torch.index_select(bank, 0, nearest[rows].reshape(-1)).view(-1, k, d)
        diff.sub_(queries[rows, None, :])
        torch.sum(diff.square_(), dim=2, out=out[rows])
    return out
