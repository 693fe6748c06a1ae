"""Snakemake wrapper: rules evaluate_real_<variant> -> depthdif.evaluate_real.run_real_evaluation."""

from pathlib import Path

from depthdif.evaluate_real import run_real_evaluation
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
if snakemake.params.real_dir is None:  # noqa: F821
    raise SystemExit("evaluate.real_sample_dir is not set: give the folder of real GLORYS12 *.nc files.")
run_real_evaluation(
    snakemake.config,  # noqa: F821
    snakemake.params.variant,  # noqa: F821
    Path(snakemake.input.model),  # noqa: F821
    Path(snakemake.params.real_dir),  # noqa: F821
    Path(snakemake.output.metrics).parent,  # noqa: F821
)
