"""The CF reading layer (depthdif.cf) on layout "L" (tests/field_files.py): every case with the right value.

1 temperature units, 2 valid_* in the wrong units, 3 file dates, 5 land written as a number, 8 dimension
names. The pipeline cases run the local source's download stage and the export as a user would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
from fakes import write_cmems_month
from field_files import (
    CMEMS_NAME,
    EXPORT_LEVELS,
    LAND_COLUMNS,
    LAND_CORNER,
    NAME,
    NEMO_DIMS,
    SIZE,
    celsius_field,
    write_layout_l,
)

from depthdif import glorys
from depthdif.cf import (
    FieldFileError,
    apply_fill_values,
    axis_roles,
    canonical_names,
    decode_values,
    file_date,
    to_celsius,
)
from depthdif.config import load_config
from depthdif.download import DownloadError, run_download
from depthdif.export import ExportError, export_patches, read_levels
from depthdif.sources.synthetic import write_synthetic_month

PATCH = 16
REAL_SAMPLE = Path(__file__).parent / "data" / "glorys12_nwmexico"
KELVIN = [
    "K",
    "kelvin",
    "degK",
    "degree_K",
    "degrees_K",
    "deg_K",
    "degreeK",
    "degrees_kelvin",
    "kelvins",
    "°K",
]


# ------------------------------------------------------------------------------------------- helpers


def make_config(tmp_path: Path, **export) -> dict:
    source = {"kind": "local", "local_dir": str(tmp_path / "local"), "years": [2010], "months": [7]}
    settings = {"depth_indices": EXPORT_LEVELS, "patch_size": PATCH, "stride": PATCH, **export}
    return load_config(
        [], overrides={"data_dir": str(tmp_path / "data"), "source": source, "export": settings}
    )


def local_file(tmp_path: Path, name: str = NAME, **layout) -> Path:
    (tmp_path / "local").mkdir(parents=True, exist_ok=True)
    return write_layout_l(tmp_path / "local" / name, **layout)


def download_and_export(tmp_path: Path, **export) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """The local source's download, then the export: (manifest, index, index CSV path)."""
    config = make_config(tmp_path, **export)
    manifest = run_download(config)
    index_csv = export_patches(config, manifest, workers=1)
    return pd.read_csv(manifest), pd.read_csv(index_csv), index_csv


def export_only(tmp_path: Path, name: str = NAME, **export) -> Path:
    """The export of raw/<name> with a manifest written here (as if an earlier download had placed it)."""
    raw = tmp_path / "data" / "raw"
    data = (raw / name).read_bytes()
    row = {"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "date": 20100716}
    pd.DataFrame([row]).to_csv(raw / "manifest.csv", index=False)
    return export_patches(make_config(tmp_path, **export), raw / "manifest.csv", workers=1)


def raw_file(tmp_path: Path, name: str = NAME, **layout) -> Path:
    (tmp_path / "data" / "raw").mkdir(parents=True, exist_ok=True)
    return write_layout_l(tmp_path / "data" / "raw" / name, **layout)


def netcdf4_values(path: Path, variable: str = "thetao") -> np.ndarray:
    """(depth, lat, lon) float32 through netCDF4's own auto mask/scale: the independent reference."""
    with netCDF4.Dataset(path) as ds:
        var = ds.variables[variable]
        data = np.ma.filled(var[:].astype(np.float64), np.nan).astype(np.float32)
    return data[0] if data.ndim == 4 else data


def patches(index: pd.DataFrame, index_csv: Path) -> dict[tuple[int, int], np.ndarray]:
    return {(r.y0, r.x0): np.load(index_csv.parent / r.y_npy_path) for r in index.itertuples()}


def assert_patches_equal(index, index_csv, expected: np.ndarray, atol: float = 0.0) -> None:
    """Every patch equals ``expected`` (depth, lat, lon) at the exported levels and its window."""
    assert len(index) > 0
    for (y0, x0), patch in patches(index, index_csv).items():
        window = expected[EXPORT_LEVELS, y0 : y0 + PATCH, x0 : x0 + PATCH]
        np.testing.assert_allclose(patch, window, rtol=0, atol=atol)


# ------------------------------------------------------------------------------- 1 temperature units


@pytest.mark.parametrize("units", KELVIN)
def test_kelvin_spellings_are_exported_in_celsius(tmp_path, units):
    celsius = celsius_field()
    local_file(tmp_path, values=celsius + 273.15, dtype="float32", units=units)
    _, index, index_csv = download_and_export(tmp_path)
    assert (index["units"] == "degrees_C").all()
    assert_patches_equal(index, index_csv, celsius, atol=1e-4)  # ~27 °C, not ~300


@pytest.mark.parametrize("units", ["degrees_C", "degC", "celsius", "Celsius", "°C", "℃"])
def test_celsius_spellings_are_exported_unchanged(tmp_path, units):
    path = local_file(tmp_path, values=celsius_field(), dtype="float32", units=units)
    _, index, index_csv = download_and_export(tmp_path)
    assert (index["units"] == "degrees_C").all()
    assert_patches_equal(index, index_csv, netcdf4_values(path))  # bit for bit


@pytest.mark.parametrize("units", ["psu", "m"])
def test_units_that_are_not_a_temperature_stop_download_and_export(tmp_path, units):
    path = local_file(tmp_path, units=units)
    with pytest.raises(DownloadError) as caught:
        run_download(make_config(tmp_path))
    for needle in (str(path), "variable 'thetao'", f"units '{units}'", "not a temperature"):
        assert needle in str(caught.value)

    raw_file(tmp_path, units=units)  # placed by other means: the export refuses it the same way
    with pytest.raises(
        FieldFileError, match=rf"{NAME}, variable 'thetao': units '{units}' are not a temperature"
    ):
        export_only(tmp_path)


def test_missing_units_warn_that_celsius_is_assumed(tmp_path, caplog):
    path = local_file(tmp_path, units=None)
    with caplog.at_level(logging.WARNING, logger="depthdif.cf.units"):
        _, index, index_csv = download_and_export(tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path.name) in w and "no units attribute; assuming °C" in w for w in warnings)
    assert (index["units"] == "degrees_C").all()
    assert_patches_equal(index, index_csv, netcdf4_values(path))


