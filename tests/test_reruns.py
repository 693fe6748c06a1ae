"""Reruns: an unchanged rerun does nothing; a changed config value reruns exactly the stages downstream of it.

Each rule passes the config it reads as ``params``, so Snakemake's ``params`` rerun trigger (on by default)
sees the change; everything downstream reruns because its input is about to be regenerated. The download and
the export are one job per month (``download_month``, ``export_month``) gathered by ``download`` and
``export``: a month added reruns that month's jobs and the gathers, a month removed only the gathers. The
table in docs/hpc.md ("Which config changes rerun what") is the same as CHANGES below.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import yaml
from fakes import write_cmems_month

from depthdif import glorys

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
MONTH_RULES = {"download_month", "export_month"}
GATHER_RULES = {"download", "export", "split"}
DATA_RULES = MONTH_RULES | GATHER_RULES
MODEL_RULES = {"train_temp_v1", "train_eo_4band", "evaluate_temp_v1", "evaluate_eo_4band"}
BASELINE_RULES = {"baselines_temp_v1", "baselines_eo_4band"}
NOTHING_TO_DO = "Nothing to be done"

# (config change, rules a dry run of the data targets plans afterwards)
CHANGES = [
    ({"split": {"seed": 7}}, {"split"}),
    ({"export": {"patch_size": 32}}, {"export_month", "export", "split"}),
    ({"export": {"workers": 1}}, set()),  # the processes of the CLI's export; a month's job is one process
    ({"source": {"months": [1, 4, 7]}}, DATA_RULES),  # the new months' jobs only: see the test below
    ({"source": {"months": [1]}}, GATHER_RULES),  # months removed: nothing to fetch or cut, gathered again
    ({"dataset": {"mask_fraction": 0.5}}, set()),  # only the model stages read it: see the slow test
]
TRAIN_RULES = {"train_temp_v1", "train_eo_4band"}
# (config change, rules a dry run of the whole DAG must plan, rules it must not) once everything has run.
# Not an exact set: later evaluation rules that read the same sections rerun too, and that is right.
MODEL_CHANGES = [
    # a model-only change (training, the network, the model's sampling) reruns no baseline and no data stage
    ({"dataset": {"mask_fraction": 0.5}}, MODEL_RULES, DATA_RULES | BASELINE_RULES),
    ({"model": {"dim": 16}}, MODEL_RULES, DATA_RULES | BASELINE_RULES),
    ({"train": {"max_steps": 7}}, MODEL_RULES, DATA_RULES | BASELINE_RULES),
    ({"evaluate": {"ensemble_size": 3}}, MODEL_RULES - TRAIN_RULES, DATA_RULES | TRAIN_RULES | BASELINE_RULES),
    # a baseline setting reruns the baselines and the evaluations that score them, not the models
    ({"evaluate": {"dineof_max_modes": 5}}, BASELINE_RULES | MODEL_RULES - TRAIN_RULES, DATA_RULES | TRAIN_RULES),
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


def planned_jobs(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count of the first 'Job stats' table of a dry run (empty when there is nothing to do).

    The target pseudo-rule ``all`` (no outputs, listed whenever anything below it runs) is left out.
    """
    if NOTHING_TO_DO in dry_run_output:
        return {}
    table = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s+\d+", dry_run_output, re.DOTALL)
    assert table, f"no 'Job stats' table in the dry run:\n{dry_run_output[-3000:]}"
    counts = dict(line.split() for line in table.group(1).splitlines())
    return {rule: int(count) for rule, count in counts.items() if rule != "all"}


def planned_rules(dry_run_output: str) -> set[str]:
    """The rules of ``planned_jobs``."""
    return set(planned_jobs(dry_run_output))


def planned_months(dry_run_output: str) -> set[str]:
    """The ``month`` wildcard of every per-month job a dry run plans."""
    return set(re.findall(r"^\s+wildcards: month=(\d{6})$", dry_run_output, re.MULTILINE))


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


