"""Train one variant: the body of the ``train_<variant>`` rules.

``run_training(config, variant, out_dir)`` writes
    out_dir/model.ckpt                       EMA weights, plain dict (torch.load(weights_only=True))
    out_dir/train/metrics.csv                one row per logged step, every run of this folder merged
    out_dir/train/checkpoints/last.ckpt      full trainer state; a rerun resumes from it
    out_dir/train/checkpoints/best-*.ckpt    best val/rmse_c so far
    out_dir/train/csv_logs/version_*/        Lightning's raw CSV logs, one folder per (re)start
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging
from lightning.pytorch.loggers import CSVLogger

from depthdif.atomic import atomic_to_csv, atomic_write_text
from depthdif.layout import MODEL_NAME, data_layout_of
from depthdif.models.module import (
    VARIANTS,
    CheckpointError,
    DepthDifModule,
    model_settings,
    num_target_bands,
    save_model,
)

log = logging.getLogger(__name__)

LAST_CKPT = "last.ckpt"
# training batches the shrinkage of the network's output is fitted on (50 timestep bins each): 16 left the
# factor at t = T noisy (0.83 vs 0.28 with 48 on the default temp_v1 model); 32 costs ~1 min per variant on CPU
SHRINKAGE_BATCHES = 32


def warmup_ema(decay: float):
    """EMA update with the usual warm-up: the decay after n updates is min(decay, (1 + n) / (10 + n)).

    Why not Lightning's EMAWeightAveraging with its fixed decay: on the default CPU run (a few hundred
    steps) the fixed 0.995 average still carried the first, untrained weights; at step 200 (eo_4band,
    before the model worked in anomaly units) its val/loss was 0.056 against 0.0085 for the raw weights
    and its DDIM val RMSE 3.0 °C against 1.2 °C. With the warm-up the average follows the fast early
    progress and only smooths later. The warm-up is that of TensorFlow's ``ExponentialMovingAverage``
    (``num_updates``).

    Args:
        decay: the decay the warm-up tends to (``train.ema_decay``), e.g. 0.995.

    Returns:
        ``avg_fn(averaged, current, num_averaged) -> averaged`` for ``torch.optim.swa_utils.AveragedModel``
        (each a parameter tensor of any shape; ``num_averaged`` a scalar tensor, the updates so far).
    """

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = num_averaged.to(averaged.dtype)  # a tensor: no GPU sync per parameter
        rate = torch.clamp((1 + n) / (10 + n), max=decay)
        return averaged * rate + current * (1 - rate)

    return average


class DepthDifEMA(WeightAveraging):
    """Lightning's weight-averaging callback (the machinery of its EMAWeightAveraging: validation runs on
    the average, checkpoints hold both sets, resume restores both) with :func:`warmup_ema`, and with the
    raw weights left in the module when fit ends.

    Why the last point: the parent copies the average over the raw weights in ``on_train_end``, and
    ModelCheckpoint then writes that into last.ckpt as the *raw* state, so a run resumed with a larger
    train.max_steps would continue from the average instead of the optimiser's weights.
    ``run_training`` reads the average from :meth:`averaged_state_dict` instead.

    Args:
        decay: the EMA decay after the warm-up (``train.ema_decay``), see :func:`warmup_ema`.
    """

    def __init__(self, decay: float):
        super().__init__(use_buffers=True, avg_fn=warmup_ema(decay))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning hook: leave the raw weights in the module (the parent would copy the average over them)."""

    def averaged_state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA weights (and buffers) of the module.

        Returns:
            A state dict of the averaged module, keys as ``DepthDifModule.state_dict()``.

        Raises:
            RuntimeError: no average yet (called before ``trainer.fit``).
        """
        if self._average_model is None:
            raise RuntimeError("the EMA callback has no average yet: call it only after trainer.fit")
        return self._average_model.module.state_dict()


def build_module(config: Mapping, variant: str, depth_values_m: Sequence[float] | None = None) -> DepthDifModule:
    """A fresh (untrained) module for ``variant`` sized by ``config``.

    Args:
        config: the validated run config.
        variant: ``temp_v1`` or ``eo_4band``.
        depth_values_m: depth (m) of each exported channel (the patch index's ``depth_values``), stored in
            model.ckpt so that reconstruct finds the model's levels by value; see ``model_settings``.

    Returns:
        The untrained module.

    Raises:
        CheckpointError: unknown variant, or depths that do not fit ``export.depth_indices``.
    """
    if variant not in VARIANTS:
        raise CheckpointError(f"unknown variant {variant!r}; use one of {list(VARIANTS)}.")
    train_config = {**config["train"], "seed": int(config["seed"])}
    return DepthDifModule(model_settings(config, variant, depth_values_m), train_config,
                          num_target_bands(config, variant))


def training_depths(datamodule: pl.LightningDataModule) -> tuple[float, ...] | None:
    """Depths (m) of the exported channels from the datamodule's patch index, or None if it has none.

    A datamodule without a patch index (tests' in-memory ones) gives a model that cannot be applied to
    observation files, since nothing says which levels its bands are; this is logged.

    Args:
        datamodule: the training datamodule (set up for ``fit`` here when it has ``depth_values_m``).

    Returns:
        (C,) depth of each exported channel, m; None when the datamodule has no patch index.
    """
    if hasattr(datamodule, "depth_values_m"):
        datamodule.setup("fit")  # reads the index; Lightning's own setup call then does nothing
    depths = getattr(datamodule, "depth_values_m", None)
    if depths is None:
        log.warning("the datamodule gives no depth_values (no patch index): model.ckpt will not record the depths "
                    "of its bands and `depthdif reconstruct` will refuse it")
    return depths


def default_datamodule(config: Mapping, variant: str, index_csv: Path | None = None) -> pl.LightningDataModule:
    """The patch datamodule of a run (:class:`depthdif.data.datamodule.DepthDifDataModule`).

    Args:
        config: the validated run config.
        variant: ``temp_v1`` or ``eo_4band``.
        index_csv: the split index; default ``{data_dir}/patches/patch_index_split.csv``.

    Returns:
        The datamodule (not set up yet).
    """
    # imported here: the data side is heavy and tests inject their own datamodule
    from depthdif.data.datamodule import DepthDifDataModule

    return DepthDifDataModule(config, variant=variant, index_csv=index_csv)


def checkpoint_callbacks(checkpoint_dir: Path, every_n_steps: int) -> list[ModelCheckpoint]:
    """``last.ckpt`` every N steps (for resuming) and the best on val/rmse_c.

    The best-checkpoint callback rewrites last.ckpt as well whenever it saves a new best: the
    every-N-steps save runs before validation at the same step, and a run resumed from that file would
    not know the best file written just after it (it would stay on disk forever and the best score
    would be stale). Both write the same name, so the version counter (last-v1.ckpt) is off.

    Args:
        checkpoint_dir: ``{out_dir}/train/checkpoints``.
        every_n_steps: ``train.checkpoint_every_n_steps``.

    Returns:
        The two callbacks: every-N-steps ``last.ckpt``, and ``best-step<NNNNNN>.ckpt`` on the lowest
        ``val/rmse_c`` (°C).
    """
    last = ModelCheckpoint(
        dirpath=checkpoint_dir,
        save_last=True,
        save_top_k=0,
        every_n_train_steps=every_n_steps,
        enable_version_counter=False,
    )
    best = ModelCheckpoint(
        dirpath=checkpoint_dir,
        save_last=True,
        enable_version_counter=False,
        monitor="val/rmse_c",
        mode="min",
        save_top_k=1,
        filename="best-step{step:06d}",
        auto_insert_metric_name=False,
    )
    return [last, best]


RESUME_KEY = "resume_key.json"  # in train/, beside checkpoints/ (Lightning clears other files from there)


def resume_key(module: DepthDifModule, index_csv: Path | None) -> dict:
    """What a resume point must share with this training to be continued: the module's settings (network,
    dataset facts, surface variables) and training settings but ``train.max_steps`` (raising it continues a
    finished run), and the SHA-256 of the split index it trains on (None for an in-memory datamodule).

    Args:
        module: the freshly built module of this training.
        index_csv: the split index the datamodule reads, or None.

    Returns:
        A JSON-able dict, written as ``train/resume_key.json``.
    """
    hparams = json.loads(json.dumps(dict(module.hparams), default=str, sort_keys=True))
    hparams.get("train_config", {}).pop("max_steps", None)
    digest = hashlib.sha256(Path(index_csv).read_bytes()).hexdigest() if index_csv is not None else None
    return {"hparams": hparams, "index_sha256": digest}


def resumable_checkpoint(path: Path, key: dict | None = None) -> Path | None:
    """``path`` if it exists, is readable and belongs to this training; a truncated file (killed while writing)
    is set aside, and so is the whole checkpoint folder of a run made with other settings or data.

    Snakemake reruns ``train_<variant>`` when its params or inputs change, but ``last.ckpt`` of the previous
    run stays: resuming from it would either fail on other weight shapes (a surface variable more or less) or
    silently keep the old run (a changed learning rate after the last step).

    Args:
        path: ``train/checkpoints/last.ckpt``.
        key: :func:`resume_key` of this training; None skips the check.

    Returns:
        ``path``, or None when it is missing, unreadable (then renamed to ``last.ckpt.broken``) or from another
        run (then its folder is renamed to ``checkpoints.stale``, replacing an older one).
    """
    if not path.is_file():
        return None
    if key is not None:
        stored = path.parent.parent / RESUME_KEY
        previous = json.loads(stored.read_text()) if stored.is_file() else None
        if previous != key:
            stale = path.parent.with_name(path.parent.name + ".stale")
            shutil.rmtree(stale, ignore_errors=True)
            path.parent.replace(stale)
            why = "no record of its settings" if previous is None else "other settings or another split index"
            log.warning("%s was written by a training with %s; moved %s to %s and starting from scratch",
                        path, why, path.parent, stale)
            return None
    try:
        torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as err:  # truncated zip, unpickling error, ...
        broken = path.with_suffix(".ckpt.broken")
        path.replace(broken)
        log.warning("%s is unreadable (%s); moved it to %s and starting from scratch", path, err, broken)
        return None
    return path


def make_trainer(config: Mapping, out_dir: Path, callbacks: Sequence[Callback] = ()) -> pl.Trainer:
    """The Lightning trainer of a run, configured from ``config["train"]``.

    Validation runs every ``train.val_every_n_steps`` steps on about ``train.val_samples`` patches, on the EMA
    weights (:class:`DepthDifEMA`); logs go to ``{out_dir}/train/csv_logs``, checkpoints to
    ``{out_dir}/train/checkpoints`` (:func:`checkpoint_callbacks`).

    Args:
        config: the validated run config (``train`` and ``loader.batch_size``).
        out_dir: the variant's folder (``results/<variant>``).
        callbacks: extra callbacks (tests).

    Returns:
        The trainer.
    """
    tc, batch_size = config["train"], config["loader"]["batch_size"]
    train_dir = out_dir / "train"
    return pl.Trainer(
        max_steps=tc["max_steps"],
        max_time={"minutes": tc["max_time_minutes"]} if tc["max_time_minutes"] else None,
        accelerator=tc["accelerator"],
        devices=tc["devices"],
        num_nodes=tc["num_nodes"],
        strategy=tc["strategy"],
        precision=tc["precision"],
        gradient_clip_val=tc["gradient_clip_val"] or None,
        val_check_interval=tc["val_every_n_steps"],
        check_val_every_n_epoch=None,  # count validation in steps across epochs
        limit_val_batches=max(1, math.ceil(tc["val_samples"] / batch_size)),
        num_sanity_val_steps=0,  # a sanity pass would cost a full DDIM run for nothing
        log_every_n_steps=tc["log_every_n_steps"],
        logger=CSVLogger(save_dir=train_dir, name="csv_logs"),
        callbacks=[
            DepthDifEMA(decay=tc["ema_decay"]),
            *checkpoint_callbacks(train_dir / "checkpoints", tc["checkpoint_every_n_steps"]),
            *callbacks,
        ],
        default_root_dir=train_dir,
        enable_model_summary=True,
        plugins=cluster_plugins(tc),
    )


def cluster_plugins(tc: Mapping) -> list:
    """Inside a SLURM job on one node, let Lightning start its own DDP processes.

    The Snakemake SLURM executor runs a job as one `srun` task; Lightning's SLURM detection would then
    demand ntasks == devices and refuse. With LightningEnvironment it launches `devices` processes itself.
    Multi-node runs keep Lightning's SLURMEnvironment (one srun task per device, see docs/hpc.md).

    Args:
        tc: ``config["train"]`` (``num_nodes``).

    Returns:
        ``[LightningEnvironment()]`` inside a one-node SLURM job, else ``[]``.
    """
    if "SLURM_JOB_ID" in os.environ and int(tc["num_nodes"]) == 1:
        from lightning.pytorch.plugins.environments import LightningEnvironment

        return [LightningEnvironment()]
    return []


def merge_metrics(csv_log_root: Path, target: Path) -> pd.DataFrame:
    """One row per step from every ``version_*/metrics.csv`` (Lightning writes train and val rows apart).

    Versions are read in order, so where a resumed run re-logged a step its values win.

    Args:
        csv_log_root: ``train/csv_logs``, Lightning's CSVLogger folder.
        target: the merged CSV to write, atomically (``train/metrics.csv``).

    Returns:
        The merged table, one row per ``step`` (a ``step`` column alone when nothing was logged).
    """
    files = sorted(csv_log_root.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    frames = [pd.read_csv(f) for f in files if f.stat().st_size > 0]
    if frames:
        merged = pd.concat(frames, ignore_index=True).groupby("step", sort=True).last().reset_index()
    else:
        merged = pd.DataFrame({"step": pd.Series(dtype="int64")})
    atomic_to_csv(merged, target)
    return merged


def training_batches(datamodule: pl.LightningDataModule, batch_size: int, seed: int):
    """Training batches as the module sees them (unpacked, surface field degraded as in training), in an order
    fixed by ``seed`` so that every DDP rank fits the same statistics.

    Args:
        datamodule: the training datamodule (set up for ``fit`` here).
        batch_size: patches per batch.
        seed: the shuffling seed.

    Yields:
        Unpacked batches of the batch contract (:mod:`depthdif.data.dataset`): ``y``, ``x``, ``valid_mask``,
        ``land_mask`` (B, C, H, W) float32, temperatures in z-scores of Kelvin, and for eo_4band ``eo``,
        ``eo_available``, ``surface``; in the loader's own order for a datamodule without a ``train_set``.
    """
    from depthdif.data.dataset import collate, unpack_batch

    datamodule.setup("fit")
    train_set = getattr(datamodule, "train_set", None)
    if train_set is None:  # a datamodule without the standard dataset (tests): its own loader
        loader = datamodule.train_dataloader()
    else:
        loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                             generator=torch.Generator().manual_seed(seed))
    for batch in loader:
        yield unpack_batch(dict(batch))


def fit_first_guess(module: DepthDifModule, datamodule: pl.LightningDataModule, config: Mapping) -> None:
    """Fit the cokriging first guess on the training split: covariances from complete patches, then the
    posterior-sigma table from the estimator's own errors on other training batches (see
    :mod:`depthdif.baselines.cokriging`). Stored in the module's buffers, hence in model.ckpt.

    Args:
        module: the untrained module; its ``cokriging`` estimator gets the statistics.
        datamodule: the training datamodule.
        config: the validated run config (``model.first_guess_fit_samples``, ``seed``, ``export.patch_size``,
            ``loader.batch_size``).

    Raises:
        FirstGuessFitError: no usable training patch, or patches of another size than ``export.patch_size``.
    """
    from depthdif.baselines.cokriging import fit_covariance, fit_sigma_table

    samples = int(config["model"]["first_guess_fit_samples"])
    seed = int(config["seed"])
    size = int(config["export"]["patch_size"])
    estimator = module.cokriging
    batch_size = int(config["loader"]["batch_size"])
    batches = training_batches(datamodule, batch_size, seed)
    estimator.set_statistics(fit_covariance(batches, module.num_bands, size, samples, estimator.surface_smoothing_px))
    batches = training_batches(datamodule, batch_size, seed + 1)  # other masks than the covariance saw
    estimator.set_statistics({"sigma_table": fit_sigma_table(estimator, batches, samples)})


def fit_surface_scale(module: DepthDifModule, datamodule: pl.LightningDataModule, config: Mapping) -> None:
    """Set ``module.surface_scale`` (S,) to the root-mean-square anomaly of each surface variable over a patch
    (field minus its patch mean, ocean pixels with a surface), on up to ``model.first_guess_fit_samples``
    training patches: the network then sees sea level in units of its own typical mesoscale signal, whatever
    its physical unit. Stored in model.ckpt.

    Args:
        module: the untrained module, with surface variables.
        datamodule: the training datamodule.
        config: the validated run config (``model.first_guess_fit_samples``, ``loader.batch_size``, ``seed``).

    Raises:
        FirstGuessFitError: no training patch has a surface field (all dropped, or all land).
    """
    from depthdif.baselines.cokriging import FirstGuessFitError
    from depthdif.models.module import observed_mean

    samples = int(config["model"]["first_guess_fit_samples"])
    squares = torch.zeros(len(module.surface_variables), dtype=torch.float64)
    pixels, seen = 0.0, 0
    for batch in training_batches(datamodule, int(config["loader"]["batch_size"]), int(config["seed"])):
        present = (batch["eo"] != 0).double()
        surface = batch["surface"].double()
        anomaly = (surface - observed_mean(surface, present)) * present
        squares += (anomaly**2).sum((0, 2, 3))
        pixels += float(present.sum())
        seen += len(surface)
        if seen >= samples:
            break
    if pixels == 0:
        raise FirstGuessFitError(f"no training patch has a value of {list(module.surface_variables)} on its ocean; "
                                 "check the exported surface_npy files")
    scale = torch.sqrt(squares / pixels).clamp_min(1e-12)
    module.surface_scale.copy_(scale)
    log.info("surface variables %s: typical patch anomaly %s (their units), from %d training patches",
             list(module.surface_variables), [f"{float(v):.4g}" for v in scale], seen)


def fitted_sampling_statistics(module: DepthDifModule, state: dict[str, torch.Tensor], datamodule,
                               config: Mapping) -> dict[str, torch.Tensor]:
    """The averaged weights with what sampling needs measured on training batches: the shrinkage of the
    network's correction (``model.output_shrinkage``, :mod:`depthdif.models.shrinkage`), then, with that
    shrinkage in place, the network's x0 error by timestep (the analytic reverse variance of the ddpm sampler,
    Bao et al. 2022, "Analytic-DPM", ICLR).

    Args:
        module: the trained module (its architecture; its weights are not changed).
        state: the EMA state dict (:meth:`DepthDifEMA.averaged_state_dict`).
        datamodule: the training datamodule.
        config: the validated run config (``model.output_shrinkage``, ``model.sampler``, ``model.ddpm_variance``,
            ``loader.batch_size``, ``seed``).

    Returns:
        ``state`` with the fitted buffers filled (see ``DepthDifModule.fit_output_shrinkage`` and
        ``fit_x0_error``), or ``state`` itself when the model has no first guess or neither is asked for.
    """
    mc = config["model"]
    shrink = bool(mc["output_shrinkage"])
    analytic = mc["sampler"] == "ddpm" and mc["ddpm_variance"] == "analytic"
    if module.cokriging is None or not (shrink or analytic):
        return state
    averaged = copy.deepcopy(module)
    averaged.load_state_dict(state)
    averaged.eval()
    seed = int(config["seed"])
    batch_size = int(config["loader"]["batch_size"])
    if shrink:  # the same network calls measure the shrunk denoiser's x0 error
        averaged.fit_output_shrinkage(training_batches(datamodule, batch_size, seed + 2),
                                      max_batches=SHRINKAGE_BATCHES, seed=seed, x0_error=analytic)
    elif analytic:
        averaged.fit_x0_error(training_batches(datamodule, batch_size, seed + 2), seed=seed)
    return averaged.state_dict()


def run_training(
    config: Mapping,
    variant: str,
    out_dir: Path,
    datamodule: pl.LightningDataModule | None = None,
    callbacks: Sequence[Callback] = (),
    index_csv: Path | None = None,
) -> Path:
    """Stage entry point of rules ``train_{variant}`` (and `depthdif train`): train ``variant``, resuming from
    ``out_dir/train/checkpoints/last.ckpt`` when it exists.

    A fresh start first fits the surface scale (:func:`fit_surface_scale`) and the cokriging first guess
    (:func:`fit_first_guess`) on the training split; a resumed run takes them from the checkpoint.

    Args:
        config: the validated run config.
        variant: ``temp_v1`` or ``eo_4band``.
        out_dir: the variant's folder (``results/<variant>``); see the module docstring for the files.
        datamodule: the data; default :func:`default_datamodule` on ``index_csv``.
        callbacks: extra Lightning callbacks (tests).
        index_csv: the split index to train on (the one the Snakemake rule declares); default
            ``{data_dir}/patches/patch_index_split.csv``. Not used when ``datamodule`` is given.

    Returns:
        The path of ``out_dir/model.ckpt`` (EMA weights; written by the global-zero rank only).

    Raises:
        CheckpointError: unknown variant, or depths that do not fit ``export.depth_indices`` (``build_module``).
        FirstGuessFitError: the training split cannot give the first guess's statistics or surface scale.
    """

    out_dir = Path(out_dir)
    tc = config["train"]
    torch.set_num_threads(int(tc["threads"]))
    pl.seed_everything(int(config["seed"]), workers=True)
    given_datamodule = datamodule is not None
    datamodule = datamodule if given_datamodule else default_datamodule(config, variant, index_csv)
    module = build_module(config, variant, training_depths(datamodule))
    trainer = make_trainer(config, out_dir, callbacks)
    checkpoints = out_dir / "train" / "checkpoints"
    used_index = None if given_datamodule else Path(index_csv or data_layout_of(config).split_index)
    key = resume_key(module, used_index)
    resume = resumable_checkpoint(checkpoints / LAST_CKPT, key)
    checkpoints.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(checkpoints.parent / RESUME_KEY, json.dumps(key, indent=1, sort_keys=True) + "\n")
    if resume:
        log.info("resuming %s from %s", variant, resume)  # the first guess's statistics come with it
    else:
        if module.surface_variables:
            fit_surface_scale(module, datamodule, config)
        if module.cokriging is not None:
            fit_first_guess(module, datamodule, config)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)

    model_path = out_dir / MODEL_NAME
    if trainer.is_global_zero:
        ema = next(cb for cb in trainer.callbacks if isinstance(cb, DepthDifEMA))
        save_model(module, fitted_sampling_statistics(module, ema.averaged_state_dict(), datamodule, config), model_path)
        merged = merge_metrics(out_dir / "train" / "csv_logs", out_dir / "train" / "metrics.csv")
        last_val = merged["val/rmse_c"].dropna() if "val/rmse_c" in merged else pd.Series(dtype=float)
        log.info(
            "%s: trained to step %d; last val/rmse_c %s; wrote %s",
            variant, trainer.global_step, f"{last_val.iloc[-1]:.3f} °C" if len(last_val) else "n/a", model_path,
        )
    return model_path
