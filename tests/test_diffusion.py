"""The diffusion process (schedules, targets, masked loss) and the samplers (timesteps, observed pixels)."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from depthdif.config import section_defaults
from depthdif.models.diffusion import (
    DiffusionConfigError,
    GaussianDiffusion,
    loss_region,
    masked_mse,
    scheduler_kwargs,
)
from depthdif.models.samplers import make_sampler, sample_loop

# the schema's model section, as a validated config has it
MODEL = {**section_defaults("model"), "timesteps": 1000, "beta_schedule": "cosine", "parameterization": "x0",
         "loss_region": "hidden", "timestep_spacing": "leading"}


def test_config_maps_onto_diffusers_names_without_clipping():
    kwargs = scheduler_kwargs(MODEL)
    assert kwargs["beta_schedule"] == "squaredcos_cap_v2"
    assert kwargs["prediction_type"] == "sample"
    assert kwargs["clip_sample"] is False
    eps_linear = scheduler_kwargs({**MODEL, "parameterization": "eps", "beta_schedule": "linear"})
    assert (eps_linear["prediction_type"], eps_linear["beta_schedule"]) == ("epsilon", "linear")
    with pytest.raises(DiffusionConfigError, match="beta_schedule"):
        scheduler_kwargs({**MODEL, "beta_schedule": "sigmoidish"})


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_q_sample_is_the_closed_form_forward_process(schedule):
    diffusion = GaussianDiffusion({**MODEL, "beta_schedule": schedule})
    betas = diffusion.scheduler.betas.double()
    alpha_bar = torch.cumprod(1 - betas, 0)
    y0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 499, 999])
    expected = alpha_bar[t].sqrt().view(-1, 1, 1, 1) * y0 + (1 - alpha_bar[t]).sqrt().view(-1, 1, 1, 1) * noise
    assert torch.allclose(diffusion.q_sample(y0, noise, t), expected.float(), atol=1e-5)
    assert alpha_bar[0] > alpha_bar[500] > alpha_bar[999]
    assert alpha_bar[999] < 1e-2  # the end of the chain is (almost) pure noise


def test_targets_and_x0_recovery_per_parameterization():
    y0, noise, t = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4), torch.tensor([10, 600])
    x0_process = GaussianDiffusion(MODEL)
    assert torch.equal(x0_process.target(y0, noise), y0)
    eps_process = GaussianDiffusion({**MODEL, "parameterization": "eps"})
    assert torch.equal(eps_process.target(y0, noise), noise)
    y_t = eps_process.q_sample(y0, noise, t)
    assert torch.allclose(eps_process.predict_x0(noise, y_t, t), y0, atol=1e-3)


def test_loss_counts_only_its_region():
    valid = torch.zeros(1, 2, 4, 4)
    valid[..., 0, :] = 1
    land = torch.ones(1, 2, 4, 4)
    land[..., :, 0] = 0
    batch = {"valid_mask": valid, "land_mask": land}
    hidden = loss_region(batch, "hidden")
    assert hidden.sum() == 2 * 3 * 3  # rows 1-3, columns 1-3, both bands
    assert torch.equal(loss_region(batch, "ocean"), land)

    target = torch.zeros(1, 2, 4, 4)
    prediction = torch.where(hidden > 0, 2.0, 100.0)  # big errors outside the region must not count
    assert masked_mse(prediction, target, hidden).item() == pytest.approx(4.0)
    assert masked_mse(prediction, target, torch.zeros_like(hidden)).item() == 0.0
    with pytest.raises(DiffusionConfigError, match="loss_region"):
        loss_region(batch, "everywhere")


class SpyDenoiser:
    """Records the timesteps and inputs the sampler passes to the network; predicts a constant field."""

    def __init__(self, value: float = 0.0):
        self.timesteps: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []
        self.value = value

    def __call__(self, sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.timesteps.append(timesteps.clone())
        self.inputs.append(sample.clone())
        return torch.full_like(sample, self.value)


def _masks(shape=(2, 1, 8, 8)):
    valid = (torch.rand(shape, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    land = torch.ones(shape)
    land[..., :2, :2] = 0
    return torch.randn(shape) * valid * land, valid * land, land


@pytest.mark.parametrize(("sampler", "steps", "spacing"),
                         [("ddim", 10, "leading"), ("ddim", 7, "trailing"), ("ddpm", 5, "leading")])
def test_network_receives_the_training_timesteps(sampler, steps, spacing):
    config = {**MODEL, "timestep_spacing": spacing}
    scheduler = make_sampler(sampler, config, steps)
    reference = (DDIMScheduler if sampler == "ddim" else DDPMScheduler)(
        **scheduler_kwargs(config), timestep_spacing=spacing)
    reference.set_timesteps(steps)
    observed, valid, land = _masks()
    spy = SpyDenoiser()
    sample_loop(spy, scheduler, observed.shape, observed=observed, observed_mask=valid, land_mask=land)
    fed = [int(t[0]) for t in spy.timesteps]
    assert fed == [int(t) for t in reference.timesteps]
    assert len(fed) == steps
    assert fed != list(range(steps)) and fed != list(reversed(range(steps)))  # not the loop index
    assert max(fed) > steps  # they live on the 0..T-1 training axis
    assert all(t.shape == (observed.shape[0],) and (t == t[0]).all() for t in spy.timesteps)


def test_output_merges_observations_exactly_and_zeroes_land():
    observed, valid, land = _masks()
    scheduler = make_sampler("ddim", MODEL, 4)
    out = sample_loop(SpyDenoiser(value=5.0), scheduler, observed.shape, observed=observed,
                      observed_mask=valid, land_mask=land, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[valid > 0], observed[valid > 0])
    assert torch.equal(out[land == 0], torch.zeros_like(out[land == 0]))
    hidden = (1 - valid) * land > 0
    assert torch.allclose(out[hidden], torch.full_like(out[hidden], 5.0), atol=1e-4)  # x0 of the final step


@pytest.mark.parametrize("replace", [True, False])
def test_replace_observed_feeds_the_noised_observation(replace):
    shape = (1, 1, 8, 8)
    observed = torch.full(shape, 2.0)
    everywhere = torch.ones(shape)
    scheduler = make_sampler("ddim", MODEL, 10)
    spy = SpyDenoiser(value=0.0)
    sample_loop(spy, scheduler, shape, observed=observed, observed_mask=everywhere, land_mask=everywhere,
                replace_observed=replace, generator=torch.Generator().manual_seed(0))
    last_input = spy.inputs[-1]  # t = 0: almost no noise left on the re-imposed observation
    close = torch.allclose(last_input, observed, atol=0.1)
    assert close is replace


def test_same_generator_same_samples_and_eta_adds_noise():
    observed, valid, land = _masks()
    runs, spies = {}, {}
    for key, eta, seed in [("a", 0.0, 0), ("b", 0.0, 0), ("c", 0.0, 1), ("d", 1.0, 0)]:
        scheduler = make_sampler("ddim", MODEL, 5)
        spies[key] = SpyDenoiser(value=0.5)
        runs[key] = sample_loop(spies[key], scheduler, observed.shape, observed=observed, observed_mask=valid,
                                land_mask=land, replace_observed=False, eta=eta,
                                generator=torch.Generator().manual_seed(seed))
    assert torch.equal(runs["a"], runs["b"])
    # eta = 0 with a constant x0 prediction: the last step returns that x0, whatever the start noise
    assert torch.allclose(runs["a"], runs["c"], atol=1e-5)
    # eta > 0 injects fresh noise between steps: the second network input differs from the eta = 0 run
    assert torch.equal(spies["a"].inputs[0], spies["d"].inputs[0])
    assert not torch.allclose(spies["a"].inputs[1], spies["d"].inputs[1], atol=1e-3)


def test_steps_out_of_range_and_unknown_sampler_are_errors():
    with pytest.raises(DiffusionConfigError, match="between 1"):
        make_sampler("ddim", MODEL, 0)
    with pytest.raises(DiffusionConfigError, match="between 1"):
        make_sampler("ddim", MODEL, 1001)
    with pytest.raises(DiffusionConfigError, match="sampler"):
        make_sampler("euler", MODEL, 10)
