"""LightningModule of the conditional diffusion model: training loss, validation RMSE, sampling, saving.

One module serves both variants. The network input is the stack, per the batch contract,
    noisy target (C) | x (C) | valid_mask (C) | land_mask (C) [| eo (1) | eo_available (1) | surface (S)]
    [| first_guess (C)]
where C is the number of target bands; masks stay per band (the system this re-creates collapsed them
into one channel). The loss and every score count hidden ocean pixels ``(1 - valid_mask) * land_mask``.

Working units. Batches arrive as z-scores of Kelvin (std 10.9 K over the globe), but inside a patch the
field varies by ~1 °C, i.e. ~0.1 z: next to unit noise that detail is invisible at almost every noise
level, and a network trained from scratch must first learn to average sparse pixels. So, with
``model.center_on_observations`` (default), the model works on the anomaly from each patch's and band's
mean of observed pixels, in units of ``model.anomaly_scale_c`` °C: the target, the observations, the
first guess and the EO band are shifted and scaled; samples are shifted back. The zero-initialised
network then starts as "mean fill" and only has to learn the spatial structure. Measured on the default
synthetic config, eo_4band, 2 CPU cores, val RMSE of a 10-step DDIM sample (mean fill 0.83 °C): 0.38 °C
at step 200 and 0.39 °C at step 600 with centring; 1.14 °C and 0.81 °C without. The batch contract
is unchanged: this happens inside the module.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from diffusers.utils.torch_utils import randn_tensor

from depthdif.baselines.cokriging import Cokriging, finite_samples
from depthdif.config import section_defaults
from depthdif.data.normalization import Y_STD, temperature_error_to_celsius
from depthdif.errors import DepthDifError
from depthdif.models.diffusion import GaussianDiffusion, loss_region, masked_mse
from depthdif.models.samplers import SAMPLERS, analytic_extra_variance, make_sampler, sample_loop
from depthdif.models.shrinkage import (
    HIDDEN_FRACTION_EDGES,
    SHRINKAGE_TIME_BINS,
    ShrinkageFit,
    shrinkage_factors,
)
from depthdif.models.unet import ConvNeXtUNet, coords_to_unit_sphere, date_to_day_of_year

log = logging.getLogger(__name__)

VARIANTS = ("temp_v1", "eo_4band")
FORMAT_VERSION = 6  # 2: cokriging statistics in the state dict (model.working_units); 3: export.depth_values_m;
# 4: the first guess's per-band mean level (cokriging.band_mean); 5: surface variables (export.surface_variables,
# surface_scale, cokriging slopes per drift field); 6: the fitted shrinkage of the network's output (output_shrinkage)
READABLE_FORMATS = (2, 3, 4, 5, 6)  # a format-2 model has no depths (m) of its bands: see inference.band_depths
# keys of a Lightning checkpoint (last.ckpt, best-*.ckpt): a training resume point, not a model.ckpt
LIGHTNING_KEYS = frozenset({"pytorch-lightning_version", "global_step", "optimizer_states", "loops"})
RESIDUAL_UNITS = "first_guess"
SIGMA_FLOOR_C = 1e-3  # °C: below this the first guess is treated as exact (observed pixels)
X0_ERROR_BINS = 50  # timestep bins of the network's measured x0 error (analytic reverse variance)
RESIDUAL_CLAMP = 10.0  # training residuals beyond +-10 posterior sigmas are clipped (a bad sigma cell)


class BatchContractError(DepthDifError, KeyError):
    """A batch lacks a key (or has a wrong shape) that the model was built to use."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class NonFiniteLossError(DepthDifError, FloatingPointError):
    """Training produced NaN/inf gradients for too many steps in a row; nothing is saved."""


class CheckpointError(DepthDifError, ValueError):
    """A model.ckpt cannot be loaded for the requested variant/config."""


def num_target_bands(config: Mapping, variant: str) -> int:
    """C of the contract: 1 for temp_v1; the exported channels after the surface (EO) one for eo_4band.

    Args:
        config: a validated config (``export.depth_indices``).
        variant: ``temp_v1`` or ``eo_4band``.

    Returns:
        C, the number of target bands.

    Raises:
        CheckpointError: unknown variant.
    """
    if variant == "temp_v1":
        return 1
    if variant == "eo_4band":
        return len(config["export"]["depth_indices"]) - 1
    raise CheckpointError(f"unknown variant {variant!r}; use one of {list(VARIANTS)}.")


def surface_variables_of(settings: Mapping) -> tuple[str, ...]:
    """The dense surface fields besides the EO band that the model is conditioned on.

    Args:
        settings: the model's settings (:func:`model_settings`, or those stored in model.ckpt).

    Returns:
        ``export.surface_variables`` of an eo_4band model (e.g. ``("zos",)``); () for temp_v1 and for a model
        saved before format 5.
    """
    if settings["variant"] != "eo_4band":
        return ()
    return tuple(settings["export"].get("surface_variables") or ())


def input_channels(num_bands: int, variant: str, first_guess: bool, residual: bool = False,
                   num_surface: int = 0) -> int:
    """Channels of the network input stack (see the module docstring).

    Args:
        num_bands: C, the number of target bands.
        variant: ``temp_v1`` or ``eo_4band`` (eo_4band adds ``eo``, ``eo_available`` and the surface fields).
        first_guess: the loader's first guess is an input (``dataset.first_guess``).
        residual: residual units (``model.working_units: first_guess``): the first guess and its posterior
            sigma are inputs.
        num_surface: S, eo_4band's surface variables.

    Returns:
        ``4 C`` (noisy target, x, valid_mask, land_mask), ``+ 2 + S`` for eo_4band, ``+ C`` with a first guess,
        ``+ C`` more in residual units.
    """
    channels = 4 * num_bands
    if variant == "eo_4band":
        channels += 2 + num_surface
    if first_guess or residual:
        channels += num_bands
    if residual:
        channels += num_bands
    return channels


def uses_residual_units(model_config: Mapping) -> bool:
    """Whether the model samples the first guess's correction in units of its posterior sigma.

    Args:
        model_config: ``config["model"]`` (or the model settings of a checkpoint).

    Returns:
        True for ``model.working_units: first_guess``.
    """
    return model_config["working_units"] == RESIDUAL_UNITS


