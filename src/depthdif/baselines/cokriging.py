"""Cokriging first guess with covariances learned from the training split (torch, batched, on the device).

The best linear estimate the training data allow: the cross-covariance of the target bands' anomalies is
estimated once from complete training fields (:func:`fit_covariance`), stored in ``model.ckpt``, and every
patch is then analysed by ordinary cokriging (Journel & Huijbregts 1978, ch. V; Wackernagel 2003,
"Multivariate Geostatistics", ch. 20-24), so observations of one band inform the others.

Two covariance *setups* are kept:

* ``0`` - anomalies from each patch's band mean (``temp_v1``, or ``eo_4band`` when the surface field is missing);
* ``1`` - residuals after each patch's regression of the band on the dense surface fields (the EO sea-surface
  temperature, and every exported surface variable such as sea-surface height ``zos``): kriging with external
  drifts (Wackernagel 2003, ch. 38), the K drift slopes given a Gaussian prior estimated from the training
  patches' slopes (its mean is subtracted first, its K x K covariance enters the covariance), the intercept
  left free. This is the ARMOR3D construction (Guinehut et al. 2012, "High resolution 3-D temperature and
  salinity fields derived from in situ and satellite observations", Ocean Sci. 8): regress the subsurface on
  SST and SSH, then optimally interpolate the profiles' departures from that regression.

The unknown mean of each band is handled by adding a large constant ``MEAN_PRIOR_FACTOR * C(0)`` to that
band's covariance (the limit of simple kriging with a vague prior on the mean is ordinary kriging), which keeps
the system positive definite and lets one Cholesky factorisation serve it.

Covariance model: the empirical cross-covariance at every pixel lag of a patch (FFT, normalised by the number
of ocean pixel pairs at that lag), averaged over the 8 rotations/reflections of the grid (training augments
with them), then projected onto the nearest valid covariance on the doubled torus: the cross-spectral matrix
at every wavenumber is made positive semi-definite (negative eigenvalues set to 0).  The raw lag table is not
a valid covariance (its solve blows up with a small nugget); the projected one is, for any set of pixels of a
patch, because every lag inside a patch is a distinct lag of the torus.

Posterior standard deviation: the kriging variance of a dense system costs a triangular solve per hidden
pixel, too slow for a data loader; it is replaced by a table of the root-mean-square error of this same
estimator on training patches, by band, setup, Chebyshev distance to the nearest observation of the band and
local observation density (:func:`fit_sigma_table`), so it is calibrated on the training split by
construction.

All fields are z-scores of Kelvin (the batch convention); covariances and sigmas are stored in °C.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depthdif.data.normalization import Y_STD
from depthdif.errors import DepthDifError

log = logging.getLogger(__name__)

SETUPS = 2  # 0: anomaly from the patch mean; 1: residual of the regression on the surface field
MEAN_PRIOR_FACTOR = 100.0  # prior variance of a band's unknown patch mean, in units of its variance
DISTANCE_BINS = 13  # Chebyshev distance to the nearest observation: 0 .. 12+ px
DENSITY_EDGES = (0.01, 0.03, 0.1, 0.3)  # share of observed pixels in the 9x9 neighbourhood
DENSITY_WINDOW = 9
MIN_LAG_PAIRS = 16
EXPONENTIAL_SCALES_PX = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
GAUSSIAN_SCALES_PX = (1.5, 3.0, 6.0, 12.0, 24.0)
LMC_SWEEPS = 300
FAR_LAG_SHARE = 0.75  # lags from 3P/4 to P set the level a table is shifted to (see covariance())  # lags seen by fewer ocean pixel pairs are left at 0 before the projection
MAX_JITTER_TRIES = 6


class FirstGuessNotFitted(DepthDifError, RuntimeError):
    """The cokriging statistics were never fitted (an untrained model)."""


class FirstGuessFitError(DepthDifError, ValueError):
    """The training patches cannot give the first guess's statistics (none usable, or of another size)."""


@dataclass
class FirstGuess:
    """The cokriging estimate of a batch, in z-scores, and its posterior standard deviation in °C.

    Args:
        mean: (B, C, H, W) z-scores of Kelvin; observed ocean pixels keep their value; land 0.
        sigma_c: (B, C, H, W) °C; 0 at observed pixels and on land.
    """

    mean: torch.Tensor
    sigma_c: torch.Tensor


