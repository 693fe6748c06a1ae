# The real sample of the sim-to-real evaluation (evaluate.real_sample_dir) as a second dataset: the same
# per-month download and export code into {data_dir}/real (REAL in common.smk), one job per month, gathered
# into an index whose every patch is val. Planned only when a sim-to-real target is asked for.
from depthdif.evaluation.real_sample import real_download_settings, real_export_params


rule download_real_month:
    """Link one month's real files into real/raw/ and write its manifest rows (a local source of every file of
    evaluate.real_sample_dir, whatever source.years/months say)."""
    input:
        local=real_month_local_files,
    output:
        manifest=REAL.month_manifest("{month}"),
    params:
        settings=real_download_settings(config),
        file_stamps=real_month_file_stamps,
    conda:
        CONDA_ENV
    benchmark:
        LAYOUT.benchmark("download_real_month/{month}")
    log:
        LAYOUT.log("download_real_month/{month}"),
    localrule: True  # links files: no work for a cluster job
    script:
        "../scripts/download_real_month.py"


rule download_real:
    """Gather the real months' manifests into real/raw/manifest.csv; remove links of real files removed since."""
    input:
        parts=month_parts(REAL.month_manifest, real_months),
        local=real_sample_files,
    output:
        manifest=REAL.manifest,
    conda:
        CONDA_ENV
    benchmark:
        LAYOUT.benchmark("download_real")
    log:
        LAYOUT.log("download_real"),
    localrule: True
    script:
        "../scripts/download_real.py"


rule export_real_month:
    """Cut one real month into patches of the main export's levels, found by value in each real file (a real
    subset need not hold the levels at the positions export.depth_indices names)."""
    input:
        manifest=REAL.month_manifest("{month}"),
        levels=export_levels,
    output:
        index=REAL.month_index("{month}"),
        grid=REAL.month_grid("{month}"),
    params:
        export=real_export_params(config["export"]),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        CONDA_ENV
    benchmark:
        LAYOUT.benchmark("export_real_month/{month}")
    log:
        LAYOUT.log("export_real_month/{month}"),
    script:
        "../scripts/export_real_month.py"


rule export_real:
    """Check that the real months share one depth axis and one grid, join their rows into the real index, and
    write its split index: every real patch is val (the models never saw this ocean)."""
    input:
        manifest=REAL.manifest,
        indexes=month_parts(REAL.month_index, real_months),
        grids=month_parts(REAL.month_grid, real_months),
    output:
        index=REAL.patch_index,
        split=REAL.split_index,
    conda:
        CONDA_ENV
    benchmark:
        LAYOUT.benchmark("export_real")
    log:
        LAYOUT.log("export_real"),
    localrule: True
    script:
        "../scripts/export_real.py"
