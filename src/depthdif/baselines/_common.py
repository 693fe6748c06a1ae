"""Input checks and output conventions shared by every gap-filling baseline.

Conventions (the contract of every per-patch method):

* ``obs`` is one band of one patch, ``(H, W)`` float, NaN where not observed.  Units do not matter to
  the linear methods (°C or z-score alike), but a method returns the units it was given.
* ``land`` is the project's ``land_mask``: **True on ocean**, False on land (the seed's naming, kept so
  that callers can pass ``land_mask`` straight through).  Values observed on land are ignored.
* The result is ``(H, W)`` float64: filled on ocean, NaN on land, and every observed ocean pixel keeps
  its observed value exactly (a gap-filler must not alter what it was given).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from depthdif.errors import DepthDifError


class BaselineUnavailable(RuntimeError):
    """A baseline cannot produce an estimate for this input (e.g. no observation in the band).

    The evaluation catches it and records NaN for that method, so the message says why. It is not a
    :class:`~depthdif.errors.DepthDifError`: it reports a property of one patch, not a file or setting the user can
    change, and one that reaches the command line escaped a caller that should have caught it (a bug, reported
    with its traceback).
    """


class BaselineInputError(DepthDifError, ValueError):
    """The arrays given to a baseline have the wrong shape or type: a caller bug, not a data gap."""


@dataclass(frozen=True)
class Observations:
    """One band's observations in the forms the methods need."""

    values: np.ndarray  # (n,) float64, observed ocean values
    rows: np.ndarray  # (n,) int, row of each observation
    cols: np.ndarray  # (n,) int, column of each observation
    observed: np.ndarray  # (H, W) bool, True where an ocean value was observed
    ocean: np.ndarray  # (H, W) bool, True on ocean

    @property
    def shape(self) -> tuple[int, int]:
        return self.ocean.shape  # type: ignore[return-value]

    @property
    def count(self) -> int:
        return int(self.values.size)

    @property
    def points(self) -> np.ndarray:
        """(n, 2) float coordinates (row, col) in pixels."""
        return np.column_stack([self.rows, self.cols]).astype(np.float64)


def as_ocean_mask(land: np.ndarray, shape: tuple[int, ...], name: str = "land") -> np.ndarray:
    """The ``land`` argument as a bool array (True = ocean), checked against ``shape``."""
    mask = np.asarray(land)
    if mask.shape != tuple(shape):
        raise BaselineInputError(
            f"{name} has shape {mask.shape} but the observations have shape {tuple(shape)}; pass the "
            "ocean mask (True = ocean) of the same patch"
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise BaselineInputError(f"{name} must be boolean or 0/1 (True/1 = ocean); got other values")
        mask = mask.astype(bool)
    return mask


def gather_observations(obs: np.ndarray, land: np.ndarray) -> Observations:
    """Check one band's inputs and collect its observed ocean pixels."""
    values = np.asarray(obs, dtype=np.float64)
    if values.ndim != 2:
        raise BaselineInputError(f"obs must be one band of one patch, shape (H, W); got shape {values.shape}")
    ocean = as_ocean_mask(land, values.shape)
    observed = np.isfinite(values) & ocean
    rows, cols = np.nonzero(observed)
    return Observations(values=values[rows, cols], rows=rows, cols=cols, observed=observed, ocean=ocean)


def require_observations(data: Observations, method: str) -> None:
    """Raise :class:`BaselineUnavailable` when a band has no observed ocean pixel."""
    if data.count == 0:
        raise BaselineUnavailable(
            f"{method}: no observed ocean pixel in this band (of {int(data.ocean.sum())} ocean pixels); "
            "nothing to interpolate from"
        )


def all_nan(shape: tuple[int, int]) -> np.ndarray:
    return np.full(shape, np.nan, dtype=np.float64)


def finish(estimate: np.ndarray, data: Observations) -> np.ndarray:
    """Apply the output conventions: NaN on land, observed ocean pixels restored exactly."""
    out = np.array(estimate, dtype=np.float64, copy=True)
    out[~data.ocean] = np.nan
    out[data.rows, data.cols] = data.values
    return out


def nearest_fill(grid: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``grid`` with every unknown pixel replaced by the value of the nearest known one."""
    # distance_transform_edt measures the distance to the nearest zero, so known pixels are the zeros
    idx = ndimage.distance_transform_edt(~known, return_distances=False, return_indices=True)
    return grid[idx[0], idx[1]]
