"""The rule's log file holds the error that stopped its script (Snakemake sends users to that file)."""

from __future__ import annotations

import subprocess
import sys


def test_uncaught_error_reaches_the_log_file_once(tmp_path):
    log_file = tmp_path / "logs" / "export.log"
    script = (
        "from depthdif.logs import setup_logging\n"
        f"setup_logging({str(log_file)!r})\n"
        "import logging; logging.getLogger('depthdif').info('started')\n"
        "raise ValueError('data/raw/x.nc: variable thetao not found')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 1
    text = log_file.read_text()
    assert "started" in text
    assert "ValueError: data/raw/x.nc: variable thetao not found" in text and "Traceback" in text
    # the terminal gets Python's own report, once
    assert run.stderr.count("variable thetao not found") == 1


def test_keyboard_interrupt_is_not_logged_as_an_error(tmp_path):
    log_file = tmp_path / "run.log"
    script = f"from depthdif.logs import setup_logging\nsetup_logging({str(log_file)!r})\nraise KeyboardInterrupt\n"
    subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "CRITICAL" not in log_file.read_text()
