"""Images to patch-feature grids inside the graph: resizing, normalisation, backbone layers."""

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BackboneFeatures", "Preprocess"]


def _resize_matrix(size, out_size):
    """``(size, out_size)`` matrix of the antialiased bilinear resize of one row of pixels.

    Resizing a row is linear, so resizing the identity's rows gives its matrix; torch's
    kernel builds it, so the weights are the Python pipeline's own.
    """
    identity = torch.eye(size, dtype=torch.float32)[None, None]
    with torch.inference_mode():
        resized = F.interpolate(
            identity, size=(size, out_size), mode="bilinear", align_corners=False, antialias=True
        )
    return resized[0, 0].clone()


class Preprocess(nn.Module):
    """uint8 ``(n, H, W, 3)`` -> normalised float ``(n, 3, h, w)`` at the backbone's size."""

    def __init__(self, image_size, target_size, mean, std):
        super().__init__()
        self.resize = tuple(image_size) != tuple(target_size)
        if self.resize:
            self.register_buffer("width", _resize_matrix(image_size[1], target_size[1]))
            self.register_buffer("height", _resize_matrix(image_size[0], target_size[0]).T)
        for name, value in (("mean", mean), ("std", std)):
            value = torch.as_tensor(value, dtype=torch.float32).cpu().reshape(1, 3, 1, 1)
            self.register_buffer(name, value.clone())

    def forward(self, images):
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if self.resize:
            # Width first, then height: the order of the Python pipeline.
            x = torch.matmul(self.height, torch.matmul(x, self.width))
        return (x - self.mean) / self.std


class BackboneFeatures(nn.Module):
    """Backbone layers -> channel pick -> bilinear resampling to the finest grid, concatenated."""

    def __init__(self, transformer, target_size):
        # The transformer's own network (weights loaded, batch norms folded), so the graph
        # computes exactly its features.
        extractor = transformer.feature_extractor()
        super().__init__()
        # A copy: hooks added for the export must not reach the transformer's own network.
        self.model = copy.deepcopy(extractor.model).to("cpu").eval()
        self.layers = extractor.layers
        self._outputs = None
        modules = dict(self.model.named_modules())
        for name in self.layers:
            modules[name].register_forward_hook(self._hook(name))
        counts = self._channel_counts(target_size)
        self.kept = _kept_per_layer(transformer.features_kept_, counts)

    def _channel_counts(self, target_size):
        with torch.no_grad():
            maps = self._layer_outputs(torch.zeros((1, 3) + tuple(target_size)))
        self.finest = max((tuple(m.shape[-2:]) for m in maps), key=lambda s: s[0] * s[1])
        return [m.shape[1] for m in maps]

    def _hook(self, name):
        def record(module, args, output):
            # A module run twice in one pass keeps its first output, as the Python pipeline.
            if self._outputs is not None and name not in self._outputs:
                self._outputs[name] = output.clone()

        return record

    def _layer_outputs(self, x):
        self._outputs = {}
        try:
            self.model(x)
            return [self._outputs[name] for name in self.layers]
        finally:
            self._outputs = None

    def forward(self, x):
        parts = []
        for fmap, kept in zip(self._layer_outputs(x), self.kept):
            if kept is not None:
                if kept.numel() == 0:
                    continue
                fmap = fmap[:, kept]
            if tuple(fmap.shape[-2:]) != self.finest:
                fmap = F.interpolate(fmap, size=self.finest, mode="bilinear", align_corners=False)
            parts.append(fmap)
        return torch.cat(parts, dim=1).permute(0, 2, 3, 1)  # (n, h, w, d)


def _kept_per_layer(features_kept, counts):
    if features_kept is None:
        return [None] * len(counts)
    kept, offset = [], 0
    for count in counts:
        local = features_kept[(features_kept >= offset) & (features_kept < offset + count)]
        kept.append(torch.as_tensor(local - offset, dtype=torch.long))
        offset += count
    return kept
