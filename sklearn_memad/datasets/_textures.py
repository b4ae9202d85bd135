"""Texture photographs with pasted defects: a small, offline, deterministic anomaly data set.

The photographs are scikit-image's CC0 textures (``skimage.data.brick``, ``grass``,
``gravel``: 512 x 512 greyscale, licensed under Creative Commons CC0 by their authors, see
their docstrings). Each is cut into crops; training and test crops come from different
quadrants of the photograph, so a normal test crop is new texture, never a copy of a training
crop. Defects are drawn on the test crops with their exact masks:

- ``scratch``: a thin curved line, bright or dark, anti-aliased;
- ``stain``: an irregular blob tinted a colour (rust, oil, paint), the texture still showing;
- ``foreign``: an irregular patch of another texture, brightness matched to its surroundings.
"""

import os
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.utils import Bunch, check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from ._layout import GOOD, MASK_FOLDER, TEST, TRAIN, mask_file

__all__ = ["DEFECTS", "TEXTURES", "make_texture_anomalies", "save_mvtec_layout"]

TEXTURES = ("brick", "grass", "gravel")
DEFECTS = ("scratch", "stain", "foreign")

# Defects are drawn on crops of this many photograph pixels, then resized to image_size.
_CROP = 128
_QUADRANT = 256
# Which texture supplies the "foreign" patches of each texture.
_FOREIGN = {"brick": "gravel", "grass": "brick", "gravel": "grass"}
_STAIN_COLOURS = np.array(
    [[0.62, 0.30, 0.10], [0.18, 0.16, 0.14], [0.85, 0.82, 0.70]], dtype=np.float32
)  # rust, oil, paint


