"""Test doubles any test may reuse: a fake ``copernicusmarine`` client and a tiny CMEMS-layout NetCDF writer.

``FakeCopernicusClient`` has the toolbox's ``get`` / ``subset`` / ``login``; it checks every call against the
real v2.5 signatures (a misspelt keyword fails the test), records it with the HTTPS environment seen at call
time, writes small valid GLORYS-like files where asked and returns the toolbox's own response models. It
can be told to fail the ways the real one does: raise, return None, write a cut file, write nothing,
report an error status, or reject the credentials.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import inspect
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import copernicusmarine
import netCDF4
import numpy as np
from copernicusmarine import FileGet, ResponseGet, ResponseSubset

from depthdif import glorys

FAILURES = ("raise", "none", "truncate", "no_file", "status_error", "reject")
HTTPS_ENV = ("COPERNICUSMARINE_HTTPS_TIMEOUT", "COPERNICUSMARINE_HTTPS_RETRIES")
SERVER_PREFIX = "s3://mdl-native-14/native/GLOBAL_MULTIYEAR_PHY_001_030"
GRID_STEP_DEG = 1 / 12


def write_cmems_month(
    path: str | Path,
    year: int,
    month: int,
    *,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
    depths: tuple[float, ...] = glorys.DEPTH_LEVELS_M[:4],
    variables: tuple[str, ...] = ("thetao",),
) -> Path:
    """Write one small month in the layout of the GLORYS12 native files (int16-packed, land = _FillValue)."""
    path = Path(path)
    lat = np.arange(20.0, 20.5, GRID_STEP_DEG) if lat is None else np.asarray(lat, dtype=float)
    lon = np.arange(-110.0, -109.4, GRID_STEP_DEG) if lon is None else np.asarray(lon, dtype=float)
    depth = np.asarray(depths, dtype=float)
    with netCDF4.Dataset(path, "w") as ds:
        for name, size in (
            ("time", 1),
            ("depth", depth.size),
            ("latitude", lat.size),
            ("longitude", lon.size),
        ):
            ds.createDimension(name, size)
        time = ds.createVariable("time", "f8", ("time",))
        time.units, time.calendar, time.standard_name = "hours since 1950-01-01", "gregorian", "time"
        time[:] = netCDF4.date2num(dt.datetime(year, month, 16), time.units, time.calendar)
        for name, values, units in (
            ("depth", depth, "m"),
            ("latitude", lat, "degrees_north"),
            ("longitude", lon, "degrees_east"),
        ):
            coordinate = ds.createVariable(name, "f4", (name,))
            coordinate.units, coordinate.standard_name = units, name if name != "depth" else "depth"
            coordinate[:] = values
        # warm at the surface, colder below, a seasonal signal; a land corner
        celsius = (
            24.0
            + 3.0 * np.cos(2 * np.pi * (month - 8) / 12)
            - 0.05 * depth[:, None, None]
            + 0.1 * lat[None, :, None]
            + 0.0 * lon[None, None, :]
        )
        land = np.zeros((lat.size, lon.size), bool)
        land[: lat.size // 3, : lon.size // 3] = True
        for name in variables:
            var = ds.createVariable(
                name,
                "i2",
                ("time", "depth", "latitude", "longitude"),
                fill_value=glorys.FILL_VALUE_INT16,
                zlib=True,
            )
            var.scale_factor, var.add_offset = glorys.THETAO_SCALE_FACTOR, glorys.THETAO_ADD_OFFSET
            var.units = "degrees_C"
            var[:] = np.ma.masked_array(celsius[None], mask=np.broadcast_to(land, celsius.shape)[None])
    return path


def write_credentials_file(directory: str | Path, username: str, password: str) -> Path:
    """Write a credentials file the way ``copernicusmarine login`` does (base64 of an ini)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".copernicusmarine-credentials"
    text = f"[credentials]\nusername={username}\npassword={password}\n"
    path.write_text(base64.b64encode(text.encode("ascii")).decode("utf8"))
    return path


@dataclass
class FakeCall:
    function: str
    kwargs: dict
    env: dict  # COPERNICUSMARINE_HTTPS_* as the toolbox would have seen them

    @property
    def dry_run(self) -> bool:
        return bool(self.kwargs.get("dry_run"))


