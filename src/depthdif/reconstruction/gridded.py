"""Rebuild whole fields from sparse observations: tile the grid, sample each tile, blend the tiles.

`reconstruct_file` is the `depthdif reconstruct` command: a trained checkpoint applied to a NetCDF of sparse
observations (NaN = not observed), e.g. gridded Argo profiles, written as a CF-compliant NetCDF.

Input files are read the CF way (depthdif.cf): dimensions by role (``lat``/``lon``, ``time_counter``,
``deptht`` or an ``axis`` attribute), stored values decoded by their own _FillValue/missing_value/valid range
and packing, units converted to °C, levels matched to the model's by depth value, and the date taken from
the file (or ``--date``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm import tqdm

from depthdif import __version__
from depthdif.atomic import atomic_path
from depthdif.cf.axes import accepted_names, axis_roles, depth_below_surface_m, role_of_dim
from depthdif.cf.dates import date_of_dataset
from depthdif.cf.decode import decode_values
from depthdif.cf.errors import FieldFileError
from depthdif.cf.fills import mask_declared
from depthdif.cf.units import check_sea_water_temperature, is_temperature, parse_units, registry, to_celsius
from depthdif.data.index import lon_midpoint
from depthdif.errors import DepthDifError
from depthdif.reconstruction.inference import (
    TileInput,
    band_depths,
    build_batch,
    match_levels,
    sample_celsius,
    surface_variables,
    target_depths,
)
from depthdif.reconstruction.stitching import stitch
from depthdif.reconstruction.tiling import tile_origins

log = logging.getLogger(__name__)


class ReconstructionError(DepthDifError, ValueError):
    """The observations cannot be reconstructed with this model; the message says why."""


@dataclass
class GridObservations:
    """Observations of one time step on a lat/lon grid, in °C (the surface variables in their own units).

    Args:
        observed: (C, ny, nx) °C, NaN where not observed.
        ocean: (C, ny, nx) bool, True on ocean.
        eo: (ny, nx) surface (EO) temperature, °C, NaN on land; eo_4band only, else None.
        latitude: (ny,) degrees north.
        longitude: (nx,) degrees east.
        date: YYYYMMDD of the observations.
        latitude_attrs: the input file's latitude attributes (long_name, comment...), carried into the output.
        longitude_attrs: the same for longitude.
        surface: (S, ny, nx) the model's other surface fields (export.surface_variables, e.g. zos in m), NaN
            where no value; None for a model without them.
    """

    observed: np.ndarray
    ocean: np.ndarray
    eo: np.ndarray | None
    latitude: np.ndarray
    longitude: np.ndarray
    date: int
    latitude_attrs: dict = field(default_factory=dict)
    longitude_attrs: dict = field(default_factory=dict)
    surface: np.ndarray | None = None


def sampling_description(module, ensemble_size: int, steps: int, seed: int) -> str:
    """How the ensemble was drawn, for the output's ``source`` attribute and the log.

    Args:
        module: the loaded model (``DepthDifModule``).
        ensemble_size: members N.
        steps: sampling steps per member.
        seed: sampling seed.

    Returns:
        E.g. ``"8 members in antithetic pairs, 25 DDPM steps, network correction shrunk by fitted factors, seed 0"``.
    """
    pairs = " in antithetic pairs" if module.antithetic_members(ensemble_size) else ""
    sampler = str(module.model_config["sampler"]).upper()
    fitted = bool((module.output_shrinkage != 1).any()) if module.residual else False
    shrink = ", network correction shrunk by fitted factors" if fitted else ""
    return f"{ensemble_size} members{pairs}, {steps} {sampler} steps{shrink}, seed {seed}"


def check_sampling_request(module, ensemble_size, steps) -> None:
    """Refuse an ensemble size or a step count that is not a whole number of at least 1 (a float would be cut
    silently), and say what an odd ensemble size costs with antithetic pairs.

    Args:
        module: the loaded model (``DepthDifModule``).
        ensemble_size: members N.
        steps: sampling steps per member.

    Raises:
        ReconstructionError: naming the argument and its value.
    """
    for name, value in (("ensemble_size", ensemble_size), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ReconstructionError(f"{name} must be a whole number of at least 1, got {value!r}.")
    if module.antithetic_members(ensemble_size) and ensemble_size % 2:
        log.warning("ensemble_size %d is odd: its last member has no antithetic partner and its noise stays in the "
                    "mean (an even size removes it; model.antithetic_sampling)", ensemble_size)


def reconstruct_grid(module, grid: GridObservations, ensemble_size: int, steps: int, stride: int | None = None,
                     batch_size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and std (°C, (C, ny, nx)) over the whole grid from overlapping tiles.

    Tiles overlap by half a patch by default so that every seam is blended (see depthdif.reconstruction.stitching).
    Observed ocean pixels keep their observed value exactly. A band of a tile without any observation of it is
    left to the other tiles; an ocean cell no tile with an observation of its band reaches stays NaN (logged).

    Args:
        module: the loaded model (``DepthDifModule``).
        grid: the observations.
        ensemble_size: members per tile.
        steps: sampling steps per member.
        stride: px between tile origins; default half the model's patch size.
        batch_size: tiles sampled at once.
        seed: sampling seed of the first batch of tiles (batch k: ``seed`` + its first tile's position).

    Returns:
        ``(mean, std)``, (C, ny, nx) float32 °C each, NaN on land.

    Raises:
        ReconstructionError: the grid is smaller than one patch, it holds no observed ocean value, or the ensemble
            size or step count is not a whole number >= 1.
    """
    check_sampling_request(module, ensemble_size, steps)
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
        surface=None if grid.surface is None else grid.surface[window],
    )


