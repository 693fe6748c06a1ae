"""Which dimension of a variable is time, depth, latitude and longitude, whatever the file calls it.

A dimension gets its role from its name (``AXIS_ALIASES``, case-insensitive) or, failing that, from the
attributes of its coordinate variable (the variable of the same name): ``axis`` T/Z/Y/X or
``standard_name`` time/depth/latitude/longitude, as CF section 4 defines them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from depthdif.cf.errors import FieldFileError

log = logging.getLogger(__name__)

# role -> dimension names that carry it; nav_lat/nav_lon only ever name a dimension when they are 1-D
# (a NEMO file on its curvilinear grid has 2-D nav_lat(y, x), whose dims y/x have no role)
AXIS_ALIASES: dict[str, tuple[str, ...]] = {
    "time": ("time", "time_counter", "t"),
    "depth": ("depth", "deptht", "depthu", "depthv", "lev", "z"),
    "lat": ("latitude", "lat", "nav_lat"),
    "lon": ("longitude", "lon", "nav_lon"),
}
# the names DepthDif writes and the export contract uses (CMEMS GLORYS12)
CANONICAL_NAMES = {"time": "time", "depth": "depth", "lat": "latitude", "lon": "longitude"}
REQUIRED_ROLES = ("depth", "lat", "lon")

_ROLE_OF_NAME = {name: role for role, names in AXIS_ALIASES.items() for name in names}
_ROLE_OF_AXIS = {"T": "time", "Z": "depth", "Y": "lat", "X": "lon"}
_ROLE_OF_STANDARD_NAME = {"time": "time", "depth": "depth", "latitude": "lat", "longitude": "lon"}

AttrsOf = Callable[[str], Mapping | None]


def accepted_names() -> str:
    """The accepted dimension names and attributes, as an error message lists them."""
    names = "; ".join(
        f"{CANONICAL_NAMES[role]}: {', '.join(aliases)}" for role, aliases in AXIS_ALIASES.items()
    )
    return (
        f"{names}; or a coordinate variable with axis T/Z/Y/X or standard_name time/depth/latitude/longitude"
    )


def role_of_dim(dim: str, attrs: Mapping | None = None) -> str | None:
    """The role (time, depth, lat, lon) of one dimension, or None.

    Args:
        dim: the dimension's name in the file.
        attrs: attributes of its coordinate variable (the variable named ``dim``), if there is one.

    Returns:
        "time", "depth", "lat", "lon" or None when neither the name nor the attributes say.
    """
    role = _ROLE_OF_NAME.get(dim.lower())
    if role is not None or not attrs:
        return role
    axis = str(attrs.get("axis", "")).strip().upper()
    if axis in _ROLE_OF_AXIS:
        return _ROLE_OF_AXIS[axis]
    return _ROLE_OF_STANDARD_NAME.get(str(attrs.get("standard_name", "")).strip().lower())


def axis_roles(
    dims: Sequence[str], path: str | Path, variable: str, attrs_of: AttrsOf | None = None
) -> dict[str, str]:
    """Role -> the file's dimension name, for every dimension of one variable.

    Args:
        dims: the variable's dimension names, in the file's order.
        path: the file (for the error message).
        variable: the variable's name (for the error message).
        attrs_of: returns the attributes of the coordinate variable named like a dimension, or None when
            the file has none; without it only the names count.

    Returns:
        e.g. ``{"time": "time_counter", "depth": "deptht", "lat": "lat", "lon": "lon"}``; "time" is absent
        when the variable has no time dimension.

    Raises:
        FieldFileError: a dimension has no role, two dimensions claim one role, or depth, latitude or
            longitude is missing; the message names the file, the variable, its dims and the accepted names.
    """
    dims = tuple(dims)
    roles: dict[str, str] = {}
    for dim in dims:
        role = role_of_dim(dim, attrs_of(dim) if attrs_of is not None else None)
        if role is not None and role in roles:
            raise FieldFileError(
                f"{path}: variable '{variable}' has dims {dims}, of which both '{roles[role]}' and '{dim}' "
                f"are {CANONICAL_NAMES[role]} (accepted: {accepted_names()}); keep one "
                f"{CANONICAL_NAMES[role]} dimension in the file."
            )
        if role is not None:
            roles[role] = dim
    missing = [CANONICAL_NAMES[role] for role in REQUIRED_ROLES if role not in roles]
    if missing:
        raise FieldFileError(
            f"{path}: variable '{variable}' has dims {dims} but no {', '.join(missing)} dimension; expected "
            f"(time,) depth, latitude, longitude, accepted as {accepted_names()}. Rename the dimension in "
            "the file (e.g. `ncrename -d level,depth`) or give its coordinate variable an axis attribute; a "
            "curvilinear grid (2-D latitude/longitude) must be regridded to a regular one first."
        )
    unknown = [dim for dim in dims if dim not in roles.values()]
    if unknown:
        raise FieldFileError(
            f"{path}: variable '{variable}' has dims {dims}; {unknown} is none of time, depth, latitude, "
            f"longitude (accepted: {accepted_names()}). Drop that dimension from the file (e.g. `ncks` a "
            "single index) or name it as above."
        )
    return roles


def canonical_names(roles: Mapping[str, str]) -> dict[str, str]:
    """The renames that give a file's dimensions the export's names.

    Args:
        roles: the result of ``axis_roles``.

    Returns:
        ``{file's dim name: canonical name}`` for the dims whose name differs (empty for a CMEMS file).
    """
    return {dim: CANONICAL_NAMES[role] for role, dim in roles.items() if dim != CANONICAL_NAMES[role]}


def depth_below_surface_m(values: np.ndarray, attrs: Mapping | None, where: str) -> np.ndarray:
    """A vertical coordinate as depth below the sea surface in metres, positive down.

    CF states the direction of a vertical axis in its ``positive`` attribute and its unit in ``units``; both
    are honoured here so that every reader matches levels by the same numbers. A height axis (``positive:
    up``, values ≤ 0 below the surface) is negated. Without ``positive``, an axis whose values are all ≤ 0 is
    taken as heights, with a warning; without ``units``, metres are assumed, with a warning.

    Args:
        values: (n,) the coordinate's decoded values.
        attrs: the coordinate's attributes (``positive``, ``units``); None for none.
        where: the file and coordinate, for messages.

    Returns:
        (n,) depths in m, positive down, in the file's float precision (float64 after a unit conversion).

    Raises:
        FieldFileError: ``positive`` is neither up nor down, or the units are not a length (e.g. a pressure
            axis in dbar, which needs latitude and the TEOS-10 conversion, or a level number).
    """
    from depthdif.cf.units import parse_units, registry

    attrs = dict(attrs or {})
    depth = np.asarray(values)
    if not np.issubdtype(depth.dtype, np.floating):
        depth = depth.astype(np.float64)
    units = attrs.get("units")
    if units is None or not str(units).strip():
        log.warning("%s: the depth axis has no units attribute; metres assumed", where)
    else:
        unit = parse_units(str(units))
        if unit is None or unit.dimensionality != registry.metre.dimensionality:
            raise FieldFileError(
                f"{where}: the depth axis has units {units!r}, not a length; give depth in m (a pressure "
                "axis in dbar must be converted to depth first, e.g. with gsw.z_from_p)."
            )
        if unit != registry.metre:  # metres keep the file's precision (the index writes them as stored)
            depth = registry.Quantity(depth.astype(np.float64), unit).to(registry.metre).magnitude
    positive = str(attrs.get("positive", "")).strip().lower()
    if positive not in ("", "up", "down"):
        raise FieldFileError(f"{where}: positive={attrs['positive']!r}; CF allows 'up' or 'down' only.")
    finite = depth[np.isfinite(depth)]
    if positive == "up":
        return -depth
    if positive == "" and finite.size and (finite <= 0).all() and (finite < 0).any():
        log.warning("%s: the depth axis has no 'positive' attribute and only values <= 0; read as heights "
                    "(positive up) and negated", where)
        return -depth
    return depth


DEPTH_TOLERANCE = 0.02  # a file level within 2 % (+1 cm) of a trained depth counts as that depth


def match_levels(axis: np.ndarray, wanted: Sequence[float]) -> list[int | None]:
    """Position in ``axis`` of the level nearest each wanted depth, or None where none is close enough.

    Args:
        axis: (L,) depth of each level of a file (m, positive down).
        wanted: depths (m) to find, e.g. the levels a model was trained on.

    Returns:
        One position in ``axis`` per wanted depth; None where no level is within ``DEPTH_TOLERANCE``.
    """
    axis = np.asarray(axis, dtype=float)
    positions: list[int | None] = []
    for depth in wanted:
        nearest = int(np.argmin(np.abs(axis - depth)))
        close = abs(axis[nearest] - depth) <= DEPTH_TOLERANCE * depth + 0.01
        positions.append(nearest if close else None)
    return positions


def same_levels(trained: Sequence[float], found: Sequence[float]) -> bool:
    """True when ``found`` holds, position by position, the levels ``trained`` (within the match tolerance).

    Args:
        trained: depths (m) of the levels wanted.
        found: depths (m) of the levels read.

    Returns:
        False also when the counts differ.
    """
    if len(trained) != len(found):
        return False
    return all(abs(f - t) <= DEPTH_TOLERANCE * t + 0.01 for t, f in zip(trained, found, strict=True))
