"""Sparse observations: hide random rectangles until a given share of the ocean pixels is hidden.

The masks imitate the gappy coverage of in-situ profiles and cloudy swaths: a patch is covered by random
axis-aligned rectangles whose sides are drawn uniformly from ``[side_min, side_max]`` until ``fraction`` of its
ocean pixels are hidden; what is left is observed (``valid``). All randomness comes from the
``numpy.random.Generator`` passed in, so the dataset and the evaluation stage draw the same masks from the
same seed (:func:`mask_rng`).

* **No border bias.** A rectangle of size h x w gets its top-left corner uniformly in
  ``[-(h-1), H-1] x [-(w-1), W-1]`` and is clipped to the patch (placement on a padded canvas). Every pixel,
  border or centre, is then covered by exactly ``h*w`` of the ``(H+h-1)(W+w-1)`` placements, so its chance of
  being hidden is the same everywhere. (The naive top-left in ``[0, H-h]`` covers a corner pixel with 1 of
  ``h*w`` placements: borders stay observed far more often.)
* **All rectangles at once.** They are painted with a 2-D difference array (+1/-1 at the four corners, one
  ``bincount``) and two cumulative sums: the count of rectangles over each pixel in a handful of array calls,
  whatever the number of rectangles (about 5,000 per 128x128 band at fraction 0.975), for all bands together.
* **Hitting the fraction.** Coverage is uniform, so the expected hidden share after n rectangles is
  ``1 - (1 - p)^n`` (p: mean coverage probability of one rectangle) and one bulk draw lands close; its spread is
  estimated from the pair covariance of this Boolean model and the bulk aims a little short. A finishing step
  then adds rectangles in draw order and keeps the first ones (the last possibly in part) until exactly
  ``round(fraction * n_ocean)`` ocean pixels are hidden. Draws already within ``FRACTION_TOLERANCE`` are kept.

:class:`TorusMaskPool` serves training, where a fresh exact draw (~1.5 ms for three 128x128 bands at 0.975) would
dominate data loading: it pre-draws the same Boolean model on a few periodic (torus) canvases and cuts random
windows (random offset, one of four orientations) from them, redrawing each torus after a set number of
uses. A window of a torus at least a rectangle wider than the window has the distribution of a padded-canvas
draw.

:func:`make_profile_masks` is the other observing system (``dataset.observations``): vertical profiles (Argo
floats, CTDs, gliders), each observing every band at one position. Their number in a patch is Poisson with a
mean of the density (profiles per (1°)² a month) times the patch's ocean area (:func:`cell_area_deg2`, with
the cos(latitude) factor), their positions uniform over the patch's ocean columns, and every band of a sample
is observed at the same pixels.
"""

from __future__ import annotations

import functools
import logging
import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from depthdif.errors import DepthDifError

logger = logging.getLogger(__name__)

# A draw whose hidden share is already this close to the target is kept as it is (saves the exact finishing
# step); the issue asks for +-1 %, this keeps half of that as headroom.
FRACTION_TOLERANCE = 0.005
# Sizes and positions come from 16-bit slices of the generator's raw 64-bit output (four numbers per draw);
# mapping 16 bits onto n values by multiply-shift is uniform to within n / 65536 (0.4 % at n = 260).
_MAX_CANVAS_PX = 4096
_MAX_ROUNDS = 50
_WINDOW_TRIES = 8  # pool windows tried per band before the exact finishing step
_GRAIN = 32_000  # elements per torch call, just under torch's intra-op parallel grain (32768)


class MaskError(DepthDifError, ValueError):
    """Arguments of a mask function are impossible (fraction out of [0, 1], bad sides, wrong shapes)."""


def sample_key(sample_id: str) -> int:
    """A stable integer for a sample id (the same in every process and Python run, unlike ``hash``)."""
    return zlib.crc32(str(sample_id).encode("utf-8"))


def mask_rng(seed: int, sample: int, band: int) -> np.random.Generator:
    """The generator of the fixed (validation/evaluation) mask of one band of one sample.

    Seeding from ``(seed, sample, band)`` makes the mask independent of the epoch, of the worker process and
    of which other samples or bands are drawn, so every method scored on a sample sees the same observations.
    Negative values are mapped to their 64-bit two's complement (SeedSequence needs non-negative words).
    """
    words = [int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in (seed, sample, band)]
    return np.random.default_rng(np.random.SeedSequence(words))


