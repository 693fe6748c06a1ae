"""Antithetic ensembles and the fitted shrinkage of the network's correction (issue 11: the ensemble mean
against its first guess, calibrated spread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from batch_factory import TinyDataModule, make_batch, tiny_config
from diffusers.utils.torch_utils import randn_tensor
from test_cokriging import SIZE, trained_first_guess_module

from depthdif.data.normalization import Y_STD
from depthdif.evaluation.metrics import ScoreAccumulator
from depthdif.models.module import load_model, save_model
from depthdif.models.samplers import antithetic_noise, ddpm_step, ensemble_variance, make_sampler
from depthdif.models.shrinkage import (
    HIDDEN_FRACTION_EDGES,
    SHRINKAGE_TIME_BINS,
    ShrinkageFit,
    fraction_class,
    hidden_fraction,
    shrinkage_factors,
)
from depthdif.train import fitted_sampling_statistics

MODEL = {"timesteps": 1000, "beta_schedule": "cosine", "parameterization": "x0", "timestep_spacing": "trailing",
         "ddpm_variance": "small"}


def test_antithetic_noise_pairs_members_within_each_input():
    noise = antithetic_noise((3 * 5, 2, 4, 4), 5, torch.Generator().manual_seed(0)).reshape(3, 5, 2, 4, 4)
    assert torch.equal(noise[:, 2:4], -noise[:, 0:2])
    assert not torch.allclose(noise[:, 4], -noise[:, 0])  # the odd member is its own draw
    assert not torch.allclose(noise[0, 0], noise[1, 0])  # inputs draw independently
    with pytest.raises(ValueError, match="5-member"):
        antithetic_noise((7, 1), 5)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize(("spacing", "steps"), [("trailing", 10), ("trailing", 7), ("leading", 10), ("linspace", 7)])
def test_ddpm_step_with_given_noise_is_diffusers_ddpm_step(variance_type, spacing, steps):
    config = {**MODEL, "timestep_spacing": spacing, "ddpm_variance": "small" if variance_type == "fixed_small" else "large"}
    ddpm = make_sampler("ddpm", config, steps)
    assert ddpm.config.variance_type == variance_type
    sample, x0 = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    for timestep in ddpm.timesteps:
        expected = ddpm.step(x0, timestep, sample, generator=torch.Generator().manual_seed(3)).prev_sample
        noise = randn_tensor(sample.shape, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(ddpm_step(ddpm, x0, int(timestep), sample, noise), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
def test_untrained_antithetic_ensemble_mean_is_the_first_guess(variant, tmp_path):
    """F = 0 makes the sampler linear in its noise: antithetic pairs average to the first guess exactly, while
    each member keeps the first guess's posterior spread."""
    module = trained_first_guess_module(variant, tmp_path)
    assert module.antithetic_members(8)
    batch = make_batch(variant, batch_size=4, seed=2, size=SIZE, mask_fraction=0.9)
    samples = module.sample(batch, 32, steps=6, generator=torch.Generator().manual_seed(0))
    guess, sigma_c = module.first_guess_of(batch)
    hidden = sigma_c > 0
    assert float(((samples.mean(1) - guess) * Y_STD)[hidden].abs().max()) < 1e-4
    spread = samples.std(1, correction=0) * Y_STD
    ratio = float((spread[hidden] ** 2).mean().sqrt() / (sigma_c[hidden] ** 2).mean().sqrt())
    assert ratio == pytest.approx(1.0, abs=0.05)


