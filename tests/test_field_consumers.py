"""Downstream of the field files: one date (the index's), depths matched by value, CF-read observations.

The files follow the issue's layout "L": thetao(time=1, depth, latitude=32, longitude=32), int16 packed like
GLORYS12, lat 20 + k/12, lon -120 + k/12, time in hours since 1950-01-01; variations are built per test.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from depthdif import cli, glorys
from depthdif.cf.errors import FieldFileError
from depthdif.config import load_config
from depthdif.data.datamodule import DepthDifDataModule
from depthdif.data.dataset import PatchDataset
from depthdif.data.index import PatchIndexError, index_depths, read_index
from depthdif.download import run_download
from depthdif.evaluation.protocol import band_depths_of
from depthdif.evaluation.real_sample import matching_depth_indices
from depthdif.export import export_patches
from depthdif.models.module import FORMAT_VERSION, CheckpointError, model_settings, save_model
from depthdif.reconstruction.gridded import ReconstructionError, read_observations, reconstruct_file
from depthdif.reconstruction.month import _check_model_levels
from depthdif.train import build_module, training_depths

SIZE = 32
GLORYS_22 = tuple(glorys.DEPTH_LEVELS_M[:22])
FIVE_LEVELS = (0.494025, 9.572997, 29.44473, 92.32607, 318.1274)
CMEMS_NAME = "cmems_mod_glo_phy_my_0.083deg_P1M-m_thetao_120.00W-117.42W_20.00N-22.58N_0.49-92.33m_2010-07-01.nc"
LAYOUT_NAMES = {"time": "time", "depth": "depth", "lat": "latitude", "lon": "longitude"}
KELVIN = 273.15


# ----------------------------------------------------------------------------- field files
def truth_celsius(depths, seed: int = 0) -> np.ndarray:
    """(Z, 32, 32) °C: warm surface, cooling with depth, a little structure; land (NaN) in one corner."""
    z = np.asarray(depths, np.float64)[:, None, None]
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rng = np.random.default_rng(seed)
    field = 8.0 + 20.0 * np.exp(-z / 120.0) + 0.5 * np.sin(y / 5.0) * np.cos(x / 7.0) * np.exp(-z / 300.0)
    field = field + 0.01 * rng.standard_normal(field.shape)
    field[:, :4, :4] = np.nan
    return field


def write_field(path: Path, values: np.ndarray, depths, *, encoding: str = "packed", units: str = "degrees_C",
                names: dict | None = None, date: str | None = "2010-07-16", ocean: np.ndarray | None = None,
                global_attrs: dict | None = None, variable: str = "thetao") -> Path:
    """A layout-L file of ``values`` ((Z, 32, 32), NaN = no value) stored as ``encoding``.

    ``packed``: int16, scale 0.000732444226741791, offset 21, _FillValue -32767 (GLORYS12);
    ``float``: float32, _FillValue NaN; ``sentinel``: float32 with no _FillValue, 9999.0 where there is no
    value and valid_min -5 / valid_max 45. ``date`` None: no time dimension. ``ocean``: an int8 ocean_mask.
    """
    names = {**LAYOUT_NAMES, **(names or {})}
    dims = ([names["time"]] if date else []) + [names["depth"], names["lat"], names["lon"]]
    with netCDF4.Dataset(path, "w") as ds:
        if date:
            ds.createDimension(names["time"], 1)
            time = ds.createVariable(names["time"], "f8", (names["time"],))
            time.units, time.calendar, time.standard_name = "hours since 1950-01-01", "standard", "time"
            stamp = datetime.datetime.fromisoformat(date)
            time[:] = (stamp - datetime.datetime(1950, 1, 1)).total_seconds() / 3600.0
        ds.createDimension(names["depth"], len(depths))
        ds.createDimension(names["lat"], SIZE)
        ds.createDimension(names["lon"], SIZE)
        for role, values_1d, attrs in (
            ("depth", np.asarray(depths, np.float32), {"units": "m", "positive": "down", "standard_name": "depth"}),
            ("lat", (20.0 + np.arange(SIZE) / 12.0).astype(np.float32),
             {"units": "degrees_north", "standard_name": "latitude"}),
            ("lon", (-120.0 + np.arange(SIZE) / 12.0).astype(np.float32),
             {"units": "degrees_east", "standard_name": "longitude"}),
        ):
            coord = ds.createVariable(names[role], "f4", (names[role],))
            coord.setncatts(attrs)
            coord[:] = values_1d
        _write_values(ds, variable, dims, values, encoding, units)
        if ocean is not None:
            mask = ds.createVariable("ocean_mask", "i1", tuple(dims[-3:]))
            mask[:] = ocean.astype(np.int8)
        ds.setncatts(global_attrs or {})
    return path


def _write_values(ds, variable: str, dims: list[str], values: np.ndarray, encoding: str, units: str) -> None:
    stored = values[None] if len(dims) == 4 else values
    if encoding == "packed":
        var = ds.createVariable(variable, "i2", dims, fill_value=np.int16(-32767))
        var.set_auto_maskandscale(False)
        var.scale_factor, var.add_offset = glorys.THETAO_SCALE_FACTOR, glorys.THETAO_ADD_OFFSET
        packed = np.round((stored - glorys.THETAO_ADD_OFFSET) / glorys.THETAO_SCALE_FACTOR)
        var[:] = np.where(np.isfinite(stored), packed, -32767).astype(np.int16)
    elif encoding == "float":
        var = ds.createVariable(variable, "f4", dims, fill_value=np.float32(np.nan))
        var[:] = stored.astype(np.float32)
    elif encoding == "sentinel":
        var = ds.createVariable(variable, "f4", dims, fill_value=False)
        var.valid_min, var.valid_max = np.float32(-5.0), np.float32(45.0)
        var[:] = np.where(np.isfinite(stored), stored, 9999.0).astype(np.float32)
    else:
        raise ValueError(encoding)
    var.units = units
    var.standard_name = "sea_water_potential_temperature"


def sparse(values: np.ndarray, keep: float = 0.1, seed: int = 1) -> np.ndarray:
    """``values`` with all but ``keep`` of the cells hidden (NaN)."""
    return np.where(np.random.default_rng(seed).random(values.shape) < keep, values, np.nan)


def settings_for(depths, variant: str = "temp_v1", depth_indices=(0, 1, 2, 3)) -> dict:
    config = load_config([], {"export": {"depth_indices": list(depth_indices), "patch_size": 16, "stride": 16},
                              "dataset": {"temp_v1_band": 3}, "model": {"dim": 8, "dim_mults": [1, 2],
                                                                         "working_units": "observed_mean"}})
    return model_settings(config, variant, depths)


def untrained_checkpoint(path: Path, depths, variant: str = "temp_v1") -> Path:
    """An untrained tiny model (observed_mean units: nothing to fit) recording ``depths`` as its bands' levels."""
    config = load_config([], {"export": {"depth_indices": [0, 1, 2, 3], "patch_size": 16, "stride": 16},
                              "dataset": {"temp_v1_band": 3},
                              "model": {"dim": 8, "dim_mults": [1, 2], "working_units": "observed_mean"}})
    module = build_module(config, variant, depths)
    save_model(module, module.state_dict(), path)
    return path


