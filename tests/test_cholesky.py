import numpy as np
import pytest
import torch

from sklearn_memad.detectors._cholesky import inverse_cholesky


def _spd(batch, d, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 2 * d, d)) * np.linspace(0.01, 3.0, d)
    cov = np.einsum("bni,bnj->bij", x, x) / (2 * d) + 1e-3 * np.eye(d)
    return torch.from_numpy(cov)


@pytest.mark.parametrize("d", [1, 2, 31, 32, 33, 67, 100, 130])
def test_inverse_cholesky_whitens_and_is_lower_triangular(d):
    cov = _spd(5, d)
    w = inverse_cholesky(cov)
    assert w.shape == cov.shape and w.dtype == cov.dtype
    np.testing.assert_array_equal(torch.triu(w, diagonal=1).numpy(), 0.0)
    whitened = w @ cov @ w.mT
    identity = np.broadcast_to(np.eye(d), whitened.shape)
    np.testing.assert_allclose(whitened.numpy(), identity, atol=1e-8)


def test_inverse_cholesky_equals_the_inverse_of_lapacks_factor():
    cov = _spd(7, 100, seed=1)
    reference = torch.linalg.inv(torch.linalg.cholesky(cov))
    tolerance = 1e-9 * reference.abs().max().item()
    np.testing.assert_allclose(inverse_cholesky(cov).numpy(), reference.numpy(), atol=tolerance)


def test_inverse_cholesky_rejects_a_matrix_that_is_not_positive_definite():
    cov = _spd(3, 40)
    cov[1, 35, 35] = -1.0  # in the second half: the Schur complement's factorisation fails
    with pytest.raises(torch.linalg.LinAlgError):
        inverse_cholesky(cov)


def test_inverse_cholesky_float32_corner_matches_the_float64_factor_to_float32_rounding():
    cov = _spd(6, 100, seed=2)
    full = inverse_cholesky(cov)
    cornered = inverse_cholesky(cov, corner_dtype=torch.float32)
    assert cornered.dtype == torch.float64
    k = 50
    # Every block but the outermost lower-left one is computed exactly as before.
    np.testing.assert_array_equal(cornered[:, :k].numpy(), full[:, :k].numpy())
    np.testing.assert_array_equal(cornered[:, k:, k:].numpy(), full[:, k:, k:].numpy())
    corner, reference = cornered[:, k:, :k].numpy(), full[:, k:, :k].numpy()
    assert not np.array_equal(corner, reference)  # the float32 product did run
    tolerance = 1e-5 * np.abs(reference).max()
    np.testing.assert_allclose(corner, reference, atol=tolerance)
