"""Observations as users hold them: vertical profiles (Argo, EN4, CTD, a CSV), binned onto the model's grid.

`depthdif reconstruct` and :func:`reconstruct` (``depthdif.reconstruct(profiles, surface, model)``) take
profiles instead of a gridded observation field:

- **Reading** (:func:`read_profiles`, :func:`profiles_from_dataset`, :func:`profiles_from_table`): a NetCDF of
  ``N_PROF x N_LEVELS`` (latitude/LATITUDE, longitude/LONGITUDE, time/JULD and TEMP/thetao/temperature on
  DEPTH or PRES levels, as Argo and EN4 distribute them) or a CSV with one row per profile level. Values go
  through the CF layer (``depthdif.cf``): fill values, valid ranges and packing decoded, temperatures
  converted to °C and refused outside what sea water holds, depth made positive down from the axis's own
  ``positive``/``units`` attributes, pressure (dbar) converted to depth with TEOS-10 (``gsw.z_from_p``).
  Argo QC flags (``<VAR>_QC``, ``POSITION_QC``, ``JULD_QC``) other than 0/1/2/5/8 remove what they flag.
- **Binning** (:func:`bin_profiles`): each profile goes to the grid cell holding it, is interpolated
  linearly in the vertical onto the model's depths (never extrapolated beyond its shallowest/deepest sample,
  but for the tolerance that matches a file's level to a model depth), and the profiles of one cell are
  averaged. Every profile read is either used or counted under one reason (outside the grid, outside the
  month, undated, flagged bad, on land, no sample near the model's depths); the counts are logged and written
  to the output's attributes, and ``observation_count`` holds the profiles averaged into each cell.
- **The grid** (:func:`grid_from_dataset`) is that of a gridded file: ``--grid`` (latitude, longitude and an
  ``ocean_mask``, or a temperature field whose NaN is land) or else the surface field (``--surface``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from depthdif.cf.axes import depth_below_surface_m
from depthdif.cf.dates import date_of_dataset
from depthdif.cf.decode import decode_values
from depthdif.cf.errors import FieldFileError
from depthdif.cf.units import parse_units, registry
from depthdif.reconstruction.gridded import (
    OCEAN_MASK,
    TEMPERATURE_STANDARD_NAMES,
    GridObservations,
    ReconstructionError,
    _celsius,
    _coordinate,
    _level_positions,
    _ocean_mask,
    _one_time_step,
    _roles,
    _surface_from,
    _temperature_variable,
    reconstruct_grid,
    reconstruction_dataset,
    sampling_description,
    write_netcdf,
)
from depthdif.reconstruction.inference import DEPTH_TOLERANCE, match_levels, surface_variables, target_depths

log = logging.getLogger(__name__)

# variable names of a profile file, first found wins (compared case-insensitively)
LATITUDE_NAMES = ("latitude", "lat")
LONGITUDE_NAMES = ("longitude", "lon")
TIME_NAMES = ("time", "juld", "date", "datetime")
# potential temperature first: the model reconstructs GLORYS12's thetao (EN4: POTM_CORRECTED)
TEMPERATURE_NAMES = ("thetao", "potm_corrected", "temp", "temperature", "temp_adjusted")
DEPTH_NAMES = ("depth", "deph_corrected", "deph", "z")
PRESSURE_NAMES = ("pres", "pressure", "pres_adjusted")
PROFILE_ID_NAMES = ("profile", "profile_id", "station", "cast")
# Argo reference table 2: 0 no QC, 1 good, 2 probably good, 5 changed, 8 estimated; blank = fill
GOOD_QC_FLAGS = frozenset({"0", "1", "2", "5", "8", " ", ""})
CSV_SUFFIXES = (".csv", ".csv.gz")

# why a profile is not used, in the order the reasons are tested (each profile gets the first that applies)
DROP_REASONS = ("flagged_bad", "undated", "outside_month", "outside_grid", "on_land", "without_model_depths")
DROP_TEXT = {
    "flagged_bad": "position or date flagged bad (QC)", "undated": "without a date",
    "outside_month": "outside the month", "outside_grid": "outside the grid", "on_land": "on land",
    "without_model_depths": "without a sample near the model's depths",
}  # fmt: skip


class ProfileFileError(FieldFileError):
    """A profile file (NetCDF or CSV) cannot be read as profiles; the message names the file, variable or
    column and what to change."""


@dataclass
class Profiles:
    """Vertical profiles as read, one row per profile, NaN (NaT) where a value is missing.

    Args:
        latitude: (P,) float64 degrees_north.
        longitude: (P,) float64 degrees_east.
        time: (P,) datetime64[ns].
        depth: (P, L) float64 m below the surface (positive down).
        temperature: (P, L) float64 °C.
        source: the file (or ``"<xarray Dataset>"``), for messages.
        flagged: (P,) bool, position or date flagged bad by a QC flag; None when the file has no such flags.
    """

    latitude: np.ndarray
    longitude: np.ndarray
    time: np.ndarray
    depth: np.ndarray
    temperature: np.ndarray
    source: str
    flagged: np.ndarray | None = None


@dataclass
class ModelGrid:
    """The cells observations are binned onto: the reconstruction's latitude/longitude and ocean.

    Args:
        latitude: (ny,) cell centres, degrees_north.
        longitude: (nx,) cell centres, degrees_east.
        ocean: (C, ny, nx) bool, one layer per model depth.
        depths: (C,) the model's depths, m.
        latitude_attrs: the grid file's latitude attributes, carried into the output.
        longitude_attrs: the same for longitude.
    """

    latitude: np.ndarray
    longitude: np.ndarray
    ocean: np.ndarray
    depths: list[float]
    latitude_attrs: dict = field(default_factory=dict)
    longitude_attrs: dict = field(default_factory=dict)


@dataclass
class BinnedProfiles:
    """Profiles averaged per grid cell and model depth.

    Args:
        observed: (C, ny, nx) float64 °C, NaN where no profile reached the cell.
        count: (C, ny, nx) int32, profiles averaged into each cell.
        report: ``profiles_read``, ``profiles_used`` and ``profiles_<reason>`` for each of ``DROP_REASONS``.
    """

    observed: np.ndarray
    count: np.ndarray
    report: dict[str, int]


# ----------------------------------------------------------------------------- which files are profiles
def is_profile_file(path: Path) -> bool:
    """True for a CSV or a NetCDF of profiles (an ``N_PROF`` dimension, or latitude along a non-latitude dim).

    Args:
        path: the observation file given to `depthdif reconstruct`.

    Returns:
        True when :func:`read_profiles` is the reader; False for a gridded observation file (latitude is its
        own dimension) or a file that cannot be opened (the gridded reader then says why).
    """
    path = Path(path)
    if path.name.lower().endswith(CSV_SUFFIXES):
        return True
    try:
        with xr.open_dataset(path, mask_and_scale=False, decode_times=False) as ds:
            return _is_profile_dataset(ds)
    except (OSError, ValueError):
        return False


def _is_profile_dataset(ds: xr.Dataset) -> bool:
    """An ``N_PROF`` dimension, or a latitude per profile (1-D, not its own axis) and a temperature of <= 2 dims."""
    if any(str(dim).upper() == "N_PROF" for dim in ds.dims):
        return True
    name = _find(ds.variables, LATITUDE_NAMES)
    if name is None or ds[name].ndim != 1 or str(ds[name].dims[0]).lower() in LATITUDE_NAMES:
        return False
    temperature = _find(ds.data_vars, TEMPERATURE_NAMES)
    return temperature is None or ds[temperature].ndim <= 2


def _find(names, wanted: tuple[str, ...]) -> str | None:
    """The first name of ``names`` equal (case-insensitively) to one of ``wanted``, in ``wanted``'s order."""
    by_lower = {str(name).lower(): str(name) for name in names}
    return next((by_lower[w] for w in wanted if w in by_lower), None)


