"""LocalAggregation and RandomProjection on grids and on 2-D input."""

import numpy as np
import pytest

from sklearn_memad import LocalAggregation, RandomProjection


def _grids(n=3, h=5, w=4, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, d)).astype(np.float32)


def test_local_aggregation_is_neighbourhood_mean_without_border_shrink():
    X = _grids()
    out = LocalAggregation(size=3).fit_transform(X)
    assert out.shape == X.shape and out.dtype == np.float32
    # Interior: the full 3x3 mean. Corner: the mean of the 2x2 neighbours that exist.
    np.testing.assert_allclose(out[1, 2, 1], X[1, 1:4, 0:3].mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(out[0, 0, 0], X[0, 0:2, 0:2].mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(out[2, 4, 2], X[2, 3:5, 1:4].mean(axis=(0, 1)), rtol=1e-5)
    # A constant grid stays constant everywhere, borders included.
    const = np.full((1, 5, 5, 2), 3.0, dtype=np.float32)
    np.testing.assert_allclose(LocalAggregation(size=5).fit_transform(const), 3.0)


def test_local_aggregation_size_one_is_identity_and_even_size_refused():
    X = _grids()
    np.testing.assert_array_equal(LocalAggregation(size=1).fit_transform(X), X)
    with pytest.raises(ValueError, match="size must be an odd integer"):
        LocalAggregation(size=2).fit(X)


def test_local_aggregation_2d_round_trip():
    X = np.random.default_rng(0).normal(size=(7, 3))
    out = LocalAggregation().fit_transform(X)
    assert out.shape == (7, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, X, rtol=1e-6)


def test_local_aggregation_in_place_overwrites_a_writable_input_and_spares_the_rest():
    X = np.random.default_rng(3).normal(size=(7, 5, 6, 4)).astype(np.float32)
    expected = LocalAggregation(size=3).fit_transform(X.copy())
    # copy=True (the default) leaves the input as it was.
    before = X.copy()
    LocalAggregation(size=3).fit_transform(X)
    np.testing.assert_array_equal(X, before)
    # copy=False writes the result over a writable float32 input, chunk by chunk.
    out = LocalAggregation(size=3, copy=False).fit_transform(X)
    assert out is X
    np.testing.assert_array_equal(out, expected)
    # A read-only input, or one that check_grids must convert, is never written to.
    frozen = before.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(
        LocalAggregation(size=3, copy=False).fit_transform(frozen), expected
    )
    np.testing.assert_array_equal(frozen, before)
    as_float64 = before.astype(np.float64)
    aggregated = LocalAggregation(size=3, copy=False).fit(before).transform(as_float64)
    np.testing.assert_allclose(aggregated, expected, rtol=1e-6)
    np.testing.assert_array_equal(as_float64, before.astype(np.float64))


def test_local_aggregation_chunks_give_the_same_grids(monkeypatch):
    """Images are aggregated a few at a time; the chunk size must not change a number."""
    import sklearn_memad.transformers._aggregation as aggregation

    X = np.random.default_rng(4).normal(size=(9, 6, 5, 3)).astype(np.float32)
    whole = LocalAggregation(size=5).fit_transform(X)
    monkeypatch.setattr(aggregation, "_CHUNK_BYTES", 2 * 6 * 5 * 3 * 4)  # two images a chunk
    np.testing.assert_array_equal(LocalAggregation(size=5).fit_transform(X), whole)


@pytest.mark.parametrize("method", ["gaussian", "sparse", "channels"])
def test_random_projection_shapes_and_reproducibility(method):
    X = _grids(d=40)
    a = RandomProjection(n_components=10, method=method, random_state=3).fit(X)
    b = RandomProjection(n_components=10, method=method, random_state=3).fit(X)
    out = a.transform(X)
    assert out.shape == (3, 5, 4, 10) and out.dtype == np.float32
    np.testing.assert_array_equal(out, b.transform(X))
    flat = a.transform(X.reshape(-1, 40))
    assert flat.shape == (60, 10)
    np.testing.assert_allclose(flat, out.reshape(-1, 10), rtol=1e-6)


@pytest.mark.parametrize("method", ["gaussian", "sparse"])
def test_random_projection_applies_scikit_learns_matrix(method):
    """The product runs in torch, in blocks of rows; the matrix is scikit-learn's, and the
    float64 product rounded to float32 equals its own transform, also across blocks."""
    X = _grids(n=2, h=80, w=80, d=50, seed=2)  # 12,800 rows: two blocks of 10,485
    proj = RandomProjection(n_components=7, method=method, random_state=1).fit(X)
    expected = proj.projection_.transform(X.reshape(-1, 50).astype(np.float64))
    np.testing.assert_allclose(
        proj.transform(X).reshape(-1, 7), expected.astype(np.float32), rtol=1e-6, atol=1e-6
    )


def test_random_projection_channels_picks_sorted_input_channels():
    X = _grids(d=12)
    proj = RandomProjection(n_components=5, method="channels", random_state=0).fit(X)
    assert np.all(np.diff(proj.channels_) > 0) and len(set(proj.channels_)) == 5
    np.testing.assert_array_equal(proj.transform(X), X[..., proj.channels_])


def test_random_projection_gaussian_keeps_distances_roughly():
    X = _grids(n=50, h=1, w=1, d=512, seed=1).reshape(50, 512)
    Y = RandomProjection(n_components=256, random_state=0).fit_transform(X)
    dx = np.linalg.norm(X[:25] - X[25:], axis=1)
    dy = np.linalg.norm(Y[:25] - Y[25:], axis=1)
    assert np.all(np.abs(dy / dx - 1) < 0.25)


def test_random_projection_too_many_channels():
    with pytest.raises(ValueError, match="n_components=20 channels cannot be picked.*d=6"):
        RandomProjection(n_components=20, method="channels").fit(_grids())


@pytest.mark.parametrize("transformer", [LocalAggregation(), RandomProjection(n_components=2)])
def test_transformers_refuse_other_feature_count(transformer):
    transformer.fit(_grids(d=6))
    with pytest.raises(ValueError, match="X has 5 features"):
        transformer.transform(_grids(d=5))
