"""The evaluation protocol: the model and every baseline on the same hidden ocean pixels of the val split.

For each occlusion level the val patches get masks fixed by seed (the val dataset is deterministic), so
every method sees the same observations. Scores are pooled over hidden ocean pixels, in °C, per band
(see depthdif.metrics). Outputs: metrics.csv (contract columns + spread + the spectral scores of
depthdif.spectra), metrics.json (headline summary), spectra.csv (per-wavenumber power spectra),
figures/*.png and reconstruction.nc (one val month rebuilt over the whole exported region).

With ``dataset.observations`` ``profiles`` or ``both`` an observing-system experiment follows the occlusion
levels: the same protocol with vertical profiles at ``evaluate.profile_density_factors`` times the Argo
density (``dataset.profiles_per_deg2_month``), positions fixed by seed and nested (each denser array holds the
sparser one). Its rows in metrics.csv have ``observations`` = profiles, the density in
``profile_density_factor`` and ``profiles_per_deg2_month``, and in ``mask_fraction`` the hidden share of the
ocean they were scored on. A band of a patch that no profile reached is not scored by any method (per-patch
baselines cannot run without an observation); how many there were and the scores of the methods that could
fill them are in metrics.json (``profiles``), with the headline of these levels; the figure is
rmse_vs_profile_density.png.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
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
from depthdif.inference import conditional_mean_celsius, first_guess_celsius, same_levels, sample_celsius
from depthdif.metrics import ScoreAccumulator, bootstrap_rmse_ratio
from depthdif.normalization import temperature_denormalize
from depthdif.spectra import merge_spectral_scores, scores_from_table, spectral_table

log = logging.getLogger(__name__)

PER_PATCH_BASELINES = ("mean_fill", "nearest", "linear", "idw", "biharmonic", "oi")
ENSEMBLE_MEAN, SINGLE_SAMPLE = "diffusion_ens_mean", "diffusion_sample"
CONDITIONAL_MEAN = "diffusion_cond_mean"  # the network's x0 estimate from pure noise (no sampling noise)
COKRIGING = "cokriging"  # the model's trained first guess, scored as a Gaussian posterior
SWEEP_ENSEMBLE = 4  # members per input in the DDIM-steps sweep (the sweep compares steps, not ensembles)
SWEEP_BATCHES = 1  # one loader batch of patches: the sweep runs up to 250 steps, the costliest part on a CPU
# model rows given a ratio to the best baseline in metrics.json: (key prefix, method); rows after the
# first are optional (diffusion_cond_mean appears only where the model provides it)
MODEL_RATIOS = (("model", ENSEMBLE_MEAN), ("cond_mean", "diffusion_cond_mean"))
BOOTSTRAP_RESAMPLES = 2000  # location resamples per ratio interval in metrics.json
# metrics.csv columns after the contract, spread and spectral ones: which observing system a row scores
OBSERVING_COLUMNS = ("observations", "profile_density_factor", "profiles_per_deg2_month", "n_observed",
                     "n_patches_unobserved")


@dataclass
class EvalItems:
    """The val patches of one occlusion level as °C arrays; NaN on land, obs NaN where hidden."""

    truth: np.ndarray  # (P, C, H, W)
    observed: np.ndarray  # (P, C, H, W)
    ocean: np.ndarray  # (P, C, H, W) bool
    eo: np.ndarray | None  # (P, H, W) °C
    sample_ids: list[str]
    batches: list[dict] = field(repr=False, default_factory=list)
    locations: list[tuple[int, int]] = field(default_factory=list)  # (y0, x0) of each patch: the bootstrap unit
    # (P, C) bool: the bands of each patch that are scored; None = all. Profile levels leave out a band that
    # no profile reached: no per-patch baseline can fill it, and scoring only some methods there would
    # compare them on different pixels
    scored_bands: np.ndarray | None = None

    @property
    def hidden(self) -> np.ndarray:
        """(P, C, H, W) bool: the scoring region, hidden ocean pixels of the scored bands."""
        hidden = self.ocean & ~np.isfinite(self.observed)
        return hidden if self.scored_bands is None else hidden & self.scored_bands[:, :, None, None]

    def observed_bands(self) -> np.ndarray:
        """(P, C) bool: the bands of each patch with at least one observed ocean pixel."""
        return (self.ocean & np.isfinite(self.observed)).any(axis=(2, 3))


def band_depths_of(index: pd.DataFrame, config: Mapping, variant: str, model_settings: Mapping | None = None,
                   checkpoint: Path | None = None) -> list[float]:
    """Depth (m) of each target band, from the index's depth_values column, checked against the model's.

    Args:
        index: the patch index evaluated (its ``depth_values``: the levels the patches hold).
        config: the run config (``dataset.temp_v1_band``).
        variant: ``temp_v1`` or ``eo_4band``.
        model_settings: the checkpoint's settings; their ``export.depth_values_m`` (the levels the model was
            trained on) must match the index's by value. A checkpoint without them (format 2) is scored on
            the index's levels, as before: the compatibility check of its config is all there is to go on.
        checkpoint: the checkpoint's path, for the error message.

    Returns:
        One depth in metres per target band.

    Raises:
        CheckpointError: the model was trained on other levels than the index holds.
    """
    from depthdif.datasets import index_depths
    from depthdif.models.module import CheckpointError

    depths = list(index_depths(index))
    trained = (model_settings or {}).get("export", {}).get("depth_values_m")
    if trained and not same_levels(trained, depths):
        raise CheckpointError(
            f"{checkpoint or 'the model'} was trained on levels {list(trained)} m but the patch index "
            f"{index.attrs.get('origin', '')} holds {depths} m; evaluate it on an export of the same levels."
        )
    if variant == "temp_v1":
        return [depths[config["dataset"]["temp_v1_band"]]]
    return depths[1:]


def select_val_rows(index: pd.DataFrame, max_patches: int, seed: int, months_per_location: int | None = None
                    ) -> pd.DataFrame:
    """Val rows of whole locations, until ``max_patches`` would be exceeded.

    A location keeps every month, or, with ``months_per_location``, the same evenly spaced months at every
    location: more independent locations for the same number of patches (the bootstrap intervals of the
    headline ratios resample locations), while DINEOF still gets one common time axis and climatology still
    finds the other years in the full index.
    """
    val = index[index["split"] == "val"]
    if val.empty:
        raise ValueError("the split index has no val rows; check split.val_fraction and rerun split.")
    if months_per_location:
        dates = np.sort(val["date"].unique())
        if months_per_location < len(dates):
            keep = dates[np.linspace(0, len(dates) - 1, int(months_per_location)).round().astype(int)]
            val = val[val["date"].isin(keep)]
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
    truths, observed, oceans, eos, ids, locations, batches = [], [], [], [], [], [], []
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
        locations.extend((int(y0), int(x0)) for y0, x0 in zip(batch["info"]["y0"], batch["info"]["x0"], strict=True))
        batches.append(batch)
    return EvalItems(
        truth=np.concatenate(truths), observed=np.concatenate(observed), ocean=np.concatenate(oceans),
        eo=np.concatenate(eos) if eos else None, sample_ids=list(ids), batches=batches, locations=locations,
    )


def score_diffusion(module, items: EvalItems, fraction: float, depths: list[float], scores: ScoreAccumulator,
                    ensemble_size: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    """The model's ensemble (mean, CRPS, spread/skill), one member, its conditional mean, and its cokriging first
    guess as a Gaussian posterior (mean, sigma); predictions for the figures."""
    out: dict[str, list[np.ndarray]] = {"mean": [], "std": [], "single": [], COKRIGING: [], CONDITIONAL_MEAN: [],
                                        "ranks": []}
    start = 0
    for batch in tqdm(items.batches, desc=f"diffusion @ {fraction}", unit="batch", leave=False):
        mean, std, members = sample_celsius(module, batch, ensemble_size, steps, seed=seed + start)
        size = mean.shape[0]
        truth, hidden = np.nan_to_num(items.truth[start : start + size]), items.hidden[start : start + size]
        extra = {}
        if module.residual:
            guess, sigma = first_guess_celsius(module, batch)
            extra = {COKRIGING: guess, CONDITIONAL_MEAN: conditional_mean_celsius(module, batch, seed=seed + start)}
        for b, depth in enumerate(depths):
            for i in range(size):
                where = {"location": items.locations[start + i]}
                ocean_members = np.nan_to_num(members[i, :, b])  # land is outside the region anyway
                scores.add(ENSEMBLE_MEAN, b, fraction, ocean_members, truth[i, b], hidden[i, b], depth, **where)
                scores.add(SINGLE_SAMPLE, b, fraction, ocean_members[0], truth[i, b], hidden[i, b], depth, **where)
                if extra:
                    scores.add(COKRIGING, b, fraction, np.nan_to_num(extra[COKRIGING][i, b]), truth[i, b], hidden[i, b],
                               depth, sigma=np.nan_to_num(sigma[i, b]), **where)
                    scores.add(CONDITIONAL_MEAN, b, fraction, np.nan_to_num(extra[CONDITIONAL_MEAN][i, b]),
                               truth[i, b], hidden[i, b], depth, **where)
        out["ranks"].append(rank_counts(members, truth, hidden, ensemble_size))
        out["mean"].append(mean)
        out["std"].append(std)
        out["single"].append(members[:, 0])
        for name, values in extra.items():
            out[name].append(values)
        start += size
    result = {name: np.concatenate(values) for name, values in out.items() if values and name != "ranks"}
    result["ranks"] = np.sum(out["ranks"], axis=0)
    return result


def rank_counts(members: np.ndarray, truth: np.ndarray, hidden: np.ndarray, ensemble_size: int) -> np.ndarray:
    """(C, N + 1) counts of the truth's rank among the N members at hidden pixels (ties split at random)."""
    counts = np.zeros((members.shape[2], ensemble_size + 1), dtype=np.int64)
    rng = np.random.default_rng(0)
    for b in range(members.shape[2]):
        region = hidden[:, b]
        ens = np.moveaxis(members[:, :, b], 1, -1)[region]  # (n, N)
        y = truth[:, b][region][:, None]
        below = (ens < y).sum(1)
        ties = (ens == y).sum(1)
        ranks = below + np.floor(rng.random(len(below)) * (ties + 1)).astype(np.int64)
        counts[b] += np.bincount(ranks, minlength=ensemble_size + 1)
    return counts


