"""Every path of a run, in one place: the Snakemake rules (``workflow/rules/common.smk``) and the CLI both ask
this module, so a file's location is spelled once.

A ``RunLayout`` is built from a validated config (``data_dir``, ``results_dir``); its methods return paths
relative to the working directory exactly as the config writes them (never resolved to absolute paths: a
Snakemake param holding the checkout's absolute path would rerun jobs when the checkout moves).

The contract files (README "Files") keep their names:

    {data_dir}/raw/manifest.csv                         download (file, bytes, sha256, date)
    {data_dir}/patches/patch_index_with_paths.csv       export
    {data_dir}/patches/patch_index_split.csv            split
    {results_dir}/{variant}/model.ckpt                  train_{variant}
    {results_dir}/{variant}/eval/metrics.csv            evaluate_{variant}

The download and the export run one job per month (wildcard ``month`` = YYYYMM) whose parts the contract
targets gather: ``{data_dir}/raw/months/{month}.csv`` (download_month) and
``{data_dir}/patches/months/{month}.csv`` + ``.grid.npz`` (export_month). The baselines of each variant's
evaluation are in ``{results_dir}/{variant}/eval/baselines/predictions.npz`` (baselines_{variant}).

The real sample of the sim-to-real evaluation (``evaluate.real_sample_dir``) is a second data folder,
``{data_dir}/real/``, laid out like the first (``RunLayout.real_data``): ``raw/`` (download_real_month,
download_real), ``patches/`` with its index and an all-val split index (export_real_month, export_real).
Its baselines and scores are in ``{results_dir}/{variant}/eval_real/`` (baselines_real_{variant},
evaluate_real_{variant}).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

# The variants the workflow knows; config["variants"] chooses among them.
ALL_VARIANTS = ("temp_v1", "eo_4band")

MANIFEST_NAME = "manifest.csv"
INDEX_NAME = "patch_index_with_paths.csv"
SPLIT_NAME = "patch_index_split.csv"
MODEL_NAME = "model.ckpt"
NPY_DIR = "y_npy"
# per-month partial files of the download and the export (one job per month), gathered into the contract files
MONTHS_DIR = "months"
GRID_SUFFIX = ".grid.npz"
DIGESTS_SUFFIX = ".sha256-cache.json"
BASELINES_NAME = "predictions.npz"
# the real sample's data folder inside data_dir (the sim-to-real evaluation's second dataset)
REAL_DATA_DIR = "real"


@dataclass(frozen=True)
class EvalFiles:
    """The files an evaluation writes into its folder (``evaluate_{variant}``, or the sim-to-real one).

    Args:
        folder: the evaluation folder.
    """

    folder: Path

    @property
    def metrics(self) -> Path:
        """Long-format scores of every method (contract file, written last)."""
        return self.folder / "metrics.csv"

    @property
    def location_sums(self) -> Path:
        """``location_sums.csv``: squared errors and pixels per method, band, occlusion level and val location,
        for paired comparisons of two runs (``bench/compare_runs.py``)."""
        return self.folder / "location_sums.csv"

    @property
    def summary(self) -> Path:
        """``metrics.json``: the headline ratios with their bootstrap intervals."""
        return self.folder / "metrics.json"

    @property
    def figures(self) -> Path:
        """Folder of the ``*.png`` figures."""
        return self.folder / "figures"

    @property
    def reconstruction(self) -> Path:
        """One val month rebuilt over the whole exported region (CF NetCDF)."""
        return self.folder / "reconstruction.nc"

    @property
    def spectra(self) -> Path:
        """Per-wavenumber power spectra of every method."""
        return self.folder / "spectra.csv"

    @property
    def ddim_steps(self) -> Path:
        """RMSE of the ensemble mean against the number of sampling steps."""
        return self.folder / "ddim_steps.csv"


@dataclass(frozen=True)
class RunLayout:
    """The files of one run.

    Args:
        data_dir: ``config["data_dir"]`` (downloaded months, patches, indexes).
        results_dir: ``config["results_dir"]`` (models, evaluations).
        logs_dir: where rule logs and benchmark files go (``logs``, or ``logs/<results_dir name>`` for runs
            that set their own results_dir, see ``logs_dir_of``).
    """

    data_dir: Path
    results_dir: Path
    logs_dir: Path = Path("logs")

    # --- data stages -------------------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        """Downloaded (or linked, or generated) monthly NetCDF files."""
        return self.data_dir / "raw"

    @property
    def manifest(self) -> Path:
        """``raw/manifest.csv``: file, bytes, sha256, date of every month of the run."""
        return self.raw_dir / MANIFEST_NAME

    @property
    def patches_dir(self) -> Path:
        """Exported patches (``y_npy/``) and the indexes."""
        return self.data_dir / "patches"

    @property
    def patch_index(self) -> Path:
        """The export's index, one row per patch."""
        return self.patches_dir / INDEX_NAME

    @property
    def split_index(self) -> Path:
        """The export's index plus ``window_id`` and ``split``."""
        return self.patches_dir / SPLIT_NAME

    @property
    def npy_dir(self) -> Path:
        """The exported patches, ``<sample_id>.npy`` (the index's ``y_npy_path`` is relative to patches_dir)."""
        return self.patches_dir / NPY_DIR

    # --- per-month parts of the download and the export (wildcard ``month`` = YYYYMM) --------------------
    def month_manifest(self, month: str) -> Path:
        """``raw/months/{month}.csv``: the manifest rows of one month's download (names relative to raw_dir)."""
        return month_part(self.raw_dir, month)

    def month_digests(self, month: str) -> Path:
        """SHA-256 of one month's raw files by size and mtime: a rerun of the month does not hash them again."""
        return month_part(self.raw_dir, month, DIGESTS_SUFFIX)

    def month_index(self, month: str) -> Path:
        """``patches/months/{month}.csv``: the index rows of one month's export (paths relative to patches_dir)."""
        return month_part(self.patches_dir, month)

    def month_grid(self, month: str) -> Path:
        """Latitude, longitude and depths of one month's files, for the one-grid check of the gather."""
        return month_part(self.patches_dir, month, GRID_SUFFIX)

    # --- model stages ------------------------------------------------------------------------------------
    def variant_dir(self, variant: str) -> Path:
        """Everything one variant writes."""
        return self.results_dir / variant

    def model_ckpt(self, variant: str) -> Path:
        """The trained model (EMA weights, first-guess statistics)."""
        return self.variant_dir(variant) / MODEL_NAME

    def train_metrics(self, variant: str) -> Path:
        """Training curves (one row per logged step)."""
        return self.variant_dir(variant) / "train" / "metrics.csv"

    def eval_dir(self, variant: str) -> Path:
        """The evaluation on the val split."""
        return self.variant_dir(variant) / "eval"

    def eval_files(self, variant: str) -> EvalFiles:
        """Every file of the evaluation on the val split."""
        return EvalFiles(self.eval_dir(variant))

    def baselines_dir(self, variant: str) -> Path:
        """The baselines' predictions on the evaluation's val items (``baselines_{variant}``)."""
        return self.eval_dir(variant) / "baselines"

    def baseline_predictions(self, variant: str) -> Path:
        """Every non-model method's predictions on every evaluation pass
        (depthdif.evaluation.baseline_predictions)."""
        return self.baselines_dir(variant) / BASELINES_NAME

    def eval_metrics(self, variant: str) -> Path:
        """Long-format scores of every method (contract file)."""
        return self.eval_files(variant).metrics

    # --- the real sample: a second dataset, through the same per-month stages ---------------------------
    @property
    def real_data(self) -> RunLayout:
        """The layout of the real sample's data folder ``{data_dir}/real`` (``evaluate.real_sample_dir``
        linked, exported at the main export's levels, every patch val).

        Only its data-stage paths (``raw_dir``, ``manifest``, ``month_*``, ``patches_dir``, ``patch_index``,
        ``split_index``) belong to the real sample; its models and scores are the run's (``real_eval_dir``).
        """
        return replace(self, data_dir=self.data_dir / REAL_DATA_DIR)

    def real_eval_dir(self, variant: str) -> Path:
        """The sim-to-real evaluation: the variant's model on the real sample."""
        return self.variant_dir(variant) / "eval_real"

    def real_eval_files(self, variant: str) -> EvalFiles:
        """Every file of the sim-to-real evaluation (its data are in ``real_data``)."""
        return EvalFiles(self.real_eval_dir(variant))

    def real_baseline_predictions(self, variant: str) -> Path:
        """The baselines' predictions on the real sample's val items (``baselines_real_{variant}``)."""
        return self.real_eval_dir(variant) / "baselines" / BASELINES_NAME

    def real_metrics(self, variant: str) -> Path:
        """Long-format scores of every method on the real sample."""
        return self.real_eval_files(variant).metrics

    # --- logs --------------------------------------------------------------------------------------------
    def log(self, rule: str) -> Path:
        """The log file of one job (``rule`` may carry its wildcards as a folder, e.g. ``export_month/201001``)."""
        return self.logs_dir / f"{rule}.log"

    def benchmark(self, rule: str) -> Path:
        """Snakemake's benchmark TSV of one job: wall time, CPU time and peak memory."""
        return self.logs_dir / "benchmarks" / f"{rule}.tsv"


