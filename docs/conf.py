"""Sphinx configuration. Build: python -m sphinx -b html docs docs/_build/html

Every page is listed in the toctree of index.md; nothing is added at build time.
"""

import sklearn_memad

project = "sklearn_memad"
author = "sklearn_memad developers"
release = version = sklearn_memad.__version__

extensions = [
    "myst_parser",  # the pages are Markdown, as README.md and benchmarks.md
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # numpydoc-style docstrings
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

# No default "members": with one, Sphinx replaces the explicit member lists of api.md by
# every member. Each directive there says which members it shows.
autodoc_default_options = {}
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autosummary_generate = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# Docstrings name types in numpydoc's prose style ("int, default=3"); do not resolve them.
napoleon_preprocess_types = False

html_theme = "alabaster"
html_title = f"sklearn_memad {version}"
html_theme_options = {"description": "Memory-based anomaly detection for scikit-learn"}
