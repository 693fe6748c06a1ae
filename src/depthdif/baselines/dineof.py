"""DINEOF (Data Interpolating Empirical Orthogonal Functions) through the published ``pydineof`` package.

DINEOF (Beckers & Rixen 2003; Alvera-Azcarate et al. 2005) fills gaps in a space-time stack with a
truncated EOF decomposition whose number of modes is chosen by cross-validation on held-out observed
points.  It is the peer implementation run side by side with the home-made baselines: it works on the
time stack of one window ``(T, H, W)`` (same location, consecutive months), so it sees other months'
observations of the same place - but never their hidden pixels.

Notes on driving ``pydineof.run_2D`` (v0.1.x):

* It takes the logarithm of the data and drops values <= 0, so the stack is given in Kelvin
  (°C + 273.15) and converted back; over the ocean's range log(K) is nearly linear in K.
* Its time axis must be numeric: frames are given an integer axis 0..T-1 (one step per frame), which is
  what its temporal filter (``alpha``, ``numit``) expects.
* It needs ``ncv > nev + 5`` and ``ncv < T`` (Lanczos on the T x T covariance), i.e. at least 8 frames;
  fewer raise :class:`BaselineUnavailable`.
* Pixels never observed in any frame have no row in the EOF matrix and come back NaN; they are filled
  from the nearest reconstructed pixel of the same frame (logged), so the output covers the ocean.
* It prints its progress; that text is captured and sent to this module's logger at debug level.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import xarray as xr

from ._common import BaselineInputError, BaselineUnavailable, as_ocean_mask, nearest_fill

logger = logging.getLogger(__name__)

KELVIN_OFFSET = 273.15
MIN_FRAMES = 8  # nev >= 1 needs ncv >= nev + 6 and ncv <= T - 1


def dineof_fill(
    stack_obs: np.ndarray,
    land: np.ndarray,
    max_modes: int = 10,
    seed: int = 0,
    alpha: float = 0.01,
    numit: int = 3,
    toliter: float = 1e-3,
    nitemax: int = 350,
) -> np.ndarray:
    """Fill a ``(T, H, W)`` stack in °C (NaN = not observed) with DINEOF; returns ``(T, H, W)`` in °C.

    ``land`` is the ``(H, W)`` ocean mask (True = ocean).  Observed ocean pixels keep their value, land is
    NaN.  ``max_modes`` caps the EOF modes DINEOF may retain (it picks the best number up to
    ``min(max_modes, T - 7)`` by cross-validation, with points chosen by ``seed``).  Raises
    :class:`BaselineUnavailable` with the reason when DINEOF cannot run (too few frames or observations).
    """
    stack = np.asarray(stack_obs, dtype=np.float64)
    if stack.ndim != 3:
        raise BaselineInputError(f"dineof_fill: stack_obs must be (T, H, W); got shape {stack.shape}")
    n_frames, height, width = stack.shape
    ocean = as_ocean_mask(land, (height, width))
    if not ocean.any():
        return np.full(stack.shape, np.nan)
    observed = np.isfinite(stack) & ocean[None]
    if not observed.any():
        raise BaselineUnavailable("dineof: no observed ocean pixel in any frame of the stack")
    nev = min(int(max_modes), n_frames - (MIN_FRAMES - 1))
    if nev < 1:
        raise BaselineUnavailable(
            f"dineof: pydineof needs at least {MIN_FRAMES} frames (ncv > nev + 5 and ncv < T); "
            f"the stack has {n_frames}"
        )
    ncv = min(n_frames - 1, max(nev + 6, 2 * nev + 1))
    kelvin = np.where(observed, stack + KELVIN_OFFSET, np.nan)
    if np.nanmin(kelvin) <= 0:
        raise BaselineInputError("dineof_fill expects °C (it works in Kelvin); found values <= -273.15")
    data = xr.DataArray(
        kelvin.astype(np.float32),
        dims=("time", "y", "x"),
        coords={"time": np.arange(n_frames), "y": np.arange(height), "x": np.arange(width)},
    )
    mask = xr.DataArray(ocean, dims=("y", "x"), coords={"y": data.y, "x": data.x})
    result = _run_pydineof(data, mask, nev=nev, ncv=ncv, seed=seed, alpha=alpha, numit=numit,
                           toliter=toliter, nitemax=nitemax)
    filled = result.transpose("time", "y", "x").values.astype(np.float64) - KELVIN_OFFSET
    return _finish_stack(filled, stack, observed, ocean)


def _run_pydineof(data: xr.DataArray, mask: xr.DataArray, **options) -> xr.DataArray:
    """Call ``pydineof.run_2D`` with its printing captured and its refusals turned into BaselineUnavailable."""
    import pydineof  # optional peer dependency (pip extra "peer")

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            result = pydineof.run_2D(data, mask=mask, rec=False, **options)
    except ValueError as err:  # its refusals: too few observations for cross-validation, bad ncv
        raise BaselineUnavailable(f"dineof: pydineof refused the stack: {err}") from err
    finally:
        logger.debug("pydineof output:\n%s", printed.getvalue())
    return result


def _finish_stack(filled: np.ndarray, stack: np.ndarray, observed: np.ndarray, ocean: np.ndarray) -> np.ndarray:
    """Observed pixels restored, never-observed ocean pixels filled per frame by nearest, land NaN."""
    out = np.where(observed, stack, filled)
    gaps = ~np.isfinite(out) & ocean[None]
    if gaps.any():
        logger.debug("dineof: %d never-observed pixel-frames filled by nearest neighbour", int(gaps.sum()))
        for t in np.nonzero(gaps.any(axis=(1, 2)))[0]:
            known = np.isfinite(out[t]) & ocean
            if not known.any():
                raise BaselineUnavailable(f"dineof: frame {t} has no reconstructed ocean pixel")
            out[t] = np.where(gaps[t], nearest_fill(np.where(known, out[t], 0.0), known), out[t])
    out[:, ~ocean] = np.nan
    return out
