"""The whole graph: images -> (scores, maps, labels), as a torch module and as ONNX."""

import warnings
from numbers import Integral

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..detectors import PatchCoreDetector, effective_border
from ..features import FeatureTransformer
from ..maps import check_sigma, patch_to_pixel_maps
from ..utils.pipeline import decision_threshold, model_parts
from ._input import BackboneFeatures, Preprocess
from ._scores import DETECTORS, MIDDLE_STEPS

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "as_torch_module", "to_onnx"]

#: Names of the graph's input and outputs, in order.
INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "maps", "labels")


def _map_operators(grid_shape, image_size, sigma):
    """The ``(H, h)`` and ``(W, w)`` operators of :func:`patch_to_pixel_maps`.

    A patch map that is one along one axis and a unit vector along the other is mapped to a
    column of the operator of that other axis: the single-column one is the identity.
    """
    (h, w), (height, width) = grid_shape, image_size
    rows = patch_to_pixel_maps(np.eye(h, dtype=np.float32)[:, :, None], (height, 1), sigma)
    cols = patch_to_pixel_maps(np.eye(w, dtype=np.float32)[:, None, :], (1, width), sigma)
    return torch.from_numpy(rows[:, :, 0].T.copy()), torch.from_numpy(cols[:, 0, :].T.copy())


class _ExportedPipeline(nn.Module):
    """Images -> (image anomaly scores, pixel anomaly maps, labels), as one module."""

    def __init__(
        self, preprocess, features, middle, detector, operators, top_k, border, threshold
    ):
        super().__init__()
        self.preprocess, self.features = preprocess, features
        self.middle = nn.ModuleList(middle)
        self.detector = detector
        self.register_buffer("rows", operators[0])
        self.register_buffer("cols_t", operators[1].T.contiguous())
        self.top_k = int(top_k)
        self.border = int(border)
        self.threshold = float(threshold)

    def forward(self, images):
        grids = self.features(self.preprocess(images))
        for step in self.middle:
            grids = step(grids)
        patch_scores = self.detector(grids)
        b = self.border
        if b:
            inner = patch_scores[:, b:-b, b:-b]
            patch_scores = F.pad(inner.unsqueeze(1), (b, b, b, b), mode="replicate")[:, 0]
        else:
            inner = patch_scores
        flat = inner.reshape(inner.shape[0], -1).double()
        k = min(self.top_k, flat.shape[1])
        if k == 1:
            scores = flat.max(dim=1).values
        else:
            scores = torch.topk(flat, k, dim=1).values.mean(dim=1)
        maps = torch.matmul(torch.matmul(self.rows, patch_scores.float()), self.cols_t)
        labels = torch.where(-scores - self.threshold < 0, -1, 1)
        return scores, maps, labels


def _steps(head):
    """The estimators of ``head`` (a Pipeline, possibly nested), in order."""
    found = []
    for _, step in head.steps:
        if hasattr(step, "steps"):
            found.extend(_steps(step))
        elif step is not None and step != "passthrough":
            found.append(step)
    return found


def _graph_size(transformer, image_size):
    if image_size is None:
        image_size = transformer.image_size
    if image_size is None:
        raise ValueError(
            "image_size is required when the FeatureTransformer keeps the input size "
            "(image_size=None): pass the (height, width) of the images the graph will take."
        )
    if isinstance(image_size, Integral) and not isinstance(image_size, bool):
        image_size = (image_size, image_size)
    size = tuple(image_size)
    if len(size) != 2 or not all(
        isinstance(v, Integral) and not isinstance(v, bool) and v > 0 for v in size
    ):
        raise ValueError(f"image_size must be an int or two positive ints; got {image_size!r}.")
    return tuple(int(v) for v in size)


def _backbone_size(transformer, image_size):
    if transformer.image_size is None:
        return image_size
    if isinstance(transformer.image_size, Integral):
        return (int(transformer.image_size),) * 2
    return tuple(int(v) for v in transformer.image_size)


