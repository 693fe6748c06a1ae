"""The evaluation protocol: the model and every baseline on the same hidden ocean pixels of the val split.

For each occlusion level the val patches get masks fixed by seed (the val dataset is deterministic), so every
method sees the same observations. The baselines' predictions come from the file of rule
``baselines_{variant}`` (depthdif.evaluation.baseline_predictions), checked against the items rebuilt here,
or, without the file, are computed in place by the same code; the model and its own first guess and
conditional mean are run here (they depend on the model). Scores are pooled over hidden ocean pixels, in °C,
per band (see depthdif.evaluation.metrics). Outputs: metrics.csv (contract columns + spread + the spectral
scores of depthdif.evaluation.spectra), metrics.json (headline summary), spectra.csv (per-wavenumber power
spectra), ddim_steps.csv (RMSE against sampling steps), figures/*.png and reconstruction.nc (one val month
rebuilt over the whole exported region); their names come from depthdif.layout.EvalFiles.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from depthdif.atomic import atomic_to_csv, atomic_write_text
from depthdif.evaluation.baseline_predictions import (
    InlineBaselines,
    StoredBaselines,
    baseline_context,
    read_val_selection,
    score_baselines,
)
from depthdif.evaluation.metrics import ScoreAccumulator, bootstrap_rmse_ratio
from depthdif.evaluation.passes import (
    CLEAN_SURFACE,
    OCCLUSION,
    PROFILES,
    EvalItems,
    EvalPass,
    evaluation_passes,
    figure_fraction,
    items_config,
    pass_items,
    select_val_rows,  # noqa: F401 (its home until the evaluation became several modules)
    target_depths,
)
from depthdif.evaluation.spectra import merge_spectral_scores, scores_from_table, spectral_table
from depthdif.layout import EvalFiles, data_layout_of
from depthdif.models.samplers import independent_members
from depthdif.reconstruction.inference import (
    conditional_mean_celsius,
    first_guess_celsius,
    inference_device,
    same_levels,
    sample_celsius,
)

log = logging.getLogger(__name__)

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
    from depthdif.data.index import index_depths
    from depthdif.models.module import CheckpointError

    depths = list(index_depths(index))
    trained = (model_settings or {}).get("export", {}).get("depth_values_m")
    if trained and not same_levels(trained, depths):
        raise CheckpointError(
            f"{checkpoint or 'the model'} was trained on levels {list(trained)} m but the patch index "
            f"{index.attrs.get('origin', '')} holds {depths} m; evaluate it on an export of the same levels."
        )
    return target_depths(index, config, variant)


def score_diffusion(module, items: EvalItems, fraction: float, depths: list[float], scores: ScoreAccumulator,
                    ensemble_size: int, steps: int, seed: int) -> dict[str, np.ndarray]:
    """The model's ensemble (mean, CRPS, spread/skill), one member, its conditional mean, and its cokriging first
    guess as a Gaussian posterior (mean, sigma); predictions for the figures.

    Args:
        module: the loaded model (``DepthDifModule``).
        items: the pass's val patches (their ``batches`` are sampled).
        fraction: the pass's level (the ``mask_fraction`` the scores are filed under).
        depths: depth (m) of each target band.
        scores: the accumulator the scores are added to (with each patch's location), in °C.
        ensemble_size: members N per patch.
        steps: sampling steps per member.
        seed: sampling seed of the first batch (batch k uses ``seed`` + its first patch's position).

    Returns:
        °C arrays over the P patches, NaN on land: ``mean`` and ``std`` (P, C, H, W) of the ensemble,
        ``single`` (P, C, H, W) its first member, for a residual model ``cokriging`` and
        ``diffusion_cond_mean`` (P, C, H, W); and ``ranks`` (C, N + 1), the rank histogram (see
        :func:`rank_counts`).
    """
    out: dict[str, list[np.ndarray]] = {"mean": [], "std": [], "single": [], COKRIGING: [], CONDITIONAL_MEAN: [],
                                        "ranks": []}
    start = 0
    antithetic = module.antithetic_members(ensemble_size)
    # the rank histogram needs exchangeable members: with antithetic pairs, one member of each pair (and an odd
    # ensemble's unpaired last one)
    independent = independent_members(ensemble_size, antithetic)
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
                scores.add(ENSEMBLE_MEAN, b, fraction, ocean_members, truth[i, b], hidden[i, b], depth,
                           antithetic=antithetic, **where)
                scores.add(SINGLE_SAMPLE, b, fraction, ocean_members[0], truth[i, b], hidden[i, b], depth, **where)
                if extra:
                    scores.add(COKRIGING, b, fraction, np.nan_to_num(extra[COKRIGING][i, b]), truth[i, b], hidden[i, b],
                               depth, sigma=np.nan_to_num(sigma[i, b]), **where)
                    scores.add(CONDITIONAL_MEAN, b, fraction, np.nan_to_num(extra[CONDITIONAL_MEAN][i, b]),
                               truth[i, b], hidden[i, b], depth, **where)
        out["ranks"].append(rank_counts(members[:, independent], truth, hidden))
        out["mean"].append(mean)
        out["std"].append(std)
        out["single"].append(members[:, 0])
        for name, values in extra.items():
            out[name].append(values)
        start += size
    result = {name: np.concatenate(values) for name, values in out.items() if values and name != "ranks"}
    result["ranks"] = np.sum(out["ranks"], axis=0)
    return result


def rank_counts(members: np.ndarray, truth: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Rank histogram: the truth's rank among the N members at hidden pixels (ties split at random, seed 0).

    Args:
        members: (B, N, C, H, W) ensemble members, °C.
        truth: (B, C, H, W) true field, °C.
        hidden: (B, C, H, W) bool, the scored pixels.

    Returns:
        (C, N + 1) int64 counts per band; a flat histogram means a calibrated ensemble.
    """
    ensemble_size = members.shape[1]
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


def score_clean_surface(module, items: EvalItems, eval_pass: EvalPass, depths: list[float], baselines,
                        settings: Mapping, seed: int) -> dict:
    """``eo_4band`` scored once more with the reanalysis's own (clean) surface field instead of the degraded one.

    The degraded surface (offset, speckle, dropout; fixed by seed) is what a satellite gives and what the
    headline uses; the clean one is what earlier evaluations handed every method, so both are reported: the
    model and its first guess were trained on degraded surfaces, a per-patch regression on a clean surface
    gets the shallow bands almost exactly. Scores the ensemble mean, the cokriging first guess and the
    surface regression + OI, on the same masks as the headline at the pass's level.

    Args:
        module: the loaded model.
        items: the clean-surface pass's items.
        eval_pass: the ``clean_surface`` pass.
        depths: depth (m) of each band.
        baselines: an ``InlineBaselines`` or ``StoredBaselines`` (gives ``eo_regression_oi``).
        settings: ``config["evaluate"]`` (ensemble size, sampling steps).
        seed: the model's sampling seed.

    Returns:
        The ``summarise`` headline of this pass (one entry, the pass's level), with a note.
    """
    scores = ScoreAccumulator()
    stored = baselines.predictions(eval_pass, items)
    score_diffusion(module, items, eval_pass.level, depths, scores, settings["ensemble_size"],
                    settings["sampling_steps"], seed)
    score_baselines(stored, items, eval_pass.level, depths, scores)
    summary = summarise(scores.to_frame(spread=True), "eo_4band", 0.0, items.truth.shape[0], scores=scores)
    return {"note": "the same val patches and masks with the reanalysis's clean surface field (no offset, speckle "
                    "or dropout); methods scored: the diffusion model, its cokriging first guess, eo_regression_oi",
            "headline": summary["headline"]}


def steps_sweep(module, items: EvalItems, depths: list[float], steps_list: list[int], max_batches: int,
                seed: int) -> pd.DataFrame:
    """RMSE of the ensemble mean against the number of DDIM steps (same inputs, same seed).

    Args:
        module: the loaded model.
        items: the val patches of one pass (the first ``max_batches`` of its batches are sampled).
        depths: depth (m) of each target band.
        steps_list: the numbers of sampling steps to compare.
        max_batches: batches of ``items`` to sample.
        seed: sampling seed of the first batch (batch k uses ``seed + k``).

    Returns:
        One row per (steps, band): ``steps``, ``band``, ``depth_m`` (m), ``rmse_c`` (°C) of a
        :data:`SWEEP_ENSEMBLE`-member mean on the hidden ocean.
    """
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

    With the accumulator ``scores`` (its adds given ``location=``), each model/best-baseline ratio gets a 95 %
    percentile interval from a bootstrap over val locations (``*_ci95``; pixels and months of one location are
    correlated, so locations, not pixels, are resampled: depthdif.evaluation.metrics.bootstrap_rmse_ratio) and
    ``n_locations``.  ``per_band`` repeats this per band, with the best baseline chosen per band.

    Args:
        metrics: the long-format scores (metrics.csv columns: ``method``, ``mask_fraction``, ``band``,
            ``depth_m``, ``rmse_c`` in °C, ``n_pixels``).
        variant: ``temp_v1`` or ``eo_4band``.
        seconds: the evaluation's duration, s.
        n_patches: val patches scored.
        scores: the accumulator the rows came from, for the bootstrap intervals; None leaves them out.

    Returns:
        metrics.json's content: ``variant``, ``val_patches``, ``seconds``, ``note`` and ``headline`` (one entry
        per level: the model's RMSE (°C), the best baseline's, their ratios with ``*_ci95``, ``per_band``).
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
    rectangles, no profile density).

    Args:
        metrics: the occlusion levels' rows (contract, spread and spectral columns).
        coverage: their :func:`level_coverage` rows.

    Returns:
        ``metrics`` with ``n_observed``, ``n_patches_unobserved`` (per level and band), ``observations``,
        ``profile_density_factor`` and ``profiles_per_deg2_month`` (NaN) appended.
    """
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
    """The observing-system experiment's outputs.

    Args:
        rows: metrics.csv rows of the profile levels (contract columns first).
        summary: metrics.json's ``profiles`` section.
        locations: location_sums.csv rows of the profile levels (``ScoreAccumulator.location_frame``).
    """

    rows: pd.DataFrame
    summary: dict
    locations: pd.DataFrame



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
        score_level: ``(items, pass, accumulator) -> (model, baselines, predictions)``, run_evaluation's
            scorer of one pass.

    Returns:
        The metrics.csv rows (``mask_fraction`` = hidden share of the ocean scored;
        ``profile_density_factor``, ``profiles_per_deg2_month``) and the metrics.json section (headline per
        density as for the occlusion levels, the unreached bands, the seconds this took).
    """
    started = time.perf_counter()
    argo = float(config["dataset"]["profiles_per_deg2_month"])
    factors = [float(f) for f in config["evaluate"]["profile_density_factors"]]
    log.info("observing-system experiment: profiles at %s x %g per (1°)² a month", factors, argo)
    scores = ScoreAccumulator()
    spectra, coverage, unreached = [], [], []
    for factor in factors:
        eval_pass = EvalPass(PROFILES, factor)
        items = pass_items(eval_pass, rows, eval_config, variant, config["loader"]["batch_size"])
        _, _, predictions = score_level(items, eval_pass, scores)
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
    return ProfileExperiment(rows=out[list(frame.columns) + list(OBSERVING_COLUMNS)], summary=summary,
                             locations=scores.location_frame("profiles"))


