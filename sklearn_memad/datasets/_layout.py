"""The MVTec AD folder layout, named once.

::

    root/
      train/good/*                        defect-free training images
      test/good/*                         defect-free test images
      test/<kind>/*                       defective test images, one folder per defect type
      ground_truth/<kind>/<stem>_mask.png pixel masks of the defective images (> 0 = defect)
"""

from pathlib import Path

__all__ = ["GOOD", "MASK_FOLDER", "TEST", "TRAIN", "kind_label", "mask_file", "mask_name"]

#: The folder of defect-free images in every split.
GOOD = "good"
TRAIN = "train"
TEST = "test"
#: The folder of pixel masks, beside the splits.
MASK_FOLDER = "ground_truth"


def kind_label(kind):
    """+1 (normal) for the ``good`` folder, -1 (defective) for any other defect type."""
    return 1 if kind == GOOD else -1


def mask_name(image_name):
    """``x.png`` -> ``x_mask.png``: the name of an image's mask (any path-like)."""
    path = Path(image_name)
    return path.with_name(f"{path.stem}_mask.png")


def mask_file(mask_root, kind, image_path):
    """Where the mask of the defective image ``image_path`` of ``kind`` lies."""
    return Path(mask_root) / kind / mask_name(Path(image_path).name)
