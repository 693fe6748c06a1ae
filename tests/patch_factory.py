"""A small exported-and-split patch set on disk, shaped like the export and split stages write it.

``write_patch_set`` makes ``{root}/patches/y_npy/<sample_id>.npy`` (float32 (C, H, W) °C, NaN on land, deeper
channels with more land) and ``{root}/patches/patch_index_split.csv`` with every contract column; whole
windows are in train or val.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DEPTHS_M = (0.494, 5.078, 15.81, 47.37, 92.33, 318.1)


def patch_field(rng: np.random.Generator, size: int, channels: int, land: bool = True) -> np.ndarray:
    """(channels, size, size) °C: a smooth warm-to-cold field, colder with depth, NaN on an island."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    base = 24.0 - 6.0 * yy + 2.0 * np.sin(2 * np.pi * (xx + rng.uniform()))
    out = np.empty((channels, size, size), dtype=np.float32)
    cy, cx = rng.uniform(0.2, 0.8, size=2)
    radius = (yy - cy) ** 2 + (xx - cx) ** 2
    for k in range(channels):
        out[k] = base - 3.0 * k + 0.3 * rng.standard_normal((size, size))
        if land:
            out[k][radius < 0.03 + 0.015 * k] = np.nan  # the island widens with depth
    return out


def write_patch_set(
    root: Path,
    size: int = 16,
    channels: int = 4,
    windows: int = 4,
    val_windows: tuple[int, ...] = (1,),
    months: tuple[str, ...] = ("201011", "201012"),
    per_window: int = 2,
    seed: int = 0,
    land: bool = True,
) -> Path:
    """Write patches and the split index; return the index CSV path."""
    rng = np.random.default_rng(seed)
    patches = Path(root) / "patches"
    (patches / "y_npy").mkdir(parents=True, exist_ok=True)
    rows = []
    for month in months:
        for window in range(windows):
            for k in range(per_window):
                y0, x0 = window * 2 * size, k * size
                sample_id = f"{month}_{y0}_{x0}"
                np.save(patches / "y_npy" / f"{sample_id}.npy", patch_field(rng, size, channels, land))
                lat0, lon0 = 20.0 + y0 / 12.0, -120.0 + x0 / 12.0
                rows.append({
                    "sample_id": sample_id,
                    "source_file": f"mercatorglorys12v1_gl12_mean_{month}.nc",
                    "date": int(month + "15"),
                    "y0": y0, "x0": x0, "patch_size": size,
                    "lat0": lat0, "lat1": lat0 + (size - 1) / 12.0,
                    "lon0": lon0, "lon1": lon0 + (size - 1) / 12.0,
                    "nodata_fraction": 0.1,
                    "y_npy_path": f"y_npy/{sample_id}.npy",
                    "variable": "thetao",
                    "depth_indices": ";".join(str(i) for i in range(channels)),
                    "depth_values": ";".join(str(d) for d in DEPTHS_M[:channels]),
                    "num_channels": channels,
                    "split": "val" if window in val_windows else "train",
                    "window_id": f"w{window}_0",
                })  # fmt: skip
    csv = patches / "patch_index_split.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def small_config(root: Path, **dataset) -> dict:
    """A validated config pointing at ``root`` with dataset options overridden."""
    from depthdif.config import validate_config

    return validate_config({
        "data_dir": str(root),
        "export": {"patch_size": 16, "stride": 16, "depth_indices": [0, 4, 10, 17]},
        "dataset": dataset,
        "loader": {"batch_size": 4},
    })  # fmt: skip
