"""Snakemake wrapper: rule export_month -> depthdif.export.export_month."""

from pathlib import Path

from depthdif.export import export_month
from depthdif.layout import layout_of
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
layout = layout_of(snakemake.config)  # noqa: F821
export_month(
    snakemake.params.export,  # noqa: F821
    Path(snakemake.input.manifest),  # noqa: F821
    raw_dir=layout.raw_dir,
    index_csv=Path(snakemake.output.index),  # noqa: F821
    grid_npz=Path(snakemake.output.grid),  # noqa: F821
    patches_dir=layout.patches_dir,
    workers=snakemake.threads,  # noqa: F821
    stale=[layout.patch_index, layout.split_index],
)
