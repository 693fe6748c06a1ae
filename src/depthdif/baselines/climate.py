"""Climatology: the same patch location in the same calendar month of *other* years.

Unlike every other method here, climatology does not use the patch's observations to estimate the hidden
pixels: it uses the complete fields of other years at the same place, which neither the diffusion model
nor the other baselines are given.  It is a reference for how much of a field is just its seasonal
climate, not a competitor on equal terms, and the report must say so.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from depthdif.paths import resolve_inside

from ._common import BaselineUnavailable, as_ocean_mask, finish, gather_observations

logger = logging.getLogger(__name__)

# patch index columns that identify a patch location (the contract columns of patch_index*.csv)
LOCATION_COLUMNS = ("y0", "x0", "patch_size")


def climatology(
    history_same_month: np.ndarray | None,
    land: np.ndarray,
    obs: np.ndarray | None = None,
    history_other_months: np.ndarray | None = None,
) -> np.ndarray:
    """Mean of the same location's fields from other years, same calendar month; ``(H, W)``.

    ``history_same_month`` is ``(N, H, W)`` (NaN where a field has no data, N may be 0 or None).  A pixel
    with no value there takes the mean of ``history_other_months`` (all months of other years), and one
    with no value in either the mean of ``obs`` (mean fill).  If ``obs`` is given, its observed ocean
    pixels are kept exactly, like every other baseline.  NOTE: this uses information (other years' full
    fields) that the model does not get; see the module docstring.

    Args:
        history_same_month: (N, H, W) (or (H, W)) fields of the same place and calendar month in other years,
            °C in the evaluation, NaN where no data; None or N = 0 when there are none.
        land: (H, W) the ocean mask, True (or 1) = ocean.
        obs: (H, W) the band's observations, NaN where not observed, or None.
        history_other_months: (M, H, W) fields of the same place in the other months of other years, or None.

    Returns:
        (H, W) float64 in the fields' unit: filled on ocean, NaN on land, observed ocean pixels of ``obs``
        unchanged.

    Raises:
        BaselineUnavailable: some ocean pixels have no value in any history and ``obs`` has no observation.
        ValueError: a history's fields are not (H, W).
        BaselineInputError: ``land`` or ``obs`` has the wrong shape or type.
    """
    ocean = as_ocean_mask(land, np.shape(land))
    shape = ocean.shape
    estimate = _stack_mean(history_same_month, shape, "history_same_month")
    missing = ~np.isfinite(estimate) & ocean
    if missing.any() and history_other_months is not None:
        estimate = np.where(missing, _stack_mean(history_other_months, shape, "history_other_months"), estimate)
        missing = ~np.isfinite(estimate) & ocean
    data = gather_observations(np.full(shape, np.nan) if obs is None else obs, ocean)
    if missing.any():
        if data.count == 0:
            raise BaselineUnavailable(
                f"climatology: {int(missing.sum())} ocean pixels have no value in any other year and the "
                "band has no observation to fall back on"
            )
        logger.debug("climatology: %d pixels fall back to the observation mean", int(missing.sum()))
        estimate = np.where(missing, data.values.mean(), estimate)
    return finish(estimate, data)


def _stack_mean(stack: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    """NaN-aware mean over axis 0 (NaN where no member has a value), without the all-NaN warning."""
    if stack is None:
        return np.full(shape, np.nan)
    stack = np.asarray(stack, dtype=np.float64)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.shape[0] == 0:
        return np.full(shape, np.nan)
    if stack.shape[1:] != tuple(shape):
        raise ValueError(f"climatology: {name} has fields of shape {stack.shape[1:]}, expected {tuple(shape)}")
    finite = np.isfinite(stack)
    count = finite.sum(axis=0)
    total = np.where(finite, stack, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def climatology_history(index: pd.DataFrame, sample_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of a patch index at ``sample_id``'s location from other years: (same month, other months).

    The location is ``(y0, x0, patch_size)`` and the time the ``date`` column (YYYYMMDD); the target's
    own year is excluded so that the target field never enters its own climatology.

    Args:
        index: a patch index (``sample_id``, ``y0``, ``x0``, ``patch_size``, ``date``).
        sample_id: the target patch.

    Returns:
        ``(same_month, other_months)``: the index rows of the same place in other years, in the target's
        calendar month and in the other months.

    Raises:
        KeyError: the index lacks a column, or ``sample_id`` is not in it.
    """
    missing = [c for c in (*LOCATION_COLUMNS, "date", "sample_id") if c not in index.columns]
    if missing:
        raise KeyError(f"climatology_history: the patch index lacks columns {missing}")
    target = index.loc[index["sample_id"] == sample_id]
    if target.empty:
        raise KeyError(f"climatology_history: sample_id {sample_id!r} is not in the patch index")
    target = target.iloc[0]
    same_place = np.logical_and.reduce([index[c] == target[c] for c in LOCATION_COLUMNS])
    dates = index["date"].astype(int)
    year, month = dates // 10000, (dates // 100) % 100
    target_date = int(target["date"])
    other_year = same_place & (year != target_date // 10000)
    same_month = other_year & (month == (target_date // 100) % 100)
    return index.loc[same_month], index.loc[other_year & ~same_month]


def load_history(rows: pd.DataFrame, band: int, patches_dir: str | Path) -> np.ndarray:
    """The channel ``band`` of the patches in ``rows``, stacked.

    Args:
        rows: patch index rows (``y_npy_path`` relative to ``patches_dir``).
        band: the exported channel to read.
        patches_dir: the folder of the index CSV.

    Returns:
        (N, H, W) float64 as exported (°C, NaN on land); empty ``(0, 0, 0)`` when ``rows`` is empty.

    Raises:
        FileNotFoundError: a patch file listed in ``rows`` is missing.
        PathEscapeError: a ``y_npy_path`` leaves ``patches_dir``.
    """

    if rows.empty:
        return np.empty((0, 0, 0))
    fields = []
    for relative in rows["y_npy_path"]:
        path = resolve_inside(patches_dir, relative, "climatology history")
        try:
            fields.append(np.load(path, mmap_mode="r")[band])
        except FileNotFoundError as err:
            raise FileNotFoundError(f"climatology: patch file {path} listed in the index is missing; rerun export") from err
    return np.stack(fields).astype(np.float64)
