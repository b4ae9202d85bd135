"""Drift monitoring: an alarm when the anomaly scores of production images stop looking like
those of the normal training images.

A fitted model knows what the scores of new normal images look like: its detector's
``train_scores_`` are out-of-sample scores of its training images. :class:`DriftMonitor`
compares the scores of the images a line produces with them, two ways:

- A two-sample Kolmogorov-Smirnov test on each block of ``window`` consecutive scores. It
  sees any change of the distribution (location, spread, a new mode), and each block is
  tested once, so a false alarm comes from one block with probability about ``alpha``.
- A two-sided CUSUM on the percentile of each score among the reference scores. Percentiles
  make it free of the scale and shape of the scores (a normal image's percentile is uniform
  whatever the detector); the CUSUM adds up small, persistent shifts of their median that a
  single block is too short to show, and reacts within a few images to large ones. Its
  limit is set for an average of ``run_length`` normal images between false alarms.

It also reports the share of images beyond the model's threshold next to the share the
reference scores give, the number an engineer reads first.
"""

from numbers import Integral, Real

import numpy as np
from scipy import optimize, stats
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from .utils.pipeline import decision_threshold, model_parts

__all__ = ["DriftMonitor", "cusum_limit"]

# The standard deviation of a uniform percentile: percentiles are scaled by it.
_UNIFORM_SD = np.sqrt(1.0 / 12.0)
# Siegmund's correction of the CUSUM limit for the overshoot of a normal random walk.
_OVERSHOOT = 1.166


def cusum_limit(run_length, drift):
    """Limit ``h`` of a two-sided CUSUM of standardised scores with reference value ``drift``
    for an average of ``run_length`` in-control observations between false alarms.

    Uses Siegmund's approximation of the average run length of one side,
    ``(exp(2 k b) - 2 k b - 1) / (2 k^2)`` with ``b = h + 1.166``, for twice ``run_length``
    (the two sides alarm independently). For increments lighter-tailed than the normal
    (uniform percentiles), the true run length is longer: the limit errs on the quiet side.

    Parameters
    ----------
    run_length : float
        Target average number of in-control observations per false alarm.
    drift : float
        The reference value ``k`` subtracted from each standardised observation (half the
        shift, in standard deviations, that the CUSUM detects fastest).

    Returns
    -------
    h : float

    Examples
    --------
    >>> from sklearn_memad.monitoring import cusum_limit
    >>> round(cusum_limit(10_000, 0.5), 2)
    8.05
    """
    k = float(drift)
    target = 2.0 * float(run_length)

    def gap(b):
        return (np.expm1(2 * k * b) - 2 * k * b) / (2 * k * k) - target

    # exp(2 k b) alone passes the target here, so the root lies below.
    upper = (np.log(2 * k * k * target) + 1.0) / (2 * k) + 1.0
    b = optimize.brentq(gap, 1e-9, max(upper, 1e-6))
    return float(max(b - _OVERSHOOT, 0.0))