@contextmanager
def one_cpu_thread():
    """Run the many small solves on one CPU thread: measured on 2 busy cores, the sigma-table fit took 1.8 s
    on one thread and 28 s on two (threads of small ops spin and wait on each other).

    Yields:
        None; torch's thread count is restored on exit.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _ocean_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum((-2, -1), keepdim=True) / weight.sum((-2, -1), keepdim=True).clamp_min(1.0)


def surface_drifts(batch: Mapping, smoothing_px: float = 0.0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The drift fields of a batch: (B, K, H, W) dense surface fields minus their patch means, 0 where missing,
    and (B,) availability; or None without a surface field.

    K = 1 + S: the EO sea-surface temperature ``eo`` in °C, then the S extra surface fields ``surface`` (the
    batch contract's ``export.surface_variables``, e.g. sea-surface height in m), each in its own unit (a
    regression slope is then °C per that unit). ``eo`` is 0 on land and where dropped (the batch contract), so a
    0 is "no surface value" for every field. With ``smoothing_px`` the fields are low-passed by a normalised
    Gaussian of that width (land left out): a satellite surface carries ~0.2 °C of pixel speckle, which a drift
    term would copy into every estimate.

    Args:
        batch: a batch of the batch contract (``eo`` (B, 1, H, W) z-scores, optional ``surface`` (B, S, H, W)
            and ``eo_available`` (B, 1)).
        smoothing_px: width of the Gaussian smoothing, px; 0 leaves the fields as they are.

    Returns:
        ``(anomaly, available)``: (B, K, H, W) float64 drift fields (°C, then the surface variables' units), and
        (B,) float64 1 where the patch has a usable surface (more than 2K surface pixels), else 0; None when the
        batch has no ``eo``.
    """
    if "eo" not in batch:
        return None
    eo = batch["eo"][:, 0].double()
    present = (eo != 0).double()[:, None]
    fields = eo[:, None] * Y_STD
    if "surface" in batch and batch["surface"].shape[1]:
        fields = torch.cat([fields, batch["surface"].double()], 1)
    anomaly = (fields - _ocean_mean(fields, present)) * present
    if smoothing_px > 0:
        b, k = anomaly.shape[:2]
        flat = _gaussian_smooth(anomaly.reshape(b * k, *anomaly.shape[2:]),
                                present.expand_as(anomaly).reshape(b * k, *anomaly.shape[2:]), smoothing_px)
        anomaly = flat.reshape(anomaly.shape)
    available = batch["eo_available"].reshape(-1).double() if "eo_available" in batch else present.flatten(1).amax(1)
    available = available * (present.flatten(1).sum(1) > 2 * anomaly.shape[1])
    return anomaly, available


def _gaussian_smooth(field: torch.Tensor, weight: torch.Tensor, width_px: float) -> torch.Tensor:
    """Normalised Gaussian smoothing of (B, H, W) ``field`` over the pixels where ``weight`` is 1."""
    radius = max(1, int(3 * width_px))
    offsets = torch.arange(-radius, radius + 1, dtype=field.dtype, device=field.device)
    kernel = torch.exp(-0.5 * (offsets / width_px) ** 2)
    kernel = kernel / kernel.sum()

    def blur(values: torch.Tensor) -> torch.Tensor:
        values = F.conv2d(values[:, None], kernel.view(1, 1, 1, -1), padding=(0, radius))
        return F.conv2d(values, kernel.view(1, 1, -1, 1), padding=(radius, 0))[:, 0]

    return blur(field * weight) / blur(weight).clamp_min(1e-6) * weight


def patch_residuals(y: torch.Tensor, land: torch.Tensor, drifts: torch.Tensor | None) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """Residual fields in °C of complete patches (B, C, H, W): the anomaly from the patch mean, or, with drift
    fields ``drifts`` (B, K, H, W) (:func:`surface_drifts`), the residual of each band's least-squares multiple
    regression on them over its own ocean pixels.

    Args:
        y: (B, C, H, W) complete targets, z-scores of Kelvin.
        land: (B, C, H, W) 1 on ocean, 0 on land.
        drifts: (B, K, H, W) drift fields (:func:`surface_drifts`), or None.

    Returns:
        ``(residuals, slopes)``: (B, C, H, W) float64 °C, 0 on land; (B, C, K) float64 °C per drift unit
        (K = 0 without drifts).
    """
    y = y.double()
    land = land.double()
    anomaly = (y - _ocean_mean(y, land)) * land * Y_STD
    if drifts is None:
        return anomaly, torch.zeros(*y.shape[:2], 0, dtype=torch.float64, device=y.device)
    wet = land[:, :, None]
    s = drifts[:, None].double() * wet  # (B, C, K, H, W)
    s = (s - _ocean_mean(s, wet)) * wet
    gram = torch.einsum("bckhw,bclhw->bckl", s, s)
    moment = torch.einsum("bckhw,bchw->bck", s, anomaly)
    ridge = 1e-9 * gram.diagonal(0, -2, -1).sum(-1).clamp_min(1e-12)[..., None, None]
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    slopes = torch.linalg.solve(gram + ridge * eye, moment[..., None])[..., 0]
    return (anomaly - torch.einsum("bck,bckhw->bchw", slopes, s)) * land, slopes


