"""Image decisions: thresholds chosen for a goal, and anomaly scores an operator can read.

A detector's own threshold, ``offset_``, is set without any defective image: with
``contamination=c`` it flags about a fraction ``c`` of new normal images (it is a quantile of
out-of-sample scores of the training images). When labelled defective images are available,
:class:`ThresholdedDetector` chooses the threshold for a goal instead (a recall to reach, a
false-positive rate not to exceed, or the best F1) and reports what it achieved on the
validation images. :func:`select_threshold` is the same choice on precomputed scores.

:func:`anomaly_percentile` puts any detector's image scores on one scale: the percentage of
normal training images (scored out of sample) that look more normal than the image.
"""

from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, OutlierMixin, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._indexing import _safe_indexing
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params
from sklearn.utils.validation import _num_samples, check_is_fitted

from .utils.labels import check_labels
from .utils.pipeline import model_parts
from .utils.scores import percentiles, reference_scores
from .utils.validation import check_objective_target, restore_on_error

__all__ = ["ThresholdedDetector", "anomaly_percentile", "select_threshold"]

_OBJECTIVES = {"f1", "recall", "fpr"}
# Counts are compared with target * n; this absorbs float error (0.95 * 20 = 18.999...).
_COUNT_TOL = 1e-9


def _candidate_thresholds(scores):
    """Thresholds ``t`` (flag ``scores < t``) giving every distinct split of sorted ``scores``.

    Midpoints between consecutive distinct scores leave the same margin on both sides for
    new images; the two ends sit half a typical gap outside the range (flag none / flag all).
    """
    values = np.unique(scores)
    gaps = np.diff(values)
    pad = 0.5 * (np.median(gaps) if gaps.size else max(abs(values[0]), 1.0))
    middle = values[:-1] + 0.5 * gaps
    return np.r_[values[0] - pad, middle, values[-1] + pad]


@validate_params(
    {
        "y_true": ["array-like"],
        "scores": ["array-like"],
        "objective": [StrOptions(_OBJECTIVES)],
        "target": [Interval(Real, 0, 1, closed="both"), None],
    },
    prefer_skip_nested_validation=True,
)
def select_threshold(y_true, scores, *, objective="f1", target=None):
    """Choose a threshold on ``score_samples`` for a goal, from labelled validation scores.

    An image is flagged as an anomaly when its score is *below* the threshold (scikit-learn's
    outlier convention: ``score_samples`` is lower for more abnormal images, and
    ``predict`` returns -1 where ``score_samples(X) - threshold < 0``).

    - ``objective="recall"``: catch at least a fraction ``target`` of the anomalous images,
      flagging as few images as possible (the least aggressive threshold that reaches it).
    - ``objective="fpr"``: flag at most a fraction ``target`` of the normal images, catching
      as many anomalies as possible.
    - ``objective="f1"``: the largest F1 (anomaly = positive class); on ties, fewer flags.

    Thresholds are placed midway between consecutive distinct scores, so new images just
    beyond a validation score are decided the same way as it.

    Parameters
    ----------
    y_true : array-like of shape (n_images,)
        +1 normal / -1 anomaly (or booleans, True = anomaly). Both classes must be present.
    scores : array-like of shape (n_images,)
        ``score_samples`` of the validation images: **lower = more abnormal**.
    objective : {"f1", "recall", "fpr"}, default="f1"
        What the threshold is chosen for.
    target : float in [0, 1] or None, default=None
        The recall to reach (``"recall"``) or the false-positive rate not to exceed
        (``"fpr"``); must be None for ``"f1"``.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``threshold`` (float, on the ``scores`` scale), and what it achieves on these images:
        ``recall`` (fraction of anomalies flagged), ``false_positive_rate`` (fraction of
        normal images flagged), ``f1``.

    Raises
    ------
    ValueError
        If only one class is present, the lengths differ, a score is not finite, or
        ``target`` does not fit ``objective``.

    See Also
    --------
    ThresholdedDetector : A detector whose ``predict`` uses the chosen threshold.

    Examples
    --------
    >>> from sklearn_memad.thresholds import select_threshold
    >>> y = [1, 1, 1, 1, -1, -1]                         # +1 normal, -1 anomaly
    >>> scores = [-1.0, -1.2, -1.1, -3.0, -2.5, -4.0]     # lower = more abnormal
    >>> r = select_threshold(y, scores, objective="recall", target=1.0)
    >>> r.threshold, r.recall, r.false_positive_rate     # midway between -2.5 and -1.2
    (-1.85, 1.0, 0.25)
    >>> select_threshold(y, scores, objective="fpr", target=0.0).recall
    0.5
    """
    check_objective_target(objective, target)
    anomaly = check_labels(y_true)
    s = np.asarray(scores)
    if s.ndim != 1 or s.shape[0] != anomaly.shape[0]:
        raise ValueError(
            f"scores must be a 1-D array with one score per label, shape ({anomaly.shape[0]},); "
            f"got shape {s.shape}."
        )
    if s.dtype.kind not in "iuf":
        raise TypeError(f"scores must be numeric (score_samples output); got dtype {s.dtype}.")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores contains NaN or infinity; validation scores must be finite.")
    n_anomalies = int(anomaly.sum())
    n_normals = anomaly.size - n_anomalies
    if n_anomalies == 0 or n_normals == 0:
        missing = "anomalous (-1)" if n_anomalies == 0 else "normal (+1)"
        raise ValueError(
            f"y_true must hold both normal (+1) and anomalous (-1) validation images; got "
            f"{anomaly.size} images and no {missing} one."
        )

    thresholds = _candidate_thresholds(s)
    # Flagged counts for every candidate at once: scores strictly below each threshold.
    caught = np.searchsorted(np.sort(s[anomaly]), thresholds, side="left")
    false_alarms = np.searchsorted(np.sort(s[~anomaly]), thresholds, side="left")
    # Both counts grow with the threshold, so the first/last admissible index is the optimum.
    if objective == "recall":
        needed = np.ceil(target * n_anomalies - _COUNT_TOL)
        best = int(np.argmax(caught >= needed))
    elif objective == "fpr":
        allowed = np.floor(target * n_normals + _COUNT_TOL)
        best = int(np.flatnonzero(false_alarms <= allowed)[-1])
    else:
        f1 = 2.0 * caught / (n_anomalies + caught + false_alarms)
        best = int(np.argmax(f1))
    tp, fp = int(caught[best]), int(false_alarms[best])
    return Bunch(
        threshold=float(thresholds[best]),
        recall=tp / n_anomalies,
        false_positive_rate=fp / n_normals,
        f1=2.0 * tp / (n_anomalies + tp + fp),
    )


