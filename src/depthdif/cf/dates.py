"""The date of a field file (YYYYMMDD int), from what the file states before what its name suggests.

Sources, first found wins:
1. the time coordinate (``time``, ``time_counter``, ``t``, or a coordinate with axis T / standard_name time),
   its first value decoded with its units and calendar (CF section 4.4);
2. the global attributes ``time_coverage_start`` and ``time_coverage_end`` (ACDD): the midpoint of the two,
   which for a monthly mean (start 2010-07-01, end 2010-08-01) is mid-month like the time coordinate of
   the CMEMS monthly files; ``time_coverage_start`` alone gives its own date (an end alone is not used: it
   does not say how long the period before it is);
3. the file name: ``_YYYYMM.nc`` (the 15th), ``_YYYYMMDD.nc`` or ``_YYYY-MM-DD.nc`` (``glorys.date_of_file``).
Nothing found is an error: a made-up date would put the file's patches in the wrong season.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from pathlib import Path

import cftime
import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from depthdif.cf.axes import AXIS_ALIASES, role_of_dim
from depthdif.cf.decode import decode_values
from depthdif.cf.errors import FieldFileError
from depthdif.glorys import date_of_file

log = logging.getLogger(__name__)

COVERAGE_START, COVERAGE_END = "time_coverage_start", "time_coverage_end"


def as_yyyymmdd(stamp) -> int:
    """A date-like object with year/month/day (datetime, cftime, pandas Timestamp) as YYYYMMDD int."""
    return stamp.year * 10000 + stamp.month * 100 + stamp.day


def date_of_dataset(ds: xr.Dataset, path: str | Path) -> int:
    """The date of an open xarray dataset (decoded or opened with decode_times=False).

    Args:
        ds: the dataset.
        path: its file, for the name fallback and the messages.

    Returns:
        YYYYMMDD.

    Raises:
        FieldFileError: the time coordinate or a time_coverage_* attribute cannot be decoded, or neither
            they nor the name give a date.
    """
    name = _time_name(ds.variables)
    stamp = None if name is None else _time_stamp(ds.variables[name], path, name)
    return _date_from(stamp, ds.attrs, path)


def date_of_netcdf(dataset: netCDF4.Dataset, path: str | Path) -> int:
    """The date of an open netCDF4 dataset; reads only the first time value and the global attributes.

    Args:
        dataset: the open file.
        path: its file, for the name fallback and the messages.

    Returns:
        YYYYMMDD.

    Raises:
        FieldFileError: as ``date_of_dataset``.
    """
    name = _time_name(dataset.variables)
    stamp = None if name is None else _time_stamp(dataset.variables[name], path, name)
    return _date_from(stamp, {k: dataset.getncattr(k) for k in dataset.ncattrs()}, path)


def file_date(path: str | Path) -> int:
    """The date of a NetCDF file on disk (opens it, reads the time coordinate and global attributes only).

    Raises:
        FieldFileError: the file cannot be opened, or as ``date_of_dataset``.
    """
    try:
        dataset = netCDF4.Dataset(path)
    except OSError as err:
        raise FieldFileError(f"{path} is not a readable NetCDF file ({err}); replace it") from None
    with dataset:
        return date_of_netcdf(dataset, path)


# ------------------------------------------------------------------------------------------- sources


def _attrs_and_ndim(var) -> tuple[Mapping, int]:
    """Attributes and number of dims of an xarray or a netCDF4 variable."""
    if isinstance(var, xr.Variable):
        return var.attrs, var.ndim
    return {k: var.getncattr(k) for k in var.ncattrs()}, var.ndim


def _time_name(variables: Mapping) -> str | None:
    """The time coordinate's name: a time alias first, else a 0-/1-D variable with axis T/standard_name."""
    for name in AXIS_ALIASES["time"]:
        if name in variables:
            return name
    for name, var in variables.items():
        attrs, ndim = _attrs_and_ndim(var)
        if ndim <= 1 and role_of_dim("", attrs) == "time":
            return name
    return None


def _time_stamp(var, path, name: str):
    """The first value of a time variable as a date-like object; None when it holds no usable value."""
    attrs, _ = _attrs_and_ndim(var)
    encoding = var.encoding if isinstance(var, xr.Variable) else {}
    if isinstance(var, xr.Variable):
        values = np.asarray(var.values).ravel()[:1]
    else:
        var.set_auto_maskandscale(False)  # the raw number: decoded below in float64, not float32
        values = np.asarray(var[:1] if var.ndim else var[...]).ravel()
    if values.size == 0:
        return None
    first = values[0]
    if isinstance(first, np.datetime64):
        return None if np.isnat(first) else pd.Timestamp(first)
    if isinstance(first, cftime.datetime | datetime.datetime):
        return first
    if (
        values.dtype.kind not in "iuf"
        or np.isnan(decode_values(values, attrs, f"{path}, variable '{name}'"))[0]
    ):
        return None  # a fill value, or not a number at all
    units = attrs.get("units", encoding.get("units"))
    calendar = attrs.get("calendar", encoding.get("calendar", "standard"))
    if not units:
        log.warning(
            "%s: time coordinate '%s' has no units attribute; the date comes from elsewhere", path, name
        )
        return None
    try:
        return cftime.num2date(first, str(units), calendar=str(calendar))
    except (ValueError, OverflowError, TypeError) as err:
        raise FieldFileError(
            f"{path}: time coordinate '{name}' = {first} with units '{units}' and calendar '{calendar}' "
            f"cannot be decoded ({err}); fix its units (e.g. 'hours since 1950-01-01') or calendar"
        ) from None


def _coverage_stamp(attrs: Mapping, path):
    """The midpoint of time_coverage_start/_end, or the start alone; None without a start."""
    if COVERAGE_START not in attrs:
        return None
    start = _parse_stamp(attrs, COVERAGE_START, path)
    if COVERAGE_END not in attrs:
        return start
    end = _parse_stamp(attrs, COVERAGE_END, path)
    if end < start:
        raise FieldFileError(
            f"{path}: global attribute {COVERAGE_END}='{attrs[COVERAGE_END]}' is before "
            f"{COVERAGE_START}='{attrs[COVERAGE_START]}'; fix one of them"
        )
    return start + (end - start) / 2


def _parse_stamp(attrs: Mapping, key: str, path) -> pd.Timestamp:
    text = str(attrs[key]).strip()
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError) as err:
        raise FieldFileError(
            f"{path}: global attribute {key}='{text}' is not an ISO 8601 date ({err}); write it as e.g. "
            "2010-07-01T00:00:00Z"
        ) from None
    if pd.isna(stamp):
        raise FieldFileError(
            f"{path}: global attribute {key} is empty; write the date (e.g. 2010-07-01) or delete it"
        )
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _date_from(stamp, attrs: Mapping, path) -> int:
    if stamp is None:
        stamp = _coverage_stamp(attrs, path)
    if stamp is not None:
        return as_yyyymmdd(stamp)
    from_name = date_of_file(Path(path).name)
    if from_name is not None:
        return from_name
    raise FieldFileError(
        f"{path}: no date: no time coordinate with a value (time, time_counter, t, or axis T), no "
        f"{COVERAGE_START} global attribute and no _YYYYMM, _YYYYMMDD or _YYYY-MM-DD before .nc in the name. "
        "Add one of them, e.g. rename the file to end in _YYYYMM.nc."
    )
