"""Sphinx configuration. Build: python -m sphinx -b html docs docs/_build/html"""

import os

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

autodoc_default_options = {"members": True, "inherited-members": False}
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


# The pages written here; other pages (benchmarks.md from the benchmark runs, and any page
# another part of the project adds) are listed after them when they exist.
OWN_PAGES = ("index", "user_guide", "command_line", "examples", "api")


def _link_other_pages(app, docname, source):
    if docname != "index":
        return
    others = sorted(
        name[:-3]
        for name in os.listdir(app.srcdir)
        if name.endswith(".md") and name[:-3] not in OWN_PAGES
    )
    if others:
        source[0] += "\n```{toctree}\n:maxdepth: 1\n\n" + "\n".join(others) + "\n```\n"


def setup(app):
    app.connect("source-read", _link_other_pages)
