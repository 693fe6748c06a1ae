# DepthDif: sparse ocean observations -> dense subsurface temperature, as a reproducible DAG.
#   snakemake --cores 2                     whole default run (synthetic ocean, offline)
#   snakemake --cores 2 train_eo_4band      one target; see README for the others
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/real_sample.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
