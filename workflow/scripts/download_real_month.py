"""Snakemake wrapper: rule download_real_month -> depthdif.evaluation.real_sample.download_real_month."""

from pathlib import Path

from depthdif.evaluation.real_sample import download_real_month
from depthdif.layout import layout_of, year_month
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
real = layout_of(snakemake.config).real_data  # noqa: F821
month = snakemake.wildcards.month  # noqa: F821
download_real_month(
    snakemake.params.settings,  # noqa: F821
    *year_month(month),
    local_files=[Path(name) for name in snakemake.input.local],  # noqa: F821
    raw_dir=real.raw_dir,
    out_csv=Path(snakemake.output.manifest),  # noqa: F821
    digest_cache=real.month_digests(month),
    stale=[real.manifest],
)
