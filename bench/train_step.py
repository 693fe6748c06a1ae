"""Training throughput: Lightning fit with the real DepthDifDataModule vs a bare PyTorch loop.

Same model, same batch size, same optimiser/clipping/EMA work per step, in one run; prints JSON lines
{"metric", "value", "unit"}. Target: Lightning >= 90 % of the bare loop (the loader and the framework
are never the bottleneck).

    python bench/train_step.py                       # makes a small synthetic export in a temp folder
    python bench/train_step.py --index-csv data/patches/patch_index_split.csv --steps 100
    python bench/train_step.py --config config/config.yaml config/glorys.yaml --accelerator gpu

The bare loop cycles over batches collected once from the same DataModule and kept in memory (already
on the device), so its speed is the model's alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from depthdif.data.dataset import unpack_batch
from depthdif.train import build_module, run_training


def emit(metric: str, value, unit: str) -> None:
    print(json.dumps({"metric": metric, "value": value, "unit": unit}), flush=True)


def make_small_export(config: dict, root: Path) -> Path:
    """Synthetic source -> export -> split for two months into ``root``; returns the split index."""
    from depthdif.download import run_download
    from depthdif.export import export_patches
    from depthdif.split import split_index

    config["data_dir"] = str(root / "data")
    config["source"].update({"kind": "synthetic", "years": [2010], "months": [1, 2]})
    manifest = run_download(config)
    index = export_patches(config, manifest, workers=1)
    return split_index(config, index)


class Throughput(Callback):
    """Samples/s of the fit between the start of step ``warmup`` and the end of the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.samples, self.start, self.end = warmup, 0, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.start is None:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.samples += batch["y"].shape[0]
            self._sync(pl_module)
            self.end = time.perf_counter()

    @staticmethod
    def _sync(module):
        if module.device.type == "cuda":
            torch.cuda.synchronize()

    @property
    def rate(self) -> float:
        return self.samples / (self.end - self.start)


def lightning_rate(config: dict, variant: str, datamodule, steps: int, warmup: int, out: Path) -> float:
    config["train"].update({"max_steps": warmup + steps, "val_every_n_steps": 10 * (warmup + steps),
                            "checkpoint_every_n_steps": 10 * (warmup + steps)})
    timer = Throughput(warmup)
    run_training(config, variant, out, datamodule=datamodule, callbacks=[timer])
    return timer.rate


def bare_rate(config: dict, variant: str, batches: list[dict], steps: int, warmup: int, device) -> float:
    """The same per-step work without Lightning or a DataLoader."""
    pl.seed_everything(int(config["seed"]))
    module = build_module(config, variant)
    if module.cokriging is not None:  # the residual units' first guess, fitted on the same batches
        from depthdif.baselines.cokriging import fit_covariance, fit_sigma_table

        cpu = [{k: v.cpu() if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
        size = int(batches[0]["y"].shape[-1])
        module.cokriging.set_statistics(fit_covariance(cpu, module.num_bands, size, 256))
        module.cokriging.set_statistics({"sigma_table": fit_sigma_table(module.cokriging, cpu, 256)})
    module = module.to(device)
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    ema = AveragedModel(module, avg_fn=get_ema_avg_fn(config["train"]["ema_decay"]), use_buffers=True)
    precision = config["train"]["precision"]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))
    module.train()
    start = None
    samples = 0
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        batch = batches[step % len(batches)]
        with autocast:
            loss = module.diffusion_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        module.on_before_optimizer_step(optimizer)
        torch.nn.utils.clip_grad_norm_(module.parameters(), config["train"]["gradient_clip_val"])
        optimizer.step()
        scheduler.step()
        ema.update_parameters(module)
        if step >= warmup:
            samples += batch["y"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="*", default=["config/config.yaml"])
    parser.add_argument("--index-csv", type=Path, default=None, help="existing split index (else a small export)")
    parser.add_argument("--variant", default="eo_4band", choices=["temp_v1", "eo_4band"])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--accelerator", default=None, help="override train.accelerator (cpu, gpu)")
    parser.add_argument("--num-workers", type=int, default=None, help="override loader.num_workers")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    from depthdif.config import (
        load_config,  # here: gpu_check.sh imports this file where jsonschema is missing
    )

    config = load_config(args.config)
    if args.accelerator:
        config["train"]["accelerator"] = args.accelerator
    if args.num_workers is not None:
        config["loader"]["num_workers"] = args.num_workers
    torch.set_num_threads(int(config["train"]["threads"]))
    if config["train"]["accelerator"] == "auto":  # resolve it, or the fit could run on a GPU and the loop not
        config["train"]["accelerator"] = "gpu" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda" if config["train"]["accelerator"] in ("gpu", "cuda") else "cpu")
    emit("device", str(device), "")

    from depthdif.data.datamodule import DepthDifDataModule

    with tempfile.TemporaryDirectory(prefix="depthdif-bench-") as tmp:
        index = args.index_csv or make_small_export(config, Path(tmp))
        datamodule = DepthDifDataModule(config, variant=args.variant, index_csv=index)
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        batches = []
        for batch in loader:  # the bare loop's in-memory copy: one pass, full batches only
            if batch["y"].shape[0] == config["loader"]["batch_size"]:
                on_device = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                batches.append(unpack_batch(on_device))  # what the DataModule's device hook hands over
            if len(batches) >= 32:
                break
        emit("batch_size", config["loader"]["batch_size"], "samples")
        emit("patch_size", int(batches[0]["y"].shape[-1]), "px")
        emit("train_patches", len(datamodule.train_set), "patches")
        emit("threads", torch.get_num_threads(), "threads")
        emit("loader_workers", config["loader"]["num_workers"], "processes")
        bare_first = bare_rate(config, args.variant, batches, args.steps, args.warmup, device)
        fit = lightning_rate(config, args.variant, datamodule, args.steps, args.warmup, Path(tmp) / "run")
        bare_second = bare_rate(config, args.variant, batches, args.steps, args.warmup, device)
    bare = (bare_first + bare_second) / 2  # before and after the fit: shared machines drift
    emit("bare_loop_samples_per_s", round(bare, 2), "samples/s")
    emit("bare_loop_spread", round(abs(bare_first - bare_second) / bare, 3), "fraction")
    emit("lightning_fit_samples_per_s", round(fit, 2), "samples/s")
    emit("lightning_vs_bare", round(fit / bare, 3), "fraction (target >= 0.9)")


if __name__ == "__main__":
    main()
