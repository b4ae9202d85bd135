"""The documentation builds (Sphinx, warnings as errors) and the examples in docstrings run."""

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
# Every page in docs/; index.md's toctree must list each one itself (none is added at build time).
PAGES = sorted(path.stem for path in DOCS.glob("*.md"))


def test_index_lists_every_page():
    index = (DOCS / "index.md").read_text()
    toctree = re.search(r"```\{toctree\}\n(.*?)```", index, re.S).group(1)
    listed = [line.strip() for line in toctree.splitlines() if line.strip() and ":" not in line]
    assert listed[0] == "getting_started"
    assert sorted(listed + ["index"]) == PAGES


def test_sphinx_build_has_no_warnings(tmp_path):
    # -W: any warning fails the build; --keep-going: report them all first.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-b",
            "html",
            "-W",
            "--keep-going",
            "-q",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    html = tmp_path / "html"
    for page in PAGES:
        assert (html / f"{page}.html").is_file(), page
    assert {"getting_started", "benchmarks"} <= set(PAGES)
    api = (html / "api.html").read_text()
    for name in (
        "PatchCoreDetector",
        "BaseMemoryDetector",
        "make_detector_pipeline",
        "save_model",
        "AnomalyMapDisplay",
        "load_mvtec",
        "make_texture_anomalies",
        "NormalOnlyKFold",
        "image_auroc",
    ):
        assert name in api, name


def _package_modules():
    import pkgutil

    import sklearn_memad

    names = [info.name for info in pkgutil.walk_packages(sklearn_memad.__path__, "sklearn_memad.")]
    return sorted(name for name in names if not name.endswith("__main__"))


@pytest.mark.parametrize("module", _package_modules())
def test_docstring_examples_run(module):
    matplotlib.use("Agg")
    imported = __import__(module, fromlist=["_"])
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    # The finder keeps what the module defines: re-exported objects run where they live.
    for test in finder.find(imported, module):
        runner.run(test)
    assert runner.failures == 0


def test_every_public_estimator_and_function_has_a_runnable_example():
    import inspect

    import sklearn_memad

    missing = [
        name
        for name in sklearn_memad.__all__
        if "Examples" not in (inspect.getdoc(getattr(sklearn_memad, name)) or "")
    ]
    assert not missing, missing


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