# ----------------------------------------------------------------------------- NetCDF in
# CF standard names of a sea temperature field, in the order a variable is preferred when a file holds several
TEMPERATURE_STANDARD_NAMES = (
    "sea_water_potential_temperature", "sea_water_temperature", "sea_surface_temperature",
    "sea_surface_foundation_temperature", "sea_surface_subskin_temperature", "sea_surface_skin_temperature",
)
OCEAN_MASK = "ocean_mask"


def _attrs_of(ds: xr.Dataset):
    """The attributes of the coordinate variable named like a dimension (None if there is none), for axis_roles."""
    return lambda dim: dict(ds[dim].attrs) if dim in ds.variables else None


def _roles(ds: xr.Dataset, name: str, path: Path, need_depth: bool) -> dict[str, str]:
    """Role (time, depth, lat, lon) -> dimension name of variable ``name``.

    Args:
        ds: the open file.
        name: the variable.
        path: the file, for the messages.
        need_depth: False for a surface field, which may have no depth dimension.

    Returns:
        e.g. ``{"time": "time", "lat": "lat", "lon": "lon"}``.

    Raises:
        FieldFileError: a dimension has no role, or latitude/longitude (or a needed depth) is missing.
    """
    dims, attrs_of = ds[name].dims, _attrs_of(ds)
    roles = {role_of_dim(dim, attrs_of(dim)): dim for dim in dims}
    if need_depth or "depth" in roles:
        return axis_roles(dims, path, name, attrs_of)
    if None in roles or not {"lat", "lon"} <= set(roles) or len(roles) != len(dims):
        raise FieldFileError(
            f"{path}: variable '{name}' has dims {dims}; a field without depth needs latitude and longitude "
            f"(and optionally time) and nothing else (accepted: {accepted_names()}). Rename or drop the other "
            "dimensions."
        )
    return roles


def _on_lat_lon(ds: xr.Dataset, name: str) -> bool:
    """True when variable ``name`` has a latitude and a longitude dimension (by name or attributes)."""
    found = {role_of_dim(dim, _attrs_of(ds)(dim)) for dim in ds[name].dims}
    return {"lat", "lon"} <= found


