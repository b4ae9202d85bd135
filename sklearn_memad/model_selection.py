"""Cross-validation for novelty detectors: training folds hold normal samples only."""

from numbers import Integral

import numpy as np
from sklearn.model_selection import BaseCrossValidator, KFold
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["NormalOnlyKFold"]


class NormalOnlyKFold(BaseCrossValidator):
    """K-fold splitter whose training folds hold normal samples only.

    The normal samples (label +1) are split into ``n_splits`` folds, and so are the anomalies
    (label -1). Split ``i`` trains on the normal samples outside normal fold ``i`` and tests on
    normal fold ``i`` plus anomaly fold ``i``, so every test fold can be scored with
    ``scoring="roc_auc"`` and no anomaly is ever trained on.

    With ``GridSearchCV(refit=True)`` the final model is refitted on the whole labelled set;
    sklearn_memad's detectors leave samples labelled -1 out of their memory (see their
    ``fit``), so the refitted model is trained on the normal samples only as well.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=False
        Shuffle each class before splitting.
    random_state : int, RandomState instance or None, default=None
        Seed of the shuffling (only when ``shuffle=True``).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.model_selection import NormalOnlyKFold
    >>> y = np.array([1, 1, 1, 1, -1, -1])
    >>> for train, test in NormalOnlyKFold(n_splits=2).split(np.zeros((6, 1)), y):
    ...     print(train, test)
    [2 3] [0 1 4]
    [0 1] [2 3 5]
    """

    @validate_params(
        {
            "n_splits": [Interval(Integral, 2, None, closed="left")],
            "shuffle": ["boolean"],
            "random_state": ["random_state"],
        },
        prefer_skip_nested_validation=True,
    )
    def __init__(self, n_splits=5, shuffle=False, random_state=None):
        self.n_splits = n_splits
        self.shuffle = shuffle
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits."""
        return self.n_splits

    def split(self, X, y=None, groups=None):
        """Yield ``(train, test)`` index arrays; train holds normal samples only.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples (only their number is used).
        y : array-like of shape (n_samples,), default=None
            +1 normal / -1 anomaly; None means all samples are normal.
        groups : Ignored
        """
        n_samples = len(X)
        labels = np.ones(n_samples, dtype=int) if y is None else np.asarray(y)
        if labels.shape != (n_samples,):
            raise ValueError(f"y must have shape ({n_samples},); got shape {labels.shape}.")
        unknown = set(np.unique(labels).tolist()) - {1, -1}
        if unknown:
            raise ValueError(
                f"y must hold +1 (normal) and -1 (anomaly) labels; got also {sorted(unknown)}."
            )
        normal = np.flatnonzero(labels == 1)
        anomalous = np.flatnonzero(labels == -1)
        if normal.size < self.n_splits:
            raise ValueError(
                f"n_splits={self.n_splits} needs at least {self.n_splits} normal samples; "
                f"got {normal.size}."
            )
        folds = KFold(self.n_splits, shuffle=self.shuffle, random_state=self.random_state)
        anomaly_folds = [np.empty(0, dtype=int)] * self.n_splits
        if anomalous.size >= self.n_splits:
            anomaly_folds = [test for _, test in folds.split(anomalous)]
        elif anomalous.size:
            anomaly_folds = [
                np.arange(anomalous.size)[i :: self.n_splits] for i in range(self.n_splits)
            ]
        for (train, test), anomaly_test in zip(folds.split(normal), anomaly_folds):
            yield normal[train], np.sort(np.concatenate([normal[test], anomalous[anomaly_test]]))

    def _iter_test_indices(self, X=None, y=None, groups=None):  # required by the base class
        for _, test in self.split(X, y, groups):
            yield test
