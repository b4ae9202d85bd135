"""DFKDE: a Gaussian kernel density of the training features at every grid position."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _deprecate_positional_args

from ..defaults import BORDER, CALIBRATION_IMAGES, CONTAMINATION, DFKDE_BANDWIDTH, TOP_K
from ..utils.chunking import chunk_rows
from ..utils.devices import to_device, to_host
from ..utils.reservoir import reservoir_indices
from ._base import BaseMemoryDetector, image_offsets

__all__ = ["DFKDEDetector"]

# Features whose training spread is below this are treated as having unit spread.
_MIN_STD = 1e-6


class DFKDEDetector(BaseMemoryDetector):
    """Per-position Gaussian kernel density of patch features (deep-feature KDE).

    At every grid position the training features are standardised (per feature) and kept; a
    patch's score is minus the log of their Gaussian kernel density at the patch, computed with
    log-sum-exp so it is finite even far from all training features. All positions are
    processed together. Use it after a :class:`RandomProjection` to a few dozen features: the
    memory is ``n_train * h * w * d`` floats. Unlike image-level DFKDE, it yields patch and
    pixel maps.

    Parameters
    ----------
    bandwidth : {"scott", "silverman"} or float, default="scott"
        Kernel standard deviation in units of each feature's training standard deviation
        (``scipy.stats.gaussian_kde``'s convention): Scott's factor ``n ** (-1 / (d + 4))``,
        Silverman's ``(n * (d + 2) / 4) ** (-1 / (d + 4))``, or a number in [1e-4, 1e4].
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected fraction of anomalies among new normal-looking images; sets ``offset_`` from
        the out-of-sample scores of the training images. "auto" places the threshold at
        Tukey's upper fence (Q3 + 1.5 IQR) of their anomaly scores.
    top_k : int, default=30
        Image anomaly score: the mean of the ``top_k`` largest patch scores (capped at the
        grid's size), or the largest one (1). A defect spans several patches while a
        single odd patch of a normal image is often noise: the mean of the largest 30 ranks
        images better than the largest alone, on every data set measured.
    border : int, default=0
        Outer rings of patches left out of the image score; in :meth:`score_patches` (and
        so in the maps) each repeats its nearest inner patch's score. Patches at the grid's
        edge see the image's edge and the backbone's padding instead of neighbours; the
        density of each position already accounts for that, so DFKDE keeps every patch by
        default (PatchCore and PaDiM leave one ring out). A grid with no inner patch left
        (``h`` or ``w`` at most ``2 * border``) is taken whole.
    max_samples : int or None, default=None
        Keep at most this many training images in the memory: a seeded reservoir, a uniform
        sample of every image seen by :meth:`fit`, :meth:`partial_fit` and merging. None
        keeps them all (the memory grows with every image).
    random_state : int, RandomState instance or None, default=None
        Seeds the reservoir of ``max_samples``.
    device : str, default="cpu"
        Torch device that sums the kernels: ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or
        ``"auto"`` (CUDA when available). The fitted attributes stay NumPy arrays; the kept
        samples are copied to the device once, on first use. The device must support
        float64 (CUDA does).

    Attributes
    ----------
    features_ : ndarray of shape (h * w, n_kept, d), float32
        Standardised training features per position (of every training image, or of the
        ``max_samples`` the reservoir keeps).
    sample_source_ : ndarray of shape (n_kept,), int64
        The training image each kept sample comes from, in the order the images were given
        to :meth:`fit` or :meth:`partial_fit` (used for explanations).
    mean_ : ndarray of shape (h * w, d), float32
        Per-position feature means.
    scale_ : ndarray of shape (h * w, d), float32
        Per-position feature standard deviations.
    bandwidth_ : float
        Kernel standard deviation in standardised units.
    offset_ : float
        Threshold on :meth:`score_samples`: ``decision_function = score_samples - offset_``.
    train_scores_ : ndarray of shape (n_train,)
        Leave-one-image-out :meth:`score_samples` of the training images; after
        :meth:`partial_fit` or merging, those of a seeded reservoir of at most
        ``sklearn_memad.defaults.CALIBRATION_IMAGES`` of them (a uniform sample of all),
        each left out of the whole memory.
    n_samples_seen_ : int
        Number of training images seen.
    grid_shape_ : tuple of int
        ``(h, w)`` of the training grids; other grid shapes are refused.
    memory_bytes_ : int
        Bytes of the fitted memory.
    n_features_in_ : int
        Number of features per patch ``d``.

    See Also
    --------
    PaDiMDetector : Per-position Gaussians (memory independent of the number of images).
    PatchCoreDetector : Position-free coreset memory.

    Notes
    -----
    ``offset_`` comes from leave-one-image-out densities: each training image is scored
    without its own kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import DFKDEDetector
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(30, 4, 4, 3)).astype(np.float32)
    >>> test = rng.normal(size=(3, 4, 4, 3)).astype(np.float32)
    >>> test[0, 1, 2] += 8.0  # one abnormal patch
    >>> detector = DFKDEDetector().fit(train)
    >>> detector.predict(test)
    array([-1,  1,  1])
    """

    _min_images = 2

    _parameter_constraints: dict = {
        **BaseMemoryDetector._parameter_constraints,
        "bandwidth": [
            StrOptions({"scott", "silverman"}),
            # In units of the features' spread: beyond these, every kernel but the nearest
            # vanishes or all are alike, and the densities under- or overflow.
            Interval(Real, 1e-4, 1e4, closed="both"),
        ],
        "max_samples": [Interval(Integral, 2, None, closed="left"), None],
        "random_state": ["random_state"],
    }

    @_deprecate_positional_args(version="0.3")
    def __init__(
        self,
        *,
        bandwidth=DFKDE_BANDWIDTH,
        contamination=CONTAMINATION,
        top_k=TOP_K,
        border=BORDER["dfkde"],
        max_samples=None,
        random_state=None,
        device="cpu",
    ):
        self.bandwidth = bandwidth
        self.contamination = contamination
        self.top_k = top_k
        self.border = border
        self.max_samples = max_samples
        self.random_state = random_state
        self.device = device

    def _fit_memory(self, grids):
        samples, kept = self._reservoir(None, _by_position(grids), 0)
        # Where each training image's own kernel is, for its held-out score (-1: not held).
        slots = np.full(grids.shape[0], -1)
        slots[kept] = np.arange(kept.size)
        self._own_slots = slots
        self._set_samples(samples, kept)

    def _grow_memory(self, grids):
        samples, kept = self._reservoir(self._samples(), _by_position(grids), self.n_samples_seen_)
        new_images = self.n_samples_seen_ + np.arange(grids.shape[0])
        self._set_samples(samples, _sources(self, new_images)[kept])

    def _merge_memories(self, detectors, random_state):
        samples = np.concatenate([detector._samples() for detector in detectors], axis=1)
        offsets = image_offsets(detectors)
        sources = np.concatenate(
            [_sources(d, np.empty(0, np.int64)) + offset for d, offset in zip(detectors, offsets)]
        )
        self.grid_shape_ = detectors[0].grid_shape_
        if self.max_samples is not None and samples.shape[1] > self.max_samples:
            # Each shard's samples are a uniform sample of its images; drawing them in
            # proportion to the images each shard saw keeps the union a uniform sample.
            held = [detector.features_.shape[1] for detector in detectors]
            weight = np.repeat([d.n_samples_seen_ / k for d, k in zip(detectors, held)], held)
            rng = check_random_state(random_state)
            kept = rng.choice(
                samples.shape[1], self.max_samples, replace=False, p=weight / weight.sum()
            )
            samples, sources = samples[:, np.sort(kept)], sources[np.sort(kept)]
        self._set_samples(samples, sources)

    def _reservoir(self, kept, new, n_seen):
        """The samples a seeded reservoir of ``max_samples`` images holds after ``new`` (a
        uniform sample of every image seen), and their indices in ``kept`` then ``new``."""
        combined = new if kept is None else np.concatenate([kept, new], axis=1)
        if self.max_samples is None:
            return combined, np.arange(combined.shape[1])
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        held = 0 if kept is None else kept.shape[1]
        index = reservoir_indices(held, new.shape[1], n_seen, self.max_samples, seed)
        return combined[:, index], index

    def _recalibrate(self, grids, first_image):
        self._calibrate_on_samples()

    def _calibrate_merged(self, detectors):
        self._calibrate_on_samples()

    def _calibrate_on_samples(self):
        """Leave-one-image-out scores of the memory's own images (of an even subset of at
        most ``CALIBRATION_IMAGES``), as ``fit`` calibrates."""
        samples = self._samples()
        n_kept = samples.shape[1]
        slots = np.unique(np.linspace(0, n_kept - 1, min(n_kept, CALIBRATION_IMAGES)).round())
        slots = slots.astype(int)
        h, w = self.grid_shape_
        grids = samples[:, slots].transpose(1, 0, 2).reshape(slots.size, h, w, -1)
        self._calibrate(self._negative_log_density(grids, own_slots=slots))

    def _samples(self):
        """The kept samples per position ``(positions, n, d)``, in the input's units."""
        return self.features_ * self.scale_[:, None, :] + self.mean_[:, None, :]

    def _set_samples(self, samples, sources):
        """Standardise ``(positions, n, d)`` samples and set the memory from them;
        ``sources`` are the training images they come from."""
        n, d = samples.shape[1], samples.shape[2]
        mean = samples.mean(axis=1, dtype=np.float64)
        std = samples.std(axis=1, dtype=np.float64)
        std = np.where(std > _MIN_STD, std, 1.0)
        features = (samples - mean[:, None, :]) / std[:, None, :]
        self.mean_ = mean.astype(np.float32)
        self.scale_ = std.astype(np.float32)
        self.features_ = np.ascontiguousarray(features, dtype=np.float32)
        self.sample_source_ = np.asarray(sources, dtype=np.int64)
        self.bandwidth_ = float(self._bandwidth_factor(n, d))
        self.memory_bytes_ = int(self.features_.nbytes + self.mean_.nbytes + self.scale_.nbytes)

    def _bandwidth_factor(self, n, d):
        if self.bandwidth == "scott":
            return n ** (-1.0 / (d + 4))
        if self.bandwidth == "silverman":
            return (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        return self.bandwidth

    def _score_patches(self, grids):
        return self._negative_log_density(grids, own_slots=None)

    def _out_of_sample_patch_scores(self, grids):
        own_slots = self.__dict__.pop("_own_slots", None)
        if own_slots is None:
            own_slots = np.arange(grids.shape[0])
        return self._negative_log_density(grids, own_slots)

    def _negative_log_density(self, grids, own_slots):
        """-log density of every patch, in blocks of images. With ``own_slots`` the grids are
        training grids, each scored without its own kernel (at that slot; -1: none)."""
        n, h, w, d = grids.shape
        n_train = self.features_.shape[1]
        positions = h * w
        queries = (grids.reshape(n, positions, d) - self.mean_) / self.scale_
        queries = queries.transpose(1, 0, 2).astype(np.float32)  # (positions, n, d)
        two_var = 2.0 * self.bandwidth_**2
        held = np.zeros(n) if own_slots is None else (own_slots >= 0).astype(float)
        # log of the kernel normalisation, the 1/n of the mean and the standardisation Jacobian.
        log_norm = (
            0.5 * d * np.log(np.pi * two_var) + np.log(self.scale_.astype(np.float64)).sum(axis=1)
        )[:, None] + np.log(n_train - held)[None, :]
        out = np.empty((positions, n), dtype=np.float64)
        # In torch: see sklearn_memad.utils.tensors; torch's batched product also beats
        # numpy's loop of small ones. Distances in float64: a float32 product's rounding
        # depends on how many images are scored together, and a patch's score must not.
        # Blocks of positions (their training features in float64) times blocks of images.
        image_step = min(n, 64)
        position_step = chunk_rows(n_train * (d + image_step) * 8)
        device = self._device()
        kept = self._on_device("features_", device)
        with torch.inference_mode():
            for p0 in range(0, positions, position_step):
                p1 = min(p0 + position_step, positions)
                features = kept[p0:p1].double()
                train_sq = features.square().sum(dim=2)[:, None, :]
                for start in range(0, n, image_step):
                    stop = min(start + image_step, n)
                    block = to_device(queries[p0:p1, start:stop], device).double()
                    sq = torch.baddbmm(train_sq, block, features.transpose(1, 2), alpha=-2.0)
                    sq += block.square().sum(dim=2, keepdim=True)
                    sq.clamp_(min=0.0)
                    if own_slots is not None:
                        rows = np.flatnonzero(own_slots[start:stop] >= 0)
                        slots = own_slots[start:stop][rows]
                        sq[:, to_device(rows, device), to_device(slots, device)] = torch.inf
                    log_mean_kernel = torch.logsumexp(sq.mul_(-1.0 / two_var), dim=2)
                    out[p0:p1, start:stop] = log_norm[p0:p1, start:stop] - to_host(log_mean_kernel)
        return out.T.reshape(n, h, w)


def _sources(detector, new_images):
    """The training images of ``detector``'s kept samples, then ``new_images``; -1 where a
    detector of an earlier version did not record them."""
    held = getattr(detector, "sample_source_", None)
    if held is None:
        held = np.full(detector.features_.shape[1], -1, dtype=np.int64)
    return np.concatenate([held, new_images]).astype(np.int64)


def _by_position(grids):
    """``(n, h, w, d)`` grids as ``(positions, n, d)`` samples."""
    n, h, w, d = grids.shape
    return grids.reshape(n, h * w, d).transpose(1, 0, 2)
