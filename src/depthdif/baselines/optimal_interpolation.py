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
  Measured on one core: 128x128 with 400 obs ~6 ms (direct); 3600 obs ~0.1 s (CG, ~230 iterations at
  noise ratio 0.05), but ~0.3-0.6 s (800-1200 iterations) at the small noise ratios (0.001) that tuning
  picks for smooth fields; the tuning itself adds ~50-150 ms per band.

The length scale and noise ratio are ``evaluate.oi_length_scale_px`` / ``evaluate.oi_noise_ratio``, or,
with ``tune=True`` (``evaluate.oi_tune``), chosen per band by leave-one-out cross-validation over a small
grid (:func:`tune_oi`): a tuned OI is the fair opponent for a learned model.  (A Gaussian fit to the
empirical semivariogram was tried first and dropped: on the GLORYS12 sample its RMSE was ~3x that of the
fixed 6 px, plausibly because the large-scale gradient inside a patch keeps the semivariogram rising.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.sparse.linalg import LinearOperator, cg

from ._common import Observations, all_nan, finish, gather_observations, nearest_fill, require_observations

logger = logging.getLogger(__name__)

DIRECT_MAX_OBS = 1500  # above this many observations CG beats Cholesky (measured on one core, 128x128)
MIN_NOISE_RATIO = 1e-6  # jitter that keeps the Gaussian correlation matrix numerically positive definite
CG_RTOL = 1e-6
CG_MAXITER = 2000
# leave-one-out tuning grid (``tune=True``): ~70 ms for 250 observations on one core
TUNE_LENGTH_SCALES_PX = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
TUNE_NOISE_RATIOS = (0.001, 0.01, 0.03, 0.1, 0.3)
TUNE_MAX_OBS = 250
TUNE_MIN_OBS = 8


def gaussian_table(length_scale_px: float, size: int) -> np.ndarray:
    """``exp(-d^2 / (2 L^2))`` for integer pixel offsets ``d = 0 .. size-1``.

    Args:
        length_scale_px: L, px.
        size: number of offsets.

    Returns:
        (size,) float64 correlations, 1 at d = 0.

    Raises:
        ValueError: L is not a positive finite number.
    """
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
    dtype: type = np.float64,
) -> np.ndarray:
    """OI estimate on the whole ``shape`` grid of zero-mean ``anomalies`` observed at ``(rows, cols)``.

    ``anomalies`` may be ``(n,)`` or ``(n, m)`` (m fields observed at the same pixels share one
    factorisation); the result is ``(H, W)`` or ``(m, H, W)``.  ``dtype=np.float32`` halves the cost
    of the direct solve (used by the data loader's first guess; the evaluation keeps float64).

    Args:
        rows: (n,) int row of each observation, px.
        cols: (n,) int column of each observation, px.
        anomalies: (n,) or (n, m) zero-mean values at the observations, any unit.
        shape: (H, W) of the grid.
        length_scale_px: L of the Gaussian correlation, px.
        noise_ratio: observation-noise / signal variance (at least 1e-6).
        dtype: of the direct solve (the CG solve runs in float64).

    Returns:
        (H, W) or (m, H, W) float64 analysed anomalies in ``anomalies``' unit.

    Raises:
        ValueError: L is not a positive finite number.
        scipy.linalg.LinAlgError: the correlation matrix stays indefinite with a noise ratio of 0.1.
    """
    height, width = shape
    table = gaussian_table(length_scale_px, max(height, width))
    eps = max(float(noise_ratio), MIN_NOISE_RATIO)
    rhs = anomalies.reshape(len(rows), -1).astype(dtype)
    if len(rows) <= DIRECT_MAX_OBS:
        weights = _solve_direct(rows, cols, rhs, table.astype(dtype), eps)
    else:
        weights = _solve_cg(rows, cols, rhs.astype(np.float64), table, eps, shape)
    table = table.astype(dtype)
    ky = table[np.abs(np.arange(height)[:, None] - rows[None, :])]  # (H, n)
    kx = table[np.abs(np.arange(width)[:, None] - cols[None, :])]  # (W, n)
    fields = np.stack([(ky * weights[:, j]) @ kx.T for j in range(rhs.shape[1])]).astype(np.float64)
    return fields[0] if anomalies.ndim == 1 else fields