# ----------------------------------------------------------------------------- reading
def read_profiles(path: Path, fill_values: tuple[float, ...] = ()) -> Profiles:
    """Profiles from a NetCDF (``N_PROF x N_LEVELS``) or a CSV (one row per profile level).

    Args:
        path: the file.
        fill_values: temperatures (in the file's units) that mean "no value" (``--fill-value``).

    Returns:
        The profiles in °C on depths in m, positive down.

    Raises:
        ProfileFileError, FieldFileError: the message names the file, the variable or column and the fix.
    """
    path = Path(path)
    if path.name.lower().endswith(CSV_SUFFIXES):
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError) as err:
            raise ProfileFileError(f"{path} is not a readable CSV ({err}); give one row per profile level with "
                                   "columns latitude, longitude, time, depth or pressure, temperature.") from None
        return profiles_from_table(table, str(path), fill_values)
    try:
        ds = xr.open_dataset(path, mask_and_scale=False, decode_times=False)
    except (OSError, ValueError) as err:
        raise ProfileFileError(f"{path} is not a readable NetCDF file ({err}); replace it.") from None
    with ds:
        return profiles_from_dataset(ds.load(), str(path), fill_values)


def profiles_from_dataset(ds: xr.Dataset, where: str = "<xarray Dataset>",
                          fill_values: tuple[float, ...] = ()) -> Profiles:
    """Profiles from an ``N_PROF x N_LEVELS`` dataset (raw as stored, or already decoded by xarray).

    Args:
        ds: variables latitude/LATITUDE (P,), longitude/LONGITUDE (P,), time/JULD (P,), a temperature
            (thetao, POTM_CORRECTED, TEMP, temperature, or a sea-temperature standard_name) on (P, L), and a
            vertical coordinate on (P, L) or (L,): depth (DEPTH, DEPH_CORRECTED; m or another length, direction
            from ``positive``) or pressure (PRES; dbar or another pressure unit).
        where: the file, for messages.
        fill_values: temperatures (in the file's units) that mean "no value".

    Returns:
        The profiles; the QC flags of the file applied.

    Raises:
        ProfileFileError: a variable is missing or has other dimensions.
        FieldFileError: units that are not a temperature (or a length/pressure), values outside -3..45 °C.
    """
    name = _temperature_name(ds, where)
    temp = ds[name]
    if temp.ndim == 1:  # one cast: a temperature on levels only
        temp = temp.expand_dims("N_PROF")
    if temp.ndim != 2:
        raise ProfileFileError(f"{where}: variable '{name}' has dims {temp.dims}; profiles need (N_PROF, N_LEVELS) "
                               "(one row per profile). Split other dimensions off first.")
    latitude = _profile_variable(ds, LATITUDE_NAMES, where, "latitude")
    prof_dim = latitude.dims[0] if latitude.ndim == 1 else temp.dims[0]
    if prof_dim not in temp.dims:
        raise ProfileFileError(f"{where}: latitude is on '{prof_dim}' but '{name}' has dims {temp.dims}; the "
                               "temperature must have the profiles' dimension (N_PROF).")
    level_dim = next(dim for dim in temp.dims if dim != prof_dim)
    temp = temp.transpose(prof_dim, level_dim)
    lat = _decoded(latitude, where).astype(np.float64)
    lon = _decoded(_profile_variable(ds, LONGITUDE_NAMES, where, "longitude"), where).astype(np.float64)
    time = _profile_times(ds, where)
    depth = _profile_depths(ds, temp.shape, (prof_dim, level_dim), lat, where)
    units = temp.attrs.get("units")
    celsius = _celsius(np.asarray(temp.values), temp.attrs, f"{where}: variable '{name}' (units "
                                   f"{units!r})", fill_values)
    celsius[~_qc_good(ds, name, where, celsius.shape)] = np.nan
    return Profiles(np.broadcast_to(lat, temp.shape[:1]).copy(), np.broadcast_to(lon, temp.shape[:1]).copy(),
                    np.broadcast_to(time, temp.shape[:1]).copy(), depth, celsius, where,
                    flagged=_flagged_profiles(ds, temp.shape[0], where))


