"""Data-loading throughput of the eo_4band dataset next to the np.load floor of the same files.

Writes ``--files`` exported-like patches (4 x 128 x 128 float32 °C, an island of NaN land) and their split
index into a temporary folder, warms the page cache, then measures in one process (one torch thread, like a
DataLoader worker) and in interleaved rounds (the median is reported, so a busy machine affects every
number alike):

* ``np_load_floor``: ``np.load`` of the same files, the cost of just reading them;
* ``eo_4band_train_loader``: what training consumes: the DataModule's train loader setup (a DataLoader,
  batch 16, no workers, its ``collate``; packed batches built whole by ``PatchDataset.__getitems__``): read,
  EO offset/speckle/dropout, fresh masks at ``--fraction`` with sides ``--sides`` (the pool of
  ``dataset.train_mask_reuse``). The rot90/flip and the unpacking (``x`` and float masks) are not in it: the
  DataModule does them on the training device (``augment_batch``, ``unpack_batch``); ``augment_batch_cpu``
  and ``unpack_batch_cpu`` say what they cost on a CPU;
* ``eo_4band_train``: ``PatchDataset[i]`` of the train split used alone, with the rot90/flip on the CPU;
* ``eo_4band_train_exact``: the same with every mask drawn from scratch (``train_mask_reuse: 0``);
* ``eo_4band_val``: the val split: masks fixed by (seed, sample, band), no degradation, no augmentation.

Prints one JSON line per metric: {"metric", "value", "unit"}; ``*_of_floor`` are ratios to the floor.
Target (issue 3): >= 3000 samples/s and >= 0.25 of the floor for eo_4band training data
(``eo_4band_train_loader``).

    python bench/loader.py [--files 256] [--rounds 5] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from depthdif.config import validate_config
from depthdif.data.augment import augment_batch
from depthdif.data.dataset import PatchDataset, collate, unpack_batch


def write_files(root: Path, n_files: int, size: int, seed: int = 0) -> Path:
    """n_files patches (4, size, size) float32 °C with NaN land, and an index where 3/4 are train."""
    rng = np.random.default_rng(seed)
    (root / "y_npy").mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows = []
    for i in range(n_files):
        field = (
            24.0 - 6.0 * yy + rng.standard_normal((4, size, size)) * 0.2 - 3.0 * np.arange(4)[:, None, None]
        )
        cy, cx = rng.uniform(0, 1, 2)
        island = (yy - cy) ** 2 + (xx - cx) ** 2 < 0.04 + 0.01 * np.arange(4)[:, None, None]
        field = np.where(island, np.nan, field).astype(np.float32)
        sample_id = f"b{i:05d}"
        np.save(root / "y_npy" / f"{sample_id}.npy", field)
        rows.append({
            "sample_id": sample_id, "source_file": "mercatorglorys12v1_gl12_mean_201011.nc", "date": 20101115,
            "y0": 0, "x0": i * size, "patch_size": size, "lat0": 20.0, "lat1": 30.0, "lon0": -120.0,
            "lon1": -110.0, "nodata_fraction": float(island.any(axis=0).mean()), "y_npy_path": f"y_npy/{sample_id}.npy",
            "variable": "thetao", "depth_indices": "0;4;10;17", "depth_values": "0.494;5.078;15.81;47.37",
            "num_channels": 4, "split": "val" if i % 4 == 3 else "train", "window_id": f"w{i}",
        })  # fmt: skip
    csv = root / "patch_index_split.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def rate(step: Callable[[int], object], n_items: int, seconds: float) -> float:
    """Items per second of ``step(i)`` over i = 0, 1, ... (cycling), for at least ``seconds``."""
    count, start = 0, time.perf_counter()
    while True:
        for i in range(n_items):
            step(i)
        count += n_items
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def profile(**steps: Callable[[], object]) -> None:
    """Where the time goes (cProfile, sorted by own time) for each named step (run three times)."""
    import cProfile
    import pstats

    for name, step in steps.items():
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(3):
            step()
        profiler.disable()
        print(f"--- profile: {name}", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--fraction", type=float, default=0.975)
    parser.add_argument("--sides", type=int, nargs=2, default=(2, 5))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="minimum time of one measurement")
    parser.add_argument(
        "--reuse", type=int, default=None, help="dataset.train_mask_reuse (default: the config's)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also print a cProfile of the train path (stderr)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="depthdif-bench-") as tmp:
        csv = write_files(Path(tmp), args.files, args.size)
        dataset = {"dataset_variant": "eo_4band", "mask_fraction": args.fraction,
                   "mask_patch_min": args.sides[0], "mask_patch_max": args.sides[1]}  # fmt: skip
        if args.reuse is not None:
            dataset["train_mask_reuse"] = args.reuse
        config = validate_config({"export": {"patch_size": args.size}, "dataset": dataset})
        exact = validate_config({"export": {"patch_size": args.size},
                                 "dataset": {**dataset, "train_mask_reuse": 0}})  # fmt: skip
        train = PatchDataset(csv, config, "train")
        train_exact = PatchDataset(csv, exact, "train")
        val = PatchDataset(csv, config, "val")
        paths = train.paths
        loader_set = PatchDataset(csv, config, "train", augment=False, packed=True)  # as the DataModule builds it
        loader = torch.utils.data.DataLoader(
            loader_set, batch_size=16, shuffle=True, num_workers=0, collate_fn=collate
        )
        batch = next(iter(loader))

        def load_batches(_: int) -> None:
            for _batch in loader:
                pass

        for path in paths:  # warm the page cache and the datasets (pools, header cache)
            np.load(path)
        for ds in (train, train_exact, val):
            ds[0]

        measures: dict[str, Callable[[], float]] = {
            "np_load_floor": lambda: rate(lambda i: np.load(paths[i]), len(paths), args.seconds),
            "eo_4band_train_loader": lambda: rate(load_batches, 1, args.seconds) * len(train),
            "augment_batch_cpu": lambda: rate(lambda i: augment_batch(batch), 1, args.seconds) * 16,
            "unpack_batch_cpu": lambda: rate(lambda i: unpack_batch(dict(batch)), 1, args.seconds) * 16,
            "eo_4band_train": lambda: rate(train.__getitem__, len(train), args.seconds),
            "eo_4band_train_exact": lambda: rate(train_exact.__getitem__, len(train), args.seconds),
            "eo_4band_val": lambda: rate(val.__getitem__, len(val), args.seconds),
        }
        results: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(args.rounds):
            for name, measure in measures.items():
                results[name].append(measure())
        if args.profile:
            profile(
                train_samples=lambda: [train[i] for i in range(len(train))],
                train_loader=lambda: load_batches(0),
                val_samples=lambda: [val[i] for i in range(len(val))],
            )

    floor = statistics.median(results["np_load_floor"])
    for name, values in results.items():
        value = statistics.median(values)
        print(json.dumps({"metric": name, "value": round(value, 1), "unit": "samples/s"}))
        if name.startswith("eo_4band"):
            print(
                json.dumps({"metric": f"{name}_of_floor", "value": round(value / floor, 3), "unit": "ratio"})
            )
    print(
        json.dumps(
            {
                "metric": "setup",
                "value": f"{args.files} files {args.size}x{args.size}x4, fraction "
                f"{args.fraction}, sides {args.sides[0]}-{args.sides[1]}, train_mask_reuse "
                f"{config['dataset']['train_mask_reuse']}, torch threads 1",
                "unit": "text",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
