import numpy as np
import pytest
import torch

from sklearn_memad.detectors._banded import (
    BAND,
    BandedProduct,
    band_layout,
    pack_banded,
    unpack_banded,
)


def _lower(m, d, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.tril(rng.standard_normal((m, d, d)))).float()


@pytest.mark.parametrize("d", [1, 2, 3, BAND - 1, BAND, BAND + 1, 2 * BAND + 1, 70, 100])
def test_layout_covers_the_triangle_once(d):
    bands = band_layout(d)
    assert bands[0].a == 0 and bands[-1].b == d
    assert all(earlier.b == later.a for earlier, later in zip(bands, bands[1:]))
    assert all(0 < band.b - band.a <= BAND for band in bands)
    stored = torch.zeros(d * (d + 1) // 2, dtype=torch.int64)
    for band in bands:
        width = band.b - band.a
        assert band.dense.stop - band.dense.start == width * band.a
        stored[band.dense] += 1
        window = torch.zeros(band.shape, dtype=torch.int64)
        mask = torch.ones(width, width, dtype=torch.int64).tril()
        window[band.rows, band.cols] += mask.T if band.transposed else mask
        stored[band.rectangle] += window.reshape(-1)
    # Every stored number belongs to exactly one entry of the triangle.
    assert torch.equal(stored, torch.ones_like(stored))


@pytest.mark.parametrize("d", [2, 3, 64, 65, 100, 129])
def test_bands_come_in_pairs_of_nearly_equal_width(d):
    widths = [band.b - band.a for band in band_layout(d)]
    assert len(widths) % 2 == 0
    assert all(0 <= first - second <= 1 for first, second in zip(widths[::2], widths[1::2]))


@pytest.mark.parametrize("d", [1, 5, BAND, BAND + 3, 100])
def test_pack_then_unpack_gives_the_factor_back(d):
    factor = _lower(4, d)
    packed = pack_banded(factor)
    assert packed.shape == (4, d * (d + 1) // 2)
    # Every stored number is one of the triangle's: the packing is a permutation of them.
    rows, cols = torch.tril_indices(d, d)
    np.testing.assert_array_equal(
        np.sort(packed.numpy(), axis=1), np.sort(factor[:, rows, cols].numpy(), axis=1)
    )
    np.testing.assert_array_equal(unpack_banded(packed, d).numpy(), factor.numpy())


@pytest.mark.parametrize("d, n", [(1, 3), (7, 1), (BAND + 1, 4), (100, 16)])
def test_banded_squared_norms_equal_the_dense_product(d, n):
    factor = _lower(6, d, seed=1)
    centred = torch.randn(6, d, n, generator=torch.Generator().manual_seed(2))
    expected = (factor.double() @ centred.double()).square().sum(dim=1)
    got = BandedProduct(d, 6).sq_norms(pack_banded(factor), centred, torch.empty(6, n))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5)


def test_reused_buffers_give_the_same_norms_on_a_smaller_block():
    """A block shorter than the buffers (the last block of positions) reads only its rows."""
    d, n = 40, 3
    product = BandedProduct(d, rows=8)
    factors = _lower(8, d, seed=3)
    centred = torch.randn(8, d, n, generator=torch.Generator().manual_seed(4))
    packed = pack_banded(factors)
    full = product.sq_norms(packed, centred, torch.empty(8, n)).clone()
    part = product.sq_norms(packed[:3], centred[:3].contiguous(), torch.empty(3, n))
    np.testing.assert_allclose(part.numpy(), full[:3].numpy(), rtol=1e-6)


def test_a_permuted_view_of_the_residuals_gives_the_same_norms():
    """PaDiM passes its (n, m, d) residuals permuted to (m, d, n), without a copy."""
    d, n, m = 70, 5, 9
    factors = _lower(m, d, seed=5)
    residuals = torch.randn(n, m, d, generator=torch.Generator().manual_seed(6))
    product = BandedProduct(d, m)
    packed = pack_banded(factors)
    viewed = product.sq_norms(packed, residuals.permute(1, 2, 0), torch.empty(m, n)).clone()
    copied = product.sq_norms(packed, residuals.permute(1, 2, 0).contiguous(), torch.empty(m, n))
    np.testing.assert_allclose(viewed.numpy(), copied.numpy(), rtol=1e-6)
