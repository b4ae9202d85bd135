"""k-nearest-neighbour search in a memory bank: exact (chunked products) or approximate."""

import numpy as np

__all__ = ["NearestNeighborSearch"]

# Bytes of the distance block held at once by the exact search.
_BLOCK_BYTES = 64 << 20


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
    """

    def __init__(self, bank, method="exact", random_state=None):
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.method = method
        self.random_state = random_state
        self._bank_sq = np.einsum("ij,ij->i", self.bank, self.bank)
        self._index = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_index"] = None  # rebuilt on first use: cheap to rebuild, bulky and fragile to pickle
        return state

    def kneighbors(self, queries, n_neighbors):
        """Distances and indices of the ``n_neighbors`` nearest bank rows, nearest first.

        Returns
        -------
        distances : ndarray of shape (n_queries, k), float32
        indices : ndarray of shape (n_queries, k), int64
        """
        k = int(min(n_neighbors, self.bank.shape[0]))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        # pynndescent needs a graph with more entries than neighbours asked for.
        if self.method == "approximate" and self.bank.shape[0] > max(4 * k, 64):
            return self._approximate(queries, k)
        return self._exact(queries, k)

    def _exact(self, queries, k):
        n, d = queries.shape
        distances = np.empty((n, k), dtype=np.float32)
        indices = np.empty((n, k), dtype=np.int64)
        step = max(1, _BLOCK_BYTES // (4 * max(self.bank.shape[0], k * d, 1)))
        for start in range(0, n, step):
            block = queries[start : start + step]
            # The expanded form finds the candidates fast; it loses precision when distances
            # are small next to the norms, so the k winners are measured again directly.
            sq = block @ (-2.0 * self.bank.T)
            sq += self._bank_sq
            if k < sq.shape[1]:
                nearest = np.argpartition(sq, k - 1, axis=1)[:, :k]
            else:
                nearest = np.broadcast_to(np.arange(sq.shape[1]), sq.shape).copy()
            diff = self.bank[nearest] - block[:, None, :]
            exact_sq = np.einsum("mkd,mkd->mk", diff, diff)
            order = np.argsort(exact_sq, axis=1, kind="stable")
            indices[start : start + step] = np.take_along_axis(nearest, order, axis=1)
            distances[start : start + step] = np.sqrt(np.take_along_axis(exact_sq, order, axis=1))
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
