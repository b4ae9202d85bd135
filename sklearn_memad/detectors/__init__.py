"""The memory-based detectors, their base class, and how patch scores become image scores."""

from ._base import BaseMemoryDetector, image_scores_from_patches
from ._dfkde import DFKDEDetector
from ._padim import PaDiMDetector
from ._patchcore import PatchCoreDetector

__all__ = [
    "BaseMemoryDetector",
    "DFKDEDetector",
    "PaDiMDetector",
    "PatchCoreDetector",
    "image_scores_from_patches",
]
