"""The DAG through a real SLURM: ``snakemake --profile profiles/slurm`` against a local one-node cluster.

CI starts that cluster before the tests with ``tests/hpc/start_local_slurm.sh`` and stops it afterwards with
``tests/hpc/stop_local_slurm.sh``. Only the site-specific values of the profile (partition, account, sizes that
exceed the one node) are overridden, by a second ``--profile`` written from the real one; everything else
(executor, squeue status, retries, GPU requests of the training rules) is the profile a user runs.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
PROFILE = REPO / "profiles" / "slurm"
START_SCRIPT = REPO / "tests" / "hpc" / "start_local_slurm.sh"

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        shutil.which("sbatch") is None,
        reason=f"sbatch not found: SLURM tests need a cluster; start a local one with {START_SCRIPT} (root, apt)",
    ),
]

# Outputs that are a pure function of the config: the SLURM run must reproduce the local run byte for byte.
DETERMINISTIC = ["data/patches/patch_index_with_paths.csv", "data/patches/patch_index_split.csv"]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# `localrule x:` runs on the submit host, `rule x:` is a cluster job (Snakemake's job headers).
RULE_HEADER = re.compile(r"^(local)?rule (\w+):$", re.MULTILINE)


@dataclass(frozen=True)
class Cluster:
    """What the tests need to know about the cluster that `sinfo` reports."""

    partition: str
    cpus: int
    mem_mb: int
    gpus: int


def _gpu_count(gres: str) -> int:
    """GPUs in an sinfo %G field such as ``gpu:2``, ``gpu:a100:4(S:0-1)`` or ``(null)``."""
    match = re.search(r"gpu(?::[\w.]+)?:(\d+)", gres)
    return int(match.group(1)) if match else 0


def query_cluster() -> Cluster:
    """The default partition (or $DEPTHDIF_SLURM_PARTITION) and its smallest node, from `sinfo`."""
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%P %c %m %G"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0 or not result.stdout.strip():
        pytest.fail(f"sbatch is installed but no SLURM controller answers sinfo; start one with {START_SCRIPT}")
    rows = [line.split(maxsplit=3) for line in result.stdout.strip().splitlines()]
    wanted = os.environ.get("DEPTHDIF_SLURM_PARTITION")
    for name, cpus, mem_mb, gres in rows:
        if name.rstrip("*") == wanted or (wanted is None and name.endswith("*")):
            return Cluster(name.rstrip("*"), int(cpus.rstrip("+")), int(mem_mb.rstrip("+")), _gpu_count(gres))
    pytest.fail(f"no partition {wanted or '(default)'} in sinfo output:\n{result.stdout}")


def local_override(profile: dict, cluster: Cluster) -> dict:
    """The keys of ``profile`` a user edits, rewritten for ``cluster``; the rest of the profile stays in force.

    A later ``--profile`` replaces whole top-level keys, so default-resources and set-resources are copied
    in full and only the site-specific values change.
    """
    defaults = dict(profile["default-resources"])
    defaults.update(slurm_account="none", slurm_partition=cluster.partition,
                    mem_mb=min(defaults["mem_mb"], cluster.mem_mb))
    per_rule = {}
    for rule, resources in profile["set-resources"].items():
        resources = dict(resources, slurm_partition=cluster.partition)
        resources["mem_mb"] = min(resources.get("mem_mb", cluster.mem_mb), cluster.mem_mb)
        gpus = resources.get("gpu", 0)
        if gpus and cluster.gpus >= gpus:
            resources["cpus_per_gpu"] = min(resources.get("cpus_per_gpu", 1), cluster.cpus // gpus)
        else:  # a cluster without GPUs: the same rule as a CPU job
            for key in ("gpu", "gpu_model", "cpus_per_gpu", "constraint"):
                resources.pop(key, None)
        per_rule[rule] = resources
    return {
        "slurm-init-seconds-before-status-checks": 2,  # the first squeue after 2 s, not 40: ~2 min faster
        "default-resources": defaults,
        "set-resources": per_rule,
    }


def snakemake_command(workdir: Path, *args: str, timeout_s: int) -> list[str]:
    """The repository's Snakefile with the tiny config in ``workdir``, killed after ``timeout_s``.

    `timeout -k 10`: Snakemake does not exit on SIGTERM while cluster jobs run, so KILL follows.
    """
    return [
        "timeout", "-k", "10", str(timeout_s),
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(REPO / "config" / "config.yaml"), str(TINY), *args,
    ]


def rule_of(slurm_log: str) -> str:
    """The rule of a job from its SLURM log path (``.../rule_<name>/[<wildcards>/]<jobid>.log``)."""
    return next(part for part in Path(slurm_log).parts if part.startswith("rule_")).removeprefix("rule_")


def show_job(job_id: str) -> str:
    """`scontrol show job`: empty once the controller has forgotten the job (MinJobAge after it ended)."""
    result = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30)
    return result.stdout if result.returncode == 0 else ""


def job_state(details: str) -> str | None:
    """The JobState in ``show_job`` output (COMPLETED, FAILED, ...), None for a forgotten job."""
    match = re.search(r"JobState=(\w+)", details)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    return query_cluster()


@pytest.mark.parametrize(
    ("target", "timeout_s"),
    [
        ("split", 300),
        # The whole default DAG (train + evaluate as GPU jobs). The lead enables it once train/evaluate run.
        pytest.param("all", 1500, marks=pytest.mark.slow),
    ],
)
def test_dag_runs_through_sbatch_and_matches_a_local_run(tmp_path, cluster, target, timeout_s):
    override_dir = tmp_path / "slurm-local"
    override_dir.mkdir()
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    (override_dir / "config.yaml").write_text(yaml.safe_dump(local_override(profile, cluster)))
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"

    # Both runs at once: the cluster jobs leave the local CPUs idle most of the time. The local run makes only
    # the data stages: the outputs compared byte for byte (DETERMINISTIC, the patches) are theirs, and a second
    # training and evaluation of the whole DAG on the same 2 cores doubled the test's time for nothing compared.
    slurm_run = subprocess.Popen(
        snakemake_command(on_slurm, "--profile", str(PROFILE), "--profile", str(override_dir), target,
                          timeout_s=timeout_s),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    local_run = subprocess.run(snakemake_command(local, "--cores", "2", "split", timeout_s=timeout_s),
                               capture_output=True, text=True, cwd=tmp_path)
    slurm_log, _ = slurm_run.communicate()
    assert slurm_run.returncode == 0, f"SLURM run failed (rc {slurm_run.returncode}):\n{slurm_log[-6000:]}"
    assert local_run.returncode == 0, local_run.stdout[-3000:] + local_run.stderr[-3000:]

    # Every cluster rule of the DAG went through sbatch, and nothing else did.
    headers = RULE_HEADER.findall(slurm_log)
    cluster_rules = {rule for local_flag, rule in headers if not local_flag}
    local_rules = {rule for local_flag, rule in headers if local_flag}
    submitted = SUBMITTED.findall(slurm_log)
    submitted_rules = {rule_of(log) for _, log in submitted}
    # a synthetic month is computed, so its download is a job too; Copernicus downloads stay local
    assert {"download_month", "export_month"} <= cluster_rules, slurm_log[-3000:]
    assert {"download", "export", "split"} <= local_rules  # the gathers take seconds
    assert submitted_rules == cluster_rules
    assert len(submitted) == sum(1 for local_flag, _ in headers if not local_flag)  # one sbatch per cluster job
    # one sbatch job per month: the executor files a job with wildcards under rule_<name>/<wildcards>/
    exported_months = [Path(log).parent.name for _, log in submitted if rule_of(log) == "export_month"]
    assert sorted(exported_months) == ["201001", "201007", "201101", "201107"]  # tests/configs/tiny.yaml

    for job_id, log in submitted:
        log_path = Path(log)
        # sbatch --output=<slurm_logs>/rule_<name>/<jobid>.log: written by slurmd for that job id.
        assert log_path.name == f"{job_id}.log" and log_path.is_relative_to(on_slurm / ".snakemake" / "slurm_logs")
        assert "Finished jobid" in log_path.read_text(), log_path.read_text()[-3000:]
        details = show_job(job_id)
        assert job_state(details) in ("COMPLETED", None), details
        if rule_of(log).startswith("train_") and cluster.gpus and details:
            assert "TresPerJob=gres:gpu:" in details  # the profile's GPU request reached SLURM
    assert any(job_state(show_job(job_id)) == "COMPLETED" for job_id, _ in submitted), "no job known to SLURM"

    # Same results as the local executor where they are deterministic.
    for relative in DETERMINISTIC:
        assert (on_slurm / relative).read_bytes() == (local / relative).read_bytes(), relative
    patches = sorted(p.relative_to(local) for p in (local / "data" / "patches" / "y_npy").glob("*.npy"))
    assert patches, "no patches exported"
    _, mismatch, errors = filecmp.cmpfiles(local, on_slurm, [str(p) for p in patches], shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
