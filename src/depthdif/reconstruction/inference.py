"""Apply a trained model to arrays in °C: build contract batches, sample ensembles, return °C fields.

Used by `depthdif reconstruct` and the evaluation's whole-region reconstruction, where inputs come from
NetCDF grids rather than from the patch datasets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# level matching lives with the depth axes (torch-free, for the data stages); imported from here by the
# model-side callers
from depthdif.cf.axes import DEPTH_TOLERANCE, match_levels, same_levels  # noqa: F401
from depthdif.data.normalization import (
    temperature_denormalize,
    temperature_error_to_celsius,
    temperature_normalize,
)
from depthdif.errors import DepthDifError
from depthdif.models.samplers import ensemble_variance


class DeviceError(DepthDifError, RuntimeError):
    """The configured accelerator is not available on this machine."""


def inference_device(accelerator: str) -> torch.device:
    """The device the evaluation and ``depthdif reconstruct`` sample on, from ``train.accelerator``.

    The model trains where ``train.accelerator`` says (Lightning's names); sampling a 16-member ensemble over
    a thousand 128 px patches is as heavy, so it goes to the same kind of device rather than to the CPU.

    Args:
        accelerator: ``auto`` (a CUDA GPU if there is one, else Apple's MPS, else the CPU), ``gpu``/``cuda``,
            ``mps`` or ``cpu``.

    Returns:
        The torch device.

    Raises:
        DeviceError: ``gpu``/``cuda``/``mps`` asked for and not available, or an accelerator name this code does
            not know.
    """
    name = str(accelerator).lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if name in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"train.accelerator is {accelerator!r} but torch sees no CUDA GPU here (torch {torch.__version__}); "
                "run on a GPU node, or set train.accelerator: cpu (or auto) to sample on the CPU."
            )
        return torch.device("cuda")
    if name == "mps":
        if not has_mps:
            raise DeviceError("train.accelerator is 'mps' but this machine has no Apple MPS device; use cpu or auto.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"train.accelerator {accelerator!r} is not one of auto, gpu, cuda, mps, cpu.")


def on_device(batch: dict, device: torch.device) -> dict:
    """The batch with every tensor moved to ``device`` (other values unchanged).

    A batch already there is returned itself, not a copy: the model caches its first guess on the batch dict
    (``DepthDifModule.first_guess_of``), and the ensemble, the conditional mean and the scores of one batch
    should share one cokriging solve.

    Args:
        batch: a batch of the batch contract (tensors and other values).
        device: the target device.

    Returns:
        ``batch`` itself when every tensor is on ``device``, else a new dict with the tensors moved.
    """
    if all(value.device == device for value in batch.values() if torch.is_tensor(value)):
        return batch
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}


@dataclass
class TileInput:
    """One patch of observations in °C.

    Args:
        observed: (C, H, W) °C, NaN where not observed or land.
        ocean: (C, H, W) bool, True on ocean (for that band's depth).
        eo: (H, W) surface (EO) temperature, °C, NaN on land; eo_4band only, else None.
        date: YYYYMMDD the model is conditioned on.
        lat_centre: latitude of the patch centre, degrees north.
        lon_centre: longitude of the patch centre, degrees east.
        surface: (S, H, W) the model's other surface fields (export.surface_variables, e.g. zos in m), each in
            its own unit, NaN where no value; None (or S = 0) for a model without them.
    """

    observed: np.ndarray
    ocean: np.ndarray
    eo: np.ndarray | None
    date: int
    lat_centre: float
    lon_centre: float
    surface: np.ndarray | None = None


def surface_variables(settings: dict) -> tuple[str, ...]:
    """The surface variables besides the EO band a model is conditioned on.

    Args:
        settings: the checkpoint's settings (:func:`depthdif.models.module.model_settings`).

    Returns:
        ``export.surface_variables`` of an eo_4band model; () for temp_v1 and for checkpoints saved before them.
    """
    from depthdif.models.module import surface_variables_of  # lazy: the module pulls in Lightning

    return surface_variables_of(settings)


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


def target_depths(settings: dict, where: str = "the model") -> list[float]:
    """Depths (m) of the bands the model reconstructs (C of the batch contract); see :func:`band_depths`.

    Args:
        settings: the checkpoint's settings.
        where: the checkpoint, for the error message.

    Returns:
        One depth in metres per target band: the ``dataset.temp_v1_band`` channel's for temp_v1, channels
        1.. for eo_4band.

    Raises:
        CheckpointError: as :func:`band_depths`.
    """
    depths = band_depths(settings, where)
    if settings["variant"] == "temp_v1":
        return [depths[settings["dataset"]["temp_v1_band"]]]
    return depths[1:]


def build_batch(tiles: Sequence[TileInput], settings: dict) -> dict[str, torch.Tensor]:
    """Stack tiles into a batch of the sample contract (normalised, 0 where hidden or land).

    Args:
        tiles: B patches of the same shape.
        settings: the checkpoint's settings (``variant``, ``dataset.first_guess``, surface variables).

    Returns:
        Tensors of the batch contract (:mod:`depthdif.data.dataset`): ``x``, ``valid_mask``, ``land_mask``, ``y``
        (zeros: unknown) (B, C, H, W) float32, ``x`` in z-scores of Kelvin; ``date`` (B,) int64 YYYYMMDD;
        ``coords`` (B, 2) degrees; for eo_4band ``eo`` (B, 1, H, W) z-scores, ``eo_available`` (B, 1) and
        ``surface`` (B, S, H, W) in their own units when the model has surface variables; with
        ``dataset.first_guess`` ``first_guess`` (B, C, H, W) z-scores.

    Raises:
        ValueError: an eo_4band model with surface variables and a tile without (S, H, W) ``surface``.
    """
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
        names = surface_variables(settings)
        if names:
            batch["surface"] = torch.from_numpy(_surface_stack(tiles, names, np.isfinite(eo)))
    if settings["dataset"]["first_guess"]:
        from depthdif.baselines import first_guess_estimate

        def drifts(i: int) -> np.ndarray | None:
            """The dense surface fields of tile ``i`` for the regression: the EO, then the surface variables."""
            if "eo" not in batch:
                return None
            if "surface" not in batch:
                return batch["eo"][i, 0].numpy()
            return np.concatenate([batch["eo"][i].numpy(), batch["surface"][i].numpy()])

        guesses = [
            first_guess_estimate(x[i], valid[i], ocean[i], drifts(i),
                                 length_scale_px=settings["dataset"]["first_guess_length_scale_px"])
            for i in range(len(tiles))
        ]
        batch["first_guess"] = torch.from_numpy(np.stack(guesses))
    return batch


def _surface_stack(tiles: Sequence[TileInput], names: Sequence[str], eo_finite: np.ndarray) -> np.ndarray:
    """(B, S, H, W) float32 ``surface`` of the batch contract: each field in its own unit, 0 where it has no
    value and wherever the EO has none (land), as the training loader writes it.

    Raises:
        ValueError: a tile lacks the S fields (a caller bug: the readers refuse such inputs with a message).
    """
    shape = (len(names), *eo_finite.shape[2:])
    for tile in tiles:
        if tile.surface is None or np.shape(tile.surface) != shape:
            raise ValueError(f"the model takes the surface variables {list(names)}: every tile needs surface fields "
                             f"of shape {shape}, got {None if tile.surface is None else np.shape(tile.surface)}")
    surface = np.stack([np.asarray(t.surface, np.float64) for t in tiles])
    valid = eo_finite & np.isfinite(surface)
    # a cell of the ocean without a value is "no anomaly": the tile's mean of that field, not 0 m (a false
    # signal next to real sea levels); a tile with no value at all has anomaly 0 whatever the constant
    counts = valid.sum((2, 3), keepdims=True)
    means = np.where(valid, surface, 0.0).sum((2, 3), keepdims=True) / np.maximum(counts, 1)
    filled = np.where(valid, surface, np.broadcast_to(means, surface.shape))
    return np.where(eo_finite, filled, 0.0).astype(np.float32)


def sample_celsius(module, batch: dict, ensemble_size: int, steps: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Ensemble of the model in °C, NaN on land.

    Args:
        module: the loaded model (``DepthDifModule``); sampling runs on its device.
        batch: a batch of the batch contract (CPU tensors; moved with :func:`on_device`).
        ensemble_size: members N per patch.
        steps: sampling steps per member.
        seed: seed of the noise, drawn on the CPU (the same ensemble on any device).

    Returns:
        ``(mean, std, members)``: mean and std (B, C, H, W) °C over the members (the std estimated without bias,
        :func:`depthdif.models.samplers.ensemble_variance`), members (B, N, C, H, W) °C.
    """
    # the noise is drawn on the CPU whatever the device (same seed, same ensemble on a GPU or a CPU)
    generator = torch.Generator().manual_seed(seed)
    members_z = module.sample(on_device(batch, module.device), num_samples=ensemble_size, steps=steps,
                              generator=generator)
    members_z = members_z.float().cpu().numpy()
    ocean = batch["land_mask"].numpy()[:, None] > 0
    members = np.where(ocean, temperature_denormalize(members_z), np.nan)
    mean = np.where(ocean[:, 0], temperature_denormalize(members_z.mean(axis=1)), np.nan)
    # unbiased for independent members and for antithetic pairs alike (samplers.ensemble_variance)
    variance = ensemble_variance(members_z, module.antithetic_members(ensemble_size), axis=1)
    std = np.where(ocean[:, 0], temperature_error_to_celsius(np.sqrt(np.maximum(variance, 0.0))), np.nan)
    return mean, std, members


def first_guess_celsius(module, batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """The model's cokriging first guess and its posterior sigma, NaN on land.

    Args:
        module: the loaded model, with a first guess (``dataset.first_guess``).
        batch: a batch of the batch contract.

    Returns:
        ``(guess, sigma)``, (B, C, H, W) float64 °C each; sigma is 0 at observed pixels.
    """
    guess_z, sigma_c = module.first_guess_of(on_device(batch, module.device))
    ocean = batch["land_mask"].numpy() > 0
    guess = np.where(ocean, temperature_denormalize(guess_z.double().cpu().numpy()), np.nan)
    return guess, np.where(ocean, sigma_c.double().cpu().numpy(), np.nan)


def conditional_mean_celsius(module, batch: dict, seed: int = 0) -> np.ndarray:
    """The network's one-call estimate of the conditional mean (see DepthDifModule.conditional_mean).

    Args:
        module: the loaded model, in residual units.
        batch: a batch of the batch contract.
        seed: seed of the noise the network is called on.

    Returns:
        (B, C, H, W) float64 °C, NaN on land.
    """

    generator = torch.Generator().manual_seed(seed)
    estimate = module.conditional_mean(on_device(batch, module.device), generator=generator).double().cpu().numpy()
    return np.where(batch["land_mask"].numpy() > 0, temperature_denormalize(estimate), np.nan)
