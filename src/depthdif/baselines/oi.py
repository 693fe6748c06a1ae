"""Optimal interpolation (simple kriging) with a Gaussian covariance, and its EO-regression variant.

The analysis of one band is ``mean + C_go (C_oo + eps I)^-1 (y - mean)``, where ``C`` is the Gaussian
correlation ``exp(-d^2 / (2 L^2))`` between pixels ``d`` px apart, ``eps`` the observation-noise to
signal variance ratio and ``mean`` the mean of the observations (the signal variance cancels out of the
estimate).  Two facts make it fast enough for the evaluation and for the data loader:

* Pixels sit on an integer grid and the Gaussian is separable, so every covariance is a product of two
  entries of one 1-D lookup table (no ``exp`` per pair), and the grid estimate ``C_go w`` is the matrix
  product ``Ky diag(w) Kx^T`` of two thin ``(H, n)`` and ``(W, n)`` tables: ``O(H W n)`` BLAS work.
* Up to :data:`DIRECT_MAX_OBS` observations the system is solved exactly with a Cholesky factorisation
  (``scipy.linalg.cho_solve``).  Beyond that (dense patches, occlusion <= ~0.9 on 128 px) the same,
  untruncated system is solved by conjugate gradients whose matrix-vector product scatters the weights on
  the grid and applies the separable Gaussian as two dense ``(H, H)``/``(W, W)`` products: the cost per
  iteration no longer grows with the number of observations, and nothing is localised or subsampled.
  Measured on one core: 128x128 with 400 obs ~6 ms (direct); 4000 obs ~0.1 s (CG, ~170 iterations).

The length scale is ``evaluate.oi_length_scale_px``, or, with ``fit_length_scale=True``, fitted per band
to the empirical semivariogram of the observations (a tuned OI, the fair opponent for a learned model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.optimize import nnls
from scipy.sparse.linalg import LinearOperator, cg
from scipy.spatial.distance import pdist

from ._common import Observations, all_nan, finish, gather_observations, require_observations
from .spatial import _nearest_fill

logger = logging.getLogger(__name__)

DIRECT_MAX_OBS = 1000  # above this many observations the CG solver is faster than Cholesky (measured)
MIN_NOISE_RATIO = 1e-6  # jitter that keeps the Gaussian correlation matrix numerically positive definite
CG_RTOL = 1e-6
CG_MAXITER = 2000
VARIOGRAM_MIN_OBS = 12  # fewer observations give too few pairs for a meaningful variogram
VARIOGRAM_MAX_POINTS = 600  # subsample (deterministically) above this: 180 k pairs are plenty


def gaussian_table(length_scale_px: float, size: int) -> np.ndarray:
    """``exp(-d^2 / (2 L^2))`` for integer pixel offsets ``d = 0 .. size-1``."""
    if not np.isfinite(length_scale_px) or length_scale_px <= 0:
        raise ValueError(
            f"OI length scale must be a positive number of pixels (evaluate.oi_length_scale_px), "
            f"got {length_scale_px}"
        )
    offsets = np.arange(size, dtype=np.float64)
    return np.exp(-0.5 * (offsets / length_scale_px) ** 2)


def gaussian_oi_anomaly(
    rows: np.ndarray,
    cols: np.ndarray,
    anomalies: np.ndarray,
    shape: tuple[int, int],
    length_scale_px: float,
    noise_ratio: float,
) -> np.ndarray:
    """OI estimate on the whole ``shape`` grid of zero-mean ``anomalies`` observed at ``(rows, cols)``.

    ``anomalies`` may be ``(n,)`` or ``(n, m)`` (m fields observed at the same pixels share one
    factorisation); the result is ``(H, W)`` or ``(m, H, W)``.
    """
    height, width = shape
    table = gaussian_table(length_scale_px, max(height, width))
    eps = max(float(noise_ratio), MIN_NOISE_RATIO)
    rhs = anomalies.reshape(len(rows), -1)
    if len(rows) <= DIRECT_MAX_OBS:
        weights = _solve_direct(rows, cols, rhs, table, eps)
    else:
        weights = _solve_cg(rows, cols, rhs, table, eps, shape)
    ky = table[np.abs(np.arange(height)[:, None] - rows[None, :])]  # (H, n)
    kx = table[np.abs(np.arange(width)[:, None] - cols[None, :])]  # (W, n)
    fields = np.stack([(ky * weights[:, j]) @ kx.T for j in range(rhs.shape[1])])
    return fields[0] if anomalies.ndim == 1 else fields


def _solve_direct(rows, cols, rhs, table, eps) -> np.ndarray:
    """``(C_oo + eps I)^-1 rhs`` by Cholesky; more jitter if rounding makes the matrix indefinite."""
    corr = table[np.abs(rows[:, None] - rows[None, :])] * table[np.abs(cols[:, None] - cols[None, :])]
    diagonal = np.diag_indices_from(corr)
    while True:
        system = corr.copy()
        system[diagonal] += eps
        try:
            factor = linalg.cho_factor(system, lower=True, check_finite=False)
        except linalg.LinAlgError:
            if eps >= 1e-2:
                raise
            eps *= 10
            logger.debug("OI: correlation matrix not positive definite; retrying with noise ratio %g", eps)
            continue
        return linalg.cho_solve(factor, rhs, check_finite=False)


def _solve_cg(rows, cols, rhs, table, eps, shape) -> np.ndarray:
    """``(C_oo + eps I)^-1 rhs`` by conjugate gradients with a grid-based matrix-vector product."""
    height, width = shape
    k_rows = table[np.abs(np.arange(height)[:, None] - np.arange(height)[None, :])]
    k_cols = table[np.abs(np.arange(width)[:, None] - np.arange(width)[None, :])]
    n = len(rows)
    grid = np.zeros(shape)

    def matvec(v: np.ndarray) -> np.ndarray:
        v = v.ravel()
        grid[rows, cols] = v
        return (k_rows @ grid @ k_cols)[rows, cols] + eps * v

    operator = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    weights = np.empty_like(rhs)
    for j in range(rhs.shape[1]):
        weights[:, j], info = cg(operator, rhs[:, j], rtol=CG_RTOL, maxiter=CG_MAXITER)
        if info > 0:
            logger.warning(
                "OI: conjugate gradients stopped after %d iterations without reaching rtol=%g "
                "(%d observations, noise ratio %g); the estimate is approximate",
                info, CG_RTOL, n, eps,
            )
    return weights


@dataclass(frozen=True)
class VariogramFit:
    """Gaussian model ``nugget + sill (1 - exp(-h^2 / (2 L^2)))`` fitted to a semivariogram."""

    length_scale_px: float
    nugget: float
    sill: float
    n_pairs: int


def fit_variogram(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, max_points: int = VARIOGRAM_MAX_POINTS
) -> VariogramFit | None:
    """Fit a Gaussian variogram to the observations; None when there are too few or no spatial structure.

    Pairs are binned in 1-px lags up to half the largest separation (the usual limit beyond which bins
    hold few pairs); the nugget and sill are solved by non-negative least squares (weighted by pair
    counts) for each length scale on a log grid and the best length scale is kept.  Above ``max_points``
    observations a fixed-seed subsample keeps the cost bounded and the result deterministic.
    """
    n = len(values)
    if n < VARIOGRAM_MIN_OBS:
        return None
    if n > max_points:
        keep = np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))
        rows, cols, values = rows[keep], cols[keep], values[keep]
    points = np.column_stack([rows, cols]).astype(np.float64)
    lags = pdist(points)
    semivariance = 0.5 * pdist(values[:, None], "sqeuclidean")
    max_lag = 0.5 * lags.max()
    if max_lag < 2:
        return None
    edges = np.arange(0.5, max_lag + 1.0, 1.0)
    which = np.digitize(lags, edges) - 1
    usable = (which >= 0) & (which < len(edges) - 1)
    counts = np.bincount(which[usable], minlength=len(edges) - 1)
    sums = np.bincount(which[usable], weights=semivariance[usable], minlength=len(edges) - 1)
    lag_sums = np.bincount(which[usable], weights=lags[usable], minlength=len(edges) - 1)
    filled = counts > 0
    if filled.sum() < 3:
        return None
    gamma = sums[filled] / counts[filled]
    h = lag_sums[filled] / counts[filled]
    w = np.sqrt(counts[filled])
    best: tuple[float, float, float, float] | None = None
    for length in np.geomspace(0.5, max_lag, 48):
        design = np.column_stack([np.ones_like(h), 1.0 - np.exp(-0.5 * (h / length) ** 2)])
        coef, residual = nnls(design * w[:, None], gamma * w)
        if best is None or residual < best[0]:
            best = (residual, length, coef[0], coef[1])
    _, length, nugget, sill = best  # type: ignore[misc]
    if sill <= 0:
        return None
    return VariogramFit(float(length), float(nugget), float(sill), int(counts.sum()))


def _length_scale(data: Observations, values: np.ndarray, default: float, fit: bool) -> float:
    if not fit:
        return default
    result = fit_variogram(data.rows, data.cols, values)
    if result is None:
        logger.debug("OI: variogram fit unavailable (%d obs); using length scale %g px", data.count, default)
        return default
    return result.length_scale_px


def oi(
    obs: np.ndarray,
    land: np.ndarray,
    length_scale_px: float = 6.0,
    noise_ratio: float = 0.05,
    fit_length_scale: bool = False,
) -> np.ndarray:
    """Optimal interpolation of one band around the mean of its observations (see the module docstring).

    ``noise_ratio`` is ``evaluate.oi_noise_ratio`` (observation-noise / signal variance; 0 means exact
    interpolation, kept numerically stable by a 1e-6 jitter); the observed pixels are restored exactly.
    """
    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "oi")
    mean = data.values.mean()
    anomalies = data.values - mean
    length = _length_scale(data, anomalies, length_scale_px, fit_length_scale)
    field = mean + gaussian_oi_anomaly(data.rows, data.cols, anomalies, data.shape, length, noise_ratio)
    return finish(field, data)


def regress_on_eo(values: np.ndarray, eo_values: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``values ~ a + b * eo``; slope 0 when it is not identifiable.

    With fewer than 3 observations a line through them would be fitted exactly and extrapolate wildly,
    and with a constant EO at the observations the slope is undefined: both return the mean and b = 0.
    """
    if len(values) < 3:
        return float(values.mean()), 0.0
    eo_centred = eo_values - eo_values.mean()
    spread = float(eo_centred @ eo_centred)
    if spread <= 1e-12 * len(values) * max(1.0, float(np.abs(eo_values).max()) ** 2):
        return float(values.mean()), 0.0
    slope = float(eo_centred @ (values - values.mean())) / spread
    return float(values.mean() - slope * eo_values.mean()), slope


