"""ELPV solar cells as an anomaly-detection benchmark: 200 normal cells to train, the rest to test.

The ELPV data set (electroluminescence images of solar-module cells, 300 x 300 px greyscale,
2,624 cells, each with an expert's defect probability 0, 1/3, 2/3 or 1, and its cell type,
monocrystalline or polycrystalline) ships as the PyPI package ``elpv-dataset``
(``pip install elpv-dataset``; data licensed CC BY-NC-SA 4.0, loader code Apache-2.0). It is
read from the installed package and never copied into this repository. Cite:

- Buerhop-Lutz, C.; Deitsch, S.; Maier, A.; Gallwitz, F.; Berger, S.; Doll, B.; Hauch, J.;
  Camus, C. & Brabec, C. J. A Benchmark for Visual Identification of Defective Solar Cells in
  Electroluminescence Imagery. EU PVSEC 2018. DOI 10.4229/35thEUPVSEC20182018-5CV.3.15
- Deitsch, S.; Christlein, V.; Berger, S.; Buerhop-Lutz, C.; Maier, A.; Gallwitz, F. &
  Riess, C. Automatic classification of defective photovoltaic module cells in
  electroluminescence images. Solar Energy 185, 455-468, 2019.
  DOI 10.1016/j.solener.2019.02.067

As an anomaly-detection task (our choice, not the authors'): each cell type is its own set;
normal = probability 0, defective = probability 2/3 or 1; cells at 1/3 (uncertain) are left
out. ``n_train`` normal cells, drawn with a seed, are the training set; every other normal cell
and every defective cell is the test set. There are no defect masks: image-level metrics only.
"""

import numpy as np
from PIL import Image
from sklearn.utils import Bunch

__all__ = ["CELL_TYPES", "LICENSE", "load_elpv"]

CELL_TYPES = ("mono", "poly")
LICENSE = "CC BY-NC-SA 4.0 (data), Apache-2.0 (loader), PyPI package elpv-dataset"

_cache = {}


def _raw():
    if "raw" not in _cache:
        from elpv_dataset.utils import load_dataset

        _cache["raw"] = load_dataset()
    return _cache["raw"]


def _resized(images, size):
    if size is None or images.shape[1:3] == (size, size):
        return images
    return np.stack(
        [
            np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
            for im in images
        ]
    )


def load_elpv(cell_type, image_size=256, *, n_train=200, seed=0):
    """Training and test split of one ELPV cell type.

    Parameters
    ----------
    cell_type : {"mono", "poly"}
    image_size : int or None
        Side of the square images (Pillow's bilinear resize, antialiased when shrinking,
        as ``load_mvtec``); None keeps 300 px.
    n_train : int
        Normal cells drawn (``RandomState(seed)``) for training.
    seed : int

    Returns
    -------
    Bunch with ``train`` (n_train, s, s) uint8 greyscale, ``images`` the test cells,
    ``labels`` (+1 normal, -1 defective), ``kinds`` ("good", "p0.67", "p1"), ``probability``
    and ``index`` (rows of the package's ``labels.csv``) of the test cells, ``n_left_out``
    (cells at probability 1/3).
    """
    if cell_type not in CELL_TYPES:
        raise ValueError(f"cell_type={cell_type!r}; expected one of {CELL_TYPES}.")
    images, probs, types = _raw()
    of_type = types == cell_type
    normal = np.flatnonzero(of_type & (probs == 0))
    defective = np.flatnonzero(of_type & (probs >= 0.5))
    uncertain = int((of_type & (probs > 0) & (probs < 0.5)).sum())
    if n_train >= normal.size:
        raise ValueError(f"n_train={n_train}; {cell_type} has {normal.size} normal cells.")
    order = np.random.RandomState(seed).permutation(normal)
    train, test_normal = np.sort(order[:n_train]), np.sort(order[n_train:])
    test = np.concatenate([test_normal, defective])
    kinds = np.where(probs[test] == 0, "good", np.where(probs[test] < 0.9, "p0.67", "p1"))
    return Bunch(
        train=_resized(images[train], image_size),
        images=_resized(images[test], image_size),
        labels=np.where(probs[test] == 0, 1, -1),
        kinds=kinds,
        probability=probs[test],
        index=test,
        train_index=train,
        n_left_out=uncertain,
        DESCR=(
            f"ELPV {cell_type}: {n_train} normal cells to train (seed {seed}), "
            f"{test_normal.size} normal and {defective.size} defective (p >= 2/3) to test, "
            f"{uncertain} at p = 1/3 left out; {LICENSE}."
        ),
    )
