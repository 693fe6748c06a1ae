"""A synthetic, GLORYS12-like ocean: monthly files that look and read exactly like the real ones.

Why this exists: the default config runs the whole DAG offline, so it needs an ocean whose
reconstruction problem resembles the real one.  A Gaussian random field would not do: for Gaussian
fields optimal interpolation is the Bayes-optimal estimator, so no learned model could ever beat it and
the evaluation would be pointless (docs/synthetic-ocean.md).  This ocean is
built from coherent structures instead, on top of an analytic climatology:

* large scale: an annual-mean profile (thermocline, ~2 °C at 2000 m), SST falling with latitude, a
  coastal upwelling band, a meandering tanh front, a seasonal cycle and slow interannual swings, each
  with its own weight as a function of depth;
* mesoscale: three populations of coherent eddies (surface-intensified, thermocline lenses, deep
  eddies) that are born, drift westward and die on a continuous time axis, plus filaments made by
  stirring the large-scale surface pattern with the surface eddies' velocity field;
* land: a continent on the east side with a shelf and slope, and seamount islands, so that land grows
  with depth.

Every random draw comes from ``(seed, what, time block)`` and every month is evaluated at its own
mid-month time, so a month never depends on which other months were generated.  Vertical weights are
calibrated so that the mesoscale statistics (anomaly std, correlation with the surface, e-folding
length, month-to-month persistence, heavy-tailed gradients) fall near those of the real GLORYS12
sample in tests/data/glorys12_nwmexico; docs/synthetic-ocean.md lists measured values.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

from depthdif import glorys
from depthdif.atomic import atomic_path
from depthdif.config import ConfigError

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2"
KM_PER_DEG_LAT = 111.32
TIME_UNITS = "hours since 1950-01-01"
TIME_EPOCH = dt.date(1950, 1, 1)
DEPTHS_M = np.asarray(glorys.DEPTH_LEVELS_M)
ZOS_SCALE_FACTOR = 0.000305185094475746  # as in the real files
ZOS_REFERENCE_M = 0.2
STERIC_DEPTH_M = 1000.0
STERIC_SALINITY_G_KG = 35.0  # Absolute Salinity of the steric integral (the ocean here has no salinity field)
# sea level that temperature does not explain (barotropic flow, salinity, tides of a monthly mean): one smooth
# large-scale part and one mesoscale part, independent of the temperature; their sizes are calibrated (with
# _W_COMPENSATION) on the real sample's zos statistics (docs/synthetic-ocean.md)
ZOS_LARGE_SCALE_M, ZOS_LARGE_SCALE_PX = 0.05, 30.0
ZOS_MESOSCALE_M, ZOS_MESOSCALE_PX = 0.018, 4.0
T_MIN_C, T_MAX_C = -1.9, 34.0  # sea water freezes at about -1.9 °C
MIN_CELLS = 16  # per side: the evaluation's 10-px large-scale filter needs room
MAX_CELLS = 1_000_000  # per level: 50 float64 levels of this fill 400 MB, and a few are held at once


# --------------------------------------------------------------------------------------- profiles
def _profile(depth_m: list[float], values: list[float]) -> PchipInterpolator:
    """A shape-preserving (no overshoot) interpolant in log depth, flat beyond the anchors."""
    return PchipInterpolator(np.log(depth_m), values, extrapolate=False)


def _eval_profile(profile: PchipInterpolator, depth_m: np.ndarray) -> np.ndarray:
    """Values at ``depth_m``, held constant above the first and below the last anchor."""
    x = np.log(np.clip(depth_m, 1e-3, None))
    lo, hi = profile.x[0], profile.x[-1]
    return profile(np.clip(x, lo, hi))


# Anchor depths: the five levels of the real sample, the mixed-layer base, the thermocline, the abyss.
_Z = [0.494, 9.573, 18.5, 29.445, 55.8, 92.326, 155.9, 318.13, 541.1, 1062.4, 2225.1, 5727.9]

# Annual-mean temperature (°C) at the reference latitude, 25°N: thermocline, ~2 °C below 2000 m.
REFERENCE_LATITUDE = 25.0
_T_REFERENCE = _profile(_Z, [21.0, 20.95, 20.85, 20.45, 17.4, 14.1, 11.9, 9.1, 6.6, 4.3, 2.2, 1.5])

# Weight with depth of each large-scale horizontal pattern (1 = as at the surface).
_W_LATITUDE = _profile(_Z, [1.0, 1.0, 0.98, 0.94, 0.75, 0.55, 0.42, 0.25, 0.14, 0.06, 0.0, 0.0])
_W_SEASON = _profile(_Z, [1.0, 1.0, 0.97, 0.85, 0.5, 0.25, 0.12, 0.04, 0.01, 0.0, 0.0, 0.0])
_W_UPWELLING = _profile(_Z, [1.0, 1.0, 1.0, 0.95, 0.7, 0.4, 0.25, 0.1, 0.03, 0.0, 0.0, 0.0])
_W_FRONT = _profile(_Z, [1.0, 1.0, 1.0, 0.95, 0.7, 0.45, 0.25, 0.08, 0.0, 0.0, 0.0, 0.0])
_W_TILT = _profile(_Z, [0.0, 0.0, 0.05, 0.25, 0.7, 1.0, 0.7, 0.15, 0.05, 0.0, 0.0, 0.0])
_W_INTERANNUAL = _profile(_Z, [1.0, 1.0, 1.0, 1.05, 1.15, 1.2, 0.9, 0.4, 0.15, 0.05, 0.0, 0.0])
# Filaments stirred from the surface pattern: surface-trapped, strongest at the mixed-layer base.
# share of a temperature anomaly whose density is compensated by salinity (spice): below the thermocline T-S
# anomalies lie mostly along isopycnals, and mixed-layer fronts are often compensated too, so they raise sea
# level less than their temperature alone would
_W_COMPENSATION = _profile(_Z, [0.6, 0.6, 0.5, 0.35, 0.1, 0.0, 0.3, 0.9, 0.95, 0.95, 0.95, 0.95])
_W_STIRRED = _profile(_Z, [0.7, 0.7, 0.75, 0.95, 0.65, 0.25, 0.08, 0.02, 0.0, 0.0, 0.0, 0.0])


# --------------------------------------------------------------------------------------- eddies
@dataclass(frozen=True)
class EddyPopulation:
    """How one kind of coherent eddy is born, looks, moves and reaches down."""

    name: str
    share: float  # mean number alive per reference area, as a fraction of source.synthetic.n_eddies
    radius_km: tuple[float, float]  # log-uniform
    amplitude_c: tuple[float, float]  # |core anomaly| at the profile's maximum, uniform
    warm_fraction: float  # probability of a warm core (sign of the anomaly)
    lifetime_days: tuple[float, float]  # uniform
    drift_west_km_day: tuple[float, float]  # uniform westward drift
    drift_north_sd_km_day: float  # meridional drift, normal
    shape_power: tuple[float, float]  # 2 = Gaussian; larger = flat core with a sharp rim (a front)
    profile: PchipInterpolator  # vertical structure of the core anomaly
    depth_stretch: tuple[float, float]  # per-eddy log-uniform stretch of the profile in depth
    swirl_km_day_per_c: float  # peak swirl speed per °C, for stirring (0 = not used)


POPULATIONS = (
    EddyPopulation(
        name="surface",
        share=1.0,
        radius_km=(30.0, 85.0),
        amplitude_c=(0.6, 2.0),
        warm_fraction=0.5,
        lifetime_days=(60.0, 300.0),
        drift_west_km_day=(0.5, 2.0),
        drift_north_sd_km_day=0.4,
        shape_power=(2.0, 5.0),
        profile=_profile(_Z, [1.0, 1.0, 1.05, 1.2, 0.9, 0.4, 0.2, 0.05, 0.01, 0.0, 0.0, 0.0]),
        depth_stretch=(0.6, 1.6),
        swirl_km_day_per_c=18.0,
    ),
    EddyPopulation(
        name="thermocline",
        share=1.2,
        radius_km=(25.0, 70.0),
        amplitude_c=(1.1, 3.8),
        warm_fraction=0.65,  # warm anticyclonic lenses dominate at the thermocline (as the real skew)
        lifetime_days=(60.0, 300.0),
        drift_west_km_day=(0.6, 2.0),
        drift_north_sd_km_day=0.4,
        shape_power=(2.0, 4.0),
        profile=_profile(_Z, [0.0, 0.0, 0.05, 0.3, 1.0, 0.5, 0.15, 0.03, 0.0, 0.0, 0.0, 0.0]),
        depth_stretch=(0.45, 2.2),
        swirl_km_day_per_c=0.0,
    ),
    EddyPopulation(
        name="deep",
        share=1.2,
        radius_km=(25.0, 65.0),
        amplitude_c=(0.4, 1.35),
        warm_fraction=0.55,
        lifetime_days=(90.0, 300.0),
        drift_west_km_day=(0.8, 2.0),
        drift_north_sd_km_day=0.3,
        shape_power=(2.0, 3.0),
        profile=_profile(_Z, [0.0, 0.0, 0.0, 0.0, 0.05, 0.15, 0.5, 1.0, 0.8, 0.3, 0.05, 0.0]),
        depth_stretch=(0.7, 1.4),
        swirl_km_day_per_c=0.0,
    ),
)
# n_eddies is a density: surface eddies alive in an area the size of the default region (15 x 10 degrees
# at 25N), so a larger region gets more eddies and the same statistics.
EDDY_REFERENCE_AREA_KM2 = 1.6846e6
BLOCK_DAYS = 120.0  # eddies are drawn per block of birth times, so any month finds its eddies alone
STIRRING_DAYS = 12.0
STIRRING_STEPS = 20
STIRRING_SMOOTHING_PX = 0.5


@dataclass(frozen=True)
class Eddies:
    """The eddies of one population alive at one time (arrays of equal length)."""

    x_km: np.ndarray
    y_km: np.ndarray
    radius_km: np.ndarray
    amplitude_c: np.ndarray  # signed, already multiplied by the life-cycle envelope
    power: np.ndarray
    stretch: np.ndarray


# --------------------------------------------------------------------------------------- grid
@dataclass(frozen=True)
class Grid:
    """A regular lat/lon grid and a local flat projection (km east/north of the south-west corner)."""

    lat: np.ndarray  # (ny,) ascending
    lon: np.ndarray  # (nx,) ascending, -180..180
    dx_km: float
    dy_km: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.lat.size, self.lon.size

    @property
    def width_km(self) -> float:
        return self.lon.size * self.dx_km

    @property
    def height_km(self) -> float:
        return self.lat.size * self.dy_km

    def km(self, pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(x_km (1, nx), y_km (ny, 1)) of cell centres, padded by ``pad`` cells a side; they broadcast."""
        ny, nx = self.shape
        x = np.arange(-pad, nx + pad) * self.dx_km
        y = np.arange(-pad, ny + pad) * self.dy_km
        return x[None, :], y[:, None]


