# Config validation (the same schema file the CLI uses) and the paths every rule shares.
import functools
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from depthdif.config import check_consistency, months_of
from depthdif.errors import DepthDifError
from depthdif.layout import ALL_VARIANTS, layout_of, month_tag
from depthdif.sources.local import local_months


validate(config, schema="../../src/depthdif/config.schema.yaml")
check_consistency(config)

# every path of the run comes from depthdif.layout (the CLI asks the same module)
LAYOUT = layout_of(config)
LOGS = LAYOUT.logs_dir
# each job's wall time, CPU time and peak memory (Snakemake's benchmark TSV), one file per rule
BENCHMARKS = LOGS / "benchmarks"

RAW_MANIFEST = LAYOUT.manifest
PATCH_INDEX = LAYOUT.patch_index
SPLIT_INDEX = LAYOUT.split_index
model_ckpt = LAYOUT.model_ckpt
eval_metrics = LAYOUT.eval_metrics
real_metrics = LAYOUT.real_metrics
# the real sample of the sim-to-real evaluation: a second data folder, {data_dir}/real, same layout
REAL = LAYOUT.real_data


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


# --- the months of the run: one download_month and one export_month job each ---------------------------
SOURCE_KIND = config["source"]["kind"]


@functools.cache
def local_month_files():
    """{YYYYMM: [files]} of a local source, from each file's own date (its header: cheap), read once per
    Snakemake process and only when a job needs it. A file that cannot be dated, or no file in
    source.years x source.months, stops the plan naming them."""
    try:
        months = local_months(Path(config["source"]["local_dir"]), months_of(config))
    except DepthDifError as err:
        raise WorkflowError(str(err)) from None
    return {tag: [str(path) for path in paths] for tag, paths in months.items()}


def planned_months():
    """The months of the run (YYYYMM, time order): source.years x source.months, or for a local source the
    months its files are dated in within that selection."""
    if SOURCE_KIND == "local":
        return sorted(local_month_files())
    return [month_tag(year, month) for year, month in months_of(config)]


def month_local_files(wildcards):
    """The local files of one month (none for the other kinds): a file added to, replaced in or removed
    from that month reruns that month only."""
    if SOURCE_KIND != "local":
        return []
    return local_month_files().get(wildcards.month, [])


def file_stamps(names):
    """Size and mtime of each local file: a file replaced by one with an older mtime (cp -p, rsync -a) changes
    them, which the mtime trigger misses."""
    stamps = {}
    for name in names:
        stat = Path(name).stat()
        stamps[Path(name).name] = [stat.st_size, stat.st_mtime_ns]
    return stamps


def month_file_stamps(wildcards):
    """file_stamps of the month's local files (empty for the other kinds)."""
    return file_stamps(month_local_files(wildcards))


def month_parts(part_of, months=planned_months):
    """An input function: part_of(month) of every month of months() (what a gather rule reads)."""
    return lambda wildcards: [part_of(month) for month in months()]


# --- the real sample's months: one download_real_month and one export_real_month job each --------------
@functools.cache
def real_month_files():
    """{YYYYMM: [files]} of the real sample: every *.nc of evaluate.real_sample_dir by its own date, whatever
    source.years/months say. Read when a real-data job is planned (real_sample_files stops the plan first
    when the key is null or the folder unusable)."""
    folder = Path(real_sample_files()[0]).parent
    try:
        months = local_months(folder, None)
    except DepthDifError as err:
        raise WorkflowError(str(err)) from None
    return {tag: [str(path) for path in paths] for tag, paths in months.items()}


def real_months():
    """The months of the real sample (YYYYMM, time order)."""
    return sorted(real_month_files())


def real_month_local_files(wildcards):
    """The real files of one month: a file added, replaced or removed reruns that month only."""
    return real_month_files().get(wildcards.month, [])


def real_month_file_stamps(wildcards):
    """file_stamps of the real month's files."""
    return file_stamps(real_month_local_files(wildcards))


def export_levels(wildcards):
    """The main export's first month's grid file: the depths the real sample is exported at (every month of
    the export holds the same ones), so that adding a later month leaves the real sample as it is."""
    return LAYOUT.month_grid(planned_months()[0])


def train_gpus():
    """GPUs the training/evaluation jobs ask the scheduler for (train.devices on a GPU run, else 0)."""
    train = config["train"]
    if train["accelerator"] not in ("gpu", "cuda"):
        return 0
    return train["devices"] if isinstance(train["devices"], int) else 1

# The one software environment of every rule (used with `--sdm conda`).
CONDA_ENV = "../../environment.yml"