def run_evaluation(config: Mapping, variant: str, model_ckpt: Path, out_dir: Path,
                   index_csv: Path | None = None, baselines: Path | None = None) -> Path:
    """Stage entry point of rules ``evaluate_{variant}``, ``evaluate_real_{variant}`` and of
    `depthdif evaluate <variant>`: the whole protocol for one variant.

    Args:
        config: the keys of ``STAGE_READS["evaluate"]`` (depthdif.stage_reads: the rule's params; the full
            config works too).
        variant: ``temp_v1`` or ``eo_4band``.
        model_ckpt: the trained model.
        out_dir: the evaluation folder; the files of ``depthdif.layout.EvalFiles(out_dir)`` are written.
        index_csv: the split index (the one the Snakemake rule declares); default
            ``{data_dir}/patches/patch_index_split.csv``.
        baselines: the file of rule ``baselines_{variant}`` (``run_baselines`` on the same config and
            index); None computes the baselines here with the same code.

    Returns:
        The metrics.csv path (written last).

    Raises:
        CheckpointError: the model does not fit the variant, config or the index's levels.
        BaselinesMismatchError: ``baselines`` was computed from other val observations.
        ValueError: the index has no val rows.
    """
    from depthdif.models.module import load_model

    started = time.perf_counter()
    settings = config["evaluate"]
    torch.set_num_threads(int(config["train"]["threads"]))
    if index_csv is None:
        index_csv = data_layout_of(config).split_index
    index, rows = read_val_selection(config, Path(index_csv))
    eval_config = items_config(config)
    # sampling is as heavy as training: on the device train.accelerator names (a GPU on the SLURM profile)
    module = load_model(model_ckpt, map_location=inference_device(config["train"]["accelerator"]), variant=variant,
                        config=config)
    depths = band_depths_of(index, config, variant, module.settings, model_ckpt)
    passes = evaluation_passes(config, variant)
    if baselines is None:
        source = InlineBaselines(baseline_context(config, variant, index, rows, len(depths)), variant)
    else:
        source = StoredBaselines(Path(baselines), variant, passes, bool(settings["dineof"]))
    log.info("evaluating %s on %d val patches at occlusion %s (baselines %s)", variant, len(rows),
             settings["mask_fractions"], baselines or "computed here")
    files = EvalFiles(Path(out_dir))
    try:
        summary, metrics = _score_passes(module, config, variant, index, rows, eval_config, depths, passes, source,
                                         files, started)
    finally:
        source.close()
    atomic_write_text(files.summary, json.dumps(summary, indent=2) + "\n")
    atomic_to_csv(metrics, files.metrics)  # last: the file Snakemake waits for
    log.info("headline: %s", json.dumps(summary["headline"]))
    return files.metrics