def observation_file(tmp_path: Path, depths, name: str = "obs.nc", **kwargs) -> tuple[Path, np.ndarray]:
    truth = truth_celsius(depths)
    kwargs.setdefault("ocean", np.isfinite(truth))
    kwargs.setdefault("encoding", "float")
    return write_field(tmp_path / name, sparse(truth), depths, **kwargs), truth


# ----------------------------------------------------------------------------- one date source
def local_config(tmp_path: Path, local_dir: Path, depth_indices) -> dict:
    return load_config([], {
        "data_dir": str(tmp_path / "data"), "results_dir": str(tmp_path / "results"),
        "source": {"kind": "local", "local_dir": str(local_dir)},
        "export": {"depth_indices": list(depth_indices), "patch_size": 16, "stride": 16, "workers": 1},
        "dataset": {"temp_v1_band": 3},
        "model": {"dim": 8, "dim_mults": [1, 2], "working_units": "observed_mean"},
    })


def export_local(tmp_path: Path, files: dict[str, tuple], depth_indices) -> tuple[dict, Path]:
    """Write layout-L files {name: (depths, date)} to a local folder, download + export; split in halves."""
    local = tmp_path / "local"
    local.mkdir()
    for name, (depths, date) in files.items():
        write_field(local / name, truth_celsius(depths), depths, date=date)
    config = local_config(tmp_path, local, depth_indices)
    index_csv = export_patches(config, run_download(config), workers=1)
    index = pd.read_csv(index_csv)
    index["split"] = np.where(index["x0"] == 0, "train", "val")  # whole columns of tiles: no window on both sides
    index["window_id"] = [f"w{x0}" for x0 in index["x0"]]
    index.to_csv(index_csv.parent / "patch_index_split.csv", index=False)
    return config, index_csv.parent / "patch_index_split.csv"


