"""PatchCore: a greedy coreset of all training patches, k-NN distance as the patch score."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _deprecate_positional_args

from ..defaults import (
    AUTO_CORESET_MAX_RATIO,
    AUTO_CORESET_SIZE,
    BORDER,
    CONTAMINATION,
    CORESET_RATIO,
    N_NEIGHBORS,
    TOP_K,
)
from ..neighbors import (
    NearestNeighborSearch,
    cover_radii,
    greedy_coreset,
    project_for_coreset,
    reduce_coreset,
)
from ..utils.chunking import chunk_rows
from ..utils.reservoir import reservoir_indices
from ._base import BaseMemoryDetector, image_offsets

__all__ = ["PatchCoreDetector", "auto_coreset_ratio"]

# Entries dropped by reductions, kept as candidate replacements when calibrating.
_SPARE_SET = ("_spare_entries", "_spare_sources", "_spares_seen")
# Replacements drawn from too few candidates cover an image's patches worse than a refit
# would, so the threshold flags too few new normal images; this many per coreset entry
# bring it close to what fit's whole bank gives.
_SPARES_PER_ENTRY = 8


def auto_coreset_ratio(n_patches):
    """Coreset ratio for ``n_patches`` training patches: 10 %, or about 2,500 entries if fewer.

    Greedy selection makes one pass over all training patches per entry it keeps, so its cost
    grows with ``n_patches`` times the coreset size; a bounded size keeps large training sets
    affordable on a CPU. That is close to the 1 % of the PatchCore paper for a typical MVTec
    AD category (about 200 images of 28 x 28 patches), and small training sets keep 10 % of
    their patches. ``PatchCoreDetector(coreset_ratio="auto")`` uses it.

    Parameters
    ----------
    n_patches : int
        Number of training patches (images x grid height x grid width).

    Returns
    -------
    ratio : float

    Examples
    --------
    >>> from sklearn_memad.pipelines import auto_coreset_ratio
    >>> auto_coreset_ratio(64 * 16 * 16), auto_coreset_ratio(200 * 32 * 32)
    (0.1, 0.01220703125)
    """
    return float(min(AUTO_CORESET_MAX_RATIO, AUTO_CORESET_SIZE / max(int(n_patches), 1)))


class PatchCoreDetector(BaseMemoryDetector):
    """Coreset memory of patch features (PatchCore, Roth et al. 2022).

    All training patches, from every position, form one bank; greedy k-center selection keeps a
    fraction ``coreset_ratio`` of it that covers the rest (distances measured on a seeded random
    projection, full features kept). A patch's score is its mean Euclidean distance to the
    ``n_neighbors`` nearest coreset entries. The memory is position-free, so grids of another
    ``(h, w)`` than the training ones can be scored.

    Parameters
    ----------
    coreset_ratio : float in (0, 1] or "auto", default="auto"
        Fraction of the training patches kept (at least one entry). "auto" keeps 10 % of
        them, or about 2,500 entries if that is fewer (see :func:`auto_coreset_ratio`).
    n_neighbors : int, default=1
        Neighbours averaged into a patch score; capped at the coreset size. 1 is the
        PatchCore paper's patch score (distance to the nearest entry), and the fastest.
    search : {"exact", "approximate"}, default="exact"
        Exact search by chunked matrix products, or approximate search with pynndescent.
    projection_dim : int or None, default=64
        Dimension of the random projection used to measure distances during coreset
        selection (None: the features themselves). Selection time is proportional to it, and
        64 covers the training patches about as well as the PatchCore paper's 128.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected fraction of anomalies among new normal-looking images; sets ``offset_`` from
        the out-of-sample scores of the training images. "auto" places the threshold at
        Tukey's upper fence (Q3 + 1.5 IQR) of their anomaly scores.
    top_k : int, default=30
        Image anomaly score: the mean of the ``top_k`` largest patch scores (capped at the
        grid's size), or the largest one (1). A defect spans several patches while a
        single odd patch of a normal image is often noise: the mean of the largest 30 ranks
        images better than the largest alone, on every data set measured.
    border : int, default=1
        Outer rings of patches left out of the image score; in :meth:`score_patches` (and
        so in the maps) each repeats its nearest inner patch's score. Patches at the grid's
        edge see the image's edge and the backbone's padding instead of neighbours, and are
        the highest-scoring patches of normal images far more often than chance. 0 keeps
        every patch; a grid with no inner patch left (``h`` or ``w`` at most
        ``2 * border``) is taken whole.
    random_state : int, RandomState instance or None, default=None
        Seeds the projection, the first coreset entry and the approximate index.
    keep_calibration : bool, default=False
        Keep, after :meth:`fit` and in model files, what keeps ``offset_`` calibrated when
        the memory grows (:meth:`partial_fit`) or merges: a seeded reservoir of up to
        ``sklearn_memad.defaults.CALIBRATION_IMAGES`` training grids and a sample of the
        entries that reductions dropped. A detector built by :meth:`partial_fit` holds them
        in any case until it is pickled. Without them, a loaded model starts its reservoir
        again from the images added after loading.
    verbose : bool, default=False
        Show a progress bar during coreset selection.
    device : str, default="cpu"
        Torch device of coreset selection and exact nearest-neighbour search: ``"cpu"``,
        ``"cuda"``, ``"cuda:<index>"`` or ``"auto"`` (CUDA when available). The fitted
        attributes stay NumPy arrays; the coreset is copied to the device once, on first use.
        ``search="approximate"`` runs on the CPU.

    Attributes
    ----------
    coreset_ : ndarray of shape (n_coreset, d), float32
        The memory.
    coreset_source_ : ndarray of shape (n_coreset,)
        Index of the training image each coreset entry comes from, in the order the images
        were given to :meth:`fit` or :meth:`partial_fit` (used for calibration and
        explanations).
    coreset_position_ : ndarray of shape (n_coreset, 2), int32
        Grid position (row, column) of each coreset entry in its training image.
    offset_ : float
        Threshold on :meth:`score_samples`: ``decision_function = score_samples - offset_``.
    train_scores_ : ndarray of shape (n_train,)
        Leave-one-image-out :meth:`score_samples` of the training images; after
        :meth:`partial_fit` or merging, those of a seeded reservoir of at most
        ``sklearn_memad.defaults.CALIBRATION_IMAGES`` of them (a uniform sample of all),
        each left out of the whole memory.
    grid_shape_ : tuple of int
        ``(h, w)`` of the training grids.
    memory_bytes_ : int
        Bytes of the fitted memory (the coreset).
    cover_radius_ : ndarray of shape (n_coreset,), float32
        How far from each entry the training patches it stands for lie at most, measured
        as in the selection (on the projected features when ``projection_dim`` is set).
        Merging and :meth:`partial_fit` carry these bounds, so ``cover_radius_.max()``
        bounds the distance of every training patch to the coreset.
    n_patches_seen_ : int
        Number of training patches the coreset was selected from.
    n_samples_seen_ : int
        Number of training images.
    index_seed_ : int
        Seed of the approximate search's index (``search="approximate"``), drawn in ``fit``
        from ``random_state``, so a reloaded model rebuilds the same index.
    n_features_in_ : int
        Number of features per patch ``d``.

    See Also
    --------
    PaDiMDetector : Per-position Gaussians.
    DFKDEDetector : Per-position kernel density.

    Notes
    -----
    ``offset_`` comes from leave-one-image-out scores against the single coreset: each
    training patch is scored against the coreset entries taken from other images, so
    calibration needs no second coreset. Removing an image's entries alone would leave holes
    that a coreset built without the image would have filled (training images would look
    worse than new normal ones, and ``contamination=c`` would flag fewer than a fraction ``c``
    of new normal images); so, for each image, as many replacements as it had entries are
    chosen, farthest first, among the other images' patches its entries covered. (With a
    coreset drawn from one image only, there is no other image and those patches keep their
    in-sample score.)

    After :meth:`partial_fit` or merging, the whole bank is gone: the same rule leaves out
    each image of a reservoir of training images (see :meth:`partial_fit`), choosing its
    replacements among the reservoir's patches and a sample of the entries that reductions
    dropped.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import PatchCoreDetector
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(20, 4, 4, 8)).astype(np.float32)
    >>> test = rng.normal(size=(3, 4, 4, 8)).astype(np.float32)
    >>> test[0, 1, 2] += 10.0  # one abnormal patch
    >>> detector = PatchCoreDetector(coreset_ratio=0.25, random_state=0).fit(train)
    >>> detector.coreset_.shape
    (80, 8)
    >>> detector.predict(test)
    array([-1,  1,  1])
    """

    _models_positions = False
    # One image cannot be left out of a memory of its own patches to calibrate.
    _min_images = 2

    _parameter_constraints: dict = {
        **BaseMemoryDetector._parameter_constraints,
        "coreset_ratio": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="right")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "search": [StrOptions({"exact", "approximate"})],
        "projection_dim": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": ["random_state"],
        "keep_calibration": ["boolean"],
        "verbose": ["verbose"],
    }

    @_deprecate_positional_args(version="0.3")
    def __init__(
        self,
        *,
        coreset_ratio=CORESET_RATIO,
        n_neighbors=N_NEIGHBORS,
        search="exact",
        projection_dim=64,
        contamination=CONTAMINATION,
        top_k=TOP_K,
        border=BORDER["patchcore"],
        random_state=None,
        keep_calibration=False,
        verbose=False,
        device="cpu",
    ):
        self.coreset_ratio = coreset_ratio
        self.n_neighbors = n_neighbors
        self.search = search
        self.projection_dim = projection_dim
        self.contamination = contamination
        self.top_k = top_k
        self.border = border
        self.random_state = random_state
        self.keep_calibration = keep_calibration
        self.verbose = verbose
        self.device = device

    def _fit_memory(self, grids):
        n, h, w, d = grids.shape
        for name in (*self._calibration_set, *_SPARE_SET):
            self.__dict__.pop(name, None)
        rng = check_random_state(self.random_state)
        entries, sources, positions, radii, selection = self._select(
            grids.reshape(-1, d), (h, w), rng
        )
        self.coreset_ = entries
        self.coreset_source_ = sources
        self.coreset_position_ = positions
        self.cover_radius_ = radii
        self.n_patches_seen_ = n * h * w
        self.index_seed_ = int(rng.randint(np.iinfo(np.int32).max))
        self.memory_bytes_ = int(self.coreset_.nbytes)
        # Kept only until calibration, which reads how the selection covered the bank.
        self._selection = selection
        if self.keep_calibration:
            self._keep_for_calibration(grids, first_image=0)

    def _start_memory(self, grids):
        self._fit_memory(grids)
        if "_calibration_grids" not in self.__dict__:
            self._keep_for_calibration(grids, first_image=0)

    def _target_size(self, n_patches):
        ratio = self.coreset_ratio
        if ratio == "auto":
            ratio = auto_coreset_ratio(n_patches)
        return int(np.ceil(ratio * n_patches))

    def _select(self, bank, grid_shape, rng):
        """The coreset of one bank of grids of ``grid_shape``: entries, their source images
        and grid positions, radii, and the selection."""
        device = self._device()
        points = project_for_coreset(bank, self.projection_dim, rng, device)
        selected, owner, cover_sq = greedy_coreset(
            points,
            self._target_size(bank.shape[0]),
            projection_dim=None,
            random_state=rng,
            verbose=self.verbose,
            return_cover=True,
            device=device,
        )
        entries = np.ascontiguousarray(bank[selected])
        h, w = grid_shape
        sources = (selected // (h * w)).astype(np.int32)
        positions = np.stack(np.divmod(selected % (h * w), w), axis=1).astype(np.int32)
        radii = cover_radii(owner, cover_sq, selected.size)
        return entries, sources, positions, radii, (points, selected, owner)

    def _grow_memory(self, grids):
        n, h, w, d = grids.shape
        rng = check_random_state(self.random_state)
        entries, sources, positions, radii, _ = self._select(grids.reshape(-1, d), (h, w), rng)
        self._reduce(
            [self.coreset_, entries],
            [self.coreset_source_, sources + self.n_samples_seen_],
            [getattr(self, "coreset_position_", None), positions],
            [getattr(self, "cover_radius_", None), radii],
            self.n_patches_seen_ + n * h * w,
        )

    def _recalibrate(self, grids, first_image):
        self._keep_for_calibration(grids, first_image)
        self._calibrate_on_reservoir()

    def _merge_memories(self, detectors, random_state):
        offsets = image_offsets(detectors)
        rng = check_random_state(random_state)
        spares = [vars(detector).get("_spare_entries") for detector in detectors]
        if all(spare is not None for spare in spares):
            self._spare_entries = np.concatenate(spares)
            self._spare_sources = np.concatenate(
                [d._spare_sources + offset for d, offset in zip(detectors, offsets)]
            )
            self._spares_seen = sum(detector._spares_seen for detector in detectors)
        self._reduce(
            [detector.coreset_ for detector in detectors],
            [detector.coreset_source_ + offset for detector, offset in zip(detectors, offsets)],
            [getattr(detector, "coreset_position_", None) for detector in detectors],
            [getattr(detector, "cover_radius_", None) for detector in detectors],
            sum(detector.n_patches_seen_ for detector in detectors),
        )
        self.grid_shape_ = detectors[0].grid_shape_
        self.index_seed_ = int(rng.randint(np.iinfo(np.int32).max))

    def _calibrate_merged(self, detectors):
        if not self._merged_calibration_set(detectors):
            super()._calibrate_merged(detectors)
            return
        self._calibrate_on_reservoir()

    def _reduce(self, entries, sources, positions, radii, n_patches):
        """Keep the union of coresets, thinned to the target size of ``n_patches`` patches."""
        if any(radius is None for radius in radii):
            raise ValueError(
                "This PatchCoreDetector was fitted by an earlier version of sklearn_memad, "
                "which kept no cover radii; fit it again with this version to grow or merge it."
            )
        entries = np.concatenate(entries)
        sources = np.concatenate(sources).astype(np.int32)
        radii = np.concatenate(radii)
        # The radii were measured in the selection's projection: the same seed gives it.
        projection = check_random_state(self.random_state)
        points = project_for_coreset(entries, self.projection_dim, projection)
        size = self._target_size(n_patches)
        kept, radii = reduce_coreset(points, radii, size)
        dropped = np.ones(entries.shape[0], dtype=bool)
        dropped[kept] = False
        self._keep_spares(entries[dropped], sources[dropped], capacity=_SPARES_PER_ENTRY * size)
        self.coreset_ = np.ascontiguousarray(entries[kept])
        self.coreset_source_ = sources[kept]
        if any(position is None for position in positions):  # fitted by an earlier version
            self.__dict__.pop("coreset_position_", None)
        else:
            self.coreset_position_ = np.concatenate(positions)[kept]
        self.cover_radius_ = radii
        self.n_patches_seen_ = int(n_patches)
        self.memory_bytes_ = int(self.coreset_.nbytes)

    def _keep_spares(self, entries, sources, capacity):
        """Add entries a reduction dropped to a seeded reservoir of them: the candidates
        that calibration draws an image's replacement entries from."""
        held = self.__dict__.get("_spare_entries")
        n_held = 0 if held is None else held.shape[0]
        seen = self.__dict__.get("_spares_seen", n_held)
        if held is not None:
            entries = np.concatenate([held, entries])
            sources = np.concatenate([self._spare_sources, sources])
        index = reservoir_indices(n_held, entries.shape[0] - n_held, seen, capacity, 0)
        self._spare_entries = np.ascontiguousarray(entries[index])
        self._spare_sources = sources[index].astype(np.int32)
        self._spares_seen = int(seen + entries.shape[0] - n_held)

    def _calibrate_on_reservoir(self):
        grids, ids = self._calibration_grids, self._calibration_ids
        self._calibrate(self._out_of_sample_patch_scores(grids, ids))

    @property
    def _searcher(self):
        """k-NN search over the coreset, built on first use and never pickled."""
        searcher = self.__dict__.get("_search_cache")
        device = self._device()
        if (
            searcher is None
            or searcher.bank is not self.coreset_
            or searcher.method != self.search
            or searcher.device != device
        ):
            searcher = NearestNeighborSearch(
                self.coreset_, self.search, self.index_seed_, device=device
            )
            self._search_cache = searcher
        return searcher

    def __getstate__(self):
        # The calibration sample is many times the coreset's size: a model file holds it only
        # when asked to (keep_calibration), to stay calibrated as it grows or merges.
        # The search holds the coreset's norms and, when approximate, a graph: both are
        # rebuilt from coreset_ rather than stored twice in a model file.
        state = dict(super().__getstate__())
        state.pop("_search_cache", None)
        if not self.keep_calibration:
            for name in (*self._calibration_set, *_SPARE_SET):
                state.pop(name, None)
        return state

    def kneighbors(self, X, n_neighbors=None):
        """The coreset entries nearest to patch features, as the patch scores measure them.

        Parameters
        ----------
        X : array-like of shape (m, d)
            Patch features (rows of grids).
        n_neighbors : int, default=None
            Entries per patch (capped at the coreset size); None takes ``n_neighbors``.

        Returns
        -------
        distances : ndarray of shape (m, k), float32
            Euclidean distances, nearest first.
        indices : ndarray of shape (m, k)
            Rows of ``coreset_`` (see ``coreset_source_`` and ``coreset_position_`` for
            where each comes from).
        """
        grids = self._validated_grids(X)  # 2-D input is read as (m, 1, 1, d)
        k = self.n_neighbors if n_neighbors is None else int(n_neighbors)
        return self._searcher.kneighbors(grids.reshape(-1, self.n_features_in_), k)

    def _score_patches(self, grids):
        n, h, w, d = grids.shape
        queries = grids.reshape(-1, d)
        scores = np.empty(queries.shape[0], dtype=np.float64)
        step = chunk_rows(d * 4 + self.n_neighbors * 12)
        for start in range(0, queries.shape[0], step):
            distances, _ = self._searcher.kneighbors(
                queries[start : start + step], self.n_neighbors
            )
            scores[start : start + step] = distances.mean(axis=1, dtype=np.float64)
        return scores.reshape(n, h, w)

    def _out_of_sample_patch_scores(self, grids, image_ids=None):
        n, h, w, d = grids.shape
        k = min(self.n_neighbors, self.coreset_.shape[0])
        queries = grids.reshape(-1, d)
        if image_ids is None:
            image_ids = np.arange(n)
        source = np.repeat(np.asarray(image_ids).astype(self.coreset_source_.dtype), h * w)
        neighbours = np.empty((queries.shape[0], k), dtype=np.float32)
        step = chunk_rows(d * 4 + k * 12)
        for start in range(0, queries.shape[0], step):
            stop = start + step
            neighbours[start:stop], _ = self._searcher.kneighbors(
                queries[start:stop], k, exclude=(source[start:stop], self.coreset_source_)
            )
        replacements = self._replacement_candidates(queries, source)
        if replacements is not None:
            neighbours = self._add_replacements(queries, source, neighbours, *replacements)
        held_out = np.isfinite(neighbours)
        counts = held_out.sum(axis=1)
        scores = np.where(held_out, neighbours, 0.0).sum(axis=1, dtype=np.float64)
        scores /= np.maximum(counts, 1)
        alone = np.flatnonzero(counts == 0)
        if alone.size:  # every coreset entry comes from this patch's own image
            in_sample, _ = self._searcher.kneighbors(queries[alone], k)
            scores[alone] = in_sample.mean(axis=1)
        return scores.reshape(n, h, w)

    def _replacement_candidates(self, queries, source):
        """Patches of other images that could replace an image's entries, as
        ``(pool, pool_points, pool_source, entry_points, owner)``: ``pool_points`` are the
        pool in the selection's space, ``owner`` the entry nearest each there.

        After ``fit`` the pool is the whole bank, covered as the selection found it. After
        growing or merging, it is the calibration images' own patches and the entries the
        reductions dropped (a sample of the training patches that once led a coreset).
        """
        selection = self.__dict__.pop("_selection", None)
        if selection is not None:
            points, selected, owner = selection
            return queries, points, source, points[selected], owner
        spares = self.__dict__.get("_spare_entries")
        pool, pool_source = queries, source
        if spares is not None:
            pool = np.concatenate([queries, spares])
            pool_source = np.concatenate([source, self._spare_sources.astype(source.dtype)])
        device = self._device()
        both = project_for_coreset(
            np.concatenate([pool, self.coreset_]),
            self.projection_dim,
            check_random_state(self.random_state),
            device,
        )
        pool_points, entry_points = both[: pool.shape[0]], both[pool.shape[0] :]
        owner = np.empty(pool.shape[0], dtype=np.intp)
        entries = NearestNeighborSearch(entry_points, device=device)
        step = chunk_rows(entry_points.shape[1] * 4 + 16)
        for start in range(0, pool.shape[0], step):
            owner[start : start + step] = entries.kneighbors(pool_points[start : start + step], 1)[
                1
            ][:, 0]
        return pool, pool_points, pool_source, entry_points, owner

    def _add_replacements(
        self, queries, source, neighbours, pool, points, pool_source, entry_points, owner
    ):
        """Merge into each image's held-out neighbours the entries that a coreset of the same
        size, built without that image, would hold in place of the image's own.

        Leaving an image's entries out of the single coreset leaves holes: the patches of
        other images that those entries covered lose their cover, so the training images
        would score worse than new normal images (``contamination=c`` would flag fewer than
        a fraction ``c`` of them). A selection without the image spends its freed entries on
        those orphaned patches, farthest first; the same greedy rule, run over them with the
        rest of the coreset fixed, picks as many replacements as the image had entries.
        """
        entry_source = self.coreset_source_
        covering_image = entry_source[owner]
        images_here = np.unique(source)
        orphans = np.flatnonzero(
            (covering_image != pool_source) & np.isin(covering_image, images_here)
        )
        if orphans.size == 0:
            return neighbours
        # Distance (in the selection's space) of each orphan to the nearest entry of another
        # image than the one whose entry covers it.
        entries = NearestNeighborSearch(entry_points, device=self._device())
        gap = np.empty(orphans.size, dtype=np.float32)
        step = chunk_rows(points.shape[1] * 4 + 16)
        for start in range(0, orphans.size, step):
            rows = orphans[start : start + step]
            gap[start : start + step] = entries.kneighbors(
                points[rows], 1, exclude=(covering_image[rows], entry_source)
            )[0][:, 0]
        order = np.argsort(covering_image[orphans], kind="stable")
        orphans, gap = orphans[order], gap[order]
        held_image = covering_image[orphans]
        images, starts = np.unique(held_image, return_index=True)
        stops = np.append(starts[1:], held_image.size)
        n_entries = np.bincount(entry_source, minlength=int(images[-1]) + 1)
        per_image = queries.shape[0] // images_here.size
        first_row = dict(zip(source[::per_image].tolist(), range(0, source.size, per_image)))
        k = neighbours.shape[1]
        for image, start, stop in zip(images, starts, stops):
            group = orphans[start:stop]
            added = group[_farthest_first(points[group], gap[start:stop], n_entries[image])]
            own = slice(first_row[int(image)], first_row[int(image)] + per_image)
            extra = torch.cdist(torch.from_numpy(queries[own]), torch.from_numpy(pool[added]))
            merged = np.concatenate([neighbours[own], extra.numpy()], axis=1)
            neighbours[own] = np.sort(np.partition(merged, k - 1, axis=1)[:, :k], axis=1)
        return neighbours


def _farthest_first(candidates, distances, n_picks):
    """Greedy k-center over ``candidates`` whose distances to fixed centres are ``distances``:
    the indices of the first ``n_picks`` (at most all) picks."""
    candidates = torch.from_numpy(np.ascontiguousarray(candidates))
    distances = torch.from_numpy(distances.copy())
    picks = np.empty(min(int(n_picks), distances.shape[0]), dtype=np.intp)
    for i in range(picks.size):
        far = int(torch.argmax(distances))
        picks[i] = far
        to_new = torch.linalg.vector_norm(candidates - candidates[far], dim=1)
        torch.minimum(distances, to_new, out=distances)
    return picks
