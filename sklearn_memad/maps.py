"""Pixel anomaly maps: a detector's patch map, upsampled to the image and smoothed.

:func:`anomaly_maps` gives the maps of a fitted pipeline or detector; :func:`predict_anomaly_maps`
gives maps, image scores and decisions from one pass over the backbone; :func:`anomaly_map_range`
is the colour range that makes maps of one detector comparable.
"""

from functools import lru_cache
from numbers import Integral, Real

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, Interval, validate_params

from . import defaults
from .detectors import image_scores_from_patches
from .features import FeatureTransformer
from .utils.chunking import check_chunk_size, chunk_rows, sample_chunks, sample_count
from .utils.pipeline import decision_threshold, model_parts
from .utils.scores import percentiles, reference_scores
from .utils.validation import check_image_layout, check_image_values

__all__ = [
    "MAX_SIGMA",
    "anomaly_map_range",
    "anomaly_maps",
    "patch_to_pixel_maps",
    "predict_anomaly_maps",
]

#: Largest map smoothing (pixels). Building the smoothing operator costs memory in proportion
#: to the map's side times the kernel's width, and a wider kernel flattens any map anyway.
MAX_SIGMA = 1000.0


def check_sigma(sigma, name="sigma"):
    """Return ``sigma`` as a float, or raise a ValueError naming it and the valid range."""
    if isinstance(sigma, bool) or not isinstance(sigma, Real) or not 0 <= sigma <= MAX_SIGMA:
        raise ValueError(
            f"{name} must be a number of pixels in [0, {MAX_SIGMA:g}] (0: no smoothing); "
            f"got {sigma!r}."
        )
    return float(sigma)


def patch_to_pixel_maps(patch_maps, output_size, sigma=4.0):
    """Upsample ``(n, h, w)`` patch maps bilinearly to ``output_size`` and smooth them.

    The same as ``torch.nn.functional.interpolate(..., mode="bilinear",
    align_corners=False)`` followed by ``scipy.ndimage.gaussian_filter(..., sigma,
    mode="reflect", truncate=4.0)`` on each map, computed as ``A @ map @ B.T``: both steps
    are separable linear maps, so one ``(H, h)`` and one ``(W, w)`` matrix do it all.

    Parameters
    ----------
    patch_maps : ndarray of shape (n, h, w)
        Patch anomaly scores.
    output_size : tuple of int
        ``(H, W)`` of the pixel maps.
    sigma : float in [0, 1000], default=4.0
        Standard deviation (pixels) of the Gaussian smoothing; 0 disables it.

    Returns
    -------
    maps : ndarray of shape (n, H, W), float32
    """
    sigma = check_sigma(sigma)
    patch_maps = np.ascontiguousarray(patch_maps, dtype=np.float32)
    height, width = (int(v) for v in output_size)
    out = np.empty((patch_maps.shape[0], height, width), dtype=np.float32)
    _pixel_maps_into(patch_maps, out, sigma)
    return out


def _pixel_maps_into(patch_maps, out, sigma):
    """:func:`patch_to_pixel_maps` of ``patch_maps`` (n, h, w), written into ``out``."""
    patch_maps = np.ascontiguousarray(patch_maps, dtype=np.float32)
    n, h, w = patch_maps.shape
    height, width = out.shape[1:]
    rows, cols = _pixel_operators(h, w, height, width, float(sigma))
    step = chunk_rows(height * (width + w) * 4)
    with torch.inference_mode():
        for start in range(0, n, step):
            block = torch.from_numpy(patch_maps[start : start + step])
            torch.matmul(
                torch.matmul(rows, block), cols, out=torch.from_numpy(out[start : start + step])
            )


@lru_cache(maxsize=16)
def _pixel_operators(h, w, height, width, sigma):
    """The ``(H, h)`` and ``(w, W)`` operators, built once per shape.

    Building them calls NumPy's BLAS (see :mod:`sklearn_memad.utils.tensors` for why that
    is kept out of loops); cached, it runs once per shape instead of once per batch.
    """
    rows = torch.from_numpy(_upsample_and_smooth(h, height, sigma))
    cols = torch.from_numpy(_upsample_and_smooth(w, width, sigma).T.copy())
    return rows, cols


def _upsample_and_smooth(size, out_size, sigma):
    """``(out_size, size)`` matrix: 1-D linear upsampling, then Gaussian smoothing."""
    identity = torch.eye(size, dtype=torch.float64)[None]
    # Interpolating the identity gives the interpolation matrix, column by column.
    upsample = F.interpolate(identity, size=out_size, mode="linear", align_corners=False)[0].T
    upsample = upsample.numpy()
    if sigma <= 0:
        return upsample.astype(np.float32)
    radius = int(4.0 * sigma + 0.5)  # scipy's truncate=4.0
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    # mode="reflect" mirrors about the edge (d c b a | a b c d | d c b a), however far.
    mirrored = np.pad(np.arange(out_size), radius, mode="symmetric")
    smooth = np.zeros((out_size, out_size))
    targets = np.arange(out_size)[:, None]
    np.add.at(smooth, (targets, mirrored[targets + taps + radius]), kernel)
    return (smooth @ upsample).astype(np.float32)