def test_patch_date_is_the_file_time_for_a_copernicus_subset_name(tmp_path):
    """The name ends in _2010-07-01 (the request), the time is 2010-07-16: samples carry 20100716, not 19700115."""
    config, split_csv = export_local(tmp_path, {CMEMS_NAME: (GLORYS_22, "2010-07-16")}, (0, 7, 14, 21))
    index = read_index(split_csv)
    assert set(index["date"]) == {20100716}
    dataset = PatchDataset(index, config, "all", "temp_v1")
    assert {int(dataset[k]["date"]) for k in range(len(dataset))} == {20100716}


def test_reconstruct_takes_the_date_of_the_time_coordinate(tmp_path):
    obs, _ = observation_file(tmp_path, FIVE_LEVELS, date="2010-07-16")
    grid = read_observations(obs, settings_for(FIVE_LEVELS[:4]))
    assert grid.date == 20100716


def test_reconstruct_takes_the_date_of_the_global_attributes(tmp_path):
    obs, _ = observation_file(tmp_path, FIVE_LEVELS, date=None,
                              global_attrs={"time_coverage_start": "2010-07-16T00:00:00Z",
                                            "time_coverage_end": "2010-07-16T23:59:59Z"})
    assert read_observations(obs, settings_for(FIVE_LEVELS[:4])).date == 20100716


def test_an_undated_observation_file_is_refused_or_takes_date_option(tmp_path):
    obs, _ = observation_file(tmp_path, FIVE_LEVELS, date=None)
    with pytest.raises(FieldFileError, match=r"obs\.nc.*--date"):  # never a made-up 1970-01-15
        read_observations(obs, settings_for(FIVE_LEVELS[:4]))
    assert read_observations(obs, settings_for(FIVE_LEVELS[:4]), date=20100716).date == 20100716
    dated, _ = observation_file(tmp_path, FIVE_LEVELS, name="dated.nc", date="2010-07-16")
    with pytest.raises(ReconstructionError, match="20100716.*20100801"):
        read_observations(dated, settings_for(FIVE_LEVELS[:4]), date=20100801)


def test_cli_date_option(tmp_path, capsys):
    checkpoint = untrained_checkpoint(tmp_path / "model.ckpt", FIVE_LEVELS[:4])
    obs, _ = observation_file(tmp_path, FIVE_LEVELS, date=None)
    out = tmp_path / "out.nc"
    args = ["reconstruct", str(checkpoint), str(obs), str(out), "--ensemble-size", "1", "--steps", "2"]
    assert cli.main(args) == 1 and not out.exists()
    assert cli.main([*args, "--date", "2010-07-16"]) == 0
    assert xr.open_dataset(out)["time"].values[0] == np.datetime64("2010-07-16")
    with pytest.raises(SystemExit):
        cli.main([*args, "--date", "2010-13-01"])
    assert "YYYY-MM-DD" in capsys.readouterr().err


def test_index_dates_and_depths_are_checked(tmp_path):
    _, split_csv = export_local(tmp_path, {"a_201007.nc": (FIVE_LEVELS, "2010-07-16")}, (0, 1, 2, 3))
    index = read_index(split_csv)
    assert index_depths(index) == pytest.approx(FIVE_LEVELS[:4], rel=1e-6)
    index.loc[1, "depth_values"] = "0.494025;1.541375;2.645669;3.819495"
    with pytest.raises(PatchIndexError, match="one depth axis"):
        index_depths(index)


