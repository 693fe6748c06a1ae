"""Power spectra and effective resolution: does a reconstruction keep the fine scales of the ocean?

RMSE rewards smooth estimates: optimal interpolation, kriging or an ensemble mean put the conditional mean
at every hidden pixel and give up the scales the observations do not constrain.  A diffusion *sample* is
meant to keep them (right variance at every scale, wrong phase where unconstrained).  Two scores show this,
per method, band and occlusion level, from the radially averaged power spectral density (PSD) of square
patches:

* ``psd_ratio_small_scales``: the mean over the small-scale wavenumber bins (wavelength below
  :data:`SMALL_SCALE_WAVELENGTH_PX` px) of ``PSD(pred) / PSD(truth)``.  1 = the right amount of fine-scale
  variance; << 1 = too smooth; > 1 = too noisy.
* ``effective_resolution_px``: the wavelength (px) at which the spectral score
  ``1 - PSD(pred - truth) / PSD(truth)`` first falls below 0.5 going from large to small scales -- the
  "effective resolution" of the SSH mapping data challenges (Le Guillou et al. 2021, J. Atmos. Oceanic
  Technol. 38(4), "Mapping altimetry in the forthcoming SWOT era by back-and-forth nudging a one-layer
  quasigeostrophic model"; ocean-data-challenges/2020a_SSH_mapping_NATL60, ``find_wavelength_05_crossing``).
  Smaller = better resolved.  It rewards phase as well as variance: at scales the observations do not
  constrain, a sample with the right spectrum but independent eddies has twice the truth's error power
  (score -1) where a smooth estimate has it once (score 0) -- both unresolved -- which is why both scores
  are reported.

Spectrum of one patch (:func:`radial_power_spectrum`): remove the least-squares plane (mean and gradient: a
large-scale gradient is a ramp whose jump at the non-periodic edges leaks power into every wavenumber),
multiply by a 2-D Tukey window (:data:`TUKEY_ALPHA`; it tapers the remaining edge jumps while keeping the
central half of the patch at full weight -- a Hann window would weight down most of a 32-px patch), FFT, and
average ``|F|^2`` over rings of integer radial wavenumber ``k = 1 .. N/2`` cycles per patch (wavenumber
``k / N`` cycles/px, wavelength ``N / k`` px).  Spectra are averaged over patches (mean of powers).

Land: only patches that are entirely ocean are used by default (``max_land_fraction=0``).  A land gap
would have to be filled with something, and the edge of that fill is a step that aliases into every
wavenumber of both the prediction's and the truth's spectrum.  Measured on this repository's data
(data/patches, the default synthetic export, 32 x 32 px): 96 of the 144 val patches (4 of 6 val locations,
every month, every band) are entirely ocean and the other 48 have 29-43 % land -- far too much to fill, so
nothing is gained by admitting partly-land patches; the default evaluation draw (evaluate.max_patches 64,
seed 0) is 48 patches at 2 locations, all entirely ocean.  A draw of only partly-land locations gets NaN
scores (``n_patches`` 0), not a biased number.  ``max_land_fraction > 0`` (at most 0.5) is available
for data with small islands: land pixels are then set to the patch's fitted plane (its mean and gradient)
before windowing, in the prediction, the truth and their difference alike.

Numpy and pandas only (evaluation stage, no torch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

# the methods whose spectra are scored, in table order (metrics.csv names; those present are used)
SPECTRAL_METHODS = (
    "diffusion_sample", "diffusion_ens_mean", "cokriging", "diffusion_cond_mean",
    "oi", "biharmonic", "eo_regression_oi", "dineof",
)
# small scales = wavelengths below 8 px (wavenumbers above 1/8 cycles/px): bins 5..16 of a 32-px patch.
# Fixed in px, not in patches, so patches of other sizes compare.  Scales below 8 px are those the smooth
# estimates give up: OI's Gaussian correlation exp(-d^2 / 2L^2) (L = 6 px by default) has a spectrum
# exp(-2 pi^2 L^2 / lambda^2), already < 1e-4 at lambda = 8 px; the masking gaps are 2-5 px squares.  The
# band also leaves out the 4 largest bins, the ones the window and the plane removal distort most.
SMALL_SCALE_WAVELENGTH_PX = 8.0
TUKEY_ALPHA = 0.5  # share of each axis that is tapered (0 = boxcar, 1 = Hann)
COHERENCE_THRESHOLD = 0.5  # the data challenges' effective-resolution level of 1 - PSD(err)/PSD(truth)
MAX_LAND_FRACTION_LIMIT = 0.5  # more land than this leaves too little ocean for a spectrum to mean anything

TABLE_COLUMNS = (
    "method", "band", "depth_m", "mask_fraction", "wavenumber_cpx", "wavelength_px", "psd_pred_c2px2",
    "psd_truth_c2px2", "psd_error_c2px2", "psd_ratio", "coherence_score", "n_patches",
)
SCORE_COLUMNS = (
    "method", "band", "depth_m", "mask_fraction", "psd_ratio_small_scales", "effective_resolution_px",
    "n_patches",
)
SUMMARY_COLUMNS = ("psd_ratio_small_scales", "effective_resolution_px")  # the two merged into metrics.csv


class RadialSpectrum(NamedTuple):
    """A radially averaged PSD: ``wavenumber`` (K,) cycles/px, ``power`` (K,) °C² px², ``n_patches`` used."""

    wavenumber: np.ndarray
    power: np.ndarray
    n_patches: int


class SpectralRatio(NamedTuple):
    """``ratio`` (K,) = PSD(pred) / PSD(truth) at ``wavenumber`` (K,) cycles/px over ``n_patches`` patches."""

    wavenumber: np.ndarray
    ratio: np.ndarray
    n_patches: int


class _PairSpectra(NamedTuple):
    wavenumber: np.ndarray
    pred: np.ndarray
    truth: np.ndarray
    error: np.ndarray
    n_patches: int


def _check(ocean: np.ndarray, *fields: np.ndarray, max_land_fraction: float) -> None:
    if ocean.ndim != 3:
        raise ValueError(f"spectra: expected (P, H, W) patches; got ocean of shape {ocean.shape}")
    for values in fields:
        if values.shape != ocean.shape:
            raise ValueError(f"spectra: field shape {values.shape} differs from ocean shape {ocean.shape}")
    if ocean.shape[1] != ocean.shape[2]:
        raise ValueError(f"spectra: patches must be square; got {ocean.shape[1]} x {ocean.shape[2]}")
    if ocean.shape[1] < 4:
        raise ValueError(f"spectra: patches of {ocean.shape[1]} px resolve no wavenumber above 1 cycle/patch")
    if not 0.0 <= max_land_fraction <= MAX_LAND_FRACTION_LIMIT:
        raise ValueError(f"spectra: max_land_fraction must lie in [0, {MAX_LAND_FRACTION_LIMIT}]; "
                         f"got {max_land_fraction}")


def _usable(ocean: np.ndarray, *fields: np.ndarray, max_land_fraction: float) -> np.ndarray:
    """(P,) bool: land share within the limit and every field finite on every ocean pixel."""
    ok = (1.0 - ocean.mean(axis=(1, 2))) <= max_land_fraction + 1e-12
    ok &= ocean.sum(axis=(1, 2)) >= 3  # a plane needs three points
    for values in fields:
        ok &= np.where(ocean, np.isfinite(values), True).all(axis=(1, 2))
    return ok


def _tukey(n: int, alpha: float = TUKEY_ALPHA) -> np.ndarray:
    """The 1-D Tukey (tapered cosine) window of ``n`` points (scipy.signal.windows.tukey, sym=True)."""
    if alpha <= 0:
        return np.ones(n)
    x = np.arange(n) / (n - 1)
    w = np.ones(n)
    left, right = x < alpha / 2, x > 1 - alpha / 2
    w[left] = 0.5 * (1 + np.cos(2 * np.pi / alpha * (x[left] - alpha / 2)))
    w[right] = 0.5 * (1 + np.cos(2 * np.pi / alpha * (x[right] - 1 + alpha / 2)))
    return w


def _detrend(fields: np.ndarray, ocean: np.ndarray) -> np.ndarray:
    """Fields minus their least-squares plane over ocean pixels; land set to 0 (= the plane)."""
    _, h, w = fields.shape
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    basis = np.stack([np.ones((h, w)), yy - yy.mean(), xx - xx.mean()])  # (3, H, W)
    weights = ocean.astype(np.float64)
    values = np.where(ocean, fields, 0.0)
    normal = np.einsum("phw,ihw,jhw->pij", weights, basis, basis)
    rhs = np.einsum("phw,ihw->pi", values, basis)
    coef = np.linalg.solve(normal, rhs[..., None])[..., 0]  # (P, 3)
    return np.where(ocean, values - np.einsum("pi,ihw->phw", coef, basis), 0.0)


def _radial_bins(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) integer radial wavenumber (cycles per patch) of each FFT coefficient, and the bins 1..n//2."""
    k = np.fft.fftfreq(n) * n
    radius = np.rint(np.hypot(k[:, None], k[None, :])).astype(np.int64)
    return radius, np.arange(1, n // 2 + 1)


def _mean_power(fields: np.ndarray, ocean: np.ndarray) -> np.ndarray:
    """(K,) °C² px²: the ring-averaged, patch-averaged ``|F|^2 / sum(w^2)`` of the given patches.

    A spectral density in °C² per (cycle/px)²: by Parseval its integral over the wavenumber plane (each
    Fourier mode covers (1/H)² (cycles/px)²) is the patch's window-weighted variance, so white noise of
    variance s² has density s² at every wavenumber, whatever the patch size.
    """
    n = fields.shape[1]
    radius, bins = _radial_bins(n)
    if fields.shape[0] == 0:
        return np.full(len(bins), np.nan)
    window = np.outer(_tukey(n), _tukey(n))
    spectrum = np.abs(np.fft.fft2(_detrend(fields, ocean) * window)) ** 2 / (window**2).sum()
    mean = spectrum.mean(axis=0)
    sums = np.bincount(radius.ravel(), weights=mean.ravel(), minlength=n)
    counts = np.bincount(radius.ravel(), minlength=n)
    return sums[bins] / counts[bins]


def radial_power_spectrum(fields: np.ndarray, ocean: np.ndarray, max_land_fraction: float = 0.0
                          ) -> RadialSpectrum:
    """The radially averaged power spectral density of square patches, averaged over patches.

    Each usable patch: least-squares plane (mean + gradient) removed over its ocean pixels, land (if
    allowed) set to that plane, times a 2-D Tukey window (alpha :data:`TUKEY_ALPHA`), FFT, ``|F|^2``
    averaged over rings of integer radial wavenumber.  See the module docstring for why.

    Args:
        fields: (P, H, W) °C, H == W >= 4.  Values on land are ignored.
        ocean: (P, H, W) bool, True on ocean.
        max_land_fraction: the largest share of land a patch may have to be used; 0 (default) = only
            patches that are entirely ocean (land gaps would alias into the spectrum).  At most 0.5.

    Returns:
        :class:`RadialSpectrum`: ``wavenumber`` (H // 2,) cycles/px ``k / H`` for ``k = 1 .. H // 2``;
        ``power`` (H // 2,) °C² px² (°C² per (cycle/px)², patch mean of the ring mean; white noise of
        variance s² gives s²), all NaN when no patch is usable; ``n_patches`` the number of patches used (entirely ocean -- or within the land limit -- and
        finite on every ocean pixel).

    Raises:
        ValueError: shapes differ, are not (P, H, W), the patches are not square or smaller than 4 px, or
            ``max_land_fraction`` is outside [0, 0.5].
    """
    fields, ocean = np.asarray(fields, dtype=np.float64), np.asarray(ocean, dtype=bool)
    _check(ocean, fields, max_land_fraction=max_land_fraction)
    use = _usable(ocean, fields, max_land_fraction=max_land_fraction)
    n = ocean.shape[1]
    wavenumber = np.arange(1, n // 2 + 1) / n
    return RadialSpectrum(wavenumber, _mean_power(fields[use], ocean[use]), int(use.sum()))


def _pair_spectra(pred: np.ndarray, truth: np.ndarray, ocean: np.ndarray, max_land_fraction: float
                  ) -> _PairSpectra:
    """PSD of the prediction, the truth and their difference over the same usable patches."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    ocean = np.asarray(ocean, dtype=bool)
    _check(ocean, pred, truth, max_land_fraction=max_land_fraction)
    use = _usable(ocean, pred, truth, max_land_fraction=max_land_fraction)
    n = ocean.shape[1]
    pred, truth, ocean = pred[use], truth[use], ocean[use]
    return _PairSpectra(np.arange(1, n // 2 + 1) / n, _mean_power(pred, ocean), _mean_power(truth, ocean),
                        _mean_power(pred - truth, ocean), int(use.sum()))


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def spectral_ratio(pred: np.ndarray, truth: np.ndarray, ocean: np.ndarray, max_land_fraction: float = 0.0
                   ) -> SpectralRatio:
    """PSD(pred) / PSD(truth) per wavenumber, both over the same patches.

    Args:
        pred, truth: (P, H, W) °C; NaN on land allowed (ignored).  A patch where either is not finite on
            some ocean pixel is left out of both spectra.
        ocean: (P, H, W) bool, True on ocean.
        max_land_fraction: as in :func:`radial_power_spectrum` (default 0: entirely-ocean patches only).

    Returns:
        :class:`SpectralRatio`: ``wavenumber`` (H // 2,) cycles/px, ``ratio`` (H // 2,) dimensionless
        (1 = the truth's variance at that scale; NaN where no patch is usable or the truth has no power),
        ``n_patches``.

    Raises:
        ValueError: as :func:`radial_power_spectrum`.
    """
    spectra = _pair_spectra(pred, truth, ocean, max_land_fraction)
    return SpectralRatio(spectra.wavenumber, _divide(spectra.pred, spectra.truth), spectra.n_patches)


def resolution_from_score(wavenumber: np.ndarray, score: np.ndarray,
                          threshold: float = COHERENCE_THRESHOLD) -> float:
    """Wavelength (px) where ``score`` first falls below ``threshold`` going from large to small scales.

    Linear interpolation of the wavelength ``1 / wavenumber`` against the score between the last bin at or
    above the threshold and the first below it (as ``find_wavelength_05_crossing`` of the 2020a SSH
    mapping data challenge interpolates wavelength against score).

    Args:
        wavenumber: (K,) cycles/px, increasing.
        score: (K,) ``1 - PSD(err) / PSD(truth)``; NaN bins are skipped.

    Returns:
        The wavelength in px.  Definition at the ends of the resolved range:
        the score never falls below the threshold (e.g. a perfect prediction) -> the smallest resolved
        wavelength ``1 / wavenumber[-1]`` (2 px for even patches): resolved at every scale the patch
        shows, so this is an upper bound;
        the score is below the threshold already at the largest scale, or no bin is finite -> NaN (not
        resolved at any scale the patch can measure).
    """
    wavenumber, score = np.asarray(wavenumber, dtype=np.float64), np.asarray(score, dtype=np.float64)
    finite = np.isfinite(score)
    wavenumber, score = wavenumber[finite], score[finite]
    if not len(score) or score[0] < threshold:
        return float("nan")
    below = np.flatnonzero(score < threshold)
    if not len(below):
        return float(1.0 / wavenumber[-1])
    j = int(below[0])
    s0, s1 = score[j - 1], score[j]
    l0, l1 = 1.0 / wavenumber[j - 1], 1.0 / wavenumber[j]
    return float(l0 + (threshold - s0) * (l1 - l0) / (s1 - s0))


def effective_resolution(pred: np.ndarray, truth: np.ndarray, ocean: np.ndarray,
                         max_land_fraction: float = 0.0) -> float:
    """The effective resolution (px): where ``1 - PSD(pred - truth) / PSD(truth)`` crosses 0.5.

    Le Guillou et al. (2021, J. Atmos. Oceanic Technol. 38(4)); ocean-data-challenges
    2020a_SSH_mapping_NATL60.  Going from large to small scales, the first crossing, interpolated as in
    :func:`resolution_from_score`.  Smaller = better resolved.

    Args:
        pred, truth, ocean, max_land_fraction: as in :func:`spectral_ratio`.

    Returns:
        The wavelength in px; the smallest resolved wavelength (2 px for even patches) when the score
        never falls below 0.5 (e.g. ``pred == truth``); NaN when it is below 0.5 already at the patch
        scale or no patch is usable.

    Raises:
        ValueError: as :func:`radial_power_spectrum`.
    """
    spectra = _pair_spectra(pred, truth, ocean, max_land_fraction)
    return resolution_from_score(spectra.wavenumber, 1.0 - _divide(spectra.error, spectra.truth))


def small_scale_ratio(wavenumber: np.ndarray, ratio: np.ndarray,
                      wavelength_px: float = SMALL_SCALE_WAVELENGTH_PX) -> float:
    """Mean of the per-bin PSD ratio over wavelengths below ``wavelength_px`` (wavenumber > 1 / it).

    Args:
        wavenumber: (K,) cycles/px.
        ratio: (K,) PSD(pred) / PSD(truth); NaN bins are skipped.
        wavelength_px: the band's upper wavelength (px), default :data:`SMALL_SCALE_WAVELENGTH_PX`.

    Returns:
        The arithmetic mean of the ratio over the band's bins (each bin weighs the same); NaN when no
        finite bin lies in the band.
    """
    wavenumber, ratio = np.asarray(wavenumber, dtype=np.float64), np.asarray(ratio, dtype=np.float64)
    band = (wavenumber > 1.0 / wavelength_px + 1e-12) & np.isfinite(ratio)
    return float(ratio[band].mean()) if band.any() else float("nan")


def spectral_table(truth: np.ndarray, ocean: np.ndarray, predictions: Mapping[str, np.ndarray],
                   fraction: float, depths: Sequence[float], max_land_fraction: float = 0.0) -> pd.DataFrame:
    """Per-wavenumber spectra of every scored method, per band, at one occlusion level.

    Args:
        truth: (P, C, H, W) °C, NaN on land.
        ocean: (P, C, H, W) bool.
        predictions: metrics.csv method name -> (P, C, H, W) °C (NaN where unavailable); only the
            :data:`SPECTRAL_METHODS` present are used, in that order.
        fraction: the occlusion level (hidden share of ocean pixels).
        depths: (C,) band depths in m.
        max_land_fraction: as in :func:`radial_power_spectrum`.

    Returns:
        One row per (method, band, wavenumber bin) with :data:`TABLE_COLUMNS`: ``wavenumber_cpx``
        (cycles/px), ``wavelength_px``, ``psd_pred_c2px2``/``psd_truth_c2px2``/``psd_error_c2px2``
        (°C² per (cycle/px)²), ``psd_ratio`` = pred / truth, ``coherence_score`` = 1 - error / truth, ``n_patches`` (the
        patches used for that method and band; 0 with NaN spectra when none is usable).

    Raises:
        ValueError: ``truth``/``ocean`` are not (P, C, H, W) with C == len(depths), or as
            :func:`radial_power_spectrum`.
    """
    truth, ocean = np.asarray(truth), np.asarray(ocean, dtype=bool)
    if truth.ndim != 4 or ocean.shape != truth.shape or truth.shape[1] != len(depths):
        raise ValueError(f"spectral_table: truth {truth.shape} and ocean {ocean.shape} must be (P, C, H, W) "
                         f"with C = {len(depths)} bands")
    frames = []
    for method in (name for name in SPECTRAL_METHODS if name in predictions):
        pred = np.asarray(predictions[method])
        for b, depth in enumerate(depths):
            spectra = _pair_spectra(pred[:, b], truth[:, b], ocean[:, b], max_land_fraction)
            frames.append(pd.DataFrame({
                "method": method, "band": b, "depth_m": float(depth), "mask_fraction": float(fraction),
                "wavenumber_cpx": spectra.wavenumber, "wavelength_px": 1.0 / spectra.wavenumber,
                "psd_pred_c2px2": spectra.pred, "psd_truth_c2px2": spectra.truth,
                "psd_error_c2px2": spectra.error,
                "psd_ratio": _divide(spectra.pred, spectra.truth),
                "coherence_score": 1.0 - _divide(spectra.error, spectra.truth),
                "n_patches": spectra.n_patches,
            }))
    if not frames:  # no spectral method present: an empty table of the same columns and dtypes
        return pd.DataFrame(columns=list(TABLE_COLUMNS)).astype(
            {name: "float64" for name in TABLE_COLUMNS[2:]} | {"method": object, "band": "int64", "n_patches": "int64"})
    return pd.concat(frames, ignore_index=True)[list(TABLE_COLUMNS)]


def scores_from_table(table: pd.DataFrame) -> pd.DataFrame:
    """The per-method summary of a :func:`spectral_table` (one or several occlusion levels).

    Returns:
        One row per (method, band, mask_fraction) with :data:`SCORE_COLUMNS`: ``psd_ratio_small_scales``
        (:func:`small_scale_ratio`, dimensionless) and ``effective_resolution_px``
        (:func:`resolution_from_score`, px).
    """
    rows = []
    for (method, band, fraction), group in table.groupby(["method", "band", "mask_fraction"], sort=False):
        group = group.sort_values("wavenumber_cpx")
        k = group["wavenumber_cpx"].to_numpy(dtype=np.float64)
        rows.append({
            "method": method, "band": int(band), "depth_m": float(group["depth_m"].iloc[0]),
            "mask_fraction": float(fraction),
            "psd_ratio_small_scales": small_scale_ratio(k, group["psd_ratio"].to_numpy(dtype=np.float64)),
            "effective_resolution_px": resolution_from_score(k, group["coherence_score"].to_numpy(
                dtype=np.float64)),
            "n_patches": int(group["n_patches"].iloc[0]),
        })
    return pd.DataFrame(rows, columns=list(SCORE_COLUMNS))


def spectral_scores(truth: np.ndarray, ocean: np.ndarray, predictions: Mapping[str, np.ndarray],
                    fraction: float, depths: Sequence[float], max_land_fraction: float = 0.0) -> pd.DataFrame:
    """``psd_ratio_small_scales`` and ``effective_resolution_px`` per method and band at one occlusion level.

    Args, Raises: as :func:`spectral_table`.

    Returns:
        One row per (method, band) with :data:`SCORE_COLUMNS` (see :func:`scores_from_table`).
    """
    return scores_from_table(spectral_table(truth, ocean, predictions, fraction, depths, max_land_fraction))


def merge_spectral_scores(metrics: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """``metrics`` (metrics.csv rows, order kept) with :data:`SUMMARY_COLUMNS` joined on
    (method, band, mask_fraction); NaN on rows without a spectrum (e.g. climatology, nearest)."""
    keys = ["method", "band", "mask_fraction"]
    right = scores[keys + list(SUMMARY_COLUMNS)].astype({"band": "int64", "mask_fraction": "float64"})
    return metrics.merge(right, on=keys, how="left", validate="many_to_one")
