"""Data: MVTec-layout image folders, image and mask files, and the demo's texture set.

- :func:`load_mvtec` reads one split of a folder laid out like MVTec AD (``train/good``,
  ``test/<kind>``, ``ground_truth/<kind>/<stem>_mask.png``) into arrays.
- :func:`find_images`, :func:`read_images` and :func:`read_rgb` read your own image files the
  way the command line does (any size and mode, converted to 8-bit RGB).
- :func:`make_texture_anomalies` builds a small labelled set from scikit-image's CC0 texture
  photographs with pasted defects, offline and deterministic; :func:`save_mvtec_layout` writes
  it as an MVTec-layout folder. The demo runs on it.
"""

from ._files import (
    IMAGE_EXTENSIONS,
    READ_ERRORS,
    ImageFolderError,
    find_images,
    image_files,
    image_shape,
    pillow_pixel_limit,
    read_images,
    read_mask,
    read_rgb,
    training_files,
)
from ._labelled import folder_labels, labelled_files, read_labelled
from ._layout import GOOD, MASK_FOLDER, mask_name
from ._mvtec import load_mvtec
from ._textures import DEFECTS, TEXTURES, make_texture_anomalies, save_mvtec_layout

__all__ = [
    "DEFECTS",
    "GOOD",
    "IMAGE_EXTENSIONS",
    "MASK_FOLDER",
    "READ_ERRORS",
    "TEXTURES",
    "ImageFolderError",
    "find_images",
    "folder_labels",
    "image_files",
    "image_shape",
    "labelled_files",
    "load_mvtec",
    "make_texture_anomalies",
    "mask_name",
    "pillow_pixel_limit",
    "read_images",
    "read_labelled",
    "read_mask",
    "read_rgb",
    "save_mvtec_layout",
    "training_files",
]
