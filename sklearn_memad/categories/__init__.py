"""One feature extractor, one memory per category: many part numbers on one line.

A line that inspects many part numbers with one camera needs a memory of normal images for
each part number, but only one backbone: the features of an image do not depend on which
part it shows. :class:`MultiCategoryDetector` holds one fitted
:class:`~sklearn_memad.FeatureTransformer` and one fitted head per category (a detector, or a
Pipeline from grids to one) and scores every image with its own category's head. It is one
estimator, so :func:`~sklearn_memad.persistence.save_model` writes it to one model file.
"""

from ._detector import MultiCategoryDetector

__all__ = ["MultiCategoryDetector"]