class ThresholdedDetector(MetaEstimatorMixin, OutlierMixin, BaseEstimator):
    """Outlier detector whose threshold is chosen on labelled validation images for a goal.

    The wrapped detector (or Pipeline ending in one) scores images; this meta-estimator
    replaces its threshold by one chosen with :func:`select_threshold` on validation images
    labelled +1 (normal) / -1 (anomaly): the least aggressive threshold reaching a ``target``
    recall, the most sensitive one within a ``target`` false-positive rate, or the one with
    the best F1. ``predict`` then flags images whose ``score_samples`` is below
    ``threshold_``. Compare scikit-learn's ``TunedThresholdClassifierCV``.

    Where the validation images come from (``cv``):

    - ``cv=<float>`` (default 0.25): ``fit(X, y)`` takes a labelled set. That fraction of its
      normal images, picked at random, and *all* its anomalies are held out for validation;
      a clone of ``estimator`` is fitted on the remaining normal images only.
      No anomaly ever enters the memory, and no refit follows, so ``recall_`` and
      ``false_positive_rate_`` are measured on images the fitted model has not seen.
    - ``cv="prefit"``: ``estimator`` is already fitted on normal images; ``fit(X, y)`` uses
      all of ``(X, y)`` for validation. They must not be the images it was fitted on.

    Parameters
    ----------
    estimator : estimator object
        An outlier detector with ``fit`` and ``score_samples`` (lower = more abnormal), e.g.
        a sklearn_memad detector or a Pipeline ending in one.
    objective : {"f1", "recall", "fpr"}, default="f1"
        ``"recall"``: catch at least a fraction ``target`` of the defective validation images
        with as few flags as possible. ``"fpr"``: flag at most a fraction ``target`` of the
        normal validation images, catching as many defects as possible. ``"f1"``: the best
        F1 with the anomaly as the positive class.
    target : float in [0, 1] or None, default=None
        The recall or false-positive rate to achieve; required for ``"recall"`` and ``"fpr"``,
        must be None for ``"f1"``. A recall target can only be met in steps of one
        validation anomaly: with 20 of them, 0.99 means all 20.
    cv : float in (0, 1) or "prefit", default=0.25
        Fraction of the normal images held out for validation, or ``"prefit"`` (see above).
    random_state : int, RandomState instance or None, default=None
        Seeds which normal images are held out (float ``cv`` only).

    Attributes
    ----------
    estimator_ : estimator object
        The fitted detector used for scoring (``estimator`` itself with ``cv="prefit"``).
    threshold_ : float
        Threshold on ``score_samples``: ``decision_function = score_samples - threshold_``.
    recall_ : float
        Fraction of the anomalous validation images flagged at ``threshold_``.
    false_positive_rate_ : float
        Fraction of the normal validation images flagged at ``threshold_``.
    f1_ : float
        F1 on the validation images (anomaly = positive class).
    n_val_normals_ : int
        Number of normal validation images (``false_positive_rate_`` moves in steps of
        ``1 / n_val_normals_``).
    n_val_anomalies_ : int
        Number of anomalous validation images.

    See Also
    --------
    select_threshold : The threshold choice on precomputed scores.
    anomaly_percentile : Image scores on a scale common to every detector.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import PaDiMDetector
    >>> from sklearn_memad.thresholds import ThresholdedDetector
    >>> rng = np.random.default_rng(0)
    >>> normal = rng.normal(size=(80, 4, 4, 8))
    >>> defective = rng.normal(size=(20, 4, 4, 8))
    >>> defective[:, 1, 2] += np.linspace(2.0, 8.0, 20)[:, None]  # faint to obvious defects
    >>> X, y = np.concatenate([normal, defective]), np.r_[np.ones(80), -np.ones(20)]
    >>> detector = ThresholdedDetector(
    ...     PaDiMDetector(), objective="recall", target=0.9, random_state=0
    ... ).fit(X, y)
    >>> detector.n_val_normals_, detector.n_val_anomalies_
    (20, 20)
    >>> detector.recall_, detector.false_positive_rate_     # on the validation images
    (0.9, 0.0)
    >>> new = rng.normal(size=(4, 4, 4, 8))
    >>> new[:2, 1, 2] += 8.0                                 # two new defective parts
    >>> detector.predict(new)
    array([-1, -1,  1,  1])
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "score_samples"])],
        "objective": [StrOptions(_OBJECTIVES)],
        "target": [Interval(Real, 0, 1, closed="both"), None],
        "cv": [StrOptions({"prefit"}), Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator, *, objective="f1", target=None, cv=0.25, random_state=None):
        self.estimator = estimator
        self.objective = objective
        self.target = target
        self.cv = cv
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y):
        """Fit the detector on normal images (unless prefit) and choose ``threshold_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Images (for a Pipeline starting from images) or grids, normal and defective.
        y : array-like of shape (n_samples,)
            +1 normal / -1 anomaly (or booleans, True = anomaly). The validation part must
            hold both classes.

        Returns
        -------
        self : object
            Fitted meta-estimator.
        """
        check_objective_target(self.objective, self.target)
        with restore_on_error(self):
            anomaly = self._checked_labels(X, y)
            if self.cv == "prefit":
                try:
                    check_is_fitted(self.estimator)
                except NotFittedError as exc:
                    raise ValueError(
                        "cv='prefit' needs a fitted estimator; fit it on normal images first, "
                        "or pass a float cv to hold out part of the normal images of (X, y)."
                    ) from exc
                estimator, X_val, y_val = self.estimator, X, anomaly
            else:
                train, val = self._split(anomaly)
                estimator = clone(self.estimator).fit(_safe_indexing(X, train))
                X_val, y_val = _safe_indexing(X, val), anomaly[val]
            result = select_threshold(
                y_val,
                estimator.score_samples(X_val),
                objective=self.objective,
                target=self.target,
            )
            self.estimator_ = estimator
            self.threshold_ = result.threshold
            self.recall_ = result.recall
            self.false_positive_rate_ = result.false_positive_rate
            self.f1_ = result.f1
            self.n_val_anomalies_ = int(y_val.sum())
            self.n_val_normals_ = int(y_val.size - self.n_val_anomalies_)
        return self

    def _checked_labels(self, X, y):
        if y is None:
            raise ValueError(
                "y is required: +1 (normal) / -1 (anomaly) labels of X, because the threshold "
                "is chosen on labelled validation images. To threshold without defective "
                "images, set the detector's contamination instead."
            )
        anomaly = check_labels(y, name="y")
        n = _num_samples(X)
        if anomaly.shape[0] != n:
            raise ValueError(f"y must have shape ({n},) to match X; got shape {anomaly.shape}.")
        n_anomalies = int(anomaly.sum())
        if n_anomalies in (0, n):
            present = "anomalous (-1)" if n_anomalies else "normal (+1)"
            raise ValueError(
                "y must hold both normal (+1) and anomalous (-1) images, as the threshold is "
                f"chosen on both; got {n} images, all {present}."
            )
        return anomaly

    def _split(self, anomaly):
        """(training indices: normal only, validation indices: held-out normal + anomalies)."""
        normal = np.flatnonzero(~anomaly)
        n_val = int(round(self.cv * normal.size))
        if n_val < 1 or n_val >= normal.size:
            raise ValueError(
                f"cv={self.cv} holds out {n_val} of the {normal.size} normal images of X; "
                "both the memory and the validation set need at least one. Pass more normal "
                "images, another cv, or cv='prefit' with a separate validation set."
            )
        shuffled = check_random_state(self.random_state).permutation(normal)
        train = np.sort(shuffled[n_val:])
        val = np.sort(np.r_[shuffled[:n_val], np.flatnonzero(anomaly)])
        return train, val

    def score_samples(self, X):
        """Normality score of the fitted detector (lower = more abnormal).

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Images or grids, as the wrapped estimator expects.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        return self.estimator_.score_samples(X)

    def decision_function(self, X):
        """``score_samples(X) - threshold_``: negative for anomalies.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Images or grids, as the wrapped estimator expects.

        Returns
        -------
        decision : ndarray of shape (n_samples,)
        """
        return self.score_samples(X) - self.threshold_

    def predict(self, X):
        """+1 (normal) or -1 (anomaly) at the chosen threshold.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Images or grids, as the wrapped estimator expects.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return np.where(self.decision_function(X) < 0, -1, 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Labels are required: the threshold is chosen on them.
        tags.target_tags.required = True
        return tags


# --------------------------------------------------------------------------------------------
# Readable scores
# --------------------------------------------------------------------------------------------


@validate_params(
    {"estimator": [HasMethods(["score_samples"])], "X": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def anomaly_percentile(estimator, X):
    """Image scores as anomaly percentiles, on the same 0-100 scale for every detector.

    The anomaly percentile of an image is the percentage of the normal training images whose
    anomaly score is below the image's own, each training image scored *out of sample* (by a
    memory that does not hold it: the detector's ``train_scores_``). Ties count half.

    - about 50: a typical normal image;
    - 99: more abnormal than 99 % of the normal images seen in training;
    - 100: more abnormal than every one of them.

    It is a monotone (non-decreasing) function of the image anomaly score, so it ranks images
    exactly as the raw score does, and it means the same for PaDiM, PatchCore and DFKDE. A
    detector with ``contamination=c`` flags images above about the ``100 * (1 - c)``-th
    percentile. The scale saturates at 100: how far beyond every normal image an image lies is
    only in the raw score. Its resolution is ``100 / n_train`` (``len(train_scores_)``; after
    ``PaDiMDetector.partial_fit``, the images of the last chunk).

    Parameters
    ----------
    estimator : estimator object
        A fitted sklearn_memad detector, a Pipeline ending in one, or a
        :class:`ThresholdedDetector` wrapping either.
    X : array-like of shape (n_samples, ...)
        Images (for a Pipeline starting from images) or grids.

    Returns
    -------
    percentile : ndarray of shape (n_samples,)
        In [0, 100]; higher = more abnormal.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import DFKDEDetector, PatchCoreDetector
    >>> from sklearn_memad.thresholds import anomaly_percentile
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(50, 4, 4, 3))
    >>> test = rng.normal(size=(3, 4, 4, 3))
    >>> test[0, 1, 2] += 8.0                 # an obvious defect
    >>> for detector in (DFKDEDetector(), PatchCoreDetector(random_state=0)):
    ...     print(anomaly_percentile(detector.fit(train), test)[0])
    100.0
    100.0
    """
    reference = reference_scores(model_parts(estimator).detector)  # checked before scoring
    return percentiles(reference, -np.asarray(estimator.score_samples(X), dtype=np.float64))
