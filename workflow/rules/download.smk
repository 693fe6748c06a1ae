rule download:
    """Fetch (Copernicus), link (local) or generate (synthetic) the monthly NetCDF files."""
    output:
        manifest=RAW_MANIFEST,
    params:
        source=config["source"],
    conda:
        CONDA_ENV
    log:
        LOGS / "download.log",
    localrule: True  # compute nodes often have no internet
    script:
        "../scripts/download.py"
