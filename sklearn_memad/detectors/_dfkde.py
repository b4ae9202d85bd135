"""DFKDE: a Gaussian kernel density of the training features at every grid position."""

from numbers import Real

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _deprecate_positional_args

from ..defaults import CONTAMINATION, DFKDE_BANDWIDTH, TOP_K
from ..utils.chunking import chunk_rows
from ._base import BaseMemoryDetector

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
        Silverman's ``(n * (d + 2) / 4) ** (-1 / (d + 4))``, or a positive number.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected fraction of anomalies among new normal-looking images; sets ``offset_`` from
        the out-of-sample scores of the training images. "auto" places the threshold at
        Tukey's upper fence (Q3 + 1.5 IQR) of their anomaly scores.
    top_k : int, default=1
        Image anomaly score: the largest patch score (1) or the mean of the ``top_k`` largest.

    Attributes
    ----------
    features_ : ndarray of shape (h * w, n_train, d), float32
        Standardised training features per position.
    mean_ : ndarray of shape (h * w, d), float32
        Per-position feature means.
    scale_ : ndarray of shape (h * w, d), float32
        Per-position feature standard deviations.
    bandwidth_ : float
        Kernel standard deviation in standardised units.
    offset_ : float
        Threshold on :meth:`score_samples`: ``decision_function = score_samples - offset_``.
    train_scores_ : ndarray of shape (n_train,)
        Leave-one-image-out :meth:`score_samples` of the training images.
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
            Interval(Real, 0, None, closed="neither"),
        ],
    }

    @_deprecate_positional_args(version="0.3")
    def __init__(self, *, bandwidth=DFKDE_BANDWIDTH, contamination=CONTAMINATION, top_k=TOP_K):
        self.bandwidth = bandwidth
        self.contamination = contamination
        self.top_k = top_k

    def _fit_memory(self, grids):
        n, h, w, d = grids.shape
        by_position = grids.reshape(n, h * w, d).transpose(1, 0, 2)
        mean = by_position.mean(axis=1, dtype=np.float64)
        std = by_position.std(axis=1, dtype=np.float64)
        std = np.where(std > _MIN_STD, std, 1.0)
        features = (by_position - mean[:, None, :]) / std[:, None, :]
        self.mean_ = mean.astype(np.float32)
        self.scale_ = std.astype(np.float32)
        self.features_ = np.ascontiguousarray(features, dtype=np.float32)
        self.bandwidth_ = float(self._bandwidth_factor(n, d))
        self.memory_bytes_ = int(self.features_.nbytes + self.mean_.nbytes + self.scale_.nbytes)

    def _bandwidth_factor(self, n, d):
        if self.bandwidth == "scott":
            return n ** (-1.0 / (d + 4))
        if self.bandwidth == "silverman":
            return (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        return self.bandwidth

    def _score_patches(self, grids):
        return self._negative_log_density(grids, leave_out=False)

    def _out_of_sample_patch_scores(self, grids):
        return self._negative_log_density(grids, leave_out=True)

    def _negative_log_density(self, grids, leave_out):
        """-log density of every patch, in blocks of images; ``leave_out``: grids are the
        training grids, each scored without its own kernel."""
        n, h, w, d = grids.shape
        n_train = self.features_.shape[1]
        positions = h * w
        queries = (grids.reshape(n, positions, d) - self.mean_) / self.scale_
        queries = queries.transpose(1, 0, 2).astype(np.float32)  # (positions, n, d)
        two_var = 2.0 * self.bandwidth_**2
        n_kept = n_train - 1 if leave_out else n_train
        # log of the kernel normalisation, the 1/n of the mean and the standardisation Jacobian.
        log_norm = (
            np.log(n_kept)
            + 0.5 * d * np.log(np.pi * two_var)
            + np.log(self.scale_.astype(np.float64)).sum(axis=1)
        )
        out = np.empty((positions, n), dtype=np.float64)
        # In torch: see sklearn_memad.utils.tensors; torch's batched product also beats
        # numpy's loop of small ones. Distances in float64: a float32 product's rounding
        # depends on how many images are scored together, and a patch's score must not.
        # Blocks of positions (their training features in float64) times blocks of images.
        image_step = min(n, 64)
        position_step = chunk_rows(n_train * (d + image_step) * 8)
        with torch.inference_mode():
            for p0 in range(0, positions, position_step):
                p1 = min(p0 + position_step, positions)
                features = torch.from_numpy(self.features_[p0:p1]).double()
                train_sq = features.square().sum(dim=2)[:, None, :]
                for start in range(0, n, image_step):
                    stop = min(start + image_step, n)
                    block = torch.from_numpy(queries[p0:p1, start:stop]).double()
                    sq = torch.baddbmm(train_sq, block, features.transpose(1, 2), alpha=-2.0)
                    sq += block.square().sum(dim=2, keepdim=True)
                    sq.clamp_(min=0.0)
                    if leave_out:
                        own = torch.arange(start, stop)
                        sq[:, own - start, own] = torch.inf
                    log_mean_kernel = torch.logsumexp(sq.mul_(-1.0 / two_var), dim=2)
                    out[p0:p1, start:stop] = log_norm[p0:p1, None] - log_mean_kernel.numpy()
        return out.T.reshape(n, h, w)
