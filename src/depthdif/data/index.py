"""The patch index and the patch files it points to: what the export wrote, read back and checked.

The index (CSV, one row a patch; :data:`INDEX_COLUMNS`) names each patch's ``.npy`` relative to its own
folder (:func:`resolve_patch_path` refuses a path that leaves it), its date (:func:`index_dates`, YYYYMMDD),
its corners (:func:`patch_centres`, with the dateline-safe :func:`lon_midpoint`) and the depths of its
channels (:func:`index_depths`). :func:`load_patch` reads one patch with every check; :class:`NpyReader`
reads patches of known shape with one ``readv`` each (the loader's fast path), falling back to the checked
read on any difference. Errors name the row, the sample and the file (:class:`PatchIndexError`,
:class:`PatchFileError`).

No torch here: the reconstruction's gridded reader uses :func:`lon_midpoint` too.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from depthdif.errors import DepthDifError
from depthdif.paths import PathEscapeError, resolve_inside

INDEX_COLUMNS = (
    "sample_id",
    "source_file",
    "date",
    "y0",
    "x0",
    "patch_size",
    "lat0",
    "lat1",
    "lon0",
    "lon1",
    "y_npy_path",
    "num_channels",
)


class PatchIndexError(DepthDifError, ValueError):
    """The patch index (CSV or frame) is unusable: a missing column, an unknown split, a bad row."""


class PatchFileError(DepthDifError, ValueError):
    """A patch .npy is missing, unreadable, of the wrong shape, or outside the index folder."""


# --------------------------------------------------------------------------- index, paths, dates, coords
def read_index(path: str | Path) -> pd.DataFrame:
    """Read a patch index CSV; ``frame.attrs['index_dir']`` keeps its folder (``y_npy_path`` is relative to it)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"sample_id": str, "source_file": str, "split": str})
    except FileNotFoundError:
        raise PatchIndexError(
            f"patch index {path} not found: run the export and split stages first (snakemake split)"
        ) from None
    frame.attrs["index_dir"] = str(path.parent)
    frame.attrs["origin"] = str(path)
    return frame


def check_index_columns(frame: pd.DataFrame, required: tuple[str, ...] = INDEX_COLUMNS) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise PatchIndexError(
            f"patch index {frame.attrs.get('origin', '<DataFrame>')} lacks column(s) {missing}; it has "
            f"{list(frame.columns)}. Re-run the export/split stages that write it."
        )


def resolve_patch_path(index_dir: str | Path, relative: str, row: Any) -> str:
    """Absolute path of a patch; refuse a ``y_npy_path`` that points outside the index folder."""
    try:
        return str(resolve_inside(index_dir, relative, f"row {row}: y_npy_path"))
    except PathEscapeError:
        raise PatchFileError(
            f"row {row}: y_npy_path '{relative}' points outside the index folder {index_dir}; paths in the index "
            "must be relative to the CSV's folder (re-run the export)."
        ) from None


def check_unique_ids(frame: pd.DataFrame) -> None:
    """A duplicated sample_id would be trained on twice and share one fixed val mask."""
    duplicated = sorted(set(frame.loc[frame["sample_id"].duplicated(), "sample_id"].astype(str)))
    if duplicated:
        raise PatchIndexError(
            f"patch index {frame.attrs.get('origin', '<DataFrame>')} lists sample_id(s) {duplicated[:5]} more "
            "than once; re-run the export/split stages instead of editing the index."
        )


def index_dates(frame: pd.DataFrame) -> np.ndarray:
    """The ``date`` column as int64 YYYYMMDD, the one date of a patch everywhere downstream of the export.

    The export took it from the file's time coordinate (or its attributes); re-deriving it from the file
    name here would give another date for names without ``_YYYYMM`` (e.g. Copernicus subset names).

    Args:
        frame: patch index rows with a ``date`` column.

    Returns:
        (N,) int64 dates YYYYMMDD.

    Raises:
        PatchIndexError: a date is empty or not a YYYYMMDD calendar day (the row is named).
    """
    values = pd.to_numeric(frame["date"], errors="coerce").to_numpy(np.float64)
    whole = np.isfinite(values) & (values == np.round(values))
    dates = np.where(whole, values, 0).astype(np.int64)
    days = pd.to_datetime(pd.Series(dates.astype(str)), format="%Y%m%d", errors="coerce")
    bad = np.flatnonzero(~whole | days.isna().to_numpy())
    if bad.size:
        row = frame.iloc[bad[0]]
        raise PatchIndexError(
            f"patch index {frame.attrs.get('origin', '<DataFrame>')}: row {row.name} (sample_id "
            f"{row.get('sample_id', '?')}) has date {row['date']!r}, not YYYYMMDD; re-run the export stage."
        )
    return dates


_DEPTH_RTOL = 1e-4  # the export's tolerance for "the same depth axis" across files


