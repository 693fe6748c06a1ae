"""Export on the real GLORYS12 sample: values exactly as in the NetCDF, edges kept, file variants, errors."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from depthdif.config import validate_config
from depthdif.download import write_month_manifest
from depthdif.export import COLUMNS, ExportError, export_month, export_patches, gather_index
from depthdif.glorys import date_of_file
from depthdif.layout import layout_of
from depthdif.reconstruction.tiling import tile_fractions, tile_origins

SAMPLE = Path(__file__).parent / "data" / "glorys12_nwmexico"
NOV, DEC = "mercatorglorys12v1_gl12_mean_201011.nc", "mercatorglorys12v1_gl12_mean_201012.nc"
LEVELS = [0, 2, 4]
SIZE = 32


# ------------------------------------------------------------------------------------------- helpers


def write_manifest(raw_dir: Path, names: list[str]) -> Path:
    rows = []
    for name in sorted(names):
        data = (raw_dir / name).read_bytes()
        rows.append(
            {
                "file": name,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "date": date_of_file(name),
            }
        )
    manifest = raw_dir / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def make_raw(tmp_path: Path, names=(NOV, DEC)) -> tuple[Path, Path]:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLE / name, raw / name)
    return raw, write_manifest(raw, list(names))


def config_for(tmp_path: Path, **export) -> dict:
    settings = {"patch_size": SIZE, "stride": SIZE, "depth_indices": LEVELS, **export}
    # the files are real GLORYS12 ones (any variable they hold), not the synthetic ocean's
    source = {"kind": "local", "local_dir": str(tmp_path / "data" / "raw")}
    return validate_config({"data_dir": str(tmp_path / "data"), "export": settings, "variants": ["temp_v1"],
                            "source": source})


def reference(path: Path, variable: str = "thetao", levels=LEVELS) -> dict:
    """The file read independently: whole variable through netCDF4's auto mask/scale (the sample is small)."""
    with netCDF4.Dataset(path) as ds:
        var = ds.variables[variable]
        data = np.ma.filled(var[:].astype(np.float64), np.nan)
        if "time" in var.dimensions:
            data = data[0]
        return {
            "data": data[levels],
            "lat": ds.variables["latitude"][:],
            "lon": ds.variables["longitude"][:],
            "depth": ds.variables["depth"][:][levels],
        }


def check_against_files(
    index_csv: Path, raw_dir: Path, variable: str = "thetao", levels=LEVELS
) -> pd.DataFrame:
    """Every patch equals the NetCDF values at its (y0, x0) and levels; coordinates and metadata agree."""
    index = pd.read_csv(index_csv)
    assert list(index.columns) == COLUMNS
    refs = {name: reference(raw_dir / name, variable, levels) for name in index["source_file"].unique()}
    for row in index.itertuples():
        ref = refs[row.source_file]
        patch = np.load(index_csv.parent / row.y_npy_path)
        assert patch.dtype == np.float32 and patch.shape == (len(levels), SIZE, SIZE)
        window = ref["data"][:, row.y0 : row.y0 + SIZE, row.x0 : row.x0 + SIZE]
        np.testing.assert_array_equal(patch, window.astype(np.float32))
        assert (
            np.float32(row.lat0) == ref["lat"][row.y0]
            and np.float32(row.lat1) == ref["lat"][row.y0 + SIZE - 1]
        )
        assert (
            np.float32(row.lon0) == ref["lon"][row.x0]
            and np.float32(row.lon1) == ref["lon"][row.x0 + SIZE - 1]
        )
        assert row.nodata_fraction == pytest.approx(np.isnan(window).any(axis=0).mean(), abs=1e-12)
        assert row.depth_indices == ";".join(map(str, levels))
        assert np.allclose([float(v) for v in row.depth_values.split(";")], ref["depth"], rtol=1e-6)
        assert row.variable == variable and row.num_channels == len(levels) and row.patch_size == SIZE
        assert row.sample_id == f"{row.date // 100}_{row.y0}_{row.x0}"
    on_disk = sorted(p.name for p in (index_csv.parent / "y_npy").iterdir())
    assert on_disk == sorted(Path(p).name for p in index["y_npy_path"])
    return index


