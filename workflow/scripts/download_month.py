"""Snakemake wrapper: rule download_month -> depthdif.download.download_month."""

from pathlib import Path

from depthdif.download import download_month
from depthdif.layout import layout_of, year_month
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
layout = layout_of(snakemake.config)  # noqa: F821
month = snakemake.wildcards.month  # noqa: F821
download_month(
    snakemake.params.settings,  # noqa: F821
    *year_month(month),
    raw_dir=layout.raw_dir,
    out_csv=Path(snakemake.output.manifest),  # noqa: F821
    digest_cache=layout.month_digests(month),
    local_files=[Path(name) for name in snakemake.input.local],  # noqa: F821
    stale=[layout.manifest],
)