ONE_YEAR = {"source": {"years": [2010], "months": [1, 7]}}
ONE_MORE_MONTH = {"source": {"years": [2010], "months": [1, 4, 7]}}


def test_a_month_added_to_a_finished_run_runs_only_that_month_then_the_gathers(tmp_path):
    snakemake(tmp_path, "split", change=ONE_YEAR)
    patches = tmp_path / "data" / "patches"
    before = {p.name: p.stat().st_mtime_ns for p in (patches / "y_npy").iterdir()}

    plan = snakemake(tmp_path, "-n", "split", change=ONE_MORE_MONTH)
    assert planned_jobs(plan) == {"download_month": 1, "export_month": 1, "download": 1, "export": 1, "split": 1}
    assert planned_months(plan) == {"201004"}

    snakemake(tmp_path, "split", change=ONE_MORE_MONTH)
    assert NOTHING_TO_DO in snakemake(tmp_path, "-n", "split", change=ONE_MORE_MONTH)
    manifest = pd.read_csv(tmp_path / "data" / "raw" / "manifest.csv")
    assert list(manifest["file"]) == [glorys.file_name(2010, month) for month in (1, 4, 7)]
    split = pd.read_csv(patches / "patch_index_split.csv")
    assert {s[:6] for s in split["sample_id"]} == {"201001", "201004", "201007"}
    after = {p.name: p.stat().st_mtime_ns for p in (patches / "y_npy").iterdir()}
    assert {name: after[name] for name in before} == before  # the other months' patches were not rewritten


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
def test_every_job_of_the_dag_leaves_a_benchmark(dag_built):
    # one TSV per job that ran (Snakemake's `benchmark:`): the per-rule times the README reports come from
    # these; a per-month job's log and benchmark are <rule>/<month>.log and .tsv
    root = dag_built / "logs"
    jobs = {p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.log")}
    assert {"download", "export", "split", "train_temp_v1", "evaluate_temp_v1"} <= jobs
    assert {"download_month/201001", "export_month/201107"} <= jobs
    for job in jobs:
        table = pd.read_csv(root / "benchmarks" / f"{job}.tsv", sep="\t")
        assert {"s", "max_rss", "cpu_time"} <= set(table.columns), job
        assert table["s"].iloc[0] > 0, job


@pytest.mark.slow
@pytest.mark.parametrize(("change", "rerun", "kept"), MODEL_CHANGES, ids=change_id)
def test_whole_dag_reruns_only_model_stages(dag_built, change, rerun, kept):
    planned = planned_rules(snakemake(dag_built, "-n", "all", change=change))
    assert rerun <= planned
    assert not planned & kept


# -- the real sample (sim-to-real): a second dataset through its own per-month rules ------------------------

REAL_SAMPLE = {"evaluate": {"real_sample_dir": "tests/data/glorys12_nwmexico"}}
REAL_DATA_RULES = {"download_real_month", "download_real", "export_real_month", "export_real"}
# (config change, rules a dry run of evaluate_real_temp_v1 must plan, rules it must not) once it has run
REAL_CHANGES = [
    # a model setting reruns the model and its real evaluation: no real-data job, no real baseline
    ({"model": {"dim": 16}}, {"train_temp_v1", "evaluate_real_temp_v1"},
     DATA_RULES | REAL_DATA_RULES | {"baselines_real_temp_v1"}),
    ({"evaluate": {"ensemble_size": 3}}, {"evaluate_real_temp_v1"},
     DATA_RULES | REAL_DATA_RULES | {"train_temp_v1", "baselines_real_temp_v1"}),
    # a baseline setting reruns the real baselines and the evaluation that scores them, not the real data
    ({"evaluate": {"dineof_max_modes": 5}}, {"baselines_real_temp_v1", "evaluate_real_temp_v1"},
     DATA_RULES | REAL_DATA_RULES | {"train_temp_v1"}),
]


def with_real_sample(change: dict) -> dict:
    """``change`` plus the real sample of tests/data (tiny.yaml leaves it out)."""
    merged = {section: dict(values) for section, values in change.items()}
    merged.setdefault("evaluate", {}).update(REAL_SAMPLE["evaluate"])
    return merged


@pytest.fixture(scope="module")
def real_built(tmp_path_factory) -> Path:
    """A working directory where evaluate_real_temp_v1 (data, model, real data, real baselines) has run once."""
    workdir = tmp_path_factory.mktemp("reruns-real")
    snakemake(workdir, "evaluate_real_temp_v1", change=REAL_SAMPLE, timeout=1200)
    return workdir


@pytest.mark.slow
def test_the_real_sample_jobs_leave_benchmarks_and_an_unchanged_rerun_does_nothing(real_built):
    assert NOTHING_TO_DO in snakemake(real_built, "-n", "evaluate_real_temp_v1", change=REAL_SAMPLE)
    root = real_built / "logs"
    jobs = {p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.log")}
    assert {"download_real_month/201011", "export_real_month/201012", "download_real", "export_real",
            "baselines_real_temp_v1", "evaluate_real_temp_v1"} <= jobs
    for job in jobs:
        assert (root / "benchmarks" / f"{job}.tsv").is_file(), job
    assert not (real_built / "results" / "temp_v1" / "eval_real" / "data").exists()  # no data tree of its own


@pytest.mark.slow
@pytest.mark.parametrize(("change", "rerun", "kept"), REAL_CHANGES, ids=change_id)
def test_a_model_change_reruns_no_real_data_job(real_built, change, rerun, kept):
    planned = planned_rules(snakemake(real_built, "-n", "evaluate_real_temp_v1", change=with_real_sample(change)))
    assert rerun <= planned
    assert not planned & kept


# -- a local source: a replaced, added or removed file reruns download -> export -> split -------------------

LOCAL_MONTHS = (1, 2, 3)
DAY_NS = 86_400 * 10**9


def write_local_month(path: Path, month: int) -> Path:
    """A month of the common test layout: thetao(1, 22, 32, 32) int16, GLORYS levels, 1/12° from 20N 120W."""
    return write_cmems_month(path, 2010, month, lat=20 + np.arange(32) / 12, lon=-120 + np.arange(32) / 12,
                             depths=glorys.DEPTH_LEVELS_M[:22])


def local_source(local_dir: Path) -> dict:
    """Config change to the folder ``local_dir`` (32 x 32 cells: one 16 px tile per split window)."""
    source = {"kind": "local", "local_dir": str(local_dir), "years": [2010], "months": list(range(1, 13))}
    # the test files hold thetao only (write_cmems_month): no sea level to cut beside it
    return {"source": source, "export": {"workers": 1, "surface_variables": []}, "split": {"window_tiles": 1}}


def exported(workdir: Path) -> dict[str, np.ndarray]:
    """Every patch of the index by sample id, after checking that y_npy/ holds exactly the indexed files."""
    patches = workdir / "data" / "patches"
    index = pd.read_csv(patches / "patch_index_with_paths.csv")
    on_disk = sorted(p.name for p in (patches / "y_npy").iterdir())
    assert on_disk == sorted(f"{s}.npy" for s in index["sample_id"])
    return {row.sample_id: np.load(patches / row.y_npy_path) for row in index.itertuples()}


@pytest.fixture
def local_built(tmp_path) -> tuple[Path, Path, dict]:
    """A working directory where the data targets have run once on a local folder of three months."""
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    for month in LOCAL_MONTHS:
        write_local_month(local_dir / glorys.file_name(2010, month), month)
    workdir = tmp_path / "run"
    workdir.mkdir()
    change = local_source(local_dir)
    snakemake(workdir, "split", change=change)
    return workdir, local_dir, change


def rerun_data_stages(workdir: Path, change: dict, months: set[str]) -> None:
    """A dry run plans the per-month jobs of ``months`` only (none: only the gathers), the gathers and split;
    then they run."""
    plan = snakemake(workdir, "-n", "split", change=change)
    expected = {**dict.fromkeys(MONTH_RULES, len(months)), **dict.fromkeys(GATHER_RULES, 1)} if months else \
        dict.fromkeys(GATHER_RULES, 1)
    assert planned_jobs(plan) == expected
    assert planned_months(plan) == months
    snakemake(workdir, "split", change=change)
    assert NOTHING_TO_DO in snakemake(workdir, "-n", "split", change=change)


@pytest.mark.parametrize("older_mtime", [False, True], ids=["newer-file", "older-mtime-as-cp-p"])
def test_a_replaced_local_file_is_exported_again(local_built, older_mtime):
    workdir, local_dir, change = local_built
    before = exported(workdir)
    path = local_dir / glorys.file_name(2010, 2)
    mtime = path.stat().st_mtime_ns
    with netCDF4.Dataset(path, "a") as ds:  # the same month with new data, 1 °C warmer
        ds["thetao"][:] = ds["thetao"][:] + 1.0
    if older_mtime:  # e.g. `cp -p` / `rsync -a` of a reprocessed file: the mtime trigger alone misses it
        os.utime(path, ns=(mtime - DAY_NS, mtime - DAY_NS))
    rerun_data_stages(workdir, change, {"201002"})
    after = exported(workdir)
    assert after.keys() == before.keys()
    for sample_id, patch in before.items():
        warmer = 1.0 if sample_id.startswith("201002_") else 0.0
        np.testing.assert_allclose(after[sample_id], patch + warmer, atol=1e-3)  # int16 steps: 7e-4 °C
    assert any(s.startswith("201002_") for s in before)


def test_an_added_local_file_gets_its_patches(local_built):
    workdir, local_dir, change = local_built
    before = exported(workdir)
    write_local_month(local_dir / glorys.file_name(2010, 4), 4)
    rerun_data_stages(workdir, change, {"201004"})
    added = set(exported(workdir)) - set(before)
    assert added and all(s.startswith("201004_") for s in added)
    split = pd.read_csv(workdir / "data" / "patches" / "patch_index_split.csv")
    assert added <= set(split["sample_id"])


def test_a_removed_local_file_loses_its_patches(local_built):
    workdir, local_dir, change = local_built
    before = exported(workdir)
    (local_dir / glorys.file_name(2010, 3)).unlink()
    rerun_data_stages(workdir, change, set())
    after = exported(workdir)
    assert set(after) == {s for s in before if not s.startswith("201003_")}
    manifest = pd.read_csv(workdir / "data" / "raw" / "manifest.csv")
    assert glorys.file_name(2010, 3) not in set(manifest["file"])
    assert not (workdir / "data" / "raw" / glorys.file_name(2010, 3)).is_symlink()  # its link went too


def test_a_failed_month_is_retried_alone(tmp_path):
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    for month in LOCAL_MONTHS:
        write_local_month(local_dir / glorys.file_name(2010, month), month)
    bad = write_local_month(local_dir / glorys.file_name(2010, 4), 4)
    with netCDF4.Dataset(bad, "a") as ds:
        ds["thetao"].units = "m"  # dated (planning reads only that) but not a temperature: its month fails
    workdir = tmp_path / "run"
    workdir.mkdir()
    change = local_source(local_dir)
    with pytest.raises(AssertionError, match="At least one job did not complete"):
        snakemake(workdir, "split", "--keep-going", change=change)
    assert str(bad) in (workdir / "logs" / "download_month" / "201004.log").read_text()  # the job's error
    assert (workdir / "data" / "patches" / "months" / "201003.csv").is_file()  # the other months finished

    with netCDF4.Dataset(bad, "a") as ds:
        ds["thetao"].units = "degrees_C"
    rerun_data_stages(workdir, change, {"201004"})
    assert {s[:6] for s in exported(workdir)} == {"201001", "201002", "201003", "201004"}
