"""Blend overlapping patch predictions back into one field without seams."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Edge pixels of a tile still get this share of the centre weight, so a grid edge covered by one tile
# only is never divided by zero.
EDGE_WEIGHT = 1e-3


def blend_window(size: int) -> np.ndarray:
    """(size, size) weights: a 2-D Hann window, highest in the middle, small but positive at the edges.

    Args:
        size: tile side, px.

    Returns:
        (size, size) float64, the outer product of ``numpy.hanning`` ramps scaled to a maximum of 1, at least
        :data:`EDGE_WEIGHT`.
    """
    ramp = np.hanning(size + 2)[1:-1]  # drop the zero end points of numpy's window
    window = np.outer(ramp, ramp)
    return np.maximum(window / window.max(), EDGE_WEIGHT)


def stitch(tiles: Iterable[tuple[int, int, np.ndarray]], grid_shape: tuple[int, int]) -> np.ndarray:
    """Weighted average of (y0, x0, (C, h, w)) tiles on a (C, *grid_shape) grid; NaN where no tile lies.

    NaN inside a tile (land) does not count: the other tiles covering that pixel decide it.

    Args:
        tiles: ``(y0, x0, tile)`` with the tile's origin (px) on the grid and its values (C, h, w), any unit
            (°C for temperatures), NaN where it has none.
        grid_shape: (H, W) of the grid, px.

    Returns:
        (C, H, W) float64: each pixel the :func:`blend_window`-weighted mean of the tiles' finite values there.

    Raises:
        ValueError: no tile, a tile that is not 3-D, or a tile that leaves the grid.
    """

    total = None
    weight_sum = None
    for y0, x0, tile in tiles:
        tile = np.asarray(tile, dtype=np.float64)
        if tile.ndim != 3:
            raise ValueError(f"stitch expects (C, h, w) tiles, got shape {tile.shape}")
        if total is None:
            total = np.zeros((tile.shape[0], *grid_shape))
            weight_sum = np.zeros_like(total)
        c, h, w = tile.shape
        if y0 < 0 or x0 < 0 or y0 + h > grid_shape[0] or x0 + w > grid_shape[1]:
            raise ValueError(f"tile at ({y0}, {x0}) of size {h}x{w} leaves the {grid_shape} grid")
        weights = blend_window(max(h, w))[:h, :w] * np.isfinite(tile)
        total[:, y0 : y0 + h, x0 : x0 + w] += np.nan_to_num(tile) * weights
        weight_sum[:, y0 : y0 + h, x0 : x0 + w] += weights
    if total is None:
        raise ValueError("stitch got no tiles")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight_sum > 0, total / weight_sum, np.nan)
