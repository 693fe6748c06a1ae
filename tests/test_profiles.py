"""The profile observing system (issue 14): Argo-like vertical profiles as observations, in the masks, the
datasets, the model with no observation at all, and the evaluation's observing-system experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from batch_factory import TinyDataModule, make_batch, tiny_config
from patch_factory import small_config, write_patch_set

from depthdif.baselines import BASELINES, BaselineUnavailable, run_baseline
from depthdif.data.dataset import PatchDataset
from depthdif.data.index import PatchIndexError
from depthdif.data.masking import MaskError, cell_area_deg2, make_profile_masks, profile_positions
from depthdif.train import build_module, fit_first_guess

SIZE = 16
ARGO = 0.4  # the schema's dataset.profiles_per_deg2_month
CONTRACT_COLUMNS = ["method", "band", "depth_m", "mask_fraction", "rmse_c", "mae_c", "bias_c", "crps_c",
                    "n_pixels"]


@pytest.fixture
def index_csv(tmp_path):
    return write_patch_set(tmp_path, size=SIZE)


def profile_config(tmp_path, **dataset):
    return small_config(tmp_path, **{"observations": "profiles", **dataset})


def observed_columns(valid: torch.Tensor) -> np.ndarray:
    """(H, W) bool: pixels observed in at least one band of a sample's valid_mask (C, H, W)."""
    return (valid.numpy() > 0).any(axis=0)


# --------------------------------------------------------------------------- the generator
def test_cell_area_has_the_cos_latitude_factor():
    size = 33  # 32 cells of 1/12° between the first and last centre
    span = 32 / 12
    equator = cell_area_deg2(-span / 2, span / 2, 10.0, 10.0 + span, size)
    assert equator == pytest.approx((1 / 12) ** 2, rel=1e-3)
    sixty = cell_area_deg2(60.0 - span / 2, 60.0 + span / 2, 10.0, 10.0 + span, size)
    assert sixty / equator == pytest.approx(0.5, rel=1e-3)
    # descending latitude, a 0..360 longitude across 0°, and one across the dateline: the same cells
    lat0, lat1 = [span / 2, -span / 2, -span / 2], [-span / 2, span / 2, span / 2]
    lon0, lon1 = [10.0, 359.0, 179.0], [10.0 + span, span - 1.0, -181.0 + span]
    np.testing.assert_allclose(cell_area_deg2(lat0, lat1, lon0, lon1, size), equator, rtol=1e-9)
    assert cell_area_deg2(5.0, 5.0, 5.0, 5.0, 1) == 0.0  # a 1 px patch has no extent to measure


@pytest.mark.parametrize("mean", [0.7, 3.0, 45.0])
def test_profile_count_is_poisson_with_the_expected_mean(mean):
    rng = np.random.default_rng(1)
    counts = np.array([profile_positions(rng, 1024, mean).size for _ in range(4000)])
    assert abs(counts.mean() - mean) < 4 * np.sqrt(mean / counts.size)
    assert counts.var() / mean == pytest.approx(1.0, abs=0.15)  # Poisson: variance = mean
    picks = np.concatenate([profile_positions(rng, 7, 50.0) for _ in range(200)])
    assert picks.min() == 0 and picks.max() == 6  # uniform over the candidate columns
    assert np.abs(np.bincount(picks) / picks.size - 1 / 7).max() < 0.02


def test_density_and_latitude_set_the_count_of_a_patch():
    """Over many patches the count is Poisson(density x ocean area in (1°)², cos(latitude) included)."""
    size = 32
    columns = np.ones((size, size), dtype=bool)
    columns[:8] = False  # a quarter of the patch is land: no profile there
    ocean = np.stack([columns, columns & (np.arange(size)[None, :] < 24)])  # the deeper band has less ocean
    rng = np.random.default_rng(0)
    for lat, density in ((0.0, ARGO), (60.0, ARGO), (0.0, 16 * ARGO)):
        area = float(cell_area_deg2(lat, lat + (size - 1) / 12, 0.0, (size - 1) / 12, size))
        expected = density * area * columns.sum()  # e.g. 0.4 x 0.00694 x 768 = 2.1 at the equator
        counts = []
        for _ in range(3000):
            valid = make_profile_masks(rng, columns, ocean, density, area)
            assert not (valid & ~ocean).any()
            counts.append(valid[0].sum())
        # distinct columns: n (1 - exp(-mean / n)) of n candidates (two profiles may share one)
        distinct = columns.sum() * -np.expm1(-expected / columns.sum())
        assert abs(np.mean(counts) - distinct) < 4 * np.sqrt(expected / len(counts)), (lat, density)
    with pytest.raises(MaskError, match="profile density"):
        make_profile_masks(rng, columns, ocean, -1.0, 0.01)


