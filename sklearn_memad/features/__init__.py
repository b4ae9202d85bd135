"""Patch features from pretrained CNN backbones (torchvision models, offline EfficientNet-Lite)."""

from ._backbones import available_backbones
from ._transformer import FeatureTransformer

__all__ = ["FeatureTransformer", "available_backbones"]
