"""Pictures of anomaly maps: a scikit-learn-style Display (matplotlib) and PNGs (Pillow).

:class:`AnomalyMapDisplay` draws images with their anomaly maps overlaid, in the style of
:class:`sklearn.metrics.RocCurveDisplay` (``from_estimator``, ``from_predictions``, ``plot``);
matplotlib is optional (``pip install 'sklearn_memad[plot]'``) and imported only when drawing.
:func:`write_overlay`, :func:`overlay_image` and :func:`compose_panels` draw the same kind of
picture with Pillow alone; the command line and the demo use them.

Colours start at the level that the worst patch of a typical normal image reaches (the median
of the detector's out-of-sample training image scores) and the image threshold sits in the
middle of the scale (:func:`~sklearn_memad.maps.anomaly_map_range`), so a normal image shows
little colour and a defect shows warm colours where it is.
"""

from ..utils.deprecation import moved_names
from ._matplotlib import AnomalyMapDisplay
from ._overlay import (
    compose_explanation,
    compose_panels,
    overlay_image,
    score_caption,
    write_overlay,
)
from ._report import decision_summary, write_report

__all__ = [
    "AnomalyMapDisplay",
    "compose_explanation",
    "compose_panels",
    "decision_summary",
    "overlay_image",
    "score_caption",
    "write_overlay",
    "write_report",
]

__getattr__ = moved_names(
    __name__,
    {"predict_anomaly_maps": "sklearn_memad.maps", "anomaly_map_range": "sklearn_memad.maps"},
)
