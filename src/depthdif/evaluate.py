"""The evaluation protocol: the model and every baseline on the same hidden ocean pixels of the val split.

For each occlusion level the val patches get masks fixed by seed (the val dataset is deterministic), so
every method sees the same observations. Scores are pooled over hidden ocean pixels, in °C, per band
(see depthdif.metrics). Outputs: metrics.csv (contract columns + spread), metrics.json (headline summary),
figures/*.png and reconstruction.nc (one val month rebuilt over the whole exported region).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from depthdif.atomic import atomic_to_csv, atomic_write_text
from depthdif.baselines import (
    BaselineUnavailable,
    baseline_params_from_config,
    climatology,
    climatology_history,
    dineof_fill,
    load_history,
    run_baseline,
)
from depthdif.config import deep_merge
from depthdif.inference import sample_celsius
from depthdif.metrics import ScoreAccumulator
from depthdif.normalization import temperature_denormalize

log = logging.getLogger(__name__)

PER_PATCH_BASELINES = ("mean_fill", "nearest", "linear", "idw", "biharmonic", "oi")
ENSEMBLE_MEAN, SINGLE_SAMPLE = "diffusion_ens_mean", "diffusion_sample"
SWEEP_ENSEMBLE = 4  # members per input in the DDIM-steps sweep (the sweep compares steps, not ensembles)
SWEEP_BATCHES = 1  # one loader batch of patches: the sweep runs up to 250 steps, the costliest part on a CPU


@dataclass
class EvalItems:
    """The val patches of one occlusion level as °C arrays; NaN on land, obs NaN where hidden."""

    truth: np.ndarray  # (P, C, H, W)
    observed: np.ndarray  # (P, C, H, W)
    ocean: np.ndarray  # (P, C, H, W) bool
    eo: np.ndarray | None  # (P, H, W) °C
    sample_ids: list[str]
    batches: list[dict] = field(repr=False, default_factory=list)

    @property
    def hidden(self) -> np.ndarray:
        return self.ocean & ~np.isfinite(self.observed)


def band_depths_of(index: pd.DataFrame, config: Mapping, variant: str) -> list[float]:
    """Depth (m) of each target band, from the index's depth_values column."""
    depths = [float(v) for v in str(index["depth_values"].iloc[0]).split(";")]
    if variant == "temp_v1":
        return [depths[config["dataset"]["temp_v1_band"]]]
    return depths[1:]


def select_val_rows(index: pd.DataFrame, max_patches: int, seed: int) -> pd.DataFrame:
    """Val rows of whole locations (every month of a place), until ``max_patches`` would be exceeded.

    Whole locations keep the time stacks DINEOF needs and the other years climatology needs.
    """
    val = index[index["split"] == "val"]
    if val.empty:
        raise ValueError("the split index has no val rows; check split.val_fraction and rerun split.")
    locations = val.groupby(["y0", "x0"]).size().reset_index(name="count")
    order = np.random.default_rng(seed).permutation(len(locations))
    chosen, total = [], 0
    for i in order:
        count = int(locations["count"].iloc[i])
        if chosen and total + count > max_patches:
            continue
        chosen.append((int(locations["y0"].iloc[i]), int(locations["x0"].iloc[i])))
        total += count
    keys = set(chosen)
    rows = val[[(y, x) in keys for y, x in zip(val["y0"], val["x0"], strict=True)]]
    return rows.sort_values(["y0", "x0", "date"]).reset_index(drop=True)


def gather_items(dataset, batch_size: int) -> EvalItems:
    """Run the val dataset once: contract batches for the model and °C arrays for the baselines."""
    from depthdif.datasets import collate

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                                         collate_fn=collate)
    truths, observed, oceans, eos, ids, batches = [], [], [], [], [], []
    for batch in loader:
        ocean = batch["land_mask"].numpy() > 0
        valid = (batch["valid_mask"].numpy() > 0) & ocean
        truth = np.where(ocean, temperature_denormalize(batch["y"].numpy().astype(np.float64)), np.nan)
        truths.append(truth)
        observed.append(np.where(valid, truth, np.nan))
        oceans.append(ocean)
        if "eo" in batch:
            eo = temperature_denormalize(batch["eo"].numpy()[:, 0].astype(np.float64))
            eos.append(np.where(ocean.any(axis=1), eo, np.nan))
        ids.extend(batch["info"]["sample_id"])
        batches.append(batch)
    return EvalItems(
        truth=np.concatenate(truths), observed=np.concatenate(observed), ocean=np.concatenate(oceans),
        eo=np.concatenate(eos) if eos else None, sample_ids=list(ids), batches=batches,
    )


