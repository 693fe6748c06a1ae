"""Paired comparison of two evaluations scored on the same val locations (e.g. a run with sea-surface height
as a condition against one without): the RMSE ratio run A / run B of every method, band and occlusion level,
with a 95 % bootstrap interval over val locations (the same locations resampled for both runs).

Reads each run's ``eval/location_sums.csv`` (written by the evaluation); prints JSON lines
``{"metric": "rmse_ratio/<method>/<depth>m/<level>", "value", "unit": "ratio", "ci95": [lo, hi], "n_locations"}``,
``<level>`` the occlusion level or, for the observing-system experiment, ``profiles_<factor>x``.
Methods named by ``--methods`` only (default: the ensemble mean, the cokriging first guess and the regression
baseline); ``--pooled`` adds the ratio pooled over bands.

    python bench/compare_runs.py results/eo_4band/eval results_nossh/eo_4band/eval
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from depthdif.evaluation.metrics import bootstrap_rmse_ratio

DEFAULT_METHODS = ("diffusion_ens_mean", "cokriging", "eo_regression_oi")


def with_levels(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with a ``level`` key: the occlusion level (``0.95``) or ``profiles_<factor>x`` (files written
    before the observing-system rows had no ``observations`` column: all rectangles)."""
    observations = frame["observations"] if "observations" in frame else pd.Series("rectangles", index=frame.index)
    profiles = observations == "profiles"
    level = frame["mask_fraction"].map(lambda v: f"{v:g}")
    if profiles.any():
        level = level.where(~profiles, frame["profile_density_factor"].map(lambda v: f"profiles_{v:g}x"))
    return frame.assign(level=level)


def paired_ratios(run_a: pd.DataFrame, run_b: pd.DataFrame, methods, pooled: bool) -> list[dict]:
    """One entry per (method, band or pooled, level) present in both runs, on their shared locations."""
    out = []
    run_a, run_b = with_levels(run_a), with_levels(run_b)
    keys = ["method", "band", "level", "location"]
    merged = run_a.merge(run_b, on=keys, suffixes=("_a", "_b"))
    merged = merged[merged["method"].isin(methods)]
    groups = [("band", merged)]
    if pooled:
        pooled_rows = merged.groupby(["method", "level", "location"], as_index=False)[
            ["sse_c2_a", "n_pixels_a", "sse_c2_b", "n_pixels_b"]].sum()
        groups.append(("pooled", pooled_rows.assign(band=-1, depth_m_a=np.nan)))
    for kind, frame in groups:
        for (method, _, level), cell in frame.groupby(["method", "band", "level"]):
            ratio, low, high = bootstrap_rmse_ratio(cell["sse_c2_a"].to_numpy(), cell["n_pixels_a"].to_numpy(float),
                                                    cell["sse_c2_b"].to_numpy(), cell["n_pixels_b"].to_numpy(float))
            where = "pooled" if kind == "pooled" else f"{cell['depth_m_a'].iloc[0]:.1f}m"
            out.append({"metric": f"rmse_ratio/{method}/{where}/{level}", "value": round(float(ratio), 4),
                        "unit": "ratio", "ci95": [round(float(low), 4), round(float(high), 4)],
                        "n_locations": int(len(cell))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_a", type=Path, help="evaluation folder of run A (numerator)")
    parser.add_argument("eval_b", type=Path, help="evaluation folder of run B (denominator)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--pooled", action="store_true", help="also the ratio pooled over bands")
    args = parser.parse_args()
    runs = [pd.read_csv(folder / "location_sums.csv", dtype={"location": str}) for folder in (args.eval_a, args.eval_b)]
    for entry in paired_ratios(*runs, args.methods, args.pooled):
        print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
