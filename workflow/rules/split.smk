rule split:
    """Assign whole geographic windows to train or val so no location leaks across the split."""
    input:
        index=PATCH_INDEX,
    output:
        index=SPLIT_INDEX,
    params:
        split=config["split"],
    conda:
        CONDA_ENV
    benchmark:
        BENCHMARKS / "split.tsv",
    log:
        LOGS / "split.log",
    localrule: True
    script:
        "../scripts/split.py"