def _temperature_variable(ds: xr.Dataset, path: Path, exclude: tuple[str, ...] = ()) -> str:
    """The name of the temperature variable: ``thetao``, else the first with a sea-temperature standard_name,
    else the only temperature (by name or units) on latitude/longitude dimensions, else the only variable there.

    ``exclude``: variables that are not it (a surface file's other surface variables, e.g. ``zos``).

    Raises:
        ReconstructionError: no such variable, or several with nothing to choose between them.
    """
    if "thetao" in ds.data_vars:
        return "thetao"
    candidates = [v for v in ds.data_vars if v != OCEAN_MASK and str(v) not in exclude and _on_lat_lon(ds, str(v))]
    for standard_name in TEMPERATURE_STANDARD_NAMES:
        named = [v for v in candidates if ds[v].attrs.get("standard_name") == standard_name]
        if named:
            return str(named[0])
    temperatures = [v for v in candidates if is_temperature(str(v), ds[v].attrs)]
    for group in (temperatures, candidates):
        if len(group) == 1:
            return str(group[0])
    layout = {str(v): ds[v].dims for v in ds.data_vars}
    raise ReconstructionError(
        f"{path} has {'no' if not candidates else 'more than one'} candidate temperature variable on latitude/"
        f"longitude dimensions: looked for 'thetao', a standard_name among {list(TEMPERATURE_STANDARD_NAMES)} or "
        f"a single variable on (latitude, longitude); its variables are {layout} (accepted dimension names: "
        f"{accepted_names()}). Name the temperature variable 'thetao' or give it its standard_name."
    )


def _one_time_step(data: xr.DataArray, roles: dict[str, str], path: Path) -> xr.DataArray:
    """``data`` without its time dimension; refuses more than one time step (one file = one date)."""
    if "time" not in roles:
        return data
    steps = data.sizes[roles["time"]]
    if steps != 1:
        raise ReconstructionError(f"{path} holds {steps} time steps of '{data.name}'; give one per file "
                                  "(e.g. `cdo splitsel,1`).")
    return data.isel({roles["time"]: 0})


def _coordinate(ds: xr.Dataset, dim: str, path: Path) -> tuple[np.ndarray, dict]:
    """Decoded values (float, the file's precision) and attributes of the coordinate variable of ``dim``."""
    if dim not in ds.variables:
        raise ReconstructionError(f"{path}: dimension '{dim}' has no coordinate variable (the value of each "
                                  f"{dim} index); add one, e.g. with `ncap2`.")
    variable = ds[dim]
    values = np.asarray(decode_values(np.asarray(variable.values), variable.attrs, f"{path}: coordinate '{dim}'"))
    # a float coordinate keeps the file's precision, so that the output's grid is the input's exactly
    dtype = variable.dtype if np.issubdtype(variable.dtype, np.floating) else np.float64
    return values.astype(dtype, copy=False), dict(variable.attrs)


FILL_VALUE_HINT = "`depthdif reconstruct --fill-value VALUE` (repeatable)"


def _celsius(raw: np.ndarray, attrs, where: str, fill_values: tuple[float, ...] = ()) -> np.ndarray:
    """Stored values -> °C (float64, NaN = no value): CF decoding, unit conversion, plausibility check.

    Args:
        raw: values as stored in the file (read with ``mask_and_scale=False``).
        attrs: the variable's attributes (_FillValue, missing_value, valid_*, scale_factor, add_offset, units).
        where: file and variable, for the messages.
        fill_values: values (in the file's units) the user declared as "no value" (``--fill-value``).

    Returns:
        The values in °C, NaN where the file holds no value.

    Raises:
        FieldFileError: units that are not a temperature, or values outside -3..45 °C once decoded.
    """
    values = decode_values(raw, attrs, where)
    mask_declared(values, fill_values)
    celsius = to_celsius(values, attrs.get("units"), where)
    check_sea_water_temperature(celsius, where, how_to_declare=FILL_VALUE_HINT)
    return np.asarray(celsius, np.float64)


def _level_positions(depths: np.ndarray, wanted: list[float], path: Path) -> list[int]:
    positions = match_levels(depths, wanted)
    for depth, position in zip(wanted, positions, strict=True):
        if position is None:
            raise ReconstructionError(
                f"{path} has no level near {depth:.2f} m, which the model reconstructs; its depths are "
                f"{np.round(depths, 2).tolist()}. Give observations on the model's levels."
            )
    return positions


