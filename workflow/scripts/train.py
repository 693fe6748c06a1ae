"""Snakemake wrapper: rules train_<variant> -> depthdif.train.run_training."""

from pathlib import Path

from depthdif.logs import setup_logging
from depthdif.train import run_training

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
run_training(
    snakemake.config,  # noqa: F821
    snakemake.params.variant,  # noqa: F821
    Path(snakemake.output.model).parent,  # noqa: F821
    index_csv=Path(snakemake.input.index),  # noqa: F821
)
