"""Bootstrap intervals over val locations for RMSE ratios (depthdif.evaluation.metrics,
depthdif.evaluation.protocol.summarise)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from depthdif.evaluation.metrics import ScoreAccumulator, ScoreInputError, bootstrap_rmse_ratio
from depthdif.evaluation.protocol import ENSEMBLE_MEAN, summarise


def scaled_locations(rng: np.random.Generator, n_locations: int, true_ratio: float, noise_shape: float):
    """Per-location sums where A's squared errors are ``true_ratio**2`` x B's times mean-1 location noise.

    Location effects (error level ``s``, pixel count ``n``) are shared by both methods, so the population
    ratio sqrt(E[sse_a] / E[sse_b]) is exactly ``true_ratio``; the Gamma noise (mean 1) makes each location's
    own ratio differ from it.
    """
    n = rng.integers(50, 500, n_locations).astype(float)
    level = rng.lognormal(0.0, 0.5, n_locations) ** 2  # °C²
    sse_b = n * level * rng.gamma(noise_shape, 1 / noise_shape, n_locations)
    sse_a = true_ratio**2 * n * level * rng.gamma(noise_shape, 1 / noise_shape, n_locations)
    return sse_a, n, sse_b, n


def test_an_exact_ratio_gives_a_degenerate_interval():
    rng = np.random.default_rng(0)
    n = rng.integers(10, 100, 40).astype(float)
    sse_b = n * rng.lognormal(0, 1, 40)
    ratio, low, high = bootstrap_rmse_ratio(0.81 * sse_b, n, sse_b, n, n_boot=500)
    assert ratio == pytest.approx(0.9) and low == pytest.approx(0.9) and high == pytest.approx(0.9)


def test_interval_contains_the_true_ratio_and_narrows_with_more_locations():
    rng = np.random.default_rng(1)
    widths = {}
    for n_locations in (20, 500):
        sse_a, n_a, sse_b, n_b = scaled_locations(rng, n_locations, 0.9, noise_shape=10)
        ratio, low, high = bootstrap_rmse_ratio(sse_a, n_a, sse_b, n_b)
        assert low <= ratio <= high
        assert low <= 0.9 <= high
        # one interval's width is itself noisy at 20 locations: compare mean widths over 10 data sets
        bounds = [bootstrap_rmse_ratio(*scaled_locations(rng, n_locations, 0.9, noise_shape=10))[1:]
                  for _ in range(10)]
        widths[n_locations] = np.mean([high - low for low, high in bounds])
    # roughly 1 / sqrt(L) (sqrt(500 / 20) = 5; ~3.7 in simulations, the small-L interval being skewed)
    assert widths[500] < widths[20] / 2.5


def test_95_percent_interval_covers_the_true_ratio_in_repeated_datasets():
    rng = np.random.default_rng(2)
    true_ratio, covered, trials = 0.8, 0, 300
    for _ in range(trials):
        sse_a, n_a, sse_b, n_b = scaled_locations(rng, 30, true_ratio, noise_shape=4)
        _, low, high = bootstrap_rmse_ratio(sse_a, n_a, sse_b, n_b, seed=int(rng.integers(2**31)))
        covered += low <= true_ratio <= high
    # the percentile interval is only asymptotically exact; with 30 locations it is somewhat short (~0.91-0.93
    # in simulations of this design), never grossly off
    assert 0.88 <= covered / trials <= 0.99


def test_resampling_unit_is_the_location_not_the_pixel():
    """Two locations of 10^5 pixels each: A is much better at one and much worse at the other."""
    rng = np.random.default_rng(3)
    scores = ScoreAccumulator()
    truth = np.zeros((100, 1000))
    region = np.ones(truth.shape, bool)
    for location, sd_a in (((0, 0), 0.5), ((0, 64), 1.5)):
        scores.add("a", 0, 0.5, rng.normal(0, sd_a, truth.shape), truth, region, location=location)
        scores.add("b", 0, 0.5, rng.normal(0, 1.0, truth.shape), truth, region, location=location)
    sums = scores.paired_location_sums("a", "b", 0.5, band=0)
    assert sums.locations == [(0, 0), (0, 64)]
    np.testing.assert_array_equal(sums.n_a, [1e5, 1e5])
    ratio, low, high = bootstrap_rmse_ratio(sums.sse_a, sums.n_a, sums.sse_b, sums.n_b)
    assert ratio == pytest.approx(scores.score("a", 0, 0.5).rmse_c / scores.score("b", 0, 0.5).rmse_c)
    # a quarter of the resamples are two copies of either location: the interval spans both of their ratios
    assert low < 0.55 and high > 1.45

    # the same pixels bootstrapped one by one (each pixel its own "location") give a falsely narrow interval
    a = np.concatenate([rng.normal(0, 0.5, 100_000), rng.normal(0, 1.5, 100_000)]) ** 2
    b = rng.normal(0, 1.0, 200_000) ** 2
    ones = np.ones_like(a)
    _, pixel_low, pixel_high = bootstrap_rmse_ratio(a, ones, b, ones, n_boot=20)
    assert pixel_high - pixel_low < 0.05 < 0.9 < high - low


def test_fewer_than_two_locations_give_nan_bounds():
    ratio, low, high = bootstrap_rmse_ratio([4.0], [1.0], [16.0], [1.0])
    assert ratio == pytest.approx(0.5) and math.isnan(low) and math.isnan(high)
    ratio, low, high = bootstrap_rmse_ratio([], [], [], [])
    assert math.isnan(ratio) and math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize("arguments", [
    ([1.0, 2.0], [1.0], [1.0, 2.0], [1.0, 1.0]),  # lengths differ
    ([[1.0, 2.0]], [[1.0, 1.0]], [[1.0, 2.0]], [[1.0, 1.0]]),  # not 1-D
    ([1.0, -2.0], [1.0, 1.0], [1.0, 2.0], [1.0, 1.0]),  # negative sum of squares
    ([1.0, np.nan], [1.0, 1.0], [1.0, 2.0], [1.0, 1.0]),  # NaN
])
def test_malformed_sums_are_refused(arguments):
    with pytest.raises(ScoreInputError):
        bootstrap_rmse_ratio(*arguments)


def test_bad_settings_are_refused():
    args = ([1.0, 2.0], [1.0, 1.0], [1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ScoreInputError, match="level"):
        bootstrap_rmse_ratio(*args, level=95)
    with pytest.raises(ScoreInputError, match="n_boot"):
        bootstrap_rmse_ratio(*args, n_boot=0)


def test_location_sums_pool_bands_and_leave_the_table_unchanged():
    rng = np.random.default_rng(4)
    located, plain = ScoreAccumulator(), ScoreAccumulator()
    for k in range(6):
        location = (k // 2, 0)  # two months per location
        for band in (0, 1):
            truth = rng.normal(15, 2, (8, 8))
            region = rng.random(truth.shape) < 0.6
            for method, sd in (("a", 0.5), ("b", 1.0)):
                pred = truth + rng.normal(0, sd, truth.shape)
                if method == "b" and location == (2, 0):
                    continue  # b never scored at the last location
                located.add(method, band, 0.5, pred, truth, region, depth_m=float(band), location=location)
                plain.add(method, band, 0.5, pred, truth, region, depth_m=float(band))
    assert located.to_frame(spread=True).equals(plain.to_frame(spread=True))
    for method in ("a", "b"):
        by_location = located.location_sums(method, 0.5)
        pooled = [located.score(method, band, 0.5) for band in (0, 1)]
        assert sum(n for _, n in by_location.values()) == sum(s.n_pixels for s in pooled)
        assert sum(sse for sse, _ in by_location.values()) == pytest.approx(
            sum(s.rmse_c**2 * s.n_pixels for s in pooled))
        one_band = located.location_sums(method, 0.5, band=1)
        assert sum(n for _, n in one_band.values()) == pooled[1].n_pixels
        assert located.unlocated_pixels(method, 0.5) == 0
        assert plain.unlocated_pixels(method, 0.5) == sum(s.n_pixels for s in pooled)
    shared = located.paired_location_sums("a", "b", 0.5)
    assert shared.locations == [(0, 0), (1, 0)]
    union = located.paired_location_sums("a", "b", 0.5, shared_only=False)
    assert union.locations == [(0, 0), (1, 0), (2, 0)]
    assert union.n_b[-1] == 0 and union.n_a.sum() == sum(n for _, n in located.location_sums("a", 0.5).values())
    with pytest.raises(ScoreInputError, match="hashable"):
        located.add("a", 0, 0.5, np.zeros(4), np.zeros(4), np.ones(4, bool), location=[0, 0])
    assert located.to_frame().equals(plain.to_frame())  # the refused add left nothing behind


def hand_built_scores(n_locations: int = 12, locate_model: bool = True) -> ScoreAccumulator:
    """Two bands at one occlusion level; the model beats every non-oracle baseline, climatology beats all."""
    rng = np.random.default_rng(5)
    scores = ScoreAccumulator()
    methods = {ENSEMBLE_MEAN: 0.8, "diffusion_cond_mean": 0.7, "oi": 1.0, "nearest": 1.3, "climatology": 0.3}
    for k in range(n_locations):
        location = (16 * k, 32)
        place = rng.lognormal(0, 0.4)  # location-level error scale shared by every method
        for band, depth in ((0, 9.573), (1, 29.445)):
            for _ in range(2):  # months
                truth = rng.normal(15, 2, (8, 8))
                region = rng.random(truth.shape) < 0.7
                for method, sd in methods.items():
                    pred = truth + rng.normal(0, sd * place, truth.shape)
                    at = location if locate_model or not method.startswith("diffusion") else None
                    scores.add(method, band, 0.95, pred, truth, region, depth, location=at)
    return scores


def test_summarise_puts_location_intervals_in_the_headline():
    scores = hand_built_scores()
    summary = summarise(scores.to_frame(spread=True), "eo_4band", 1.0, 48, scores=scores)
    summary = json.loads(json.dumps(summary, allow_nan=False))  # what metrics.json holds, strict JSON
    (head,) = summary["headline"]
    assert head["best_baseline"] == "oi"  # climatology (the oracle) is left out
    low, high = head["model_over_best_baseline_ci95"]
    assert low < head["model_over_best_baseline"] < high < 1.0
    assert head["n_locations"] == 12
    cond_low, cond_high = head["cond_mean_over_best_baseline_ci95"]
    assert cond_low < head["cond_mean_over_best_baseline"] < cond_high
    assert head["diffusion_cond_mean_rmse_c"] < head["diffusion_ens_mean_rmse_c"]
    assert [band["band"] for band in head["per_band"]] == [0, 1]
    assert [band["depth_m"] for band in head["per_band"]] == pytest.approx([9.573, 29.445])
    for band in head["per_band"]:
        assert band["best_baseline"] == "oi"
        assert band["model_over_best_baseline"] == pytest.approx(
            scores.score(ENSEMBLE_MEAN, band["band"], 0.95).rmse_c / scores.score("oi", band["band"], 0.95).rmse_c)
        band_low, band_high = band["model_over_best_baseline_ci95"]
        assert band_low < band["model_over_best_baseline"] < band_high
        assert band["n_locations"] == 12
        assert band["cond_mean_over_best_baseline_ci95"][0] < band["cond_mean_over_best_baseline"]


def test_summarise_without_locations_keeps_the_old_keys_and_no_interval():
    scores = hand_built_scores(locate_model=False)
    metrics = scores.to_frame(spread=True)
    for summary in (summarise(metrics, "eo_4band", 1.0, 48),
                    summarise(metrics, "eo_4band", 1.0, 48, scores=scores)):  # model scored without location=
        json.dumps(summary, allow_nan=False)
        (head,) = summary["headline"]
        assert {"mask_fraction", "diffusion_ens_mean_rmse_c", "best_baseline", "best_baseline_rmse_c",
                "model_over_best_baseline"} <= set(head)
        assert head["model_over_best_baseline"] < 1.0
        assert head["model_over_best_baseline_ci95"] == [None, None] and head["n_locations"] is None
