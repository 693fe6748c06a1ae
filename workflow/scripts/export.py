"""Snakemake wrapper: rule export (the gather) -> depthdif.export.gather_index."""

from pathlib import Path

from depthdif.export import gather_index
from depthdif.layout import layout_of
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
gather_index(
    [Path(part) for part in snakemake.input.indexes],  # noqa: F821
    [Path(part) for part in snakemake.input.grids],  # noqa: F821
    Path(snakemake.output.index),  # noqa: F821
    split_csv=layout_of(snakemake.config).split_index,  # noqa: F821
)
