"""Nearest-normal explanations: for the most anomalous patches of an image, the normal
training patch the model compared them with.

An anomaly score says how far a patch is from the normal ones; an inspection engineer also
wants to see which normal pattern it was held against. Each detector knows where its
memory came from:

- PatchCore keeps, for every coreset entry, the training image and the grid position it was
  taken from (``coreset_source_``, ``coreset_position_``): the match is the nearest entry,
  at any position.
- DFKDE keeps its training samples per position and the image each comes from
  (``sample_source_``): the match is the nearest sample at the same position, in the
  standardised units of its kernels.
- PaDiM keeps only Gaussians: the match is the training image whose patch at the same
  position is nearest in the position's Mahalanobis distance, so its training images must be
  given again (``train_images``).
"""

from numbers import Integral

import numpy as np
import torch
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, validate_params

from .detectors import DFKDEDetector, PaDiMDetector, PatchCoreDetector, effective_border
from .utils.pipeline import model_parts

__all__ = ["nearest_normal"]

# A patch's 8 neighbours mostly show the same defect: each pick hides them from the next.
_SUPPRESSION = 1


@validate_params(
    {
        "model": "no_validation",
        "X": ["array-like"],
        "top": [Interval(Integral, 1, None, closed="left")],
        "train_images": ["array-like", None],
        "train_paths": [list, tuple, None],
    },
    prefer_skip_nested_validation=True,
)
def nearest_normal(model, X, *, top=3, train_images=None, train_paths=None):
    """The normal training patch matched with each of the most anomalous patches of ``X``.

    Parameters
    ----------
    model : Pipeline, detector or ThresholdedDetector
        A fitted sklearn_memad model: from images (``X`` are images) or a bare detector
        (``X`` are grids).
    X : array-like of shape (n, H, W, 3), (n, H, W) or (n, h, w, d)
        Images (or grids, for a bare detector), processed together: explain the images
        that need it (the flagged ones), not a whole production run.
    top : int, default=3
        Patches explained per image: the most anomalous, each hiding its 8 neighbours from
        the next pick (a defect spans several patches). Picks stay inside the detector's
        ``border``, whose rings only repeat inner scores.
    train_images : array-like, default=None
        The training images (or grids), in the order the model was fitted on them. Needed
        for PaDiM, which keeps no training patches; ignored by the other detectors.
    train_paths : list of str, default=None
        The training images' files in that order (``memad fit`` records them in the model
        file, see :func:`~sklearn_memad.persistence.read_model_info`), to name the matches.

    Returns
    -------
    explanation : :class:`~sklearn.utils.Bunch`
        Arrays with one row per explained patch, ``n * min(top, inner patches)`` rows
        ordered by image then rank (picks repeat the first once its neighbours hide the
        whole grid):
        ``image`` (index in ``X``), ``rank`` (0 = most anomalous), ``score`` (the patch's
        anomaly score), ``position`` (row, column in the grid), ``box`` (top, left,
        bottom, right as fractions of the image), ``train_image`` (index of the matched
        training image), ``train_position`` and ``train_box`` (where in it),
        ``distance`` (between the two patches, as the detector measures it); and
        ``train_path`` when ``train_paths`` is given.

    Raises
    ------
    ValueError
        If the detector does not record where its memory came from (fitted by an earlier
        version), or if PaDiM is explained without ``train_images``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad import PatchCoreDetector
    >>> from sklearn_memad.explain import nearest_normal
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(10, 8, 8, 8)).astype(np.float32)
    >>> detector = PatchCoreDetector(coreset_ratio=1.0, random_state=0).fit(train)
    >>> test = train[3:4].copy()
    >>> test[0, 1, 2] += 5.0  # an abnormal patch in a copy of training image 3
    >>> found = nearest_normal(detector, test, top=2)
    >>> found.position[0], found.box[0]
    (array([1, 2]), array([0.125, 0.25 , 0.25 , 0.375]))
    >>> int(found.train_image[1])  # the next patch matches its own original
    3
    """
    parts = model_parts(model)
    detector = parts.detector
    grids = parts.head.transform(X) if parts.head is not None else np.asarray(X)
    patch_scores = detector.score_patches(grids)
    image, rank, rows, cols = _most_anomalous(patch_scores, top, detector.border)
    queries = grids[image, rows, cols]
    if isinstance(detector, PatchCoreDetector):
        match = _patchcore_match(detector, queries)
    elif isinstance(detector, DFKDEDetector):
        match = _dfkde_match(detector, queries, rows, cols)
    elif isinstance(detector, PaDiMDetector):
        match = _padim_match(detector, queries, rows, cols, parts, train_images)
    else:
        raise TypeError(f"nearest_normal cannot explain a {type(detector).__name__}.")
    train_image, train_rows, train_cols, distance, train_grid = match
    grid = patch_scores.shape[1:]
    explanation = Bunch(
        image=image,
        rank=rank,
        score=patch_scores[image, rows, cols],
        position=np.stack([rows, cols], axis=1),
        box=_boxes(rows, cols, grid),
        train_image=train_image,
        train_position=np.stack([train_rows, train_cols], axis=1),
        train_box=_boxes(train_rows, train_cols, train_grid),
        distance=distance,
    )
    if train_paths is not None:
        explanation.train_path = [_path(train_paths, i) for i in train_image]
    return explanation


