"""run_training end to end on a tiny in-memory DataModule: outputs, resume, EMA, NaN handling."""

import pandas as pd
import pytest
import torch
from batch_factory import TinyDataModule, tiny_config
from lightning.pytorch.callbacks import Callback

from depthdif.models.module import CheckpointError, NonFiniteLossError, load_model
from depthdif.train import merge_metrics, resumable_checkpoint, run_training


def _datamodule(variant="temp_v1", **kwargs):
    return TinyDataModule(variant, train_size=8, val_size=4, batch_size=4, size=16, **kwargs)


class StartStep(Callback):
    def __init__(self):
        self.start_step = None

    def on_train_start(self, trainer, pl_module):
        self.start_step = trainer.global_step


class ParamRecorder(Callback):
    """Copies of the raw weights after every optimiser step."""

    def __init__(self):
        self.history: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.history.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def test_outputs_and_resume_continue_the_global_step(tmp_path):
    out = tmp_path / "eo_4band"
    config = tiny_config(tmp_path)
    datamodule = _datamodule("eo_4band")
    first = StartStep()
    model_path = run_training(config, "eo_4band", out, datamodule=datamodule, callbacks=[first])
    assert model_path == out / "model.ckpt" and model_path.is_file()
    assert first.start_step == 0
    last = out / "train" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 4

    config["train"]["max_steps"] = 8
    second = StartStep()
    run_training(config, "eo_4band", out, datamodule=datamodule, callbacks=[second])
    assert second.start_step == 4  # resumed, not restarted
    assert torch.load(last, weights_only=False)["global_step"] == 8
    assert sorted(p.name for p in (out / "train" / "csv_logs").iterdir()) == ["version_0", "version_1"]
    assert len(list((out / "train" / "checkpoints").glob("best-*.ckpt"))) == 1
    # Lightning's own last.ckpt where a model.ckpt is expected: named as a resume point, model.ckpt suggested
    with pytest.raises(CheckpointError, match=r"Lightning training checkpoint \(a resume point at step 8\)") as caught:
        load_model(last)
    assert f"use {out / 'model.ckpt'}, written next to it" in str(caught.value)

    metrics = pd.read_csv(out / "train" / "metrics.csv")
    assert {"step", "train/loss", "val/loss", "val/rmse_c", "val/mean_fill_rmse_c"} <= set(metrics.columns)
    assert metrics["step"].is_unique and metrics["step"].is_monotonic_increasing
    assert metrics["train/loss"].notna().sum() == 8  # every step of both runs, none twice
    assert metrics["val/rmse_c"].notna().sum() == 4  # validation every 2 steps
    assert (metrics["val/rmse_c"].dropna() > 0).all()

    payload = torch.load(model_path, weights_only=True)
    assert payload["variant"] == "eo_4band" and payload["num_bands"] == 3
    module = load_model(model_path, variant="eo_4band", config=config)
    batch = next(iter(datamodule.val_dataloader()))
    assert module.sample(batch, 2, 3).shape == (4, 2, 3, 16, 16)


def test_model_ckpt_holds_the_ema_of_the_raw_weights(tmp_path):
    decay = 0.2  # below the warm-up's 3/12 at the third update: both branches of the min are used
    config = tiny_config(tmp_path, train={"max_steps": 5, "ema_decay": decay, "val_every_n_steps": 100})
    recorder = ParamRecorder()
    out = tmp_path / "temp_v1"
    run_training(config, "temp_v1", out, datamodule=_datamodule(), callbacks=[recorder])
    assert len(recorder.history) == 5

    expected = {k: v.clone() for k, v in recorder.history[0].items()}  # the first update copies
    for n, params in enumerate(recorder.history[1:], start=1):  # n updates so far
        rate = min(decay, (1 + n) / (10 + n))
        for k in expected:
            expected[k] = rate * expected[k] + (1 - rate) * params[k]
    saved = torch.load(out / "model.ckpt", weights_only=True)["state_dict"]
    assert saved.keys() == expected.keys()
    # measured on training batches after fit (the analytic reverse variance), not averaged
    assert (saved["x0_error_table"] >= 0).all() and (expected.pop("x0_error_table") < 0).all()
    # the shrinkage of the network's correction: fitted after fit (1 while training)
    unfitted = expected.pop("output_shrinkage")
    assert torch.equal(unfitted, torch.ones_like(unfitted)) and not torch.equal(saved["output_shrinkage"], unfitted)
    for k in expected:
        assert torch.allclose(saved[k], expected[k], atol=1e-6), k
    moved = [k for k in expected if not torch.allclose(recorder.history[-1][k], expected[k])]
    assert moved  # the EMA really differs from the last raw weights

    # last.ckpt keeps the raw weights for resuming next to the average
    checkpoint = torch.load(out / "train" / "checkpoints" / "last.ckpt", weights_only=False)
    raw = checkpoint["current_model_state"]
    assert all(torch.equal(raw[k], recorder.history[-1][k]) for k in raw)


