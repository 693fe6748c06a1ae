"""Sparse observations: hide random rectangles until a given share of the ocean pixels is hidden.

The masks imitate the gappy coverage of in-situ profiles and cloudy swaths: a patch is covered by random
axis-aligned rectangles whose sides are drawn uniformly from ``[side_min, side_max]`` until ``fraction`` of its
ocean pixels are hidden; what is left is "observed" (``valid``). Every function here is pure (all randomness
comes from the ``numpy.random.Generator`` passed in), so the dataset and the evaluation stage draw exactly the
same masks from the same seed.

How it stays fast (about 5,000 rectangles per 128x128 band at fraction 0.975) and unbiased:

* **No border bias.** A rectangle of size h x w gets its top-left corner uniformly in
  ``[-(h-1), H-1] x [-(w-1), W-1]`` and is clipped to the patch, i.e. it is placed on a padded canvas. Then every
  pixel, border or centre, is covered by exactly ``h*w`` of the ``(H+h-1)(W+w-1)`` placements: the chance of
  being hidden is the same everywhere. (The naive top-left in ``[0, H-h]`` covers a corner pixel with only 1 of
  ``h*w`` placements, so borders stay observed far more often.)
* **All rectangles at once.** They are painted with a 2-D difference array (+1/-1 at the four corners, one
  ``bincount``) followed by two cumulative sums: the count of rectangles over each pixel, in a handful of numpy
  calls whatever the number of rectangles, for all bands together.
* **Hitting the fraction.** Because coverage is uniform, the expected hidden share after n rectangles is
  ``1 - (1 - p)^n`` with p the mean coverage probability of one rectangle, so one bulk draw lands close to the
  target; its spread is estimated from the pair-covariance of the Boolean model and the bulk aims a little short.
  An exact finishing step then adds more rectangles in order and keeps the first ones (the last one possibly in
  part) until exactly the target count of ocean pixels is hidden, so the achieved fraction equals
  ``round(fraction * n_ocean) / n_ocean`` (within ``FRACTION_TOLERANCE`` where a bulk draw already is).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

# A bulk draw whose hidden share is already this close to the target is accepted as it is (saves the exact
# finishing step); the issue asks for +-1 %, this keeps half of that as headroom.
FRACTION_TOLERANCE = 0.005
# Rectangle positions and sizes come from 16-bit slices of the generator's raw 64-bit output (4 numbers per
# draw); mapping 16 bits onto a range of n values by multiply-shift is uniform to within n / 65536.
_MAX_SIDE_PX = 4096
_MAX_ROUNDS = 50


class MaskError(ValueError):
    """Arguments of a mask function are impossible (fraction out of [0, 1], bad sides, wrong shapes)."""


def sample_key(sample_id: str) -> int:
    """A stable integer for a sample id (same in every process and Python run, unlike ``hash``)."""
    return zlib.crc32(str(sample_id).encode("utf-8"))


def mask_rng(seed: int, sample: int, band: int) -> np.random.Generator:
    """The generator of the fixed (validation/evaluation) mask of one band of one sample.

    Seeding from ``(seed, sample, band)`` makes the mask independent of the epoch, of the worker process that
    draws it and of which other samples or bands are drawn, so every method scored on a sample sees the same
    observations. Negative seeds are mapped to their 64-bit two's complement (SeedSequence needs >= 0).
    """
    words = [int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in (seed, sample, band)]
    return np.random.default_rng(np.random.SeedSequence(words))


def make_mask(
    rng: np.random.Generator, land_mask: np.ndarray, fraction: float, side_min: int, side_max: int
) -> np.ndarray:
    """Observed pixels of one band: ``valid`` (H, W) bool, True where observed (never on land).

    ``land_mask`` (H, W) is True/1 on ocean (the sample's ``land_mask`` convention). Exactly
    ``round(fraction * n_ocean)`` ocean pixels are hidden, or a count within ``FRACTION_TOLERANCE``.
    Same result as band 0 of :func:`make_band_masks` called with ``[rng]``.
    """
    land_mask = np.asarray(land_mask)
    if land_mask.ndim != 2:
        raise MaskError(f"make_mask needs a 2-D land_mask (H, W); got shape {land_mask.shape}")
    return make_band_masks([rng], land_mask[None], fraction, side_min, side_max)[0]


def make_band_masks(
    rngs: Sequence[np.random.Generator],
    land_mask: np.ndarray,
    fraction: float,
    side_min: int,
    side_max: int,
) -> np.ndarray:
    """Independent masks for C bands at once: ``valid`` (C, H, W) bool.

    ``rngs`` holds one generator per band (for fixed masks: :func:`mask_rng` of each band) or the same
    generator C times (fresh training masks). Band b's mask depends only on ``rngs[b]`` and ``land_mask[b]``,
    so a band drawn alone with :func:`make_mask` gets the same mask.
    """
    ocean = np.asarray(land_mask).astype(bool, copy=False)
    _check_arguments(rngs, ocean, fraction, side_min, side_max)
    n_bands, height, width = ocean.shape
    n_ocean = ocean.sum(axis=(1, 2))
    target_hidden = np.rint(fraction * n_ocean).astype(np.int64)
    if fraction == 0.0 or not n_ocean.any():
        return ocean.copy()
    if fraction == 1.0:
        return np.zeros_like(ocean)

    geometry = _Geometry(height, width, side_min, side_max)
    tolerance = np.floor(FRACTION_TOLERANCE * n_ocean).astype(np.int64)
    bulk = np.array([geometry.bulk_count(n, t) for n, t in zip(n_ocean, target_hidden, strict=True)])
    hidden = _paint_bulk(rngs, geometry, bulk, ocean)
    for _ in range(_MAX_ROUNDS):
        n_hidden = (hidden & ocean).sum(axis=(1, 2))
        over = n_hidden > target_hidden + tolerance
        if not over.any():
            break
        # rare (a few % of draws): too many hidden, redraw those bands' bulk a bit shorter
        bulk = np.where(over, (bulk * 0.9).astype(np.int64), 0)
        redrawn = _paint_bulk(rngs, geometry, bulk, ocean, only=over)
        hidden[over] = redrawn[over]
    else:
        raise MaskError(f"could not reach mask fraction {fraction} in {_MAX_ROUNDS} draws (shape {ocean.shape})")

    for band in np.flatnonzero(n_hidden < target_hidden - tolerance):
        _finish_exactly(rngs[band], geometry, hidden[band], ocean[band], int(target_hidden[band]))
    return ocean & ~hidden


def hidden_fraction(valid: np.ndarray, land_mask: np.ndarray) -> np.ndarray:
    """Share of ocean pixels that are hidden, per leading index (band) — the quantity the masks aim at."""
    valid = np.asarray(valid).astype(bool, copy=False)
    ocean = np.asarray(land_mask).astype(bool, copy=False)
    axes = (-2, -1)
    n_ocean = ocean.sum(axis=axes)
    return (ocean & ~valid).sum(axis=axes) / np.maximum(n_ocean, 1)


def _check_arguments(rngs, ocean: np.ndarray, fraction: float, side_min: int, side_max: int) -> None:
    if ocean.ndim != 3:
        raise MaskError(f"land_mask must be (C, H, W); got shape {ocean.shape}")
    if len(rngs) != ocean.shape[0]:
        raise MaskError(f"{len(rngs)} generators for {ocean.shape[0]} bands: pass one per band")
    if not 0.0 <= float(fraction) <= 1.0:
        raise MaskError(f"mask fraction {fraction} is outside [0, 1] (dataset.mask_fraction)")
    if not 1 <= int(side_min) <= int(side_max):
        raise MaskError(
            f"rectangle sides [{side_min}, {side_max}] are impossible: need 1 <= mask_patch_min <= mask_patch_max"
        )
    if max(ocean.shape[1:]) + side_max > _MAX_SIDE_PX:
        raise MaskError(f"patches up to {_MAX_SIDE_PX - side_max} px a side are supported; got {ocean.shape[1:]}")


class _Geometry:
    """Rectangle statistics of one patch size: coverage probability and spread of the hidden count."""

    def __init__(self, height: int, width: int, side_min: int, side_max: int):
        self.height, self.width = height, width
        self.side_min, self.n_sides = side_min, side_max - side_min + 1
        sides = np.arange(side_min, side_max + 1, dtype=np.float64)
        # P(a given pixel is under one random rectangle) — the same for every pixel (padded placement)
        self.p_cover = float(np.mean(sides[:, None] * sides[None, :]
                                     / ((height + sides[:, None] - 1) * (width + sides[None, :] - 1))))
        # rho(d) = E[(h - |d|)+] / E[h]: overlap of one rectangle over two pixels d apart, per axis
        lags = np.arange(side_max, dtype=np.float64)
        overlap = np.clip(sides[None, :] - lags[:, None], 0, None).mean(axis=1) / sides.mean()
        lag_y = np.concatenate([overlap[:0:-1], overlap])
        self.pair_overlap = np.outer(lag_y, lag_y)  # (2*side_max-1)^2, 1 at the centre
        self.mean_area = float(np.mean(sides) ** 2)

    def bulk_count(self, n_ocean: int, target_hidden: int) -> int:
        """Rectangles for the bulk draw: aim short of the target by about two spreads minus the tolerance."""
        uncovered = n_ocean - target_hidden
        if uncovered <= 0:
            return 0
        spread = self.uncovered_spread(n_ocean, uncovered)
        aim = uncovered + max(0.0, 2.0 * spread - FRACTION_TOLERANCE * n_ocean)
        if aim >= n_ocean:
            return 0
        return int(math.log(aim / n_ocean) / math.log1p(-self.p_cover))

    def uncovered_spread(self, n_ocean: int, uncovered: float) -> float:
        """Std of the uncovered count of a Boolean model with uncovered share q (Poisson approximation).

        Cov(pixel a, pixel b uncovered) = q^2 (q^-rho(a-b) - 1), rho = share of rectangle-placements covering
        both; summing over the neighbourhood of a pixel gives the variance per pixel.
        """
        q = uncovered / n_ocean
        per_pixel = float(np.sum(q * q * (q ** -self.pair_overlap - 1.0)))
        return math.sqrt(max(n_ocean * per_pixel, 1.0))

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """n rectangles clipped to the patch, in draw order: (y0, y1, x0, x1) with y0 <= y < y1."""
        bits = rng.bit_generator.random_raw(n).view(np.uint16).reshape(n, 4).astype(np.int32).T
        sizes = self.side_min + ((bits[:2] * self.n_sides) >> 16)
        h, w = sizes
        top = ((bits[2] * (self.height + h - 1)) >> 16) - (h - 1)
        left = ((bits[3] * (self.width + w - 1)) >> 16) - (w - 1)
        return (
            np.maximum(top, 0), np.minimum(top + h, self.height),
            np.maximum(left, 0), np.minimum(left + w, self.width),
        )


def _paint_bulk(
    rngs: Sequence[np.random.Generator],
    geometry: _Geometry,
    counts: np.ndarray,
    ocean: np.ndarray,
    only: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``counts[b]`` rectangles for each band and return the hidden map (C, H, W) bool."""
    n_bands, height, width = ocean.shape
    stride_y, stride_b = width + 1, (height + 1) * (width + 1)
    plus, minus = [], []
    for band, count in enumerate(counts):
        if (only is not None and not only[band]) or count == 0:
            continue
        y0, y1, x0, x1 = geometry.draw(rngs[band], int(count))
        base = band * stride_b
        row0, row1 = base + y0 * stride_y, base + y1 * stride_y
        plus += [row0 + x0, row1 + x1]
        minus += [row0 + x1, row1 + x0]
    size = n_bands * stride_b
    if not plus:
        return np.zeros_like(ocean)
    diff = np.bincount(np.concatenate(plus), minlength=size) - np.bincount(np.concatenate(minus), minlength=size)
    diff = diff.reshape(n_bands, height + 1, width + 1).astype(np.int32)
    np.cumsum(diff, axis=2, out=diff)
    np.cumsum(diff, axis=1, out=diff)
    return diff[:, :height, :width] > 0


def _finish_exactly(
    rng: np.random.Generator, geometry: _Geometry, hidden: np.ndarray, ocean: np.ndarray, target: int
) -> None:
    """Add rectangles in draw order to ``hidden`` (in place) until exactly ``target`` ocean pixels are hidden.

    Each new rectangle's pixels are listed (a small fixed grid of side_max^2 slots per rectangle); a pixel
    counts for the first rectangle that covers it, and the pixels are taken in that order, so the result is
    the union of the first k rectangles plus part of the (k+1)-th.
    """
    height, width = hidden.shape
    side_max = geometry.side_min + geometry.n_sides - 1
    slot_y, slot_x = np.divmod(np.arange(side_max * side_max), side_max)
    for _ in range(_MAX_ROUNDS):
        open_px = ocean & ~hidden
        n_open = int(open_px.sum())
        missing = target - (int(ocean.sum()) - n_open)
        if missing <= 0:
            return
        per_rect = max(n_open * geometry.p_cover, 1e-3)
        n_rect = int(min(1.5 * missing / per_rect + 8, 200_000))
        y0, y1, x0, x1 = geometry.draw(rng, n_rect)
        ys = y0[:, None] + slot_y[None, :]
        xs = x0[:, None] + slot_x[None, :]
        inside = (ys < y1[:, None]) & (xs < x1[:, None])
        pixels = (ys * width + xs)[inside]  # rectangle-major, i.e. in draw order
        pixels = pixels[open_px.ravel()[pixels]]
        _, first = np.unique(pixels, return_index=True)  # first occurrence = first covering rectangle
        newly = pixels[np.sort(first)][:missing]
        hidden.ravel()[newly] = True
    raise MaskError(f"could not hide {target} ocean pixels of a {height}x{width} band in {_MAX_ROUNDS} rounds")
