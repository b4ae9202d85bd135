"""The grid's border: outer rings of patches left out of image scores and maps.

A patch on a grid's outer ring sees the image's edge and the backbone's padding instead of
neighbours, so normal images score highest there: with one distance scale for every
position, PatchCore's top patch of a good image lies on the outer ring nearly always. The
detectors' ``border`` leaves those rings out of the image score and fills them in the map
with their nearest inner patch's score (the benchmark page measures it).
"""

import numpy as np

__all__ = ["effective_border", "fill_border", "inner_patches"]


def effective_border(grid_shape, border):
    """Rings actually left out of a ``(h, w)`` grid: ``border``, or 0 where the grid has no
    inner patch left (``h`` or ``w`` at most ``2 * border``).

    Parameters
    ----------
    grid_shape : (int, int)
        ``(h, w)`` of the patch grid.
    border : int
        A detector's ``border``.

    Returns
    -------
    rings : int
        Outer rings left out of the image score and repeated in the map.

    Examples
    --------
    >>> from sklearn_memad.detectors import effective_border
    >>> effective_border((32, 32), 1), effective_border((2, 8), 1)
    (1, 0)
    """
    h, w = grid_shape
    return int(border) if min(h, w) > 2 * int(border) else 0


def inner_patches(patch_scores, border):
    """The ``(n, h - 2b, w - 2b)`` view of ``patch_scores`` without its ``b`` outer rings."""
    b = effective_border(patch_scores.shape[1:3], border)
    if b == 0:
        return patch_scores
    return patch_scores[:, b:-b, b:-b]


def fill_border(patch_scores, border):
    """``patch_scores`` with each of its outer rings taking its nearest inner patch's score.

    This is the map the detectors' ``score_patches`` shows.

    Parameters
    ----------
    patch_scores : ndarray of shape (n, h, w)
        Patch anomaly scores of every patch.
    border : int
        Outer rings to fill (see :func:`effective_border`).

    Returns
    -------
    filled : ndarray of shape (n, h, w)
        A new array, or ``patch_scores`` itself where no ring is filled.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.detectors import fill_border
    >>> fill_border(np.arange(16.0).reshape(1, 4, 4), 1)[0]
    array([[ 5.,  5.,  6.,  6.],
           [ 5.,  5.,  6.,  6.],
           [ 9.,  9., 10., 10.],
           [ 9.,  9., 10., 10.]])
    """
    b = effective_border(patch_scores.shape[1:3], border)
    if b == 0:
        return patch_scores
    return np.pad(inner_patches(patch_scores, b), ((0, 0), (b, b), (b, b)), mode="edge")
