"""Memory-based anomaly detectors on patch-feature grids."""

from ._dfkde import DFKDEDetector
from ._padim import PaDiMDetector
from ._patchcore import PatchCoreDetector

__all__ = ["DFKDEDetector", "PaDiMDetector", "PatchCoreDetector"]
