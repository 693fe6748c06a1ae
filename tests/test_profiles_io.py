"""Profile files in: Argo/EN4-like NetCDF and CSV read, binned onto the model's grid, reconstructed.

The unit tests bin onto a small hand-made grid (8 x 8 cells of 1/12° at 20°N, 120°W; depths 10, 50 and
92.3 m); the end-to-end tests reconstruct the real GLORYS12 sample in ``tests/data`` from profiles drawn
from its own columns, with the untrained checkpoint of ``test_reconstruct``.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import gsw
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from test_reconstruct import REAL, untrained_checkpoint

from depthdif import cli
from depthdif.cf.errors import FieldFileError
from depthdif.reconstruction.gridded import ReconstructionError, reconstruct_file
from depthdif.reconstruction.profiles import (
    ModelGrid,
    ProfileFileError,
    bin_profiles,
    cell_index,
    grid_from_dataset,
    interpolate_to_depths,
    is_profile_file,
    read_profiles,
    reconstruct,
)

REPO = Path(__file__).resolve().parents[1]
LAT0, LON0, STEP, CELLS = 20.0, -120.0, 1 / 12, 8
DEPTHS = [10.0, 50.0, 92.3]
MONTH = 201011
# one profile of the hand computation: samples at 5, 20, 60, 100 m
LEVELS = np.array([5.0, 20.0, 60.0, 100.0])
TEMPS = np.array([25.0, 22.0, 18.0, 14.0])
# linear between the samples around each model depth, by hand:
#  10 m: 25 + (10 - 5) / (20 - 5) * (22 - 25) = 24
#  50 m: 22 + (50 - 20) / (60 - 20) * (18 - 22) = 19
#  92.3 m: 18 + (92.3 - 60) / (100 - 60) * (14 - 18) = 14.77
EXPECTED = [24.0, 19.0, 14.77]


def small_grid(land: tuple[int, int] | None = None) -> ModelGrid:
    ocean = np.ones((len(DEPTHS), CELLS, CELLS), bool)
    if land is not None:
        ocean[:, land[0], land[1]] = False
    return ModelGrid(LAT0 + STEP * np.arange(CELLS), LON0 + STEP * np.arange(CELLS), ocean, DEPTHS)


def cell_centre(row: int, col: int) -> tuple[float, float]:
    return LAT0 + STEP * row, LON0 + STEP * col


def write_argo(path: Path, lat, lon, days, temp, *, vertical=("DEPTH", LEVELS, {"units": "m", "positive": "down"}),
               temp_attrs: dict | None = None, temp_type: str = "f4", extra=None) -> Path:
    """An Argo-like profile file: N_PROF x N_LEVELS, fill values and valid ranges as Argo writes them.

    ``days``: JULD, days since 1950-01-01 (NaN = fill); ``temp``: (P, L) stored values (NaN = fill);
    ``vertical``: (name, values on (L,) or (P, L), attributes); ``extra(ds)`` adds variables.
    """
    temp = np.atleast_2d(np.asarray(temp, np.float64))
    name, values, attrs = vertical
    values = np.asarray(values, np.float64)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("N_PROF", temp.shape[0])
        ds.createDimension("N_LEVELS", temp.shape[1])
        for var, data, fill, var_attrs in (
            ("LATITUDE", lat, 99999.0, {"units": "degree_north", "valid_min": -90.0, "valid_max": 90.0}),
            ("LONGITUDE", lon, 99999.0, {"units": "degree_east", "valid_min": -180.0, "valid_max": 180.0}),
            ("JULD", days, 999999.0, {"units": "days since 1950-01-01 00:00:00 UTC", "standard_name": "time"}),
        ):
            v = ds.createVariable(var, "f8", ("N_PROF",), fill_value=fill)
            v.setncatts(var_attrs)
            v[:] = np.where(np.isfinite(data), data, fill)
        dims = ("N_LEVELS",) if values.ndim == 1 else ("N_PROF", "N_LEVELS")
        v = ds.createVariable(name, "f4", dims, fill_value=np.float32(99999.0))
        v.setncatts(attrs)
        v[:] = np.where(np.isfinite(values), values, 99999.0)
        t = ds.createVariable("TEMP", temp_type, ("N_PROF", "N_LEVELS"),
                              fill_value=-32767 if temp_type == "i2" else np.float32(99999.0))
        t.set_auto_maskandscale(False)
        t.setncatts(temp_attrs if temp_attrs is not None else
                    {"units": "degree_Celsius", "valid_min": np.float32(-2.5), "valid_max": np.float32(40.0)})
        fill = -32767 if temp_type == "i2" else 99999.0
        t[:] = np.where(np.isfinite(temp), temp, fill).astype(temp_type)
        if extra is not None:
            extra(ds)
    return path


def nov(day: float = 15.0) -> float:
    """JULD of 2010-11-<day> (days since 1950-01-01)."""
    return float((np.datetime64("2010-11-01") - np.datetime64("1950-01-01")).astype(int) + day - 1)


def one_profile(tmp_path: Path, vertical, name: str = "p.nc") -> np.ndarray:
    lat, lon = cell_centre(3, 4)
    path = write_argo(tmp_path / name, [lat], [lon], [nov()], [TEMPS], vertical=vertical)
    binned = bin_profiles(read_profiles(path), small_grid(), MONTH)
    assert binned.report["profiles_used"] == 1
    assert binned.count[:, 3, 4].tolist() == [1, 1, 1] and binned.count.sum() == 3
    return binned.observed[:, 3, 4]


# ----------------------------------------------------------------------------- vertical axes
def test_depth_positive_down_interpolated_as_computed_by_hand(tmp_path):
    np.testing.assert_allclose(one_profile(tmp_path, ("DEPTH", LEVELS, {"units": "m", "positive": "down"})),
                               EXPECTED, atol=1e-5)


def test_heights_positive_up_and_negative_depths_without_positive(tmp_path, caplog):
    up = one_profile(tmp_path, ("DEPTH", -LEVELS, {"units": "m", "positive": "up"}), "up.nc")
    np.testing.assert_allclose(up, EXPECTED, atol=1e-5)
    with caplog.at_level(logging.WARNING, logger="depthdif"):
        bare = one_profile(tmp_path, ("DEPTH", -LEVELS, {"units": "m"}), "bare.nc")
    np.testing.assert_allclose(bare, EXPECTED, atol=1e-5)
    assert any("read as heights" in r.getMessage() for r in caplog.records)
    km = one_profile(tmp_path, ("DEPTH", LEVELS / 1000, {"units": "km", "positive": "down"}), "km.nc")
    np.testing.assert_allclose(km, EXPECTED, atol=1e-4)


def test_pressure_levels_become_teos10_depths(tmp_path):
    """PRES 5/20/60/100 dbar at 20.25°N lie at 4.97/19.87/59.6/99.3 m: 92.3 m is interpolated on those."""
    lat = cell_centre(3, 4)[0]
    depths = -gsw.z_from_p(LEVELS, lat)
    assert depths[-1] == pytest.approx(99.3, abs=0.1)
    by_hand = TEMPS[2] + (92.3 - depths[2]) / (depths[3] - depths[2]) * (TEMPS[3] - TEMPS[2])
    values = one_profile(tmp_path, ("PRES", LEVELS, {"units": "decibar"}))
    assert values[2] == pytest.approx(by_hand, abs=1e-5)
    assert values[2] != pytest.approx(EXPECTED[2], abs=0.05)  # pressure is not depth: 0.7 % shallower
    pascal = one_profile(tmp_path, ("PRES", LEVELS * 1e4, {"units": "Pa"}), "pa.nc")
    np.testing.assert_allclose(pascal, values, atol=1e-5)


def test_no_extrapolation_beyond_the_samples_but_the_level_tolerance():
    depth = np.array([[20.0, 60.0, np.nan], [5.0, 50.0, 91.0]])
    temp = np.array([[22.0, 18.0, np.nan], [25.0, 20.0, 15.0]])
    out = interpolate_to_depths(depth, temp, DEPTHS)
    assert np.isnan(out[0, 0]) and out[0, 1] == pytest.approx(19.0) and np.isnan(out[0, 2])
    # 92.3 m is 1.3 m below the deepest sample of 91 m, within 2 % + 1 cm (1.86 m): the end value, not a slope
    assert out[1, 2] == pytest.approx(15.0)
    assert np.isnan(interpolate_to_depths(np.array([[5.0, 50.0, 90.0]]), temp[1:], DEPTHS)[0, 2])


# ----------------------------------------------------------------------------- values
def test_fill_values_valid_range_and_packing(tmp_path):
    lat, lon = cell_centre(2, 2)
    temp = np.array([[25.0, np.nan, 18.0, 14.0],  # fill at 20 m: 10 m reached only from 5 and 60 m
                     [25.0, 22.0, 41.0, 14.0]])  # 41 °C > valid_max 40: no value
    path = write_argo(tmp_path / "f.nc", [lat, lat], [lon, lon + STEP], [nov(), nov()], temp)
    profiles = read_profiles(path)
    assert np.isnan(profiles.temperature[0, 1]) and np.isnan(profiles.temperature[1, 2])
    binned = bin_profiles(profiles, small_grid(), MONTH)
    assert binned.observed[0, 2, 2] == pytest.approx(25 + (10 - 5) / 55 * (18 - 25), abs=1e-5)
    assert binned.observed[2, 2, 3] == pytest.approx(22 + (92.3 - 20) / 80 * (14 - 22), abs=1e-5)
    # int16 packed with scale_factor/add_offset and a _FillValue, as some EN4-style files store it
    packed = np.round((TEMPS - 20.0) / 0.001)
    path = write_argo(tmp_path / "packed.nc", [lat], [lon], [nov()], [packed], temp_type="i2",
                      temp_attrs={"units": "degC", "scale_factor": 0.001, "add_offset": 20.0})
    np.testing.assert_allclose(bin_profiles(read_profiles(path), small_grid(), MONTH).observed[:, 2, 2], EXPECTED,
                               atol=1e-3)


def test_several_profiles_in_one_cell_are_averaged(tmp_path):
    lat, lon = cell_centre(5, 1)
    offsets = [0.0, 0.3 * STEP, -0.4 * STEP]  # three floats inside one 1/12° cell, a fourth next door
    temps = [np.full(4, 20.0), np.full(4, 22.0), np.full(4, 24.0), np.full(4, 10.0)]
    path = write_argo(tmp_path / "p.nc", [lat + o for o in offsets] + [lat], [lon + o for o in offsets] + [lon + STEP],
                      [nov()] * 4, temps)
    binned = bin_profiles(read_profiles(path), small_grid(), MONTH)
    assert binned.count[:, 5, 1].tolist() == [3, 3, 3]
    np.testing.assert_allclose(binned.observed[:, 5, 1], 22.0)
    assert binned.count[:, 5, 2].tolist() == [1, 1, 1] and binned.count.sum() == 12
    assert binned.report["profiles_used"] == 4


def test_profiles_outside_the_grid_or_month_are_counted_not_dropped(tmp_path):
    lat, lon = cell_centre(1, 1)
    lats = [lat, lat + 1.0, lat, lat, np.nan, lat, cell_centre(6, 6)[0]]
    lons = [lon, lon, lon - 1.0, lon, lon, lon, cell_centre(6, 6)[1]]
    days = [nov(), nov(), nov(), nov(45), nov(), np.nan, nov(30)]  # in, N of grid, W of grid, December, ...
    temps = [TEMPS] * 7
    temps[6] = [np.nan, np.nan, np.nan, 5.0]  # only a 100 m sample: no model depth reached
    path = write_argo(tmp_path / "p.nc", lats, lons, days, temps)
    binned = bin_profiles(read_profiles(path), small_grid(land=(1, 1)), MONTH)
    assert binned.report == {"profiles_read": 7, "profiles_used": 0, "profiles_flagged_bad": 0,
                             "profiles_undated": 1, "profiles_outside_month": 1, "profiles_outside_grid": 3,
                             "profiles_on_land": 1, "profiles_without_model_depths": 1}
    binned = bin_profiles(read_profiles(path), small_grid(), MONTH)
    assert binned.report["profiles_used"] == 1 and binned.report["profiles_on_land"] == 0
    assert binned.count.sum() == 3


def test_argo_qc_flags_remove_what_they_flag(tmp_path):
    lat, lon = cell_centre(4, 4)

    def flags(ds):
        qc = ds.createVariable("TEMP_QC", "S1", ("N_PROF", "N_LEVELS"))
        qc[:] = np.array([[b"1", b"4", b"1", b"1"], [b"1", b"1", b"1", b"1"]])
        pos = ds.createVariable("POSITION_QC", "S1", ("N_PROF",))
        pos[:] = np.array([b"1", b"4"])

    path = write_argo(tmp_path / "qc.nc", [lat, lat], [lon, lon], [nov(), nov()], [TEMPS, TEMPS], extra=flags)
    binned = bin_profiles(read_profiles(path), small_grid(), MONTH)
    assert binned.report["profiles_flagged_bad"] == 1 and binned.report["profiles_used"] == 1
    # the 20 m sample is flagged bad: 10 m from 5 and 60 m
    assert binned.observed[0, 4, 4] == pytest.approx(25 + 5 / 55 * (18 - 25), abs=1e-5)


@pytest.mark.parametrize(("units", "values", "match"), [
    ("psu", TEMPS, "units 'psu' are not a temperature"),
    ("degree_Celsius", TEMPS + 273.15, "outside -3..45 °C"),  # kelvin values labelled °C
])
def test_a_temperature_in_wrong_units_is_refused(tmp_path, units, values, match):
    lat, lon = cell_centre(1, 1)
    path = write_argo(tmp_path / "wrong.nc", [lat], [lon], [nov()], [values], temp_attrs={"units": units})
    with pytest.raises(FieldFileError, match=match) as caught:
        read_profiles(path)
    assert str(path) in str(caught.value) and "'TEMP'" in str(caught.value) and units in str(caught.value)


def test_kelvin_is_converted(tmp_path):
    lat, lon = cell_centre(1, 1)
    path = write_argo(tmp_path / "k.nc", [lat], [lon], [nov()], [TEMPS + 273.15], temp_attrs={"units": "K"})
    np.testing.assert_allclose(read_profiles(path).temperature[0], TEMPS, atol=1e-3)


# ----------------------------------------------------------------------------- CSV
def test_csv_of_profile_levels(tmp_path):
    a, b = cell_centre(3, 4), cell_centre(6, 0)
    rows = [(a[0], a[1], "2010-11-15", z, t) for z, t in zip(LEVELS, TEMPS, strict=True)]
    rows += [(b[0], b[1], "2010-11-20T06:00:00Z", z, 20.0) for z in LEVELS]
    rows += [(b[0], b[1] + 5.0, "2010-11-20", 10.0, 20.0)]  # east of the grid
    path = tmp_path / "profiles.csv"
    pd.DataFrame(rows, columns=["Latitude", "longitude", "time", "depth", "temperature"]).to_csv(path, index=False)
    assert is_profile_file(path)
    binned = bin_profiles(read_profiles(path), small_grid(), MONTH)
    np.testing.assert_allclose(binned.observed[:, 3, 4], EXPECTED, atol=1e-6)
    np.testing.assert_allclose(binned.observed[:, 6, 0], 20.0)
    assert binned.report["profiles_read"] == 3 and binned.report["profiles_outside_grid"] == 1
    # pressure and kelvin, said in the header; grouped by a profile column
    kelvin = pd.DataFrame({"profile": [7] * 4, "lat": a[0], "lon": a[1], "time": "2010-11-15",
                           "pressure (dbar)": LEVELS, "temperature (K)": TEMPS + 273.15})
    kelvin.to_csv(path, index=False)
    values = bin_profiles(read_profiles(path), small_grid(), MONTH).observed[:, 3, 4]
    depths = -gsw.z_from_p(LEVELS, a[0])
    assert values[2] == pytest.approx(np.interp(92.3, depths, TEMPS), abs=1e-3)


def test_csv_problems_are_named(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"lat": [20.0], "lon": [-120.0], "time": ["2010-11-15"], "temp": [20.0]}).to_csv(path, index=False)
    with pytest.raises(ProfileFileError, match="no column depth or pressure.*'lat', 'lon', 'time', 'temp'"):
        read_profiles(path)
    pd.DataFrame({"lat": [20.0], "lon": [-120.0], "time": ["mid-November"], "depth": [5.0], "temp": [20.0]}
                 ).to_csv(path, index=False)
    with pytest.raises(ProfileFileError, match="'mid-November' at data row 1, not a date"):
        read_profiles(path)
    pd.DataFrame({"lat": [20.0], "lon": [-120.0], "time": ["2010-11-15"], "depth": [5.0],
                  "temperature (psu)": [35.0]}).to_csv(path, index=False)
    with pytest.raises(FieldFileError, match=re.escape(f"{path}: column 'temperature (psu)' (units 'psu')")):
        read_profiles(path)


# ----------------------------------------------------------------------------- grid
def test_cells_are_found_across_the_dateline_convention():
    centres = LON0 + STEP * np.arange(CELLS)
    assert cell_index(centres, np.array([LON0, LON0 + 360.0, LON0 - STEP * 0.49, LON0 - STEP * 0.51]),
                      periodic=True).tolist() == [0, 0, 0, -1]
    descending = (LAT0 + STEP * np.arange(CELLS))[::-1]
    assert cell_index(descending, np.array([LAT0, LAT0 + 7 * STEP, np.nan])).tolist() == [7, 0, -1]


def test_is_profile_file_tells_profiles_from_grids(tmp_path):
    lat, lon = cell_centre(1, 1)
    assert is_profile_file(write_argo(tmp_path / "p.nc", [lat], [lon], [nov()], [TEMPS]))
    assert not is_profile_file(REAL)
    stations = xr.Dataset({"temperature": (("station", "level"), [TEMPS]), "depth": ("level", LEVELS),
                           "lat": ("station", [lat]), "lon": ("station", [lon]),
                           "time": ("station", [np.datetime64("2010-11-15", "ns")])})
    stations.to_netcdf(tmp_path / "ctd.nc")
    assert is_profile_file(tmp_path / "ctd.nc")
    np.testing.assert_allclose(bin_profiles(read_profiles(tmp_path / "ctd.nc"), small_grid(), MONTH).observed[:, 1, 1],
                               EXPECTED, atol=1e-5)
    assert not is_profile_file(tmp_path / "missing.nc")


def test_grid_from_a_temperature_field_or_an_ocean_mask():
    settings = {"variant": "temp_v1", "export": {"depth_values_m": [0.494025, 9.572997, 29.44473, 92.32607]},
                "dataset": {"temp_v1_band": 3}}
    sample = xr.open_dataset(REAL).load()
    grid = grid_from_dataset(sample, str(REAL), settings)
    truth = np.isfinite(sample["thetao"].sel(depth=92.3, method="nearest").isel(time=0).values)
    np.testing.assert_array_equal(grid.ocean[0], truth)
    assert grid.depths == pytest.approx([92.32607])
    masked = sample[["thetao"]].assign(ocean_mask=sample["thetao"].notnull().astype("int8"))
    np.testing.assert_array_equal(grid_from_dataset(masked, "<mask>", settings).ocean[0], truth)


def test_import_depthdif_stays_light():
    code = "import sys, depthdif; print(sorted(m for m in ('torch', 'xarray', 'depthdif.reconstruction.gridded') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return {variant: untrained_checkpoint(folder, variant) for variant in ("temp_v1", "eo_4band")}


def corner() -> xr.Dataset:
    """The real sample's 64 x 64 south-western corner (open Pacific): a grid of 2 x 2 tile batches, fast on a CPU."""
    return xr.open_dataset(REAL).isel(latitude=slice(0, 64), longitude=slice(0, 64)).load()


