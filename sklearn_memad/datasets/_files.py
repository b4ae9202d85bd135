"""Image files, read once for everyone: finding them, reading images and masks, skipping bad ones.

The MVTec loader, the command line and the demo all read files through this module, so a file
is converted the same way wherever it is read.
"""

import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..utils.progress import progress
from ._layout import GOOD, TRAIN

__all__ = [
    "IMAGE_EXTENSIONS",
    "READ_ERRORS",
    "ImageFolderError",
    "find_images",
    "image_files",
    "image_shape",
    "pillow_pixel_limit",
    "read_images",
    "read_mask",
    "read_rgb",
    "training_files",
]

#: File endings read as images (case-insensitive); other files in the folders are ignored.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Errors of reading an image file; such a file is skipped and reported where skipping is right.
READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


# Pillow's guard against decompression bombs is a module-wide setting; it is lifted only
# while one caller that checks the size itself reads, one at a time.
_PILLOW_GUARD = threading.Lock()


class ImageFolderError(ValueError):
    """A path that does not exist, a folder without images, or a file that cannot be read."""


def image_files(folder, recursive=False):
    """Sorted image files of ``folder`` (hidden files and folders left out)."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def find_images(inputs):
    """Image files named by ``inputs``: files, or folders searched recursively.

    A file named twice (given twice, or given and inside a given folder) is listed once, at
    its first place.

    Parameters
    ----------
    inputs : list of str or path-like

    Returns
    -------
    files : list of pathlib.Path

    Raises
    ------
    ImageFolderError
        If a path does not exist, or a folder holds no image file.
    """
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = image_files(path, recursive=True)
            if not found:
                raise ImageFolderError(
                    f"the folder '{path}' holds no image file "
                    f"({', '.join(IMAGE_EXTENSIONS)}), even in its subfolders"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ImageFolderError(f"no such file or folder: '{path}'")
    seen, unique = set(), []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def training_files(folder):
    """Defect-free images: ``folder/train/good`` of an MVTec category, or ``folder`` itself."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"the training folder '{folder}' does not exist")
    mvtec = folder / TRAIN / GOOD
    source = mvtec if mvtec.is_dir() else folder
    files = image_files(source)
    if not files:
        hint = (
            " (it has subfolders: pass the folder that holds the defect-free images, or an "
            "MVTec-layout category holding train/good)"
            if any(p.is_dir() for p in folder.iterdir())
            else ""
        )
        raise ImageFolderError(
            f"the training folder '{source}' holds no image file "
            f"({', '.join(IMAGE_EXTENSIONS)}){hint}"
        )
    return files


def to_rgb(im):
    """Convert any Pillow mode to 8-bit RGB (greyscale is replicated, alpha dropped).

    A float image (mode ``"F"``, e.g. a float TIFF) is read on the [0, 1] scale of float
    images; one with values outside it, or NaN, raises a ``ValueError``.
    """
    if im.mode == "F":
        a = np.asarray(im)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 <= lo and hi <= 1.0):
            raise ValueError(
                f"a float image (mode 'F') with values in [{lo:.4g}, {hi:.4g}]; float images "
                "are read on the [0, 1] scale, so convert it to 8 or 16 bits, or to [0, 1]"
            )
        im = Image.fromarray(np.rint(a * np.float32(255.0)).astype(np.uint8), mode="L")
    if im.mode.startswith("I"):  # 16/32-bit greyscale (e.g. 16-bit PNG)
        a = np.asarray(im)
        if im.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = np.rint(a.astype(np.float32) * np.float32(255.0 / 65535.0))
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="L")
    return im if im.mode == "RGB" else im.convert("RGB")