def _torus_transforms(table: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations/reflections of lag tables (..., N, N) laid out on an N-periodic torus."""
    def negate(t: torch.Tensor, dim: int) -> torch.Tensor:
        return torch.roll(torch.flip(t, (dim,)), 1, dims=dim)

    out = []
    for base in (table, table.transpose(-2, -1)):
        for flip_y in (False, True):
            for flip_x in (False, True):
                t = negate(base, -2) if flip_y else base
                out.append(negate(t, -1) if flip_x else t)
    return out


class CovarianceAccumulator:
    """Sums of lagged products and pixel-pair counts of residual fields, per setup, via FFT on a 2P torus.

    Args:
        num_bands: C.
        size: P, the patch side, px.
    """

    def __init__(self, num_bands: int, size: int):
        self.num_bands, self.size = num_bands, size
        torus = 2 * size
        self.products = torch.zeros(SETUPS, num_bands, num_bands, torus, torus, dtype=torch.float64)
        self.pairs = torch.zeros_like(self.products)
        self.slopes: list[torch.Tensor] = []

    def add(self, residuals: torch.Tensor, land: torch.Tensor, setup: int) -> None:
        """Add a batch's lagged products (Wiener-Khinchin: ``ifft(conj(F_b) F_c)``) and pixel-pair counts.

        Args:
            residuals: (B, C, P, P) residual fields, °C, 0 on land (:func:`patch_residuals`).
            land: (B, C, P, P) 1 on ocean, 0 on land.
            setup: 0 (anomaly from the patch mean) or 1 (residual of the surface regression).
        """
        torus = 2 * self.size
        fr = torch.fft.fft2(residuals.double().cpu(), s=(torus, torus))
        fm = torch.fft.fft2(land.double().cpu(), s=(torus, torus))
        # sum_x r_b(x) r_c(x + lag) = ifft(conj(F_b) F_c)
        self.products[setup] += torch.fft.ifft2(fr.conj()[:, :, None] * fr[:, None]).real.sum(0)
        self.pairs[setup] += torch.fft.ifft2(fm.conj()[:, :, None] * fm[:, None]).real.sum(0).round()

    def covariance(self, setup: int) -> torch.Tensor:
        """The valid cross-covariance at every lag of a patch (see :func:`fit_coregionalization`).

        Lags seen by fewer than ``MIN_LAG_PAIRS`` ocean pixel pairs are left out; the table is averaged over the
        8 rotations/reflections of the grid and symmetrised in the bands before the fit.

        Args:
            setup: 0 or 1.

        Returns:
            (C, C, 2P, 2P) float64 °C².
        """
        pairs = self.pairs[setup]
        raw = torch.where(pairs >= MIN_LAG_PAIRS, self.products[setup] / pairs.clamp_min(1.0), 0.0)
        # training augments with the 8 rotations/reflections of the grid: the statistics should have them too
        raw = torch.stack(_torus_transforms(raw)).mean(0)
        raw = 0.5 * (raw + raw.transpose(0, 1))
        pairs = torch.stack(_torus_transforms(pairs)).mean(0)
        return fit_coregionalization(raw, pairs, self.size)


def _torus_distance(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(2P, 2P) Euclidean and Chebyshev length (px) of the lag each cell of a 2P-periodic lag table holds."""
    index = torch.arange(2 * size, dtype=torch.float64)
    signed = torch.minimum(index, 2 * size - index)
    return torch.sqrt(signed[:, None] ** 2 + signed[None, :] ** 2), torch.maximum(signed[:, None], signed[None, :])


def covariance_dictionary(distance: torch.Tensor) -> torch.Tensor:
    """Valid isotropic correlation functions of ``distance``: a nugget, exponentials and Gaussians over a range
    of length scales (each positive definite in 2-D).

    Args:
        distance: lag lengths, px, any shape.

    Returns:
        (K, *distance.shape) float64, K = 1 + len(EXPONENTIAL_SCALES_PX) + len(GAUSSIAN_SCALES_PX).
    """
    functions = [(distance == 0).double()]
    functions += [torch.exp(-distance / scale) for scale in EXPONENTIAL_SCALES_PX]
    functions += [torch.exp(-0.5 * (distance / scale) ** 2) for scale in GAUSSIAN_SCALES_PX]
    return torch.stack(functions)


def fit_coregionalization(raw: torch.Tensor, pairs: torch.Tensor, size: int, sweeps: int = LMC_SWEEPS) -> torch.Tensor:
    """A linear model of coregionalisation fitted to empirical cross-covariance lag tables.

    ``C_bc(h) = a_bc + sum_k B_k[b, c] phi_k(|h|)`` with the basis :func:`covariance_dictionary` and every
    coregionalisation matrix ``B_k`` positive semi-definite, fitted by weighted least squares with the
    iterative algorithm of Goulard & Voltz (1992, Math. Geol. 24: each ``B_k`` in turn is the unconstrained
    least-squares fit to what the others leave, projected onto the positive semi-definite cone); a positive
    combination of valid covariances with PSD coefficients is a valid cross-covariance in the plane
    (Wackernagel 2003, ch. 26). The constant ``a_bc`` is free and then dropped: ordinary cokriging (a free mean
    per band) is unchanged by adding a constant to any ``C_bc``, and within-patch anomalies are anti-correlated
    at large lags, which no decaying model follows. Lags up to P/2 are fitted, weighted by their pixel pairs.

    Args:
        raw: (C, C, 2P, 2P) empirical cross-covariances, °C², on the 2P-periodic lag layout.
        pairs: (2P, 2P) or (C, C, 2P, 2P) number of pixel pairs behind each lag.
        size: P.
        sweeps: passes of the coordinate descent.

    Returns:
        (C, C, 2P, 2P) the fitted model evaluated at every lag, °C².
    """
    distance, chebyshev = _torus_distance(size)
    basis = covariance_dictionary(distance)  # (K, 2P, 2P)
    fitted = chebyshev <= size // 2
    weights = pairs if pairs.dim() == 2 else pairs[0, 0]
    weights = weights[fitted] / weights[fitted].max()
    phi = basis[:, fitted]  # (K, m)
    target = raw[:, :, fitted]  # (C, C, m)
    norms = (phi**2 * weights).sum(-1)  # (K,)
    coefficients, constant = _nonnegative_diagonal_fit(phi, target, weights)
    model = torch.einsum("kbc,km->bcm", coefficients, phi)
    for _ in range(sweeps):
        for k in range(phi.shape[0]):
            model -= coefficients[k][..., None] * phi[k]
            left = target - constant[..., None] - model
            update = _psd((left * phi[k] * weights).sum(-1) / norms[k])
            coefficients[k] = update
            model += update[..., None] * phi[k]
        constant = ((target - model) * weights).sum(-1) / weights.sum()
    return torch.einsum("kbc,kij->bcij", coefficients, basis)


def _nonnegative_diagonal_fit(phi: torch.Tensor, target: torch.Tensor, weights: torch.Tensor):
    """Starting point of the coregionalisation fit: each band's own table by non-negative least squares (the
    constant may take either sign), no cross terms. Returns (K, C, C) coefficients and the (C, C) constants."""
    from scipy.optimize import nnls

    root = weights.sqrt().numpy()[:, None]
    design = np.concatenate([phi.T.numpy(), np.ones((phi.shape[1], 1)), -np.ones((phi.shape[1], 1))], 1) * root
    coefficients = torch.zeros(phi.shape[0], *target.shape[:2], dtype=torch.float64)
    constant = torch.zeros(target.shape[:2], dtype=torch.float64)
    for b in range(target.shape[0]):
        solution, _ = nnls(design, target[b, b].numpy() * root[:, 0])
        coefficients[:, b, b] = torch.from_numpy(solution[:-2])
        constant[b, b] = float(solution[-2] - solution[-1])
    return coefficients, constant


def _psd(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest (Frobenius) positive semi-definite matrix to a symmetric one."""
    values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.transpose(-2, -1)))
    return vectors @ torch.diag_embed(values.clamp_min(0.0)) @ vectors.transpose(-2, -1)


def finite_samples(batch: Mapping) -> dict:
    """The samples of a batch whose target is finite on every ocean pixel.

    Args:
        batch: a batch of the batch contract (``y``, ``land_mask`` (B, C, H, W)).

    Returns:
        The batch with every per-sample tensor restricted to those samples, and ``_dropped`` (int), the number
        of samples left out.
    """
    y, land = batch["y"], batch["land_mask"] > 0
    good = (torch.isfinite(y) | ~land).flatten(1).all(1)
    out = {k: (v[good] if torch.is_tensor(v) and v.ndim > 0 and len(v) == len(y) else v) for k, v in batch.items()}
    out["_dropped"] = int((~good).sum())
    return out


def fit_covariance(batches: Iterable[Mapping], num_bands: int, size: int, max_samples: int,
                   surface_smoothing_px: float = 0.0) -> dict[str, torch.Tensor]:
    """Estimate the cokriging statistics from complete training patches.

    Args:
        batches: training batches (``y`` (B, C, P, P) z-scores, ``land_mask``, optional ``eo``/``eo_available``),
            with the training split's surface degradation, so the residual statistics are those the estimator
            meets in training.
        num_bands: C.
        size: P, the patch side (px).
        max_samples: stop after this many patches.
        surface_smoothing_px: Gaussian width the surface field is smoothed with (as the estimator will).

    Returns:
        ``covariance`` (SETUPS, C, C, 2P, 2P) °C², ``slope_mean`` (C, K) and ``slope_var`` (C, K, K), the mean
        and covariance of the patches' regression slopes on the K drift fields (:func:`surface_drifts`; °C per
        drift unit; 0 without a surface field), ``band_mean`` (C,) z-scores, the mean
        level of each band over the training patches, ``samples`` (scalar).

    Raises:
        FirstGuessFitError: no usable patch, or patches of another size (a ValueError).
    """
    acc = CovarianceAccumulator(num_bands, size)
    seen = skipped = 0
    level_sum = torch.zeros(num_bands, dtype=torch.float64)
    for batch in batches:
        batch = finite_samples(batch)
        skipped += batch.pop("_dropped")
        y, land = batch["y"].cpu(), batch["land_mask"].cpu().double()
        if y.shape[-2:] != (size, size):
            raise FirstGuessFitError(f"first-guess fit: patches are {tuple(y.shape[-2:])}, the model is built for "
                                     f"{size} px")
        if not len(y):
            continue
        residual0, _ = patch_residuals(y, land, None)
        acc.add(residual0, land, 0)
        level_sum += _ocean_mean(y.double(), land).sum(0).view(-1)
        surface = surface_drifts({k: v.cpu() for k, v in batch.items() if torch.is_tensor(v)}, surface_smoothing_px)
        if surface is not None:
            anomaly, available = surface
            keep = available > 0
            if keep.any():
                residual1, slopes = patch_residuals(y[keep], land[keep], anomaly[keep])
                acc.add(residual1, land[keep], 1)
                acc.slopes.append(slopes)
        seen += y.shape[0]
        if seen >= max_samples:
            break
    if seen == 0:
        raise FirstGuessFitError(
            f"first-guess fit: no usable training patch ({skipped} had NaN/inf on ocean pixels); check the exported "
            "patches (NaN must only mark land) and the train split."
        )
    if skipped:
        log.warning("first guess: %d training patches with NaN/inf on ocean pixels were left out of the fit", skipped)
    covariance = torch.stack([acc.covariance(0), acc.covariance(1) if acc.slopes else acc.covariance(0)])
    if acc.slopes:
        slopes = torch.cat(acc.slopes)  # (N, C, K)
        slope_mean = slopes.mean(0)
        centred = slopes - slope_mean
        slope_var = (torch.einsum("nck,ncl->ckl", centred, centred) / (len(slopes) - 1) if len(slopes) > 1
                     else torch.eye(slopes.shape[-1], dtype=torch.float64).expand(num_bands, -1, -1).clone())
    else:
        slope_mean = torch.zeros(num_bands, 1, dtype=torch.float64)
        slope_var = torch.zeros(num_bands, 1, 1, dtype=torch.float64)
    log.info("first guess: covariances from %d training patches; band variances %s °C²; surface-drift slopes %s "
             "(°C per unit of SST, then of each surface variable)",
             seen, [round(float(v), 4) for v in covariance[0].diagonal(0, 0, 1)[0, 0]],
             [[round(float(v), 3) for v in band] for band in slope_mean])
    return {"covariance": covariance, "slope_mean": slope_mean.double(), "slope_var": slope_var.double(),
            "band_mean": level_sum / seen, "samples": torch.tensor(float(seen), dtype=torch.float64)}


def observation_features(valid_ocean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys of the sigma table per pixel: distance to the band's nearest observation and local density.

    Args:
        valid_ocean: (B, C, H, W) bool, the observed ocean pixels.

    Returns:
        ``(distance, density)``, (B, C, H, W) long each: the Chebyshev distance (px) to the nearest observation
        of the band, capped at ``DISTANCE_BINS - 1``, and the bin (of ``DENSITY_EDGES``) of the share of
        observed pixels in the ``DENSITY_WINDOW`` px window around the pixel.
    """
    reached = valid_ocean.float()
    distance = torch.full_like(reached, DISTANCE_BINS - 1)
    distance[reached > 0] = 0
    for step in range(1, DISTANCE_BINS - 1):
        reached = F.max_pool2d(reached, 3, stride=1, padding=1)
        distance = torch.where((reached > 0) & (distance == DISTANCE_BINS - 1), float(step), distance)
    density = F.avg_pool2d(valid_ocean.float(), DENSITY_WINDOW, stride=1, padding=DENSITY_WINDOW // 2,
                           count_include_pad=False)
    edges = torch.tensor(DENSITY_EDGES, device=density.device)
    return distance.long(), torch.bucketize(density, edges)


class Cokriging(nn.Module):
    """Ordinary cokriging of the target bands of a batch with stored (trained) statistics.

    Buffers (saved with the model): ``covariance`` (SETUPS, C, C, 2P, 2P) °C² on the torus, ``slope_mean``
    (C, K) and ``slope_var`` (C, K, K) of the drift slopes (K = 1 + the number of surface variables), ``sigma_table`` (SETUPS, C, DISTANCE_BINS, len(DENSITY_EDGES) + 1) °C, ``fitted``.

    Args:
        num_bands: C.
        size: P, patch side in px (the lag table covers every lag of a P x P patch).
        nugget: relative nugget: ``nugget * C_bb(0)`` is added at zero lag (observation error plus jitter).
        max_joint_observations: above this many observations in a patch the bands are analysed one by one
            (no cross-band terms): dense observations of a band leave little to learn from the others, and the
            joint Cholesky factorisation grows as the cube of the count.
        max_observations: at most this many observations of a band enter the solve (evenly thinned above it).
        surface_smoothing_px: width of the Gaussian the surface fields are smoothed with before they enter the drift.
        num_drifts: K, the dense surface fields of the drift: 1 (the EO SST) + the surface variables.
    """

    def __init__(self, num_bands: int, size: int, nugget: float = 1e-3, max_joint_observations: int = 800,
                 max_observations: int = 2000, surface_smoothing_px: float = 0.0, num_drifts: int = 1):
        super().__init__()
        self.max_observations = int(max_observations)
        self.surface_smoothing_px = float(surface_smoothing_px)
        self.num_bands, self.size = int(num_bands), int(size)
        self.nugget = float(nugget)
        self.max_joint = int(max_joint_observations)
        torus = 2 * self.size
        self.register_buffer("covariance", torch.zeros(SETUPS, num_bands, num_bands, torus, torus, dtype=torch.float64))
        self.num_drifts = int(num_drifts)
        self.register_buffer("slope_mean", torch.zeros(num_bands, self.num_drifts, dtype=torch.float64))
        self.register_buffer("slope_var", torch.zeros(num_bands, self.num_drifts, self.num_drifts, dtype=torch.float64))
        self.register_buffer("sigma_table", torch.ones(SETUPS, num_bands, DISTANCE_BINS, len(DENSITY_EDGES) + 1,
                                                       dtype=torch.float64))
        # band_mean_fitted 0: not known (a model saved before this statistic existed); see _band_levels
        self.register_buffer("band_mean", torch.zeros(num_bands, dtype=torch.float64))
        self.register_buffer("band_mean_fitted", torch.zeros((), dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.float64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # model.ckpt formats 2-4 stored one drift (the SST): slopes (C,) and their variance (C,)
        mean, var = state_dict.get(prefix + "slope_mean"), state_dict.get(prefix + "slope_var")
        if mean is not None and mean.ndim == 1:
            state_dict[prefix + "slope_mean"] = mean[:, None]
        if var is not None and var.ndim == 1:
            state_dict[prefix + "slope_var"] = var[:, None, None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_statistics(self, stats: Mapping[str, torch.Tensor]) -> None:
        """Copy fitted statistics into the buffers and mark the estimator fitted.

        Args:
            stats: any of ``covariance``, ``slope_mean``, ``slope_var``, ``sigma_table``, ``band_mean`` (shapes
                as the buffers; :func:`fit_covariance`, :func:`fit_sigma_table`).
        """
        with torch.no_grad():
            for name in ("covariance", "slope_mean", "slope_var", "sigma_table", "band_mean"):
                if name in stats:
                    getattr(self, name).copy_(stats[name].to(getattr(self, name)))
            if "band_mean" in stats:
                self.band_mean_fitted.fill_(1.0)
            self.fitted.fill_(1.0)

    # ------------------------------------------------------------------ estimate
    @torch.no_grad()
    def forward(self, batch: Mapping) -> FirstGuess:
        """Cokriging of ``x`` at ``valid_mask * land_mask`` (B, C, H, W), with ``eo`` when present.

        Args:
            batch: a batch of the batch contract: ``x``, ``valid_mask``, ``land_mask`` (B, C, P, P), ``x`` in
                z-scores of Kelvin; optional ``eo``, ``eo_available``, ``surface`` (the drift fields).

        Returns:
            The estimate (z-scores) and its posterior sigma (°C), (B, C, P, P) each, in ``x``'s dtype.

        Raises:
            FirstGuessNotFitted: the statistics were never fitted.
            ValueError: patches of another size than the statistics', or another number of surface fields.
            FloatingPointError: a covariance system stays indefinite with a 1e5x nugget.
        """
        if batch["x"].device.type != "cpu":
            return self._forward(batch)
        with one_cpu_thread():
            return self._forward(batch)

    def _forward(self, batch: Mapping) -> FirstGuess:
        if not bool(self.fitted):
            raise FirstGuessNotFitted(
                "the cokriging first guess has no statistics: they are fitted from the training split when training "
                "starts (depthdif.train.fit_first_guess) and stored in model.ckpt; this model was never trained."
            )
        x = batch["x"]
        if x.shape[-2:] != (self.size, self.size):
            raise ValueError(f"cokriging: patches are {tuple(x.shape[-2:])} px, the statistics are for {self.size} px")
        land = batch["land_mask"] > 0
        observed = (batch["valid_mask"] > 0) & land
        surface = surface_drifts(batch, self.surface_smoothing_px)
        if surface is not None and surface[0].shape[1] != self.num_drifts:
            raise ValueError(f"cokriging: the batch has {surface[0].shape[1]} surface fields (SST + surface "
                             f"variables), the statistics are for {self.num_drifts}")
        means = torch.zeros_like(x, dtype=torch.float64)
        setups = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if surface is not None:
            setups = (surface[1] > 0).long()
        for i in range(x.shape[0]):
            eo = surface[0][i] if surface is not None and setups[i] == 1 else None
            means[i] = self._estimate(x[i].double(), observed[i], eo, int(setups[i]))
        mean = torch.where(observed, x.double(), means) * land
        return FirstGuess(mean=mean.to(x.dtype), sigma_c=self.sigma(observed, land, setups).to(x.dtype))

    def sigma(self, observed: torch.Tensor, land: torch.Tensor, setups: torch.Tensor) -> torch.Tensor:
        """Posterior standard deviation from the fitted table; 0 observed and on land.

        Args:
            observed: (B, C, H, W) bool, the observed ocean pixels.
            land: (B, C, H, W) bool, True on ocean.
            setups: (B,) long, 0 or 1 per patch (1: the surface drift was used).

        Returns:
            (B, C, H, W) float64 °C.
        """
        distance, density = observation_features(observed)
        bands = torch.arange(self.num_bands, device=observed.device).view(1, -1, 1, 1).expand_as(distance)
        table = self.sigma_table.to(observed.device)
        sigma = table[setups.view(-1, 1, 1, 1).expand_as(distance), bands, distance, density]
        return sigma * (land & ~observed)

    def _estimate(self, x: torch.Tensor, observed: torch.Tensor, eo: torch.Tensor | None, setup: int) -> torch.Tensor:
        """(C, H, W) z-score estimate of one patch (observations not yet merged)."""
        bands, rows, cols = torch.nonzero(observed, as_tuple=True)
        counts = torch.bincount(bands, minlength=self.num_bands)
        means = self._band_levels(x, bands, rows, cols, counts)
        out = means.view(-1, 1, 1).expand_as(x).clone()
        if bands.numel() == 0:
            return out
        values = (x[bands, rows, cols] - means[bands]) * Y_STD  # °C anomalies
        keep = self._thinned(bands, counts)
        if keep is not None:
            bands, rows, cols, values = bands[keep], rows[keep], cols[keep], values[keep]
        groups = ([list(range(self.num_bands))] if bands.numel() <= self.max_joint
                  else [[b] for b in range(self.num_bands)])
        for group in groups:
            member = torch.isin(bands, torch.tensor(group, device=bands.device))
            if not member.any():
                continue
            anomaly = self._krige(bands[member], rows[member], cols[member], values[member], eo, setup, group)
            for b in group:
                out[b] = means[b] + anomaly[b] / Y_STD
        return out

    def _band_levels(self, x: torch.Tensor, bands: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                     counts: torch.Tensor) -> torch.Tensor:
        """(C,) z-score mean level of each band of one patch: its observations' mean where it has some.

        A band without observations (a patch no profile reached, or rectangles that missed one band) is not
        at the normalisation's mean (16.6 °C) nor at another band's level (the 92 m band is ~7 °C colder than
        the surface): it takes the training split's level difference to the observed bands
        (``band_mean[b] - band_mean[c]``, weighted by the observed bands' counts), or the training mean level
        itself when nothing is observed. A model saved without ``band_mean`` keeps the old rule (the other
        bands' mean level, 0 when nothing is observed).
        """
        means = torch.zeros(self.num_bands, dtype=torch.float64, device=x.device)
        seen = counts > 0
        if seen.any():
            means[seen] = torch.zeros_like(means).index_add_(0, bands, x[bands, rows, cols])[seen] / counts[seen]
        if bool(seen.all()):
            return means
        level = self.band_mean.to(x.device)
        if not bool(self.band_mean_fitted):
            means[~seen] = x[bands, rows, cols].mean() if seen.any() else 0.0
            return means
        if not seen.any():
            return level.clone()
        weights = counts[seen].double()
        offset = ((means[seen] - level[seen]) * weights).sum() / weights.sum()
        means[~seen] = level[~seen] + offset
        return means

    def _thinned(self, bands: torch.Tensor, counts: torch.Tensor) -> torch.Tensor | None:
        """Indices keeping at most ``max_observations`` per band, evenly spread over the band's observations
        (row-major order, so over the patch), or None when no band has more. Dense observations (50 % of a 128 px
        patch: ~8,000 a band) would need a ~180 GFLOP solve; every kept pixel is then still within a few pixels
        of the dropped ones, and the dropped observations are merged back exactly afterwards."""
        if int(counts.max()) <= self.max_observations:
            return None
        keep = []
        for b in range(self.num_bands):
            members = torch.nonzero(bands == b).flatten()
            if members.numel() > self.max_observations:
                members = members[torch.linspace(0, members.numel() - 1, self.max_observations,
                                                 device=members.device).round().long()]
            keep.append(members)
        return torch.cat(keep)

    def _krige(self, bands, rows, cols, values, eo, setup: int, group: list[int]) -> torch.Tensor:
        """Cokriging of °C anomalies observed at (bands, rows, cols) onto the grid of every band in ``group``;
        returns (C, H, W) °C (bands outside ``group`` stay 0)."""
        size, torus = self.size, 2 * self.size
        cov = self.covariance[setup].to(values.device)
        variances = cov.diagonal(0, 0, 1)[0, 0]  # (C,) C_bb(0)
        same = (bands[:, None] == bands[None, :]).double()
        # lags shifted by +P (a roll of the torus table), so that every lag between two pixels of the patch,
        # -P < d < P, is a plain index 0 < d + P < 2P: see _lag_index
        shifted = torch.roll(cov, (size, size), dims=(2, 3)).reshape(-1)
        system = shifted[_lag_index(bands, rows, cols, self.num_bands, size)]
        system = system + same * (MEAN_PRIOR_FACTOR * variances.max())
        rhs = values.clone()
        if eo is not None:  # (K, H, W) drift fields
            e = eo[:, rows, cols].T  # (n, K)
            prior_cov = self.slope_var.to(values.device)[bands]  # (n, K, K)
            rhs = rhs - (self.slope_mean.to(values.device)[bands] * e).sum(1)
            system = system + same * (torch.einsum("ik,ikl->il", e, prior_cov) @ e.T)
        diagonal = self.nugget * variances[bands]
        weights = _cholesky_solve(system, diagonal, rhs)
        # estimate on the grid: sum_j C_{b c_j}(x - p_j) w_j by FFT, plus the mean and drift terms
        scattered = torch.zeros(self.num_bands, torus, torus, dtype=torch.float64, device=values.device)
        scattered.index_put_((bands, rows, cols), weights, accumulate=True)
        spectrum = torch.fft.fft2(cov)
        field = torch.fft.ifft2((spectrum * torch.fft.fft2(scattered)[None]).sum(1)).real[:, :size, :size]
        out = torch.zeros_like(field)
        for b in group:
            in_band = bands == b
            level = MEAN_PRIOR_FACTOR * variances.max() * weights[in_band].sum()
            out[b] = field[b] + level
            if eo is not None:
                drift = self.slope_mean[b] + self.slope_var[b] @ (e[in_band] * weights[in_band, None]).sum(0)
                out[b] = out[b] + torch.einsum("k,khw->hw", drift, eo)
        for b in range(self.num_bands):
            if b not in group:
                out[b] = 0.0
        return out


def _lag_index(bands: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, num_bands: int, size: int) -> torch.Tensor:
    """Flat indices (n, n) into a (C, C, 2P, 2P) lag table rolled by (P, P): entry (i, j) addresses
    C[b_i, b_j](r_i - r_j, c_i - c_j).

    The index is a sum of a term of i and a term of j, so the n x n table costs one broadcast add; the
    modular lags of the torus (two int64 remainders over n² pairs) took most of a 32 px solve's time.
    """
    torus = 2 * size
    plane = torus * torus
    row_term = bands * (num_bands * plane) + (rows + size) * torus + cols + size
    col_term = bands * plane - rows * torus - cols
    return row_term[:, None] + col_term[None, :]


def _cholesky_solve(system: torch.Tensor, diagonal: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve (system + diag(diagonal)) w = rhs; the jitter grows tenfold until the factorisation succeeds."""
    scale = 1.0
    for _ in range(MAX_JITTER_TRIES):
        factor, info = torch.linalg.cholesky_ex(system + torch.diag(diagonal * scale))
        if int(info) == 0:
            return torch.cholesky_solve(rhs[:, None], factor)[:, 0]
        scale *= 10.0
    raise FloatingPointError("cokriging: the covariance system is not positive definite even with a 1e5x nugget")


def fit_sigma_table(estimator: Cokriging, batches: Iterable[Mapping], max_samples: int) -> torch.Tensor:
    """Root-mean-square error (°C) of ``estimator`` on complete training patches, by (setup, band, distance
    bin, density bin), over hidden ocean pixels; empty cells take the nearest filled distance bin of the same
    density, then the band's overall value.

    Args:
        estimator: the cokriging estimator, its covariances fitted.
        batches: training batches (of other masks than the covariance fit saw).
        max_samples: stop after this many patches.

    Returns:
        (SETUPS, C, DISTANCE_BINS, len(DENSITY_EDGES) + 1) float64 °C.
    """

    shape = estimator.sigma_table.shape
    sse = torch.zeros(shape, dtype=torch.float64)
    count = torch.zeros(shape, dtype=torch.float64)
    seen = 0
    for batch in batches:
        batch = finite_samples(batch)
        batch.pop("_dropped")
        if not len(batch["y"]):
            continue
        guess = estimator(batch)
        land = batch["land_mask"] > 0
        observed = (batch["valid_mask"] > 0) & land
        hidden = land & ~observed
        setups = ((surface_drifts(batch)[1] > 0).long() if "eo" in batch
                  else torch.zeros(len(land), dtype=torch.long))
        distance, density = observation_features(observed)
        error = ((guess.mean.double() - batch["y"].double()) * Y_STD) ** 2
        bands = torch.arange(shape[1]).view(1, -1, 1, 1).expand_as(distance)
        keys = (setups.view(-1, 1, 1, 1).expand_as(distance), bands, distance, density)
        flat = torch.stack([k[hidden] for k in keys])
        index = ((flat[0] * shape[1] + flat[1]) * shape[2] + flat[2]) * shape[3] + flat[3]
        sse.view(-1).index_add_(0, index, error[hidden].cpu())
        count.view(-1).index_add_(0, index, torch.ones_like(error[hidden]).cpu())
        seen += land.shape[0]
        if seen >= max_samples:
            break
    table = torch.sqrt(sse / count.clamp_min(1.0))
    filled = count >= 20
    for s in range(shape[0]):
        for b in range(shape[1]):
            overall = torch.sqrt(sse[s, b].sum() / count[s, b].sum().clamp_min(1.0))
            if count[s, b].sum() == 0 and s == 1:
                table[s, b] = table[0, b]
                continue
            for k in range(shape[3]):
                known = torch.nonzero(filled[s, b, :, k]).flatten()
                for d in range(shape[2]):
                    if filled[s, b, d, k]:
                        continue
                    if known.numel():
                        table[s, b, d, k] = table[s, b, known[(known - d).abs().argmin()], k]
                    else:
                        table[s, b, d, k] = overall
    log.info("first guess: posterior sigma table from %d training patches (%d hidden pixels)", seen, int(count.sum()))
    return table