# ----------------------------------------------------------------------------- depths by value
@pytest.fixture(scope="module")
def five_level_model(tmp_path_factory):
    """The issue's case: trained (here: built, untrained) on files holding 5 levels, depth_indices [0,1,2,3],
    temp_v1_band 3 = 92.326 m; the depths come from the export index through the training datamodule."""
    tmp_path = tmp_path_factory.mktemp("five")
    files = {"five_201007.nc": (FIVE_LEVELS, "2010-07-16"), "five_201008.nc": (FIVE_LEVELS, "2010-08-16")}
    config, split_csv = export_local(tmp_path, files, (0, 1, 2, 3))
    datamodule = DepthDifDataModule(config, variant="temp_v1", index_csv=split_csv)
    module = build_module(config, "temp_v1", training_depths(datamodule))
    path = tmp_path / "model.ckpt"
    save_model(module, module.state_dict(), path)
    return path, config, split_csv


def test_checkpoint_records_the_depths_of_the_training_files(five_level_model):
    path, _, _ = five_level_model
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION
    assert payload["config"]["export"]["depth_values_m"] == pytest.approx(FIVE_LEVELS[:4], rel=1e-6)


@pytest.mark.parametrize(("depths", "level"), [(FIVE_LEVELS, 3), (GLORYS_22, 21)])
def test_five_level_model_reconstructs_92m_from_either_file(tmp_path, five_level_model, depths, level):
    """On 5-level observations it finds 92.326 m (it used to look for 3.82 m and refuse); on the 22 GLORYS
    levels it takes level 21 = 92.326 m (it used to reconstruct 3.82 m and write depth 3.82)."""
    checkpoint, _, _ = five_level_model
    obs, truth = observation_file(tmp_path, depths)
    out = reconstruct_file(checkpoint, obs, tmp_path / "out.nc", ensemble_size=1, steps=2)
    result = xr.open_dataset(out)
    assert result["depth"].values == pytest.approx([92.326], abs=1e-3)
    observed = result["observation_mask"].values[0, 0].astype(bool)
    assert observed.sum() > 50
    np.testing.assert_allclose(result["thetao"].values[0, 0][observed], truth[level][observed], atol=1e-4)


def test_a_format_2_checkpoint_is_refused_by_reconstruct_not_guessed(tmp_path):
    path = untrained_checkpoint(tmp_path / "old.ckpt", FIVE_LEVELS[:4])
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 2
    del payload["config"]["export"]["depth_values_m"]
    torch.save(payload, path)
    obs, _ = observation_file(tmp_path, GLORYS_22)
    with pytest.raises(CheckpointError, match=r"old\.ckpt does not record the depths.*\[0, 1, 2, 3\].*Retrain"):
        reconstruct_file(path, obs, tmp_path / "out.nc", ensemble_size=1, steps=2)
    assert not (tmp_path / "out.nc").exists()


def test_evaluate_matches_the_index_levels_to_the_model_levels(five_level_model):
    _, config, split_csv = five_level_model
    index = read_index(split_csv)
    trained = settings_for(FIVE_LEVELS[:4])
    assert band_depths_of(index, config, "temp_v1", trained) == pytest.approx([92.32607], rel=1e-6)
    assert band_depths_of(index, config, "eo_4band", trained) == pytest.approx(FIVE_LEVELS[1:4], rel=1e-6)
    # a format-2 model (no depths) is scored on the index's levels, as before
    assert band_depths_of(index, config, "temp_v1", settings_for(None)) == pytest.approx([92.32607], rel=1e-6)
    with pytest.raises(CheckpointError, match="trained on levels"):
        band_depths_of(index, config, "temp_v1", settings_for(GLORYS_22[:4]), Path("m.ckpt"))


def test_evaluate_real_and_reconstruct_month_pick_levels_by_value(tmp_path):
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    write_field(real_dir / "glorys_201007.nc", truth_celsius(GLORYS_22), GLORYS_22)
    # the real sample's export looks the run's levels up by value: 0.49, 9.57, 29.44, 92.33 m of the 22 levels
    assert matching_depth_indices(real_dir / "glorys_201007.nc", FIVE_LEVELS[:4]) == [0, 7, 14, 21]
    _check_model_levels(settings_for(FIVE_LEVELS[:4]), list(FIVE_LEVELS[:4]), Path("f.nc"))
    with pytest.raises(ValueError, match=r"f\.nc holds levels"):
        _check_model_levels(settings_for(FIVE_LEVELS[:4]), list(GLORYS_22[:4]), Path("f.nc"))


