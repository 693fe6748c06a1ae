"""The trained cokriging first guess and the residual diffusion built on it (issue 11, items 1-2)."""

from __future__ import annotations

import numpy as np
import pytest
import scoringrules
import torch
from batch_factory import TinyDataModule, make_batch, tiny_config

from depthdif.baselines.cokriging import (
    Cokriging,
    CovarianceAccumulator,
    covariance_dictionary,
    fit_covariance,
    fit_sigma_table,
    observation_features,
)
from depthdif.data.normalization import Y_STD, temperature_denormalize, temperature_normalize
from depthdif.evaluation.metrics import ScoreAccumulator
from depthdif.train import build_module, fit_first_guess

SIZE = 16


def gaussian_fields(rng: np.random.Generator, count: int, size: int, scale_px: float, bands: int = 1,
                    coupling: float = 0.0) -> np.ndarray:
    """(count, bands, size, size) stationary Gaussian fields (°C anomalies) with a Gaussian covariance of
    length ``scale_px``, cut from a larger periodic field; band k = coupling * band 0 + independent part."""
    big = 4 * size
    k = np.fft.fftfreq(big)
    spectrum = np.exp(-((2 * np.pi) ** 2) * (k[:, None] ** 2 + k[None, :] ** 2) * scale_px**2 / 4)
    out = np.empty((count, bands, size, size))
    for i in range(count):
        shared = None
        for b in range(bands):
            noise = np.fft.ifft2(np.fft.fft2(rng.standard_normal((big, big))) * spectrum).real
            noise = noise[:size, :size] / noise.std()
            if b == 0:
                shared = noise
                out[i, b] = noise
            else:
                out[i, b] = coupling * shared + np.sqrt(1 - coupling**2) * noise
    return out


def batch_of(fields_c: np.ndarray, hidden: float, rng: np.random.Generator, same_mask: bool = False) -> dict:
    """A contract batch (z-scores) of complete fields (°C anomalies around 15 °C) with random observations."""
    y = torch.from_numpy(temperature_normalize(15.0 + fields_c)).float()
    shape = fields_c.shape if not same_mask else (fields_c.shape[0], 1, *fields_c.shape[2:])
    valid = torch.from_numpy((rng.random(shape) >= hidden).astype(np.float32)).expand_as(y).contiguous()
    land = torch.ones_like(y)
    return {"y": y, "x": y * valid, "valid_mask": valid, "land_mask": land}


def fitted(fields_c: np.ndarray, nugget: float = 1e-3, max_joint: int = 10_000) -> Cokriging:
    rng = np.random.default_rng(1)
    batches = [batch_of(fields_c[i : i + 16], 0.0, rng) for i in range(0, len(fields_c), 16)]
    estimator = Cokriging(fields_c.shape[1], fields_c.shape[-1], nugget=nugget, max_joint_observations=max_joint)
    estimator.set_statistics(fit_covariance(batches, fields_c.shape[1], fields_c.shape[-1], max_samples=10_000))
    return estimator


def test_fitted_covariance_is_valid_and_recovers_the_true_variogram():
    rng = np.random.default_rng(0)
    fields = gaussian_fields(rng, 192, SIZE, scale_px=3.0)
    estimator = fitted(fields)
    table = estimator.covariance[0, 0, 0].numpy()
    # ordinary kriging sees the covariance only through the variogram C(0) - C(h): compare that
    lags = np.arange(1, 6)
    fitted_variogram = table[0, 0] - table[0, lags]
    true_variogram = 1.0 - np.exp(-(lags**2) / (2 * 3.0**2))  # the filter gives exp(-h^2 / (2 L^2))
    np.testing.assert_allclose(fitted_variogram, true_variogram, rtol=0.25, atol=0.02)
    # valid: the Gram matrix of every pixel of a patch factorises with a negligible jitter
    rows, cols = np.divmod(np.arange(SIZE * SIZE), SIZE)
    gram = estimator.covariance[0, 0, 0][(rows[:, None] - rows[None, :]) % (2 * SIZE),
                                          (cols[:, None] - cols[None, :]) % (2 * SIZE)]
    _, info = torch.linalg.cholesky_ex(gram + 1e-6 * table[0, 0] * torch.eye(len(rows), dtype=torch.float64))
    assert int(info) == 0


