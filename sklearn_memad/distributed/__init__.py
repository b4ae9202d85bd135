"""Fit and score on a Dask cluster: image folders split over workers, one model merged back.

Needs ``pip install 'sklearn_memad[dask]'`` (``dask[distributed]``); ``import sklearn_memad``
works without it, and these functions say what to install when it is missing.

- :func:`fit` splits the training files into partitions, one per worker by default. Each
  worker reads and featurises its partition a chunk at a time and adds each chunk to a
  detector of its own (``partial_fit``); the client merges the partitions' detectors
  (:func:`~sklearn_memad.detectors.merge_detectors`). PaDiM merges exactly; PatchCore's
  coresets are merged and reduced again to the size one fit would keep; DFKDE keeps every
  image. The result is an ordinary fitted ``Pipeline``.
- :func:`score_samples` sends the fitted model to every worker once and scores chunks of
  files there, optionally writing overlay PNGs (or any output, through ``writer``) on the
  workers; the results come back in the order of the files.
- :func:`fit_categories` fits one model per category, each category a task on a worker.
- :func:`connect` opens a client on a running cluster, as ``memad fit --scheduler`` and
  ``memad score --scheduler`` do.

The workers read the files and write the outputs themselves: they must see them under the
same paths as the client (relative paths are made absolute on the client), and have
sklearn_memad installed. Each worker builds the backbone once and keeps it while it holds
the model: the feature step caches its network in the worker's copy of the model.
"""

from ._common import connect
from ._fit import fit, fit_categories
from ._score import SCORE_CHUNK, score_samples

__all__ = ["SCORE_CHUNK", "connect", "fit", "fit_categories", "score_samples"]