def _settings(config: dict) -> dict:
    """The source.synthetic section of a full, validated config."""
    try:
        return config["source"]["synthetic"]
    except (KeyError, TypeError):
        raise ConfigError(
            "config has no source.synthetic section: pass the full config from depthdif.config.load_config"
        ) from None


def make_grid(config: dict) -> Grid:
    """The grid of source.synthetic.region at source.synthetic.resolution_deg, aligned like GLORYS12."""
    syn = _settings(config)
    region, res = syn["region"], float(syn["resolution_deg"])
    lon_min, lon_max = (((v + 180.0) % 360.0) - 180.0 for v in (region["lon_min"], region["lon_max"]))
    if lon_max <= lon_min:
        raise ConfigError(
            f"source.synthetic.region: lon_min {region['lon_min']} must be west of lon_max {region['lon_max']} "
            "in -180..180 (a region across the antimeridian is not supported)"
        )
    if region["lat_max"] <= region["lat_min"]:
        raise ConfigError(
            f"source.synthetic.region: lat_min {region['lat_min']} must be below lat_max {region['lat_max']}"
        )
    ny = round((region["lat_max"] - region["lat_min"]) / res)
    nx = round((lon_max - lon_min) / res)
    if min(ny, nx) < MIN_CELLS or ny * nx > MAX_CELLS:
        raise ConfigError(
            f"source.synthetic.region/resolution_deg give a {ny} x {nx} grid; need at least {MIN_CELLS} cells "
            f"a side and at most {MAX_CELLS} cells: change the region or the resolution"
        )
    lat = (region["lat_min"] + res * np.arange(ny)).astype(np.float32)
    lon = (lon_min + res * np.arange(nx)).astype(np.float32)
    lat_mid = np.deg2rad(0.5 * (region["lat_min"] + region["lat_max"]))
    return Grid(
        lat=lat, lon=lon, dx_km=res * KM_PER_DEG_LAT * float(np.cos(lat_mid)), dy_km=res * KM_PER_DEG_LAT
    )


