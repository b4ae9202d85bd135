"""The command line (fit, score, demo), its exit codes and messages; model files; demo data."""

import csv
import os
import pickle
import shutil
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import save_file
from threadpoolctl import threadpool_limits

from sklearn_memad import anomaly_maps, cli
from sklearn_memad.cli import exit_codes
from sklearn_memad.datasets import load_mvtec, make_texture_anomalies, save_mvtec_layout
from sklearn_memad.persistence import MODEL_FORMAT, ModelFileError, load_model, save_model
from sklearn_memad.pipelines import make_detector_pipeline
from sklearn_memad.thresholds import ThresholdedDetector, anomaly_percentile

SIZE = 48
# A random-weights ResNet-18 on small images: real features do not matter for the plumbing.
FAST = ["--backbone", "resnet18", "--weights", "none", "--image-size", str(SIZE), "-q"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On a loaded 2-core machine, two OpenMP / BLAS threads spin against each other and run
    # many times slower than one; these tests are about plumbing, not speed.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """A tiny MVTec-layout category: 10 training images, 2 normal + 3 defective test images."""
    data = make_texture_anomalies(
        "brick", n_train=10, n_test_normal=2, n_test_per_defect=1, image_size=SIZE
    )
    return save_mvtec_layout(data, tmp_path_factory.mktemp("data") / "brick")


@pytest.fixture(scope="module")
def model(category, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    assert cli.main(["fit", "--train", str(category), "--out", str(path)] + FAST) == 0
    return path


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("method", ["patchcore", "padim", "dfkde"])
def test_fit_then_score_round_trip(method, category, tmp_path, capsys):
    model_path = tmp_path / "m.safetensors"
    code, out, err = _run(
        ["fit", "--train", str(category), "--method", method, "--out", str(model_path)] + FAST,
        capsys,
    )
    assert code == 0, err
    assert "Fitted" in out and "10 images" in out
    pipe, header = load_model(model_path, return_info=True)
    assert header["image_size"] == (SIZE, SIZE)
    assert header["n_train"] == 10
    assert type(pipe[-1]).__name__.lower().startswith(method[:5])

    out_dir = tmp_path / "scores"
    code, out, err = _run(
        ["score", "--model", str(model_path), str(category / "test"), "--out", str(out_dir), "-q"],
        capsys,
    )
    assert code == 0, err
    rows = _read_csv(out_dir / "scores.csv")
    assert list(rows[0]) == [
        "path",
        "score",
        "decision",
        "label",
        "anomaly_percentile",
        "overlay",
        "mask",
        "error",
    ]
    test = load_mvtec(category, "test")
    assert sorted(r["path"] for r in rows) == sorted(test.paths)
    # The CSV holds the pipeline's own numbers: score = -score_samples, decision, predict.
    by_path = {r["path"]: r for r in rows}
    expected = -pipe.score_samples(test.images)
    got = np.array([float(by_path[p]["score"]) for p in test.paths])
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    labels = np.array([int(by_path[p]["label"]) for p in test.paths])
    np.testing.assert_array_equal(labels, pipe.predict(test.images))
    decisions = np.array([float(by_path[p]["decision"]) for p in test.paths])
    assert np.all((decisions < 0) == (labels == -1))
    percentiles = np.array([float(by_path[p]["anomaly_percentile"]) for p in test.paths])
    np.testing.assert_allclose(percentiles, anomaly_percentile(pipe, test.images), atol=0.01)
    assert "the detector's own offset_" in out
    # One overlay per image, in the input's subfolders.
    for kind in ("good", "scratch", "stain", "foreign"):
        pngs = sorted((out_dir / kind).glob("*.png"))
        assert pngs, kind
        with Image.open(pngs[0]) as im:
            assert im.width > 2 * 256 and im.height > 256
    assert "AUROC" in out  # the folder names give labels


def test_fit_on_a_plain_folder_and_score_single_files(category, tmp_path, capsys):
    model_path = tmp_path / "m.safetensors"
    train = category / "train" / "good"
    assert cli.main(["fit", "--train", str(train), "--out", str(model_path)] + FAST) == 0
    files = sorted((category / "test" / "good").glob("*.png"))
    code, out, err = _run(
        [
            "score",
            "--model",
            str(model_path),
            *map(str, files),
            "--out",
            str(tmp_path / "o"),
            "--no-overlays",
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    assert len(_read_csv(tmp_path / "o" / "scores.csv")) == len(files)
    assert not list((tmp_path / "o").rglob("*.png"))


def test_score_reports_unreadable_images_as_failures(model, category, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((category / "test" / "good").glob("*.png"))[0]
    (folder / "ok.png").write_bytes(good.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image ending")
    code, out, err = _run(
        ["score", "--model", str(model), str(folder), "--out", str(tmp_path / "o"), "-q"], capsys
    )
    # An image without a verdict is a failure: exit code 3, and a row with the reason.
    assert code == exit_codes.EXIT_DATA
    assert "1 image got no verdict" in err and "broken.png" in err
    assert "Traceback" not in err
    assert "(1 row without a verdict)" in out
    rows = _read_csv(tmp_path / "o" / "scores.csv")
    assert [os.path.basename(r["path"]) for r in rows] == ["broken.png", "ok.png"]
    assert (
        rows[0]["score"] == "" and rows[0]["label"] == "" and "cannot identify" in rows[0]["error"]
    )
    assert rows[1]["error"] == "" and rows[1]["overlay"] == "ok.png"


def test_progress_bars_by_default_and_quiet_with_q(category, tmp_path, capsys):
    argv = ["fit", "--train", str(category), "--out", str(tmp_path / "m.safetensors")]
    fast_verbose = [a for a in FAST if a != "-q"]
    assert cli.main(argv + fast_verbose) == 0
    err = capsys.readouterr().err
    # One bar for the stream: images read of the total.
    assert "fitting:" in err and "10/10" in err
    assert "FeatureTransformer:" not in err and "coreset:" not in err
    assert cli.main(argv + FAST) == 0
    assert capsys.readouterr().err == ""


def _fit_argv(train, out, *extra):
    return ["fit", "--train", str(train), "--out", str(out)] + FAST + list(extra)


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("missing", exit_codes.EXIT_DATA, "does not exist"),
        ("empty", exit_codes.EXIT_DATA, "holds no image file"),
        ("unreadable", exit_codes.EXIT_DATA, "no readable image"),
        ("backbone", exit_codes.EXIT_USAGE, "not a known backbone"),
        ("layers", exit_codes.EXIT_USAGE, "not a submodule"),
        ("ratio", exit_codes.EXIT_USAGE, "--coreset-ratio"),
        ("too_few", exit_codes.EXIT_DATA, "at least 2"),
        ("components", exit_codes.EXIT_USAGE, "--n-components 1000"),
    ],
)
def test_fit_errors_are_one_line_with_exit_codes(case, code, message, category, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.png").write_bytes(next((category / "train" / "good").glob("*.png")).read_bytes())
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "x.jpg").write_bytes(b"\x00" * 10)
    argv = {
        "missing": _fit_argv(tmp_path / "nope", out),
        "empty": _fit_argv(empty, out),
        "unreadable": _fit_argv(unreadable, out),
        "backbone": _fit_argv(category, out, "--backbone", "resnet1"),
        "layers": _fit_argv(category, out, "--layers", "layer9"),
        "ratio": _fit_argv(category, out, "--coreset-ratio", "2"),
        "too_few": _fit_argv(one, out, "--method", "padim"),
        "components": _fit_argv(category, out, "--method", "padim", "--n-components", "1000"),
    }[case]
    got, _, err = _run(argv, capsys)
    assert got == code
    assert message in err
    assert "Traceback" not in err
    if case != "ratio":  # argparse prints its usage first
        assert len(err.strip().splitlines()) <= 2  # the error, and maybe a skipped-image note
    assert not out.exists()


def test_weights_unavailable_offline_is_a_setup_error(category, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKLEARN_MEMAD_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    argv = [
        "fit",
        "--train",
        str(category),
        "--out",
        str(tmp_path / "m.safetensors"),
        "--backbone",
        "resnet18",
        "--image-size",
        str(SIZE),
        "-q",
    ]
    code, _, err = _run(argv, capsys)
    assert code == exit_codes.EXIT_SETUP
    assert "resnet18" in err and "Traceback" not in err


class _WritesMarker:
    """Unpickling this creates the file ``marker``: code run by loading a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _with_format(source, path, model_format):
    """A copy of the model file ``source`` that claims another format number."""
    with safe_open(source, framework="numpy") as handle:
        header = dict(handle.metadata())
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    header["sklearn_memad_model"] = str(model_format)
    save_file(tensors, path, metadata=header)


@pytest.mark.parametrize("case", ["missing", "garbage", "pickle", "newer", "bare detector"])
def test_score_refuses_bad_model_files(case, model, category, tmp_path, capsys):
    path, marker = tmp_path / "model.safetensors", tmp_path / "ran"
    pipe = load_model(model)
    if case == "garbage":
        path.write_bytes(b"hello, not a model")
    elif case == "pickle":
        # A model file of sklearn_memad 0.1, with code hidden in it.
        joblib.dump(
            {"sklearn_memad_model": 1, "pipeline": pipe, "extra": _WritesMarker(marker)}, path
        )
    elif case == "newer":
        _with_format(model, path, MODEL_FORMAT + 1)
    elif case == "bare detector":
        save_model(pipe[-1], path)
    message = {
        "missing": "does not exist",
        "garbage": "not a sklearn_memad model file",
        "pickle": "is a pickle",
        "newer": f"format {MODEL_FORMAT + 1}, newer than",
        "bare detector": "scores feature grids, not images",
    }[case]
    code, _, err = _run(
        ["score", "--model", str(path), str(category / "test"), "--out", str(tmp_path / "o")],
        capsys,
    )
    assert code == exit_codes.EXIT_MODEL
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not marker.exists()
    if case != "bare detector":
        with pytest.raises((ModelFileError, FileNotFoundError), match=message):
            load_model(path)
    assert not marker.exists()


def test_score_refuses_a_joblib_pipeline_unread(model, category, tmp_path, capsys):
    path = tmp_path / "bare.joblib"
    joblib.dump(load_model(model), path)
    images, out = str(category / "test" / "good"), str(tmp_path / "o")
    code, _, err = _run(["score", "--model", str(path), images, "--out", out, "-q"], capsys)
    assert code == exit_codes.EXIT_MODEL
    assert "was not loaded" in err and "joblib.load" in err and "save_model" in err


@pytest.mark.parametrize(
    "argv, code",
    [
        (["score", "--model", "{model}", "{tmp}/nope.png"], exit_codes.EXIT_DATA),
        (["score", "--model", "{model}", "{tmp}/empty"], exit_codes.EXIT_DATA),
        (["frobnicate"], exit_codes.EXIT_USAGE),
        (["fit"], exit_codes.EXIT_USAGE),
        (["demo", "--textures", "wood", "--out", "{tmp}/d"], exit_codes.EXIT_USAGE),
        (["--version"], exit_codes.EXIT_OK),
        (["score", "--help"], exit_codes.EXIT_OK),
    ],
)
def test_usage_and_input_exit_codes(argv, code, model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [a.format(model=model, tmp=tmp_path) for a in argv]
    got, _, err = _run(argv, capsys)
    assert got == code
    assert "Traceback" not in err


def test_save_and_load_model_header(category, tmp_path):
    data = load_mvtec(category, "train")
    pipe = make_detector_pipeline("dfkde", backbone="resnet18", weights=None, image_size=SIZE)
    pipe.fit(data.images)
    header = save_model(pipe, tmp_path / "m.safetensors", note="hello")
    assert header["sklearn_memad_model"] == MODEL_FORMAT and header["note"] == "hello"
    loaded, read = load_model(tmp_path / "m.safetensors", return_info=True)
    assert read == header and read["image_size"] == (SIZE, SIZE)
    np.testing.assert_array_equal(
        loaded.score_samples(data.images[:2]), pipe.score_samples(data.images[:2])
    )
    with pytest.raises(ModelFileError, match="not a fitted sklearn_memad model"):
        save_model(make_detector_pipeline("padim"), tmp_path / "unfitted.safetensors")
    assert not (tmp_path / "unfitted.safetensors").exists()


def test_demo_small_run(tmp_path, capsys):
    out = tmp_path / "demo"
    code, printed, err = _run(["demo", "--small", "--out", str(out)] + FAST, capsys)
    assert code == 0, err
    for name in ("PatchCore", "PaDiM", "DFKDE", "image AUROC", "pixel AUROC", "fit s"):
        assert name in printed
    overlays = sorted((out / "overlays").glob("*.png"))
    assert len(overlays) == 4  # one normal image and one per defect type
    test = load_mvtec(out / "data" / "brick", "test")
    assert set(test.kinds) == {"good", "scratch", "stain", "foreign"}


def test_demo_data_is_deterministic_and_round_trips(tmp_path):
    kwargs = dict(n_train=3, n_test_normal=2, n_test_per_defect=2, image_size=64)
    a = make_texture_anomalies("gravel", **kwargs)
    b = make_texture_anomalies("gravel", **kwargs)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    np.testing.assert_array_equal(a.masks_test, b.masks_test)
    assert not np.array_equal(make_texture_anomalies("grass", **kwargs).X_test, a.X_test)
    defective = a.y_test == -1
    assert a.masks_test[defective].any(axis=(1, 2)).all()
    assert not a.masks_test[~defective].any()
    # Pasted defects change the pixels under their masks.
    assert a.X_test.shape == (8, 64, 64, 3) and a.X_test.dtype == np.uint8
    root = save_mvtec_layout(a, tmp_path / "gravel")
    test = load_mvtec(root, "test")
    order = np.argsort(a.kinds_test, kind="stable")
    np.testing.assert_array_equal(test.images, a.X_test[order])
    np.testing.assert_array_equal(test.masks, a.masks_test[order])
    np.testing.assert_array_equal(load_mvtec(root, "train").images, a.X_train)


def test_python_dash_m_exit_code_and_no_matplotlib_import(tmp_path):
    # Runs the package's __main__ as `python -m sklearn_memad` does, then checks that the
    # command line did not import matplotlib (an optional extra).
    code = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('sklearn_memad', run_name='__main__', alter_sys=True)\n"
        "finally:\n"
        "    assert 'matplotlib' not in sys.modules\n"
    )
    missing = tmp_path / "nope"
    done = subprocess.run(
        [sys.executable, "-c", code, "fit", "--train", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == exit_codes.EXIT_DATA, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"memad fit: error: the training folder '{missing}' does not exist"
    ]


def test_model_file_has_no_torch_module_and_the_model_pickles(model):
    with open(model, "rb") as handle:
        assert b"torch" not in handle.read()
    assert pickle.loads(pickle.dumps(load_model(model))) is not None


# --------------------------------------------------------------------------- --validation
@pytest.fixture(scope="module")
def recall_model(category, tmp_path_factory):
    """A model whose threshold is chosen for recall 1.0 on the category's test images."""
    path = tmp_path_factory.mktemp("recall") / "model.safetensors"
    argv = _fit_argv(
        category, path, "--validation", str(category), "--objective", "recall", "--target", "1.0"
    )
    assert cli.main(argv) == 0
    return path


def _csv_by_path(path):
    return {r["path"]: r for r in _read_csv(path)}


@pytest.mark.parametrize("objective", ["recall", "f1"])
def test_fit_with_validation_reports_and_saves_the_chosen_threshold(
    objective, category, tmp_path, capsys
):
    path = tmp_path / "m.safetensors"
    extra = ["--objective", "recall", "--target", "1.0"] if objective == "recall" else []
    # The category root, or its test/ folder (then the masks are in ../ground_truth).
    validation = category if objective == "recall" else category / "test"
    code, out, err = _run(
        _fit_argv(category, path, "--validation", str(validation), *extra), capsys
    )
    assert code == 0, err
    model, header = load_model(path, return_info=True)
    assert isinstance(model, ThresholdedDetector)
    assert model.cv == "prefit" and model.objective == objective
    # Validated on test/ (2 normal, 3 defective), never on the training images.
    assert (model.n_val_normals_, model.n_val_anomalies_) == (2, 3)
    assert header["n_train"] == 10 and header["image_size"] == (SIZE, SIZE)
    goal = "recall >= 1" if objective == "recall" else "the best F1"
    assert f"chosen for {goal} on 2 normal and 3 defective validation images" in out
    assert f"recall {model.recall_:.3f}, false-positive rate " in out
    assert f"F1 {model.f1_:.3f}" in out
    if objective == "recall":
        assert model.recall_ == 1.0
    # The category has ground-truth masks: a pixel threshold is stored with its smoothing.
    pixel = header["pixel_threshold"]
    assert pixel["sigma"] == 4.0 and np.isfinite(pixel["threshold"])
    assert f"Pixel threshold {pixel['threshold']:.4g}" in out
    assert f"pixel F1 {pixel['f1']:.3f}, IoU {pixel['iou']:.3f}" in out


def test_score_decides_with_the_validation_threshold(recall_model, category, tmp_path, capsys):
    model = load_model(recall_model)
    detector = model.estimator_[-1]
    out_dir = tmp_path / "o"
    code, out, err = _run(
        [
            "score",
            "--model",
            str(recall_model),
            str(category / "test"),
            "--out",
            str(out_dir),
            "--no-overlays",
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    test = load_mvtec(category, "test")
    rows = _csv_by_path(out_dir / "scores.csv")
    labels = np.array([int(rows[p]["label"]) for p in test.paths])
    scores = np.array([float(rows[p]["score"]) for p in test.paths])
    decisions = np.array([float(rows[p]["decision"]) for p in test.paths])
    # Recall 1.0 on these validation images: every defective one is flagged again.
    assert np.all(labels[test.labels == -1] == -1)
    np.testing.assert_array_equal(labels, model.predict(test.images))
    np.testing.assert_allclose(decisions, model.decision_function(test.images), atol=1e-4)
    assert np.all((scores > -model.threshold_) == (labels == -1))
    # The wrapper's threshold decided, not the detector's own offset_.
    assert model.threshold_ != detector.offset_
    assert f"threshold {-model.threshold_:.4g}, chosen for recall >= 1" in out
    assert "offset_" not in out
    percentiles = np.array([float(rows[p]["anomaly_percentile"]) for p in test.paths])
    np.testing.assert_allclose(percentiles, anomaly_percentile(model, test.images), atol=0.01)
    assert np.all((0 <= percentiles) & (percentiles <= 100))


def test_score_writes_defect_masks_from_the_pixel_threshold(
    recall_model, category, tmp_path, capsys
):
    model, header = load_model(recall_model, return_info=True)
    threshold = header["pixel_threshold"]["threshold"]
    # Two new images: one at the model's size, one at another size (its mask has the file's).
    new = tmp_path / "new"
    (new / "scratch").mkdir(parents=True)
    with Image.open(category / "test" / "scratch" / "000.png") as im:
        im.resize((2 * SIZE, SIZE + 24)).save(new / "scratch" / "big.png")
    shutil.copy(category / "test" / "stain" / "000.png", new / "plain.png")
    out_dir = tmp_path / "o"
    code, out, err = _run(
        ["score", "--model", str(recall_model), str(new), "--out", str(out_dir), "-q"], capsys
    )
    assert code == 0, err
    assert "the pixel threshold chosen on the validation masks" in out
    assert "2 overlay PNGs and 2 defect mask PNGs" in out
    assert (out_dir / "plain.png").is_file() and (out_dir / "scratch" / "big.png").is_file()
    with Image.open(out_dir / "scratch" / "big_mask.png") as im:
        assert im.size == (2 * SIZE, SIZE + 24) and im.mode == "L"
    with Image.open(out_dir / "plain_mask.png") as im:
        mask = np.asarray(im)
    assert set(np.unique(mask)) <= {0, 255}
    image = load_mvtec(category, "test", kinds="stain").images[:1]
    assert model.predict(image)[0] == -1  # recall 1.0: the defective image is flagged
    expected = anomaly_maps(model, image)[0] >= threshold
    assert np.mean((mask == 255) == expected) > 0.99  # white = defect pixel
    assert expected.any()

    # An image that the image threshold passes gets an empty mask.
    passing = tmp_path / "passing.safetensors"
    model.threshold_ = -np.inf  # nothing is flagged
    save_model(model, passing, pixel_threshold=header["pixel_threshold"])
    code, _, err = _run(
        ["score", "--model", str(passing), str(new), "--out", str(tmp_path / "p"), "-q"], capsys
    )
    assert code == 0, err
    written = sorted((tmp_path / "p").rglob("*_mask.png"))
    assert len(written) == 2
    for path in written:
        with Image.open(path) as im:
            assert not np.asarray(im).any()

    # --no-masks writes none; another smoothing than the threshold's gets a warning instead.
    for flags, warned in ((["--no-masks"], False), (["--sigma", "2"], True)):
        again = tmp_path / ("m" + flags[0])
        code, out, err = _run(
            [
                "score",
                "--model",
                str(recall_model),
                str(new),
                "--out",
                str(again),
                "--no-overlays",
                "-q",
                *flags,
            ],
            capsys,
        )
        assert code == 0, err
        assert not list(again.rglob("*_mask.png"))
        assert ("--sigma 4" in err) == warned


def test_validation_without_masks_in_a_plain_folder(category, tmp_path, capsys):
    # good/ and one folder per defect type, no ground_truth/: no pixel threshold, no masks.
    plain = tmp_path / "val"
    shutil.copytree(category / "test", plain)
    path = tmp_path / "m.safetensors"
    code, out, err = _run(
        _fit_argv(
            category, path, "--validation", str(plain), "--objective", "fpr", "--target", "0.5"
        ),
        capsys,
    )
    assert code == 0, err
    assert "no ground-truth masks" in err
    model, header = load_model(path, return_info=True)
    assert model.false_positive_rate_ <= 0.5 and "pixel_threshold" not in header
    code, out, err = _run(
        ["score", "--model", str(path), str(plain), "--out", str(tmp_path / "o"), "-q"], capsys
    )
    assert code == 0, err
    assert "false-positive rate <= 0.5" in out
    assert not list((tmp_path / "o").rglob("*_mask.png"))


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--objective", "recall"], exit_codes.EXIT_USAGE, "objective='recall' needs a target"),
        (["--objective", "fpr", "--target", "abc"], exit_codes.EXIT_USAGE, "got 'abc'"),
        (["--objective", "recall", "--target", "1.5"], exit_codes.EXIT_USAGE, "Got 1.5 instead"),
        (["--target", "0.9"], exit_codes.EXIT_USAGE, "is not used with objective='f1'"),
        (
            ["no-validation", "--objective", "recall", "--target", "0.9"],
            exit_codes.EXIT_USAGE,
            "without --validation",
        ),
        (["overlap"], exit_codes.EXIT_USAGE, "training images too"),
        (["only-good"], exit_codes.EXIT_DATA, "normal images only"),
    ],
)
def test_fit_validation_errors_are_one_line(extra, code, message, category, tmp_path, capsys):
    path = tmp_path / "m.safetensors"
    validation = ["--validation", str(category)]
    if extra and extra[0] == "no-validation":
        validation, extra = [], extra[1:]
    elif extra == ["overlap"]:
        # A plain validation folder whose good/ holds training images.
        (tmp_path / "val").mkdir()
        shutil.copytree(category / "test" / "scratch", tmp_path / "val" / "scratch")
        os.symlink(category / "train" / "good", tmp_path / "val" / "good")
        validation, extra = ["--validation", str(tmp_path / "val")], []
    elif extra == ["only-good"]:
        validation, extra = ["--validation", str(category / "train")], []
    got, _, err = _run(_fit_argv(category, path, *validation, *extra), capsys)
    assert got == code
    assert message in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("memad fit: error: ")
    assert not path.exists()


def test_fit_streams_its_folder_in_chunks(category, tmp_path):
    """Chunks bound memory; PaDiM's statistics make the streamed model the one-pass model."""
    streamed, whole = tmp_path / "streamed.safetensors", tmp_path / "whole.safetensors"
    argv = ["--method", "padim", "--n-components", "8"]
    assert cli.main(_fit_argv(category, streamed, *argv, "--chunk-size", "3")) == 0
    assert cli.main(_fit_argv(category, whole, *argv, "--chunk-size", "100")) == 0
    pipe = load_model(streamed)
    reference = load_model(whole)
    assert pipe[-1].n_samples_seen_ == 10
    test = load_mvtec(category, "test", image_size=SIZE).images
    np.testing.assert_allclose(pipe.score_samples(test), reference.score_samples(test), rtol=1e-5)
