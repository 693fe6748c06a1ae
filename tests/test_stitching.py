"""Stitching overlapping tiles: exact on agreeing tiles, seamless blend, NaN-aware."""

import numpy as np
import pytest

from depthdif.reconstruction.stitching import blend_window, stitch
from depthdif.reconstruction.tiling import tile_starts


def tiles_of(field, size, stride):
    for y0 in tile_starts(field.shape[1], size, stride):
        for x0 in tile_starts(field.shape[2], size, stride):
            yield y0, x0, field[:, y0 : y0 + size, x0 : x0 + size]


def test_tiles_cut_from_one_field_stitch_back_exactly():
    rng = np.random.default_rng(0)
    field = rng.normal(size=(2, 50, 70))
    out = stitch(tiles_of(field, 16, 12), (50, 70))
    np.testing.assert_allclose(out, field, atol=1e-12)


def test_blend_is_a_weighted_mean_between_disagreeing_tiles():
    a = np.zeros((1, 8, 8))
    b = np.ones((1, 8, 8))
    out = stitch([(0, 0, a), (0, 4, b)], (8, 12))
    assert np.all(out[0, :, :4] == 0)  # only tile a
    assert np.all(out[0, :, 8:] == 1)  # only tile b
    overlap = out[0, 3, 4:8]
    assert np.all(np.diff(overlap) > 0)  # weight moves smoothly from a to b
    assert np.all((overlap > 0) & (overlap < 1))


def test_nan_in_a_tile_defers_to_the_others_and_uncovered_is_nan():
    a = np.full((1, 4, 4), 2.0)
    a[0, 0, 0] = np.nan
    out = stitch([(0, 0, a)], (4, 6))
    assert np.isnan(out[0, 0, 0])
    assert np.isnan(out[0, :, 4:]).all()
    assert out[0, 1, 1] == 2.0


def test_window_positive_and_peaked():
    w = blend_window(9)
    assert w.min() > 0
    assert w[4, 4] == w.max()


def test_tile_outside_grid_is_an_error():
    with pytest.raises(ValueError, match="leaves"):
        stitch([(5, 5, np.zeros((1, 4, 4)))], (6, 6))