def test_profile_masks_observe_the_same_pixels_in_every_band():
    rng = np.random.default_rng(3)
    columns = np.ones((SIZE, SIZE), dtype=bool)
    ocean = np.ones((3, SIZE, SIZE), dtype=bool)
    ocean[2, :, :4] = False  # the deepest band has a shelf
    for _ in range(50):
        valid = make_profile_masks(rng, columns, ocean, 50.0, 0.01)
        hit = valid.any(axis=0)
        np.testing.assert_array_equal(valid, hit[None] & ocean)


def test_lower_densities_are_subsets_of_higher_ones():
    """Nested arrays: with one generator state the 1x profiles are among the 4x ones, those among the 16x."""
    columns = np.ones((64, 64), dtype=bool)
    ocean = columns[None]
    masks = [make_profile_masks(np.random.default_rng(7), columns, ocean, ARGO * f, 0.006)
             for f in (1, 4, 16)]
    assert masks[0].sum() < masks[1].sum() < masks[2].sum()
    assert not (masks[0] & ~masks[1]).any() and not (masks[1] & ~masks[2]).any()


# --------------------------------------------------------------------------- the datasets
@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
def test_dataset_profiles_share_pixels_across_bands(index_csv, tmp_path, variant):
    config = profile_config(tmp_path, dataset_variant=variant, temp_v1_band=2)
    for split in ("val", "train"):
        dataset = PatchDataset(index_csv, config, split, variant, profile_density=40 * ARGO)
        for item in range(len(dataset)):
            sample = dataset[item]
            valid, land = sample["valid_mask"].numpy() > 0, sample["land_mask"].numpy() > 0
            assert not (valid & ~land).any()
            np.testing.assert_array_equal(valid, valid.any(axis=0)[None] & land)
            np.testing.assert_array_equal(sample["x"].numpy(), sample["y"].numpy() * valid)
            if variant == "eo_4band" and float(sample["eo_available"]) > 0:  # not dropped (training)
                assert (sample["eo"].numpy() != 0).mean() > 0.5  # the surface stays dense


def test_fixed_profile_masks_are_reproducible_by_seed_and_sample(index_csv, tmp_path):
    config = profile_config(tmp_path, temp_v1_band=3)
    first = PatchDataset(index_csv, config, "val", "temp_v1", profile_density=16 * ARGO)
    again = PatchDataset(index_csv, config, "val", "temp_v1", profile_density=16 * ARGO)
    other_seed = PatchDataset(index_csv, config, "val", "temp_v1", profile_density=16 * ARGO, seed=5)
    eo = PatchDataset(index_csv, config, "val", "eo_4band", profile_density=16 * ARGO)
    sparse = PatchDataset(index_csv, config, "val", "temp_v1", profile_density=ARGO)
    differ = 0
    for item in range(len(first)):
        valid = first[item]["valid_mask"]
        assert torch.equal(valid, again[item]["valid_mask"])  # (seed, sample_id) fix the positions
        assert torch.equal(valid, first[item]["valid_mask"])  # and every epoch sees them
        differ += not torch.equal(valid, other_seed[item]["valid_mask"])
        # both variants see the same profiles at the same depth (export channel 3 = eo_4band's band 2)
        assert torch.equal(valid[0], eo[item]["valid_mask"][2])
        low = sparse[item]["valid_mask"].numpy() > 0
        assert not (low & ~(valid.numpy() > 0)).any()  # nested: the Argo array is part of the 16x one
    assert differ > 0
    # validation in profiles mode uses the Argo density; the training list defaults to the evaluation's
    val = PatchDataset(index_csv, config, "val", "temp_v1")
    assert val.profile_densities == [ARGO]
    assert torch.equal(val[0]["valid_mask"], sparse[0]["valid_mask"])
    train = PatchDataset(index_csv, config, "train", "temp_v1")
    factors = config["evaluate"]["profile_density_factors"]
    assert train.profile_densities == pytest.approx([ARGO * f for f in factors])
    with pytest.raises(PatchIndexError, match="not both"):
        PatchDataset(index_csv, config, "val", "temp_v1", mask_fraction=0.5, profile_density=ARGO)


