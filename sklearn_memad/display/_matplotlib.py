"""AnomalyMapDisplay: images with their anomaly maps overlaid, drawn with matplotlib."""

import numpy as np

from ..maps import predict_anomaly_maps
from ._overlay import (
    ANCHORS,
    ANOMALY_COLOUR,
    COLOURS,
    FADE,
    NORMAL_COLOUR,
    as_rgb_uint8,
    normalise,
    score_caption,
)

__all__ = ["AnomalyMapDisplay"]


def _require_matplotlib():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "AnomalyMapDisplay needs matplotlib: pip install 'sklearn_memad[plot]' (or "
            "pip install matplotlib). write_overlay draws PNGs without it."
        ) from exc
    return plt


class AnomalyMapDisplay:
    """Images with their anomaly maps overlaid, in scikit-learn's Display style.

    Build it with :meth:`from_estimator` (a fitted pipeline and images) or
    :meth:`from_predictions` (images and maps you computed), which also plot; or create it
    directly and call :meth:`plot`. Needs matplotlib (``pip install 'sklearn_memad[plot]'``).

    Parameters
    ----------
    images : ndarray of shape (n, H, W, 3) or (n, H, W)
        uint8, or float in [0, 1].
    anomaly_maps : ndarray of shape (n, H, W)
        Pixel anomaly maps, higher = more abnormal.
    scores : ndarray of shape (n,), default=None
        Image anomaly scores, shown in the titles.
    threshold : float, default=None
        Image threshold; titles then say ANOMALY or normal.
    masks : ndarray of shape (n, H, W), default=None
        Ground-truth defect masks, outlined.
    vmin, vmax : float, default=None
        Colour range shared by all maps (default: the range of all maps).
    names : list of str, default=None
        Title prefix of each image (e.g. file names).

    Attributes
    ----------
    figure_ : matplotlib Figure
    ax_ : ndarray of matplotlib Axes
        One per image.
    images_ : list of matplotlib AxesImage
        The heat map layers.

    See Also
    --------
    write_overlay : The same picture as a PNG, without matplotlib.
    sklearn_memad.anomaly_maps : The maps themselves.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from sklearn_memad.display import AnomalyMapDisplay
    >>> images = np.full((2, 32, 32), 0.5)
    >>> maps = np.zeros((2, 32, 32)); maps[1, 8:16, 8:16] = 1.0
    >>> display = AnomalyMapDisplay.from_predictions(images, maps, scores=[0.0, 1.0],
    ...                                              threshold=0.5)
    >>> display.ax_.shape
    (2,)
    """

    def __init__(
        self,
        images,
        anomaly_maps,
        *,
        scores=None,
        threshold=None,
        masks=None,
        vmin=None,
        vmax=None,
        names=None,
    ):
        self.images = images
        self.anomaly_maps = anomaly_maps
        self.scores = scores
        self.threshold = threshold
        self.masks = masks
        self.vmin = vmin
        self.vmax = vmax
        self.names = names

    def plot(self, ax=None, *, n_cols=4, alpha=0.75, colorbar=True):
        """Draw each image with its map overlaid.

        Parameters
        ----------
        ax : matplotlib Axes or array-like of Axes, default=None
            One Axes per image; None makes a new figure with ``n_cols`` columns.
        n_cols : int, default=4
            Columns of a new figure.
        alpha : float, default=0.75
            Opacity of the colours at the top of the scale.
        colorbar : bool, default=True
            Add a colour bar of the anomaly-map values.

        Returns
        -------
        display : AnomalyMapDisplay
        """
        plt = _require_matplotlib()
        from matplotlib.colors import LinearSegmentedColormap

        images = np.asarray(self.images)
        maps = np.asarray(self.anomaly_maps, dtype=np.float32)
        if maps.ndim == 2:  # a single image and its map
            images, maps = images[None], maps[None]
        if len(images) != len(maps) or images.shape[1:3] != maps.shape[1:3]:
            raise ValueError(
                f"images and anomaly_maps must match: got images of shape {images.shape} "
                f"and maps of shape {maps.shape}; expected (n, H, W[, 3]) and (n, H, W)."
            )
        n = len(maps)
        axes = self._axes(plt, ax, n, n_cols)
        vmin = float(maps.min()) if self.vmin is None else float(self.vmin)
        vmax = float(maps.max()) if self.vmax is None else float(self.vmax)
        vmax = vmax if vmax > vmin else vmin + 1e-6
        cmap = LinearSegmentedColormap.from_list(
            "memad", [(a, c / 255) for a, c in zip(ANCHORS, COLOURS)]
        )
        self.images_ = []
        for i, axis in enumerate(axes):
            norm = normalise(maps[i], vmin, vmax)
            axis.imshow(as_rgb_uint8(images[i]))
            layer = axis.imshow(
                maps[i],
                cmap=cmap,
                vmin=vmin,
                vmax=vmax,
                alpha=alpha * np.clip(norm / FADE, 0, 1),
            )
            self.images_.append(layer)
            if self.masks is not None:
                axis.contour(
                    np.asarray(self.masks)[i], levels=[0.5], colors=["lime"], linewidths=1
                )
            axis.set_title(self._title(i), fontsize=9, color=self._title_colour(i))
            axis.set_axis_off()
        self.ax_ = axes
        self.figure_ = axes[0].figure
        if colorbar and self.images_:
            self.figure_.colorbar(self.images_[0], ax=list(axes), shrink=0.8, label="anomaly map")
        return self

    @staticmethod
    def _axes(plt, ax, n, n_cols):
        if ax is None:
            n_cols = max(1, min(n_cols, n))
            n_rows = -(-n // n_cols)
            fig, grid = plt.subplots(
                n_rows, n_cols, figsize=(3 * n_cols, 3 * n_rows), squeeze=False
            )
            grid = grid.ravel()
            for extra in grid[n:]:
                extra.set_axis_off()
            return grid[:n]
        axes = np.atleast_1d(np.asarray(ax, dtype=object)).ravel()
        if len(axes) != n:
            raise ValueError(f"ax must hold one Axes per image ({n}); got {len(axes)}.")
        return axes

    def _title(self, i):
        prefix = self.names[i] if self.names is not None else ""
        score = None if self.scores is None else float(np.asarray(self.scores)[i])
        return score_caption(score, self.threshold, prefix) or f"image {i}"

    def _title_colour(self, i):
        if self.scores is None or self.threshold is None:
            return "black"
        anomalous = float(np.asarray(self.scores)[i]) > self.threshold
        return np.array(ANOMALY_COLOUR if anomalous else NORMAL_COLOUR) / 255

    @classmethod
    def from_estimator(cls, estimator, X, *, masks=None, names=None, sigma=4.0, ax=None, **kwargs):
        """Compute the maps of ``X`` with a fitted pipeline and plot them.

        The colour range comes from the detector (see
        :func:`~sklearn_memad.maps.anomaly_map_range`), so maps of different calls compare, and
        titles give each image's score and verdict.

        Parameters
        ----------
        estimator : Pipeline or ThresholdedDetector
            Fitted, from images to a sklearn_memad detector, or a ThresholdedDetector
            wrapping one (whose threshold then decides the verdicts).
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images.
        masks : array-like of shape (n, H, W), default=None
            Ground-truth defect masks, outlined.
        names : list of str, default=None
            Title prefixes.
        sigma : float, default=4.0
            Smoothing of the maps (pixels).
        ax : matplotlib Axes or array of Axes, default=None
            Where to draw (one per image).
        **kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        display : AnomalyMapDisplay
        """
        _require_matplotlib()
        result = predict_anomaly_maps(estimator, X, sigma=sigma)
        display = cls(
            np.asarray(X),
            result.maps,
            scores=result.scores,
            threshold=result.threshold,
            masks=masks,
            vmin=result.vmin,
            vmax=result.vmax,
            names=names,
        )
        return display.plot(ax=ax, **kwargs)

    @classmethod
    def from_predictions(
        cls,
        X,
        anomaly_maps,
        *,
        scores=None,
        threshold=None,
        masks=None,
        vmin=None,
        vmax=None,
        names=None,
        ax=None,
        **kwargs,
    ):
        """Plot images with maps already computed (e.g. by :func:`sklearn_memad.anomaly_maps`).

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images.
        anomaly_maps : array-like of shape (n, H, W)
            Higher = more abnormal.
        scores : array-like of shape (n,), default=None
            Image anomaly scores (``-score_samples``).
        threshold : float, default=None
            Image threshold (``-offset_``).
        masks : array-like of shape (n, H, W), default=None
            Ground-truth defect masks.
        vmin, vmax : float, default=None
            Colour range (default: the range of all maps).
        names : list of str, default=None
            Title prefixes.
        ax : matplotlib Axes or array of Axes, default=None
            Where to draw (one per image).
        **kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        display : AnomalyMapDisplay
        """
        _require_matplotlib()
        display = cls(
            np.asarray(X),
            np.asarray(anomaly_maps),
            scores=scores,
            threshold=threshold,
            masks=masks,
            vmin=vmin,
            vmax=vmax,
            names=names,
        )
        return display.plot(ax=ax, **kwargs)