# --------------------------------------------------------------------------------------- randomness
def _rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator for one named draw: independent of every other draw and of call order."""
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, *keys])


_KEY_COAST, _KEY_ISLANDS, _KEY_FRONT, _KEY_INTERANNUAL, _KEY_EDDIES, _KEY_SEA_LEVEL = 1, 2, 3, 4, 5, 6


def _fourier_series(
    rng: np.random.Generator, n_modes: int, length_km: float, rms_km: float, slope: float
) -> Callable[[np.ndarray], np.ndarray]:
    """A random smooth 1-D function (sum of sines, amplitude ~ k^-slope) with the given rms."""
    k = np.arange(1, n_modes + 1)
    amp = k ** (-slope)
    amp *= rms_km * np.sqrt(2.0) / np.sqrt(np.sum(amp**2))
    phase = rng.uniform(0, 2 * np.pi, n_modes)

    def series(s: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * np.multiply.outer(s, k) / length_km + phase
        return np.sum(amp * np.sin(arg), axis=-1)

    return series


# --------------------------------------------------------------------------------------- land
@dataclass(frozen=True)
class Coast:
    """A continent to the east: where the coastline runs and how wide its shelf is."""

    x_of_y: Callable[[np.ndarray], np.ndarray]  # y_km -> x_km of the coastline
    shelf_km: Callable[[np.ndarray], np.ndarray]  # y_km -> shelf width (km)

    def offshore_km(self, x_km: np.ndarray, y_km: np.ndarray) -> np.ndarray:
        """Distance west of the coastline (km), negative on land."""
        return self.x_of_y(y_km) - x_km


def make_coast(grid: Grid, seed: int) -> Coast:
    """A meandering coastline taking 28-40 % of the width, tilted like Baja California or running N-S."""
    rng = _rng(seed, _KEY_COAST)
    land_fraction = rng.uniform(0.28, 0.40)
    base = grid.width_km * (1.0 - land_fraction)
    tilt = rng.uniform(-0.35, 0.15)  # a coast running NW-SE like Baja California, or N-S
    meander = _fourier_series(rng, 32, 2.5 * grid.height_km, rms_km=0.05 * grid.width_km + 30.0, slope=0.9)
    shelf = _fourier_series(rng, 6, 2.0 * grid.height_km, rms_km=20.0, slope=1.0)
    mid = 0.5 * grid.height_km

    def x_of_y(y: np.ndarray) -> np.ndarray:
        return base + tilt * (y - mid) + meander(y)

    def shelf_km(y: np.ndarray) -> np.ndarray:
        return np.clip(50.0 + shelf(y), 15.0, 120.0)

    return Coast(x_of_y=x_of_y, shelf_km=shelf_km)


SHELF_BREAK_M = 150.0
ABYSS_M = 3600.0  # at the foot of the slope; the abyssal plain deepens offshore
ABYSS_DEEPENING_M_PER_KM = 0.8
ISLAND_FLANK_M = 8000.0  # deeper than any floor, so far from the island the regional floor wins
SLOPE_KM = 90.0


def sea_floor_depth(grid: Grid, seed: int, n_islands: int, coast: Coast | None = None) -> np.ndarray:
    """Depth of the sea floor (m, positive down, <= 0 on land): shelf, slope, abyss and islands."""
    coast = coast or make_coast(grid, seed)
    x, y = grid.km()
    d = coast.offshore_km(x, y)
    shelf = coast.shelf_km(y)
    on_shelf = 2.0 + (SHELF_BREAK_M - 2.0) * np.clip(d, 0, None) / shelf
    abyss = ABYSS_M + ABYSS_DEEPENING_M_PER_KM * np.clip(d, 0.0, 2000.0)
    off_shelf = SHELF_BREAK_M + (abyss - SHELF_BREAK_M) * (
        1 - np.exp(-np.clip(d - shelf, 0, None) / SLOPE_KM)
    )
    depth = np.where(d < 0, -10.0, np.where(d < shelf, on_shelf, off_shelf))
    rng = _rng(seed, _KEY_ISLANDS)
    for _ in range(n_islands):
        depth = np.minimum(depth, _island_depth(rng, grid, coast, x, y))
    return depth


def _island_depth(
    rng: np.random.Generator, grid: Grid, coast: Coast, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """An island of radius R (a cone above sea level) on a bank that deepens outward to the abyss."""
    yc = rng.uniform(0.1, 0.9) * grid.height_km
    xc = rng.uniform(0.08, 0.9) * max(float(coast.x_of_y(np.asarray(yc))) - 80.0, 50.0)
    radius = rng.uniform(8.0, 22.0)
    height = rng.uniform(50.0, 600.0)
    bank_km = rng.uniform(20.0, 60.0)
    r = np.hypot(x - xc, y - yc)
    above = -height * (1.0 - r / radius)
    below = 2.0 + ISLAND_FLANK_M * (
        1.0 - np.exp(-np.clip(r - radius, 0, None) / bank_km)
    )  # min() with the floor
    return np.where(r < radius, above, below)


def ocean_mask(sea_floor_m: np.ndarray, depths_m: np.ndarray = DEPTHS_M) -> np.ndarray:
    """(depth, y, x) True where the level lies above the sea floor."""
    return depths_m[:, None, None] < sea_floor_m[None]


# --------------------------------------------------------------------------------------- time
def mid_month(year: int, month: int) -> dt.date:
    """Time stamp of a monthly file: the 15th (as depthdif.glorys.date_of_file assumes)."""
    return dt.date(year, month, 15)


def days_since_epoch(year: int, month: int) -> float:
    """The continuous time axis every moving thing is evaluated on (days since 1950-01-01)."""
    return float((mid_month(year, month) - TIME_EPOCH).days)


# --------------------------------------------------------------------------------------- large scale
def sst_of_latitude(lat_deg: np.ndarray) -> np.ndarray:
    """Annual-mean SST (°C): warm tropics, a steep subtropical fall (~0.75 °C/deg at 25°N)."""
    return 3.0 + 12.75 * (1.0 - np.tanh((np.abs(lat_deg) - 32.0) / 13.0))


SEASON_PEAK_DAY = 245.0  # SST peaks in early September in the subtropical north
UPWELLING_C = -2.0
UPWELLING_WIDTH_KM = 90.0  # cold band along the coast ...
UPWELLING_EDGE_KM = 30.0  # ... ending in a tanh front this wide
FRONT_C = 1.2
FRONT_WIDTH_KM = 15.0
TILT_C_PER_100KM = 0.35
TILT_MAX_KM = 1200.0


@dataclass(frozen=True)
class LargeScale:
    """The large-scale horizontal patterns, analytic in (x_km, y_km) so they can be read anywhere."""

    grid: Grid
    coast: Coast
    front_y_of_x: Callable[[np.ndarray], np.ndarray]  # x_km -> y_km of the front's axis

    def latitude(self, y_km: np.ndarray) -> np.ndarray:
        lat = self.grid.lat[0] + y_km / KM_PER_DEG_LAT
        return sst_of_latitude(lat) - sst_of_latitude(np.asarray(REFERENCE_LATITUDE))

    def upwelling(self, x_km: np.ndarray, y_km: np.ndarray) -> np.ndarray:
        d = self.coast.offshore_km(x_km, y_km)
        return UPWELLING_C * 0.5 * (1.0 - np.tanh((d - UPWELLING_WIDTH_KM) / UPWELLING_EDGE_KM))

    def front(self, x_km: np.ndarray, y_km: np.ndarray) -> np.ndarray:
        return FRONT_C * 0.5 * np.tanh((y_km - self.front_y_of_x(x_km)) / FRONT_WIDTH_KM)

    def thermocline_tilt(self, x_km: np.ndarray, y_km: np.ndarray) -> np.ndarray:
        """The thermocline deepens offshore (warmer at ~100 m): a pattern the surface does not show."""
        d = np.clip(self.coast.offshore_km(x_km, y_km), 0.0, TILT_MAX_KM)
        return TILT_C_PER_100KM * (d - 0.5 * TILT_MAX_KM) / 100.0

    def surface(self, x_km: np.ndarray, y_km: np.ndarray) -> np.ndarray:
        """What the eddies stir: every pattern seen at the surface."""
        return self.latitude(y_km) + self.upwelling(x_km, y_km) + self.front(x_km, y_km)


def make_large_scale(grid: Grid, seed: int, coast: Coast, t_days: float) -> LargeScale:
    """Large-scale patterns of one month: the front is placed by the seed and migrates with the season."""
    rng = _rng(seed, _KEY_FRONT)
    y0 = rng.uniform(0.35, 0.65) * grid.height_km
    meander = _fourier_series(rng, 8, 2.0 * grid.width_km, rms_km=35.0, slope=0.8)
    seasonal = 60.0 * np.sin(2 * np.pi * (t_days - SEASON_PEAK_DAY) / 365.25)

    def front_y_of_x(x: np.ndarray) -> np.ndarray:
        return y0 + seasonal + meander(x)

    return LargeScale(grid=grid, coast=coast, front_y_of_x=front_y_of_x)


def seasonal_anomaly(lat_deg: float, t_days: float) -> float:
    """Surface seasonal anomaly (°C): amplitude growing with latitude, peak in late summer."""
    amplitude = 1.0 + 0.1 * min(abs(lat_deg), 45.0)
    sign = 1.0 if lat_deg >= 0 else -1.0  # seasons are reversed south of the equator
    return sign * amplitude * float(np.cos(2 * np.pi * (t_days - SEASON_PEAK_DAY) / 365.25))


def interannual_anomaly(seed: int, t_days: float) -> float:
    """Slow, ENSO-like swings (°C, std ~0.35): a few random sines with 2-7 year periods."""
    rng = _rng(seed, _KEY_INTERANNUAL)
    periods = rng.uniform(2.0, 7.0, 3) * 365.25
    phases = rng.uniform(0, 2 * np.pi, 3)
    amps = rng.uniform(0.15, 0.35, 3)
    return float(np.sum(amps * np.sin(2 * np.pi * t_days / periods + phases)))


# --------------------------------------------------------------------------------------- eddy fields
def eddies_alive(pop_index: int, config: dict, grid: Grid, t_days: float) -> Eddies:
    """The eddies of one population alive at ``t_days``, drawn per birth block from (seed, block).

    Births are uniform over the region widened by the eddies' reach and, to the east, by how far they
    drift in a lifetime, at a rate that keeps on average ``share * n_eddies`` alive per area of the
    default region (EDDY_REFERENCE_AREA_KM2).
    """
    syn = _settings(config)
    pop = POPULATIONS[pop_index]
    mean_life = 0.5 * sum(pop.lifetime_days)
    margin = 3.0 * pop.radius_km[1]
    x_lo, x_hi = -margin, grid.width_km + margin + pop.drift_west_km_day[1] * pop.lifetime_days[1]
    y_spread = 2.5 * pop.drift_north_sd_km_day * pop.lifetime_days[1]
    y_lo, y_hi = -margin - y_spread, grid.height_km + margin + y_spread
    density = pop.share * syn["n_eddies"] / (EDDY_REFERENCE_AREA_KM2 * mean_life)  # births per km^2 per day
    births_per_block = density * (x_hi - x_lo) * (y_hi - y_lo) * BLOCK_DAYS
    first = int(np.floor((t_days - pop.lifetime_days[1]) / BLOCK_DAYS))
    last = int(np.floor(t_days / BLOCK_DAYS))
    blocks = [
        _draw_block(
            pop,
            _rng(syn["seed"], _KEY_EDDIES, pop_index, block + 1_000_000),
            block,
            births_per_block,
            (x_lo, x_hi, y_lo, y_hi),
        )
        for block in range(first, last + 1)
    ]
    d = {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}
    age = t_days - d["born"]
    alive = (age >= 0) & (age < d["life"])
    age, d = age[alive], {key: value[alive] for key, value in d.items()}
    envelope = np.sqrt(np.sin(np.pi * age / d["life"]))  # grows and decays smoothly over its life
    return Eddies(
        x_km=d["x"] + d["u"] * age,
        y_km=d["y"] + d["v"] * age,
        radius_km=d["radius"],
        amplitude_c=d["amp"] * envelope,
        power=d["power"],
        stretch=d["stretch"],
    )


def _draw_block(
    pop: EddyPopulation, rng: np.random.Generator, block: int, mean_births: float, box: tuple[float, ...]
) -> dict[str, np.ndarray]:
    """Every property of the eddies born in one block of time (a fixed order of draws: reproducible)."""
    x_lo, x_hi, y_lo, y_hi = box
    n = rng.poisson(mean_births)
    sign = np.where(rng.uniform(0, 1, n) < pop.warm_fraction, 1.0, -1.0)
    return {
        "born": (block + rng.uniform(0, 1, n)) * BLOCK_DAYS,
        "life": rng.uniform(*pop.lifetime_days, n),
        "x": rng.uniform(x_lo, x_hi, n),
        "y": rng.uniform(y_lo, y_hi, n),
        "u": -rng.uniform(*pop.drift_west_km_day, n),
        "v": rng.normal(0.0, pop.drift_north_sd_km_day, n),
        "radius": np.exp(rng.uniform(*np.log(pop.radius_km), n)),
        "amp": rng.uniform(*pop.amplitude_c, n) * sign,
        "power": rng.uniform(*pop.shape_power, n),
        "stretch": np.exp(rng.uniform(*np.log(pop.depth_stretch), n)),
    }


def render_eddies(
    pop: EddyPopulation, eddies: Eddies, x_km: np.ndarray, y_km: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(temperature (depth, ny, nx), streamfunction (ny, nx) in km^2/day) of one population.

    Each eddy is a unit-peak shape exp(-(r/R)^p / p) (Gaussian for p=2, a flat core with a sharp rim
    for larger p) times its signed amplitude times its own stretched vertical profile.  Shapes are
    evaluated only in a box where they exceed 1e-3, which keeps a month well under a second.
    """
    x, y = x_km.ravel(), y_km.ravel()
    temp = np.zeros((DEPTHS_M.size, y.size, x.size))
    psi = np.zeros((y.size, x.size))
    vertical = np.nan_to_num(_eval_profile(pop.profile, DEPTHS_M[:, None] / eddies.stretch[None, :]))
    reached = np.nonzero(np.any(vertical != 0.0, axis=1))[0]
    if reached.size == 0:
        return temp, psi
    levels = slice(reached[0], reached[-1] + 1)
    cutoff = eddies.radius_km * (np.log(1e3) * eddies.power) ** (1.0 / eddies.power)
    swirl = pop.swirl_km_day_per_c * eddies.amplitude_c * eddies.radius_km * np.exp(0.5)
    for i in range(eddies.x_km.size):
        rows = slice(*np.searchsorted(y, [eddies.y_km[i] - cutoff[i], eddies.y_km[i] + cutoff[i]]))
        cols = slice(*np.searchsorted(x, [eddies.x_km[i] - cutoff[i], eddies.x_km[i] + cutoff[i]]))
        if rows.start == rows.stop or cols.start == cols.stop:
            continue
        r2 = (
            (y[rows, None] - eddies.y_km[i]) ** 2 + (x[None, cols] - eddies.x_km[i]) ** 2
        ) / eddies.radius_km[i] ** 2
        shape = np.exp(-(r2 ** (0.5 * eddies.power[i])) / eddies.power[i])
        temp[levels, rows, cols] += (vertical[levels, i] * eddies.amplitude_c[i])[:, None, None] * shape
        if swirl[i]:
            # a Gaussian streamfunction: near solid-body cores that do not wind filaments below a cell
            psi[rows, cols] += swirl[i] * np.exp(-0.5 * r2)
    return temp, psi