def complete_eo(eo: np.ndarray, ocean: np.ndarray) -> np.ndarray | None:
    """The EO field with missing ocean pixels filled by their nearest valid EO pixel; None if none is valid."""
    eo = np.asarray(eo, dtype=np.float64)
    if eo.shape != ocean.shape:
        raise ValueError(f"eo has shape {eo.shape} but the band has shape {ocean.shape}; pass the EO band of the same patch")
    valid = np.isfinite(eo) & ocean
    if not valid.any():
        return None
    if valid[ocean].all():
        return eo
    return _nearest_fill(np.where(valid, eo, 0.0), valid)


def eo_regression_oi(
    obs: np.ndarray,
    land: np.ndarray,
    eo: np.ndarray | None = None,
    length_scale_px: float = 6.0,
    noise_ratio: float = 0.05,
    fit_length_scale: bool = False,
) -> np.ndarray:
    """Regression of the band on the EO/surface field, plus OI of the regression residuals.

    ``prediction = a + b * eo + OI(y - a - b * eo)``, with ``a, b`` fitted by least squares on the
    observed pixels.  The residuals have zero mean (the regression has an intercept), so their OI is
    around 0.  Without a usable EO field (None, or no finite value on the ocean) this is plain :func:`oi`.
    """
    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "eo_regression_oi")
    eo_full = None if eo is None else complete_eo(eo, data.ocean)
    if eo_full is None:
        logger.debug("eo_regression_oi: no EO field; falling back to oi")
        return oi(obs, land, length_scale_px, noise_ratio, fit_length_scale)
    intercept, slope = regress_on_eo(data.values, eo_full[data.rows, data.cols])
    trend = intercept + slope * eo_full
    residuals = data.values - trend[data.rows, data.cols]
    length = _length_scale(data, residuals, length_scale_px, fit_length_scale)
    field = trend + gaussian_oi_anomaly(data.rows, data.cols, residuals, data.shape, length, noise_ratio)
    return finish(field, data)
