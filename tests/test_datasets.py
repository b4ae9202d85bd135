"""Tests for sklearn_memad.datasets.load_mvtec on a tiny synthetic folder and on MTD."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sklearn_memad.datasets import load_mvtec

MTD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtd"


def _colour(h, w, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _smooth_grey(h, w):
    # smooth, so that JPEG's loss stays small
    y, x = np.mgrid[:h, :w]
    return (40 + 3 * y + 2 * x).astype(np.uint8)


def _mask(h, w, rows, cols):
    m = np.zeros((h, w), dtype=np.uint8)
    m[rows, cols] = 255
    return m


@pytest.fixture
def tiny(tmp_path):
    """An MVTec-layout folder: mixed formats, greyscale and colour, two sizes, masks."""
    root = tmp_path / "tile"
    for sub in (
        "train/good",
        "test/good",
        "test/crack",
        "test/hole",
        "ground_truth/crack",
        "ground_truth/hole",
    ):
        (root / sub).mkdir(parents=True)
    src = {}
    # train: colour PNG and greyscale JPEG of 20 x 30, colour BMP of 24 x 36, and clutter
    src["train/good/000.png"] = _colour(20, 30, 0)
    Image.fromarray(src["train/good/000.png"]).save(root / "train/good/000.png")
    src["train/good/001.jpg"] = _smooth_grey(20, 30)
    Image.fromarray(src["train/good/001.jpg"]).save(root / "train/good/001.jpg", quality=95)
    src["train/good/002.bmp"] = _colour(24, 36, 2)
    Image.fromarray(src["train/good/002.bmp"]).save(root / "train/good/002.bmp")
    (root / "train/good/notes.txt").write_text("not an image")
    (root / "train/good/.hidden.png").write_bytes(b"junk")
    # test: all 20 x 30
    src["test/good/g0.png"] = _smooth_grey(20, 30)
    Image.fromarray(src["test/good/g0.png"]).save(root / "test/good/g0.png")
    rgba = np.dstack([_colour(20, 30, 3), np.full((20, 30), 7, np.uint8)])
    src["test/crack/c0.png"] = rgba[..., :3]
    Image.fromarray(rgba, mode="RGBA").save(root / "test/crack/c0.png")
    src["test/crack/c1.JPG"] = _smooth_grey(20, 30)
    Image.fromarray(np.dstack([src["test/crack/c1.JPG"]] * 3)).save(
        root / "test/crack/c1.JPG", format="JPEG", quality=95
    )
    src["test/hole/h0.tif"] = _colour(20, 30, 5)
    Image.fromarray(src["test/hole/h0.tif"]).save(root / "test/hole/h0.tif")
    # masks, defects on 2 x 2 blocks so that halving with nearest neighbour is unambiguous
    masks = {
        "crack/c0": _mask(20, 30, slice(4, 8), slice(6, 12)),
        "crack/c1": _mask(20, 30, slice(0, 2), slice(0, 2)),
        "hole/h0": _mask(20, 30, slice(10, 20), slice(20, 30)),
    }
    for name, m in masks.items():
        Image.fromarray(m).save(root / f"ground_truth/{name}_mask.png")
    return root, src, masks


def test_test_split_native_size(tiny):
    root, src, masks = tiny
    data = load_mvtec(root, "test")
    assert data.images.shape == (4, 20, 30, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (4, 20, 30) and data.masks.dtype == bool
    # sorted by kind, then by file name
    assert data.kinds.tolist() == ["crack", "crack", "good", "hole"]
    assert [Path(p).name for p in data.paths] == ["c0.png", "c1.JPG", "g0.png", "h0.tif"]
    assert data.paths[0] == str(root / "test" / "crack" / "c0.png")
    np.testing.assert_array_equal(data.labels, [-1, -1, 1, -1])
    assert np.issubdtype(data.labels.dtype, np.integer)
    np.testing.assert_array_equal(data.original_sizes, [[20, 30]] * 4)
    # lossless formats are exact; RGBA drops its alpha; greyscale is replicated to RGB
    np.testing.assert_array_equal(data.images[0], src["test/crack/c0.png"])
    np.testing.assert_array_equal(data.images[3], src["test/hole/h0.tif"])
    np.testing.assert_array_equal(data.images[2], np.dstack([src["test/good/g0.png"]] * 3))
    jpeg = data.images[1].astype(int)
    assert np.abs(jpeg - src["test/crack/c1.JPG"][..., None]).max() <= 4
    # masks: > 0 is a defect, good images all False
    np.testing.assert_array_equal(data.masks[0], masks["crack/c0"] > 0)
    np.testing.assert_array_equal(data.masks[1], masks["crack/c1"] > 0)
    np.testing.assert_array_equal(data.masks[3], masks["hole/h0"] > 0)
    assert not data.masks[2].any()
    assert "4 images" in data.DESCR


def test_resize_tuple_is_height_width(tiny):
    root, _, masks = tiny
    data = load_mvtec(root, "test", image_size=(10, 15))
    assert data.images.shape == (4, 10, 15, 3) and data.masks.shape == (4, 10, 15)
    np.testing.assert_array_equal(data.original_sizes, [[20, 30]] * 4)
    for i, name in ((0, "crack/c0"), (1, "crack/c1"), (3, "hole/h0")):
        np.testing.assert_array_equal(data.masks[i], (masks[name] > 0)[::2, ::2])
    assert not data.masks[2].any()
    # images: antialiased bilinear, as Pillow does it
    expected = (
        Image.open(root / "test/hole/h0.tif")
        .convert("RGB")
        .resize((15, 10), Image.Resampling.BILINEAR)
    )
    np.testing.assert_array_equal(data.images[3], np.asarray(expected))
    # upscaling works too, and an int gives square images
    big = load_mvtec(root, "test", image_size=40)
    assert big.images.shape == (4, 40, 40, 3)
    assert big.masks[0].sum() > 0 and not big.masks[2].any()


def test_train_split_mixed_sizes(tiny):
    root, src, _ = tiny
    with pytest.raises(ValueError, match=r"differ in size.*\(20, 30\).*\(24, 36\).*image_size"):
        load_mvtec(root, "train")
    data = load_mvtec(root, "train", image_size=(12, 18))
    assert data.images.shape == (3, 12, 18, 3)
    assert [Path(p).name for p in data.paths] == ["000.png", "001.jpg", "002.bmp"]
    np.testing.assert_array_equal(data.labels, [1, 1, 1])
    assert not data.masks.any() and data.kinds.tolist() == ["good"] * 3
    np.testing.assert_array_equal(data.original_sizes, [[20, 30], [20, 30], [24, 36]])
    grey = data.images[1]
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(
        grey[..., 0], grey[..., 2]
    )


def test_kinds_and_max_per_kind(tiny):
    root, _, _ = tiny
    data = load_mvtec(root, "test", kinds="crack")
    assert data.kinds.tolist() == ["crack", "crack"]
    data = load_mvtec(root, "test", kinds=["hole", "good"], max_per_kind=1)
    assert data.kinds.tolist() == ["good", "hole"]
    data = load_mvtec(root, "test", max_per_kind=1)
    assert [Path(p).name for p in data.paths] == ["c0.png", "g0.png", "h0.tif"]
    full = load_mvtec(root, "test", image_size=8)
    threaded = load_mvtec(root, "test", image_size=8, n_jobs=2)
    np.testing.assert_array_equal(full.images, threaded.images)
    np.testing.assert_array_equal(full.masks, threaded.masks)


def test_sixteen_bit_and_palette_images(tmp_path):
    root = tmp_path / "r"
    (root / "train/good").mkdir(parents=True)
    a16 = np.full((6, 8), 65535, dtype=np.uint16)
    a16[:, :4] = 257 * 10
    Image.fromarray(a16).save(root / "train/good/a.png")
    pal = Image.fromarray(np.zeros((6, 8), dtype=np.uint8), mode="L").convert("P")
    pal.save(root / "train/good/b.png")
    data = load_mvtec(root, "train")
    np.testing.assert_array_equal(data.images[0, :, :4], 10)
    np.testing.assert_array_equal(data.images[0, :, 4:], 255)
    np.testing.assert_array_equal(data.images[1], 0)


def test_errors(tiny, tmp_path):
    root, _, _ = tiny
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mvtec(tmp_path / "nowhere")
    with pytest.raises(
        FileNotFoundError, match=r"validation.*\['ground_truth', 'test', 'train'\]"
    ):
        load_mvtec(root, "validation")
    with pytest.raises(FileNotFoundError, match=r"scratch.*\['crack', 'good', 'hole'\]"):
        load_mvtec(root, "test", kinds=["crack", "scratch"])
    with pytest.raises(ValueError, match="kinds is empty"):
        load_mvtec(root, "test", kinds=[])
    for bad in (0, (10,), (10, 0), (10, 10, 3), "big", 2.5, (10.0, 10)):
        with pytest.raises(ValueError, match="image_size"):
            load_mvtec(root, "test", image_size=bad)
    with pytest.raises(ValueError, match="max_per_kind"):
        load_mvtec(root, "test", max_per_kind=0)

    (root / "test/empty").mkdir()
    with pytest.raises(ValueError, match=r"test[/\\]empty' holds no image"):
        load_mvtec(root, "test")
    (root / "test/empty").rmdir()

    (root / "ground_truth/crack/c1_mask.png").rename(root / "c1_mask.png")
    with pytest.raises(FileNotFoundError, match=r"ground_truth[/\\]crack[/\\]c1_mask\.png"):
        load_mvtec(root, "test")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "ground_truth/crack/c1_mask.png")
    with pytest.raises(
        ValueError, match=r"c1_mask\.png' has \(height, width\) \(10, 10\).*\(20, 30\)"
    ):
        load_mvtec(root, "test", image_size=8)
    (root / "c1_mask.png").replace(root / "ground_truth/crack/c1_mask.png")

    (root / "test/good/broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"Cannot read the image file '.*broken\.png'"):
        load_mvtec(root, "test", image_size=8)

    empty_root = tmp_path / "bare"
    (empty_root / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no subfolder"):
        load_mvtec(empty_root)


@pytest.mark.skipif(not MTD.is_dir(), reason=f"the MTD data set is not at {MTD}")
def test_mtd():
    train = load_mvtec(MTD, "train", image_size=(64, 64), n_jobs=2)
    assert train.images.shape == (762, 64, 64, 3)
    assert (train.labels == 1).all() and not train.masks.any()
    assert set(train.kinds) == {"good"}

    test = load_mvtec(MTD, "test", image_size=(64, 64), n_jobs=2)
    assert test.images.shape == (582, 64, 64, 3)
    defective = test.labels == -1
    assert defective.sum() == 392 and (test.labels[~defective] == 1).all()
    assert (test.kinds[~defective] == "good").all()
    assert not test.masks[~defective].any()
    # Every defective image has a non-empty mask, except where the data set's own mask is
    # (almost) empty: 4 "uneven" masks hold no defect pixel and 2 hold 1 and 3 isolated
    # pixels, which nearest-neighbour resizing to 64 x 64 does not sample.
    empty = np.flatnonzero(defective & ~test.masks.any(axis=(1, 2)))
    assert len(empty) == 6
    for i in empty:
        path = Path(test.paths[i])
        source = (
            np.asarray(
                Image.open(MTD / "ground_truth" / path.parent.name / f"{path.stem}_mask.png")
            )
            > 0
        )
        assert test.kinds[i] == "uneven" and source.sum() <= 3


def test_float_images_are_read_on_the_unit_scale_or_refused(tmp_path):
    from sklearn_memad.datasets import read_images

    grey = np.arange(6 * 8, dtype=np.float32).reshape(6, 8) / 47
    Image.fromarray(grey, mode="F").save(tmp_path / "unit.tif")
    Image.fromarray(grey * 255, mode="F").save(tmp_path / "wide.tif")
    nan = grey.copy()
    nan[0, 0] = np.nan
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    images, kept, skipped = read_images(
        [tmp_path / n for n in ("unit.tif", "wide.tif", "nan.tif")]
    )
    assert kept == [tmp_path / "unit.tif"]
    np.testing.assert_array_equal(images[0, ..., 0], np.rint(grey * 255).astype(np.uint8))
    np.testing.assert_array_equal(images[0, ..., 0], images[0, ..., 2])
    reasons = dict(skipped)
    assert "values in [0, 255]" in reasons[tmp_path / "wide.tif"]
    assert "values in [nan" in reasons[tmp_path / "nan.tif"]
    # The MVTec loader reads them the same way, and names the file it refuses.
    root = tmp_path / "r"
    (root / "train/good").mkdir(parents=True)
    (tmp_path / "unit.tif").rename(root / "train/good/a.tif")
    np.testing.assert_array_equal(load_mvtec(root, "train").images[0], images[0])
    (tmp_path / "wide.tif").rename(root / "train/good/b.tif")
    with pytest.raises(ValueError, match=r"b\.tif'.*values in \[0, 255\]"):
        load_mvtec(root, "train")


def test_pixel_limit_of_image_files(tmp_path, monkeypatch):
    from sklearn_memad.datasets import image_shape, pillow_pixel_limit, read_images, read_rgb

    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(Image.DecompressionBombError, match="40 x 30 = 1,200 pixels.*1,000"):
        read_rgb(tmp_path / "a.png", max_pixels=1000)
    assert read_rgb(tmp_path / "a.png", max_pixels=1200).size == (40, 30)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert pillow_pixel_limit() == 200
    _, kept, skipped = read_images([tmp_path / "a.png"])
    assert not kept and "decompression bomb" in skipped[0][1]
    # A limit above Pillow's lifts Pillow's guard while the file is read, and only then.
    assert read_images([tmp_path / "a.png"], max_pixels=5000)[1] == [tmp_path / "a.png"]
    assert image_shape(tmp_path / "a.png", max_pixels=5000) == (30, 40)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_find_images_lists_a_file_once(tmp_path):
    from sklearn_memad.datasets import find_images

    (tmp_path / "sub").mkdir()
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    found = find_images([tmp_path / "sub/b.png", tmp_path, tmp_path / "a.png"])
    assert found == [tmp_path / "sub/b.png", tmp_path / "a.png"]