# --------------------------------------------------------------------------------------- stirring
def stirred_anomaly(
    pattern: LargeScale, grid: Grid, streamfunction: np.ndarray, pad: int, hemisphere: float
) -> np.ndarray:
    """Surface pattern carried along backward trajectories minus the pattern itself: filaments.

    ``streamfunction`` (km^2/day, on the grid padded by ``pad`` cells) is proportional to the eddies'
    sea-level bump, so geostrophy gives u = -dpsi/dy, v = dpsi/dx in the north (sign flipped in the
    south): warm cores are anticyclones, clockwise in the north.  Trajectories are integrated backward
    with a midpoint scheme in pixel units and the analytic pattern is read at the departure points, so
    no numerical diffusion blurs the filaments.
    """
    dpsi_dy, dpsi_dx = np.gradient(hemisphere * streamfunction, grid.dy_km, grid.dx_km)
    u_px, v_px = -dpsi_dy / grid.dx_km, dpsi_dx / grid.dy_km  # px/day
    ny, nx = grid.shape
    row, col = np.meshgrid(np.arange(ny, dtype=float) + pad, np.arange(nx, dtype=float) + pad, indexing="ij")
    step = STIRRING_DAYS / STIRRING_STEPS

    def velocity(r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coords = np.stack([r, c])
        return (
            ndimage.map_coordinates(u_px, coords, order=1, mode="nearest"),
            ndimage.map_coordinates(v_px, coords, order=1, mode="nearest"),
        )

    r, c = row, col
    for _ in range(STIRRING_STEPS):
        u, v = velocity(r, c)
        u, v = velocity(r - 0.5 * step * v, c - 0.5 * step * u)
        r, c = r - step * v, c - step * u
    here = pattern.surface(grid.km()[0], grid.km()[1])
    stirred = pattern.surface((c - pad) * grid.dx_km, (r - pad) * grid.dy_km) - here
    # Spirals inside fast-turning cores wind up below the grid scale and would alias into pixel noise;
    # a monthly mean of a 1/12-degree model is smooth at that scale, so smooth by about one cell.
    return ndimage.gaussian_filter(stirred, STIRRING_SMOOTHING_PX, mode="nearest")


# --------------------------------------------------------------------------------------- assembly
PAD_CELLS = 16  # eddies and velocities are computed on a padded grid so trajectories can leave it


def _components(config: dict, year: int, month: int) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, (depth, y, x) °C) of each process in turn, so a caller can sum without holding all."""
    syn = _settings(config)
    seed = int(syn["seed"])
    grid = make_grid(config)
    t_days = days_since_epoch(year, month)
    pattern = make_large_scale(grid, seed, make_coast(grid, seed), t_days)
    x, y = grid.km()
    lat_mid = float(np.mean(grid.lat))
    ones = np.ones(grid.shape)

    def layer(weight: PchipInterpolator, horizontal: np.ndarray) -> np.ndarray:
        return _eval_profile(weight, DEPTHS_M)[:, None, None] * horizontal[None]

    yield "reference", layer(_T_REFERENCE, ones)
    yield "latitude", layer(_W_LATITUDE, pattern.latitude(y) * ones)
    yield "upwelling", layer(_W_UPWELLING, pattern.upwelling(x, y))
    yield "front", layer(_W_FRONT, pattern.front(x, y) * ones)
    yield "thermocline_tilt", layer(_W_TILT, pattern.thermocline_tilt(x, y))
    yield "season", layer(_W_SEASON, seasonal_anomaly(lat_mid, t_days) * ones)
    yield "interannual", layer(_W_INTERANNUAL, interannual_anomaly(seed, t_days) * ones)
    xp, yp = grid.km(PAD_CELLS)
    inner = (
        slice(None),
        slice(PAD_CELLS, PAD_CELLS + grid.shape[0]),
        slice(PAD_CELLS, PAD_CELLS + grid.shape[1]),
    )
    streamfunction = np.zeros((yp.size, xp.size))
    for index, pop in enumerate(POPULATIONS):
        temp, psi = render_eddies(pop, eddies_alive(index, config, grid, t_days), xp, yp)
        streamfunction += psi
        yield f"eddies_{pop.name}", temp[inner]
    hemisphere = 1.0 if lat_mid >= 0 else -1.0
    yield "stirred", layer(_W_STIRRED, stirred_anomaly(pattern, grid, streamfunction, PAD_CELLS, hemisphere))


def _sea_floor(config: dict) -> tuple[Grid, np.ndarray]:
    syn = _settings(config)
    grid = make_grid(config)
    seed = int(syn["seed"])
    return grid, sea_floor_depth(grid, seed, int(syn["n_islands"]), make_coast(grid, seed))


def temperature_components(
    config: dict, year: int, month: int
) -> tuple[Grid, np.ndarray, dict[str, np.ndarray]]:
    """(grid, sea-floor depth (y, x) m, {process: (depth, y, x) °C}); their sum is the ocean.

    For diagnostics (what each process contributes, docs/synthetic-ocean.md); not masked or clipped.
    """
    grid, floor = _sea_floor(config)
    return grid, floor, dict(_components(config, year, month))


def synthetic_temperature(config: dict, year: int, month: int) -> tuple[Grid, np.ndarray, np.ndarray]:
    """(grid, temperature (depth, y, x) °C with NaN below the sea floor, sea-floor depth (y, x) m)."""
    grid, floor = _sea_floor(config)
    temp = np.zeros((DEPTHS_M.size, *grid.shape))
    for _, part in _components(config, year, month):
        temp += part
    np.clip(temp, T_MIN_C, T_MAX_C, out=temp)
    temp[~ocean_mask(floor)] = np.nan
    return grid, temp, floor


def _quantize(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Round to the int16 packing grid so that the dataset equals what a reader decodes from the file."""
    return np.round((values - offset) / scale) * scale + offset


