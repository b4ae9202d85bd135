"""Model files: a fitted model in one file that holds no pickle, so loading runs no code.

:func:`save_model` writes a fitted model (a detector, a Pipeline ending in one, a
:class:`~sklearn_memad.thresholds.ThresholdedDetector` around either, or a
:class:`~sklearn_memad.MultiCategoryDetector` with its one backbone and its heads) to one
`safetensors <https://huggingface.co/docs/safetensors>`_ file. The arrays are the file's
tensors; the file's metadata header holds the format number, a JSON description of each
estimator (its class name, its constructor parameters and its other attributes, with
references to the arrays) and a JSON dict of metadata (versions, input size, what
``memad fit`` records). :func:`load_model` checks all of it and builds the model again:
each estimator's class is looked up by name in a fixed list, constructed from its
parameters, and given its attributes; no name read from the file is imported, and nothing in
the file is executed. :func:`read_model_info` reads the metadata alone.

The classes a model file may hold: ``sklearn_memad`` ``FeatureTransformer``,
``LocalAggregation``, ``RandomProjection``, ``PaDiMDetector``, ``PatchCoreDetector``,
``DFKDEDetector``, ``ThresholdedDetector``, ``MultiCategoryDetector``,
``pipelines.DetectorPipeline``, and scikit-learn's ``Pipeline``, ``GaussianRandomProjection``
and ``SparseRandomProjection``. Their attributes may be NumPy arrays (of numbers or bools,
or of str, such as category names) and scalars (bool, int, uint, float), Python numbers,
strings, None, lists, tuples, dicts, paths, ``RandomState`` instances, SciPy CSR/CSC matrices
and other estimators of the list; anything else is refused when saving, naming the attribute.

Files written with :mod:`joblib` or :mod:`pickle` (like model files of sklearn_memad 0.1) are
refused without being unpickled. ``joblib.dump`` / ``joblib.load`` of a fitted pipeline still
work, for Python users who trust their files.
"""

import json

import numpy as np
import sklearn
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.random_projection import GaussianRandomProjection, SparseRandomProjection

from ..categories import MultiCategoryDetector
from ..detectors import DFKDEDetector, PaDiMDetector, PatchCoreDetector
from ..features import FeatureTransformer
from ..pipelines import DetectorPipeline
from ..thresholds import ThresholdedDetector
from ..transformers import LocalAggregation, RandomProjection
from ..utils.pipeline import model_parts
from ..utils.validation import check_image_size
from ._codec import Decoder, Encoder, ModelFileError
from ._container import open_model_file, write_model_file

__all__ = [
    "MODEL_FORMAT",
    "ModelFileError",
    "inner_pipeline",
    "load_model",
    "read_model_info",
    "save_model",
]

#: Version of the model-file layout; a reader refuses files with a newer one. Format 1 was
#: a joblib pickle (sklearn_memad 0.1), which is refused without being unpickled.
MODEL_FORMAT = 2
_FIRST_FORMAT = 2
_MARKER = "sklearn_memad_model"

# The only classes a model file can name; a name outside this list is refused.
_CLASSES = {
    "sklearn_memad.FeatureTransformer": FeatureTransformer,
    "sklearn_memad.LocalAggregation": LocalAggregation,
    "sklearn_memad.RandomProjection": RandomProjection,
    "sklearn_memad.PaDiMDetector": PaDiMDetector,
    "sklearn_memad.PatchCoreDetector": PatchCoreDetector,
    "sklearn_memad.DFKDEDetector": DFKDEDetector,
    "sklearn_memad.ThresholdedDetector": ThresholdedDetector,
    "sklearn_memad.MultiCategoryDetector": MultiCategoryDetector,
    "sklearn_memad.pipelines.DetectorPipeline": DetectorPipeline,
    "sklearn.pipeline.Pipeline": Pipeline,
    "sklearn.random_projection.GaussianRandomProjection": GaussianRandomProjection,
    "sklearn.random_projection.SparseRandomProjection": SparseRandomProjection,
}