def modified_copy(raw: Path, change) -> str:
    """Write the November file changed by ``change(ds) -> ds`` with xarray (int16 packing kept)."""
    name = "mercatorglorys12v1_gl12_mean_201011.nc"
    with xr.open_dataset(SAMPLE / name) as ds:
        changed = change(ds.load())
    changed.to_netcdf(raw / name)
    return name


# ---------------------------------------------------------------------------------------------- tests


def test_values_equal_the_netcdf_values(tmp_path):
    raw, manifest = make_raw(tmp_path)
    index_csv = export_patches(config_for(tmp_path), manifest, workers=1)
    assert index_csv == tmp_path / "data" / "patches" / "patch_index_with_paths.csv"
    index = check_against_files(index_csv, raw)
    assert set(index["source_file"]) == {NOV, DEC}
    assert list(index.sort_values(["date", "y0", "x0"]).index) == list(index.index)
    assert (index["split"] == "unassigned").all()
    # land is NaN: the coastal tiles kept hold NaN exactly where the file has no data
    assert (index["nodata_fraction"] > 0).any()
    assert index["nodata_fraction"].max() <= 0.5


def test_filter_keeps_exactly_the_tiles_under_the_threshold(tmp_path):
    raw, manifest = make_raw(tmp_path, names=(NOV,))
    index = pd.read_csv(export_patches(config_for(tmp_path, max_nodata_fraction=0.3), manifest, workers=1))
    nodata = np.isnan(reference(raw / NOV)["data"]).any(axis=0)
    origins = tile_origins(nodata.shape, SIZE, SIZE)
    fractions = tile_fractions(nodata, origins, SIZE)
    expected = {o for o, f in zip(origins, fractions, strict=True) if f <= 0.3 and f < 1}
    assert set(zip(index["y0"], index["x0"], strict=True)) == expected
    assert 0 < len(expected) < len(origins)


def test_no_edge_dropped(tmp_path):
    raw, manifest = make_raw(tmp_path, names=(NOV,))
    levels = [0, 1, 2]  # the 318 m level has no data in the last row; the upper ones do
    config = config_for(tmp_path, max_nodata_fraction=1.0, depth_indices=levels)
    index = pd.read_csv(export_patches(config, manifest, workers=1))
    ref = reference(raw / NOV, levels=levels)["data"]
    height, width = ref.shape[1:]
    assert index["y0"].max() + SIZE == height and index["x0"].max() + SIZE == width  # 169, 181: not multiples
    cover = np.zeros((height, width), dtype=bool)
    for y0, x0 in zip(index["y0"], index["x0"], strict=True):
        cover[y0 : y0 + SIZE, x0 : x0 + SIZE] = True
    has_data = ~np.isnan(ref).any(axis=0)
    assert cover[has_data].all()
    # ocean beyond the last regular tile (rows >= 160, columns >= 160) exists, so the covering test bites
    assert has_data[-1].any() and has_data[:, 160:].any()
    assert (index["nodata_fraction"] < 1).all()  # all-land tiles are dropped even at max_nodata_fraction 1


def _descending_latitude(ds):
    return ds.isel(latitude=slice(None, None, -1))


def _longitude_0_360(ds):
    return ds.assign_coords(longitude=(ds["longitude"] % 360).astype(np.float32))


def _no_time(ds):
    return ds.isel(time=0, drop=True)


def _salinity(ds):
    return ds.rename({"thetao": "so"}).drop_vars("zos")


def _unpacked_float(ds):
    """Plain float32 with NaN fill: decoded by netCDF4's auto mask/scale, not the int16 fast path."""
    ds["thetao"].encoding = {"dtype": "float32", "_FillValue": np.float32(np.nan), "zlib": True}
    return ds


