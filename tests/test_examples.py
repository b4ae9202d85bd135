"""The example scripts run end to end at small sizes (``--small``)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script, *args, cwd, small=True):
    # One thread each: on a loaded 2-core machine two OpenMP threads spin against each other.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *(["--small"] if small else []), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_is_tested():
    tested = {"quick_start.py", "grid_search.py", "compare_detectors.py", "your_own_folder.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_quick_start(tmp_path):
    out = _run("quick_start.py", "--out", str(tmp_path), cwd=tmp_path)
    assert "image AUROC" in out and "pixel AUROC" in out
    assert "reloaded model scores identically" in out
    assert (tmp_path / "quick_start_overlay.png").is_file()


def test_grid_search(tmp_path):
    out = _run("grid_search.py", cwd=tmp_path)
    assert "best:" in out and "held-out image AUROC" in out


def test_compare_detectors(tmp_path):
    out = _run("compare_detectors.py", "--out", str(tmp_path), cwd=tmp_path)
    for method in ("patchcore", "padim", "dfkde"):
        assert method in out
    assert "AUPRO" in out and (tmp_path / "compare_brick.png").is_file()


@pytest.mark.parametrize("given_folder", [False, True])
def test_your_own_folder(tmp_path, given_folder):
    args = ["--out", str(tmp_path / "out")]
    if given_folder:
        from sklearn_memad.datasets import make_texture_anomalies, save_mvtec_layout

        data = make_texture_anomalies(
            "grass", n_train=6, n_test_normal=2, n_test_per_defect=1, image_size=48
        )
        root = save_mvtec_layout(data, tmp_path / "grass")
        args = [str(root), "--image-size", "48", "--method", "padim"] + args
    out = _run("your_own_folder.py", *args, cwd=tmp_path, small=not given_folder)
    assert "saved" in out and "overlay PNGs" in out
    assert list((tmp_path / "out").glob("*.safetensors"))
    assert len(list((tmp_path / "out").glob("*.png"))) >= 5
