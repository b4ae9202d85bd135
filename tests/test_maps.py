"""Pixel maps: bilinear upsampling then Gaussian smoothing, as one pair of matrix products."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from sklearn_memad.maps import patch_to_pixel_maps


def _reference(patch_maps, size, sigma):
    up = torch.nn.functional.interpolate(
        torch.from_numpy(patch_maps)[:, None], size=size, mode="bilinear", align_corners=False
    )[:, 0].numpy()
    if sigma == 0:
        return up
    return gaussian_filter(up, sigma=(0, sigma, sigma), mode="reflect", truncate=4.0)


@pytest.mark.parametrize(
    "shape, size, sigma",
    [
        ((4, 32, 32), (256, 256), 4.0),
        ((3, 7, 5), (60, 41), 2.5),  # not square, not a multiple of the grid
        ((2, 4, 4), (9, 7), 4.0),  # the kernel is wider than the map: mirrored again
        ((2, 3, 5), (30, 50), 0.0),  # no smoothing
        ((1, 1, 1), (5, 5), 1.0),
    ],
)
def test_equals_interpolate_then_scipy_gaussian_filter(shape, size, sigma):
    patch_maps = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    maps = patch_to_pixel_maps(patch_maps, size, sigma)
    assert maps.shape == shape[:1] + size and maps.dtype == np.float32
    np.testing.assert_allclose(maps, _reference(patch_maps, size, sigma), rtol=0, atol=2e-6)


def test_constant_map_stays_constant():
    maps = patch_to_pixel_maps(np.full((2, 6, 6), 3.5), (48, 48), sigma=4.0)
    np.testing.assert_allclose(maps, 3.5, rtol=1e-6)


def test_cached_operators_follow_shape_and_sigma():
    """The operators are built once per (shapes, sigma): a call with other arguments must
    not get a stale operator, and a repeated call gives the same maps."""
    patch_maps = np.random.default_rng(1).normal(size=(3, 7, 5)).astype(np.float32)
    for size, sigma in [((28, 20), 2.0), ((28, 20), 0.0), ((21, 30), 2.0), ((28, 20), 2.0)]:
        maps = patch_to_pixel_maps(patch_maps, size, sigma)
        np.testing.assert_allclose(maps, _reference(patch_maps, size, sigma), rtol=0, atol=2e-6)
