"""Temperature units: which variables are temperatures, their conversion to °C, and a sanity range.

Units are parsed with cf-xarray's pint registry (UDUNITS-style) extended with the UDUNITS-2 spellings of
kelvin and degree Celsius that pint does not know, so that every unit string UDUNITS-2 (hence CF) accepts
for a temperature is read as one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pint

from depthdif.cf.errors import FieldFileError

log = logging.getLogger(__name__)


def _cf_registry() -> pint.UnitRegistry:
    """cf-xarray's registry, imported without pint's "Redefining '%'" warnings: cf-xarray redefines percent,
    year and C with their CF meanings on purpose, and every rule's log would open with ten such lines."""
    pint_log = logging.getLogger("pint.util")
    level = pint_log.level
    pint_log.setLevel(logging.ERROR)
    try:
        from cf_xarray.units import units
    finally:
        pint_log.setLevel(level)
    return units


registry = _cf_registry()

# The UDUNITS-2 aliases of kelvin and degree_Celsius (the units themselves are in udunits2-base.xml and
# udunits2-derived.xml; these aliases are in udunits2-common.xml, "Synonym for SI unit"), plus "kelvins",
# the automatic plural, and "˚K" (ring above instead of degree sign), seen in files in the wild. Only the
# spellings the registry cannot parse yet are defined, so importing this twice (or a newer cf-xarray that
# has some of them) changes nothing.
UDUNITS_TEMPERATURE_ALIASES = {
    "kelvin": (
        "degree_kelvin", "degrees_kelvin", "degree_K", "degrees_K", "degreeK", "degreesK", "deg_K", "degs_K",
        "degK", "degsK", "kelvins", "°K", "˚K",
    ),
    "degree_Celsius": (
        "degree_C", "degrees_C", "degreeC", "degreesC", "deg_C", "degs_C", "degC", "degsC", "celsius",
        "degrees_Celsius", "°C",
    ),
}  # fmt: skip
# UDUNITS-2 compares unit NAMES case-insensitively (udunits2lib.texi, ut_get_unit_by_name), symbols not:
# "Kelvin" and "DEGREES_C" are valid there, so they are here
_NAMES_ANY_CASE = {
    alias.lower(): unit
    for unit, aliases in UDUNITS_TEMPERATURE_ALIASES.items()
    for alias in (unit, *aliases)
    if alias.isascii()
}
# characters pint's tokenizer cannot read, replaced before parsing (℃ is UDUNITS-2's DEGREE CELSIUS)
_SYMBOLS = {"℃": "degree_Celsius", "℉": "degree_Fahrenheit"}
# sea water (including brines under sea ice and shallow tropical lagoons) stays inside this range
SEA_WATER_MIN_C, SEA_WATER_MAX_C = -3.0, 45.0
# variable names of temperature in CMEMS, NEMO, WOA and CMIP files (lower case)
TEMPERATURE_NAMES = frozenset(
    {"thetao", "thetaot", "votemper", "temp", "temperature", "potemp", "to", "tos", "tob", "bottomt", "sst",
     "analysed_sst", "t_an", "t_mn"}
)  # fmt: skip
CELSIUS_UNITS = "degrees_C"


def _parses(text: str) -> bool:
    try:
        registry.Unit(text)
    except Exception:  # pint's parser raises many types (AssertionError, tokenize errors) on odd strings
        return False
    return True


def _extend_registry() -> None:
    for unit, aliases in UDUNITS_TEMPERATURE_ALIASES.items():
        missing = [alias for alias in aliases if not _parses(alias)]
        if missing:
            registry.define(f"@alias {unit} = {' = '.join(missing)}")


_extend_registry()


def parse_units(text: str | None) -> pint.Unit | None:
    """A units attribute as a pint unit, or None when it is empty or not a unit the registry knows.

    Args:
        text: the units attribute as written in the file.

    Returns:
        the unit, or None.
    """
    text = "" if text is None else str(text).strip()
    for symbol, name in _SYMBOLS.items():
        text = text.replace(symbol, name)
    text = _NAMES_ANY_CASE.get(text.lower(), text)
    if not text or not _parses(text):
        return None
    return registry.Unit(text)


