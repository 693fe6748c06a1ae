"""CF decoding of stored values: what is no data, and the unpacked values of the rest.

One function for every reader (netCDF4 with ``set_auto_maskandscale(False)``, xarray with
``mask_and_scale=False``): ``decode_values(raw, attrs, where)``. It follows the NetCDF User Guide and CF
section 2.5.1 / 8.1 the way netCDF4-python's auto mask/scale does, without masked arrays:

- no data: the stored value equals ``_FillValue`` (without one: the netCDF default fill of the stored type,
  except for bytes), equals a ``missing_value``, or lies outside ``valid_range`` (else ``valid_min`` /
  ``valid_max``). All of these are compared with the STORED (packed) values, as CF says.
- ``_Unsigned = "true"`` on a signed integer type: the stored bits are read as unsigned.
- the rest is unpacked as ``stored * scale_factor + add_offset`` in the attributes' precision (float64 for
  CMEMS files), then cast to float32. For the CMEMS int16 packing this is exactly the old export fast path:
  one comparison for the fill, one multiply-add, bit-identical to netCDF4's values.

A valid_min/valid_max/valid_range written as floating-point numbers on packed integers is the one case that
is not decoded silently when it would remove (nearly) every value: producers often write it in unpacked
units, and CF's reading then masks the whole field. DepthDif stops and names the attribute instead of
guessing which reading was meant.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from depthdif.cf.errors import FieldFileError

# netCDF default fill values by stored type (netCDF-C netcdf.h NC_FILL_*); bytes have none by convention
DEFAULT_FILL_VALUES = {
    "i2": -32767, "u2": 65535, "i4": -2147483647, "u4": 4294967295,
    "i8": -9223372036854775806, "u8": 18446744073709551614,
    "f4": 9.969209968386869e36, "f8": 9.969209968386869e36,
}  # fmt: skip
# a float valid_* on packed integers that removes more than this share of the non-fill values is refused
NEARLY_ALL = 0.9
_VALID_ATTRS = ("valid_range", "valid_min", "valid_max")


def decode_values(raw: np.ndarray, attrs: Mapping, where: str) -> np.ndarray:
    """Decode raw stored values with the variable's CF attributes.

    Args:
        raw: the values as stored in the file, any shape (read without auto mask/scale); not modified.
        attrs: the variable's attributes (_FillValue, missing_value, valid_min, valid_max, valid_range,
            _Unsigned, scale_factor, add_offset; others are ignored).
        where: the file and variable, for error messages (e.g. ``"a.nc, variable 'thetao'"``).

    Returns:
        float32 array of ``raw``'s shape, in the variable's units; NaN where there is no data.

    Raises:
        FieldFileError: an attribute is not numeric or has the wrong number of values, or a floating-point
            valid_min/valid_max/valid_range on packed integers would remove nearly every value.
        TypeError: ``raw`` is a masked array (the reader left auto masking on: a bug of the caller).
    """
    if isinstance(raw, np.ma.MaskedArray):
        raise TypeError(
            f"{where}: decode_values needs the raw stored values, not a masked array; read them "
            "with set_auto_maskandscale(False) (netCDF4) or mask_and_scale=False (xarray)"
        )
    raw = np.asarray(raw)
    stored = _unsigned_view(raw, attrs)
    missing = _missing_mask(stored, raw.dtype, attrs, where)
    outside = _outside_valid_mask(stored, raw.dtype, attrs, where)
    if outside is not None:
        _check_valid_reading(stored, missing, outside, attrs, where)
        missing = outside if missing is None else missing | outside
    values = _unpack(stored, attrs, where)
    if missing is not None:
        values[missing] = np.nan
    return values


def is_packed(attrs: Mapping) -> bool:
    """True when the variable has scale_factor or add_offset (its stored values are not its values)."""
    return "scale_factor" in attrs or "add_offset" in attrs


# ------------------------------------------------------------------------------------------ no data


def _unsigned_view(raw: np.ndarray, attrs: Mapping) -> np.ndarray:
    if raw.dtype.kind == "i" and str(attrs.get("_Unsigned", "")).strip().lower() == "true":
        return raw.view(raw.dtype.str.replace("i", "u"))
    return raw


def _numbers(attrs: Mapping, name: str, where: str) -> np.ndarray:
    """An attribute as a flat numeric array."""
    values = np.atleast_1d(np.asarray(attrs[name])).ravel()
    if values.dtype.kind not in "biuf":
        raise FieldFileError(
            f"{where}: attribute {name}={attrs[name]!r} is not a number; CF needs a number of the variable's "
            f"type: fix or delete it (e.g. `ncatted -a {name},VARIABLE,d,, FILE`)"
        )
    return values


def _storable(values: np.ndarray, raw_dtype: np.dtype, stored_dtype: np.dtype) -> np.ndarray:
    """The attribute values that a stored value can equal, in the stored type (others cannot occur)."""
    if raw_dtype.kind in "iu":
        low = min(np.iinfo(raw_dtype).min, np.iinfo(stored_dtype).min)
        high = max(np.iinfo(raw_dtype).max, np.iinfo(stored_dtype).max)
        as_float = values.astype(np.float64)
        keep = (
            np.isfinite(as_float) & (as_float == np.round(as_float)) & (as_float >= low) & (as_float <= high)
        )
        values = values[keep]
        # signed attributes of an _Unsigned variable: the same bits, as netCDF4 reads them
        return values.astype(np.int64).astype(raw_dtype).view(stored_dtype)
    with np.errstate(over="ignore"):  # 1e300 on float32 data becomes inf, which no value equals
        return values.astype(stored_dtype)


def _missing_mask(stored: np.ndarray, raw_dtype: np.dtype, attrs: Mapping, where: str) -> np.ndarray | None:
    """True where the stored value is _FillValue (or the default fill) or a missing_value."""
    candidates = []
    if "_FillValue" in attrs:
        candidates.append(_numbers(attrs, "_FillValue", where)[:1])
    elif raw_dtype.str[1:] in DEFAULT_FILL_VALUES:
        candidates.append(np.array([DEFAULT_FILL_VALUES[raw_dtype.str[1:]]]))
    if "missing_value" in attrs:
        candidates.append(_numbers(attrs, "missing_value", where))
    mask = None
    for values in candidates:
        for value in _storable(values, raw_dtype, stored.dtype):
            if np.isnan(value):
                continue  # NaN stays NaN when unpacked
            hit = stored == value
            mask = hit if mask is None else mask | hit
    return mask


def _bound(value, raw_dtype: np.dtype, stored_dtype: np.dtype):
    """A valid_* value to compare with stored values: in the stored type where it is a whole number."""
    storable = _storable(np.atleast_1d(value), raw_dtype, stored_dtype)
    return storable[0] if storable.size else np.float64(value)


def _valid_bounds(attrs: Mapping, where: str) -> tuple[object, object]:
    """(low, high) of the valid range as given (None where absent); valid_range wins, as in netCDF4."""
    if "valid_range" in attrs:
        pair = _numbers(attrs, "valid_range", where)
        if pair.size != 2:
            raise FieldFileError(
                f"{where}: valid_range={list(pair)} must hold 2 numbers (min, max); fix or delete it"
            )
        return pair[0], pair[1]
    low = _numbers(attrs, "valid_min", where)[0] if "valid_min" in attrs else None
    high = _numbers(attrs, "valid_max", where)[0] if "valid_max" in attrs else None
    return low, high


def _outside_valid_mask(
    stored: np.ndarray, raw_dtype: np.dtype, attrs: Mapping, where: str
) -> np.ndarray | None:
    """True where the stored value lies outside the valid range (compared in stored units, as CF says)."""
    low, high = _valid_bounds(attrs, where)
    mask = None
    if low is not None:
        mask = stored < _bound(low, raw_dtype, stored.dtype)
    if high is not None:
        above = stored > _bound(high, raw_dtype, stored.dtype)
        mask = above if mask is None else mask | above
    return mask


def _check_valid_reading(
    stored: np.ndarray, missing: np.ndarray | None, outside: np.ndarray, attrs: Mapping, where: str
) -> None:
    """Refuse float valid_* on packed integers that would remove (nearly) all the data: see the module doc."""
    given = [name for name in _VALID_ATTRS if name in attrs]
    float_typed = any(_numbers(attrs, name, where).dtype.kind == "f" for name in given)
    if stored.dtype.kind not in "iu" or not is_packed(attrs) or not float_typed:
        return
    candidates = stored.size if missing is None else stored.size - int(np.count_nonzero(missing))
    removed = int(np.count_nonzero(outside if missing is None else outside & ~missing))
    if candidates == 0 or removed <= NEARLY_ALL * candidates:
        return
    low, high = _valid_bounds(attrs, where)
    scale = float(_scalar(attrs, "scale_factor", where) or 1.0)
    offset = float(_scalar(attrs, "add_offset", where) or 0.0)
    stated = ", ".join(f"{name}={_numbers(attrs, name, where).tolist()}" for name in given)
    unpacked = " .. ".join(_unpacked_text(b, scale, offset) for b in (low, high))
    packed = " .. ".join(_packed_text(b, scale, offset, stored.dtype) for b in (low, high))
    raise FieldFileError(
        f"{where}: {stated} are floating-point numbers on {stored.dtype} values packed with "
        f"scale_factor={scale} and add_offset={offset}. CF reads valid_min/valid_max/valid_range in the "
        f"stored (packed) units, i.e. {unpacked} after unpacking, which would remove {removed} of the "
        f"{candidates} values that are not _FillValue ({removed / candidates:.1%}). They look like unpacked "
        "units, but DepthDif does not guess: delete them (e.g. `ncatted -a valid_min,VARIABLE,d,, "
        "-a valid_max,VARIABLE,d,, FILE`) or write them in packed units "
        f"(round((value - add_offset) / scale_factor) as {stored.dtype}: {packed})."
    )


def _unpacked_text(bound, scale: float, offset: float) -> str:
    return "unbounded" if bound is None else f"{float(bound) * scale + offset:.6g}"


def _packed_text(bound, scale: float, offset: float, dtype: np.dtype) -> str:
    if bound is None:
        return "unbounded"
    info = np.iinfo(dtype)
    return str(int(np.clip(np.round((float(bound) - offset) / scale), info.min, info.max)))


# ------------------------------------------------------------------------------------------ unpacking


def _scalar(attrs: Mapping, name: str, where: str):
    """scale_factor / add_offset as a numpy scalar of the attribute's type (None when absent)."""
    if name not in attrs:
        return None
    values = _numbers(attrs, name, where)
    if values.size != 1:
        raise FieldFileError(f"{where}: attribute {name} has {values.size} values; CF needs one number")
    return values[0]


def _unpack(stored: np.ndarray, attrs: Mapping, where: str) -> np.ndarray:
    """stored * scale_factor + add_offset as netCDF4 computes it, then float32 (always a new array)."""
    scale = _scalar(attrs, "scale_factor", where)
    offset = _scalar(attrs, "add_offset", where)
    data = stored
    if scale is not None and offset is not None:
        # netCDF4's expression and precision; with 1 and 0 it only casts to the attributes' type
        data = stored * scale + offset if (offset != 0 or scale != 1) else stored.astype(scale.dtype)
    elif scale is not None and scale != 1:
        data = stored * scale
    elif offset is not None and offset != 0:
        data = stored + offset
    return data.astype(np.float32, copy=data is stored)
