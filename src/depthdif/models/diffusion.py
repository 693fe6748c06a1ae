"""The diffusion process, kept apart from the network: noise schedule, training targets, masked loss.

The forward process and its schedules come from diffusers' well-tested ``DDPMScheduler``; this module
only maps our config onto it and adds the pieces specific to DepthDif: which pixels the loss counts
(hidden ocean by default) and what the network is asked to predict (x0 by default).

Why x0 by default: with the cosine schedule alpha_bar(T-1) is ~2e-9, so recovering x0 from an
epsilon prediction at t ~ T divides by ~4e-5 and the first sampling step explodes; a 5-minute CPU run
with epsilon-prediction collapsed there while x0-prediction trained fine (issue 4).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from diffusers import DDPMScheduler

from depthdif.errors import DepthDifError

# our config names -> diffusers' names
BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}
PREDICTION_TYPES = {"x0": "sample", "eps": "epsilon"}
LOSS_REGIONS = ("hidden", "ocean")


class DiffusionConfigError(DepthDifError, ValueError):
    """A model.* key names something the diffusion process does not know."""


def _lookup(table: Mapping[str, str], key: str, value: str) -> str:
    try:
        return table[value]
    except KeyError:
        raise DiffusionConfigError(f"model.{key} is {value!r}; use one of {sorted(table)}.") from None


def scheduler_kwargs(model_config: Mapping) -> dict:
    """Keyword arguments shared by every diffusers scheduler built from ``config['model']``.

    Clipping is off: our data are z-scores (|z| up to ~3), not images in [-1, 1], and diffusers'
    default clip to [-1, 1] would flatten every warm or cold pixel.

    Args:
        model_config: ``config["model"]`` (``timesteps``, ``beta_schedule``, ``parameterization``).

    Returns:
        ``num_train_timesteps``, ``beta_schedule`` (``squaredcos_cap_v2``: the cosine schedule of Nichol &
        Dhariwal 2021, or ``linear``: Ho et al. 2020), ``prediction_type`` (``sample`` or ``epsilon``) and
        ``clip_sample=False``.

    Raises:
        DiffusionConfigError: an unknown ``beta_schedule`` or ``parameterization``.
    """
    return {
        "num_train_timesteps": int(model_config["timesteps"]),
        "beta_schedule": _lookup(BETA_SCHEDULES, "beta_schedule", model_config["beta_schedule"]),
        "prediction_type": _lookup(PREDICTION_TYPES, "parameterization", model_config["parameterization"]),
        "clip_sample": False,
    }


def make_training_scheduler(model_config: Mapping) -> DDPMScheduler:
    """The forward (noising) process used in training: ``add_noise`` and the alpha_bar table.

    Args:
        model_config: ``config["model"]``.

    Returns:
        A diffusers ``DDPMScheduler`` with :func:`scheduler_kwargs`.

    Raises:
        DiffusionConfigError: as :func:`scheduler_kwargs`.
    """
    return DDPMScheduler(**scheduler_kwargs(model_config))


def loss_region(batch: Mapping[str, torch.Tensor], region: str = "hidden") -> torch.Tensor:
    """Pixels the loss and the scores count, per band: hidden ocean ``(1 - valid_mask) * land_mask``,
    or every ocean pixel (``region='ocean'``).

    Args:
        batch: a batch with ``valid_mask`` and ``land_mask`` (B, C, H, W), 0/1.
        region: ``hidden`` or ``ocean`` (``model.loss_region``).

    Returns:
        (B, C, H, W) 0/1 weights.

    Raises:
        DiffusionConfigError: another ``region``.
    """
    if region == "hidden":
        return (1.0 - batch["valid_mask"]) * batch["land_mask"]
    if region == "ocean":
        return batch["land_mask"]
    raise DiffusionConfigError(f"model.loss_region is {region!r}; use one of {list(LOSS_REGIONS)}.")


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where ``weight`` is 1 (a batch with none gives 0, not NaN).

    Args:
        prediction: (B, C, H, W), any unit.
        target: (B, C, H, W), the same unit.
        weight: (B, C, H, W) 0/1 (or non-negative weights).

    Returns:
        Scalar float32 ``sum(w (p - t)^2) / max(sum(w), 1)`` in the unit squared.
    """
    squared = (prediction.float() - target.float()) ** 2 * weight
    return squared.sum() / weight.sum().clamp_min(1.0)