def inner_pipeline(model):
    """The Pipeline from images to the detector of ``model``, or None if it has none.

    ``model`` is a Pipeline, or a fitted wrapper (a ThresholdedDetector) around one.

    Parameters
    ----------
    model : estimator
        A fitted model.

    Returns
    -------
    pipeline : Pipeline or None
        The outermost Pipeline of ``model``; None for a bare detector, an unfitted wrapper,
        or a MultiCategoryDetector, which has one pipeline per category
        (:meth:`~sklearn_memad.MultiCategoryDetector.category_pipeline`).

    Examples
    --------
    >>> from sklearn_memad import PaDiMDetector
    >>> from sklearn_memad.persistence import inner_pipeline
    >>> from sklearn_memad.pipelines import make_detector_pipeline
    >>> pipe = make_detector_pipeline("padim", backbone="resnet18", weights=None)
    >>> inner_pipeline(pipe) is pipe, inner_pipeline(PaDiMDetector())
    (True, None)
    """
    try:
        return model_parts(model).pipeline
    except (TypeError, NotFittedError):
        return None


def _check_model(model, where):
    """What the metadata says of ``model``: ``method`` and ``image_size`` (and the
    ``categories`` of a MultiCategoryDetector); a ModelFileError unless it is a fitted
    sklearn_memad model."""
    if isinstance(model, MultiCategoryDetector):
        return _check_categories_model(model, where)
    try:
        parts = model_parts(model)
    except (TypeError, NotFittedError):
        parts = None
    if parts is None or not hasattr(parts.detector, "offset_"):
        raise ModelFileError(
            f"{where} is not a fitted sklearn_memad model: expected a fitted detector, or a "
            "Pipeline or ThresholdedDetector ending in one (write one with `memad fit` or "
            f"save_model); got {'an unfitted ' if parts else 'a '}{type(model).__name__}."
        )
    steps = parts.pipeline.steps if parts.pipeline is not None else []
    first = steps[0][1] if steps else None
    return {"method": type(parts.detector).__name__, "image_size": _image_size(first)}


def _image_size(features):
    """The input ``(H, W)`` of a FeatureTransformer's backbone; None for anything else."""
    if not isinstance(features, FeatureTransformer):
        return None
    return check_image_size(features.image_size)


def _check_categories_model(model, where):
    """:func:`_check_model` of a MultiCategoryDetector: one fitted head per category."""
    names = getattr(model, "categories_", None)
    heads = getattr(model, "heads_", None)
    features = getattr(model, "features_", None)
    fitted = (
        isinstance(names, np.ndarray)
        and names.ndim == 1
        and names.size > 0
        and names.dtype.kind in "Ui"
        and np.array_equal(np.unique(names), names)
        and type(heads) is dict
        and list(heads) == names.tolist()
        and isinstance(features, FeatureTransformer)
        and hasattr(features, "init_seed_")
    )
    if not fitted:
        raise ModelFileError(
            f"{where} is not a fitted MultiCategoryDetector: expected a fitted "
            "FeatureTransformer as features_, the sorted, distinct category names as "
            "categories_ and a dict heads_ with one fitted head per category, in that order."
        )
    methods = {
        _check_model(head, f"{where}.heads_[{name!r}]")["method"] for name, head in heads.items()
    }
    return {
        "method": ", ".join(sorted(methods)),
        "image_size": _image_size(features),
        "categories": names.tolist(),
    }


def _info(summary, metadata):
    """The metadata dict written beside the model."""
    from .. import __version__

    info = {
        "version": __version__,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        **summary,
    }
    taken = sorted(set(metadata) & (set(info) | {_MARKER}))
    if taken:
        raise ValueError(f"save_model writes the metadata {taken} itself; use other names.")
    return {**info, **metadata}


