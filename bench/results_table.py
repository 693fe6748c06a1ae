"""The README's results table from a finished run: one markdown row per variant and occlusion level.

Reads ``{results_dir}/<variant>/eval/metrics.json`` and ``metrics.csv`` (and ``eval_real`` for the sim-to-real
rows); columns as in the README: ensemble mean, conditional mean and best baseline RMSE (°C, pooled over bands),
the two ratios with their 95 % bootstrap intervals over val locations, spread/skill of the ensemble and of the
first guess (per band), and the ensemble mean over the best per-patch classical method.

    python bench/results_table.py results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

# every baseline but the model's own first guess, climatology (other years' full fields) and DINEOF (a peer)
CLASSICAL = ("mean_fill", "nearest", "linear", "idw", "biharmonic", "oi", "eo_regression_oi")


def pooled_rmse(frame: pd.DataFrame) -> float:
    return float(np.sqrt((frame["rmse_c"] ** 2 * frame["n_pixels"]).sum() / frame["n_pixels"].sum()))


def rows_of(folder: Path, label: str) -> list[str]:
    summary = json.loads((folder / "metrics.json").read_text())
    table = pd.read_csv(folder / "metrics.csv")
    if "observations" in table:
        table = table[table["observations"].fillna("rectangles") == "rectangles"]
    lines = []
    for k, entry in enumerate(summary["headline"]):
        fraction = entry["mask_fraction"]
        level = table[np.isclose(table["mask_fraction"], fraction)]

        def spread_skill(method: str, level=level) -> str:
            values = level[level["method"] == method].sort_values("band")["spread_skill"]
            return ", ".join(f"{v:.2f}" for v in values)

        classical = {m: pooled_rmse(level[level["method"] == m]) for m in CLASSICAL if (level["method"] == m).any()}
        best = min(classical, key=classical.get)
        model = entry["diffusion_ens_mean_rmse_c"]
        low, high = entry["model_over_best_baseline_ci95"]
        clow, chigh = entry["cond_mean_over_best_baseline_ci95"]
        lines.append(
            f"| {label if k == 0 else ''} | {fraction:g} | {model:.3f} | {entry['diffusion_cond_mean_rmse_c']:.3f} | "
            f"{entry['best_baseline_rmse_c']:.3f} (`{entry['best_baseline']}`) | "
            f"**{entry['model_over_best_baseline']:.3f}** [{low:.3f}, {high:.3f}] | "
            f"{entry['cond_mean_over_best_baseline']:.3f} [{clow:.3f}, {chigh:.3f}] | "
            f"{spread_skill('diffusion_ens_mean')} | {spread_skill('cokriging')} | "
            f"{model / classical[best]:.3f} (`{best}` {classical[best]:.3f}) |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    args = parser.parse_args()
    labels = {("temp_v1", "eval"): "`temp_v1` (92 m)", ("eo_4band", "eval"): "`eo_4band` (3 bands pooled)",
              ("temp_v1", "eval_real"): "sim-to-real `temp_v1`", ("eo_4band", "eval_real"): "sim-to-real `eo_4band`"}
    for (variant, kind), label in labels.items():
        folder = args.results_dir / variant / kind
        if (folder / "metrics.json").is_file():
            print("\n".join(rows_of(folder, label)))


if __name__ == "__main__":
    main()
