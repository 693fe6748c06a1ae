"""The Snakemake DAG itself: targets, lint, and the data stages run end to end in a temporary folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile with the tiny config in ``workdir``."""
    command = [
        *SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), str(TINY), *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=workdir)


def test_dry_run_lists_every_contract_target(tmp_path):
    result = snakemake(tmp_path, "-n", "--cores", "1")
    assert result.returncode == 0, result.stderr
    for target in ("download", "export", "split", "train_temp_v1", "train_eo_4band",
                   "evaluate_temp_v1", "evaluate_eo_4band"):
        assert target in result.stdout
    named = snakemake(tmp_path, "-n", "--cores", "1", "train_eo_4band")
    assert named.returncode == 0, named.stderr
    assert "evaluate_eo_4band" not in named.stdout


def test_lint_is_clean(tmp_path):
    result = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_config_key_stops_the_run(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("export:\n  patch_sise: 32\n")
    result = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(REPO / "config" / "config.yaml"),
                       str(bad))
    assert result.returncode != 0
    assert "patch_sise" in result.stdout + result.stderr


def test_split_target_writes_the_contract_files(tmp_path):
    result = snakemake(tmp_path, "--cores", "2", "split")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = pd.read_csv(tmp_path / "data" / "raw" / "manifest.csv")
    assert list(manifest.columns[:4]) == ["file", "bytes", "sha256", "date"]
    assert len(manifest) == 4  # 2 years x 2 months
    index = pd.read_csv(tmp_path / "data" / "patches" / "patch_index_with_paths.csv")
    split = pd.read_csv(tmp_path / "data" / "patches" / "patch_index_split.csv")
    required = {"sample_id", "source_file", "date", "y0", "x0", "patch_size", "lat0", "lat1", "lon0", "lon1",
                "nodata_fraction", "y_npy_path", "variable", "depth_indices", "depth_values", "num_channels",
                "split"}
    assert required <= set(index.columns)
    assert required | {"window_id"} <= set(split.columns)
    assert set(split["split"]) == {"train", "val"}
    assert not set(split.loc[split.split == "train", "window_id"]) & set(split.loc[split.split == "val", "window_id"])
    for rel in index["y_npy_path"]:
        assert (tmp_path / "data" / "patches" / rel).is_file()
    # a second run has nothing to do
    again = snakemake(tmp_path, "--cores", "2", "split", "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
