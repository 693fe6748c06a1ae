"""One logging set-up for the CLI and the Snakemake scripts."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

UNCAUGHT_LOGGER = "depthdif.uncaught"


def setup_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> logging.Logger:
    """Log to stderr and, when given (Snakemake's ``log:``), to a file as well.

    With a file, an exception that ends the process is written to it too (with its traceback): Snakemake
    points the user at the rule's log when a job fails, and the error has to be there, not only on the
    terminal of a job that may have run on another node.

    Args:
        log_file: the log file, created with its folder and overwritten; None logs to stderr only.
        level: the logging level of both handlers.

    Returns:
        The ``depthdif`` logger.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, mode="w")
        handlers.append(file_handler)
        _log_uncaught_exceptions_to(file_handler)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    return logging.getLogger("depthdif")


def _log_uncaught_exceptions_to(handler: logging.Handler) -> None:
    """Send an exception that ends the process to ``handler`` only (stderr gets Python's own report once)."""
    uncaught = logging.getLogger(UNCAUGHT_LOGGER)
    uncaught.handlers = [handler]
    uncaught.propagate = False

    def hook(exc_type, exc, tb) -> None:
        if not issubclass(exc_type, KeyboardInterrupt):
            uncaught.critical("stopped by %s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))
        sys.__excepthook__(exc_type, exc, tb)

    sys.excepthook = hook