class GaussianDiffusion:
    """Forward process q(y_t | y_0) and the training target for one config.

    Not an ``nn.Module`` on purpose: it holds no learnable state, and keeping the alpha_bar table out of
    the module's buffers keeps it out of the checkpoint and out of the EMA average. The process is DDPM's
    (Ho et al. 2020, "Denoising diffusion probabilistic models", NeurIPS), through diffusers' ``DDPMScheduler``.

    Args:
        model_config: ``config["model"]`` (``timesteps``, ``beta_schedule``, ``parameterization``,
            ``loss_region``).

    Raises:
        DiffusionConfigError: an unknown ``beta_schedule``, ``parameterization`` or ``loss_region``.
    """

    def __init__(self, model_config: Mapping):
        self.config = dict(model_config)
        self.scheduler = make_training_scheduler(model_config)
        self.num_timesteps = int(model_config["timesteps"])
        self.parameterization = model_config["parameterization"]
        self.region = model_config["loss_region"]
        if self.region not in LOSS_REGIONS:
            raise DiffusionConfigError(f"model.loss_region is {self.region!r}; use one of {list(LOSS_REGIONS)}.")

    def sample_timesteps(self, batch_size: int, device: torch.device, generator=None) -> torch.Tensor:
        """Uniform training timesteps in [0, T).

        Args:
            batch_size: B.
            device: where the timesteps are drawn (a generator must live there).
            generator: a torch generator, or None.

        Returns:
            (B,) int64.
        """
        return torch.randint(0, self.num_timesteps, (batch_size,), device=device, generator=generator)

    def q_sample(self, y0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """y_t = sqrt(alpha_bar_t) y0 + sqrt(1 - alpha_bar_t) noise (diffusers' add_noise).

        Args:
            y0: (B, C, H, W) clean target, working units.
            noise: (B, C, H, W) standard normal noise.
            timesteps: (B,) training timesteps.

        Returns:
            (B, C, H, W) y_t.
        """
        return self.scheduler.add_noise(y0, noise, timesteps)

    def target(self, y0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output: y0 for x0-parameterisation, the noise for eps.

        Args:
            y0: (B, C, H, W) clean target.
            noise: (B, C, H, W) the noise added to it.

        Returns:
            ``y0`` or ``noise``.
        """
        return y0 if self.parameterization == "x0" else noise

    def predict_x0(self, model_output: torch.Tensor, y_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The clean-field estimate implied by a network output (identity for x0-parameterisation).

        Args:
            model_output: (B, C, H, W) the network's x0 or noise estimate.
            y_t: (B, C, H, W) the noisy input.
            timesteps: (B,) training timesteps.

        Returns:
            (B, C, H, W) x0 estimate, ``(y_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` for eps.
        """
        if self.parameterization == "x0":
            return model_output
        alpha_bar = self.scheduler.alphas_cumprod.to(y_t.device)[timesteps].view(-1, 1, 1, 1)
        return (y_t - (1 - alpha_bar).sqrt() * model_output) / alpha_bar.sqrt()

    def loss(self, model_output: torch.Tensor, y0: torch.Tensor, noise: torch.Tensor, batch) -> torch.Tensor:
        """Masked MSE between the network output and its target over the configured region.

        Args:
            model_output: (B, C, H, W) network output.
            y0: (B, C, H, W) clean target.
            noise: (B, C, H, W) the noise added to it.
            batch: a batch with ``valid_mask`` and ``land_mask`` (see :func:`loss_region`).

        Returns:
            Scalar float32 loss.
        """

        return masked_mse(model_output, self.target(y0, noise), loss_region(batch, self.region))
