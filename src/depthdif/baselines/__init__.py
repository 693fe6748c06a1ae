"""Classical gap-filling baselines: what an oceanographer would use instead of the diffusion model.

Per-patch methods share one signature (see :mod:`depthdif.baselines._common` for the conventions)::

    method(obs (H, W) float with NaN where not observed, land (H, W) bool, True = ocean, **params)
        -> (H, W) float64: filled on ocean, NaN on land, observed pixels unchanged

and are listed in :data:`BASELINES` under their contract names (the ``method`` column of metrics.csv);
:func:`run_baseline` calls one by name.  Methods that need more than one patch have their own signatures:
:func:`climatology` (other years at the same place; uses information the model does not get) and
:func:`dineof_fill` (a window's time stack, via the published ``pydineof``).
:func:`first_guess_estimate` is the estimate fed to the network as extra channels.
A band with no observation raises :class:`BaselineUnavailable` (the evaluation records NaN).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ._common import BaselineInputError, BaselineUnavailable
from .climate import climatology, climatology_history, load_history
from .dineof import dineof_fill
from .first_guess import first_guess_estimate
from .optimal_interpolation import eo_regression_oi, gaussian_oi_anomaly, oi, tune_oi
from .spatial import biharmonic, idw, linear, mean_fill, nearest

BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "mean_fill": mean_fill,
    "nearest": nearest,
    "linear": linear,
    "idw": idw,
    "biharmonic": biharmonic,
    "oi": oi,
    "eo_regression_oi": eo_regression_oi,
}

_KNOWN_PARAMS = {
    name
    for method in BASELINES.values()
    for name in list(inspect.signature(method).parameters)[2:]
}


def run_baseline(name: str, obs: np.ndarray, land: np.ndarray, eo: np.ndarray | None = None, **params: Any) -> np.ndarray:
    """Run the per-patch baseline ``name``; each method receives only the ``params`` it accepts.

    So one parameter set (e.g. :func:`baseline_params_from_config`) serves every method: ``k`` goes to
    ``idw``, ``length_scale_px`` to the OIs, and ``eo`` only to ``eo_regression_oi``.  A parameter that
    no method accepts is an error (a typo would otherwise be ignored silently).

    Args:
        name: a key of :data:`BASELINES` (``mean_fill``, ``nearest``, ``linear``, ``idw``, ``biharmonic``,
            ``oi``, ``eo_regression_oi``).
        obs: (H, W) one band of one patch, any unit (°C in the evaluation), NaN where not observed.
        land: (H, W) the ocean mask, True (or 1) = ocean.
        eo: (H, W) or (K, H, W) dense surface fields, given only to ``eo_regression_oi``; or None.
        **params: method parameters (``k``, ``length_scale_px``, ``noise_ratio``, ``tune``).

    Returns:
        (H, W) float64 in ``obs``'s unit: filled on ocean, NaN on land, observed ocean pixels unchanged.

    Raises:
        KeyError: unknown ``name``.
        TypeError: a parameter no baseline takes.
        BaselineUnavailable: the band has no observed ocean pixel (the evaluation records NaN).
        BaselineInputError: ``obs`` or ``land`` has the wrong shape or type.
    """
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    unknown = set(params) - _KNOWN_PARAMS
    if unknown:
        raise TypeError(f"run_baseline: no baseline takes the parameters {sorted(unknown)}; known: {sorted(_KNOWN_PARAMS)}")
    method = BASELINES[name]
    accepted = inspect.signature(method).parameters
    kwargs = {key: value for key, value in {**params, "eo": eo}.items() if key in accepted}
    return method(obs, land, **kwargs)


def baseline_params_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The baseline parameters set by the ``evaluate`` section of a loaded config.

    Args:
        config: a validated config (or the ``evaluate`` keys of it).

    Returns:
        ``length_scale_px`` (px), ``noise_ratio``, ``tune`` and ``k`` for :func:`run_baseline`.
    """

    evaluate = config["evaluate"]
    return {
        "length_scale_px": float(evaluate["oi_length_scale_px"]),
        "noise_ratio": float(evaluate["oi_noise_ratio"]),
        "tune": bool(evaluate["oi_tune"]),
        "k": int(evaluate["idw_neighbours"]),
    }


__all__ = [
    "BASELINES",
    "BaselineInputError",
    "BaselineUnavailable",
    "baseline_params_from_config",
    "biharmonic",
    "climatology",
    "climatology_history",
    "dineof_fill",
    "eo_regression_oi",
    "first_guess_estimate",
    "gaussian_oi_anomaly",
    "idw",
    "linear",
    "load_history",
    "mean_fill",
    "nearest",
    "oi",
    "run_baseline",
    "tune_oi",
]