def sample_profiles(sample: xr.Dataset, count: int = 40, seed: int = 0) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    """``count`` profiles of the sample's own ocean columns (distinct cells), as an Argo-like dataset on PRES."""
    thetao = sample["thetao"].isel(time=0)
    rows, cols = np.nonzero(np.isfinite(thetao.isel(depth=-1).values))
    pick = np.random.default_rng(seed).choice(rows.size, count, replace=False)
    ds = xr.Dataset({
        "TEMP": (("N_PROF", "N_LEVELS"), thetao.values[:, rows[pick], cols[pick]].T, {"units": "degree_Celsius"}),
        "PRES": (("N_PROF", "N_LEVELS"), np.broadcast_to(sample["depth"].values, (count, 5)).copy(),
                 {"units": "decibar"}),
        "LATITUDE": ("N_PROF", sample["latitude"].values[rows[pick]]),
        "LONGITUDE": ("N_PROF", sample["longitude"].values[cols[pick]]),
        "JULD": ("N_PROF", np.full(count, np.datetime64("2010-11-16", "ns"))),
    })
    return ds, rows[pick], cols[pick]


def test_cli_reconstructs_from_an_argo_file(tmp_path, checkpoints, capsys):
    sample = corner()
    grid = tmp_path / "grid.nc"
    sample.to_netcdf(grid)
    profiles, rows, cols = sample_profiles(sample)
    extra = profiles.isel(N_PROF=[0, 1, 2]).copy()
    extra["LATITUDE"] = ("N_PROF", [50.0, 10.0, float(profiles["LATITUDE"][2])])  # two off the grid...
    extra["JULD"] = ("N_PROF", np.array(["2010-11-16", "2010-11-16", "2010-12-16"], "datetime64[ns]"))  # ...one late
    path = tmp_path / "argo.nc"
    xr.concat([profiles, extra], "N_PROF").to_netcdf(path)
    out = tmp_path / "out.nc"
    code = cli.main(["reconstruct", str(checkpoints["temp_v1"]), str(path), str(out), "--grid", str(grid),
                     "--ensemble-size", "1", "--steps", "2"])
    assert code == 0
    assert "43 profiles read, 40 used for 2010-11; not used: 1 outside the month, 2 outside the grid" in \
        capsys.readouterr().err
    result = xr.open_dataset(out)
    assert result.attrs["profiles_outside_grid"] == 2 and result.attrs["profiles_outside_month"] == 1
    assert result.attrs["profiles_used"] == 40 and result.attrs["profiles_month"] == "2010-11"
    assert result.attrs["source"] == ("DepthDif temp_v1 model temp_v1.ckpt applied to the profiles of argo.nc "
                                      "(1 members, 2 DDPM steps, seed 0)")
    count = result["observation_count"].isel(time=0, depth=0).values
    assert count.sum() == 40 and count[rows, cols].tolist() == [1] * 40
    # PRES in dbar: 92.3 dbar lie at 91.7 m, so the model's 92.33 m is interpolated towards the 318 dbar sample
    thetao = sample["thetao"].isel(time=0)
    lat = sample["latitude"].values[rows]
    column = thetao.values[:, rows, cols]  # (5, 40)
    expected = [np.interp(92.32607, -gsw.z_from_p(sample["depth"].values, lat[k]), column[:, k]) for k in range(40)]
    recon = result["thetao"].isel(time=0, depth=0).values
    np.testing.assert_allclose(recon[rows, cols], expected, atol=1e-4)
    assert not np.allclose(recon[rows, cols], column[3], atol=1e-3)
    ocean = result["ocean_mask"].isel(time=0, depth=0).values.astype(bool)
    np.testing.assert_array_equal(ocean, np.isfinite(thetao.sel(depth=92.3, method="nearest").values))
    assert np.isfinite(recon[ocean]).all() and np.isnan(recon[~ocean]).all()


