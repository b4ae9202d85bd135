"""The engineer's report: the numbers at the threshold, and the HTML page in a real browser."""

import csv
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from sklearn_memad import cli
from sklearn_memad.datasets import make_texture_anomalies, save_mvtec_layout
from sklearn_memad.display import decision_summary, write_report
from sklearn_memad.metrics import image_auroc

SIZE = 48
FAST = ["--backbone", "resnet18", "--weights", "none", "--image-size", str(SIZE), "-q"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_summary_counts_what_the_threshold_does():
    labels = np.array([1, 1, 1, -1, -1, -1, -1])
    scores = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.95, 0.7])
    kinds = ["good"] * 3 + ["crack", "crack", "break", "break"]
    summary = decision_summary(labels, scores, 0.5, kinds)
    assert (summary["caught"], summary["false_alarms"]) == (3, 1)
    assert summary["recall"] == 0.75 and summary["false_positive_rate"] == pytest.approx(1 / 3)
    assert summary["kinds"] == [("break", 2, 2), ("crack", 1, 2)]
    assert summary["auroc"] == pytest.approx(image_auroc(labels, scores))


def test_the_page_holds_the_numbers_the_charts_and_the_worst_mistakes(tmp_path):
    labels = np.array([1] * 5 + [-1] * 5)
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.8, 0.85, 0.2, 0.95, 0.7])
    overlays = [tmp_path / f"img{i}.png" for i in range(10)]
    summary = write_report(
        tmp_path / "report.html",
        labels,
        scores,
        0.5,
        names=[f"img{i}" for i in range(10)],
        kinds=["good"] * 5 + ["crack"] * 5,
        overlays=overlays,
        percentiles=np.linspace(0, 100, 10),
        threshold_percentile=90.0,
    )
    page = (tmp_path / "report.html").read_text()
    assert summary["caught"] == 4 and summary["false_alarms"] == 1
    assert "0.800 (4 of 5)" in page and "anomaly percentile 90.0" in page
    assert page.count("<svg") == 3 and "crack" in page
    # The one false positive (img3) and the one false negative (img7), linked to overlays.
    assert re.findall(r'href="(img\d)\.png"', page) == ["img3", "img7"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    data = make_texture_anomalies(
        "brick", n_train=10, n_test_normal=3, n_test_per_defect=2, image_size=SIZE
    )
    category = save_mvtec_layout(data, folder / "brick")
    model = folder / "model.safetensors"
    assert cli.main(["fit", "--train", str(category), "--out", str(model)] + FAST) == 0
    out = folder / "scores"
    return model, category, out


def test_memad_score_prints_recall_per_kind_and_writes_the_report(scored, capsys):
    model, category, out = scored
    assert (
        cli.main(
            ["score", "--model", str(model), str(category / "test"), "--out", str(out)] + FAST[-1:]
        )
        == 0
    )
    printed = capsys.readouterr().out
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    defective = [row for row in rows if "/good/" not in row["path"]]
    caught = sum(row["label"] == "-1" for row in defective)
    assert f"recall {caught / len(defective):.3f} ({caught} of {len(defective)}" in printed
    for kind in ("foreign", "scratch", "stain"):
        mine = [row for row in defective if f"/{kind}/" in row["path"]]
        flagged = sum(row["label"] == "-1" for row in mine)
        assert re.search(rf"{kind}\s+caught\s+{flagged} / {len(mine)}", printed)
    assert "anomaly percentile" in printed and "report.html" in printed
    assert (out / "report.html").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt install chromium)")
def test_the_report_renders_in_a_headless_browser(scored, tmp_path):
    model, category, out = scored
    if not (out / "report.html").exists():
        cli.main(["score", "--model", str(model), str(category / "test"), "--out", str(out), "-q"])
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    url = (out / "report.html").as_uri()
    dom = subprocess.run(
        browser + ["--dump-dom", url], capture_output=True, text=True, timeout=120
    ).stdout
    assert dom.count("<svg") == 3 and "Per defect kind" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        browser + ["--window-size=1200,1600", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
    )
    picture = np.asarray(Image.open(shot).convert("RGB"))
    assert picture.shape[:2] == (1600, 1200)
    # Not a blank page: the charts' blue curve and red dots are drawn.
    blue = (picture[..., 2] > 120) & (picture[..., 0] < 80)
    red = (picture[..., 0] > 150) & (picture[..., 1] < 90) & (picture[..., 2] < 90)
    assert blue.sum() > 200 and red.sum() > 50