def test_raw_lag_table_alone_would_not_be_a_valid_covariance():
    """Why the coregionalisation fit exists: the empirical lag table of within-patch anomalies is not positive
    definite (the failure the issue measured)."""
    rng = np.random.default_rng(0)
    fields = gaussian_fields(rng, 64, SIZE, scale_px=3.0)
    acc = CovarianceAccumulator(1, SIZE)
    acc.add(torch.from_numpy(fields - fields.mean((-2, -1), keepdims=True)), torch.ones(64, 1, SIZE, SIZE), 0)
    raw = (acc.products[0] / acc.pairs[0].clamp_min(1))[0, 0]
    rows, cols = np.divmod(np.arange(SIZE * SIZE), SIZE)
    gram = raw[(rows[:, None] - rows[None, :]) % (2 * SIZE), (cols[:, None] - cols[None, :]) % (2 * SIZE)]
    assert torch.linalg.eigvalsh(gram).min() < -1e-3


def ordinary_kriging(cov: np.ndarray, rows, cols, values, size: int) -> np.ndarray:
    """Textbook ordinary kriging (Lagrange system), (size, size)."""
    n = len(rows)
    torus = 2 * size
    system = np.ones((n + 1, n + 1))
    system[:n, :n] = cov[(rows[:, None] - rows[None, :]) % torus, (cols[:, None] - cols[None, :]) % torus]
    system[:n, :n] += 1e-3 * cov[0, 0] * np.eye(n)
    system[n, n] = 0.0
    grid_r, grid_c = np.divmod(np.arange(size * size), size)
    rhs = np.ones((n + 1, size * size))
    rhs[:n] = cov[(rows[:, None] - grid_r[None, :]) % torus, (cols[:, None] - grid_c[None, :]) % torus]
    weights = np.linalg.solve(system, rhs)[:n]
    return (weights.T @ values).reshape(size, size)


def test_cokriging_equals_textbook_ordinary_kriging():
    rng = np.random.default_rng(3)
    distance = np.hypot(*np.meshgrid(*(2 * [np.minimum(np.arange(2 * SIZE), 2 * SIZE - np.arange(2 * SIZE))]),
                                     indexing="ij"))
    cov = (0.7 * covariance_dictionary(torch.from_numpy(distance))[3] + 0.3).numpy()  # exponential, 4 px, + const
    estimator = Cokriging(1, SIZE, nugget=1e-3)
    estimator.set_statistics({"covariance": torch.from_numpy(np.broadcast_to(cov, (2, 1, 1, *cov.shape)).copy())})
    field = gaussian_fields(rng, 1, SIZE, 4.0)
    batch = batch_of(field, 0.9, rng)
    guess = estimator(batch).mean[0, 0].double()
    observed = batch["valid_mask"][0, 0].numpy() > 0
    rows, cols = np.nonzero(observed)
    expected = ordinary_kriging(cov, rows, cols, 15.0 + field[0, 0][rows, cols], SIZE)
    got = (guess * Y_STD).numpy() + (15.0 - temperature_normalize(15.0) * Y_STD)
    np.testing.assert_allclose(got[~observed], expected[~observed], atol=2e-3)
    np.testing.assert_allclose(got[observed], 15.0 + field[0, 0][observed], atol=1e-4)  # observations kept


def test_cross_band_first_guess_beats_per_band_kriging():
    """Two strongly coupled bands observed at different pixels: cokriging must use the other band."""
    rng = np.random.default_rng(5)
    fields = gaussian_fields(rng, 192, SIZE, scale_px=3.0, bands=2, coupling=0.99)
    joint, per_band = fitted(fields), fitted(fields, max_joint=0)
    test = gaussian_fields(np.random.default_rng(9), 32, SIZE, scale_px=3.0, bands=2, coupling=0.99)
    batch = batch_of(test, 0.9, np.random.default_rng(10))
    hidden = batch["valid_mask"] == 0
    errors = {name: float((((est(batch).mean - batch["y"]) * Y_STD)[hidden] ** 2).mean().sqrt())
              for name, est in {"joint": joint, "per_band": per_band}.items()}
    assert errors["joint"] < 0.7 * errors["per_band"], errors


def trained_first_guess_module(variant: str, tmp_path, sigma_floor: float | None = None):
    config = tiny_config(tmp_path, model={"first_guess_fit_samples": 64})
    module = build_module(config, variant)
    datamodule = TinyDataModule(variant, train_size=64, batch_size=16, size=SIZE)
    fit_first_guess(module, datamodule, config)
    if sigma_floor is not None:
        module.cokriging.sigma_table.fill_(sigma_floor)
    return module.eval()


