"""Rebuild whole fields from sparse observations: tile the grid, sample each tile, blend the tiles.

`reconstruct_file` is the `depthdif reconstruct` command: a trained checkpoint applied to a NetCDF of sparse
observations (NaN = not observed), e.g. gridded Argo profiles, written as a CF-compliant NetCDF.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm import tqdm

from depthdif import __version__
from depthdif.atomic import atomic_path
from depthdif.datasets import lon_midpoint
from depthdif.inference import TileInput, build_batch, match_levels, sample_celsius, target_depths
from depthdif.stitching import stitch
from depthdif.tiling import tile_origins

log = logging.getLogger(__name__)


class ReconstructionError(ValueError):
    """The observations cannot be reconstructed with this model; the message says why."""


@dataclass
class GridObservations:
    """Observations of one time step on a lat/lon grid, in °C."""

    observed: np.ndarray  # (C, ny, nx) NaN where not observed
    ocean: np.ndarray  # (C, ny, nx) bool
    eo: np.ndarray | None  # (ny, nx) °C, eo_4band only
    latitude: np.ndarray
    longitude: np.ndarray
    date: int


def reconstruct_grid(module, grid: GridObservations, ensemble_size: int, steps: int, stride: int | None = None,
                     batch_size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and std (°C, (C, ny, nx)) over the whole grid from overlapping tiles.

    Tiles overlap by half a patch by default so that every seam is blended (see depthdif.stitching).
    Observed ocean pixels keep their observed value exactly.
    """
    settings = module.settings
    size = int(settings["export"]["patch_size"])
    ny, nx = grid.observed.shape[1:]
    if ny < size or nx < size:
        raise ReconstructionError(f"the grid ({ny} x {nx}) is smaller than the model's {size} x {size} patches.")
    if not np.isfinite(grid.observed[grid.ocean]).any():
        raise ReconstructionError("the observation field has no observed ocean value at all; nothing to start from.")
    origins = tile_origins((ny, nx), size, stride or max(1, size // 2))
    means, stds = [], []
    for start in tqdm(range(0, len(origins), batch_size), desc="reconstruct tiles", unit="batch", leave=False):
        chunk = origins[start : start + batch_size]
        tiles = [_tile(grid, y0, x0, size) for y0, x0 in chunk]
        mean, std, _ = sample_celsius(module, build_batch(tiles, settings), ensemble_size, steps, seed=seed + start)
        # a tile holding no observation of a band cannot know that band's level (the model would fall back to
        # another band's or the normalisation mean): NaN there, so the blend takes it from tiles that do
        for k, tile in enumerate(tiles):
            blind = ~(np.isfinite(tile.observed) & tile.ocean).any(axis=(1, 2))
            mean[k, blind] = np.nan
            std[k, blind] = np.nan
        means.extend(mean)
        stds.extend(std)
    mean = stitch(((y0, x0, m) for (y0, x0), m in zip(origins, means, strict=True)), (ny, nx))
    std = stitch(((y0, x0, s) for (y0, x0), s in zip(origins, stds, strict=True)), (ny, nx))
    observed = np.isfinite(grid.observed) & grid.ocean
    mean = np.where(observed, grid.observed, mean)
    unreached = grid.ocean & ~np.isfinite(mean)
    if unreached.any():
        log.warning("%d ocean cells (of %d) have no observation of their band within one %d px tile; they are left "
                    "NaN (a level there would be a guess)", int(unreached.sum()), int(grid.ocean.sum()), size)
    mean[~grid.ocean] = np.nan
    std[~grid.ocean] = np.nan
    return mean.astype(np.float32), std.astype(np.float32)


def _tile(grid: GridObservations, y0: int, x0: int, size: int) -> TileInput:
    window = (slice(None), slice(y0, y0 + size), slice(x0, x0 + size))
    lat = grid.latitude[y0 : y0 + size]
    lon = grid.longitude[x0 : x0 + size]
    return TileInput(
        observed=grid.observed[window],
        ocean=grid.ocean[window],
        eo=None if grid.eo is None else grid.eo[window[1:]],
        date=grid.date,
        lat_centre=float((lat[0] + lat[-1]) / 2),
        lon_centre=lon_midpoint(float(lon[0]), float(lon[-1])),
    )


# ----------------------------------------------------------------------------- NetCDF in
def _level_positions(depths: np.ndarray, wanted: list[float], path: Path) -> list[int]:
    positions = match_levels(depths, wanted)
    for depth, position in zip(wanted, positions, strict=True):
        if position is None:
            raise ReconstructionError(
                f"{path} has no level near {depth:.2f} m, which the model reconstructs; its depths are "
                f"{np.round(depths, 2).tolist()}. Give observations on the model's levels."
            )
    return positions


def _data_variable(ds: xr.Dataset, path: Path, variable: str | None) -> xr.DataArray:
    if variable is None:
        variable = "thetao" if "thetao" in ds else next((v for v in ds.data_vars if {"latitude", "longitude"} <= set(ds[v].dims)), None)
    if variable is None or variable not in ds:
        raise ReconstructionError(f"{path} has no temperature variable (looked for 'thetao' or any "
                                  f"(latitude, longitude) variable); its variables are {list(ds.data_vars)}.")
    data = ds[variable]
    if "time" in data.dims:
        if data.sizes["time"] != 1:
            raise ReconstructionError(f"{path} holds {data.sizes['time']} time steps; give one per file.")
        data = data.isel(time=0)
    return data


def _date_of(ds: xr.Dataset) -> int:
    if "time" in ds.coords and ds["time"].size >= 1:
        stamp = np.datetime64(np.atleast_1d(ds["time"].values)[0], "D").astype(object)
        return int(stamp.strftime("%Y%m%d"))
    return 19700115


def read_observations(path: Path, settings: dict, surface: Path | None = None) -> GridObservations:
    """Observations (and, for eo_4band, the surface field) from NetCDF, on the model's levels."""
    with xr.open_dataset(path) as ds:
        data = _data_variable(ds, path, None)
        if "depth" not in data.dims:
            raise ReconstructionError(f"{path}: the temperature variable has no 'depth' dimension.")
        positions = _level_positions(np.asarray(ds["depth"].values, float), target_depths(settings), path)
        observed = np.asarray(data.isel(depth=positions).transpose("depth", "latitude", "longitude").values, float)
        lat, lon = np.asarray(ds["latitude"].values), np.asarray(ds["longitude"].values)
        ocean = _ocean_mask(ds, positions, observed.shape, path)
        date = _date_of(ds)
    eo = None
    if settings["variant"] == "eo_4band":
        eo = _read_surface(surface, lat, lon, settings, path)
        if ocean is None:
            log.warning("%s has no 'ocean_mask': taking the ocean from the surface field (deeper land unknown).", path)
            ocean = np.broadcast_to(np.isfinite(eo), observed.shape).copy()
    if ocean is None:
        raise ReconstructionError(
            f"{path} has no 'ocean_mask' variable (1 = ocean, 0 = land, on (depth,) latitude, longitude): without "
            "it NaN cannot tell land from an unobserved ocean cell. Add one (e.g. from the model grid's bathymetry)."
        )
    return GridObservations(observed, ocean, eo, lat, lon, date)


def _ocean_mask(ds: xr.Dataset, positions: list[int], shape: tuple[int, ...], path: Path) -> np.ndarray | None:
    if "ocean_mask" not in ds:
        return None
    mask = ds["ocean_mask"]
    if "time" in mask.dims:
        mask = mask.isel(time=0)
    if "depth" in mask.dims:
        mask = mask.isel(depth=positions).transpose("depth", "latitude", "longitude")
    values = np.asarray(mask.values) > 0
    return np.broadcast_to(values, shape).copy()


def _read_surface(surface: Path | None, lat: np.ndarray, lon: np.ndarray, settings: dict, obs_path: Path) -> np.ndarray:
    if surface is None:
        raise ReconstructionError(
            "this is an eo_4band model: give the surface (EO) field with --surface FILE.nc (thetao at the "
            "surface, or any (latitude, longitude) temperature variable, in °C)."
        )
    from depthdif.inference import band_depths

    with xr.open_dataset(surface) as ds:
        data = _data_variable(ds, surface, None)
        if "depth" in data.dims:
            position = _level_positions(np.asarray(ds["depth"].values, float), [band_depths(settings)[0]], surface)[0]
            data = data.isel(depth=position)
        if data.sizes.get("latitude") != lat.size or data.sizes.get("longitude") != lon.size or not (
            np.allclose(ds["latitude"].values, lat) and np.allclose(ds["longitude"].values, lon)
        ):
            raise ReconstructionError(
                f"the surface file {surface} is on another grid than the observations {obs_path}; regrid one "
                "onto the other first."
            )
        return np.asarray(data.transpose("latitude", "longitude").values, float)


# ----------------------------------------------------------------------------- NetCDF out
def reconstruction_dataset(mean: np.ndarray, std: np.ndarray, observed_mask: np.ndarray, ocean: np.ndarray,
                           latitude: xr.DataArray | np.ndarray, longitude: xr.DataArray | np.ndarray,
                           depths: list[float], date: int, source: str, truth: np.ndarray | None = None) -> xr.Dataset:
    """CF-1.8 dataset of one reconstructed month: (time, depth, latitude, longitude)."""
    time = np.array([np.datetime64(f"{str(date)[:4]}-{str(date)[4:6]}-{str(date)[6:8]}", "ns")])
    dims = ("time", "depth", "latitude", "longitude")
    lat = latitude if isinstance(latitude, xr.DataArray) else xr.DataArray(latitude, dims="latitude")
    lon = longitude if isinstance(longitude, xr.DataArray) else xr.DataArray(longitude, dims="longitude")
    coords = {
        "time": ("time", time, {"standard_name": "time", "axis": "T", "long_name": "time"}),
        "depth": ("depth", np.asarray(depths, np.float32),
                  {"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z", "long_name": "depth"}),
        "latitude": ("latitude", np.asarray(lat.values),
                     {"standard_name": "latitude", "units": "degrees_north", "axis": "Y", **dict(lat.attrs)}),
        "longitude": ("longitude", np.asarray(lon.values),
                      {"standard_name": "longitude", "units": "degrees_east", "axis": "X", **dict(lon.attrs)}),
    }
    variables = {
        "thetao": (dims, mean[None].astype(np.float32), {
            "standard_name": "sea_water_potential_temperature", "units": "degC",
            "long_name": "reconstructed sea water potential temperature (ensemble mean)",
            "ancillary_variables": "thetao_std observation_mask"}),
        "thetao_std": (dims, std[None].astype(np.float32), {
            "long_name": "ensemble standard deviation of the reconstruction", "units": "degC"}),
        "observation_mask": (dims, observed_mask[None].astype(np.int8), {
            "long_name": "observed cell (input of the reconstruction)", "flag_values": np.array([0, 1], np.int8),
            "flag_meanings": "reconstructed observed"}),
        "ocean_mask": (dims, ocean[None].astype(np.int8), {
            "long_name": "ocean cell", "flag_values": np.array([0, 1], np.int8), "flag_meanings": "land ocean"}),
    }
    if truth is not None:
        variables["thetao_truth"] = (dims, truth[None].astype(np.float32), {
            "standard_name": "sea_water_potential_temperature", "units": "degC",
            "long_name": "field the observations were drawn from (for evaluation)"})
    ds = xr.Dataset(variables, coords=coords)
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": "DepthDif reconstruction of subsurface temperature from sparse observations",
        "institution": "DepthDif (open source)",
        "source": source,
        "history": f"created by depthdif {__version__}",
        "references": "https://github.com/depthdif/depthdif",
    }
    return ds


def write_netcdf(ds: xr.Dataset, path: Path) -> Path:
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    encoding["time"] = {"units": "days since 1950-01-01", "calendar": "standard", "dtype": "float64"}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, encoding=encoding, engine="netcdf4")
    return path


def reconstruct_file(checkpoint: Path, observations: Path, output: Path, surface: Path | None = None,
                     ensemble_size: int = 8, steps: int = 25) -> Path:
    """`depthdif reconstruct`: checkpoint + NetCDF of sparse observations -> reconstructed NetCDF."""
    from depthdif.models.module import load_model

    module = load_model(checkpoint)
    grid = read_observations(Path(observations), module.settings, surface)
    log.info("reconstructing %s with the %s model %s (%d members, %d DDIM steps)", observations,
             module.settings["variant"], checkpoint, ensemble_size, steps)
    mean, std = reconstruct_grid(module, grid, ensemble_size, steps)
    observed = np.isfinite(grid.observed) & grid.ocean
    with xr.open_dataset(observations) as ds:
        lat, lon = ds["latitude"].load(), ds["longitude"].load()
    ds = reconstruction_dataset(mean, std, observed, grid.ocean, lat, lon, target_depths(module.settings), grid.date,
                                source=f"DepthDif {module.settings['variant']} model {Path(checkpoint).name} "
                                f"applied to {Path(observations).name}")
    return write_netcdf(ds, Path(output))