# ----------------------------------------------------------------------------- CF decoding of the inputs
def test_sentinel_9999_outside_the_valid_range_is_not_observed(tmp_path):
    """No _FillValue, 9999.0 where unobserved, valid_min -5 / valid_max 45: 9999 is no value (it used to
    give 1,024 observed cells up to 9999 °C)."""
    obs, truth = observation_file(tmp_path, FIVE_LEVELS, encoding="sentinel")
    grid = read_observations(obs, settings_for(FIVE_LEVELS[:4]))
    expected = np.isfinite(sparse(truth))[3]
    assert (grid.observed >= 9999).sum() == 0
    np.testing.assert_array_equal(np.isfinite(grid.observed[0]), expected)
    np.testing.assert_allclose(grid.observed[0][expected], truth[3][expected], atol=1e-5)


def test_packed_observations_are_decoded(tmp_path):
    obs, truth = observation_file(tmp_path, GLORYS_22, encoding="packed")
    grid = read_observations(obs, settings_for(FIVE_LEVELS[:4]))
    observed = np.isfinite(grid.observed[0])
    np.testing.assert_array_equal(observed, np.isfinite(sparse(truth))[21])
    np.testing.assert_allclose(grid.observed[0][observed], truth[21][observed], atol=glorys.THETAO_SCALE_FACTOR)


def test_kelvin_observations_are_converted(tmp_path):
    truth = truth_celsius(FIVE_LEVELS)
    obs = write_field(tmp_path / "kelvin.nc", sparse(truth) + KELVIN, FIVE_LEVELS, encoding="float", units="K",
                      ocean=np.isfinite(truth))
    grid = read_observations(obs, settings_for(FIVE_LEVELS[:4]))
    observed = np.isfinite(grid.observed[0])
    np.testing.assert_allclose(grid.observed[0][observed], truth[3][observed], atol=1e-4)


def test_implausible_temperatures_are_refused_naming_the_file(tmp_path):
    truth = truth_celsius(FIVE_LEVELS)
    obs = write_field(tmp_path / "hot.nc", sparse(truth) + 40.0, FIVE_LEVELS, encoding="float",
                      ocean=np.isfinite(truth))
    with pytest.raises(FieldFileError, match=r"hot\.nc"):
        read_observations(obs, settings_for(FIVE_LEVELS[:4]))


def write_satellite_sst(path: Path, surface_c: np.ndarray, names=("lat", "lon")) -> Path:
    """An L4 satellite SST file: analysed_sst(time, lat, lon) int16 in kelvin, GHRSST packing."""
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 1)
        time = ds.createVariable("time", "i4", ("time",))
        time.units, time.standard_name = "seconds since 1981-01-01 00:00:00", "time"
        time[:] = int((datetime.datetime(2010, 7, 16) - datetime.datetime(1981, 1, 1)).total_seconds())
        for name, start in zip(names, (20.0, -120.0), strict=True):
            ds.createDimension(name, SIZE)
            coord = ds.createVariable(name, "f4", (name,))
            coord[:] = (start + np.arange(SIZE) / 12.0).astype(np.float32)
        sst = ds.createVariable("analysed_sst", "i2", ("time", *names), fill_value=np.int16(-32768))
        sst.set_auto_maskandscale(False)
        sst.scale_factor, sst.add_offset = 0.001, 298.15
        sst.valid_min, sst.valid_max = np.int16(-32767), np.int16(32767)
        sst.units, sst.standard_name = "kelvin", "sea_surface_foundation_temperature"
        packed = np.round((surface_c + KELVIN - 298.15) / 0.001)
        sst[:] = np.where(np.isfinite(surface_c), packed, -32768).astype(np.int16)[None]
        mask = ds.createVariable("mask", "i1", ("time", *names))
        mask[:] = np.ones((1, SIZE, SIZE), np.int8)
    return path