def test_temperatures_no_sea_water_has_stop_the_export(tmp_path):
    # Kelvin numbers labelled °C: 300 °C after "conversion"
    local_file(tmp_path, values=celsius_field() + 273.15, dtype="float32", units="degC")
    with pytest.raises(FieldFileError) as caught:
        download_and_export(tmp_path)
    ocean = len(EXPORT_LEVELS) * (SIZE * SIZE - LAND_CORNER * LAND_CORNER)
    message = str(caught.value)
    assert NAME in message and f"{ocean} of {ocean} cells" in message and "-3..45 °C" in message
    assert not (tmp_path / "data" / "patches" / "patch_index_with_paths.csv").exists()


def test_salinity_keeps_its_units_and_values(tmp_path):
    salinity = np.full((22, SIZE, SIZE), 35.0)
    path = local_file(
        tmp_path,
        values=salinity,
        dtype="float32",
        variable="so",
        units="1e-3",
        standard_name="sea_water_salinity",
    )
    _, index, index_csv = download_and_export(tmp_path, variable="so")
    assert (pd.read_csv(index_csv, dtype={"units": str})["units"] == "1e-3").all()
    assert_patches_equal(index, index_csv, netcdf4_values(path, "so"))


@pytest.mark.parametrize("units", KELVIN + ["degree_kelvin", "degreesK", "Kelvin"])
def test_to_celsius_reads_every_udunits_kelvin_spelling(units):
    np.testing.assert_allclose(
        to_celsius(np.array([273.15, 300.0], np.float32), units, "f.nc"), [0.0, 26.85], atol=1e-4
    )


# -------------------------------------------------------------------------- 2 valid_* in wrong units


def test_valid_range_in_unpacked_units_is_refused_naming_it(tmp_path):
    local_file(tmp_path, valid_min=np.float32(-2.0), valid_max=np.float32(40.0))
    with pytest.raises(FieldFileError) as caught:
        download_and_export(tmp_path)
    message = str(caught.value)
    assert NAME in message and "valid_min=[-2.0], valid_max=[40.0]" in message
    assert "stored (packed) units" in message and "20.9985 .. 21.0293 after unpacking" in message
    assert "-31402 .. 25941" in message  # what to write instead
    assert "no patch survived" not in message


def test_valid_range_in_packed_units_masks_as_cf_says(tmp_path):
    limit = np.int16(round((26.6 - glorys.THETAO_ADD_OFFSET) / glorys.THETAO_SCALE_FACTOR))
    path = local_file(tmp_path, valid_max=limit)  # int16, the packed type: CF's reading is the only one
    _, index, index_csv = download_and_export(tmp_path, max_nodata_fraction=1.0)
    expected = netcdf4_values(path)
    assert np.nanmax(expected) <= 26.6 and np.isnan(expected[0]).sum() > LAND_CORNER**2
    assert_patches_equal(index, index_csv, expected)


