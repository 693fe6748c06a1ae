"""The CF reading layer: every NetCDF field DepthDif reads goes through these functions.

- ``axes``: which dimension is time/depth/latitude/longitude (GLORYS, NEMO and other spellings).
- ``decode``: stored values -> float32 with NaN for no data (_FillValue, missing_value, valid_*, packing).
- ``units``: temperature units -> °C, and the range sea water can have.
- ``fills``: land written as a number (0, -999, 1e20 ...) instead of a _FillValue.
- ``dates``: the date of a file (time coordinate, then ACDD attributes, then the name).
Every problem is a ``FieldFileError`` naming the file, the variable or attribute, the value and the fix.
"""

from depthdif.cf.axes import (
    AXIS_ALIASES,
    CANONICAL_NAMES,
    accepted_names,
    axis_roles,
    canonical_names,
    depth_below_surface_m,
    role_of_dim,
)
from depthdif.cf.dates import date_of_dataset, date_of_netcdf, file_date
from depthdif.cf.decode import decode_values, is_packed
from depthdif.cf.errors import FieldFileError
from depthdif.cf.fills import COMMON_FILL_VALUES, apply_fill_values
from depthdif.cf.units import (
    CELSIUS_UNITS,
    check_sea_water_temperature,
    check_temperature_units,
    is_temperature,
    parse_units,
    to_celsius,
)


def where_of(path, variable: str) -> str:
    """How messages name a variable of a file: ``"<path>, variable 'thetao'"``."""
    return f"{path}, variable '{variable}'"


__all__ = [
    "AXIS_ALIASES", "CANONICAL_NAMES", "CELSIUS_UNITS", "COMMON_FILL_VALUES", "FieldFileError",
    "accepted_names", "apply_fill_values", "axis_roles", "canonical_names", "check_sea_water_temperature",
    "check_temperature_units", "date_of_dataset", "date_of_netcdf", "decode_values", "depth_below_surface_m",
    "file_date", "is_packed", "is_temperature", "parse_units", "role_of_dim", "to_celsius", "where_of",
]  # fmt: skip
