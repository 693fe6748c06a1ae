"""Snakemake wrapper: rules evaluate_real_<variant> -> depthdif.evaluate_real.run_real_evaluation."""

from pathlib import Path

from depthdif.evaluate_real import run_real_evaluation
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
run_real_evaluation(
    snakemake.config,  # noqa: F821
    snakemake.params.variant,  # noqa: F821
    Path(snakemake.input.model),  # noqa: F821
    # the folder of the declared real files (common.smk::real_sample_files checked it at planning time)
    Path(snakemake.input.real[0]).parent,  # noqa: F821
    Path(snakemake.output.metrics).parent,  # noqa: F821
)
