rule download:
    """Fetch (Copernicus), link (local) or generate (synthetic) the monthly NetCDF files."""
    input:
        local=local_source_files,
    output:
        manifest=RAW_MANIFEST,
    params:
        source=source_params,
    conda:
        CONDA_ENV
    benchmark:
        BENCHMARKS / "download.tsv",
    log:
        LOGS / "download.log",
    localrule: True  # compute nodes often have no internet
    script:
        "../scripts/download.py"
