"""Pictures with Pillow alone: heat overlays, side-by-side panels, explanations, PNG files.

Public through :mod:`sklearn_memad.display`; the command line and the demo use it, so drawing
a PNG never needs matplotlib.
"""

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_erosion

__all__ = [
    "compose_explanation",
    "compose_panels",
    "overlay_image",
    "score_caption",
    "write_overlay",
]

# Jet-like colours (blue -> cyan -> yellow -> red): warm colours stand out on the grey,
# brown and green surfaces of industrial images.
ANCHORS = np.array([0.0, 0.35, 0.6, 1.0])
COLOURS = np.array([[0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0]], dtype=float)
# Colour fades in over the lowest part of the scale, so normal texture stays visible.
FADE = 0.3
MASK_COLOUR = (0, 255, 0)
NORMAL_COLOUR = (20, 120, 20)
ANOMALY_COLOUR = (200, 0, 0)


def as_rgb_uint8(image):
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return image


def normalise(anomaly_map, vmin, vmax):
    return np.clip((np.asarray(anomaly_map, dtype=np.float32) - vmin) / (vmax - vmin), 0, 1)


def _colour(norm):
    channels = [np.interp(norm, ANCHORS, COLOURS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1)


def overlay_image(image, anomaly_map, *, vmin=None, vmax=None, alpha=0.75):
    """Blend a heat map of ``anomaly_map`` onto ``image``.

    Parameters
    ----------
    image : array-like of shape (H, W, 3) or (H, W)
        uint8, or float in [0, 1].
    anomaly_map : array-like of shape (H, W)
        Higher = more abnormal.
    vmin, vmax : float, default=None
        Values mapped to the bottom and top of the colour scale (default: the map's range).
        Below ``vmin`` the image shows through untouched.
    alpha : float, default=0.75
        Opacity of the colours at the top of the scale.

    Returns
    -------
    overlay : ndarray of shape (H, W, 3), uint8
    """
    image = as_rgb_uint8(image)
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if anomaly_map.shape != image.shape[:2]:
        raise ValueError(
            f"anomaly_map must have the image's (H, W) {image.shape[:2]}; got {anomaly_map.shape}."
        )
    vmin = float(anomaly_map.min()) if vmin is None else float(vmin)
    vmax = float(anomaly_map.max()) if vmax is None else float(vmax)
    vmax = vmax if vmax > vmin else vmin + 1e-6
    norm = normalise(anomaly_map, vmin, vmax)
    weight = (alpha * np.clip(norm / FADE, 0, 1))[..., None]
    blended = image * (1 - weight) + _colour(norm) * weight
    return np.rint(blended).astype(np.uint8)


def _outline(mask):
    mask = np.asarray(mask, dtype=bool)
    return mask & ~binary_erosion(mask, iterations=1, border_value=0)


def _display_scale(height, width, min_side, max_side):
    scale = max(1.0, min_side / min(height, width))
    return min(scale, max_side / max(height, width))


def _resize_rgb(image, size):
    if image.shape[:2] == (size[1], size[0]):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _resize_map(anomaly_map, size):
    if anomaly_map.shape == (size[1], size[0]):
        return anomaly_map
    as_float = Image.fromarray(np.asarray(anomaly_map, dtype=np.float32), mode="F")
    return np.asarray(as_float.resize(size, Image.Resampling.BILINEAR))


def _resize_mask(mask, size):
    if mask.shape == (size[1], size[0]):
        return mask
    as_bytes = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    return np.asarray(as_bytes.resize(size, Image.Resampling.NEAREST)) > 0


@lru_cache(maxsize=32)
def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: a fixed bitmap font
        return ImageFont.load_default()


def compose_panels(image, panels, *, mask=None, title=None, min_side=256, max_side=1024):
    """Side by side: the image, then one heat overlay per panel, with captions and a title.

    Parameters
    ----------
    image : array-like of shape (H, W, 3) or (H, W)
    panels : list of dict
        Each with ``map`` (H, W) and optionally ``vmin``, ``vmax``, ``caption`` (str) and
        ``anomaly`` (bool, colours the caption red, else green; None leaves it black).
    mask : array-like of shape (H, W), default=None
        Ground-truth defect mask, outlined in green on every panel.
    title : str, default=None
        A line above the panels.
    min_side, max_side : int
        Panels are scaled so their shorter side is at least ``min_side`` and their longer
        side at most ``max_side`` pixels.

    Returns
    -------
    picture : PIL.Image.Image
    """
    image = as_rgb_uint8(image)
    height, width = image.shape[:2]
    scale = _display_scale(height, width, min_side, max_side)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shown = _resize_rgb(image, size)
    outline = _outline(_resize_mask(mask, size)) if mask is not None else None

    has_defect = mask is not None and bool(np.any(mask))
    tiles = [(shown, "input, defect outlined" if has_defect else "input", None)]
    ranges = [None]
    for panel in panels:
        resized = _resize_map(panel["map"], size)
        vmin = float(resized.min()) if panel.get("vmin") is None else float(panel["vmin"])
        vmax = float(resized.max()) if panel.get("vmax") is None else float(panel["vmax"])
        heat = overlay_image(shown, resized, vmin=vmin, vmax=vmax)
        tiles.append((heat, panel.get("caption", ""), panel.get("anomaly")))
        ranges.append((vmin, vmax))

    font_size = max(11, min(18, size[1] // 16))
    line = font_size + 6
    gap = 6
    top = line if title else 0
    bar = max(6, font_size // 2)
    canvas = Image.new(
        "RGB",
        (
            len(tiles) * size[0] + (len(tiles) + 1) * gap,
            top + size[1] + 2 * line + bar + 2 * gap,
        ),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    if title:
        title_font = _fitting_font(draw, title, canvas.width - 2 * gap, font_size)
        draw.text((gap, gap // 2), title, fill="black", font=title_font)
    for k, (tile, caption, anomaly) in enumerate(tiles):
        if outline is not None:
            tile = tile.copy()
            tile[outline] = MASK_COLOUR
        x = gap + k * (size[0] + gap)
        canvas.paste(Image.fromarray(tile), (x, top + gap))
        colour = "black" if anomaly is None else (ANOMALY_COLOUR if anomaly else NORMAL_COLOUR)
        caption_font = _fitting_font(draw, caption, size[0], font_size)
        draw.text((x, top + gap + size[1] + 3), caption, fill=colour, font=caption_font)
        if ranges[k] is not None:
            _colour_bar(canvas, draw, (x, top + gap + size[1] + line), size[0], bar, ranges[k])
    return canvas


def _colour_bar(canvas, draw, origin, width, height, value_range):
    """The overlay's colour scale under its tile, with the values at both ends and the
    middle (where the image threshold sits for the ranges of ``anomaly_map_range``)."""
    x, y = origin
    ramp = _colour(np.linspace(0.0, 1.0, width)).astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(ramp[None], height, axis=0)), (x, y))
    low, high = value_range
    font = _font(max(8, height + 2))
    texts = [f"{low:.3g}", f"{(low + high) / 2:.3g}", f"{high:.3g}"]
    lengths = [draw.textlength(text, font=font) for text in texts]
    places = [x, x + (width - lengths[1]) / 2, x + width - lengths[2]]
    for text, place in zip(texts, places):
        draw.text((place, y + height + 1), text, fill="black", font=font)


def _boxed(image, box, colour, size):
    """``image`` resized to ``size`` (width, height) with ``box`` (fractions) drawn on it."""
    shown = Image.fromarray(as_rgb_uint8(image)).resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(shown)
    top, left, bottom, right = box
    width = max(2, size[0] // 128)
    draw.rectangle(
        [left * size[0], top * size[1], right * size[0] - 1, bottom * size[1] - 1],
        outline=colour,
        width=width,
    )
    return shown


def compose_explanation(
    image, box, train_image, train_box, *, captions=("", ""), title=None, side=320
):
    """Side by side: an image with its anomalous patch boxed, and the training image with
    the normal patch it was matched with (:func:`~sklearn_memad.explain.nearest_normal`).

    Parameters
    ----------
    image : array-like of shape (H, W, 3) or (H, W)
        The inspected image.
    box : sequence of 4 floats
        The patch: (top, left, bottom, right) as fractions of the image.
    train_image : array-like of shape (H', W', 3) or (H', W'), or None
        The matched training image; None draws a grey tile (its file is missing).
    train_box : sequence of 4 floats
        The matched patch, as fractions of the training image.
    captions : (str, str), default=("", "")
        Under each picture.
    title : str, default=None
        A line above both.
    side : int, default=320
        Longer side of each picture, in pixels.

    Returns
    -------
    picture : PIL.Image.Image

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_memad.display import compose_explanation
    >>> image = np.zeros((64, 96, 3), dtype=np.uint8)
    >>> picture = compose_explanation(image, (0.25, 0.5, 0.5, 0.75), image, (0, 0, 0.25, 0.25))
    >>> picture.size
    (658, 246)
    """
    image = as_rgb_uint8(image)
    height, width = image.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    left = _boxed(image, box, ANOMALY_COLOUR, size)
    if train_image is None:
        right = Image.new("RGB", size, (200, 200, 200))
    else:
        right = _boxed(train_image, train_box, NORMAL_COLOUR, size)
    font_size = max(11, min(16, size[1] // 14))
    line, gap = font_size + 6, 6
    top = line if title else 0
    canvas = Image.new("RGB", (2 * size[0] + 3 * gap, top + size[1] + line + 2 * gap), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text(
            (gap, gap // 2),
            title,
            fill="black",
            font=_fitting_font(draw, title, canvas.width - 2 * gap, font_size),
        )
    for k, (tile, caption, colour) in enumerate(
        [(left, captions[0], ANOMALY_COLOUR), (right, captions[1], NORMAL_COLOUR)]
    ):
        x = gap + k * (size[0] + gap)
        canvas.paste(tile, (x, top + gap))
        font = _fitting_font(draw, caption, size[0], font_size)
        draw.text((x, top + gap + size[1] + 3), caption, fill=colour, font=font)
    return canvas


def score_caption(score, threshold, name=None):
    """E.g. ``"PatchCore 60.4 > 52.1 ANOMALY"``: the image score against the threshold."""
    parts = [name] if name else []
    if score is not None:
        parts.append(f"{score:.4g}" if name else f"score {score:.4g}")
        if threshold is not None:
            anomalous = score > threshold
            parts.append(f"{'>' if anomalous else '<='} {threshold:.4g}")
            parts.append("ANOMALY" if anomalous else "normal")
    return " ".join(parts)


def _fitting_font(draw, text, width, size):
    """The largest font, from ``size`` down, in which ``text`` fits ``width`` pixels."""
    for candidate in range(size, 7, -1):
        font = _font(candidate)
        if draw.textlength(text, font=font) <= width:
            return font
    return _font(8)


def write_overlay(
    path,
    image,
    anomaly_map,
    *,
    score=None,
    threshold=None,
    vmin=None,
    vmax=None,
    mask=None,
    title=None,
    name=None,
):
    """Write a PNG: the image, and beside it the image with its anomaly map overlaid.

    Needs only Pillow. The caption gives the image anomaly score, the threshold and the
    verdict (``ANOMALY`` when ``score > threshold``).

    Parameters
    ----------
    path : str or path-like
        The PNG file (its folder must exist).
    image : array-like of shape (H, W, 3) or (H, W)
        uint8, or float in [0, 1].
    anomaly_map : array-like of shape (H, W)
        Pixel anomaly map, higher = more abnormal.
    score : float, default=None
        Image anomaly score (``-score_samples``).
    threshold : float, default=None
        Image threshold (``-offset_``).
    vmin, vmax : float, default=None
        Colour range (see :func:`anomaly_map_range`); default: the map's own range.
    mask : array-like of shape (H, W), default=None
        Ground-truth defect mask, outlined in green.
    title : str, default=None
        A line above the picture, e.g. the file name.
    name : str, default=None
        Prefix of the caption, e.g. the detector's name.

    Returns
    -------
    path : pathlib.Path

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from sklearn_memad.display import write_overlay
    >>> image = np.full((64, 64), 0.5)
    >>> amap = np.zeros((64, 64)); amap[20:30, 40:50] = 1.0
    >>> folder = tempfile.mkdtemp()
    >>> path = write_overlay(os.path.join(folder, "x.png"), image, amap, score=1.0,
    ...                      threshold=0.5)
    >>> path.name
    'x.png'
    """
    anomaly = None if score is None or threshold is None else bool(score > threshold)
    panel = {
        "map": anomaly_map,
        "vmin": vmin,
        "vmax": vmax,
        "caption": score_caption(score, threshold, name),
        "anomaly": anomaly,
    }
    picture = compose_panels(image, [panel], mask=mask, title=title)
    path = Path(os.fspath(path))
    picture.save(path, format="PNG")
    return path
