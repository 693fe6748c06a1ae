"""Fetch GLORYS12 monthly files from Copernicus Marine with the ``copernicusmarine`` toolbox (v2.5).

Two modes, chosen by ``source.copernicus.bbox``:

- ``null``: whole native files with ``copernicusmarine.get``; a dry-run listing first gives the exact size of
  every wanted file, so files already in ``raw/`` with that size are skipped and a short file is caught.
- a box: one ``copernicusmarine.subset`` per month of just that region (and ``depth_range``), so users fetch
  only what they need. A month already in ``raw/`` is kept when it covers the box and has the variables.

Whatever the mode, files are downloaded into a hidden staging folder inside ``raw/`` and moved under their
final name only after they check out (right size, opens with netCDF4, last value readable): a download that
stops half-way is never taken for complete. Credentials are looked up before any call, never passed,
logged or written; every message built from a toolbox error is scrubbed of them.

The toolbox is the boundary: every function takes ``client``, an object with the toolbox's ``get`` and
``subset`` (default: the real module), so tests run against ``tests/fakes.py:FakeCopernicusClient``.
"""

from __future__ import annotations

import base64
import calendar
import configparser
import contextlib
import importlib
import logging
import netrc
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
from tqdm import tqdm

from depthdif import glorys
from depthdif.cf.dates import file_date
from depthdif.config import check_copernicus_variables, months_of
from depthdif.download import DownloadError
from depthdif.layout import month_tag

log = logging.getLogger(__name__)

USERNAME_ENV = "COPERNICUSMARINE_SERVICE_USERNAME"
PASSWORD_ENV = "COPERNICUSMARINE_SERVICE_PASSWORD"
CREDENTIALS_DIR_ENV = "COPERNICUSMARINE_CREDENTIALS_DIRECTORY"
CREDENTIALS_FILE_NAME = ".copernicusmarine-credentials"
TIMEOUT_ENV = "COPERNICUSMARINE_HTTPS_TIMEOUT"
RETRIES_ENV = "COPERNICUSMARINE_HTTPS_RETRIES"
# hosts the toolbox accepts in ~/.netrc
NETRC_HOSTS = ("auth.marine.copernicus.eu", "nrt.cmems-du.eu", "my.cmems-du.eu", "default_host")
CREDENTIALS_HELP = (
    "Run `copernicusmarine login` once (it stores them in ~/.copernicusmarine/.copernicusmarine-credentials, "
    f"or under ${CREDENTIALS_DIR_ENV}), or set {USERNAME_ENV} and {PASSWORD_ENV}; free account at "
    "https://data.marine.copernicus.eu/register"
)
# toolbox exceptions that mean "who you are" is the problem, not the network or the request
CREDENTIAL_ERRORS = {"InvalidUsernameOrPassword", "CredentialsCannotBeNone"}
# what to do next, for toolbox exceptions whose own text is empty or vague
ERROR_HINTS = {
    "CouldNotConnectToAuthenticationSystem": (
        "could not reach auth.marine.copernicus.eu: check the internet connection and proxy (HTTPS_PROXY); "
        "on a cluster run this stage on a node with internet (the download_month rule is a localrule)"
    ),
    "DatasetNotFound": "check source.copernicus.dataset_id",
    "DatasetVersionNotFound": "check source.copernicus.dataset_version (null = the latest)",
    "VariableDoesNotExistInTheDataset": "check source.copernicus.variables",
    "CoordinatesOutOfDatasetBounds": "check source.copernicus.bbox / depth_range and source.years",
}
DEFAULT_HINT = "check the network and source.copernicus (dataset_id, dataset_version, years/months, bbox)"
STATUS_SUCCESS, STATUS_DRY_RUN = "000", "001"
STAGING_PREFIX = ".incoming-"
BYTES_PER_MB = 1024**2  # the toolbox reports sizes as bytes / 1024**2 ("MB")
# a subset on the 1/12 degree grid starts within one cell of the box; allow some slack
BBOX_TOLERANCE_DEG = 0.25


@dataclass(frozen=True)
class Credentials:
    """Where the toolbox will find the credentials; the values themselves only serve to scrub messages."""

    origin: str
    secrets: tuple[str, ...] = field(repr=False)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


