"""The baselines as a stage of their own (rule baselines_<variant>) and the evaluation that reads them.

The evaluation scored with the stored predictions must give the same tables as the evaluation computing them
in place; a stored file computed from other observations is refused; each rule's params are exactly the
config its stage is handed (depthdif.stage_reads), and a model setting is not among the baselines' params.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_evaluate import TINY, checkpoint

from depthdif.config import deep_merge, load_config
from depthdif.download import run_download
from depthdif.evaluation.baseline_predictions import BaselinesMismatchError, run_baselines
from depthdif.evaluation.protocol import run_evaluation
from depthdif.export import export_patches
from depthdif.layout import EvalFiles, layout_of
from depthdif.split import split_index
from depthdif.stage_reads import stage_params

REPO = Path(__file__).resolve().parents[1]
# 12 months (DINEOF needs 8 a location); observations "both" adds the profile passes, eo_4band the clean surface
SETTINGS = {
    "source": {"months": [1, 3, 5, 7, 9, 11]},
    "dataset": {"observations": "both"},
    "evaluate": {"mask_fractions": [0.5, 0.95], "profile_density_factors": [4.0], "months_per_location": 8},
}


@pytest.fixture(scope="module")
def tiny_year(tmp_path_factory):
    """A tiny synthetic export of 12 months, split, and an untrained eo_4band model on a fitted first guess."""
    root = tmp_path_factory.mktemp("baselines")
    config = load_config([TINY], deep_merge(SETTINGS, {"data_dir": str(root / "data"),
                                                       "results_dir": str(root / "results")}))
    split_index(config, export_patches(config, run_download(config), workers=1))
    index_csv = Path(config["data_dir"]) / "patches" / "patch_index_split.csv"
    return config, root, index_csv, checkpoint(config, "eo_4band", root / "eo_4band.ckpt")


def without_seconds(value):
    """metrics.json without its timings."""
    if isinstance(value, dict):
        return {key: without_seconds(item) for key, item in value.items() if key != "seconds"}
    if isinstance(value, list):
        return [without_seconds(item) for item in value]
    return value


def test_stored_baselines_score_as_baselines_computed_in_place(tiny_year):
    config, root, index_csv, ckpt = tiny_year
    stored = root / "stored"
    # each stage on exactly its rule's params: a read of any other key would fail here
    baselines = run_baselines(stage_params(config, "baselines"), "eo_4band", index_csv, root / "predictions.npz")
    run_evaluation(stage_params(config, "evaluate"), "eo_4band", ckpt, stored, index_csv=index_csv,
                   baselines=baselines)
    inline = root / "inline"
    run_evaluation(config, "eo_4band", ckpt, inline, index_csv=index_csv)

    files = EvalFiles(stored)
    # every file the evaluation writes is one of EvalFiles (the rule declares them all)
    assert {p.name for p in stored.iterdir()} == {files.metrics.name, files.summary.name, files.figures.name,
                                                 files.reconstruction.name, files.spectra.name,
                                                 files.ddim_steps.name, files.location_sums.name}
    for name in (files.metrics.name, files.spectra.name, files.ddim_steps.name, files.location_sums.name):
        pd.testing.assert_frame_equal(pd.read_csv(stored / name), pd.read_csv(inline / name), check_exact=True)
    summary = json.loads(files.summary.read_text())
    assert without_seconds(summary) == without_seconds(json.loads((inline / files.summary.name).read_text()))
    metrics = pd.read_csv(files.metrics)
    # every pass kind is there: occlusion levels, the profile density, the clean surface
    assert set(metrics["observations"]) == {"rectangles", "profiles"}
    assert "clean_surface" in summary and "profiles" in summary
    dineof = metrics[metrics["method"] == "dineof"]
    assert (dineof["n_pixels"] > 0).any()  # DINEOF ran (8 months a location), so its route is compared too

    with np.load(baselines) as npz:
        meta = json.loads(str(npz["meta"]))
        assert [p["key"] for p in meta["passes"]] == ["occlusion_0.5", "occlusion_0.95", "profiles_4.0",
                                                     "clean_surface_0.95"]
        oi = npz["occlusion_0.95/oi"]
        assert oi.dtype == np.float32 and oi.ndim == 4
        assert npz["occlusion_0.95/oi/available"].shape == oi.shape[:2]


@pytest.fixture(scope="module")
def temp_v1_baselines(tiny_year):
    """The temp_v1 baselines file of the tiny run and a temp_v1 model."""
    config, root, index_csv, _ = tiny_year
    config = deep_merge(config, {"dataset": {"observations": "rectangles"}})
    path = run_baselines(stage_params(config, "baselines"), "temp_v1", index_csv, root / "temp_v1.npz")
    return config, root, index_csv, checkpoint(config, "temp_v1", root / "temp_v1.ckpt"), path


@pytest.mark.parametrize(("change", "message"), [
    ({"dataset": {"mask_patch_max": 3}}, "other observation masks"),  # the same passes, other rectangles
    ({"evaluate": {"mask_fractions": [0.5]}}, "holds the passes"),
    ({"evaluate": {"dineof": False}}, "holds the methods"),
    ({"evaluate": {"max_patches": 4, "months_per_location": 4}}, "other val patches"),
], ids=["masks", "passes", "methods", "patches"])
def test_baselines_of_other_observations_are_refused(temp_v1_baselines, change, message):
    config, root, index_csv, ckpt, path = temp_v1_baselines
    out = root / "refused"
    with pytest.raises(BaselinesMismatchError, match=message) as error:
        run_evaluation(deep_merge(config, change), "temp_v1", ckpt, out, index_csv=index_csv, baselines=path)
    assert "snakemake --forcerun baselines_temp_v1" in str(error.value)
    assert not (out / "metrics.csv").exists()


def test_a_missing_or_other_variant_baselines_file_is_refused(temp_v1_baselines, tiny_year):
    config, root, index_csv, ckpt, path = temp_v1_baselines
    with pytest.raises(BaselinesMismatchError, match="does not exist"):
        run_evaluation(config, "temp_v1", ckpt, root / "none", index_csv=index_csv, baselines=root / "no.npz")
    eo_config, _, _, eo_ckpt = tiny_year
    with pytest.raises(BaselinesMismatchError, match="variant 'temp_v1'"):
        run_evaluation(eo_config, "eo_4band", eo_ckpt, root / "other", index_csv=index_csv, baselines=path)


# model settings (and the model's sampling): none reaches the baselines' params
MODEL_ONLY = [
    {"model": {"dim": 16}}, {"train": {"max_steps": 7}}, {"loader": {"batch_size": 4}},
    {"evaluate": {"ensemble_size": 3, "sampling_steps": 5, "steps_sweep": [3]}},
    {"dataset": {"mask_fraction": 0.5, "train_mask_fractions": [0.9], "first_guess": True}},
]
# what the baselines see: their params change
OBSERVATIONS = [{"seed": 3}, {"dataset": {"mask_patch_max": 3}}, {"evaluate": {"dineof_max_modes": 4}},
                {"evaluate": {"oi_noise_ratio": 0.2}}, {"evaluate": {"mask_fractions": [0.5]}}]


@pytest.mark.parametrize("change", MODEL_ONLY, ids=lambda c: json.dumps(c))
def test_a_model_setting_is_not_a_baselines_param(change):
    config = load_config([TINY])
    assert stage_params(deep_merge(config, change), "baselines") == stage_params(config, "baselines")
    assert stage_params(deep_merge(config, change), "evaluate") != stage_params(config, "evaluate")


@pytest.mark.parametrize("change", OBSERVATIONS, ids=lambda c: json.dumps(c))
def test_what_the_baselines_see_is_a_baselines_param(change):
    config = load_config([TINY])
    assert stage_params(deep_merge(config, change), "baselines") != stage_params(config, "baselines")


PROBE = """include: {snakefile!r}

