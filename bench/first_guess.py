"""Cost and quality of the trained cokriging first guess (issue 11, item 2).

Prints JSON lines {"metric", "value", "unit"}:
* ms per sample of ``Cokriging`` on CPU (one thread) for 32 px and 128 px patches at 50 / 95 / 97.5 % hidden,
  on stationary Gaussian fields (timing does not depend on the data), and on a GPU when one is present;
* on the exported default data (``data/patches``, run ``snakemake --cores 2 split`` first): RMSE (°C) of the
  first guess fitted on the train split next to the tuned optimal interpolation and biharmonic inpainting on
  the same hidden pixels of val patches (``temp_v1`` band, 95 % hidden).

    python bench/first_guess.py [--skip-data] [--samples 32]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from depthdif.baselines.cokriging import Cokriging, fit_covariance, fit_sigma_table
from depthdif.data.normalization import temperature_normalize


def emit(metric: str, value, unit: str) -> None:
    print(json.dumps({"metric": metric, "value": value, "unit": unit}), flush=True)


def gaussian_batch(rng: np.random.Generator, count: int, size: int, bands: int, hidden: float) -> dict:
    k = np.fft.fftfreq(2 * size)
    spectrum = np.exp(-((2 * np.pi) ** 2) * (k[:, None] ** 2 + k[None, :] ** 2) * 9.0)
    fields = np.stack([np.fft.ifft2(np.fft.fft2(rng.standard_normal((2 * size, 2 * size))) * spectrum).real[:size, :size]
                       for _ in range(count * bands)]).reshape(count, bands, size, size)
    y = torch.from_numpy(temperature_normalize(15.0 + fields / fields.std())).float()
    valid = torch.from_numpy((rng.random(y.shape) >= hidden).astype(np.float32))
    return {"y": y, "x": y * valid, "valid_mask": valid, "land_mask": torch.ones_like(y)}


def timing(device: str, samples: int) -> None:
    rng = np.random.default_rng(0)
    for size in (32, 128):
        bands = 3
        fit = [gaussian_batch(rng, 8, size, bands, 0.0) for _ in range(4)]
        estimator = Cokriging(bands, size)
        estimator.set_statistics(fit_covariance(fit, bands, size, 32))
        estimator = estimator.to(device)
        for hidden in (0.5, 0.95, 0.975):
            if device == "cpu" and size * size * (1 - hidden) > 2000:
                # one dense solve of ~8,000 observations a band: ~180 GFLOP, seconds a sample on a CPU
                emit(f"first_guess_ms_per_sample_{device}_{size}px_{hidden}_hidden_{bands}bands", None,
                     "skipped: dense solve too slow on CPU")
                continue
            batch = {k: v.to(device) for k, v in gaussian_batch(rng, samples, size, bands, hidden).items()}
            estimator(batch)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            estimator(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            emit(f"first_guess_ms_per_sample_{device}_{size}px_{hidden}_hidden_{bands}bands",
                 round(1000 * (time.perf_counter() - start) / samples, 2), "ms")


def quality(index_csv: Path, config_path: Path) -> None:
    import pandas as pd

    from depthdif.baselines import BASELINES
    from depthdif.config import load_config
    from depthdif.data.dataset import PatchDataset, collate
    from depthdif.data.normalization import temperature_denormalize
    from depthdif.evaluation.protocol import select_val_rows

    config = load_config([config_path])
    index = pd.read_csv(index_csv)
    size = int(config["export"]["patch_size"])
    train = PatchDataset(index, config, "train", variant="temp_v1", augment=False)

    def batches(seed):
        return torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, collate_fn=collate,
                                           generator=torch.Generator().manual_seed(seed))

    estimator = Cokriging(1, size)
    estimator.set_statistics(fit_covariance(batches(0), 1, size, 1024))
    estimator.set_statistics({"sigma_table": fit_sigma_table(estimator, batches(1), 1024)})
    rows = select_val_rows(index, 64, 0)
    val = PatchDataset(rows, config, "val", variant="temp_v1", mask_fraction=0.95, seed=0)
    sse = {"cokriging": 0.0, "oi": 0.0, "biharmonic": 0.0}
    count = 0
    for batch in torch.utils.data.DataLoader(val, batch_size=16, collate_fn=collate):
        guess = temperature_denormalize(estimator(batch).mean.double().numpy())
        truth = temperature_denormalize(batch["y"].double().numpy())
        ocean = batch["land_mask"].numpy() > 0
        observed = ocean & (batch["valid_mask"].numpy() > 0)
        hidden = ocean & ~observed
        for i in range(len(truth)):
            obs = np.where(observed[i, 0], truth[i, 0], np.nan)
            sse["cokriging"] += float(((guess[i, 0] - truth[i, 0])[hidden[i, 0]] ** 2).sum())
            for name in ("oi", "biharmonic"):
                pred = BASELINES[name](obs, ocean[i, 0])
                sse[name] += float(((pred - truth[i, 0])[hidden[i, 0]] ** 2).sum())
        count += int(hidden.sum())
    for name, total in sse.items():
        emit(f"rmse_{name}_temp_v1_95_hidden", round(float(np.sqrt(total / count)), 4), "degC")
    emit("cokriging_over_tuned_oi_temp_v1_95_hidden", round(float(np.sqrt(sse["cokriging"] / sse["oi"])), 3), "ratio")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--index-csv", type=Path, default=Path("data/patches/patch_index_split.csv"))
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    emit("first_guess_sigma_units", "degC", "note")
    timing("cpu", args.samples)
    if torch.cuda.is_available():
        timing("cuda", args.samples)
    if not args.skip_data and args.index_csv.is_file():
        quality(args.index_csv, args.config)


if __name__ == "__main__":
    main()
