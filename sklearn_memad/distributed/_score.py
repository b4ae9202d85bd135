"""Scoring on a cluster: the model sent once to every worker, results in the files' order."""

import os
from functools import partial
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from .. import defaults
from ..display import write_overlay
from ..maps import predict_anomaly_maps
from ..persistence import inner_pipeline
from ..utils.pipeline import decision_threshold
from ._common import check_chunk_size, check_client, image_size, read_batches, remote

__all__ = ["SCORE_CHUNK", "score_samples"]

#: Images a scoring task reads and scores at once.
SCORE_CHUNK = defaults.SCORE_CHUNK


# --------------------------------------------------------------------------- scoring
def _score_chunk(model, paths, size, sigma, writer):
    """On a worker: read ``paths``, score them, run ``writer`` on each scored image."""
    skipped = []
    batches = list(read_batches(paths, size, max(len(paths), 1), skipped))
    if not batches:
        empty = np.empty(0)
        return Bunch(
            positions=np.empty(0, dtype=int),
            scores=empty,
            decision=empty,
            labels=np.empty(0, dtype=int),
            percentiles=empty,
            skipped=skipped,
        )
    images, positions = batches[0]
    result = predict_anomaly_maps(model, images, sigma=sigma)
    if writer is not None:
        for i, position in enumerate(positions):
            writer(paths[position], images[i], result, i)
    return Bunch(
        positions=np.asarray(positions, dtype=int),
        scores=result.scores,
        decision=result.decision,
        labels=result.labels,
        percentiles=result.percentiles,
        skipped=skipped,
    )


def _write_overlay(folder, root, save_maps, path, image, result, i):
    """The default writer: ``folder/<path relative to root>.png``, and its map as ``.npy``."""
    relative = Path(path).relative_to(root)
    target = Path(folder) / relative.with_suffix(".png")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_overlay(
        target,
        image,
        result.maps[i],
        score=result.scores[i],
        threshold=result.threshold,
        vmin=result.vmin,
        vmax=result.vmax,
        title=os.fspath(relative),
    )
    if save_maps:
        np.save(target.with_suffix(".npy"), result.maps[i])


def _writer(out, save_maps, writer, paths):
    if out is None:
        return writer
    if writer is not None:
        raise ValueError("pass out (overlay PNGs) or writer (your own outputs), not both.")
    root = os.path.commonpath([os.path.dirname(path) for path in paths]) if paths else ""
    return partial(_write_overlay, os.path.abspath(os.fspath(out)), root, save_maps)


def score_samples(
    model,
    paths,
    *,
    client,
    chunk_size=SCORE_CHUNK,
    sigma=defaults.SIGMA,
    out=None,
    save_maps=False,
    writer=None,
):
    """Score image files on a Dask cluster; the results come back in the order of ``paths``.

    The model is sent to every worker once (``client.scatter(..., broadcast=True)``) and
    stays in its memory: each worker builds the backbone on its first task and its later
    tasks reuse it. Each task reads ``chunk_size`` files, scores them with
    :func:`~sklearn_memad.maps.predict_anomaly_maps` and returns their scores; the maps stay
    on the workers, which can write them (``out``, ``writer``). A task lost with its worker
    is run again on another, and each image's result is kept once.

    Parameters
    ----------
    model : Pipeline or ThresholdedDetector
        Fitted, from images to a sklearn_memad detector (as :func:`fit`, ``Pipeline.fit``
        or :func:`~sklearn_memad.persistence.load_model` give).
    paths : list of str or path-like
        Image files, seen by the workers under the same (absolute) paths. Unreadable files
        are skipped and reported.
    client : distributed.Client
        A client of the cluster.
    chunk_size : int, default=64
        Images per task.
    sigma : float, default=4.0
        Gaussian smoothing of the maps (pixels).
    out : str or path-like, default=None
        A folder the workers write one overlay PNG per image to (see
        :func:`~sklearn_memad.display.write_overlay`), named by the image's path relative to
        the folder that holds all the images.
    save_maps : bool, default=False
        With ``out``, also write each pixel anomaly map as a ``.npy`` file beside its PNG.
    writer : callable, default=None
        Instead of ``out``: ``writer(path, image, result, i)`` is called on the worker for
        each scored image (``result`` is the chunk's :func:`predict_anomaly_maps` Bunch and
        ``i`` the image's row in it). It must pickle.

    Returns
    -------
    result : :class:`~sklearn.utils.Bunch`
        ``paths``: the files read, in the order given; ``indices`` their positions in
        ``paths``; ``scores`` (image anomaly scores, higher = more abnormal),
        ``decision``, ``labels`` (+1 / -1) and ``percentiles``, as
        :func:`predict_anomaly_maps` gives them; ``threshold`` on the ``scores`` scale;
        ``skipped``: ``(path, reason)`` of the files that could not be read.

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
    >>> images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    >>> paths = [f"{folder}/{i}.png" for i in range(5)] + [f"{folder}/missing.png"]
    >>> for path, image in zip(paths[:5], images):
    ...     Image.fromarray(image).save(path)
    >>> pipe = make_detector_pipeline("padim", backbone="resnet18", weights=None,
    ...                               image_size=32, n_components=8).fit(images[5:])
    >>> with Client(processes=False, n_workers=1, threads_per_worker=1) as client:
    ...     result = distributed.score_samples(pipe, paths, client=client, chunk_size=2)
    >>> len(result.paths), result.skipped[0][0] == paths[-1]
    (5, True)
    >>> bool(np.allclose(-result.scores, pipe.score_samples(images[:5]), rtol=1e-5))
    True
    """
    check_client(client)
    pipeline = inner_pipeline(model)
    if pipeline is None:
        raise TypeError(
            "model must be a fitted Pipeline from images to a sklearn_memad detector, or a "
            f"fitted ThresholdedDetector around one; got {type(model).__name__}."
        )
    threshold = -decision_threshold(model)  # NotFittedError for an unfitted model
    check_chunk_size(chunk_size)
    paths = list(paths)
    starts = list(range(0, len(paths), chunk_size))
    writer = _writer(out, save_maps, writer, remote(paths))
    scattered = client.scatter(model, broadcast=True) if paths else None
    size = image_size(pipeline)
    futures = [
        client.submit(
            _score_chunk,
            scattered,
            remote(paths[s : s + chunk_size]),
            size,
            sigma,
            writer,
            pure=False,
        )
        for s in starts
    ]
    results = client.gather(futures)
    indices = np.concatenate([start + r.positions for start, r in zip(starts, results)] or [[]])
    indices = indices.astype(int)
    joined = {
        key: np.concatenate([r[key] for r in results] or [np.empty(0)])
        for key in ("scores", "decision", "labels", "percentiles")
    }
    skipped = [(paths[s + i], why) for s, r in zip(starts, results) for i, why in r.skipped]
    return Bunch(
        paths=[paths[i] for i in indices],
        indices=indices,
        threshold=threshold,
        skipped=skipped,
        **joined,
    )