import json as _json

for _rule in workflow.rules:
    if _rule.name.startswith(("baselines_", "evaluate_")):
        print("PROBE", _json.dumps({{"rule": _rule.name, "params": dict(_rule.params.items()),
                                     "output": sorted(str(o) for o in _rule.output)}}, sort_keys=True))
"""


def test_each_rule_carries_its_stage_params_and_declares_every_output(tmp_path):
    probe = tmp_path / "probe.smk"
    probe.write_text(PROBE.format(snakefile=str(REPO / "Snakefile")))
    configfiles = [str(REPO / "config" / "config.yaml"), str(TINY)]
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(probe), "--directory", str(tmp_path),
                             "--configfile", *configfiles, "-n", "--cores", "1", "split"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rules = {entry["rule"]: entry for entry in (json.loads(line.split(" ", 1)[1])
                                                for line in result.stdout.splitlines() if line.startswith("PROBE "))}
    config = load_config(configfiles)
    layout = layout_of(config)
    for variant in ("temp_v1", "eo_4band"):
        baselines, evaluate = rules[f"baselines_{variant}"], rules[f"evaluate_{variant}"]
        assert baselines["params"]["settings"] == json.loads(json.dumps(stage_params(config, "baselines")))
        assert evaluate["params"]["settings"] == json.loads(json.dumps(stage_params(config, "evaluate")))
        assert rules[f"evaluate_real_{variant}"]["params"]["settings"] == json.loads(json.dumps(
            stage_params(config, "evaluate_real")))
        assert baselines["output"] == [str(layout.baseline_predictions(variant))]
        files = layout.eval_files(variant)
        assert evaluate["output"] == sorted(str(p) for p in (files.metrics, files.summary, files.figures,
                                                             files.reconstruction, files.spectra, files.ddim_steps,
                                                             files.location_sums))
        # the sim-to-real rules: the same stages on the real sample's split index, every output declared
        assert rules[f"baselines_real_{variant}"]["params"]["settings"] == baselines["params"]["settings"]
        assert rules[f"baselines_real_{variant}"]["output"] == [str(layout.real_baseline_predictions(variant))]
        real = layout.real_eval_files(variant)
        assert rules[f"evaluate_real_{variant}"]["output"] == sorted(
            str(p) for p in (real.metrics, real.summary, real.figures, real.reconstruction, real.spectra,
                             real.ddim_steps, real.location_sums))
