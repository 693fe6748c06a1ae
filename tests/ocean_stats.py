"""Statistics of a temperature field that the synthetic ocean is calibrated against.

The same definitions as /work/shared/notes/real-ocean-statistics.md: the "mesoscale anomaly" is the
field minus a Gaussian-smoothed large-scale field (sigma = 10 px), smoothed by normalised convolution
over ocean cells so that the coast does not pull the large scale towards zero.  Used by
tests/test_synthetic.py and by the measurement command in docs/synthetic-ocean.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

LARGE_SCALE_SIGMA_PX = 10.0
MAX_LAG_PX = 40


def large_scale(field: np.ndarray, ocean: np.ndarray, sigma: float = LARGE_SCALE_SIGMA_PX) -> np.ndarray:
    """Gaussian smoothing of ``field`` over ``ocean`` cells only (normalised convolution)."""
    filled = np.where(ocean, field, 0.0)
    weight = ndimage.gaussian_filter(ocean.astype(float), sigma, mode="nearest")
    smooth = ndimage.gaussian_filter(filled, sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ocean, smooth / weight, np.nan)


def mesoscale_anomaly(field: np.ndarray, ocean: np.ndarray) -> np.ndarray:
    """``field`` minus its large scale; NaN off ``ocean``."""
    return np.where(ocean, field - large_scale(field, ocean), np.nan)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over cells finite in both."""
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _lag_pairs(a: np.ndarray, lag: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    n = a.shape[axis]
    head = np.take(a, np.arange(0, n - lag), axis=axis)
    tail = np.take(a, np.arange(lag, n), axis=axis)
    return head, tail


def autocorrelation(anomaly: np.ndarray, max_lag: int = MAX_LAG_PX) -> np.ndarray:
    """Correlation of the anomaly with itself shifted by 0..max_lag px, averaged over x and y."""
    out = [1.0]
    for lag in range(1, max_lag + 1):
        values = [correlation(*_lag_pairs(anomaly, lag, axis)) for axis in (0, 1)]
        out.append(float(np.mean(values)))
    return np.asarray(out)


def efolding_length_px(anomaly: np.ndarray, max_lag: int = MAX_LAG_PX) -> float:
    """Lag (px, linearly interpolated) where the autocorrelation first falls below 1/e; inf if never."""
    acf = autocorrelation(anomaly, max_lag)
    below = np.nonzero(acf < np.exp(-1.0))[0]
    if below.size == 0:
        return float("inf")
    k = int(below[0])
    a0, a1 = acf[k - 1], acf[k]
    return float(k - 1 + (a0 - np.exp(-1.0)) / (a0 - a1))


def gradient_excess_kurtosis(field: np.ndarray) -> float:
    """Excess kurtosis of one-cell differences in x and y (pairs of finite cells): heavy tails = fronts."""
    diffs = [np.diff(field, axis=axis).ravel() for axis in (0, 1)]
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    return float(stats.kurtosis(d, fisher=True))


def level_statistics(levels: np.ndarray, ocean: np.ndarray) -> list[dict]:
    """Per-level statistics of a (depth, y, x) stack on the ``ocean`` cells (valid at every level).

    Level 0 is taken as the surface for the correlations.
    """
    anomalies = [mesoscale_anomaly(level, ocean) for level in levels]
    surface, surface_anomaly = levels[0], anomalies[0]
    rows = []
    for level, anomaly in zip(levels, anomalies, strict=True):
        rows.append(
            {
                "mean": float(np.mean(level[ocean])),
                "std": float(np.std(level[ocean])),
                "anomaly_std": float(np.nanstd(anomaly)),
                "anomaly_corr_surface": correlation(anomaly, surface_anomaly),
                "corr_surface": correlation(np.where(ocean, level, np.nan), np.where(ocean, surface, np.nan)),
                "efolding_px": efolding_length_px(anomaly),
                "gradient_kurtosis": gradient_excess_kurtosis(np.where(ocean, level, np.nan)),
            }
        )
    return rows


def persistence(levels_a: np.ndarray, levels_b: np.ndarray, ocean: np.ndarray) -> list[float]:
    """Per-level correlation of the mesoscale anomaly between two months (same cells)."""
    return [
        correlation(mesoscale_anomaly(a, ocean), mesoscale_anomaly(b, ocean))
        for a, b in zip(levels_a, levels_b, strict=True)
    ]
