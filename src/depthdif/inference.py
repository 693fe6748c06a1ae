"""Apply a trained model to arrays in °C: build contract batches, sample ensembles, return °C fields.

Used by `depthdif reconstruct` and the evaluation's whole-region reconstruction, where inputs come from
NetCDF grids rather than from the patch datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from depthdif.normalization import (
    temperature_denormalize,
    temperature_error_to_celsius,
    temperature_normalize,
)


@dataclass
class TileInput:
    """One patch of observations in °C. ``observed``: (C, H, W), NaN where not observed or land."""

    observed: np.ndarray
    ocean: np.ndarray  # (C, H, W) bool
    eo: np.ndarray | None  # (H, W) °C, NaN on land; eo_4band only
    date: int  # YYYYMMDD
    lat_centre: float
    lon_centre: float


def band_depths(settings: dict, where: str = "the model") -> list[float]:
    """Depths (m) of the exported channels a checkpoint was trained on, as read from its training files.

    Args:
        settings: the checkpoint's settings (:func:`depthdif.models.module.model_settings`).
        where: the checkpoint, for the error message.

    Returns:
        One depth in metres per exported channel (channel 0 = the surface/EO channel of eo_4band).

    Raises:
        CheckpointError: the settings hold no depths (a format-2 model.ckpt, or one trained without a patch
            index). Its ``depth_indices`` are positions in the training files' depth axis, and looking them
            up in the 50 GLORYS12 levels is wrong for files holding other levels, so no guess is made.
    """
    export = settings["export"]
    depths = export.get("depth_values_m")
    if not depths:
        from depthdif.models.module import CheckpointError  # lazy: the module pulls in Lightning

        raise CheckpointError(
            f"{where} does not record the depths (m) of its bands (a model.ckpt written before format 3, or "
            f"trained without a patch index): its export.depth_indices {list(export['depth_indices'])} are "
            "positions in its training files' depth axis, which need not be the 50 GLORYS12 levels. Retrain it "
            "with this DepthDif version (training stores the index's depth_values in model.ckpt)."
        )
    return [float(d) for d in depths]


DEPTH_TOLERANCE = 0.02  # a file level within 2 % (+1 cm) of a trained depth counts as that depth


def match_levels(axis: np.ndarray, wanted: Sequence[float]) -> list[int | None]:
    """Position in ``axis`` of the level nearest each wanted depth, or None where none is close enough."""
    axis = np.asarray(axis, dtype=float)
    positions: list[int | None] = []
    for depth in wanted:
        nearest = int(np.argmin(np.abs(axis - depth)))
        close = abs(axis[nearest] - depth) <= DEPTH_TOLERANCE * depth + 0.01
        positions.append(nearest if close else None)
    return positions


def same_levels(trained: Sequence[float], found: Sequence[float]) -> bool:
    """True when ``found`` holds, position by position, the levels ``trained`` (within the match tolerance)."""
    if len(trained) != len(found):
        return False
    return all(abs(f - t) <= DEPTH_TOLERANCE * t + 0.01 for t, f in zip(trained, found, strict=True))


def target_depths(settings: dict, where: str = "the model") -> list[float]:
    """Depths (m) of the bands the model reconstructs (C of the batch contract); see :func:`band_depths`."""
    depths = band_depths(settings, where)
    if settings["variant"] == "temp_v1":
        return [depths[settings["dataset"]["temp_v1_band"]]]
    return depths[1:]


def build_batch(tiles: Sequence[TileInput], settings: dict) -> dict[str, torch.Tensor]:
    """Stack tiles into a batch of the sample contract (normalised, 0 where hidden or land)."""
    ocean = np.stack([t.ocean for t in tiles]).astype(bool)
    observed = np.stack([t.observed for t in tiles])
    valid = np.isfinite(observed) & ocean
    x = np.where(valid, temperature_normalize(np.nan_to_num(observed)), 0.0)
    batch = {
        "x": torch.from_numpy(x.astype(np.float32)),
        "valid_mask": torch.from_numpy(valid.astype(np.float32)),
        "land_mask": torch.from_numpy(ocean.astype(np.float32)),
        "y": torch.zeros(x.shape, dtype=torch.float32),  # unknown; the sampler never reads it
        "date": torch.tensor([t.date for t in tiles], dtype=torch.int64),
        "coords": torch.tensor([[t.lat_centre, t.lon_centre] for t in tiles], dtype=torch.float32),
    }
    if settings["variant"] == "eo_4band":
        eo = np.stack([t.eo for t in tiles])[:, None]
        batch["eo"] = torch.from_numpy(np.nan_to_num(temperature_normalize(eo), nan=0.0).astype(np.float32))
        batch["eo_available"] = torch.ones(len(tiles), 1)
    if settings["dataset"]["first_guess"]:
        from depthdif.baselines import first_guess_estimate

        guesses = [
            first_guess_estimate(x[i], valid[i], ocean[i], batch["eo"][i, 0].numpy() if "eo" in batch else None,
                                 length_scale_px=settings["dataset"]["first_guess_length_scale_px"])
            for i in range(len(tiles))
        ]
        batch["first_guess"] = torch.from_numpy(np.stack(guesses))
    return batch


def sample_celsius(module, batch: dict, ensemble_size: int, steps: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Ensemble of the model in °C: (mean, std, members) with members (B, N, C, H, W), NaN on land."""
    generator = torch.Generator().manual_seed(seed)
    members_z = module.sample(batch, num_samples=ensemble_size, steps=steps, generator=generator)
    members_z = members_z.float().cpu().numpy()
    ocean = batch["land_mask"].numpy()[:, None] > 0
    members = np.where(ocean, temperature_denormalize(members_z), np.nan)
    mean = np.where(ocean[:, 0], temperature_denormalize(members_z.mean(axis=1)), np.nan)
    std = np.where(ocean[:, 0], temperature_error_to_celsius(members_z.std(axis=1)), np.nan)
    return mean, std, members


def first_guess_celsius(module, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """The model's cokriging first guess in °C and its posterior sigma in °C, (B, C, H, W), NaN on land."""
    guess_z, sigma_c = module.first_guess_of(batch)
    ocean = batch["land_mask"].numpy() > 0
    guess = np.where(ocean, temperature_denormalize(guess_z.double().cpu().numpy()), np.nan)
    return guess, np.where(ocean, sigma_c.double().cpu().numpy(), np.nan)


def conditional_mean_celsius(module, batch: dict, seed: int = 0) -> np.ndarray:
    """The network's one-call estimate of the conditional mean (see DepthDifModule.conditional_mean), °C."""
    generator = torch.Generator().manual_seed(seed)
    estimate = module.conditional_mean(batch, generator=generator).double().cpu().numpy()
    return np.where(batch["land_mask"].numpy() > 0, temperature_denormalize(estimate), np.nan)