@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
def test_untrained_model_samples_the_first_guess_posterior(variant, tmp_path):
    """An untrained residual model: ensemble mean = first guess, spread = its posterior sigma (sampling error)."""
    module = trained_first_guess_module(variant, tmp_path)
    module.model_config["antithetic_sampling"] = False  # independent members (antithetic: test_sampling_variance)
    batch = make_batch(variant, batch_size=4, seed=2, size=SIZE, mask_fraction=0.9)
    members = 64
    samples = module.sample(batch, members, steps=6, generator=torch.Generator().manual_seed(0))
    guess, sigma_c = module.first_guess_of(batch)
    hidden = sigma_c > 0
    standardised = ((samples.mean(1) - guess) * Y_STD / (sigma_c / members**0.5))[hidden]
    assert abs(float(standardised.mean())) < 0.1
    assert 0.9 < float(standardised.std()) < 1.1
    spread = (samples.std(1) * Y_STD)[hidden]
    ratio = float((spread**2).mean().sqrt() / (sigma_c[hidden] ** 2).mean().sqrt())
    assert ratio == pytest.approx(1.0, abs=0.03)
    # observed pixels are the observations exactly, and the one-call conditional mean is the first guess
    observed = (batch["valid_mask"] > 0) & (batch["land_mask"] > 0)
    assert torch.equal(samples[:, 0][observed], batch["x"][observed])
    conditional = module.conditional_mean(batch, generator=torch.Generator().manual_seed(1))
    assert float(((conditional - guess) * Y_STD).abs().max()) < 1e-3


def test_first_guess_statistics_travel_in_the_checkpoint(tmp_path):
    from depthdif.models.module import load_model, save_model

    module = trained_first_guess_module("temp_v1", tmp_path)
    path = tmp_path / "model.ckpt"
    save_model(module, module.state_dict(), path)
    loaded = load_model(path)
    assert torch.equal(loaded.cokriging.covariance, module.cokriging.covariance)
    assert torch.equal(loaded.cokriging.sigma_table, module.cokriging.sigma_table)
    batch = make_batch("temp_v1", batch_size=2, seed=4, size=SIZE)
    assert torch.equal(loaded.first_guess_of(dict(batch))[0], module.first_guess_of(dict(batch))[0])


def test_gaussian_posterior_is_scored_with_its_crps():
    rng = np.random.default_rng(0)
    truth, mean = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    sigma = rng.uniform(0.2, 1.0, size=(8, 8))
    region = rng.random((8, 8)) > 0.3
    scores = ScoreAccumulator()
    score = scores.add("cokriging", 0, 0.9, mean, truth, region, sigma=sigma)
    expected = scoringrules.crps_normal(truth[region], mean[region], sigma[region]).mean()
    assert score.crps_c == pytest.approx(float(expected))
    assert score.spread_c == pytest.approx(float(np.sqrt((sigma[region] ** 2).mean())))


def test_sigma_table_is_calibrated_on_the_training_errors():
    rng = np.random.default_rng(7)
    fields = gaussian_fields(rng, 128, SIZE, scale_px=3.0)
    estimator = fitted(fields)
    batches = [batch_of(fields[i : i + 16], 0.9, np.random.default_rng(i)) for i in range(0, 128, 16)]
    estimator.set_statistics({"sigma_table": fit_sigma_table(estimator, batches, 128)})
    test = batch_of(gaussian_fields(np.random.default_rng(11), 64, SIZE, scale_px=3.0), 0.9, np.random.default_rng(12))
    guess = estimator(test)
    hidden = test["valid_mask"] == 0
    rmse = float((((guess.mean - test["y"]) * Y_STD)[hidden] ** 2).mean().sqrt())
    predicted = float((guess.sigma_c[hidden] ** 2).mean().sqrt())
    assert predicted == pytest.approx(rmse, rel=0.15)
    # sigma grows with the distance to the nearest observation
    distance, _ = observation_features(test["valid_mask"] > 0)
    near, far = guess.sigma_c[hidden & (distance == 1)], guess.sigma_c[hidden & (distance >= 4)]
    assert float(far.mean()) > 1.5 * float(near.mean())


def test_dense_observations_are_thinned_for_the_solve_but_kept_in_the_output():
    rng = np.random.default_rng(13)
    fields = gaussian_fields(rng, 64, SIZE, scale_px=3.0)
    full, thinned = fitted(fields), fitted(fields)
    thinned.max_observations = 40  # of ~128 observed pixels a band at 50 % hidden
    batch = batch_of(gaussian_fields(np.random.default_rng(14), 8, SIZE, scale_px=3.0), 0.5, rng)
    hidden = batch["valid_mask"] == 0
    errors = [float((((est(batch).mean - batch["y"]) * Y_STD)[hidden] ** 2).mean().sqrt()) for est in (full, thinned)]
    assert errors[0] < errors[1] < 0.3  # coarser (unit-variance field), still an interpolation of what is kept
    observed = ~hidden
    assert torch.equal(thinned(batch).mean[observed], batch["x"][observed])  # every observation is in the output


