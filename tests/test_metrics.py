"""Tests of the scores (depthdif.evaluation.metrics)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from depthdif.evaluation.metrics import (
    METRIC_COLUMNS,
    ScoreAccumulator,
    ScoreInputError,
    crps_ensemble,
    score_band,
    spread_skill_ratio,
)


def random_patch(rng: np.random.Generator, size: int, hidden_fraction: float):
    truth = 15 + 3 * rng.normal(size=(size, size))
    pred = truth + rng.normal(0.2, 0.5, size=truth.shape)
    region = rng.random(truth.shape) < hidden_fraction
    return pred, truth, region


def test_score_band_matches_a_direct_computation():
    pred, truth, region = random_patch(np.random.default_rng(0), 32, 0.6)
    score = score_band(pred, truth, region)
    error = pred[region] - truth[region]
    assert score.n_pixels == region.sum()
    assert score.rmse_c == pytest.approx(np.sqrt(np.mean(error**2)))
    assert score.mae_c == pytest.approx(np.mean(np.abs(error)))
    assert score.bias_c == pytest.approx(np.mean(error))
    assert score.bias_c > 0  # the sign convention is pred - truth (pred drawn 0.2 warm)
    assert score.crps_c == pytest.approx(score.mae_c)  # a point forecast's CRPS is its absolute error
    assert math.isnan(score.spread_skill)


def test_accumulation_pools_pixels_rather_than_averaging_patch_scores():
    rng = np.random.default_rng(1)
    accumulator = ScoreAccumulator()
    errors, per_patch_rmse = [], []
    for size, fraction in [(16, 0.05), (32, 0.5), (64, 0.9), (24, 0.3)]:
        pred, truth, region = random_patch(rng, size, fraction)
        pred = pred + rng.normal(0, size / 16, size=pred.shape)  # patches differ in error level
        patch = accumulator.add("oi", 0, 0.95, pred, truth, region, depth_m=9.573)
        per_patch_rmse.append(patch.rmse_c)
        errors.append(pred[region] - truth[region])
    pooled = np.concatenate(errors)
    score = accumulator.score("oi", 0, 0.95)
    assert score.n_pixels == pooled.size
    assert score.rmse_c == pytest.approx(np.sqrt(np.mean(pooled**2)))
    assert score.mae_c == pytest.approx(np.mean(np.abs(pooled)))
    assert score.bias_c == pytest.approx(np.mean(pooled))
    assert abs(score.rmse_c - np.mean(per_patch_rmse)) > 0.05  # the naive mean would be wrong here


def test_stacked_patches_score_like_pooled_single_patches():
    rng = np.random.default_rng(2)
    patches = [random_patch(rng, 16, 0.5) for _ in range(3)]
    stacked = score_band(*(np.stack(parts) for parts in zip(*patches, strict=True)))
    accumulator = ScoreAccumulator()
    for pred, truth, region in patches:
        accumulator.add("nearest", 1, 0.5, pred, truth, region)
    pooled = accumulator.score("nearest", 1, 0.5)
    assert stacked.n_pixels == pooled.n_pixels
    assert stacked.rmse_c == pytest.approx(pooled.rmse_c)
    assert stacked.crps_c == pytest.approx(pooled.crps_c)


def test_crps_of_a_perfect_ensemble_is_zero_and_of_one_member_is_the_mae():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(8, 8))
    np.testing.assert_allclose(crps_ensemble(np.stack([truth] * 5), truth), 0.0, atol=1e-12)
    member = truth + rng.normal(size=truth.shape)
    np.testing.assert_allclose(crps_ensemble(member[None], truth), np.abs(member - truth), rtol=1e-12)
    region = np.ones(truth.shape, bool)
    assert score_band(member[None], truth, region).crps_c == pytest.approx(np.mean(np.abs(member - truth)))


def test_crps_matches_its_kernel_definition():
    rng = np.random.default_rng(4)
    members = rng.normal(size=(6, 50))
    truth = rng.normal(size=50)
    expected = np.abs(members - truth).mean(axis=0) - 0.5 * np.abs(
        members[:, None] - members[None, :]
    ).mean(axis=(0, 1))
    np.testing.assert_allclose(crps_ensemble(members, truth), expected, rtol=1e-10)
    with pytest.raises(ScoreInputError, match="members have shape"):
        crps_ensemble(members, truth[:10])


def test_ensemble_scores_its_mean_and_pools_crps():
    rng = np.random.default_rng(5)
    truth = rng.normal(size=(2, 12, 12))
    members = truth[None] + rng.normal(size=(4, 2, 12, 12))
    region = rng.random(truth.shape) < 0.7
    accumulator = ScoreAccumulator()
    for p in range(2):
        accumulator.add("diffusion_ens_mean", 0, 0.75, members[:, p], truth[p], region[p])
    score = accumulator.score("diffusion_ens_mean", 0, 0.75)
    error = members.mean(axis=0)[region] - truth[region]
    assert score.rmse_c == pytest.approx(np.sqrt(np.mean(error**2)))
    assert score.crps_c == pytest.approx(crps_ensemble(members[:, region], truth[region]).mean())
    assert score.crps_c < score.mae_c  # an ensemble with spread earns a CRPS below its mean's MAE here


@pytest.mark.parametrize("n_members", [2, 8])
def test_spread_skill_is_one_for_a_calibrated_ensemble(n_members):
    rng = np.random.default_rng(6 + n_members)
    n_pixels = 40_000
    centre = rng.normal(scale=3.0, size=n_pixels)
    sigma = rng.uniform(0.5, 2.0, size=n_pixels)  # heteroscedastic, still calibrated per pixel
    truth = centre + sigma * rng.normal(size=n_pixels)
    members = centre + sigma * rng.normal(size=(n_members, n_pixels))
    ratio = spread_skill_ratio(members, truth)
    # standard error of the ratio ~ 1/sqrt(n_pixels) scale: 0.05 is > 5 sigma; without the (N+1)/N
    # correction the N = 2 ratio would be sqrt(2/3) = 0.82 and fail
    assert ratio == pytest.approx(1.0, abs=0.05)
    under = spread_skill_ratio(centre + 0.4 * sigma * rng.normal(size=(n_members, n_pixels)), truth)
    assert under < 0.7  # an over-confident ensemble is flagged


def test_spread_skill_pools_across_patches_and_needs_two_members():
    rng = np.random.default_rng(9)
    accumulator = ScoreAccumulator()
    for _ in range(4):
        truth = rng.normal(size=(32, 32))
        members = rng.normal(size=(3, 32, 32))  # same distribution as the truth: calibrated
        accumulator.add("diffusion_sample", 0, 0.5, members, truth, np.ones((32, 32), bool))
    assert accumulator.score("diffusion_sample", 0, 0.5).spread_skill == pytest.approx(1.0, abs=0.08)
    with pytest.raises(ScoreInputError, match="N >= 2"):
        spread_skill_ratio(rng.normal(size=(1, 5)), rng.normal(size=5))


def test_frame_has_the_contract_columns_and_rows_for_unavailable_methods():
    rng = np.random.default_rng(10)
    accumulator = ScoreAccumulator()
    pred, truth, region = random_patch(rng, 16, 0.5)
    accumulator.add("oi", 0, 0.5, pred, truth, region, depth_m=0.494)
    accumulator.add("mean_fill", 0, 0.5, pred, truth, region, depth_m=0.494)
    accumulator.add_unavailable("dineof", 0, 0.5, depth_m=0.494)
    frame = accumulator.to_frame()
    assert tuple(frame.columns) == METRIC_COLUMNS
    assert list(frame["method"]) == ["dineof", "mean_fill", "oi"]
    dineof = frame.set_index("method").loc["dineof"]
    assert dineof["n_pixels"] == 0 and math.isnan(dineof["rmse_c"])
    assert frame["n_pixels"].dtype == np.int64 and frame["band"].dtype == np.int64
    assert (frame["depth_m"] == 0.494).all()
    assert {"spread_c", "spread_skill"} <= set(accumulator.to_frame(spread=True).columns)


def test_bad_inputs_are_reported_clearly():
    rng = np.random.default_rng(11)
    pred, truth, region = random_patch(rng, 8, 1.0)
    bad = pred.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ScoreInputError, match="estimate is NaN at 1 pixels"):
        score_band(bad, truth, region)
    truth_bad = truth.copy()
    truth_bad[1, 1] = np.nan
    with pytest.raises(ScoreInputError, match="truth is NaN"):
        score_band(pred, truth_bad, region)
    with pytest.raises(ScoreInputError, match="expected truth's shape"):
        score_band(pred[:4], truth, region)
    accumulator = ScoreAccumulator()
    accumulator.add("oi", 0, 0.5, pred, truth, region, depth_m=1.0)
    with pytest.raises(ScoreInputError, match="depth"):
        accumulator.add("oi", 0, 0.5, pred, truth, region, depth_m=2.0)
    # NaN outside the region is fine (land, observed pixels)
    region_small = region.copy()
    region_small[0, 0] = False
    assert score_band(bad, truth, region_small).n_pixels == region.sum() - 1


def test_location_sums_table_pairs_two_runs_on_their_locations(tmp_path):
    """The per-location table of an evaluation: two runs of the same locations compared with a paired
    location bootstrap (bench/compare_runs.py), whose interval covers the constructed ratio."""
    import importlib.util

    from depthdif.evaluation.metrics import LOCATION_COLUMNS, ScoreAccumulator

    rng = np.random.default_rng(0)
    truth = rng.standard_normal((12, 8, 8))
    region = np.ones((8, 8), bool)
    runs = []
    for scale in (0.5, 1.0):  # run A's errors are half run B's at every location
        scores = ScoreAccumulator()
        for i in range(12):
            error = rng.standard_normal((8, 8)) * (1.0 + i % 3)
            scores.add("oi", 0, 0.95, truth[i] + scale * error, truth[i], region, 92.3, location=(i // 2, 0))
        frame = scores.location_frame()
        assert list(frame.columns) == list(LOCATION_COLUMNS) and len(frame) == 6
        assert frame["n_pixels"].sum() == 12 * 64 and frame["location"].iloc[0] == "0,0"
        runs.append(frame)
    spec = importlib.util.spec_from_file_location("compare_runs", Path(__file__).parents[1] / "bench" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (entry,) = module.paired_ratios(runs[0], runs[1], ["oi"], pooled=False)
    assert entry["metric"] == "rmse_ratio/oi/92.3m/0.95" and entry["n_locations"] == 6
    low, high = entry["ci95"]
    assert low < entry["value"] < high and low < 0.5 < high
