"""Scores of reconstructions against the truth, in °C, accumulated over many patches.

Every method in metrics.csv is scored the same way: on the hidden ocean pixels of a band (the caller's
``region``), with errors ``pred - truth`` in °C.  Scores over many patches are accumulated as sums
(squared errors, absolute errors, errors, CRPS, pixel counts) and divided once at the end, so that the
RMSE is that of all pixels pooled, not a mean of per-patch RMSEs (which would weight a patch with 10
hidden pixels like one with 10 000).

CRPS: ensembles are scored with the CRPS of their empirical distribution (scoringrules' default
``"qd"`` estimator, equal to ``E|X - y| - E|X - X'| / 2`` over the members).  A deterministic estimate is
the one-member case, whose CRPS is exactly its absolute error, so ``crps_c`` of a deterministic method is
its MAE: deterministic and probabilistic methods share one column on one scale.  (The "fair" estimator
would make N = 1 undefined and is not used.)

Spread/skill: ``sqrt((N+1)/N * mean(s^2)) / RMSE(ensemble mean)`` with ``s^2`` the unbiased (ddof=1)
member variance.  For a calibrated N-member ensemble (truth and members exchangeable draws of one
distribution of variance sigma^2) the ensemble mean's squared error has expectation
``sigma^2 + sigma^2/N = (N+1)/N sigma^2`` while ``E[s^2] = sigma^2``; the factor makes the ratio 1 for a
calibrated ensemble of any size (Fortin et al. 2014, J. Hydrometeor.).  < 1: over-confident; > 1:
under-confident.  An ensemble drawn in antithetic pairs (members k and k + N/2 from noises z and -z,
``model.antithetic_sampling``) has dependent members: its variance is estimated from the pairs of members of
different draws only (unbiased), and without the (N+1)/N factor, because antithetic pairs remove the ensemble
mean's sampling error where the sampler is linear in its noise (a calibrated antithetic ensemble then scores
between ``sqrt(N/(N+1))`` and 1).  Its CRPS is that of the members as issued, like any ensemble's.

All inputs must already be in °C (``depthdif.data.normalization.temperature_denormalize`` for z-scores).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scoringrules

from depthdif.errors import DepthDifError
from depthdif.models.samplers import ensemble_variance, mean_sampling_factor

logger = logging.getLogger(__name__)

METRIC_COLUMNS = (
    "method", "band", "depth_m", "mask_fraction", "rmse_c", "mae_c", "bias_c", "crps_c", "n_pixels",
)
SPREAD_COLUMNS = ("spread_c", "spread_skill")
CRPS_ESTIMATOR = "qd"  # empirical-distribution CRPS; one member -> absolute error


class ScoreInputError(DepthDifError, ValueError):
    """Arrays given to a score do not match, or hold NaN where a score needs a value."""


def crps_ensemble(members: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pixel-wise CRPS of an ensemble ``members`` (N, ...) against ``truth`` (...), same units as given."""
    members = np.asarray(members, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if members.shape[1:] != truth.shape:
        raise ScoreInputError(
            f"crps_ensemble: members have shape {members.shape}, expected (N, *{truth.shape}) for truth {truth.shape}"
        )
    return np.asarray(scoringrules.crps_ensemble(truth, members, m_axis=0, estimator=CRPS_ESTIMATOR))


@dataclass
class _Sums:
    """Running sums of one (method, band, mask_fraction) cell."""

    depth_m: float = math.nan
    n: int = 0
    sse: float = 0.0
    sae: float = 0.0
    se: float = 0.0
    crps: float = 0.0
    ensemble_n: int = 0  # pixels scored as an ensemble (spread needs them)
    corrected_var: float = 0.0  # sum over ensemble pixels of (N+1)/N * unbiased member variance
    ensemble_sse: float = 0.0  # squared errors of the ensemble mean on those pixels

    def add(self, other: _Sums) -> None:
        for name in ("n", "sse", "sae", "se", "crps", "ensemble_n", "corrected_var", "ensemble_sse"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class BandScore:
    """Scores of one band (one patch or pooled over many), in °C."""

    rmse_c: float
    mae_c: float
    bias_c: float  # mean of pred - truth
    crps_c: float  # MAE for a deterministic estimate (the CRPS of a point forecast)
    n_pixels: int
    spread_c: float = math.nan  # sqrt((N+1)/N * mean unbiased member variance); NaN if not an ensemble
    spread_skill: float = math.nan  # spread_c / RMSE of the ensemble mean

    @classmethod
    def from_sums(cls, sums: _Sums) -> BandScore:
        if sums.n == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        spread = skill = math.nan
        if sums.ensemble_n:
            spread = math.sqrt(sums.corrected_var / sums.ensemble_n)
            rmse_mean = math.sqrt(sums.ensemble_sse / sums.ensemble_n)
            skill = spread / rmse_mean if rmse_mean > 0 else math.nan
        return cls(
            rmse_c=math.sqrt(sums.sse / sums.n),
            mae_c=sums.sae / sums.n,
            bias_c=sums.se / sums.n,
            crps_c=sums.crps / sums.n,
            n_pixels=sums.n,
            spread_c=spread,
            spread_skill=skill,
        )


def _band_sums(pred: np.ndarray, truth: np.ndarray, region: np.ndarray, sigma: np.ndarray | None = None,
               antithetic: bool = False) -> _Sums:
    """Sums of one band: ``pred`` of truth's shape (deterministic) or with a leading member axis; with ``sigma``
    (truth's shape, °C) a deterministic ``pred`` is the mean of a Gaussian posterior, scored with its CRPS and
    its spread ``sigma``; ``antithetic`` marks an ensemble drawn in antithetic pairs (module doc)."""
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    region = np.asarray(region)
    if region.shape != truth.shape:
        raise ScoreInputError(f"region has shape {region.shape} but truth has shape {truth.shape}")
    if region.dtype != bool:
        region = region.astype(bool)
    if pred.shape == truth.shape:
        members = pred[None]
        is_ensemble = False
    elif pred.shape[1:] == truth.shape and pred.shape[0] >= 1:
        members = pred
        is_ensemble = True
    else:
        raise ScoreInputError(
            f"pred has shape {pred.shape}; expected truth's shape {truth.shape} (one estimate) or "
            f"(N, *{truth.shape}) (an ensemble of N members)"
        )
    y = truth[region]
    x = members[:, region]  # (N, n)
    if not np.isfinite(y).all():
        raise ScoreInputError(
            f"truth is NaN at {int((~np.isfinite(y)).sum())} pixels of the scoring region; the region must "
            "exclude land / no-data pixels"
        )
    if not np.isfinite(x).all():
        raise ScoreInputError(
            f"the estimate is NaN at {int((~np.isfinite(x).any(axis=0)).sum())} pixels of the scoring region; "
            "a method that cannot fill a band should raise and be recorded as unavailable"
        )
    error = x.mean(axis=0) - y
    sums = _Sums(
        n=int(y.size),
        sse=float(error @ error),
        sae=float(np.abs(error).sum()),
        se=float(error.sum()),
        crps=float(crps_ensemble(x, y).sum()) if is_ensemble else float(np.abs(error).sum()),
    )
    if sigma is not None and not is_ensemble:
        spread = np.asarray(sigma, dtype=np.float64)[region]
        if spread.shape != y.shape or not np.isfinite(spread).all() or (spread < 0).any():
            raise ScoreInputError("sigma must have truth's shape and be finite and >= 0 on the scoring region")
        sums.crps = float(np.asarray(scoringrules.crps_normal(y, x[0], np.maximum(spread, 1e-12))).sum())
        sums.ensemble_n = sums.n
        sums.corrected_var = float(spread @ spread)  # a distribution, not N draws: no (N+1)/N factor
        sums.ensemble_sse = sums.sse
        return sums
    n_members = x.shape[0]
    if is_ensemble and n_members > 1 and y.size:
        variance = ensemble_variance(x, antithetic)
        # the mean's own sampling error: (N+1)/N for independent members; antithetic pairs remove it but for the
        # unpaired member of an odd N (module doc)
        sums.corrected_var = float(mean_sampling_factor(n_members, antithetic) * variance.sum())
        sums.ensemble_n = sums.n
        sums.ensemble_sse = sums.sse
    return sums


def score_band(pred: np.ndarray, truth: np.ndarray, region: np.ndarray) -> BandScore:
    """RMSE, MAE, bias (pred - truth), CRPS and pixel count of one band over ``region``, in °C.

    ``pred`` has truth's shape (a deterministic estimate; CRPS = MAE) or an extra leading member axis (an
    ensemble: RMSE/MAE/bias of the ensemble mean, CRPS of the members, spread/skill).  ``truth`` and
    ``region`` may be one patch (H, W) or a stack of patches (P, H, W): pixels are pooled either way.
    """
    return BandScore.from_sums(_band_sums(pred, truth, region))


def spread_skill_ratio(members: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> float:
    """``sqrt((N+1)/N * mean member variance) / RMSE(ensemble mean)``: ~1 when calibrated (module doc)."""
    truth = np.asarray(truth, dtype=np.float64)
    region = np.isfinite(truth) if region is None else region
    members = np.asarray(members)
    if members.ndim != truth.ndim + 1 or members.shape[0] < 2:
        raise ScoreInputError(f"spread_skill_ratio needs (N >= 2, *{truth.shape}) members; got {members.shape}")
    return score_band(members, truth, region).spread_skill


def _rmse_ratio(totals: np.ndarray) -> np.ndarray:
    """``sqrt(sse_a / n_a) / sqrt(sse_b / n_b)`` of totals stacked on the first axis (4, ...); NaN where 0/0."""
    sse_a, n_a, sse_b, n_b = totals
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(sse_a / n_a) / np.sqrt(sse_b / n_b)


def bootstrap_rmse_ratio(
    sse_a: np.ndarray,
    n_a: np.ndarray,
    sse_b: np.ndarray,
    n_b: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int | None = 0,
) -> tuple[float, float, float]:
    """Ratio of two pooled RMSEs and its percentile bootstrap interval, resampling whole locations.

    The pixels (and months) of one location share its errors, so they are not independent draws and a
    pixel bootstrap gives intervals far too narrow.  The resampling unit here is the location: each of
    ``n_boot`` resamples draws L locations with replacement (multinomial counts, one (n_boot, L) matrix),
    pools their sums and recomputes ``sqrt(sum sse_a / sum n_a) / sqrt(sum sse_b / sum n_b)``; the interval
    is the percentile interval of those ratios.  This is the cluster (block) bootstrap of Efron &
    Tibshirani (1993, *An Introduction to the Bootstrap*, Chapman & Hall: ch. 8 for structured/dependent
    data, ch. 13 for the percentile interval); resampling blocks rather than single observations to keep
    their dependence follows Künsch (1989, Ann. Statist. 17, 1217-1241).  Both methods are resampled with
    the same counts (a paired bootstrap), so a location effect shared by both largely cancels in the ratio.
    Its coverage is only asymptotic in L: with tens of locations expect roughly, not exactly, ``level``.

    Args:
        sse_a: (L,) per-location sums of squared errors of method A, in °C².
        n_a: (L,) per-location pixel counts of method A (dimensionless, >= 0).
        sse_b: (L,) the same as ``sse_a`` for method B, locations in the same order.
        n_b: (L,) the same as ``n_a`` for method B.
        n_boot: number of resamples (>= 1).
        level: coverage of the interval, in (0, 1); 0.95 gives the 2.5 and 97.5 percentiles.
        seed: seed of ``numpy.random.default_rng``; the interval is reproducible for a given seed.

    Returns:
        ``(ratio, low, high)``, dimensionless: RMSE_A / RMSE_B pooled over all L locations and the bounds of
        its percentile interval.  ``low`` and ``high`` are NaN with fewer than 2 locations (nothing to
        resample).  ``ratio`` is NaN when a method has no pixels, inf when B's errors are all zero;
        resamples in which a method has no pixels (0/0) are left out of the percentiles.

    Raises:
        ScoreInputError: the arrays are not 1-D of one length, hold negative or non-finite values,
            ``n_boot < 1``, or ``level`` is outside (0, 1).
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (sse_a, n_a, sse_b, n_b)]
    if any(a.ndim != 1 for a in arrays) or len({a.shape for a in arrays}) != 1:
        raise ScoreInputError(
            "bootstrap_rmse_ratio needs four 1-D per-location arrays of one length; got shapes "
            f"{[a.shape for a in arrays]}"
        )
    if not all(np.isfinite(a).all() and (a >= 0).all() for a in arrays):
        raise ScoreInputError("bootstrap_rmse_ratio: per-location sums must be finite and >= 0")
    if int(n_boot) < 1:
        raise ScoreInputError(f"bootstrap_rmse_ratio: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < float(level) < 1.0:
        raise ScoreInputError(f"bootstrap_rmse_ratio: level must be in (0, 1), got {level}")
    sums = np.stack(arrays, axis=1)  # (L, 4): sse_a, n_a, sse_b, n_b
    ratio = float(_rmse_ratio(sums.sum(axis=0)))
    n_locations = sums.shape[0]
    if n_locations < 2:
        return ratio, math.nan, math.nan
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_locations, np.full(n_locations, 1.0 / n_locations), size=int(n_boot))
    ratios = _rmse_ratio((counts @ sums).T)  # (n_boot,)
    ratios = ratios[~np.isnan(ratios)]
    if not ratios.size:
        return ratio, math.nan, math.nan
    low, high = np.quantile(ratios, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return ratio, float(low), float(high)


@dataclass(frozen=True)
class LocationSums:
    """Per-location sums of two methods over the same locations (see :meth:`ScoreAccumulator.paired_location_sums`)."""

    locations: list[Hashable]
    sse_a: np.ndarray  # (L,) °C²
    n_a: np.ndarray  # (L,) pixels
    sse_b: np.ndarray  # (L,) °C²
    n_b: np.ndarray  # (L,) pixels


LOCATION_COLUMNS = ("method", "band", "depth_m", "mask_fraction", "observations", "profile_density_factor", "location",
                    "sse_c2", "n_pixels")


@dataclass
class ScoreAccumulator:
    """Pooled scores keyed by (method, band, mask_fraction), written as the long metrics.csv table.

    Call :meth:`add` for every patch (sums are pooled, see the module docstring) and
    :meth:`add_unavailable` when a method could not run on a patch (its row then exists with NaN
    scores and 0 pixels if it never ran).  :meth:`to_frame` gives the contract columns.  With
    ``add(..., location=...)`` it also keeps, per (method, band, mask_fraction, location), the sum of
    squared errors and the pixel count, for bootstrap intervals over locations (:func:`bootstrap_rmse_ratio`).
    """

    _cells: dict[tuple[str, int, float], _Sums] = field(default_factory=dict)
    # (method, band, mask_fraction) -> location -> [sse, n]
    _by_location: dict[tuple[str, int, float], dict[Hashable, list]] = field(default_factory=dict)

    def _cell(self, method: str, band: int, mask_fraction: float, depth_m: float) -> _Sums:
        key = (str(method), int(band), float(mask_fraction))
        cell = self._cells.setdefault(key, _Sums(depth_m=float(depth_m)))
        if not (math.isnan(depth_m) or math.isnan(cell.depth_m)) and not math.isclose(cell.depth_m, depth_m):
            raise ScoreInputError(f"{key}: band {band} was first given depth {cell.depth_m} m, now {depth_m} m")
        if math.isnan(cell.depth_m):
            cell.depth_m = float(depth_m)
        return cell

    def add(
        self,
        method: str,
        band: int,
        mask_fraction: float,
        pred: np.ndarray,
        truth: np.ndarray,
        region: np.ndarray,
        depth_m: float = math.nan,
        *,
        location: Hashable | None = None,
        sigma: np.ndarray | None = None,
        antithetic: bool = False,
    ) -> BandScore:
        """Pool one patch's band (arguments as :func:`score_band`); returns that patch's own scores.

        ``location`` (any hashable, e.g. the patch's ``(y0, x0)``) also adds the patch's squared errors and
        pixel count to that location's sums (:meth:`location_sums`); None keeps only the pooled sums.
        ``sigma`` (°C, truth's shape) scores a deterministic ``pred`` as a Gaussian posterior (CRPS, spread).
        ``antithetic``: the ensemble ``pred`` was drawn in antithetic pairs (its spread, module doc).
        """
        sums = _band_sums(pred, truth, region, sigma, antithetic)
        if location is not None:
            try:
                hash(location)
            except TypeError:
                raise ScoreInputError(f"location must be hashable (e.g. a (y0, x0) tuple), got {location!r}") from None
        self._cell(method, band, mask_fraction, depth_m).add(sums)
        if location is not None:
            key = (str(method), int(band), float(mask_fraction))
            located = self._by_location.setdefault(key, {}).setdefault(location, [0.0, 0])
            located[0] += sums.sse
            located[1] += sums.n
        return BandScore.from_sums(sums)

    def add_unavailable(self, method: str, band: int, mask_fraction: float, depth_m: float = math.nan) -> None:
        """Record that ``method`` could not run here (keeps its row in the table even if it never ran)."""
        self._cell(method, band, mask_fraction, depth_m)

    def score(self, method: str, band: int, mask_fraction: float) -> BandScore:
        return BandScore.from_sums(self._cells[(str(method), int(band), float(mask_fraction))])

    def location_sums(self, method: str, mask_fraction: float, band: int | None = None) -> dict[Hashable, tuple[float, int]]:
        """``{location: (sse in °C², pixel count)}`` of ``method``: one ``band``, or pooled over bands if None."""
        out: dict[Hashable, list] = {}
        for (name, b, fraction), by_location in self._by_location.items():
            if name != str(method) or fraction != float(mask_fraction) or (band is not None and b != int(band)):
                continue
            for location, (sse, n) in by_location.items():
                total = out.setdefault(location, [0.0, 0])
                total[0] += sse
                total[1] += n
        return {location: (sse, n) for location, (sse, n) in out.items()}

    def unlocated_pixels(self, method: str, mask_fraction: float, band: int | None = None) -> int:
        """Pixels of ``method`` pooled without a location (``add`` without ``location=``)."""
        pooled = sum(
            sums.n for (name, b, fraction), sums in self._cells.items()
            if name == str(method) and fraction == float(mask_fraction) and (band is None or b == int(band))
        )
        located = sum(n for _, n in self.location_sums(method, mask_fraction, band).values())
        return int(pooled - located)

    def paired_location_sums(
        self,
        method_a: str,
        method_b: str,
        mask_fraction: float,
        band: int | None = None,
        shared_only: bool = True,
    ) -> LocationSums:
        """Per-location sums of two methods aligned on the same locations, for :func:`bootstrap_rmse_ratio`.

        Pooled over bands if ``band`` is None, else of that band.  ``shared_only`` keeps the locations both
        methods were scored at; False keeps every location either was scored at (zeros where one was not),
        so that the pooled ratio equals that of all their pixels.  Locations are sorted when they can be
        compared (else in the order first added).
        """
        a = self.location_sums(method_a, mask_fraction, band)
        b = self.location_sums(method_b, mask_fraction, band)
        if shared_only:
            locations = [location for location in a if location in b]
        else:
            locations = list(a) + [location for location in b if location not in a]
        with contextlib.suppress(TypeError):  # mixed or unorderable location keys: first-added order
            locations = sorted(locations)
        zero = (0.0, 0)
        return LocationSums(
            locations=locations,
            sse_a=np.array([a.get(location, zero)[0] for location in locations], dtype=np.float64),
            n_a=np.array([a.get(location, zero)[1] for location in locations], dtype=np.float64),
            sse_b=np.array([b.get(location, zero)[0] for location in locations], dtype=np.float64),
            n_b=np.array([b.get(location, zero)[1] for location in locations], dtype=np.float64),
        )

    def location_frame(self, observations: str = "rectangles") -> pd.DataFrame:
        """Per-location sums as a long table (:data:`LOCATION_COLUMNS`), one row per (method, band, level,
        location) added with ``location=`` (``location`` a ``(y0, x0)`` key written ``"y0,x0"``). Two runs scored
        on the same val locations (e.g. with and without a condition) are then compared with a paired location
        bootstrap (:func:`bootstrap_rmse_ratio`, ``bench/compare_runs.py``).

        Args:
            observations: ``rectangles`` (the accumulator's levels are occlusion levels: ``mask_fraction``) or
                ``profiles`` (its levels are profile density factors: ``profile_density_factor``, and
                ``mask_fraction`` is NaN).

        Returns:
            The table, columns :data:`LOCATION_COLUMNS`; squared errors in °C².
        """
        rows = []
        for (method, band, level), by_location in sorted(self._by_location.items()):
            depth = self._cells[(method, band, level)].depth_m
            levels = ({"mask_fraction": math.nan, "profile_density_factor": level} if observations == "profiles"
                      else {"mask_fraction": level, "profile_density_factor": math.nan})
            for location, (sse, n) in by_location.items():
                key = ",".join(str(v) for v in location) if isinstance(location, tuple) else str(location)
                rows.append({"method": method, "band": band, "depth_m": depth, **levels,
                             "observations": observations, "location": key, "sse_c2": float(sse),
                             "n_pixels": int(n)})
        return pd.DataFrame(rows, columns=list(LOCATION_COLUMNS))

    def to_frame(self, spread: bool = False) -> pd.DataFrame:
        """Long table with :data:`METRIC_COLUMNS` (plus ``spread_c``, ``spread_skill`` if ``spread``)."""
        columns = list(METRIC_COLUMNS) + (list(SPREAD_COLUMNS) if spread else [])
        rows = []
        for (method, band, fraction), sums in sorted(self._cells.items()):
            score = BandScore.from_sums(sums)
            row = {"method": method, "band": band, "depth_m": sums.depth_m, "mask_fraction": fraction}
            row.update({name: getattr(score, name) for name in columns[4:]})
            rows.append(row)
        frame = pd.DataFrame(rows, columns=columns)
        return frame.astype({"band": "int64", "n_pixels": "int64"})
