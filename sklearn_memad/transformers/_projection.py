"""Reduce the feature axis of patch-feature grids by a random projection or channel pick."""

from numbers import Integral

import numpy as np
import scipy.sparse
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.random_projection import GaussianRandomProjection, SparseRandomProjection
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _deprecate_positional_args, check_is_fitted

from ..utils.devices import resolve_device, to_device
from ..utils.validation import check_grids, restore_on_error


class RandomProjection(TransformerMixin, BaseEstimator):
    """Map the last axis ``d`` of patch-feature grids to ``n_components`` features.

    ``"gaussian"`` and ``"sparse"`` use scikit-learn's random projections; ``"channels"``
    keeps a random subset of the input channels, as PaDiM does.

    Parameters
    ----------
    n_components : int, default=100
        Output dimension ``d'``. For ``"channels"`` it must not exceed ``d``.
    method : {"gaussian", "sparse", "channels"}, default="gaussian"
        Kind of projection.
    random_state : int, RandomState instance or None, default=None
        Seed of the projection; the same seed gives the same projection.
    device : str, default="cpu"
        Torch device that projects (``"gaussian"``, ``"sparse"``): ``"cpu"``, ``"cuda"``,
        ``"cuda:<index>"`` or ``"auto"`` (CUDA when available). Grids come in and go out as
        NumPy arrays either way.

    Attributes
    ----------
    n_features_in_ : int
        Number of input features ``d``.
    projection_ : GaussianRandomProjection or SparseRandomProjection
        The fitted scikit-learn projection (``"gaussian"``, ``"sparse"``).
    channels_ : ndarray of shape (n_components,)
        Sorted indices of the kept channels (``"channels"``).

    See Also
    --------
    sklearn.random_projection.GaussianRandomProjection : The projection used here.
    LocalAggregation : Neighbourhood mean of the grids.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import RandomProjection
    >>> grids = np.random.default_rng(0).random((2, 4, 4, 32), dtype=np.float32)
    >>> proj = RandomProjection(n_components=8, method="channels", random_state=0)
    >>> proj.fit_transform(grids).shape
    (2, 4, 4, 8)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "method": [StrOptions({"gaussian", "sparse", "channels"})],
        "random_state": ["random_state"],
        "device": [str],
    }

    @_deprecate_positional_args(version="0.3")
    def __init__(self, *, n_components=100, method="gaussian", random_state=None, device="cpu"):
        self.n_components = n_components
        self.method = method
        self.random_state = random_state
        self.device = device

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Draw the projection for the feature count of ``X``.

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
        with restore_on_error(self):
            self._fit(check_grids(self, X, reset=True)[0])
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit to ``X`` and project it, validating the (possibly large) grids once.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        grids : ndarray of shape (n, h, w, n_components) or (n, n_components), float32
            Projected grids.
        """
        with restore_on_error(self):
            grids, was_2d = check_grids(self, X, reset=True)
            self._fit(grids)
            return self._project(grids, was_2d)  # its errors must undo the fit too

    def _fit(self, grids):
        resolve_device(self.device)  # so that fit refuses what transform would
        if isinstance(self.n_components, bool):  # an Integral to scikit-learn's validation
            raise TypeError(
                f"n_components must be an int >= 1, not a bool; got {self.n_components!r}."
            )
        d = grids.shape[-1]
        if self.method == "channels":
            if self.n_components > d:
                raise ValueError(
                    f"n_components={self.n_components} channels cannot be picked from X with "
                    f"d={d} features; expected n_components <= {d}."
                )
            rng = check_random_state(self.random_state)
            channels = np.sort(rng.choice(d, size=self.n_components, replace=False))
            projection = None
        else:
            kind = (
                GaussianRandomProjection if self.method == "gaussian" else SparseRandomProjection
            )
            # Only the feature count matters to the projection: fit it on one row.
            projection = kind(n_components=self.n_components, random_state=self.random_state)
            projection.fit(grids[:1, 0, 0, :])
            channels = None
        self.channels_ = channels
        self.projection_ = projection

    def transform(self, X):
        """Project the last axis of ``X``.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.

        Returns
        -------
        grids : ndarray of shape (n, h, w, n_components) or (n, n_components), float32
            Projected grids.
        """
        check_is_fitted(self)
        return self._project(*check_grids(self, X, reset=False))

    def _project(self, grids, was_2d):
        n, h, w, d = grids.shape
        if self.method == "channels":
            out = np.take(grids, self.channels_, axis=-1)  # faster than fancy indexing
        else:
            # scikit-learn's projection matrix, applied by torch: see
            # sklearn_memad.utils.tensors. float64 products rounded to float32 do not depend on
            # how rows are batched.
            components = self.projection_.components_
            if scipy.sparse.issparse(components):
                components = components.toarray()
            device = resolve_device(self.device)
            flat = grids.reshape(-1, d)
            matrix = to_device(np.asarray(components, np.float64), device).T
            out = torch.empty((flat.shape[0], matrix.shape[1]), dtype=torch.float32)
            step = max(1, (4 << 20) // (8 * d))  # 4 MiB of float64 rows at a time
            with torch.inference_mode():
                for start in range(0, flat.shape[0], step):
                    rows = to_device(flat[start : start + step], device).double()
                    out[start : start + step] = torch.mm(rows, matrix).cpu()
                finite = bool(torch.isfinite(out).all())
            if not finite:
                raise ValueError(
                    "X holds values so large that their projection exceeds the float32 range "
                    f"(largest magnitude {float(np.abs(grids).max()):.4g}); expected "
                    "patch features of moderate size."
                )
            out = out.numpy().reshape(n, h, w, -1)
        out = np.ascontiguousarray(out, dtype=np.float32)
        return out.reshape(n, -1) if was_2d else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
