"""Snakemake wrapper: rule download -> depthdif.download.run_download."""

from depthdif.download import run_download
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
run_download(snakemake.config)  # noqa: F821