def _temperature_name(ds: xr.Dataset, where: str) -> str:
    """The temperature variable of a profile file: by name, else by sea-temperature standard_name."""
    name = _find(ds.data_vars, TEMPERATURE_NAMES)
    if name is not None:
        return name
    for standard_name in TEMPERATURE_STANDARD_NAMES:
        named = [str(v) for v in ds.data_vars if ds[v].attrs.get("standard_name") == standard_name]
        if named:
            return named[0]
    raise ProfileFileError(
        f"{where} has no temperature variable: looked for {list(TEMPERATURE_NAMES)} (any case) or a standard_name "
        f"among {list(TEMPERATURE_STANDARD_NAMES)}; its variables are {sorted(map(str, ds.data_vars))}. Rename "
        "the temperature variable TEMP or thetao."
    )


def _profile_variable(ds: xr.Dataset, names: tuple[str, ...], where: str, what: str) -> xr.DataArray:
    """One per-profile variable (latitude, longitude, time): 0-D or 1-D."""
    name = _find(ds.variables, names)
    if name is None:
        raise ProfileFileError(f"{where} has no {what} variable (looked for {list(names)}, any case); its "
                               f"variables are {sorted(map(str, ds.variables))}. Add or rename it.")
    if ds[name].ndim > 1:
        raise ProfileFileError(f"{where}: {what} '{name}' has dims {ds[name].dims}; give one value per profile "
                               "(N_PROF,).")
    return ds[name]


def _decoded(variable: xr.DataArray, where: str) -> np.ndarray:
    """A numeric variable's values with its CF fill/valid range/packing decoded (float32, NaN = none)."""
    return decode_values(np.asarray(variable.values), variable.attrs, f"{where}: variable '{variable.name}'")


def _profile_times(ds: xr.Dataset, where: str) -> np.ndarray:
    """(P,) or () datetime64[ns] of each profile, NaT where the file has none.

    Raises:
        ProfileFileError: a numeric time without CF units ("days since 1950-01-01", as JULD has).
    """
    variable = _profile_variable(ds, TIME_NAMES, where, "time")
    values = np.asarray(variable.values)
    if np.issubdtype(values.dtype, np.datetime64):  # already decoded by xarray
        return values.astype("datetime64[ns]")
    units, calendar = variable.attrs.get("units"), variable.attrs.get("calendar", "standard")
    # float64: float32 days since 1950 would round a date to minutes (decode_values casts to float32)
    numbers = decode_values(values.astype(np.float64), variable.attrs, f"{where}: variable '{variable.name}'")
    try:
        return np.asarray(xr.coding.times.decode_cf_datetime(numbers.astype(np.float64), units, calendar),
                          dtype="datetime64[ns]")
    except (ValueError, TypeError, OverflowError) as err:
        raise ProfileFileError(
            f"{where}: variable '{variable.name}' (units {units!r}, calendar {calendar!r}) cannot be read as dates "
            f"({err}); give it CF units such as 'days since 1950-01-01 00:00:00' (Argo's JULD)."
        ) from None


def _profile_depths(ds: xr.Dataset, shape: tuple[int, int], dims: tuple[str, str], lat: np.ndarray,
                    where: str) -> np.ndarray:
    """(P, L) depth in m below the surface of every sample, from a depth or a pressure variable.

    Args:
        ds: the profile dataset.
        shape: (P, L) of the temperature.
        dims: (profile dim, level dim) of the temperature.
        lat: (P,) or () latitude, for the pressure -> depth conversion.
        where: the file, for messages.

    Returns:
        float64 depths, positive down; NaN where the file holds none or a QC flag marks it bad.

    Raises:
        ProfileFileError: no vertical variable, or one on other dimensions.
        FieldFileError: units that are neither a length nor a pressure; ``positive`` neither up nor down.
    """
    name = _find(ds.variables, DEPTH_NAMES) or _find(ds.variables, PRESSURE_NAMES)
    if name is None:
        raise ProfileFileError(f"{where} has no depth or pressure variable (looked for {list(DEPTH_NAMES)} and "
                               f"{list(PRESSURE_NAMES)}, any case); add DEPTH (m, positive down) or PRES (dbar).")
    variable = ds[name]
    if not set(variable.dims) <= set(dims) or dims[1] not in variable.dims:
        raise ProfileFileError(f"{where}: '{name}' has dims {variable.dims}; give it the temperature's levels "
                               f"({dims[1]},) or ({dims[0]}, {dims[1]}).")
    values = _decoded(variable.transpose(*[d for d in dims if d in variable.dims]), where).astype(np.float64)
    values = np.broadcast_to(values, shape).copy()
    values[~_qc_good(ds, name, where, shape)] = np.nan
    return _vertical_to_depth(values, dict(variable.attrs), name, lat, f"{where}: variable '{name}'")


def _vertical_to_depth(values: np.ndarray, attrs: Mapping, name: str, lat: np.ndarray, where: str) -> np.ndarray:
    """Depths (m, positive down) from a depth or pressure coordinate.

    Args:
        values: (P, L) decoded values.
        attrs: the variable's attributes (units, positive).
        name: the variable's (or column's) name; ``pres*``/``pressure`` without units is read as dbar.
        lat: (P,) or () latitude in degrees (gravity in the TEOS-10 conversion depends on it).
        where: file and variable, for messages.

    Returns:
        (P, L) float64 depth below the sea surface in m.
    """
    unit = parse_units(attrs.get("units"))
    by_name = name.lower() in PRESSURE_NAMES
    if (unit is not None and unit.dimensionality == registry.pascal.dimensionality) or (unit is None and by_name):
        if unit is None:
            log.warning("%s has no units; pressure in dbar assumed", where)
        dbar = values if unit is None else registry.Quantity(values, unit).to("decibar").magnitude
        return _depth_from_pressure(np.asarray(dbar, np.float64), lat)
    return np.asarray(depth_below_surface_m(values, attrs, where), np.float64)


