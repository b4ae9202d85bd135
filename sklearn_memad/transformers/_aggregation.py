"""PatchCore's locally aware patch features: a neighbourhood mean over the grid."""

from numbers import Integral

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _deprecate_positional_args, check_is_fitted

from ..defaults import AGGREGATION_SIZE
from ..utils.devices import resolve_device, to_device
from ..utils.validation import check_grids, restore_on_error

# Work memory of one chunk of images.
_CHUNK_BYTES = 16 << 20


class LocalAggregation(TransformerMixin, BaseEstimator):
    """Average each patch feature with its ``size x size`` neighbourhood.

    The stride is 1 and the grid keeps its ``(h, w)``. At the border the mean is taken over the
    neighbours that exist, so edge patches are not shrunk towards zero by padding.

    Parameters
    ----------
    size : int, default=5
        Side of the square neighbourhood, an odd number >= 1 (1 is the identity).
    copy : bool, default=True
        If False, aggregate in place when the grids are a writable float32 C-contiguous
        array: the input is overwritten and returned, so memory holds one grid set instead
        of two. Only for grids nothing else reads (not grids shared by several detectors).
        Otherwise a new array is returned.
    device : str, default="cpu"
        Torch device that averages: ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or ``"auto"``
        (CUDA when available). Grids come in and go out as NumPy arrays either way.

    Attributes
    ----------
    n_features_in_ : int
        Number of features per patch ``d`` seen in :meth:`fit`.

    See Also
    --------
    RandomProjection : Reduce the feature dimension of the grids.
    PatchCoreDetector : The detector these features were designed for.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import LocalAggregation
    >>> grids = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    >>> LocalAggregation(size=3).fit_transform(grids).shape
    (2, 4, 4, 3)
    """

    _parameter_constraints: dict = {
        "size": [Interval(Integral, 1, None, closed="left")],
        "copy": ["boolean"],
        "device": [str],
    }

    @_deprecate_positional_args(version="0.3")
    def __init__(self, *, size=AGGREGATION_SIZE, copy=True, device="cpu"):
        self.size = size
        self.copy = copy
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Record the feature count of the grids.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids (2-D input is read as ``(n, 1, 1, d)``).
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : object
            Fitted transformer.
        """
        self._check_params()
        with restore_on_error(self):
            check_grids(self, X, reset=True)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit to ``X`` and aggregate it, validating the (possibly large) grids once.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        grids : ndarray of shape (n, h, w, d) or (n, d), float32
            Aggregated grids, same shape as ``X``.
        """
        self._check_params()
        with restore_on_error(self):
            grids, was_2d = check_grids(self, X, reset=True)
        return self._aggregate(grids, was_2d)

    def _check_params(self):
        if self.size % 2 == 0:
            raise ValueError(f"size must be an odd integer >= 1; got size={self.size}.")
        resolve_device(self.device)  # so that fit refuses what transform would

    def transform(self, X):
        """Replace each patch feature by the mean over its neighbourhood.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.

        Returns
        -------
        grids : ndarray of shape (n, h, w, d) or (n, d), float32
            Aggregated grids, same shape as ``X``.
        """
        check_is_fitted(self)
        # size is read here, not in fit: a set_params since fit must be checked now.
        self._validate_params()
        self._check_params()
        return self._aggregate(*check_grids(self, X, reset=False))

    def _aggregate(self, grids, was_2d):
        n, h, w, d = grids.shape
        if self.size > 1 and h * w > 1:
            # Images are aggregated independently, a few at a time, so the result can be
            # written over the input (copy=False) with one chunk of work memory.
            out = grids if not self.copy and grids.flags.writeable else np.empty_like(grids)
            device = resolve_device(self.device)
            step = max(1, _CHUNK_BYTES // (h * w * d * grids.itemsize))
            with torch.inference_mode():
                target = torch.from_numpy(out)
                for start in range(0, n, step):
                    # (n, h, w, d) viewed as NCHW in channels-last layout: no copy in or out.
                    block = to_device(grids[start : start + step], device).permute(0, 3, 1, 2)
                    pooled = self._pool(block)
                    if not bool(torch.isfinite(pooled).all()):
                        # The float32 sum of huge finite values overflows; their mean does not.
                        pooled = self._pool(block.double())
                    target[start : start + step].copy_(pooled.permute(0, 2, 3, 1))
            grids = out
        return grids.reshape(n, -1) if was_2d else grids

    def _pool(self, block):
        # count_include_pad=False: the mean of the existing neighbours at the border.
        return F.avg_pool2d(
            block, self.size, stride=1, padding=self.size // 2, count_include_pad=False
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
