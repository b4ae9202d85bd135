"""Deprecated home of the demo: its data moved to :mod:`sklearn_memad.datasets`, its runner to
:mod:`sklearn_memad.cli.demo`. The old names still work here, with a FutureWarning."""

from .utils.deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    {
        "DEFECTS": "sklearn_memad.datasets",
        "TEXTURES": "sklearn_memad.datasets",
        "make_texture_anomalies": "sklearn_memad.datasets",
        "save_mvtec_layout": "sklearn_memad.datasets",
        "run_demo": "sklearn_memad.cli.demo",
    },
)
