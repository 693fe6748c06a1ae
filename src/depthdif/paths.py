"""Paths read from CSVs and configs stay inside the folder they are relative to."""

from __future__ import annotations

import os
from pathlib import Path

from depthdif.errors import DepthDifError


class PathEscapeError(DepthDifError, ValueError):
    """A path from an index, manifest or config points outside its folder."""


def resolve_inside(root: str | Path, relative: str | Path, what: str) -> Path:
    """``root / relative``, refusing '..' or absolute paths that leave ``root`` (``what`` names the row)."""
    base = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.join(base, str(relative)))
    if os.path.commonpath([base, path]) != base:
        raise PathEscapeError(
            f"{what}: path '{relative}' points outside {base}; paths there must be relative to that folder."
        )
    return Path(path)
