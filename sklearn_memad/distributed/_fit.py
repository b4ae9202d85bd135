"""Fitting on a cluster: one large category split over the workers, or many categories."""

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils import Bunch

from .. import defaults
from ..datasets import ImageFolderError, read_images
from ..detectors import merge_detectors
from ..pipelines import partial_fit
from ._common import (
    FIRST_BATCH,
    check_chunk_size,
    check_client,
    check_pipeline,
    image_size,
    no_image_error,
    read_batches,
    remote,
    report,
)

__all__ = ["fit", "fit_categories"]


# Detector settings that keep what merging needs: PaDiM's statistics, the calibration samples.
_KEEP_FOR_MERGING = ("keep_statistics", "keep_calibration")


# --------------------------------------------------------------------------- fitting
def _partitions(n, k):
    """``(start, stop)`` of ``k`` contiguous, near-equal, non-empty slices of ``n`` items."""
    edges = np.linspace(0, n, min(k, n) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _n_threads(client):
    """Worker threads of the cluster: one partition each runs at a time."""
    client.wait_for_workers(1)
    return max(1, sum(client.nthreads().values()))


def _fit_head(pipeline, paths, size):
    """Fit the steps before the detector here, on one image: they learn shapes and seeds.

    Returns the fitted head (a Pipeline sharing the steps of ``pipeline``) or None, and the
    size the workers resize the images to.
    """
    if size is None:  # the images' own size: the first readable one's, for all
        for path in paths:
            images, kept, _ = read_images([path])
            if kept:
                size = images.shape[1:3]
                break
    if len(pipeline.steps) == 1:
        return None, size
    head = pipeline[:-1]
    if size is not None:
        head.fit(np.zeros((1,) + tuple(size) + (3,), dtype=np.uint8))
    return head, size


def _fit_partition(head, detector, paths, size, chunk_size):
    """On a worker: a detector of its own, fitted on ``paths`` a chunk at a time."""
    detector = clone(detector)
    skipped, leftover = [], None
    for images, _ in read_batches(paths, size, chunk_size, skipped):
        grids = head.transform(images) if head is not None else images
        if not hasattr(detector, "offset_") and len(grids) < FIRST_BATCH:
            leftover = grids  # one image alone starts no memory: the client adds it
            continue
        detector.partial_fit(grids)
    started = hasattr(detector, "offset_")
    return Bunch(detector=detector if started else None, leftover=leftover, skipped=skipped)


def _merge(results, shard, random_state):
    """One detector from the partitions' detectors, and the images left over alone."""
    detectors = [result.detector for result in results if result.detector is not None]
    leftover = [result.leftover for result in results if result.leftover is not None]
    if not detectors:
        return clone(shard).fit(np.concatenate(leftover))
    merged = merge_detectors(detectors, random_state=random_state)
    if leftover:
        merged.partial_fit(np.concatenate(leftover))
    return merged


def fit(
    pipeline,
    paths,
    *,
    client,
    chunk_size=defaults.FIT_CHUNK,
    n_partitions=None,
    random_state=None,
    return_skipped=False,
):
    """Fit a pipeline on image files, the work split over the workers of a Dask cluster.

    The steps before the detector are fitted here, on one image (they learn only shapes and
    seeds). The files are split into ``n_partitions`` contiguous partitions; on the workers,
    each partition is read and featurised ``chunk_size`` images at a time, every chunk added
    to a detector of the partition's own (``partial_fit``), so a worker never holds more
    than a chunk of images. The partitions' detectors are merged here by
    :func:`~sklearn_memad.detectors.merge_detectors`: PaDiM exactly (its partitions keep
    their sufficient statistics; the merged detector gets back the pipeline's
    ``keep_statistics``), PatchCore by merge-and-reduce to the coreset size one fit would
    keep, DFKDE keeping every image. ``offset_`` comes from the partitions' out-of-sample
    scores of their own images, computed on the workers.

    The client holds every partition's detector while it merges them (for PaDiM, float64
    statistics of ``h * w * d * (d + 1) * 8`` bytes each): ask for fewer partitions if that
    is too much. A worker's threads share its copy of the steps before the detector, which
    they only read.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        From images to a sklearn_memad detector (e.g.
        :func:`~sklearn_memad.pipelines.make_detector_pipeline`); fitted in place, its
        detector step replaced by the merged detector.
    paths : list of str or path-like
        Defect-free image files, seen by the workers under the same (absolute) paths.
        Unreadable files are skipped.
    client : distributed.Client
        A client of the cluster.
    chunk_size : int, default=256
        Images a worker reads and adds to its memory at a time.
    n_partitions : int, default=None
        Partitions of ``paths``, one detector each; default: one per worker thread.
    random_state : int, RandomState instance or None, default=None
        Seeds the merge (PatchCore's search index, DFKDE's draw of samples); None takes the
        detector's own ``random_state`` when it has one.
    return_skipped : bool, default=False
        Also return the unreadable files; otherwise a warning names them.

    Returns
    -------
    pipeline : sklearn.pipeline.Pipeline
        The same pipeline, fitted.
    skipped : list of (path, reason)
        Only with ``return_skipped=True``: the files that could not be read, and why.

    Raises
    ------
    TypeError
        If ``pipeline`` is not a Pipeline ending in a sklearn_memad detector (a
        ThresholdedDetector is not fitted this way: fit its pipeline, then wrap it).
    sklearn_memad.datasets.ImageFolderError
        If no file can be read.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from distributed import Client
    >>> from sklearn_memad import distributed
    >>> from sklearn_memad.pipelines import make_detector_pipeline
    >>> folder = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> paths = []
    >>> for i in range(8):
    ...     paths.append(f"{folder}/{i}.png")
    ...     Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    >>> pipe = make_detector_pipeline("padim", backbone="resnet18", weights=None,
    ...                               image_size=32, n_components=8)
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1) as client:
    ...     pipe = distributed.fit(pipe, paths, client=client, chunk_size=4, n_partitions=2)
    >>> pipe[-1].n_samples_seen_, pipe.predict(np.zeros((1, 32, 32, 3), np.uint8)).shape
    (8, (1,))
    """
    check_client(client)
    detector = check_pipeline(pipeline)
    check_chunk_size(chunk_size)
    paths = list(paths)
    head, size = _fit_head(pipeline, paths, image_size(pipeline))
    shard = clone(detector)
    # What merging needs travels back with each partition's detector.
    shard.set_params(**{name: True for name in _KEEP_FOR_MERGING if name in shard.get_params()})
    parts = _partitions(len(paths), n_partitions or _n_threads(client))
    remote_head = client.scatter(head, broadcast=True) if head is not None else None
    futures = [
        client.submit(
            _fit_partition, remote_head, shard, remote(paths[a:b]), size, chunk_size, pure=False
        )
        for a, b in parts
    ]
    results = client.gather(futures)
    skipped = [
        (paths[a + i], why) for (a, _), res in zip(parts, results) for i, why in res.skipped
    ]
    if all(result.detector is None and result.leftover is None for result in results):
        raise no_image_error(skipped, paths)
    if random_state is None:
        random_state = detector.get_params().get("random_state")
    merged = _merge(results, shard, random_state)
    params = detector.get_params()
    merged.set_params(**{name: params[name] for name in _KEEP_FOR_MERGING if name in params})
    pipeline.steps[-1] = (pipeline.steps[-1][0], merged)
    return report(skipped, return_skipped, pipeline)


# --------------------------------------------------------------------------- categories
def _fit_category(pipeline, paths, chunk_size):
    """On a worker: fit ``pipeline`` on ``paths``, streamed through ``pipelines.partial_fit``."""
    skipped = []
    for images, _ in read_batches(paths, image_size(pipeline), chunk_size, skipped):
        partial_fit(pipeline, images)
    fitted = hasattr(pipeline.steps[-1][1], "offset_")
    return Bunch(pipeline=pipeline if fitted else None, skipped=skipped)


def fit_categories(
    paths_by_category,
    make_pipeline,
    *,
    client,
    chunk_size=defaults.FIT_CHUNK,
    return_skipped=False,
):
    """Fit one model per category, the categories in parallel on the workers of a cluster.

    Each category is one task: a worker reads its files ``chunk_size`` at a time and adds
    each chunk to the category's pipeline (:func:`~sklearn_memad.pipelines.partial_fit`).
    Use :func:`fit` instead to spread one large category over several workers.

    Parameters
    ----------
    paths_by_category : dict of {str: list of path-like}
        Each category's defect-free image files, seen by the workers under the same
        (absolute) paths.
    make_pipeline : Pipeline or callable
        The unfitted pipeline every category gets a clone of, or a function that returns
        the pipeline of a category from its name (called here, not on the workers).
    client : distributed.Client
        A client of the cluster.
    chunk_size : int, default=256
        Images read and added to a memory at a time.
    return_skipped : bool, default=False
        Also return the unreadable files, ``{category: [(path, reason), ...]}``; otherwise a
        warning names them.

    Returns
    -------
    pipelines : dict of {str: Pipeline}
        Each category's fitted pipeline.
    skipped : dict of {str: list of (path, reason)}
        Only with ``return_skipped=True``.

    Raises
    ------
    sklearn_memad.datasets.ImageFolderError
        If a category has no readable file.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from distributed import Client
    >>> from sklearn_memad.distributed import fit_categories
    >>> from sklearn_memad.pipelines import make_detector_pipeline
    >>> folder = tempfile.mkdtemp()
    >>> rng = np.random.default_rng(0)
    >>> files = {"a": [f"{folder}/a{i}.png" for i in range(6)],
    ...          "b": [f"{folder}/b{i}.png" for i in range(6)]}
    >>> for path in files["a"] + files["b"]:
    ...     Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    >>> pipe = make_detector_pipeline("padim", backbone="resnet18", weights=None,
    ...                               image_size=32, n_components=8)
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1) as client:
    ...     models = fit_categories(files, pipe, client=client)
    >>> {category: model[-1].n_samples_seen_ for category, model in models.items()}
    {'a': 6, 'b': 6}
    """
    check_client(client)
    check_chunk_size(chunk_size)
    futures = {}
    for category, paths in paths_by_category.items():
        made = make_pipeline if isinstance(make_pipeline, Pipeline) else make_pipeline(category)
        check_pipeline(made, f"the pipeline of category {category!r}")
        futures[category] = client.submit(
            _fit_category, clone(made), remote(paths), chunk_size, pure=False
        )
    results = client.gather(futures)
    fitted, skipped = {}, {}
    for category, result in results.items():
        paths = list(paths_by_category[category])
        skipped[category] = [(paths[i], reason) for i, reason in result.skipped]
        if result.pipeline is None:
            error = no_image_error(skipped[category], paths)
            raise ImageFolderError(f"category {category!r}: {error}")
        fitted[category] = result.pipeline
    if return_skipped:
        return fitted, skipped
    return report([item for items in skipped.values() for item in items], False, fitted)
