"""Land written as a number: a file without _FillValue that stores land as 0, -999, 1e20, ...

Decoding cannot see these (they are ordinary numbers), and as °C a 0 is a plausible temperature, so they
would enter training as water. The sign is a cell holding one of the usual sentinels at every exported level
(real water is never identical at the surface and 65 m, let alone equal to -999). Such cells stop the export
unless the user declares the value (``export.fill_values``); a declared value then means "no data" wherever
it appears, at any level, like an extra _FillValue.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from depthdif.cf.decode import DEFAULT_FILL_VALUES
from depthdif.cf.errors import FieldFileError

# sentinels seen in ocean products for land/no data, in the variable's (decoded) units
COMMON_FILL_VALUES = (
    0.0, 99.0, 999.0, 9999.0, 99999.0, -99.0, -999.0, -9999.0, -99999.0, 32767.0, -32767.0, -32768.0,
    1e20, -1e20, DEFAULT_FILL_VALUES["f4"], -DEFAULT_FILL_VALUES["f4"], float(np.finfo(np.float32).max),
    -float(np.finfo(np.float32).max),
)  # fmt: skip


def constant_columns(data: np.ndarray, values: Sequence[float]) -> dict[float, np.ndarray]:
    """Cells that hold one of ``values`` at every level, or at the two or more deepest levels.

    The second pattern is the sea floor written as a number: a shelf column whose levels below the bottom
    hold 0 (water above them is real). Two levels, because a single exact 0 at the deepest level can be
    cold water; a sentinel repeated exactly at consecutive depths is not.

    Args:
        data: (C, H, W) float32, decoded, in the file's units.
        values: the candidate sentinels.

    Returns:
        {value: (H, W) bool mask} for each value found in at least one cell.
    """
    found = {}
    for value in values:
        equal = data == np.float32(value)
        if not equal.any():
            continue
        # length of the run of sentinels that ends at the deepest level, per cell
        tail = np.cumprod(equal[::-1], axis=0).sum(axis=0)
        mask = (tail == data.shape[0]) | (tail >= 2)
        if mask.any():
            found[float(value)] = mask
    return found


def mask_declared(data: np.ndarray, fill_values: Sequence[float]) -> np.ndarray:
    """``data`` with every value equal to a declared fill set to NaN (in place); the declared values as float32.

    Args:
        data: float32 array of any shape, decoded, in the file's units.
        fill_values: the values the user declared as no data.

    Returns:
        (float32) the declared values, for callers that go on checking the undeclared ones.
    """
    declared = np.asarray(list(fill_values), dtype=np.float32)
    if declared.size:
        data[np.isin(data, declared)] = np.nan
    return declared


EXPORT_HINT = "export.fill_values (an override file: `export: {{fill_values: [{value!r}]}}`)"


def apply_fill_values(data: np.ndarray, fill_values: Sequence[float], where: str,
                      how_to_declare: str = EXPORT_HINT) -> np.ndarray:
    """Declared fills become NaN; an undeclared common sentinel filling whole columns stops.

    Args:
        data: (C, H, W) float32, decoded, in the file's units (before any unit conversion).
        fill_values: the values the user declared as no data (export.fill_values).
        where: the file and variable, for the message.
        how_to_declare: how the user declares a fill where this is called, with ``{value}`` for the value.

    Returns:
        ``data`` with every value equal to a declared fill set to NaN (in place when there is one).

    Raises:
        FieldFileError: cells hold an undeclared common sentinel at every level or at the deepest two or
            more; names the file, the value(s), how many cells and how to declare it.
    """
    declared = mask_declared(data, fill_values)
    undeclared = [v for v in COMMON_FILL_VALUES if not np.isin(np.float32(v), declared)]
    found = constant_columns(data, undeclared)
    if found:
        counts = ", ".join(f"{value!r} in {np.count_nonzero(mask)} cells" for value, mask in found.items())
        first = next(iter(found))
        raise FieldFileError(
            f"{where}: the same value at every level read or at the deepest two or more, {counts} of "
            f"{data.shape[1]}x{data.shape[2]}: land or sea floor written as a number (the file gives no "
            "_FillValue or missing_value for it), not water. Declare it as no data with "
            f"{how_to_declare.format(value=first)} or set _FillValue in the file."
        )
    return data
