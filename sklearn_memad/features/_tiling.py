"""Feature grids of large images computed tile by tile and stitched into one grid.

An image larger than the backbone should see at once is cut into overlapping square tiles on
a regular grid (the last row and column of tiles aligned with the image's far edges). Each
tile goes through the backbone alone; of its grid, each tile keeps the cells nearer its
centre than any other tile's (the boundary runs through the middle of each overlap), so a
cell's features never come from next to a tile's edge, where the backbone's zero padding
shows, unless that edge is the image's own. The stitched grid covers the whole image at the
backbone's stride, as if the image had gone through in one piece, in bounded memory.
"""

from collections import namedtuple

import torch

__all__ = ["TileLayout", "tile_layout", "tiled_features"]

Axis = namedtuple("Axis", "starts own local")
Axis.__doc__ = """One axis of a tile layout, in grid cells: each tile's first cell
(``starts``), the cells of the stitched grid it fills (``own``, slices) and where those are
in its own grid (``local``, slices)."""

TileLayout = namedtuple("TileLayout", "tile stride rows cols grid")
TileLayout.__doc__ = """Tiles of ``tile`` pixels of an image, the backbone's ``stride``, the
:class:`Axis` of ``rows`` and ``cols``, and the stitched ``grid`` (height, width) in cells."""


def _axis(cells, tile_cells, overlap_cells):
    step = tile_cells - overlap_cells
    starts = list(range(0, cells - tile_cells + 1, step))
    if starts[-1] != cells - tile_cells:
        starts.append(cells - tile_cells)
    bounds = [0]
    for first, second in zip(starts, starts[1:]):
        bounds.append((second + first + tile_cells) // 2)  # the middle of their overlap
    bounds.append(cells)
    own = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    local = [slice(a - s, b - s) for (a, b), s in zip(zip(bounds, bounds[1:]), starts)]
    return Axis(starts, own, local)


def tile_layout(image_size, tile, overlap, stride):
    """The tiles of an image of ``image_size`` (height, width) pixels.

    Parameters
    ----------
    image_size : (int, int)
        The image, in pixels, a multiple of ``stride`` on each side and at least ``tile``.
    tile : int
        Side of the square tiles in pixels, a multiple of ``stride``.
    overlap : int
        Pixels shared by neighbouring tiles, a multiple of ``stride`` below ``tile``.
    stride : int
        Pixels per grid cell of the backbone's features.

    Returns
    -------
    layout : TileLayout
    """
    height, width = image_size
    for name, value in (("image height", height), ("image width", width), ("tile", tile)):
        if value % stride:
            raise ValueError(
                f"tiling needs sizes that are multiples of the backbone's stride ({stride} "
                f"px); the {name} is {value} px. Choose image_size and tile_size accordingly."
            )
    if overlap % stride or not 0 <= overlap < tile:
        raise ValueError(
            f"tile_overlap must be a multiple of the backbone's stride ({stride} px) in "
            f"[0, tile_size={tile}); got {overlap}."
        )
    if min(height, width) < tile:
        raise ValueError(
            f"tile_size={tile} is larger than the images ({height} x {width} px); choose a "
            "smaller tile or a larger image_size."
        )
    cells, overlap_cells = tile // stride, overlap // stride
    rows = _axis(height // stride, cells, overlap_cells)
    cols = _axis(width // stride, cells, overlap_cells)
    return TileLayout(tile, stride, rows, cols, (height // stride, width // stride))


def tiled_features(prepared, layout, extract, batch_size, out):
    """Write the stitched grids of ``prepared`` images into ``out``.

    Parameters
    ----------
    prepared : torch.Tensor of shape (n, 3, H, W)
        Normalised images.
    layout : TileLayout
    extract : callable
        Normalised tiles ``(k, 3, tile, tile)`` -> grids ``(k, cells, cells, d)`` (tensor).
    batch_size : int
        Tiles through the backbone at once.
    out : ndarray of shape (n, grid_h, grid_w, d)
    """
    s, t = layout.stride, layout.tile
    places = [
        (i, r, c)
        for i in range(prepared.shape[0])
        for r in range(len(layout.rows.starts))
        for c in range(len(layout.cols.starts))
    ]
    for first in range(0, len(places), batch_size):
        batch = places[first : first + batch_size]
        tiles = torch.stack(
            [
                prepared[i, :, y * s : y * s + t, x * s : x * s + t]
                for i, r, c in batch
                for y, x in [(layout.rows.starts[r], layout.cols.starts[c])]
            ]
        )
        grids = extract(tiles.contiguous(memory_format=torch.channels_last)).cpu().numpy()
        for grid, (i, r, c) in zip(grids, batch):
            own = (layout.rows.own[r], layout.cols.own[c])
            out[(i, *own)] = grid[layout.rows.local[r], layout.cols.local[c]]
    return out