def score_diffusion(module, items: EvalItems, fraction: float, depths: list[float], scores: ScoreAccumulator,
                    ensemble_size: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    """Ensemble (mean, CRPS, spread/skill) and one single member of the model; predictions for the figures."""
    means, stds, singles = [], [], []
    start = 0
    for batch in tqdm(items.batches, desc=f"diffusion @ {fraction}", unit="batch", leave=False):
        mean, std, members = sample_celsius(module, batch, ensemble_size, steps, seed=seed + start)
        size = mean.shape[0]
        truth, hidden = items.truth[start : start + size], items.hidden[start : start + size]
        for b, depth in enumerate(depths):
            for i in range(size):
                ocean_members = np.nan_to_num(members[i, :, b])  # land is outside the region anyway
                scores.add(ENSEMBLE_MEAN, b, fraction, ocean_members, np.nan_to_num(truth[i, b]), hidden[i, b], depth)
                scores.add(SINGLE_SAMPLE, b, fraction, ocean_members[0], np.nan_to_num(truth[i, b]), hidden[i, b],
                           depth)
        means.append(mean)
        stds.append(std)
        singles.append(members[:, 0])
        start += size
    return {"mean": np.concatenate(means), "std": np.concatenate(stds), "single": np.concatenate(singles)}


def run_per_patch_baselines(items: EvalItems, variant: str, fraction: float, depths: list[float],
                            scores: ScoreAccumulator, params: dict) -> dict[str, np.ndarray]:
    """Every per-patch baseline on every patch and band; returns their predictions (NaN where unavailable)."""
    names = list(PER_PATCH_BASELINES) + (["eo_regression_oi"] if variant == "eo_4band" else [])
    predictions = {name: np.full(items.truth.shape, np.nan) for name in names}
    for i in tqdm(range(items.truth.shape[0]), desc=f"baselines @ {fraction}", unit="patch", leave=False):
        for b, depth in enumerate(depths):
            eo = None if items.eo is None else items.eo[i]
            for name in names:
                try:
                    pred = run_baseline(name, items.observed[i, b], items.ocean[i, b], eo=eo, **params)
                except BaselineUnavailable:
                    scores.add_unavailable(name, b, fraction, depth)
                    continue
                predictions[name][i, b] = pred
                scores.add(name, b, fraction, pred, items.truth[i, b], items.hidden[i, b], depth)
    return predictions


def run_climatology(items: EvalItems, index: pd.DataFrame, patches_dir: Path, channels: list[int], fraction: float,
                    depths: list[float], scores: ScoreAccumulator) -> np.ndarray:
    """Same place, same calendar month, other years (information the model does NOT get)."""
    out = np.full(items.truth.shape, np.nan)
    for i, sample_id in enumerate(items.sample_ids):
        same_month, other_months = climatology_history(index, sample_id)
        for b, (channel, depth) in enumerate(zip(channels, depths, strict=True)):
            try:
                pred = climatology(
                    load_history(same_month, channel, patches_dir) if len(same_month) else None,
                    items.ocean[i, b], obs=items.observed[i, b],
                    history_other_months=load_history(other_months, channel, patches_dir) if len(other_months) else None,
                )
            except BaselineUnavailable:
                scores.add_unavailable("climatology", b, fraction, depth)
                continue
            out[i, b] = pred
            scores.add("climatology", b, fraction, pred, items.truth[i, b], items.hidden[i, b], depth)
    return out


def run_dineof(items: EvalItems, rows: pd.DataFrame, fraction: float, depths: list[float],
               scores: ScoreAccumulator, seed: int, max_modes: int) -> np.ndarray:
    """The published peer (pydineof) on the time stack of each val location, band by band."""
    out = np.full(items.truth.shape, np.nan)
    positions = {sid: i for i, sid in enumerate(items.sample_ids)}
    for _, group in rows.groupby(["y0", "x0"]):
        members = [positions[s] for s in group.sort_values("date")["sample_id"] if s in positions]
        for b, depth in enumerate(depths):
            ocean = items.ocean[members, b].all(axis=0)
            try:
                filled = dineof_fill(items.observed[members, b], ocean, max_modes=max_modes, seed=seed)
            except BaselineUnavailable as why:
                log.info("dineof skipped at %s band %d: %s", tuple(group.iloc[0][["y0", "x0"]]), b, why)
                scores.add_unavailable("dineof", b, fraction, depth)
                continue
            for k, i in enumerate(members):
                region = items.hidden[i, b] & ocean
                out[i, b] = filled[k]
                scores.add("dineof", b, fraction, filled[k], items.truth[i, b], region, depth)
    return out


def steps_sweep(module, items: EvalItems, depths: list[float], steps_list: list[int], max_batches: int,
                seed: int) -> pd.DataFrame:
    """RMSE of the ensemble mean against the number of DDIM steps (same inputs, same seed)."""
    rows = []
    for steps in steps_list:
        sweep = ScoreAccumulator()
        for k, batch in enumerate(items.batches[:max_batches]):
            mean, _, _ = sample_celsius(module, batch, SWEEP_ENSEMBLE, steps, seed=seed + k)
            start = sum(len(b["x"]) for b in items.batches[:k])
            for i in range(mean.shape[0]):
                for b, depth in enumerate(depths):
                    sweep.add(ENSEMBLE_MEAN, b, 0.0, mean[i, b], items.truth[start + i, b],
                              items.hidden[start + i, b], depth)
        for b, depth in enumerate(depths):
            rows.append({"steps": steps, "band": b, "depth_m": depth,
                         "rmse_c": sweep.score(ENSEMBLE_MEAN, b, 0.0).rmse_c})
    return pd.DataFrame(rows)


def summarise(metrics: pd.DataFrame, variant: str, seconds: float, n_patches: int) -> dict:
    """Headline: per occlusion level, the model's RMSE next to the best baseline's (pooled over bands)."""
    pooled = metrics.assign(sse=metrics["rmse_c"] ** 2 * metrics["n_pixels"]).groupby(
        ["method", "mask_fraction"], as_index=False)[["sse", "n_pixels"]].sum()
    pooled["rmse_c"] = np.sqrt(pooled["sse"] / pooled["n_pixels"].clip(lower=1))
    headline = []
    for fraction, group in pooled.groupby("mask_fraction"):
        group = group[group["n_pixels"] > 0]
        model = group[group["method"] == ENSEMBLE_MEAN]["rmse_c"]
        others = group[~group["method"].str.startswith("diffusion") & (group["method"] != "climatology")]
        best = others.loc[others["rmse_c"].idxmin()] if len(others) else None
        headline.append({
            "mask_fraction": float(fraction),
            "diffusion_ens_mean_rmse_c": float(model.iloc[0]) if len(model) else None,
            "best_baseline": None if best is None else str(best["method"]),
            "best_baseline_rmse_c": None if best is None else float(best["rmse_c"]),
            "model_over_best_baseline": None if best is None or not len(model) else float(model.iloc[0] / best["rmse_c"]),
        })
    return {"variant": variant, "val_patches": n_patches, "seconds": round(seconds, 1),
            "note": "climatology uses other years' full fields (information the model does not get) and is "
                    "left out of best_baseline",
            "headline": headline}


def run_evaluation(config: Mapping, variant: str, model_ckpt: Path, out_dir: Path) -> Path:
    """The whole protocol for one variant; returns the metrics.csv path."""
    from depthdif.datasets import PatchDataset
    from depthdif.models.module import load_model
    from depthdif.plots import plot_rmse_vs_occlusion, plot_rmse_vs_steps
    from depthdif.reconstruct_month import reconstruct_month

    started = time.perf_counter()
    settings = config["evaluate"]
    seed = int(config["seed"])
    torch.set_num_threads(int(config["train"]["threads"]))
    index_csv = Path(config["data_dir"]) / "patches" / "patch_index_split.csv"
    index = pd.read_csv(index_csv)
    rows = select_val_rows(index, settings["max_patches"], seed)
    rows.attrs["index_dir"] = str(index_csv.parent)
    eval_config = deep_merge(config, {"dataset": {"return_info": True, "return_coords": True}})
    depths = band_depths_of(index, config, variant)
    channels = [config["dataset"]["temp_v1_band"]] if variant == "temp_v1" else list(range(1, len(depths) + 1))
    module = load_model(model_ckpt, variant=variant, config=config)
    log.info("evaluating %s on %d val patches at occlusion %s", variant, len(rows), settings["mask_fractions"])
    params = baseline_params_from_config(config)
    scores = ScoreAccumulator()
    figures_dir = Path(out_dir) / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    figure_fraction = min(settings["mask_fractions"], key=lambda f: abs(f - 0.95))
    sweep_items = None
    for fraction in settings["mask_fractions"]:
        dataset = PatchDataset(rows, eval_config, split="val", variant=variant, mask_fraction=fraction, seed=seed)
        items = gather_items(dataset, config["loader"]["batch_size"])
        model = score_diffusion(module, items, fraction, depths, scores, settings["ensemble_size"],
                                settings["sampling_steps"], seed)
        # one BLAS thread: the many small OI solves run 5-30x slower with threads fighting over 2 cores
        with threadpool_limits(limits=1, user_api="blas"):
            baselines = run_per_patch_baselines(items, variant, fraction, depths, scores, params)
            baselines["climatology"] = run_climatology(items, index, index_csv.parent, channels, fraction, depths,
                                                       scores)
            if settings["dineof"]:
                baselines["dineof"] = run_dineof(items, rows, fraction, depths, scores, seed,
                                                 settings["dineof_max_modes"])
        if fraction == figure_fraction:
            sweep_items = items
            _example_figures(items, model, baselines, depths, fraction, settings["figure_patches"], figures_dir)
    metrics = scores.to_frame(spread=True)
    sweep = steps_sweep(module, sweep_items, depths, settings["steps_sweep"], max_batches=SWEEP_BATCHES, seed=seed)
    plot_rmse_vs_occlusion(metrics, figures_dir / "rmse_vs_occlusion.png")
    plot_rmse_vs_steps(sweep, figures_dir / "rmse_vs_ddim_steps.png")
    atomic_to_csv(sweep, Path(out_dir) / "ddim_steps.csv")
    # one val month rebuilt over the whole exported region
    reconstruct_month(module, config, index, variant, int(rows["date"].iloc[0]), Path(out_dir) / "reconstruction.nc",
                      seed=seed)
    summary = summarise(metrics, variant, time.perf_counter() - started, len(rows))
    atomic_write_text(Path(out_dir) / "metrics.json", json.dumps(summary, indent=2) + "\n")
    metrics_csv = Path(out_dir) / "metrics.csv"
    atomic_to_csv(metrics, metrics_csv)  # last: the file Snakemake waits for
    log.info("headline: %s", json.dumps(summary["headline"]))
    return metrics_csv


def _example_figures(items: EvalItems, model: dict, baselines: dict, depths: list[float], fraction: float,
                     count: int, figures_dir: Path) -> None:
    from depthdif.plots import plot_example

    shown = ["oi", "biharmonic", "eo_regression_oi", "dineof"]
    for i in range(min(count, items.truth.shape[0])):
        predictions = {"diffusion mean": model["mean"][i], "diffusion sample": model["single"][i]}
        predictions.update({name: baselines[name][i] for name in shown if name in baselines})
        plot_example(items.truth[i], items.observed[i], predictions, model["std"][i],
                     [f"{d:.1f} m" for d in depths],
                     f"{items.sample_ids[i]}: {fraction:.1%} of ocean pixels hidden",
                     figures_dir / f"example_{i}_{items.sample_ids[i]}.png")
