"""Swappable reverse-process samplers (DDPM, DDIM) built on diffusers' schedulers.

The loop is written once for every sampler: at each of the scheduler's timesteps the network is called
with that TRAINING timestep (``scheduler.timesteps`` holds values in [0, T), e.g. 900, 800, ... for 10
DDIM steps out of T=1000) - never with the loop index 0..steps-1, the bug of the system this
re-creates. Observed pixels are optionally re-imposed at every step (noised to the current level, as in
RePaint) and always merged exactly into the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from depthdif.models.diffusion import DiffusionConfigError, scheduler_kwargs

SAMPLERS = ("ddim", "ddpm")
DDPM_VARIANCES = {"large": "fixed_large", "small": "fixed_small", "analytic": "fixed_small"}

# (noisy sample, training timesteps (B,)) -> network output (x0 or eps, as the scheduler expects)
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_sampler(
    name: str, model_config: Mapping, steps: int, device: torch.device | str = "cpu"
) -> DDIMScheduler | DDPMScheduler:
    """A fresh scheduler for one sampling run, with ``steps`` timesteps set.

    A new object per run because ``set_timesteps`` mutates the scheduler (two concurrent runs with
    different step counts must not share one).

    Args:
        name: ``ddim`` (Song et al. 2021, "Denoising diffusion implicit models", ICLR; diffusers'
            ``DDIMScheduler``) or ``ddpm`` (Ho et al. 2020; diffusers' ``DDPMScheduler`` with
            ``model.ddpm_variance``).
        model_config: ``config["model"]`` (``timesteps``, ``beta_schedule``, ``parameterization``,
            ``timestep_spacing``, ``ddpm_variance``).
        steps: sampling steps, 1 .. ``model.timesteps``.
        device: where the timesteps live.

    Returns:
        The scheduler with ``steps`` timesteps set.

    Raises:
        DiffusionConfigError: ``steps`` out of range, or an unknown sampler (or schedule, parameterisation).
    """
    total = int(model_config["timesteps"])
    if not 1 <= int(steps) <= total:
        raise DiffusionConfigError(f"sampling steps must be between 1 and model.timesteps ({total}), got {steps}.")
    kwargs = scheduler_kwargs(model_config)
    spacing = model_config["timestep_spacing"]
    if name == "ddim":
        # set_alpha_to_one: the last step lands on alpha_bar = 1, i.e. returns the network's x0 estimate
        scheduler = DDIMScheduler(**kwargs, timestep_spacing=spacing, set_alpha_to_one=True)
    elif name == "ddpm":
        # "large" (sigma_t^2 = beta_t) is the exact reverse variance for unit-Gaussian data (Ho et al. 2020, sec.
        # 3.2), at any number of steps: an untrained residual model then samples exactly N(0, 1). "analytic" runs
        # the scheduler with the small variance and sample_loop adds the rest (analytic_extra_variance)
        variance = DDPM_VARIANCES[model_config["ddpm_variance"]]
        scheduler = DDPMScheduler(**kwargs, timestep_spacing=spacing, variance_type=variance)
    else:
        raise DiffusionConfigError(f"sampler {name!r} is unknown; use one of {list(SAMPLERS)} (model.sampler).")
    scheduler.set_timesteps(int(steps), device=device)
    return scheduler


def merge_observed(sample: torch.Tensor, observed: torch.Tensor, observed_mask: torch.Tensor) -> torch.Tensor:
    """Observed values where ``observed_mask`` is 1, ``sample`` elsewhere.

    Args:
        sample: (B, C, H, W).
        observed: (B, C, H, W), the same units.
        observed_mask: (B, C, H, W) 0/1.

    Returns:
        (B, C, H, W) ``mask * observed + (1 - mask) * sample``.
    """
    return observed_mask * observed + (1.0 - observed_mask) * sample


def antithetic_noise(shape: tuple[int, ...], members: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise whose ensemble members come in antithetic pairs (z, -z).

    Rows are sample-major (``i * members + k`` is member k of input i, as :func:`repeat_batch` lays them out);
    member ``k + members // 2`` gets the negated noise of member k, and an odd last member its own draw. Every
    member is still exactly N(0, 1); only the pairs are dependent. Antithetic variates (Hammersley & Morton 1956,
    "A new Monte Carlo technique: antithetic variates", Proc. Camb. Phil. Soc. 52) remove the part of the
    ensemble mean's sampling error that is odd in the noise; for a diffusion sampler that part is most of it
    (the reverse map is close to linear in its noise where the network adds little to the first guess).

    Args:
        shape: (B * members, ...) of the draw.
        members: N, members per input (1 gives plain noise).
        generator: CPU (or ``device``) generator, or None.
        device: where the noise lives.

    Returns:
        float32 tensor of ``shape``.

    Raises:
        ValueError: ``shape[0]`` is not a multiple of ``members``.
    """
    if members < 2:
        return randn_tensor(shape, generator=generator, device=torch.device(device), dtype=torch.float32)
    if shape[0] % members:
        raise ValueError(f"{shape[0]} rows are not a whole number of {members}-member ensembles")
    half = members // 2
    inputs = shape[0] // members
    draw = randn_tensor((inputs, half + members % 2, *shape[1:]), generator=generator, device=torch.device(device),
                        dtype=torch.float32)
    paired = torch.cat([draw[:, :half], -draw[:, :half], draw[:, half:]], dim=1)
    return paired.reshape(shape)