def as_torch_module(estimator, image_size=None, *, sigma=4.0):
    """The fitted pipeline as a ``torch.nn.Module``: uint8 images -> scores, maps, labels.

    This is the module :func:`to_onnx` exports; it runs on the CPU in float32 (float64 where
    the Python pipeline computes in float64) and holds copies of the fitted arrays.

    Parameters
    ----------
    estimator : Pipeline or ThresholdedDetector
        Fitted, from images (a :class:`~sklearn_memad.FeatureTransformer` first) to a
        sklearn_memad detector, with :class:`~sklearn_memad.LocalAggregation` or
        :class:`~sklearn_memad.RandomProjection` steps between.
    image_size : int, (int, int) or None, default=None
        ``(H, W)`` of the images the module takes, and of its maps; None takes the
        FeatureTransformer's ``image_size``.
    sigma : float in [0, 1000], default=4.0
        Gaussian smoothing of the maps (pixels), as in
        :func:`~sklearn_memad.maps.predict_anomaly_maps`.

    Returns
    -------
    module : torch.nn.Module
        Called on a uint8 tensor ``(n, H, W, 3)``, it returns ``scores`` ``(n,)`` float64,
        image anomaly scores (higher = more abnormal, ``-score_samples``); ``maps``
        ``(n, H, W)`` float32, the pixel anomaly maps; ``labels`` ``(n,)`` int64, +1 normal and
        -1 anomaly, ``-1`` exactly where ``-scores - threshold < 0``, the threshold being
        the model's ``offset_`` (or a ThresholdedDetector's ``threshold_``), stored as
        ``module.threshold``.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from sklearn_memad.export import as_torch_module
    >>> from sklearn_memad.pipelines import make_detector_pipeline
    >>> images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_detector_pipeline(
    ...     "padim", backbone="resnet18", weights=None, image_size=32, n_components=8
    ... ).fit(images[:10])
    >>> scores, maps, labels = as_torch_module(pipe)(torch.from_numpy(images[10:]))
    >>> bool(np.allclose(-scores.numpy(), pipe.score_samples(images[10:]), rtol=1e-4))
    True
    >>> tuple(maps.shape), labels.tolist() == pipe.predict(images[10:]).tolist()
    ((2, 32, 32), True)
    """
    sigma = check_sigma(sigma)
    parts = model_parts(estimator)
    steps = _steps(parts.head) if parts.head is not None else []
    if not steps or not isinstance(steps[0], FeatureTransformer):
        raise TypeError(
            "estimator must be a pipeline that starts from images with a FeatureTransformer; "
            f"got first step {type(steps[0]).__name__ if steps else None}."
        )
    unknown = [type(s).__name__ for s in steps[1:] if type(s) not in MIDDLE_STEPS]
    if unknown or type(parts.detector) not in DETECTORS:
        raise TypeError(
            f"Cannot export steps {unknown or [type(parts.detector).__name__]}; expected "
            "LocalAggregation or RandomProjection steps and a PaDiM, PatchCore or DFKDE "
            "detector."
        )
    if getattr(steps[0], "tile_size", None) is not None:
        raise ValueError(
            "A FeatureTransformer with tile_size set cannot be exported yet: the graph "
            "passes each image whole. Export a pipeline fitted without tiling."
        )
    size = _graph_size(steps[0], image_size)
    target = _backbone_size(steps[0], size)
    extractor = steps[0].feature_extractor()
    preprocess = Preprocess(size, target, extractor.mean.flatten(), extractor.std.flatten())
    features = BackboneFeatures(steps[0], target)
    grid = getattr(parts.detector, "grid_shape_", features.finest)
    if isinstance(parts.detector, PatchCoreDetector):
        grid = features.finest  # its memory has no positions: any grid is scored
    if tuple(grid) != tuple(features.finest):
        raise ValueError(
            f"image_size={size} gives {features.finest} grids, but the detector was fitted "
            f"on {tuple(grid)} grids; export at the size the pipeline was fitted at."
        )
    module = _ExportedPipeline(
        preprocess,
        features,
        [MIDDLE_STEPS[type(step)](step) for step in steps[1:]],
        DETECTORS[type(parts.detector)](parts.detector),
        _map_operators(features.finest, size, sigma),
        parts.detector.top_k,
        effective_border(features.finest, parts.detector.border),
        decision_threshold(estimator),
    )
    return module.eval()


