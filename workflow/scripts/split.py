"""Snakemake wrapper: rule split -> depthdif.split.split_index."""

from pathlib import Path

from depthdif.logs import setup_logging
from depthdif.split import split_index

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
split_index(snakemake.config, Path(snakemake.input.index), Path(snakemake.output.index))  # noqa: F821