def is_temperature_unit(text: str | None) -> bool:
    """True when ``text`` parses as an absolute temperature unit (K, degrees_C, degF, ...)."""
    unit = parse_units(text)
    if unit is None or unit.dimensionality != registry.kelvin.dimensionality:
        return False
    try:  # a temperature difference (delta_degC) or a product like "degrees Celsius" has no zero point
        registry.Quantity(0.0, unit).to(registry.degree_Celsius)
    except pint.PintError:
        return False
    return True


def is_temperature(variable: str, attrs: Mapping) -> bool:
    """Whether a variable holds temperatures: by standard_name, by name, or by its units.

    Args:
        variable: the variable's name in the file.
        attrs: its attributes (standard_name and units are read).

    Returns:
        True for e.g. thetao, any standard_name containing "temperature", or units in K/°C/°F.
    """
    if "temperature" in str(attrs.get("standard_name", "")).lower():
        return True
    return variable.lower() in TEMPERATURE_NAMES or is_temperature_unit(attrs.get("units"))


def check_temperature_units(units: str | None, where: str) -> None:
    """Stop unless ``units`` is a temperature; warn when it is missing (°C is then assumed).

    Args:
        units: the variable's units attribute (None when absent).
        where: the file and variable, for the messages.

    Raises:
        FieldFileError: the units are not a temperature unit (e.g. psu or m on thetao) or cannot be parsed.
    """
    text = "" if units is None else str(units).strip()
    if not text:
        log.warning("%s has no units attribute; assuming °C (set units to degrees_C or K in the file)", where)
        return
    if not is_temperature_unit(text):
        raise FieldFileError(
            f"{where}: units '{text}' are not a temperature unit, but the variable is a temperature. Fix the "
            "units attribute (e.g. `ncatted -a units,VARIABLE,o,c,degrees_C FILE`; K, degC and the other "
            "UDUNITS-2 spellings are read) or set export.variable to the variable you meant."
        )


def to_celsius(values: np.ndarray, units: str | None, where: str) -> np.ndarray:
    """Temperatures in any temperature unit converted to °C.

    Args:
        values: float32 array of any shape in ``units``; NaN = no data. Not modified.
        units: the variable's units attribute; empty or None means °C (with a warning).
        where: the file and variable, for the messages.

    Returns:
        float32 array in °C (``values`` itself when already in °C).

    Raises:
        FieldFileError: the units are not a temperature unit.
    """
    check_temperature_units(units, where)
    unit = parse_units(units)
    if unit is None or unit == registry.degree_Celsius:
        return values
    log.info("%s: converting %s to °C", where, units)
    if unit == registry.kelvin:
        # float32 arithmetic, as the export always did (float32 K carries ~3e-5 K steps anyway)
        return values - np.float32(273.15)
    celsius = registry.Quantity(np.asarray(values, dtype=np.float64), unit).to(registry.degree_Celsius)
    return np.asarray(celsius.magnitude, dtype=np.float32)


def check_sea_water_temperature(values_c: np.ndarray, where: str,
                                how_to_declare: str = "export.fill_values") -> None:
    """Stop when a temperature lies outside what sea water can hold (wrong units or land as a number).

    Args:
        values_c: temperatures in °C, any shape; NaN = no data.
        where: the file and variable, for the message.
        how_to_declare: how the user declares a fill value where this is called.

    Raises:
        FieldFileError: naming the file, how many cells lie outside -3..45 °C and the range found.
    """
    bad = np.count_nonzero((values_c < SEA_WATER_MIN_C) | (values_c > SEA_WATER_MAX_C))  # NaN: False
    if bad:
        raise FieldFileError(
            f"{where}: {bad} of {np.count_nonzero(np.isfinite(values_c))} cells hold temperatures outside "
            f"{SEA_WATER_MIN_C:g}..{SEA_WATER_MAX_C:g} °C (values from {np.nanmin(values_c):.6g} to "
            f"{np.nanmax(values_c):.6g} °C after "
            "conversion from the file's units), which sea water never has. Check the units attribute (a "
            "file in Kelvin must say K) and whether land or missing values are written as a number "
            f"(declare it with {how_to_declare})."
        )