def make_mask(
    rng: np.random.Generator, land_mask: np.ndarray, fraction: float, side_min: int, side_max: int
) -> np.ndarray:
    """Observed pixels of one band: ``valid`` (H, W) bool, True where observed (never on land).

    ``land_mask`` (H, W) is True/1 on ocean (the sample's ``land_mask`` convention). Exactly
    ``round(fraction * n_ocean)`` ocean pixels are hidden, or a count within ``FRACTION_TOLERANCE`` of it.
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

    ``rngs`` holds one generator per band (fixed masks: :func:`mask_rng` of each band) or the same generator
    C times (fresh masks). Band b's mask depends only on ``rngs[b]`` and ``land_mask[b]``, so a band drawn
    alone with :func:`make_mask` and the same generator gets the same mask.
    """
    ocean = _as_ocean(land_mask)
    check_mask_arguments(fraction, side_min, side_max, ocean.shape)
    if len(rngs) != ocean.shape[0]:
        raise MaskError(f"{len(rngs)} generators for {ocean.shape[0]} bands: pass one per band")
    n_ocean = count_per_band(ocean)
    if fraction == 0.0 or not n_ocean.any():
        return ocean.copy()
    if fraction == 1.0:
        return np.zeros_like(ocean)

    geometry = _geometry(ocean.shape[1], ocean.shape[2], side_min, side_max, False)
    target = np.rint(fraction * n_ocean).astype(np.int64)
    tolerance = np.floor(FRACTION_TOLERANCE * n_ocean).astype(np.int64)
    bulk = np.array([geometry.bulk_count(n, t) for n, t in zip(n_ocean, target, strict=True)])
    hidden = geometry.paint(rngs, bulk)
    for _ in range(_MAX_ROUNDS):
        n_hidden = count_per_band(hidden & ocean)
        over = n_hidden > target + tolerance
        if not over.any():
            break
        # a few % of draws: too many hidden; redraw those bands' bulk shorter (others keep their draws)
        bulk = np.where(over, (bulk * 0.9).astype(np.int64), 0)
        hidden[over] = geometry.paint(rngs, bulk)[over]
    else:
        raise MaskError(
            f"could not reach mask fraction {fraction} in {_MAX_ROUNDS} draws (shape {ocean.shape})"
        )
    for band in np.flatnonzero(n_hidden < target - tolerance):
        finish_exactly(rngs[band], geometry, hidden[band], ocean[band], int(target[band]))
    return ocean & ~hidden


def hidden_fraction(valid: np.ndarray, land_mask: np.ndarray) -> np.ndarray:
    """Share of ocean pixels that are hidden, per band (over the last two axes) — what the masks aim at."""
    valid = np.asarray(valid).astype(bool, copy=False)
    ocean = np.asarray(land_mask).astype(bool, copy=False)
    n_ocean = ocean.sum(axis=(-2, -1))
    return (ocean & ~valid).sum(axis=(-2, -1)) / np.maximum(n_ocean, 1)


