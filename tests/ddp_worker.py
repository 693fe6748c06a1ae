"""Entry point of the DDP tests (tests/test_ddp.py): one 2-process CPU run of ``run_training``.

    python tests/ddp_worker.py OUT_DIR RECORD_DIR

Lightning's ``ddp`` strategy starts the other rank by re-running this very command line (``sys.argv``),
which is why it cannot run inside pytest. Every rank writes ``RECORD_DIR/rank<r>.pt`` (see
:class:`RankRecorder`); rank 0 alone should write ``OUT_DIR/model.ckpt``.

The helpers here are shared with the single-process reference run that the tests do in-process.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from unittest import mock

import torch
from batch_factory import TinyDataModule, tiny_config
from lightning.pytorch.callbacks import Callback

import depthdif.models.module as module_code
from depthdif.models.module import DepthDifModule
from depthdif.train import DepthDifEMA, run_training

PER_RANK_BATCH = 2
WORLD_SIZE = 2
TRAIN_SIZE = PER_RANK_BATCH * WORLD_SIZE  # one global batch per epoch: step 1 sees every sample once
VAL_SIZE = 4
MAX_STEPS = 4
RECORDED_STEPS = 3  # zero-initialised output layers: only step 3 sends gradient into every layer


def ddp_config(tmp_root: Path, devices: int = WORLD_SIZE, batch_size: int = PER_RANK_BATCH,
               max_steps: int = MAX_STEPS, val_every_n_steps: int = 2) -> dict:
    """Tiny network (dim 8, dim_mults [1, 2], 16x16), constant lr (no warm-up), 1 thread per process."""
    return tiny_config(
        tmp_root,
        loader={"batch_size": batch_size},
        train={
            "accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto",
            "threads": 1, "max_steps": max_steps, "warmup_steps": 0, "min_lr_ratio": 1.0,
            "val_every_n_steps": val_every_n_steps, "val_samples": PER_RANK_BATCH,
            "checkpoint_every_n_steps": 2,
        },
    )


def ddp_datamodule(batch_size: int = PER_RANK_BATCH) -> TinyDataModule:
    """temp_v1 patches with an id, a fixed noise field and timestep per training sample, and one shared mask.

    The masks are shared so that every sample has the same number of hidden ocean pixels: the loss
    (masked_mse) divides by the batch's pixel count, so the mean of two per-rank losses equals the loss
    of their union only when both halves count the same pixels.
    """
    datamodule = TinyDataModule("temp_v1", train_size=TRAIN_SIZE, val_size=VAL_SIZE, batch_size=batch_size,
                                size=16, seed=3)
    generator = torch.Generator().manual_seed(11)
    template = datamodule.train_set.samples[0]
    for index, sample in enumerate(datamodule.train_set.samples):
        sample["land_mask"] = template["land_mask"].clone()
        sample["valid_mask"] = template["valid_mask"].clone()
        sample["y"] = sample["y"] * sample["land_mask"]
        sample["x"] = sample["y"] * sample["valid_mask"]
        sample["sample_id"] = torch.tensor(index)
        sample["fixed_noise"] = torch.randn(sample["y"].shape, generator=generator)
        sample["fixed_t"] = torch.randint(0, 1000, (), generator=generator)
    return datamodule


_original_diffusion_loss = DepthDifModule.diffusion_loss


def _diffusion_loss_with_fixed_noise(self: DepthDifModule, batch: Mapping, generator=None) -> torch.Tensor:
    """The real ``diffusion_loss``, with the noise and timesteps taken from the batch when it carries them.

    Why: every rank draws its training noise from its own RNG, so the noise a sample gets depends on its
    position in the rank's batch; a 2-rank run and a 1-process run on the same global batch would then
    never see the same noise. Noise attached to each sample makes the loss a function of the data alone.
    """
    if "fixed_noise" not in batch:  # validation batches keep the module's seeded generator
        return _original_diffusion_loss(self, batch, generator)
    noise, timesteps = batch["fixed_noise"], batch["fixed_t"]

    def randn_tensor(shape, **kwargs):
        assert tuple(shape) == tuple(noise.shape), (shape, noise.shape)
        return noise

    def sample_timesteps(batch_size, device, generator=None):
        assert batch_size == timesteps.shape[0]
        return timesteps.cpu()

    with mock.patch.object(module_code, "randn_tensor", randn_tensor), \
            mock.patch.object(self.diffusion, "sample_timesteps", sample_timesteps):
        return _original_diffusion_loss(self, batch, generator)


@contextlib.contextmanager
def fixed_noise_training() -> Iterator[None]:
    with mock.patch.object(DepthDifModule, "diffusion_loss", _diffusion_loss_with_fixed_noise):
        yield


class RankRecorder(Callback):
    """What one rank saw and ended with, saved to ``record_dir/rank<global_rank>.pt`` at the end of fit.

    For each of the first ``RECORDED_STEPS`` steps: ids (the rank's batch), losses (its local loss), grads
    (what the optimiser got, i.e. after DDP's all-reduce) and weights (raw, after the step). At the end:
    state_dict / ema_state_dict (raw and averaged weights), val_sums (the rank's own, not reduced, sums of
    the last validation) and callback_metrics (what the trainer holds).
    """

    def __init__(self, record_dir: Path):
        self.record_dir = Path(record_dir)
        self.record: dict = {"ids": [], "losses": [], "grads": [], "weights": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step < RECORDED_STEPS:
            self.record["ids"].append(batch["sample_id"].tolist())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step < RECORDED_STEPS:
            self.record["grads"].append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step <= RECORDED_STEPS:  # global_step counts the step just taken
            self.record["losses"].append(float(outputs["loss"]))
            self.record["weights"].append(_copy(pl_module.state_dict()))

    def on_validation_epoch_end(self, trainer, pl_module):
        # runs before the module's hook; its sums are per rank (the module reduces a stacked copy)
        self.record["val_sums"] = {"sse": pl_module._val_sse.clone(), "count": pl_module._val_count.clone()}

    def on_train_end(self, trainer, pl_module):
        ema = next(cb for cb in trainer.callbacks if isinstance(cb, DepthDifEMA))
        self.record.update(
            global_rank=trainer.global_rank,
            world_size=trainer.world_size,
            global_step=trainer.global_step,
            state_dict=_copy(pl_module.state_dict()),
            ema_state_dict=_copy(ema.averaged_state_dict()),
            callback_metrics={k: float(v) for k, v in trainer.callback_metrics.items()},
        )
        self.record_dir.mkdir(parents=True, exist_ok=True)
        torch.save(self.record, self.record_dir / f"rank{trainer.global_rank}.pt")


def _copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def main(out_dir: str, record_dir: str) -> None:
    out = Path(out_dir)
    config = ddp_config(out.parent)
    with fixed_noise_training():
        run_training(config, "temp_v1", out, datamodule=ddp_datamodule(), callbacks=[RankRecorder(Path(record_dir))])


if __name__ == "__main__":
    main(*sys.argv[1:3])