def _correlation(rows: np.ndarray, cols: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Gaussian correlation between observations (two table lookups per pair, int32 offsets for speed)."""
    rows = rows.astype(np.int32)
    cols = cols.astype(np.int32)
    corr = table[np.abs(rows[:, None] - rows[None, :])]
    corr *= table[np.abs(cols[:, None] - cols[None, :])]
    return corr


def _solve_direct(rows, cols, rhs, table, eps) -> np.ndarray:
    """``(C_oo + eps I)^-1 rhs`` by Cholesky; more jitter if rounding makes the matrix indefinite."""
    corr = _correlation(rows, cols, table)
    diagonal = np.diag_indices_from(corr)
    if table.dtype == np.float32:
        eps = max(eps, 1e-4)  # float32 cannot resolve a smaller jitter on a unit diagonal
    while True:
        system = corr.copy()
        system[diagonal] += eps
        try:
            factor = linalg.cho_factor(system, lower=True, check_finite=False, overwrite_a=True)
        except linalg.LinAlgError:
            if eps >= 1e-1:
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
class OITuning:
    """Length scale and noise ratio chosen by leave-one-out cross-validation, with its LOO RMSE.

    Args:
        length_scale_px: the chosen L, px.
        noise_ratio: the chosen observation-noise / signal variance ratio.
        loo_rmse: its leave-one-out RMSE, in the anomalies' unit.
        n_obs: observations the tuning used (at most ``max_obs``).
    """

    length_scale_px: float
    noise_ratio: float
    loo_rmse: float
    n_obs: int


def tune_oi(
    rows: np.ndarray,
    cols: np.ndarray,
    anomalies: np.ndarray,
    length_scales_px: tuple[float, ...] = TUNE_LENGTH_SCALES_PX,
    noise_ratios: tuple[float, ...] = TUNE_NOISE_RATIOS,
    max_obs: int = TUNE_MAX_OBS,
) -> OITuning | None:
    """Pick the (length scale, noise ratio) pair with the smallest leave-one-out error; None if < 8 obs.

    For OI the leave-one-out residual of observation i has the closed form ``w_i / (A^-1)_ii`` with
    ``A = C + eps I`` and ``w = A^-1 d`` (no refitting), and one eigendecomposition of ``C`` per length
    scale serves every noise ratio.  Above ``max_obs`` observations the tuning uses the ``max_obs``
    nearest to their centroid: a compact cluster keeps the real observation density, which random
    thinning would not (and the best length scale depends on that density). The closed form is that of
    Gaussian-process regression (Rasmussen & Williams 2006, "Gaussian Processes for Machine Learning",
    §5.4.2).

    Args:
        rows: (n,) int row of each observation, px.
        cols: (n,) int column of each observation, px.
        anomalies: (n,) zero-mean values at the observations, any unit.
        length_scales_px: candidate L, px.
        noise_ratios: candidate noise ratios.
        max_obs: most observations used.

    Returns:
        The best pair with its LOO RMSE (``anomalies``' unit), or None with fewer than 8 observations.
    """
    n = len(anomalies)
    if n < TUNE_MIN_OBS:
        return None
    if n > max_obs:
        centre_row, centre_col = rows.mean(), cols.mean()
        keep = np.argsort((rows - centre_row) ** 2 + (cols - centre_col) ** 2, kind="stable")[:max_obs]
        rows, cols, anomalies = rows[keep], cols[keep], anomalies[keep]
    span = int(max(np.ptp(rows), np.ptp(cols))) + 1
    table_size = span + 1
    best: OITuning | None = None
    for length in length_scales_px:
        corr = _correlation(rows, cols, gaussian_table(length, table_size))
        eigenvalues, vectors = np.linalg.eigh(corr)
        eigenvalues = np.clip(eigenvalues, 0.0, None)
        projected = vectors.T @ anomalies
        squared_vectors = vectors**2
        for eps in noise_ratios:
            inverse_eigen = 1.0 / (eigenvalues + max(eps, MIN_NOISE_RATIO))
            weights = vectors @ (projected * inverse_eigen)
            loo_residuals = weights / (squared_vectors @ inverse_eigen)
            rmse = float(np.sqrt(np.mean(loo_residuals**2)))
            if best is None or rmse < best.loo_rmse:
                best = OITuning(float(length), float(eps), rmse, len(anomalies))
    return best


def _oi_parameters(data: Observations, anomalies: np.ndarray, length: float, noise: float, tune: bool):
    """The configured (length scale, noise ratio), or the LOO-tuned pair when ``tune`` and enough obs."""
    if not tune:
        return length, noise
    tuned = tune_oi(data.rows, data.cols, anomalies)
    if tuned is None:
        logger.debug("OI: %d observations are too few to tune; using L=%g px, eps=%g", data.count, length, noise)
        return length, noise
    return tuned.length_scale_px, tuned.noise_ratio


def oi(
    obs: np.ndarray,
    land: np.ndarray,
    length_scale_px: float = 6.0,
    noise_ratio: float = 0.05,
    tune: bool = False,
) -> np.ndarray:
    """Optimal interpolation of one band around the mean of its observations (see the module docstring).

    ``noise_ratio`` is ``evaluate.oi_noise_ratio`` (observation-noise / signal variance; 0 means exact
    interpolation, kept numerically stable by a 1e-6 jitter); the observed pixels are restored exactly.
    Optimal interpolation is the objective analysis of Gandin (1963) and Bretherton, Davis & Fandry (1976,
    "A technique for objective analysis and design of oceanographic experiments applied to MODE-73",
    Deep-Sea Res. 23).

    Args:
        obs: (H, W) one band of one patch, any unit (°C in the evaluation), NaN where not observed.
        land: (H, W) the ocean mask, True (or 1) = ocean.
        length_scale_px: L of the Gaussian correlation, px (``evaluate.oi_length_scale_px``).
        noise_ratio: observation-noise / signal variance (``evaluate.oi_noise_ratio``).
        tune: choose L and the noise ratio per band by leave-one-out (:func:`tune_oi`; ``evaluate.oi_tune``).

    Returns:
        (H, W) float64 in ``obs``'s unit: filled on ocean, NaN on land, observed ocean pixels unchanged.

    Raises:
        BaselineUnavailable: the band has no observed ocean pixel.
        BaselineInputError: ``obs`` is not 2-D, or ``land`` is not a boolean mask of its shape.
        ValueError: ``length_scale_px`` is not a positive finite number.
    """
    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "oi")
    mean = data.values.mean()
    anomalies = data.values - mean
    length, noise = _oi_parameters(data, anomalies, length_scale_px, noise_ratio, tune)
    field = mean + gaussian_oi_anomaly(data.rows, data.cols, anomalies, data.shape, length, noise)
    return finish(field, data)


def regress_on_drifts(values: np.ndarray, drifts: np.ndarray) -> tuple[float, np.ndarray]:
    """Least-squares ``(a, b)`` of ``values ~ a + drifts @ b`` (multiple linear regression).

    Args:
        values: (n,) observations.
        drifts: (n, K) the dense fields at the observations (SST, sea-surface height, ...; any units).

    Returns:
        The intercept and the (K,) slopes. With fewer than K + 2 observations a regression through them would
        be fitted (nearly) exactly and extrapolate wildly: the mean and zero slopes. A field constant at the
        observations gets slope 0 (its column is left out).
    """
    values = np.asarray(values, dtype=np.float64)
    drifts = np.asarray(drifts, dtype=np.float64).reshape(len(values), -1)
    slopes = np.zeros(drifts.shape[1])
    if len(values) < drifts.shape[1] + 2:
        return float(values.mean()), slopes
    centred = drifts - drifts.mean(0)
    spread = (centred**2).sum(0)
    usable = spread > 1e-12 * len(values) * np.maximum(1.0, np.abs(drifts).max(0) ** 2)
    if usable.any():
        solution, *_ = np.linalg.lstsq(centred[:, usable], values - values.mean(), rcond=None)
        slopes[usable] = solution
    return float(values.mean() - drifts.mean(0) @ slopes), slopes


def complete_eo(eo: np.ndarray, ocean: np.ndarray) -> np.ndarray | None:
    """The EO field (H, W), or a stack of dense surface fields (K, H, W), with missing ocean pixels filled by
    their nearest valid pixel of the same field; None if a field has no valid ocean pixel.

    Args:
        eo: (H, W) or (K, H, W) dense surface fields, each in its own unit, NaN where missing.
        ocean: (H, W) bool, True on ocean.

    Returns:
        ``eo``'s shape, float64, finite on the ocean; None when a field has no finite ocean pixel.

    Raises:
        ValueError: a field is not of ``ocean``'s shape.
    """
    eo = np.asarray(eo, dtype=np.float64)
    if eo.ndim == 3:
        fields = [complete_eo(field, ocean) for field in eo]
        return None if any(f is None for f in fields) else np.stack(fields)
    if eo.shape != ocean.shape:
        raise ValueError(f"eo has shape {eo.shape} but the band has shape {ocean.shape}; pass the EO band of the same patch")
    valid = np.isfinite(eo) & ocean
    if not valid.any():
        return None
    if valid[ocean].all():
        return eo
    return nearest_fill(np.where(valid, eo, 0.0), valid)


def drift_trend(values: np.ndarray, fields: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Regression of the observed ``values`` on the dense ``fields``, evaluated everywhere.

    Args:
        values: (n,) observations at (rows, cols).
        fields: (H, W) or (K, H, W) dense fields, complete on the ocean (:func:`complete_eo`), any units.
        rows: (n,) int rows of the observations, px.
        cols: (n,) int columns of the observations, px.

    Returns:
        (H, W) float64 ``a + sum_k b_k fields[k]`` in ``values``' unit (:func:`regress_on_drifts`).
    """
    stack = fields if fields.ndim == 3 else fields[None]
    intercept, slopes = regress_on_drifts(values, stack[:, rows, cols].T)
    return intercept + np.tensordot(slopes, stack, axes=1)


def eo_regression_oi(
    obs: np.ndarray,
    land: np.ndarray,
    eo: np.ndarray | None = None,
    length_scale_px: float = 6.0,
    noise_ratio: float = 0.05,
    tune: bool = False,
) -> np.ndarray:
    """Regression of the band on the dense surface fields, plus OI of the regression residuals.

    ``prediction = a + b · eo + OI(y - a - b · eo)``, with ``a, b`` fitted by least squares on the observed
    pixels. ``eo`` is the EO sea-surface temperature (H, W), or a stack (K, H, W) of it and the other dense
    surface fields (sea-surface height, ...; any units): the ARMOR3D construction (Guinehut et al. 2012, Ocean
    Sci. 8), a multiple regression on SST and SSH before the OI of the profiles' residuals. The residuals have
    zero mean (the regression has an intercept), so their OI is around 0. Without a usable surface field (None,
    or a field with no finite value on the ocean) this is plain :func:`oi`.

    Args:
        obs: (H, W) one band of one patch, °C in the evaluation, NaN where not observed.
        land: (H, W) the ocean mask, True (or 1) = ocean.
        eo: (H, W) EO sea-surface temperature (°C) or (K, H, W) with the other surface fields in their own units,
            NaN where missing; None for plain OI.
        length_scale_px: L of the Gaussian correlation of the residuals, px.
        noise_ratio: observation-noise / signal variance.
        tune: choose L and the noise ratio per band by leave-one-out (:func:`tune_oi`).

    Returns:
        (H, W) float64 in ``obs``'s unit: filled on ocean, NaN on land, observed ocean pixels unchanged.

    Raises:
        BaselineUnavailable: the band has no observed ocean pixel.
        BaselineInputError: ``obs`` is not 2-D, or ``land`` is not a boolean mask of its shape.
        ValueError: ``eo`` is not of the band's shape, or ``length_scale_px`` is not positive.
    """

    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "eo_regression_oi")
    eo_full = None if eo is None else complete_eo(eo, data.ocean)
    if eo_full is None:
        logger.debug("eo_regression_oi: no EO field; falling back to oi")
        return oi(obs, land, length_scale_px, noise_ratio, tune)
    trend = drift_trend(data.values, eo_full, data.rows, data.cols)
    residuals = data.values - trend[data.rows, data.cols]
    length, noise = _oi_parameters(data, residuals, length_scale_px, noise_ratio, tune)
    field = trend + gaussian_oi_anomaly(data.rows, data.cols, residuals, data.shape, length, noise)
    return finish(field, data)
