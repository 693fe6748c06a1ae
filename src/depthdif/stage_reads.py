"""What each stage reads from the config: its rule's ``params`` and the config its script hands the stage.

Snakemake reruns a job whose params changed, so a rule's params must hold every config key its stage reads
(an omission misses reruns) and nothing else (an extra key reruns the stage for nothing). Each rule passes
:func:`stage_params` as ``params.settings`` and its script hands the stage exactly that dict, so a stage that
reads a key its params do not carry fails with a KeyError (tests/test_baselines_rule.py runs the stages on
exactly these subsets). Kept apart from the stages so the Snakefile can import it without torch.
"""

from __future__ import annotations

from collections.abc import Mapping

from depthdif.config import config_subset

# dataset keys that shape the val observations (masks, surface, land); the others (mask_fraction, train_*,
# first_guess, enable_transform, eo_dropout_prob, ...) shape only training batches or the model's inputs
OBSERVATION_KEYS = ("temp_v1_band", "observations", "profiles_per_deg2_month", "mask_patch_min", "mask_patch_max",
                    "fill_value", "eo_degraded_val", "eo_random_offset", "eo_speckle", "surface_noise_fraction")
# evaluate keys of the val selection, the passes and the baselines' own settings (not the model's sampling)
BASELINE_EVALUATE_KEYS = ("max_patches", "months_per_location", "mask_fractions", "profile_density_factors",
                          "oi_length_scale_px", "oi_noise_ratio", "oi_tune", "idw_neighbours", "dineof",
                          "dineof_max_modes")

STAGE_READS: dict[str, dict[str, tuple[str, ...] | None]] = {
    # depthdif.evaluation.baseline_predictions.run_baselines: no model key, so a model change reruns no
    # baseline (export.surface_variables: the dense fields eo_regression_oi regresses on)
    "baselines": {"seed": None, "dataset": OBSERVATION_KEYS, "evaluate": BASELINE_EVALUATE_KEYS,
                  "export": ("surface_variables",)},
    # depthdif.evaluation.protocol.run_evaluation: data_dir (the month reconstruction.nc rebuilds), export
    # (its levels), model and train (the checkpoint's compatibility check, threads), loader (the batches seed
    # the model's sampling), dataset, evaluate, seed
    "evaluate": {key: None for key in ("data_dir", "seed", "export", "dataset", "loader", "model", "train",
                                       "evaluate")},
    # depthdif.evaluation.protocol.run_evaluation on the real sample (rules evaluate_real_*): the evaluation's
    # keys but data_dir and export.depth_indices, which come from the real sample's data folder and index
    # (depthdif.evaluation.real_sample.real_eval_config); the baselines_real_* rules read
    # STAGE_READS["baselines"]
    "evaluate_real": {key: None for key in ("seed", "export", "dataset", "loader", "model", "train", "evaluate")},
}


def stage_params(config: Mapping, stage: str) -> dict:
    """The config keys ``stage`` reads (:data:`STAGE_READS`), copied out of ``config``.

    Args:
        config: the validated run config.
        stage: a key of :data:`STAGE_READS`.

    Returns:
        The subset, for the rule's ``params`` and the stage's ``config`` argument.
    """
    return config_subset(config, STAGE_READS[stage])