def test_decode_masks_an_observation_sentinel_outside_the_valid_range():
    observed = np.array([[12.5, 9999.0, 30.25], [9999.0, -1.75, 9999.0]], dtype=np.float32)
    attrs = {"valid_min": np.float32(-5.0), "valid_max": np.float32(45.0), "units": "degC"}
    decoded = decode_values(observed, attrs, "obs.nc, variable 'thetao'")
    np.testing.assert_array_equal(decoded, [[12.5, np.nan, 30.25], [np.nan, -1.75, np.nan]])
    assert observed[0, 1] == 9999.0  # the input is not modified


def _attrs_cases():
    """(stored dtype, attributes, special stored values) netCDF4 decodes the CF way."""
    f8 = np.float64
    cmems = {"_FillValue": -32767, "scale_factor": f8(glorys.THETAO_SCALE_FACTOR), "add_offset": f8(21.0)}
    missing = np.array([-999, -998], np.int16)
    valid = {"valid_min": np.int16(-20000), "valid_max": np.int16(20000)}
    return [
        ("i2", cmems, [-32767]),
        ("i2", {"missing_value": missing, "scale_factor": f8(0.01)}, [-999, -998, -32767]),
        ("i1", {"_Unsigned": "true", "_FillValue": np.int8(-1), "scale_factor": np.float32(0.5)}, [-1]),
        ("f4", {"valid_range": np.array([-5.0, 45.0], np.float32)}, [9999.0, -50.0]),
        ("i2", {**valid, "add_offset": f8(10.0)}, [-25000, 25000]),
        ("f8", {}, [netCDF4.default_fillvals["f8"]]),
        ("i4", {"add_offset": f8(-3.5)}, [netCDF4.default_fillvals["i4"]]),
        ("u2", {"_FillValue": np.uint16(65535), "scale_factor": np.float32(0.001)}, [65535]),
        ("i2", {"valid_min": f8(-30000.0), "scale_factor": f8(0.001), "add_offset": f8(20.0)}, [-31000]),
    ]  # fmt: skip


@pytest.mark.parametrize(("dtype", "attrs", "special"), _attrs_cases())
def test_decode_equals_netcdf4_auto_mask_and_scale(tmp_path, dtype, attrs, special):
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        raw = rng.uniform(-3, 40, 500).astype(dtype)
    else:
        info = np.iinfo(dtype)
        raw = rng.integers(max(info.min, -30000), min(info.max, 30000), 500).astype(dtype)
    raw[: len(special)] = special
    path = tmp_path / "case.nc"
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("n", raw.size)
        fill = attrs.get("_FillValue")
        var = ds.createVariable("v", dtype, ("n",), fill_value=fill)
        var.set_auto_maskandscale(False)
        for key, value in attrs.items():
            if key != "_FillValue":
                var.setncattr(key, value)
        var[:] = raw
    with netCDF4.Dataset(path) as ds:
        var = ds.variables["v"]
        expected = np.ma.filled(var[:].astype(np.float64), np.nan).astype(np.float32)
        var.set_auto_maskandscale(False)
        got = decode_values(var[:], {k: var.getncattr(k) for k in var.ncattrs()}, "case.nc, variable 'v'")
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[: len(special)]).all()


def test_decode_keeps_the_cmems_packing_bit_identical_on_the_real_sample():
    for path in sorted(REAL_SAMPLE.glob("*.nc")):
        with netCDF4.Dataset(path) as ds:
            var = ds.variables["thetao"]
            expected = np.ma.filled(var[:], np.nan).astype(np.float32)
            var.set_auto_maskandscale(False)
            got = decode_values(var[:], {k: var.getncattr(k) for k in var.ncattrs()}, str(path))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------- 3 dates


def test_date_from_the_time_coordinate_beats_the_copernicus_name(tmp_path):
    local_file(tmp_path, name=CMEMS_NAME)  # name says 2010-07-01, time says 2010-07-16
    manifest, index, _ = download_and_export(tmp_path)
    assert manifest["date"].tolist() == [20100716]
    assert (index["date"] == 20100716).all() and index["sample_id"].str.startswith("201007_").all()


