"""The cheap classical estimate fed to the network as extra input channels (``dataset.first_guess``).

It runs in the data loader for every sample, so it works on whole ``(C, H, W)`` stacks and shares one
OI factorisation between bands observed at the same pixels (the usual case: one mask for all bands).
"""

from __future__ import annotations

import logging

import numpy as np

from ._common import BaselineInputError, as_ocean_mask
from .optimal_interpolation import complete_eo, drift_trend, gaussian_oi_anomaly

logger = logging.getLogger(__name__)


def first_guess_estimate(
    x: np.ndarray,
    valid: np.ndarray,
    land: np.ndarray,
    eo: np.ndarray | None,
    length_scale_px: float,
    noise_ratio: float = 0.05,
) -> np.ndarray:
    """Per band: regression on the surface field(s) ``eo`` ((H, W) EO, or (K, H, W) with the other surface
    variables) + OI of residuals when given, else OI; ``(C, H, W)`` float32.

    ``x`` is the normalised (z-score) corrupted input, read only where ``valid`` (any value, e.g. 0, may
    stand at hidden pixels); ``land`` is the ocean mask (True = ocean) per band.  Observed pixels keep
    their value, land is 0 (the network's "no data" value), and a band without any observed ocean
    pixel is 0 everywhere, i.e. the normalisation mean: the loader must never fail on a sparse sample.
    The regression + OI is that of :func:`~depthdif.baselines.optimal_interpolation.eo_regression_oi` (the
    ARMOR3D construction, Guinehut et al. 2012), with a fixed length scale and noise ratio.

    Args:
        x: (C, H, W) input in z-scores of Kelvin, read only where ``valid``.
        valid: (C, H, W) bool (or 0/1), the observed pixels.
        land: (C, H, W) bool (or 0/1), True = ocean.
        eo: (H, W) EO surface temperature in z-scores of Kelvin, or (K, H, W) with the other surface fields in
            their own units; a non-finite ocean pixel takes its nearest finite one (:func:`complete_eo`); None
            for OI alone.
        length_scale_px: L of the OI's Gaussian correlation, px (``dataset.first_guess_length_scale_px``).
        noise_ratio: observation-noise / signal variance of the OI.

    Returns:
        (C, H, W) float32 z-scores: observed pixels unchanged, 0 on land and in bands without observations.

    Raises:
        BaselineInputError: ``x`` is not 3-D, or ``valid``/``land`` are not boolean masks of its shape.
        ValueError: ``eo`` is not of the patch's (H, W).
    """

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise BaselineInputError(f"first_guess_estimate: x must be (C, H, W); got shape {x.shape}")
    ocean = as_ocean_mask(land, x.shape, "land")
    observed = as_ocean_mask(valid, x.shape, "valid") & ocean & np.isfinite(x)
    shape = x.shape[1:]
    eo_full = None
    if eo is not None:
        eo_full = complete_eo(eo, ocean.any(axis=0))
    out = np.zeros(x.shape, dtype=np.float64)
    for bands in _bands_by_mask(observed):
        rows, cols = np.nonzero(observed[bands[0]])
        if rows.size == 0:
            logger.debug("first guess: bands %s have no observation; left at 0", bands)
            continue
        values = x[bands][:, rows, cols].T  # (n, m)
        trends = []
        residuals = np.empty_like(values)
        for j in range(len(bands)):
            if eo_full is None:
                trend = np.full(shape, values[:, j].mean())
            else:
                trend = drift_trend(values[:, j], eo_full, rows, cols)
            trends.append(trend)
            residuals[:, j] = values[:, j] - trend[rows, cols]
        anomaly = gaussian_oi_anomaly(rows, cols, residuals, shape, length_scale_px, noise_ratio, np.float32)
        for j, band in enumerate(bands):
            field = trends[j] + anomaly[j]
            field[rows, cols] = values[:, j]
            out[band] = field
    out[~ocean] = 0.0
    return np.nan_to_num(out, nan=0.0).astype(np.float32)


def _bands_by_mask(observed: np.ndarray) -> list[list[int]]:
    """Group band indices whose observed-pixel masks are identical."""
    groups: dict[bytes, list[int]] = {}
    for band in range(observed.shape[0]):
        groups.setdefault(np.packbits(observed[band]).tobytes(), []).append(band)
    return list(groups.values())