def test_patch_without_profile_is_a_valid_sample(index_csv, tmp_path):
    config = profile_config(tmp_path, dataset_variant="eo_4band", first_guess=True)
    dataset = PatchDataset(index_csv, config, "val", profile_density=0.0)
    batch = dataset.__getitems__(list(range(len(dataset)))).batch
    assert batch["valid_mask"].sum() == 0 and batch["x"].abs().sum() == 0
    assert torch.isfinite(batch["first_guess"]).all()  # the loader's OI leaves an unobserved band at 0
    # the Argo density on 16 px patches (~0.7 profiles a patch): some patches get none, and that is kept
    argo = PatchDataset(index_csv, config, "val")
    empty = [item for item in range(len(argo)) if argo[item]["valid_mask"].sum() == 0]
    assert empty and len(empty) < len(argo)


@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
def test_model_and_baselines_with_no_observation(variant):
    """A patch no profile reached: the model trains and samples on it; per-patch baselines say unavailable."""
    torch.manual_seed(0)
    config = tiny_config()
    module = build_module(config, variant)
    fit_first_guess(module, TinyDataModule(variant, train_size=32, batch_size=16, size=16), config)
    batch = make_batch(variant, 3, seed=1, size=16, mask_fraction=1.0)  # every pixel hidden
    assert batch["valid_mask"].sum() == 0
    assert torch.isfinite(module.diffusion_loss(batch))
    guess, sigma = module.first_guess_of(dict(batch))
    assert torch.isfinite(guess).all() and torch.isfinite(sigma).all()
    assert (sigma[batch["land_mask"] > 0] > 0).all()  # the table's farthest bin: nothing is known
    samples = module.sample(batch, num_samples=2, steps=2)
    assert torch.isfinite(samples).all()
    assert torch.isfinite(module.conditional_mean(batch)).all()
    obs = np.full((16, 16), np.nan)
    for name in BASELINES:
        with pytest.raises(BaselineUnavailable):
            run_baseline(name, obs, np.ones((16, 16), bool), eo=np.full((16, 16), 20.0))


def test_training_mixture_draws_both_systems(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", observations="both",
                          train_mask_fractions=[0.5], train_profile_density_factors=[1.0, 16.0])
    dataset = PatchDataset(index_csv, config, "train")
    assert dataset.profile_densities == pytest.approx([ARGO, 16 * ARGO])
    systems = []
    torch.manual_seed(0)
    for _ in range(10):
        for item in range(len(dataset)):
            sample = dataset[item]
            valid, land = sample["valid_mask"].numpy() > 0, sample["land_mask"].numpy() > 0
            shared = np.array_equal(valid, valid.any(axis=0)[None] & land)
            share = valid.sum() / land.sum()
            if share > 0.3:  # rectangles hiding 50 %: the bands are independent
                assert not shared
                systems.append("rectangles")
            else:  # profiles (at most ~10 of 256 columns): the same pixels in every band
                assert shared and share < 0.15
                systems.append("profiles")
    counts = pd.Series(systems).value_counts()
    assert set(counts.index) == {"rectangles", "profiles"}
    assert abs(counts["profiles"] / len(systems) - 0.5) < 0.15
    # validation: each sample's system is fixed by (seed, sample), the same every time it is drawn
    val, again = PatchDataset(index_csv, config, "val"), PatchDataset(index_csv, config, "val")
    assert all(torch.equal(val[i]["valid_mask"], again[i]["valid_mask"]) for i in range(len(val)))


