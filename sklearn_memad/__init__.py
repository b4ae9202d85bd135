"""Memory-based industrial anomaly detection (PaDiM, PatchCore, DFKDE) as scikit-learn estimators.

Images -> :class:`FeatureTransformer` -> patch-feature grids (n, h, w, d) ->
:class:`LocalAggregation` / :class:`RandomProjection` -> a detector, all composable in a
scikit-learn ``Pipeline``. :func:`anomaly_maps` turns a fitted pipeline's patch scores into
pixel maps at the input resolution.

Where things live (imports point down this list, never up):

- ``defaults``: every default setting, once; ``utils``: shared plumbing (validation, tensors,
  chunking, progress, the walk from a model to its detector);
- ``neighbors``: coreset selection and k-NN search; ``datasets``: image files, MVTec folders,
  the demo's texture set;
- ``features``, ``transformers``, ``detectors``: the estimators;
- ``maps``, ``metrics``, ``thresholds``, ``masks``, ``model_selection``: what is done with
  their scores;
- ``pipelines`` (the standard pipelines and streaming fit), ``categories`` (one backbone for
  many part numbers), ``persistence`` (model files),
  ``display`` (pictures), ``distributed`` (Dask: fit and score on a cluster);
- ``cli``: the ``memad`` command, one module per command.
"""

from .categories import MultiCategoryDetector
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
    "MultiCategoryDetector",
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
