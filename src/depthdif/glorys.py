"""Facts of the GLORYS12V1 monthly files (cmems_mod_glo_phy_my_0.083deg_P1M-m) shared by every stage."""

from __future__ import annotations

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

_MONTH_SUFFIX = re.compile(r"_(\d{6}|\d{8})\.nc$")


def file_name(year: int, month: int) -> str:
    return FILE_TEMPLATE.format(year=year, month=month)


def date_of_file(name: str) -> int:
    """YYYYMMDD of a file from its ``_YYYYMM.nc`` / ``_YYYYMMDD.nc`` suffix; mid-month for monthly files.

    Anything else gives 19700115 so that a file with an odd name still has a (clearly fake) date.
    """
    match = _MONTH_SUFFIX.search(name)
    if not match:
        return 19700115
    digits = match.group(1)
    return int(digits) if len(digits) == 8 else int(digits + "15")
