"""Property-based tests (hypothesis) of the pure functions the pipeline's guarantees rest on.

normalise/denormalise round trip; mask fraction and shape invariants (make_mask, make_band_masks,
TorusMaskPool); tiling covers every pixel of a 2-D grid with tiles inside it; the split is deterministic
and never puts a window (or a pixel) on both sides; stitching tiles cut from one field gives it back.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from depthdif.config import validate_config
from depthdif.data.masking import FRACTION_TOLERANCE, TorusMaskPool, make_band_masks, make_mask, mask_rng
from depthdif.data.normalization import Y_STD, temperature_denormalize, temperature_normalize
from depthdif.reconstruction.stitching import stitch
from depthdif.reconstruction.tiling import tile_fractions, tile_origins
from depthdif.split import split_index

FAST = settings(max_examples=40, deadline=None)
celsius = st.floats(-2.0, 40.0, allow_nan=False)  # sea water: freezing point to a hot lagoon


# ------------------------------------------------------------------------------------- normalisation


@FAST
@given(st.lists(celsius, min_size=1, max_size=64), celsius)
def test_normalise_round_trip_and_affine(values, other):
    array = np.asarray(values)
    np.testing.assert_allclose(temperature_denormalize(temperature_normalize(array)), array, atol=1e-9)
    tensor = torch.tensor(values, dtype=torch.float32)
    back = temperature_denormalize(temperature_normalize(tensor))
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, tensor, atol=2e-5, rtol=0)  # float32: ~4e-6 relative of ~300 K
    # an affine map of scale 1/Y_STD: differences keep their order and scale
    diff = temperature_normalize(array) - temperature_normalize(other)
    np.testing.assert_allclose(diff, (array - other) / Y_STD, atol=1e-12)


# ------------------------------------------------------------------------------------------- masking


@st.composite
def mask_case(draw, max_bands: int = 1):
    height, width = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    side_min = draw(st.integers(1, 4))
    side_max = draw(st.integers(side_min, 8))
    fraction = draw(st.one_of(st.sampled_from([0.0, 1.0, 0.5, 0.95, 0.975]), st.floats(0.0, 1.0)))
    bands = draw(st.integers(1, max_bands))
    land_share = draw(st.floats(0.0, 0.9))
    seed = draw(st.integers(0, 2**32 - 1))
    ocean = np.random.default_rng(seed).random((bands, height, width)) >= land_share
    return ocean, fraction, side_min, side_max, seed


def assert_hidden_share(valid: np.ndarray, ocean: np.ndarray, fraction: float) -> None:
    """Per band: observed only on ocean, hidden count within the documented tolerance of the target."""
    assert valid.shape == ocean.shape and valid.dtype == bool
    assert not (valid & ~ocean).any()
    for band_valid, band_ocean in zip(valid, ocean, strict=True):
        n_ocean = int(band_ocean.sum())
        hidden = n_ocean - int(band_valid.sum())
        target = int(np.rint(fraction * n_ocean))
        assert abs(hidden - target) <= int(np.floor(FRACTION_TOLERANCE * n_ocean)), (hidden, target, n_ocean)


@FAST
@given(mask_case())
def test_make_mask_hits_the_fraction_on_ocean_only_and_is_deterministic(case):
    ocean, fraction, side_min, side_max, seed = case
    valid = make_mask(np.random.default_rng(seed), ocean[0], fraction, side_min, side_max)
    assert_hidden_share(valid[None], ocean[:1], fraction)
    again = make_mask(np.random.default_rng(seed), ocean[0], fraction, side_min, side_max)
    np.testing.assert_array_equal(valid, again)


@FAST
@given(mask_case(max_bands=4), st.integers(0, 2**31 - 1))
def test_band_masks_are_per_band_and_each_band_only_depends_on_its_own_generator(case, sample):
    ocean, fraction, side_min, side_max, seed = case
    rngs = [mask_rng(seed, sample, band) for band in range(ocean.shape[0])]
    valid = make_band_masks(rngs, ocean, fraction, side_min, side_max)
    assert_hidden_share(valid, ocean, fraction)
    for band in range(ocean.shape[0]):  # the same mask when drawn alone: val masks do not depend on C
        alone = make_mask(mask_rng(seed, sample, band), ocean[band], fraction, side_min, side_max)
        np.testing.assert_array_equal(valid[band], alone)


@settings(max_examples=25, deadline=None)
@given(mask_case(max_bands=3), st.integers(1, 4))
def test_training_mask_pool_keeps_the_fraction_and_shape(case, draws):
    ocean, fraction, side_min, side_max, seed = case
    pool = TorusMaskPool(
        np.random.default_rng(seed), *ocean.shape[1:], fraction, side_min, side_max, reuse=1, n_tori=2
    )
    for _ in range(draws):  # reuse=1 forces tori to be redrawn between calls
        assert_hidden_share(pool.masks(ocean), ocean, fraction)


# -------------------------------------------------------------------------------------------- tiling


@st.composite
def grid_and_tiles(draw):
    size = draw(st.integers(1, 24))
    stride = draw(st.integers(1, size))
    shape = (draw(st.integers(size, 120)), draw(st.integers(size, 120)))
    return shape, size, stride


@settings(max_examples=80, deadline=None)
@given(grid_and_tiles(), st.integers(0, 2**32 - 1))
def test_tiles_cover_every_pixel_of_the_grid_and_stay_inside(case, seed):
    shape, size, stride = case
    origins = tile_origins(shape, size, stride)
    assert len(set(origins)) == len(origins)
    cover = np.zeros(shape, dtype=int)
    for y0, x0 in origins:
        assert 0 <= y0 <= shape[0] - size and 0 <= x0 <= shape[1] - size
        cover[y0 : y0 + size, x0 : x0 + size] += 1
    assert cover.min() >= 1
    mask = np.random.default_rng(seed).random(shape) < 0.3
    fractions = tile_fractions(mask, origins, size)
    expected = [mask[y0 : y0 + size, x0 : x0 + size].mean() for y0, x0 in origins]
    np.testing.assert_allclose(fractions, expected, atol=1e-12)


# ----------------------------------------------------------------------------------------- stitching


@settings(max_examples=40, deadline=None)
@given(grid_and_tiles(), st.integers(1, 3), st.floats(0.0, 0.5), st.integers(0, 2**32 - 1))
def test_stitching_tiles_cut_from_one_field_gives_the_field_back(case, channels, land_share, seed):
    shape, size, stride = case
    rng = np.random.default_rng(seed)
    field = rng.normal(15.0, 5.0, (channels, *shape))
    field[rng.random(field.shape) < land_share] = np.nan  # land: no tile holds a value there
    tiles = [
        (y0, x0, field[:, y0 : y0 + size, x0 : x0 + size]) for y0, x0 in tile_origins(shape, size, stride)
    ]
    stitched = stitch(tiles, shape)
    np.testing.assert_allclose(stitched, field, rtol=1e-12, atol=1e-9, equal_nan=True)


# --------------------------------------------------------------------------------------------- split


@st.composite
def split_case(draw):
    size = draw(st.sampled_from([4, 8]))
    stride = draw(st.sampled_from([s for s in (2, 4, 8) if s <= size]))
    shape = (draw(st.integers(3 * size, 80)), draw(st.integers(3 * size, 80)))
    window_tiles = draw(st.integers(1, 3))
    val_fraction = draw(st.floats(0.05, 0.95))
    seed = draw(st.integers(0, 2**31 - 1))
    dropped = draw(st.floats(0.0, 0.4))  # like land tiles the export filtered out
    return shape, size, stride, window_tiles, val_fraction, seed, dropped


def write_index(path: Path, shape, size: int, stride: int, dropped: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [
        {"sample_id": f"{month}_{y0}_{x0}", "date": int(f"{month}15"), "y0": y0, "x0": x0, "patch_size": size,
         "y_npy_path": f"y_npy/{month}_{y0}_{x0}.npy", "split": "unassigned"}
        for y0, x0 in tile_origins(shape, size, stride) if rng.random() >= dropped
        for month in ("201001", "201101")
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)


@settings(max_examples=30, deadline=None)
@given(split_case())
def test_split_is_deterministic_and_no_window_or_pixel_is_on_both_sides(case):
    shape, size, stride, window_tiles, val_fraction, seed, dropped = case
    config = validate_config({
        "export": {"patch_size": size, "stride": stride}, "variants": ["temp_v1"],
        "split": {"window_tiles": window_tiles, "val_fraction": val_fraction, "seed": seed},
    })  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index.csv"
        write_index(index, shape, size, stride, dropped, seed)
        try:
            first = split_index(config, index, Path(tmp) / "a.csv")
        except ValueError as err:  # too few windows or nothing left on one side: a clear error is fine
            assert "split" in str(err) or "window" in str(err)
            event("refused: too few windows")
            return
        event("split")
        second = split_index(config, index, Path(tmp) / "b.csv")
        assert first.read_bytes() == second.read_bytes()
        out = pd.read_csv(first)
        source = pd.read_csv(index)

    assert set(out["split"]) == {"train", "val"}
    assert set(out["sample_id"]) <= set(source["sample_id"])
    sides = out.groupby("window_id")["split"].nunique()
    assert (sides == 1).all()
    # every month of a place lands on the same side
    assert (out.groupby(["y0", "x0"])["split"].nunique() == 1).all()
    cover = {name: np.zeros(shape, dtype=bool) for name in ("train", "val")}
    for row in out.itertuples():
        cover[row.split][row.y0 : row.y0 + size, row.x0 : row.x0 + size] = True
    assert not (cover["train"] & cover["val"]).any()
