"""Use monthly NetCDF files already on disk (``source.kind: local``).

Every ``*.nc`` of ``source.local_dir`` is checked up front (readable, has ``export.variable`` on
(time, depth, latitude, longitude)), then placed in ``raw/`` as a symlink (a copy where links are not
possible) so that later stages find the contract path ``{data_dir}/raw/*.nc``. Files that name their axes
``deptht`` / ``lat`` / ``lon`` (NEMO, many regridded products) get a copy with the GLORYS names instead,
because the export reads the dimensions by name.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import netCDF4
import xarray as xr
from tqdm import tqdm

from depthdif import glorys
from depthdif.atomic import atomic_path
from depthdif.download import DownloadError

log = logging.getLogger(__name__)

REQUIRED_DIMS = ("depth", "latitude", "longitude")
# alias -> name the export expects; only these are mapped, anything else is an error naming the file
DIM_ALIASES = {"deptht": "depth", "lat": "latitude", "lon": "longitude"}
# what glorys.date_of_file returns for a name without _YYYYMM(DD)
NO_DATE_IN_NAME = 19700115
ACCEPTED_NAMES = "depth (or deptht), latitude (or lat), longitude (or lon)"


@dataclass(frozen=True)
class LocalFile:
    """A checked local file: where it is, which axes to rename, and its date (YYYYMMDD)."""

    path: Path
    date: int
    renames: dict[str, str] = field(default_factory=dict)


def _canonical_dims(path: Path, variable: str, dims: tuple[str, ...]) -> tuple[str, ...]:
    """Dims of ``variable`` with aliases mapped; raise unless they read (time,) depth, latitude, longitude."""
    canonical = tuple(DIM_ALIASES.get(d, d) for d in dims)
    missing = [d for d in REQUIRED_DIMS if d not in canonical]
    if missing:
        raise DownloadError(
            f"{path}: variable '{variable}' has dimensions {dims} but no {', '.join(missing)} dimension "
            f"(accepted names: {ACCEPTED_NAMES}). Rename the dimension in the file or remove the file "
            "from source.local_dir."
        )
    if canonical[-3:] != REQUIRED_DIMS or len(canonical) > 4:
        raise DownloadError(
            f"{path}: variable '{variable}' has dimensions {dims}; DepthDif needs (time, depth, latitude, "
            "longitude) in this order (reorder it, e.g. `ncpdq -a time,depth,latitude,longitude`)."
        )
    return canonical


def _date_from_time_coordinate(path: Path, dataset: netCDF4.Dataset, time_dim: str | None) -> int:
    name = time_dim or "time"
    time = dataset.variables.get(name)
    if time is None or not hasattr(time, "units") or time.size == 0:
        raise DownloadError(
            f"{path}: the name has no _YYYYMM date and the file has no '{name}' coordinate with units; "
            "rename the file to end in _YYYYMM.nc (e.g. mercatorglorys12v1_gl12_mean_201001.nc)."
        )
    stamp = netCDF4.num2date(time[0], time.units, calendar=getattr(time, "calendar", "standard"))
    return stamp.year * 10000 + stamp.month * 100 + stamp.day


def inspect_local_file(path: Path, variable: str) -> LocalFile:
    """Check one local file and return what placing it needs; raise DownloadError naming the file."""
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
        dims = dataset.variables[variable].dimensions
        canonical = _canonical_dims(path, variable, dims)
        time_dim = dims[0] if len(dims) == 4 else None
        if time_dim is not None and len(dataset.dimensions[time_dim]) != 1:
            raise DownloadError(
                f"{path} holds {len(dataset.dimensions[time_dim])} time steps of '{variable}'; DepthDif "
                "expects one month per file (split it, e.g. `cdo splitmon`)."
            )
        date = glorys.date_of_file(path.name)
        if date == NO_DATE_IN_NAME:
            date = _date_from_time_coordinate(path, dataset, time_dim)
    renames = {old: new for old, new in zip(dims, canonical, strict=True) if old != new}
    return LocalFile(path=path, date=date, renames=renames)


def copy_atomically(source: Path, target: Path) -> None:
    """Copy a file so that ``target`` appears only once complete, keeping the source's mtime."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
        os.utime(tmp, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns))


def _is_current_copy(source: Path, target: Path) -> bool:
    """A regular file written from ``source`` after its last change (copies keep or follow its mtime)."""
    return (
        target.is_file()
        and not target.is_symlink()
        and target.stat().st_mtime_ns >= source.stat().st_mtime_ns
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


def local_nc_files(local_dir: Path) -> list[Path]:
    if not local_dir.is_dir():
        raise DownloadError(f"source.local_dir {local_dir} is not a folder; give the folder of *.nc files.")
    paths = sorted(local_dir.glob("*.nc"))
    if not paths:
        raise DownloadError(f"source.local_dir {local_dir} holds no *.nc file; put the monthly files there.")
    return paths


def check_local_files(local_dir: Path, variable: str) -> list[LocalFile]:
    """Inspect every file first and report all problems at once (not one per run)."""
    paths = local_nc_files(local_dir)
    checked, problems = [], []
    for path in tqdm(paths, desc="check local files", unit="file"):
        try:
            checked.append(inspect_local_file(path, variable))
        except DownloadError as err:
            problems.append(str(err))
    if problems:
        raise DownloadError(
            f"{len(problems)} of {len(paths)} files in {local_dir} cannot be used:\n  - "
            + "\n  - ".join(problems)
        )
    return checked


def link_local_files(local_dir: Path, raw_dir: Path, variable: str) -> dict[str, int]:
    """Check the files of ``local_dir`` and place them in ``raw_dir``; return ``{file name: YYYYMMDD}``."""
    checked = check_local_files(Path(local_dir), variable)
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
    log.info("%d local files from %s in %s", len(checked), local_dir, raw_dir)
    return {local.path.name: local.date for local in checked}
