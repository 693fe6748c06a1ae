"""The LightningModule: shapes for both variants, overfitting, sampling API, NaN handling, model.ckpt."""

import pytest
import torch
from batch_factory import TinyDataModule, make_batch, tiny_config

from depthdif.models.module import (
    FORMAT_VERSION,
    BatchContractError,
    CheckpointError,
    NonFiniteLossError,
    input_channels,
    load_model,
    mean_fill,
    save_model,
    warmup_cosine,
)
from depthdif.train import build_module, fit_first_guess

VARIANTS = ["temp_v1", "eo_4band"]


def _module(variant, **sections):
    torch.manual_seed(0)
    config = tiny_config(**sections)
    module = build_module(config, variant)
    if module.residual:  # the default working units need the first guess fitted on training data
        fit_first_guess(module, TinyDataModule(variant, train_size=32, batch_size=16, size=16), config)
    return module


def _batch(variant, batch_size=2, seed=0, **kwargs):
    return make_batch(variant, batch_size, seed=seed, size=16, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_of_loss_and_samples(variant):
    module = _module(variant)
    batch = _batch(variant, batch_size=3)
    bands = 1 if variant == "temp_v1" else 3
    # default residual units: + the first guess and its sigma
    expected = 4 * bands + (2 if variant == "eo_4band" else 0) + 2 * bands
    assert module.net.in_channels == input_channels(bands, variant, False, residual=True) == expected
    loss = module.diffusion_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    samples = module.sample(batch, num_samples=4, steps=3)
    assert samples.shape == (3, 4, bands, 16, 16)
    observed = batch["valid_mask"] > 0
    for n in range(4):
        assert torch.equal(samples[:, n][observed], batch["x"][observed])
        assert (samples[:, n][batch["land_mask"] == 0] == 0).all()


def test_first_guess_adds_channels_and_is_required():
    with pytest.raises(CheckpointError, match="dataset.first_guess"):
        _module("eo_4band", dataset={"first_guess": True})  # refused with the residual units' own first guess
    module = _module("eo_4band", dataset={"first_guess": True}, model={"working_units": "observed_mean"})
    assert module.net.in_channels == 4 * 3 + 2 + 3
    batch = _batch("eo_4band", first_guess=True)
    assert module.sample(batch, 1, 2).shape == (2, 1, 3, 16, 16)
    del batch["first_guess"]
    with pytest.raises(BatchContractError, match="first_guess"):
        module.diffusion_loss(batch)


def test_eo_variant_needs_eo_keys():
    batch = _batch("eo_4band")
    del batch["eo"]
    with pytest.raises(BatchContractError, match="'eo'"):
        _module("eo_4band").diffusion_loss(batch)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("units", ["first_guess", "observed_mean"])
def test_overfitting_one_batch_halves_the_masked_loss(variant, units):
    module = _module(variant, model={"working_units": units})
    batch = _batch(variant, batch_size=4)

    def fixed_loss() -> float:  # same noise levels and noise every time: only the weights change
        with torch.no_grad():
            return sum(module.diffusion_loss(batch, torch.Generator().manual_seed(i)).item() for i in range(8)) / 8

    before = fixed_loss()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    for _ in range(60):
        loss = module.diffusion_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # residual units start from the first guess's Gaussian posterior, already the best linear answer: less to gain
    assert fixed_loss() < (0.6 if units == "first_guess" else 0.5) * before


class NetSpy(torch.nn.Module):
    """Wraps the network; records batch size and timesteps of every call."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.calls: list[tuple[int, list[int]]] = []

    def forward(self, x, timesteps, *conditions):
        self.calls.append((x.shape[0], timesteps.tolist()))
        return self.net(x, timesteps, *conditions)


def test_ensemble_is_one_batched_call_per_step_with_training_timesteps():
    module = _module("temp_v1")
    spy = NetSpy(module.net)
    module.net = spy
    module.sample(_batch("temp_v1", batch_size=2), num_samples=5, steps=4, sampler="ddim")
    assert len(spy.calls) == 4
    assert all(size == 2 * 5 for size, _ in spy.calls)
    assert [ts[0] for _, ts in spy.calls] == [999, 749, 499, 249]  # T=1000, 4 steps, trailing spacing (default)
    spy.calls.clear()
    module.model_config["timestep_spacing"] = "leading"
    module.sample(_batch("temp_v1", batch_size=2), num_samples=5, steps=4)  # the default sampler, ddpm
    assert [ts[0] for _, ts in spy.calls] == [750, 500, 250, 0]


def test_ensemble_members_differ_but_share_observations():
    module = _module("temp_v1")
    torch.nn.init.normal_(module.net.final_conv.weight, std=0.1)  # make the net depend on its input noise
    batch = _batch("temp_v1")
    samples = module.sample(batch, 3, 3, generator=torch.Generator().manual_seed(0))
    hidden = ((1 - batch["valid_mask"]) * batch["land_mask"]).bool()
    assert not torch.allclose(samples[:, 0][hidden], samples[:, 1][hidden])
    again = module.sample(batch, 3, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


def test_nan_batch_skips_the_update_then_stops():
    module = _module("temp_v1", train={"max_nonfinite_steps": 2})
    batch = _batch("temp_v1")
    batch["y"][0, 0, 3, 3] = float("nan")
    batch["land_mask"][0, 0, 3, 3] = 1.0
    batch["valid_mask"][0, 0, 3, 3] = 0.0
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2, weight_decay=0.1)
    before = {k: v.clone() for k, v in module.state_dict().items()}

    loss = module.training_step(batch, 0)
    assert not torch.isfinite(loss)
    loss.backward()
    module.on_before_optimizer_step(optimizer)
    optimizer.step()
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update, not even weight decay

    module.training_step(batch, 1).backward()
    with pytest.raises(NonFiniteLossError, match="max_nonfinite_steps"):
        module.on_before_optimizer_step(optimizer)


def test_finite_step_resets_the_nonfinite_counter():
    module = _module("temp_v1", train={"max_nonfinite_steps": 2})
    optimizer = torch.optim.AdamW(module.parameters())
    bad, good = _batch("temp_v1"), _batch("temp_v1")
    bad["y"][:] = float("nan")
    for batch in (bad, good, bad):
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        module.on_before_optimizer_step(optimizer)  # never two bad in a row: no error
    assert module._nonfinite_in_a_row == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_checkpoint_round_trip_with_weights_only(tmp_path, variant):
    module = _module(variant)
    torch.nn.init.normal_(module.net.final_conv.weight, std=0.1)
    path = tmp_path / "model.ckpt"
    save_model(module, module.state_dict(), path)

    payload = torch.load(path, weights_only=True)
    assert payload["variant"] == variant and payload["format_version"] == FORMAT_VERSION == 6
    assert payload["num_bands"] == module.num_bands
    assert payload["config"]["model"]["dim"] == 8

    loaded = load_model(path, variant=variant, config=tiny_config())
    assert not loaded.training
    batch = _batch(variant)
    expected = module.eval().sample(batch, 2, 3, generator=torch.Generator().manual_seed(3))
    got = loaded.sample(batch, 2, 3, generator=torch.Generator().manual_seed(3))
    assert torch.equal(expected, got)


def test_load_model_rejects_wrong_variant_and_config(tmp_path):
    path = tmp_path / "model.ckpt"
    save_model(_module("temp_v1"), _module("temp_v1").state_dict(), path)
    with pytest.raises(CheckpointError, match="'temp_v1' model"):
        load_model(path, variant="eo_4band")
    with pytest.raises(CheckpointError, match="model.dim"):
        load_model(path, config=tiny_config(model={"dim": 16}))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_model(tmp_path / "junk.ckpt")


def test_a_lightning_training_checkpoint_is_named_and_model_ckpt_suggested(tmp_path):
    module = _module("temp_v1")
    lightning = {"state_dict": module.state_dict(), "pytorch-lightning_version": "2.5.0", "global_step": 40,
                 "epoch": 1, "optimizer_states": [], "lr_schedulers": []}  # the keys of Lightning's last.ckpt
    last = tmp_path / "temp_v1" / "train" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save(lightning, last)
    with pytest.raises(CheckpointError, match="Lightning training checkpoint") as caught:
        load_model(last)
    message = str(caught.value)
    assert "step 40" in message and "format_version" not in message
    assert f"training writes to {tmp_path / 'temp_v1'} when it finishes" in message  # not trained to the end yet
    save_model(module, module.state_dict(), tmp_path / "temp_v1" / "model.ckpt")
    with pytest.raises(CheckpointError, match=f"use {tmp_path / 'temp_v1' / 'model.ckpt'}, written next to it"):
        load_model(last)
    assert load_model(tmp_path / "temp_v1" / "model.ckpt").variant == "temp_v1"
    elsewhere = tmp_path / "copy.ckpt"
    torch.save({"state_dict": {}, "global_step": 7}, elsewhere)
    with pytest.raises(CheckpointError, match="step 7.*results/<variant>/"):
        load_model(elsewhere)


def test_nan_weights_are_never_saved(tmp_path):
    module = _module("temp_v1")
    state = module.state_dict()
    state["net.final_conv.bias"] = torch.full_like(state["net.final_conv.bias"], float("nan"))
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        save_model(module, state, tmp_path / "model.ckpt")
    assert not (tmp_path / "model.ckpt").exists()


def test_mean_fill_uses_observed_ocean_mean_per_band():
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.0, 3.0
    valid = torch.zeros_like(x)
    valid[0, 0, 0, :2] = 1
    land = torch.ones_like(x)
    land[0, :, 1, 1] = 0
    filled = mean_fill({"x": x, "valid_mask": valid, "land_mask": land})
    assert filled[0, 0, 1, 0] == pytest.approx(2.0)
    assert filled[0, 0, 1, 1] == 0.0  # land
    assert torch.equal(filled[0, 1], torch.zeros(2, 2))  # nothing observed: the normalised mean, 0


def test_warmup_then_cosine():
    factor = warmup_cosine(10, 110, min_ratio=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.55)
    assert factor(110) == pytest.approx(0.1)
    assert factor(500) == pytest.approx(0.1)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 120))


@pytest.mark.parametrize("variant", VARIANTS)
def test_untrained_model_starts_as_mean_fill(variant):
    """Observed-mean working units: a zero-output network predicts the observed mean of each patch and band."""
    module = _module(variant, model={"working_units": "observed_mean", "sampler": "ddim"})
    batch = _batch(variant, batch_size=3)
    samples = module.sample(batch, 2, 3, generator=torch.Generator().manual_seed(0))
    expected = mean_fill(batch)
    hidden = ((1 - batch["valid_mask"]) * batch["land_mask"]).bool()
    for n in range(2):
        assert torch.allclose(samples[:, n][hidden], expected[hidden], atol=1e-5)


def test_working_units_are_anomalies_in_anomaly_scale():
    module = _module("eo_4band", model={"anomaly_scale_c": 2.0, "working_units": "observed_mean"})
    batch = _batch("eo_4band")
    work, offset, scale = module.to_working_units(batch)
    assert scale == pytest.approx(10.933397487585731 / 2.0)
    assert offset.shape == (2, 3, 1, 1)
    assert torch.allclose(offset.expand_as(batch["x"]) * batch["land_mask"], mean_fill(batch))
    observed = (batch["valid_mask"] * batch["land_mask"]).bool()
    back = offset + work["x"] / scale
    assert torch.allclose(back[observed], batch["x"][observed], atol=1e-5)
    ocean = batch["land_mask"].bool()
    assert torch.allclose((offset + work["y"] / scale)[ocean], batch["y"][ocean], atol=1e-5)
    # the observed anomaly of each band averages to zero; EO is centred on its own ocean mean
    mean_anomaly = (work["x"] * observed).sum((2, 3)) / observed.sum((2, 3))
    assert torch.allclose(mean_anomaly, torch.zeros_like(mean_anomaly), atol=1e-4)
    eo_ocean = batch["eo"] != 0
    eo_mean = (work["eo"] * eo_ocean).sum((2, 3)) / eo_ocean.sum((2, 3)).clamp_min(1)
    assert torch.allclose(eo_mean, torch.zeros_like(eo_mean), atol=1e-4)

    plain = _module("eo_4band", model={"center_on_observations": False, "working_units": "observed_mean"})
    work, offset, scale = plain.to_working_units(batch)
    assert scale == 1.0 and torch.equal(work["y"], batch["y"]) and not offset.any()


def test_residual_loss_weights_count_each_patch_alike_or_each_pixel_alike():
    """celsius: the posterior variance itself; patch: a densely observed patch (small sigma) weighs as much in
    total as a sparse one; residual: every counted pixel 1. Exactly known pixels (sigma 0) never count."""
    from depthdif.models.module import residual_loss_weight

    sigma2 = torch.zeros(2, 1, 4, 4)
    sigma2[0, 0, :2] = 0.01  # dense patch: small posterior variance, 8 pixels
    sigma2[1, 0, :2] = 0.5  # sparse patch
    region = torch.ones_like(sigma2)
    assert torch.equal(residual_loss_weight(sigma2, region, "celsius"), sigma2)
    per_patch = residual_loss_weight(sigma2, region, "patch")
    assert torch.allclose(per_patch.sum((1, 2, 3)), torch.tensor([8.0, 8.0]))
    assert torch.equal(residual_loss_weight(sigma2, region, "residual"), (sigma2 > 0).float())
    assert float(per_patch[:, :, 2:].abs().sum()) == 0.0


def test_inference_device_follows_train_accelerator():
    """auto falls back to the CPU here; a GPU asked for on a machine without one is a clear error, not a silent
    CPU run; a batch already on the device is the same dict (the first-guess cache lives on it)."""
    from depthdif.reconstruction.inference import DeviceError, inference_device, on_device

    assert inference_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert inference_device("auto").type in ("cpu", "mps")
        with pytest.raises(DeviceError, match="train.accelerator.*no CUDA GPU"):
            inference_device("gpu")
    with pytest.raises(DeviceError, match="not one of"):
        inference_device("tpu")
    batch = {"x": torch.zeros(2, 1, 4, 4), "date": [1, 2]}
    assert on_device(batch, torch.device("cpu")) is batch