def test_antithetic_spread_is_unbiased_and_calibrated():
    rng = np.random.default_rng(0)
    sigma, n, members = 2.0, 20_000, 8
    mean = rng.normal(size=n)
    truth = mean + sigma * rng.normal(size=n)
    draws = sigma * rng.normal(size=(members // 2, n))
    ensemble = mean + np.concatenate([draws, -draws])
    assert float(ensemble_variance(ensemble, antithetic=True).mean()) == pytest.approx(sigma**2, rel=0.02)
    # an odd member and a lone pair
    odd = np.concatenate([ensemble, mean + sigma * rng.normal(size=(1, n))])
    assert float(ensemble_variance(odd, antithetic=True).mean()) == pytest.approx(sigma**2, rel=0.02)
    assert float(ensemble_variance(ensemble[[0, 4]], antithetic=True).mean()) == pytest.approx(sigma**2, rel=0.05)
    # the plain estimator would count the partners' distance twice: 2 sigma^2 N / (N - 1) per pair of pairs
    assert float(ensemble.var(axis=0, ddof=1).mean()) == pytest.approx(sigma**2 * members / (members - 1), rel=0.02)
    region = np.ones(n, dtype=bool)
    scored = ScoreAccumulator().add("m", 0, 0.9, ensemble, truth, region, antithetic=True)
    assert scored.spread_skill == pytest.approx(1.0, abs=0.03)
    plain = ScoreAccumulator().add("m", 0, 0.9, ensemble, truth, region)
    assert plain.spread_skill > 1.1  # what the independent-member formula would report


def test_hidden_fraction_classes():
    valid = torch.zeros(2, 1, 10, 10)
    valid[0, 0, :5] = 1  # 50 % observed
    land = torch.ones_like(valid)
    fraction = hidden_fraction(valid, land)
    assert fraction.tolist() == [[0.5], [1.0]]
    assert fraction_class(torch.tensor([0.5, 0.75, 0.95, 0.975, 0.997])).tolist() == [0, 1, 2, 3, 4]
    assert len(HIDDEN_FRACTION_EDGES) + 1 == 5


def test_shrinkage_fit_recovers_a_known_gain_and_the_x0_error():
    rng = torch.Generator().manual_seed(0)
    fit = ShrinkageFit(num_bands=2)
    valid = torch.zeros(64, 2, 8, 8)
    valid[:, :, :2] = 1  # 75 % hidden: class 1
    land = torch.ones_like(valid)
    t = torch.full((64,), 999)
    target = torch.randn(64, 2, 8, 8, generator=rng)
    correction = torch.stack([2 * target[:, 0],  # twice the target: gain 0.5
                              torch.randn(64, 8, 8, generator=rng)], dim=1)  # unrelated: gain ~0
    weight = (1 - valid) * torch.rand(64, 2, 1, 1, generator=rng)
    fit.add(correction, target, weight, t, 1000, valid, land)
    table = fit.factors()
    assert table.shape == (SHRINKAGE_TIME_BINS, 5, 2)
    assert float(table[-1, 1, 0]) == pytest.approx(0.5)
    assert float(table[-1, 1, 1]) < 0.05
    # classes no batch reached take the nearest fitted class; rows never reached stay 1
    assert torch.equal(table[-1, :, 0], torch.full((5,), float(table[-1, 1, 0]), dtype=torch.float64))
    assert torch.equal(table[0], torch.ones(5, 2, dtype=torch.float64))
    errors = fit.x0_error(table)
    scored = weight > 0
    direct = ((table[-1, 1].view(1, 2, 1, 1).float() * correction - target) ** 2)[scored].mean()
    assert float(errors[-1]) == pytest.approx(float(direct), rel=1e-4)
    assert float(errors[0]) == -1.0


def test_fitted_shrinkage_travels_in_model_ckpt_and_enters_the_denoiser(tmp_path):
    module = trained_first_guess_module("temp_v1", tmp_path)
    torch.manual_seed(0)  # the random output layer below, whatever ran before
    torch.nn.init.normal_(module.net.final_conv.weight, std=0.05)  # a network whose output is pure noise to the residual
    config = tiny_config(tmp_path, model={"first_guess_fit_samples": 64})
    datamodule = TinyDataModule("temp_v1", train_size=64, batch_size=16, size=SIZE)
    state = fitted_sampling_statistics(module, module.state_dict(), datamodule, config)
    table = state["output_shrinkage"]
    fitted_cells = table[table != 1]
    assert len(fitted_cells) and float(fitted_cells.mean()) < 0.5  # noise is shrunk towards the first guess
    assert bool((state["x0_error_table"] > 0).all())
    path = tmp_path / "model.ckpt"
    save_model(module, state, path)
    loaded = load_model(path)
    assert torch.equal(loaded.output_shrinkage, table)
    batch = make_batch("temp_v1", batch_size=2, seed=4, size=SIZE)
    work, _, _ = loaded.to_residual_units(batch)
    t = torch.full((2,), 999)
    noisy = torch.randn(work["y"].shape)
    raw = loaded.network_output(work, noisy, t)
    abar = loaded.diffusion.scheduler.alphas_cumprod[999]
    alpha = shrinkage_factors(loaded.output_shrinkage, t, 1000, work["valid_mask"], work["land_mask"])
    torch.testing.assert_close(loaded.denoise(work, noisy, t),
                               abar.sqrt().float() * noisy + (1 - abar).sqrt().float() * alpha * raw)


def test_a_format_5_model_keeps_its_network_as_trained(tmp_path):
    module = trained_first_guess_module("temp_v1", tmp_path)
    path = tmp_path / "model.ckpt"
    save_model(module, module.state_dict(), path)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["output_shrinkage"]
    payload["format_version"] = 5
    torch.save(payload, path)
    assert torch.equal(load_model(path).output_shrinkage, torch.ones_like(module.output_shrinkage))


def test_independent_members_and_the_mean_sampling_factor():
    from depthdif.models.samplers import independent_members, mean_sampling_factor

    assert independent_members(8, True) == [0, 1, 2, 3]
    assert independent_members(3, True) == [0, 2] and independent_members(5, True) == [0, 1, 4]
    assert independent_members(5, False) == [0, 1, 2, 3, 4] and independent_members(1, True) == [0]
    for members in (3, 5, 8):  # the partner indices never both appear
        chosen = set(independent_members(members, True))
        assert all(not {k, k + members // 2} <= chosen for k in range(members // 2))
    assert mean_sampling_factor(8, False) == pytest.approx(9 / 8)
    assert mean_sampling_factor(8, True) == 1.0 and mean_sampling_factor(3, True) == pytest.approx(1 + 1 / 9)
    # the factor is the measured squared error of the mean of an antithetic ensemble of a linear sampler
    for members in (3, 5):
        noise = antithetic_noise((20_000 * members, 1), members, torch.Generator().manual_seed(2)).numpy()
        means = noise.reshape(20_000, members).mean(axis=1)
        assert 1 + means.var() == pytest.approx(mean_sampling_factor(members, True), rel=0.01)
