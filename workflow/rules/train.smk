# One training rule per variant (contract targets train_temp_v1, train_eo_4band).
for _variant in ALL_VARIANTS:

    rule:
        name:
            f"train_{_variant}"
        input:
            index=SPLIT_INDEX,
        output:
            model=model_ckpt(_variant),
            metrics=LAYOUT.train_metrics(_variant),
        params:
            variant=_variant,
            settings={k: config[k] for k in ("dataset", "loader", "model", "train", "seed")},
        threads: config["train"]["threads"]
        resources:
            gpu=train_gpus(),
            mem_mb=8000,
            runtime=60 * 24,
        conda:
            CONDA_ENV
        benchmark:
            BENCHMARKS / f"train_{_variant}.tsv",
        log:
            LOGS / f"train_{_variant}.log",
        script:
            "../scripts/train.py"