def check_mask_arguments(fraction: float, side_min: int, side_max: int, shape: tuple[int, ...]) -> None:
    """Raise MaskError naming the config key when a mask request is impossible."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise MaskError(f"mask fraction {fraction} is outside [0, 1] (dataset.mask_fraction)")
    if not 1 <= int(side_min) <= int(side_max):
        raise MaskError(
            f"rectangle sides [{side_min}, {side_max}] are impossible: need 1 <= dataset.mask_patch_min "
            "<= dataset.mask_patch_max"
        )
    if len(shape) != 3:
        raise MaskError(f"land_mask must be (C, H, W); got shape {shape}")
    if 2 * max(shape[1:]) + 2 * side_max > _MAX_CANVAS_PX:
        raise MaskError(
            f"patches up to {_MAX_CANVAS_PX // 2 - side_max} px a side are supported; got {shape[1:]}"
        )


def _as_ocean(land_mask: np.ndarray) -> np.ndarray:
    return np.asarray(land_mask).astype(bool, copy=False)


@functools.lru_cache(maxsize=32)
def _geometry(height: int, width: int, side_min: int, side_max: int, torus: bool) -> _Geometry:
    return _Geometry(height, width, side_min, side_max, torus)


class _Geometry:
    """Where rectangles may go on one canvas, how to paint them, and their coverage statistics.

    ``torus=False``: a patch; top-left uniform over the padded range, rectangles clipped at the edges.
    ``torus=True``: a periodic canvas; top-left uniform over the canvas, rectangles wrap around.
    Both paint on a difference array with a margin of ``side_max - 1`` so that no clipping is needed while
    painting; the margin is cropped (patch) or folded back onto the opposite side (torus) afterwards.
    """

    def __init__(self, height: int, width: int, side_min: int, side_max: int, torus: bool):
        self.height, self.width, self.torus = height, width, torus
        self.side_min, self.side_max = side_min, side_max
        self.pad = side_max - 1
        lead = 0 if torus else self.pad  # margin before the patch on the canvas
        self.lead = lead
        self.rows = lead + height + self.pad + 1  # +1: the difference array's closing corner
        self.cols = lead + width + self.pad + 1
        sides = np.arange(side_min, side_max + 1, dtype=np.int32)  # int32 throughout: half the memory traffic
        self.n_sides = len(sides)
        class_h, class_w = (a.ravel() for a in np.meshgrid(sides, sides, indexing="ij"))
        self.class_h, self.class_w = class_h, class_w
        if torus:
            self.range_y, self.range_x = np.full_like(class_h, height), np.full_like(class_w, width)
            self.shift_y, self.shift_x = np.zeros_like(class_h), np.zeros_like(class_w)
        else:
            self.range_y, self.range_x = height + class_h - 1, width + class_w - 1
            self.shift_y, self.shift_x = class_h - 1, class_w - 1
        self.p_cover = float(np.mean(class_h * class_w / (self.range_y * self.range_x)))
        # rho(d) = E[(h - |d|)+] / E[h]: share of one rectangle's placements covering two pixels d apart
        lags = np.arange(side_max, dtype=np.float64)
        overlap = np.clip(sides[None, :] - lags[:, None], 0, None).mean(axis=1) / sides.mean()
        lag = np.concatenate([overlap[:0:-1], overlap])
        self.pair_overlap = np.outer(lag, lag)

    # ----- statistics
    def bulk_count(self, n_ocean: int, target_hidden: int) -> int:
        """Rectangles of the bulk draw: aim short of the target by two spreads, less the tolerance."""
        uncovered = n_ocean - target_hidden
        if uncovered <= 0:
            return 0
        spread = self.uncovered_spread(n_ocean, uncovered)
        aim = uncovered + max(0.0, 2.0 * spread - FRACTION_TOLERANCE * n_ocean)
        if aim >= n_ocean:
            return 0
        return int(math.log(aim / n_ocean) / math.log1p(-self.p_cover))

    def uncovered_spread(self, n_ocean: int, uncovered: float) -> float:
        """Std of the uncovered count of the Boolean model with uncovered share q (Poisson approximation).

        Cov(a, b uncovered) = q^2 (q^-rho(a-b) - 1); summing over a pixel's neighbourhood gives the variance
        per pixel. Edges are ignored, which makes it a little conservative.
        """
        q = uncovered / n_ocean
        per_pixel = float(np.sum(q * q * (q**-self.pair_overlap - 1.0)))
        return math.sqrt(max(n_ocean * per_pixel, 1.0))

    # ----- drawing and painting
    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """n rectangles in draw order: top, left (patch coordinates, may be < 0), height, width (int32)."""
        bits = rng.bit_generator.random_raw(n).view(np.uint16).reshape(n, 4).T.astype(np.int32, order="C")
        size_class = (bits[0] * len(self.class_h)) >> 16
        top = ((bits[1] * self.range_y[size_class]) >> 16) - self.shift_y[size_class]
        left = ((bits[2] * self.range_x[size_class]) >> 16) - self.shift_x[size_class]
        return top, left, self.class_h[size_class], self.class_w[size_class]

    def paint(self, rngs: Sequence[np.random.Generator], counts: Sequence[int]) -> np.ndarray:
        """Draw ``counts[b]`` rectangles from ``rngs[b]`` per band; covered pixels (C, H, W) bool."""
        band_size = self.rows * self.cols
        plus, minus = [], []
        for band, count in enumerate(counts):
            if count <= 0:
                continue
            top, left, h, w = self.draw(rngs[band], int(count))
            start = band * band_size + (top + self.lead) * self.cols + (left + self.lead)
            below, right = start + h * self.cols, start + w
            plus += [start, below + w]
            minus += [right, below]
        size = len(counts) * band_size
        if not plus:
            return np.zeros((len(counts), self.height, self.width), dtype=bool)
        diff = np.bincount(np.concatenate(plus), minlength=size) - np.bincount(
            np.concatenate(minus), minlength=size
        )
        # int16 wraps past 32767 rectangles on one pixel; the mean is ~4 at fraction 0.975, so it never does
        count = diff.astype(np.int16).reshape(len(counts), self.rows, self.cols)
        for band in torch.from_numpy(count):
            _prefix_sum_2d(band)
        covered = count > 0
        if self.torus:
            return self._fold(covered)
        lead = self.lead
        return covered[:, lead : lead + self.height, lead : lead + self.width]

    def _fold(self, covered: np.ndarray) -> np.ndarray:
        """Wrap the margin painted past the right/bottom edge back onto the left/top (periodic canvas)."""
        h, w, pad = self.height, self.width, self.pad
        covered[:, :pad, :] |= covered[:, h : h + pad, :]
        covered[:, :, :pad] |= covered[:, :, w : w + pad]
        return covered[:, :h, :w]

    def rectangle_pixels(self, top: np.ndarray, left: np.ndarray, h: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Flat pixel indices of the rectangles inside the patch, rectangle by rectangle (draw order)."""
        slot_y, slot_x = np.divmod(np.arange(self.side_max * self.side_max), self.side_max)
        ys = top[:, None] + slot_y[None, :]
        xs = left[:, None] + slot_x[None, :]
        inside = (slot_y[None, :] < h[:, None]) & (slot_x[None, :] < w[:, None])
        inside &= (ys >= 0) & (ys < self.height) & (xs >= 0) & (xs < self.width)
        return (ys * self.width + xs)[inside]


