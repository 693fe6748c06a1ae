"""The val observations the evaluation scores every method on, one *pass* at a time.

A pass is one way of observing the same val patches:

* ``occlusion``: rectangles hiding ``level`` of the ocean (each of ``evaluate.mask_fractions``);
* ``profiles``: vertical profiles at ``level`` times the Argo density ``dataset.profiles_per_deg2_month``
  (each of ``evaluate.profile_density_factors``; only with ``dataset.observations`` profiles or both);
* ``clean_surface``: ``eo_4band`` only, with ``dataset.eo_degraded_val``: the occlusion level nearest 95 %
  once more with the reanalysis's clean surface field instead of the degraded one.

The masks of a pass are fixed by (seed, sample), never by the order or batching of the samples, so the
baselines rule and the evaluation rule rebuild the same items on their own; :func:`items_fingerprint` lets
the evaluation check that they did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from depthdif.config import deep_merge
from depthdif.data.normalization import temperature_denormalize

OCCLUSION, PROFILES, CLEAN_SURFACE = "occlusion", "profiles", "clean_surface"
FIGURE_FRACTION = 0.95  # the occlusion level of the example figures, the DDIM sweep and the clean-surface pass


@dataclass(frozen=True)
class EvalPass:
    """One set of observations of the val patches.

    Args:
        kind: ``occlusion``, ``profiles`` or ``clean_surface``.
        level: the hidden share of the ocean (``occlusion``, ``clean_surface``) or the profile density factor
            (``profiles``); the ``mask_fraction`` key of the pass's scores.
    """

    kind: str
    level: float

    @property
    def key(self) -> str:
        """A name for files and messages, e.g. ``occlusion_0.95``."""
        return f"{self.kind}_{float(self.level)!r}"


@dataclass
class EvalItems:
    """The val patches of one pass as °C arrays; NaN on land, obs NaN where hidden."""

    truth: np.ndarray  # (P, C, H, W)
    observed: np.ndarray  # (P, C, H, W)
    ocean: np.ndarray  # (P, C, H, W) bool
    # (P, K, H, W): the EO sea-surface temperature (°C), then each export.surface_variables field in its unit
    # (sea-surface height, m); NaN on land: the dense fields eo_regression_oi regresses on
    eo: np.ndarray | None
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


def figure_fraction(mask_fractions: list[float]) -> float:
    """The occlusion level nearest :data:`FIGURE_FRACTION` (figures, DDIM sweep, clean-surface pass)."""
    return min(mask_fractions, key=lambda f: abs(f - FIGURE_FRACTION))


def evaluation_passes(config: Mapping, variant: str) -> list[EvalPass]:
    """Every pass the evaluation of ``variant`` scores, in the order it scores them.

    Args:
        config: reads ``evaluate.mask_fractions``, ``evaluate.profile_density_factors``,
            ``dataset.observations`` and ``dataset.eo_degraded_val``.
        variant: ``temp_v1`` or ``eo_4band``.

    Returns:
        The occlusion levels, then the profile densities (if any), then the clean-surface pass (if any).
    """
    settings, dataset = config["evaluate"], config["dataset"]
    passes = [EvalPass(OCCLUSION, float(f)) for f in settings["mask_fractions"]]
    if dataset["observations"] != "rectangles":
        passes += [EvalPass(PROFILES, float(f)) for f in settings["profile_density_factors"]]
    if variant == "eo_4band" and dataset["eo_degraded_val"]:
        passes.append(EvalPass(CLEAN_SURFACE, float(figure_fraction(settings["mask_fractions"]))))
    return passes


def select_val_rows(index: pd.DataFrame, max_patches: int, seed: int, months_per_location: int | None = None
                    ) -> pd.DataFrame:
    """Val rows of whole locations, until ``max_patches`` would be exceeded.

    A location keeps every month, or, with ``months_per_location``, the same evenly spaced months at every
    location: more independent locations for the same number of patches (the bootstrap intervals of the
    headline ratios resample locations), while DINEOF still gets one common time axis and climatology still
    finds the other years in the full index.

    Args:
        index: the split index (``split``, ``y0``, ``x0``, ``date``).
        max_patches: the most rows to keep (a first location is kept whatever its size).
        seed: orders the locations.
        months_per_location: keep this many evenly spaced months of every location (None: all).

    Returns:
        The chosen rows sorted by ``y0``, ``x0``, ``date``.

    Raises:
        ValueError: the index has no val rows.
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


def items_config(config: Mapping, model_inputs: bool = True) -> dict:
    """``config`` as the val datasets of the evaluation need it: sample ids and coordinates in every batch.

    Args:
        config: the run config (or the subset a stage was given).
        model_inputs: False leaves out what only the model reads (``dataset.first_guess``): the baselines
            rule builds its items from the dataset keys that shape the observations alone.

    Returns:
        A new config dict.
    """
    dataset = {"return_info": True, "return_coords": True}
    if not model_inputs:
        dataset["first_guess"] = False
    return deep_merge(config, {"dataset": dataset})


