"""Loader for image folders laid out like the MVTec AD benchmark (see :mod:`._layout`)."""

import os
from numbers import Integral
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from PIL import Image, UnidentifiedImageError
from sklearn.utils import Bunch
from sklearn.utils._param_validation import Interval, validate_params

from ..utils.validation import check_image_size
from ._files import IMAGE_EXTENSIONS, image_files, read_mask, resize_rgb, to_rgb
from ._layout import GOOD, MASK_FOLDER, kind_label, mask_file

__all__ = ["load_mvtec"]


def _subfolders(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _open(path):
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"Cannot read the image file '{path}': {exc}") from exc


def _header_size(path):
    with _open(path) as im:
        return im.size[1], im.size[0]  # (height, width)


def _read_one(i, path, mask_path, size, images, masks, original):
    """Read image ``i`` (and its mask) into the preallocated outputs."""
    with _open(path) as im:
        try:
            im.load()
            rgb = to_rgb(im)
        except (OSError, ValueError) as exc:  # ValueError: a float image off the [0, 1] scale
            raise ValueError(f"Cannot read the image file '{path}': {exc}") from exc
        original[i] = (im.height, im.width)
        images[i] = np.asarray(resize_rgb(rgb, size))
    if mask_path is not None:
        masks[i] = read_mask(mask_path, path, (int(original[i, 0]), int(original[i, 1])), size)


