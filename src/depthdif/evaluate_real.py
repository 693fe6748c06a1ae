"""Sim-to-real: the evaluation protocol on real GLORYS12 files with a model trained on the synthetic ocean.

The real files go through the same download (local source), export and evaluation code as any data set;
every patch is a val patch (the model never saw this ocean). The depth levels are matched by value, since
a real subset does not hold the 50 levels at the positions the model was trained with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd

from depthdif.atomic import atomic_to_csv
from depthdif.cf.axes import axis_roles, depth_below_surface_m
from depthdif.cf.dates import file_date
from depthdif.cf.decode import decode_values
from depthdif.config import deep_merge, validate_config
from depthdif.errors import DepthDifError
from depthdif.reconstruction.inference import band_depths, match_levels

log = logging.getLogger(__name__)


class RealDataError(DepthDifError, ValueError):
    """The real sample cannot be scored with this model (missing levels, no files)."""


def matching_depth_indices(nc_file: Path, depths_m: list[float], variable: str = "thetao") -> list[int]:
    """Positions in ``nc_file``'s depth axis of the levels nearest to ``depths_m`` (within 2 % + 1 cm).

    Args:
        nc_file: a real file; its depth dimension is found by role (``depth``, ``deptht``, axis Z...).
        depths_m: the depths (m) the model was trained on (its model.ckpt's).
        variable: the temperature variable whose depth axis counts (``export.variable``).

    Returns:
        One position per wanted depth.

    Raises:
        RealDataError: a depth has no level near it (or the file lacks ``variable``).
        FieldFileError: the variable's dimensions cannot be told apart.
    """
    with netCDF4.Dataset(nc_file) as ds:
        if variable not in ds.variables:
            raise RealDataError(f"{nc_file} has no variable '{variable}' (export.variable); it has "
                                f"{sorted(ds.variables)}.")
        attrs_of = {name: {k: var.getncattr(k) for k in var.ncattrs()} for name, var in ds.variables.items()}
        dim = axis_roles(ds.variables[variable].dimensions, nc_file, variable, attrs_of.get)["depth"]
        if dim not in ds.variables:
            raise RealDataError(f"{nc_file}: depth dimension '{dim}' has no coordinate variable (the depth of "
                                "each level); add one.")
        depth = ds.variables[dim]
        depth.set_auto_maskandscale(False)
        where = f"{nc_file}, variable '{dim}'"
        axis = np.asarray(depth_below_surface_m(decode_values(np.asarray(depth[:]), attrs_of[dim], where),
                                                attrs_of[dim], where), float)
    positions = match_levels(axis, depths_m)
    for depth, position in zip(depths_m, positions, strict=True):
        if position is None:
            raise RealDataError(f"{nc_file} has no level near {depth:.2f} m (its levels: "
                                f"{np.round(axis, 2).tolist()}); the model cannot be scored on it.")
    return positions


def real_config(config: Mapping, settings: Mapping, real_dir: Path, work_dir: Path) -> dict:
    """The run's config pointed at the real files, exporting the model's levels, patches of its size."""
    files = sorted(Path(real_dir).glob("*.nc"))
    if not files:
        raise RealDataError(f"no *.nc file in {real_dir}; set evaluate.real_sample_dir to a folder of GLORYS12 files.")
    positions = matching_depth_indices(files[0], band_depths(dict(settings)), str(config["export"]["variable"]))
    size = int(settings["export"]["patch_size"])
    # the local source picks files by source.years x source.months: the real sample is every file, whatever
    # months the training run used
    dates = [file_date(f) for f in files]
    override = {
        "data_dir": str(work_dir),
        "source": {"kind": "local", "local_dir": str(Path(real_dir).resolve()),
                   "years": sorted({d // 10000 for d in dates}), "months": sorted({d // 100 % 100 for d in dates})},
        "export": {"depth_indices": positions, "patch_size": size, "stride": max(1, size // 2), "workers": 1},
        "dataset": {"temp_v1_band": int(settings["dataset"]["temp_v1_band"])},
    }
    return validate_config(deep_merge(config, override), origin="real-sample config")


def mark_all_val(index_csv: Path, out_csv: Path) -> Path:
    """Every real patch is a val patch; each location its own window."""
    index = pd.read_csv(index_csv)
    index["split"] = "val"
    index["window_id"] = [f"real_{y}_{x}" for y, x in zip(index["y0"], index["x0"], strict=True)]
    atomic_to_csv(index, out_csv)
    return out_csv


def run_real_evaluation(config: Mapping, variant: str, model_ckpt: Path, real_dir: Path, out_dir: Path) -> Path:
    """Export the real sample like the model's training data, then run the standard protocol on it."""
    from depthdif.download import run_download
    from depthdif.evaluate import run_evaluation
    from depthdif.export import export_patches
    from depthdif.models.module import load_model

    settings = load_model(model_ckpt, variant=variant).settings
    work_dir = Path(out_dir) / "data"
    cfg = real_config(config, settings, Path(real_dir), work_dir)
    manifest = run_download(cfg)
    index = export_patches(cfg, manifest, workers=1)
    mark_all_val(index, index.parent / "patch_index_split.csv")
    log.info("scoring the %s model on the real sample in %s", variant, real_dir)
    return run_evaluation(cfg, variant, model_ckpt, Path(out_dir))