def to_onnx(estimator, path, image_size=None, *, sigma=4.0, opset=17):
    """Write a fitted pipeline as one ONNX graph: uint8 images -> scores, maps, labels.

    The graph takes ``images``, uint8 ``(n, H, W, 3)`` with any ``n``, and returns, in this
    order, ``scores`` ``(n,)`` float64, the image anomaly scores (higher = more abnormal:
    ``-score_samples`` of the pipeline); ``maps`` ``(n, H, W)`` float32, the pixel anomaly
    maps of :func:`~sklearn_memad.maps.predict_anomaly_maps` (bilinear upsampling, then
    Gaussian smoothing); and ``labels`` ``(n,)`` int64, the pipeline's ``predict``: -1 where
    ``-scores - threshold < 0``, else +1. The threshold (``offset_``, or a
    ThresholdedDetector's ``threshold_``) is also in the model's metadata under
    ``"threshold"``, with ``"sigma"``, ``"image_size"`` and ``"detector"``.

    Everything runs inside the graph: resizing to the FeatureTransformer's ``image_size``
    (antialiased bilinear, as a matrix product), normalisation, the backbone up to its
    deepest requested layer, local aggregation or projection, the detector and the maps.
    Needs the ``onnx`` package (``pip install 'sklearn_memad[export]'``); run the graph
    with ``onnxruntime``.

    Parameters
    ----------
    estimator : Pipeline or ThresholdedDetector
        As for :func:`as_torch_module`.
    path : str or path-like
        File to write.
    image_size : int, (int, int) or None, default=None
        ``(H, W)`` of the graph's images and maps; None takes the FeatureTransformer's
        ``image_size``. Other sizes are resized inside the graph, as the Python pipeline
        does; PaDiM and DFKDE need the grid they were fitted on.
    sigma : float in [0, 1000], default=4.0
        Gaussian smoothing of the maps (pixels).
    opset : int, default=17
        ONNX opset of the graph.

    Returns
    -------
    path : str
        The file written.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.export import to_onnx
    >>> from sklearn_memad.pipelines import make_detector_pipeline
    >>> images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    >>> pipe = make_detector_pipeline(
    ...     "padim", backbone="resnet18", weights=None, image_size=32, n_components=8
    ... ).fit(images[:10])
    >>> import os, tempfile
    >>> path = to_onnx(pipe, os.path.join(tempfile.mkdtemp(), "padim.onnx"))
    >>> import onnxruntime
    >>> session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    >>> scores, maps, labels = session.run(None, {"images": images[10:]})
    >>> bool(np.allclose(scores, -pipe.score_samples(images[10:]), rtol=1e-4)), maps.shape
    (True, (2, 32, 32))
    """
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            "to_onnx needs the onnx package: pip install 'sklearn_memad[export]'"
        ) from exc
    module = as_torch_module(estimator, image_size, sigma=sigma)
    size = _graph_size(_steps(model_parts(estimator).head)[0], image_size)
    example = torch.zeros((2,) + size + (3,), dtype=torch.uint8)
    batch = {0: "n"}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter is deprecated in favour of one that needs more
        # packages; it handles this graph (fixed sizes, dynamic batch) exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: batch for name in (INPUT_NAME, *OUTPUT_NAMES)},
            opset_version=int(opset),
            dynamo=False,
        )
    model = onnx.load(str(path))
    detector = model_parts(estimator).detector
    metadata = {
        "threshold": repr(module.threshold),
        "sigma": repr(float(sigma)),
        "image_size": f"{size[0]},{size[1]}",
        "detector": type(detector).__name__,
    }
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return str(path)