def test_python_api_on_xarray_objects_with_a_surface(checkpoints):
    sample = corner()
    profiles, rows, cols = sample_profiles(sample, 30, seed=1)
    out = reconstruct(profiles, sample, checkpoints["eo_4band"], ensemble_size=1, steps=2)
    assert out["thetao"].dims == ("time", "depth", "latitude", "longitude")
    assert out["depth"].values == pytest.approx([9.573, 29.445, 92.326], abs=0.01)
    assert out["observation_count"].sum().item() == 90 and out.attrs["profiles_used"] == 30
    assert str(out["time"].values[0])[:10] == "2010-11-16"  # the surface field's date


def test_profiles_need_a_grid_and_a_grid_is_for_profiles(tmp_path, checkpoints):
    profiles, _, _ = sample_profiles(corner(), 5)
    path = tmp_path / "p.nc"
    profiles.to_netcdf(path)
    with pytest.raises(ReconstructionError, match="--grid FILE.nc"):
        reconstruct_file(checkpoints["temp_v1"], path, tmp_path / "o.nc")
    with pytest.raises(ReconstructionError, match="--grid is for profile files"):
        reconstruct_file(checkpoints["temp_v1"], REAL, tmp_path / "o.nc", grid=REAL)
    with pytest.raises(ReconstructionError, match="5 profiles read, 0 used for 2011-03; not used: 5 outside"):
        reconstruct_file(checkpoints["temp_v1"], path, tmp_path / "o.nc", grid=REAL, date=20110315)
    assert not (tmp_path / "o.nc").exists()


def test_readme_example_runs_as_printed(tmp_path, checkpoints, monkeypatch, capsys):
    import depthdif

    readme = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?import depthdif\n.*?)```", readme, re.S).group(1)
    assert "results/temp_v1/model.ckpt" in code
    code = code.replace("tests/data/", f"{REPO}/tests/data/").replace("results/temp_v1/model.ckpt",
                                                                     str(checkpoints["temp_v1"]))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert callable(depthdif.reconstruct)
    assert (tmp_path / "profiles.nc").is_file() and is_profile_file(tmp_path / "profiles.nc")
    assert capsys.readouterr().out.strip().endswith("40 40")
