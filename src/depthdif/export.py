"""Export stage: cut monthly GLORYS-layout NetCDF files into fixed-size patches (.npy) plus an index CSV.

Contract (docs/contract.md):
    {out_dir}/y_npy/<sample_id>.npy          float32 (C, H, W), °C for thetao, NaN where no data
    {out_dir}/surface_npy/<sample_id>.npy    float32 (S, H, W) of export.surface_variables (e.g. zos, m) at the
                                             same rows/cols, in their own units, NaN where no data; only when
                                             export.surface_variables is not empty
    {out_dir}/patch_index_with_paths.csv     one row per patch (COLUMNS below), written last

One job per month (Snakemake rule ``export_month``, wildcard ``month`` = YYYYMM): it writes that month's patches, its index
rows to ``{out_dir}/months/{month}.csv`` and its files' axes to ``{out_dir}/months/{month}.grid.npz``. The
rule ``export`` (``gather_index``) joins them into the index after the checks that need every month (one
depth axis, one grid) and the clean-ups (stale .npy, the split index of the previous export). The CLI's
``export_patches`` writes the same parts and the same index in one process.

Choices worth knowing:
- Only the requested depth levels of one variable are read, one level at a time (a real month holds 50
  levels and is ~15 GB decoded); int16 packing is decoded the way netCDF4's auto mask/scale does it
  (_FillValue / missing_value / valid_* -> NaN, then scale_factor and add_offset), then cast to float32.
- A pixel is "no data" when it is NaN in ANY exported channel (the seafloor cuts deeper levels first, so a
  coastal pixel may have a surface value but no 318 m value; the datasets treat such a pixel as land).
  ``nodata_fraction`` is that fraction per tile; tiles above export.max_nodata_fraction are dropped, and a
  tile with no data at all (all land) is always dropped, even with max_nodata_fraction = 1.
- lat0/lat1 and lon0/lon1 are the coordinate values of the tile's first/last row and column exactly as
  stored in the file: lat0 > lat1 for a file with descending latitude, and a 0..360 longitude file gives
  0..360 values. They are written as the shortest decimal that reads back to the file's float32 value.
- sample_id is ``YYYYMM_y0_x0`` (month of the manifest's date column). If several files of the manifest
  share a month, their ids become ``YYYYMM_<file stem>_y0_x0`` so they stay unique.
- Files of one manifest must share the depth axis (same values at the requested indices): channel k must
  mean the same depth in every patch, so a mismatch is an error rather than a silent mix.
- Rerun safety: the old index CSV (and the split index beside it, whose rows name the old patches) is
  removed first (by every month's job too), every .npy and finally the index are written
  atomically (a .npy that already holds the same bytes is left alone), and any .npy in y_npy/ that the
  new index does not list (a stale sample of an earlier config, a temp file of a killed run) is
  deleted by the gather, so the index always matches the files on disk.
- Reading goes through depthdif.cf: dims by role (time/time_counter, depth/deptht, latitude/lat, ...),
  values by CF decoding (_FillValue, missing_value, valid_*, _Unsigned, packing; see cf/decode.py).
- A temperature variable (thetao, a standard_name with "temperature", or temperature units) is converted
  from any temperature unit to °C (units column "degrees_C"); units that are not a temperature, or values
  outside -3..45 °C afterwards, stop the export naming the file. Other variables keep their units (e.g.
  salinity for export.variable = so), named in the units column.
- Land written as a number (0, -999, 1e20 ... at every exported level, no _FillValue) stops the export
  unless export.fill_values declares it; declared values become NaN wherever they appear.
- Surface fields (export.surface_variables, 2-D (time, latitude, longitude) such as zos) are read with the same
  CF decoding and declared fill values, on the temperature variable's grid, and keep their own units (no
  conversion). Their NaN is their own: which patches are kept is decided by the temperature levels alone. An
  undeclared sentinel other than 0 (a legitimate surface value) stops the export as for the levels. The
  index names them (``surface_variables``, ``surface_units``, joined by ";") and the file
  (``surface_npy_path``, relative to the index's folder); the three are empty strings when none is exported.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
from tqdm import tqdm

from depthdif.atomic import atomic_path, atomic_to_csv, remove_stale_temps
from depthdif.cf import (
    CELSIUS_UNITS,
    FieldFileError,
    apply_fill_values,
    axis_roles,
    check_sea_water_temperature,
    decode_values,
    depth_below_surface_m,
    is_temperature,
    to_celsius,
    where_of,
)
from depthdif.cf.axes import role_of_dim
from depthdif.cf.dates import file_date
from depthdif.cf.fills import COMMON_FILL_VALUES, EXPORT_HINT, constant_columns, mask_declared
from depthdif.errors import DepthDifError
from depthdif.layout import GRID_SUFFIX, INDEX_NAME, NPY_DIR, SPLIT_NAME, layout_of, month_part, month_tag
from depthdif.month_parts import read_month_part
from depthdif.paths import PathEscapeError, resolve_inside
from depthdif.reconstruction.tiling import TilingError, tile_fractions, tile_origins

log = logging.getLogger(__name__)

# the keys of config["export"] a month's export reads: the params of the rule export_month (export.workers
# only sets how many processes the CLI's export_patches uses, so changing it reruns nothing)
SETTINGS_KEYS = ("variable", "depth_indices", "patch_size", "stride", "max_nodata_fraction", "fill_values",
                 "surface_variables")
UNASSIGNED = "unassigned"
# the surface fields' patches, beside NPY_DIR (y_npy) in the patches folder
SURFACE_NPY_DIR = "surface_npy"
COLUMNS = [
    "sample_id", "source_file", "date", "y0", "x0", "patch_size", "lat0", "lat1", "lon0", "lon1",
    "nodata_fraction", "y_npy_path", "variable", "units", "depth_indices", "depth_values", "num_channels",
    "surface_variables", "surface_units", "surface_npy_path", "split",
]  # fmt: skip

# two files "share" a depth axis if their levels agree to this relative tolerance
_DEPTH_RTOL = 1e-4
# two files share a horizontal grid if their axes agree to this share of the grid step or to this many float32
# ulps of the values, whichever is larger: files store float32 coordinates, and the same grid written as
# float64 by another tool differs from them by up to half an ulp
_GRID_STEP_RTOL = 1e-6
_GRID_FLOAT32_ULPS = 4


class ExportError(DepthDifError, RuntimeError):
    """An input file or setting cannot be exported; the message names the file and what to do."""


class ExportFieldError(ExportError, FieldFileError):
    """A file the CF layer (depthdif.cf) refused, raised as both ExportError and FieldFileError.

    Both, so that callers of the export's contract and of the CF layer's contract each catch it.
    """


@dataclass(frozen=True)
class ExportSettings:
    """The export section of the config, in the form the workers need.

    Args:
        variable: the temperature variable to cut (export.variable).
        depth_indices: indices along its depth axis, in channel order (export.depth_indices).
        patch_size: tile side, px.
        stride: step between tile origins, px.
        max_nodata_fraction: tiles with a larger share of no-data pixels (land) are not kept.
        fill_values: values (the files' units) that mean no data (export.fill_values).
        surface_variables: 2-D surface variables exported beside each tile (export.surface_variables).
    """

    variable: str
    depth_indices: tuple[int, ...]
    patch_size: int
    stride: int
    max_nodata_fraction: float
    fill_values: tuple[float, ...] = ()
    surface_variables: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping) -> ExportSettings:
        """From a validated config.

        Args:
            config: a config with an ``export`` section.

        Returns:
            The settings of ``config["export"]``.
        """
        return cls.from_section(config["export"])

    @classmethod
    def from_section(cls, export: Mapping) -> ExportSettings:
        """From ``config["export"]`` (or ``export_params`` of it).

        Args:
            export: ``config["export"]`` or ``export_params`` of it.

        Returns:
            The settings, numbers converted to int/float and lists to tuples.
        """
        return cls(
            variable=str(export["variable"]),
            depth_indices=tuple(int(i) for i in export["depth_indices"]),
            patch_size=int(export["patch_size"]),
            stride=int(export["stride"]),
            max_nodata_fraction=float(export["max_nodata_fraction"]),
            fill_values=tuple(float(v) for v in export.get("fill_values") or ()),
            surface_variables=tuple(str(v) for v in export.get("surface_variables") or ()),
        )


@dataclass(frozen=True)
class FileJob:
    """One manifest entry: where the file is, its name in the manifest, its date, its sample-id prefix.

    Args:
        path: the file on disk.
        source_file: its name in the manifest (relative to the manifest's folder).
        date: its date, YYYYMMDD.
        id_prefix: the start of its patches' ``sample_id`` (``<id_prefix>_<y0>_<x0>``).
    """

    path: Path
    source_file: str
    date: int
    id_prefix: str


@dataclass(frozen=True)
class LevelStack:
    """The requested levels of one file: data (C, H, W) float32 plus the coordinates of its axes.

    Args:
        data: (C, H, W) float32, °C for a temperature variable (converted from the file's units), else the
            variable's own units; NaN = no data (land).
        latitude: (H,) degrees north.
        longitude: (W,) degrees east.
        depth_values: (C,) depth of each level, m.
        units: the temperature units of ``data`` (as written to the index).
    """

    data: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    depth_values: tuple[np.floating, ...]
    units: str


@dataclass(frozen=True)
class SurfaceField:
    """One 2-D surface variable of one file: data (H, W) float32 in the variable's own units, NaN = no data.

    Args:
        data: (H, W) float32, the variable's own units (not converted), NaN = no data.
        latitude: (H,) degrees north.
        longitude: (W,) degrees east.
        units: the variable's ``units`` attribute.
    """

    data: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    units: str


@dataclass(frozen=True)
class FileGrid:
    """The axes of one exported file, as the checks across months need them (saved per month).

    Args:
        job: the file's manifest entry.
        latitude: (H,) degrees north.
        longitude: (W,) degrees east.
        depth_values: (C,) depth of each exported level, m.
    """

    job: FileJob
    latitude: np.ndarray
    longitude: np.ndarray
    depth_values: tuple[np.floating, ...]


@dataclass(frozen=True)
class FileResult:
    """What a worker reports back for one file (the parent does the logging: workers are processes).

    Args:
        job: the file's manifest entry.
        rows: one index row (the index's COLUMNS) per kept tile.
        n_tiles: tiles cut from the file, kept or not.
        n_all_land: tiles dropped because every pixel is land.
        depth_values: (C,) depth of each exported level, m.
        latitude: (H,) degrees north.
        longitude: (W,) degrees east.
    """

    job: FileJob
    rows: list[dict]
    n_tiles: int
    n_all_land: int
    depth_values: tuple[np.floating, ...]
    latitude: np.ndarray
    longitude: np.ndarray


# ---------------------------------------------------------------------------------------------- manifest


def export_params(export: Mapping) -> dict:
    """What a month's export reads of ``config["export"]``: the params of the rule ``export_month``.

    Args:
        export: ``config["export"]``.

    Returns:
        Its keys of ``SETTINGS_KEYS``, values as the config has them.
    """
    return {key: export[key] for key in SETTINGS_KEYS}


def read_manifest(manifest_csv: Path, raw_dir: Path | None = None) -> list[FileJob]:
    """Read a manifest (file, bytes, sha256, date).

    Args:
        manifest_csv: ``raw/manifest.csv`` or a month's part of it.
        raw_dir: the folder its file names are relative to; None: the manifest's own folder (the contract).

    Returns:
        one job per file, in (date, name) order.

    Raises:
        ExportError: no such file, not a readable manifest, no rows, or a name outside ``raw_dir``.
    """
    manifest_csv = Path(manifest_csv)
    raw_dir = manifest_csv.parent if raw_dir is None else Path(raw_dir)
    try:
        frame = pd.read_csv(manifest_csv, dtype={"file": str})
    except FileNotFoundError:
        raise ExportError(f"manifest not found: {manifest_csv}; run the download stage first") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ExportError(
            f"manifest {manifest_csv} is not a readable CSV ({err}); rerun the download"
        ) from None
    if "file" not in frame.columns:
        raise ExportError(
            f"manifest {manifest_csv} has no 'file' column (columns: {list(frame.columns)}); "
            "expected file, bytes, sha256, date"
        )
    if frame.empty:
        raise ExportError(f"manifest {manifest_csv} lists no files; check source.years / source.months")
    entries = []
    for row, record in enumerate(frame.to_dict("records")):
        name = str(record["file"])
        try:
            resolve_inside(raw_dir, name, f"manifest {manifest_csv}, row {row}")
        except PathEscapeError as err:
            raise ExportError(str(err)) from None
        date = _manifest_date(record.get("date"), name, manifest_csv, raw_dir)
        entries.append((name, date))
    return _with_id_prefixes(raw_dir, entries)


def _manifest_date(value, name: str, manifest_csv: Path, raw_dir: Path) -> int:
    """YYYYMMDD int from the manifest's date column, or, if the column is empty, the date the file states
    (``depthdif.cf.dates.file_date``: time coordinate, then attributes, then name — the one date rule)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        try:
            return file_date(raw_dir / name)
        except (FieldFileError, OSError) as err:
            raise ExportError(
                f"manifest {manifest_csv}: file {name} has no date in the date column and none can be read "
                f"from the file ({err}); rerun the download stage"
            ) from None
    text = str(value).strip().replace("-", "")
    if text.endswith(".0"):
        text = text[:-2]
    if not (text.isdigit() and len(text) == 8):
        raise ExportError(
            f"manifest {manifest_csv}: date '{value}' of file {name} is not YYYYMMDD; rerun the download stage"
        )
    return int(text)


def _with_id_prefixes(raw_dir: Path, entries: list[tuple[str, int]]) -> list[FileJob]:
    """Sample ids start with YYYYMM; files that share a month also get their file stem."""
    months: dict[int, int] = {}
    for _, date in entries:
        months[date // 100] = months.get(date // 100, 0) + 1
    jobs = []
    for name, date in sorted(entries, key=lambda e: (e[1], e[0])):
        month = date // 100
        prefix = f"{month:06d}" if months[month] == 1 else f"{month:06d}_{Path(name).stem}"
        jobs.append(FileJob(path=raw_dir / name, source_file=name, date=date, id_prefix=prefix))
    return jobs


# --------------------------------------------------------------------------------------------- reading


def read_levels(
    path: Path, variable: str, depth_indices: tuple[int, ...], fill_values: tuple[float, ...] = ()
) -> LevelStack:
    """Read only ``depth_indices`` of ``variable`` from one NetCDF file, decoded to float32 (NaN = no data).

    Args:
        path: the NetCDF file.
        variable: the variable to read (export.variable).
        depth_indices: indices along its depth axis, in channel order.
        fill_values: values (in the file's units) that mean no data (export.fill_values).

    Returns:
        the (C, H, W) levels with their coordinates; temperatures in °C.

    Raises:
        ExportError: naming the file, for a missing file/variable, an out-of-range depth index, more than
            one time step, or a file that is truncated or corrupt.
        ExportFieldError: (an ExportError and a FieldFileError) the file's dims, attributes, units, values
            or land cannot be read as CF says (see depthdif.cf); the message names the file and the fix.
    """
    path = Path(path)
    reading = [variable]
    with _field_file(path, reading) as dataset:
        return _read_levels_open(dataset, path, variable, depth_indices, tuple(fill_values))


@contextmanager
def _field_file(path: Path, reading: list[str]):
    """The open NetCDF ``path``; every failure while it is read becomes an ExportError naming the file and
    ``reading[-1]``, the variable being read (a FieldFileError an ExportFieldError).

    Raises:
        ExportError: the file is missing, or unreadable (truncated or corrupt).
        ExportFieldError: its contents cannot be read as CF says.
    """
    if not path.is_file():
        raise ExportError(f"{path}: listed in the manifest but missing; rerun the download stage")
    try:
        with netCDF4.Dataset(path, "r") as dataset:
            yield dataset
    except ExportError:
        raise
    except FieldFileError as err:
        raise ExportFieldError(str(err)) from None
    except (OSError, RuntimeError, ValueError, IndexError, KeyError) as err:
        raise ExportError(
            f"{path}: cannot read {reading[-1]} ({type(err).__name__}: {err}); the file is probably truncated "
            "or corrupt: delete it and rerun the download stage"
        ) from err


def _read_levels_open(
    dataset, path: Path, variable: str, depth_indices: tuple[int, ...], fill_values: tuple[float, ...]
) -> LevelStack:
    if variable not in dataset.variables:
        raise ExportError(
            f"{path}: variable '{variable}' not found (variables: {sorted(dataset.variables)}); "
            "set export.variable to one of them"
        )
    var = dataset.variables[variable]
    axes = _axes_of(dataset, var, path)
    n_depth = var.shape[axes["depth"]]
    bad = [i for i in depth_indices if not 0 <= i < n_depth]
    if bad:
        raise ExportError(
            f"{path}: export.depth_indices {bad} out of range: the file's depth axis has {n_depth} levels "
            f"(valid indices 0..{n_depth - 1})"
        )
    if "time" in axes and var.shape[axes["time"]] != 1:
        raise ExportError(
            f"{path}: variable '{variable}' has {var.shape[axes['time']]} time steps; the export expects one "
            "month per file (time of length 1 or no time dimension)"
        )
    latitude = _coordinate(dataset, var.dimensions[axes["lat"]], path)
    longitude = _coordinate(dataset, var.dimensions[axes["lon"]], path)
    depth_dim = var.dimensions[axes["depth"]]
    depth_var = dataset.variables.get(depth_dim)
    depth = depth_below_surface_m(
        _coordinate(dataset, depth_dim, path),
        None if depth_var is None else {k: depth_var.getncattr(k) for k in depth_var.ncattrs()},
        f"{path}: coordinate '{depth_dim}'",
    )
    attrs = {name: var.getncattr(name) for name in var.ncattrs()}
    where = where_of(path, variable)
    var.set_auto_maskandscale(False)  # raw values: depthdif.cf decodes them (same values, no masked arrays)
    data = np.stack([_read_level(var, axes, index, attrs, where) for index in depth_indices])
    data = apply_fill_values(data, fill_values, where)
    units = str(attrs.get("units", ""))
    if is_temperature(variable, attrs):
        # the contract is °C: a file in Kelvin (or any temperature unit) is converted, not mixed in
        data = to_celsius(data, attrs.get("units"), where)
        check_sea_water_temperature(data, where)
        units = CELSIUS_UNITS
    return LevelStack(
        data=data,
        latitude=latitude,
        longitude=longitude,
        depth_values=tuple(depth[i] for i in depth_indices),  # numpy scalars: keep the file's precision
        units=units,
    )


def _axes_of(dataset, var, path: Path) -> dict[str, int]:
    """Position of each role (time, depth, lat, lon) among the variable's dims (see depthdif.cf.axes)."""

    def attrs_of(dim: str):
        coordinate = dataset.variables.get(dim)
        return None if coordinate is None else {k: coordinate.getncattr(k) for k in coordinate.ncattrs()}

    roles = axis_roles(var.dimensions, path, var.name, attrs_of)
    return {role: var.dimensions.index(dim) for role, dim in roles.items()}


def _coordinate(dataset, dim: str, path: Path) -> np.ndarray:
    if dim not in dataset.variables:
        raise ExportError(
            f"{path}: dimension '{dim}' has no coordinate variable; the file must store {dim}(…)"
        )
    values = dataset.variables[dim][:]
    return np.ma.filled(values, np.nan)


def _read_level(var, axes: dict[str, int], depth_index: int, attrs: dict, where: str) -> np.ndarray:
    """One (lat, lon) level, CF-decoded to float32 with NaN for no data (``var`` reads raw values)."""
    index: list[int | slice] = [slice(None)] * len(var.dimensions)
    index[axes["depth"]] = depth_index
    if "time" in axes:
        index[axes["time"]] = 0
    level = decode_values(np.asarray(var[tuple(index)]), attrs, where)
    if axes["lon"] < axes["lat"]:  # the two axes left keep the file's order
        level = level.T
    return np.ascontiguousarray(level)


def read_surface(
    path: Path, variable: str, grid_variable: str, fill_values: tuple[float, ...] = ()
) -> SurfaceField:
    """Read one 2-D surface variable (e.g. zos) of one NetCDF file, decoded to float32 (NaN = no data).

    Args:
        path: the NetCDF file.
        variable: the surface variable (one of export.surface_variables).
        grid_variable: the variable whose latitude/longitude the surface must be on (export.variable).
        fill_values: values (in the variable's units) that mean no data (export.fill_values).

    Returns:
        the (H, W) field in the variable's own units (not converted) with its coordinates.

    Raises:
        ExportError: naming the file, for a missing file or variable, a variable with a depth axis or more
            than one time step, a grid other than ``grid_variable``'s, or a file that is truncated or corrupt.
        ExportFieldError: the file's dims, attributes or values cannot be read as CF says (see depthdif.cf),
            or no data is written as an undeclared number.
    """
    return read_surfaces(path, (variable,), grid_variable, fill_values)[0]


def read_surfaces(
    path: Path, variables: Sequence[str], grid_variable: str, fill_values: tuple[float, ...] = ()
) -> list[SurfaceField]:
    """``read_surface`` of each of ``variables``, opening the file once.

    Args:
        path: the NetCDF file.
        variables: the surface variables (export.surface_variables).
        grid_variable: the variable whose latitude/longitude the surfaces must be on (export.variable).
        fill_values: values (in each variable's units) that mean no data (export.fill_values).

    Returns:
        One (H, W) float32 field per variable, in order, in its own units.

    Raises:
        ExportError, ExportFieldError: as ``read_surface``.
    """
    path = Path(path)
    reading = [variables[0] if variables else ""]
    with _field_file(path, reading) as dataset:
        fields = []
        for variable in variables:
            reading.append(variable)
            fields.append(_read_surface_open(dataset, path, variable, grid_variable, tuple(fill_values)))
        return fields


def _surface_roles(dataset, var, path: Path) -> dict[str, int]:
    """Position of time (optional), lat and lon among a surface variable's dims; a depth axis is refused."""
    roles: dict[str, int] = {}
    for position, dim in enumerate(var.dimensions):
        coordinate = dataset.variables.get(dim)
        attrs = None if coordinate is None else {k: coordinate.getncattr(k) for k in coordinate.ncattrs()}
        role = role_of_dim(dim, attrs)
        if role == "depth":
            raise ExportError(
                f"{path}: variable '{var.name}' has a depth axis (dims {var.dimensions}); "
                "export.surface_variables takes 2-D (time, latitude, longitude) fields such as zos: export a "
                "3-D variable with export.variable and export.depth_indices instead"
            )
        if role is None or role in roles:
            raise ExportError(
                f"{path}: variable '{var.name}' has dims {var.dimensions}; a surface variable "
                "(export.surface_variables) must have (time,) latitude, longitude"
            )
        roles[role] = position
    if "lat" not in roles or "lon" not in roles:
        raise ExportError(
            f"{path}: variable '{var.name}' has dims {var.dimensions}, no latitude/longitude; a surface variable "
            "(export.surface_variables) must have (time,) latitude, longitude"
        )
    return roles


def _read_surface_open(
    dataset, path: Path, variable: str, grid_variable: str, fill_values: tuple[float, ...]
) -> SurfaceField:
    if variable not in dataset.variables:
        raise ExportError(
            f"{path}: surface variable '{variable}' not found (variables: {sorted(dataset.variables)}); set "
            "export.surface_variables to variables the files hold (or []), or use source files that have it"
        )
    if grid_variable not in dataset.variables:
        raise ExportError(
            f"{path}: variable '{grid_variable}' not found (variables: {sorted(dataset.variables)}); "
            "set export.variable to one of them"
        )
    var = dataset.variables[variable]
    roles = _surface_roles(dataset, var, path)
    if "time" in roles and var.shape[roles["time"]] != 1:
        raise ExportError(
            f"{path}: variable '{variable}' has {var.shape[roles['time']]} time steps; the export expects one "
            "month per file (time of length 1 or no time dimension)"
        )
    latitude = _coordinate(dataset, var.dimensions[roles["lat"]], path)
    longitude = _coordinate(dataset, var.dimensions[roles["lon"]], path)
    grid = dataset.variables[grid_variable]
    grid_axes = _axes_of(dataset, grid, path)
    for axis, values, role in (("latitude", latitude, "lat"), ("longitude", longitude, "lon")):
        expected = _coordinate(dataset, grid.dimensions[grid_axes[role]], path)
        difference = _axis_difference(expected, values)
        if difference:
            raise ExportError(
                f"{path}: surface variable '{variable}' is not on the grid of '{grid_variable}': {axis} "
                f"{difference}. export.surface_variables must share export.variable's latitude/longitude; "
                "regrid it or remove it from export.surface_variables"
            )
    attrs = {name: var.getncattr(name) for name in var.ncattrs()}
    where = where_of(path, variable)
    var.set_auto_maskandscale(False)  # raw values: depthdif.cf decodes them
    index: list[int | slice] = [slice(None)] * len(var.dimensions)
    if "time" in roles:
        index[roles["time"]] = 0
    field = decode_values(np.asarray(var[tuple(index)]), attrs, where)
    if roles["lon"] < roles["lat"]:
        field = field.T
    field = np.ascontiguousarray(field, dtype=np.float32)
    _mask_surface_fills(field, fill_values, where)
    return SurfaceField(data=field, latitude=latitude, longitude=longitude, units=str(attrs.get("units", "")))


def _mask_surface_fills(field: np.ndarray, fill_values: Sequence[float], where: str) -> None:
    """Declared fills become NaN (in place); an undeclared common sentinel other than 0 stops the export.

    0 is left out of the check: a single 2-D level has no second level to tell land from water, and 0 is a
    value that sea-surface height (or an ice fraction) does take.
    """
    declared = mask_declared(field, fill_values)
    undeclared = [v for v in COMMON_FILL_VALUES if v != 0.0 and not np.isin(np.float32(v), declared)]
    found = constant_columns(field[None], undeclared)
    if found:
        counts = ", ".join(f"{value!r} in {np.count_nonzero(mask)} cells" for value, mask in found.items())
        first = next(iter(found))
        raise ExportFieldError(
            f"{where}: {counts} of {field.shape[0]}x{field.shape[1]}: land written as a number (the file gives "
            "no _FillValue or missing_value for it), not a surface value. Declare it as no data with "
            f"{EXPORT_HINT.format(value=first)} or set _FillValue in the file."
        )


# --------------------------------------------------------------------------------------------- tiling


def _coord_value(value) -> float:
    """A coordinate as the shortest decimal that reads back to the file's value (float32 stays tidy)."""
    return float(np.format_float_positional(value, unique=True, trim="0"))


def _join(values) -> str:
    return ";".join(str(v) for v in values)


def export_file(job: FileJob, settings: ExportSettings, out_dir: Path) -> FileResult:
    """Read one file, write its kept tiles as .npy under ``out_dir/y_npy`` (and their surface fields under
    ``out_dir/surface_npy``), return their index rows.

    A tile is kept when its share of no-data pixels (of any requested level) is at most
    ``settings.max_nodata_fraction`` and below 1.

    Args:
        job: the file's manifest entry.
        settings: the export settings.
        out_dir: the patches folder.

    Returns:
        The file's index rows (``split`` unassigned), tile counts and axes. Each tile is a
        (C, patch_size, patch_size) float32 .npy (°C for a temperature variable), NaN on land; a surface tile is (S, patch_size,
        patch_size) float32 in the variables' own units.

    Raises:
        ExportError: as ``read_levels`` and ``read_surfaces``, or the grid is smaller than one tile.
    """
    stack = read_levels(job.path, settings.variable, settings.depth_indices, settings.fill_values)
    size = settings.patch_size
    try:
        origins = tile_origins(stack.data.shape[1:], size, settings.stride)
    except TilingError as err:
        raise ExportError(f"{job.path}: grid {stack.data.shape[1:]} cannot be tiled: {err}") from None
    nodata = np.isnan(stack.data).any(axis=0)  # the temperature levels alone decide which tiles are kept
    fractions = tile_fractions(nodata, origins, size)
    depth_indices = _join(settings.depth_indices)
    depth_values = _join(_coord_value(v) for v in stack.depth_values)
    surface, surface_names, surface_units = None, "", ""
    if settings.surface_variables:
        fields = read_surfaces(job.path, settings.surface_variables, settings.variable, settings.fill_values)
        surface = np.stack([field.data for field in fields])
        if surface.shape[1:] != stack.data.shape[1:]:  # same axes, so only a bug gets here
            raise ExportError(
                f"{job.path}: surface fields {surface.shape[1:]} and {settings.variable} {stack.data.shape[1:]} "
                "differ in shape"
            )
        surface_names = _join(settings.surface_variables)
        surface_units = _join(field.units for field in fields)
    rows, n_all_land = [], 0
    for (y0, x0), fraction in zip(origins, fractions, strict=True):
        if fraction >= 1.0:
            n_all_land += 1
            continue
        if fraction > settings.max_nodata_fraction:
            continue
        sample_id = f"{job.id_prefix}_{y0}_{x0}"
        relative = f"{NPY_DIR}/{sample_id}.npy"
        tile = np.ascontiguousarray(stack.data[:, y0 : y0 + size, x0 : x0 + size])
        _write_npy(out_dir / relative, tile)
        surface_relative = ""
        if surface is not None:
            surface_relative = f"{SURFACE_NPY_DIR}/{sample_id}.npy"
            _write_npy(out_dir / surface_relative,
                       np.ascontiguousarray(surface[:, y0 : y0 + size, x0 : x0 + size]))  # fmt: skip
        rows.append(
            {
                "sample_id": sample_id,
                "source_file": job.source_file,
                "date": job.date,
                "y0": y0,
                "x0": x0,
                "patch_size": size,
                "lat0": _coord_value(stack.latitude[y0]),
                "lat1": _coord_value(stack.latitude[y0 + size - 1]),
                "lon0": _coord_value(stack.longitude[x0]),
                "lon1": _coord_value(stack.longitude[x0 + size - 1]),
                "nodata_fraction": float(fraction),
                "y_npy_path": relative,
                "variable": settings.variable,
                "units": stack.units,
                "depth_indices": depth_indices,
                "depth_values": depth_values,
                "num_channels": len(settings.depth_indices),
                "surface_variables": surface_names,
                "surface_units": surface_units,
                "surface_npy_path": surface_relative,
                "split": UNASSIGNED,
            }
        )
    return FileResult(
        job, rows, len(origins), n_all_land, stack.depth_values, stack.latitude, stack.longitude
    )


def _write_npy(target: Path, tile: np.ndarray) -> None:
    """Atomic np.save, skipped when the file already holds exactly these bytes (a rerun).

    Replacing a file costs a few ms on ext4 (the old blocks are freed and the rename forces a flush),
    which dominates a rerun; comparing bytes costs a fraction of that and leaves unchanged files alone.
    """
    buffer = io.BytesIO()
    np.save(buffer, tile)
    data = buffer.getvalue()
    try:
        if target.stat().st_size == len(data) and target.read_bytes() == data:
            return
    except OSError:
        pass  # no file yet (or unreadable): write it
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


# ------------------------------------------------------------------------------------------ the stage


def export_month(
    export: Mapping,
    manifest_csv: Path,
    raw_dir: Path,
    index_csv: Path,
    grid_npz: Path,
    patches_dir: Path,
    workers: int = 1,
    stale: Iterable[Path] = (),
) -> Path:
    """One month of the export: its patches, its index rows and its files' axes.

    Args:
        export: ``config["export"]`` (or ``export_params`` of it: the rule's params).
        manifest_csv: the month's manifest (``RunLayout.month_manifest``).
        raw_dir: the folder its file names are relative to (``RunLayout.raw_dir``).
        index_csv: the month's index rows (``RunLayout.month_index``), COLUMNS, ``y_npy_path`` and
            ``surface_npy_path`` relative to ``patches_dir``; written last, atomically.
        grid_npz: latitude, longitude and depths of each file (``RunLayout.month_grid``), for ``gather_index``.
        patches_dir: where ``y_npy/<sample_id>.npy`` (and ``surface_npy/<sample_id>.npy`` when
            export.surface_variables is not empty) go (``RunLayout.patches_dir``).
        workers: processes working on the month's files (a month usually has one file).
        stale: files this export makes stale (the gathered index, the split index): removed first, so that
            none that looks finished names patches this job rewrites.

    Returns:
        ``index_csv``.

    Raises:
        ExportError: a file or setting cannot be exported (see ``read_levels``); the message names the file.
    """
    settings = ExportSettings.from_section(export)
    for path in (index_csv, grid_npz):  # a failed month must not leave parts that look finished
        Path(path).unlink(missing_ok=True)
    for path in stale:
        _remove_stale_output(Path(path))
    jobs = read_manifest(Path(manifest_csv), raw_dir=Path(raw_dir))
    (Path(patches_dir) / NPY_DIR).mkdir(parents=True, exist_ok=True)
    _log_settings(len(jobs), settings, workers)
    results = _run_jobs(jobs, settings, Path(patches_dir), _check_workers(workers))
    return write_month_part(results, Path(index_csv), Path(grid_npz))


def export_patches(
    config: dict, manifest_csv: Path, out_dir: Path | None = None, workers: int | None = None
) -> Path:
    """The whole export in one process (the CLI): every month's part, then the index CSV (written last).

    ``workers`` processes work on files in parallel (default export.workers; 1 = in this process).
    Rows are sorted by (date, y0, x0, source_file), so a rerun with the same inputs is byte-identical.
    A split index (patch_index_split.csv) left in ``out_dir`` by an earlier split is removed, with a log line:
    its rows name patches that this export rewrites or deletes.

    Args:
        config: a validated config.
        manifest_csv: ``raw/manifest.csv`` (file names relative to its folder).
        out_dir: the patches folder; default ``RunLayout.patches_dir``. The months' parts go to
            ``{out_dir}/months/``.
        workers: processes; default export.workers.

    Returns:
        the path of the index CSV.

    Raises:
        ExportError: as ``export_month`` and ``gather_index``.
    """
    settings = ExportSettings.from_config(config)
    out_dir = Path(out_dir) if out_dir is not None else layout_of(config).patches_dir
    workers = _check_workers(int(workers if workers is not None else config["export"]["workers"]))
    jobs = read_manifest(Path(manifest_csv))
    index_path = out_dir / INDEX_NAME
    split_path = out_dir / SPLIT_NAME
    for path in (index_path, split_path):  # a failed run must not leave an index that looks finished
        _remove_stale_output(path)
    (out_dir / NPY_DIR).mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out_dir)  # this process is the only writer of out_dir
    _log_settings(len(jobs), settings, workers)
    results = _run_jobs(jobs, settings, out_dir, workers)
    indexes, grids = [], []
    for tag, month_results in _results_by_month(results).items():
        indexes.append(month_part(out_dir, tag))
        grids.append(month_part(out_dir, tag, GRID_SUFFIX))
        write_month_part(month_results, indexes[-1], grids[-1])
    return gather_index(indexes, grids, index_path, split_csv=split_path)


def _check_workers(workers: int) -> int:
    if workers < 1:
        raise ExportError(f"workers must be >= 1, got {workers}")
    return workers


def _log_settings(n_files: int, settings: ExportSettings, workers: int) -> None:
    log.info(
        "exporting %d file(s): %s levels %s (surface %s), %dx%d patches every %d px, max no-data %.2f, "
        "%d worker(s)",
        n_files, settings.variable, list(settings.depth_indices), list(settings.surface_variables),
        settings.patch_size, settings.patch_size, settings.stride, settings.max_nodata_fraction, workers,
    )  # fmt: skip


def _remove_stale_output(path: Path) -> None:
    """Delete an index this export makes stale, saying so for the split index (the user may have run it)."""
    if not path.exists():
        return
    path.unlink()
    if path.name == SPLIT_NAME:  # training on it would read patches of another export, or missing ones
        log.info("removed %s: it split the patches of the previous export; run split again", path)


def _results_by_month(results: list[FileResult]) -> dict[str, list[FileResult]]:
    """Results grouped by the month of their file's date (YYYYMM), in time order."""
    grouped: dict[str, list[FileResult]] = {}
    for result in sorted(results, key=lambda r: (r.job.date, r.job.source_file)):
        date = result.job.date
        grouped.setdefault(month_tag(date // 10000, date // 100 % 100), []).append(result)
    return grouped


def write_month_part(results: list[FileResult], index_csv: Path, grid_npz: Path) -> Path:
    """Write a month's index rows (sorted as the final index) and its files' axes; return ``index_csv``.

    Args:
        results: what each file of the month gave.
        index_csv: the rows, COLUMNS; a month whose tiles were all filtered out gets a header only.
        grid_npz: ``source_file``, ``path``, ``date`` of each file and its ``latitude_<i>``,
            ``longitude_<i>``, ``depth_values_<i>`` (``allow_pickle=False``).

    Returns:
        ``index_csv``.
    """
    rows = _report(results)
    frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(
        ["date", "y0", "x0", "source_file"], kind="stable"
    )
    index_csv.parent.mkdir(parents=True, exist_ok=True)
    _save_grids(results, grid_npz)
    atomic_to_csv(frame, index_csv)
    log.info("wrote %d patches to %s", len(frame), index_csv)
    return index_csv


def _save_grids(results: Sequence[FileResult], path: Path) -> None:
    ordered = sorted(results, key=lambda r: (r.job.date, r.job.source_file))
    arrays = {
        "source_file": np.array([r.job.source_file for r in ordered], dtype=str),
        "path": np.array([str(r.job.path) for r in ordered], dtype=str),
        "date": np.array([r.job.date for r in ordered], dtype=np.int64),
    }
    for i, result in enumerate(ordered):
        arrays[f"latitude_{i}"] = np.asarray(result.latitude)
        arrays[f"longitude_{i}"] = np.asarray(result.longitude)
        arrays[f"depth_values_{i}"] = np.asarray(result.depth_values)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        np.savez(stream, **arrays)


def load_grids(path: Path) -> list[FileGrid]:
    """The axes of each file of a month's export (``write_month_part``).

    Args:
        path: the month's ``.grid.npz`` (``RunLayout.month_grid``).

    Returns:
        One grid per file of the month, in the order the part lists them (``job.id_prefix`` empty).

    Raises:

        ExportError: the file is missing or not one ``write_month_part`` wrote.
    """
    try:
        with np.load(path, allow_pickle=False) as saved:
            grids = []
            for i, (name, where, date) in enumerate(zip(saved["source_file"], saved["path"], saved["date"],
                                                        strict=True)):  # fmt: skip
                job = FileJob(path=Path(str(where)), source_file=str(name), date=int(date), id_prefix="")
                grids.append(FileGrid(job, saved[f"latitude_{i}"], saved[f"longitude_{i}"],
                                      tuple(saved[f"depth_values_{i}"])))  # fmt: skip
            return grids
    except FileNotFoundError:
        raise ExportError(f"{path} is missing: run the export of that month again") from None
    except (OSError, KeyError, ValueError) as err:
        raise ExportError(
            f"{path} is not a month's grid file ({err}); delete it and run the export again"
        ) from None


def gather_index(
    indexes: Sequence[Path], grids: Sequence[Path], out_csv: Path, split_csv: Path | None = None
) -> Path:
    """Join the months' index rows into the index CSV, after the checks that need every month.

    Runs when no month's export is running (the rule ``export`` waits for all of them), so it also removes
    what no month can: .npy files the index does not list (an earlier config, a removed month, temporary
    files of killed jobs) and the split index of the previous export.

    Args:
        indexes: the months' index rows (``RunLayout.month_index``).
        grids: the months' axes (``RunLayout.month_grid``), same months.
        out_csv: the index (``RunLayout.patch_index``); ``y_npy_path`` and ``surface_npy_path`` are relative
            to its folder. Written last, atomically, rows sorted by (date, y0, x0, source_file).
        split_csv: the split index beside it (``RunLayout.split_index``), removed when present.

    Returns:
        ``out_csv``.

    Raises:
        ExportError: files that do not share a depth axis or a grid (naming two of them), a sample id listed
            twice, or no patch at all.
    """
    out_csv = Path(out_csv)
    for path in (out_csv, split_csv):
        if path is not None:
            _remove_stale_output(Path(path))
    for folder in {out_csv.parent, *(Path(path).parent for path in indexes)}:
        remove_stale_temps(folder)  # of killed jobs: no month's job is running now
    files = [grid for path in grids for grid in load_grids(Path(path))]
    _check_same_depths(files)
    _check_same_grid(files)
    frames = [read_month_part(Path(path), COLUMNS, ExportError, "index", "export") for path in indexes]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        raise ExportError(
            f"no patch survived the export of {len(files)} file(s) in {len(indexes)} month(s): every tile is "
            "land or has more than export.max_nodata_fraction no-data; raise max_nodata_fraction, lower "
            "patch_size or pick shallower depth_indices"
        )
    frame = pd.concat(frames, ignore_index=True)
    keys = frame[["date", "y0", "x0"]].astype(np.int64).assign(source_file=frame["source_file"])
    frame = frame.loc[keys.sort_values(["date", "y0", "x0", "source_file"], kind="stable").index]
    twice = sorted(set(frame.loc[frame["sample_id"].duplicated(), "sample_id"]))
    if twice:
        raise ExportError(
            f"sample ids {twice[:3]} come from more than one month's export in {out_csv.parent}/months: delete "
            "that folder and run the export again"
        )
    _remove_stale_npy(out_csv.parent / NPY_DIR, set(frame["sample_id"]))
    with_surface = frame.loc[frame["surface_npy_path"] != "", "sample_id"]
    _remove_stale_npy(out_csv.parent / SURFACE_NPY_DIR, set(with_surface), remove_empty=not len(with_surface))
    atomic_to_csv(frame, out_csv)
    log.info("wrote %d patches of %d month(s) to %s", len(frame), len(indexes), out_csv)
    return out_csv


def _run_jobs(jobs: list[FileJob], settings: ExportSettings, out_dir: Path, workers: int) -> list[FileResult]:
    if workers == 1 or len(jobs) == 1:
        results = []
        for job in tqdm(jobs, desc="export", unit="file"):
            results.append(export_file(job, settings, out_dir))
        return results
    return _run_pool(jobs, settings, out_dir, min(workers, len(jobs)))


def _run_pool(jobs: list[FileJob], settings: ExportSettings, out_dir: Path, workers: int) -> list[FileResult]:
    """Files in parallel processes; the first failure cancels what has not started and is re-raised.

    Workers are forked, not spawned: spawn (and forkserver) re-import ``__main__`` in every child, which
    re-runs an unguarded script such as a Snakemake ``script:`` wrapper. Forking is safe here because the
    parent has no NetCDF file open, and all children are started at the first submit, before the progress
    bar starts its monitor thread.
    """
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    results = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
        pending = {pool.submit(export_file, job, settings, out_dir): job for job in jobs}
        with tqdm(total=len(jobs), desc="export", unit="file") as progress:
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    job = pending.pop(future)
                    try:
                        results.append(future.result())
                    except BrokenProcessPool as err:
                        pool.shutdown(cancel_futures=True)
                        raise ExportError(
                            f"a worker process died while exporting {job.path} (out of memory?); "
                            "lower export.workers and rerun"
                        ) from err
                    except BaseException:
                        pool.shutdown(cancel_futures=True)
                        raise
                    progress.update()
    return results


def _check_same_depths(results: Sequence[FileGrid | FileResult]) -> None:
    """Channel k must mean the same depth in every patch."""
    if not results:
        return
    first = min(results, key=lambda r: r.job.date)
    for result in results:
        if not np.allclose(result.depth_values, first.depth_values, rtol=_DEPTH_RTOL, atol=0):
            raise ExportError(
                f"{result.job.path} has depths {list(result.depth_values)} m at export.depth_indices but "
                f"{first.job.path} has {list(first.depth_values)} m: the files do not share a depth axis; "
                "export them separately or fix the download"
            )


def _check_same_grid(results: Sequence[FileGrid | FileResult]) -> None:
    """A patch's (y0, x0) must be the same place in every file: the split, climatology and DINEOF group by it.

    Args:
        results: the axes of each file of the run (every month).

    Raises:
        ExportError: a file's latitude or longitude axis differs from the earliest file's; the message names
            both files and the difference (size, first/last values, largest offset).
    """
    if not results:
        return
    first = min(results, key=lambda r: (r.job.date, r.job.source_file))
    for result in results:
        for axis in ("latitude", "longitude"):
            difference = _axis_difference(getattr(first, axis), getattr(result, axis))
            if difference:
                raise ExportError(
                    f"{result.job.path} is on another grid than {first.job.path}: {axis} {difference}. "
                    "All files of a source must share one grid, because a patch at (y0, x0) must be the same "
                    "place in every month: regrid the file onto the others' grid or take it out of the "
                    "source (source.local_dir, source.years, source.months), then rerun the download"
                )


def _axis_difference(first: np.ndarray, other: np.ndarray) -> str | None:
    """How ``other`` differs from ``first`` beyond the grid tolerance, in words; None when they agree.

    Args:
        first: a coordinate axis of the earliest file.
        other: the same axis of another file.

    Returns:
        ``"<other> vs <first>"`` (size, first and last value of each) and, for axes of one size, the largest
        offset; or None.
    """
    largest = ""
    if other.shape == first.shape:
        a, b = first.astype(np.float64), other.astype(np.float64)
        offset = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        offset = np.nan_to_num(offset, nan=np.inf)  # NaN in one file only: no match
        worst = int(np.argmax(offset)) if offset.size else 0
        if not offset.size or offset[worst] <= _grid_tolerance(first):
            return None
        largest = (
            f"; largest offset {offset[worst]:.6g} at index {worst} ({_coord_value(other[worst])} vs "
            f"{_coord_value(first[worst])})"
        )
    return f"{_describe_axis(other)} vs {_describe_axis(first)}{largest}"


def _describe_axis(values: np.ndarray) -> str:
    if not values.size:
        return "0 values"
    return f"{values.size} values from {_coord_value(values[0])} to {_coord_value(values[-1])}"


def _grid_tolerance(axis: np.ndarray) -> float:
    """Largest offset two files may have on ``axis`` and still share it (see _GRID_STEP_RTOL)."""
    values = axis.astype(np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0
    steps = np.abs(np.diff(values))
    step = float(np.median(steps)) if steps.size else 0.0
    ulp = float(np.spacing(np.float32(np.abs(values).max())))
    return max(_GRID_STEP_RTOL * step, _GRID_FLOAT32_ULPS * ulp)


def _report(results: list[FileResult]) -> list[dict]:
    """Log what each file gave (a month with no patch is a warning, not an error) and gather the rows."""
    rows = []
    for result in sorted(results, key=lambda r: (r.job.date, r.job.source_file)):
        kept = len(result.rows)
        if kept == 0:
            log.warning(
                "%s: all %d tiles filtered out (%d all land); this month gives no patch",
                result.job.source_file, result.n_tiles, result.n_all_land,
            )  # fmt: skip
        else:
            log.info(
                "%s: kept %d of %d tiles (%d all land)",
                result.job.source_file, kept, result.n_tiles, result.n_all_land,
            )  # fmt: skip
        rows.extend(result.rows)
    return rows


def _remove_stale_npy(npy_dir: Path, sample_ids: set[str], remove_empty: bool = False) -> None:
    """Delete .npy files the new index does not list (old config, temp files of a killed run).

    ``remove_empty``: then also the folder, when nothing is left in it (surface_npy/ of an export that
    exports no surface field any more). A folder that does not exist is left alone.
    """
    if not npy_dir.is_dir():
        return
    wanted = {f"{sample_id}.npy" for sample_id in sample_ids}
    stale = [p for p in npy_dir.iterdir() if p.name.endswith(".npy") and p.name not in wanted]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d stale .npy file(s) from %s", len(stale), npy_dir)
    if remove_empty and not any(npy_dir.iterdir()):
        npy_dir.rmdir()
