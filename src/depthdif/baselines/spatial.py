"""Purely spatial gap-fillers: mean fill, nearest neighbour, linear (Delaunay), IDW, biharmonic.

Each takes one band of one patch (see :mod:`depthdif.baselines._common` for the conventions) and uses only
that band's observed pixels.  Distances are Euclidean in pixels, straight across land: the patches are
small (32-128 px at 1/12°) and the alternative, geodesic distance around coasts, is not what a quick
classical estimate would use either.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.interpolate import griddata
from scipy.spatial import QhullError, cKDTree
from skimage.restoration import inpaint_biharmonic

from ._common import Observations, all_nan, finish, gather_observations, nearest_fill, require_observations

logger = logging.getLogger(__name__)

IDW_POWER = 2.0


def mean_fill(obs: np.ndarray, land: np.ndarray) -> np.ndarray:
    """Every hidden ocean pixel gets the mean of the band's observed pixels in this patch.

    Args:
        obs: (H, W) one band of one patch, any unit (°C in the evaluation), NaN where not observed.
        land: (H, W) the ocean mask, True (or 1) = ocean.

    Returns:
        (H, W) float64 in ``obs``'s unit: filled on ocean, NaN on land, observed ocean pixels unchanged; all NaN
        for a patch without ocean.

    Raises:
        BaselineUnavailable: the band has no observed ocean pixel.
        BaselineInputError: ``obs`` is not 2-D, or ``land`` is not a boolean mask of its shape.
    """
    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "mean_fill")
    return finish(np.full(data.shape, data.values.mean()), data)


def nearest(obs: np.ndarray, land: np.ndarray) -> np.ndarray:
    """Each hidden ocean pixel copies the nearest observed pixel (ties broken by the EDT's scan order).

    The nearest pixel comes from the Euclidean distance transform of ``scipy.ndimage.distance_transform_edt``.

    Args:
        obs: (H, W) one band of one patch, any unit, NaN where not observed.
        land: (H, W) the ocean mask, True (or 1) = ocean.

    Returns:
        (H, W) float64 in ``obs``'s unit: filled on ocean, NaN on land, observed ocean pixels unchanged.

    Raises:
        BaselineUnavailable: the band has no observed ocean pixel.
        BaselineInputError: ``obs`` is not 2-D, or ``land`` is not a boolean mask of its shape.
    """
    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "nearest")
    return finish(nearest_fill(_grid(data), data.observed), data)


def _grid(data: Observations) -> np.ndarray:
    """The observed values on the patch grid, zeros elsewhere."""
    grid = np.zeros(data.shape)
    grid[data.rows, data.cols] = data.values
    return grid


def linear(obs: np.ndarray, land: np.ndarray) -> np.ndarray:
    """Linear interpolation on the Delaunay triangulation of the observations; nearest outside their hull.

    Fewer than three observations, or observations all on one line, have no triangulation: the whole
    band then falls back to nearest neighbour (logged at debug level). The interpolation is
    ``scipy.interpolate.griddata(method="linear")`` (Qhull's Delaunay triangulation, barycentric weights).

    Args:
        obs: (H, W) one band of one patch, any unit, NaN where not observed.
        land: (H, W) the ocean mask, True (or 1) = ocean.

    Returns:
        (H, W) float64 in ``obs``'s unit: filled on ocean, NaN on land, observed ocean pixels unchanged.

    Raises:
        BaselineUnavailable: the band has no observed ocean pixel.
        BaselineInputError: ``obs`` is not 2-D, or ``land`` is not a boolean mask of its shape.
    """
    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "linear")
    fallback = nearest_fill(_grid(data), data.observed)
    hidden = data.ocean & ~data.observed
    if not hidden.any():
        return finish(fallback, data)
    estimate = fallback.copy()
    if data.count >= 3:
        targets = np.column_stack(np.nonzero(hidden)).astype(np.float64)
        try:
            values = griddata(data.points, data.values, targets, method="linear")
        except QhullError:
            logger.debug("linear: observations are collinear; using nearest neighbour for this band")
        else:
            inside = np.isfinite(values)
            estimate[hidden] = np.where(inside, values, fallback[hidden])
    return finish(estimate, data)


def idw(obs: np.ndarray, land: np.ndarray, k: int = 8) -> np.ndarray:
    """Inverse-distance weighting (power 2) of the ``k`` nearest observations of each hidden pixel.

    ``k`` is ``evaluate.idw_neighbours`` in the config; with fewer observations than ``k`` all are used.
    The method is Shepard's (1968, "A two-dimensional interpolation function for irregularly-spaced data",
    Proc. ACM National Conference), restricted to the ``k`` nearest points (a ``scipy.spatial.cKDTree`` query).

    Args:
        obs: (H, W) one band of one patch, any unit, NaN where not observed.
        land: (H, W) the ocean mask, True (or 1) = ocean.
        k: neighbours per hidden pixel, at least 1; distances in px.

    Returns:
        (H, W) float64 in ``obs``'s unit: filled on ocean, NaN on land, observed ocean pixels unchanged.

    Raises:
        ValueError: ``k`` < 1.
        BaselineUnavailable: the band has no observed ocean pixel.
        BaselineInputError: ``obs`` is not 2-D, or ``land`` is not a boolean mask of its shape.
    """
    if int(k) < 1:
        raise ValueError(f"idw: k (evaluate.idw_neighbours) must be >= 1, got {k}")
    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "idw")
    hidden = data.ocean & ~data.observed
    estimate = np.zeros(data.shape)
    if hidden.any():
        k_used = min(int(k), data.count)
        targets = np.column_stack(np.nonzero(hidden)).astype(np.float64)
        dist, idx = cKDTree(data.points).query(targets, k=k_used)
        dist = dist.reshape(len(targets), k_used)
        idx = idx.reshape(len(targets), k_used)
        # hidden pixels never coincide with an observation, so every distance is >= 1 px
        weights = dist**-IDW_POWER
        estimate[hidden] = (weights * data.values[idx]).sum(axis=1) / weights.sum(axis=1)
    return finish(estimate, data)


def biharmonic(obs: np.ndarray, land: np.ndarray) -> np.ndarray:
    """Biharmonic inpainting (skimage) of every pixel that is not an observed ocean pixel.

    Land is inpainted together with the hidden ocean rather than filled first with made-up values:
    only real observations act as boundary data, and the land estimate is discarded afterwards.
    ``skimage.restoration.inpaint_biharmonic`` implements Damelin & Hoang (2018, "On surface completion and
    image inpainting by biharmonic functions: numerical aspects", Int. J. Math. Math. Sci.).

    Args:
        obs: (H, W) one band of one patch, any unit, NaN where not observed.
        land: (H, W) the ocean mask, True (or 1) = ocean.

    Returns:
        (H, W) float64 in ``obs``'s unit: filled on ocean, NaN on land, observed ocean pixels unchanged.

    Raises:
        BaselineUnavailable: the band has no observed ocean pixel.
        BaselineInputError: ``obs`` is not 2-D, or ``land`` is not a boolean mask of its shape.
    """

    data = gather_observations(obs, land)
    if not data.ocean.any():
        return all_nan(data.shape)
    require_observations(data, "biharmonic")
    if data.count == 1:
        # the biharmonic solution with one known value is that constant; skip the sparse solve
        return finish(np.full(data.shape, data.values[0]), data)
    unknown = ~data.observed
    # centring keeps the sparse solve well scaled whether the band is in °C, K or z-score
    centre = data.values.mean()
    image = np.where(data.observed, _grid(data) - centre, 0.0)
    filled = inpaint_biharmonic(image, unknown) + centre
    return finish(filled, data)
