"""Reading the per-month part files (a month's manifest rows, a month's index rows) that the gathers join."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from depthdif.errors import DepthDifError


def read_month_part(path: Path, columns: Sequence[str], error: type[DepthDifError], what: str,
                    stage: str) -> pd.DataFrame:
    """A month's part CSV, every value kept as the text it was written as (the gather copies it verbatim).

    Args:
        path: the part file.
        columns: the exact columns this version writes.
        error: the stage's error class to raise.
        what: what the file is, for messages ("manifest", "index").
        stage: the stage that writes it, for messages ("download", "export").

    Returns:
        The rows, all columns as ``str``.

    Raises:
        error: the file is missing, unreadable, or has other columns; the message says to rerun ``stage``.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise error(f"{path} is missing: run the {stage} of that month again") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise error(f"{path} is not a readable {what} ({err}); delete it and run the {stage} again") from None
    if list(frame.columns) != list(columns):
        raise error(
            f"{path} has columns {list(frame.columns)}, not {list(columns)}: it was not written by this version of "
            f"DepthDif; delete it and run the {stage} again."
        )
    return frame
