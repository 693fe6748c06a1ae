"""The synthetic ocean: files shaped like real GLORYS12 months, and statistics like the real ocean's.

Statistical bands are set around the values measured on the real sample (tests/data/glorys12_nwmexico,
see docs/synthetic-ocean.md) with the same definitions (tests/ocean_stats.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
from ocean_stats import (
    correlation,
    gradient_excess_kurtosis,
    level_statistics,
    mesoscale_anomaly,
    persistence,
)
from scipy import ndimage

from depthdif import glorys
from depthdif.config import SYNTHETIC_SURFACE_VARIABLES, SYNTHETIC_VARIABLES, ConfigError, validate_config
from depthdif.sources import synthetic

REAL_DIR = Path(__file__).parent / "data" / "glorys12_nwmexico"
REAL_NOV = REAL_DIR / glorys.file_name(2010, 11)
# positions in the 50-level axis of the real sample's five levels (0.49, 9.57, 29.4, 92.3, 318 m)
SAMPLE_LEVELS = [0, 7, 14, 21, 28]
REAL_ANOMALY_STD = [0.49, 0.50, 0.74, 0.55, 0.23]
DEEP_LEVEL = 44  # 3597 m
CASES = [(0, 2010, 11), (1, 2011, 3)]  # (seed, year, month); each is compared with the next month


def make_config(**synthetic_keys) -> dict:
    return validate_config({"source": {"synthetic": synthetic_keys}})


def next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


@pytest.fixture(scope="module")
def months() -> dict:
    """Decoded thetao (depth, y, x) of each case's month and the month after: generated once."""
    out = {}
    for seed, year, month in CASES:
        config = make_config(seed=seed)
        for y, m in [(year, month), next_month(year, month)]:
            out[seed, y, m] = synthetic.synthetic_dataset(config, y, m)["thetao"].values[0]
    return out