def _date_of(ds: xr.Dataset, path: Path, given: int | None) -> int:
    """YYYYMMDD of the observations: the file's (time coordinate, then attributes, then name), or ``given``.

    Raises:
        FieldFileError: the file states no date and none is given.
        ReconstructionError: the file states another date than ``given``.
    """
    try:
        stated = date_of_dataset(ds, path)
    except FieldFileError as err:
        if given is None:
            raise FieldFileError(f"{err} Or give the date with `depthdif reconstruct --date YYYY-MM-DD`.") from None
        return int(given)
    if given is not None and int(given) != stated:
        raise ReconstructionError(
            f"{path} states the date {stated} but --date says {given}; the model is conditioned on the day of "
            "the year, so one of them is wrong: drop --date, or correct the file's time."
        )
    return stated


def read_observations(path: Path, settings: dict, surface: Path | None = None,
                      date: int | None = None, fill_values: tuple[float, ...] = ()) -> GridObservations:
    """Observations (and, for eo_4band, the surface field) from NetCDF, on the model's levels, in °C.

    Args:
        path: NetCDF with one temperature variable on (time,) depth, latitude, longitude (any accepted
            names), NaN or its fill/missing value where not observed, and an ``ocean_mask``.
        settings: the checkpoint's settings (the depths it reconstructs, its variant).
        surface: the surface (EO) field for eo_4band.
        date: YYYYMMDD for a file that states no date (``--date``).
        fill_values: values (in the files' units) meaning "no value" (``--fill-value``).

    Returns:
        The observations on the model's levels, by depth value.

    Raises:
        ReconstructionError, FieldFileError: the message names the file and what to change.
    """
    with xr.open_dataset(path, mask_and_scale=False) as ds:
        name = _temperature_variable(ds, path)
        roles = _roles(ds, name, path, need_depth=True)
        data = _one_time_step(ds[name], roles, path)
        depth_axis, depth_attrs = _coordinate(ds, roles["depth"], path)
        depth_axis = depth_below_surface_m(depth_axis, depth_attrs, f"{path}: coordinate '{roles['depth']}'")
        positions = _level_positions(depth_axis, target_depths(settings), path)
        raw = data.isel({roles["depth"]: positions}).transpose(roles["depth"], roles["lat"], roles["lon"]).values
        observed = _celsius(raw, data.attrs, f"{path}: variable '{name}'", fill_values)
        lat, lat_attrs = _coordinate(ds, roles["lat"], path)
        lon, lon_attrs = _coordinate(ds, roles["lon"], path)
        ocean = _ocean_mask(ds, positions, observed.shape, path)
        file_date = _date_of(ds, path, date)
    eo = fields = None
    if settings["variant"] == "eo_4band":
        eo, fields = _read_surface(surface, lat, lon, settings, path, fill_values)
        if ocean is None:
            log.warning("%s has no 'ocean_mask': taking the ocean from the surface field (deeper land unknown).", path)
            ocean = np.broadcast_to(np.isfinite(eo), observed.shape).copy()
    if ocean is None:
        raise ReconstructionError(
            f"{path} has no 'ocean_mask' variable (1 = ocean, 0 = land, on (depth,) latitude, longitude): without "
            "it NaN cannot tell land from an unobserved ocean cell. Add one (e.g. from the model grid's bathymetry)."
        )
    return GridObservations(observed, ocean, eo, lat, lon, file_date, lat_attrs, lon_attrs, fields)


def _ocean_mask(ds: xr.Dataset, positions: list[int], shape: tuple[int, ...], path: Path) -> np.ndarray | None:
    """(C, ny, nx) bool from the ``ocean_mask`` variable (> 0 = ocean, fill = land), or None without one."""
    if OCEAN_MASK not in ds:
        return None
    roles = _roles(ds, OCEAN_MASK, path, need_depth=False)
    mask = _one_time_step(ds[OCEAN_MASK], roles, path)
    order = [roles["lat"], roles["lon"]]
    if "depth" in roles:
        mask = mask.isel({roles["depth"]: positions})
        order = [roles["depth"], *order]
    values = decode_values(np.asarray(mask.transpose(*order).values), mask.attrs, f"{path}: variable 'ocean_mask'")
    with np.errstate(invalid="ignore"):
        ocean = np.asarray(values, np.float64) > 0  # NaN (a fill value) is land
    return np.broadcast_to(ocean, shape).copy()