def _dumps(value):
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def save_model(model, path, **metadata):
    """Write a fitted model to one file that :func:`load_model` reads back, without pickle.

    The file is a safetensors file: the model's arrays are its tensors, and its metadata
    header holds ``"sklearn_memad_model"`` (the format number), ``"model"`` (the JSON of
    each estimator: class name, parameters and fitted attributes) and ``"info"`` (the JSON
    of the metadata). See the module docstring for what a model may hold.

    Parameters
    ----------
    model : Pipeline, ThresholdedDetector, MultiCategoryDetector or detector
        Fitted: a Pipeline from images (starting with a FeatureTransformer, as ``memad
        score`` needs) or from grids, ending in a sklearn_memad detector; a fitted
        :class:`~sklearn_memad.thresholds.ThresholdedDetector` around one; a fitted
        :class:`~sklearn_memad.MultiCategoryDetector`; or a detector.
    path : str or path-like
        Destination file, replaced in one step (never left half-written).
    **metadata
        Extra plain values (numbers, strings, None, lists, tuples, dicts) stored beside
        the model, e.g. the training folder.

    Returns
    -------
    info : dict
        What :func:`read_model_info` gives for the file: ``sklearn_memad_model``,
        ``version``, ``sklearn_version``, ``numpy_version``, ``method`` (the detector's
        class; for a MultiCategoryDetector, its heads' detector classes, comma-separated),
        ``image_size`` (the input ``(H, W)``, or None), for a MultiCategoryDetector
        ``categories`` (the list of its category names), and ``metadata``'s entries.

    Raises
    ------
    ModelFileError
        If ``model`` is not a fitted sklearn_memad model.
    TypeError
        If an attribute (or a metadata value) is of a type a model file cannot hold; the
        message names it, e.g. ``model.steps[1][1].cache_``.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_memad import PatchCoreDetector
    >>> from sklearn_memad.persistence import load_model, save_model
    >>> grids = np.random.default_rng(0).normal(size=(10, 4, 4, 8)).astype(np.float32)
    >>> detector = PatchCoreDetector(coreset_ratio=0.5, random_state=0).fit(grids)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> save_model(detector, path, line="press 3")["method"]
    'PatchCoreDetector'
    >>> loaded = load_model(path)
    >>> bool(np.array_equal(loaded.score_samples(grids), detector.score_samples(grids)))
    True
    """
    info = _info(_check_model(model, "model"), metadata)
    info_json = _dumps(Encoder(_CLASSES, arrays=False).encode(info, "metadata"))
    encoder = Encoder(_CLASSES)
    document = _dumps(encoder.encode(model, "model"))
    header = {_MARKER: str(MODEL_FORMAT), "info": info_json, "model": document}
    write_model_file(path, encoder.tensors, header)
    return {_MARKER: MODEL_FORMAT, **info}


def _parse(header, key, path):
    """The JSON entry ``key`` of the file's header."""
    if key not in header:
        raise ModelFileError(f"'{path}' is a damaged model file: its header has no '{key}'.")
    try:
        return json.loads(header[key])
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(
            f"'{path}' is a damaged model file: its '{key}' entry is not valid JSON ({exc})."
        ) from None


def _check_format(header, path):
    from .. import __version__

    if _MARKER not in header:
        raise ModelFileError(
            f"'{path}' is a safetensors file but not a sklearn_memad model file (its header "
            f"has no '{_MARKER}' entry); write model files with save_model or `memad fit`."
        )
    written = header[_MARKER]
    if not (written.isascii() and written.isdecimal()):
        raise ModelFileError(f"'{path}' has a format number that is not one: {written!r}.")
    if int(written) > MODEL_FORMAT:
        raise ModelFileError(
            f"'{path}' is a model file of format {int(written)}, newer than this "
            f"sklearn_memad ({__version__}) reads (formats {_FIRST_FORMAT} to {MODEL_FORMAT}). "
            "Upgrade sklearn_memad, or refit the model with this version."
        )
    if int(written) < _FIRST_FORMAT:
        raise ModelFileError(f"'{path}' claims format {int(written)}, which was never a file.")
    return int(written)


