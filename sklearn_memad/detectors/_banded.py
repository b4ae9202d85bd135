"""Lower-triangular factors stored band by band, and their squared norms ``|W c|^2``.

A ``d x d`` lower-triangular ``W`` is cut into bands of consecutive rows, at most ``BAND``
rows each, taken in pairs of equal width (or widths differing by one). Each band's block left
of the diagonal, ``W[a:b, :a]``, is stored dense (row-major) and used as stored. The two
diagonal triangles of a pair share one rectangle of ``(w_b + 1) x w_a`` numbers: the first
band's lower triangle in its strictly lower part (shifted down one row when the widths are
equal), the second band's triangle transposed in its upper part (the rectangle-packing idea of
LAPACK's RFP format). That is ``d (d + 1) / 2`` numbers in all, as many as a packed triangle,
and each diagonal tile is unpacked by one masked product of a strided view instead of a
scatter, which is faster than packing each band's triangle row by row and scattering it into
its tile.
"""

from collections import namedtuple

import torch

__all__ = ["BAND", "LAYOUT", "BandedProduct", "band_layout", "pack_banded", "unpack_banded"]

BAND = 32
# Marks fitted factors with this layout: a factor stored in another one must not be read.
LAYOUT = f"paired bands of up to {BAND} rows"

Band = namedtuple("Band", "a b dense rectangle shape rows cols transposed")
Band.__doc__ = """Rows ``a:b`` of the factor and where they are stored.

``dense`` is the flat slice of ``W[a:b, :a]``; ``rectangle`` the flat slice of the pair's
shared rectangle, of shape ``shape``; ``rows, cols`` the window of it that holds this band's
triangle, lower (``transposed=False``) or as its transpose, upper (``transposed=True``).
"""


def _even_split(total, parts):
    q, r = divmod(total, parts)
    return [q + (i < r) for i in range(parts)]


def band_layout(d):
    """The :class:`Band` of each band of a ``d x d`` factor, in storage order."""
    bands, offset, a = [], 0, 0
    # Pairs as even as possible, so that both bands of a pair differ by at most one row.
    for size in _even_split(d, -(-d // (2 * BAND))):
        first, second = (size + 1) // 2, size // 2
        middle = a + first
        dense_first = slice(offset, offset + first * a)
        dense_second = slice(dense_first.stop, dense_first.stop + second * middle)
        rectangle = slice(dense_second.stop, dense_second.stop + (second + 1) * first)
        offset = rectangle.stop
        shape, shift = (second + 1, first), first - second
        bands.append(
            Band(
                a,
                middle,
                dense_first,
                rectangle,
                shape,
                slice(1 - shift, second + 1),
                slice(0, first),
                False,
            )
        )
        if second:
            bands.append(
                Band(
                    middle,
                    middle + second,
                    dense_second,
                    rectangle,
                    shape,
                    slice(0, second),
                    slice(shift, shift + second),
                    True,
                )
            )
        a = middle + second
    return bands


def _stored_window(packed, band):
    """``(m, w, w)`` view of the rectangle window holding ``band``'s triangle, as stored."""
    m = packed.shape[0]
    return packed[:, band.rectangle].view((m,) + band.shape)[:, band.rows, band.cols]


def pack_banded(factor):
    """``(m, d, d)`` lower-triangular tensor -> ``(m, d (d + 1) / 2)``, band by band."""
    m, d, _ = factor.shape
    packed = torch.zeros((m, d * (d + 1) // 2), dtype=factor.dtype, device=factor.device)
    for band in band_layout(d):
        a, b = band.a, band.b
        packed[:, band.dense] = factor[:, a:b, :a].reshape(m, -1)
        triangle = torch.tril(factor[:, a:b, a:b])
        # The two windows of a rectangle overlap, but their triangles do not.
        _stored_window(packed, band).add_(
            triangle.transpose(1, 2) if band.transposed else triangle
        )
    return packed


def unpack_banded(packed, d):
    """Inverse of :func:`pack_banded`: ``(m, d, d)`` with zeros above the diagonal."""
    m = packed.shape[0]
    factor = torch.zeros((m, d, d), dtype=packed.dtype, device=packed.device)
    for band in band_layout(d):
        a, b = band.a, band.b
        factor[:, a:b, :a] = packed[:, band.dense].view(m, b - a, a)
        window = _stored_window(packed, band)
        factor[:, a:b, a:b] = (
            torch.triu(window).transpose(1, 2) if band.transposed else torch.tril(window)
        )
    return factor


class BandedProduct:
    """Squared norms ``|W c|^2`` of banded factors, blocks of up to ``rows`` at a time."""

    def __init__(self, d, rows, dtype=torch.float32, device=None):
        self.bands = band_layout(d)
        self._tiles, self._masks = {}, {}
        for band in self.bands:
            width = band.b - band.a
            if width not in self._tiles:
                self._tiles[width] = torch.empty((rows, width, width), dtype=dtype, device=device)
            key = (width, band.transposed)
            if key not in self._masks:
                lower = torch.ones((width, width), dtype=dtype, device=device).tril_()
                # A transposed band is masked as stored (upper) and read transposed: masking a
                # transposed view is much slower.
                self._masks[key] = lower.T.contiguous() if band.transposed else lower

    def sq_norms(self, packed, centred, out):
        """``out[p, j] = |W_p centred[p, :, j]|^2`` for the banded ``packed`` factors.

        ``packed`` is ``(m, d (d + 1) / 2)``, ``centred`` ``(m, d, n)`` (a permuted view
        of ``(n, m, d)`` residuals is read as a transposed operand, without a copy) and
        ``out`` ``(m, n)``.
        """
        m = packed.shape[0]
        for k, band in enumerate(self.bands):
            a, b = band.a, band.b
            width = b - a
            tile = torch.mul(
                _stored_window(packed, band),
                self._masks[width, band.transposed],
                out=self._tiles[width][:m],
            )
            if band.transposed:
                tile = tile.transpose(1, 2)
            whitened = torch.bmm(tile, centred[:, a:b])
            if a:
                whitened.baddbmm_(packed[:, band.dense].view(m, width, a), centred[:, :a])
            squares = whitened.square_().sum(dim=1)
            if k == 0:
                out.copy_(squares)
            else:
                out += squares
        return out