def credentials_file_path() -> Path:
    """The toolbox's credentials file (``copernicusmarine login`` writes it), honouring its directory env."""
    directory = os.environ.get(CREDENTIALS_DIR_ENV) or Path.home() / ".copernicusmarine"
    return Path(directory) / CREDENTIALS_FILE_NAME


def _read_credentials_file(path: Path) -> dict[str, str]:
    """The toolbox's file is base64 of an ini with a [credentials] section."""
    try:
        parser = configparser.RawConfigParser()
        parser.read_string(base64.standard_b64decode(path.read_bytes()).decode("utf8"))
        return {key: parser.get("credentials", key, fallback="") for key in ("username", "password")}
    except (OSError, ValueError, configparser.Error):
        raise DownloadError(
            f"the Copernicus Marine credentials file {path} is unreadable or damaged; run "
            "`copernicusmarine login --force-overwrite` to write it again."
        ) from None


def _read_netrc() -> dict[str, str]:
    path = Path.home() / ".netrc"
    if not path.is_file():
        return {}
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        log.warning("ignoring unreadable %s", path)
        return {}
    for host in NETRC_HOSTS:
        if found := entries.authenticators(host):
            return {"username": found[0] or "", "password": found[2] or ""}
    return {}


def find_credentials() -> Credentials:
    """Find the credentials the way the toolbox does, each one on its own: env variable, then its file.

    Raises DownloadError (saying how to log in) when one is missing: without this check the toolbox would
    try to prompt, fail without a terminal and return None.
    """
    file_path = credentials_file_path()
    file_values = _read_credentials_file(file_path) if file_path.is_file() else _read_netrc()
    file_origin = str(file_path) if file_path.is_file() else str(Path.home() / ".netrc")
    found, origins = {}, {}
    for key, env in (("username", USERNAME_ENV), ("password", PASSWORD_ENV)):
        if os.environ.get(env):
            found[key], origins[key] = os.environ[env], "the environment"
        elif file_values.get(key):
            found[key], origins[key] = file_values[key], file_origin
        else:
            raise DownloadError(
                f"no Copernicus Marine {key} found (looked at {env}, {file_path} and ~/.netrc). "
                f"{CREDENTIALS_HELP}."
            )
    same = origins["username"] == origins["password"]
    origin = (
        origins["username"]
        if same
        else f"username from {origins['username']}, password from {origins['password']}"
    )
    return Credentials(origin=origin, secrets=(found["password"], found["username"]))


@contextlib.contextmanager
def toolbox_environment(timeout_s: float, retries: int) -> Iterator[None]:
    """Set the toolbox's HTTPS timeout/retries for the block, restoring the previous values after.

    Offline, the toolbox otherwise retries for minutes before giving up.
    """
    wanted = {TIMEOUT_ENV: str(timeout_s), RETRIES_ENV: str(retries)}
    previous = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_toolbox(timeout_s: float, retries: int):
    """Import the real toolbox (inside ``toolbox_environment``: it reads its HTTPS settings at import)."""
    imported_before = "copernicusmarine" in sys.modules
    toolbox = importlib.import_module("copernicusmarine")
    if imported_before:
        sessions = importlib.import_module("copernicusmarine.core_functions.sessions")
        if (float(timeout_s), int(retries)) != (sessions.HTTPS_TIMEOUT, sessions.HTTPS_RETRIES):
            log.warning(
                "copernicusmarine was imported before the download stage, so it keeps its HTTPS timeout %ss "
                "and %d retries (source.copernicus asks for %ss, %d); run the stage in a fresh process "
                "(as Snakemake does) for the configured values.",
                sessions.HTTPS_TIMEOUT,
                sessions.HTTPS_RETRIES,
                timeout_s,
                retries,
            )
    return toolbox


