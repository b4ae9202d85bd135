"""``memad score``'s outputs lose nothing: kept apart from the inputs, one per input, rows
written as images are scored, every image without a verdict reported; and ``memad``'s option
checks name the option and its valid range."""

import csv
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from threadpoolctl import threadpool_limits

from sklearn_memad import cli
from sklearn_memad.cli import exit_codes, score
from sklearn_memad.datasets import make_texture_anomalies, save_mvtec_layout

SIZE = 48
FAST = ["--backbone", "resnet18", "--weights", "none", "--image-size", str(SIZE), "-q"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    data = make_texture_anomalies(
        "brick", n_train=8, n_test_normal=2, n_test_per_defect=1, image_size=SIZE
    )
    return save_mvtec_layout(data, tmp_path_factory.mktemp("data") / "brick")


@pytest.fixture(scope="module")
def model(category, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    assert cli.main(["fit", "--train", str(category), "--out", str(path)] + FAST) == 0
    return path


@pytest.fixture
def images(category, tmp_path):
    """A folder of three images: two share the stem ``img0`` (a PNG and a JPEG)."""
    folder = tmp_path / "in"
    folder.mkdir()
    sources = sorted((category / "test").rglob("*.png"))
    (folder / "img0.png").write_bytes(sources[0].read_bytes())
    with Image.open(sources[1]) as im:
        im.convert("RGB").save(folder / "img0.jpg")
    (folder / "other.png").write_bytes(sources[2].read_bytes())
    return folder


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- output folder
@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_inside_or_equal_to_the_scanned_folder_is_refused(where, model, images, capsys):
    before = {p: p.read_bytes() for p in images.iterdir()}
    out = images if where == "same" else images / "results"
    code, _, err = _run(["score", "--model", model, images, "--out", out], capsys)
    assert code == exit_codes.EXIT_USAGE
    assert f"--out '{out}'" in err and "being scanned" in err
    assert {p: p.read_bytes() for p in images.iterdir()} == before  # nothing overwritten
    assert not (images / "results").exists()


def test_out_holding_an_input_file_is_refused(model, images, capsys):
    code, _, err = _run(["score", "--model", model, images / "img0.png", "--out", images], capsys)
    assert code == exit_codes.EXIT_USAGE
    assert "holds the input" in err


def test_default_output_folder_is_never_inside_the_scanned_folder(
    model, images, monkeypatch, capsys
):
    monkeypatch.chdir(images)
    code, out, err = _run(["score", "--model", model, "."], capsys)
    assert code == 0, err
    beside = images.resolve().parent / "in_memad_scores"
    assert (beside / "scores.csv").is_file() and not (images / "memad_scores").exists()
    assert str(beside) in out
    # A second run scores the same three images, not the first run's overlays.
    code, _, err = _run(["score", "--model", model, "."], capsys)
    assert code == 0, err
    assert len(_rows(beside / "scores.csv")) == 3


# --------------------------------------------------------------------------- unique outputs
def test_inputs_sharing_a_stem_get_their_own_overlays(model, images, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _run(["score", "--model", model, images, "--out", out], capsys)
    assert code == 0, err
    rows = {os.path.basename(r["path"]): r for r in _rows(out / "scores.csv")}
    assert rows["img0.png"]["overlay"] == "img0.png.png"
    assert rows["img0.jpg"]["overlay"] == "img0.jpg.png"
    assert rows["other.png"]["overlay"] == "other.png"
    assert sorted(p.name for p in out.glob("*.png")) == [
        "img0.jpg.png",
        "img0.png.png",
        "other.png",
    ]


def test_a_file_named_twice_is_scored_once(model, images, tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["score", "--model", model, images, images / "other.png", "--out", out]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    assert len(_rows(out / "scores.csv")) == 3


def test_output_names_are_unique_with_masks():
    from pathlib import Path

    from sklearn_memad.cli.outputs import output_names

    root = Path("/data").resolve()
    files = [root / "a.png", root / "a_mask.png", root / "b.jpg", root / "b.PNG", root / "c.bmp"]
    names = output_names(files, root)
    taken = [n.as_posix().lower() for n in names.values()]
    taken += [n.with_name(n.stem + "_mask.png").as_posix().lower() for n in names.values()]
    assert len(set(taken)) == len(taken) == 10
    assert names[os.path.abspath(root / "c.bmp")] == Path("c.png")


# --------------------------------------------------------------------------- rows as scored
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_an_interrupted_run_keeps_the_rows_it_reached(
    how, model, category, tmp_path, monkeypatch, capsys
):
    calls = []
    predict = score._predict

    def interrupted(pipe, batch, sigma):
        calls.append(len(batch))
        if len(calls) == 2:
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt
        return predict(pipe, batch, sigma)

    monkeypatch.setattr(score, "SCORE_CHUNK", 2)
    monkeypatch.setattr(score, "_predict", interrupted)
    previous = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "o"
    code, _, err = _run(["score", "--model", model, category / "test", "--out", out], capsys)
    assert code == exit_codes.EXIT_INTERRUPTED
    assert "interrupted; 2 of 5 images done; their rows are in" in err
    rows = _rows(out / "scores.csv")
    assert len(rows) == 2 and all(r["label"] in ("1", "-1") for r in rows)
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back


def test_rows_are_on_disk_before_the_run_ends(model, category, tmp_path, monkeypatch, capsys):
    seen = []
    write = score._write_outputs

    def spy(job, path, image, result, i):
        seen.append(len(_rows(job.out / "scores.csv")))
        return write(job, path, image, result, i)

    monkeypatch.setattr(score, "_write_outputs", spy)
    code, _, err = _run(
        ["score", "--model", model, category / "test", "--out", tmp_path / "o"], capsys
    )
    assert code == 0, err
    assert seen == [0, 1, 2, 3, 4]  # each row flushed before the next image's outputs


# --------------------------------------------------------------------------- no verdict
def test_an_image_over_the_pixel_limit_fails_and_the_limit_can_be_raised(
    model, images, tmp_path, monkeypatch, capsys
):
    with Image.open(images / "other.png") as im:
        im.resize((100, 100)).save(images / "wide.png")
    # Pillow's guard, scaled down (it still lets its own bitmap font through): 100 x 100
    # pixels count as a decompression bomb.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    out = tmp_path / "o"
    code, _, err = _run(["score", "--model", model, images, "--out", out], capsys)
    assert code == exit_codes.EXIT_DATA
    assert "decompression bomb" in err and "--max-image-pixels" in err
    rows = {os.path.basename(r["path"]): r for r in _rows(out / "scores.csv")}
    assert len(rows) == 4 and rows["wide.png"]["score"] == ""
    assert "decompression bomb" in rows["wide.png"]["error"]
    argv = ["score", "--model", model, images, "--out", out, "--max-image-pixels", "20000"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    assert all(r["error"] == "" and r["score"] for r in _rows(out / "scores.csv"))
    assert Image.MAX_IMAGE_PIXELS == 3000  # lifted only while reading
    # A limit below Pillow's is applied too, with the numbers.
    monkeypatch.undo()
    argv[-1] = "5000"
    code, _, err = _run(argv, capsys)
    assert code == exit_codes.EXIT_DATA
    rows = {os.path.basename(r["path"]): r for r in _rows(out / "scores.csv")}
    assert "100 x 100 = 10,000 pixels, more than the limit of 5,000" in rows["wide.png"]["error"]


def test_a_float_tiff_is_read_on_its_own_scale_or_refused(model, images, tmp_path, capsys):
    with Image.open(images / "other.png") as im:
        grey = np.asarray(im.convert("L"), dtype=np.float32)
    Image.fromarray(grey / 255, mode="F").save(images / "unit.tif")
    Image.fromarray(grey, mode="F").save(images / "wide.tif")
    Image.fromarray(grey.astype(np.uint8), mode="L").save(images / "eight.png")
    out = tmp_path / "o"
    code, _, err = _run(["score", "--model", model, images, "--out", out], capsys)
    assert code == exit_codes.EXIT_DATA
    rows = {os.path.basename(r["path"]): r for r in _rows(out / "scores.csv")}
    # [0, 1] floats read as the 8-bit image they came from, not as black.
    assert abs(float(rows["unit.tif"]["score"]) - float(rows["eight.png"]["score"])) < 1e-3
    assert (
        "values in [" in rows["wide.tif"]["error"] and "[0, 1] scale" in rows["wide.tif"]["error"]
    )


# --------------------------------------------------------------------------- option checks
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sigma", "nan"], "argument --sigma: expected a number of pixels in [0, 1000]"),
        (["--sigma", "inf"], "argument --sigma: expected a number of pixels in [0, 1000]"),
        (["--sigma", "-1"], "argument --sigma: expected a number of pixels in [0, 1000]"),
        (["--sigma", "1e5"], "argument --sigma: expected a number of pixels in [0, 1000]"),
        (["--max-image-pixels", "0"], "argument --max-image-pixels: expected a positive"),
    ],
)
def test_score_option_values_are_checked(argv, message, model, images, tmp_path, capsys):
    code, _, err = _run(
        ["score", "--model", model, images, "--out", tmp_path / "o", *argv], capsys
    )
    assert code == exit_codes.EXIT_USAGE
    assert message in err
    assert not (tmp_path / "o").exists()


def test_model_option_naming_a_folder(images, tmp_path, capsys):
    code, _, err = _run(["score", "--model", tmp_path, images], capsys)
    assert code == exit_codes.EXIT_USAGE
    assert f"--model '{tmp_path}' is a folder; expected a model file" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--image-size", "99999x99999"], "argument --image-size: expected a side"),
        (["--image-size", "8"], "each 16 to 4096 px; got '8'"),
        (["--method", "dfkde", "--n-components", "100000"], "expected 1 to 384"),
        (["--train-file"], "--train '"),
    ],
)
def test_fit_option_values_are_checked(argv, message, category, tmp_path, capsys):
    train = category
    if argv == ["--train-file"]:
        train, argv = next((category / "train" / "good").glob("*.png")), []
    out = tmp_path / "m.safetensors"
    code, _, err = _run(["fit", "--train", train, "--out", out] + FAST + argv, capsys)
    assert code == exit_codes.EXIT_USAGE
    assert message in err
    assert "Traceback" not in err and not out.exists()


def test_demo_image_size_is_bounded(tmp_path, capsys):
    code, _, err = _run(["demo", "--out", tmp_path, "--image-size", "99999"], capsys)
    assert code == exit_codes.EXIT_USAGE
    assert "expected a side of 16 to 4096 px" in err


@pytest.mark.parametrize("method", ["padim", "dfkde"])
def test_fit_with_chunks_of_one_image(method, category, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    argv = ["fit", "--train", category, "--out", out, "--method", method, "--chunk-size", "1"]
    code, out_text, err = _run(argv + ["--n-components", "8"] + FAST, capsys)
    assert code == 0, err
    assert "on 8 images" in out_text
