"""The evaluation protocol end to end on a tiny synthetic data set with an untrained model.

The model's scores here mean nothing (untrained); what is tested is the protocol: every method at every
occlusion level, the contract columns, the same observations for every method, figures and the CF NetCDF.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from depthdif.config import deep_merge, load_config
from depthdif.data.datamodule import DepthDifDataModule
from depthdif.download import gather_manifest, run_download
from depthdif.evaluation.baseline_predictions import run_baselines
from depthdif.evaluation.protocol import run_evaluation, select_val_rows
from depthdif.evaluation.real_sample import (
    RealDataError,
    download_real_month,
    export_real_month,
    gather_real_index,
    matching_depth_indices,
    real_download_settings,
    real_eval_config,
    real_export_params,
)
from depthdif.export import export_patches
from depthdif.glorys import DEPTH_LEVELS_M
from depthdif.layout import layout_of, year_month
from depthdif.models.module import (
    CheckpointError,
    DepthDifModule,
    model_settings,
    num_target_bands,
    sampling_train_config,
    save_model,
)
from depthdif.sources.local import local_months
from depthdif.split import split_index
from depthdif.stage_reads import stage_params
from depthdif.train import fit_first_guess

TINY = Path(__file__).parent / "configs" / "tiny.yaml"
CONTRACT_COLUMNS = ["method", "band", "depth_m", "mask_fraction", "rmse_c", "mae_c", "bias_c", "crps_c", "n_pixels"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    config = load_config([TINY], {"data_dir": str(root / "data"), "results_dir": str(root / "results")})
    manifest = run_download(config)
    index = export_patches(config, manifest, workers=1)
    split_index(config, index)
    return config, root


def checkpoint(config, variant, path, fit=True):
    depths = [DEPTH_LEVELS_M[i] for i in config["export"]["depth_indices"]]  # the synthetic files hold all 50
    module = DepthDifModule(model_settings(config, variant, depths), sampling_train_config(),
                            num_target_bands(config, variant))
    if module.residual and fit:  # an untrained network on a first guess fitted to the tiny training split
        variant_config = deep_merge(config, {"dataset": {"dataset_variant": variant}})
        fit_first_guess(module, DepthDifDataModule(variant_config, variant=variant), variant_config)
    save_model(module, module.state_dict(), path)
    return path


@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
def test_every_method_at_every_level(tiny_data, variant):
    config, root = tiny_data
    ckpt = checkpoint(config, variant, root / f"{variant}.ckpt")
    out = root / "results" / variant / "eval"
    metrics_csv = run_evaluation(config, variant, ckpt, out)
    metrics = pd.read_csv(metrics_csv)
    assert list(metrics.columns[:9]) == CONTRACT_COLUMNS
    expected = {"diffusion_ens_mean", "diffusion_sample", "diffusion_cond_mean", "cokriging", "climatology",
                "mean_fill", "nearest", "linear", "idw", "biharmonic", "oi", "dineof"} | (
        {"eo_regression_oi"} if variant == "eo_4band" else set())
    assert set(metrics["method"]) == expected
    bands = 1 if variant == "temp_v1" else 3
    for fraction in config["evaluate"]["mask_fractions"]:
        at = metrics[np.isclose(metrics["mask_fraction"], fraction)]
        assert len(at) == len(expected) * bands
        scored = at[at["method"] != "dineof"]  # tiny stacks have too few months for DINEOF: recorded, not scored
        assert (scored["n_pixels"] > 0).all()
        # every method is scored on the same hidden pixels
        assert scored.groupby("band")["n_pixels"].nunique().eq(1).all()
    deep = metrics[metrics["method"] == "oi"]["depth_m"]
    assert deep.max() == pytest.approx(92.33, abs=0.01)
    # more hidden pixels at higher occlusion
    n = metrics[metrics["method"] == "oi"].groupby("mask_fraction")["n_pixels"].sum()
    assert n.is_monotonic_increasing
    ens = metrics[metrics["method"] == "diffusion_ens_mean"]
    assert ens["spread_skill"].notna().all()
    # CRPS = E|X - y| - E|X - X'| / 2 <= E|X - y| <= |mean - y| + E|X - mean|: at most the mean's MAE plus the
    # spread (an antithetic ensemble's mean is its first guess exactly here, so the spread term is needed)
    assert (ens["crps_c"] <= ens["mae_c"] + 1.05 * ens["spread_c"]).all()
    assert (ens["crps_c"] > 0).all()
    # the untrained network on its fitted first guess: the one-call conditional mean is the first guess, scored
    # as a Gaussian posterior (its CRPS is not its MAE)
    by_method = metrics.set_index(["method", "band", "mask_fraction"])
    np.testing.assert_allclose(by_method.loc["diffusion_cond_mean", "rmse_c"], by_method.loc["cokriging", "rmse_c"],
                               rtol=1e-3)
    cokriging = metrics[metrics["method"] == "cokriging"]
    assert (cokriging["crps_c"] != cokriging["mae_c"]).all() and cokriging["spread_skill"].notna().all()

    summary = json.loads((out / "metrics.json").read_text())
    assert summary["variant"] == variant
    assert {h["mask_fraction"] for h in summary["headline"]} == set(config["evaluate"]["mask_fractions"])
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "rmse_vs_occlusion.png" in figures
    assert "rmse_vs_ddim_steps.png" in figures
    assert "rank_histogram.png" in figures
    headline = summary["headline"][0]
    assert "model_over_best_baseline_ci95" in headline and "cond_mean_over_best_baseline" in headline
    assert any(name.startswith("example_") for name in figures)
    if variant == "eo_4band":
        # a second pass with the reanalysis's clean surface: same masks, so the same pixels; other surface, so
        # the surface regression's score changes
        clean = summary["clean_surface"]["headline"]
        assert len(clean) == 1
        fraction = clean[0]["mask_fraction"]
        degraded = metrics[(metrics["method"] == "eo_regression_oi") & np.isclose(metrics["mask_fraction"], fraction)]
        assert clean[0]["best_baseline"] in {"cokriging", "eo_regression_oi"}
        per_band = {b["band"]: b for b in clean[0]["per_band"]}
        assert set(per_band) == set(degraded["band"])
        ens_degraded = metrics[(metrics["method"] == "diffusion_ens_mean") & np.isclose(metrics["mask_fraction"],
                                                                                      fraction)].set_index("band")
        assert all(b["diffusion_ens_mean_rmse_c"] > 0 for b in per_band.values())
        # the surface drives the first guess's drift: another surface, another estimate at 9.6 m
        assert per_band[0]["diffusion_ens_mean_rmse_c"] != pytest.approx(ens_degraded.loc[0, "rmse_c"], rel=1e-3)
    else:
        assert "clean_surface" not in summary

    recon = xr.open_dataset(out / "reconstruction.nc")
    assert recon.attrs["Conventions"] == "CF-1.8"
    assert recon["thetao"].attrs["units"] == "degC"
    assert recon["depth"].attrs["units"] == "m"
    assert recon.sizes["depth"] == bands
    assert recon.sizes["latitude"] == 60 and recon.sizes["longitude"] == 96  # the whole exported region
    ocean = recon["ocean_mask"].values.astype(bool)
    # ocean cells with no observation of their band within one tile are NaN (reconstruct_grid); the rest filled
    filled = np.isfinite(recon["thetao"].values[ocean])
    assert filled.mean() > 0.95, filled.mean()
    assert np.isnan(recon["thetao"].values[~ocean]).all()
    observed = recon["observation_mask"].values.astype(bool)
    np.testing.assert_allclose(recon["thetao"].values[observed], recon["thetao_truth"].values[observed], atol=1e-4)


def test_wrong_variant_checkpoint_is_refused(tiny_data):
    config, root = tiny_data
    ckpt = checkpoint(config, "temp_v1", root / "other.ckpt")
    with pytest.raises(CheckpointError, match="temp_v1"):
        run_evaluation(config, "eo_4band", ckpt, root / "wrong")
    assert not (root / "wrong" / "metrics.csv").exists()


def test_incompatible_config_is_refused(tiny_data):
    config, root = tiny_data
    ckpt = checkpoint(config, "temp_v1", root / "small.ckpt")
    bigger = load_config([TINY], {"data_dir": config["data_dir"], "model": {"dim": 16}})
    with pytest.raises(CheckpointError, match="dim"):
        run_evaluation(bigger, "temp_v1", ckpt, root / "wrong2")


def test_val_rows_are_whole_locations(tiny_data):
    config, _ = tiny_data
    index = pd.read_csv(Path(config["data_dir"]) / "patches" / "patch_index_split.csv")
    rows = select_val_rows(index, max_patches=5, seed=0)
    assert (rows["split"] == "val").all()
    per_place = index[index.split == "val"].groupby(["y0", "x0"]).size()
    for (y0, x0), group in rows.groupby(["y0", "x0"]):
        assert len(group) == per_place[(y0, x0)]


def export_real_sample(config, real_sample_dir: Path) -> Path:
    """The real sample through the stages of rules download_real_month, download_real, export_real_month and
    export_real, as the DAG runs them; returns its split index (``{data_dir}/real/patches``)."""
    main, real = layout_of(config), layout_of(config).real_data
    levels = main.month_grid(sorted(p.name[:6] for p in main.patches_dir.glob("months/*.grid.npz"))[0])
    months = local_months(real_sample_dir, None)
    for tag, files in months.items():
        download_real_month(real_download_settings(config), *year_month(tag), files, real.raw_dir,
                            real.month_manifest(tag))
        export_real_month(real_export_params(config["export"]), levels, real.month_manifest(tag), real.raw_dir,
                          real.month_index(tag), real.month_grid(tag), real.patches_dir)
    gather_manifest([real.month_manifest(tag) for tag in months], real.manifest, local_dir=real_sample_dir)
    return gather_real_index([real.month_index(tag) for tag in months], [real.month_grid(tag) for tag in months],
                             real.patch_index, real.split_index)


def test_sim_to_real_on_the_real_sample(tiny_data, real_sample_dir):
    config, root = tiny_data
    split = export_real_sample(config, real_sample_dir)
    index = pd.read_csv(split)
    assert set(index["split"]) == {"val"}
    assert set(index["source_file"]) == {"mercatorglorys12v1_gl12_mean_201011.nc",
                                         "mercatorglorys12v1_gl12_mean_201012.nc"}
    # the real file's levels 0, 1, 2, 3 are the synthetic export's 0.494, 9.57, 29.4, 92.3 m (its 0, 7, 14, 21)
    assert set(index["depth_indices"]) == {"0;1;2;3"}
    ckpt = checkpoint(config, "eo_4band", root / "real.ckpt")
    real = layout_of(config).real_data
    eval_config = real_eval_config(stage_params(config, "evaluate_real"), split, real.data_dir)
    assert eval_config["export"]["depth_indices"] == [0, 1, 2, 3] and eval_config["data_dir"] == str(real.data_dir)
    baselines = run_baselines(stage_params(config, "baselines"), "eo_4band", split, root / "real_baselines.npz")
    out = root / "real_eval"
    metrics = pd.read_csv(run_evaluation(eval_config, "eo_4band", ckpt, out, index_csv=split, baselines=baselines))
    assert sorted(metrics["depth_m"].unique()) == pytest.approx([9.573, 29.445, 92.326], abs=0.01)
    oi = metrics[(metrics["method"] == "oi")]
    assert (oi["n_pixels"] > 0).all() and oi["rmse_c"].notna().all()
    assert (out / "reconstruction.nc").is_file()  # one real month, read at the real files' positions

    # a real sample without one of the run's levels stops its export, naming the depth
    with pytest.raises(RealDataError, match="47.37"):
        matching_depth_indices(real_sample_dir / "mercatorglorys12v1_gl12_mean_201011.nc",
                               [DEPTH_LEVELS_M[i] for i in (0, 7, 14, 17)])
    # a model trained on other levels than the run's export is refused before any sampling
    deep = checkpoint(load_config([TINY], {"export": {"depth_indices": [0, 7, 14, 17]}}), "eo_4band",
                      root / "deep.ckpt", fit=False)
    with pytest.raises(CheckpointError, match="trained on levels"):
        run_evaluation(eval_config, "eo_4band", deep, root / "nope", index_csv=split, baselines=baselines)


def test_the_index_given_is_the_index_read(tiny_data, tmp_path):
    """The Snakemake rule passes the split index it declares; data_dir is not used to find it."""
    config, _ = tiny_data
    moved = deep_merge(config, {"data_dir": str(tmp_path / "nowhere")})
    index_csv = tmp_path / "elsewhere" / "my_split.csv"
    index_csv.parent.mkdir()
    split = pd.read_csv(Path(config["data_dir"]) / "patches" / "patch_index_split.csv")
    split.assign(split="train").to_csv(index_csv, index=False)  # a val-less index stops before any model
    with pytest.raises(ValueError, match="no val rows"):
        run_evaluation(moved, "temp_v1", tmp_path / "model.ckpt", tmp_path / "eval", index_csv=index_csv)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_evaluation(moved, "temp_v1", tmp_path / "model.ckpt", tmp_path / "eval")