@pytest.fixture(scope="module")
def case_stats(months) -> dict:
    """level_statistics of the five sample levels of each case's first month (computed once)."""
    return {
        (seed, year, month): level_statistics(*sample_levels(months[seed, year, month]))
        for seed, year, month in CASES
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("raw") / glorys.file_name(2010, 11)
    synthetic.write_synthetic_month(make_config(), 2010, 11, path)
    return path


def sample_levels(temp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    levels = temp[SAMPLE_LEVELS]
    return levels, np.isfinite(levels).all(axis=0)


# ------------------------------------------------------------------------------ file layout
def test_file_mirrors_real_glorys_layout(written):
    real, syn = xr.open_dataset(REAL_NOV), xr.open_dataset(written)
    assert written.name == "mercatorglorys12v1_gl12_mean_201011.nc"
    assert syn["thetao"].dims == real["thetao"].dims == ("time", "depth", "latitude", "longitude")
    assert syn["zos"].dims == real["zos"].dims
    # exactly what the config check lets a synthetic run export (config.SYNTHETIC_*VARIABLES)
    assert set(syn.data_vars) == {*SYNTHETIC_VARIABLES, *SYNTHETIC_SURFACE_VARIABLES}
    assert syn.sizes["time"] == 1 and syn.sizes["depth"] == 50
    np.testing.assert_allclose(syn["depth"].values, glorys.DEPTH_LEVELS_M, rtol=1e-6)
    for name in ("thetao", "zos"):
        for key in ("standard_name", "long_name", "units"):
            assert syn[name].attrs[key] == real[name].attrs[key], (name, key)
        for key in ("dtype", "scale_factor", "add_offset", "_FillValue", "zlib", "shuffle"):
            assert syn[name].encoding[key] == real[name].encoding[key], (name, key)
    for name in ("depth", "latitude", "longitude"):
        for key, value in real[name].attrs.items():
            assert syn[name].attrs[key] == value, (name, key)
        assert syn[name].dtype == real[name].dtype
    assert syn["depth"].attrs["positive"] == "down"
    assert syn["time"].encoding["units"] == real["time"].encoding["units"] == "hours since 1950-01-01"


def test_grid_is_ascending_and_sized_by_region(written):
    ds = xr.open_dataset(written)
    assert (ds.sizes["latitude"], ds.sizes["longitude"]) == (120, 180)
    assert np.all(np.diff(ds["latitude"].values) > 0) and np.all(np.diff(ds["longitude"].values) > 0)
    assert ds["latitude"].values[0] == pytest.approx(20.0) and ds["longitude"].values[0] == pytest.approx(
        -120.0
    )
    assert ds["longitude"].min() >= -180 and ds["longitude"].max() <= 180


def test_time_is_mid_month_and_matches_file_name(written):
    ds = xr.open_dataset(written)
    assert str(ds["time"].values[0])[:10] == "2010-11-15"
    assert glorys.date_of_file(written.name) == 20101115


def test_global_attributes_say_synthetic(written):
    attrs = xr.open_dataset(written).attrs
    assert "SYNTHETIC" in attrs["title"] and attrs["Conventions"] == "CF-1.8"
    assert "seed=0" in attrs["comment"]


def test_land_is_fill_value_on_disk_and_nan_decoded(written):
    with netCDF4.Dataset(written) as nc:
        nc.set_auto_maskandscale(False)
        raw = nc["thetao"][:]
    decoded = xr.open_dataset(written)["thetao"].values
    assert raw.dtype == np.int16
    land = raw == glorys.FILL_VALUE_INT16
    assert land.any() and not land.all()
    np.testing.assert_array_equal(np.isnan(decoded), land)
    zos = xr.open_dataset(written)["zos"].values[0]
    np.testing.assert_array_equal(np.isnan(zos), land[0, 0])


def test_dataset_equals_what_is_read_back(written):
    in_memory = synthetic.synthetic_dataset(make_config(), 2010, 11)
    on_disk = xr.open_dataset(written)
    np.testing.assert_array_equal(in_memory["thetao"].values, on_disk["thetao"].values)
    np.testing.assert_allclose(in_memory["zos"].values, on_disk["zos"].values, atol=1e-12)


def test_write_leaves_no_temporary_files(written):
    assert [p.name for p in written.parent.iterdir()] == [written.name]


# ------------------------------------------------------------------------------ land and values
def test_land_grows_with_depth(months):
    land = np.isnan(months[0, 2010, 11])
    assert np.all(land[1:] >= land[:-1]), "a cell that is land at one level must be land below it"
    fractions = land.mean(axis=(1, 2))
    assert 0.15 < fractions[0] < fractions[28] and 0.30 <= fractions[28] <= 0.55
    assert fractions[DEEP_LEVEL] < 1.0  # the abyssal plain (~4000-5000 m) still has water


def test_values_in_physical_range(months):
    for temp in months.values():
        assert np.nanmin(temp) >= -2.0 and np.nanmax(temp) <= 35.0


def test_mean_profile_has_a_thermocline(months):
    means = np.nanmean(months[0, 2010, 11][: DEEP_LEVEL + 1], axis=(1, 2))
    assert np.all(np.diff(means) < 0.05), "temperature should fall with depth"
    assert 17 < means[0] < 28 and 11 < means[21] < 17 and 7 < means[28] < 11
    assert 1.0 < means[39] < 4.0  # ~1940 m


def test_mixed_layer_copies_the_surface(months):
    temp = months[0, 2010, 11]
    assert np.nanmax(np.abs(temp[7] - temp[0])) < 0.3  # 9.6 m vs 0.5 m


def test_seasonal_cooling_nov_to_dec_is_surface_intensified(months):
    mean_nov = np.nanmean(months[0, 2010, 11][: SAMPLE_LEVELS[-1] + 1], axis=(1, 2))
    change = np.nanmean(months[0, 2010, 12][: SAMPLE_LEVELS[-1] + 1], axis=(1, 2)) - mean_nov
    assert -3.0 < change[0] < -0.8  # real sample: -1.74
    assert abs(change[28]) < 0.3  # real sample: -0.07
    assert change[0] < change[21] < 0.0


# ------------------------------------------------------------------------------ reproducibility
def test_same_seed_and_month_is_identical_whatever_was_generated_before(months):
    config = make_config(seed=0)
    synthetic.synthetic_dataset(config, 2013, 6)  # any other month first: no hidden state
    again = synthetic.synthetic_dataset(config, 2010, 12)["thetao"].values[0]
    np.testing.assert_array_equal(again, months[0, 2010, 12])


def test_different_seeds_differ():
    a = synthetic.synthetic_dataset(make_config(seed=0), 2010, 11)["thetao"].values
    b = synthetic.synthetic_dataset(make_config(seed=7), 2010, 11)["thetao"].values
    ocean = np.isfinite(a) & np.isfinite(b)
    assert np.mean(np.abs(a[ocean] - b[ocean])) > 0.1


def test_one_month_is_fast():
    config = make_config()
    start = time.perf_counter()
    synthetic.synthetic_dataset(config, 2012, 5)
    elapsed = time.perf_counter() - start
    assert elapsed < 6.0, f"one month took {elapsed:.2f} s (target < 2 s on one idle core)"


# ------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize(("seed", "year", "month"), CASES)
def test_mesoscale_anomaly_std_near_real(case_stats, seed, year, month):
    for row, real in zip(case_stats[seed, year, month], REAL_ANOMALY_STD, strict=True):
        assert real / 2 <= row["anomaly_std"] <= real * 2, (row["anomaly_std"], real)


@pytest.mark.parametrize(("seed", "year", "month"), CASES)
def test_surface_tells_less_and_less_with_depth(case_stats, seed, year, month):
    corr = [row["anomaly_corr_surface"] for row in case_stats[seed, year, month]]
    assert corr[1] > 0.97  # 9.6 m is almost the surface (real 1.00)
    assert corr[1] > corr[2] > corr[3] > corr[4]
    assert 0.6 < corr[2] < 0.97  # real 0.84
    assert 0.15 < corr[3] < 0.75  # real 0.44: the EO band helps but does not solve 92 m
    assert corr[4] < 0.45  # real 0.13


@pytest.mark.parametrize(("seed", "year", "month"), CASES)
def test_efolding_length_is_mesoscale(case_stats, seed, year, month):
    for row in case_stats[seed, year, month]:
        assert 3.0 <= row["efolding_px"] <= 12.0  # real ~6-7 px


@pytest.mark.parametrize(("seed", "year", "month"), CASES)
def test_gradients_are_heavy_tailed_not_gaussian(case_stats, seed, year, month):
    kurtosis = [row["gradient_kurtosis"] for row in case_stats[seed, year, month]]
    assert min(kurtosis[:3]) > 1.0  # real 6-12 near the surface; a Gaussian field gives ~0


def test_kurtosis_measure_is_near_zero_for_a_gaussian_field():
    """The heavy-tail check can fail: a smooth Gaussian random field scores about zero."""
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.normal(size=(240, 360)), 5.0)
    assert abs(gradient_excess_kurtosis(field)) < 0.5


@pytest.mark.parametrize(("seed", "year", "month"), CASES)
def test_month_to_month_persistence(months, seed, year, month):
    levels, ocean = sample_levels(months[seed, year, month])
    later, later_ocean = sample_levels(months[(seed, *next_month(year, month))])
    values = persistence(levels, later, ocean & later_ocean)
    assert all(0.25 <= v <= 0.8 for v in values), values  # real 0.44-0.56


def test_eddies_drift_westward(months):
    """The Dec anomaly at 318 m best matches Nov's when shifted west (eddies move a few px a month)."""
    nov, ocean = sample_levels(months[0, 2010, 11])
    dec, _ = sample_levels(months[0, 2010, 12])
    a, b = mesoscale_anomaly(nov[4], ocean), mesoscale_anomaly(dec[4], ocean)
    shifts = list(range(-10, 11))
    corr = [correlation(a[:, 12:-12], np.roll(b, -d, axis=1)[:, 12:-12]) for d in shifts]
    assert shifts[int(np.argmax(corr))] < 0


# ------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    ("region", "words"),
    [
        ({"lon_min": -105.0, "lon_max": -120.0, "lat_min": 20.0, "lat_max": 30.0}, "lon_min"),
        ({"lon_min": -120.0, "lon_max": -105.0, "lat_min": 30.0, "lat_max": 20.0}, "lat_min"),
        ({"lon_min": -120.0, "lon_max": -119.5, "lat_min": 20.0, "lat_max": 30.0}, "region"),
    ],
)
def test_bad_region_is_a_config_error_naming_the_key(region, words):
    with pytest.raises(ConfigError, match=words):
        synthetic.synthetic_dataset(make_config(region=region), 2010, 1)


