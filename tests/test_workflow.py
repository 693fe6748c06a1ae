"""The Snakemake DAG itself: targets, lint, and the data stages run end to end in a temporary folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from depthdif.layout import ALL_VARIANTS

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


def test_evaluate_real_without_a_usable_real_sample_dir_stops_at_planning(tmp_path):
    # tiny.yaml sets evaluate.real_sample_dir: null
    null = snakemake(tmp_path, "-n", "--cores", "1", "evaluate_real")
    assert null.returncode != 0
    assert "evaluate.real_sample_dir is null" in null.stdout + null.stderr
    assert "Job stats" not in null.stdout  # nothing was planned
    missing = tmp_path / "missing.yaml"
    missing.write_text("evaluate:\n  real_sample_dir: no/such/folder\n")
    result = snakemake(tmp_path, "-n", "--cores", "1", "evaluate_real_temp_v1", "--configfile",
                       str(REPO / "config" / "config.yaml"), str(TINY), str(missing))
    assert result.returncode != 0
    assert f"evaluate.real_sample_dir: {REPO / 'no/such/folder'} is not a folder" in result.stdout + result.stderr
    # the default target leaves the sim-to-real evaluation out when the key is null
    assert snakemake(tmp_path, "-n", "--cores", "1").returncode == 0


def real_configs(tmp_path: Path, **sections: dict) -> list[str]:
    """--configfile arguments: config.yaml, tiny.yaml, the real sample of tests/data, then ``sections``."""
    override = tmp_path / "real.yaml"
    override.write_text(json.dumps({"evaluate": {"real_sample_dir": "tests/data/glorys12_nwmexico"}, **sections}))
    return ["--configfile", str(REPO / "config" / "config.yaml"), str(TINY), str(override)]


def planned(dry_run: str) -> dict[str, int]:
    """{rule: jobs} of a dry run's "Job stats" table."""
    table = dry_run.split("Job stats:", 1)[1].split("total", 1)[0]
    return {line.split()[0]: int(line.split()[1]) for line in table.splitlines()[3:] if line.strip()}


def test_the_real_sample_is_a_second_dataset_through_the_per_month_rules(tmp_path):
    """download_real_month/export_real_month per real month, gathered into an all-val index at the main export's
    depths; no real-data job needs a model, and a month added to the run after its first reruns none."""
    plan = snakemake(tmp_path, "-n", "--cores", "1", "evaluate_real_temp_v1", *real_configs(tmp_path))
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    jobs = planned(plan.stdout)
    assert {rule: jobs.get(rule) for rule in ("download_real_month", "export_real_month", "download_real",
                                              "export_real", "baselines_real_temp_v1", "evaluate_real_temp_v1")} \
        == {"download_real_month": 2, "export_real_month": 2, "download_real": 1, "export_real": 1,
            "baselines_real_temp_v1": 1, "evaluate_real_temp_v1": 1}

    built = snakemake(tmp_path, "--cores", "2", "export_real", *real_configs(tmp_path))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "train_" not in built.stdout + built.stderr  # the real data are data stages: no model needed
    real = tmp_path / "data" / "real"
    split = pd.read_csv(real / "patches" / "patch_index_split.csv")
    assert set(split["split"]) == {"val"} and split["window_id"].str.startswith("real_").all()
    assert set(split["source_file"]) == {"mercatorglorys12v1_gl12_mean_201011.nc",
                                         "mercatorglorys12v1_gl12_mean_201012.nc"}
    # the synthetic export's levels 0, 7, 14, 21 (0.494, 9.57, 29.4, 92.3 m) are the real files' 0, 1, 2, 3
    assert set(split["depth_indices"]) == {"0;1;2;3"}
    main = pd.read_csv(tmp_path / "data" / "patches" / "months" / "201001.csv")
    np.testing.assert_allclose([float(v) for v in split["depth_values"].iloc[0].split(";")],
                               [float(v) for v in main["depth_values"].iloc[0].split(";")], rtol=0.02)
    for rel in split["y_npy_path"]:
        assert (real / "patches" / rel).is_file()
    for job in ("download_real_month/201011", "export_real_month/201012", "download_real", "export_real"):
        assert (tmp_path / "logs" / "benchmarks" / f"{job}.tsv").is_file(), job

    for change in ({"source": {"years": [2010, 2011], "months": [1, 4, 7]}},  # a month after the first
                   {"model": {"dim": 16}}):  # a model setting
        again = snakemake(tmp_path, "-n", "--cores", "1", "export_real", *real_configs(tmp_path, **change))
        assert "Nothing to be done" in again.stdout + again.stderr, (change, again.stdout[-2000:])
    # a setting of the real export reruns every real month
    patch = snakemake(tmp_path, "-n", "--cores", "1", "export_real",
                      *real_configs(tmp_path, export={"max_nodata_fraction": 0.4}))
    assert planned(patch.stdout).get("export_real_month") == 2