def sea_surface_height(temp: np.ndarray, reference_c: np.ndarray, latitude_deg: float = REFERENCE_LATITUDE,
                       unexplained: np.ndarray | None = None) -> np.ndarray:
    """Sea level (m): the steric height of the top 1000 m plus the part temperature does not explain.

    The steric height integrates the specific-volume anomaly of each level against the reference profile,
    TEOS-10 (``gsw.specvol`` at Absolute Salinity 35 g/kg, the temperature taken as Conservative Temperature,
    pressure from depth at ``latitude_deg``), after removing the salinity-compensated share of each level's
    temperature anomaly (``_W_COMPENSATION``).

    Args:
        temp: (depth, y, x) temperature (°C) on ``DEPTHS_M``, NaN below the sea floor and on land.
        reference_c: (depth,) reference profile (°C).
        latitude_deg: latitude of the pressure-depth conversion.
        unexplained: (y, x) sea level (m) added as it is (see :func:`unexplained_sea_level`); None adds nothing.

    Returns:
        (y, x) sea level in m, ``ZOS_REFERENCE_M`` for a column at the reference profile; NaN on land.
    """
    import gsw

    top = DEPTHS_M <= STERIC_DEPTH_M
    edges = np.concatenate([[0.0], 0.5 * (DEPTHS_M[1:] + DEPTHS_M[:-1])])
    thickness = np.diff(np.append(edges, DEPTHS_M[-1]))[top]
    pressure = gsw.p_from_z(-DEPTHS_M[top], latitude_deg)[:, None, None]
    reference = reference_c[top, None, None]
    kept = 1.0 - np.clip(_eval_profile(_W_COMPENSATION, DEPTHS_M[top]), 0.0, 1.0)[:, None, None]
    effective = reference + kept * (temp[top] - reference)
    specvol_ref = gsw.specvol(STERIC_SALINITY_G_KG, reference, pressure)
    anomaly = (gsw.specvol(STERIC_SALINITY_G_KG, effective, pressure) - specvol_ref) / specvol_ref
    eta = ZOS_REFERENCE_M + np.tensordot(thickness, np.nan_to_num(anomaly), axes=1)  # no water below the floor
    if unexplained is not None:
        eta = eta + unexplained
    return np.where(np.isfinite(temp[0]), eta, np.nan)


