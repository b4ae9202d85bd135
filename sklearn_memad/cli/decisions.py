"""Thresholds chosen on validation images, for ``memad fit`` and ``memad score``.

``memad fit --validation DIR`` wraps the fitted pipeline in a
:class:`~sklearn_memad.thresholds.ThresholdedDetector` (``cv="prefit"``) whose image threshold
is chosen on DIR's normal and defective images, and saves that wrapper as the model. When DIR
also has ground-truth masks, it chooses a pixel threshold with
:func:`~sklearn_memad.masks.select_pixel_threshold` and stores it in the model file's header,
with the map smoothing it was chosen for: a pixel threshold belongs to the maps of one
``sigma``, a setting of how maps are drawn, not of any estimator, so no estimator gets an
attribute that its ``fit`` does not set. ``memad score`` decides with the wrapper's
``threshold_`` and draws masks with the header's pixel threshold.

Option problems raise :class:`~sklearn_memad.cli.exit_codes.OptionError` (exit code 2);
folder problems raise :class:`~sklearn_memad.datasets.ImageFolderError` (exit code 3).
"""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.utils import Bunch
from sklearn.utils._param_validation import validate_parameter_constraints

from .. import defaults
from ..datasets import READ_ERRORS, image_shape, labelled_files
from ..maps import predict_anomaly_maps
from ..masks import mask_scores, select_pixel_threshold
from ..thresholds import ThresholdedDetector
from ..utils.pipeline import decision_threshold
from ..utils.scores import percentiles, reference_scores
from ..utils.validation import check_objective_target
from .exit_codes import OptionError

__all__ = [
    "check_decision_options",
    "choose_thresholds",
    "describe_decision",
    "describe_masks",
    "pixel_threshold",
    "validation_files",
    "write_mask",
]

#: Smoothing of the maps a pixel threshold is chosen on; `memad score` must draw maps the same.
PIXEL_SIGMA = defaults.SIGMA
#: Header key of the pixel threshold in a model file.
PIXEL_KEY = "pixel_threshold"


# --------------------------------------------------------------------------- options
def check_decision_options(validation, objective, target):
    """Return ``(objective, target)`` for a ThresholdedDetector, checked before any work.

    ``objective`` defaults to ``"f1"`` with a validation folder; ``target`` is the text of
    ``--target`` (or None). Raises OptionError with a one-line message naming the options.
    """
    if validation is None:
        if objective is not None or target is not None:
            given = " and ".join(
                name
                for name, value in (("--objective", objective), ("--target", target))
                if value is not None
            )
            raise OptionError(
                f"{given} given without --validation DIR, the labelled images the threshold "
                "is chosen on (an MVTec-layout category with test/good and test/<defect>, or "
                "a folder with good/ and one subfolder per defect type)"
            )
        return None, None
    objective = objective or "f1"
    given = f"--objective {objective}" + ("" if target is None else f" --target {target}")
    if target is not None:
        try:
            target = float(target)
        except ValueError:
            raise OptionError(
                f"{given}: --target must be a number in [0, 1] (a recall or a false-positive "
                f"rate); got {target!r}"
            ) from None
    constraints = {
        key: ThresholdedDetector._parameter_constraints[key] for key in ("objective", "target")
    }
    try:
        validate_parameter_constraints(
            constraints,
            {"objective": objective, "target": target},
            caller_name=ThresholdedDetector.__name__,
        )
        check_objective_target(objective, target)
    except ValueError as exc:
        raise OptionError(f"{given}: {exc}") from None
    return objective, target


# --------------------------------------------------------------------------- validation data
def validation_files(folder, training):
    """The labelled images of a validation folder.

    They are listed by :func:`~sklearn_memad.datasets.labelled_files`. None of them may be one
    of the ``training`` files: a memory scores its own images too well, so a threshold chosen
    on them would flag too little.
    """
    found = labelled_files(folder)
    trained = {Path(f).resolve() for f in training}
    shared = [p for p in found.paths if p.resolve() in trained]
    if shared:
        raise OptionError(
            f"--validation: {len(shared)} of its images are training images too (e.g. "
            f"'{shared[0]}'); a memory scores its own images too well, so the threshold must "
            "be chosen on images the model is not fitted on"
        )
    return found


