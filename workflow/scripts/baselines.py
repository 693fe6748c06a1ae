"""Snakemake wrapper: rules baselines_<variant> -> depthdif.evaluation.baseline_predictions.run_baselines."""

from pathlib import Path

from depthdif.evaluation.baseline_predictions import run_baselines
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
run_baselines(
    snakemake.params.settings,  # noqa: F821 (exactly the keys the params carry: depthdif.stage_reads)
    snakemake.params.variant,  # noqa: F821
    Path(snakemake.input.index),  # noqa: F821
    Path(snakemake.output.predictions),  # noqa: F821
)
