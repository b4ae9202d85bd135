"""One detector from several fitted on disjoint data: the memory merged, calibration kept."""

from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from ._base import BaseMemoryDetector

__all__ = ["merge_detectors"]

# Settings that may differ between the detectors of one merge: they do not shape the memory.
_FREE_SETTINGS = ("verbose",)


def _check_mergeable(detectors):
    if not detectors:
        raise ValueError("detectors is empty; pass the fitted detectors to merge.")
    first = detectors[0]
    for i, detector in enumerate(detectors):
        if not isinstance(detector, BaseMemoryDetector):
            raise TypeError(
                f"detectors[{i}] is a {type(detector).__name__}; expected sklearn_memad "
                "detectors (PaDiMDetector, PatchCoreDetector or DFKDEDetector)."
            )
        check_is_fitted(detector)
        if type(detector) is not type(first):
            raise TypeError(
                f"detectors[{i}] is a {type(detector).__name__} and detectors[0] a "
                f"{type(first).__name__}; only detectors of one class merge."
            )
        mine, theirs = _settings(detector), _settings(first)
        differ = sorted(key for key in mine if mine[key] != theirs[key])
        if differ:
            shown = ", ".join(f"{k}={mine[k]!r} vs {theirs[k]!r}" for k in differ)
            raise ValueError(
                f"detectors[{i}] has other settings than detectors[0] ({shown}); only "
                "detectors of the same settings merge."
            )
        if detector.n_features_in_ != first.n_features_in_:
            raise ValueError(
                f"detectors[{i}] was fitted on {detector.n_features_in_} features and "
                f"detectors[0] on {first.n_features_in_}; their memories cannot merge."
            )
        if first._models_positions and detector.grid_shape_ != first.grid_shape_:
            raise ValueError(
                f"detectors[{i}] models a {detector.grid_shape_} grid and detectors[0] a "
                f"{first.grid_shape_} grid; position-wise memories merge only on one grid."
            )


def _settings(detector):
    params = detector.get_params(deep=False)
    return {key: value for key, value in params.items() if key not in _FREE_SETTINGS}


def merge_detectors(detectors, *, random_state=None):
    """One fitted detector from detectors of one class and settings fitted on disjoint data.

    - :class:`~sklearn_memad.PaDiMDetector`: exact. The float64 sufficient statistics
      (count, mean, scatter per position) are combined by the pairwise update, so the result
      equals one ``fit`` on all the data (up to float rounding). The detectors must hold
      their statistics: fit them with ``keep_statistics=True`` (or with ``partial_fit``).
    - :class:`~sklearn_memad.PatchCoreDetector`: merge-and-reduce. The union of the
      coresets is thinned again by greedy k-center to the size a single fit would keep,
      and ``cover_radius_`` carries how far every training patch may lie from the coreset.
    - :class:`~sklearn_memad.DFKDEDetector`: every detector's samples are kept; with
      ``max_samples``, a seeded draw keeps that many, a uniform sample of all the images.

    ``offset_`` comes from out-of-sample scores against the merged memory of a uniform
    sample of all the images (at most ``sklearn_memad.defaults.CALIBRATION_IMAGES``),
    drawn from the detectors' calibration samples, as after ``partial_fit``. PaDiM holds
    them with its statistics, DFKDE in its memory, PatchCore when built by ``partial_fit``
    or with ``keep_calibration=True``. Without them, ``offset_`` comes from the detectors'
    own out-of-sample scores, each given by a smaller memory than the merged one, so the
    merged threshold flags fewer new normal images than ``contamination`` says.

    Parameters
    ----------
    detectors : list of fitted detectors
        Of one class, with the same settings (``verbose`` may differ), fitted on disjoint
        sets of normal images.
    random_state : int, RandomState instance or None, default=None
        Seeds PatchCore's search index and DFKDE's draw of samples.

    Returns
    -------
    detector : fitted detector
        A new detector of the same class and settings; the inputs are not changed.

    Raises
    ------
    TypeError
        If a detector is not a sklearn_memad detector, or the classes differ.
    ValueError
        If the list is empty, or the settings, feature counts or grids differ; or, for
        PaDiM, if a detector holds no sufficient statistics.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import PaDiMDetector
    >>> from sklearn_memad.detectors import merge_detectors
    >>> rng = np.random.default_rng(0)
    >>> grids = rng.normal(size=(40, 4, 4, 8)).astype(np.float32)
    >>> shards = [PaDiMDetector(keep_statistics=True).fit(part) for part in np.split(grids, 4)]
    >>> merged = merge_detectors(shards)
    >>> single = PaDiMDetector().fit(grids)
    >>> test = rng.normal(size=(3, 4, 4, 8)).astype(np.float32)
    >>> bool(np.allclose(merged.score_samples(test), single.score_samples(test), rtol=1e-6))
    True
    >>> merged.n_samples_seen_
    40
    """
    detectors = list(detectors)
    _check_mergeable(detectors)
    first = detectors[0]
    merged = clone(first)
    merged._merge_memories(detectors, random_state)
    merged.n_features_in_ = first.n_features_in_
    merged.n_samples_seen_ = int(sum(detector.n_samples_seen_ for detector in detectors))
    merged._calibrate_merged(detectors)
    return merged