def test_persistent_nan_stops_without_a_model(tmp_path):
    datamodule = _datamodule()
    for sample in datamodule.train_set.samples:
        sample["y"] = torch.full_like(sample["y"], float("nan"))
    # the observed-mean units: the default residual units stop earlier, at the first guess's fit (below)
    config = tiny_config(tmp_path, train={"max_steps": 10, "max_nonfinite_steps": 3, "val_every_n_steps": 100},
                         model={"working_units": "observed_mean"})
    with pytest.raises(NonFiniteLossError, match="3 training steps in a row"):
        run_training(config, "temp_v1", tmp_path / "temp_v1", datamodule=datamodule)
    assert not (tmp_path / "temp_v1" / "model.ckpt").exists()


def test_nan_training_patches_stop_the_first_guess_fit_clearly(tmp_path):
    datamodule = _datamodule()
    for sample in datamodule.train_set.samples:
        sample["y"] = torch.full_like(sample["y"], float("nan"))
    config = tiny_config(tmp_path, train={"max_steps": 10})
    with pytest.raises(ValueError, match="no usable training patch .* NaN/inf on ocean pixels"):
        run_training(config, "temp_v1", tmp_path / "temp_v1", datamodule=datamodule)
    assert not (tmp_path / "temp_v1" / "model.ckpt").exists()


def test_merge_metrics_one_row_per_step_later_runs_win(tmp_path):
    root = tmp_path / "csv_logs"
    (root / "version_0").mkdir(parents=True)
    (root / "version_1").mkdir()
    pd.DataFrame({"step": [0, 1, 1, 2], "train/loss": [1.0, 0.9, None, 0.8], "val/rmse_c": [None, None, 2.0, None]}
                 ).to_csv(root / "version_0" / "metrics.csv", index=False)
    pd.DataFrame({"step": [2, 3], "train/loss": [0.7, 0.6]}).to_csv(root / "version_1" / "metrics.csv", index=False)
    merged = merge_metrics(root, tmp_path / "metrics.csv")
    assert merged["step"].tolist() == [0, 1, 2, 3]
    assert merged["train/loss"].tolist() == [1.0, 0.9, 0.7, 0.6]
    assert merged.loc[1, "val/rmse_c"] == 2.0
    assert pd.read_csv(tmp_path / "metrics.csv").shape == merged.shape


def test_truncated_last_checkpoint_is_set_aside(tmp_path):
    path = tmp_path / "last.ckpt"
    assert resumable_checkpoint(path) is None
    path.write_bytes(b"PK\x03\x04 truncated")
    assert resumable_checkpoint(path) is None
    assert not path.exists() and (tmp_path / "last.ckpt.broken").exists()


def test_the_index_given_is_the_index_trained_on(tmp_path):
    """The Snakemake rule passes the split index it declares; data_dir is not used to find it."""
    from depthdif.config import load_config
    from depthdif.data.index import PatchIndexError

    config = load_config([], {"data_dir": str(tmp_path / "nowhere")})
    given = tmp_path / "elsewhere" / "my_split.csv"
    with pytest.raises(PatchIndexError, match=r"elsewhere/my_split\.csv not found"):
        run_training(config, "temp_v1", tmp_path / "temp_v1", index_csv=given)
    with pytest.raises(PatchIndexError, match=r"nowhere/patches/patch_index_split\.csv not found"):
        run_training(config, "temp_v1", tmp_path / "temp_v1")


def test_a_resume_point_of_other_settings_is_set_aside_not_continued(tmp_path, caplog):
    """Snakemake reruns train_<variant> when its params change; the old last.ckpt must then not be resumed:
    other weight shapes (a surface variable less) crashed, a changed learning rate after the last step was
    silently ignored. Raising train.max_steps still continues (the test above)."""
    out = tmp_path / "eo_4band"
    config = tiny_config(tmp_path)
    datamodule = _datamodule("eo_4band")
    run_training(config, "eo_4band", out, datamodule=datamodule)
    checkpoints = out / "train" / "checkpoints"
    assert (out / "train" / "resume_key.json").is_file()

    config["train"]["lr"] = config["train"]["lr"] * 10
    restarted = StartStep()
    with caplog.at_level("WARNING", logger="depthdif.train"):
        run_training(config, "eo_4band", out, datamodule=datamodule, callbacks=[restarted])
    assert restarted.start_step == 0  # trained again from scratch with the new learning rate
    assert (out / "train" / "checkpoints.stale" / "last.ckpt").is_file()
    assert "starting from scratch" in caplog.text
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == config["train"]["max_steps"]