def index_depths(frame: pd.DataFrame) -> tuple[float, ...]:
    """Depths (m) of the exported channels, from the index's ``depth_values`` column ("0.494025;9.572997;...").

    Every row must list the same depths: channel k is one level in every patch.

    Args:
        frame: patch index rows with a ``depth_values`` column.

    Returns:
        One depth in metres per exported channel.

    Raises:
        PatchIndexError: the column is missing or empty, a value is not a number, or rows disagree.
    """
    check_index_columns(frame, ("depth_values",))
    origin = frame.attrs.get("origin", "<DataFrame>")
    if frame.empty:
        raise PatchIndexError(f"patch index {origin} has no rows: no depths to read; re-run the export stage.")
    texts = frame["depth_values"].astype(str)
    first = texts.iloc[0]
    try:
        depths = tuple(float(v) for v in first.split(";"))
        others = {text: tuple(float(v) for v in text.split(";")) for text in set(texts)}
    except ValueError:
        raise PatchIndexError(f"patch index {origin}: depth_values {first!r} (or another row's) is not a "
                              "';'-separated list of metres; re-run the export stage.") from None
    for text, values in others.items():
        if len(values) != len(depths) or not np.allclose(values, depths, rtol=_DEPTH_RTOL, atol=0):
            raise PatchIndexError(
                f"patch index {origin}: rows list depth_values {first!r} and {text!r}; one index must hold "
                "one depth axis. Re-export the files with a common depth axis."
            )
    return depths


def lon_midpoint(lon0, lon1):
    """Dateline-safe circular midpoint in (-180, 180]: 170 and -170 -> 180, 350 and 10 -> 0."""
    a, b = np.radians(np.asarray(lon0, dtype=np.float64)), np.radians(np.asarray(lon1, dtype=np.float64))
    mid = np.degrees(np.arctan2(np.sin(a) + np.sin(b), np.cos(a) + np.cos(b)))
    mid = np.where(mid <= -180.0 + 1e-9, 180.0, mid)
    return float(mid) if mid.ndim == 0 else mid


def patch_centres(frame: pd.DataFrame) -> np.ndarray:
    """(N, 2) float32 [lat_centre, lon_centre]: mean latitude, circular-mean longitude."""
    lat = (frame["lat0"].to_numpy(np.float64) + frame["lat1"].to_numpy(np.float64)) / 2.0
    lon = lon_midpoint(frame["lon0"].to_numpy(np.float64), frame["lon1"].to_numpy(np.float64))
    return np.stack([lat, np.atleast_1d(lon)], axis=1).astype(np.float32)


# --------------------------------------------------------------------------- reading patches
def _row_name(row: Mapping | pd.Series) -> str:
    label = getattr(row, "name", None)
    sample = row.get("sample_id", "?") if hasattr(row, "get") else "?"
    return f"{label} (sample_id {sample})" if label is not None else f"sample_id {sample}"


def load_patch(index_row: Mapping | pd.Series, index_dir: str | Path) -> np.ndarray:
    """The patch of one index row as float32 (C, H, W) in °C, NaN = no data, checked against the row.

    Raises PatchFileError naming the row and file when the path escapes ``index_dir``, the file is missing
    or unreadable, or its shape is not (num_channels, patch_size, patch_size).
    """
    name = _row_name(index_row)
    path = resolve_patch_path(index_dir, index_row["y_npy_path"], name)
    expected = (int(index_row["num_channels"]), int(index_row["patch_size"]), int(index_row["patch_size"]))
    return _load_checked(path, expected, name)


def _load_checked(path: str, expected: tuple[int, int, int], name: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PatchFileError(
            f"row {name}: patch file {path} does not exist; re-run the export stage"
        ) from None
    except (OSError, ValueError) as err:
        raise PatchFileError(
            f"row {name}: patch file {path} is not a readable .npy ({err}); re-export it"
        ) from None
    if array.shape != expected:
        raise PatchFileError(
            f"row {name}: patch file {path} has shape {array.shape}, the index says {expected} "
            "(num_channels, patch_size, patch_size); the index and the patches are out of step — re-export."
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise PatchFileError(f"row {name}: patch file {path} holds {array.dtype}, expected float32 °C")
    return array.astype(np.float32, copy=False)


class NpyReader:
    """Reads .npy patches of known shape without np.load's per-file header parsing.

    One ``readv`` puts the header in a small buffer and the data straight into the caller's array; the
    header is then compared byte for byte with the one numpy writes for a C-ordered float32 array of the
    expected shape. Any difference (dtype, shape, order, numpy format version, length) falls back to the
    checked ``np.load`` path, so speed never costs a check.
    """

    def __init__(self) -> None:
        self._headers: dict[tuple[int, ...], bytes] = {}
        self._heads: dict[int, bytearray] = {}
        self._spare = bytearray(1)  # a byte past the expected end: a longer file is noticed

    def _header(self, shape: tuple[int, ...]) -> bytes:
        if shape not in self._headers:
            buffer = io.BytesIO()
            np.save(buffer, np.zeros(shape, dtype="<f4"))
            self._headers[shape] = buffer.getvalue()[: -4 * math.prod(shape)]
        return self._headers[shape]

    def read_into(self, path: str, shape: tuple[int, int, int], name: str, out: np.ndarray) -> None:
        """Fill ``out`` (float32, C-contiguous, ``shape``) with the patch at ``path``."""
        header = self._header(shape)
        head = self._heads.get(len(header))
        if head is None:
            head = self._heads[len(header)] = bytearray(len(header))
        n_read = -1
        if hasattr(os, "readv"):
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except OSError:
                descriptor = None  # np.load below raises the error that names the row
            if descriptor is not None:
                try:
                    n_read = os.readv(descriptor, [head, memoryview(out).cast("B"), self._spare])
                finally:
                    os.close(descriptor)
        if n_read != len(header) + out.nbytes or head != header:
            out[...] = _load_checked(path, shape, name)