@contextlib.contextmanager
def staging_folder(raw_dir: Path, tag: str = "all") -> Iterator[Path]:
    """A hidden folder in raw/ (same filesystem, so moving a checked file out of it is atomic).

    Args:
        raw_dir: ``{data_dir}/raw``.
        tag: what this download fetches (a month's YYYYMM, or ``all``): only leftovers of the same tag are
            removed, because the jobs of other months may be downloading beside this one.
    """
    prefix = f"{STAGING_PREFIX}{tag}-"
    for leftover in raw_dir.glob(prefix + "*"):
        log.info("removing %s left by an interrupted download", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=raw_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # whatever is left there is partial


def _status_of(response: Any) -> str:
    status = getattr(response, "status", STATUS_SUCCESS)
    return str(getattr(status, "value", status))


def call_toolbox(
    function: Callable[..., Any], names: Sequence[str], credentials: Credentials, **kwargs: Any
) -> Any:
    """Call a toolbox function and turn every way it can fail into a DownloadError naming the files."""
    what = f"copernicusmarine.{getattr(function, '__name__', 'call')}() for {', '.join(names)}"
    failure = None
    try:
        response = function(**kwargs)
    except Exception as err:  # noqa: BLE001 - every toolbox failure becomes one clear error
        failure = (type(err).__name__, credentials.redact(f"{type(err).__name__}: {err}"))
    # raised outside the except block so that the toolbox's exception (whose text may hold a credential)
    # is not even kept as __context__
    if failure is not None:
        kind, reason = failure
        if kind in CREDENTIAL_ERRORS:
            raise DownloadError(
                f"Copernicus Marine rejected the credentials (from {credentials.origin}) during {what} "
                f"({reason}). {CREDENTIALS_HELP}."
            )
        raise DownloadError(
            f"{what} failed ({reason}): {ERROR_HINTS.get(kind, DEFAULT_HINT)}; then run again (files "
            "already downloaded are kept)."
        )
    if response is None:
        raise DownloadError(
            f"{what} returned nothing: the toolbox does this when it wanted to ask for credentials or was "
            f"aborted. {CREDENTIALS_HELP}; then run again."
        )
    status = _status_of(response)
    if status not in (STATUS_SUCCESS, STATUS_DRY_RUN):
        message = credentials.redact(str(getattr(response, "message", "")))
        raise DownloadError(f"{what} ended with status {status} ({message}); nothing from it was accepted.")
    return response


def check_netcdf(path: Path, variables: Sequence[str]) -> None:
    """Open ``path`` with netCDF4 and read the last value of each variable (a cut file fails here)."""
    with netCDF4.Dataset(path) as dataset:
        for name in variables:
            if name not in dataset.variables:
                raise DownloadError(f"{path} has no variable '{name}' (it has {sorted(dataset.variables)}).")
            variable = dataset.variables[name]
            if variable.size:
                variable[(-1,) * variable.ndim]


def accept_download(staged: Path, target: Path, variables: Sequence[str], expected_bytes: int | None) -> None:
    """Move a staged file onto ``target`` only if complete; otherwise delete it and raise naming the file."""
    if not staged.is_file():
        raise DownloadError(
            f"the toolbox reported success but did not write {target.name} (expected in {staged.parent}); "
            "run again, and check that the month exists in the dataset."
        )
    size = staged.stat().st_size
    try:
        if expected_bytes is not None and size != expected_bytes:
            raise DownloadError(
                f"{target.name} arrived with {size} bytes, the server lists {expected_bytes}: the download "
                "stopped half-way; the partial file was removed, run again to fetch it."
            )
        try:
            check_netcdf(staged, variables)
        except (OSError, RuntimeError, IndexError) as err:
            raise DownloadError(
                f"{target.name} is not a complete NetCDF file ({err}); the partial file was removed, run "
                "again to fetch it."
            ) from None
    except DownloadError:
        staged.unlink(missing_ok=True)
        raise
    os.replace(staged, target)
    log.info("accepted %s (%.1f MB)", target, size / 1e6)


def _has_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _by_year(names: Sequence[str]) -> dict[int, list[str]]:
    by_year: dict[int, list[str]] = {}
    for name in names:
        by_year.setdefault(glorys.own_file_date(name) // 10000, []).append(name)
    return by_year


def file_regex(names: Sequence[str]) -> str:
    """A regex matching exactly these file names at the end of the server path.

    ``get`` ORs ``filter`` with ``regex``, so only ``regex`` is used, never both.
    """
    return "/(?:" + "|".join(re.escape(name) for name in names) + r")$"


def server_sizes(listing: Any, names: Sequence[str]) -> dict[str, int]:
    """``{name: bytes}`` from a dry-run ``get`` response; raise naming the months the server lacks."""
    sizes = {}
    for entry in getattr(listing, "files", None) or []:
        name = Path(str(entry.s3_url)).name
        if name in names:
            sizes[name] = round(float(entry.file_size) * BYTES_PER_MB)
    missing = [name for name in names if name not in sizes]
    if missing:
        raise DownloadError(
            f"the dataset has no file {', '.join(missing)}: remove those months from source.years / "
            "source.months, or check source.copernicus.dataset_id / dataset_version."
        )
    return sizes


def _common_kwargs(copernicus: Mapping) -> dict:
    return {"dataset_id": copernicus["dataset_id"], "dataset_version": copernicus["dataset_version"]}


def fetch_whole_files(
    client: Any,
    config: Mapping,
    raw_dir: Path,
    staging: Path,
    credentials: Credentials,
    months: Sequence[tuple[int, int]],
) -> list[str]:
    """``get`` the native monthly files, one call per year, skipping files already complete in raw/."""
    copernicus = config["source"]["copernicus"]
    variables = exported_variables(config)  # whole files hold every variable: check the ones the export reads
    names = [glorys.file_name(y, m) for y, m in months]
    common = {**_common_kwargs(copernicus), "output_directory": staging, "no_directories": True}
    listing = call_toolbox(client.get, names, credentials, regex=file_regex(names), dry_run=True, **common)
    sizes = server_sizes(listing, names)
    missing = [name for name in names if not _has_size(raw_dir / name, sizes[name])]
    for name in missing:
        if (raw_dir / name).is_file():
            log.warning(
                "%s does not have the %d bytes the server lists: fetching it again", name, sizes[name]
            )
    log.info(
        "%d of %d files to fetch (%.1f GB)", len(missing), len(names), sum(sizes[n] for n in missing) / 1e9
    )
    for year_names in tqdm(_by_year(missing).values(), desc="copernicus get", unit="year"):
        call_toolbox(
            client.get, year_names, credentials, regex=file_regex(year_names), overwrite=True, **common
        )
        for name in year_names:
            accept_download(staging / name, raw_dir / name, variables, expected_bytes=sizes[name])
    return names


def month_bounds(year: int, month: int) -> tuple[str, str]:
    """First and last instant of a month: catches the time stamp whether at month start or mid-month."""
    last_day = calendar.monthrange(year, month)[1]
    return f"{year:04d}-{month:02d}-01T00:00:00", f"{year:04d}-{month:02d}-{last_day:02d}T23:59:59"


def subset_kwargs(copernicus: Mapping, year: int, month: int, staging: Path) -> dict:
    bbox, depth_range = copernicus["bbox"], copernicus["depth_range"]
    start, end = month_bounds(year, month)
    kwargs = {
        **_common_kwargs(copernicus),
        "variables": list(copernicus["variables"]),
        "minimum_longitude": bbox["lon_min"],
        "maximum_longitude": bbox["lon_max"],
        "minimum_latitude": bbox["lat_min"],
        "maximum_latitude": bbox["lat_max"],
        "start_datetime": start,
        "end_datetime": end,
        "output_filename": glorys.file_name(year, month),
        "output_directory": staging,
        "file_format": "netcdf",
        "overwrite": True,
    }
    if depth_range is not None:
        kwargs["minimum_depth"], kwargs["maximum_depth"] = depth_range
    return kwargs


def _wrap_lon(values: np.ndarray) -> np.ndarray:
    return (np.asarray(values, dtype=float) + 180.0) % 360.0 - 180.0


def subset_mismatch(path: Path, copernicus: Mapping) -> str | None:
    """Why an existing file does not answer the configured subset (None when it does)."""
    bbox = copernicus["bbox"]
    try:
        with netCDF4.Dataset(path) as dataset:
            missing = [v for v in copernicus["variables"] if v not in dataset.variables]
            if missing:
                return f"lacks {missing}"
            lat = np.asarray(dataset.variables["latitude"][:], dtype=float)
            lon = _wrap_lon(dataset.variables["longitude"][:])
    except (OSError, KeyError) as err:
        return f"unreadable ({err})"
    box_lon = _wrap_lon([bbox["lon_min"], bbox["lon_max"]])
    if box_lon[0] > box_lon[1]:
        return None  # a box across the date line: extents do not compare simply; trust the file
    ends = [
        (lat.min(), bbox["lat_min"]),
        (lat.max(), bbox["lat_max"]),
        (lon.min(), box_lon[0]),
        (lon.max(), box_lon[1]),
    ]
    if any(abs(have - want) > BBOX_TOLERANCE_DEG for have, want in ends):
        return (
            f"covers lat {lat.min():.2f}..{lat.max():.2f}, lon {lon.min():.2f}..{lon.max():.2f}, not the bbox"
        )
    return None


def fetch_subsets(
    client: Any,
    config: Mapping,
    raw_dir: Path,
    staging: Path,
    credentials: Credentials,
    months: Sequence[tuple[int, int]],
) -> list[str]:
    """``subset`` each month to the configured box; months already in raw/ that match it are kept."""
    copernicus = config["source"]["copernicus"]
    names = []
    for year, month in tqdm(months, desc="copernicus subset", unit="month"):
        name = glorys.file_name(year, month)
        names.append(name)
        target = raw_dir / name
        if target.is_file():
            reason = subset_mismatch(target, copernicus)
            if reason is None:
                log.debug("kept %s (already matches the subset)", target)
                continue
            log.warning("%s %s: fetching it again", target, reason)
        call_toolbox(client.subset, [name], credentials, **subset_kwargs(copernicus, year, month, staging))
        accept_download(staging / name, target, copernicus["variables"], expected_bytes=None)
    return names


def exported_variables(config: Mapping) -> list[str]:
    """export.variable and export.surface_variables: what every downloaded file must hold."""
    export = config["export"]
    return [export["variable"], *(export.get("surface_variables") or ())]


def check_request(config: Mapping) -> None:
    """Config mistakes that would only show after hours of downloading (also checked when the config loads:
    ``depthdif.config.check_copernicus_variables``; this catches settings that did not come through it)."""
    check_copernicus_variables(config)


def fetch_copernicus(
    config: Mapping, raw_dir: Path, client: Any = None, months: Sequence[tuple[int, int]] | None = None
) -> dict[str, int]:
    """Download months into ``raw_dir``; return ``{file name: YYYYMMDD}``.

    Args:
        config: a validated config, or ``depthdif.download.download_settings`` of one (source.kind,
            source.copernicus, export.variable).
        raw_dir: ``{data_dir}/raw``.
        client: defaults to the ``copernicusmarine`` module (imported here, with its timeout settings).
        months: the (year, month) pairs to fetch; None: ``source.years`` x ``source.months`` of ``config``.

    Returns:
        the date each file states (its time coordinate), by file name.

    Raises:
        DownloadError: no credentials, or a month cannot be fetched (the message names it).
        ConfigError: a subset that would not contain export.variable or an export.surface_variables.
    """
    months = list(months_of(config) if months is None else months)
    # one month: a job of the rule download_month; its staging folder is its own
    tag = month_tag(*months[0]) if len(months) == 1 else "all"
    check_request(config)
    credentials = find_credentials()  # before any call: without it the toolbox would try to prompt
    log.info("Copernicus Marine credentials from %s", credentials.origin)
    copernicus = config["source"]["copernicus"]
    timeout_s, retries = copernicus["https_timeout_s"], copernicus["https_retries"]
    with toolbox_environment(timeout_s, retries), staging_folder(raw_dir, tag) as staging:
        client = client if client is not None else load_toolbox(timeout_s, retries)
        fetch = fetch_whole_files if copernicus["bbox"] is None else fetch_subsets
        names = fetch(client, config, raw_dir, staging, credentials, months)
    # the date a file states (its time coordinate: mid-month, e.g. the 16th), as for every other source
    return {name: file_date(raw_dir / name) for name in names}
