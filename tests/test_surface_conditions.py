"""Sea-surface height as a dense condition of eo_4band (issue 14 item 3-4): the drift of the trained first
guess, the regression baseline, the network's input and the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from batch_factory import TinyDataModule, make_batch, tiny_config
from test_cokriging import SIZE, batch_of, gaussian_fields

from depthdif.baselines import eo_regression_oi
from depthdif.baselines.cokriging import Cokriging, fit_covariance, patch_residuals, surface_drifts
from depthdif.baselines.optimal_interpolation import regress_on_drifts
from depthdif.data.normalization import Y_STD, temperature_normalize
from depthdif.models.module import BatchContractError, load_model, save_model
from depthdif.train import build_module, fit_surface_scale

SEA_LEVEL_M_PER_C = 0.05  # the constructed ocean's sea level: 5 cm per °C of the subsurface anomaly it follows


def ocean_with_sea_level(count: int, seed: int, hidden: float = 0.95) -> dict:
    """Patches whose band is half the SST anomaly plus an independent subsurface signal that only the sea level
    (m) carries, as eddies below the mixed layer do; SST and sea level in the batch contract."""
    rng = np.random.default_rng(seed)
    sst = gaussian_fields(rng, count, SIZE, scale_px=4.0)
    deep = gaussian_fields(rng, count, SIZE, scale_px=4.0)
    band = 0.5 * sst + 0.8 * deep + 0.2 * gaussian_fields(rng, count, SIZE, scale_px=2.0)
    batch = batch_of(band, hidden, rng)
    batch["eo"] = torch.from_numpy(temperature_normalize(20.0 + sst[:, :1])).float()
    batch["eo_available"] = torch.ones(count, 1)
    batch["surface"] = torch.from_numpy(SEA_LEVEL_M_PER_C * deep[:, :1] + 0.3).float()
    return batch


def hidden_rmse_c(estimate: torch.Tensor, batch: dict) -> float:
    hidden = batch["valid_mask"] == 0
    return float((((estimate - batch["y"]) * Y_STD)[hidden] ** 2).mean().sqrt())


def test_regression_on_several_drifts_recovers_their_slopes():
    rng = np.random.default_rng(0)
    drifts = rng.standard_normal((40, 2)) * [1.0, 0.05]
    values = 3.0 + drifts @ np.array([0.5, 16.0])
    intercept, slopes = regress_on_drifts(values, drifts)
    np.testing.assert_allclose(slopes, [0.5, 16.0], rtol=1e-9)
    assert intercept == pytest.approx(3.0)
    # fewer than K + 2 observations: no regression through (nearly) every point, just the mean
    intercept, slopes = regress_on_drifts(values[:3], drifts[:3])
    assert intercept == pytest.approx(values[:3].mean()) and not slopes.any()
    # a field constant at the observations has no slope; the other keeps its own
    flat = np.column_stack([drifts[:, 0], np.full(40, 0.2)])
    _, slopes = regress_on_drifts(3.0 + 0.5 * drifts[:, 0], flat)
    np.testing.assert_allclose(slopes, [0.5, 0.0], atol=1e-9)


def test_per_patch_residuals_remove_every_drift():
    batch = ocean_with_sea_level(8, 1, hidden=0.0)
    drifts, available = surface_drifts(batch)
    assert drifts.shape == (8, 2, SIZE, SIZE) and bool((available == 1).all())
    residuals, slopes = patch_residuals(batch["y"], batch["land_mask"], drifts)
    assert slopes.shape == (8, 1, 2)
    # the constructed band is 0.5 SST + 16 °C/m sea level + a small independent part
    assert float(slopes[..., 0].mean()) == pytest.approx(0.5, abs=0.1)
    assert float(slopes[..., 1].mean()) == pytest.approx(0.8 / SEA_LEVEL_M_PER_C, rel=0.15)
    assert float(residuals.std()) < 0.35


def test_the_first_guess_uses_sea_level_where_it_knows_what_the_surface_temperature_does_not():
    training = [ocean_with_sea_level(16, seed, hidden=0.0) for seed in range(8)]
    test = ocean_with_sea_level(32, 99)
    errors = {}
    for drifts in (1, 2):
        keep = (lambda b: b) if drifts == 2 else (lambda b: {k: v for k, v in b.items() if k != "surface"})
        estimator = Cokriging(1, SIZE, num_drifts=drifts)
        estimator.set_statistics(fit_covariance([keep(b) for b in training], 1, SIZE, 10_000))
        assert estimator.slope_mean.shape == (1, drifts) and estimator.slope_var.shape == (1, drifts, drifts)
        errors[drifts] = hidden_rmse_c(estimator(keep(test)).mean, test)
    assert errors[2] < 0.6 * errors[1], errors
    # statistics for one field (SST) refuse a batch that brings two
    with pytest.raises(ValueError, match="surface fields"):
        estimator = Cokriging(1, SIZE, num_drifts=1)
        estimator.set_statistics(fit_covariance([{k: v for k, v in b.items() if k != "surface"} for b in training],
                                                1, SIZE, 10_000))
        estimator(test)


def test_regression_baseline_takes_sea_level_like_armor3d():
    test = ocean_with_sea_level(16, 7, hidden=0.9)
    truth = (test["y"].numpy().astype(np.float64) * Y_STD)[:, 0]
    observed = np.where(test["valid_mask"].numpy()[:, 0] > 0, truth, np.nan)
    land = np.ones_like(truth, bool)
    sst = test["eo"].numpy()[:, 0].astype(np.float64) * Y_STD
    level = test["surface"].numpy()[:, 0].astype(np.float64)
    hidden = np.isnan(observed)
    errors = {"sst": [], "sst+ssh": []}
    for i in range(len(truth)):
        errors["sst"].append(eo_regression_oi(observed[i], land[i], sst[i])[hidden[i]] - truth[i][hidden[i]])
        stack = np.stack([sst[i], level[i]])
        errors["sst+ssh"].append(eo_regression_oi(observed[i], land[i], stack)[hidden[i]] - truth[i][hidden[i]])
    rmse = {k: float(np.sqrt(np.mean(np.concatenate(v) ** 2))) for k, v in errors.items()}
    assert rmse["sst+ssh"] < 0.6 * rmse["sst"], rmse
    # the (1, H, W) stack is the plain SST regression
    np.testing.assert_allclose(eo_regression_oi(observed[0], land[0], sst[0][None]),
                               eo_regression_oi(observed[0], land[0], sst[0]))


def test_an_eo_4band_model_conditioned_on_sea_level(tmp_path):
    config = tiny_config(export={"surface_variables": ["zos"]})
    module = build_module(config, "eo_4band")
    plain = build_module(tiny_config(export={"surface_variables": []}), "eo_4band")
    assert module.net.init_conv.in_channels == plain.net.init_conv.in_channels + 1
    assert module.cokriging.num_drifts == 2
    datamodule = TinyDataModule("eo_4band", size=16, surface_variables=1)
    fit_surface_scale(module, datamodule, config)
    batch = next(iter(datamodule.train_dataloader()))
    present = batch["eo"] != 0
    expected = torch.cat([(s - s[p].mean())[p] for s, p in zip(batch["surface"], present, strict=True)])
    assert float(module.surface_scale[0]) == pytest.approx(float(expected.pow(2).mean().sqrt()), rel=0.3)
    with pytest.raises(BatchContractError, match="surface"):
        module.network_input({k: v for k, v in batch.items() if k != "surface"}, torch.zeros_like(batch["y"]))
    work, _, _ = module.to_working_units(batch)
    assert work["surface"].abs().max() > 0
    work["first_guess"] = work["first_guess_sigma"] = torch.zeros_like(batch["y"])  # the residual units' inputs
    assert module.network_input(work, torch.zeros_like(batch["y"])).shape[1] == \
        plain.network_input(work, torch.zeros_like(batch["y"])).shape[1] + 1


def test_surface_statistics_travel_in_the_checkpoint_and_older_slopes_still_load(tmp_path):
    config = tiny_config(export={"surface_variables": ["zos"]})
    module = build_module(config, "eo_4band")
    module.surface_scale.fill_(0.023)
    module.cokriging.slope_mean.copy_(torch.tensor([[0.5, 12.0]] * module.num_bands))
    save_model(module, module.state_dict(), tmp_path / "model.ckpt")
    loaded = load_model(tmp_path / "model.ckpt", variant="eo_4band", config=config)
    assert loaded.surface_variables == ("zos",)
    assert float(loaded.surface_scale[0]) == pytest.approx(0.023)
    assert torch.equal(loaded.cokriging.slope_mean, module.cokriging.slope_mean)
    # a model.ckpt of format 4 stored one slope per band (the SST drift)
    old = Cokriging(3, SIZE)
    state = {k: v.clone() for k, v in old.state_dict().items()}
    state["slope_mean"], state["slope_var"] = torch.tensor([0.4, 0.2, 0.1]), torch.tensor([0.01, 0.02, 0.03])
    old.load_state_dict(state)
    assert old.slope_mean[:, 0].tolist() == pytest.approx([0.4, 0.2, 0.1])
    assert old.slope_var[:, 0, 0].tolist() == pytest.approx([0.01, 0.02, 0.03])
    # the config's surface variables must match the model's
    with pytest.raises(Exception, match="surface_variables"):
        load_model(tmp_path / "model.ckpt", variant="eo_4band", config=tiny_config())


def test_a_batch_without_sea_level_for_a_model_that_needs_it_is_refused():
    module = build_module(tiny_config(export={"surface_variables": ["zos"]}), "eo_4band")
    batch = make_batch("eo_4band", size=16)
    with pytest.raises(BatchContractError, match="zos"):
        module.to_working_units(batch)


def test_the_dataset_hands_eo_4band_the_exported_sea_level(tmp_path):
    from test_export_surface import config_for, make_raw

    from depthdif.data.dataset import PatchDataset
    from depthdif.data.index import PatchIndexError
    from depthdif.export import export_patches
    from depthdif.glorys import file_name
    from depthdif.sources.synthetic import write_synthetic_month
    from depthdif.split import split_index

    source = tmp_path / "source"
    source.mkdir()
    config = config_for(tmp_path)
    for year, month in ((2010, 1), (2010, 7)):
        write_synthetic_month(config, year, month, source / file_name(year, month))
    _, manifest = make_raw(tmp_path, source)
    index = split_index(config, export_patches(config, manifest, workers=1))
    quiet = {**config, "dataset": {**config["dataset"], "eo_degraded_val": False}}
    val = PatchDataset(index, quiet, "all", variant="eo_4band")
    sample = val[0]
    raw = np.load(val.surface_paths[0])
    ocean = np.isfinite(raw)
    assert sample["surface"].shape == raw.shape
    np.testing.assert_array_equal(sample["surface"].numpy()[ocean], raw[ocean])  # m, untouched
    assert not sample["surface"].numpy()[~ocean].any()
    # training adds the map error (10 % of the patch's spread by default) and turns it with the sample
    noisy = PatchDataset(index, config, "all", variant="eo_4band")[0]["surface"].numpy()
    spread = float(np.nanstd(raw))
    difference = (noisy - raw)[ocean]
    assert 0.03 * spread < float(np.std(difference)) < 0.3 * spread
    assert "surface" not in PatchDataset(index, config, "all", variant="temp_v1")[0]
    # a config asking for a field the export did not write is refused, naming the key
    other = {**config, "export": {**config["export"], "surface_variables": ["zos", "sos"]}}
    with pytest.raises(PatchIndexError, match="surface_variables"):
        PatchDataset(index, other, "all", variant="eo_4band")