@pytest.mark.parametrize(
    ("coverage", "expected"),
    [
        ({"time_coverage_start": "2010-07-01T00:00:00Z"}, 20100701),
        (
            {"time_coverage_start": "2010-07-01T00:00:00Z", "time_coverage_end": "2010-08-01T00:00:00Z"},
            20100716,
        ),
    ],
    ids=["start", "midpoint"],
)
def test_date_from_time_coverage_without_a_time_coordinate(tmp_path, coverage, expected):
    local_file(tmp_path, name="layout_l.nc", time=None, global_attrs=coverage)
    manifest, index, _ = download_and_export(tmp_path)
    assert manifest["date"].tolist() == [expected] and (index["date"] == expected).all()


def test_date_from_the_name_last(tmp_path):
    local_file(tmp_path, name="layout_l_201007.nc", time=None)
    manifest, _, _ = download_and_export(tmp_path)
    assert manifest["date"].tolist() == [20100715]


def test_no_date_anywhere_is_an_error_naming_the_file(tmp_path):
    path = local_file(tmp_path, name="layout_l.nc", time=None)
    with pytest.raises(DownloadError, match=re.escape(f"{path}: no date")):
        run_download(make_config(tmp_path))
    assert not list((tmp_path / "data" / "raw").glob("*.nc"))
    with pytest.raises(FieldFileError, match="no time coordinate with a value"):
        file_date(path)


def test_file_date_reads_time_counter_and_keeps_the_day(tmp_path):
    stamp = dt.datetime(2010, 12, 16, 12)
    assert file_date(write_layout_l(tmp_path / "a.nc", dims=NEMO_DIMS, time=stamp)) == 20101216
    assert file_date(REAL_SAMPLE / "mercatorglorys12v1_gl12_mean_201011.nc") == 20101116


@pytest.mark.parametrize(
    ("name", "date"),
    [("mercatorglorys12v1_gl12_mean_201011.nc", 20101115), ("x_20101103.nc", 20101103),
     (CMEMS_NAME, 20100701), ("/data/raw/mercatorglorys12v1_gl12_mean_200002.nc", 20000215),
     ("odd_name.nc", None), ("x_2010.nc", None), ("x_201013.nc", None), ("x_2010-02-30.nc", None),
     ("nodate", None)],
)  # fmt: skip
def test_date_of_file_reads_the_name_or_says_none(name, date):
    assert glorys.date_of_file(name) == date


# ------------------------------------------------------------------------- 5 land written as a number


def test_land_written_as_zero_stops_the_export(tmp_path):
    local_file(tmp_path, dtype="float32", fill_attrs=False, land_value=0.0)
    with pytest.raises(FieldFileError) as caught:
        download_and_export(tmp_path)
    message = str(caught.value)
    assert NAME in message and f"0.0 in {LAND_COLUMNS * SIZE} cells" in message
    assert "export.fill_values" in message


def test_declared_fill_value_becomes_no_data(tmp_path):
    local_file(tmp_path, dtype="float32", fill_attrs=False, land_value=0.0)
    _, index, index_csv = download_and_export(tmp_path, fill_values=[0.0], max_nodata_fraction=1.0)
    tiles = patches(index, index_csv)
    assert set(tiles) == {(0, 0), (0, 16), (16, 0), (16, 16)}
    for (_, x0), patch in tiles.items():
        if x0 == 0:
            assert (
                np.isnan(patch[:, :, :LAND_COLUMNS]).all() and not np.isnan(patch[:, :, LAND_COLUMNS:]).any()
            )
    fractions = dict(zip(zip(index["y0"], index["x0"], strict=True), index["nodata_fraction"], strict=True))
    assert fractions[(0, 0)] == fractions[(16, 0)] == LAND_COLUMNS / PATCH
    assert fractions[(0, 16)] == 0.0 and fractions[(16, 16)] == LAND_CORNER**2 / PATCH**2


def test_real_synthetic_and_fake_data_do_not_trip_the_land_check(tmp_path):
    for path in sorted(REAL_SAMPLE.glob("*.nc")):
        stack = read_levels(path, "thetao", (0, 1, 2, 3, 4))
        assert stack.units == "degrees_C" and np.isfinite(stack.data).any()
    config = load_config([], overrides={"data_dir": str(tmp_path / "data")})
    write_synthetic_month(config, 2010, 7, tmp_path / "synthetic_201007.nc")
    for levels in ((0, 4, 10, 17), tuple(EXPORT_LEVELS)):
        stack = read_levels(tmp_path / "synthetic_201007.nc", "thetao", levels)
        assert np.array_equal(apply_fill_values(stack.data.copy(), (), "x"), stack.data, equal_nan=True)
    read_levels(write_cmems_month(tmp_path / "fake_201007.nc", 2010, 7), "thetao", (0, 1, 2, 3))


