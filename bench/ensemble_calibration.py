"""Is the ensemble a good probabilistic forecast? Spread/skill and CRPS of a trained model's ensemble against
the Gaussian posterior of its own cokriging first guess, with members inflated about their mean (issue 11).

Prints JSON lines {"metric", "value", "unit"} for the val patches of the evaluation (every val location at
``evaluate.months_per_location`` months) at one occlusion level, and for training batches: RMSE of the
ensemble mean, of the first guess and of the network's conditional mean, the spread, spread/skill and CRPS
(``scoringrules``) for each inflation factor. Needs the exported data and a trained ``model.ckpt``:

    python bench/ensemble_calibration.py results/temp_v1/model.ckpt temp_v1 [-c override.yaml]
        [--steps 10] [--members 8] [--fraction 0.95] [--inflation 1 1.5 2] [--batches 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import scoringrules
import torch

from depthdif.config import deep_merge, load_config
from depthdif.data.datamodule import DepthDifDataModule
from depthdif.data.dataset import PatchDataset, collate, unpack_batch
from depthdif.data.normalization import temperature_error_to_celsius
from depthdif.evaluation.protocol import select_val_rows
from depthdif.models.module import load_model
from depthdif.models.samplers import ensemble_variance
from depthdif.train import training_batches


def emit(metric: str, value, unit: str) -> None:
    print(json.dumps({"metric": metric, "value": value, "unit": unit}), flush=True)


def score(module, batches, members: int, steps: int, inflations: list[float], label: str) -> None:
    """Pooled over hidden ocean pixels of ``batches``; °C."""
    sums: dict[str, np.ndarray] = {}
    for batch in batches:
        ensemble = module.sample(batch, members, steps, generator=torch.Generator().manual_seed(0)).double()
        guess, sigma_c = module.first_guess_of(batch)
        conditional = module.conditional_mean(batch, generator=torch.Generator().manual_seed(1)).double()
        truth = batch["y"].double()
        hidden = ((batch["land_mask"] > 0) & (batch["valid_mask"] == 0)).numpy()
        y = truth.numpy()[hidden]
        mean = ensemble.mean(1)
        for factor in inflations:
            inflated = mean[:, None] + factor * (ensemble - mean[:, None])
            members_z = np.moveaxis(inflated.numpy(), 1, -1)[hidden]
            sums.setdefault(f"ensemble_x{factor:g}", np.zeros(4))[:] += (
                ((inflated.mean(1).numpy()[hidden] - y) ** 2).sum(),
                ensemble_variance(inflated.numpy(), module.antithetic_members(members), axis=1)[hidden].sum(),
                hidden.sum(), scoringrules.crps_ensemble(y, members_z).sum())
        sigma_z = np.maximum(sigma_c.double().numpy()[hidden] / temperature_error_to_celsius(1.0), 1e-9)
        guess_z = guess.double().numpy()[hidden]
        sums.setdefault("first_guess", np.zeros(4))[:] += (
            ((guess_z - y) ** 2).sum(), (sigma_z**2).sum(), hidden.sum(),
            scoringrules.crps_normal(y, guess_z, sigma_z).sum())
        sums.setdefault("conditional_mean", np.zeros(4))[:] += (
            ((conditional.numpy()[hidden] - y) ** 2).sum(), 0.0, hidden.sum(), 0.0)
    to_c = temperature_error_to_celsius(1.0)
    for name, (sse, spread2, n, crps) in sums.items():
        emit(f"{label}/{name}/rmse", to_c * float(np.sqrt(sse / n)), "degC")
        if spread2:
            emit(f"{label}/{name}/spread_skill", float(np.sqrt(spread2 / sse)), "ratio")
            emit(f"{label}/{name}/crps", to_c * float(crps / n), "degC")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("variant", choices=["temp_v1", "eo_4band"])
    parser.add_argument("-c", "--configfile", nargs="*", default=[], help="overrides after config/config.yaml")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--fraction", type=float, default=0.95)
    parser.add_argument("--inflation", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    parser.add_argument("--batches", type=int, default=3, help="training batches scored")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(["config/config.yaml", *args.configfile])
    module = load_model(args.checkpoint, variant=args.variant, config=config)
    index_csv = Path(config["data_dir"]) / "patches" / "patch_index_split.csv"
    rows = select_val_rows(pd.read_csv(index_csv), config["evaluate"]["max_patches"], int(config["seed"]),
                           config["evaluate"]["months_per_location"])
    rows.attrs["index_dir"] = str(index_csv.parent)
    val_config = deep_merge(config, {"dataset": {"return_coords": True}})
    dataset = PatchDataset(rows, val_config, split="val", variant=args.variant, mask_fraction=args.fraction,
                           seed=int(config["seed"]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False, collate_fn=collate)
    score(module, [unpack_batch(dict(b)) for b in loader], args.members, args.steps, args.inflation,
          f"val@{args.fraction:g}")
    train_config = deep_merge(config, {"dataset": {"dataset_variant": args.variant,
                                                   "train_mask_fractions": [args.fraction]}})
    batches = training_batches(DepthDifDataModule(train_config, variant=args.variant), 16, seed=5)
    score(module, [b for _, b in zip(range(args.batches), batches, strict=False)], args.members, args.steps,
          args.inflation, f"train@{args.fraction:g}")


if __name__ == "__main__":
    main()