def _decode(decoder, node, path, what):
    try:
        return decoder.decode(node, what)
    except ModelFileError as exc:
        raise ModelFileError(f"'{path}' is a damaged model file: {exc}") from None
    except RecursionError:
        raise ModelFileError(f"'{path}' is a damaged model file: {what} nests too deep.") from None


def _read_info(handle, path):
    header = handle.metadata() or {}
    written = _check_format(header, path)
    info = _decode(Decoder(_CLASSES), _parse(header, "info", path), path, "metadata")
    if type(info) is not dict:
        raise ModelFileError(f"'{path}' is a damaged model file: its metadata is not a dict.")
    return {_MARKER: written, **info}, header


def read_model_info(path):
    """The metadata of a model file, without building the model or reading its arrays.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model` (or ``memad fit``).

    Returns
    -------
    info : dict
        ``sklearn_memad_model`` (the format), ``version``, ``sklearn_version`` and
        ``numpy_version`` (those that wrote the file), ``method`` (the detector's class),
        ``image_size`` (the input ``(H, W)``, or None), ``categories`` (for a
        MultiCategoryDetector: its category names), and the metadata passed to
        :func:`save_model` (``memad fit`` records ``train``, ``n_train``, ``created``, and with
        ``--validation`` the validation folder and the pixel threshold).

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ModelFileError
        If the file is not a sklearn_memad model file, is damaged, or has a newer format.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_memad import PaDiMDetector
    >>> from sklearn_memad.persistence import read_model_info, save_model
    >>> grids = np.random.default_rng(0).normal(size=(10, 2, 2, 4))
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> _ = save_model(PaDiMDetector().fit(grids), path, train="tiles/good")
    >>> info = read_model_info(path)
    >>> info["method"], info["train"], info["image_size"]
    ('PaDiMDetector', 'tiles/good', None)
    """
    with open_model_file(path) as handle:
        return _read_info(handle, path)[0]


def load_model(path, *, return_info=False):
    """Build the fitted model saved in a model file, checking everything it reads.

    Loading runs no code from the file: the file holds no pickle; each estimator is built
    from a fixed list of classes (see the module docstring) and its parameters, then given
    its attributes; every array's dtype and shape is checked against the model's record.
    The file does not depend on how the installed scikit-learn pickles, so it loads under
    other versions of scikit-learn, NumPy and torch; the arrays come back bit for bit.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model` (or ``memad fit``).
    return_info : bool, default=False
        Also return the metadata, as :func:`read_model_info` gives it.

    Returns
    -------
    model : Pipeline, ThresholdedDetector, MultiCategoryDetector or detector
        The fitted model, as saved.
    info : dict
        The metadata; only when ``return_info`` is True.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file.
    ModelFileError
        If the file is not a sklearn_memad model file (a pickle, such as a joblib file of
        sklearn_memad 0.1, is refused unread), is damaged or altered (malformed JSON,
        missing, extra or mismatched arrays, a class outside the list), or has a newer
        format.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_memad import DFKDEDetector
    >>> from sklearn_memad.persistence import load_model, save_model
    >>> grids = np.random.default_rng(0).normal(size=(12, 3, 3, 4)).astype(np.float32)
    >>> detector = DFKDEDetector().fit(grids)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    >>> _ = save_model(detector, path)
    >>> loaded, info = load_model(path, return_info=True)
    >>> type(loaded).__name__, info["sklearn_memad_model"]
    ('DFKDEDetector', 2)
    >>> bool(np.array_equal(loaded.score_samples(grids), detector.score_samples(grids)))
    True
    """
    with open_model_file(path) as handle:
        info, header = _read_info(handle, path)
        decoder = Decoder(_CLASSES, handle)
        model = _decode(decoder, _parse(header, "model", path), path, "model")
        unused = decoder.unused_arrays()
    if unused:
        raise ModelFileError(
            f"'{path}' is a damaged model file: it holds arrays that its model does not use "
            f"({', '.join(unused[:5])}{', ...' if len(unused) > 5 else ''})."
        )
    _check_model(model, f"'{path}'")
    return (model, info) if return_info else model
