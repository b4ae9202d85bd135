"""Shared scikit-learn plumbing of the memory-based detectors.

A detector turns patch-feature grids ``(n, h, w, d)`` into patch anomaly scores ``(n, h, w)``
(higher = more abnormal) and image scores (their max, or the mean of the ``top_k`` largest).
Subclasses only build their memory (``_fit_memory``), score patches against it
(``_score_patches``) and score the training grids out of sample
(``_out_of_sample_patch_scores``); this base class does validation, image scores, the
calibrated ``offset_`` and the outlier API.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..defaults import CALIBRATION_SIZE
from ..utils.validation import check_grid_shape, check_grids, restore_on_error

__all__ = ["BaseMemoryDetector", "image_scores_from_patches"]

# "auto" flags images beyond Tukey's upper fence of the out-of-sample normal anomaly scores.
_TUKEY_FENCE = 1.5


def image_scores_from_patches(patch_scores, top_k=1):
    """Image anomaly scores from patch anomaly scores: the largest, or the ``top_k`` mean.

    This is how every detector turns ``score_patches`` into ``score_samples`` (which is its
    opposite), so scores computed from saved patch maps agree with the detector's.

    Parameters
    ----------
    patch_scores : ndarray of shape (n, h, w)
        Patch anomaly scores, higher = more abnormal (``score_patches``).
    top_k : int, default=1
        Average of the ``top_k`` largest patch scores of each image; 1 takes the largest.

    Returns
    -------
    scores : ndarray of shape (n,), float64
        Image anomaly scores, higher = more abnormal.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.detectors import image_scores_from_patches
    >>> patches = np.array([[[0.0, 1.0], [3.0, 2.0]]])
    >>> image_scores_from_patches(patches), image_scores_from_patches(patches, top_k=2)
    (array([3.]), array([2.5]))
    """
    patch_scores = np.asarray(patch_scores)
    flat = patch_scores.reshape(patch_scores.shape[0], -1)
    k = int(min(top_k, flat.shape[1]))
    if k == 1:
        return flat.max(axis=1).astype(np.float64)
    top = np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:]
    return top.mean(axis=1, dtype=np.float64)


class BaseMemoryDetector(OutlierMixin, BaseEstimator):
    """Base class of the memory-based detectors: PaDiM, PatchCore and DFKDE.

    Not meant to be used directly. A subclass builds its memory (``_fit_memory``), scores
    patches against it (``_score_patches``) and scores its training grids out of sample
    (``_out_of_sample_patch_scores``); this class validates input, reduces patch scores to
    image scores, calibrates ``offset_`` and provides scikit-learn's outlier API.
    """

    # Novelty detectors, as LocalOutlierFactor(novelty=True): scikit-learn's checks read this.
    novelty = True
    # PaDiM and DFKDE model each grid position; PatchCore's memory is position-free.
    _models_positions = True
    # Smallest number of normal images the memory can be built from.
    _min_images = 1
    # Calibration scores given by a memory of fewer than this share of the images seen are
    # dropped: a smaller memory scores normal images worse than the final one would.
    _calibration_memory_share = 0.5

    _parameter_constraints: dict = {
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "top_k": [Interval(Integral, 1, None, closed="left")],
    }

    # ----------------------------------------------------------------- fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Build the memory from normal patch-feature grids and calibrate ``offset_``.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Grids of defect-free images (2-D input is read as ``(n, 1, 1, d)``).
        y : array-like of shape (n,), default=None
            Optional labels, +1 normal / -1 anomaly: samples labelled -1 are left out of the
            memory, so a labelled set (as in ``GridSearchCV``'s refit) trains on normal samples
            only. Other values are ignored.

        Returns
        -------
        self : object
            Fitted detector.
        """
        with restore_on_error(self):
            grids = self._validated_training_grids(X, y)
            self._fit_memory(grids)
            self.n_samples_seen_ = grids.shape[0]
            self._calibrate(self._out_of_sample_patch_scores(grids))
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Add a batch of normal grids to the memory; on an unfitted detector, start one.

        ``for batch in batches: detector.partial_fit(batch)`` builds a memory without ever
        holding all the grids. Each batch is scored against the memory before it is added,
        so its scores are out of sample; the first batch is scored as :meth:`fit` does.
        ``offset_`` comes from the most recent of these scores that a memory of at least
        half the images seen so far gave (a much smaller memory scores normal images worse
        than the final one would), and always from the newest batch's.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Grids of defect-free images.
        y : array-like of shape (n,), default=None
            As in :meth:`fit`: samples labelled -1 are left out.

        Returns
        -------
        self : object
            Updated detector.
        """
        with restore_on_error(self):
            if not hasattr(self, "offset_"):
                grids = self._validated_training_grids(X, y)
                self._start_memory(grids)
                self.n_samples_seen_ = grids.shape[0]
                self._calibrate(self._out_of_sample_patch_scores(grids))
                return self
            grids = self._validated_batch(X, y)
            if grids.shape[0] == 0:
                return self
            before = -image_scores_from_patches(self._score_patches(grids), self.top_k)
            memory_size = self.n_samples_seen_
            self._grow_memory(grids)
            self.n_samples_seen_ += grids.shape[0]
            self._recalibrate(grids, before, memory_size)
        return self

    def _recalibrate(self, grids, before, memory_size):
        """Calibrate after ``grids`` were added: by default on scores given by the memory
        before each batch was added (``before``, by a memory of ``memory_size`` images)."""
        self._keep_calibration(
            np.concatenate([self.train_scores_, before]),
            np.concatenate([self._memory_sizes(), np.full(before.size, memory_size)]),
            newest=before.size,
        )

    def _calibrate_merged(self, detectors):
        """Calibrate a merged memory: by default on the detectors' own out-of-sample scores."""
        self._keep_calibration(
            np.concatenate([detector.train_scores_ for detector in detectors]),
            np.concatenate([detector._memory_sizes() for detector in detectors]),
            newest=sum(detector.train_scores_.size for detector in detectors),
        )

    def _start_memory(self, grids):
        """The memory of a first ``partial_fit`` batch: what ``fit`` builds, by default."""
        self._fit_memory(grids)

    def _validated_batch(self, X, y):
        """Grids of a further batch, checked against the fitted memory; -1 samples dropped."""
        grids, _ = check_grids(self, X, reset=False)
        if self._models_positions:
            check_grid_shape(self, grids, self.grid_shape_)
        grids = _normal_only(grids, y)
        return grids

    def _validated_training_grids(self, X, y):
        grids, _ = check_grids(self, X, reset=True)
        grids = _normal_only(grids, y)
        if grids.shape[0] < self._min_images:
            raise ValueError(
                f"{type(self).__name__} needs at least {self._min_images} normal samples to "
                f"build its memory; got {grids.shape[0]} "
                f"sample{'' if grids.shape[0] == 1 else 's'}."
            )
        self.grid_shape_ = tuple(grids.shape[1:3])
        return grids

    def _calibrate(self, out_of_sample_patch_scores):
        """Set ``train_scores_`` and ``offset_`` from out-of-sample scores of the training set."""
        self.train_scores_ = -image_scores_from_patches(out_of_sample_patch_scores, self.top_k)
        self.__dict__.pop("_scored_by", None)
        self.offset_ = self._offset_from(self.train_scores_)

    def _memory_sizes(self):
        """How many images the memory that gave each of ``train_scores_`` held."""
        sizes = self.__dict__.get("_scored_by")
        if sizes is None:  # scores of a fit, each by the memory of all the others
            sizes = np.full(self.train_scores_.size, max(self.n_samples_seen_ - 1, 1))
        return sizes

    def _keep_calibration(self, scores, memory_sizes, newest):
        """Keep the most recent out-of-sample scores given by a memory of at least a share of
        the images seen (and the ``newest`` ones in any case); set ``offset_`` from them."""
        keep = memory_sizes >= self._calibration_memory_share * self.n_samples_seen_
        keep[memory_sizes.size - newest :] = True
        self.train_scores_ = np.asarray(scores, dtype=np.float64)[keep][-CALIBRATION_SIZE:]
        self._scored_by = memory_sizes[keep][-CALIBRATION_SIZE:]
        self.offset_ = self._offset_from(self.train_scores_)

    def _offset_from(self, train_scores):
        if self.contamination == "auto":
            q1, q3 = np.percentile(train_scores, [25, 75])
            return float(q1 - _TUKEY_FENCE * (q3 - q1))
        return float(np.percentile(train_scores, 100.0 * self.contamination))

    # ----------------------------------------------------------------- scoring
    def _validated_grids(self, X):
        check_is_fitted(self)
        grids, _ = check_grids(self, X, reset=False)
        if self._models_positions:
            check_grid_shape(self, grids, self.grid_shape_)
        return grids

    def score_patches(self, X):
        """Anomaly score of every patch (higher = more abnormal).

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.

        Returns
        -------
        patch_scores : ndarray of shape (n, h, w)
            Patch anomaly scores; ``(n, 1, 1)`` for 2-D input.
        """
        grids = self._validated_grids(X)
        return self._score_patches(grids).astype(np.float64, copy=False)

    def score_samples(self, X):
        """Image normality score (lower = more abnormal), scikit-learn's outlier convention.

        It is minus the image anomaly score: the largest patch score, or the mean of the
        ``top_k`` largest ones.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.

        Returns
        -------
        scores : ndarray of shape (n,)
            Opposite of the image anomaly scores.
        """
        grids = self._validated_grids(X)
        return -image_scores_from_patches(self._score_patches(grids), self.top_k)

    def decision_function(self, X):
        """Shifted score: negative for anomalies, ``score_samples(X) - offset_``.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.

        Returns
        -------
        decision : ndarray of shape (n,)
            Negative values are anomalies, non-negative values normal.
        """
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """Label each sample +1 (normal) or -1 (anomaly).

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.

        Returns
        -------
        labels : ndarray of shape (n,)
            +1 for normal, -1 for anomalous samples.
        """
        decision = self.decision_function(X)
        labels = np.ones(decision.shape[0], dtype=int)
        labels[decision < 0] = -1
        return labels

    def fit_predict(self, X, y=None):
        """Fit on ``X`` and label its samples from their out-of-sample scores.

        Each training sample is judged by a memory that does not hold it (see ``offset_``),
        so with ``contamination=c`` a fraction ``c`` of ``X`` is labelled -1: the samples
        most unlike the rest, e.g. defective images that slipped into a training set. This
        differs from ``fit(X).predict(X)``, which scores ``X`` against a memory that holds it.

        Parameters
        ----------
        X : array-like of shape (n, h, w, d) or (n, d)
            Patch-feature grids.
        y : array-like of shape (n,), default=None
            As in :meth:`fit`.

        Returns
        -------
        labels : ndarray of shape (n,)
            +1 for normal, -1 for anomalous samples.
        """
        self.fit(X, y)
        labels = np.ones(self.train_scores_.shape[0], dtype=int)
        labels[self.train_scores_ - self.offset_ < 0] = -1
        if y is None or labels.shape[0] == np.asarray(y).shape[0]:
            return labels
        out = -np.ones(np.asarray(y).shape[0], dtype=int)
        out[np.asarray(y) != -1] = labels
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = False
        return tags


def _normal_only(grids, y):
    """The grids not labelled -1 (anomaly) in ``y``; all of them without labels."""
    if y is None:
        return grids
    labels = np.asarray(y)
    if labels.shape != (grids.shape[0],):
        raise ValueError(
            f"y must have shape ({grids.shape[0]},) to match X; got shape {labels.shape}."
        )
    return grids[labels != -1]
