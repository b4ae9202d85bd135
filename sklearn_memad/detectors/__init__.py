"""The memory-based detectors, their base class, and how patch scores become image scores."""

from ._base import BaseMemoryDetector, image_scores_from_patches
from ._dfkde import DFKDEDetector
from ._padim import PaDiMDetector
from ._patchcore import PatchCoreDetector, auto_coreset_ratio

__all__ = [
    "BaseMemoryDetector",
    "DFKDEDetector",
    "PaDiMDetector",
    "PatchCoreDetector",
    "auto_coreset_ratio",
    "image_scores_from_patches",
]
