"""Layout "L": a small month in the GLORYS12 layout, with the variations real field files have.

``write_layout_l(path, **overrides)`` writes ``thetao(time=1, depth=22, latitude=32, longitude=32)``,
int16-packed like CMEMS (scale_factor 0.000732444226741791, add_offset 21, _FillValue -32767), on the first
22 GLORYS levels, latitude 20 + k/12, longitude -120 + k/12, time in hours since 1950-01-01 (mid-month).
A 4 x 4 north-eastern corner is land (_FillValue, or NaN in float files). The overrides give the variants:
float values with any units, no fill attributes, valid_min/valid_max, land written as a number, another
name, no time coordinate, global attributes, NEMO-style dimension names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import netCDF4
import numpy as np

from depthdif import glorys

SIZE = 32
N_DEPTH = 22
DEPTHS = np.asarray(glorys.DEPTH_LEVELS_M[:N_DEPTH])
LATITUDE = 20.0 + np.arange(SIZE) / 12.0
LONGITUDE = -120.0 + np.arange(SIZE) / 12.0
TIME = dt.datetime(2010, 7, 16)
NAME = "mercatorglorys12v1_gl12_mean_201007.nc"
CMEMS_NAME = (
    "cmems_mod_glo_phy_my_0.083deg_P1M-m_thetao_120.00W-117.42W_20.00N-22.58N_0.49-65.81m_2010-07-01.nc"
)
LAND_CORNER = 4  # the north-eastern LAND_CORNER x LAND_CORNER cells are land
LAND_COLUMNS = 12  # western columns that ``land_value`` writes as a number
EXPORT_LEVELS = [0, 7, 14, 21]
GLORYS_DIMS = {"time": "time", "depth": "depth", "lat": "latitude", "lon": "longitude"}
NEMO_DIMS = {"time": "time_counter", "depth": "deptht", "lat": "lat", "lon": "lon"}


def celsius_field() -> np.ndarray:
    """(depth, lat, lon) °C: warm at the surface, colder below, warmer to the south; NaN on land."""
    field = (
        27.0
        - 0.08 * DEPTHS[:, None, None]
        - 0.3 * (LATITUDE[None, :, None] - 20.0)
        + 0.05 * (LONGITUDE[None, None, :] + 120.0)
    )
    field[:, -LAND_CORNER:, -LAND_CORNER:] = np.nan
    return field


def write_layout_l(
    path: str | Path,
    *,
    values: np.ndarray | None = None,
    dtype: str = "int16",
    units: str | None = "degrees_C",
    variable: str = "thetao",
    standard_name: str | None = "sea_water_potential_temperature",
    fill_attrs: bool = True,
    valid_min=None,
    valid_max=None,
    land_value: float | None = None,
    time: dt.datetime | None = TIME,
    global_attrs: Mapping | None = None,
    dims: Mapping[str, str] = GLORYS_DIMS,
    coordinate_attrs: bool = True,
) -> Path:
    """Write layout L at ``path`` (a file name of its own is the caller's choice).

    Args:
        path: the file to write.
        values: (22, 32, 32) values in the variable's units (NaN = land); default ``celsius_field()``.
        dtype: "int16" (packed like CMEMS) or "float32" (values as they are).
        units: the units attribute; None writes none.
        variable: the variable's name.
        standard_name: its standard_name; None writes none.
        fill_attrs: write _FillValue (-32767 for int16, NaN for float32); without it land keeps the netCDF
            default fill (int16) or NaN (float32).
        valid_min, valid_max: written as given (keep their numpy type: it is what CF decoding looks at).
        land_value: write the 12 western columns as this number at every depth (land written as a number).
        time: the time stamp; None writes no time dimension and no time coordinate.
        global_attrs: global attributes to add.
        dims: the name of each role's dimension (time, depth, lat, lon), e.g. ``NEMO_DIMS``.
        coordinate_attrs: give the coordinates axis/standard_name attributes like CMEMS files.

    Returns:
        ``path``.
    """
    path = Path(path)
    data = celsius_field() if values is None else np.array(values, dtype=np.float64)
    if land_value is not None:
        data[:, :, :LAND_COLUMNS] = land_value
    with netCDF4.Dataset(path, "w") as ds:
        _write_coordinates(ds, dims, time, coordinate_attrs)
        var_dims = tuple(dims[r] for r in ("time", "depth", "lat", "lon") if r != "time" or time is not None)
        fill = (glorys.FILL_VALUE_INT16 if dtype == "int16" else np.float32(np.nan)) if fill_attrs else None
        var = ds.createVariable(variable, dtype, var_dims, fill_value=fill, zlib=True)
        var.set_auto_maskandscale(False)  # exact stored values, written here
        if dtype == "int16":
            var.scale_factor = glorys.THETAO_SCALE_FACTOR
            var.add_offset = glorys.THETAO_ADD_OFFSET
            stored = _pack(data, fill if fill is not None else netCDF4.default_fillvals["i2"])
        else:
            stored = data.astype(np.float32)
        for name, value in (("units", units), ("standard_name", standard_name)):
            if value is not None:
                var.setncattr(name, value)
        for name, value in (("valid_min", valid_min), ("valid_max", valid_max)):
            if value is not None:
                var.setncattr(name, value)
        var[:] = stored[None] if time is not None else stored
        for key, value in (global_attrs or {}).items():
            ds.setncattr(key, value)
    return path


def _pack(data: np.ndarray, fill: int) -> np.ndarray:
    packed = np.round((data - glorys.THETAO_ADD_OFFSET) / glorys.THETAO_SCALE_FACTOR)
    return np.where(np.isnan(data), fill, packed).astype(np.int16)


def _write_coordinates(ds, dims: Mapping[str, str], time: dt.datetime | None, with_attrs: bool) -> None:
    if time is not None:
        ds.createDimension(dims["time"], 1)
        coordinate = ds.createVariable(dims["time"], "f8", (dims["time"],))
        coordinate.units, coordinate.calendar = "hours since 1950-01-01", "gregorian"
        if with_attrs:
            coordinate.standard_name, coordinate.axis = "time", "T"
        coordinate[:] = netCDF4.date2num(time, coordinate.units, coordinate.calendar)
    for role, values, units, standard_name, axis in (
        ("depth", DEPTHS, "m", "depth", "Z"),
        ("lat", LATITUDE, "degrees_north", "latitude", "Y"),
        ("lon", LONGITUDE, "degrees_east", "longitude", "X"),
    ):
        ds.createDimension(dims[role], values.size)
        coordinate = ds.createVariable(dims[role], "f4", (dims[role],))
        coordinate.units = units
        if with_attrs:
            coordinate.standard_name, coordinate.axis = standard_name, axis
        coordinate[:] = values
