"""Snakemake wrapper: rule export_real (the gather) -> depthdif.evaluation.real_sample.gather_real_index."""

from pathlib import Path

from depthdif.evaluation.real_sample import gather_real_index
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
gather_real_index(
    [Path(part) for part in snakemake.input.indexes],  # noqa: F821
    [Path(part) for part in snakemake.input.grids],  # noqa: F821
    Path(snakemake.output.index),  # noqa: F821
    Path(snakemake.output.split),  # noqa: F821
)
