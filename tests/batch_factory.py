"""Small synthetic batches and an in-memory DataModule that follow the batch contract.

Used by the model tests (and the benchmark) so they do not depend on the export/datasets code.
The fields look like a little ocean: a meridional temperature gradient, smooth eddies shared between
depths with some independent detail, colder deeper bands, islands (land) and sparse observations.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch.utils.data import DataLoader, Dataset

from depthdif.data.normalization import temperature_normalize


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def ocean_patch(rng: np.random.Generator, size: int = 32, num_channels: int = 4, land_fraction: float = 0.15):
    """(num_channels, size, size) °C with NaN on land; deeper channels get a bit more land."""
    rows = np.linspace(0, 1, size)[:, None]
    surface = 20.0 + 6.0 * rng.uniform() - 4.0 * rows + np.zeros((1, size))
    shared = _smooth_noise(rng, size, sigma=4.0)
    land_field = _smooth_noise(rng, size, sigma=5.0)
    threshold = np.quantile(land_field, 1.0 - land_fraction)
    patch = np.empty((num_channels, size, size), dtype=np.float32)
    for k in range(num_channels):
        detail = _smooth_noise(rng, size, sigma=3.0)
        patch[k] = surface - 2.5 * k + 1.5 * shared + 0.5 * detail
        patch[k][land_field > threshold - 0.1 * k] = np.nan
    return patch


def make_sample(
    variant: str,
    rng: np.random.Generator,
    size: int = 32,
    num_channels: int = 4,
    temp_v1_band: int = 0,
    mask_fraction: float = 0.9,
    first_guess: bool = False,
    eo_dropout: float = 0.0,
    date: int = 20100715,
    surface_variables: int = 0,
) -> dict:
    """One sample dict of the contract (without ``info``)."""
    celsius = ocean_patch(rng, size, num_channels)
    if variant == "temp_v1":
        target = celsius[temp_v1_band : temp_v1_band + 1]
    elif variant == "eo_4band":
        target = celsius[1:]
    else:
        raise ValueError(variant)
    land = np.isfinite(target).astype(np.float32)
    y = np.nan_to_num(temperature_normalize(target), nan=0.0).astype(np.float32)
    valid = (rng.uniform(size=target.shape) >= mask_fraction).astype(np.float32) * land
    sample = {
        "y": torch.from_numpy(y),
        "x": torch.from_numpy(y * valid),
        "valid_mask": torch.from_numpy(valid),
        "land_mask": torch.from_numpy(land),
        "date": torch.tensor(date, dtype=torch.int64),
        "coords": torch.tensor([float(rng.uniform(18, 32)), float(rng.uniform(-125, -105))]),
    }
    if variant == "eo_4band":
        available = float(rng.uniform() >= eo_dropout)
        eo = np.nan_to_num(temperature_normalize(celsius[:1]), nan=0.0).astype(np.float32) * available
        sample["eo"] = torch.from_numpy(eo)
        sample["eo_available"] = torch.tensor([available], dtype=torch.float32)
        if surface_variables:  # a sea level (m) that follows the band below the surface, 0 on land/when dropped
            level = np.nan_to_num(0.02 * (celsius[2:3] - np.nanmean(celsius[2]))) + 0.005 * rng.standard_normal((1, size, size))
            level = np.repeat(level, surface_variables, axis=0) * available
            sample["surface"] = torch.from_numpy(np.where(eo != 0, level, 0.0).astype(np.float32))
    if first_guess:
        sample["first_guess"] = _mean_fill(sample["x"], sample["valid_mask"], sample["land_mask"])
    return sample


def _mean_fill(x: torch.Tensor, valid: torch.Tensor, land: torch.Tensor) -> torch.Tensor:
    mean = (x * valid).sum((1, 2), keepdim=True) / valid.sum((1, 2), keepdim=True).clamp_min(1)
    return torch.where(valid > 0, x, mean.expand_as(x)) * land


def make_batch(variant: str, batch_size: int = 4, seed: int = 0, **kwargs) -> dict:
    """A collated batch of ``batch_size`` samples."""
    rng = np.random.default_rng(seed)
    samples = [make_sample(variant, rng, **kwargs) for _ in range(batch_size)]
    return torch.utils.data.default_collate(samples)


class InMemoryDataset(Dataset):
    def __init__(self, samples: list[dict]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


class TinyDataModule(pl.LightningDataModule):
    """Pre-generated train/val samples in memory; same interface as DepthDifDataModule."""

    def __init__(self, variant: str, train_size: int = 32, val_size: int = 8, batch_size: int = 8,
                 seed: int = 0, num_workers: int = 0, pin_memory: bool = False, **sample_kwargs):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.batch_size = batch_size
        self.loader_options = {"num_workers": num_workers, "pin_memory": pin_memory,
                               "persistent_workers": num_workers > 0}
        self.train_set = InMemoryDataset([make_sample(variant, rng, **sample_kwargs) for _ in range(train_size)])
        self.val_set = InMemoryDataset([make_sample(variant, rng, **sample_kwargs) for _ in range(val_size)])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          **self.loader_options)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, **self.loader_options)


def tiny_config(tmp_path=None, **sections) -> dict:
    """A validated config with a network and a run small enough for unit tests (seconds on CPU).

    ``sections`` deep-merge into it, e.g. ``tiny_config(train={"max_steps": 8})``.
    """
    from depthdif.config import deep_merge, validate_config

    base = {
        "export": {"patch_size": 16, "stride": 16, "depth_indices": [0, 4, 10, 17]},
        "loader": {"batch_size": 4},
        "model": {"dim": 8, "dim_mults": [1, 2], "sampling_steps": 3},
        "train": {
            "max_steps": 4, "warmup_steps": 1, "val_every_n_steps": 2, "val_samples": 4,
            "val_sampling_steps": 2, "checkpoint_every_n_steps": 2, "log_every_n_steps": 1,
            "accelerator": "cpu", "threads": 2,
        },
    }
    if tmp_path is not None:
        base["results_dir"] = str(tmp_path / "results")
        base["data_dir"] = str(tmp_path / "data")
    return validate_config(deep_merge(base, sections))
