# Config validation (the same schema file the CLI uses) and the paths every rule shares.
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from depthdif.config import check_consistency


validate(config, schema="../../src/depthdif/config.schema.yaml")
check_consistency(config)

DATA = Path(config["data_dir"])
RESULTS = Path(config["results_dir"])
LOGS = Path("logs")
# each job's wall time, CPU time and peak memory (Snakemake's benchmark TSV), one file per rule
BENCHMARKS = LOGS / "benchmarks"
ALL_VARIANTS = ["temp_v1", "eo_4band"]

RAW_MANIFEST = DATA / "raw" / "manifest.csv"
PATCH_INDEX = DATA / "patches" / "patch_index_with_paths.csv"
SPLIT_INDEX = DATA / "patches" / "patch_index_split.csv"


def model_ckpt(variant):
    return RESULTS / variant / "model.ckpt"


def eval_metrics(variant):
    return RESULTS / variant / "eval" / "metrics.csv"


def real_metrics(variant):
    return RESULTS / variant / "eval_real" / "metrics.csv"


def real_sample_dir():
    """evaluate.real_sample_dir as the config writes it (None: no sim-to-real run).

    Never resolved here: a param holding the checkout's absolute path would rerun both sim-to-real evaluations
    when the checkout moves. real_sample_files resolves it, at the one place the files are looked for."""
    return config["evaluate"]["real_sample_dir"]


def real_sample_files(wildcards=None):
    """The *.nc of evaluate.real_sample_dir (a relative folder is taken from the repository, the Snakefile's
    folder), as paths relative to the working directory so that a moved checkout keeps the same inputs.

    Called when a sim-to-real job is planned: a null key, a missing folder or a folder without *.nc stops the
    plan naming the key, instead of a job failing after training."""
    folder = real_sample_dir()
    if folder is None:
        raise WorkflowError(
            "evaluate.real_sample_dir is null, but an evaluate_real target was asked for: set it to a folder "
            "of real GLORYS12 *.nc files (config/config.yaml uses tests/data/glorys12_nwmexico) or leave the "
            "evaluate_real targets out."
        )
    path = Path(workflow.basedir) / folder
    if not path.is_dir():
        raise WorkflowError(
            f"evaluate.real_sample_dir: {path} is not a folder (relative paths are taken from "
            f"{workflow.basedir}); set it to a folder of real GLORYS12 *.nc files, or to null to skip the "
            "sim-to-real evaluation."
        )
    files = sorted(path.glob("*.nc"))
    if not files:
        raise WorkflowError(
            f"evaluate.real_sample_dir: no *.nc file in {path}; put the real GLORYS12 files there."
        )
    return [os.path.relpath(name) for name in files]


def final_outputs():
    """The default target: every configured variant trained and evaluated (on real data too if set)."""
    outputs = [eval_metrics(v) for v in config["variants"]]
    if real_sample_dir():
        outputs += [real_metrics(v) for v in config["variants"]]
    return outputs


def local_source_files(wildcards=None):
    """The *.nc of a local source (none for the other kinds): adding or removing one changes the input set,
    and a file newer than the manifest is out of date, so the download and everything after it rerun."""
    source = config["source"]
    if source["kind"] != "local":
        return []
    # a dangling link is left to the download, whose check names it
    return sorted(str(path) for path in Path(source["local_dir"]).glob("*.nc") if path.exists())


def source_params(wildcards):
    """config["source"] (a change of it reruns the download) plus, for a local source, each file's size and
    mtime: a file replaced by one with an older mtime (cp -p, rsync -a) changes them, which the mtime trigger
    misses. Other sources get config["source"] unchanged, so their finished runs stay up to date."""
    source = config["source"]
    if source["kind"] != "local":
        return source
    stamps = {}
    for name in local_source_files():
        stat = Path(name).stat()
        stamps[Path(name).name] = [stat.st_size, stat.st_mtime_ns]
    return {**source, "file_stamps": stamps}


def train_gpus():
    """GPUs the training/evaluation jobs ask the scheduler for (train.devices on a GPU run, else 0)."""
    train = config["train"]
    if train["accelerator"] not in ("gpu", "cuda"):
        return 0
    return train["devices"] if isinstance(train["devices"], int) else 1

# The one software environment of every rule (used with `--sdm conda`).
CONDA_ENV = "../../environment.yml"
