"""What the cluster functions share: the client, checks, paths, reading files in batches."""

import os
import warnings

import numpy as np
from sklearn.pipeline import Pipeline

from ..datasets import ImageFolderError, read_images
from ..detectors import BaseMemoryDetector
from ..utils.chunking import check_chunk_size
from ..utils.validation import check_image_size

__all__ = [
    "FIRST_BATCH",
    "check_chunk_size",
    "check_client",
    "check_pipeline",
    "connect",
    "image_size",
    "no_image_error",
    "read_batches",
    "remote",
    "report",
    "require_distributed",
]

# The first batch of a memory holds at least this many images: PaDiM and DFKDE need two.
FIRST_BATCH = 2
_INSTALL = "pip install 'sklearn_memad[dask]'"


def require_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            f"sklearn_memad.distributed needs Dask's distributed scheduler: {_INSTALL}"
        ) from exc
    return distributed


def check_client(client):
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(
            f"client must be a distributed.Client; got {type(client).__name__}. Start one "
            "with distributed.Client(address) or sklearn_memad.distributed.connect(address)."
        )


def check_pipeline(pipeline, name="pipeline"):
    """The detector ending ``pipeline``; a TypeError unless it is such a Pipeline."""
    if not isinstance(pipeline, Pipeline) or not isinstance(
        pipeline.steps[-1][1], BaseMemoryDetector
    ):
        raise TypeError(
            f"{name} must be a Pipeline ending in a sklearn_memad detector; got "
            f"{type(pipeline).__name__}."
        )
    return pipeline.steps[-1][1]


def image_size(pipeline):
    """(H, W) the pipeline's first step resizes images to, or None (each image's own)."""
    return check_image_size(getattr(pipeline.steps[0][1], "image_size", None))


def remote(paths):
    """Absolute paths, as the workers (whose working folder may differ) must see them."""
    return [os.path.abspath(os.fspath(path)) for path in paths]


def connect(address, *, timeout=10):
    """A Dask client on the running cluster whose scheduler is at ``address``.

    Parameters
    ----------
    address : str
        The scheduler's address, e.g. ``"tcp://10.0.0.5:8786"``.
    timeout : float, default=10
        Seconds to wait for the scheduler.

    Returns
    -------
    client : distributed.Client
        Close it (or use it in a ``with`` block) when done; the cluster keeps running.

    Raises
    ------
    ImportError
        If dask's distributed scheduler is not installed.
    ConnectionError
        If no scheduler answers at ``address``.

    Examples
    --------
    >>> from distributed import LocalCluster
    >>> from sklearn_memad.distributed import connect
    >>> cluster = LocalCluster(processes=False, n_workers=1, threads_per_worker=1)
    >>> with connect(cluster.scheduler_address) as client:
    ...     len(client.scheduler_info()["workers"])
    1
    >>> cluster.close()
    """
    distributed = require_distributed()
    try:
        return distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConnectionError(f"cannot reach a Dask scheduler at '{address}': {exc}") from exc


# --------------------------------------------------------------------------- reading
def read_batches(paths, size, chunk_size, skipped):
    """Yield ``(images, positions)`` of the readable ``paths``, ``chunk_size`` at a time.

    The first batch waits for at least two images (a memory's first batch needs them), unless
    there are fewer. Unreadable files go to ``skipped`` as ``(position, reason)``.
    """
    images, positions, first = [], [], True
    for i, path in enumerate(paths):
        image, kept, unreadable = read_images([path], size)
        skipped += [(i, reason) for _, reason in unreadable]
        if kept:
            size = image.shape[1:3]  # with no size given, the first image's for all
            images.append(image[0])
            positions.append(i)
        need = max(chunk_size, FIRST_BATCH) if first else chunk_size
        if images and (len(images) >= need or i == len(paths) - 1):
            yield np.stack(images), positions
            images, positions, first = [], [], False


def no_image_error(skipped, paths):
    shown = "; ".join(f"'{path}' ({reason})" for path, reason in skipped[:3])
    more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return ImageFolderError(
        f"no readable image among the {len(paths)} given" + (f": {shown}{more}" if shown else "")
    )


def report(skipped, return_skipped, result):
    """``result``, with the skipped files; or ``result`` alone, warning about them."""
    if return_skipped:
        return result, skipped
    if skipped:
        shown = "; ".join(f"'{path}' ({reason})" for path, reason in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(
            f"skipped {len(skipped)} unreadable image file(s): {shown}{more}",
            UserWarning,
            stacklevel=3,
        )
    return result