class DriftMonitor(BaseEstimator):
    """Raise an alarm when production anomaly scores drift from the normal ones.

    Fit it on reference anomaly scores of normal images (out of sample: a detector's
    ``-train_scores_``, see :meth:`from_model`), then feed it the anomaly scores of
    production images, in order, one batch or one image at a time (:meth:`update`). An
    alarm stays raised until :meth:`reset`.

    Parameters
    ----------
    window : int, default=50
        Scores per block of the Kolmogorov-Smirnov test.
    alpha : float in (0, 0.5), default=0.001
        Significance of each block's test: the chance that a block of normal images alarms.
    run_length : float, default=10000
        Average number of normal images between false alarms of the CUSUM.
    drift : float, default=0.15
        CUSUM reference value, in standard deviations of a percentile: half the shift it
        detects fastest. Small values catch small lasting shifts (a change of light)
        sooner, large ones large shifts (a blur, a moved camera) a few images sooner.

    Attributes
    ----------
    reference_ : ndarray of shape (n_reference,)
        Sorted reference anomaly scores.
    threshold_ : float or None
        Anomaly score beyond which the model flags an image (None if not given).
    expected_share_ : float or None
        Share of the reference scores beyond ``threshold_``.
    reference_value_ : float
        The CUSUM's reference value: ``drift`` plus twice the standard error, in the same
        units, of the median's percentile in a reference of this size (a small reference
        would otherwise look like a shift).
    limit_ : float
        The CUSUM's limit, from :func:`cusum_limit` for ``reference_value_``.
    n_seen_ : int
        Scores fed since :meth:`fit` or :meth:`reset`.
    alarms_ : list of dict
        Each alarm, in the order of the images: ``test`` ("ks" or "cusum"), ``image`` (the
        position of the score that raised it), and the test's ``statistic`` and, for KS,
        ``p_value``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.monitoring import DriftMonitor
    >>> rng = np.random.default_rng(0)
    >>> monitor = DriftMonitor().fit(rng.normal(size=500), threshold=2.0)
    >>> monitor.update(rng.normal(size=200)).alarm
    False
    >>> state = monitor.update(rng.normal(loc=1.5, size=100))
    >>> state.alarm, state.alarms[0]["test"]
    (True, 'cusum')
    """

    _parameter_constraints: dict = {
        "window": [Interval(Integral, 5, None, closed="left")],
        "alpha": [Interval(Real, 0, 0.5, closed="neither")],
        "run_length": [Interval(Real, 10, None, closed="left")],
        "drift": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, window=50, alpha=0.001, run_length=10_000, drift=0.15):
        self.window = window
        self.alpha = alpha
        self.run_length = run_length
        self.drift = drift

    @classmethod
    def from_model(cls, model, **params):
        """A monitor fitted on a fitted model's out-of-sample training scores and threshold.

        Parameters
        ----------
        model : Pipeline, detector or ThresholdedDetector
            A fitted sklearn_memad model (as :func:`~sklearn_memad.persistence.load_model`
            returns).
        **params
            The monitor's parameters.

        Returns
        -------
        monitor : DriftMonitor
        """
        detector = model_parts(model).detector
        check_is_fitted(detector)
        return cls(**params).fit(-detector.train_scores_, threshold=-decision_threshold(model))

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, threshold=None):
        """Take ``X`` as the anomaly scores of normal images.

        Parameters
        ----------
        X : array-like of shape (n_reference,)
            Reference anomaly scores (higher = more abnormal), at least 20 finite values.
        y : Ignored
        threshold : float, default=None
            The model's threshold on the anomaly scores, to report the share beyond it.

        Returns
        -------
        self : DriftMonitor
        """
        reference = _scores(X, "X")
        if reference.size < 20:
            raise ValueError(
                f"X must hold at least 20 reference scores to compare with; got {reference.size}."
            )
        self.reference_ = np.sort(reference)
        self.threshold_ = None if threshold is None else float(threshold)
        self.expected_share_ = (
            None if threshold is None else float(np.mean(reference > self.threshold_))
        )
        # A reference of n scores places the median's percentile only to within about
        # 1 / (2 sqrt(n)) (one standard error); every production score inherits that error,
        # and the CUSUM would add it up like a real shift: two standard errors are added to
        # the reference value.
        self.reference_value_ = self.drift + 1.0 / np.sqrt(reference.size) / _UNIFORM_SD
        self.limit_ = cusum_limit(self.run_length, self.reference_value_)
        self.reset()
        return self

    def reset(self):
        """Forget the production scores fed so far and lower the alarm.

        Returns
        -------
        self : DriftMonitor
        """
        check_is_fitted(self, "reference_")
        self.n_seen_ = 0
        self.alarms_ = []
        self._pending = np.empty(0)  # scores of the block the KS test has not seen yet
        self._recent = np.empty(0)  # the last window of scores, for the reported share
        self._cusum = np.zeros(2)  # upper and lower sums
        return self

    def percentiles(self, scores):
        """Mid-rank percentile of each score among the reference scores, in (0, 1).

        Parameters
        ----------
        scores : array-like of shape (n,)

        Returns
        -------
        percentiles : ndarray of shape (n,)
        """
        check_is_fitted(self, "reference_")
        scores = _scores(scores, "scores")
        below = np.searchsorted(self.reference_, scores, side="left")
        up_to = np.searchsorted(self.reference_, scores, side="right")
        return (below + up_to + 1) / (2.0 * (self.reference_.size + 1))

    def update(self, scores):
        """Feed the anomaly scores of the next production images, in order.

        Parameters
        ----------
        scores : float or array-like of shape (n,)
            Anomaly scores (higher = more abnormal) from the model the monitor watches.

        Returns
        -------
        state : :class:`~sklearn.utils.Bunch`
            As :meth:`state`.
        """
        check_is_fitted(self, "reference_")
        self._validate_params()
        scores = _scores(np.atleast_1d(scores), "scores")
        first = self.n_seen_
        self._update_cusum(scores, first)
        self._update_ks(scores, first)
        self.alarms_.sort(key=lambda alarm: alarm["image"])
        self._recent = np.concatenate([self._recent, scores])[-self.window :]
        self.n_seen_ += scores.size
        return self.state()

    def _update_cusum(self, scores, first):
        z = (self.percentiles(scores) - 0.5) / _UNIFORM_SD
        k = self.reference_value_
        for side, increments in enumerate((z - k, -z - k)):
            start = 0
            while start < increments.size:
                sums = _cusum(self._cusum[side], increments[start:])
                over = np.flatnonzero(sums > self.limit_)
                if not over.size:
                    self._cusum[side] = sums[-1]
                    break
                # An alarm restarts its side, so a lasting shift alarms again later.
                self._alarm("cusum", first + start + int(over[0]), float(sums[over[0]]))
                self._cusum[side] = 0.0
                start += int(over[0]) + 1

    def _update_ks(self, scores, first):
        pending = np.concatenate([self._pending, scores])
        start = first - self._pending.size
        n_blocks = pending.size // self.window
        for block in range(n_blocks):
            values = pending[block * self.window : (block + 1) * self.window]
            test = stats.ks_2samp(values, self.reference_)
            if test.pvalue < self.alpha:
                last = start + (block + 1) * self.window - 1
                self._alarm("ks", last, float(test.statistic), float(test.pvalue))
        self._pending = pending[n_blocks * self.window :]

    def _alarm(self, test, image, statistic, p_value=None):
        alarm = {"test": test, "image": image, "statistic": statistic}
        if p_value is not None:
            alarm["p_value"] = p_value
        self.alarms_.append(alarm)

    def state(self):
        """Where the monitor stands.

        Returns
        -------
        state : :class:`~sklearn.utils.Bunch`
            ``alarm`` (bool), ``alarms`` (list, see ``alarms_``), ``n_seen``, ``cusum`` (the
            upper and lower sums) and ``limit``; ``share`` (beyond ``threshold_``, among the
            last ``window`` scores) and ``expected_share`` (None without a threshold).
        """
        check_is_fitted(self, "reference_")
        share = None
        if self.threshold_ is not None and self._recent.size:
            share = float(np.mean(self._recent > self.threshold_))
        return Bunch(
            alarm=bool(self.alarms_),
            alarms=list(self.alarms_),
            n_seen=self.n_seen_,
            cusum=tuple(float(v) for v in self._cusum),
            limit=self.limit_,
            share=share,
            expected_share=self.expected_share_,
        )


def _cusum(start, increments):
    """``S_t = max(0, S_{t-1} + x_t)`` from ``S_0 = start``, for every t at once:
    ``C_t - min(-S_0, min_{s<=t} C_s)`` with ``C`` the running sum of the increments."""
    running = np.cumsum(increments)
    return running - np.minimum(-start, np.minimum.accumulate(running))


def _scores(values, name):
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numbers (anomaly scores); got {values!r:.80}.") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores; got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(array)).sum())} non-finite values.")
    return array
