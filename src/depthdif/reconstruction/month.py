"""Rebuild one exported month over the whole region from sparse observations drawn with the val protocol.

This is the evaluation's `reconstruction.nc`: the field a user would get from the model, next to the truth
it was drawn from, on the source file's own latitude/longitude/depth/time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from depthdif.data.masking import make_band_masks, mask_rng
from depthdif.export import ExportError, read_levels, read_surfaces
from depthdif.layout import data_layout_of
from depthdif.reconstruction.gridded import (
    GridObservations,
    ReconstructionError,
    reconstruct_grid,
    reconstruction_dataset,
    write_netcdf,
)
from depthdif.reconstruction.inference import same_levels, surface_variables

log = logging.getLogger(__name__)
MONTH_SEED_OFFSET = 1_000_003  # keeps the whole-region masks apart from the per-patch val masks


def reconstruct_month(module, config: Mapping, index: pd.DataFrame, variant: str, date: int, path: Path,
                      seed: int = 0, ensemble_size: int | None = None, steps: int | None = None) -> Path:
    """Reconstruct the month ``date`` (YYYYMMDD of the index) over the exported grid; write CF NetCDF.

    The month's levels are read from its raw file as the export reads them; observations are drawn with the
    val protocol's rectangle masks (``dataset.mask_fraction``, seeded by ``seed``, ``date`` and band), then
    :func:`depthdif.reconstruction.gridded.reconstruct_grid` rebuilds the region with a 3/4-patch stride.

    Args:
        module: the loaded model.
        config: the run config (``data_dir``, ``export``, ``dataset``, ``evaluate``).
        index: the split index (its ``date`` and ``source_file`` columns).
        variant: ``temp_v1`` or ``eo_4band``.
        date: YYYYMMDD, a value of the index's ``date`` column.
        path: the NetCDF to write.
        seed: the masks' and the sampler's seed.
        ensemble_size: members; default ``min(8, evaluate.ensemble_size)``.
        steps: sampling steps; default ``evaluate.sampling_steps``.

    Returns:
        ``path``: the :func:`~depthdif.reconstruction.gridded.reconstruction_dataset` with ``thetao_truth``
        and the RMSE (°C) on the hidden ocean in its attribute ``rmse_hidden_c``.

    Raises:
        ValueError: no patch of ``date`` in the index, or the file's levels are not the model's.
        ExportError: the month's raw file cannot be read.
        ReconstructionError: the file cannot give the model's surface variables.
    """

    rows = index[index["date"] == date]
    if rows.empty:
        raise ValueError(f"no patch of date {date} in the index; pick a date from its 'date' column.")
    source = data_layout_of(config).raw_dir / str(rows["source_file"].iloc[0])
    indices = tuple(config["export"]["depth_indices"])
    fill_values = tuple(config["export"]["fill_values"])  # land written as a number, as exported
    stack = read_levels(source, config["export"]["variable"], indices, fill_values)
    _check_model_levels(module.settings, [float(d) for d in stack.depth_values], source)
    channels = [config["dataset"]["temp_v1_band"]] if variant == "temp_v1" else list(range(1, len(indices)))
    truth = stack.data[channels].astype(np.float64)
    ocean = np.isfinite(truth)
    dataset = config["dataset"]
    rngs = [mask_rng(seed + MONTH_SEED_OFFSET, date, band) for band in range(len(channels))]
    if variant == "temp_v1":
        rngs = rngs[:1]
    valid = make_band_masks(rngs, ocean, dataset["mask_fraction"], dataset["mask_patch_min"],
                            dataset["mask_patch_max"])
    observed = np.where(valid, truth, np.nan)
    eo = stack.data[0].astype(np.float64) if variant == "eo_4band" else None
    surface = _surface_fields(module.settings, source, config["export"]["variable"], fill_values, ocean.shape[1:])
    grid = GridObservations(observed, ocean, eo, np.asarray(stack.latitude), np.asarray(stack.longitude), date,
                            surface=surface)
    evaluate = config["evaluate"]
    # the map is for looking at, the scores come from the patches: a smaller ensemble and 3/4-patch stride
    # keep a whole-region month affordable on a CPU
    size = int(config["export"]["patch_size"])
    mean, std = reconstruct_grid(module, grid, ensemble_size or min(8, evaluate["ensemble_size"]),
                                 steps or evaluate["sampling_steps"], stride=max(1, 3 * size // 4), seed=seed)
    hidden = ocean & ~valid
    rmse = float(np.sqrt(np.nanmean((mean - truth)[hidden] ** 2))) if hidden.any() else float("nan")
    log.info("reconstruction of %s (%s): RMSE on hidden ocean %.3f °C", source.name, variant, rmse)
    depths = [float(stack.depth_values[c]) for c in channels]
    ds = reconstruction_dataset(
        mean, std, valid, ocean, stack.latitude, stack.longitude, depths, date,
        source=f"DepthDif {variant} model; observations drawn from {source.name} with "
               f"{dataset['mask_fraction']:.1%} of ocean cells hidden",
        truth=truth,
    )
    ds.attrs["rmse_hidden_c"] = rmse
    return write_netcdf(ds, path)


def _surface_fields(settings: Mapping, source: Path, variable: str, fill_values: tuple[float, ...],
                    shape: tuple[int, ...]) -> np.ndarray | None:
    """(S, ny, nx) float64 of the model's surface variables read from the month's source file as the export
    reads them (own units, as in the training patches; NaN where no value), or None for a model without them.

    Raises:
        ReconstructionError: the source file cannot provide them (missing, or not on ``variable``'s grid).
    """
    names = surface_variables(settings)
    if not names:
        return None
    try:
        fields = read_surfaces(source, names, variable, fill_values)
    except ExportError as err:
        raise ReconstructionError(
            f"the model was trained with export.surface_variables {list(names)} and the month is rebuilt from "
            f"{source}, which cannot provide them: {err}"
        ) from err
    surface = np.stack([f.data for f in fields]).astype(np.float64)
    if surface.shape[1:] != tuple(shape):  # same file, same axes: only a bug gets here
        raise ReconstructionError(f"{source}: surface fields {surface.shape[1:]} and {variable} {tuple(shape)} "
                                  "differ in shape")
    return surface


def _check_model_levels(settings: Mapping, found: list[float], source: Path) -> None:
    """Refuse a source file whose exported levels are not the ones the model was trained on (by value).

    Args:
        settings: the checkpoint's settings; a checkpoint without ``export.depth_values_m`` (format 2) is not
            checked (evaluate has already matched its config to the index).
        found: depth (m) of each level read at ``export.depth_indices`` from ``source``.
        source: the file read, for the message.

    Raises:
        ValueError: the levels differ.
    """
    trained = settings["export"].get("depth_values_m")
    if trained and not same_levels(trained, found):
        raise ValueError(f"{source} holds levels {found} m at export.depth_indices, but the model was trained on "
                         f"{list(trained)} m; evaluate it on an export of its own levels.")