def _depth_from_pressure(dbar: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """TEOS-10 depth (m, positive down) of sea pressure (dbar) at latitude (degrees): ``-gsw.z_from_p``.

    Args:
        dbar: (P, L) sea pressure (absolute pressure minus 10.1325 dbar), as Argo's PRES.
        lat: (P,) or () latitude; NaN latitudes give NaN depths (those profiles are outside any grid anyway).

    Returns:
        (P, L) depth in m.
    """
    import gsw  # TEOS-10; imported here so that reading gridded files does not load it

    latitude = np.asarray(lat, np.float64).reshape(-1, 1) if np.ndim(lat) else np.float64(lat)
    return -np.asarray(gsw.z_from_p(dbar, latitude), np.float64)


def _qc_strings(values: np.ndarray) -> np.ndarray:
    """QC flags as an array of one-character str (bytes decoded; numbers written as digits)."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return np.char.decode(values, "ascii", errors="replace")
    if values.dtype.kind in "iuf":
        numbers = values.astype(np.float64)
        return np.where(np.isfinite(numbers), np.nan_to_num(numbers).astype(np.int64).astype(str), " ")
    return np.vectorize(lambda v: v.decode("ascii", "replace") if isinstance(v, bytes) else str(v),
                        otypes=[str])(values)


def _qc_good(ds: xr.Dataset, name: str, where: str, shape: tuple[int, ...]) -> np.ndarray:
    """Where the QC flag ``<name>_QC`` of the file allows the value (True everywhere without one).

    Args:
        ds: the profile dataset.
        name: the variable the flags are of.
        where: the file, for messages.
        shape: (P, L), the shape of the values read.

    Returns:
        (P, L) bool.

    Raises:
        ProfileFileError: the flags have another shape than the values.
    """
    flags_name = _find(ds.variables, (f"{name.lower()}_qc",))
    if flags_name is None:
        return np.ones(shape, bool)
    good = np.isin(np.char.strip(_qc_strings(ds[flags_name].values)), list(GOOD_QC_FLAGS))
    try:
        return np.broadcast_to(good, shape)
    except ValueError:
        raise ProfileFileError(f"{where}: '{flags_name}' has dims {ds[flags_name].dims}, unlike '{name}' "
                               f"{ds[name].dims}; fix or drop the flags.") from None


def _flagged_profiles(ds: xr.Dataset, count: int, where: str) -> np.ndarray:
    """(P,) True where POSITION_QC or JULD_QC flags a profile's position or date as bad."""
    flagged = np.zeros(count, bool)
    for name in ("POSITION", "JULD"):
        flags_name = _find(ds.variables, (f"{name.lower()}_qc",))
        if flags_name is not None and ds[flags_name].ndim <= 1:
            good = np.isin(np.char.strip(_qc_strings(ds[flags_name].values)), list(GOOD_QC_FLAGS))
            flagged |= ~np.broadcast_to(good, (count,))
    return flagged


# ----------------------------------------------------------------------------- CSV
_HEADER = re.compile(r"^\s*(?P<name>[^\[\(]+?)\s*(?:[\[\(]\s*(?P<units>[^\]\)]*?)\s*[\]\)])?\s*$")
# what a column without units in its header holds
CSV_DEFAULT_UNITS = {"temperature": "degree_Celsius", "depth": "m", "pressure": "dbar"}


def _csv_columns(table: pd.DataFrame, where: str) -> dict[str, tuple[str, str | None]]:
    """Role -> (column, units in the header or None), for a CSV of profile levels.

    A header may carry units in brackets, e.g. ``temperature (K)``, ``depth [m]``, ``pressure (dbar)``.

    Raises:
        ProfileFileError: a required column is missing; the message lists the columns found.
    """
    parsed = {}
    for column in table.columns:
        match = _HEADER.match(str(column))
        if match:
            parsed[match["name"].strip().lower()] = (str(column), match["units"] or None)
    roles = {}
    for role, names in (("latitude", LATITUDE_NAMES), ("longitude", LONGITUDE_NAMES), ("time", TIME_NAMES),
                        ("temperature", TEMPERATURE_NAMES), ("depth", DEPTH_NAMES), ("pressure", PRESSURE_NAMES),
                        ("profile", PROFILE_ID_NAMES)):
        name = _find(parsed, names)
        if name is not None:
            roles[role] = parsed[name]
    missing = [r for r in ("latitude", "longitude", "time", "temperature") if r not in roles]
    if "depth" not in roles and "pressure" not in roles:
        missing.append("depth or pressure")
    if missing:
        raise ProfileFileError(
            f"{where} has no column {', '.join(missing)}; its columns are {list(map(str, table.columns))}. Give one "
            "row per profile level with latitude, longitude, time (ISO 8601), depth (m, positive down) or "
            "pressure (dbar), temperature (°C); other units in the header, e.g. 'temperature (K)'."
        )
    return roles


def profiles_from_table(table: pd.DataFrame, where: str = "<DataFrame>",
                        fill_values: tuple[float, ...] = ()) -> Profiles:
    """Profiles from a table with one row per profile level (a CSV as read by pandas).

    Rows belong to one profile when they share a ``profile`` (``profile_id``, ``station``, ``cast``) value, or
    else the same latitude, longitude and time.

    Args:
        table: columns latitude, longitude, time, depth or pressure, temperature (names any case, units in
            brackets in the header, else °C, m positive down, dbar).
        where: the file, for messages.
        fill_values: temperatures (in the column's units) that mean "no value".

    Returns:
        The profiles, levels in the table's order.

    Raises:
        ProfileFileError: a missing column, a time that is not a date, a value that is not a number.
        FieldFileError: units that are not a temperature (or length/pressure), values outside -3..45 °C.
    """
    roles = _csv_columns(table, where)
    numbers = {role: _numeric_column(table, roles[role][0], where) for role in roles if role not in ("time", "profile")}
    time = _csv_times(table[roles["time"][0]], where)
    keys = [roles["profile"][0]] if "profile" in roles else [roles[r][0] for r in ("latitude", "longitude")]
    frame = table[keys].copy()
    if "profile" not in roles:
        frame["__time"] = time
    group = frame.groupby(list(frame.columns), sort=False, dropna=False).ngroup().to_numpy()
    level = pd.Series(group).groupby(group).cumcount().to_numpy()
    count, levels = int(group.max()) + 1 if len(group) else 0, int(level.max()) + 1 if len(level) else 0

    def grid(values: np.ndarray) -> np.ndarray:
        out = np.full((count, levels), np.nan)
        out[group, level] = values
        return out

    first = np.unique(group, return_index=True)[1]
    lat, lon = numbers["latitude"][first], numbers["longitude"][first]
    vertical = "depth" if "depth" in roles else "pressure"
    units = roles[vertical][1] or CSV_DEFAULT_UNITS[vertical]
    depth = _vertical_to_depth(grid(numbers[vertical]), {"units": units}, vertical, lat,
                               f"{where}: column '{roles[vertical][0]}'")
    temp_units = roles["temperature"][1] or CSV_DEFAULT_UNITS["temperature"]
    celsius = _celsius(grid(numbers["temperature"]).astype(np.float32), {"units": temp_units},
                                   f"{where}: column '{roles['temperature'][0]}' (units {temp_units!r})", fill_values)
    return Profiles(lat, lon, np.asarray(time)[first].astype("datetime64[ns]"), depth, celsius, where)


def _numeric_column(table: pd.DataFrame, column: str, where: str) -> np.ndarray:
    """A column as float64 (empty cells NaN); refuses text that is not a number, naming the first."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise ProfileFileError(f"{where}: column '{column}' holds {table[column].iloc[row]!r} at data row {row + 1}, "
                               "not a number; write numbers (empty = no value).")
    return values.to_numpy(np.float64)


def _csv_times(column: pd.Series, where: str) -> np.ndarray:
    """(rows,) datetime64[ns] UTC without zone; empty cells NaT; refuses a text that is not a date."""
    times = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
    bad = times.isna() & column.notna()
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise ProfileFileError(f"{where}: column '{column.name}' holds {column.iloc[row]!r} at data row {row + 1}, "
                               "not a date; write ISO 8601 (2010-11-16 or 2010-11-16T12:00:00Z).")
    return times.dt.tz_convert(None).to_numpy("datetime64[ns]")


# ----------------------------------------------------------------------------- vertical interpolation
def interpolate_to_depths(depth: np.ndarray, temperature: np.ndarray, targets: list[float]) -> np.ndarray:
    """Each profile linearly interpolated onto the model's depths, never extrapolated.

    A target depth gets a value when it lies between the profile's shallowest and deepest valid sample, or
    within the level-matching tolerance (2 % + 1 cm, ``inference.DEPTH_TOLERANCE``) beyond them, where it takes
    the end sample's value: a cast that starts at 5 m says nothing about 0.5 m. Samples at one depth are
    averaged first.

    Args:
        depth: (P, L) m below the surface, NaN where no sample.
        temperature: (P, L) °C, NaN where no sample.
        targets: (C,) the model's depths in m.

    Returns:
        (P, C) °C, NaN where a profile does not reach a depth.
    """
    wanted = np.asarray(targets, np.float64)
    tolerance = DEPTH_TOLERANCE * wanted + 0.01
    out = np.full((depth.shape[0], wanted.size), np.nan)
    for p in range(depth.shape[0]):
        ok = np.isfinite(depth[p]) & np.isfinite(temperature[p])
        if not ok.any():
            continue
        levels, inverse = np.unique(depth[p, ok], return_inverse=True)
        values = np.bincount(inverse, weights=temperature[p, ok]) / np.bincount(inverse)
        reached = (wanted >= levels[0] - tolerance) & (wanted <= levels[-1] + tolerance)
        out[p, reached] = np.interp(wanted[reached], levels, values)
    return out


# ----------------------------------------------------------------------------- horizontal binning
def cell_index(centres: np.ndarray, values: np.ndarray, periodic: bool = False) -> np.ndarray:
    """The grid cell holding each value, or -1 outside the grid.

    Cells are bounded halfway between neighbouring centres and, at the ends, half a spacing beyond the first
    and last centre (the cells of a regular grid such as GLORYS12's 1/12°).

    Args:
        centres: (n,) cell centres, increasing or decreasing, n >= 2.
        values: (P,) positions (NaN: outside).
        periodic: longitude: values are compared modulo 360 with the grid's range (-180..180 or 0..360 alike).

    Returns:
        (P,) int64 index into ``centres``, -1 where outside.
    """
    centres = np.asarray(centres, np.float64)
    order = np.argsort(centres, kind="stable")
    sorted_centres = centres[order]
    middles = (sorted_centres[1:] + sorted_centres[:-1]) / 2
    edges = np.concatenate([[sorted_centres[0] - (middles[0] - sorted_centres[0])], middles,
                            [sorted_centres[-1] + (sorted_centres[-1] - middles[-1])]])
    values = np.asarray(values, np.float64)
    if periodic:
        values = edges[0] + np.mod(values - edges[0], 360.0)
    k = np.searchsorted(edges, values, side="right") - 1
    inside = np.isfinite(values) & (k >= 0) & (k < centres.size)
    return np.where(inside, order[np.clip(k, 0, centres.size - 1)], -1)


def bin_profiles(profiles: Profiles, grid: ModelGrid, month: int) -> BinnedProfiles:
    """Profiles of one month onto the grid's cells and the model's depths, averaged per cell.

    Args:
        profiles: as read.
        grid: the reconstruction's grid (its ocean decides which cells can hold an observation).
        month: YYYYMM of the reconstruction; profiles of other months are not used (and counted).

    Returns:
        (C, ny, nx) mean °C and profile counts, and the report: every profile read is used or counted under
        exactly one of ``DROP_REASONS``.
    """
    shape = grid.ocean.shape
    row = cell_index(grid.latitude, profiles.latitude)
    col = cell_index(grid.longitude, profiles.longitude, periodic=True)
    values = interpolate_to_depths(profiles.depth, profiles.temperature, grid.depths)  # (P, C)
    inside = (row >= 0) & (col >= 0)
    ocean = np.zeros(values.shape, bool)
    ocean[inside] = grid.ocean[:, row[inside], col[inside]].T
    usable = np.isfinite(values) & ocean
    reasons = _drop_reasons(profiles, month, inside, ocean.any(axis=1), usable.any(axis=1))
    usable &= (reasons == "")[:, None]
    band, prof = np.nonzero(usable.T)
    flat = np.ravel_multi_index((band, row[prof], col[prof]), shape)
    count = np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape).astype(np.int32)
    total = np.bincount(flat, weights=values[prof, band], minlength=count.size).reshape(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.where(count > 0, total / count, np.nan)
    report = {"profiles_read": int(reasons.size), "profiles_used": int(np.count_nonzero(reasons == ""))}
    report.update({f"profiles_{r}": int(np.count_nonzero(reasons == r)) for r in DROP_REASONS})
    return BinnedProfiles(observed, count, report)


def _drop_reasons(profiles: Profiles, month: int, inside: np.ndarray, any_ocean: np.ndarray,
                  any_usable: np.ndarray) -> np.ndarray:
    """(P,) the first reason in ``DROP_REASONS`` that applies to each profile, "" for a used one."""
    wanted = np.datetime64(f"{month // 100:04d}-{month % 100:02d}", "M")
    dated = ~np.isnat(profiles.time)
    in_month = dated & (profiles.time.astype("datetime64[M]") == wanted)
    flagged = profiles.flagged if profiles.flagged is not None else np.zeros(inside.shape, bool)
    tests = {"flagged_bad": flagged, "undated": ~dated, "outside_month": ~in_month, "outside_grid": ~inside,
             "on_land": ~any_ocean, "without_model_depths": ~any_usable}
    reasons = np.full(inside.shape, "", dtype=object)
    for reason in reversed(DROP_REASONS):  # the first reason in the list is written last and wins
        reasons[tests[reason]] = reason
    return reasons


def report_text(report: Mapping[str, int], source: str, month: int) -> str:
    """The log line of a binning: ``profiles.nc: 40 profiles read, 38 used; not used: 2 outside the grid``.

    Args:
        report: :attr:`BinnedProfiles.report`.
        source: the profile file, as named in the line.
        month: YYYYMM of the reconstruction.

    Returns:
        One line of text.
    """
    dropped = [f"{report[f'profiles_{r}']} {DROP_TEXT[r]}" for r in DROP_REASONS if report[f"profiles_{r}"]]
    text = f"{source}: {report['profiles_read']} profiles read, {report['profiles_used']} used for {month // 100}-" \
           f"{month % 100:02d}"
    return text + (f"; not used: {', '.join(dropped)}" if dropped else "")


# ----------------------------------------------------------------------------- the grid
def grid_from_dataset(ds: xr.Dataset, where: str, settings: dict, fill_values: tuple[float, ...] = ()) -> ModelGrid:
    """The reconstruction's grid from a gridded file: its latitude, longitude and ocean.

    Args:
        ds: an ``ocean_mask`` (1 = ocean, on (depth,) latitude, longitude; e.g. the evaluation's
            reconstruction.nc) or else a temperature field whose NaN is land: at the model's depths when it holds
            them, else its shallowest level for every depth (deeper land unknown, warned).
        where: the file, for messages.
        settings: the checkpoint's settings (the model's depths).
        fill_values: values (the file's units) that mean "no value".

    Returns:
        The grid, with one ocean layer per model depth.

    Raises:
        ReconstructionError, FieldFileError: no usable variable or coordinates; the message says which.
    """
    depths = target_depths(settings)
    name = OCEAN_MASK if OCEAN_MASK in ds.variables else _temperature_variable(ds, where, surface_variables(settings))
    roles = _roles(ds, name, where, need_depth=False)
    lat, lat_attrs = _coordinate(ds, roles["lat"], where)
    lon, lon_attrs = _coordinate(ds, roles["lon"], where)
    if lat.size < 2 or lon.size < 2:
        raise ReconstructionError(f"{where}: a grid needs at least 2 latitudes and 2 longitudes.")
    shape = (len(depths), lat.size, lon.size)
    if name == OCEAN_MASK:
        positions = _depth_positions(ds, roles, depths, where) if "depth" in roles else []
        ocean = _ocean_mask(ds, positions, shape, where)
    else:
        ocean = _ocean_of_field(ds, name, roles, depths, where, fill_values)
    return ModelGrid(lat, lon, np.broadcast_to(ocean, shape).copy(), depths, lat_attrs, lon_attrs)


def _depth_positions(ds: xr.Dataset, roles: dict[str, str], depths: list[float], where: str) -> list[int]:
    """Positions of the model's depths in the file's depth axis (refused when one is missing)."""
    axis, attrs = _coordinate(ds, roles["depth"], where)
    axis = depth_below_surface_m(axis, attrs, f"{where}: coordinate '{roles['depth']}'")
    return _level_positions(axis, depths, where)


def _ocean_of_field(ds: xr.Dataset, name: str, roles: dict[str, str], depths: list[float], where: str,
                    fill_values: tuple[float, ...]) -> np.ndarray:
    """(C or 1, ny, nx) bool: where a temperature field has a value (at the model's depths if it holds them)."""
    data = _one_time_step(ds[name], roles, where)
    if "depth" in roles:
        axis, attrs = _coordinate(ds, roles["depth"], where)
        axis = depth_below_surface_m(axis, attrs, f"{where}: coordinate '{roles['depth']}'")
        positions = match_levels(axis, depths)
        if None in positions:
            positions = [int(np.argmin(axis))]
        data = data.isel({roles["depth"]: positions})
    if "depth" not in roles or len(positions) != len(depths):
        log.warning("%s: taking the ocean at every model depth from '%s' at its surface (land deeper down is "
                    "unknown; give a grid file with an ocean_mask per depth to know it)", where, name)
    order = [roles["depth"], roles["lat"], roles["lon"]] if "depth" in roles else [roles["lat"], roles["lon"]]
    values = _celsius(np.asarray(data.transpose(*order).values), data.attrs, f"{where}: variable '{name}'",
                      fill_values)
    return np.isfinite(values).reshape((-1, *values.shape[-2:]))


# ----------------------------------------------------------------------------- the reconstruction
def _as_dataset(value, label: str, files: ExitStack) -> tuple[xr.Dataset | None, str]:
    """A gridded input given as a path, an xr.Dataset or an xr.DataArray, as a Dataset and its name.

    Args:
        value: the input (None: none).
        label: its name in messages when it is not a file.
        files: closes an opened file when the reconstruction is done (it is read lazily: only the levels and
            the time step used are loaded, which matters for a global GLORYS12 month).

    Returns:
        (dataset or None, name for messages).
    """
    if value is None:
        return None, label
    if isinstance(value, xr.DataArray):
        return value.to_dataset(name=str(value.name or "thetao")), label
    if isinstance(value, xr.Dataset):
        return value, label
    path = Path(value)
    try:
        ds = xr.open_dataset(path, mask_and_scale=False)
    except (OSError, ValueError) as err:
        raise ReconstructionError(f"{path} is not a readable NetCDF file ({err}); replace it.") from None
    files.callback(ds.close)
    return ds, str(path)


def _as_profiles(value, fill_values: tuple[float, ...]) -> Profiles:
    """Profiles given as a path, an N_PROF x N_LEVELS xr.Dataset, a pandas table or a ``Profiles``."""
    if isinstance(value, Profiles):
        return value
    if isinstance(value, xr.Dataset):
        return profiles_from_dataset(value, fill_values=fill_values)
    if isinstance(value, pd.DataFrame):
        return profiles_from_table(value, fill_values=fill_values)
    return read_profiles(Path(value), fill_values)


def _month_of(date: int) -> int:
    return date // 100


def reconstruction_date(given: int | None, surface: xr.Dataset | None, surface_where: str,
                        profiles: Profiles) -> tuple[int, str]:
    """YYYYMMDD the model is conditioned on, and where it came from.

    ``given`` (``--date``) first; else the surface field's own date (a month of SST belongs to one month); else
    the 15th of the month holding the most dated profiles.

    Args:
        given: YYYYMMDD given by the user (``--date``, ``date=``), or None.
        surface: the surface field, or None.
        surface_where: the surface field's name, for messages.
        profiles: the profiles (their ``time``).

    Returns:
        ``(YYYYMMDD, where it came from)``, the second a phrase for the log.

    Raises:
        ReconstructionError: ``given`` and the surface field are of different months, or nothing gives a date.
    """
    stated = None
    if surface is not None:
        try:
            stated = date_of_dataset(surface, surface_where)
        except FieldFileError:
            stated = None
    if given is not None:
        if stated is not None and _month_of(stated) != _month_of(int(given)):
            raise ReconstructionError(f"the surface field {surface_where} is of {stated} but the date given is "
                                      f"{given}: give a surface field of the observations' month.")
        return int(given), "given"
    if stated is not None:
        return stated, f"the surface field {surface_where}"
    dated = profiles.time[~np.isnat(profiles.time)]
    if dated.size == 0:
        raise ReconstructionError(f"{profiles.source}: no profile has a date and none is given; give the month with "
                                  "`depthdif reconstruct --date YYYY-MM-DD` (or date=YYYYMMDD).")
    months, counts = np.unique(dated.astype("datetime64[M]"), return_counts=True)
    month = pd.Timestamp(months[np.argmax(counts)])
    return month.year * 10000 + month.month * 100 + 15, f"the month of most profiles in {profiles.source}"


def _load_module(model, device: str):
    """A loaded DepthDif module from a model.ckpt path (on ``device``, see ``inference_device``), or the module
    itself where it is."""
    if hasattr(model, "settings"):
        return model
    from depthdif.models.module import load_model
    from depthdif.reconstruction.inference import inference_device

    return load_model(Path(model), map_location=inference_device(device))


def reconstruct(profiles, surface=None, model=None, *, grid=None, date: int | None = None, ensemble_size: int = 8,
                steps: int = 25, seed: int = 0, fill_values: tuple[float, ...] = (), device: str = "auto") -> xr.Dataset:
    """``depthdif.reconstruct``: a trained model applied to profiles (and a surface field) -> a dataset.


    Args:
        profiles: a profile NetCDF or CSV path, an ``N_PROF x N_LEVELS`` xr.Dataset (see
            :func:`profiles_from_dataset`) or a pandas table of profile levels (see :func:`profiles_from_table`).
        surface: the surface (EO) temperature field, eo_4band (path, xr.Dataset or xr.DataArray on latitude,
            longitude); it is also the grid when ``grid`` is not given.
        model: model.ckpt (path) or a loaded module.
        grid: the grid to reconstruct on (path or xr.Dataset): latitude, longitude and an ``ocean_mask`` or a
            temperature field whose NaN is land; default ``surface``.
        date: YYYYMMDD the model is conditioned on; default the surface's date, else the profiles' month.
        ensemble_size: members averaged into the mean.
        steps: sampling steps per member.
        seed: seed of the sampler's noise.
        fill_values: values (the files' units) that mean "no value".
        device: where a model given as a path samples: ``auto`` (a GPU if there is one), ``gpu``, ``mps``,
            ``cpu``.

    Returns:
        CF dataset (time=1, depth=C, latitude, longitude): ``thetao`` (ensemble mean, °C), ``thetao_std``,
        ``observation_mask``, ``observation_count`` (profiles averaged into each cell), ``ocean_mask``; the
        profile counts (read, used, not used by reason) in its attributes ``profiles_*``.

    Raises:
        ReconstructionError, FieldFileError, CheckpointError: the message names the input and what to change.
    """
    if model is None:
        raise ReconstructionError("give the model: depthdif.reconstruct(profiles, surface, model='model.ckpt').")
    module = _load_module(model, device)
    settings = module.settings
    model_name = "(in memory)" if hasattr(model, "settings") else Path(model).name
    target_depths(settings, model_name)  # a format-2 checkpoint fails before any reading
    observations = _as_profiles(profiles, tuple(fill_values))
    with ExitStack() as files:
        surface_ds, surface_where = _as_dataset(surface, "<surface Dataset>", files)
        grid_ds, grid_where = (_as_dataset(grid, "<grid Dataset>", files) if grid is not None
                               else (surface_ds, surface_where))
        if grid_ds is None:
            raise ReconstructionError(
                "profiles need a grid to be binned onto: give --grid FILE.nc (grid=...), a NetCDF with latitude, "
                "longitude and an ocean_mask (e.g. results/<variant>/eval/reconstruction.nc) or a temperature "
                "field whose NaN is land (e.g. a GLORYS12 month), or --surface for eo_4band."
            )
        model_grid = grid_from_dataset(grid_ds, grid_where, settings, tuple(fill_values))
        eo, fields = _surface_eo(surface_ds, surface_where, model_grid, settings, grid_where, tuple(fill_values))
        day, why = reconstruction_date(date, surface_ds, surface_where, observations)
    binned = bin_profiles(observations, model_grid, _month_of(day))
    _log_report(binned.report, observations.source, _month_of(day))
    _check_used(binned.report, observations.source, _month_of(day), grid_where)
    log.info("reconstructing %s on %s (date %d from %s) with the %s model (%d members, %d steps, seed %d)",
             observations.source, grid_where, day, why, settings["variant"], ensemble_size, steps, seed)
    cells = GridObservations(binned.observed, model_grid.ocean, eo, model_grid.latitude, model_grid.longitude, day,
                             model_grid.latitude_attrs, model_grid.longitude_attrs, fields)
    mean, std = reconstruct_grid(module, cells, ensemble_size, steps, seed=seed)
    return _profile_output(mean, std, binned, model_grid, day, f"DepthDif {settings['variant']} model {model_name} "
                           f"applied to the profiles of {Path(observations.source).name} "
                           f"({sampling_description(module, ensemble_size, steps, seed)})")


def _surface_eo(surface: xr.Dataset | None, where: str, grid: ModelGrid, settings: dict, grid_where: str,
                fill_values: tuple[float, ...]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(ny, nx) surface field in °C on the grid for eo_4band (None for temp_v1), and the model's other surface
    variables (S, ny, nx) read by name from the same file (None for a model without them)."""
    if settings["variant"] != "eo_4band":
        return None, None
    if surface is None:
        raise ReconstructionError(
            "this is an eo_4band model: give the surface (EO) field with --surface FILE.nc (thetao at the "
            "surface, or a (latitude, longitude) sea surface temperature, e.g. a satellite L4 SST)."
        )
    return _surface_from(surface, where, grid.latitude, grid.longitude, settings, grid_where, fill_values)


def _log_report(report: Mapping[str, int], source: str, month: int) -> None:
    dropped = report["profiles_read"] - report["profiles_used"]
    log.log(logging.WARNING if dropped else logging.INFO, "%s", report_text(report, source, month))


def _check_used(report: Mapping[str, int], source: str, month: int, grid_where: str) -> None:
    """Refuse a binning that kept no profile, saying why each was dropped."""
    if report["profiles_used"] == 0:
        raise ReconstructionError(
            f"{report_text(report, source, month)}: no profile is left to reconstruct from. Check that the "
            f"profiles lie on the grid of {grid_where} and in the month (or give --date)."
        )


def _profile_output(mean: np.ndarray, std: np.ndarray, binned: BinnedProfiles, grid: ModelGrid, date: int,
                    source: str) -> xr.Dataset:
    """The reconstruction dataset plus ``observation_count`` and the ``profiles_*`` counts.

    Args:
        mean: (C, ny, nx) ensemble mean, °C.
        std: (C, ny, nx) ensemble spread, °C.
        binned: the profiles on the grid (counts and report).
        grid: the grid.
        date: YYYYMMDD.
        source: the ``source`` attribute (model, profiles, sampling).

    Returns:
        The CF dataset of :func:`reconstruct`.
    """
    lat = xr.DataArray(grid.latitude, dims="latitude", attrs=grid.latitude_attrs)
    lon = xr.DataArray(grid.longitude, dims="longitude", attrs=grid.longitude_attrs)
    observed = (binned.count > 0) & grid.ocean
    ds = reconstruction_dataset(mean, std, observed, grid.ocean, lat, lon, grid.depths, date, source=source)
    ds["observation_count"] = (("time", "depth", "latitude", "longitude"), binned.count[None].astype(np.int32), {
        "long_name": "number of profiles averaged into the observed value of the cell", "units": "1"})
    ds["thetao"].attrs["ancillary_variables"] = "thetao_std observation_mask observation_count"
    ds.attrs.update(binned.report)
    ds.attrs["profiles_month"] = f"{date // 10000:04d}-{date // 100 % 100:02d}"
    return ds


def reconstruct_profile_file(checkpoint: Path, observations: Path, output: Path, surface: Path | None = None,
                             grid: Path | None = None, **options) -> Path:
    """`depthdif reconstruct` on a profile file: :func:`reconstruct` written as CF NetCDF.

    Args:
        checkpoint: model.ckpt.
        observations: the profile NetCDF or CSV.
        output: the NetCDF to write (atomically).
        surface: the surface field (eo_4band; also the grid when ``grid`` is None).
        grid: the grid file.
        **options: date, ensemble_size, steps, seed, fill_values, device of :func:`reconstruct`.

    Returns:
        ``output``.
    """
    return write_netcdf(reconstruct(Path(observations), surface, Path(checkpoint), grid=grid, **options),
                        Path(output))


__all__ = [
    "BinnedProfiles", "ModelGrid", "ProfileFileError", "Profiles", "bin_profiles", "cell_index",
    "grid_from_dataset", "interpolate_to_depths", "is_profile_file", "profiles_from_dataset", "profiles_from_table",
    "read_profiles", "reconstruct", "reconstruct_profile_file", "reconstruction_date",
]  # fmt: skip