def pass_dataset(eval_pass: EvalPass, rows: pd.DataFrame, config: Mapping, variant: str):
    """The val ``PatchDataset`` of one pass (masks fixed by ``config["seed"]`` and each sample).

    Args:
        eval_pass: the pass.
        rows: the val index rows (:func:`select_val_rows`, ``attrs["index_dir"]`` set).
        config: an :func:`items_config` config.
        variant: ``temp_v1`` or ``eo_4band``.

    Returns:
        A ``depthdif.data.dataset.PatchDataset``.
    """
    from depthdif.data.dataset import PatchDataset

    seed = int(config["seed"])
    if eval_pass.kind == PROFILES:
        argo = float(config["dataset"]["profiles_per_deg2_month"])
        return PatchDataset(rows, config, split="val", variant=variant, seed=seed,
                            profile_density=argo * eval_pass.level)
    if eval_pass.kind == CLEAN_SURFACE:
        config = deep_merge(config, {"dataset": {"eo_degraded_val": False}})
    return PatchDataset(rows, config, split="val", variant=variant, mask_fraction=eval_pass.level, seed=seed)


def pass_items(eval_pass: EvalPass, rows: pd.DataFrame, config: Mapping, variant: str, batch_size: int,
               keep_batches: bool = True) -> EvalItems:
    """The items of one pass; a profiles pass scores only the bands some profile reached.

    Args:
        eval_pass, rows, config, variant: as :func:`pass_dataset`.
        batch_size: patches per model batch (the items do not depend on it, the model's sampling seeds do).
        keep_batches: keep the contract batches for the model (the baselines need only the arrays).

    Returns:
        The pass's :class:`EvalItems`.
    """
    items = gather_items(pass_dataset(eval_pass, rows, config, variant), batch_size, keep_batches)
    if eval_pass.kind == PROFILES:
        items.scored_bands = items.observed_bands()
    return items


def gather_items(dataset, batch_size: int, keep_batches: bool = True) -> EvalItems:
    """Run the val dataset once: contract batches for the model and °C arrays for the baselines.

    Args:
        dataset: a val ``PatchDataset`` with ``return_info`` on.
        batch_size: patches per batch.
        keep_batches: False drops the batches once their arrays are taken.

    Returns:
        The dataset's :class:`EvalItems`, in the dataset's order.
    """
    from depthdif.data.dataset import collate

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
            fields = temperature_denormalize(batch["eo"].numpy().astype(np.float64))
            if "surface" in batch:
                fields = np.concatenate([fields, batch["surface"].numpy().astype(np.float64)], axis=1)
            eos.append(np.where(ocean.any(axis=1)[:, None], fields, np.nan))
        ids.extend(batch["info"]["sample_id"])
        locations.extend((int(y0), int(x0)) for y0, x0 in zip(batch["info"]["y0"], batch["info"]["x0"], strict=True))
        if keep_batches:
            batches.append(batch)
    return EvalItems(
        truth=np.concatenate(truths), observed=np.concatenate(observed), ocean=np.concatenate(oceans),
        eo=np.concatenate(eos) if eos else None, sample_ids=list(ids), batches=batches, locations=locations,
    )


def items_fingerprint(items: EvalItems) -> dict:
    """What a pass's predictions were computed from: its samples, in order, and a hash of its masks.

    The masks (ocean, observed, scored bands) are hashed rather than the values: they are drawn by integer
    generators and compared exactly, while values could differ in the last bit between machines.

    Args:
        items: a pass's items.

    Returns:
        ``{"sample_ids": [...], "shape": [P, C, H, W], "masks_sha256": hex}``.
    """
    digest = hashlib.sha256()
    observed = items.ocean & np.isfinite(items.observed)
    scored = np.ones(items.truth.shape[:2], bool) if items.scored_bands is None else items.scored_bands
    for mask in (items.ocean, observed, scored):
        digest.update(np.packbits(np.ascontiguousarray(mask, dtype=bool)).tobytes())
    return {"sample_ids": [str(s) for s in items.sample_ids], "shape": [int(n) for n in items.truth.shape],
            "masks_sha256": digest.hexdigest()}


def target_depths(index: pd.DataFrame, config: Mapping, variant: str) -> list[float]:
    """Depth (m) of each target band of ``variant``, from the index's ``depth_values``.

    Args:
        index: the patch index.
        config: reads ``dataset.temp_v1_band``.
        variant: ``temp_v1`` (one band) or ``eo_4band`` (every level below the surface).

    Returns:
        One depth per target band.
    """
    from depthdif.data.index import index_depths

    depths = list(index_depths(index))
    if variant == "temp_v1":
        return [depths[config["dataset"]["temp_v1_band"]]]
    return depths[1:]


def target_channels(config: Mapping, variant: str, n_bands: int) -> list[int]:
    """Exported channel of each target band (the surface, channel 0, is ``eo_4band``'s condition).

    Args:
        config: reads ``dataset.temp_v1_band``.
        variant: ``temp_v1`` or ``eo_4band``.
        n_bands: number of target bands.

    Returns:
        One channel index per target band.
    """
    return [config["dataset"]["temp_v1_band"]] if variant == "temp_v1" else list(range(1, n_bands + 1))
