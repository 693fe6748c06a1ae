"""Snakemake wrapper: rule export -> depthdif.export.export_patches."""

from pathlib import Path

from depthdif.export import export_patches
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
export_patches(
    snakemake.config,  # noqa: F821
    Path(snakemake.input.manifest),  # noqa: F821
    out_dir=Path(snakemake.output.index).parent,  # noqa: F821
    workers=snakemake.threads,  # noqa: F821
)
