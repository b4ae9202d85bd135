"""AnomalyMapDisplay (matplotlib, Agg) and the Pillow overlay writer."""

import sys

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from threadpoolctl import threadpool_limits

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sklearn_memad import anomaly_maps  # noqa: E402
from sklearn_memad.datasets import make_texture_anomalies  # noqa: E402
from sklearn_memad.display import (  # noqa: E402
    AnomalyMapDisplay,
    compose_panels,
    overlay_image,
    write_overlay,
)
from sklearn_memad.maps import anomaly_map_range, predict_anomaly_maps  # noqa: E402
from sklearn_memad.pipelines import make_detector_pipeline  # noqa: E402
from sklearn_memad.thresholds import ThresholdedDetector, anomaly_percentile  # noqa: E402

SIZE = 48


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def fitted():
    data = make_texture_anomalies(
        "brick", n_train=10, n_test_normal=2, n_test_per_defect=1, image_size=SIZE
    )
    pipe = make_detector_pipeline(
        "patchcore", backbone="resnet18", weights=None, image_size=SIZE, coreset_ratio=0.5
    )
    return pipe.fit(data.X_train), data


def test_predict_anomaly_maps_matches_the_pipeline(fitted):
    pipe, data = fitted
    result = predict_anomaly_maps(pipe, data.X_test)
    np.testing.assert_allclose(result.maps, anomaly_maps(pipe, data.X_test), rtol=1e-5)
    np.testing.assert_allclose(result.scores, -pipe.score_samples(data.X_test), rtol=1e-6)
    np.testing.assert_array_equal(result.labels, pipe.predict(data.X_test))
    np.testing.assert_allclose(result.decision, pipe.decision_function(data.X_test), rtol=1e-6)
    assert result.threshold == pytest.approx(-pipe[-1].offset_)
    assert (result.vmin, result.vmax) == anomaly_map_range(pipe)
    # The threshold sits mid-scale, above the typical normal level.
    assert result.vmin < result.threshold < result.vmax
    assert result.threshold == pytest.approx((result.vmin + result.vmax) / 2)


def test_predict_anomaly_maps_decides_with_a_thresholded_detector(fitted):
    pipe, data = fitted
    # Validation images that the memory was not fitted on; the threshold flags every defect.
    model = ThresholdedDetector(pipe, objective="recall", target=1.0, cv="prefit")
    model.fit(data.X_test, data.y_test)
    result = predict_anomaly_maps(model, data.X_test)
    np.testing.assert_allclose(result.maps, anomaly_maps(pipe, data.X_test), rtol=1e-5)
    np.testing.assert_allclose(result.scores, -pipe.score_samples(data.X_test), rtol=1e-6)
    assert result.threshold == pytest.approx(-model.threshold_)
    assert result.threshold != pytest.approx(-pipe[-1].offset_)
    np.testing.assert_array_equal(result.labels, model.predict(data.X_test))
    assert np.all(result.labels[data.y_test == -1] == -1)
    np.testing.assert_allclose(
        result.decision, model.decision_function(data.X_test), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(result.percentiles, anomaly_percentile(pipe, data.X_test))
    # The colour scale centres on the threshold that decides.
    assert (result.vmin, result.vmax) == anomaly_map_range(model)
    if result.threshold > result.vmin:
        assert result.threshold == pytest.approx((result.vmin + result.vmax) / 2)


def test_from_estimator_draws_one_axes_per_image(fitted):
    pipe, data = fitted
    display = AnomalyMapDisplay.from_estimator(
        pipe, data.X_test, masks=data.masks_test, names=list(data.kinds_test)
    )
    assert display.ax_.shape == (len(data.X_test),)
    assert len(display.images_) == len(data.X_test)
    assert display.figure_ is display.ax_[0].figure
    titles = [ax.get_title() for ax in display.ax_]
    assert titles[0].startswith("good")
    assert all(("ANOMALY" in t) or ("normal" in t) for t in titles)
    vmin, vmax = anomaly_map_range(pipe)
    assert display.images_[0].get_clim() == pytest.approx((vmin, vmax))


def test_from_predictions_on_given_axes_and_plot_again():
    images = np.full((2, 32, 32, 3), 128, dtype=np.uint8)
    maps = np.zeros((2, 32, 32))
    maps[1, 8:16, 8:16] = 1.0
    fig, axes = plt.subplots(1, 2)
    display = AnomalyMapDisplay.from_predictions(
        images, maps, scores=[0.1, 0.9], threshold=0.5, ax=axes, colorbar=False
    )
    assert display.figure_ is fig
    assert "ANOMALY" in display.ax_[1].get_title() and "normal" in display.ax_[0].get_title()
    # A Display can be drawn again elsewhere, as scikit-learn's can.
    display.plot(n_cols=1)
    assert display.figure_ is not fig
    single = AnomalyMapDisplay(images[1], maps[1]).plot()
    assert single.ax_.shape == (1,)


def test_display_errors_name_the_problem():
    images = np.zeros((2, 16, 16))
    with pytest.raises(ValueError, match="one Axes per image"):
        AnomalyMapDisplay.from_predictions(images, np.zeros((2, 16, 16)), ax=plt.gca())
    with pytest.raises(ValueError, match="must match"):
        AnomalyMapDisplay.from_predictions(images, np.zeros((2, 8, 8)))


def test_display_without_matplotlib_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"sklearn_memad\[plot\]"):
        AnomalyMapDisplay(np.zeros((1, 8, 8)), np.zeros((1, 8, 8))).plot()


