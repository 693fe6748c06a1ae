"""Reruns: an unchanged rerun does nothing; a changed config value reruns exactly the stages downstream of it.

Each rule passes its config section as ``params``, so Snakemake's ``params`` rerun trigger (on by default)
sees the change; everything downstream reruns because its input is about to be regenerated. The table in
docs/hpc.md ("Which config changes rerun what") is the same as CHANGES below.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
DATA_RULES = {"download", "export", "split"}
MODEL_RULES = {"train_temp_v1", "train_eo_4band", "evaluate_temp_v1", "evaluate_eo_4band"}
NOTHING_TO_DO = "Nothing to be done"

# (config change, rules a dry run of the data targets plans afterwards)
CHANGES = [
    ({"split": {"seed": 7}}, {"split"}),
    ({"export": {"patch_size": 32}}, {"export", "split"}),
    ({"source": {"months": [1]}}, {"download", "export", "split"}),
    ({"dataset": {"mask_fraction": 0.5}}, set()),  # only the model stages read it: see the slow test
]
TRAIN_RULES = {"train_temp_v1", "train_eo_4band"}
# (config change, rules a dry run of the whole DAG must plan, rules it must not) once everything has run.
# Not an exact set: later evaluation rules that read the same sections rerun too, and that is right.
MODEL_CHANGES = [
    ({"dataset": {"mask_fraction": 0.5}}, MODEL_RULES, DATA_RULES),
    ({"evaluate": {"ensemble_size": 3}}, MODEL_RULES - TRAIN_RULES, DATA_RULES | TRAIN_RULES),
]


def change_id(value: object) -> str:
    """Test id of a CHANGES entry: ``split.seed=7`` for a change, the sorted rule names for an expectation."""
    if isinstance(value, dict):
        (section, inner), = value.items()
        (key, new), = inner.items()
        return f"{section}.{key}={new}"
    return "+".join(sorted(value)) or "nothing"


def snakemake(workdir: Path, *args: str, change: dict | None = None, timeout: int = 300) -> str:
    """Run the Snakefile on the tiny config (+ ``change`` as a last --configfile) in ``workdir``; stdout+stderr."""
    configfiles = [str(REPO / "config" / "config.yaml"), str(TINY)]
    if change:
        override = workdir / "change.yaml"
        override.write_text(yaml.safe_dump(change))
        configfiles.append(str(override))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", *configfiles, "--cores", "2", *args]  # --cores ends the configfile list
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=workdir)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def planned_rules(dry_run_output: str) -> set[str]:
    """Rules listed in the first 'Job stats' table of a dry run (empty when there is nothing to do).

    The target pseudo-rule ``all`` (no outputs, listed whenever anything below it runs) is left out.
    """
    if NOTHING_TO_DO in dry_run_output:
        return set()
    table = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s+\d+", dry_run_output, re.DOTALL)
    assert table, f"no 'Job stats' table in the dry run:\n{dry_run_output[-3000:]}"
    return {line.split()[0] for line in table.group(1).splitlines()} - {"all"}


@pytest.fixture(scope="module")
def data_built(tmp_path_factory) -> Path:
    """A working directory where the data targets (download, export, split) have run once."""
    workdir = tmp_path_factory.mktemp("reruns")
    snakemake(workdir, "split")
    return workdir


def test_unchanged_rerun_does_nothing(data_built):
    assert NOTHING_TO_DO in snakemake(data_built, "-n", "split")


@pytest.mark.parametrize(("change", "expected"), CHANGES, ids=change_id)
def test_a_config_change_reruns_only_downstream_stages(data_built, change, expected):
    planned = planned_rules(snakemake(data_built, "-n", "split", change=change))
    assert planned == expected


def test_mtime_trigger_alone_ignores_config_changes(data_built):
    # What `--rerun-triggers mtime` (the pre-8 behaviour) would do: the params trigger is what catches edits.
    output = snakemake(data_built, "-n", "split", "--rerun-triggers", "mtime", change={"split": {"seed": 7}})
    assert NOTHING_TO_DO in output


@pytest.fixture(scope="module")
def dag_built(tmp_path_factory) -> Path:
    """A working directory where the whole default DAG (`all`) has run once; shared by the slow tests."""
    workdir = tmp_path_factory.mktemp("reruns-all")
    snakemake(workdir, "all", timeout=1200)
    return workdir


@pytest.mark.slow
def test_unchanged_rerun_of_the_whole_dag_does_nothing(dag_built):
    assert NOTHING_TO_DO in snakemake(dag_built, "-n", "all")


@pytest.mark.slow
@pytest.mark.parametrize(("change", "rerun", "kept"), MODEL_CHANGES, ids=change_id)
def test_whole_dag_reruns_only_model_stages(dag_built, change, rerun, kept):
    planned = planned_rules(snakemake(dag_built, "-n", "all", change=change))
    assert rerun <= planned
    assert not planned & kept
