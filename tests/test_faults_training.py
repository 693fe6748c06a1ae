"""Fault matrix, loader and training side: non-finite values, a killed training run.

Cases already proven elsewhere (a persistent NaN stops the run without a model, a truncated last.ckpt is
set aside, NaN weights are never saved) are listed with their tests in docs/guarantees.md.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from batch_factory import TinyDataModule, tiny_config
from lightning.pytorch.callbacks import Callback
from patch_factory import small_config, write_patch_set

from depthdif.data.dataset import PatchDataset
from depthdif.models.module import load_model
from depthdif.train import LAST_CKPT, run_training

SIZE = 16
TRAIN_SCRIPT = """
import sys
from pathlib import Path

import yaml

from depthdif.config import validate_config
from depthdif.train import run_training

config = validate_config(yaml.safe_load(Path(sys.argv[1]).read_text()))
run_training(config, sys.argv[2], Path(sys.argv[3]))
"""


def global_step_of(checkpoint: Path) -> int:
    # Lightning's checkpoint is plain data: it loads without unpickling arbitrary objects
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])


class StartStep(Callback):
    def __init__(self) -> None:
        self.start_step: int | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_step = trainer.global_step


class FiniteWatch(Callback):
    """Counts batches with non-finite targets and checks the raw weights after every step."""

    def __init__(self) -> None:
        self.bad_batches = 0
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.bad_batches += int(not torch.isfinite(batch["y"]).all())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1
        bad = [n for n, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        assert not bad, f"non-finite weights after step {trainer.global_step}: {bad[:3]}"


# ------------------------------------------------------------------------------ non-finite values


@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_nan_and_inf_in_a_patch_never_reach_the_batch(tmp_path, variant, split):
    csv = write_patch_set(tmp_path, size=SIZE, land=False)  # no land: only the poisoned pixel lacks data
    frame = pd.read_csv(csv)
    where = {}
    for k, relative in enumerate(frame["y_npy_path"]):
        patch = np.load(csv.parent / relative)
        where[k] = (1 + k % 5, 2)
        patch[(slice(None), *where[k])] = (np.inf, -np.inf, np.nan, np.inf)[: patch.shape[0]]
        np.save(csv.parent / relative, patch)
    dataset = PatchDataset(csv, small_config(tmp_path, dataset_variant=variant), split, variant)
    assert len(dataset) > 0
    for item, row in enumerate(dataset.frame.index):
        sample = dataset[item]
        for key, value in sample.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all(), (key, item)
        land = sample["land_mask"]
        assert int((land == 0).sum()) == land.shape[0]  # exactly the poisoned pixel of each band is no data
        if split == "val":  # not augmented: it is where it was written
            assert (land[(slice(None), *where[row])] == 0).all()


def test_isolated_inf_batch_is_skipped_and_the_model_stays_finite(tmp_path, caplog):
    datamodule = TinyDataModule("temp_v1", train_size=8, val_size=4, batch_size=4, size=SIZE)
    sample = datamodule.train_set.samples[0]
    hidden = ((1 - sample["valid_mask"]) * sample["land_mask"]).nonzero()[0]
    sample["y"][tuple(hidden)] = float("inf")  # a hidden ocean pixel: it enters the loss
    # two batches per epoch, one of them bad: never max_nonfinite_steps (3) bad steps in a row
    config = tiny_config(tmp_path, train={"max_steps": 4, "max_nonfinite_steps": 3, "val_every_n_steps": 100})
    watch = FiniteWatch()
    out = tmp_path / "temp_v1"
    with caplog.at_level(logging.WARNING, logger="depthdif"):
        model_path = run_training(config, "temp_v1", out, datamodule=datamodule, callbacks=[watch])

    skipped = [r for r in caplog.records if "update skipped" in r.getMessage()]
    assert watch.steps == 4 and watch.bad_batches == 2
    assert len(skipped) == watch.bad_batches  # every bad step said so, and only those
    state = torch.load(model_path, weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    load_model(model_path, variant="temp_v1", config=config)


# -------------------------------------------------------------------------- killed training, resume


@pytest.mark.slow
def test_training_killed_after_a_checkpoint_resumes_from_it_and_the_step_count_continues(tmp_path):
    write_patch_set(tmp_path / "data", size=SIZE)
    config = tiny_config(
        tmp_path, train={"max_steps": 10_000, "checkpoint_every_n_steps": 2, "val_every_n_steps": 10_000}
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "results" / "temp_v1"
    last = out / "train" / "checkpoints" / LAST_CKPT

    proc = subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, str(config_file), "temp_v1", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 150
    while not last.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"training ended (rc {proc.returncode}) before a checkpoint: {proc.stderr.read()[-2000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no last.ckpt within 150 s")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()

    assert proc.returncode == -signal.SIGKILL
    assert not (out / "model.ckpt").exists()  # a killed run leaves no model that looks finished
    killed_at = global_step_of(last)  # complete: Lightning writes it atomically
    assert 2 <= killed_at < 10_000 and killed_at % 2 == 0

    config["train"]["max_steps"] = killed_at + 2
    start = StartStep()
    model_path = run_training(config, "temp_v1", out, callbacks=[start])

    assert start.start_step == killed_at  # resumed, not restarted
    assert global_step_of(last) == killed_at + 2
    assert not list(last.parent.glob("*.broken"))  # the checkpoint was readable, nothing set aside
    assert sorted(p.name for p in (out / "train" / "csv_logs").iterdir()) == ["version_0", "version_1"]
    steps = pd.read_csv(out / "train" / "metrics.csv").dropna(subset=["train/loss"])["step"]
    assert steps.is_unique and steps.max() == killed_at + 1  # Lightning logs steps from 0
    load_model(model_path, variant="temp_v1", config=config)
