"""``memad fit`` records its training files; ``memad score --explain`` draws the matches."""

import hashlib
import shutil

import numpy as np
import pytest
from PIL import Image

from sklearn_memad import cli
from sklearn_memad.datasets import make_texture_anomalies, save_mvtec_layout
from sklearn_memad.persistence import read_model_info

SIZE = 48
FAST = ["--backbone", "resnet18", "--weights", "none", "--image-size", str(SIZE), "-q"]


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    data = make_texture_anomalies(
        "brick", n_train=10, n_test_normal=2, n_test_per_defect=1, image_size=SIZE
    )
    return save_mvtec_layout(data, tmp_path_factory.mktemp("data") / "brick")


def _fit(category, folder, method):
    path = folder / f"{method}.safetensors"
    argv = ["fit", "--train", str(category), "--method", method, "--out", str(path)]
    # Every test image flagged, so that every one is explained.
    assert cli.main(argv + ["--contamination", "0.5"] + FAST) == 0
    return path


def test_the_model_file_records_the_training_files_in_order(category, tmp_path):
    info = read_model_info(_fit(category, tmp_path, "patchcore"))
    folder = category / "train" / "good"
    names = sorted(p.name for p in folder.iterdir())
    assert info["train_folder"] == str(folder.resolve())
    assert [name for name, _ in info["train_files"]] == names
    first, digest = info["train_files"][0]
    assert hashlib.sha256((folder / first).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("method", ["patchcore", "padim", "dfkde"])
def test_score_explain_writes_a_panel_per_flagged_image(method, category, tmp_path, capsys):
    model = _fit(category, tmp_path, method)
    out = tmp_path / "scores"
    code = cli.main(
        ["score", "--model", str(model), str(category / "test"), "--out", str(out), "--explain"]
        + FAST[-1:]
    )
    printed = capsys.readouterr().out
    assert code == 0
    flagged = {
        line.split(",")[0]
        for line in (out / "scores.csv").read_text().splitlines()[1:]
        if line.split(",")[3] == "-1"
    }
    panels = sorted(out.rglob("*_explain.png"))
    assert flagged and len(panels) == len(flagged)
    assert f"{len(flagged)} explanation PNGs" in printed
    picture = np.asarray(Image.open(panels[0]))
    width = picture.shape[1]
    # The right half shows a training image, not the grey of a missing one.
    right = picture[40:-40, width // 2 + 10 : -10]
    assert right.std() > 5


def test_a_changed_training_file_is_named_and_left_grey(category, tmp_path, capsys):
    copy = tmp_path / "brick"
    shutil.copytree(category, copy)
    model = _fit(copy, tmp_path, "patchcore")
    for path in (copy / "train" / "good").iterdir():
        Image.new("RGB", (SIZE, SIZE), "white").save(path)  # every training image changed
    code = cli.main(
        ["score", "--model", str(model), str(copy / "test"), "--out", str(tmp_path / "s")]
        + ["--explain", "-q"]
    )
    err = capsys.readouterr().err
    assert code == 0
    warned = [line for line in err.splitlines() if "changed since the fit" in line]
    assert warned and len(set(warned)) == len(warned)  # each changed file named once
    assert list((tmp_path / "s").rglob("*_explain.png"))


def test_explain_on_a_cluster_is_a_usage_error(category, tmp_path, capsys):
    model = _fit(category, tmp_path, "patchcore")
    argv = ["score", "--model", str(model), str(category / "test"), "--explain"]
    assert cli.main(argv + ["--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path / "o")]) == 2
    assert "drop --scheduler" in capsys.readouterr().err
