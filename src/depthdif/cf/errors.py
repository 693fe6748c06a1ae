"""The one error of the CF reading layer."""

from __future__ import annotations

from depthdif.errors import DepthDifError


class FieldFileError(DepthDifError, ValueError):
    """A NetCDF field file cannot be read as the data it claims to hold.

    The message names the file, the variable or attribute, the value found and what to change in the file
    (or in the config) so that DepthDif reads it correctly.
    """