# --------------------------------------------------------------------------- thresholds
def choose_thresholds(pipe, validation, objective, target):
    """Wrap the fitted ``pipe`` with an image threshold (and a pixel one) chosen on validation.

    Returns
    -------
    chosen : Bunch
        ``model``, the fitted ``ThresholdedDetector(pipe, cv="prefit")``; ``metadata``, what
        the model file's header gets (the pixel threshold, a dict of plain values, when
        masks were given); ``report``, lines that say what the thresholds achieved;
        ``warnings``, list of str.
    """
    model = ThresholdedDetector(pipe, objective=objective, target=target, cv="prefit")
    model.fit(validation.images, validation.labels)
    report = [describe_validation(model) + " It replaces the detector's own threshold."]
    chosen = Bunch(model=model, metadata={}, report=report, warnings=[])
    if validation.masks is None:
        return chosen
    result = predict_anomaly_maps(model, validation.images, sigma=PIXEL_SIGMA)
    try:
        pixel = select_pixel_threshold(validation.masks, result.maps)
    except ValueError as exc:  # e.g. masks without a single defect pixel
        chosen.warnings.append(f"no pixel threshold: {exc}")
        return chosen
    # What `memad score` writes: masks on the images that the image threshold flags.
    drawn = (result.maps >= pixel.threshold) & (result.labels == -1)[:, None, None]
    achieved = mask_scores(validation.masks, drawn)
    entry = {
        "threshold": float(pixel.threshold),
        "sigma": PIXEL_SIGMA,
        "objective": "f1",
        "f1": float(achieved.f1),
        "iou": float(achieved.iou),
        "n_images": int(len(validation.labels)),
        "n_defective": int(np.count_nonzero(validation.labels == -1)),
    }
    chosen.metadata[PIXEL_KEY] = entry
    report.append(describe_pixel(entry))
    return chosen


def _goal(model):
    if model.objective == "recall":
        return f"recall >= {model.target:g}"
    if model.objective == "fpr":
        return f"false-positive rate <= {model.target:g}"
    return "the best F1"


def describe_validation(model):
    """One line: what the validation-chosen image threshold achieved."""
    return (
        f"Image threshold {-model.threshold_:.4g} chosen for {_goal(model)} on "
        f"{model.n_val_normals_} normal and {model.n_val_anomalies_} defective validation "
        f"images: recall {model.recall_:.3f}, false-positive rate "
        f"{model.false_positive_rate_:.3f}, F1 {model.f1_:.3f}."
    )


def describe_pixel(pixel):
    """One line: the pixel threshold and what it achieved on the validation masks."""
    return (
        f"Pixel threshold {pixel['threshold']:.4g} (best pixel F1 on the masks of "
        f"{pixel['n_defective']} defective validation images, sigma {pixel['sigma']:g}): "
        f"pixel F1 {pixel['f1']:.3f}, IoU {pixel['iou']:.3f} on the masks as `memad score` "
        "writes them (on flagged images only)."
    )


def describe_decision(model, detector):
    """The image decision of ``memad score``: the threshold, and where it comes from."""
    threshold = -decision_threshold(model)
    # The same threshold on the scale every detector shares: see anomaly_percentile.
    scale = percentiles(reference_scores(detector), np.array([threshold]))[0]
    on_scale = f"; anomaly percentile {scale:.1f}"
    if isinstance(model, ThresholdedDetector):
        return (
            f"score > threshold {threshold:.4g}, chosen for {_goal(model)} on "
            f"{model.n_val_normals_} normal and {model.n_val_anomalies_} defective validation "
            f"images, where it reached recall {model.recall_:.3f} and false-positive rate "
            f"{model.false_positive_rate_:.3f}{on_scale}"
        )
    return (
        f"score > threshold {threshold:.4g}, the detector's own offset_, calibrated on its "
        f"training images with contamination {detector.contamination}{on_scale}"
    )


def describe_masks(threshold):
    """The pixel decision of ``memad score``."""
    return (
        f"Defect masks: pixels whose anomaly map reaches {threshold:.4g}, the pixel threshold "
        "chosen on the validation masks, on flagged images; other images get an empty mask."
    )


# --------------------------------------------------------------------------- masks
def pixel_threshold(header, sigma):
    """``(threshold or None, warning or None)``: the model's pixel threshold, for ``sigma``."""
    pixel = header.get(PIXEL_KEY)
    if not isinstance(pixel, dict) or "threshold" not in pixel:
        return None, None
    if not np.isclose(sigma, pixel["sigma"]):
        return None, (
            f"no defect masks: the model's pixel threshold was chosen on maps smoothed with "
            f"--sigma {pixel['sigma']:g}, and these are smoothed with --sigma {sigma:g}"
        )
    return float(pixel["threshold"]), None


def write_mask(target, anomaly_map, threshold, flagged, source, max_pixels=None):
    """Write a defect mask PNG (white = defect) at the size of the image file ``source``.

    The map is resized (bilinear) to the file's size before thresholding; an image that the
    image threshold passes gets an empty mask. ``max_pixels`` is the limit the file was read
    under (None: Pillow's).
    """
    try:
        height, width = image_shape(source, max_pixels)
    except READ_ERRORS:
        height, width = anomaly_map.shape
    if not flagged:
        mask = np.zeros((height, width), dtype=bool)
    else:
        values = Image.fromarray(np.asarray(anomaly_map, dtype=np.float32))
        if values.size != (width, height):
            values = values.resize((width, height), Image.Resampling.BILINEAR)
        mask = np.asarray(values) >= threshold
    Image.fromarray(mask.astype(np.uint8) * 255).save(target)