def test_overlay_colours_the_defect_and_leaves_normal_pixels_alone():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 200, size=(64, 64), dtype=np.uint8)
    amap = np.zeros((64, 64), dtype=np.float32)
    amap[20:30, 40:50] = 1.0
    out = overlay_image(image, amap, vmin=0.0, vmax=1.0)
    grey = np.repeat(image[..., None], 3, axis=-1)
    # Below vmin the image shows through untouched; at the top of the scale it is red.
    np.testing.assert_array_equal(out[amap == 0], grey[amap == 0])
    spot = out[20:30, 40:50].reshape(-1, 3).astype(int)
    assert (spot[:, 0] - spot[:, 2] > 100).all()
    with pytest.raises(ValueError, match="anomaly_map must have"):
        overlay_image(image, amap[:10])


def test_write_overlay_png(tmp_path):
    image = np.full((40, 60, 3), 0.5)
    amap = np.zeros((40, 60))
    amap[10:20, 30:40] = 3.0
    mask = amap > 0
    path = write_overlay(
        tmp_path / "x.png",
        image,
        amap,
        score=3.0,
        threshold=1.0,
        vmin=0.0,
        vmax=2.0,
        mask=mask,
        title="x.png",
        name="PatchCore",
    )
    with Image.open(path) as im:
        picture = np.asarray(im.convert("RGB"))
    # Two panels, each at least 256 px high (small images are enlarged), plus text lines.
    assert picture.shape[0] > 256 and picture.shape[1] > 2 * 256 * 60 / 40
    # The caption is red (anomaly); the defect is outlined in green on the input.
    assert ((picture[..., 0] > 150) & (picture[..., 1] < 50) & (picture[..., 2] < 50)).any()
    assert ((picture[..., 1] == 255) & (picture[..., 0] == 0)).any()


def test_compose_panels_keeps_the_aspect_ratio_of_large_images():
    image = np.zeros((300, 1500, 3), dtype=np.uint8)
    panel = {"map": np.zeros((30, 150)), "caption": "c"}  # a coarse map is resized too
    picture = compose_panels(image, [panel])
    # Each panel is capped at 1024 px wide; the height follows the aspect ratio.
    assert picture.width < 2 * 1024 + 40
    assert abs(picture.height - 1024 * 300 / 1500) < 60