def model_settings(config: Mapping, variant: str, depth_values_m: Sequence[float] | None = None) -> dict:
    """The plain, JSON-able settings that rebuild the network; stored in model.ckpt.

    Args:
        config: the validated run config.
        variant: ``temp_v1`` or ``eo_4band``.
        depth_values_m: depth (m) of each exported channel, as the export read it from the training files
            (the index's ``depth_values``). ``export.depth_indices`` are positions in those files' depth axis,
            which need not be the 50 GLORYS12 levels, so reconstruct matches levels by these values; None
            when unknown (then the model cannot be applied to observation files).

    Returns:
        ``{"model", "dataset", "export", "variant"}``, JSON-able.

    Raises:
        CheckpointError: ``depth_values_m`` does not give one depth per exported channel.
    """
    indices = list(config["export"]["depth_indices"])
    if depth_values_m is not None and len(depth_values_m) != len(indices):
        raise CheckpointError(
            f"{len(depth_values_m)} depth values {list(depth_values_m)} for {len(indices)} exported channels "
            f"(export.depth_indices {indices}); the patch index does not belong to this config: re-export."
        )
    return {
        "model": dict(config["model"]),
        "dataset": {
            "first_guess": bool(config["dataset"]["first_guess"]),
            "return_coords": bool(config["dataset"]["return_coords"]),
            "temp_v1_band": int(config["dataset"]["temp_v1_band"]),
            # the loader's OI first guess (observed_mean units) used this length scale: reconstruct must too
            "first_guess_length_scale_px": float(config["evaluate"]["oi_length_scale_px"]),
        },
        "export": {
            "depth_indices": indices,
            "depth_values_m": None if depth_values_m is None else [float(d) for d in depth_values_m],
            "patch_size": int(config["export"]["patch_size"]),
            "surface_variables": [str(v) for v in config["export"]["surface_variables"]],
        },
        "variant": variant,
    }


def _require(batch: Mapping, key: str, why: str) -> torch.Tensor:
    if key not in batch:
        raise BatchContractError(
            f"batch has no {key!r} ({why}); its keys are {sorted(batch)}. Check the DataModule's variant "
            "and the dataset.* settings against the ones the model was trained with."
        )
    return batch[key]


def residual_loss_weight(sigma2_c: torch.Tensor, region: torch.Tensor, how: str) -> torch.Tensor:
    """Per-pixel weight (B, C, H, W) of the residual model's squared error (``model.residual_loss_weight``).

    Args:
        sigma2_c: the first guess's posterior variance (°C²), 0 where the pixel is known exactly.
        region: 1 on the pixels the loss counts.
        how: ``celsius``: ``sigma2_c``, the error in °C² (the network spends itself where the first guess is
            uncertain, as a pooled RMSE in °C does, and barely sees densely observed patches, whose sigma is
            small); ``patch``: ``sigma2_c`` divided by its mean over each patch's counted pixels, so every
            patch weighs the same whatever its observation density (a scored ratio at 50 % hidden counts as
            much as one at 97.5 %); ``residual``: 1, the plain denoising loss in residual units.

    Returns:
        The weights, 0 where ``sigma2_c`` is 0.
    """
    if how == "celsius":
        return sigma2_c
    if how == "residual":
        return (sigma2_c > 0).to(sigma2_c.dtype)
    counted = sigma2_c * region
    mean = counted.sum((1, 2, 3), keepdim=True) / (region * (sigma2_c > 0)).sum((1, 2, 3), keepdim=True).clamp_min(1.0)
    return sigma2_c / mean.clamp_min(1e-12)


