"""The base of every error DepthDif raises on purpose: a problem with the user's input, config or files.

Each subclass carries a message that names the file, key or value and says what to do, so the CLI can print
it as one line (a traceback would bury it); anything that is not a DepthDifError is a bug in DepthDif.
"""

from __future__ import annotations


class DepthDifError(Exception):
    """An input, file or setting DepthDif cannot use; the message says which one and what to do."""
