"""Benchmark: export_patches on a realistic CMEMS-layout month against the I/O floor of the same work.

The file imitates a real GLORYS12 month over a quarter of the globe at 1/12° (latitude 1020 x longitude
2160, 50 depth levels, int16 packed with the real scale/offset/_FillValue, zlib + shuffle, one chunk per
level like the real files), with smooth temperature fields and a bathymetry that turns deeper levels into
more land. ``--scale`` shrinks (or grows) both horizontal axes.

The floor is the least any exporter must do: read the same levels with xarray (CF-decoded) and np.save the
same tiles that export_patches kept. Both run on the same warm file (it was just written, so it sits in
the page cache for both); each is repeated and the fastest run counts.

    python bench/export.py --scale 0.5            # quick
    python bench/export.py                        # quarter globe, writing the file takes ~1 min

Prints one JSON object per line: {"metric": ..., "value": ..., "unit": ...}; the target is
export_over_floor <= 1.5.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import xarray as xr
from scipy import ndimage

from depthdif.config import validate_config
from depthdif.export import export_patches
from depthdif.glorys import (
    DEPTH_LEVELS_M,
    FILL_VALUE_INT16,
    THETAO_ADD_OFFSET,
    THETAO_SCALE_FACTOR,
    file_name,
)

QUARTER_GLOBE = (1020, 2160)


def smooth_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field in [-1, 1]-ish: a coarse random grid interpolated up to ``shape``."""
    coarse = rng.standard_normal((max(shape[0] // cells, 2), max(shape[1] // cells, 2)))
    zoom = (shape[0] / coarse.shape[0], shape[1] / coarse.shape[1])
    return ndimage.zoom(coarse, zoom, order=3)[: shape[0], : shape[1]]


def write_month(path: Path, shape: tuple[int, int], levels: int, complevel: int, seed: int) -> None:
    """A CMEMS-layout thetao file, written level by level so memory stays at one level."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    south = -10.0 if ny / 12 <= 95 else -80.0  # a global file (--scale 2) spans -80..90, as GLORYS12's does
    lat = np.linspace(south, south + (ny - 1) / 12, ny, dtype=np.float32)
    lon = np.linspace(-180.0, -180.0 + (nx - 1) / 12, nx, dtype=np.float32)
    # seafloor depth (m): a third of the surface is land, the rest shelves down to ~5500 m
    bathymetry = 3000 * (smooth_noise(shape, 60, rng) + 0.45) + 400 * smooth_noise(shape, 8, rng)
    surface = 28.0 - 0.25 * np.abs(lat)[:, None] + 1.5 * smooth_noise(shape, 20, rng)
    eddies = smooth_noise(shape, 5, rng)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("time", 1)
        ds.createDimension("depth", levels)
        ds.createDimension("latitude", ny)
        ds.createDimension("longitude", nx)
        ds.createVariable("time", "f8", ("time",))[:] = [0.0]
        ds["time"].units = "hours since 1950-01-01"
        ds.createVariable("depth", "f4", ("depth",))[:] = DEPTH_LEVELS_M[:levels]
        ds.createVariable("latitude", "f4", ("latitude",))[:] = lat
        ds.createVariable("longitude", "f4", ("longitude",))[:] = lon
        var = ds.createVariable(
            "thetao", "i2", ("time", "depth", "latitude", "longitude"), zlib=True, complevel=complevel,
            shuffle=True, chunksizes=(1, 1, ny, nx), fill_value=FILL_VALUE_INT16,
        )  # fmt: skip
        var.set_auto_maskandscale(False)
        var.scale_factor = THETAO_SCALE_FACTOR
        var.add_offset = THETAO_ADD_OFFSET
        var.units = "degrees_C"
        for k in range(levels):
            depth = DEPTH_LEVELS_M[k]
            celsius = 2.0 + (surface - 2.0) * np.exp(-depth / 300.0) + 0.3 * eddies * np.exp(-depth / 1000.0)
            celsius = np.maximum(celsius, -1.8)  # sea water freezes near -1.8 °C; polar rows would go below
            packed = np.round((celsius - THETAO_ADD_OFFSET) / THETAO_SCALE_FACTOR).astype(np.int16)
            packed[bathymetry < depth] = FILL_VALUE_INT16
            var[0, k] = packed


def write_manifest(raw: Path, names: list[str]) -> Path:
    rows = [{"file": n, "bytes": (raw / n).stat().st_size, "sha256": "", "date": 20100115 + 100 * i}
            for i, n in enumerate(names)]  # fmt: skip
    manifest = raw / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def io_floor(raw: Path, index: pd.DataFrame, levels: list[int], size: int, out: Path) -> float:
    """Seconds to read the same levels with xarray and np.save the same tiles (no checks, no index)."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for source_file, rows in index.groupby("source_file", sort=True):
        with xr.open_dataset(raw / source_file) as ds:
            stack = ds["thetao"].isel(time=0, depth=levels).values.astype(np.float32)
        for sample_id, y0, x0 in rows[["sample_id", "y0", "x0"]].itertuples(index=False):
            np.save(out / f"{sample_id}.npy", np.ascontiguousarray(stack[:, y0 : y0 + size, x0 : x0 + size]))
    return time.perf_counter() - start


def emit(metric: str, value, unit: str) -> None:
    print(json.dumps({"metric": metric, "value": value, "unit": unit}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="horizontal size vs a quarter globe")
    parser.add_argument("--levels", type=int, default=50, help="depth levels in the file")
    parser.add_argument("--depth-indices", default="0,4,10,17", help="levels to export")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--files", type=int, default=1, help="monthly files to export")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--complevel", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    levels = [int(i) for i in args.depth_indices.split(",")]
    shape = (round(QUARTER_GLOBE[0] * args.scale), round(QUARTER_GLOBE[1] * args.scale))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        start = time.perf_counter()
        names = [file_name(2010, m + 1) for m in range(args.files)]
        for i, name in enumerate(names):
            write_month(raw / name, shape, args.levels, args.complevel, seed=i)
        emit("generate_seconds", round(time.perf_counter() - start, 3), "s")
        emit("grid", f"{args.files}x{args.levels}x{shape[0]}x{shape[1]}", "files x depth x lat x lon")
        emit("file_bytes", sum((raw / n).stat().st_size for n in names), "B")
        manifest = write_manifest(raw, names)
        config = validate_config(
            {"data_dir": tmp, "variants": ["temp_v1"],
             "export": {"depth_indices": levels, "patch_size": args.patch, "stride": args.patch}}
        )  # fmt: skip
        export_times, floor_times = [], []
        for _ in range(args.repeats):
            # both write into fresh folders, as a first export does
            shutil.rmtree(Path(tmp) / "patches", ignore_errors=True)
            shutil.rmtree(Path(tmp) / "floor", ignore_errors=True)
            start = time.perf_counter()
            index_csv = export_patches(config, manifest, out_dir=Path(tmp) / "patches", workers=args.workers)
            export_times.append(time.perf_counter() - start)
            index = pd.read_csv(index_csv)
            floor_times.append(io_floor(raw, index, levels, args.patch, Path(tmp) / "floor"))
        emit("patches", len(index), "count")
        emit("export_seconds", round(min(export_times), 3), "s")
        emit("floor_seconds", round(min(floor_times), 3), "s")
        emit("export_over_floor", round(min(export_times) / min(floor_times), 3), "ratio")


if __name__ == "__main__":
    main()