# ------------------------------------------------------------------------------ where the mesoscale comes from
def test_components_add_up_to_the_ocean(months):
    grid, floor, parts = synthetic.temperature_components(make_config(seed=0), 2010, 11)
    total = sum(parts.values())
    ocean = synthetic.ocean_mask(floor)
    np.testing.assert_allclose(total[ocean], months[0, 2010, 11][ocean], atol=glorys.THETAO_SCALE_FACTOR)
    assert {"eddies_surface", "eddies_thermocline", "eddies_deep", "stirred"} <= set(parts)


def test_without_eddies_the_mesoscale_mostly_disappears(case_stats):
    """The anomaly at 318 m is made by the deep eddies, not by the large scale leaking through the filter."""
    quiet = synthetic.synthetic_dataset(make_config(seed=0, n_eddies=0, n_islands=0), 2010, 11)[
        "thetao"
    ].values[0]
    levels, ocean = sample_levels(quiet)
    quiet_std = level_statistics(levels, ocean)[4]["anomaly_std"]
    busy_std = case_stats[0, 2010, 11][4]["anomaly_std"]
    assert quiet_std < 0.5 * busy_std


# zos against the five levels, from the real sample (mean of Nov and Dec 2010, docs/synthetic-ocean.md):
# correlation of the mesoscale anomalies, and of what is left after a regression on the surface anomaly
REAL_ZOS_CORRELATION = [0.43, 0.43, 0.50, 0.72, 0.35]
REAL_ZOS_PARTIAL_92M = 0.58
REAL_ZOS_ANOMALY_STD_M = 0.023


