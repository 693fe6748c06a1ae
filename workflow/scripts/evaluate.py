"""Snakemake wrapper: rules evaluate_<variant> -> depthdif.evaluate.run_evaluation."""

from pathlib import Path

from depthdif.evaluate import run_evaluation
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
run_evaluation(
    snakemake.config,  # noqa: F821
    snakemake.params.variant,  # noqa: F821
    Path(snakemake.input.model),  # noqa: F821
    Path(snakemake.output.metrics).parent,  # noqa: F821
    index_csv=Path(snakemake.input.index),  # noqa: F821
)
