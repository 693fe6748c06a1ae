from depthdif.stage_reads import stage_params


# The baselines of each variant's evaluation, apart from the model: a change of a model setting reruns none.
for _variant in ALL_VARIANTS:

    rule:
        name:
            f"baselines_{_variant}"
        input:
            index=SPLIT_INDEX,
        output:
            predictions=LAYOUT.baseline_predictions(_variant),
        params:
            variant=_variant,
            settings=stage_params(config, "baselines"),
        threads: 1  # one BLAS thread: the many small OI solves are fastest so
        resources:
            mem_mb=8000,
            runtime=240,
        conda:
            CONDA_ENV
        benchmark:
            LAYOUT.benchmark(f"baselines_{_variant}"),
        log:
            LAYOUT.log(f"baselines_{_variant}"),
        script:
            "../scripts/baselines.py"


# One evaluation rule per variant (contract targets evaluate_temp_v1, evaluate_eo_4band): the model, scored
# with the baselines' stored predictions into one table.
for _variant in ALL_VARIANTS:

    rule:
        name:
            f"evaluate_{_variant}"
        input:
            index=SPLIT_INDEX,
            model=model_ckpt(_variant),
            baselines=LAYOUT.baseline_predictions(_variant),
        output:
            metrics=report(
                eval_metrics(_variant),
                category="Scores",
                subcategory=_variant,
                caption="../report/metrics.rst",
            ),
            summary=LAYOUT.eval_files(_variant).summary,
            figures=report(
                directory(LAYOUT.eval_files(_variant).figures),
                patterns=["{name}.png"],
                category="Figures",
                subcategory=_variant,
                caption="../report/figures.rst",
            ),
            reconstruction=LAYOUT.eval_files(_variant).reconstruction,
            spectra=LAYOUT.eval_files(_variant).spectra,
            ddim_steps=LAYOUT.eval_files(_variant).ddim_steps,
            location_sums=LAYOUT.eval_files(_variant).location_sums,
        params:
            variant=_variant,
            settings=stage_params(config, "evaluate"),
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


# Sim-to-real: the same baselines and protocol on the real GLORYS12 sample, exported by real_sample.smk
# into {data_dir}/real (every patch val).
for _variant in ALL_VARIANTS:

    rule:
        name:
            f"baselines_real_{_variant}"
        input:
            index=REAL.split_index,
        output:
            predictions=LAYOUT.real_baseline_predictions(_variant),
        params:
            variant=_variant,
            settings=stage_params(config, "baselines"),
        threads: 1  # one BLAS thread: the many small OI solves are fastest so
        resources:
            mem_mb=8000,
            runtime=240,
        conda:
            CONDA_ENV
        benchmark:
            LAYOUT.benchmark(f"baselines_real_{_variant}"),
        log:
            LAYOUT.log(f"baselines_real_{_variant}"),
        script:
            "../scripts/baselines.py"


for _variant in ALL_VARIANTS:

    rule:
        name:
            f"evaluate_real_{_variant}"
        input:
            index=REAL.split_index,
            model=model_ckpt(_variant),
            baselines=LAYOUT.real_baseline_predictions(_variant),
        output:
            metrics=report(
                real_metrics(_variant),
                category="Scores on real GLORYS12",
                subcategory=_variant,
                caption="../report/metrics_real.rst",
            ),
            summary=LAYOUT.real_eval_files(_variant).summary,
            figures=directory(LAYOUT.real_eval_files(_variant).figures),
            reconstruction=LAYOUT.real_eval_files(_variant).reconstruction,
            spectra=LAYOUT.real_eval_files(_variant).spectra,
            ddim_steps=LAYOUT.real_eval_files(_variant).ddim_steps,
            location_sums=LAYOUT.real_eval_files(_variant).location_sums,
        params:
            variant=_variant,
            settings=stage_params(config, "evaluate_real"),
        threads: 2
        resources:
            gpu=train_gpus(),  # samples the model, as evaluate_{variant}
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
