"""Faults a new user found in files from the field, fixed for their whole kind (issue 12).

- the sea floor written as a number below a shelf (0.0 at the deepest levels only, no fill attribute);
- observation files that store "not observed" as a number without a _FillValue (`--fill-value`);
- depth axes that are heights (positive up) or in other length units.
"""

from __future__ import annotations

import logging

import netCDF4
import numpy as np
import pandas as pd
import pytest
from test_field_consumers import (
    FIVE_LEVELS,
    export_local,
    local_config,
    observation_file,
    settings_for,
    sparse,
    truth_celsius,
    write_field,
)

from depthdif import cli
from depthdif.cf import FieldFileError, apply_fill_values, depth_below_surface_m
from depthdif.cf.fills import constant_columns
from depthdif.download import run_download
from depthdif.export import export_patches
from depthdif.reconstruction.gridded import read_observations


def column_stack(columns: list[list[float]]) -> np.ndarray:
    """(C, 1, n) float32 data whose cells are the given columns (surface first)."""
    return np.asarray(columns, dtype=np.float32).T[:, None, :]


def test_sea_floor_written_as_zero_at_the_deepest_levels_is_found():
    data = column_stack([
        [20.0, 19.0, 0.0, 0.0],  # shelf: the two levels below the floor hold 0
        [20.0, 19.0, 18.0, 0.0],  # one exact 0 at the deepest level: cold water is possible, not flagged
        [0.0, 0.0, 0.0, 0.0],  # land
        [20.0, 0.0, 0.0, 17.0],  # zeros that do not reach the bottom: not a floor
    ])
    found = constant_columns(data, [0.0])
    np.testing.assert_array_equal(found[0.0][0], [True, False, True, False])


def test_the_export_message_says_how_to_declare_it_in_an_override_file():
    data = column_stack([[20.0, 19.0, 0.0, 0.0]])
    with pytest.raises(FieldFileError, match=r"a\.nc.*0\.0 in 1 cells.*export: \{fill_values: \[0\.0\]\}"):
        apply_fill_values(data, (), "a.nc, variable 'thetao'")
    out = apply_fill_values(data.copy(), (0.0,), "a.nc, variable 'thetao'")
    np.testing.assert_array_equal(np.isnan(out[:, 0, 0]), [False, False, True, True])


def test_a_shelf_with_the_floor_written_as_zero_stops_the_export(tmp_path):
    depths = list(FIVE_LEVELS)
    values = np.broadcast_to(np.linspace(22.0, 8.0, len(depths))[:, None, None], (len(depths), 32, 32)).copy()
    values[2:, :, :10] = 0.0  # a shelf 10 columns wide, below 29 m: the floor written as 0, no fill attribute
    local = tmp_path / "local"
    local.mkdir()
    write_field(local / "m_201007.nc", values, depths, encoding="float")
    config = local_config(tmp_path, local, (0, 1, 2, 3))
    with pytest.raises(FieldFileError, match=r"0\.0 in 320 cells.*sea floor written as a number"):
        export_patches(config, run_download(config), workers=1)


def sentinel_observations(tmp_path, value: float = 9999.0):
    """An observation file storing unobserved cells as ``value`` with no _FillValue and no valid range."""
    obs, truth = observation_file(tmp_path, FIVE_LEVELS, encoding="sentinel")
    with netCDF4.Dataset(obs, "a") as ds:
        var = ds.variables["thetao"]
        var.delncattr("valid_min")
        var.delncattr("valid_max")
    return obs, truth


def test_reconstruct_tells_how_to_declare_a_missing_value_and_honours_it(tmp_path):
    obs, truth = sentinel_observations(tmp_path)
    settings = settings_for(FIVE_LEVELS[:4])
    with pytest.raises(FieldFileError, match=r"obs\.nc.*--fill-value"):
        read_observations(obs, settings)
    grid = read_observations(obs, settings, fill_values=(9999.0,))
    expected = np.isfinite(sparse(truth))[3]
    np.testing.assert_array_equal(np.isfinite(grid.observed[0]), expected)
    np.testing.assert_allclose(grid.observed[0][expected], truth[3][expected], atol=1e-5)


def test_cli_fill_value_option_reaches_the_reader():
    args = cli.build_parser().parse_args(["reconstruct", "m.ckpt", "o.nc", "out.nc", "--fill-value", "9999",
                                          "--fill-value", "-999"])
    assert args.fill_value == [9999.0, -999.0]


@pytest.mark.parametrize(("values", "attrs", "expected"), [
    ([0.5, 92.3], {"units": "m", "positive": "down"}, [0.5, 92.3]),
    ([-0.5, -92.3], {"units": "m", "positive": "up"}, [0.5, 92.3]),
    ([0.0005, 0.0923], {"units": "km", "positive": "down"}, [0.5, 92.3]),
    ([50.0, 9230.0], {"units": "cm"}, [0.5, 92.3]),
])
def test_depth_axis_by_its_attributes(values, attrs, expected):
    np.testing.assert_allclose(depth_below_surface_m(np.asarray(values), attrs, "f.nc"), expected)


def test_heights_without_positive_are_read_as_heights_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        depths = depth_below_surface_m(np.asarray([-0.5, -92.3]), {"units": "m"}, "f.nc: coordinate 'depth'")
    np.testing.assert_allclose(depths, [0.5, 92.3])
    assert "positive" in caplog.text and "f.nc" in caplog.text


@pytest.mark.parametrize(("attrs", "message"), [
    ({"units": "dbar"}, "not a length"),
    ({"units": "1"}, "not a length"),
    ({"units": "m", "positive": "sideways"}, "positive"),
])
def test_depth_axes_that_are_not_depths_are_refused(attrs, message):
    with pytest.raises(FieldFileError, match=message):
        depth_below_surface_m(np.asarray([1.0, 2.0]), attrs, "f.nc")


def test_metres_keep_the_files_precision():
    stored = np.asarray([0.494025, 92.32607], dtype=np.float32)
    assert depth_below_surface_m(stored, {"units": "m", "positive": "down"}, "f.nc").dtype == np.float32


def write_height_axis(path, values, depths):
    write_field(path, values, depths, encoding="float")
    with netCDF4.Dataset(path, "a") as ds:
        depth = ds.variables["depth"]
        depth[:] = -np.asarray(depths, np.float32)
        depth.positive = "up"


def test_positive_up_files_export_and_reconstruct_at_positive_depths(tmp_path):
    config, index_csv = export_local(tmp_path, {"m_201007.nc": (FIVE_LEVELS, "2010-07-16")}, (0, 1, 2, 3))
    reference = pd.read_csv(index_csv)["depth_values"].iloc[0]
    up = tmp_path / "up"
    up.mkdir()
    write_height_axis(up / "m_201007.nc", truth_celsius(FIVE_LEVELS), FIVE_LEVELS)
    config_up = local_config(up, up, (0, 1, 2, 3))
    index_up = pd.read_csv(export_patches(config_up, run_download(config_up), workers=1))
    assert index_up["depth_values"].iloc[0] == reference  # "0.494025;9.572997;...": positive, as stored

    obs, truth = observation_file(tmp_path, FIVE_LEVELS, name="obs_up.nc")
    with netCDF4.Dataset(obs, "a") as ds:
        ds.variables["depth"][:] = -np.asarray(FIVE_LEVELS, np.float32)
        ds.variables["depth"].positive = "up"
    grid = read_observations(obs, settings_for(FIVE_LEVELS[:4]))
    expected = np.isfinite(sparse(truth))[3]
    np.testing.assert_allclose(grid.observed[0][expected], truth[3][expected], atol=1e-5)