def pillow_pixel_limit():
    """The pixel count above which Pillow refuses an image (None: no limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


@contextmanager
def _opened(path, max_pixels):
    """``Image.open(path)``, refused above ``max_pixels`` pixels (None: Pillow's own guard)."""
    if max_pixels is None:
        with Image.open(path) as im:
            yield im
        return
    pillow = pillow_pixel_limit()
    with _pillow_guard_lifted(pillow is not None and max_pixels > pillow):
        with warnings.catch_warnings(), Image.open(path) as im:
            # The explicit limit replaces Pillow's warning as well as its refusal.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pixels = im.width * im.height
            if pixels > max_pixels:
                raise Image.DecompressionBombError(
                    f"{im.width} x {im.height} = {pixels:,} pixels, more than the limit of "
                    f"{max_pixels:,} (a guard against decompression bombs)"
                )
            yield im


@contextmanager
def _pillow_guard_lifted(lift):
    """Switch Pillow's pixel guard off in the block when ``lift``: the caller checks sizes."""
    if not lift:
        yield
        return
    with _PILLOW_GUARD:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def read_rgb(path, max_pixels=None):
    """An image file as an 8-bit RGB Pillow image (greyscale, palette, 16-bit converted).

    Parameters
    ----------
    path : path-like
        The image file.
    max_pixels : int, default=None
        Refuse files with more pixels than this (a guard against decompression bombs);
        None keeps Pillow's own guard (:func:`pillow_pixel_limit`).

    Returns
    -------
    image : PIL.Image.Image
        In mode ``"RGB"``.

    Raises
    ------
    Exception
        One of :data:`READ_ERRORS` when the file cannot be read or is too large.
    """
    with _opened(path, max_pixels) as im:
        im.load()
        return to_rgb(im)


def image_shape(path, max_pixels=None):
    """``(height, width)`` of an image file, read from its header.

    Raises one of :data:`READ_ERRORS` as :func:`read_rgb` does.
    """
    with _opened(path, max_pixels) as im:
        return im.height, im.width


def resize_rgb(im, size):
    """``im`` at ``size`` (height, width): Pillow's antialiased bilinear filter."""
    if (im.height, im.width) == tuple(size):
        return im
    return im.resize((size[1], size[0]), Image.Resampling.BILINEAR)


def _mask_array(im):
    """Boolean defect mask of a mask image: any channel > 0 (alpha ignored)."""
    if im.mode in ("RGBA", "RGBa", "PA"):
        im = im.convert("RGB")
    elif im.mode in ("LA", "La"):
        im = im.convert("L")
    a = np.asarray(im)
    return a.any(axis=-1) if a.ndim == 3 else a > 0


def read_mask(mask_path, image_path, image_shape, size=None):
    """The defect mask of an image: True where any channel of the mask file is > 0.

    Parameters
    ----------
    mask_path, image_path : path-like
        The mask file, and the image it belongs to (named in messages).
    image_shape : (int, int)
        ``(height, width)`` of the image file: the mask must match it pixel for pixel.
    size : (int, int), default=None
        ``(height, width)`` to resize the mask to (nearest neighbour); None keeps it.

    Returns
    -------
    mask : ndarray of shape (height, width), bool

    Raises
    ------
    ImageFolderError
        If the mask cannot be read or does not match its image's size.
    """
    try:
        with Image.open(mask_path) as mk:
            mask = _mask_array(mk)
    except READ_ERRORS as exc:
        raise ImageFolderError(f"Cannot read the mask '{mask_path}': {exc}") from exc
    if mask.shape != tuple(image_shape):
        raise ImageFolderError(
            f"The mask '{mask_path}' has (height, width) {mask.shape}, but its image "
            f"'{image_path}' has {tuple(image_shape)}; a mask must match its image pixel for "
            "pixel."
        )
    if size is not None and mask.shape != tuple(size):
        resized = Image.fromarray(mask.view(np.uint8)).resize(
            (size[1], size[0]), Image.Resampling.NEAREST
        )
        mask = np.asarray(resized) > 0
    return mask


def read_images(paths, size=None, verbose=False, label="reading images", max_pixels=None):
    """Read and resize images; unreadable files are skipped and returned with the reason.

    Parameters
    ----------
    paths : list of path-like
        Image files.
    size : (int, int), default=None
        ``(height, width)`` to resize to; None takes the first readable image's size.
    verbose : bool, default=False
        Show a progress bar on standard error.
    label : str, default="reading images"
        The progress bar's label.
    max_pixels : int, default=None
        Skip files with more pixels than this; None keeps Pillow's own guard against
        decompression bombs (:func:`pillow_pixel_limit`).

    Returns
    -------
    images : ndarray of shape (n, height, width, 3), uint8
    kept : list
        The paths that were read, in the order of ``images``.
    skipped : list of (path, reason)
        The paths that could not be read, and why.
    """
    images, kept, skipped = [], [], []
    for path in progress(paths, verbose, label):
        try:
            im = read_rgb(path, max_pixels)
        except READ_ERRORS as exc:
            skipped.append((path, str(exc).split("\n")[0] or type(exc).__name__))
            continue
        if size is None:
            size = (im.height, im.width)
        images.append(np.asarray(resize_rgb(im, size)))
        kept.append(path)
    stacked = np.stack(images) if images else np.empty((0, 0, 0, 3), dtype=np.uint8)
    return stacked, kept, skipped