def month_part(folder: Path, month: str, suffix: str = ".csv") -> Path:
    """A per-month partial file of a stage's folder: ``{folder}/months/{month}{suffix}``.

    Args:
        folder: the stage's folder (``raw_dir`` or ``patches_dir``; the export may be given another one).
        month: YYYYMM (``month_tag``).
        suffix: what the part holds (``.csv`` rows, ``GRID_SUFFIX``, ``DIGESTS_SUFFIX``).

    Returns:
        the path of the part.
    """
    return Path(folder) / MONTHS_DIR / f"{month}{suffix}"


def month_tag(year: int, month: int) -> str:
    """``YYYYMM``, the ``month`` wildcard of the per-month rules and the name of their parts."""
    return f"{year:04d}{month:02d}"


def year_month(tag: str) -> tuple[int, int]:
    """``(year, month)`` of a ``month_tag``.

    Raises:
        ValueError: ``tag`` is not six digits with a month 01..12 (the rules' wildcard constraint prevents it).
    """
    if len(tag) != 6 or not tag.isdigit() or not 1 <= int(tag[4:]) <= 12:
        raise ValueError(f"month '{tag}' is not YYYYMM")
    return int(tag[:4]), int(tag[4:])


def logs_dir_of(config: Mapping) -> Path:
    """``logs`` for the default ``results_dir: results``; ``{results_dir}/logs`` for any other, so that a
    second config (e.g. ``config/benchmark.yaml``, results in ``results/benchmark``) keeps its logs beside its
    results instead of overwriting the first run's."""
    results = Path(config["results_dir"])
    return Path("logs") if results == Path("results") else results / "logs"


def layout_of(config: Mapping) -> RunLayout:
    """The ``RunLayout`` of a validated config."""
    return RunLayout(Path(config["data_dir"]), Path(config["results_dir"]), logs_dir_of(config))


def data_layout_of(config: Mapping) -> RunLayout:
    """The data paths of a config that may be a stage's subset holding ``data_dir`` but not ``results_dir``
    (``stage_params``): its results and log paths are not set, and asking for one is a TypeError."""
    return RunLayout(Path(config["data_dir"]), None, None)  # type: ignore[arg-type]
