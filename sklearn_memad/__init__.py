"""Memory-based industrial anomaly detection (PaDiM, PatchCore, DFKDE) as scikit-learn estimators.

Images -> :class:`FeatureTransformer` -> patch-feature grids (n, h, w, d) ->
:class:`LocalAggregation` / :class:`RandomProjection` -> a detector, all composable in a
scikit-learn ``Pipeline``. :func:`anomaly_maps` turns a fitted pipeline's patch scores into
pixel maps at the input resolution.
"""

from .detectors import DFKDEDetector, PaDiMDetector, PatchCoreDetector
from .features import FeatureTransformer
from .maps import anomaly_maps
from .masks import mask_scores, predict_masks, select_pixel_threshold
from .thresholds import ThresholdedDetector, anomaly_percentile, select_threshold
from .transformers import LocalAggregation, RandomProjection

__version__ = "0.1.0"

__all__ = [
    "DFKDEDetector",
    "FeatureTransformer",
    "LocalAggregation",
    "PaDiMDetector",
    "PatchCoreDetector",
    "RandomProjection",
    "ThresholdedDetector",
    "anomaly_maps",
    "anomaly_percentile",
    "mask_scores",
    "predict_masks",
    "select_pixel_threshold",
    "select_threshold",
]
