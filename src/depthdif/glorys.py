"""Facts of the GLORYS12V1 monthly files (cmems_mod_glo_phy_my_0.083deg_P1M-m) shared by every stage."""

from __future__ import annotations

import datetime
import re

DATASET_ID = "cmems_mod_glo_phy_my_0.083deg_P1M-m"
FILE_TEMPLATE = "mercatorglorys12v1_gl12_mean_{year:04d}{month:02d}.nc"

# int16 packing of thetao in the real files
THETAO_SCALE_FACTOR = 0.000732444226741791
THETAO_ADD_OFFSET = 21.0
FILL_VALUE_INT16 = -32767

# the 50 depth levels (m) of the real files
DEPTH_LEVELS_M = (
    0.494025, 1.541375, 2.645669, 3.819495, 5.078224, 6.440614, 7.92956, 9.572997, 11.405, 13.46714,
    15.81007, 18.49556, 21.59882, 25.21141, 29.44473, 34.43415, 40.34405, 47.37369, 55.76429, 65.80727,
    77.85385, 92.32607, 109.7293, 130.666, 155.8507, 186.1256, 222.4752, 266.0403, 318.1274, 380.213,
    453.9377, 541.0889, 643.5668, 763.3331, 902.3393, 1062.44, 1245.291, 1452.251, 1684.284, 1941.893,
    2225.078, 2533.336, 2865.703, 3220.82, 3597.032, 3992.484, 4405.224, 4833.291, 5274.784, 5727.917,
)

# _YYYYMM.nc / _YYYYMMDD.nc (DepthDif's own names) and _YYYY-MM-DD.nc (Copernicus Marine subset names)
_DATE_SUFFIX = re.compile(r"_(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})?\.nc$")
_ISO_DATE_SUFFIX = re.compile(r"_(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})\.nc$")
MID_MONTH_DAY = 15


def file_name(year: int, month: int) -> str:
    return FILE_TEMPLATE.format(year=year, month=month)


def date_of_file(name: str) -> int | None:
    """YYYYMMDD from a file name's date suffix, or None when the name has none.

    Args:
        name: a file name (or path) ending in ``_YYYYMM.nc`` (-> the 15th: mid-month), ``_YYYYMMDD.nc`` or
            ``_YYYY-MM-DD.nc`` (Copernicus Marine subsets, e.g. ``..._thetao_..._2010-07-01.nc``).

    Returns:
        the date as an int (e.g. 20101115), or None when the name has no such suffix or it is not a real
        date. The file's own time coordinate is the better source: see ``depthdif.cf.dates``.
    """
    match = _DATE_SUFFIX.search(name) or _ISO_DATE_SUFFIX.search(name)
    if not match:
        return None
    year, month = int(match["year"]), int(match["month"])
    day = int(match["day"]) if match["day"] else MID_MONTH_DAY
    try:
        datetime.date(year, month, day)
    except ValueError:
        return None
    return year * 10000 + month * 100 + day


def own_file_date(name: str) -> int:
    """YYYYMMDD of a file DepthDif named itself (``file_name``): its name always carries the month.

    Args:
        name: a name written by ``file_name`` (``..._YYYYMM.nc``).

    Returns:
        the mid-month date, e.g. 20101115.

    Raises:
        ValueError: the name has no date suffix, which means a bug in the caller, not a user's file.
    """
    date = date_of_file(name)
    if date is None:
        raise ValueError(f"{name} is not a name DepthDif writes (…_YYYYMM.nc): a bug, please report it")
    return date