def _most_anomalous(patch_scores, top, border):
    """(image, rank, row, column) of the ``top`` picks per image, highest first, inside the
    detector's ``border`` (whose rings only repeat inner scores)."""
    n, h, w = patch_scores.shape
    b = effective_border((h, w), border)
    top = min(top, (h - 2 * b) * (w - 2 * b))
    candidates = np.full((n, h, w), -np.inf)
    candidates[:, b : h - b, b : w - b] = patch_scores[:, b : h - b, b : w - b]
    scores = candidates.copy()
    picks = np.empty((n, top), dtype=np.intp)
    every = np.arange(n)
    for rank in range(top):  # a few picks, each for all images at once
        flat = scores.reshape(n, -1).argmax(axis=1)
        picks[:, rank] = flat
        row, col = np.divmod(flat, w)
        for dr in range(-_SUPPRESSION, _SUPPRESSION + 1):
            for dc in range(-_SUPPRESSION, _SUPPRESSION + 1):
                r, c = np.clip(row + dr, 0, h - 1), np.clip(col + dc, 0, w - 1)
                scores[every, r, c] = -np.inf
        # Once an image's grid is used up, the rest of its picks repeat its first one.
        empty = ~np.isfinite(scores.reshape(n, -1).max(axis=1))
        scores[empty] = candidates[empty]
    rows, cols = np.divmod(picks.ravel(), w)
    return np.repeat(every, top), np.tile(np.arange(top), n), rows, cols


def _boxes(rows, cols, grid):
    h, w = grid
    return np.stack([rows / h, cols / w, (rows + 1) / h, (cols + 1) / w], axis=1)


def _patchcore_match(detector, queries):
    if getattr(detector, "coreset_position_", None) is None:
        raise ValueError(
            "This PatchCoreDetector does not record where its coreset entries come from (it "
            "was fitted by an earlier version of sklearn_memad); fit it again to explain."
        )
    distance, nearest = detector.kneighbors(queries, 1)
    entry = nearest[:, 0]
    position = detector.coreset_position_[entry]
    train_image = detector.coreset_source_[entry].astype(np.int64)
    return train_image, position[:, 0], position[:, 1], distance[:, 0], detector.grid_shape_


def _dfkde_match(detector, queries, rows, cols):
    sources = getattr(detector, "sample_source_", None)
    if sources is None or (sources < 0).any():
        raise ValueError(
            "This DFKDEDetector does not record which training image each sample comes from "
            "(it was fitted by an earlier version of sklearn_memad); fit it again to explain."
        )
    where = rows * detector.grid_shape_[1] + cols
    standard = (queries - detector.mean_[where]) / detector.scale_[where]
    with torch.inference_mode():
        samples = torch.from_numpy(detector.features_[where])  # (m, n_kept, d)
        gaps = torch.linalg.vector_norm(samples - torch.from_numpy(standard)[:, None], dim=2)
        distance, slot = gaps.min(dim=1)
    return sources[slot.numpy()], rows, cols, distance.numpy(), detector.grid_shape_


def _padim_match(detector, queries, rows, cols, parts, train_images):
    if train_images is None:
        raise ValueError(
            "PaDiMDetector keeps no training patches: pass its training images as "
            "train_images (in the order it was fitted on them) to find the nearest normal one."
        )
    train = parts.head.transform(train_images) if parts.head is not None else train_images
    train = np.asarray(train, dtype=np.float32)
    if train.shape[1:3] != tuple(detector.grid_shape_):
        raise ValueError(
            f"train_images give grids of shape {train.shape[1:3]}; the detector was fitted on "
            f"{tuple(detector.grid_shape_)}: pass the images it was fitted on."
        )
    where = rows * detector.grid_shape_[1] + cols
    whitening = detector.whitening_matrices()[where]  # (m, d, d)
    with torch.inference_mode():
        neighbours = torch.from_numpy(np.ascontiguousarray(train[:, rows, cols]))  # (n, m, d)
        gaps = neighbours.transpose(0, 1) - torch.from_numpy(queries)[:, None]  # (m, n, d)
        whitened = torch.bmm(gaps, torch.from_numpy(whitening).transpose(1, 2))
        distance, nearest = torch.linalg.vector_norm(whitened, dim=2).min(dim=1)
    return nearest.numpy().astype(np.int64), rows, cols, distance.numpy(), detector.grid_shape_


def _path(paths, index):
    return str(paths[index]) if 0 <= index < len(paths) else ""
