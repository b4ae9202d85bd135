"""PaDiM: one Gaussian per grid position, Mahalanobis distance as the patch score."""

from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _deprecate_positional_args, check_is_fitted

from ..defaults import BORDER, CONTAMINATION, PADIM_REG, TOP_K
from ..utils.chunking import chunk_rows
from ..utils.devices import to_device, to_host
from ..utils.tensors import read_tensor
from ._banded import BAND, LAYOUT, BandedProduct, pack_banded, unpack_banded
from ._base import BaseMemoryDetector
from ._cholesky import inverse_cholesky

__all__ = ["PaDiMDetector"]


class PaDiMDetector(BaseMemoryDetector):
    """Per-position Gaussian model of patch features (PaDiM, Defard et al. 2020).

    For every grid position ``(i, j)`` the detector keeps the mean of the training features and
    a whitening factor ``W`` of the regularised covariance ``C + reg * I`` (``W C W^T = I``,
    ``W`` lower triangular, stored packed in float32, band by band). A patch's score is its
    Mahalanobis distance ``|W (x - mean)|``. All positions are processed together: no Python
    loop over positions. ``partial_fit`` accumulates the float64 sufficient statistics (count,
    mean and scatter per position, combined by the pairwise update) batch by batch, so a
    training set need not fit in memory, and :func:`merge_detectors` combines detectors fitted
    on disjoint data into exactly the model one ``fit`` on all of it gives.

    Parameters
    ----------
    reg : float, default=0.01
        Added to the covariance diagonal; keeps it invertible when there are fewer images than
        features.
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
    keep_statistics : bool, default=False
        Keep the sufficient statistics in the fitted model (and its model file), so that it
        can be merged (:func:`merge_detectors`) or continued (:meth:`partial_fit`) exactly.
        They take ``h * w * d * (d + 1) * 8`` bytes, several times the model. Without them,
        ``partial_fit`` still works within one session (it keeps them until the model is
        saved) and continues a model fitted by :meth:`fit` from its Gaussians, up to float32
        rounding.
    device : str, default="cpu"
        Torch device that estimates, factorises and scores on: ``"cpu"``, ``"cuda"``,
        ``"cuda:<index>"`` or ``"auto"`` (CUDA when available). The fitted attributes stay
        NumPy arrays; the mean and whitening factors are copied to the device once, on first
        use. The device must support float64 (CUDA does).

    Attributes
    ----------
    mean_ : ndarray of shape (h, w, d), float32
        Per-position mean.
    whitening_ : ndarray of shape (h * w, d * (d + 1) // 2), float32
        Packed lower triangle of the per-position whitening factor ``W``, in bands of up to
        32 rows taken in pairs: for each pair, each band's block left of the diagonal
        (``W[a:b, :a]``, row by row), then one rectangle holding both bands' diagonal
        triangles (the second one transposed).
    offset_ : float
        Threshold on :meth:`score_samples`: ``decision_function = score_samples - offset_``.
    train_scores_ : ndarray of shape (n_train,)
        Leave-one-image-out :meth:`score_samples` of the training images; after
        :meth:`partial_fit` or merging, those of a seeded reservoir of at most
        ``sklearn_memad.defaults.CALIBRATION_IMAGES`` of them (a uniform sample of all),
        each left out of the whole memory.
    n_samples_seen_ : int
        Number of training images accumulated.
    grid_shape_ : tuple of int
        ``(h, w)`` of the training grids; other grid shapes are refused.
    memory_bytes_ : int
        Bytes of the fitted memory (mean and whitening factor).
    n_features_in_ : int
        Number of features per patch ``d``.

    See Also
    --------
    PatchCoreDetector : Position-free memory of patch features.
    DFKDEDetector : Per-position kernel density.

    Notes
    -----
    ``offset_`` comes from leave-one-image-out distances of the training images, computed in
    closed form from the in-sample ones by the Sherman-Morrison formula (the held-out model
    uses the same divisor ``n - 1`` for its covariance), so calibration costs one scoring pass.
    After :meth:`partial_fit` or merging, the same closed form leaves out each image of a
    reservoir of training images (see :meth:`partial_fit`).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import PaDiMDetector
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(40, 4, 4, 8)).astype(np.float32)
    >>> test = rng.normal(size=(3, 4, 4, 8)).astype(np.float32)
    >>> test[0, 1, 2] += 10.0  # one abnormal patch
    >>> detector = PaDiMDetector().fit(train)
    >>> detector.predict(test)
    array([-1,  1,  1])
    >>> detector.score_patches(test).shape
    (3, 4, 4)
    """

    _min_images = 2

    _parameter_constraints: dict = {
        **BaseMemoryDetector._parameter_constraints,
        "reg": [Interval(Real, 0, None, closed="neither")],
        "keep_statistics": ["boolean"],
    }

    @_deprecate_positional_args(version="0.3")
    def __init__(
        self,
        *,
        reg=PADIM_REG,
        contamination=CONTAMINATION,
        top_k=TOP_K,
        border=BORDER["padim"],
        keep_statistics=False,
        device="cpu",
    ):
        self.reg = reg
        self.contamination = contamination
        self.top_k = top_k
        self.border = border
        self.keep_statistics = keep_statistics
        self.device = device

    # ----------------------------------------------------------------- fitting
    def _fit_memory(self, grids):
        self.__dict__.pop("_statistics", None)
        self._drop_calibration_set()
        if self.keep_statistics:
            self._start_memory(grids)
            return
        # Without statistics to keep, a fitted model holds just mean_ and whitening_, and
        # each block of positions is whitened straight from data.
        n, h, w, d = grids.shape
        device = self._device()
        flat = grids.reshape(n, h * w, d)
        self.grid_shape_ = (h, w)
        mean = np.empty((h * w, d), dtype=np.float32)
        whitening = np.empty((h * w, d * (d + 1) // 2), dtype=np.float32)
        # 32 MiB blocks keep the halved factorisations near the cache.
        step = chunk_rows((n * d + 3 * d * d) * 8, budget=32 << 20)
        with torch.inference_mode():
            for start in range(0, h * w, step):
                stop = min(start + step, h * w)
                block = to_device(flat[:, start:stop], device).transpose(0, 1)
                # torch's float32 mean sums pairwise, so it is as accurate here as numpy's
                # slower float64 mean; the model keeps float32 means anyway.
                block_mean = block.mean(dim=1)
                mean[start:stop] = to_host(block_mean)
                # Centred data is summed in float32 (faster, and the distances stay close to
                # those of a float64 sum) and factorised in float64.
                centred = block - block_mean[:, None, :]
                scatter = torch.bmm(centred.transpose(1, 2), centred).double()
                try:
                    whitening[start:stop] = self._packed_whitening(scatter.div_(n - 1))
                except ValueError:
                    # Features far apart lose the float32 sum's precision: sum in float64.
                    centred = centred.double()
                    scatter = torch.bmm(centred.transpose(1, 2), centred)
                    whitening[start:stop] = self._packed_whitening(scatter.div_(n - 1))
        self._set_model(mean, whitening)

    def _start_memory(self, grids):
        # A memory that will grow keeps its sufficient statistics from the first batch, and a
        # sample of its images to calibrate on.
        self.grid_shape_ = tuple(grids.shape[1:3])
        self._statistics = _batch_statistics(grids, self._device())
        self._drop_calibration_set()
        self._keep_for_calibration(grids, first_image=0)
        self._finalize()

    def _recalibrate(self, grids, first_image):
        # Every image of the reservoir is in the model: leaving each out is exact.
        self._keep_for_calibration(grids, first_image)
        self._calibrate(self._out_of_sample_patch_scores(self._calibration_grids))

    def _calibrate_merged(self, detectors):
        if not self._merged_calibration_set(detectors):
            super()._calibrate_merged(detectors)
            return
        self._calibrate(self._out_of_sample_patch_scores(self._calibration_grids))

    def _grow_memory(self, grids):
        statistics = self.__dict__.get("_statistics")
        if statistics is None:  # fitted by fit without keep_statistics, or loaded without them
            statistics = self._statistics_from_model()
            self._drop_calibration_set()  # the reservoir restarts with the images to come
        self._statistics = _combined(statistics, _batch_statistics(grids, self._device()))
        self._finalize()

    def _merge_memories(self, detectors, random_state):
        missing = [
            i for i, detector in enumerate(detectors) if "_statistics" not in vars(detector)
        ]
        if missing:
            raise ValueError(
                f"merge_detectors needs PaDiMDetector's sufficient statistics, which detectors "
                f"{missing} do not hold: fit each with keep_statistics=True (partial_fit keeps "
                "them too, until the model is saved without keep_statistics)."
            )
        statistics = detectors[0]._statistics
        for detector in detectors[1:]:
            statistics = _combined(statistics, detector._statistics)
        self.grid_shape_ = detectors[0].grid_shape_
        self._statistics = statistics
        self._finalize()

    def __getstate__(self):
        # The float64 statistics are several times the model's size: a model file holds them
        # only when asked to (keep_statistics), to be merged or continued exactly.
        state = dict(super().__getstate__())
        if not self.keep_statistics:
            for name in ("_statistics", *self._calibration_set):
                state.pop(name, None)
        return state

    def _statistics_from_model(self):
        """Statistics that reproduce the fitted Gaussians (to continue after ``fit``)."""
        self._check_whitening_layout()
        n = self.n_samples_seen_
        mean = self.mean_.reshape(-1, self.mean_.shape[-1]).astype(np.float64)
        d = mean.shape[1]
        with torch.inference_mode():
            factor = unpack_banded(read_tensor(self.whitening_).double(), d)
            # C = (W^T W)^-1 for the whitening factor W.
            lower = torch.linalg.inv(factor)
            cov = torch.bmm(lower, lower.transpose(1, 2)).numpy()
        cov[:, np.arange(d), np.arange(d)] -= self.reg
        return n, mean, (n - 1) * cov

    def _finalize(self):
        """The Gaussians (mean, whitening factor) of the current statistics."""
        n, mean, scatter = self._statistics
        if n < self._min_images:
            raise ValueError(
                f"PaDiMDetector needs at least {self._min_images} normal samples; got {n} so far."
            )
        d = mean.shape[1]
        device = self._device()
        whitening = np.empty((mean.shape[0], d * (d + 1) // 2), dtype=np.float32)
        step = chunk_rows(3 * d * d * 8)
        for start in range(0, mean.shape[0], step):
            cov = scatter[start : start + step] / (n - 1)
            with torch.inference_mode():
                whitening[start : start + step] = self._packed_whitening(to_device(cov, device))
        self._set_model(mean, whitening)

    def _packed_whitening(self, cov):
        """Banded packed lower triangle of ``W = L^-1`` (``C + reg I = L L^T``), float32."""
        cov.diagonal(dim1=1, dim2=2).add_(self.reg)
        # The factorisation needs float64 (C's condition number); the outermost corner, kept
        # in float32 like the rest of W, is multiplied in float32: distances as accurate as
        # with a float64 corner.
        try:
            factor = inverse_cholesky(cov, corner_dtype=torch.float32)
        except torch.linalg.LinAlgError:
            raise ValueError(
                f"X gives a covariance that is not positive definite even with reg={self.reg:g}"
                " added: its features are too far apart for PaDiM's float arithmetic. "
                "Standardise them, or raise reg."
            ) from None
        return to_host(pack_banded(factor.float()))

    def whitening_matrices(self):
        """Each position's whitening factor as a dense lower-triangular matrix.

        ``whitening_`` holds them packed band by band; a patch's score at position ``i`` is
        ``||W[i] (x - mean_[i])||``. Exporters read them dense.

        Returns
        -------
        whitening : ndarray of shape (h * w, d, d), float32
            ``W`` with ``W (C + reg I) W^T = I`` for each position's covariance ``C``.
        """
        check_is_fitted(self)
        self._check_whitening_layout()
        d = self.mean_.shape[-1]
        packed = torch.from_numpy(np.ascontiguousarray(self.whitening_))
        with torch.inference_mode():
            return unpack_banded(packed, d).numpy()

    def _check_whitening_layout(self):
        # A model file written with another packing of whitening_ would score silently wrong.
        if getattr(self, "_whitening_layout", None) != LAYOUT:
            raise ValueError(
                "This PaDiMDetector was fitted by an earlier version of sklearn_memad, which "
                "packed whitening_ differently; fit it again with this version."
            )

    def _set_model(self, mean, whitening):
        self.mean_ = mean.reshape(self.grid_shape_ + (mean.shape[-1],)).astype(np.float32)
        self.whitening_ = whitening
        self._whitening_layout = LAYOUT
        self.memory_bytes_ = int(self.mean_.nbytes + self.whitening_.nbytes)

    # ----------------------------------------------------------------- scoring
    def _squared_distances(self, grids):
        """Squared Mahalanobis distances ``(n, h, w)``, in blocks of positions."""
        self._check_whitening_layout()
        n, h, w, d = grids.shape
        device = self._device()
        flat = grids.reshape(n, h * w, d)
        mean = self._on_device("mean_", device).view(h * w, d)
        packed = self._on_device("whitening_", device)
        out = torch.empty((h * w, n), dtype=torch.float32, device=device)
        # A block's residuals and unpacked diagonal tiles within 8 MiB, so they stay near the
        # cache (the factors are read once, as stored).
        step = chunk_rows((d * n + d * BAND) * 4, budget=8 << 20)
        step = min(step, h * w)
        product = BandedProduct(d, step, device=device)
        residuals = torch.empty((n, step, d), dtype=torch.float32, device=device)
        with torch.inference_mode():
            for start in range(0, h * w, step):
                stop = min(start + step, h * w)
                centred = residuals[:, : stop - start]
                block = to_device(flat[:, start:stop], device)
                torch.sub(block, mean[start:stop], out=centred)
                # (positions, d, n): each position's residuals as columns, a permuted view
                # that the batched products read as a transposed operand.
                product.sq_norms(packed[start:stop], centred.permute(1, 2, 0), out[start:stop])
        return to_host(out).T.astype(np.float64).reshape(n, h, w)

    def _score_patches(self, grids):
        return np.sqrt(self._squared_distances(grids))

    def _out_of_sample_patch_scores(self, grids):
        n_total = self.n_samples_seen_
        in_sample = self._squared_distances(grids)
        if n_total < 3:
            return np.sqrt(in_sample)
        # Leaving image i out moves the mean by delta/(n-1) and removes a rank-one term from
        # the scatter; Sherman-Morrison gives the held-out distance from the in-sample one.
        shrink = n_total / (n_total - 1) ** 2
        denominator = np.maximum(1.0 - shrink * in_sample, 1e-12)
        held_out = (n_total / (n_total - 1)) ** 2 * in_sample / denominator
        return np.sqrt(held_out)


def _batch_statistics(grids, device):
    """``(count, mean, scatter)`` per position of a batch, in float64."""
    n, h, w, d = grids.shape
    flat = grids.reshape(n, h * w, d)
    mean = flat.mean(axis=0, dtype=np.float64)
    scatter = np.empty((h * w, d, d), dtype=np.float64)
    step = chunk_rows(n * d * 8 + d * d * 8)
    with torch.inference_mode():
        for start in range(0, h * w, step):
            stop = min(start + step, h * w)
            # (positions, images, d): one batched product per position.
            block = to_device(flat[:, start:stop], device).transpose(0, 1).double()
            block = block - to_device(mean[start:stop], device)[:, None, :]
            scatter[start:stop] = to_host(torch.bmm(block.transpose(1, 2), block))
    return n, mean, scatter


def _combined(first, second):
    """The statistics of two disjoint sets of images from theirs (the pairwise update)."""
    n_a, mean_a, scatter_a = first
    n_b, mean_b, scatter_b = second
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    scatter = scatter_a + scatter_b + (n_a * n_b / n) * (delta[:, :, None] * delta[:, None, :])
    return n, mean, scatter
