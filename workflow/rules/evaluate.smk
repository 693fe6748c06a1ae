# One evaluation rule per variant (contract targets evaluate_temp_v1, evaluate_eo_4band).
for _variant in ALL_VARIANTS:

    rule:
        name:
            f"evaluate_{_variant}"
        input:
            index=SPLIT_INDEX,
            model=model_ckpt(_variant),
        output:
            metrics=report(
                eval_metrics(_variant),
                category="Scores",
                subcategory=_variant,
                caption="../report/metrics.rst",
            ),
            summary=RESULTS / _variant / "eval" / "metrics.json",
            figures=report(
                directory(RESULTS / _variant / "eval" / "figures"),
                patterns=["{name}.png"],
                category="Figures",
                subcategory=_variant,
                caption="../report/figures.rst",
            ),
            reconstruction=RESULTS / _variant / "eval" / "reconstruction.nc",
        params:
            variant=_variant,
            settings={k: config[k] for k in ("dataset", "evaluate", "seed")},
        threads: 2
        resources:
            gpu=train_gpus(),
            mem_mb=8000,
            runtime=120,
        conda:
            CONDA_ENV
        benchmark:
            BENCHMARKS / f"evaluate_{_variant}.tsv",
        log:
            LOGS / f"evaluate_{_variant}.log",
        script:
            "../scripts/evaluate.py"


# Sim-to-real: the same protocol on the real GLORYS12 sample (evaluate.real_sample_dir).
for _variant in ALL_VARIANTS:

    rule:
        name:
            f"evaluate_real_{_variant}"
        input:
            model=model_ckpt(_variant),
            real=real_sample_files,
        output:
            metrics=report(
                real_metrics(_variant),
                category="Scores on real GLORYS12",
                subcategory=_variant,
                caption="../report/metrics_real.rst",
            ),
        params:
            variant=_variant,
            settings={k: config[k] for k in ("dataset", "evaluate", "seed")},
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
        conda:
            CONDA_ENV
        benchmark:
            BENCHMARKS / f"evaluate_real_{_variant}.tsv",
        log:
            LOGS / f"evaluate_real_{_variant}.log",
        script:
            "../scripts/evaluate_real.py"


rule evaluate_real:
    """Score every configured variant on the real sample."""
    input:
        [real_metrics(v) for v in config["variants"]],
    default_target: False
    localrule: True