def unexplained_sea_level(seed: int, year: int, month: int, shape: tuple[int, int]) -> np.ndarray:
    """(y, x) sea level (m) independent of the temperature: smooth large-scale and mesoscale Gaussian fields of
    standard deviation ``ZOS_LARGE_SCALE_M`` and ``ZOS_MESOSCALE_M``, drawn per (seed, month)."""
    from scipy.ndimage import gaussian_filter

    rng = _rng(seed, _KEY_SEA_LEVEL, year * 12 + month)
    total = np.zeros(shape)
    for size_m, width_px in ((ZOS_LARGE_SCALE_M, ZOS_LARGE_SCALE_PX), (ZOS_MESOSCALE_M, ZOS_MESOSCALE_PX)):
        field = gaussian_filter(rng.standard_normal(shape), width_px, mode="wrap")
        total += size_m * field / max(float(field.std()), 1e-12)
    return total


def synthetic_dataset(config: dict, year: int, month: int) -> xr.Dataset:
    """One month of the synthetic ocean, decoded (float °C, NaN on land), with the real files' encoding."""
    syn = _settings(config)
    grid, temp, _ = synthetic_temperature(config, year, month)
    temp = _quantize(temp, glorys.THETAO_SCALE_FACTOR, glorys.THETAO_ADD_OFFSET)
    unexplained = unexplained_sea_level(syn["seed"], year, month, grid.shape)
    eta = sea_surface_height(temp, _eval_profile(_T_REFERENCE, DEPTHS_M), float(np.mean(grid.lat)), unexplained)
    zos = _quantize(eta, ZOS_SCALE_FACTOR, 0.0)
    ny, nx = grid.shape
    time = np.array([np.datetime64(mid_month(year, month), "ns")])
    coords = {
        "time": ("time", time, {"standard_name": "time", "long_name": "Time", "axis": "T"}),
        "depth": (
            "depth",
            DEPTHS_M.astype(np.float32),
            {"units": "m", "standard_name": "depth", "long_name": "Depth", "positive": "down", "axis": "Z"},
        ),
        "latitude": (
            "latitude",
            grid.lat,
            {"units": "degrees_north", "standard_name": "latitude", "long_name": "Latitude", "axis": "Y"},
        ),
        "longitude": (
            "longitude",
            grid.lon,
            {"units": "degrees_east", "standard_name": "longitude", "long_name": "Longitude", "axis": "X"},
        ),
    }
    thetao = xr.Variable(
        ("time", "depth", "latitude", "longitude"),
        temp[None],
        {
            "standard_name": "sea_water_potential_temperature",
            "long_name": "Temperature",
            "units": "degrees_C",
        },
    )
    zos_var = xr.Variable(
        ("time", "latitude", "longitude"),
        zos[None],
        {"standard_name": "sea_surface_height_above_geoid", "long_name": "Sea surface height", "units": "m"},
    )
    ds = xr.Dataset({"thetao": thetao, "zos": zos_var}, coords=coords, attrs=_global_attrs(syn, year, month))
    packed = {
        "dtype": "int16",
        "_FillValue": glorys.FILL_VALUE_INT16,
        "zlib": True,
        "complevel": 4,
        "shuffle": True,
    }
    ds["thetao"].encoding = {
        **packed,
        "scale_factor": glorys.THETAO_SCALE_FACTOR,
        "add_offset": glorys.THETAO_ADD_OFFSET,
        "chunksizes": (1, 1, ny, nx),  # one chunk per level: readers load only the levels they need
    }
    ds["zos"].encoding = {
        **packed,
        "scale_factor": ZOS_SCALE_FACTOR,
        "add_offset": 0.0,
        "chunksizes": (1, ny, nx),
    }
    ds["time"].encoding = {
        "units": TIME_UNITS,
        "calendar": "gregorian",
        "dtype": "float64",
        "_FillValue": None,
    }
    for name in ("depth", "latitude", "longitude"):
        ds[name].encoding = {"dtype": "float32", "_FillValue": None}
    return ds


