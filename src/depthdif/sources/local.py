"""Use monthly NetCDF files already on disk (``source.kind: local``).

Every ``*.nc`` of ``source.local_dir`` is checked (readable, has ``export.variable`` on (time, depth,
latitude, longitude) and every ``export.surface_variables``); those dated in ``source.years`` x ``source.months`` are placed in ``raw/`` as a symlink
(a copy where links are not possible) so that later stages find the contract path ``{data_dir}/raw/*.nc``,
the others are logged with their dates and left out. Snakemake plans one job per month from the files'
dates alone (``local_months``); each month's job checks and places its own files (``link_files``).
Checks follow the rules the export reads files by (depthdif.cf): any accepted spelling of the axes
(``time_counter``, ``deptht``, ``lat``, ``lon``, axis attributes), temperature units on a temperature, and
the date from the time coordinate, then the ACDD time_coverage_* attributes, then the name. Files whose axes
are spelled otherwise than GLORYS's get a copy with the GLORYS names: the export reads any spelling, but
every other reader of ``raw/`` then sees one layout.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
import xarray as xr
from tqdm import tqdm

from depthdif.atomic import atomic_path
from depthdif.cf import (
    FieldFileError,
    axis_roles,
    canonical_names,
    check_temperature_units,
    date_of_netcdf,
    is_temperature,
    where_of,
)
from depthdif.cf.dates import file_date
from depthdif.download import DownloadError

log = logging.getLogger(__name__)

# the roles of the variable's dims, in the order every stage reads them (time is optional)
ROLE_ORDERS = (("time", "depth", "lat", "lon"), ("depth", "lat", "lon"))


@dataclass(frozen=True)
class LocalFile:
    """A checked local file: where it is, which axes to rename, and its date (YYYYMMDD)."""

    path: Path
    date: int
    renames: dict[str, str] = field(default_factory=dict)


def _axis_roles(dataset: netCDF4.Dataset, path: Path, variable: str) -> dict[str, str]:
    """Role -> dim of ``variable`` (see depthdif.cf.axes); raise unless (time,) depth, lat, lon in order."""
    dims = dataset.variables[variable].dimensions

    def attrs_of(dim: str):
        coordinate = dataset.variables.get(dim)
        return None if coordinate is None else {k: coordinate.getncattr(k) for k in coordinate.ncattrs()}

    roles = axis_roles(dims, path, variable, attrs_of)
    by_dim = {dim: role for role, dim in roles.items()}
    if tuple(by_dim[dim] for dim in dims) not in ROLE_ORDERS:
        raise DownloadError(
            f"{path}: variable '{variable}' has dimensions {dims}; DepthDif needs (time, depth, latitude, "
            "longitude) in this order (reorder it, e.g. `ncpdq -a time,depth,latitude,longitude`)."
        )
    return roles


def inspect_local_file(path: Path, variable: str, surface_variables: Sequence[str] = ()) -> LocalFile:
    """Check one local file and return what placing it needs.

    Args:
        path: a NetCDF file of source.local_dir.
        variable: export.variable.
        surface_variables: export.surface_variables: the file must hold each (the export checks their axes).

    Returns:
        the file, its date (YYYYMMDD, see depthdif.cf.dates) and the dim renames its copy needs.

    Raises:
        DownloadError: naming the file: unreadable, no such variable (or surface variable), dims the export
            cannot read, more than one time step, units that are not a temperature on a temperature variable,
            or no date.
    """
    try:
        dataset = netCDF4.Dataset(path)
    except OSError as err:
        raise DownloadError(
            f"{path} is not a readable NetCDF file ({err}); replace it or remove it from source.local_dir."
        ) from None
    with dataset:
        if variable not in dataset.variables:
            raise DownloadError(
                f"{path} has no variable '{variable}' (export.variable); it has "
                f"{sorted(dataset.variables)}. Set export.variable or remove the file from source.local_dir."
            )
        missing = [name for name in surface_variables if name not in dataset.variables]
        if missing:
            raise DownloadError(
                f"{path} has no surface variable {missing} (export.surface_variables); it has "
                f"{sorted(dataset.variables)}. Set export.surface_variables to variables the files hold (or []), "
                "or use source files that have it."
            )
        try:
            return _inspect_open(dataset, path, variable)
        except FieldFileError as err:
            raise DownloadError(f"{err} Otherwise remove the file from source.local_dir.") from err


def _inspect_open(dataset: netCDF4.Dataset, path: Path, variable: str) -> LocalFile:
    roles = _axis_roles(dataset, path, variable)
    if "time" in roles and len(dataset.dimensions[roles["time"]]) != 1:
        raise DownloadError(
            f"{path} holds {len(dataset.dimensions[roles['time']])} time steps of '{variable}'; DepthDif "
            "expects one month per file (split it, e.g. `cdo splitmon`)."
        )
    var = dataset.variables[variable]
    attrs = {name: var.getncattr(name) for name in var.ncattrs()}
    if is_temperature(variable, attrs):
        # checked here so that a wrong file stops the download, not an export hours later
        check_temperature_units(attrs.get("units"), where_of(path, variable))
    return LocalFile(path=path, date=date_of_netcdf(dataset, path), renames=canonical_names(roles))


def copy_atomically(source: Path, target: Path) -> None:
    """Copy a file so that ``target`` appears only once complete, keeping the source's mtime."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
        os.utime(tmp, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))