# --------------------------------------------------------------------------- the evaluation
@pytest.fixture(scope="module")
def tiny_profiles(tmp_path_factory):
    from depthdif.config import load_config
    from depthdif.download import run_download
    from depthdif.export import export_patches
    from depthdif.split import split_index

    root = tmp_path_factory.mktemp("tiny_profiles")
    tiny = Path(__file__).parent / "configs" / "tiny.yaml"
    config = load_config([tiny], {"data_dir": str(root / "data"), "results_dir": str(root / "results"),
                                  "dataset": {"observations": "profiles"},
                                  "evaluate": {"mask_fractions": [0.95], "dineof": False}})
    split_index(config, export_patches(config, run_download(config), workers=1))
    return config, root


def test_evaluation_scores_every_method_at_each_profile_density(tiny_profiles):
    from test_evaluate import checkpoint

    from depthdif.evaluation.protocol import run_evaluation

    config, root = tiny_profiles
    ckpt = checkpoint(config, "temp_v1", root / "temp_v1.ckpt")  # first guess fitted on profile samples
    out = root / "results" / "temp_v1" / "eval"
    metrics = pd.read_csv(run_evaluation(config, "temp_v1", ckpt, out))
    assert list(metrics.columns[:9]) == CONTRACT_COLUMNS
    rectangles = metrics[metrics["observations"] == "rectangles"]
    assert set(rectangles["mask_fraction"]) == {0.95} and rectangles["profile_density_factor"].isna().all()
    profiles = metrics[metrics["observations"] == "profiles"]
    assert set(profiles["profile_density_factor"]) == {1.0, 4.0, 16.0}
    np.testing.assert_allclose(profiles["profiles_per_deg2_month"], ARGO * profiles["profile_density_factor"])
    assert set(profiles["method"]) == set(rectangles["method"])  # every method at every density
    by_level = profiles.groupby("profile_density_factor")
    assert by_level["n_pixels"].nunique().eq(1).all()  # every method on the same pixels
    observed = by_level["n_observed"].first()
    assert observed.is_monotonic_increasing and observed.iloc[-1] > observed.iloc[0]  # denser: more seen
    assert (profiles["mask_fraction"] > 0.8).all() and (profiles["mask_fraction"] < 1).all()  # hidden share
    summary = json.loads((out / "metrics.json").read_text())
    assert [h["mask_fraction"] for h in summary["headline"]] == [0.95]  # the rectangles headline as before
    section = summary["profiles"]
    assert [h["profile_density_factor"] for h in section["headline"]] == [1.0, 4.0, 16.0]
    assert all("model_over_best_baseline" in h for h in section["headline"])
    # 16 px patches at the Argo density: some patches get no profile; they are counted and reported apart
    unreached = {u["profile_density_factor"]: u for u in section["unreached"]}
    assert unreached[1.0]["n_patches"] == profiles[profiles["profile_density_factor"] == 1.0][
        "n_patches_unobserved"].iloc[0]
    if unreached[1.0]["n_patches"]:
        assert "diffusion_ens_mean" in unreached[1.0]["rmse_c"] and "oi" not in unreached[1.0]["rmse_c"]
    assert (out / "figures" / "rmse_vs_profile_density.png").stat().st_size > 0
    # per-location sums of the profile levels too, so that two runs' ratios there carry location intervals
    located = pd.read_csv(out / "location_sums.csv", dtype={"location": str})
    at_profiles = located[located["observations"] == "profiles"]
    assert set(at_profiles["profile_density_factor"]) == {1.0, 4.0, 16.0} and at_profiles["mask_fraction"].isna().all()
    assert set(located.loc[located["observations"] == "rectangles", "mask_fraction"]) == {0.95}
    scored = profiles[profiles["method"] == "oi"].groupby("profile_density_factor")["n_pixels"].sum()
    np.testing.assert_array_equal(at_profiles[at_profiles["method"] == "oi"].groupby("profile_density_factor")[
        "n_pixels"].sum(), scored)
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_runs", Path(__file__).parents[1] / "bench" / "compare_runs.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    entries = {e["metric"]: e for e in compare.paired_ratios(located, located, ["oi"], pooled=False)}
    assert entries["rmse_ratio/oi/92.3m/profiles_4x"]["value"] == 1.0 and "rmse_ratio/oi/92.3m/0.95" in entries