def test_smoothing_a_speckled_surface_helps_the_drift():
    """A satellite-like surface (smooth signal + pixel speckle) as external drift: low-passing it first lowers the
    error, because the drift would otherwise copy the speckle into every estimate."""

    def batch_with_surface(count, seed):
        local = np.random.default_rng(seed)
        surface = gaussian_fields(local, count, SIZE, scale_px=4.0)
        bands = 0.9 * surface + 0.3 * gaussian_fields(local, count, SIZE, scale_px=4.0)
        batch = batch_of(bands, 0.9, local)
        speckled = surface[:, 0] + 0.3 * local.standard_normal(surface[:, 0].shape)
        batch["eo"] = torch.from_numpy(temperature_normalize(15.0 + speckled)[:, None]).float()
        batch["eo_available"] = torch.ones(count, 1)
        return batch

    training = [batch_with_surface(16, seed) for seed in range(8)]
    test = batch_with_surface(32, 99)
    hidden = test["valid_mask"] == 0
    errors = {}
    for width in (0.0, 1.0):
        estimator = Cokriging(1, SIZE, surface_smoothing_px=width)
        estimator.set_statistics(fit_covariance(training, 1, SIZE, 10_000, surface_smoothing_px=width))
        errors[width] = float((((estimator(test).mean - test["y"]) * Y_STD)[hidden] ** 2).mean().sqrt())
    assert errors[1.0] < 0.9 * errors[0.0], errors


def test_an_unfitted_first_guess_refuses_to_guess(tmp_path):
    from depthdif.baselines.cokriging import FirstGuessNotFitted

    module = build_module(tiny_config(tmp_path), "temp_v1")  # never trained: no statistics
    with pytest.raises(FirstGuessNotFitted, match="fitted from the training split"):
        module.sample(make_batch("temp_v1", batch_size=2, size=SIZE), 2, 2)


def test_a_band_without_observations_takes_its_trained_level_not_the_normalisation_mean():
    """Three bands at 20, 15 and 8 °C. A patch with no observation at all (no profile reached it) gets each
    band's training level, not 16.6 °C (the normalisation's mean); a patch where only the top band is observed,
    1 °C warmer than in training, gets the others 1 °C warmer than their training levels too."""
    rng = np.random.default_rng(3)
    levels_c = np.array([20.0, 15.0, 8.0])
    fields = 0.3 * gaussian_fields(rng, 64, SIZE, scale_px=3.0, bands=3, coupling=0.5)
    train = fields + (levels_c - 15.0)[None, :, None, None]  # batch_of adds 15 °C
    estimator = fitted(train)
    test = 0.3 * gaussian_fields(np.random.default_rng(4), 4, SIZE, scale_px=3.0, bands=3)
    nothing = batch_of(test + (levels_c - 15.0)[None, :, None, None], 1.0, rng)
    guess_c = temperature_denormalize(estimator(nothing).mean.double().numpy())
    band_means = guess_c.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(band_means, levels_c, atol=0.1)

    warmer = batch_of(test + (levels_c - 14.0)[None, :, None, None], 0.5, rng)
    warmer["valid_mask"][:, 1:] = 0
    warmer["x"] = warmer["y"] * warmer["valid_mask"]
    guess_c = temperature_denormalize(estimator(warmer).mean.double().numpy())
    np.testing.assert_allclose(guess_c.mean(axis=(0, 2, 3))[1:], levels_c[1:] + 1.0, atol=0.15)


def test_lag_index_addresses_the_torus_lag_of_every_pair():
    """The separable index into the rolled lag table gives exactly C[b_i, b_j]((r_i - r_j) mod 2P, (c_i - c_j)
    mod 2P), the entry the 4-D modular gather used to read."""
    from depthdif.baselines.cokriging import _lag_index

    bands_n, size = 3, 16
    torus = 2 * size
    table = torch.randn(bands_n, bands_n, torus, torus, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    b, r, c = (torch.randint(0, hi, (200,), generator=gen) for hi in (bands_n, size, size))
    expected = table[b[:, None], b[None, :], (r[:, None] - r[None, :]) % torus, (c[:, None] - c[None, :]) % torus]
    rolled = torch.roll(table, (size, size), dims=(2, 3)).reshape(-1)
    assert torch.equal(rolled[_lag_index(b, r, c, bands_n, size)], expected)