def _score_passes(module, config: Mapping, variant: str, index: pd.DataFrame, rows: pd.DataFrame,
                  eval_config: Mapping, depths: list[float], passes: list[EvalPass], baselines, files: EvalFiles,
                  started: float) -> tuple[dict, pd.DataFrame]:
    """Every pass scored, figures, spectra.csv, ddim_steps.csv and reconstruction.nc written.

    Args:
        module: the loaded model.
        config, variant: as :func:`run_evaluation`.
        index, rows: the split index and the val rows
            (:func:`depthdif.evaluation.baseline_predictions.read_val_selection`).
        eval_config: the items config (:func:`depthdif.evaluation.passes.items_config`).
        depths: depth (m) of each band.
        passes: :func:`depthdif.evaluation.passes.evaluation_passes`.
        baselines: where the baselines' predictions come from (``InlineBaselines`` / ``StoredBaselines``).
        files: the outputs.
        started: ``time.perf_counter()`` at the start of the evaluation.

    Returns:
        metrics.json's summary and metrics.csv's table.
    """
    from depthdif.evaluation.plots import (
        plot_power_spectra,
        plot_rank_histograms,
        plot_rmse_vs_occlusion,
        plot_rmse_vs_profile_density,
        plot_rmse_vs_steps,
    )
    from depthdif.reconstruction.month import reconstruct_month

    settings, seed = config["evaluate"], int(config["seed"])
    batch_size = config["loader"]["batch_size"]
    scores = ScoreAccumulator()
    figures_dir = files.figures
    figures_dir.mkdir(parents=True, exist_ok=True)
    shown_fraction = figure_fraction(settings["mask_fractions"])
    sweep_items = None
    rank_histograms: dict[float, np.ndarray] = {}
    spectra: list[pd.DataFrame] = []  # per-wavenumber PSDs of each occlusion level (evaluation.spectra)
    coverage: list[pd.DataFrame] = []  # observed pixels per level and band (metrics.csv's observing columns)

    def score_level(items: EvalItems, eval_pass: EvalPass, accumulator: ScoreAccumulator
                    ) -> tuple[dict, dict, dict]:
        """Every method on the items of one pass (its level: the key in ``accumulator``); returns the model's
        outputs, the baselines' predictions and every scored method's prediction (°C, (P, C, H, W))."""
        stored = baselines.predictions(eval_pass, items)  # first: a stale baselines file fails before sampling
        model = score_diffusion(module, items, eval_pass.level, depths, accumulator, settings["ensemble_size"],
                                settings["sampling_steps"], seed)
        score_baselines(stored, items, eval_pass.level, depths, accumulator)
        # float64 for the spectra and figures, as the model's predictions
        predicted = {name: pred.values.astype(np.float64) for name, pred in stored.items()}
        predictions = {SINGLE_SAMPLE: model["single"], ENSEMBLE_MEAN: model["mean"], **predicted,
                       **{name: model[name] for name in (COKRIGING, CONDITIONAL_MEAN) if name in model}}
        return model, predicted, predictions

    for eval_pass in (p for p in passes if p.kind == OCCLUSION):
        fraction = eval_pass.level
        items = pass_items(eval_pass, rows, eval_config, variant, batch_size)
        model, predicted, predictions = score_level(items, eval_pass, scores)
        spectra.append(spectral_table(items.truth, items.ocean, predictions, fraction, depths))
        coverage.append(level_coverage(items, fraction))
        rank_histograms[fraction] = model["ranks"]
        if fraction == shown_fraction:
            sweep_items = items
            _example_figures(items, model, predicted, depths, fraction, settings["figure_patches"], figures_dir)
    plot_rank_histograms(rank_histograms, [f"{d:.1f} m" for d in depths], figures_dir / "rank_histogram.png")
    profiles = None
    if any(p.kind == PROFILES for p in passes):
        profiles = profile_experiment(config, variant, rows, eval_config, depths, score_level)
        plot_rmse_vs_profile_density(profiles.rows, figures_dir / "rmse_vs_profile_density.png")
    metrics = scores.to_frame(spread=True)
    located = [scores.location_frame()] + ([profiles.locations] if profiles is not None else [])
    atomic_to_csv(pd.concat(located, ignore_index=True), files.location_sums)
    sweep = steps_sweep(module, sweep_items, depths, settings["steps_sweep"], max_batches=SWEEP_BATCHES, seed=seed)
    plot_rmse_vs_occlusion(metrics, figures_dir / "rmse_vs_occlusion.png")
    plot_rmse_vs_steps(sweep, figures_dir / "rmse_vs_ddim_steps.png")
    atomic_to_csv(sweep, files.ddim_steps)
    spectra_table = pd.concat(spectra, ignore_index=True)
    atomic_to_csv(spectra_table, files.spectra)
    plot_power_spectra(spectra_table, shown_fraction, figures_dir / "power_spectra.png")
    # one val month rebuilt over the whole exported region
    reconstruct_month(module, config, index, variant, int(rows["date"].iloc[0]), files.reconstruction, seed=seed)
    clean = None
    for eval_pass in (p for p in passes if p.kind == CLEAN_SURFACE):
        items = pass_items(eval_pass, rows, eval_config, variant, batch_size)
        clean = score_clean_surface(module, items, eval_pass, depths, baselines, settings, seed)
    summary = summarise(metrics, variant, time.perf_counter() - started, len(rows), scores=scores)
    if clean is not None:
        summary["clean_surface"] = clean
    if profiles is not None:
        summary["profiles"] = profiles.summary
    metrics = merge_spectral_scores(metrics, scores_from_table(spectra_table))  # NaN for non-spectral methods
    metrics = rectangle_rows(metrics, pd.concat(coverage, ignore_index=True))
    if profiles is not None:
        metrics = pd.concat([metrics, profiles.rows], ignore_index=True)
    return summary, metrics


def _example_figures(items: EvalItems, model: dict, baselines: dict, depths: list[float], fraction: float,
                     count: int, figures_dir: Path) -> None:
    from depthdif.evaluation.plots import plot_example

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
