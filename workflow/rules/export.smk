# The export, one job per month, gathered into the contract index after the checks across months.
from depthdif.export import export_params


rule export_month:
    """Cut one month's file(s) into fixed-size patches of the chosen depth levels: the .npy files (not
    declared: their names depend on the land filter), the month's index rows and its files' axes."""
    input:
        manifest=LAYOUT.month_manifest("{month}"),
    output:
        index=LAYOUT.month_index("{month}"),
        grid=LAYOUT.month_grid("{month}"),
    params:
        export=export_params(config["export"]),
    threads: 1  # months run side by side; export.workers is for the CLI's whole-run export
    resources:
        mem_mb=4000,  # 4 levels of a global 1/12° month: ~140 MB of float32, read one level at a time
        runtime=30,
    conda:
        CONDA_ENV
    benchmark:
        LAYOUT.benchmark("export_month/{month}")
    log:
        LAYOUT.log("export_month/{month}"),
    script:
        "../scripts/export_month.py"


rule export:
    """Check that every month shares one depth axis and one grid, join the months' rows into the index, remove
    .npy files it does not list and the split index of the previous export."""
    input:
        manifest=RAW_MANIFEST,  # the contract manifest exists whenever the index does
        indexes=month_parts(LAYOUT.month_index),
        grids=month_parts(LAYOUT.month_grid),
    output:
        index=PATCH_INDEX,
    conda:
        CONDA_ENV
    benchmark:
        BENCHMARKS / "export.tsv"
    log:
        LOGS / "export.log",
    localrule: True
    script:
        "../scripts/export.py"
