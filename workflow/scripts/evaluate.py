"""Snakemake wrapper: rules evaluate_<variant> -> depthdif.evaluation.protocol.run_evaluation."""

from pathlib import Path

from depthdif.evaluation.protocol import run_evaluation
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
run_evaluation(
    snakemake.params.settings,  # noqa: F821 (exactly the keys the params carry: depthdif.stage_reads)
    snakemake.params.variant,  # noqa: F821
    Path(snakemake.input.model),  # noqa: F821
    Path(snakemake.output.metrics).parent,  # noqa: F821 (the folder of every declared output)
    index_csv=Path(snakemake.input.index),  # noqa: F821
    baselines=Path(snakemake.input.baselines),  # noqa: F821
)
