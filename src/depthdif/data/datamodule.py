"""The Lightning DataModule: train and val :class:`~depthdif.data.dataset.PatchDataset` from the split index.

``split.mode: index`` (default) uses the ``split`` column written by the split stage, where whole geographic
windows go to one side; ``split.mode: random`` re-draws a seeded random split of the rows with
``split.val_fraction`` the way the original system did, only to compare against: neighbouring and
overlapping patches, and the same place in other months, then sit on both sides (locations leak).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from torch.utils.data import DataLoader

from depthdif.data.augment import augment_batch
from depthdif.data.dataset import PatchDataset, collate, unpack_batch
from depthdif.data.index import PatchIndexError, check_index_columns, index_depths, read_index
from depthdif.layout import data_layout_of

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
RANDOM_SPLIT_WARNING = (
    "split.mode is 'random': locations leak — rows are split at random, so patches of the same place (other "
    "months, overlapping tiles) are in train and val and the validation score is optimistic. Use split.mode: "
    "index for honest numbers; 'random' is only for comparison with the original system."
)


def default_index_csv(config: dict) -> Path:
    return data_layout_of(config).split_index


def random_split(frame: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """A copy of ``frame`` whose ``split`` column is a seeded random train/val draw of its rows."""
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * len(frame)))
    order = rng.permutation(len(frame))
    split = np.full(len(frame), "train", dtype=object)
    split[order[:n_val]] = "val"
    out = frame.copy()
    out["split"] = split
    out.attrs.update(frame.attrs)
    return out


def check_window_split(frame: pd.DataFrame) -> None:
    """The split stage's promise: split is train/val, and no window has rows on both sides."""
    check_index_columns(frame, ("split",))
    origin = frame.attrs.get("origin", "<DataFrame>")
    unknown = sorted(set(frame["split"].astype(str)) - set(SPLITS))
    if unknown:
        raise PatchIndexError(
            f"patch index {origin} has split values {unknown}; only {list(SPLITS)} are allowed"
        )
    if "window_id" not in frame.columns:
        logger.warning(
            "patch index %s has no window_id column: cannot check that windows do not leak", origin
        )
        return
    sides = frame.groupby("window_id")["split"].nunique()
    leaking = sides.index[sides > 1].tolist()
    if leaking:
        raise PatchIndexError(
            f"patch index {origin}: window(s) {leaking[:5]} have rows in both train and val; the split stage "
            "must put whole windows on one side. Re-run `snakemake split`."
        )


class DepthDifDataModule(pl.LightningDataModule):
    """Train/val loaders for one variant. ``index_csv`` defaults to ``{data_dir}/patches/patch_index_split.csv``."""

    def __init__(self, config: dict, variant: str | None = None, index_csv: str | Path | None = None):
        super().__init__()
        self.config = config
        self.variant = variant or config["dataset"]["dataset_variant"]
        self.index_csv = Path(index_csv) if index_csv is not None else default_index_csv(config)
        self.train_set: PatchDataset | None = None
        self.val_set: PatchDataset | None = None
        # depths (m) of the exported channels, from the index after setup: training stores them in model.ckpt
        self.depth_values_m: tuple[float, ...] | None = None

    def load_index(self) -> pd.DataFrame:
        """The index with the split this run uses (the file's, or a random one for split.mode random)."""
        frame = read_index(self.index_csv)
        split = self.config["split"]
        if split["mode"] == "random":
            warnings.warn(RANDOM_SPLIT_WARNING, UserWarning, stacklevel=2)
            logger.warning(RANDOM_SPLIT_WARNING)
            return random_split(frame, float(split["val_fraction"]), int(split["seed"]))
        check_window_split(frame)
        return frame

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        frame = self.load_index()
        self.depth_values_m = index_depths(frame)
        # rot90/flip and unpacking happen in on_after_batch_transfer, on the training device, not in the loader
        self.train_set = PatchDataset(frame, self.config, "train", self.variant, augment=False, packed=True)
        self.val_set = PatchDataset(frame, self.config, "val", self.variant)
        logger.info(
            "%s: %d train and %d val patches from %s (split.mode %s)",
            self.variant,
            len(self.train_set),
            len(self.val_set),
            self.index_csv,
            self.config["split"]["mode"],
        )

    def _loader_options(self) -> dict[str, Any]:
        loader = self.config["loader"]
        workers = int(loader["num_workers"])
        options: dict[str, Any] = {
            "batch_size": int(loader["batch_size"]),
            "num_workers": workers,
            "pin_memory": bool(loader["pin_memory"]),
            "collate_fn": collate,  # batches are built whole by PatchDataset.__getitems__
        }
        if workers > 0:  # DataLoader refuses these without workers
            options["persistent_workers"] = bool(loader["persistent_workers"])
            if loader["prefetch_factor"] is not None:
                options["prefetch_factor"] = int(loader["prefetch_factor"])
        return options

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Training batches get their random rot90/flip and are unpacked here, on the training device.

        The turn (``dataset.enable_transform``) is the slowest step of building a sample on a CPU (a strided
        copy of every band) and nearly free on a GPU; it is done on the packed batch (bool masks, no ``x``:
        less to turn). :func:`~depthdif.data.dataset.unpack_batch` then makes ``x`` and the float masks, so
        the loader writes, pins and copies 5 float planes a sample instead of 13. Validation, testing and
        prediction batches are never turned (and are not packed).
        """
        trainer = self.trainer
        if self.config["dataset"]["enable_transform"] and trainer is not None and trainer.training:
            batch = augment_batch(batch)
        return unpack_batch(batch)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return DataLoader(self.train_set, shuffle=True, drop_last=False, **self._loader_options())

    def val_dataloader(self) -> DataLoader:
        # fixed masks, no degradation, no augmentation, fixed order: the same score every epoch
        self.setup("validate")
        return DataLoader(self.val_set, shuffle=False, drop_last=False, **self._loader_options())
