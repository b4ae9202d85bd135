"""``memad score --explain``: for each flagged image, its most anomalous patch beside the
normal training patch the model matched it with.

The training images come from the list ``memad fit`` records in the model file (their
folder, paths and SHA-256): a file that is gone or has changed since the fit is named in a
warning, and its side of the panel is left grey.
"""

import hashlib
from pathlib import Path

import numpy as np

from ..datasets import READ_ERRORS, read_images, read_rgb
from ..detectors import PaDiMDetector
from ..display import compose_explanation
from ..explain import nearest_normal
from ..utils.pipeline import model_parts
from .messages import warn

__all__ = ["Explainer", "explanation_name"]


def explanation_name(image_name):
    """``x.png`` -> ``x_explain.png``."""
    path = Path(image_name)
    return path.with_name(f"{path.stem}_explain.png")


class Explainer:
    """Draws the explanation panels of one ``memad score`` run.

    Parameters
    ----------
    model : estimator
        The fitted model from images.
    header : dict
        The model file's metadata.
    size : (int, int)
        The model's input size.
    max_pixels : int or None
        As ``--max-image-pixels``.
    """

    def __init__(self, model, header, size, max_pixels):
        self.model = model
        self.size = size
        self.max_pixels = max_pixels
        self.folder = Path(header.get("train_folder", ""))
        self.files = header.get("train_files") or []
        self.written = 0
        self._warned = set()
        self._train_images = None
        if not self.files:
            self._warn_once(
                "the model records no training files (it was not written by memad fit of "
                "this version): --explain panels show the inspected patch only"
            )

    def _warn_once(self, message):
        if message not in self._warned:
            self._warned.add(message)
            warn(message)

    def _training_image(self, index):
        """The training image ``index`` as recorded, or None (missing or changed)."""
        if not 0 <= index < len(self.files):
            return None
        name, digest = self.files[index]
        path = self.folder / name
        try:
            with open(path, "rb") as handle:
                same = hashlib.file_digest(handle, "sha256").hexdigest() == digest
            image = np.asarray(read_rgb(path, self.max_pixels))
        except (OSError, *READ_ERRORS):
            self._warn_once(f"training image '{path}' cannot be read: its panels are grey")
            return None
        if not same:
            self._warn_once(f"training image '{path}' changed since the fit: panels grey")
            return None
        return image

    def _padim_training_images(self):
        """PaDiM keeps no training patches: all its training images, read once, or None."""
        if self._train_images is None:
            paths = [self.folder / name for name, _ in self.files]
            images, kept, _ = read_images(paths, self.size, max_pixels=self.max_pixels)
            if not self.files or len(kept) != len(paths):
                self._warn_once(
                    "PaDiM explanations need every training image of the model, and some "
                    "cannot be read: no --explain panels"
                )
                self._train_images = False
            else:
                self._train_images = images
        return self._train_images

    def write(self, images, flagged, targets, bases, titles):
        """One panel per flagged image of a scored chunk.

        ``images`` are the chunk as the model saw it, ``flagged`` the indices of the flagged
        ones, ``targets`` their PNG paths, ``bases`` the pictures to draw them on (the
        files at their own aspect ratio) and ``titles`` their names.
        """
        if not len(flagged):
            return
        train_images = None
        if isinstance(model_parts(self.model).detector, PaDiMDetector):
            train_images = self._padim_training_images()
            if train_images is False:
                return
        found = nearest_normal(self.model, images[flagged], top=1, train_images=train_images)
        for k, target in enumerate(targets):
            index = int(found.train_image[k])
            name = self.files[index][0] if index < len(self.files) else f"image {index}"
            captions = (
                f"patch score {found.score[k]:.4g}",
                f"nearest normal: {name} (distance {found.distance[k]:.3g})",
            )
            picture = compose_explanation(
                bases[k],
                found.box[k],
                self._training_image(index),
                found.train_box[k],
                captions=captions,
                title=titles[k],
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            picture.save(target)
            self.written += 1
