"""All files of a source share one grid, or the export stops naming two files and how their grids differ.

The split, climatology and DINEOF treat patches at one (y0, x0) as one place in every month; a month on a
shifted or another grid would silently break that.
"""

from __future__ import annotations

import re
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fakes import write_cmems_month

from depthdif import glorys
from depthdif.config import load_config
from depthdif.download import write_manifest
from depthdif.export import INDEX_NAME, ExportError, export_patches

STEP = 1 / 12
CELLS = 32
MONTHS = (1, 2, 3)


def write_month(raw: Path, month: int, lat0: float = 20.0, lon0: float = -120.0, rows: int = CELLS) -> str:
    """One month in the common test layout: thetao(1, 22, rows, 32), int16, GLORYS levels, 1/12° grid."""
    name = glorys.file_name(2010, month)
    write_cmems_month(raw / name, 2010, month, lat=lat0 + np.arange(rows) * STEP,
                      lon=lon0 + np.arange(CELLS) * STEP, depths=glorys.DEPTH_LEVELS_M[:22])
    return name


def export(tmp_path: Path, names: list[str]) -> Path:
    """Export the files of ``data/raw`` named ``names`` (manifest by the download's own writer)."""
    raw = tmp_path / "data" / "raw"
    manifest = write_manifest(raw, {name: glorys.date_of_file(name) for name in names})
    config = load_config([], {"data_dir": str(tmp_path / "data"), "variants": ["temp_v1"],
                              "export": {"depth_indices": [0, 7, 14, 21], "patch_size": 16, "stride": 16}})
    return export_patches(config, manifest, workers=1)


@pytest.fixture
def raw(tmp_path) -> Path:
    folder = tmp_path / "data" / "raw"
    folder.mkdir(parents=True)
    return folder


def test_identical_grids_are_exported_at_the_same_places(tmp_path, raw):
    names = [write_month(raw, month) for month in MONTHS]
    index = pd.read_csv(export(tmp_path, names))
    places = index.groupby(["y0", "x0"])[["lat0", "lon0"]].nunique()
    assert (places == 1).all().all()  # one place per (y0, x0)
    assert set(index["source_file"]) == set(names)


def test_the_same_grid_stored_as_float64_is_one_grid(tmp_path, raw):
    """Another tool may store the axes as exact float64: a difference of rounding, not of grid."""
    names = [write_month(raw, month) for month in MONTHS[:2]]
    path = raw / names[1]
    with xr.open_dataset(path, decode_cf=False) as ds:
        exact = ds.load().assign_coords(latitude=20.0 + np.arange(CELLS) * STEP,
                                        longitude=-120.0 + np.arange(CELLS) * STEP)
    rounding = np.abs(exact["longitude"].values - np.float32(exact["longitude"].values)).max()
    assert rounding > 0  # float32 rounding is really there
    path.unlink()
    exact.to_netcdf(path)
    with netCDF4.Dataset(path) as ds:
        assert ds["longitude"].dtype == np.float64
    assert pd.read_csv(export(tmp_path, names))["source_file"].nunique() == 2


@pytest.mark.parametrize(
    ("shifted", "axis", "detail"),
    [
        ({"lat0": 20.0 + STEP}, "latitude",
         r"; largest offset 0\.08333\d* at index 0 \(20\.08333\d* vs 20\.0\)"),
        ({"lon0": -100.0}, "longitude", r"from -100\.0 .* vs 32 values from -120\.0 .*; largest offset 20\b"),
        ({"rows": CELLS + 1}, "latitude",
         r"33 values from 20\.0 to 22\.6666\d* vs 32 values from 20\.0 to 22\.5833"),
    ],
    ids=["shifted-by-a-row", "other-region", "one-more-row"],
)
def test_a_month_on_another_grid_stops_the_export_naming_both_files(tmp_path, raw, shifted, axis, detail):
    names = [write_month(raw, 1), write_month(raw, 2, **shifted), write_month(raw, 3)]
    with pytest.raises(ExportError) as info:
        export(tmp_path, names)
    message = str(info.value)
    assert f"{raw / names[1]} is on another grid than {raw / names[0]}: {axis}" in message
    assert re.search(detail, message), message
    assert "must share one grid" in message and "regrid" in message  # why, and what to do
    assert not (tmp_path / "data" / "patches" / INDEX_NAME).exists()  # no index that looks finished
