# The download, one job per month (wildcard month = YYYYMM, planned_months() in common.smk), gathered into the
# contract manifest.
from depthdif.download import download_settings


wildcard_constraints:
    month=r"\d{6}",


rule download_month:
    """Fetch (Copernicus), link (local) or generate (synthetic) one month's NetCDF file(s) into raw/ and write
    its manifest rows. The .nc files are not declared outputs: Snakemake would delete a finished 1 GB month
    before rerunning the job, e.g. for a changed timeout; the job keeps files that are complete."""
    input:
        local=month_local_files,
    output:
        manifest=LAYOUT.month_manifest("{month}"),
    params:
        # the source without source.years/months: adding a month leaves every other month's job as it is
        settings=download_settings(config),
        file_stamps=month_file_stamps,
    resources:
        # capped in the profiles: how many Copernicus Marine downloads run at once
        copernicus_downloads=int(SOURCE_KIND == "copernicus"),
    conda:
        CONDA_ENV
    benchmark:
        LAYOUT.benchmark("download_month/{month}")
    log:
        LAYOUT.log("download_month/{month}"),
    # compute nodes often have no internet, and linking local files takes no time; a synthetic month is
    # computed, so on a cluster it is a job of its own
    localrule: SOURCE_KIND != "synthetic"
    script:
        "../scripts/download_month.py"


rule download:
    """Gather the months' manifests into raw/manifest.csv; remove links of local files no longer selected."""
    input:
        parts=month_parts(LAYOUT.month_manifest),
    output:
        manifest=RAW_MANIFEST,
    params:
        local_dir=config["source"]["local_dir"] if SOURCE_KIND == "local" else None,
    conda:
        CONDA_ENV
    benchmark:
        BENCHMARKS / "download.tsv"
    log:
        LOGS / "download.log",
    localrule: True
    script:
        "../scripts/download.py"