def _is_current_copy(source: Path, target: Path) -> bool:
    """A regular file written from ``source`` as it is now: every copy carries the mtime of its source.

    Equal, not newer-or-equal: a source replaced by a file with an older mtime (``cp -p``, ``rsync -a``) is a
    change too.
    """
    return (
        target.is_file()
        and not target.is_symlink()
        and target.stat().st_mtime_ns == source.stat().st_mtime_ns
    )


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` a symlink to ``source``, or an atomic copy where the filesystem has no symlinks."""
    source = source.resolve()
    if target.is_symlink() and target.resolve() == source:
        return
    if _is_current_copy(source, target) and target.stat().st_size == source.stat().st_size:
        return
    tmp = target.with_name(f".{target.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(source, tmp)
        os.replace(tmp, target)  # atomic: target is the old file or the new link, never missing
    except OSError as err:
        tmp.unlink(missing_ok=True)
        log.info("cannot symlink %s (%s); copying it instead", target, err)
        copy_atomically(source, target)


def write_renamed_copy(local: LocalFile, target: Path) -> None:
    """Copy ``local.path`` with its axes renamed, keeping the stored (packed) values and attributes.

    netCDF4's in-place renameDimension/renameVariable corrupt coordinate values in netCDF-4 files, so the
    file is rewritten through xarray (undecoded, chunked by dask so a large file is streamed).
    """
    if _is_current_copy(local.path, target):
        return
    log.info("writing %s with dimensions renamed %s", target, local.renames)
    with xr.open_dataset(local.path, decode_cf=False, chunks={}) as dataset, atomic_path(target) as tmp:
        dataset.rename(local.renames).to_netcdf(tmp)
        stat = local.path.stat()
        os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the source's mtime: see _is_current_copy


def local_nc_files(local_dir: Path) -> list[Path]:
    if not local_dir.is_dir():
        raise DownloadError(f"source.local_dir {local_dir} is not a folder; give the folder of *.nc files.")
    paths = sorted(local_dir.glob("*.nc"))
    if not paths:
        raise DownloadError(f"source.local_dir {local_dir} holds no *.nc file; put the monthly files there.")
    return paths


def check_local_files(
    local_dir: Path,
    variable: str,
    selection: Collection[tuple[int, int]] | None = None,
    surface_variables: Sequence[str] = (),
) -> list[LocalFile]:
    """The files of ``local_dir`` dated in ``selection``; every file is checked, all problems at once.

    A file's date is the one ``inspect_local_file`` reads (what the file states before what its name
    suggests), so every file is opened, and one that cannot be used stops the download even when its name
    suggests another year: its date is not known without reading it.

    Args:
        local_dir: source.local_dir.
        variable: export.variable.
        selection: the (year, month) pairs of source.years x source.months; None keeps every file.
        surface_variables: export.surface_variables.

    Returns:
        The checked files dated in the selection, in name order.

    Raises:
        DownloadError: files cannot be used (all named in one message), or no file is dated in the selection.
    """
    paths = local_nc_files(local_dir)
    checked = _inspect_all(paths, variable, local_dir, surface_variables)
    kept = [local for local in checked if _selected(local.date, selection)]
    left_out = [(local.path.name, local.date) for local in checked if local not in kept]
    _report_left_out(left_out, len(paths), kept, selection, local_dir)
    return kept


def _inspect_all(
    paths: list[Path], variable: str, local_dir: Path, surface_variables: Sequence[str] = ()
) -> list[LocalFile]:
    """``inspect_local_file`` of each path; one DownloadError naming every file that cannot be used."""
    checked, problems = [], []
    for path in tqdm(paths, desc="check local files", unit="file"):
        try:
            checked.append(inspect_local_file(path, variable, surface_variables))
        except DownloadError as err:
            problems.append(str(err))
    if problems:
        raise DownloadError(
            f"{len(problems)} of {len(paths)} files in {local_dir} cannot be used:\n  - "
            + "\n  - ".join(problems)
        )
    return checked


def _year_month(date: int) -> tuple[int, int]:
    return date // 10000, date // 100 % 100


def _selected(date: int, selection: Collection[tuple[int, int]] | None) -> bool:
    return selection is None or _year_month(date) in set(selection)


def describe_selection(selection: Collection[tuple[int, int]]) -> str:
    """``source.years [...] x source.months [...]`` of the (year, month) pairs, for messages."""
    years = sorted({year for year, _ in selection})
    months = sorted({month for _, month in selection})
    return f"source.years {years} x source.months {months}"


def _report_left_out(
    left_out: list[tuple[str, int]],
    n_files: int,
    kept: Sequence,
    selection: Collection[tuple[int, int]] | None,
    local_dir: Path,
) -> None:
    """Log the files dated outside the selection with their dates; raise if no file is left.

    Raises:
        DownloadError: ``kept`` is empty; the message names the selection and every file's date.
    """
    if not left_out:
        return
    dated = ", ".join(f"{name} ({date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d})"
                      for name, date in sorted(left_out))
    if not kept:
        raise DownloadError(
            f"no file in {local_dir} is dated in {describe_selection(selection)}; the files are {dated}. "
            "source.years and source.months select local files by date too: set them to the months you "
            "want, or point source.local_dir at the folder of those months."
        )
    log.info("%d of %d files in %s are dated outside %s and are not used: %s",
             len(left_out), n_files, local_dir, describe_selection(selection), dated)


def remove_stale_links(raw_dir: Path, local_dir: Path, names: Collection[str]) -> None:
    """Delete links in ``raw_dir`` into ``local_dir`` other than ``names``: files left out or removed since.

    Only links that point into ``local_dir`` are touched; anything else in ``raw_dir`` stays.
    """
    folder = Path(local_dir).resolve()
    for link in raw_dir.glob("*.nc"):
        if link.is_symlink() and link.name not in names and Path(os.readlink(link)).parent == folder:
            link.unlink()
            log.info("removed %s: its file is no longer part of the local source", link)


def place_local_files(checked: Sequence[LocalFile], local_dir: Path, raw_dir: Path) -> dict[str, int]:
    """Place checked files of ``local_dir`` in ``raw_dir``: a link, or a copy with renamed axes.

    Args:
        checked: files ``inspect_local_file`` accepted.
        local_dir: source.local_dir.
        raw_dir: the download's folder ``{data_dir}/raw``.

    Returns:
        ``{file name: YYYYMMDD}`` of the files placed.

    Raises:
        DownloadError: a file needs a renamed copy but ``local_dir`` is ``raw_dir`` itself.
    """
    same_folder = Path(local_dir).resolve() == raw_dir.resolve()
    for local in tqdm(checked, desc="place local files", unit="file"):
        target = raw_dir / local.path.name
        if local.renames:
            if same_folder:
                raise DownloadError(
                    f"{local.path} needs its dimensions renamed {local.renames}, which cannot be done in "
                    "place: point source.local_dir somewhere other than {data_dir}/raw."
                )
            write_renamed_copy(local, target)
        elif not same_folder:
            link_or_copy(local.path, target)
    log.info("%d local file(s) from %s in %s", len(checked), local_dir, raw_dir)
    return {local.path.name: local.date for local in checked}


def link_files(
    paths: Sequence[Path], local_dir: Path, raw_dir: Path, variable: str, surface_variables: Sequence[str] = ()
) -> dict[str, int]:
    """Check the given files of ``local_dir`` (all problems at once) and place them in ``raw_dir``.

    A month's download (``depthdif.download.download_month``) gets the files dated in its month.

    Args:
        paths: files of source.local_dir.
        local_dir: source.local_dir.
        raw_dir: the download's folder ``{data_dir}/raw``.
        variable: export.variable.
        surface_variables: export.surface_variables.

    Returns:
        ``{file name: YYYYMMDD}`` of the files placed.

    Raises:
        DownloadError: a file cannot be used (every such file named in one message), or see
            ``place_local_files``.
    """
    checked = _inspect_all([Path(path) for path in paths], variable, Path(local_dir), surface_variables)
    return place_local_files(checked, Path(local_dir), raw_dir)


def local_months(local_dir: Path, selection: Collection[tuple[int, int]] | None) -> dict[str, list[Path]]:
    """The files of ``local_dir`` dated in ``selection``, by month: what Snakemake plans one job per month of.

    Only each file's date is read (its header and first time value, ``depthdif.cf.dates.file_date``), so
    that planning stays cheap; the month's job checks its files in full.

    Args:
        local_dir: source.local_dir.
        selection: the (year, month) pairs of source.years x source.months; None keeps every file.

    Returns:
        ``{YYYYMM: [files]}`` in time order, files in name order.

    Raises:
        DownloadError: no folder or no ``*.nc``, files whose date cannot be read (all named in one
            message), or no file dated in the selection.
    """
    paths = local_nc_files(Path(local_dir))
    dated, problems = [], []
    for path in paths:
        try:
            dated.append((path, file_date(path)))
        except FieldFileError as err:
            problems.append(f"{err} Otherwise remove the file from source.local_dir.")
    if problems:
        raise DownloadError(
            f"{len(problems)} of {len(paths)} files in {local_dir} have no date DepthDif can read:\n  - "
            + "\n  - ".join(problems)
        )
    kept = [(path, date) for path, date in dated if _selected(date, selection)]
    left_out = [(path.name, date) for path, date in dated if not _selected(date, selection)]
    _report_left_out(left_out, len(paths), kept, selection, Path(local_dir))
    months: dict[str, list[Path]] = {}
    for path, date in sorted(kept, key=lambda item: (item[1] // 100, item[0].name)):
        months.setdefault(f"{date // 100:06d}", []).append(path)
    return months