PROBE = """include: "Snakefile"

import json as _json

for _name in ("evaluate_real_temp_v1", "evaluate_real_eo_4band"):
    _params = dict(workflow.get_rule(_name).params.items())
    print("PROBE", _json.dumps({"rule": _name, "params": _params, "inputs": real_sample_files()}, sort_keys=True))
"""


def sim_to_real_plan(checkout: Path) -> list[dict]:
    """Params and real-sample inputs of the evaluate_real rules, as a Snakemake run in ``checkout`` sees them."""
    result = subprocess.run([*SNAKEMAKE, "-s", "probe.smk", "-n", "--cores", "1", "evaluate_real"],
                            capture_output=True, text=True, timeout=300, cwd=checkout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(line.split(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("PROBE ")]


def test_a_moved_checkout_keeps_the_sim_to_real_params_and_inputs(tmp_path):
    """Params and inputs hold no absolute path: moving the checkout would otherwise rerun both evaluations."""
    first = tmp_path / "checkout"
    for part in ("Snakefile", "environment.yml", "workflow", "config", "src/depthdif/config.schema.yaml",
                 "tests/data/glorys12_nwmexico"):
        (first / part).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
        copy(REPO / part, first / part)
    (first / "probe.smk").write_text(PROBE)
    before = sim_to_real_plan(first)
    moved = first.rename(tmp_path / "moved")
    after = sim_to_real_plan(moved)
    assert len(before) == 2 and before == after
    assert str(tmp_path) not in json.dumps(before)
    inputs = before[0]["inputs"]
    assert len(inputs) == 2 and all((moved / name).is_file() for name in inputs)
    assert before[0]["params"]["settings"]["evaluate"]["real_sample_dir"] == "tests/data/glorys12_nwmexico"


# ------------------------------------------------------------------------------------ the SLURM profile
RESOURCES_PROBE = """include: {snakefile!r}

import json as _json

for _rule in workflow.rules:
    print("PROBE", _json.dumps({{"rule": _rule.name, "resources": sorted(_rule.resources)}}))
"""
GPU_KEYS = ("gpu", "gpu_model", "cpus_per_gpu")  # what makes a SLURM job a GPU job (tests/test_slurm.py drops them)


def model_rules() -> set[str]:
    """The rules that run the model: training, evaluation, evaluation on the real sample, of every variant."""
    return {f"{stage}_{variant}" for stage in ("train", "evaluate", "evaluate_real") for variant in ALL_VARIANTS}


def test_the_slurm_profile_gives_a_gpu_to_every_rule_running_the_model_and_to_no_other(tmp_path):
    listed = snakemake(tmp_path, "--list-rules")
    assert listed.returncode == 0, listed.stderr
    # one rule a line, its docstring (if any) after it and on indented lines
    names = {line.split()[0] for line in listed.stdout.splitlines() if line and not line[0].isspace()}
    models = model_rules()
    assert models <= names and {"baselines_temp_v1", "baselines_real_eo_4band", "export_real_month"} <= names

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    per_rule = profile["set-resources"]
    assert set(per_rule) <= names, f"set-resources names no rule of the DAG: {sorted(set(per_rule) - names)}"
    assert not set(GPU_KEYS) & set(profile["default-resources"])
    asks_gpu = {rule for rule, resources in per_rule.items() if int(resources.get("gpu", 0)) >= 1}
    assert asks_gpu == models
    for rule in names - models:
        assert not set(GPU_KEYS) & set(per_rule.get(rule, {})), rule
    # the real sample's evaluation is sized like the main one; the baselines are CPU jobs on the CPU partition
    for variant in ("temp_v1", "eo_4band"):
        assert per_rule[f"evaluate_real_{variant}"] == per_rule[f"evaluate_{variant}"]
        for rule in (f"baselines_{variant}", f"baselines_real_{variant}"):
            assert per_rule[rule]["slurm_partition"] == profile["default-resources"]["slurm_partition"]

    # the rules themselves: the model rules request train.devices GPUs on a GPU config (train_gpus()), no other
    probe = tmp_path / "probe.smk"
    probe.write_text(RESOURCES_PROBE.format(snakefile=str(REPO / "Snakefile")))
    result = subprocess.run([*SNAKEMAKE, "-s", str(probe), "--directory", str(tmp_path), "--configfile",
                             str(REPO / "config" / "config.yaml"), str(TINY), "-n", "--cores", "1", "split"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    declared = {entry["rule"]: set(entry["resources"]) for entry in
                (json.loads(line.split(" ", 1)[1]) for line in result.stdout.splitlines() if line.startswith("PROBE "))}
    assert set(declared) == names
    assert {rule for rule, resources in declared.items() if "gpu" in resources} == models