def independent_members(members: int, antithetic: bool) -> list[int]:
    """Indices of mutually independent members of an ensemble: one of each antithetic pair (k < N // 2) and the
    unpaired last member of an odd N; every member when they were drawn independently.

    Args:
        members: N.
        antithetic: the members were drawn in antithetic pairs (:func:`antithetic_noise`).

    Returns:
        The member indices, ascending.
    """
    if not antithetic or members < 2:
        return list(range(members))
    return list(range(members // 2)) + ([members - 1] if members % 2 else [])


def mean_sampling_factor(members: int, antithetic: bool) -> float:
    """Expected squared error of an N-member mean over the posterior's, ``1 + (sampling variance of the mean) /
    sigma^2``, for a calibrated ensemble and a sampler linear in its noise: ``1 + 1/N`` for independent members,
    ``1 + (N mod 2) / N^2`` for antithetic pairs (only the unpaired member of an odd N leaves noise in the mean).
    The factor of the spread in spread/skill (Fortin et al. 2014).

    Args:
        members: N >= 1.
        antithetic: the members were drawn in antithetic pairs.

    Returns:
        The factor, >= 1.
    """
    if antithetic and members >= 2:
        return 1.0 + (members % 2) / members**2
    return 1.0 + 1.0 / members


def ensemble_variance(members: np.ndarray, antithetic: bool, axis: int = 0) -> np.ndarray:
    """Unbiased estimate of the variance each member is drawn with, from an ensemble along ``axis``.

    Independent members: the sample variance (ddof = 1). Members drawn in antithetic pairs
    (:func:`antithetic_noise`: member k + N // 2 the partner of member k) are dependent, and a pair's distance
    says nothing about the spread (for a sampler linear in its noise it is twice the member's deviation): the
    mean of ``(x_j - x_k)^2 / 2`` over the pairs of members of different draws, which is unbiased.

    Args:
        members: the ensemble, N members along ``axis``.
        antithetic: the members were drawn in antithetic pairs.
        axis: the member axis.

    Returns:
        ``members``' shape without ``axis``, float64, squared units of ``members``; 0 for one member. An
        antithetic pair alone (N = 2) has no two independent members: its squared deviation from the pair's mean,
        unbiased where the sampler is linear in its noise.
    """
    x = np.moveaxis(np.asarray(members, dtype=np.float64), axis, 0)
    n_members = x.shape[0]
    if n_members < 2:
        return np.zeros(x.shape[1:])
    if not antithetic:
        return x.var(axis=0, ddof=1)
    half = n_members // 2
    pairs = n_members * (n_members - 1) / 2 - half
    if pairs <= 0:
        return ((x - x.mean(axis=0)) ** 2).mean(axis=0)
    all_pairs = n_members * ((x - x.mean(axis=0)) ** 2).sum(axis=0)  # sum over j < k of (x_j - x_k)^2
    partners = ((x[:half] - x[half : 2 * half]) ** 2).sum(axis=0)
    return (all_pairs - partners) / (2 * pairs)


def ddpm_step(scheduler: DDPMScheduler, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """One DDPM ancestral step from ``timestep`` to the scheduler's previous sampling timestep, with the noise
    given (``DDPMScheduler.step`` draws its own, which antithetic pairs cannot use).

    The posterior q(x_s | x_t, x0) of Ho et al. (2020, eqs. 6-7) over the skipped interval, ``beta' = 1 -
    abar_t / abar_s``: mean ``sqrt(abar_s) beta' / (1 - abar_t) x0 + sqrt(1 - beta') (1 - abar_s) / (1 - abar_t)
    x_t``, variance ``beta'`` (``fixed_large``) or ``(1 - abar_s) / (1 - abar_t) beta'`` (``fixed_small``); the
    same quantities, previous timestep and final step (abar = 1) as ``DDPMScheduler.step`` (equal to it for the
    same noise, tested).

    Args:
        scheduler: a DDPMScheduler with its timesteps set (``variance_type`` fixed_small or fixed_large).
        model_output: (B, ...) the network's x0 (``prediction_type`` sample) or noise (epsilon) estimate.
        timestep: the current training timestep t.
        sample: (B, ...) x_t.
        noise: (B, ...) standard normal noise of the step.

    Returns:
        (B, ...) x_s.

    Raises:
        DiffusionConfigError: a variance type or prediction type this step does not implement.
    """
    config = scheduler.config
    if config.variance_type not in ("fixed_small", "fixed_large"):
        raise DiffusionConfigError(f"DDPM variance type {config.variance_type!r} is not supported by the sampler")
    previous = int(scheduler.previous_timestep(timestep))
    abar_t = float(scheduler.alphas_cumprod[timestep])
    abar_s = float(scheduler.alphas_cumprod[previous]) if previous >= 0 else 1.0
    beta = 1 - abar_t / abar_s
    if config.prediction_type == "sample":
        x0 = model_output
    elif config.prediction_type == "epsilon":
        x0 = (sample - (1 - abar_t) ** 0.5 * model_output) / abar_t**0.5
    else:
        raise DiffusionConfigError(f"prediction type {config.prediction_type!r} is not supported by the DDPM step")
    mean = (abar_s**0.5 * beta / (1 - abar_t)) * x0 + ((1 - beta) ** 0.5 * (1 - abar_s) / (1 - abar_t)) * sample
    if timestep <= 0:  # diffusers adds no noise at t = 0
        return mean
    variance = beta if config.variance_type == "fixed_large" else max((1 - abar_s) / (1 - abar_t) * beta, 1e-20)
    return mean + variance**0.5 * noise


@torch.no_grad()
def sample_loop(
    denoise: Denoiser,
    scheduler: DDIMScheduler | DDPMScheduler,
    shape: tuple[int, ...],
    *,
    observed: torch.Tensor,
    observed_mask: torch.Tensor,
    land_mask: torch.Tensor,
    replace_observed: bool = True,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    extra_variance: Callable[[int, int], float] | None = None,
    members: int = 1,
) -> torch.Tensor:
    """Run the reverse process from pure noise; return the final field (observed merged, land = 0).

    Args:
        denoise: the network wrapped with its conditions; receives (y_t, training timesteps).
        scheduler: from :func:`make_sampler`, timesteps already set.
        shape: (B, C, H, W) of the target.
        observed, observed_mask, land_mask: (B, C, H, W) - ``x``, ``valid_mask``, ``land_mask`` of the batch.
        replace_observed: re-impose the observation noised to the current level before each network call.
        eta: DDIM stochasticity (0 = deterministic); ignored by DDPM.
        extra_variance: (timestep, previous timestep) -> variance added after each step, on top of the
            scheduler's own noise (see :func:`analytic_extra_variance`).
        generator: CPU (or ``device``) generator of every noise draw, or None.
        device: where the sample lives.
        members: ensemble members per input in the rows of ``shape`` (sample-major); above 1 every noise draw
            is antithetic between member pairs (:func:`antithetic_noise`), 1 draws plain noise.

    Returns:
        (B, C, H, W) float32 final field in the denoiser's units, ``observed`` where ``observed_mask`` is 1, 0 on
        land.
    """
    device = torch.device(device)

    def noise() -> torch.Tensor:
        return antithetic_noise(shape, members, generator, device)

    ddpm = isinstance(scheduler, DDPMScheduler)
    sample = noise() * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        t_batch = torch.full((shape[0],), int(timestep), device=device, dtype=torch.long)
        if replace_observed:
            noised_obs = scheduler.add_noise(observed, noise(), t_batch)
            sample = merge_observed(sample, noised_obs, observed_mask)
        sample = sample * land_mask
        model_output = denoise(sample, t_batch).float()
        if ddpm:
            sample = ddpm_step(scheduler, model_output, int(timestep), sample, noise())
        else:
            step_noise = noise() if eta > 0 else None
            sample = scheduler.step(model_output, timestep, sample, eta=float(eta), variance_noise=step_noise).prev_sample
        if extra_variance is not None:
            variance = float(extra_variance(int(timestep), int(scheduler.previous_timestep(timestep))))
            if variance > 0:
                sample = sample + variance**0.5 * noise()
    return merge_observed(sample, observed, observed_mask) * land_mask


def analytic_extra_variance(alphas_cumprod: torch.Tensor, x0_error: Callable[[int], float]):
    """The part of the optimal DDPM reverse variance that the small variance leaves out.

    Bao et al. 2022 ("Analytic-DPM", ICLR): the optimal Gaussian reverse step from t to s < t has variance
    ``beta_tilde + c0^2 * E[(x0 - x0_hat)^2 | t]`` with ``c0 = sqrt(abar_s) (1 - abar_t / abar_s) / (1 - abar_t)``
    the x0 coefficient of the posterior mean. ``x0_error(t)`` is the network's mean squared x0 error at t (for an
    untrained residual model ``1 - abar_t``, which makes the total exactly beta_t, the exact variance of a
    unit-Gaussian target); a trained network that denoises well adds little noise, where the fixed large
    variance would add beta_t of white noise whatever it has learned (~0.17 sigma at the last of 10 steps).

    Args:
        alphas_cumprod: (T,) alpha_bar of the training schedule.
        x0_error: ``t -> E[(x0 - x0_hat)^2 | t]`` (``DepthDifModule.x0_error``).

    Returns:
        ``extra(t, s) -> float``, the variance to add after the step from t to s (s < 0: the last step, abar_s
        = 1).
    """

    def extra(t: int, s: int) -> float:
        abar_t = float(alphas_cumprod[t])
        abar_s = float(alphas_cumprod[s]) if s >= 0 else 1.0
        coefficient = abar_s**0.5 * (1 - abar_t / abar_s) / (1 - abar_t)
        return coefficient**2 * float(x0_error(t))

    return extra
