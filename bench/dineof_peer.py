"""The published peer DINEOF (pydineof) on the evaluation's val stacks, next to OI and biharmonic inpainting.

For each band channel and occlusion level it builds the val patches exactly as the evaluation does
(``select_val_rows``, ``PatchDataset(split="val", variant="temp_v1", mask_fraction=f, seed)``,
``gather_items``; ``dataset.temp_v1_band`` set to the channel), so every method sees the same observed
pixels and is scored on the same hidden ocean pixels (°C):

* ``dineof_window``: ``run_dineof(stack="window")``, one DINEOF per val location on its own months (the
  evaluation's default);
* ``dineof_stacked``: ``run_dineof(stack="locations")``, one DINEOF for all val locations side by side;
* ``oi``, ``biharmonic``: the per-patch baselines (``run_baseline``, the evaluation's parameters);
* ``eof_oracle_k{n}``: what the best ``n``-mode EOF reconstruction could reach, i.e. the complete true
  stack of each location truncated to its ``n`` leading EOFs (overall mean removed, as pydineof does),
  scored on the hidden pixels: a floor for any DINEOF with ``n`` modes.  ``n`` = ``dineof_max_modes``
  and ``T - 7``, the most pydineof allows with T frames;
* ``obs_per_pixel``: observed months per ocean pixel (mean), ``never_observed``: share of ocean pixels
  never observed in any month (DINEOF has no row for them; they are filled by nearest).
* ``dineof_*_modes``: the modes DINEOF's cross-validation retained (one value per DINEOF run).
* with ``--variants``, the window route changed one setting at a time (``dineof_fill`` per location):
  ``pixel_centred`` (each pixel's temporal mean removed first), ``no_time_filter`` (``alpha=0``),
  ``max17_modes`` (cap T - 7 = 17 instead of ``dineof_max_modes``).

Prints one JSON object per line: {"metric", "value", "unit"}.  About a minute on one core (2 val
locations by default)::

    OMP_NUM_THREADS=1 python bench/dineof_peer.py [--channels 3 1] [--fractions 0.5 0.95] [--max-patches N]
                                                  [--variants]   (about two minutes)
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from depthdif.baselines import baseline_params_from_config, dineof_fill, run_baseline
from depthdif.config import deep_merge, load_config
from depthdif.data.dataset import PatchDataset
from depthdif.evaluation.baseline_predictions import run_dineof
from depthdif.evaluation.metrics import ScoreAccumulator
from depthdif.evaluation.passes import gather_items, select_val_rows


class _ModesSeen(logging.Handler):
    """Collects the number of modes each DINEOF run retained (from the module's debug log)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.modes: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.match(r"dineof: (\d+) modes retained", record.getMessage())
        if found:
            self.modes.append(int(found.group(1)))


def emit(metric: str, value, unit: str) -> None:
    print(json.dumps({"metric": metric, "value": value, "unit": unit}), flush=True)


def rmse(pred: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    return round(float(np.sqrt(np.mean((pred[where] - truth[where]) ** 2))), 4)


def eof_oracle(truth: np.ndarray, location_of: list, n_modes: int) -> np.ndarray:
    """Each location's complete ``(T, H, W)`` truth truncated to ``n_modes`` EOFs; ``(P, H, W)``."""
    out = np.full(truth.shape, np.nan)
    for place in sorted(set(location_of)):
        members = [i for i, loc in enumerate(location_of) if loc == place]
        frames = truth[members].reshape(len(members), -1)
        ocean = np.isfinite(frames).all(axis=0)
        matrix = frames[:, ocean].T  # (M pixels, T frames), as DINEOF sees it
        mean = matrix.mean()
        u, s, vt = np.linalg.svd(matrix - mean, full_matrices=False)
        k = min(n_modes, len(s))
        rebuilt = np.full(frames.shape, np.nan)
        rebuilt[:, ocean] = ((u[:, :k] * s[:k]) @ vt[:k] + mean).T
        out[members] = rebuilt.reshape((len(members),) + truth.shape[1:])
    return out


def window_variant(items, options: dict, seed: int) -> np.ndarray:
    """``dineof_fill`` on each location's months (band 0) with ``options``; ``(P, H, W)`` °C."""
    out = np.full(items.truth[:, 0].shape, np.nan)
    for place in sorted(set(items.locations)):
        members = [i for i, loc in enumerate(items.locations) if loc == place]  # gather_items keeps date order
        ocean = items.ocean[members, 0].all(axis=0)
        out[members] = dineof_fill(items.observed[members, 0], ocean, seed=seed, **options)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="*", default=["config/config.yaml"])
    parser.add_argument("--channels", type=int, nargs="+", default=[3, 1], help="export channels (3 = 92 m)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.95])
    parser.add_argument("--max-patches", type=int, default=None, help="override evaluate.max_patches")
    parser.add_argument("--variants", action="store_true", help="also the window route with one setting changed")
    args = parser.parse_args()

    modes_seen = _ModesSeen()
    dineof_log = logging.getLogger("depthdif.baselines.dineof")
    dineof_log.addHandler(modes_seen)
    dineof_log.setLevel(logging.DEBUG)
    base = load_config(args.config)
    index_csv = Path(base["data_dir"]) / "patches" / "patch_index_split.csv"
    index = pd.read_csv(index_csv)
    settings, seed = base["evaluate"], int(base["seed"])
    rows = select_val_rows(index, args.max_patches or settings["max_patches"], seed)
    rows.attrs["index_dir"] = str(index_csv.parent)
    params = baseline_params_from_config(base)
    depth_of = [float(v) for v in str(index["depth_values"].iloc[0]).split(";")]
    emit("val_locations", int(rows.groupby(["y0", "x0"]).ngroups), "count")
    emit("val_months", int(rows["date"].nunique()), "count")
    # one BLAS thread, as the evaluation runs its baselines
    with threadpool_limits(limits=1, user_api="blas"):
        for channel in args.channels:
            config = deep_merge(base, {"dataset": {"return_info": True, "return_coords": True,
                                                   "temp_v1_band": channel}})
            for fraction in args.fractions:
                dataset = PatchDataset(rows, config, split="val", variant="temp_v1", mask_fraction=fraction,
                                       seed=seed)
                items = gather_items(dataset, config["loader"]["batch_size"])
                tag = f"ch{channel}_{depth_of[channel]:.1f}m_hidden{fraction:g}"
                truth, hidden = items.truth[:, 0], items.hidden[:, 0]
                for stack in ("window", "locations"):
                    name = "dineof_window" if stack == "window" else "dineof_stacked"
                    modes_seen.modes.clear()
                    started = time.perf_counter()
                    pred = run_dineof(items, rows, fraction, [depth_of[channel]], ScoreAccumulator(), seed,
                                      settings["dineof_max_modes"], stack=stack)[:, 0]
                    emit(f"{name}_rmse_{tag}", rmse(pred, truth, hidden), "degC")
                    emit(f"{name}_modes_{tag}", list(modes_seen.modes), "modes")
                    emit(f"{name}_seconds_{tag}", round(time.perf_counter() - started, 2), "s")
                if args.variants:
                    months = rows["date"].nunique()
                    for name, options in (("pixel_centred", {"centre": "pixel"}), ("no_time_filter", {"alpha": 0.0}),
                                          ("max17_modes", {"max_modes": months - 7})):
                        options = {"max_modes": settings["dineof_max_modes"], **options}
                        pred = window_variant(items, options, seed)
                        emit(f"dineof_window_{name}_rmse_{tag}", rmse(pred, truth, hidden), "degC")
                for name in ("oi", "biharmonic"):
                    pred = np.stack([run_baseline(name, items.observed[i, 0], items.ocean[i, 0], **params)
                                     for i in range(len(truth))])
                    emit(f"{name}_rmse_{tag}", rmse(pred, truth, hidden), "degC")
                months = rows["date"].nunique()
                for n_modes in sorted({int(settings["dineof_max_modes"]), months - 7}):
                    oracle = eof_oracle(truth, items.locations, n_modes)
                    emit(f"eof_oracle_k{n_modes}_rmse_{tag}", rmse(oracle, truth, hidden), "degC")
                seen = np.zeros(truth.shape[1:] + (0,))
                counts = []
                for place in sorted(set(items.locations)):
                    members = [i for i, loc in enumerate(items.locations) if loc == place]
                    ocean = items.ocean[members, 0].all(axis=0)
                    counts.append(np.isfinite(items.observed[members, 0]).sum(axis=0)[ocean])
                seen = np.concatenate(counts)
                emit(f"obs_per_pixel_{tag}", round(float(seen.mean()), 2), "months")
                emit(f"never_observed_{tag}", round(float((seen == 0).mean()), 3), "fraction")


if __name__ == "__main__":
    main()
