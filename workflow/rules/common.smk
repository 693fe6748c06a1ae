# Config validation (the same schema file the CLI uses) and the paths every rule shares.
from pathlib import Path

from snakemake.utils import validate

from depthdif.config import check_consistency


validate(config, schema="../../src/depthdif/config.schema.yaml")
check_consistency(config)

DATA = Path(config["data_dir"])
RESULTS = Path(config["results_dir"])
LOGS = Path("logs")
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
    """evaluate.real_sample_dir, relative paths taken from the repository (the Snakefile's folder)."""
    folder = config["evaluate"]["real_sample_dir"]
    return None if folder is None else str(Path(workflow.basedir) / folder)


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
