"""DINEOF through pydineof: one location's time stack, several locations in one matrix, and the evaluation route."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from depthdif.baselines import BaselineInputError, BaselineUnavailable, dineof_fill
from depthdif.evaluation.baseline_predictions import run_dineof
from depthdif.evaluation.metrics import ScoreAccumulator
from depthdif.evaluation.passes import EvalItems

pytest.importorskip("pydineof")


def rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[where] - b[where]) ** 2)))


def shared_low_rank(frames: int = 20, n_loc: int = 4, size: int = 16) -> np.ndarray:
    """(L, T, H, W) °C: 3 spatial modes spanning all locations, with the same 3 temporal amplitudes."""
    rows, cols = np.mgrid[0:size, 0 : n_loc * size]
    t = np.arange(frames)
    modes = [np.sin(rows / 4.0) * np.cos(cols / 5.0), np.cos((rows + cols) / 6.0), np.sin(cols / 7.0 + rows / 9.0)]
    amplitudes = [np.sin(2 * np.pi * t / 12), np.cos(2 * np.pi * t / 12), np.cos(2 * np.pi * t / 20)]
    full = 15.0 + sum(2.0 * a[:, None, None] * m[None] for a, m in zip(amplitudes, modes, strict=True))
    return np.stack(np.split(full, n_loc, axis=2))


def island_ocean(n_loc: int, size: int) -> np.ndarray:
    ocean = np.ones((n_loc, size, size), bool)
    ocean[:, :4, :5] = False
    ocean[-1, -3:, -3:] = False  # locations may have different coasts
    return ocean


def test_stacked_dineof_recovers_a_shared_low_rank_field_that_windows_cannot():
    truth = shared_low_rank()
    n_loc, n_frames = truth.shape[:2]
    ocean = island_ocean(n_loc, truth.shape[-1])
    rng = np.random.default_rng(5)
    hidden = rng.random(truth.shape) < 0.5
    for k in range(n_loc):  # each location also loses 4 whole months (clouds), not the same ones
        hidden[k, rng.choice(n_frames, 4, replace=False)] = True
    hidden &= ocean[:, None]
    assert 0.55 < hidden.sum() / (ocean.sum() * n_frames) < 0.65
    obs = np.where(hidden | ~ocean[:, None], np.nan, truth)

    per_window = np.stack([dineof_fill(obs[k], ocean[k], seed=0) for k in range(n_loc)])
    stacked = dineof_fill(obs, ocean, seed=0)

    # measured: per window 0.309 °C (a month hidden at one place has nothing to go on), stacked 0.131 °C
    # (the other locations observed that month), for a hidden-pixel spread of 1.65 °C
    assert rmse(stacked, truth, hidden) < 0.1 * truth[hidden].std()
    assert rmse(stacked, truth, hidden) < 0.18
    assert rmse(per_window, truth, hidden) > 0.25
    assert rmse(per_window, truth, hidden) > 1.7 * rmse(stacked, truth, hidden)


def test_dineof_keeps_observed_pixels_and_returns_nan_on_land():
    truth = shared_low_rank(frames=12, n_loc=2, size=8)
    ocean = island_ocean(2, 8)
    hidden = (np.random.default_rng(1).random(truth.shape) < 0.5) & ocean[:, None]
    obs = np.where(hidden | ~ocean[:, None], np.nan, truth)
    obs[:, :, 0, 0] = 99.0  # values on land are not observations
    stacked = dineof_fill(obs, ocean, seed=0)
    single = dineof_fill(obs[1], ocean[1], seed=0)
    assert stacked.shape == obs.shape and single.shape == obs[1].shape and stacked.dtype == np.float64
    for out, given, land in [(stacked[k], obs[k], ocean[k]) for k in range(2)] + [(single, obs[1], ocean[1])]:
        observed = np.isfinite(given) & land[None]
        np.testing.assert_array_equal(out[observed], given[observed])
        assert np.isnan(out[:, ~land]).all() and np.isfinite(out[:, land]).all()
    everything_land = dineof_fill(obs, np.zeros((2, 8, 8), bool))
    assert everything_land.shape == obs.shape and np.isnan(everything_land).all()


def test_dineof_gives_the_same_fill_every_run():
    # scipy draws eigsh's start vector from OS entropy unless given one; the baselines file is checked against
    # reruns, so the fill must not change from run to run (it did, by ~2e-6 °C)
    truth = shared_low_rank(frames=12, n_loc=2, size=8)
    ocean = island_ocean(2, 8)
    hidden = (np.random.default_rng(3).random(truth.shape) < 0.6) & ocean[:, None]
    obs = np.where(hidden | ~ocean[:, None], np.nan, truth)
    first = dineof_fill(obs, ocean, seed=0)
    np.testing.assert_array_equal(dineof_fill(obs, ocean, seed=0), first)


def test_dineof_refuses_too_few_frames_with_the_reason():
    truth = shared_low_rank(frames=7, n_loc=3, size=8)
    with pytest.raises(BaselineUnavailable, match=r"at least 8 frames .*the stack has 7"):
        dineof_fill(truth, island_ocean(3, 8))
    with pytest.raises(BaselineUnavailable, match="no observed ocean pixel"):
        dineof_fill(np.full((3, 9, 8, 8), np.nan), island_ocean(3, 8))


def test_dineof_rejects_bad_arguments():
    truth = shared_low_rank(frames=10, n_loc=2, size=8)
    ocean = island_ocean(2, 8)
    with pytest.raises(BaselineInputError, match=r"\(L, T, H, W\)"):
        dineof_fill(truth[None], ocean)
    with pytest.raises(BaselineInputError, match="centre"):
        dineof_fill(truth, ocean, centre="spatial")
    with pytest.raises(BaselineInputError, match="shape"):
        dineof_fill(truth, ocean[:1])
    with pytest.raises(BaselineInputError, match="°C"):
        dineof_fill(truth + 273.15, ocean, centre="none")


def _eval_items(truth: np.ndarray, ocean: np.ndarray, drop: tuple[int, int]):
    """EvalItems + index rows for (L, T, H, W) ``truth``, location/month ``drop`` left out of the val set."""
    n_loc, n_frames, size = truth.shape[0], truth.shape[1], truth.shape[-1]
    hidden = (np.random.default_rng(2).random(truth.shape) < 0.5) & ocean[:, None]
    records, keep = [], []
    for k in range(n_loc):
        for t in range(n_frames):
            if (k, t) == drop:
                continue
            keep.append((k, t))
            records.append({"sample_id": f"{200001 + t}_{k}", "y0": 0, "x0": size * k, "date": 20000115 + 100 * t})
    rows = pd.DataFrame(records)
    full = np.stack([np.where(ocean[k], truth[k, t], np.nan) for k, t in keep])[:, None]
    seen = np.stack([ocean[k] & ~hidden[k, t] for k, t in keep])[:, None]
    items = EvalItems(truth=full, observed=np.where(seen, full, np.nan),
                      ocean=np.stack([ocean[k] for k, _ in keep])[:, None], eo=None,
                      sample_ids=list(rows["sample_id"]), locations=[(0, size * k) for k, _ in keep])
    return items, rows


@pytest.mark.parametrize("stack", ["window", "locations"])
def test_run_dineof_maps_each_location_back_and_scores_only_its_hidden_pixels(stack):
    truth = shared_low_rank(frames=12, n_loc=2, size=8)
    ocean = island_ocean(2, 8)
    items, rows = _eval_items(truth, ocean, drop=(1, 5))  # location 1 lacks a month
    scores = ScoreAccumulator()
    out = run_dineof(items, rows, 0.5, [92.3], scores, seed=0, max_modes=5, stack=stack)
    assert out.shape == items.truth.shape
    observed = np.isfinite(items.observed)
    np.testing.assert_array_equal(out[observed], items.observed[observed])
    assert np.isfinite(out[items.ocean]).all() and np.isnan(out[~items.ocean]).all()
    score = scores.score("dineof", 0, 0.5)
    assert score.n_pixels == int(items.hidden.sum())
    assert score.rmse_c < 0.5 * float(np.nanstd(items.truth[items.hidden]))


def test_run_dineof_records_unavailable_and_rejects_unknown_stack():
    truth = shared_low_rank(frames=6, n_loc=2, size=8)
    items, rows = _eval_items(truth, island_ocean(2, 8), drop=(-1, -1))
    scores = ScoreAccumulator()
    out = run_dineof(items, rows, 0.5, [92.3], scores, seed=0, max_modes=5, stack="locations")
    assert np.isnan(out).all() and scores.score("dineof", 0, 0.5).n_pixels == 0
    with pytest.raises(ValueError, match="stack"):
        run_dineof(items, rows, 0.5, [92.3], scores, seed=0, max_modes=5, stack="space")