def _global_attrs(syn: dict, year: int, month: int) -> dict:
    region = syn["region"]
    return {
        "title": "DepthDif SYNTHETIC ocean - not observations",
        "institution": "DepthDif (generated, not CMEMS/Mercator)",
        "source": (
            f"depthdif.sources.synthetic v{GENERATOR_VERSION}: analytic climatology + coherent drifting eddies, "
            "tanh fronts and stirred filaments, in the layout of GLORYS12V1 monthly files "
            f"({glorys.DATASET_ID})"
        ),
        "comment": (
            f"SYNTHETIC data for {year:04d}-{month:02d}; seed={syn['seed']}, region=lon {region['lon_min']}..{region['lon_max']} "
            f"lat {region['lat_min']}..{region['lat_max']}, resolution_deg={syn['resolution_deg']}, "
            f"n_eddies={syn['n_eddies']}, n_islands={syn['n_islands']}. Same seed and month give identical values."
        ),
        "Conventions": "CF-1.8",
        # no timestamp: the same seed and month must give the same bytes (and manifest digest) on every run
        "history": f"generated by depthdif.sources.synthetic v{GENERATOR_VERSION}",
        "synthetic": "yes",
    }


def write_synthetic_month(config: dict, year: int, month: int, path: Path) -> None:
    """Generate one month and write it atomically as a GLORYS12-like NetCDF4 file at ``path``."""
    ds = synthetic_dataset(config, year, month)
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
    log.info("wrote synthetic ocean %04d-%02d to %s", year, month, path)
