"""The offline demo: CC0 texture photographs with pasted defects, and the three detectors.

:func:`make_texture_anomalies` builds a small labelled data set (images, labels, pixel masks)
from scikit-image's CC0 texture photographs, deterministically and without any download;
:func:`save_mvtec_layout` writes it as an MVTec-style folder; :func:`run_demo` is what
``python -m sklearn_memad demo`` runs.
"""

from ._run import run_demo
from ._textures import DEFECTS, TEXTURES, make_texture_anomalies, save_mvtec_layout

__all__ = ["DEFECTS", "TEXTURES", "make_texture_anomalies", "run_demo", "save_mvtec_layout"]