def zos_statistics(ds: xr.Dataset) -> tuple[float, list[float], float]:
    """(zos anomaly std in m, correlation with each sample level's anomaly, partial correlation at 92 m)."""
    temp = ds["thetao"].values[0][SAMPLE_LEVELS].astype(float)
    zos = ds["zos"].values[0].astype(float)
    ocean = np.isfinite(temp).all(axis=0) & np.isfinite(zos)
    zos_anomaly = mesoscale_anomaly(zos, ocean)[ocean]
    anomalies = [mesoscale_anomaly(level, ocean)[ocean] for level in temp]
    surface = anomalies[0]

    def without_surface(values: np.ndarray) -> np.ndarray:
        return values - np.dot(values, surface) / np.dot(surface, surface) * surface

    partial = correlation(without_surface(zos_anomaly), without_surface(anomalies[3]))
    return float(zos_anomaly.std()), [correlation(zos_anomaly, a) for a in anomalies], partial


@pytest.mark.parametrize(("seed", "year", "month"), CASES)
def test_sea_level_relates_to_temperature_like_the_real_ocean(seed, year, month):
    # sea level knows about 92 m what the surface does not; a purely steric zos of the whole column (the old
    # generator) correlated 0.9 with 318 m, where the real ocean gives 0.3
    std, correlations, partial = zos_statistics(synthetic.synthetic_dataset(make_config(seed=seed), year, month))
    assert abs(std - REAL_ZOS_ANOMALY_STD_M) < 0.006, std
    np.testing.assert_allclose(correlations, REAL_ZOS_CORRELATION, atol=0.15)
    assert abs(partial - REAL_ZOS_PARTIAL_92M) < 0.15, partial


def test_sea_level_of_a_reference_column_is_the_reference():
    reference = synthetic._eval_profile(synthetic._T_REFERENCE, synthetic.DEPTHS_M)
    column = np.broadcast_to(reference[:, None, None], (reference.size, 2, 3)).copy()
    warm = column.copy()
    warm[synthetic.DEPTHS_M <= 150, 0, 0] += 1.0  # 1 °C warmer in the top 150 m: about 3 cm higher
    eta = synthetic.sea_surface_height(warm, reference)
    assert eta[1, 1] == pytest.approx(synthetic.ZOS_REFERENCE_M, abs=1e-9)
    assert 0.015 < eta[0, 0] - synthetic.ZOS_REFERENCE_M < 0.05
