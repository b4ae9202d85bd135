"""Large images through the backbone in tiles, stitched into one grid."""

import numpy as np
import pytest

from sklearn_memad import FeatureTransformer, anomaly_maps, cli
from sklearn_memad.datasets import make_texture_anomalies, save_mvtec_layout
from sklearn_memad.features._tiling import tile_layout
from sklearn_memad.metrics import pixel_auroc
from sklearn_memad.persistence import load_model
from sklearn_memad.pipelines import make_detector_pipeline

FAST = dict(backbone="resnet18", weights=None, random_state=0)


@pytest.mark.parametrize(
    "size, tile, overlap", [((128, 128), 64, 16), ((96, 160), 32, 8), ((64, 64), 64, 0)]
)
def test_the_tiles_own_every_cell_once_and_cover_the_image(size, tile, overlap):
    layout = tile_layout(size, tile, overlap, stride=8)
    assert layout.grid == (size[0] // 8, size[1] // 8)
    for axis, cells in ((layout.rows, layout.grid[0]), (layout.cols, layout.grid[1])):
        owned = np.concatenate([np.arange(cells)[own] for own in axis.own])
        np.testing.assert_array_equal(owned, np.arange(cells))
        assert axis.starts[0] == 0 and axis.starts[-1] == cells - tile // 8
        for start, own, local in zip(axis.starts, axis.own, axis.local):
            assert local.start >= 0 and local.stop <= tile // 8
            assert (own.start - start, own.stop - start) == (local.start, local.stop)


def test_one_tile_the_size_of_the_image_gives_the_untiled_grid():
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    whole = FeatureTransformer(image_size=64, **FAST).fit_transform(images)
    tiled = FeatureTransformer(image_size=64, tile_size=64, **FAST).fit_transform(images)
    np.testing.assert_array_equal(tiled, whole)


def test_each_cell_comes_from_the_tile_that_owns_it():
    images = np.random.default_rng(1).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    features = FeatureTransformer(image_size=96, tile_size=64, tile_overlap=32, **FAST)
    grids = features.fit_transform(images)
    assert grids.shape[1:3] == (12, 12) and features.feature_shape_ == grids.shape[1:]
    # Tiles start at 0 and 32 px (cells 0 and 4); the boundary is the overlap's middle, cell 6.
    single = FeatureTransformer(image_size=64, **FAST).fit(images)
    top_left = single.transform(images[:, :64, :64])
    bottom_right = single.transform(images[:, 32:, 32:])
    np.testing.assert_allclose(grids[:, :6, :6], top_left[:, :6, :6], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grids[:, 6:, 6:], bottom_right[:, 2:, 2:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["patchcore", "padim", "dfkde"])
def test_tiled_pipelines_give_full_resolution_maps_that_find_the_defects(method):
    # Real (offline ImageNet) features: random ones do not find defects reliably.
    data = make_texture_anomalies(
        "brick", n_train=12, n_test_normal=1, n_test_per_defect=1, image_size=128
    )
    pipe = make_detector_pipeline(
        method, image_size=128, tile_size=64, tile_overlap=16, n_components=16, random_state=0
    ).fit(data.X_train)
    maps = anomaly_maps(pipe, data.X_test)
    assert maps.shape == data.X_test.shape[:3]
    assert pipe[-1].grid_shape_ == (16, 16)  # the stitched grid: every tile position modelled
    assert pixel_auroc(data.masks_test, maps) > 0.75


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(image_size=100, tile_size=64), "multiples of the backbone's stride"),
        (dict(image_size=128, tile_size=64, tile_overlap=12), "tile_overlap must be a multiple"),
        (dict(image_size=128, tile_size=64, tile_overlap=64), r"in \[0, tile_size=64\)"),
        (dict(image_size=64, tile_size=128), "larger than the images"),
    ],
)
def test_tiling_mistakes_are_named(params, message):
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        FeatureTransformer(**params, **FAST).fit(images)


def test_memad_fit_and_score_in_tiles(tmp_path, capsys):
    data = make_texture_anomalies(
        "brick", n_train=8, n_test_normal=1, n_test_per_defect=1, image_size=96
    )
    category = save_mvtec_layout(data, tmp_path / "brick")
    model = tmp_path / "m.safetensors"
    argv = ["fit", "--train", str(category), "--out", str(model), "--backbone", "resnet18"]
    argv += ["--weights", "none", "--image-size", "96", "--tile", "64", "--overlap", "16"]
    assert cli.main(argv + ["-q"]) == 0
    assert "grid 12 x 12" in capsys.readouterr().out
    assert load_model(model)[0].get_params()["tile_size"] == 64
    out = tmp_path / "scores"
    assert (
        cli.main(
            ["score", "--model", str(model), str(category / "test"), "--out", str(out)] + ["-q"]
        )
        == 0
    )
    assert len(list(out.rglob("*.png"))) == len(data.X_test)


def test_a_tiled_pipeline_is_not_exported_silently(tmp_path):
    pytest.importorskip("onnx")
    from sklearn_memad.export import to_onnx

    images = np.random.default_rng(0).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    pipe = make_detector_pipeline("padim", image_size=64, tile_size=32, **FAST).fit(images)
    with pytest.raises(ValueError, match="tile_size set cannot be exported"):
        to_onnx(pipe, tmp_path / "x.onnx")