@dataclass
class FakeCopernicusClient:
    """A stand-in for the ``copernicusmarine`` module; see the module docstring.

    failure: one of FAILURES or None. fail_files: only calls touching these file names fail (None: all).
    fail_dry_run: whether dry-run listings fail too ("reject" always does). error_message: text of the
    exception for failure="raise" (tests put a secret in it to check it is scrubbed).
    """

    failure: str | None = None
    fail_files: set[str] | None = None
    fail_dry_run: bool = False
    error_message: str = "connection reset by peer"
    server_years: range = range(1993, 2026)
    depth_levels: tuple[float, ...] = glorys.DEPTH_LEVELS_M[:4]
    calls: list[FakeCall] = field(default_factory=list)
    _content: dict[str, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.failure is not None and self.failure not in FAILURES:
            raise ValueError(f"unknown failure {self.failure!r}; use one of {FAILURES}")

    # -- bookkeeping ------------------------------------------------------------------------------
    def _record(self, function: str, kwargs: dict) -> FakeCall:
        inspect.signature(getattr(copernicusmarine, function)).bind(**kwargs)  # same keywords as the real one
        call = FakeCall(function, dict(kwargs), {name: os.environ.get(name) for name in HTTPS_ENV})
        self.calls.append(call)
        return call

    def downloads(self) -> list[FakeCall]:
        """The calls that would have transferred data (not dry runs)."""
        return [c for c in self.calls if c.function in ("get", "subset") and not c.dry_run]

    def _fails(self, names: list[str], dry_run: bool) -> bool:
        if self.failure is None or (dry_run and not self.fail_dry_run):
            return False
        return self.fail_files is None or bool(self.fail_files & set(names))

    def _raise_or_none(self, names: list[str], dry_run: bool):
        """Failures that replace the whole response; returns a sentinel to return None."""
        if self.failure == "reject":
            raise copernicusmarine.InvalidUsernameOrPassword("Learn how to recover your credentials at: ...")
        if self._fails(names, dry_run) and self.failure == "raise":
            raise ConnectionError(self.error_message)
        return self._fails(names, dry_run) and self.failure == "none"

    def _write(self, name: str, target: Path, content: bytes) -> None:
        if self._fails([name], dry_run=False) and self.failure == "no_file":
            return
        if self._fails([name], dry_run=False) and self.failure == "truncate":
            content = content[: len(content) // 2]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)

    def _status(self, names: list[str], dry_run: bool) -> tuple[str, str]:
        if self._fails(names, dry_run) and self.failure == "status_error":
            return "100", "An error occurred during the request."
        if dry_run:
            return "001", "The request was run with the dry-run option. No data was downloaded."
        return "000", "The request was successful."

    # -- the server -------------------------------------------------------------------------------
    def _server_paths(self, dataset_id: str) -> list[str]:
        return [
            f"{SERVER_PREFIX}/{dataset_id}_202311/{y}/{glorys.file_name(y, m)}"
            for y in self.server_years
            for m in range(1, 13)
        ]

    def served_bytes(self, name: str) -> bytes:
        """The exact content the fake server holds for a native file (generated once, then fixed)."""
        if name not in self._content:
            date = glorys.date_of_file(name)
            with tempfile.TemporaryDirectory() as tmp:
                path = write_cmems_month(
                    Path(tmp) / name,
                    date // 10000,
                    date // 100 % 100,
                    depths=self.depth_levels,
                    variables=("thetao", "so"),
                )
                self._content[name] = path.read_bytes()
        return self._content[name]

    # -- the toolbox API --------------------------------------------------------------------------
    def get(self, **kwargs):
        call = self._record("get", kwargs)
        dataset_id = kwargs.get("dataset_id") or glorys.DATASET_ID
        pattern = kwargs.get("regex")
        if kwargs.get("filter"):  # the toolbox ORs filter with regex
            glob = fnmatch.translate(kwargs["filter"])
            pattern = f"({glob}|{pattern})" if pattern else glob
        paths = [p for p in self._server_paths(dataset_id) if not pattern or re.search(pattern, p)]
        names = [Path(p).name for p in paths]
        if self._raise_or_none(names, call.dry_run):
            return None
        out = Path(kwargs.get("output_directory") or ".")
        files = []
        for path in paths:
            name = Path(path).name
            local = out / name if kwargs.get("no_directories") else out / "/".join(path.split("/")[4:])
            content = self.served_bytes(name)
            if not call.dry_run:
                self._write(name, local, content)
            files.append(
                FileGet(
                    s3_url=path,
                    https_url=path.replace("s3://", "https://s3.example/"),
                    file_size=len(content) / 1024**2,
                    last_modified_datetime="2023-11-01T00:00:00+00:00",
                    etag='"fake"',
                    file_format=".nc",
                    output_directory=out,
                    filename=name,
                    file_path=local,
                    file_status="DOWNLOADED",
                )
            )
        status, message = self._status(names, call.dry_run)
        if not files:
            status, message = (
                "003",
                "No data to download from the remote server corresponding to your request.",
            )
        return ResponseGet(
            files=files,
            files_deleted=None,
            files_not_found=None,
            number_of_files_to_download=len(files),
            total_size=sum(f.file_size for f in files),
            status=status,
            message=message,
        )

    def subset(self, **kwargs):
        call = self._record("subset", kwargs)
        name = kwargs["output_filename"]
        if self._raise_or_none([name], call.dry_run):
            return None
        out = Path(kwargs.get("output_directory") or ".")
        start = dt.datetime.fromisoformat(str(kwargs["start_datetime"]))
        lat = np.arange(kwargs["minimum_latitude"], kwargs["maximum_latitude"] + 1e-9, GRID_STEP_DEG)
        lon = np.arange(kwargs["minimum_longitude"], kwargs["maximum_longitude"] + 1e-9, GRID_STEP_DEG)
        low, high = kwargs.get("minimum_depth") or 0.0, kwargs.get("maximum_depth") or np.inf
        depths = tuple(d for d in self.depth_levels if low <= d <= high) or self.depth_levels[:1]
        with tempfile.TemporaryDirectory() as tmp:
            content = write_cmems_month(
                Path(tmp) / name,
                start.year,
                start.month,
                lat=lat,
                lon=lon,
                depths=depths,
                variables=tuple(kwargs["variables"]),
            ).read_bytes()
        if not call.dry_run:
            self._write(name, out / name, content)
        status, message = self._status([name], call.dry_run)
        return ResponseSubset(
            file_path=out / name,
            output_directory=out,
            filename=name,
            file_size=len(content) / 1024**2,
            data_transfer_size=len(content) / 1024**2,
            variables=list(kwargs["variables"]),
            coordinates_extent=[],
            status=status,
            message=message,
            file_status="DOWNLOADED",
        )

    def login(self, **kwargs):
        self._record("login", kwargs)
        return self.failure != "reject"  # the real login returns False for wrong credentials