def _prefix_sum_2d(values: torch.Tensor) -> None:
    """2-D inclusive prefix sum in place (rows, then columns), in blocks of at most ``_GRAIN`` elements.

    torch's cumsum is 3-5x faster than numpy's; blocks below torch's intra-op threading grain keep every call
    single-threaded, as a call waiting on a second thread that a busy machine does not give it costs
    milliseconds instead of microseconds.
    """
    rows, cols = values.shape
    step = max(1, _GRAIN // cols)
    for start in range(0, rows, step):
        values[start : start + step].cumsum_(1)
    step = max(1, _GRAIN // rows)
    for start in range(0, cols, step):
        values[:, start : start + step].cumsum_(0)


def count_per_band(mask: np.ndarray) -> np.ndarray:
    """True pixels of each band of a (C, H, W) bool array (``count_nonzero`` per band: far faster than sum)."""
    return np.array([np.count_nonzero(band) for band in mask], dtype=np.int64)


def finish_exactly(
    rng: np.random.Generator, geometry: _Geometry, hidden: np.ndarray, ocean: np.ndarray, target: int
) -> None:
    """Add rectangles in draw order to ``hidden`` (H, W; in place) until exactly ``target`` ocean pixels are hidden.

    A pixel counts for the first new rectangle that covers it, and pixels are taken in that order: the result
    is the union of the first k new rectangles plus part of the (k+1)-th.
    """
    height, width = hidden.shape
    n_ocean = np.count_nonzero(ocean)
    for _ in range(_MAX_ROUNDS):
        open_px = ocean & ~hidden
        n_open = np.count_nonzero(open_px)
        missing = target - (n_ocean - n_open)
        if missing <= 0:
            return
        n_rect = int(min(1.5 * missing / max(n_open * geometry.p_cover, 1e-3) + 8, 200_000))
        pixels = geometry.rectangle_pixels(*geometry.draw(rng, n_rect))
        pixels = pixels[open_px.ravel()[pixels]]
        _, first = np.unique(pixels, return_index=True)  # first occurrence = first covering rectangle
        newly = pixels[np.sort(first)][:missing]
        hidden[newly // width, newly % width] = True
    raise MaskError(
        f"could not hide {target} ocean pixels of a {height}x{width} band in {_MAX_ROUNDS} rounds"
    )


class TorusMaskPool:
    """Training masks cut from a few pre-drawn periodic masks, each redrawn after a set number of uses.

    A torus of side ``2 * patch`` is covered by the same rectangle process as a patch (each pixel hidden with
    probability ``fraction``); a window of it at a random offset, in one of four orientations (as is,
    transposed, each upside down), is one band's mask. A torus serves ``reuse * torus_area / patch_area``
    windows before it is redrawn, so each of its pixels is used about ``reuse`` times, in different places
    and orientations, paired with different data: ``reuse`` trades mask variety for speed (a window costs
    ~1/``reuse`` of an exact draw).

    The C bands of a sample are one window (offset, orientation) of C consecutive tori of a stack: one array
    operation for all bands, and the bands stay independent because the tori are drawn independently of
    each other and of the offset. A band whose share of hidden ocean is not within ``FRACTION_TOLERANCE`` of
    the target gets another window of its own torus (the tolerance keeps ~96 % of 128x128 windows, and the
    choice is symmetric, so the mean share stays unbiased); after 8 misses (few ocean pixels) the exact
    finishing step or an exact draw decides. Not for fixed (validation/evaluation) masks: use
    :func:`make_band_masks`.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        height: int,
        width: int,
        fraction: float,
        side_min: int,
        side_max: int,
        reuse: int = 8,
        n_tori: int = 8,
    ):
        check_mask_arguments(fraction, side_min, side_max, (1, height, width))
        if reuse < 1 or n_tori < 1:
            raise MaskError(f"TorusMaskPool needs reuse >= 1 and n_tori >= 1 (got {reuse}, {n_tori})")
        self.rng, self.fraction = rng, float(fraction)
        self.height, self.width = height, width
        self.patch = _geometry(height, width, side_min, side_max, False)
        side = 2 * max(height, width, side_max)
        self.torus = _geometry(side, side, side_min, side_max, True)
        self.n_rect = self._torus_count()
        self.lifetime = max(1, int(reuse * side * side / (height * width)))
        self._grow(n_tori)

    def _torus_count(self) -> int:
        if self.fraction >= 1.0:
            return 0
        return round(math.log1p(-self.fraction) / math.log1p(-self.torus.p_cover))

    def _grow(self, n_tori: int) -> None:
        """(Re)build the stack with ``n_tori`` fresh tori.

        ``observed[o]`` (n_tori, side + H, side + W) holds each torus's observed (not hidden) map, wrap-padded
        so that every window is a plain slice, as is (o = 0) and transposed (o = 1): windows read from the
        transposed copy (and flipped upside down, a cheap view) give four orientations without the slow
        strided reads of a transposed or left-right flipped view.
        """
        side = self.torus.height
        self.observed = np.empty((2, n_tori, side + self.height, side + self.width), dtype=bool)
        self.uses = np.zeros(n_tori, dtype=np.int64)
        for torus in range(n_tori):
            self._draw_torus(torus)

    def _draw_torus(self, torus: int) -> None:
        observed = ~self.torus.paint([self.rng], [self.n_rect])[0]
        pad = ((0, self.height), (0, self.width))
        self.observed[0, torus] = np.pad(observed, pad, mode="wrap")
        self.observed[1, torus] = np.pad(np.ascontiguousarray(observed.T), pad, mode="wrap")
        self.uses[torus] = 0

    def masks(self, land_mask: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``valid`` (C, H, W) bool for the bands of one sample (independent windows, distinct tori), in
        ``out`` when given."""
        ocean = _as_ocean(land_mask)
        n_bands = ocean.shape[0]
        if ocean.shape[1:] != (self.height, self.width):
            raise MaskError(f"pool draws {self.height}x{self.width} masks; land_mask has shape {ocean.shape}")
        valid = np.empty_like(ocean) if out is None else out
        if self.fraction == 1.0:
            valid[...] = False
            return valid
        if n_bands > self.uses.size:
            self._grow(n_bands)
        first = int(self.rng.bit_generator.random_raw()) % (self.uses.size - n_bands + 1)
        tori = slice(first, first + n_bands)
        np.logical_and(ocean, self._window(tori), out=valid)
        for band in range(n_bands):
            n_ocean = np.count_nonzero(ocean[band])
            target = round(self.fraction * n_ocean)
            tolerance = math.floor(FRACTION_TOLERANCE * n_ocean)
            if abs(n_ocean - np.count_nonzero(valid[band]) - target) > tolerance:
                self._band_mask(ocean[band], first + band, target, tolerance, valid[band])
        return valid

    def _band_mask(self, ocean: np.ndarray, torus: int, target: int, tolerance: int, valid: np.ndarray) -> None:
        """Other windows of one torus until one hides a share within the tolerance; else finish or draw exactly."""
        n_ocean = np.count_nonzero(ocean)
        for _ in range(_WINDOW_TRIES - 1):
            np.logical_and(ocean, self._window(slice(torus, torus + 1))[0], out=valid)
            n_hidden = n_ocean - np.count_nonzero(valid)
            if abs(n_hidden - target) <= tolerance:
                return
        if n_hidden < target:  # too few hidden: add rectangles exactly as a fresh draw would
            hidden = ~valid
            finish_exactly(self.rng, self.patch, hidden, ocean, target)
            np.greater(ocean, hidden, out=valid)
        else:
            valid[...] = make_mask(self.rng, ocean, self.fraction, self.patch.side_min, self.patch.side_max)

    def _window(self, tori: slice) -> np.ndarray:
        """One random window (offset and orientation) of the observed maps of ``tori``, as a view (C, H, W);
        redraws worn-out tori first."""
        uses = self.uses[tori]
        if uses.max() >= self.lifetime:
            for torus in np.flatnonzero(uses >= self.lifetime):
                self._draw_torus(tori.start + int(torus))
        uses += 1
        bits = int(self.rng.bit_generator.random_raw())
        oy = ((bits & 0xFFFF) * self.torus.height) >> 16
        ox = (((bits >> 16) & 0xFFFF) * self.torus.width) >> 16
        transposed = (bits >> 32) & 1 and self.height == self.width
        window = self.observed[int(transposed), tori, oy : oy + self.height, ox : ox + self.width]
        return window[:, ::-1] if (bits >> 33) & 1 else window


# --------------------------------------------------------------------------- profiles
# Arrivals drawn per generator call. Fixed (never sized by the expected count) so that the generator's stream
# is consumed the same way at every density: a sample's profiles at a lower density are then the first ones
# of its profiles at a higher density (nested arrays), see profile_positions.
PROFILE_BLOCK = 64


def cell_area_deg2(lat0, lat1, lon0, lon1, size) -> np.ndarray:
    """Area of one grid cell of each patch in (1°)², i.e. in square degrees at the equator.

    The index gives the coordinates of a patch's first and last row and column (cell centres, in the file's
    order: latitude may descend, longitude may cross the dateline), so a cell spans
    ``|lat1 - lat0| / (size - 1)`` by the shorter way round of ``lon1 - lon0`` over ``size - 1``. A box of
    1° x 1° at latitude phi covers ``cos(phi)`` of one equatorial (1°)²; the cosine of the patch's mean
    latitude stands for the whole patch (the mean cosine over rows differs by the factor ``sin(h) / h``, h the
    half-height in radians: 0.01 % for a 2.7° patch of 32 px, 0.14 % for 128 px).

    Args:
        lat0, lat1: (N,) or scalar latitudes (°N) of the first and last row.
        lon0, lon1: (N,) or scalar longitudes (°E) of the first and last column.
        size: (N,) or scalar patch side in pixels; a 1 px patch has no extent to measure and gets area 0.

    Returns:
        (N,) float64 cell areas in (1°)² (a 0-d array for scalar inputs).
    """
    lat0, lat1, lon0, lon1 = (np.asarray(v, dtype=np.float64) for v in (lat0, lat1, lon0, lon1))
    steps = np.asarray(size, dtype=np.float64) - 1.0
    span_lon = np.mod(lon1 - lon0, 360.0)
    span_lon = np.minimum(span_lon, 360.0 - span_lon)
    with np.errstate(divide="ignore", invalid="ignore"):
        area = np.abs(lat1 - lat0) * span_lon / (steps * steps) * np.cos(np.radians((lat0 + lat1) / 2.0))
    return np.where(steps > 0, np.maximum(area, 0.0), 0.0)


def profile_positions(rng: np.random.Generator, n_columns: int, mean_count: float) -> np.ndarray:
    """Columns hit by profiles: a Poisson number (mean ``mean_count``) of uniform picks among ``n_columns``.

    Drawn as the arrivals of a unit-rate Poisson process, kept while their arrival time is below
    ``mean_count``: the count is Poisson(``mean_count``) and, for one generator state, the picks at a smaller
    mean are the first picks at a larger one. Two profiles may hit the same column (one observation).

    Args:
        rng: the generator (consumed in blocks of ``PROFILE_BLOCK`` arrivals).
        n_columns: number of candidate columns (>= 0).
        mean_count: expected number of profiles (>= 0).

    Returns:
        (k,) int64 indices into the candidate columns, in arrival order; empty when either argument is 0.

    Raises:
        MaskError: ``mean_count`` is negative or not finite.
    """
    if not math.isfinite(mean_count) or mean_count < 0:
        raise MaskError(f"the expected number of profiles must be finite and >= 0; got {mean_count}")
    picks = [np.zeros(0, dtype=np.int64)]
    if n_columns <= 0 or mean_count == 0:
        return picks[0]
    start = 0.0
    while True:
        times = start + np.cumsum(rng.standard_exponential(PROFILE_BLOCK))
        where = rng.random(PROFILE_BLOCK)
        kept = int(np.searchsorted(times, mean_count))  # arrival times increase
        picks.append(np.minimum((where[:kept] * n_columns).astype(np.int64), n_columns - 1))
        if kept < PROFILE_BLOCK:
            return np.concatenate(picks)
        start = float(times[-1])


def make_profile_masks(
    rng: np.random.Generator,
    columns: np.ndarray,
    land_mask: np.ndarray,
    profiles_per_deg2: float,
    cell_area: float,
) -> np.ndarray:
    """Observed pixels of a sample seen by vertical profiles: ``valid`` (C, H, W) bool.

    Profiles land uniformly on the candidate ``columns`` (the patch's ocean surface), their number Poisson
    with mean ``profiles_per_deg2 * cell_area * (number of columns)``; a profile observes its column at every
    band where that column is ocean, so all bands share one set of positions. One generator draws the whole
    sample (fixed masks: :func:`mask_rng` with one stream per sample); see :func:`profile_positions` for why
    the positions at a lower density are a subset of those at a higher one.

    Args:
        rng: the generator of this sample's profiles.
        columns: (H, W) bool, True where a profile may be (ocean at some level).
        land_mask: (C, H, W) bool/0-1, True on ocean at each band (the sample's ``land_mask``).
        profiles_per_deg2: profiles per (1°)² of ocean over the period a patch stands for (a month).
        cell_area: area of one pixel in (1°)² (:func:`cell_area_deg2`).

    Returns:
        (C, H, W) bool, True where observed; possibly all False (a patch no profile reached).

    Raises:
        MaskError: wrong shapes, or a negative or non-finite density or area.
    """
    ocean = _as_ocean(land_mask)
    columns = np.asarray(columns).astype(bool, copy=False)
    if ocean.ndim != 3 or columns.shape != ocean.shape[1:]:
        raise MaskError(f"profiles need columns (H, W) and land_mask (C, H, W); got {columns.shape}, "
                        f"{ocean.shape}")
    for name, value, source in (("profile density", profiles_per_deg2, "dataset.profiles_per_deg2_month"),
                                ("cell area", cell_area, "the patch's lat0/lat1/lon0/lon1 in the index")):
        if not math.isfinite(value) or value < 0:
            raise MaskError(f"the {name} must be finite and >= 0; got {value} (from {source})")
    candidates = np.flatnonzero(columns)
    mean_count = profiles_per_deg2 * cell_area * candidates.size
    picks = candidates[profile_positions(rng, candidates.size, mean_count)]
    observed = np.zeros(columns.size, dtype=bool)
    observed[picks] = True
    return ocean & observed.reshape(columns.shape)
