"""Multi-process (DDP) training on CPU: 2 gloo ranks through ``run_training`` (issue 6).

One 2-rank run of tests/ddp_worker.py (train.devices 2, train.strategy ddp, 4 steps, validation at
steps 2 and 4) is shared by the tests; each rank saves what it saw and ended with (see
``ddp_worker.RankRecorder``). Lightning's ``ddp`` launcher re-runs ``sys.argv`` for the other rank, so
the run has to be a script of its own, not pytest.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from ddp_worker import (
    MAX_STEPS,
    RECORDED_STEPS,
    TRAIN_SIZE,
    RankRecorder,
    ddp_config,
    ddp_datamodule,
    fixed_noise_training,
)

from depthdif.data.normalization import temperature_error_to_celsius
from depthdif.train import run_training

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> dict:
    """Run the 2-rank training once; its output folder and both ranks' records."""
    root = tmp_path_factory.mktemp("ddp")
    out, records = root / "temp_v1", root / "records"
    # no SLURM_* from an outer job: this is the plain single-machine launch (docs/hpc.md covers SLURM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run([sys.executable, str(WORKER), str(out), str(records)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"DDP worker failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    ranks = [torch.load(records / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return {"root": root, "out": out, "ranks": ranks}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _assert_same_tensors(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if tolerance:
            torch.testing.assert_close(a[key], b[key], **tolerance, msg=lambda m, key=key: f"{key}: {m}")
        else:
            assert torch.equal(a[key], b[key]), f"{key} differs"


def test_both_ranks_end_identical_and_only_rank0_writes(ddp_run):
    rank0, rank1 = ddp_run["ranks"]
    assert (rank0["global_rank"], rank1["global_rank"]) == (0, 1)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["global_step"] == rank1["global_step"] == MAX_STEPS
    # the ranks trained on different halves of the data, so their local losses differed ...
    for step in range(RECORDED_STEPS):
        assert set(rank0["ids"][step]).isdisjoint(rank1["ids"][step])
        assert sorted(rank0["ids"][step] + rank1["ids"][step]) == list(range(TRAIN_SIZE))
        assert rank0["losses"][step] != rank1["losses"][step]
        # ... and still got bit-identical gradients and weights: DDP all-reduced them
        _assert_same_tensors(rank0["grads"][step], rank1["grads"][step])
        _assert_same_tensors(rank0["weights"][step], rank1["weights"][step])
    _assert_same_tensors(rank0["state_dict"], rank1["state_dict"])
    _assert_same_tensors(rank0["ema_state_dict"], rank1["ema_state_dict"])
    final, recorded = rank0["state_dict"], rank0["weights"][-1]
    assert any(not torch.equal(final[k], recorded[k]) for k in final)  # it trained on to the last step

    # exactly one model.ckpt, written by rank 0: the EMA average both ranks agree on
    assert [p.relative_to(ddp_run["root"]) for p in ddp_run["root"].rglob("model.ckpt")] == [
        Path("temp_v1/model.ckpt")]
    payload = torch.load(ddp_run["out"] / "model.ckpt", weights_only=True)
    assert payload["variant"] == "temp_v1"
    # the saved model adds the network's x0 error by timestep, measured by rank 0 after fit (analytic variance)
    saved = dict(payload["state_dict"])
    measured = saved.pop("x0_error_table")
    assert (measured >= 0).all() and (rank1["ema_state_dict"]["x0_error_table"] < 0).all()
    # and the shrinkage of the network's correction, fitted after fit too (1 = unfitted during training)
    shrinkage = saved.pop("output_shrinkage")
    assert not torch.equal(shrinkage, torch.ones_like(shrinkage))
    assert torch.equal(rank1["ema_state_dict"]["output_shrinkage"], torch.ones_like(shrinkage))
    fitted = ("x0_error_table", "output_shrinkage")
    _assert_same_tensors(saved, {k: v for k, v in rank1["ema_state_dict"].items() if k not in fitted})

    # one logger folder, every global step logged once (not once per rank)
    train = ddp_run["out"] / "train"
    assert [p.name for p in (train / "csv_logs").iterdir()] == ["version_0"]
    assert (train / "checkpoints" / "last.ckpt").is_file()
    metrics = pd.read_csv(train / "metrics.csv")
    assert metrics["train/loss"].notna().sum() == MAX_STEPS
    assert metrics["val/rmse_c"].notna().sum() == MAX_STEPS // 2


