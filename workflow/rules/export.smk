rule export:
    """Cut fixed-size patches of the chosen depth levels into .npy files plus an index CSV."""
    input:
        manifest=RAW_MANIFEST,
    output:
        index=PATCH_INDEX,
    params:
        export=config["export"],
    threads: config["export"]["workers"]
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CONDA_ENV
    benchmark:
        BENCHMARKS / "export.tsv",
    log:
        LOGS / "export.log",
    script:
        "../scripts/export.py"
