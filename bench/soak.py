"""Soak test of the data loader: does memory stay flat over a long run with worker processes?

Writes ``--files`` exported-like patches (4 x size x size float32 °C with NaN land) and a split index into a
temporary folder, then iterates the ``DepthDifDataModule`` train loader (``eo_4band``, ``--workers`` worker
processes, persistent across epochs, as a long training run uses them) for ``--samples`` samples. Every
``--every`` batches it samples the resident set size (RSS) of the main process and of every descendant
(the DataLoader workers), from psutil when installed, else from ``/proc``.

Memory growth is measured from the end of the warm-up (``--warmup`` samples: page cache, mask pools,
speckle banks and allocator arenas fill up first) to the end of the run, on the total RSS:

* ``rss_growth_pct``: (median of the last 5 readings - median of the first 5 after warm-up) / the latter;
* ``rss_slope_mb_per_100k``: least-squares slope of the total RSS over the samples served after warm-up;
* ``rss_peak_growth_pct``: the highest reading against the same baseline.

Target: ``rss_growth_pct`` < 5 %. Prints one JSON line per metric: {"metric", "value", "unit"}.

    python bench/soak.py [--samples 100000] [--workers 2] [--size 64] [--trace rss.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from depthdif.config import validate_config
from depthdif.data.datamodule import DepthDifDataModule

TARGET_GROWTH_PCT = 5.0
EDGE_READINGS = 5  # readings averaged (median) at each end of the run
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ------------------------------------------------------------------------------------------ memory


def _children_from_proc(pid: int) -> list[int]:
    """Direct children of ``pid`` from /proc/<pid>/task/*/children (every thread can have forked)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                children.extend(int(c) for c in handle.read().split())
        except OSError:
            continue
    return children


def _rss_from_proc(pid: int) -> int:
    """Resident bytes of one process from /proc/<pid>/statm (0 if it has gone)."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def rss_bytes(pid: int) -> tuple[int, int, int]:
    """(main RSS, summed RSS of all descendants, number of descendants) in bytes."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            process = psutil.Process(pid)
            children = process.children(recursive=True)
            main = process.memory_info().rss
        except psutil.Error:
            return 0, 0, 0
        total = 0
        for child in children:
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return main, total, len(children)
    descendants, frontier = [], [pid]
    while frontier:
        children = _children_from_proc(frontier.pop())
        descendants.extend(children)
        frontier.extend(children)
    return _rss_from_proc(pid), sum(_rss_from_proc(c) for c in descendants), len(descendants)


# -------------------------------------------------------------------------------------------- data


def write_patch_set(root: Path, n_files: int, size: int, seed: int = 0) -> Path:
    """Patches (4, size, size) float32 °C with an island of NaN, 3/4 of them train; returns the index CSV."""
    rng = np.random.default_rng(seed)
    patches = root / "patches"
    (patches / "y_npy").mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    depth = np.arange(4)[:, None, None]
    rows = []
    for i in tqdm(range(n_files), desc="writing patches", unit="file", disable=not sys.stderr.isatty()):
        field = 24.0 - 6.0 * yy - 3.0 * depth + 0.2 * rng.standard_normal((4, size, size))
        cy, cx = rng.uniform(0, 1, 2)
        island = (yy - cy) ** 2 + (xx - cx) ** 2 < 0.03 + 0.01 * depth
        field = np.where(island, np.nan, field).astype(np.float32)
        sample_id = f"201001_{i * size}_0"
        np.save(patches / "y_npy" / f"{sample_id}.npy", field)
        rows.append({
            "sample_id": sample_id, "source_file": "mercatorglorys12v1_gl12_mean_201001.nc", "date": 20100115,
            "y0": i * size, "x0": 0, "patch_size": size, "lat0": 20.0, "lat1": 20.0 + (size - 1) / 12,
            "lon0": -120.0, "lon1": -120.0 + (size - 1) / 12, "nodata_fraction": float(island.any(axis=0).mean()),
            "y_npy_path": f"y_npy/{sample_id}.npy", "variable": "thetao", "depth_indices": "0;7;14;21",
            "depth_values": "0.494;9.573;29.44;92.33", "num_channels": 4,
            "split": "val" if i % 4 == 3 else "train", "window_id": f"w{i}_0",
        })  # fmt: skip
    csv = patches / "patch_index_split.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def soak_config(root: Path, args: argparse.Namespace) -> dict:
    return validate_config({
        "data_dir": str(root),
        "variants": ["eo_4band"],
        "export": {"patch_size": args.size, "stride": args.size, "depth_indices": [0, 7, 14, 21]},
        "dataset": {"dataset_variant": "eo_4band", "mask_fraction": args.fraction},
        "loader": {"batch_size": args.batch_size, "num_workers": args.workers,
                   "persistent_workers": args.workers > 0},
    })  # fmt: skip


# --------------------------------------------------------------------------------------------- run


def soak(loader, n_samples: int, every: int, warmup: int) -> dict:
    """Iterate ``loader`` (epoch after epoch) for ``n_samples``; RSS readings after warm-up, timings."""
    pid = os.getpid()
    readings: list[tuple[int, int, int, int]] = []  # (samples served, main, workers, n_workers)
    served, batches, started, warm_at = 0, 0, time.perf_counter(), None
    with tqdm(total=n_samples, desc="soak", unit="sample", mininterval=2.0) as progress:
        while served < n_samples:
            for batch in loader:
                count = int(batch["y"].shape[0])
                served += count
                batches += 1
                progress.update(count)
                if warm_at is None and served >= warmup:
                    warm_at = (served, time.perf_counter())
                if warm_at is not None and (batches % every == 0 or served >= n_samples):
                    readings.append((served, *rss_bytes(pid)))
                if served >= n_samples:
                    break
    finished = time.perf_counter()
    if warm_at is None or len(readings) < 2 * EDGE_READINGS:
        raise SystemExit(
            f"only {len(readings)} RSS readings after warm-up: raise --samples or lower --every / --warmup"
        )
    return {
        "readings": readings,
        "served": served,
        "warm_at": warm_at,
        "started": started,
        "finished": finished,
    }


def metrics_of(result: dict, workers: int) -> list[tuple[str, float, str]]:
    readings = np.asarray(result["readings"], dtype=np.float64)
    samples, main, children, n_children = readings.T
    total = main + children
    mb = 1024.0**2
    base = statistics.median(total[:EDGE_READINGS])
    end = statistics.median(total[-EDGE_READINGS:])
    main_base, main_end = statistics.median(main[:EDGE_READINGS]), statistics.median(main[-EDGE_READINGS:])
    slope = np.polyfit(samples, total, 1)[0] * 100_000 / mb if np.ptp(samples) > 0 else 0.0
    warm_samples, warm_time = result["warm_at"]
    rate = (result["served"] - warm_samples) / max(result["finished"] - warm_time, 1e-9)
    return [
        ("samples", float(result["served"]), "samples"),
        ("workers_seen", float(np.median(n_children)), "processes"),
        ("workers_configured", float(workers), "processes"),
        ("samples_per_s", rate, "samples/s"),
        ("wall_s", result["finished"] - result["started"], "s"),
        ("rss_readings", float(len(total)), "readings"),
        ("rss_baseline_mb", base / mb, "MB"),
        ("rss_final_mb", end / mb, "MB"),
        ("rss_peak_mb", float(total.max()) / mb, "MB"),
        ("rss_main_growth_pct", 100.0 * (main_end - main_base) / main_base, "%"),
        ("rss_growth_pct", 100.0 * (end - base) / base, "%"),
        ("rss_peak_growth_pct", 100.0 * (float(total.max()) - base) / base, "%"),
        ("rss_slope_mb_per_100k", float(slope), "MB/100k samples"),
        ("rss_growth_target_pct", TARGET_GROWTH_PCT, "%"),
    ]


def write_trace(path: Path, readings: list[tuple[int, int, int, int]]) -> None:
    frame = pd.DataFrame(readings, columns=["samples", "rss_main_bytes", "rss_workers_bytes", "n_workers"])
    frame.to_csv(path, index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000, help="samples to load in all")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--files", type=int, default=512, help="patch files written (3/4 train)")
    parser.add_argument("--size", type=int, default=64, help="patch side in pixels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=0.975, help="dataset.mask_fraction")
    parser.add_argument("--every", type=int, default=25, help="read RSS every N batches")
    parser.add_argument(
        "--warmup", type=int, default=None, help="samples before the baseline (default 10 %%)"
    )
    parser.add_argument("--trace", type=Path, help="also write every RSS reading to this CSV")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else args.samples // 10
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="depthdif-soak-") as tmp:
        csv = write_patch_set(Path(tmp), args.files, args.size)
        loader = DepthDifDataModule(
            soak_config(Path(tmp), args), "eo_4band", index_csv=csv
        ).train_dataloader()
        result = soak(loader, args.samples, args.every, warmup)
        del loader  # stops the persistent workers before the folder goes
    if args.trace:
        write_trace(args.trace, result["readings"])
    for metric, value, unit in metrics_of(result, args.workers):
        print(json.dumps({"metric": metric, "value": round(value, 4), "unit": unit}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
