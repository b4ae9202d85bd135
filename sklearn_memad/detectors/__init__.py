"""The memory-based detectors, their base class, merging, and image scores and maps from patch
scores."""

from ._base import BaseMemoryDetector, image_scores_from_patches
from ._border import effective_border, fill_border
from ._dfkde import DFKDEDetector
from ._merge import merge_detectors
from ._padim import PaDiMDetector
from ._patchcore import PatchCoreDetector, auto_coreset_ratio

__all__ = [
    "BaseMemoryDetector",
    "DFKDEDetector",
    "PaDiMDetector",
    "PatchCoreDetector",
    "auto_coreset_ratio",
    "effective_border",
    "fill_border",
    "image_scores_from_patches",
    "merge_detectors",
]
