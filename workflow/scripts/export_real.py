"""Snakemake wrapper: rule export_real (the gather) -> depthdif.real_sample.gather_real_index."""

from pathlib import Path

from depthdif.logs import setup_logging
from depthdif.real_sample import gather_real_index

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
gather_real_index(
    [Path(part) for part in snakemake.input.indexes],  # noqa: F821
    [Path(part) for part in snakemake.input.grids],  # noqa: F821
    Path(snakemake.output.index),  # noqa: F821
    Path(snakemake.output.split),  # noqa: F821
)