def _packed_with_valid_max(ds):
    """int16 with a valid_max (CF, packed units) below some ocean values: netCDF4 masks those too."""
    ds["thetao"].attrs["valid_max"] = np.int16(-5000)  # about 17.3 °C
    return ds


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        (_descending_latitude, "thetao"),
        (_longitude_0_360, "thetao"),
        (_no_time, "thetao"),
        (_salinity, "so"),
        (_unpacked_float, "thetao"),
        (_packed_with_valid_max, "thetao"),
    ],
)
def test_file_variants_real_files_have(tmp_path, change, variable):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    name = modified_copy(raw, change)
    manifest = write_manifest(raw, [name])
    index_csv = export_patches(config_for(tmp_path, variable=variable), manifest, workers=1)
    index = check_against_files(index_csv, raw, variable=variable)
    if change is _descending_latitude:
        assert (index["lat0"] > index["lat1"]).all()
        # the same ocean as the original file, just counted from the north
        original = reference(SAMPLE / NOV)["data"][:, ::-1]
        row = index.iloc[0]
        patch = np.load(index_csv.parent / row.y_npy_path)
        np.testing.assert_array_equal(
            patch, original[:, row.y0 : row.y0 + SIZE, row.x0 : row.x0 + SIZE].astype(np.float32)
        )
    if change is _longitude_0_360:
        assert index["lon0"].between(180, 360).all() and (index["lon0"] < index["lon1"]).all()
    if change is _packed_with_valid_max:
        values = np.concatenate([np.load(index_csv.parent / p).ravel() for p in index["y_npy_path"]])
        assert np.nanmax(values) <= 21.0 - 5000 * 0.000732444226741791 + 1e-6


def test_workers_2_gives_the_same_output_as_workers_1(tmp_path):
    _, manifest = make_raw(tmp_path)
    out1, out2 = tmp_path / "w1", tmp_path / "w2"
    csv1 = export_patches(config_for(tmp_path), manifest, out_dir=out1, workers=1)
    csv2 = export_patches(config_for(tmp_path), manifest, out_dir=out2, workers=2)
    assert csv1.read_bytes() == csv2.read_bytes()
    for path in sorted((out1 / "y_npy").iterdir()):
        assert path.read_bytes() == (out2 / "y_npy" / path.name).read_bytes()


def test_rerun_is_identical_and_removes_stale_files(tmp_path):
    _, manifest = make_raw(tmp_path)
    first = export_patches(config_for(tmp_path), manifest, workers=1)
    first_bytes = first.read_bytes()
    npy_dir = first.parent / "y_npy"
    (npy_dir / ".201011_0_0.x1y2.tmp.npy").write_bytes(b"left by a killed run")
    (npy_dir / "199901_0_0.npy").write_bytes(b"from an old config")
    assert export_patches(config_for(tmp_path), manifest, workers=1).read_bytes() == first_bytes
    assert sorted(p.name for p in npy_dir.iterdir()) == sorted(
        f"{s}.npy" for s in pd.read_csv(first)["sample_id"]
    )
    # a changed config: the index and the folder again match exactly
    index = pd.read_csv(export_patches(config_for(tmp_path, patch_size=64, stride=48), manifest, workers=1))
    assert sorted(p.name for p in npy_dir.iterdir()) == sorted(f"{s}.npy" for s in index["sample_id"])
    assert (index["patch_size"] == 64).all()


def test_rerun_removes_the_split_index_of_the_previous_export(tmp_path, caplog):
    _, manifest = make_raw(tmp_path)
    first = export_patches(config_for(tmp_path), manifest, workers=1)
    split_csv = first.parent / "patch_index_split.csv"
    old_split = pd.read_csv(first).assign(split="train", window_id=0)
    old_split.to_csv(split_csv, index=False)
    with caplog.at_level(logging.INFO, logger="depthdif.export"):
        export_patches(config_for(tmp_path, patch_size=64, stride=48), manifest, workers=1)
    # the old split's rows name patches this export deleted: it must not survive
    assert not all((first.parent / relative).exists() for relative in old_split["y_npy_path"])
    assert not split_csv.exists()
    assert any(str(split_csv) in r.getMessage() and "run split again" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="depthdif.export"):  # no split index: nothing to say
        export_patches(config_for(tmp_path, patch_size=64, stride=48), manifest, workers=1)
    assert not any("patch_index_split.csv" in r.getMessage() for r in caplog.records)


