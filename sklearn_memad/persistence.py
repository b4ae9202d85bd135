"""Model files that say what they hold: a fitted pipeline with a checked header.

:func:`save_model` / :func:`load_model` write and read a fitted pipeline with a small header
(a marker, the format and library versions, the input image size), so a file that is not a
model, or one from an incompatible version, is refused with a clear message. The model may
also be a :class:`~sklearn_memad.thresholds.ThresholdedDetector` around such a pipeline, whose
threshold was chosen on validation images (``memad fit --validation``).
"""

import os
import warnings
from numbers import Integral

import joblib
import sklearn
from sklearn.exceptions import InconsistentVersionWarning, NotFittedError
from sklearn.pipeline import Pipeline

from .detectors import BaseMemoryDetector
from .features import FeatureTransformer
from .thresholds import ThresholdedDetector
from .utils.pipeline import model_parts
from .utils.validation import check_image_size

__all__ = ["MODEL_FORMAT", "ModelFileError", "inner_pipeline", "load_model", "save_model"]

#: Version of the model-file layout; a reader refuses files with a newer one.
MODEL_FORMAT = 1
_MARKER = "sklearn_memad_model"


class ModelFileError(ValueError):
    """A model file cannot be used: it is not a sklearn_memad model, or not a compatible one."""


def inner_pipeline(model):
    """The Pipeline from images to the detector of ``model``, or None if it has none.

    ``model`` is a Pipeline, or a fitted wrapper (a ThresholdedDetector) around one.
    """
    try:
        return model_parts(model).pipeline
    except (TypeError, NotFittedError):
        return None


def _image_size_of(pipeline):
    """(H, W) the pipeline's FeatureTransformer resizes to, or None."""
    return check_image_size(getattr(inner_pipeline(pipeline).steps[0][1], "image_size", None))


def _check_pipeline(model, path):
    pipeline = inner_pipeline(model)
    ok = (
        isinstance(pipeline, Pipeline)
        and isinstance(pipeline.steps[0][1], FeatureTransformer)
        and isinstance(pipeline.steps[-1][1], BaseMemoryDetector)
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
        "method": type(inner_pipeline(pipeline).steps[-1][1]).__name__,
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
