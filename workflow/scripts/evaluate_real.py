"""Snakemake wrapper: rules evaluate_real_<variant> -> depthdif.evaluation.protocol.run_evaluation (real sample)."""

from pathlib import Path

from depthdif.evaluation.protocol import run_evaluation
from depthdif.evaluation.real_sample import real_eval_config
from depthdif.layout import layout_of
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
index_csv = Path(snakemake.input.index)  # noqa: F821
run_evaluation(
    # the rule's params (depthdif.stage_reads) pointed at the real data folder and the real files' levels
    real_eval_config(snakemake.params.settings, index_csv, layout_of(snakemake.config).real_data.data_dir),  # noqa: F821
    snakemake.params.variant,  # noqa: F821
    Path(snakemake.input.model),  # noqa: F821
    Path(snakemake.output.metrics).parent,  # noqa: F821 (the folder of every declared output)
    index_csv=index_csv,
    baselines=Path(snakemake.input.baselines),  # noqa: F821
)
