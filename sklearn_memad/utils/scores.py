"""Image anomaly scores read against the out-of-sample scores of the training images."""

import numpy as np

__all__ = ["percentiles", "reference_scores"]


def reference_scores(detector):
    """Sorted out-of-sample anomaly scores of the training images (``-train_scores_``)."""
    reference = getattr(detector, "train_scores_", None)
    if reference is None:
        raise TypeError(
            "estimator must be a fitted sklearn_memad detector (or a Pipeline or "
            "ThresholdedDetector ending in one), whose train_scores_ hold the out-of-sample "
            f"scores of its training images; got {type(detector).__name__} without "
            "train_scores_."
        )
    return np.sort(-np.asarray(reference, dtype=np.float64))


def percentiles(reference, anomaly_scores):
    """Anomaly percentiles of image anomaly scores against sorted ``reference`` scores.

    Ties count half, so an image scored like every training image sits at 50.
    """
    anomaly = np.asarray(anomaly_scores, dtype=np.float64)
    below = np.searchsorted(reference, anomaly, side="left")
    at_or_below = np.searchsorted(reference, anomaly, side="right")
    return 100.0 * (below + at_or_below) / (2.0 * reference.size)