# -------------------------------------------------------------------------------- 8 dimension names


@pytest.mark.parametrize(
    "dims",
    [NEMO_DIMS, {"time": "time", "depth": "z", "lat": "y", "lon": "x"}],
    ids=["nemo", "axis-attributes"],
)
def test_other_dim_names_are_accepted_and_exported_like_layout_l(tmp_path, dims):
    local_file(
        tmp_path / "glorys", dims={"time": "time", "depth": "depth", "lat": "latitude", "lon": "longitude"}
    )
    _, reference, reference_csv = download_and_export(tmp_path / "glorys")
    local_file(tmp_path / "other", dims=dims)
    manifest, index, index_csv = download_and_export(tmp_path / "other")
    assert manifest["date"].tolist() == [20100716]
    assert index_csv.read_bytes() == reference_csv.read_bytes()
    for key, patch in patches(reference, reference_csv).items():
        np.testing.assert_array_equal(patches(index, index_csv)[key], patch)
    with netCDF4.Dataset(tmp_path / "other" / "data" / "raw" / NAME) as ds:  # the copy has GLORYS names
        assert ds["thetao"].dimensions == ("time", "depth", "latitude", "longitude")


def test_export_reads_other_dim_names_without_the_renamed_copy(tmp_path):
    glorys_stack = read_levels(write_layout_l(tmp_path / "a.nc"), "thetao", tuple(EXPORT_LEVELS))
    nemo_stack = read_levels(
        write_layout_l(tmp_path / "b.nc", dims=NEMO_DIMS), "thetao", tuple(EXPORT_LEVELS)
    )
    np.testing.assert_array_equal(nemo_stack.data, glorys_stack.data)
    np.testing.assert_array_equal(nemo_stack.latitude, glorys_stack.latitude)


def test_unknown_dim_is_refused_at_download_naming_the_file(tmp_path):
    unknown = {"time": "time", "depth": "level", "lat": "latitude", "lon": "longitude"}
    path = local_file(tmp_path, dims=unknown, coordinate_attrs=False)
    with pytest.raises(DownloadError) as caught:
        run_download(make_config(tmp_path))
    message = str(caught.value)
    assert str(path) in message and "('time', 'level', 'latitude', 'longitude')" in message
    assert "no depth dimension" in message and "deptht" in message  # the accepted names are listed
    assert not list((tmp_path / "data" / "raw").glob("*.nc"))


def test_axis_roles_by_name_and_attribute_and_their_errors():
    attrs = {"y": {"axis": "Y"}, "x": {"standard_name": "longitude"}}.get
    roles = axis_roles(("time_counter", "deptht", "y", "x"), "f.nc", "thetao", attrs)
    assert roles == {"time": "time_counter", "depth": "deptht", "lat": "y", "lon": "x"}
    assert canonical_names(roles) == {
        "time_counter": "time",
        "deptht": "depth",
        "y": "latitude",
        "x": "longitude",
    }
    with pytest.raises(FieldFileError, match=r"both 'depth' and 'deptht' are depth"):
        axis_roles(("depth", "deptht", "lat", "lon"), "f.nc", "thetao")
    with pytest.raises(FieldFileError, match=r"f.nc: variable 'thetao' has dims .* no latitude, longitude"):
        axis_roles(("time", "depth", "y", "x"), "f.nc", "thetao")
    with pytest.raises(FieldFileError, match=r"\['member'\] is none of"):
        axis_roles(("member", "depth", "lat", "lon"), "f.nc", "thetao")


def test_export_error_types_cover_both_contracts(tmp_path):
    raw_file(tmp_path, units="psu")
    with pytest.raises(ExportError):
        export_only(tmp_path)


def test_a_manifest_without_dates_takes_the_date_the_file_states(tmp_path):
    # the one date rule holds for a hand-written manifest too: time coordinate (the 16th), not the name (15th)
    from depthdif.export import read_manifest

    write_layout_l(tmp_path / NAME)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"file,bytes,sha256,date\n{NAME},,,\n")
    assert [job.date for job in read_manifest(manifest)] == [20100716]
    (tmp_path / "undated.nc").write_bytes(b"not a netcdf file")
    manifest.write_text("file,bytes,sha256,date\nundated.nc,,,\n")
    with pytest.raises(ExportError, match=r"undated\.nc has no date"):
        read_manifest(manifest)