def test_ddp_steps_match_one_process_on_the_global_batch(ddp_run, tmp_path, restore_threads):
    """The first 3 steps of the 2-rank run (2 samples per rank) against one process with batches of 4.

    Every global batch of the DDP run holds all 4 training samples (in a new split each epoch), so the
    single process, given the same 4 samples in one batch, must take the same steps.

    DDP averages the ranks' gradients; with per-rank losses that are means over equally many pixels,
    that average is the gradient of the loss of the union, i.e. of the single-process batch. Two things
    would break the comparison and are fixed by ddp_worker: (1) the diffusion noise and timestep a sample
    gets depend on the RNG of its rank and its position in the batch, so each sample carries its own
    fixed noise and timestep; (2) masked_mse divides by the batch's hidden-pixel count, so all training
    samples share one mask (with unequal counts DDP averages per-rank means, a pixel-weighted mean that
    differs slightly from the single-process one). Gradients are compared, not just weights: AdamW's
    first step is ~lr * sign(grad), so weights alone would hide a wrongly scaled (e.g. summed) gradient.
    Three steps because the network's output layers start at zero: step 1 gives gradient to the output
    conv and FiLM outputs alone, step 2 not yet to the FiLM MLPs' inner layers, step 3 to every parameter.
    """
    rank0, rank1 = ddp_run["ranks"]
    recorder = RankRecorder(tmp_path / "records")
    config = ddp_config(tmp_path, devices=1, batch_size=TRAIN_SIZE, max_steps=RECORDED_STEPS,
                        val_every_n_steps=100)
    with fixed_noise_training():
        run_training(config, "temp_v1", tmp_path / "temp_v1", datamodule=ddp_datamodule(TRAIN_SIZE),
                     callbacks=[recorder])
    single = recorder.record
    assert [sorted(ids) for ids in single["ids"]] == [list(range(TRAIN_SIZE))] * RECORDED_STEPS

    untouched = [k for k, g in rank0["grads"][-1].items() if not g.any()]
    assert not untouched, f"step {RECORDED_STEPS} left these without gradient: {untouched}"
    for step in range(RECORDED_STEPS):
        mean_loss = (rank0["losses"][step] + rank1["losses"][step]) / 2
        assert single["losses"][step] == pytest.approx(mean_loss, rel=1e-5), step
        _assert_same_tensors(rank0["grads"][step], single["grads"][step], rtol=1e-4, atol=1e-6)
        _assert_same_tensors(rank0["weights"][step], single["weights"][step], rtol=0, atol=1e-5)


def test_validation_metrics_are_reduced_over_ranks(ddp_run):
    """val/rmse_c pools the squared errors of both ranks' validation shards, and both ranks log it."""
    rank0, rank1 = ddp_run["ranks"]
    local = [float(temperature_error_to_celsius(math.sqrt(r["val_sums"]["sse"].sum() / r["val_sums"]["count"].sum())))
             for r in (rank0, rank1)]
    assert local[0] != pytest.approx(local[1], rel=1e-3)  # the shards differ, so a missing reduce would show
    sse = rank0["val_sums"]["sse"].sum() + rank1["val_sums"]["sse"].sum()
    count = rank0["val_sums"]["count"].sum() + rank1["val_sums"]["count"].sum()
    pooled = float(temperature_error_to_celsius(math.sqrt(sse / count)))

    for key in ("val/rmse_c", "val/loss", "val/mean_fill_rmse_c"):
        assert rank0["callback_metrics"][key] == rank1["callback_metrics"][key], key
    assert rank0["callback_metrics"]["val/rmse_c"] == pytest.approx(pooled, rel=1e-5)
    logged = pd.read_csv(ddp_run["out"] / "train" / "metrics.csv")["val/rmse_c"].dropna()
    assert logged.iloc[-1] == pytest.approx(pooled, rel=1e-5)
