"""Shared scikit-learn plumbing of the memory-based detectors.

A detector turns patch-feature grids ``(n, h, w, d)`` into patch anomaly scores ``(n, h, w)``
(higher = more abnormal) and image scores (their max, or the mean of the ``top_k`` largest,
leaving the grid's ``border`` rings out).
Subclasses only build their memory (``_fit_memory``), score patches against it
(``_score_patches``) and score the training grids out of sample
(``_out_of_sample_patch_scores``); this base class does validation, image scores, the
calibrated ``offset_`` and the outlier API.
"""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ..defaults import CALIBRATION_IMAGES, CALIBRATION_SIZE
from ..utils.devices import DeviceArrays, resolve_device
from ..utils.reservoir import reservoir_indices
from ..utils.tensors import read_tensor
from ..utils.validation import check_grid_shape, check_grids, restore_on_error
from ._border import fill_border, inner_patches

__all__ = ["BaseMemoryDetector", "image_offsets", "image_scores_from_patches"]

# "auto" flags images beyond Tukey's upper fence of the out-of-sample normal anomaly scores.
_TUKEY_FENCE = 1.5


def image_scores_from_patches(patch_scores, top_k=1, border=0):
    """Image anomaly scores from patch anomaly scores: the largest, or the ``top_k`` mean.

    This is how every detector turns ``score_patches`` into ``score_samples`` (which is its
    opposite), so scores computed from saved patch maps agree with the detector's when given
    the detector's ``top_k`` and ``border``.

    Parameters
    ----------
    patch_scores : ndarray of shape (n, h, w)
        Patch anomaly scores, higher = more abnormal (``score_patches``).
    top_k : int, default=1
        Average of the ``top_k`` largest patch scores of each image; 1 takes the largest.
    border : int, default=0
        Outer rings of patches left out; a grid with no inner patch left (``h`` or ``w`` at
        most ``2 * border``) is taken whole.

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
    >>> corner_hot = np.pad(np.ones((1, 2, 2)), ((0, 0), (1, 1), (1, 1)))
    >>> corner_hot[0, 0, 0] = 9.0
    >>> image_scores_from_patches(corner_hot), image_scores_from_patches(corner_hot, border=1)
    (array([9.]), array([1.]))
    """
    patch_scores = inner_patches(np.asarray(patch_scores), border)
    flat = patch_scores.reshape(patch_scores.shape[0], -1)
    k = int(min(top_k, flat.shape[1]))
    if k == 1:
        return flat.max(axis=1).astype(np.float64)
    top = np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:]
    return top.mean(axis=1, dtype=np.float64)


def image_offsets(detectors):
    """Number of the first image of each detector when their images are numbered in turn."""
    return np.cumsum([0] + [detector.n_samples_seen_ for detector in detectors[:-1]])


