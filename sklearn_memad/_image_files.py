"""Image files for the command line: find them in folders, read them, skip unreadable ones."""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._progress import progress
from .datasets import IMAGE_EXTENSIONS, _to_rgb

__all__ = [
    "READ_ERRORS",
    "ImageFolderError",
    "collect_inputs",
    "read_images",
    "read_rgb",
    "training_files",
]

#: Errors of reading an image file; such a file is skipped and reported.
READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


class ImageFolderError(ValueError):
    """A path that does not exist, or a folder without images."""


def _image_files(folder, recursive):
    pattern = "**/*" if recursive else "*"
    return sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def collect_inputs(inputs):
    """Image files named by ``inputs`` (files, or folders searched recursively)."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = _image_files(path, recursive=True)
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
    return files


def training_files(folder):
    """Defect-free images: ``folder/train/good`` of an MVTec category, or ``folder`` itself."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageFolderError(f"the training folder '{folder}' does not exist")
    mvtec = folder / "train" / "good"
    source = mvtec if mvtec.is_dir() else folder
    files = _image_files(source, recursive=False)
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


def read_rgb(path):
    """An image file as an 8-bit RGB Pillow image (greyscale, palette, 16-bit converted)."""
    with Image.open(path) as im:
        im.load()
        return _to_rgb(im)


def read_images(paths, size, verbose, label="reading images"):
    """Read and resize images; unreadable files are skipped and returned with the reason.

    Returns ``(images (n, H, W, 3) uint8, kept paths, skipped [(path, reason)])``.
    """
    images, kept, skipped = [], [], []
    for path in progress(paths, verbose, label):
        try:
            im = read_rgb(path)
        except READ_ERRORS as exc:
            skipped.append((path, str(exc).split("\n")[0] or type(exc).__name__))
            continue
        if size is None:
            size = (im.height, im.width)  # a model without image_size: the first image's
        if (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        images.append(np.asarray(im))
        kept.append(path)
    stacked = np.stack(images) if images else np.empty((0, 0, 0, 3), dtype=np.uint8)
    return stacked, kept, skipped