class DepthDifModule(pl.LightningModule):
    """Conditional pixel diffusion model for one variant.

    Args:
        settings: from :func:`model_settings` (model config + the dataset facts the network depends on).
        train_config: ``config['train']`` (optimiser, validation and NaN-handling settings).
        num_bands: C, the number of target bands.

    Raises:
        CheckpointError: unknown variant; residual units (``model.working_units: first_guess``) together with
            ``dataset.first_guess``, or without ``model.parameterization: x0``.
        DiffusionConfigError: a ``model.*`` key the diffusion process does not know.
    """

    def __init__(self, settings: dict, train_config: dict, num_bands: int):
        super().__init__()
        self.save_hyperparameters()
        self.settings = settings
        self.model_config = settings["model"]
        self.train_config = train_config
        self.variant = settings["variant"]
        if self.variant not in VARIANTS:
            raise CheckpointError(f"unknown variant {self.variant!r}; use one of {list(VARIANTS)}.")
        self.num_bands = int(num_bands)
        self.first_guess = bool(settings["dataset"]["first_guess"])
        self.surface_variables = surface_variables_of(settings)
        # the typical size of each surface variable's anomaly over a patch, fitted on the training split
        # (fit_surface_scale): the network sees the fields in these units; 1 until fitted
        self.register_buffer("surface_scale", torch.ones(len(self.surface_variables), dtype=torch.float64))
        mc = self.model_config
        self.residual = uses_residual_units(mc)
        self.cokriging = None
        if self.residual:
            if self.first_guess:
                raise CheckpointError(
                    "model.working_units 'first_guess' computes its own (cokriging) first guess on the device; set "
                    "dataset.first_guess: false (the loader's fixed-length-scale OI) or model.working_units: "
                    "observed_mean."
                )
            if mc["parameterization"] != "x0":
                raise CheckpointError("model.working_units 'first_guess' needs model.parameterization: x0 (its "
                                      "preconditioned denoiser predicts the clean residual).")
            self.cokriging = Cokriging(self.num_bands, int(settings["export"]["patch_size"]),
                                       nugget=float(mc["first_guess_nugget"]),
                                       max_joint_observations=int(mc["first_guess_max_joint_observations"]),
                                       max_observations=int(mc["first_guess_max_observations"]),
                                       surface_smoothing_px=float(mc["first_guess_surface_smoothing_px"]),
                                       num_drifts=1 + len(self.surface_variables))
        # the network's mean squared x0 error by timestep bin (residual units), for the analytic reverse variance;
        # -1 (unmeasured) until measured after training: an untrained network's is 1 - alpha_bar (see x0_error);
        # not NaN, so that equal states compare equal (DDP ranks, checkpoints)
        self.register_buffer("x0_error_table", torch.full((X0_ERROR_BINS,), -1.0, dtype=torch.float64))
        # the factor of the network's correction per timestep bin, hidden-fraction class and band, fitted on
        # training batches after training (fit_output_shrinkage, depthdif.models.shrinkage); 1 until fitted
        self.register_buffer("output_shrinkage", torch.ones(
            (SHRINKAGE_TIME_BINS, len(HIDDEN_FRACTION_EDGES) + 1, self.num_bands), dtype=torch.float64))
        self.net = ConvNeXtUNet(
            in_channels=input_channels(self.num_bands, self.variant, self.first_guess, self.residual,
                                       len(self.surface_variables)),
            out_channels=self.num_bands,
            dim=mc["dim"],
            dim_mults=mc["dim_mults"],
            blocks_per_level=mc["blocks_per_level"],
            expansion=mc["expansion"],
            coords_features=3 if mc["film_coords"] else 0,
            doy_features=2 if mc["film_day_of_year"] else 0,
        )
        self.diffusion = GaussianDiffusion(mc)
        self.channels_last = bool(train_config["channels_last"])
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self._nonfinite_in_a_row = 0
        self._reset_val_sums()

    # ----------------------------------------------------------------- network call
    def setup(self, stage: str) -> None:
        """Lightning hook: compile the network (``train.compile``) and offset the seed per DDP rank.

        Args:
            stage: Lightning's stage (``fit``, ``validate``, ...); only ``fit`` does anything.
        """
        # compile here, after the EMA callback's setup has deep-copied the (uncompiled) module;
        # Module.compile keeps parameter names, so checkpoints stay the same with or without it
        if stage == "fit" and self.train_config["compile"]:
            log.info("compiling the network with torch.compile")
            self.net.compile()
        if stage == "fit" and self._trainer is not None and self.trainer.world_size > 1:
            # seed_everything gives every rank the same seed, so each rank would draw the same noise and
            # timesteps; offset by rank (weights still start equal: DDP broadcasts rank 0's)
            torch.manual_seed(torch.initial_seed() + 1_000_003 * self.global_rank)

    def to_working_units(self, batch: Mapping) -> tuple[dict, torch.Tensor, float]:
        """The batch in working units (model.working_units 'observed_mean', see the module docstring).

        Masks, dates and coords pass through.

        Args:
            batch: a batch of the batch contract (``x``, ``valid_mask``, ``land_mask`` (B, C, H, W) in z-scores of
                Kelvin; ``y``, ``first_guess``, ``eo``, ``surface`` when present).

        Returns:
            ``(work, offset, scale)``: the batch with ``x``, ``y``, ``first_guess``, ``eo`` as anomalies from
            each patch's and band's observed mean times ``scale`` (``surface`` divided by the fitted
            ``surface_scale``); ``offset`` (B, C, 1, 1) that mean in z-scores (0 without
            ``model.center_on_observations``); ``scale`` the factor z-score -> working units (``Y_STD /
            model.anomaly_scale_c``, 1 without centring).

        Raises:
            BatchContractError: the batch lacks a key the model uses.
        """
        return self._observed_mean_units(batch)

    def _observed_mean_units(self, batch: Mapping) -> tuple[dict, torch.Tensor, float]:
        x = _require(batch, "x", "observations")
        if not self.model_config["center_on_observations"]:
            return dict(batch), torch.zeros_like(x[:, :, :1, :1]), 1.0
        scale = float(temperature_error_to_celsius(1.0) / self.model_config["anomaly_scale_c"])
        valid, land = _require(batch, "valid_mask", "per-band mask"), _require(batch, "land_mask", "ocean mask")
        offset = observed_mean(x, valid * land)
        work = dict(batch)
        work["x"] = (x - offset) * valid * scale
        if "y" in batch:
            work["y"] = (batch["y"] - offset) * land * scale
        if self.first_guess and "first_guess" in batch:
            work["first_guess"] = (batch["first_guess"] - offset) * land * scale
        if self.variant == "eo_4band" and "eo" in batch:
            eo = batch["eo"]
            eo_ocean = (eo != 0).to(eo.dtype)  # 0 marks land and dropped EO in the contract
            work["eo"] = (eo - observed_mean(eo, eo_ocean)) * eo_ocean * scale
            if self.surface_variables:
                surface = _require(batch, "surface", f"surface variables {list(self.surface_variables)}")
                units = self.surface_scale.to(surface.device, surface.dtype).view(1, -1, 1, 1)
                work["surface"] = (surface - observed_mean(surface, eo_ocean)) * eo_ocean / units
        return work, offset, scale

    def first_guess_of(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """Cokriging first guess and its posterior sigma, from the stored statistics (model.working_units
        'first_guess'); cached on the batch dict when it is a plain dict.

        Args:
            batch: a batch of the batch contract (see :meth:`depthdif.baselines.cokriging.Cokriging.forward`).

        Returns:
            ``(guess, sigma_c)``: (B, C, H, W) z-scores of Kelvin, observed pixels kept; (B, C, H, W) °C, 0 at
            observed pixels and on land.

        Raises:
            CheckpointError: the model has no cokriging first guess.
            FirstGuessNotFitted: its statistics were never fitted.
        """
        if self.cokriging is None:
            raise CheckpointError("this model has no cokriging first guess (model.working_units is not 'first_guess')")
        if "_first_guess" in batch:
            return batch["_first_guess"], batch["_first_guess_sigma_c"]
        guess = self.cokriging(batch)
        if isinstance(batch, dict):
            batch["_first_guess"], batch["_first_guess_sigma_c"] = guess.mean, guess.sigma_c
        return guess.mean, guess.sigma_c

    def to_residual_units(self, batch: Mapping) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """The batch in residual units.

        The target is the correction to the first guess in units of its posterior sigma,
        ``r = (y - first_guess) / sigma`` on hidden ocean pixels (0 elsewhere), so ``y = first_guess + sigma r``;
        the conditions are the observed-mean anomalies of the other mode, plus the first guess and sigma.

        Args:
            batch: a batch of the batch contract (z-scores of Kelvin).

        Returns:
            ``(work, guess, sigma)``: the batch in working units with ``y`` = r (clipped to +-10; 0 where sigma
            is below 1e-3 °C), ``first_guess``, ``first_guess_sigma`` (in ``model.anomaly_scale_c`` units) and
            ``_sigma_weight`` (°C²); the first guess (B, C, H, W) in z-scores; its posterior sigma (B, C, H, W)
            in z-score units (0 where the pixel is known).

        Raises:
            CheckpointError: the model has no cokriging first guess.
            BatchContractError: the batch lacks a key the model uses.
        """
        guess, sigma_c = self.first_guess_of(batch)
        work, offset, scale = self._observed_mean_units(batch)
        land = work["land_mask"]
        work["first_guess"] = (guess - offset) * land * scale
        work["first_guess_sigma"] = sigma_c / float(self.model_config["anomaly_scale_c"])
        sigma = sigma_c / Y_STD
        exact = sigma_c < SIGMA_FLOOR_C
        if "y" in batch:
            residual = (batch["y"] - guess) / sigma.clamp_min(SIGMA_FLOOR_C / Y_STD)
            # a non-finite target stays non-finite (the NaN/inf step guard must see it); finite outliers are clipped
            clipped = torch.where(torch.isfinite(residual), residual.clamp(-RESIDUAL_CLAMP, RESIDUAL_CLAMP), residual)
            work["y"] = torch.where(exact, 0.0, clipped) * land
        work["_sigma_weight"] = torch.where(exact, 0.0, sigma_c**2)
        return work, guess, torch.where(exact, 0.0, sigma)

    def network_input(self, batch: Mapping, noisy: torch.Tensor) -> torch.Tensor:
        """Stack the noisy target with the conditions of the contract, in a fixed order.

        Args:
            batch: the batch in working (or residual) units.
            noisy: (B, C, H, W) noisy target y_t.

        Returns:
            (B, :func:`input_channels`, H, W), channels-last when ``train.channels_last``.

        Raises:
            BatchContractError: the batch lacks a key the model uses.
        """
        parts = [noisy, _require(batch, "x", "observations"), _require(batch, "valid_mask", "per-band mask"),
                 _require(batch, "land_mask", "ocean mask")]
        if self.variant == "eo_4band":
            eo = _require(batch, "eo", "eo_4band surface field")
            available = _require(batch, "eo_available", "eo_4band EO dropout flag")
            parts += [eo, available.reshape(-1, 1, 1, 1).to(eo.dtype).expand_as(eo)]
            if self.surface_variables:
                parts.append(_require(batch, "surface", f"surface variables {list(self.surface_variables)}"))
        if self.first_guess:
            parts.append(_require(batch, "first_guess", "the model was trained with dataset.first_guess"))
        if self.residual:
            parts += [batch["first_guess"], batch["first_guess_sigma"]]
        stacked = torch.cat(parts, dim=1)
        if self.channels_last:
            stacked = stacked.contiguous(memory_format=torch.channels_last)
        return stacked

    def conditioning(self, batch: Mapping) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The FiLM conditions of the network (``model.film_coords``, ``model.film_day_of_year``).

        Args:
            batch: a batch with ``coords`` (B, 2) degrees and/or ``date`` (B,) YYYYMMDD, as the model needs.

        Returns:
            ``(coords, doy)``: (B, 3) unit-sphere position and (B, 2) day-of-year features, each None when off.

        Raises:
            BatchContractError: the batch lacks ``coords`` or ``date`` that the model uses.
        """
        coords = doy = None
        if self.model_config["film_coords"]:
            coords = coords_to_unit_sphere(_require(batch, "coords", "model.film_coords is on"))
        if self.model_config["film_day_of_year"]:
            doy = date_to_day_of_year(_require(batch, "date", "model.film_day_of_year is on"))
        return coords, doy

    def denoise(self, batch: Mapping, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Network output for noisy targets at the given TRAINING timesteps (B,).

        In residual units the output is preconditioned (Karras et al. 2022, "Elucidating the design space of
        diffusion-based generative models", eq. 7, written for the variance-preserving process): the x0
        estimate is ``sqrt(alpha_bar) r_t + sqrt(1 - alpha_bar) F``, whose first term is the optimal estimate for
        a unit-variance Gaussian residual. The network ``F`` starts at zero, so an untrained model samples
        ``r ~ N(0, 1)``: its ensemble mean is the first guess and its spread the first guess's posterior sigma.

        Args:
            batch: the batch in working (or residual) units.
            noisy: (B, C, H, W) noisy target y_t.
            timesteps: (B,) long training timesteps in [0, model.timesteps).

        Returns:
            (B, C, H, W): the x0 estimate (or the noise, for ``model.parameterization: eps``), working units.
        """
        output = self.network_output(batch, noisy, timesteps)
        if not self.residual:
            return output
        alpha_bar = self.diffusion.scheduler.alphas_cumprod.to(noisy.device)[timesteps].view(-1, 1, 1, 1)
        factors = shrinkage_factors(self.output_shrinkage, timesteps, self.diffusion.num_timesteps,
                                    batch["valid_mask"], batch["land_mask"]).to(output.dtype)
        return alpha_bar.sqrt() * noisy + (1 - alpha_bar).sqrt() * factors * output

    def network_output(self, batch: Mapping, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The raw network output F for noisy targets (before preconditioning and shrinkage).

        Args:
            batch: the batch in working (or residual) units.
            noisy: (B, C, H, W) noisy target y_t.
            timesteps: (B,) long training timesteps.

        Returns:
            (B, C, H, W) network output, working units.
        """
        coords, doy = self.conditioning(batch)
        return self.net(self.network_input(batch, noisy), timesteps, coords, doy)

    # ----------------------------------------------------------------- training
    def diffusion_loss(self, batch: Mapping, generator: torch.Generator | None = None) -> torch.Tensor:
        """Masked MSE of one random noise level per sample (the training objective), in working units.

        The denoising objective of Ho et al. (2020, "Denoising diffusion probabilistic models", NeurIPS),
        counted on ``model.loss_region``; in residual units weighted by ``model.residual_loss_weight``.

        Args:
            batch: a batch of the batch contract with ``y``.
            generator: CPU generator of the timesteps and noise (validation), or None.

        Returns:
            The scalar loss (working units squared).

        Raises:
            BatchContractError: the batch lacks ``y`` or another key the model uses.
        """
        _require(batch, "y", "clean target")
        if self.residual:
            batch, _, _ = self.to_residual_units(batch)
        else:
            batch, _, _ = self.to_working_units(batch)
        y = batch["y"]
        land = batch["land_mask"]
        timesteps = self.diffusion.sample_timesteps(y.shape[0], torch.device("cpu"), generator).to(y.device)
        noise = randn_tensor(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        # land stays exactly 0 in the noisy input, as in sampling: the network never sees noise on land
        noisy = self.diffusion.q_sample(y, noise, timesteps) * land
        output = self.denoise(batch, noisy, timesteps)
        if self.residual:
            region = loss_region(batch, self.diffusion.region)
            return masked_mse(output, y, region * residual_loss_weight(batch["_sigma_weight"], region,
                                                                      self.model_config["residual_loss_weight"]))
        return self.diffusion.loss(output, y, noise, batch)

    def training_step(self, batch: Mapping, batch_idx: int) -> torch.Tensor:
        """Lightning hook: :meth:`diffusion_loss` of the batch, logged as ``train/loss``.

        Args:
            batch: a training batch of the batch contract.
            batch_idx: its position in the epoch (unused).

        Returns:
            The scalar loss, NaN included (see :meth:`on_before_optimizer_step`).
        """
        loss = self.diffusion_loss(batch)
        if self._trainer is not None:  # logged even when NaN: a skipped step should show in metrics.csv
            self.log("train/loss", loss, prog_bar=True, batch_size=batch["y"].shape[0])
        # A NaN loss is still returned: its backward gives NaN gradients on every DDP rank alike, and
        # on_before_optimizer_step then skips the update everywhere (returning None on one rank would hang DDP).
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Lightning hook: skip the update when any gradient is NaN/inf; stop when that persists.

        Args:
            optimizer: the optimiser about to step (its gradients are zeroed to skip the update).

        Raises:
            NonFiniteLossError: ``train.max_nonfinite_steps`` steps in a row had non-finite gradients.
        """
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()) if grads else True
        if finite:
            self._nonfinite_in_a_row = 0
            return
        self._nonfinite_in_a_row += 1
        limit = int(self.train_config["max_nonfinite_steps"])
        log.warning(
            "step %d: non-finite loss or gradients, update skipped (%d in a row, limit %d)",
            self.global_step, self._nonfinite_in_a_row, limit,
        )
        if self._nonfinite_in_a_row >= limit:
            raise NonFiniteLossError(
                f"{self._nonfinite_in_a_row} training steps in a row had NaN/inf loss or gradients (limit "
                f"train.max_nonfinite_steps={limit}); stopping without saving a model. Check the patches for "
                "NaN outside land_mask, or lower train.lr."
            )
        optimizer.zero_grad(set_to_none=True)  # params without .grad are left untouched by AdamW

    def configure_optimizers(self):
        """Lightning hook: AdamW (Loshchilov & Hutter 2019, "Decoupled weight decay regularization", ICLR), no
        weight decay on 1-d tensors, and the :func:`warmup_cosine` learning-rate factor.

        Returns:
            Lightning's ``{"optimizer", "lr_scheduler": {"scheduler", "interval": "step"}}``.
        """

        tc = self.train_config
        # no weight decay on biases and norm gains (1-d tensors): decaying them only hurts
        decay = [p for p in self.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tc["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=tc["lr"],
        )
        schedule = warmup_cosine(int(tc["warmup_steps"]), int(tc["max_steps"]), tc["min_lr_ratio"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------- validation
    def _reset_val_sums(self) -> None:
        self._val_sse = torch.zeros(self.num_bands, dtype=torch.float64)
        self._val_fill_sse = torch.zeros(self.num_bands, dtype=torch.float64)
        self._val_count = torch.zeros(self.num_bands, dtype=torch.float64)
        self._val_seen = 0

    def on_validation_epoch_start(self) -> None:
        """Lightning hook: reset the validation sums."""
        self._reset_val_sums()

    def validation_step(self, batch: Mapping, batch_idx: int) -> None:
        """Diffusion loss on every val batch; RMSE (°C) of a short DDIM run on the first train.val_samples.

        Noise comes from a generator seeded by (seed, batch_idx): every validation sees the same noise,
        so changes in val/rmse_c come from the weights, not from luck.

        Args:
            batch: a val batch of the batch contract.
            batch_idx: its position in the val loader (seeds the noise).
        """
        size = batch["y"].shape[0]
        generator = torch.Generator().manual_seed(int(self.train_config["seed"]) * 100003 + batch_idx)
        self.log("val/loss", self.diffusion_loss(batch, generator), sync_dist=True, batch_size=size)
        take = min(size, int(self.train_config["val_samples"]) - self._val_seen)
        if take <= 0:
            return
        subset = slice_batch(batch, take)
        sample = self.sample(subset, 1, int(self.train_config["val_sampling_steps"]), generator=generator)[:, 0]
        region = loss_region(subset, "hidden")
        fill = mean_fill(subset)
        dims = (0, 2, 3)
        self._val_sse += (((sample - subset["y"]) ** 2) * region).sum(dims).double().cpu()
        self._val_fill_sse += (((fill - subset["y"]) ** 2) * region).sum(dims).double().cpu()
        self._val_count += region.sum(dims).double().cpu()
        self._val_seen += take

    def on_validation_epoch_end(self) -> None:
        """Lightning hook: log ``val/rmse_c``, ``val/mean_fill_rmse_c`` and ``val/rmse_c_band<b>`` (°C), summed
        over every DDP rank."""
        sums = torch.stack([self._val_sse, self._val_fill_sse, self._val_count]).to(self.device)
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum") if self._trainer is not None else sums
        sse, fill_sse, count = sums.double().cpu()
        count = count.clamp_min(1.0)
        # identical on every rank after the reduce; sync_dist only averages equal values
        metric = float(temperature_error_to_celsius((sse.sum() / count.sum()).sqrt()))
        self.log("val/rmse_c", metric, sync_dist=True, prog_bar=True)
        self.log("val/mean_fill_rmse_c", float(temperature_error_to_celsius((fill_sse.sum() / count.sum()).sqrt())),
                 sync_dist=True)
        for band in range(self.num_bands):
            self.log(f"val/rmse_c_band{band}", float(temperature_error_to_celsius((sse[band] / count[band]).sqrt())),
                     sync_dist=True)

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        batch: Mapping,
        num_samples: int,
        steps: int,
        sampler: str | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        replace_observed: bool | None = None,
    ) -> torch.Tensor:
        """N samples per input in ONE batched call.

        Observed pixels are merged exactly, land is 0. ``replace_observed`` defaults to
        model.replace_observed. Uses whatever weights the module holds (EMA after load_model or during
        validation). The samplers are diffusers' DDIM (Song et al. 2021, "Denoising diffusion implicit models",
        ICLR) and DDPM (Ho et al. 2020) schedulers (:mod:`depthdif.models.samplers`); re-imposing the noised
        observations at every step is RePaint's (Lugmayr et al. 2022, CVPR) conditioning.

        Args:
            batch: a batch of the batch contract (``x``, ``valid_mask``, ``land_mask`` (B, C, H, W), z-scores of
                Kelvin, and the conditions the model uses).
            num_samples: N, members per input.
            steps: sampling steps (1 .. model.timesteps).
            sampler: ``ddim`` or ``ddpm``; default ``model.sampler``.
            eta: DDIM stochasticity (0 = deterministic).
            generator: CPU generator of the noise (the same seed gives the same samples on any device).
            replace_observed: re-impose the noised observations before each step; default
                ``model.replace_observed`` (residual units never do: the first guess honours them).

        Returns:
            (B, N, C, H, W) samples in z-scores of Kelvin, observed pixels exact, 0 on land.

        Raises:
            ValueError: unknown sampler.
            DiffusionConfigError: ``steps`` outside 1 .. model.timesteps.
            BatchContractError: the batch lacks a key the model uses.
        """
        sampler = sampler or self.model_config["sampler"]
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler {sampler!r} is unknown; use one of {list(SAMPLERS)}.")
        x = _require(batch, "x", "observations")
        size = x.shape[0]
        if self.residual:
            return self._sample_residual(batch, int(num_samples), steps, sampler, eta, generator)
        repeated = repeat_batch(batch, int(num_samples))
        work, offset, scale = self.to_working_units(repeated)
        scheduler = make_sampler(sampler, self.model_config, steps, device=x.device)
        if replace_observed is None:
            replace_observed = bool(self.model_config["replace_observed"])
        anomaly = sample_loop(
            lambda noisy, t: self.denoise(work, noisy, t),
            scheduler,
            tuple(work["x"].shape),
            observed=work["x"],
            observed_mask=work["valid_mask"],
            land_mask=work["land_mask"],
            replace_observed=replace_observed,
            eta=eta,
            generator=generator,
            device=x.device,
            members=self._noise_members(num_samples),
        )
        # back to normalised units; observations merged exactly there (no round trip through the scale)
        out = offset + anomaly / scale
        out = (repeated["valid_mask"] * repeated["x"] + (1 - repeated["valid_mask"]) * out) * repeated["land_mask"]
        return out.reshape(size, int(num_samples), *out.shape[1:])

    def _sample_residual(self, batch: Mapping, num_samples: int, steps: int, sampler: str, eta: float,
                         generator: torch.Generator | None) -> torch.Tensor:
        """Residual-units sampling: ``first_guess + sigma * r`` with r from the reverse process (see denoise)."""
        guess, sigma_c = self.first_guess_of(batch)  # once per input, not per member
        repeated = repeat_batch({**batch, "_first_guess": guess, "_first_guess_sigma_c": sigma_c}, num_samples)
        work, guess, sigma = self.to_residual_units(repeated)
        scheduler = make_sampler(sampler, self.model_config, steps, device=guess.device)
        extra = None
        if sampler == "ddpm" and self.model_config["ddpm_variance"] == "analytic":
            extra = analytic_extra_variance(self.diffusion.scheduler.alphas_cumprod, self.x0_error)
        residual = sample_loop(
            lambda noisy, t: self.denoise(work, noisy, t),
            scheduler,
            tuple(guess.shape),
            observed=torch.zeros_like(guess),
            observed_mask=(sigma == 0).to(guess.dtype),
            land_mask=work["land_mask"],
            replace_observed=False,  # the first guess honours the observations; sigma is 0 there
            eta=eta,
            generator=generator,
            device=guess.device,
            extra_variance=extra,
            members=self._noise_members(num_samples),
        )
        out = self._residual_to_field(repeated, guess, sigma, residual)
        return out.reshape(batch["x"].shape[0], num_samples, *out.shape[1:])

    def antithetic_members(self, num_samples: int) -> bool:
        """Whether an ensemble of ``num_samples`` members is drawn in antithetic pairs.

        Args:
            num_samples: N, members per input.

        Returns:
            True with ``model.antithetic_sampling`` and N >= 2: member k + N // 2 is then the partner of member k
            (:func:`depthdif.models.samplers.antithetic_noise`).
        """
        return bool(self.model_config["antithetic_sampling"]) and int(num_samples) >= 2

    def _noise_members(self, num_samples: int) -> int:
        return int(num_samples) if self.antithetic_members(num_samples) else 1

    def x0_error(self, timestep: int) -> float:
        """Mean squared x0 error of the network at a training timestep, in residual units: the measured table
        (:meth:`fit_x0_error`), or ``1 - alpha_bar`` (the untrained, unit-Gaussian value) before it is measured.

        Args:
            timestep: a training timestep in [0, model.timesteps).

        Returns:
            The error, residual units squared (dimensionless).
        """
        value = float(self.x0_error_table[min(X0_ERROR_BINS - 1, timestep * X0_ERROR_BINS // self.diffusion.num_timesteps)])
        if value >= 0:
            return value
        return 1.0 - float(self.diffusion.scheduler.alphas_cumprod[timestep])

    @torch.no_grad()
    def fit_x0_error(self, batches, max_batches: int = 8, seed: int = 0) -> torch.Tensor:
        """Measure the network's mean squared x0 error (residual units, hidden ocean pixels where sigma > 0) in
        each timestep bin on ``batches`` (training data) and store it in ``x0_error_table``.

        The error enters the analytic reverse variance of the ddpm sampler (Bao et al. 2022, "Analytic-DPM").

        Args:
            batches: training batches of the batch contract (with ``y``); samples with NaN/inf on the ocean are
                left out.
            max_batches: batches used.
            seed: seed of the timesteps and noise.

        Returns:
            (X0_ERROR_BINS,) float64, -1 in a bin without pixels.
        """
        generator = torch.Generator().manual_seed(seed)
        total = torch.zeros(X0_ERROR_BINS, dtype=torch.float64)
        count = torch.zeros(X0_ERROR_BINS, dtype=torch.float64)
        width = self.diffusion.num_timesteps // X0_ERROR_BINS
        for k, batch in enumerate(batches):
            if k >= max_batches:
                break
            batch = finite_samples(batch)  # a NaN/inf training patch (skipped in training too) says nothing here
            batch.pop("_dropped")
            if not len(batch["y"]):
                continue
            batch = {key: v.to(self.device) if torch.is_tensor(v) else v for key, v in batch.items()}
            work, _, sigma = self.to_residual_units(batch)
            region = loss_region(work, "hidden") * (sigma > 0)
            y = work["y"]
            for b in range(X0_ERROR_BINS):
                t = b * width + torch.randint(width, (y.shape[0],), generator=generator)
                noise = torch.randn(y.shape, generator=generator).to(y)
                noisy = self.diffusion.q_sample(y, noise, t.to(y.device)) * work["land_mask"]
                error = (self.denoise(work, noisy, t.to(y.device)).float() - y) ** 2 * region
                total[b] += float(error.sum())
                count[b] += float(region.sum())
        table = torch.where(count > 0, total / count.clamp_min(1.0), -1.0)
        self.x0_error_table.copy_(table)
        log.info("network x0 error by timestep (residual units, %d bins): %s ... %s", X0_ERROR_BINS,
                 [round(float(v), 3) for v in table[:3]], [round(float(v), 3) for v in table[-3:]])
        return table

    @torch.no_grad()
    def fit_output_shrinkage(self, batches, max_batches: int = 32, seed: int = 0, x0_error: bool = True
                             ) -> torch.Tensor:
        """Fit the least-squares factor of the network's correction per timestep bin, hidden-fraction class and
        band on ``batches`` (training data) and store it in ``output_shrinkage`` (see
        :mod:`depthdif.models.shrinkage`). Each sample is noised to one timestep drawn uniformly in each bin.
        With ``x0_error`` the same network calls also give the x0 error of the shrunk denoiser by timestep bin
        (``x0_error_table``, as :meth:`fit_x0_error` measures it).

        Args:
            batches: training batches of the batch contract (with ``y``); samples with NaN/inf on the ocean are
                left out.
            max_batches: batches used.
            seed: seed of the timesteps and noise.
            x0_error: also fill ``x0_error_table``.

        Returns:
            (SHRINKAGE_TIME_BINS, classes, C) float64 factors in [0, 2].

        Raises:
            CheckpointError: the model is not in residual units.
        """
        if not self.residual:
            raise CheckpointError("fit_output_shrinkage needs model.working_units 'first_guess'")
        generator = torch.Generator().manual_seed(seed)
        self.output_shrinkage.fill_(1.0)
        fit = ShrinkageFit(self.num_bands)
        total = self.diffusion.num_timesteps
        width = total // SHRINKAGE_TIME_BINS
        alphas = self.diffusion.scheduler.alphas_cumprod
        for k, batch in enumerate(batches):
            if k >= max_batches:
                break
            batch = finite_samples(batch)
            batch.pop("_dropped")
            if not len(batch["y"]):
                continue
            batch = {key: v.to(self.device) if torch.is_tensor(v) else v for key, v in batch.items()}
            work, _, sigma = self.to_residual_units(batch)
            weight = loss_region(work, "hidden") * (sigma > 0) * work["_sigma_weight"]
            y = work["y"]
            for b in range(SHRINKAGE_TIME_BINS):
                t = b * width + torch.randint(width, (y.shape[0],), generator=generator)
                noise = torch.randn(y.shape, generator=generator).to(y)
                noisy = self.diffusion.q_sample(y, noise, t.to(y.device)) * work["land_mask"]
                abar = alphas.to(y.device)[t.to(y.device)].view(-1, 1, 1, 1).to(y.dtype)
                correction = (1 - abar).sqrt() * self.network_output(work, noisy, t.to(y.device)).float()
                fit.add(correction, y - abar.sqrt() * noisy, weight, t, total, work["valid_mask"], work["land_mask"])
        table = fit.factors()
        self.output_shrinkage.copy_(table)
        if x0_error:
            if SHRINKAGE_TIME_BINS != X0_ERROR_BINS:
                raise CheckpointError("the shrinkage and x0-error tables must share their timestep bins")
            self.x0_error_table.copy_(fit.x0_error(table))
        log.info("network correction factor by hidden-fraction class (mean over timestep bins and bands): %s",
                 [round(float(v), 3) for v in table.mean(dim=(0, 2))])
        return table

    @staticmethod
    def _residual_to_field(batch: Mapping, guess: torch.Tensor, sigma: torch.Tensor, residual: torch.Tensor):
        out = guess + sigma * residual
        return (batch["valid_mask"] * batch["x"] + (1 - batch["valid_mask"]) * out) * batch["land_mask"]

    @torch.no_grad()
    def conditional_mean(self, batch: Mapping, generator: torch.Generator | None = None) -> torch.Tensor:
        """The network's own estimate of E[y | observations]: its x0 estimate at the last training timestep, from
        pure noise (one network call; residual units only). Unlike an N-member mean it carries no sampling noise
        (a calibrated N-member mean has sigma^2/N more squared error).

        Args:
            batch: a batch of the batch contract.
            generator: CPU generator of the noise, or None.

        Returns:
            (B, C, H, W) z-scores of Kelvin, observed pixels exact, 0 on land.

        Raises:
            CheckpointError: the model is not in residual units.
        """
        if not self.residual:
            raise CheckpointError("conditional_mean needs model.working_units 'first_guess'")
        work, guess, sigma = self.to_residual_units(batch)
        last = self.diffusion.num_timesteps - 1
        t = torch.full((guess.shape[0],), last, dtype=torch.long, device=guess.device)
        noise = randn_tensor(tuple(guess.shape), generator=generator, device=guess.device, dtype=guess.dtype)
        estimate = self.denoise(work, noise * work["land_mask"], t)
        return self._residual_to_field(batch, guess, sigma, estimate)


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.1):
    """LR factor: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``.

    The cosine schedule of SGDR (Loshchilov & Hutter 2017) without restarts, after a linear warm-up (Goyal et al.
    2017, "Accurate, large minibatch SGD").

    Args:
        warmup_steps: steps of the linear warm-up (``train.warmup_steps``); 0 for none.
        total_steps: the step the cosine reaches ``min_ratio`` (``train.max_steps``); it stays there after.
        min_ratio: the final factor (``train.min_lr_ratio``).

    Returns:
        ``factor(step) -> float`` in [min_ratio, 1], for ``torch.optim.lr_scheduler.LambdaLR``.
    """

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def repeat_batch(batch: Mapping, times: int) -> dict:
    """Each sample repeated ``times`` times in a row (sample-major), for ensembles in one call.

    Args:
        batch: a batch; tensors with a batch dimension are repeated, other values kept.
        times: N, at least 1.

    Returns:
        The batch with (B * N, ...) tensors: rows ``i * N .. i * N + N - 1`` are sample i.

    Raises:
        ValueError: ``times`` < 1.
    """
    if times < 1:
        raise ValueError(f"num_samples must be >= 1, got {times}")
    return {k: v.repeat_interleave(times, dim=0) if torch.is_tensor(v) and v.ndim > 0 else v
            for k, v in batch.items()}


def slice_batch(batch: Mapping, count: int) -> dict:
    """The first ``count`` samples of a batch.

    Args:
        batch: a batch; tensors with a batch dimension are sliced, other values kept.
        count: samples to keep.

    Returns:
        The batch with (min(B, count), ...) tensors.
    """
    return {k: v[:count] if torch.is_tensor(v) and v.ndim > 0 else v for k, v in batch.items()}


def observed_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``weight`` is 1, per sample and band; 0 where there is none.

    Args:
        values: (B, C, H, W), any unit.
        weight: (B, C, H, W) 0/1 (or weights), broadcastable to ``values``.

    Returns:
        (B, C, 1, 1) in ``values``' unit.
    """
    total = (values * weight).sum((2, 3), keepdim=True)
    return total / weight.sum((2, 3), keepdim=True).clamp_min(1.0)


def mean_fill(batch: Mapping) -> torch.Tensor:
    """Trivial baseline: each band of each patch filled with the mean of its observed pixels (0 if none).

    Args:
        batch: a batch of the batch contract (``x``, ``valid_mask``, ``land_mask`` (B, C, H, W)).

    Returns:
        (B, C, H, W) in ``x``'s units (z-scores of Kelvin), 0 on land.
    """
    mean = observed_mean(batch["x"], batch["valid_mask"] * batch["land_mask"])
    return mean.expand_as(batch["x"]) * batch["land_mask"]


# --------------------------------------------------------------------- model.ckpt
def save_model(module: DepthDifModule, state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write model.ckpt: a plain dict loadable with ``torch.load(path, weights_only=True)``.

    Refuses to write weights that hold NaN/inf (a NaN model must never look finished).

    Args:
        module: the trained module (its settings, variant and number of bands are stored).
        state_dict: the weights to store (the EMA average, :meth:`DepthDifEMA.averaged_state_dict`).
        path: model.ckpt, written atomically.

    Raises:
        NonFiniteLossError: a weight holds NaN/inf.
    """
    from depthdif.atomic import atomic_path

    tensors = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise NonFiniteLossError(f"refusing to save {path}: non-finite weights in {bad[:5]} (training diverged).")
    payload = {
        "state_dict": tensors,
        "config": _plain(module.settings),
        "variant": module.variant,
        "num_bands": module.num_bands,
        "format_version": FORMAT_VERSION,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _plain(value: Any) -> Any:
    """JSON-able copy (tuples -> lists) so the weights_only unpickler accepts it."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def load_model(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    variant: str | None = None,
    config: Mapping | None = None,
) -> DepthDifModule:
    """Rebuild the module from model.ckpt with its (EMA) weights, in eval mode, ready to ``sample``.

    ``variant`` / ``config`` (optional) are checked against what the checkpoint was trained with, so a
    temp_v1 model is never silently used on eo_4band batches or with another network size.

    Args:
        path: model.ckpt written by :func:`save_model`.
        map_location: the device to load onto.
        variant: the variant the caller expects, or None.
        config: a run config whose network settings must match the checkpoint's, or None.

    Returns:
        The module in eval mode on ``map_location``.

    Raises:
        CheckpointError: the file is missing, not readable with ``weights_only=True``, a Lightning training
            checkpoint, of an unreadable format, of another variant, or trained with an incompatible config.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model checkpoint {path} does not exist; run the train_<variant> rule first.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle errors come in many types; all mean "not our file"
        raise CheckpointError(f"{path} is not a DepthDif model.ckpt readable with weights_only=True: {err}") from err
    if isinstance(payload, dict) and "format_version" not in payload and LIGHTNING_KEYS & set(payload):
        raise CheckpointError(_training_checkpoint_message(path, payload))
    if not isinstance(payload, dict) or payload.get("format_version") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} has format_version {payload.get('format_version') if isinstance(payload, dict) else None}, "
            f"this code reads {list(READABLE_FORMATS)}; retrain or use the matching DepthDif version."
        )
    saved_variant = payload["variant"]
    if variant is not None and variant != saved_variant:
        raise CheckpointError(f"{path} holds a {saved_variant!r} model, but variant {variant!r} was asked for.")
    settings = dict(payload["config"])
    # a key added to the schema after this model was saved means what the schema says
    settings["model"] = {**section_defaults("model"), **settings["model"]}
    if config is not None:
        _check_compatible(path, settings, model_settings(config, saved_variant), payload["num_bands"], config)
    module = DepthDifModule(settings, sampling_train_config(), payload["num_bands"])
    state = dict(payload["state_dict"])
    state.setdefault("surface_scale", module.surface_scale.clone())  # formats 2-4: no surface variables
    state.setdefault("output_shrinkage", module.output_shrinkage.clone())  # formats 2-5: the network as trained
    if module.cokriging is not None and "cokriging.band_mean" not in state:
        # formats 2-3 predate it: "not fitted" keeps their first guess as it was trained (Cokriging._band_levels)
        state["cokriging.band_mean"] = module.cokriging.band_mean.clone()
        state["cokriging.band_mean_fitted"] = module.cokriging.band_mean_fitted.clone()
    module.load_state_dict(state, strict=True)
    return module.to(map_location).eval()


def sampling_train_config() -> dict:
    """The training settings of a module built only to sample (a loaded model.ckpt).

    Returns:
        ``config["train"]``'s schema defaults with ``seed`` 0 and a one-sample validation.
    """

    return {**section_defaults("train"), "seed": 0, "val_samples": 1, "val_sampling_steps": 1}


def _training_checkpoint_message(path: Path, payload: Mapping) -> str:
    """Why a Lightning checkpoint is refused where model.ckpt is expected, and which file to use instead.

    Args:
        path: the checkpoint given.
        payload: its contents (a dict with Lightning's keys and no ``format_version``).

    Returns:
        The message of the CheckpointError.
    """
    step = payload.get("global_step")
    at_step = "" if step is None else f" at step {step}"
    # run_training writes <out>/train/checkpoints/*.ckpt while it trains and <out>/model.ckpt when it is done
    model = path.parent.parent.parent / "model.ckpt" if path.parent.name == "checkpoints" else None
    if model is not None and model.is_file():
        instead = f"use {model}, written next to it"
    elif model is not None:
        instead = f"use the model.ckpt that training writes to {model.parent} when it finishes"
    else:
        instead = "use the model.ckpt that training writes to results/<variant>/ when it finishes"
    return (f"{path} is a Lightning training checkpoint (a resume point{at_step}), not a DepthDif model.ckpt: it "
            f"holds the raw weights and the optimizer state, not the averaged (EMA) weights and settings a model is "
            f"applied with; {instead}.")


_NETWORK_KEYS = ("working_units", "dim", "dim_mults", "blocks_per_level", "expansion", "film_coords", "film_day_of_year",
                 "timesteps", "beta_schedule", "parameterization", "center_on_observations", "anomaly_scale_c")


def _check_compatible(path: Path, saved: Mapping, wanted: Mapping, num_bands: int, config: Mapping) -> None:
    differences = [
        f"model.{key}: checkpoint {saved['model'].get(key)!r} vs config {wanted['model'].get(key)!r}"
        for key in _NETWORK_KEYS
        if saved["model"].get(key) != wanted["model"].get(key)
    ]
    if saved["dataset"]["first_guess"] != wanted["dataset"]["first_guess"]:
        differences.append(f"dataset.first_guess: checkpoint {saved['dataset']['first_guess']} vs config "
                           f"{wanted['dataset']['first_guess']}")
    saved_surface, wanted_surface = surface_variables_of(saved), surface_variables_of(wanted)
    if saved_surface != wanted_surface:
        differences.append(f"export.surface_variables: checkpoint {list(saved_surface)} vs config "
                           f"{list(wanted_surface)}")
    expected_bands = num_target_bands(config, saved["variant"])
    if expected_bands != num_bands:
        differences.append(f"target bands: checkpoint {num_bands} vs config {expected_bands} (export.depth_indices)")
    if differences:
        raise CheckpointError(
            f"{path} was trained with a different config:\n  " + "\n  ".join(differences)
            + "\nUse the config it was trained with, or retrain."
        )
