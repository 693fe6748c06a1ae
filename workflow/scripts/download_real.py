"""Snakemake wrapper: rule download_real (the gather) -> depthdif.download.gather_manifest."""

from pathlib import Path

from depthdif.download import gather_manifest
from depthdif.logs import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
gather_manifest(
    [Path(part) for part in snakemake.input.parts],  # noqa: F821
    Path(snakemake.output.manifest),  # noqa: F821
    # the folder of the declared real files (common.smk::real_sample_files checked it at planning time)
    local_dir=Path(snakemake.input.local[0]).parent,  # noqa: F821
)