def run_per_patch_baselines(items: EvalItems, variant: str, fraction: float, depths: list[float],
                            scores: ScoreAccumulator, params: dict,
                            names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Every per-patch baseline (or those in ``names``) on every patch and band; returns their predictions
    (NaN where unavailable)."""
    if names is None:
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
                scores.add(name, b, fraction, pred, items.truth[i, b], items.hidden[i, b], depth,
                           location=items.locations[i])
    return predictions


def score_clean_surface(module, rows: pd.DataFrame, eval_config: Mapping, fraction: float, depths: list[float],
                        params: dict) -> dict:
    """``eo_4band`` scored once more with the reanalysis's own (clean) surface field instead of the degraded one.

    The degraded surface (offset, speckle, dropout; fixed by seed) is what a satellite gives and what the
    headline uses; the clean one is what earlier evaluations handed every method, so both are reported: the
    model and its first guess were trained on degraded surfaces, a per-patch regression on a clean surface
    gets the shallow bands almost exactly. Scores the ensemble mean, the cokriging first guess and the
    surface regression + OI, on the same masks as the headline at ``fraction``.

    Returns:
        The ``summarise`` headline of this pass (one entry, ``fraction``), with a note.
    """
    from depthdif.datasets import PatchDataset

    settings, seed = eval_config["evaluate"], int(eval_config["seed"])
    clean_config = deep_merge(eval_config, {"dataset": {"eo_degraded_val": False}})
    dataset = PatchDataset(rows, clean_config, split="val", variant="eo_4band", mask_fraction=fraction, seed=seed)
    items = gather_items(dataset, eval_config["loader"]["batch_size"])
    scores = ScoreAccumulator()
    score_diffusion(module, items, fraction, depths, scores, settings["ensemble_size"], settings["sampling_steps"],
                    seed)
    with threadpool_limits(limits=1, user_api="blas"):
        run_per_patch_baselines(items, "eo_4band", fraction, depths, scores, params, names=["eo_regression_oi"])
    summary = summarise(scores.to_frame(spread=True), "eo_4band", 0.0, len(rows), scores=scores)
    return {"note": "the same val patches and masks with the reanalysis's clean surface field (no offset, speckle "
                    "or dropout); methods scored: the diffusion model, its cokriging first guess, eo_regression_oi",
            "headline": summary["headline"]}


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
            scores.add("climatology", b, fraction, pred, items.truth[i, b], items.hidden[i, b], depth,
                       location=items.locations[i])
    return out


def run_dineof(items: EvalItems, rows: pd.DataFrame, fraction: float, depths: list[float],
               scores: ScoreAccumulator, seed: int, max_modes: int, stack: str = "window") -> np.ndarray:
    """The published peer DINEOF (pydineof) on the val time stacks, band by band.

    Args:
        items: the val patches of this occlusion level (°C; DINEOF sees exactly their observed pixels).
        rows: the val index rows of ``items`` (``sample_id``, ``y0``, ``x0``, ``date``).
        fraction, depths, scores: the occlusion level, band depths (m) and the accumulator to score into.
        seed: chooses DINEOF's cross-validation points.
        max_modes: the most EOF modes DINEOF may retain (``evaluate.dineof_max_modes``).
        stack: ``"window"``: one DINEOF per val location on its own months (``(T, H, W)``);
            ``"locations"``: one DINEOF for all val locations side by side (``(L, T, H, W)``) on the union
            of their months, a month a location lacks entering as an all-missing frame (not scored).

    Returns:
        ``(P, C, H, W)`` °C predictions, NaN on land and where DINEOF could not run.

    ``"window"`` is the default because it measured better on this repo's ocean at every band and
    occlusion (bench/dineof_peer.py): its eddies are independent from place to place, so one matrix for
    all locations needs the sum of their ranks while 24 months allow at most 17 modes.
    """
    if stack not in ("window", "locations"):
        raise ValueError(f"run_dineof: stack must be 'window' or 'locations'; got {stack!r}")
    out = np.full(items.truth.shape, np.nan)
    positions = {sid: i for i, sid in enumerate(items.sample_ids)}
    present = rows[rows["sample_id"].isin(positions)]
    groups = [group for _, group in present.groupby(["y0", "x0"])]
    units = [groups] if stack == "locations" else [[group] for group in groups]
    for unit in units:
        months = sorted(set().union(*(group["date"] for group in unit)))
        slot = {month: t for t, month in enumerate(months)}
        # item index of each (location, month); -1 where a location lacks that month
        members = np.full((len(unit), len(months)), -1)
        for k, group in enumerate(unit):
            for date, sample_id in zip(group["date"], group["sample_id"], strict=True):
                members[k, slot[date]] = positions[sample_id]
        where = [tuple(group.iloc[0][["y0", "x0"]]) for group in unit]
        for b, depth in enumerate(depths):
            ocean = np.stack([items.ocean[row[row >= 0], b].all(axis=0) for row in members])
            observed = np.where(members[..., None, None] >= 0, items.observed[members, b], np.nan)
            try:
                filled = dineof_fill(observed, ocean, max_modes=max_modes, seed=seed)
            except BaselineUnavailable as why:
                log.info("dineof skipped at %s band %d: %s", where if len(where) > 1 else where[0], b, why)
                for _ in unit:
                    scores.add_unavailable("dineof", b, fraction, depth)
                continue
            for k, t in zip(*np.nonzero(members >= 0), strict=True):
                i = members[k, t]
                region = items.hidden[i, b] & ocean[k]
                out[i, b] = filled[k, t]
                scores.add("dineof", b, fraction, filled[k, t], items.truth[i, b], region, depth,
                           location=items.locations[i])
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


def _json_float(value) -> float | None:
    """A finite float, or None (metrics.json stays strict JSON: no NaN)."""
    return float(value) if value is not None and np.isfinite(value) else None


def _ratio_interval(scores: ScoreAccumulator | None, model: str, best: str, fraction: float,
                    band: int | None = None) -> tuple[list, int | None]:
    """95 % interval of RMSE(model) / RMSE(best) from a bootstrap over val locations, and their number.

    ``[None, None], None`` without an accumulator, or when some of the two methods' pixels were scored
    without a location (the interval would then not be that of the reported ratio).
    """
    if scores is None:
        return [None, None], None
    unlocated = scores.unlocated_pixels(model, fraction, band) + scores.unlocated_pixels(best, fraction, band)
    if unlocated:
        log.warning("no location bootstrap for %s / %s at %s (band %s): %d pixels were scored without a location",
                    model, best, fraction, "all" if band is None else band, unlocated)
        return [None, None], None
    sums = scores.paired_location_sums(model, best, fraction, band, shared_only=False)
    _, low, high = bootstrap_rmse_ratio(sums.sse_a, sums.n_a, sums.sse_b, sums.n_b, n_boot=BOOTSTRAP_RESAMPLES,
                                        level=0.95, seed=0)
    return [_json_float(low), _json_float(high)], len(sums.locations)


def _model_vs_best(group: pd.DataFrame, scores: ScoreAccumulator | None, fraction: float,
                   band: int | None) -> dict:
    """Model rows against the best non-oracle baseline of ``group`` (rows with pixels, one band or pooled)."""
    others = group[~group["method"].str.startswith("diffusion") & (group["method"] != "climatology")]
    best = others.loc[others["rmse_c"].idxmin()] if len(others) else None
    entry: dict = {}
    for prefix, method in MODEL_RATIOS:
        model = group[group["method"] == method]["rmse_c"]
        if prefix != "model" and not len(model):
            continue  # optional model rows (e.g. diffusion_cond_mean) appear only when scored
        entry[f"{method}_rmse_c"] = float(model.iloc[0]) if len(model) else None
        if prefix == "model":
            entry["best_baseline"] = None if best is None else str(best["method"])
            entry["best_baseline_rmse_c"] = None if best is None else float(best["rmse_c"])
        ratio = None if best is None or not len(model) else float(model.iloc[0] / best["rmse_c"])
        entry[f"{prefix}_over_best_baseline"] = ratio
        interval, n_locations = ([None, None], None) if ratio is None else _ratio_interval(
            scores, method, str(best["method"]), fraction, band)
        entry[f"{prefix}_over_best_baseline_ci95"] = interval
        if prefix == "model":
            entry["n_locations"] = n_locations
    return entry


def summarise(metrics: pd.DataFrame, variant: str, seconds: float, n_patches: int,
              scores: ScoreAccumulator | None = None) -> dict:
    """Headline: per occlusion level, the model's RMSE next to the best baseline's (pooled over bands).

    With the accumulator ``scores`` (its adds given ``location=``), each model/best-baseline ratio gets a
    95 % percentile interval from a bootstrap over val locations (``*_ci95``; pixels and months of one
    location are correlated, so locations, not pixels, are resampled: depthdif.metrics.bootstrap_rmse_ratio)
    and ``n_locations``.  ``per_band`` repeats this per band, with the best baseline chosen per band.
    """
    pooled = metrics.assign(sse=metrics["rmse_c"] ** 2 * metrics["n_pixels"]).groupby(
        ["method", "mask_fraction"], as_index=False)[["sse", "n_pixels"]].sum()
    pooled["rmse_c"] = np.sqrt(pooled["sse"] / pooled["n_pixels"].clip(lower=1))
    headline = []
    for fraction, group in pooled.groupby("mask_fraction"):
        entry = {"mask_fraction": float(fraction)}
        entry.update(_model_vs_best(group[group["n_pixels"] > 0], scores, float(fraction), None))
        at = metrics[(metrics["mask_fraction"] == fraction) & (metrics["n_pixels"] > 0)]
        entry["per_band"] = [
            {"band": int(band), "depth_m": _json_float(rows["depth_m"].iloc[0]),
             **_model_vs_best(rows, scores, float(fraction), int(band))}
            for band, rows in at.groupby("band")
        ]
        headline.append(entry)
    return {"variant": variant, "val_patches": n_patches, "seconds": round(seconds, 1),
            "note": "climatology uses other years' full fields (information the model does not get) and is "
                    "left out of best_baseline; *_ci95: 95 % percentile interval of the ratio from "
                    f"{BOOTSTRAP_RESAMPLES} bootstrap resamples of val locations (not pixels)",
            "headline": headline}


def level_coverage(items: EvalItems, level: float) -> pd.DataFrame:
    """What one level observed and scored, per band, pooled over its patches.

    Args:
        items: the level's val patches.
        level: the level's key (the occlusion level, or the profile density factor).

    Returns:
        One row per band: ``mask_fraction`` (= ``level``), ``band``, ``n_ocean`` (ocean pixels of the scored
        bands), ``n_hidden`` (the scored pixels), ``n_observed`` (observed ocean pixels) and
        ``n_patches_unobserved`` (patches whose band holds no observation).
    """
    observed = items.ocean & np.isfinite(items.observed)
    reached = observed.any(axis=(2, 3))
    scored = np.ones_like(reached) if items.scored_bands is None else items.scored_bands
    return pd.DataFrame({
        "mask_fraction": float(level),
        "band": np.arange(reached.shape[1]),
        "n_ocean": (items.ocean & scored[:, :, None, None]).sum(axis=(0, 2, 3)),
        "n_hidden": items.hidden.sum(axis=(0, 2, 3)),
        "n_observed": observed.sum(axis=(0, 2, 3)),
        "n_patches_unobserved": (~reached).sum(axis=0),
    })


def rectangle_rows(metrics: pd.DataFrame, coverage: pd.DataFrame) -> pd.DataFrame:
    """The occlusion levels' metrics.csv rows with the :data:`OBSERVING_COLUMNS` appended (``observations`` =
    rectangles, no profile density); ``coverage``: their :func:`level_coverage` rows."""
    counts = coverage[["mask_fraction", "band", "n_observed", "n_patches_unobserved"]]
    out = metrics.merge(counts, on=["mask_fraction", "band"], how="left", validate="many_to_one")
    out = out.assign(observations="rectangles", profile_density_factor=np.nan, profiles_per_deg2_month=np.nan)
    return out[list(metrics.columns) + list(OBSERVING_COLUMNS)]


def unreached_scores(items: EvalItems, predictions: Mapping[str, np.ndarray],
                     depths: list[float]) -> list[dict]:
    """Per band, the patches with no observation of that band (left out of a profile level's scores), and the
    RMSE over their ocean of each method that filled every such pixel (per-patch baselines cannot).

    Args:
        items: a profile level's val patches.
        predictions: method -> (P, C, H, W) °C, NaN where the method gave nothing.
        depths: depth (m) of each band.

    Returns:
        One dict per band: ``band``, ``depth_m``, ``n_patches``, ``n_pixels`` and ``rmse_c`` {method: °C}.
    """
    unreached = ~items.observed_bands()
    out = []
    for b, depth in enumerate(depths):
        region = items.ocean[:, b] & unreached[:, b, None, None]
        truth = items.truth[:, b][region]
        rmse = {}
        for name, pred in predictions.items():
            values = pred[:, b][region]
            if truth.size and np.isfinite(values).all():
                rmse[name] = float(np.sqrt(np.mean((values - truth) ** 2)))
        out.append({"band": b, "depth_m": float(depth), "n_patches": int(unreached[:, b].sum()),
                    "n_pixels": int(truth.size), "rmse_c": rmse})
    return out


@dataclass
class ProfileExperiment:
    """The observing-system experiment's outputs."""

    rows: pd.DataFrame  # metrics.csv rows of the profile levels (contract columns first)
    summary: dict  # metrics.json's "profiles" section


def profile_experiment(config: Mapping, variant: str, rows: pd.DataFrame, eval_config: Mapping,
                       depths: list[float], score_level: Callable) -> ProfileExperiment:
    """Every method at each profile density, ``evaluate.profile_density_factors`` times
    ``dataset.profiles_per_deg2_month``.

    The val patches of the occlusion levels, observed by profiles fixed by (seed, sample) and nested (the
    positions at a density are a subset of those at a higher one, so levels differ only by the added
    profiles). A band of a patch without any profile is not scored (``EvalItems.scored_bands``): every method
    is scored on the same pixels, and what the methods that can fill such bands score there is reported
    apart.

    Args:
        config: the run config.
        variant: ``temp_v1`` or ``eo_4band``.
        rows: the val index rows (as for the occlusion levels).
        eval_config: ``config`` with the val dataset's ``return_info`` and ``return_coords`` on.
        depths: depth (m) of each target band.
        score_level: ``(items, level, accumulator) -> (model, baselines, predictions)``, run_evaluation's
            scorer of one level.

    Returns:
        The metrics.csv rows (``mask_fraction`` = hidden share of the ocean scored;
        ``profile_density_factor``, ``profiles_per_deg2_month``) and the metrics.json section (headline per
        density as for the occlusion levels, the unreached bands, the seconds this took).
    """
    from depthdif.datasets import PatchDataset

    started = time.perf_counter()
    argo = float(config["dataset"]["profiles_per_deg2_month"])
    factors = [float(f) for f in config["evaluate"]["profile_density_factors"]]
    log.info("observing-system experiment: profiles at %s x %g per (1°)² a month", factors, argo)
    scores = ScoreAccumulator()
    spectra, coverage, unreached = [], [], []
    for factor in factors:
        dataset = PatchDataset(rows, eval_config, split="val", variant=variant, seed=int(config["seed"]),
                               profile_density=argo * factor)
        items = gather_items(dataset, config["loader"]["batch_size"])
        items.scored_bands = items.observed_bands()
        _, _, predictions = score_level(items, factor, scores)
        scored = items.scored_bands[:, :, None, None]  # the spectra of the bands the pixel scores cover
        spectra.append(spectral_table(items.truth, items.ocean, {
            name: np.where(scored, pred, np.nan) for name, pred in predictions.items()}, factor, depths))
        coverage.append(level_coverage(items, factor))
        unreached += [{"profile_density_factor": factor, **entry}
                      for entry in unreached_scores(items, predictions, depths)]
    spectral = scores_from_table(pd.concat(spectra, ignore_index=True))
    frame = merge_spectral_scores(scores.to_frame(spread=True), spectral)
    counts = pd.concat(coverage, ignore_index=True)
    seconds = time.perf_counter() - started
    headline = []
    for entry in summarise(frame, variant, seconds, len(rows), scores=scores)["headline"]:
        factor = entry.pop("mask_fraction")
        at = counts[counts["mask_fraction"] == factor]
        headline.append({"profile_density_factor": factor, "profiles_per_deg2_month": argo * factor,
                         "hidden_share": _json_float(at["n_hidden"].sum() / max(int(at["n_ocean"].sum()), 1)),
                         "n_observed": int(at["n_observed"].sum()), **entry})
    out = frame.merge(counts, on=["mask_fraction", "band"], how="left", validate="many_to_one")
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(out["n_ocean"] > 0, out["n_hidden"] / out["n_ocean"], np.nan)
    out = out.assign(observations="profiles", profile_density_factor=out["mask_fraction"],
                     profiles_per_deg2_month=out["mask_fraction"] * argo, mask_fraction=share)
    summary = {
        "profiles_per_deg2_month": argo, "profile_density_factors": factors, "seconds": round(seconds, 1),
        "note": "vertical profiles at multiples of the Argo density, positions fixed by seed and nested; "
                "scored on the hidden ocean of the bands of each patch that at least one profile reached "
                "(the same pixels for every method); 'unreached': per density and band, the patches no "
                "profile reached and the RMSE over them of each method that filled them all; *_ci95 as in "
                "the main headline",
        "headline": headline,
        "unreached": unreached,
    }
    return ProfileExperiment(rows=out[list(frame.columns) + list(OBSERVING_COLUMNS)], summary=summary)


def run_evaluation(config: Mapping, variant: str, model_ckpt: Path, out_dir: Path,
                   index_csv: Path | None = None) -> Path:
    """The whole protocol for one variant; returns the metrics.csv path.

    ``index_csv`` is the split index (the one the Snakemake rule declares); default
    ``{data_dir}/patches/patch_index_split.csv``.
    """
    from depthdif.datasets import PatchDataset
    from depthdif.models.module import load_model
    from depthdif.plots import (
        plot_power_spectra,
        plot_rank_histograms,
        plot_rmse_vs_occlusion,
        plot_rmse_vs_profile_density,
        plot_rmse_vs_steps,
    )
    from depthdif.reconstruct_month import reconstruct_month

    started = time.perf_counter()
    settings = config["evaluate"]
    seed = int(config["seed"])
    torch.set_num_threads(int(config["train"]["threads"]))
    if index_csv is None:
        index_csv = Path(config["data_dir"]) / "patches" / "patch_index_split.csv"
    index_csv = Path(index_csv)
    index = pd.read_csv(index_csv)
    index.attrs["origin"] = str(index_csv)
    rows = select_val_rows(index, settings["max_patches"], seed, settings["months_per_location"])
    rows.attrs["index_dir"] = str(index_csv.parent)
    eval_config = deep_merge(config, {"dataset": {"return_info": True, "return_coords": True}})
    module = load_model(model_ckpt, variant=variant, config=config)
    depths = band_depths_of(index, config, variant, module.settings, model_ckpt)
    channels = [config["dataset"]["temp_v1_band"]] if variant == "temp_v1" else list(range(1, len(depths) + 1))
    log.info("evaluating %s on %d val patches at occlusion %s", variant, len(rows), settings["mask_fractions"])
    params = baseline_params_from_config(config)
    scores = ScoreAccumulator()
    figures_dir = Path(out_dir) / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    figure_fraction = min(settings["mask_fractions"], key=lambda f: abs(f - 0.95))
    sweep_items = None
    rank_histograms: dict[float, np.ndarray] = {}
    spectra: list[pd.DataFrame] = []  # per-wavenumber PSDs of each occlusion level (depthdif.spectra)
    coverage: list[pd.DataFrame] = []  # observed pixels per level and band (metrics.csv's observing columns)

    def score_level(items: EvalItems, level: float, accumulator: ScoreAccumulator) -> tuple[dict, dict, dict]:
        """Every method on the items of one level (``level``: its key in ``accumulator``); returns the model's
        outputs, the baselines' predictions and every scored method's prediction (°C, (P, C, H, W))."""
        model = score_diffusion(module, items, level, depths, accumulator, settings["ensemble_size"],
                                settings["sampling_steps"], seed)
        # one BLAS thread: the many small OI solves run 5-30x slower with threads fighting over 2 cores
        with threadpool_limits(limits=1, user_api="blas"):
            baselines = run_per_patch_baselines(items, variant, level, depths, accumulator, params)
            baselines["climatology"] = run_climatology(items, index, index_csv.parent, channels, level,
                                                       depths, accumulator)
            if settings["dineof"]:
                baselines["dineof"] = run_dineof(items, rows, level, depths, accumulator, seed,
                                                 settings["dineof_max_modes"])
        predictions = {SINGLE_SAMPLE: model["single"], ENSEMBLE_MEAN: model["mean"], **baselines,
                       **{name: model[name] for name in (COKRIGING, CONDITIONAL_MEAN) if name in model}}
        return model, baselines, predictions

    for fraction in settings["mask_fractions"]:
        dataset = PatchDataset(rows, eval_config, split="val", variant=variant, mask_fraction=fraction, seed=seed)
        items = gather_items(dataset, config["loader"]["batch_size"])
        model, baselines, predictions = score_level(items, fraction, scores)
        spectra.append(spectral_table(items.truth, items.ocean, predictions, fraction, depths))
        coverage.append(level_coverage(items, fraction))
        rank_histograms[fraction] = model["ranks"]
        if fraction == figure_fraction:
            sweep_items = items
            _example_figures(items, model, baselines, depths, fraction, settings["figure_patches"], figures_dir)
    plot_rank_histograms(rank_histograms, [f"{d:.1f} m" for d in depths], figures_dir / "rank_histogram.png")
    profiles = None
    if config["dataset"]["observations"] != "rectangles":
        profiles = profile_experiment(config, variant, rows, eval_config, depths, score_level)
        plot_rmse_vs_profile_density(profiles.rows, figures_dir / "rmse_vs_profile_density.png")
    metrics = scores.to_frame(spread=True)
    sweep = steps_sweep(module, sweep_items, depths, settings["steps_sweep"], max_batches=SWEEP_BATCHES, seed=seed)
    plot_rmse_vs_occlusion(metrics, figures_dir / "rmse_vs_occlusion.png")
    plot_rmse_vs_steps(sweep, figures_dir / "rmse_vs_ddim_steps.png")
    atomic_to_csv(sweep, Path(out_dir) / "ddim_steps.csv")
    spectra_table = pd.concat(spectra, ignore_index=True)
    atomic_to_csv(spectra_table, Path(out_dir) / "spectra.csv")
    plot_power_spectra(spectra_table, figure_fraction, figures_dir / "power_spectra.png")
    # one val month rebuilt over the whole exported region
    reconstruct_month(module, config, index, variant, int(rows["date"].iloc[0]), Path(out_dir) / "reconstruction.nc",
                      seed=seed)
    clean = None
    if variant == "eo_4band" and config["dataset"]["eo_degraded_val"]:
        clean = score_clean_surface(module, rows, eval_config, figure_fraction, depths, params)
    summary = summarise(metrics, variant, time.perf_counter() - started, len(rows), scores=scores)
    if clean is not None:
        summary["clean_surface"] = clean
    if profiles is not None:
        summary["profiles"] = profiles.summary
    atomic_write_text(Path(out_dir) / "metrics.json", json.dumps(summary, indent=2) + "\n")
    metrics_csv = Path(out_dir) / "metrics.csv"
    metrics = merge_spectral_scores(metrics, scores_from_table(spectra_table))  # NaN for non-spectral methods
    metrics = rectangle_rows(metrics, pd.concat(coverage, ignore_index=True))
    if profiles is not None:
        metrics = pd.concat([metrics, profiles.rows], ignore_index=True)
    atomic_to_csv(metrics, metrics_csv)  # last: the file Snakemake waits for
    log.info("headline: %s", json.dumps(summary["headline"]))
    return metrics_csv


def _example_figures(items: EvalItems, model: dict, baselines: dict, depths: list[float], fraction: float,
                     count: int, figures_dir: Path) -> None:
    from depthdif.plots import plot_example

    shown = ["oi", "biharmonic", "eo_regression_oi", "dineof"]
    for i in range(min(count, items.truth.shape[0])):
        predictions = {"diffusion mean": model["mean"][i], "diffusion sample": model["single"][i]}
        if COKRIGING in model:
            predictions["cokriging"] = model[COKRIGING][i]
        predictions.update({name: baselines[name][i] for name in shown if name in baselines})
        plot_example(items.truth[i], items.observed[i], predictions, model["std"][i],
                     [f"{d:.1f} m" for d in depths],
                     f"{items.sample_ids[i]}: {fraction:.1%} of ocean pixels hidden",
                     figures_dir / f"example_{i}_{items.sample_ids[i]}.png")
