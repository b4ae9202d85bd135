"""Labelled image folders: normal and defective images (and masks) for choosing thresholds."""

from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._files import (
    IMAGE_EXTENSIONS,
    READ_ERRORS,
    ImageFolderError,
    image_files,
    image_shape,
    read_images,
    read_mask,
)
from ._layout import GOOD, MASK_FOLDER, TEST, kind_label, mask_file

__all__ = ["folder_labels", "labelled_files", "read_labelled"]


def folder_labels(paths):
    """+1 / -1 from folder names (``good`` = normal) when both kinds are present, else None."""
    labels = np.array([kind_label(Path(p).parent.name) for p in paths])
    return labels if len(np.unique(labels)) == 2 else None


def _kinds(kinds_dir):
    """Image files of each defect-type folder that holds any."""
    kinds = {
        sub.name: image_files(sub)
        for sub in sorted(kinds_dir.iterdir())
        if sub.is_dir() and not sub.name.startswith(".") and sub.name != MASK_FOLDER
    }
    kinds = {kind: files for kind, files in kinds.items() if files}
    layout = (
        "expected an MVTec-layout category (test/good, test/<defect>) or a folder with "
        "good/ and one subfolder per defect type"
    )
    if GOOD not in kinds:
        raise ImageFolderError(
            f"the validation folder '{kinds_dir}' has no {GOOD}/ subfolder of normal images "
            f"({', '.join(IMAGE_EXTENSIONS)}); {layout}"
        )
    if len(kinds) == 1:
        raise ImageFolderError(
            f"the validation folder '{kinds_dir}' holds normal images only ({GOOD}/); the "
            "threshold is chosen on normal and defective images: add one subfolder of "
            "defective images per defect type"
        )
    return kinds


def _mask_warnings(masks, missing, mask_root):
    if not masks:
        return [
            f"no ground-truth masks in '{mask_root}': no pixel threshold is chosen, "
            "and `memad score` will write no defect masks"
        ]
    if missing:
        return [
            f"no pixel threshold: {len(missing)} defective validation images have no mask "
            f"(e.g. '{missing[0]}'); expected {mask_root}/<kind>/<stem>_mask.png "
            "for every one"
        ]
    return []


def labelled_files(folder):
    """List the labelled images of a folder, and their masks when every one has a mask.

    ``folder`` is an MVTec-layout category (``test/good``, ``test/<defect>``, masks in
    ``ground_truth/<defect>/<stem>_mask.png``) or a folder with ``good/`` and one subfolder
    per defect type (masks, if any, in its own ``ground_truth/``, or in the one beside it,
    as for an MVTec ``test/`` folder).

    Returns
    -------
    found : Bunch
        ``paths`` (list of Path), ``labels`` (+1 normal / -1 defective), ``masks`` (a dict
        from each defective path to its mask file, or None unless every one has a mask),
        ``folder`` (where the kinds are), ``warnings`` (list of str).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageFolderError(f"the validation folder '{root}' does not exist")
    kinds_dir = root / TEST if (root / TEST).is_dir() else root
    kinds = _kinds(kinds_dir)
    mask_root = root / MASK_FOLDER
    if kinds_dir == root and not mask_root.is_dir():
        mask_root = root.parent / MASK_FOLDER  # the folder is an MVTec category's test/
    paths, labels, masks, missing = [], [], {}, []
    for kind, files in kinds.items():
        for path in files:
            paths.append(path)
            labels.append(kind_label(kind))
            if kind == GOOD:
                continue
            mask = mask_file(mask_root, kind, path)
            if mask.is_file():
                masks[path] = mask
            else:
                missing.append(path)
    return Bunch(
        paths=paths,
        labels=np.array(labels),
        masks=None if missing else masks,
        folder=kinds_dir,
        warnings=_mask_warnings(masks, missing, mask_root),
    )


def _image_shape(path, max_pixels):
    try:
        return image_shape(path, max_pixels)
    except READ_ERRORS as exc:
        raise ImageFolderError(f"cannot read the image '{path}': {exc}") from exc


def read_labelled(found, size, verbose=False, max_pixels=None):
    """Read the images of :func:`labelled_files` (and masks) at ``size`` (height, width).

    Returns ``(Bunch(images, labels, masks or None, paths), skipped)``; unreadable images
    (and, as :func:`read_images` says, those of more than ``max_pixels`` pixels) are
    skipped, unless that leaves one class only.
    """
    images, kept, skipped = read_images(
        found.paths, size, verbose, "reading validation images", max_pixels
    )
    label_of = dict(zip(found.paths, found.labels))
    labels = np.array([label_of[path] for path in kept], dtype=int)
    n_defective = int(np.count_nonzero(labels == -1))
    if n_defective in (0, len(labels)):
        raise ImageFolderError(
            f"the readable validation images of '{found.folder}' are all "
            f"{'defective' if n_defective else 'normal'} ({len(skipped)} unreadable ones "
            "skipped); the threshold is chosen on normal and defective images"
        )
    masks = None
    if found.masks is not None:
        masks = np.zeros(images.shape[:3], dtype=bool)
        for i in np.flatnonzero(labels == -1):
            path = kept[i]
            masks[i] = read_mask(
                found.masks[path], path, _image_shape(path, max_pixels), images.shape[1:3]
            )
    return Bunch(images=images, labels=labels, masks=masks, paths=kept), skipped