def _chunk_size(parts, chunk_size):
    """``chunk_size`` if given, else the pipeline's own, else the default."""
    if chunk_size is None:
        chunk_size = getattr(parts.pipeline, "chunk_size", defaults.SCORE_CHUNK)
    return check_chunk_size(chunk_size)


def _checked_input(parts, X):
    """``X``, checked as a whole when the model starts from images.

    The chunks are then slices of the checked batch, so a refusal (a ragged list, a bad
    shape or value) names the shapes of the whole batch and no chunk can hide one.
    """
    first = parts.head
    while first is not None and hasattr(first, "steps"):
        first = first.steps[0][1]
    if not isinstance(first, FeatureTransformer):
        return X
    images = check_image_layout(X)
    check_image_values(images)
    return images


def _patch_scores(parts, chunk):
    grids = parts.head.transform(chunk) if parts.head is not None else chunk
    return parts.detector.score_patches(grids)


def _maps_and_scores(parts, X, output_size, sigma, chunk_size):
    """Pixel maps and image anomaly scores of ``X``, the whole model one chunk at a time.

    Only the maps (the result) grow with the number of images; the grids and patch scores
    of one chunk exist at a time.
    """
    sigma = check_sigma(sigma)
    top_k, border = parts.detector.top_k, parts.detector.border
    n_samples = sample_count(X)
    if n_samples is None or n_samples <= chunk_size:
        patch_scores = _patch_scores(parts, X)
        maps = patch_to_pixel_maps(patch_scores, output_size, sigma)
        return maps, image_scores_from_patches(patch_scores, top_k, border)
    maps = np.empty((n_samples,) + tuple(int(v) for v in output_size), dtype=np.float32)
    scores = np.empty(n_samples)
    start = 0
    for chunk in sample_chunks(X, chunk_size):
        patch_scores = _patch_scores(parts, chunk)
        stop = start + len(patch_scores)
        scores[start:stop] = image_scores_from_patches(patch_scores, top_k, border)
        _pixel_maps_into(patch_scores, maps[start:stop], sigma)
        start = stop
    return maps, scores


