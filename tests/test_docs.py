"""The documentation builds (Sphinx, warnings shown) and the examples in docstrings run."""

import doctest
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))
from conf import OWN_PAGES  # noqa: E402

sys.path.remove(str(DOCS))


def test_sphinx_build_has_no_warnings(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(tmp_path / "doctrees"),
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    for line in warnings:
        print(line)  # shown with pytest -s or on failure
    assert done.returncode == 0, done.stderr[-3000:]
    # Pages written elsewhere (benchmarks.md, ...) are shown but do not fail this test.
    others = re.compile(r"docs/(?!(%s)\.md)[\w-]+\.md" % "|".join(OWN_PAGES))
    ours = [line for line in warnings if not others.search(line)]
    assert not ours, "\n".join(ours)
    html = tmp_path / "html"
    for page in ("index", "user_guide", "command_line", "examples", "api"):
        assert (html / f"{page}.html").is_file()
    api = (html / "api.html").read_text()
    for name in ("PatchCoreDetector", "make_detector_pipeline", "AnomalyMapDisplay",
                 "load_mvtec", "NormalOnlyKFold", "image_auroc"):
        assert name in api


@pytest.mark.parametrize(
    "module",
    [
        "sklearn_memad.pipelines",
        "sklearn_memad.display",
        "sklearn_memad._overlay",
        "sklearn_memad.demo._textures",
    ],
)
def test_docstring_examples_run(module):
    matplotlib.use("Agg")
    imported = __import__(module, fromlist=["_"])
    result = doctest.testmod(imported, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_install_extras_cover_the_tests_and_the_demo():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {key: {re.split(r"[<>=\[ ]", req)[0] for req in reqs} for key, reqs in extras.items()}
    # CI installs ".[test]": it must bring what the demo, the pictures and the docs need.
    assert names["demo"] | names["plot"] | names["docs"] <= names["test"]
    assert "scikit-image" in names["demo"]
    readme = (ROOT / "README.md").read_text()
    assert '-e ".[demo]" && python -m sklearn_memad demo' in readme
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["memad"] == "sklearn_memad.cli:main"
