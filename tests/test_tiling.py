"""Tile placement: every pixel covered, the last tile shifted inward, exact grids left alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depthdif.reconstruction.tiling import TilingError, tile_fractions, tile_origins, tile_starts


@st.composite
def axis_and_tiles(draw):
    size = draw(st.integers(1, 40))
    stride = draw(st.integers(1, size))
    n = draw(st.integers(size, 300))
    return n, size, stride


@settings(max_examples=300, deadline=None)
@given(axis_and_tiles())
def test_every_pixel_covered_and_tiles_inside(case):
    n, size, stride = case
    starts = tile_starts(n, size, stride)
    covered = np.zeros(n, dtype=int)
    for start in starts:
        assert 0 <= start <= n - size
        covered[start : start + size] += 1
    assert (covered >= 1).all()
    assert starts == sorted(set(starts))
    # regular steps except possibly the last, shifted one
    assert all(b - a == stride for a, b in zip(starts[:-1], starts[1:-1], strict=False))
    assert starts[-1] == n - size


def test_last_tile_shifted_inward_not_dropped():
    # 169 rows (the real sample), 32 px tiles: 0..128 regular, then one tile ending exactly at row 168
    assert tile_starts(169, 32, 32) == [0, 32, 64, 96, 128, 137]
    assert tile_starts(10, 4, 3) == [0, 3, 6]
    assert tile_starts(11, 4, 3) == [0, 3, 6, 7]


def test_exact_when_divisible():
    assert tile_starts(128, 32, 32) == [0, 32, 64, 96]
    assert tile_starts(96, 32, 16) == [0, 16, 32, 48, 64]
    assert tile_starts(32, 32, 32) == [0]


def test_grid_smaller_than_patch_is_a_clear_error():
    with pytest.raises(TilingError, match="fewer than one patch"):
        tile_starts(31, 32, 32)
    with pytest.raises(TilingError, match="stride"):
        tile_starts(100, 8, 9)


def test_origins_are_the_product_of_both_axes():
    origins = tile_origins((40, 70), 32, 32)
    assert origins == [(0, 0), (0, 32), (0, 38), (8, 0), (8, 32), (8, 38)]


def test_fractions_match_direct_counts():
    rng = np.random.default_rng(3)
    mask = rng.random((53, 61)) < 0.4
    origins = tile_origins(mask.shape, 16, 8)
    fractions = tile_fractions(mask, origins, 16)
    expected = [mask[y : y + 16, x : x + 16].mean() for y, x in origins]
    np.testing.assert_allclose(fractions, expected, rtol=0, atol=1e-12)
