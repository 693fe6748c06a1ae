"""DINEOF (Data Interpolating Empirical Orthogonal Functions) through the published ``pydineof`` package.

DINEOF (Beckers & Rixen 2003, J. Atmos. Oceanic Technol. 20:1839; Alvera-Azcárate et al. 2005, Ocean
Modelling 9:325) fills the gaps of a space-time matrix (rows = ocean pixels, columns = frames) with a
truncated EOF decomposition, iterated until the filled values stop changing; the number of modes is the
one that minimises the error on observed points set aside for cross-validation.  It is the peer
implementation run side by side with the home-made baselines.  It sees other months' observations of the
same places - never their hidden pixels.

How ``pydineof.run_2D`` (v0.1.x) is driven here, and why:

* **One matrix for one or several locations.**  DINEOF knows nothing about space (DINEOF FAQ: it "simply
  stacks all values of a given moment into a column vector"), so the frames of several locations that
  share the same months can be concatenated side by side into one frame; the temporal modes are then
  estimated from every location's observations at once.  Each location keeps its own pixels, masks and
  ocean; nothing passes between them but the shared temporal modes.  That pays when the locations share
  their modes of variability (a month clouded at one place is seen at another); where each place has its
  own eddies, one matrix needs the sum of their ranks, which T frames cap at T - 7 modes (measured on
  this repo's ocean: worse than one matrix per location, bench/dineof_peer.py).
* **Linear, not logarithmic.**  ``run_2D`` takes the logarithm of the data (meant for log-normal fields
  such as chlorophyll) and exponentiates the result; the Fortran DINEOF used for SST does not.  The data
  are handed over as ``exp(value)`` so its logarithm returns the value exactly and the EOFs are those of
  temperature itself (the former log of Kelvin was nearly linear: the RMSE changed by <= 0.01 °C).
* **Centring.**  ``run_2D`` removes one overall mean, like the Fortran code; that is the default
  (``centre="none"``).  ``centre="pixel"`` removes each pixel's temporal mean of its observations first
  (anomalies); with few observations per pixel this freezes a pixel seen once at that month's value and
  loses its seasonal cycle (measured 1.08 -> 1.50 °C at 95 % hidden, 92 m), so it is not the default.
* **Time axis.**  Frames get the integer axis 0..T-1 (one step per frame, i.e. per month here), so the
  temporal filter ``alpha=0.01, numit=3`` (Alvera-Azcárate et al. 2009) smooths over
  2*pi*sqrt(alpha*numit) ~ 1.1 frames; kept, because without it (``alpha=0``) the RMSE rose from 0.47 to
  0.65 °C at 50 % hidden, 92 m, and a stronger filter (``alpha=0.2``) also did worse (0.65 °C).
* **Limits.**  It needs ``ncv > nev + 5`` and ``ncv < T`` (Lanczos on the T x T covariance), i.e. at
  least 8 frames; fewer raise :class:`BaselineUnavailable`.
* Pixels never observed in any frame have no row in the EOF matrix and come back NaN; they are filled
  from the nearest reconstructed pixel of the same location and frame (logged), so the output covers the
  ocean.
* It prints its progress; that text is captured and sent to this module's logger at debug level.
* **Reproducible.**  ``run_2D`` calls scipy's ``eigsh`` without a start vector, and scipy then draws one from
  fresh OS entropy: the fill changed from run to run (by ~2e-6 °C, ARPACK's tolerance), so cached
  predictions could not be checked against a rerun.  The start vector is drawn from ``seed`` instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re

import numpy as np
import xarray as xr

from ._common import BaselineInputError, BaselineUnavailable, as_ocean_mask, nearest_fill

logger = logging.getLogger(__name__)

MIN_FRAMES = 8  # nev >= 1 needs ncv >= nev + 6 and ncv <= T - 1
CENTRES = ("none", "pixel")
# exp() of a float32 overflows above ~88; anomalies of sea temperature stay far below this
_MAX_ABS_ANOMALY = 80.0


def dineof_fill(
    stack_obs: np.ndarray,
    land: np.ndarray,
    max_modes: int = 10,
    seed: int = 0,
    centre: str = "none",
    alpha: float = 0.01,
    numit: int = 3,
    toliter: float = 1e-3,
    nitemax: int = 350,
) -> np.ndarray:
    """Fill the gaps of one or several locations' time stacks with DINEOF (one EOF matrix for all).

    Args:
        stack_obs: °C, NaN where not observed; ``(T, H, W)`` for one location or ``(L, T, H, W)`` for L
            locations that share the same T frames (months) in the same order.  All locations go into
            one DINEOF matrix (their frames side by side).
        land: the ocean mask, True = ocean; ``(H, W)`` (shared by every location) or ``(L, H, W)``.
        max_modes: the most EOF modes DINEOF may retain; it picks the number up to
            ``min(max_modes, T - 7)`` by its cross-validation.
        seed: chooses pydineof's cross-validation points.
        centre: ``"none"``: only pydineof's own overall mean removal; ``"pixel"`` also removes each
            pixel's temporal mean of its observations before DINEOF (and adds it back).
        alpha, numit: strength and iterations of DINEOF's temporal filter (frames are one time unit apart).
        toliter, nitemax: DINEOF's stopping rule (relative change of the filled values) and iteration cap.

    Returns:
        float64 array of the shape of ``stack_obs``, °C: observed ocean pixels unchanged, gaps filled,
        land NaN.

    Raises:
        BaselineUnavailable: fewer than 8 frames, no observed ocean pixel, or pydineof refuses the
            matrix (too few observations for its cross-validation); the message says which.
        BaselineInputError: wrong shapes, unknown ``centre``, or values too far from the pixel means to be
            passed through ``exp``.
    """
    stack = np.asarray(stack_obs, dtype=np.float64)
    single = stack.ndim == 3
    if single:
        stack = stack[None]
    if stack.ndim != 4:
        raise BaselineInputError(
            f"dineof_fill: stack_obs must be (T, H, W) or (L, T, H, W); got shape {np.shape(stack_obs)}"
        )
    if centre not in CENTRES:
        raise BaselineInputError(f"dineof_fill: centre must be one of {CENTRES}; got {centre!r}")
    n_loc, n_frames, height, width = stack.shape
    ocean = _ocean_per_location(land, n_loc, height, width)
    out = _fill_locations(stack, ocean, max_modes=max_modes, seed=seed, centre=centre, alpha=alpha,
                          numit=numit, toliter=toliter, nitemax=nitemax)
    return out[0] if single else out


def _ocean_per_location(land: np.ndarray, n_loc: int, height: int, width: int) -> np.ndarray:
    """``land`` as an ``(L, H, W)`` bool ocean mask."""
    mask = np.asarray(land)
    if mask.ndim == 2:
        return np.broadcast_to(as_ocean_mask(mask, (height, width)), (n_loc, height, width))
    return as_ocean_mask(mask, (n_loc, height, width))


def _fill_locations(stack: np.ndarray, ocean: np.ndarray, max_modes: int, seed: int, centre: str,
                    **options) -> np.ndarray:
    """DINEOF on the ``(L, T, H, W)`` stack, locations side by side; returns ``(L, T, H, W)`` °C."""
    n_loc, n_frames, height, width = stack.shape
    if not ocean.any():
        return np.full(stack.shape, np.nan)
    observed = np.isfinite(stack) & ocean[:, None]
    nev = min(int(max_modes), n_frames - (MIN_FRAMES - 1))
    if nev < 1:
        raise BaselineUnavailable(
            f"dineof: pydineof needs at least {MIN_FRAMES} frames (ncv > nev + 5 and ncv < T); "
            f"the stack has {n_frames}"
        )
    if not observed.any():
        raise BaselineUnavailable("dineof: no observed ocean pixel in any frame of the stack")
    ncv = min(n_frames - 1, max(nev + 6, 2 * nev + 1))
    values = np.where(observed, stack, np.nan)
    if centre == "pixel":
        counts = observed.sum(axis=1, keepdims=True)
        # a never-observed pixel has no row in DINEOF's matrix (it comes back NaN), so its mean is moot
        mean = np.where(counts > 0, np.nansum(values, axis=1, keepdims=True) / np.maximum(counts, 1), 0.0)
    else:
        mean = np.zeros((n_loc, 1, height, width))
    anomaly = values - mean
    if np.nanmax(np.abs(anomaly)) > _MAX_ABS_ANOMALY:
        raise BaselineInputError(
            f"dineof_fill expects °C; found values more than {_MAX_ABS_ANOMALY:g} from their "
            f"{'pixel' if centre == 'pixel' else 'zero'} mean"
        )
    # DINEOF has no notion of space, so locations side by side along x are one matrix like any other
    # layout, and split back the same way: (L, T, H, W) -> (T, H, L * W)
    frames = np.concatenate(list(anomaly), axis=2)
    mask = np.concatenate(list(ocean), axis=1)
    data = xr.DataArray(
        np.exp(frames).astype(np.float32),
        dims=("time", "y", "x"),
        coords={"time": np.arange(n_frames), "y": np.arange(height), "x": np.arange(n_loc * width)},
    )
    result = _run_pydineof(data, xr.DataArray(mask, dims=("y", "x"), coords={"y": data.y, "x": data.x}),
                           nev=nev, ncv=ncv, seed=seed, **options)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN rows: pixels never observed
        filled = np.log(result.transpose("time", "y", "x").values.astype(np.float64))
    filled = np.stack(np.split(filled, n_loc, axis=2)) + mean
    return np.stack([_finish_stack(filled[k], values[k], observed[k], ocean[k]) for k in range(n_loc)])


def _run_pydineof(data: xr.DataArray, mask: xr.DataArray, **options) -> xr.DataArray:
    """Call ``pydineof.run_2D`` with its printing captured and its refusals turned into BaselineUnavailable."""
    import pydineof  # optional peer dependency (pip extra "peer")

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), _seeded_eigsh(int(options.get("seed") or 0)):
            result = pydineof.run_2D(data, mask=mask, rec=False, **options)
    except ValueError as err:  # its refusals: too few observations for cross-validation, bad ncv
        raise BaselineUnavailable(f"dineof: pydineof refused the stack: {err}") from err
    finally:
        logger.debug("pydineof output:\n%s", printed.getvalue())
    modes = re.search(r"Number of optimal EOF modes: (\d+)", printed.getvalue())
    result.attrs["dineof_modes"] = int(modes.group(1)) if modes else None
    logger.debug("dineof: %s modes retained by cross-validation (at most %d)", result.attrs["dineof_modes"],
                options["nev"])
    return result


@contextlib.contextmanager
def _seeded_eigsh(seed: int):
    """Within the block, pydineof's ``eigsh`` calls without a start vector get one drawn from ``seed`` (what
    scipy would draw from OS entropy: uniform in [-1, 1]), so DINEOF gives the same fill every run."""
    import pydineof.main as pydineof_main

    original = pydineof_main.eigsh
    rng = np.random.default_rng(seed)

    def eigsh(matrix, *args, **kwargs):
        if kwargs.get("v0") is None:
            kwargs["v0"] = rng.uniform(-1.0, 1.0, size=matrix.shape[0]).astype(matrix.dtype)
        return original(matrix, *args, **kwargs)

    pydineof_main.eigsh = eigsh
    try:
        yield
    finally:
        pydineof_main.eigsh = original


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