def _chosen_kinds(root, split, kinds):
    """The split folder and the sorted defect types to read from it."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"The MVTec root folder '{root}' does not exist or is not a folder; expected a "
            "folder holding train/, test/ and ground_truth/."
        )
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"The split folder '{split_dir}' does not exist; the subfolders of '{root}' are "
            f"{_subfolders(root)}."
        )
    available = _subfolders(split_dir)
    if not available:
        raise ValueError(
            f"The split folder '{split_dir}' holds no subfolder; expected one folder per "
            f"defect type, such as '{split_dir / GOOD}'."
        )
    if kinds is None:
        return split_dir, available
    chosen = [kinds] if isinstance(kinds, str) else list(kinds)
    if not chosen:
        raise ValueError(f"kinds is empty; pass None to read every kind of {available}.")
    unknown = [k for k in chosen if not isinstance(k, str) or k not in available]
    if unknown:
        raise FileNotFoundError(
            f"kinds={kinds!r} names no folder of '{split_dir}' for {unknown}; the kinds "
            f"there are {available}."
        )
    return split_dir, sorted(set(chosen))


def _listed_files(root, split_dir, chosen, max_per_kind):
    """Image paths, their mask paths (None for normal images) and labels, kind by kind."""
    paths, mask_paths, labels = [], [], []
    for kind in chosen:
        folder = split_dir / kind
        files = image_files(folder)
        if not files:
            raise ValueError(
                f"The folder '{folder}' holds no image file (expected endings: "
                f"{', '.join(IMAGE_EXTENSIONS)})."
            )
        for path in files[:max_per_kind]:
            mask_path = None
            if kind != GOOD:
                mask_path = mask_file(root / MASK_FOLDER, kind, path)
                if not mask_path.is_file():
                    raise FileNotFoundError(
                        f"The defective image '{path}' has no mask: '{mask_path}' does not "
                        "exist (expected layout root/ground_truth/<kind>/<stem>_mask.png)."
                    )
            paths.append(path)
            mask_paths.append(mask_path)
            labels.append(kind_label(kind))
    return paths, mask_paths, labels


def _common_size(paths, parallel, split_dir):
    """The one (height, width) of every image, read from the file headers."""
    shapes = parallel(delayed(_header_size)(p) for p in paths)
    distinct = sorted(set(shapes))
    if len(distinct) > 1:
        examples = ", ".join(f"{s} in '{paths[shapes.index(s)]}'" for s in distinct[:3])
        raise ValueError(
            f"The images of '{split_dir}' differ in size ({len(distinct)} distinct "
            f"(height, width) sizes, e.g. {examples}). Pass image_size=(height, width), "
            "or an int for square images, to resize them all to one size."
        )
    return distinct[0]


@validate_params(
    {
        "root": [str, os.PathLike],
        "split": [str],
        "image_size": [None, Interval(Integral, 1, None, closed="left"), tuple, list],
        "kinds": [None, str, list, tuple],
        "max_per_kind": [None, Interval(Integral, 1, None, closed="left")],
        "n_jobs": [None, Integral],
    },
    prefer_skip_nested_validation=True,
)
def load_mvtec(
    root, split="train", image_size=None, *, kinds=None, max_per_kind=None, n_jobs=None
):
    """Load one split of an image folder laid out like MVTec AD.

    Reads ``root/<split>/<kind>/*`` for every defect type ``kind`` (``"good"`` for defect-free
    images) and, for defective images, the mask ``root/ground_truth/<kind>/<stem>_mask.png``
    (pixels > 0 are defects). Images are sorted by kind, then by file name, so the order is
    deterministic.

    PNG, JPEG, BMP and TIFF files are read (any other file is ignored); greyscale, palette and
    16-bit images are converted to 8-bit RGB, and an alpha channel is dropped.

    Parameters
    ----------
    root : str or path-like
        Folder holding ``train/``, ``test/`` and ``ground_truth/`` (one MVTec category).
    split : str, default="train"
        The subfolder of ``root`` to read: ``"train"`` or ``"test"`` (or another subfolder laid
        out the same way, such as ``"validation"``).
    image_size : int or (height, width) tuple, default=None
        Size to resize every image to: an int gives square images. Images are resized with
        Pillow's antialiased bilinear filter, masks with nearest neighbour. ``None`` keeps the
        files' own size, which must then be the same for every image.
    kinds : str or list of str, default=None
        Read only these defect types (subfolders of ``root/<split>``), e.g. ``["good",
        "crack"]``. ``None`` reads every one.
    max_per_kind : int, default=None
        Read at most this many images of each kind: the first ones in sorted file order. Use it
        to load small deterministic subsets quickly.
    n_jobs : int, default=None
        Number of threads reading files (decoding and resizing release the GIL). ``None`` means
        1 unless in a :func:`joblib.parallel_config` context; ``-1`` uses all processors.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the attributes:

        images : ndarray of shape (n_images, height, width, 3), dtype uint8
            The images, RGB.
        labels : ndarray of shape (n_images,), dtype int
            ``+1`` for normal (``"good"``) images, ``-1`` for defective ones, as
            scikit-learn outlier detectors predict.
        masks : ndarray of shape (n_images, height, width), dtype bool
            ``True`` on defect pixels; all ``False`` for normal images.
        paths : list of str
            The image files, in the order of the arrays.
        kinds : ndarray of shape (n_images,), dtype str
            The defect type of each image, ``"good"`` for normal images.
        original_sizes : ndarray of shape (n_images, 2), dtype int
            ``(height, width)`` of each file before resizing.
        DESCR : str
            A short description of what was read.

    Raises
    ------
    FileNotFoundError
        If ``root``, ``root/<split>``, a requested kind or a defective image's mask does not
        exist.
    ValueError
        If a folder holds no image, a file cannot be read, a mask's size differs from its
        image's, or the images differ in size while ``image_size`` is None.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sklearn_memad.datasets import load_mvtec
    >>> tmp = tempfile.TemporaryDirectory()
    >>> root = Path(tmp.name)
    >>> for sub in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
    ...     (root / sub).mkdir(parents=True)
    >>> grey = Image.fromarray(np.full((40, 60), 128, dtype=np.uint8))
    >>> for name in ("train/good/000.png", "train/good/001.png",
    ...              "test/good/000.png", "test/crack/000.png"):
    ...     grey.save(root / name)
    >>> mask = np.zeros((40, 60), dtype=np.uint8)
    >>> mask[10:20, 12:24] = 255                        # a 10 x 12 defect
    >>> Image.fromarray(mask).save(root / "ground_truth/crack/000_mask.png")
    >>> train = load_mvtec(root, "train")
    >>> train.images.shape, train.labels
    ((2, 40, 60, 3), array([1, 1]))
    >>> test = load_mvtec(root, "test", image_size=(20, 30))   # (height, width)
    >>> test.images.shape, test.labels, test.kinds.tolist()
    ((2, 20, 30, 3), array([-1,  1]), ['crack', 'good'])
    >>> test.masks.sum(axis=(1, 2))                     # 5 x 6 after halving
    array([30,  0])
    >>> tmp.cleanup()
    """
    size = check_image_size(image_size)
    root = Path(root)
    split_dir, chosen = _chosen_kinds(root, split, kinds)
    paths, mask_paths, labels = _listed_files(root, split_dir, chosen, max_per_kind)
    parallel = Parallel(n_jobs=n_jobs, prefer="threads")
    if size is None:
        size = _common_size(paths, parallel, split_dir)

    n = len(paths)
    images = np.empty((n, size[0], size[1], 3), dtype=np.uint8)
    masks = np.zeros((n, size[0], size[1]), dtype=bool)
    original = np.empty((n, 2), dtype=int)
    parallel(
        delayed(_read_one)(i, p, mp, size, images, masks, original)
        for i, (p, mp) in enumerate(zip(paths, mask_paths))
    )

    kinds_out = np.array([p.parent.name for p in paths])
    labels = np.asarray(labels, dtype=int)
    counts = ", ".join(f"{k}: {np.count_nonzero(kinds_out == k)}" for k in chosen)
    descr = (
        f"MVTec-layout images from '{split_dir}': {n} images ({counts}), "
        f"{int(np.count_nonzero(labels == 1))} normal (+1), "
        f"{int(np.count_nonzero(labels == -1))} defective (-1), "
        f"size (height, width) = {tuple(size)}."
    )
    return Bunch(
        images=images,
        labels=labels,
        masks=masks,
        paths=[os.fspath(p) for p in paths],
        kinds=kinds_out,
        original_sizes=original,
        DESCR=descr,
    )