class BaseMemoryDetector(OutlierMixin, BaseEstimator):
    """Base class of the memory-based detectors: PaDiM, PatchCore and DFKDE.

    Not meant to be used directly. A subclass builds its memory (``_fit_memory``), scores
    patches against it (``_score_patches``) and scores its training grids out of sample
    (``_out_of_sample_patch_scores``); this class validates input, reduces patch scores to
    image scores, calibrates ``offset_`` and provides scikit-learn's outlier API.
    """

    # Novelty detectors, as LocalOutlierFactor(novelty=True): scikit-learn's checks read this.
    novelty = True
    # What a memory keeps to calibrate on after it grows or merges: a reservoir of training
    # grids and their image numbers.
    _calibration_set = ("_calibration_grids", "_calibration_ids")
    # PaDiM and DFKDE model each grid position; PatchCore's memory is position-free.
    _models_positions = True
    # Smallest number of normal images the memory can be built from.
    _min_images = 1

    _parameter_constraints: dict = {
        "contamination": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="right")],
        "top_k": [Interval(Integral, 1, None, closed="left")],
        "border": [Interval(Integral, 0, None, closed="left")],
        "device": [str],
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
        holding all the grids. ``offset_`` follows the memory: it comes from out-of-sample
        scores, against the grown memory, of a seeded reservoir of at most
        ``sklearn_memad.defaults.CALIBRATION_IMAGES`` training images (a uniform sample of
        all the batches), as :meth:`fit` calibrates on all its images.

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
        # scikit-learn's _fit_context validates parameters only before the first call.
        self._validate_params()
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
            first_image = self.n_samples_seen_
            self._grow_memory(grids)
            self.n_samples_seen_ += grids.shape[0]
            self._recalibrate(grids, first_image)
        return self

    def _calibrate_merged(self, detectors):
        """Calibrate a merged memory without a sample of images to score against it: on the
        detectors' own out-of-sample scores, each given by a smaller memory."""
        scores = np.concatenate([detector.train_scores_ for detector in detectors])
        self.train_scores_ = scores[-CALIBRATION_SIZE:]
        self.offset_ = self._offset_from(self.train_scores_)

    def _keep_for_calibration(self, grids, first_image):
        """Add ``grids``, the training images numbered from ``first_image`` on, to the seeded
        reservoir of images that the memory calibrates on."""
        ids = np.arange(first_image, first_image + grids.shape[0])
        held = self.__dict__.get("_calibration_grids")
        n_held = 0 if held is None else held.shape[0]
        if held is not None:
            grids = np.concatenate([held, grids])
            ids = np.concatenate([self._calibration_ids, ids])
        index = reservoir_indices(n_held, ids.size - n_held, first_image, CALIBRATION_IMAGES, 0)
        self._calibration_grids = np.ascontiguousarray(grids[index])
        self._calibration_ids = ids[index]

    def _drop_calibration_set(self):
        for name in self._calibration_set:
            self.__dict__.pop(name, None)

    def _merged_calibration_set(self, detectors):
        """A uniform sample of all the images of ``detectors``, drawn from their reservoirs in
        proportion to the images each saw, numbered as in the merge; False if one has none."""
        reservoirs = [vars(detector).get("_calibration_grids") for detector in detectors]
        if any(reservoir is None for reservoir in reservoirs):
            return False
        offsets = image_offsets(detectors)
        ids = np.concatenate(
            [d._calibration_ids + offset for d, offset in zip(detectors, offsets)]
        )
        weight = np.concatenate(
            [np.full(len(r), d.n_samples_seen_ / len(r)) for d, r in zip(detectors, reservoirs)]
        )
        size = min(CALIBRATION_IMAGES, weight.size)
        chosen = np.random.RandomState(0).choice(
            weight.size, size, replace=False, p=weight / weight.sum()
        )
        index = np.sort(chosen)
        self._calibration_grids = np.ascontiguousarray(np.concatenate(reservoirs)[index])
        self._calibration_ids = ids[index]
        return True

    def _start_memory(self, grids):
        """The memory of a first ``partial_fit`` batch: what ``fit`` builds, by default."""
        self._fit_memory(grids)

    def _validated_batch(self, X, y):
        """Grids of a further batch, checked against the fitted memory; -1 samples dropped."""
        grids, _ = check_grids(self, X, reset=False)
        _check_feature_scale(grids)
        if self._models_positions:
            check_grid_shape(self, grids, self.grid_shape_)
        grids = _normal_only(grids, y)
        return grids

    def _validated_training_grids(self, X, y):
        grids, _ = check_grids(self, X, reset=True)
        _check_feature_scale(grids)
        grids = _normal_only(grids, y)
        if grids.shape[0] < self._min_images:
            raise ValueError(
                f"{type(self).__name__} needs at least {self._min_images} normal samples to "
                f"build its memory; got {grids.shape[0]} "
                f"sample{'' if grids.shape[0] == 1 else 's'}."
            )
        self.grid_shape_ = tuple(grids.shape[1:3])
        return grids

    def _validate_params(self):
        super()._validate_params()
        # scikit-learn's Interval(Integral, ...) lets a bool through as 0 or 1.
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) and not {"boolean", "verbose"} & {
                c for c in constraints if isinstance(c, str)
            }:
                raise TypeError(
                    f"The {name!r} parameter of {type(self).__name__} must not be a bool; "
                    f"got {value!r}."
                )

    def _calibrate(self, out_of_sample_patch_scores):
        """Set ``train_scores_`` and ``offset_`` from out-of-sample scores of the training set."""
        self.train_scores_ = -self._image_scores(out_of_sample_patch_scores)
        self.offset_ = self._offset_from(self.train_scores_)

    def _offset_from(self, train_scores):
        if self.contamination == "auto":
            q1, q3 = np.percentile(train_scores, [25, 75])
            return float(q1 - _TUKEY_FENCE * (q3 - q1))
        return float(np.percentile(train_scores, 100.0 * self.contamination))

    # ----------------------------------------------------------------- devices
    def _device(self):
        """The torch device the memory is built and searched on (``device``)."""
        return resolve_device(self.device)

    def _on_device(self, name, device):
        """The fitted array ``name`` as a tensor on ``device``, moved there once."""
        held = self.__dict__.get("_device_arrays")
        if held is None:
            held = self._device_arrays = DeviceArrays()
        return held.get(name, getattr(self, name), device)

    def __getstate__(self):
        # Device copies of fitted arrays are rebuilt on first use, never saved.
        state = dict(super().__getstate__())
        state.pop("_device_arrays", None)
        return state

    # ----------------------------------------------------------------- scoring
    def _validated_grids(self, X):
        check_is_fitted(self)
        self._validate_params()  # set_params may have changed them since fit
        grids, _ = check_grids(self, X, reset=False)
        _check_feature_scale(grids)
        if self._models_positions:
            check_grid_shape(self, grids, self.grid_shape_)
        return grids

    def _image_scores(self, patch_scores):
        return image_scores_from_patches(patch_scores, self.top_k, self.border)

    def score_patches(self, X):
        """Anomaly score of every patch (higher = more abnormal).

        The ``border`` outer rings of the grid repeat their nearest inner patch's score, as
        they are left out of the image score.

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
        patch_scores = self._score_patches(grids).astype(np.float64, copy=False)
        return fill_border(patch_scores, self.border)

    def score_samples(self, X):
        """Image normality score (lower = more abnormal), scikit-learn's outlier convention.

        It is minus the image anomaly score: the largest patch score, or the mean of the
        ``top_k`` largest ones, leaving the grid's ``border`` outer rings out.

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
        return -self._image_scores(self._score_patches(grids))

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


# Distances are squared and summed in float32: features beyond this magnitude overflow them.
_LARGEST_FEATURE = 1e15


def _check_feature_scale(grids):
    if grids.size == 0:
        return
    with torch.inference_mode():
        low, high = torch.aminmax(read_tensor(grids))
    largest = max(-float(low), float(high))
    if largest > _LARGEST_FEATURE:
        raise ValueError(
            f"X has a feature of magnitude {largest:.3g}; the detectors square distances in "
            f"float32, which overflow beyond about {_LARGEST_FEATURE:.0e}. Scale the features "
            "down (standardise them, for example)."
        )


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