def _read_surface(surface: Path | None, lat: np.ndarray, lon: np.ndarray, settings: dict, obs_path: Path,
                  fill_values: tuple[float, ...] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """The surface (EO) field in °C on the observations' grid, (ny, nx), NaN on land, and the model's other
    surface variables from the same file (see :func:`_surface_from`)."""
    if surface is None:
        raise ReconstructionError(
            "this is an eo_4band model: give the surface (EO) field with --surface FILE.nc (thetao at the "
            "surface, or a (latitude, longitude) sea surface temperature, e.g. a satellite L4 SST)."
        )
    with xr.open_dataset(surface, mask_and_scale=False) as ds:
        return _surface_from(ds, surface, lat, lon, settings, obs_path, fill_values)


def _surface_from(ds: xr.Dataset, surface, lat: np.ndarray, lon: np.ndarray, settings: dict, obs_path,
                  fill_values: tuple[float, ...] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """The surface field of an open dataset in °C on the grid ``lat`` x ``lon``, and the model's other surface
    variables (``export.surface_variables``, e.g. ``zos``) read by name from the same dataset.

    Args:
        ds: the surface file (raw as stored, or decoded by xarray).
        surface: its name, for messages.
        lat: (ny,) latitudes of the reconstruction's grid.
        lon: (nx,) longitudes of the reconstruction's grid.
        settings: the checkpoint's settings (the depth of its surface channel).
        obs_path: the file that gave the grid, for messages.
        fill_values: values (the file's units) that mean "no value".

    Returns:
        (eo, fields): eo (ny, nx) °C, NaN on land; fields (S, ny, nx) float64 in each variable's own unit
        (lengths in m), NaN where no value, or None for a model without surface variables.

    Raises:
        ReconstructionError: the surface is on another grid, or lacks one of the model's surface variables;
            FieldFileError: its values cannot be read.
    """
    names = surface_variables(settings)
    name = _temperature_variable(ds, surface, exclude=names)
    roles = _roles(ds, name, surface, need_depth=False)
    data = _one_time_step(ds[name], roles, surface)
    if "depth" in roles:
        depth_axis, depth_attrs = _coordinate(ds, roles["depth"], surface)
        depth_axis = depth_below_surface_m(depth_axis, depth_attrs, f"{surface}: coordinate '{roles['depth']}'")
        data = data.isel({roles["depth"]: _level_positions(depth_axis, band_depths(settings)[:1], surface)[0]})
    _check_grid(ds, roles, surface, lat, lon, obs_path)
    raw = data.transpose(roles["lat"], roles["lon"]).values
    eo = _celsius(raw, data.attrs, f"{surface}: variable '{name}'", fill_values)
    fields = _surface_variables_from(ds, surface, names, lat, lon, obs_path, fill_values) if names else None
    if fields is not None:
        _check_surface_coverage(fields, eo, names, surface)
    return eo, fields


def _check_surface_coverage(fields: np.ndarray, eo: np.ndarray, names: tuple[str, ...], surface) -> None:
    """Refuse a surface variable with no value on the ocean of the surface temperature; warn (with the count)
    where it lacks some: those cells are taken as "no anomaly" (their tile's mean, inference._surface_stack),
    never as 0 m, which would be a false sea-level signal next to values of a few decimetres.

    Raises:
        ReconstructionError: a field has no finite value where the surface temperature has one.
    """
    ocean = np.isfinite(eo)
    for name, values in zip(names, fields, strict=True):
        missing = ocean & ~np.isfinite(values)
        if ocean.any() and int(missing.sum()) == int(ocean.sum()):
            raise ReconstructionError(
                f"variable '{name}' of the surface file {surface} has no value on any ocean cell of the surface "
                f"temperature; the model needs it (export.surface_variables): give a surface file with {name}."
            )
        if missing.any():
            log.warning("%s: '%s' has no value at %d of %d ocean cells of the surface temperature; they are taken "
                        "as no anomaly (their tile's mean)", surface, name, int(missing.sum()), int(ocean.sum()))


def _check_grid(ds: xr.Dataset, roles: dict[str, str], surface, lat: np.ndarray, lon: np.ndarray, obs_path,
                name: str | None = None) -> None:
    """Refuse a surface variable whose latitude/longitude are not the observations' (``lat`` x ``lon``)."""
    surface_lat, _ = _coordinate(ds, roles["lat"], surface)
    surface_lon, _ = _coordinate(ds, roles["lon"], surface)
    if surface_lat.shape != lat.shape or surface_lon.shape != lon.shape or not (
        np.allclose(surface_lat, lat) and np.allclose(surface_lon, lon)
    ):
        what = f"the surface file {surface}" if name is None else f"variable '{name}' of the surface file {surface}"
        raise ReconstructionError(
            f"{what} is on another grid than the observations {obs_path}; regrid one onto the other first."
        )


def _surface_variables_from(ds: xr.Dataset, surface, names: tuple[str, ...], lat: np.ndarray, lon: np.ndarray,
                            obs_path, fill_values: tuple[float, ...] = ()) -> np.ndarray:
    """The model's surface variables ``names`` (export.surface_variables) read by name from the surface file.

    Args:
        ds: the surface file (raw as stored, or decoded by xarray).
        surface: its name, for messages.
        names: the variables, in the model's order.
        lat: (ny,) latitudes of the reconstruction's grid.
        lon: (nx,) longitudes of the reconstruction's grid.
        obs_path: the file that gave the grid, for messages.
        fill_values: values (the file's units) that mean "no value".

    Returns:
        (S, ny, nx) float64, each variable CF-decoded in its own unit (a length converted to m), NaN where no value.

    Raises:
        ReconstructionError: a variable is missing, has a depth axis, or is on another grid.
        FieldFileError: its values or units cannot be read (units that are not a length).
    """
    missing = [name for name in names if name not in ds.variables]
    if missing:
        raise ReconstructionError(
            f"the surface file {surface} has no variable {', '.join(repr(n) for n in missing)}: the model was "
            f"trained with export.surface_variables {list(names)}, dense surface fields it is conditioned on "
            f"besides the sea-surface temperature. Give a --surface file holding {' and '.join(names)} on the "
            f"observations' grid as well (e.g. a GLORYS12 month has zos); its variables are "
            f"{sorted(str(v) for v in ds.data_vars)}."
        )
    fields = []
    for name in names:
        roles = _roles(ds, name, surface, need_depth=False)
        if "depth" in roles:
            raise ReconstructionError(
                f"{surface}: surface variable '{name}' has a depth axis (dims {ds[name].dims}); the model's "
                "export.surface_variables are 2-D (latitude, longitude) fields such as zos."
            )
        data = _one_time_step(ds[name], roles, surface)
        _check_grid(ds, roles, surface, lat, lon, obs_path, name)
        where = f"{surface}: variable '{name}'"
        values = decode_values(data.transpose(roles["lat"], roles["lon"]).values, data.attrs, where)
        mask_declared(values, fill_values)
        fields.append(_in_metres(np.asarray(values, np.float64), data.attrs.get("units"), where))
    return np.stack(fields)


def _in_metres(values: np.ndarray, units, where: str) -> np.ndarray:
    """A surface variable in m when its ``units`` are a length (cm, mm, ...); as stored without units.

    Raises:
        FieldFileError: units that are not a length (or cannot be parsed).
    """
    text = "" if units is None else str(units).strip()
    if not text:
        log.warning("%s has no units attribute; taking its values as they are (sea-surface height in m)", where)
        return values
    unit = parse_units(text)
    if unit is None or unit.dimensionality != registry.metre.dimensionality:
        raise FieldFileError(
            f"{where}: units '{text}' are not a length; the model's surface variables (export.surface_variables, "
            "e.g. zos) are sea-surface heights in m. Fix the units attribute (e.g. `ncatted -a units,VARIABLE,o,c,m "
            "FILE`; cm, mm and the other UDUNITS-2 lengths are converted) or give the variable the model was "
            "trained on."
        )
    if unit == registry.metre:
        return values
    log.info("%s: converting %s to m", where, text)
    return np.asarray(registry.Quantity(values, unit).to(registry.metre).magnitude, np.float64)


# ----------------------------------------------------------------------------- NetCDF out
_ENCODING_ATTRS = ("_FillValue", "missing_value", "valid_min", "valid_max", "valid_range", "scale_factor",
                   "add_offset")


def reconstruction_dataset(mean: np.ndarray, std: np.ndarray, observed_mask: np.ndarray, ocean: np.ndarray,
                           latitude: xr.DataArray | np.ndarray, longitude: xr.DataArray | np.ndarray,
                           depths: list[float], date: int, source: str, truth: np.ndarray | None = None) -> xr.Dataset:
    """CF-1.8 dataset of one reconstructed month: (time, depth, latitude, longitude).

    Args:
        mean: (C, ny, nx) ensemble mean, °C.
        std: (C, ny, nx) ensemble standard deviation, °C.
        observed_mask: (C, ny, nx) bool, the observed cells.
        ocean: (C, ny, nx) bool, the ocean cells.
        latitude: (ny,) degrees north (a DataArray keeps its attributes).
        longitude: (nx,) degrees east (a DataArray keeps its attributes).
        depths: (C,) depth of each band, m.
        date: YYYYMMDD of the month (the ``time`` coordinate).
        source: the dataset's ``source`` attribute.
        truth: (C, ny, nx) °C the observations were drawn from (the evaluation), or None.

    Returns:
        ``thetao``, ``thetao_std`` (degC), ``observation_mask``, ``ocean_mask`` (int8) and, with ``truth``,
        ``thetao_truth``, each (1, C, ny, nx), with CF coordinates and global attributes.
    """

    time = np.array([np.datetime64(f"{str(date)[:4]}-{str(date)[4:6]}-{str(date)[6:8]}", "ns")])
    dims = ("time", "depth", "latitude", "longitude")
    lat = latitude if isinstance(latitude, xr.DataArray) else xr.DataArray(latitude, dims="latitude")
    lon = longitude if isinstance(longitude, xr.DataArray) else xr.DataArray(longitude, dims="longitude")
    coords = {
        "time": ("time", time, {"standard_name": "time", "axis": "T", "long_name": "time"}),
        "depth": ("depth", np.asarray(depths, np.float32),
                  {"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z", "long_name": "depth"}),
        "latitude": ("latitude", np.asarray(lat.values),
                     _coordinate_attrs(lat, {"standard_name": "latitude", "units": "degrees_north",
                                             "axis": "Y"})),
        "longitude": ("longitude", np.asarray(lon.values),
                      _coordinate_attrs(lon, {"standard_name": "longitude", "units": "degrees_east",
                                              "axis": "X"})),
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


def _coordinate_attrs(source: xr.DataArray, cf_attrs: dict) -> dict:
    """Attributes of an output coordinate: the input's descriptive ones (long_name, comment...) under ours.

    Args:
        source: the latitude or longitude the caller passed (`depthdif reconstruct`: the observation file's).
        cf_attrs: standard_name, units and axis of that coordinate.

    Returns:
        The attributes to write; ``cf_attrs`` win over the input's.
    """
    # a user's file may call latitude "lat" or its unit "degrees", and its missing-data and range attributes
    # (a _FillValue, a float64 valid_min on float32 values) describe its own encoding; CF forbids or flags
    # each of them on a coordinate variable of ours
    kept = {key: value for key, value in source.attrs.items() if key not in _ENCODING_ATTRS}
    return {**kept, **cf_attrs}


def write_netcdf(ds: xr.Dataset, path: Path) -> Path:
    """Write a reconstruction dataset atomically as compressed NetCDF-4 that passes the CF-1.8 checks.

    Args:
        ds: the dataset of `reconstruction_dataset`.
        path: the file to write; it appears only once complete.

    Returns:
        ``path``.
    """
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    # xarray gives every float variable a NaN _FillValue, which CF forbids on coordinate variables (2.5.1)
    encoding.update({name: {"_FillValue": None} for name in ds.coords})
    encoding["time"] = {"units": "days since 1950-01-01", "calendar": "standard", "dtype": "float64",
                        "_FillValue": None}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, encoding=encoding, engine="netcdf4")
    return path


def reconstruct_file(checkpoint: Path, observations: Path, output: Path, surface: Path | None = None,
                     ensemble_size: int = 8, steps: int = 25, date: int | None = None, seed: int = 0,
                     fill_values: tuple[float, ...] = (), grid: Path | None = None, device: str = "auto") -> Path:
    """`depthdif reconstruct`: checkpoint + sparse observations -> reconstructed NetCDF.

    Args:
        checkpoint: model.ckpt of format 3 (it records the depths in metres of its bands).
        observations: a gridded NetCDF (see :func:`read_observations`) or a profile file, NetCDF of
            ``N_PROF x N_LEVELS`` or CSV (see :mod:`depthdif.reconstruction.profiles`), told apart by
            :func:`depthdif.reconstruction.profiles.is_profile_file`.
        output: the NetCDF to write.
        surface: the surface (EO) field, eo_4band only (for profiles also the grid when ``grid`` is None).
        ensemble_size: members averaged into the mean.
        steps: sampling steps per member.
        date: YYYYMMDD for an observation file that states no date (``--date``).
        seed: seed of the sampler's noise (``--seed``): the same inputs and seed give the same output.
        fill_values: values (in the files' units) that mean "no value" in the observation and surface files
            (``--fill-value``), for files that store them without a _FillValue.
        grid: profile files only (``--grid``): the grid to bin them onto (latitude, longitude and an
            ``ocean_mask``, or a temperature field whose NaN is land).
        device: where to sample (``--device``): ``auto`` (a GPU if there is one), ``gpu``, ``mps`` or ``cpu``;
            see :func:`depthdif.reconstruction.inference.inference_device`.

    Returns:
        ``output``.

    Raises:
        DeviceError: the device asked for is not available.
        CheckpointError: the checkpoint does not record its depths (format 2).
        ReconstructionError, FieldFileError: the observations cannot be used; the message says why.
    """
    from depthdif.models.module import load_model
    from depthdif.reconstruction.inference import inference_device
    from depthdif.reconstruction.profiles import is_profile_file, reconstruct_profile_file

    if is_profile_file(Path(observations)):
        return reconstruct_profile_file(checkpoint, observations, output, surface, grid, date=date, seed=seed,
                                        ensemble_size=ensemble_size, steps=steps, fill_values=tuple(fill_values),
                                        device=device)
    if grid is not None:
        raise ReconstructionError(f"--grid is for profile files; {observations} is a gridded observation file, "
                                  "which is its own grid: drop --grid.")
    module = load_model(checkpoint, map_location=inference_device(device))
    depths = target_depths(module.settings, str(checkpoint))  # first: a format-2 model fails before any reading
    grid = read_observations(Path(observations), module.settings, surface, date, tuple(fill_values))
    log.info("reconstructing %s with the %s model %s (%s)", observations, module.settings["variant"], checkpoint,
             sampling_description(module, ensemble_size, steps, seed))
    mean, std = reconstruct_grid(module, grid, ensemble_size, steps, seed=seed)
    observed = np.isfinite(grid.observed) & grid.ocean
    lat = xr.DataArray(grid.latitude, dims="latitude", attrs=grid.latitude_attrs)
    lon = xr.DataArray(grid.longitude, dims="longitude", attrs=grid.longitude_attrs)
    ds = reconstruction_dataset(mean, std, observed, grid.ocean, lat, lon, depths, grid.date,
                                source=f"DepthDif {module.settings['variant']} model {Path(checkpoint).name} "
                                f"applied to {Path(observations).name} "
                                f"({sampling_description(module, ensemble_size, steps, seed)})")
    return write_netcdf(ds, Path(output))