@validate_params(
    {
        "estimator": [HasMethods(["fit"])],
        "X": ["array-like"],
        "sigma": [Interval(Real, 0, MAX_SIGMA, closed="both")],
        "output_size": [tuple, list, None],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def anomaly_maps(estimator, X, sigma=4.0, output_size=None, *, chunk_size=None):
    """Pixel anomaly maps (higher = more abnormal) from a fitted pipeline or detector.

    With a Pipeline that starts from images, ``X`` is the image batch and the maps have its
    resolution. With a bare detector, ``X`` is a batch of grids and ``output_size`` is required.
    The model runs on ``chunk_size`` images at a time (features, aggregation or projection,
    detector, maps), so only the maps grow with the number of images.

    Parameters
    ----------
    estimator : Pipeline or detector
        A fitted ``Pipeline`` ending in a sklearn_memad detector, or the detector itself.
    X : array-like of shape (n, H, W, 3), (n, H, W) or (n, h, w, d)
        Images for a pipeline, grids for a bare detector.
    sigma : float in [0, 1000], default=4.0
        Gaussian smoothing (pixels of the output) after bilinear upsampling; 0 disables it.
    output_size : tuple of int, default=None
        ``(H, W)`` of the maps; default: the size of the images ``X``.
    chunk_size : int, default=None
        Images per chunk; None takes the pipeline's ``chunk_size`` (a
        :class:`~sklearn_memad.pipelines.DetectorPipeline`'s), else
        ``sklearn_memad.defaults.SCORE_CHUNK``.

    Returns
    -------
    maps : ndarray of shape (n, H, W), float32
        Pixel anomaly maps.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import PaDiMDetector, anomaly_maps
    >>> rng = np.random.default_rng(0)
    >>> detector = PaDiMDetector().fit(rng.normal(size=(20, 4, 4, 3)))
    >>> anomaly_maps(detector, rng.normal(size=(2, 4, 4, 3)), output_size=(32, 32)).shape
    (2, 32, 32)
    """
    parts = model_parts(estimator)
    chunk_size = _chunk_size(parts, chunk_size)
    if output_size is None:
        if parts.head is None:
            raise ValueError(
                "output_size is required with a bare detector (X holds grids, not images); "
                "pass output_size=(H, W)."
            )
        shape = np.shape(X)
        if len(shape) not in (3, 4):
            raise ValueError(
                f"X must be images (n, H, W, 3) or (n, H, W) for a pipeline; got shape {shape}."
            )
        output_size = shape[1:3]
    if len(output_size) != 2 or not all(isinstance(v, Integral) and v > 0 for v in output_size):
        raise ValueError(f"output_size must be two positive integers (H, W); got {output_size}.")
    X = _checked_input(parts, X)
    return _maps_and_scores(parts, X, output_size, sigma, chunk_size)[0]


def anomaly_map_range(detector):
    """Colour range ``(vmin, vmax)`` for the anomaly maps of a fitted detector.

    ``vmin`` is the median out-of-sample image anomaly score of the training images (how far
    the worst patch of a normal image typically goes); ``vmax`` puts the image threshold in
    the middle of the range: ``-offset_``, or ``-threshold_`` of a
    :class:`~sklearn_memad.thresholds.ThresholdedDetector`.

    Parameters
    ----------
    detector : fitted detector, Pipeline ending in one, or ThresholdedDetector around either

    Returns
    -------
    vmin, vmax : float
    """
    final = model_parts(detector).detector
    normal = -np.asarray(final.train_scores_, dtype=float)
    threshold = -decision_threshold(detector)
    vmin = float(np.median(normal))
    if threshold > vmin:
        return vmin, 2 * threshold - vmin
    q1, q3 = np.percentile(normal, [25, 75])
    return vmin, vmin + max(3 * (q3 - q1), abs(vmin) * 0.1, 1e-6)


def predict_anomaly_maps(estimator, X, *, sigma=4.0, chunk_size=None):
    """Pixel anomaly maps, image anomaly scores and labels from one pass over the backbone.

    The maps and scores come from the detector at the end of ``estimator``; the decision
    (``threshold``, ``decision``, ``labels``) from whatever decides on top of it: a
    :class:`~sklearn_memad.thresholds.ThresholdedDetector`'s ``threshold_`` when the
    pipeline is wrapped in one (or ends with one), else the detector's own ``offset_``.
    Everything agrees with the estimator's ``score_samples``, ``decision_function`` and
    ``predict``. The model runs on ``chunk_size`` images at a time (features, aggregation or
    projection, detector, maps), so only the results grow with the number of images.

    Parameters
    ----------
    estimator : Pipeline or ThresholdedDetector
        Fitted, from images to a sklearn_memad detector; or a fitted ThresholdedDetector
        wrapping such a pipeline.
    X : array-like of shape (n, H, W, 3) or (n, H, W)
        Images.
    sigma : float in [0, 1000], default=4.0
        Gaussian smoothing of the maps (pixels).
    chunk_size : int, default=None
        Images per chunk; None takes the pipeline's ``chunk_size`` (a
        :class:`~sklearn_memad.pipelines.DetectorPipeline`'s), else
        ``sklearn_memad.defaults.SCORE_CHUNK``.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``maps`` (n, H, W) float32, higher = more abnormal; ``scores`` (n,) image anomaly
        scores (``-score_samples``); ``percentiles`` (n,) the same scores as anomaly
        percentiles, 0-100 (see :func:`~sklearn_memad.thresholds.anomaly_percentile`);
        ``threshold``, the image threshold on the ``scores`` scale (``-offset_`` or
        ``-threshold_``); ``labels`` (n,) +1 normal / -1 anomaly, as ``predict``;
        ``decision`` (n,), as ``decision_function``; ``vmin``, ``vmax`` from
        :func:`anomaly_map_range`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn_memad import FeatureTransformer, PaDiMDetector
    >>> from sklearn_memad.maps import predict_anomaly_maps
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(12, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_pipeline(
    ...     FeatureTransformer(backbone="resnet18", weights=None, image_size=32,
    ...                        max_features=8, random_state=0),
    ...     PaDiMDetector(),
    ... ).fit(images[:10])
    >>> result = predict_anomaly_maps(pipe, images[10:])
    >>> result.maps.shape, result.labels.shape
    ((2, 32, 32), (2,))
    >>> bool(np.allclose(result.decision, pipe.decision_function(images[10:])))
    True
    """
    sigma = check_sigma(sigma)  # before the backbone runs
    parts = model_parts(estimator)
    chunk_size = _chunk_size(parts, chunk_size)
    images = np.asarray(_checked_input(parts, X))
    maps, scores = _maps_and_scores(parts, images, images.shape[1:3], sigma, chunk_size)
    threshold = decision_threshold(estimator)
    decision = -scores - threshold
    vmin, vmax = anomaly_map_range(estimator)
    return Bunch(
        maps=maps,
        scores=scores,
        percentiles=percentiles(reference_scores(parts.detector), scores),
        threshold=-threshold,
        decision=decision,
        labels=np.where(decision < 0, -1, 1),
        vmin=vmin,
        vmax=vmax,
    )