def _load_texture(name):
    """The 512 x 512 photograph as float32 in [0, 1]."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError(
            "The demo data uses scikit-image's CC0 texture photographs; install them with "
            "pip install 'sklearn_memad[demo]' (or pip install scikit-image)."
        ) from exc
    return getattr(data, name)().astype(np.float32) / np.float32(255.0)


def _crops(photo, quadrants, n, rng):
    """``n`` random ``_CROP`` crops of ``photo`` lying inside the given quadrants."""
    quadrant = rng.randint(len(quadrants), size=n)
    offsets = rng.randint(_QUADRANT - _CROP + 1, size=(n, 2))
    corners = np.asarray(quadrants)[quadrant] * _QUADRANT + offsets
    rows = corners[:, :1, None] + np.arange(_CROP)[None, :, None]
    cols = corners[:, None, 1:] + np.arange(_CROP)[None, None, :]
    return photo[rows, cols]


def _grid():
    yy, xx = np.mgrid[0:_CROP, 0:_CROP].astype(np.float32)
    return yy, xx


def _blob_alpha(rng, radius):
    """Soft alpha of an irregular, elongated blob placed fully inside the crop."""
    yy, xx = _grid()
    margin = 1.6 * radius + 2
    cy, cx = rng.uniform(margin, _CROP - margin, size=2)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(1.0, 1.6)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / aspect
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    theta, r = np.arctan2(v, u), np.hypot(u, v)
    # A few random harmonics make the outline irregular, as real stains and chips are.
    harmonics = np.arange(2, 6)[:, None, None]
    amp = rng.uniform(0.04, 0.16, size=(4, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(4, 1, 1))
    boundary = radius * (1 + (amp * np.cos(harmonics * theta + phase)).sum(axis=0))
    return np.clip(boundary - r + 0.5, 0, 1).astype(np.float32)


def _scratch_alpha(rng, length, width):
    """Anti-aliased alpha of a curved line (quadratic Bezier) inside the crop."""
    yy, xx = _grid()
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    margin = length / 2 + 4
    centre = rng.uniform(margin, _CROP - margin, size=2)
    start, end = centre - direction * length / 2, centre + direction * length / 2
    bend = np.array([-direction[1], direction[0]]) * rng.uniform(-0.3, 0.3) * length
    t = np.linspace(0, 1, 25)[:, None]
    curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * (centre + bend) + t**2 * end
    a, b = curve[:-1], curve[1:]  # (s, 2) segment ends
    pixels = np.stack([yy.ravel(), xx.ravel()], axis=1)  # (p, 2)
    ab = b - a
    along = ((pixels[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1)
    nearest = a + np.clip(along, 0, 1)[..., None] * ab  # (p, s, 2)
    dist = np.sqrt(((pixels[:, None] - nearest) ** 2).sum(-1)).min(axis=1)
    return np.clip(width / 2 + 0.5 - dist, 0, 1).reshape(_CROP, _CROP).astype(np.float32)


def _draw_scratch(crop, rng, foreign):
    alpha = _scratch_alpha(rng, rng.uniform(35, 70), rng.uniform(1.5, 3.0))
    tone = np.float32(0.95 if rng.rand() < 0.5 else 0.05)
    return crop + alpha[..., None] * (tone - crop), alpha


def _draw_stain(crop, rng, foreign):
    alpha = _blob_alpha(rng, rng.uniform(7, 13)) * np.float32(0.8)
    colour = _STAIN_COLOURS[rng.randint(len(_STAIN_COLOURS))]
    # Tint the texture rather than cover it: the stain keeps the texture's shading.
    tinted = np.clip(0.35 * crop + 0.65 * colour * (0.6 + 0.8 * crop), 0, 1)
    return crop + alpha[..., None] * (tinted - crop), alpha / np.float32(0.8)


def _draw_foreign(crop, rng, foreign):
    alpha = _blob_alpha(rng, rng.uniform(10, 16))
    inside = alpha > 0.5
    # Match brightness and contrast, so the defect is the texture, not a bright spot.
    patch = foreign[..., None]
    patch = (patch - patch.mean()) / (patch.std() + 1e-6)
    patch = np.clip(patch * crop[inside].std() + crop[inside].mean(), 0, 1)
    return crop + alpha[..., None] * (patch - crop), alpha


_DRAW = {"scratch": _draw_scratch, "stain": _draw_stain, "foreign": _draw_foreign}


def _resize_images(images, image_size):
    if image_size == _CROP:
        return images
    size = (image_size, image_size)
    return np.stack(
        [np.asarray(Image.fromarray(im).resize(size, Image.Resampling.BILINEAR)) for im in images]
    )


def _resize_masks(masks, image_size):
    if image_size == _CROP:
        return masks
    size = (image_size, image_size)
    # A pixel of the smaller mask is a defect when at least half of what it covers is.
    return np.stack(
        [
            np.asarray(Image.fromarray(m.view(np.uint8) * 255).resize(size, Image.Resampling.BOX))
            >= 128
            for m in masks
        ]
    )


def _to_uint8(images):
    return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)


@validate_params(
    {
        "texture": [StrOptions(set(TEXTURES))],
        "n_train": [Interval(Integral, 1, None, closed="left")],
        "n_test_normal": [Interval(Integral, 1, None, closed="left")],
        "n_test_per_defect": [Interval(Integral, 1, None, closed="left")],
        "image_size": [Interval(Integral, 16, None, closed="left")],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_texture_anomalies(
    texture="brick",
    *,
    n_train=64,
    n_test_normal=16,
    n_test_per_defect=8,
    image_size=128,
    random_state=0,
):
    """Crops of a CC0 texture photograph, with scratches, stains and foreign patches pasted in.

    Needs scikit-image (``pip install 'sklearn_memad[demo]'``), whose bundled photographs are
    used; nothing is downloaded. The same arguments give the same images.

    Parameters
    ----------
    texture : {"brick", "grass", "gravel"}, default="brick"
        The photograph (``skimage.data.<texture>()``, 512 x 512, CC0).
    n_train : int, default=64
        Number of defect-free training crops.
    n_test_normal : int, default=16
        Number of defect-free test crops.
    n_test_per_defect : int, default=8
        Number of test crops of each defect type in ``DEFECTS``.
    image_size : int, default=128
        Side of the square images. Crops are 128 x 128 photograph pixels, resized to this.
    random_state : int, RandomState instance or None, default=0
        Seed of the crop positions and the defects.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With the attributes:

        X_train : ndarray of shape (n_train, image_size, image_size, 3), uint8
            Defect-free images.
        X_test : ndarray of shape (n_test, image_size, image_size, 3), uint8
            Normal images first, then the defective ones grouped by type.
        y_test : ndarray of shape (n_test,), int
            +1 normal, -1 defective (scikit-learn outlier labels).
        masks_test : ndarray of shape (n_test, image_size, image_size), bool
            True on defect pixels.
        kinds_test : ndarray of shape (n_test,), str
            ``"good"`` or the defect type.
        texture : str
            The photograph's name.
        DESCR : str
            A short description of the set.

    Examples
    --------
    >>> from sklearn_memad.datasets import make_texture_anomalies
    >>> data = make_texture_anomalies("grass", n_train=4, n_test_normal=2,
    ...                               n_test_per_defect=1, image_size=64)
    >>> data.X_train.shape, data.X_test.shape
    ((4, 64, 64, 3), (5, 64, 64, 3))
    >>> data.kinds_test.tolist()
    ['good', 'good', 'scratch', 'stain', 'foreign']
    >>> bool(data.masks_test[data.y_test == -1].any(axis=(1, 2)).all())
    True
    """
    if isinstance(random_state, Integral):
        # Each texture gets its own defect positions for the same seed.
        random_state = (int(random_state) + 7919 * TEXTURES.index(texture)) % 2**32
    rng = check_random_state(random_state)
    photo = _load_texture(texture)
    foreign_photo = _load_texture(_FOREIGN[texture])
    # Train on two diagonal quadrants, test on the other two: both sets see every row and
    # column band of the photograph (lighting and perspective vary across it).
    train = _crops(photo, [(0, 0), (1, 1)], n_train, rng)
    test_quadrants = [(0, 1), (1, 0)]
    n_defective = n_test_per_defect * len(DEFECTS)
    test = _crops(photo, test_quadrants, n_test_normal + n_defective, rng)
    foreign = _crops(foreign_photo, [(0, 0), (0, 1), (1, 0), (1, 1)], n_defective, rng)

    test_rgb = np.repeat(test[..., None], 3, axis=-1)
    masks = np.zeros(test.shape, dtype=bool)
    kinds = [GOOD] * n_test_normal
    for j in range(n_defective):  # one defect per image; each is vectorised over pixels
        kind = DEFECTS[j // n_test_per_defect]
        i = n_test_normal + j
        test_rgb[i], alpha = _DRAW[kind](test_rgb[i], rng, foreign[j])
        masks[i] = alpha > 0.5
        kinds.append(kind)

    X_train = _resize_images(_to_uint8(np.repeat(train[..., None], 3, axis=-1)), image_size)
    X_test = _resize_images(_to_uint8(test_rgb), image_size)
    masks = _resize_masks(masks, image_size)
    kinds = np.array(kinds)
    return Bunch(
        X_train=X_train,
        X_test=X_test,
        y_test=np.where(kinds == GOOD, 1, -1),
        masks_test=masks,
        kinds_test=kinds,
        texture=texture,
        DESCR=(
            f"Crops of scikit-image's CC0 '{texture}' photograph, {image_size} x "
            f"{image_size}: {n_train} normal training images; {n_test_normal} normal and "
            f"{n_defective} defective test images ({', '.join(DEFECTS)}: "
            f"{n_test_per_defect} each)."
        ),
    )


def save_mvtec_layout(data, root):
    """Write a :func:`make_texture_anomalies` set as PNG files in the MVTec AD layout.

    ``root/train/good/``, ``root/test/<kind>/`` and ``root/ground_truth/<kind>/<stem>_mask.png``,
    which :func:`sklearn_memad.datasets.load_mvtec` and the command line read.

    Parameters
    ----------
    data : Bunch
        As returned by :func:`make_texture_anomalies`.
    root : str or path-like
        Folder to create (existing files of the same names are overwritten).

    Returns
    -------
    root : pathlib.Path
    """
    root = Path(root)
    folder = root / TRAIN / GOOD
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(data.X_train):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    for kind in np.unique(data.kinds_test):
        (root / TEST / kind).mkdir(parents=True, exist_ok=True)
        if kind != GOOD:
            (root / MASK_FOLDER / kind).mkdir(parents=True, exist_ok=True)
    counters = {}
    for image, mask, kind in zip(data.X_test, data.masks_test, data.kinds_test):
        path = root / TEST / kind / f"{counters.setdefault(kind, 0):03d}.png"
        counters[kind] += 1
        Image.fromarray(image).save(path)
        if kind != GOOD:
            mask_png = Image.fromarray(mask.view(np.uint8) * 255)
            mask_png.save(mask_file(root / MASK_FOLDER, kind, path))
    return Path(os.fspath(root))