def test_two_files_of_one_month_get_distinct_ids(tmp_path):
    raw, _ = make_raw(tmp_path, names=(NOV,))
    shutil.copy(SAMPLE / NOV, raw / "mercatorglorys12v1_gl12_mean_20101116.nc")
    manifest = write_manifest(raw, [NOV, "mercatorglorys12v1_gl12_mean_20101116.nc"])
    index = pd.read_csv(export_patches(config_for(tmp_path), manifest, workers=1))
    assert index["sample_id"].is_unique
    assert index["sample_id"].str.startswith("201011_mercatorglorys12v1_gl12_mean_").all()


def test_all_filtered_month_warns_and_continues(tmp_path, caplog):
    raw, _ = make_raw(tmp_path, names=(DEC,))
    name = modified_copy(raw, lambda ds: ds.assign(thetao=ds["thetao"] * np.nan))
    manifest = write_manifest(raw, [name, DEC])
    with caplog.at_level(logging.WARNING, logger="depthdif.export"):
        index = pd.read_csv(export_patches(config_for(tmp_path), manifest, workers=1))
    assert set(index["source_file"]) == {DEC} and len(index) > 0
    assert any(name in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_nothing_survives_is_an_error_and_leaves_no_index(tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    name = modified_copy(raw, lambda ds: ds.assign(thetao=ds["thetao"] * np.nan))
    manifest = write_manifest(raw, [name])
    with pytest.raises(ExportError, match="no patch survived"):
        export_patches(config_for(tmp_path), manifest, workers=1)
    assert not (tmp_path / "data" / "patches" / "patch_index_with_paths.csv").exists()


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _scribble(path: Path) -> None:
    with path.open("r+b") as handle:  # garbage in the middle of the compressed data
        handle.seek(path.stat().st_size // 2)
        handle.write(b"\xff" * 2000)


@pytest.mark.parametrize(
    ("export", "damage", "match"),
    [
        ({"variable": "uo"}, None, r"variable 'uo' not found .*thetao"),
        ({"depth_indices": [0, 7]}, None, r"\[7\] out of range: the file's depth axis has 5 levels"),
        ({}, _truncate, "truncated or corrupt"),
        ({}, _scribble, "truncated or corrupt"),
    ],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_bad_input_is_a_clear_error_naming_the_file(tmp_path, export, damage, match, workers):
    raw, manifest = make_raw(tmp_path)
    good = export_patches(config_for(tmp_path), manifest, workers=1)  # an index from an earlier run
    if damage:
        damage(raw / DEC)
    with pytest.raises(ExportError, match=match) as caught:
        export_patches(config_for(tmp_path, **export), manifest, workers=workers)
    assert "mercatorglorys12v1_gl12_mean_2010" in str(caught.value)
    if damage:
        assert DEC in str(caught.value)
    assert not good.exists()


def test_missing_file_and_manifest_errors(tmp_path):
    raw, manifest = make_raw(tmp_path)
    with pytest.raises(ExportError, match="manifest not found"):
        export_patches(config_for(tmp_path), raw / "nope.csv", workers=1)
    (raw / NOV).unlink()
    with pytest.raises(ExportError, match=f"{NOV}: listed in the manifest but missing"):
        export_patches(config_for(tmp_path), manifest, workers=1)


def _depth_as_level_without_axis(ds):
    """A depth dimension neither named nor marked (axis Z) as one: no reader can know it is depth."""
    ds = ds.rename({"depth": "level"})
    ds["level"].attrs = {k: v for k, v in ds["level"].attrs.items() if k not in ("axis", "standard_name")}
    return ds


def test_wrong_dims_is_a_clear_error(tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    name = modified_copy(raw, _depth_as_level_without_axis)
    manifest = write_manifest(raw, [name])
    with pytest.raises(ExportError, match=r"has dims \('time', 'level', 'latitude', 'longitude'\)"):
        export_patches(config_for(tmp_path), manifest, workers=1)


def test_kelvin_file_is_written_in_celsius(tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)

    def to_kelvin(ds):
        kelvin = (ds["thetao"] + 273.15).astype(np.float32)
        kelvin.attrs = {"units": "K"}
        kelvin.encoding = {"dtype": "float32", "_FillValue": np.float32(np.nan)}
        return ds.assign(thetao=kelvin)

    name = modified_copy(raw, to_kelvin)
    index_csv = export_patches(config_for(tmp_path), write_manifest(raw, [name]), workers=1)
    index = pd.read_csv(index_csv)
    assert (index["units"] == "degrees_C").all()
    celsius = reference(SAMPLE / NOV)["data"]
    for row in index.itertuples():
        patch = np.load(index_csv.parent / row.y_npy_path)
        expected = celsius[:, row.y0 : row.y0 + SIZE, row.x0 : row.x0 + SIZE]
        np.testing.assert_allclose(patch, expected, atol=1e-4)  # float32 K has ~3e-5 K steps


def test_files_with_different_depths_are_an_error(tmp_path):
    raw, _ = make_raw(tmp_path, names=(DEC,))
    name = modified_copy(raw, lambda ds: ds.assign_coords(depth=ds["depth"] * 2))
    with pytest.raises(ExportError, match="do not share a depth axis"):
        export_patches(config_for(tmp_path), write_manifest(raw, [name, DEC]), workers=1)


def test_months_exported_alone_and_gathered_give_the_whole_export(tmp_path):
    raw, manifest = make_raw(tmp_path)
    config = config_for(tmp_path)
    whole = export_patches(config, manifest, out_dir=tmp_path / "whole", workers=1)
    layout = layout_of(config)
    split_csv = layout.split_index
    split_csv.parent.mkdir(parents=True)
    split_csv.write_text("from an earlier split\n")
    for name in (NOV, DEC):
        tag = name[-9:-3]
        part = write_month_manifest(raw, {name: date_of_file(name)}, layout.month_manifest(tag))
        export_month(config["export"], part, raw, layout.month_index(tag), layout.month_grid(tag),
                     layout.patches_dir)
    months = ("201012", "201011")  # any order: the gather sorts
    index = gather_index([layout.month_index(m) for m in months], [layout.month_grid(m) for m in months],
                         layout.patch_index, split_csv=split_csv)
    assert index.read_bytes() == whole.read_bytes()
    assert not split_csv.exists()
    assert sorted(p.name for p in layout.npy_dir.iterdir()) == sorted(p.name for p in (whole.parent / "y_npy").iterdir())


def test_the_gather_names_a_month_on_another_depth_axis(tmp_path):
    raw, _ = make_raw(tmp_path, names=(DEC,))
    other = modified_copy(raw, lambda ds: ds.assign_coords(depth=ds["depth"] * 2))
    config = config_for(tmp_path)
    layout = layout_of(config)
    for name in (other, DEC):
        tag = str(date_of_file(name) // 100)
        part = write_month_manifest(raw, {name: date_of_file(name)}, layout.month_manifest(tag))
        export_month(config["export"], part, raw, layout.month_index(tag), layout.month_grid(tag),
                     layout.patches_dir)
    tags = sorted(str(date_of_file(name) // 100) for name in (other, DEC))
    with pytest.raises(ExportError, match=f"{re.escape(str(raw))}.*do not share a depth axis"):
        gather_index([layout.month_index(t) for t in tags], [layout.month_grid(t) for t in tags], layout.patch_index)
    assert not layout.patch_index.exists()
