"""Snakemake wrapper: rule export_real_month -> depthdif.evaluation.real_sample.export_real_month."""

from pathlib import Path

from depthdif.evaluation.real_sample import export_real_month
from depthdif.layout import layout_of
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
real = layout_of(snakemake.config).real_data  # noqa: F821
export_real_month(
    snakemake.params.export,  # noqa: F821
    Path(snakemake.input.levels),  # noqa: F821
    Path(snakemake.input.manifest),  # noqa: F821
    raw_dir=real.raw_dir,
    index_csv=Path(snakemake.output.index),  # noqa: F821
    grid_npz=Path(snakemake.output.grid),  # noqa: F821
    patches_dir=real.patches_dir,
    stale=[real.patch_index, real.split_index],
)
