"""Shared fixtures: the repository root, the real GLORYS sample, a tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLE_DIR = REPO / "tests" / "data" / "glorys12_nwmexico"


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def real_sample_dir() -> Path:
    return REAL_SAMPLE_DIR