def test_a_kelvin_satellite_sst_on_lat_lon_is_the_surface_field(tmp_path):
    """`--surface` with a (time, lat, lon) analysed_sst in kelvin: found, decoded, converted (it used to give
    'has no temperature variable')."""
    truth = truth_celsius(FIVE_LEVELS)
    obs, _ = observation_file(tmp_path, FIVE_LEVELS)
    surface = write_satellite_sst(tmp_path / "sst.nc", truth[0])
    grid = read_observations(obs, settings_for(FIVE_LEVELS[:4], "eo_4band"), surface)
    ocean = np.isfinite(truth[0])
    np.testing.assert_array_equal(np.isfinite(grid.eo), ocean)
    np.testing.assert_allclose(grid.eo[ocean], truth[0][ocean], atol=1e-3)


def test_eo_model_reconstructs_with_a_satellite_surface(tmp_path):
    truth = truth_celsius(FIVE_LEVELS)
    checkpoint = untrained_checkpoint(tmp_path / "eo.ckpt", FIVE_LEVELS[:4], "eo_4band")
    obs, _ = observation_file(tmp_path, GLORYS_22, names={"lat": "lat", "lon": "lon"})
    surface = write_satellite_sst(tmp_path / "sst.nc", truth[0])
    out = reconstruct_file(checkpoint, obs, tmp_path / "out.nc", surface=surface, ensemble_size=1, steps=2)
    assert xr.open_dataset(out)["depth"].values == pytest.approx(FIVE_LEVELS[1:4], abs=1e-3)


# ----------------------------------------------------------------------------- axes by role
@pytest.mark.parametrize("names", [{"lat": "lat", "lon": "lon"},
                                   {"time": "time_counter", "depth": "deptht", "lat": "lat", "lon": "lon"}])
def test_observation_axes_by_alias(tmp_path, names):
    """(time, depth, lat, lon) used to fail with xarray's "Dimensions {'longitude', 'latitude'} do not exist"."""
    obs, truth = observation_file(tmp_path, GLORYS_22, names=names)
    checkpoint = untrained_checkpoint(tmp_path / "model.ckpt", FIVE_LEVELS[:4])
    out = reconstruct_file(checkpoint, obs, tmp_path / "out.nc", ensemble_size=1, steps=2)
    result = xr.open_dataset(out)
    assert result["thetao"].dims == ("time", "depth", "latitude", "longitude")
    np.testing.assert_array_equal(result["latitude"].values, (20.0 + np.arange(SIZE) / 12.0).astype(np.float32))
    assert result["time"].values[0] == np.datetime64("2010-07-16")
    observed = result["observation_mask"].values[0, 0].astype(bool)
    np.testing.assert_allclose(result["thetao"].values[0, 0][observed], truth[21][observed], atol=1e-4)


def test_an_axis_known_only_by_its_attributes_or_not_at_all(tmp_path):
    """'level' is no alias: with standard_name depth on its coordinate it is the depth; without, the file is
    refused naming it and its dims."""
    obs, truth = observation_file(tmp_path, GLORYS_22, names={"depth": "level"}, name="odd_axes.nc")
    grid = read_observations(obs, settings_for(FIVE_LEVELS[:4]))
    np.testing.assert_array_equal(np.isfinite(grid.observed[0]), np.isfinite(sparse(truth))[21])
    with netCDF4.Dataset(obs, "a") as ds:
        ds["level"].delncattr("standard_name")
    with pytest.raises(FieldFileError, match=r"odd_axes\.nc.*level"):
        read_observations(obs, settings_for(FIVE_LEVELS[:4]))


def test_a_surface_file_without_a_temperature_is_refused_listing_its_variables(tmp_path):
    truth = truth_celsius(FIVE_LEVELS)
    obs, _ = observation_file(tmp_path, FIVE_LEVELS)
    other = xr.Dataset({"chl": (("lat", "lon"), np.ones((SIZE, SIZE))), "kd490": (("lat", "lon"), truth[0])},
                       coords={"lat": 20.0 + np.arange(SIZE) / 12.0, "lon": -120.0 + np.arange(SIZE) / 12.0})
    other.to_netcdf(tmp_path / "colour.nc")
    with pytest.raises(ReconstructionError, match=r"colour\.nc.*chl.*kd490"):
        read_observations(obs, settings_for(FIVE_LEVELS[:4], "eo_4band"), tmp_path / "colour.nc")
