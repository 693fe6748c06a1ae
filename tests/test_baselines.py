"""Tests of the classical gap-filling baselines (depthdif.baselines)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from depthdif.baselines import (
    BASELINES,
    BaselineInputError,
    BaselineUnavailable,
    baseline_params_from_config,
    climatology,
    climatology_history,
    dineof_fill,
    eo_regression_oi,
    first_guess_estimate,
    load_history,
    oi,
    run_baseline,
    tune_oi,
)
from depthdif.baselines.optimal_interpolation import gaussian_oi_anomaly

OI_MODULE = sys.modules["depthdif.baselines.optimal_interpolation"]
DATA = Path(__file__).parent / "data" / "glorys12_nwmexico"
METHODS = sorted(BASELINES)


def rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a[where] - b[where]) ** 2)))


def ocean_mask(size: int, corner: int = 6) -> np.ndarray:
    """Ocean everywhere except a square island in the top-left corner."""
    ocean = np.ones((size, size), bool)
    ocean[:corner, :corner] = False
    return ocean


def observe(field: np.ndarray, ocean: np.ndarray, fraction_hidden: float, seed: int = 0):
    """(obs with NaN where hidden or land, hidden-ocean mask) for a random pixel mask."""
    hidden = (np.random.default_rng(seed).random(field.shape) < fraction_hidden) & ocean
    return np.where(ocean & ~hidden, field, np.nan), hidden


def smooth_field(size: int, sigma: float, seed: int, amplitude: float = 3.0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=(size, size))
    field = ndimage.gaussian_filter(noise, sigma, mode="wrap")
    return 15.0 + amplitude * field / field.std()


# ---------------------------------------------------------------- conventions shared by every method


@pytest.mark.parametrize("method", METHODS)
def test_observed_pixels_kept_exactly_and_land_is_nan(method):
    ocean = ocean_mask(32)
    field = smooth_field(32, 4, seed=1)
    obs, hidden = observe(field, ocean, 0.8)
    out = run_baseline(method, obs, ocean, eo=field)
    observed = np.isfinite(obs)
    assert out.shape == obs.shape
    np.testing.assert_array_equal(out[observed], obs[observed])
    assert np.isnan(out[~ocean]).all()
    assert np.isfinite(out[ocean]).all()


@pytest.mark.parametrize("method", METHODS)
def test_constant_field_is_reproduced_exactly(method):
    ocean = ocean_mask(24)
    field = np.full((24, 24), 7.25)
    obs, hidden = observe(field, ocean, 0.9, seed=3)
    out = run_baseline(method, obs, ocean, eo=smooth_field(24, 3, seed=2))
    np.testing.assert_allclose(out[ocean], 7.25, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_no_observation_raises_unavailable(method):
    ocean = ocean_mask(16)
    obs = np.full((16, 16), np.nan)
    obs[0, 0] = 3.0  # a value on land is not an observation
    with pytest.raises(BaselineUnavailable, match="no observed ocean pixel"):
        run_baseline(method, obs, ocean)


@pytest.mark.parametrize("method", METHODS)
def test_all_land_patch_gives_all_nan(method):
    out = run_baseline(method, np.full((8, 8), np.nan), np.zeros((8, 8), bool))
    assert out.shape == (8, 8)
    assert np.isnan(out).all()


@pytest.mark.parametrize("method", METHODS)
def test_one_observation_gives_a_constant(method):
    ocean = ocean_mask(16)
    obs = np.full((16, 16), np.nan)
    obs[10, 4] = -1.5
    out = run_baseline(method, obs, ocean, eo=smooth_field(16, 2, seed=5))
    np.testing.assert_allclose(out[ocean], -1.5, rtol=0, atol=1e-9)


def test_land_given_as_0_1_integers_is_accepted_and_other_values_rejected():
    ocean = ocean_mask(16)
    obs, _ = observe(smooth_field(16, 3, seed=0), ocean, 0.5)
    np.testing.assert_array_equal(
        BASELINES["nearest"](obs, ocean.astype(np.uint8)), BASELINES["nearest"](obs, ocean)
    )
    with pytest.raises(BaselineInputError, match="0/1"):
        BASELINES["nearest"](obs, ocean * 2)
    with pytest.raises(BaselineInputError, match="shape"):
        BASELINES["nearest"](obs, ocean[:8])


# ---------------------------------------------------------------- accuracy on fields they should handle


def test_linear_field_is_exact_for_linear_and_nearly_for_biharmonic_and_oi():
    size = 40
    rows, cols = np.mgrid[0:size, 0:size]
    field = 2.0 + 0.3 * rows - 0.2 * cols
    ocean = ocean_mask(size)
    obs, hidden = observe(field, ocean, 0.7, seed=4)
    interior = hidden.copy()
    interior[:8] = interior[-8:] = False
    interior[:, :8] = interior[:, -8:] = False
    assert interior.sum() > 300
    field_range = field.max() - field.min()
    assert np.abs(run_baseline("linear", obs, ocean)[interior] - field[interior]).max() < 1e-9
    # a plane is biharmonic; skimage's treatment of the patch edge leaves a tiny error inside
    biharmonic = run_baseline("biharmonic", obs, ocean)
    assert np.abs(biharmonic[interior] - field[interior]).max() < 1e-4 * field_range
    # OI around a constant mean cannot represent a trend exactly, but dense data pins it down
    out = oi(obs, ocean, length_scale_px=6.0, noise_ratio=1e-4)
    assert np.abs(out[interior] - field[interior]).max() < 0.01 * field_range
    assert rmse(out, field, hidden) < rmse(run_baseline("nearest", obs, ocean), field, hidden) / 5


def test_oi_beats_nearest_and_mean_fill_on_a_smooth_field():
    ocean = ocean_mask(64, corner=12)
    field = smooth_field(64, 5, seed=7)
    obs, hidden = observe(field, ocean, 0.95, seed=8)
    score = {m: rmse(run_baseline(m, obs, ocean), field, hidden) for m in ("oi", "nearest", "mean_fill")}
    assert score["oi"] < 0.7 * score["nearest"]
    assert score["nearest"] < score["mean_fill"]


def test_eo_regression_oi_beats_oi_when_band_is_linear_in_eo():
    ocean = ocean_mask(48)
    eo = smooth_field(48, 1.5, seed=11)  # fine structure that sparse observations cannot resolve
    noise = np.random.default_rng(12).normal(scale=0.02, size=eo.shape)
    band = 4.0 - 0.6 * eo + noise
    obs, hidden = observe(band, ocean, 0.95, seed=13)
    with_eo = rmse(eo_regression_oi(obs, ocean, eo=eo), band, hidden)
    without = rmse(oi(obs, ocean), band, hidden)
    assert with_eo < 0.2 * without
    assert with_eo < 0.1  # close to the noise level (0.02) times a small factor


def test_eo_regression_oi_falls_back_to_oi_without_eo():
    ocean = ocean_mask(24)
    obs, _ = observe(smooth_field(24, 3, seed=2), ocean, 0.8)
    np.testing.assert_array_equal(eo_regression_oi(obs, ocean, eo=None), oi(obs, ocean))
    np.testing.assert_array_equal(eo_regression_oi(obs, ocean, eo=np.full((24, 24), np.nan)), oi(obs, ocean))
    eo = smooth_field(24, 2, seed=3)
    eo[5:9, 10:14] = np.nan  # a gap in the EO field is filled from its neighbours
    assert np.isfinite(eo_regression_oi(obs, ocean, eo=eo)[ocean]).all()


def test_idw_with_one_neighbour_and_nearest_pick_a_closest_observation():
    ocean = ocean_mask(32)
    obs, hidden = observe(smooth_field(32, 3, seed=9), ocean, 0.9, seed=10)
    observed = np.isfinite(obs)
    distance = ndimage.distance_transform_edt(~observed)
    obs_rows, obs_cols = np.nonzero(observed)
    for method, params in [("idw", {"k": 1}), ("nearest", {})]:
        out = run_baseline(method, obs, ocean, **params)
        for r, c in zip(*np.nonzero(hidden), strict=True):
            # equal-distance ties may be broken either way: the value must be that of *a* closest pixel
            closest = np.hypot(obs_rows - r, obs_cols - c) <= distance[r, c] + 1e-9
            assert np.isclose(out[r, c], obs[obs_rows[closest], obs_cols[closest]], rtol=1e-12).any(), (method, r, c)
    with pytest.raises(ValueError, match="idw_neighbours"):
        run_baseline("idw", obs, ocean, k=0)


def test_linear_falls_back_to_nearest_with_collinear_observations():
    ocean = np.ones((16, 16), bool)
    obs = np.full((16, 16), np.nan)
    obs[8, [2, 7, 12]] = [1.0, 2.0, 3.0]  # all on one row: no triangulation
    out = run_baseline("linear", obs, ocean)
    np.testing.assert_array_equal(out, run_baseline("nearest", obs, ocean))


# ---------------------------------------------------------------- OI internals: solver paths, tuning, speed


def test_conjugate_gradient_path_matches_the_direct_solve(monkeypatch):
    rng = np.random.default_rng(0)
    keep = rng.choice(48 * 48, 300, replace=False)
    rows, cols = np.unravel_index(keep, (48, 48))
    anomalies = rng.normal(size=300)
    direct = gaussian_oi_anomaly(rows, cols, anomalies, (48, 48), 5.0, 0.05)
    monkeypatch.setattr(OI_MODULE, "DIRECT_MAX_OBS", 100)
    iterative = gaussian_oi_anomaly(rows, cols, anomalies, (48, 48), 5.0, 0.05)
    assert np.abs(iterative - direct).max() < 1e-4 * np.abs(direct).max()


def gaussian_process_sample(size: int, length: float, seed: int) -> np.ndarray:
    """A draw of a zero-mean GP with Gaussian covariance (separable, so two small Cholesky factors)."""
    offsets = np.arange(size)
    kernel = np.exp(-0.5 * ((offsets[:, None] - offsets[None, :]) / length) ** 2) + 1e-6 * np.eye(size)
    factor = np.linalg.cholesky(kernel)
    return factor @ np.random.default_rng(seed).normal(size=(size, size)) @ factor.T


def test_tuning_finds_the_generating_length_scale_and_helps():
    field = gaussian_process_sample(48, 4.0, seed=21)
    ocean = np.ones(field.shape, bool)
    obs, hidden = observe(field, ocean, 0.85, seed=22)
    rows, cols = np.nonzero(np.isfinite(obs))
    tuned = tune_oi(rows, cols, obs[rows, cols] - obs[rows, cols].mean())
    assert tuned is not None and 3.0 <= tuned.length_scale_px <= 6.0
    mistuned = rmse(oi(obs, ocean, length_scale_px=16.0, noise_ratio=0.3), field, hidden)
    assert rmse(oi(obs, ocean, length_scale_px=16.0, noise_ratio=0.3, tune=True), field, hidden) < 0.8 * mistuned
    assert tune_oi(rows[:5], cols[:5], obs[rows[:5], cols[:5]]) is None  # too few to tune


def test_oi_is_fast_on_a_large_patch():
    ocean = ocean_mask(128, corner=30)
    field = smooth_field(128, 6, seed=3)
    hidden = np.ones(field.shape, bool)
    hidden.flat[np.random.default_rng(4).choice(field.size, 400, replace=False)] = False
    obs = np.where(~hidden & ocean, field, np.nan)
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        oi(obs, ocean)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.2  # ~6 ms on one idle core; loose for a shared machine


def test_oi_rejects_a_bad_length_scale():
    ocean = ocean_mask(16)
    obs, _ = observe(smooth_field(16, 3, seed=1), ocean, 0.5)
    with pytest.raises(ValueError, match="oi_length_scale_px"):
        oi(obs, ocean, length_scale_px=0.0)


# ---------------------------------------------------------------- registry


def test_run_baseline_routes_parameters_and_rejects_unknown_ones():
    ocean = ocean_mask(24)
    field = smooth_field(24, 3, seed=6)
    obs, _ = observe(field, ocean, 0.9)
    params = {"length_scale_px": 4.0, "noise_ratio": 0.01, "tune": False, "k": 3}
    for method in METHODS:  # one parameter set serves every method
        assert np.isfinite(run_baseline(method, obs, ocean, eo=field, **params)[ocean]).all()
    np.testing.assert_array_equal(
        run_baseline("idw", obs, ocean, **params), BASELINES["idw"](obs, ocean, k=3)
    )
    np.testing.assert_array_equal(
        run_baseline("oi", obs, ocean, eo=field, **params), oi(obs, ocean, 4.0, 0.01, False)
    )
    with pytest.raises(TypeError, match="length_scale"):
        run_baseline("oi", obs, ocean, length_scale=4.0)
    with pytest.raises(KeyError, match="unknown baseline"):
        run_baseline("kriging", obs, ocean)


def test_baseline_params_from_config_reads_the_evaluate_section():
    from depthdif.config import load_config

    config = load_config([], overrides={"evaluate": {"oi_length_scale_px": 3.5, "idw_neighbours": 5}})
    params = baseline_params_from_config(config)
    assert params["length_scale_px"] == 3.5 and params["k"] == 5
    assert set(params) == {"length_scale_px", "noise_ratio", "tune", "k"}


# ---------------------------------------------------------------- first guess for the data loader


def test_first_guess_matches_per_band_oi_and_follows_loader_conventions():
    rng = np.random.default_rng(30)
    channels, size = 3, 32
    ocean = np.broadcast_to(ocean_mask(size), (channels, size, size))
    y = np.stack([smooth_field(size, 3, seed=s, amplitude=1.0) - 15.0 for s in range(channels)])
    valid = np.stack([rng.random((size, size)) > 0.8 for _ in range(channels)])
    valid[1] = valid[0]  # bands 0 and 1 share one mask (one factorisation), band 2 has its own
    x = np.where(valid, y, 0.0)
    out = first_guess_estimate(x, valid, ocean, None, length_scale_px=5.0, noise_ratio=0.05)
    assert out.shape == x.shape and out.dtype == np.float32
    assert (out[~ocean] == 0).all()
    observed = valid & ocean
    np.testing.assert_allclose(out[observed], x[observed], atol=1e-6)
    for band in range(channels):
        obs = np.where(observed[band], x[band], np.nan)
        reference = oi(obs, ocean[band], length_scale_px=5.0, noise_ratio=0.05)
        np.testing.assert_allclose(out[band][ocean[band]], reference[ocean[band]], atol=2e-3)


def test_first_guess_with_eo_matches_eo_regression_oi_and_empty_band_is_zero():
    size = 32
    ocean = np.broadcast_to(ocean_mask(size), (2, size, size))
    eo = smooth_field(size, 2, seed=40, amplitude=1.0) - 15.0
    y = np.stack([0.5 + 0.8 * eo, -0.3 * eo])
    valid = np.zeros(y.shape, bool)
    valid[0] = np.random.default_rng(41).random((size, size)) > 0.9
    out = first_guess_estimate(np.where(valid, y, 0.0), valid, ocean, eo, length_scale_px=6.0)
    reference = eo_regression_oi(np.where(valid[0] & ocean[0], y[0], np.nan), ocean[0], eo=eo)
    np.testing.assert_allclose(out[0][ocean[0]], reference[ocean[0]], atol=2e-3)
    assert (out[1] == 0).all()  # no observation: the normalisation mean, never an exception


def test_first_guess_is_fast_enough_for_the_data_loader():
    rng = np.random.default_rng(50)
    size, channels = 32, 3
    ocean = np.broadcast_to(ocean_mask(size), (channels, size, size))
    x = rng.normal(size=(channels, size, size))
    valid = np.broadcast_to(rng.random((size, size)) > 0.95, x.shape)  # the default mask_fraction
    eo = rng.normal(size=(size, size))
    timings = []
    for _ in range(20):
        start = time.perf_counter()
        first_guess_estimate(x, valid, ocean, eo, 6.0)
        timings.append(time.perf_counter() - start)
    assert np.median(timings) < 0.005  # ~0.6 ms on an idle core


# ---------------------------------------------------------------- climatology


def test_climatology_means_other_years_then_falls_back():
    ocean = ocean_mask(8, corner=2)
    same_month = np.stack([np.full((8, 8), 10.0), np.full((8, 8), 12.0)])
    same_month[:, 4, 4] = np.nan  # no same-month value here -> other months
    same_month[0, 5, 5] = np.nan  # one year missing -> mean of the other
    other_months = np.full((3, 8, 8), 20.0)
    other_months[:, 6, 6] = np.nan
    same_month[:, 6, 6] = np.nan  # nowhere -> observation mean
    obs = np.full((8, 8), np.nan)
    obs[7, 7], obs[3, 3] = 1.0, 3.0
    out = climatology(same_month, ocean, obs=obs, history_other_months=other_months)
    assert out[2, 3] == pytest.approx(11.0)
    assert out[5, 5] == pytest.approx(12.0)
    assert out[4, 4] == pytest.approx(20.0)
    assert out[6, 6] == pytest.approx(2.0)
    assert out[7, 7] == 1.0 and out[3, 3] == 3.0  # observations kept
    assert np.isnan(out[~ocean]).all()
    with pytest.raises(BaselineUnavailable, match="no value in any other year"):
        climatology(same_month, ocean, history_other_months=other_months)
    empty = climatology(np.empty((0, 0, 0)), ocean, obs=obs)
    np.testing.assert_allclose(empty[ocean & ~np.isfinite(obs)], 2.0)


def test_climatology_history_selects_same_place_other_years(tmp_path):
    index = pd.DataFrame(
        {
            "sample_id": ["a2010", "a2011", "a2012", "a2011b", "b2011", "a2010m"],
            "date": [20100115, 20110115, 20120115, 20110215, 20110115, 20100215],
            "y0": [0, 0, 0, 0, 32, 0],
            "x0": [0, 0, 0, 0, 0, 0],
            "patch_size": [32] * 6,
            "y_npy_path": [f"y_npy/{i}.npy" for i in range(6)],
        }
    )
    same, other = climatology_history(index, "a2011")
    assert list(same["sample_id"]) == ["a2010", "a2012"]
    assert list(other["sample_id"]) == ["a2010m"]  # a2011b is the target's own year, b2011 elsewhere
    with pytest.raises(KeyError, match="not in the patch index"):
        climatology_history(index, "zzz")
    (tmp_path / "y_npy").mkdir()
    for i in range(6):
        np.save(tmp_path / "y_npy" / f"{i}.npy", np.full((2, 4, 4), float(i), np.float32))
    stack = load_history(same, band=1, patches_dir=tmp_path)
    assert stack.shape == (2, 4, 4) and stack[1, 0, 0] == 2.0


# ---------------------------------------------------------------- DINEOF (published peer)


def low_rank_stack(frames: int, size: int) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size]
    t = np.arange(frames)
    modes = [np.sin(rows / 4.0) * np.cos(cols / 5.0), np.cos((rows + cols) / 6.0)]
    amplitudes = [np.sin(2 * np.pi * t / 12), np.cos(2 * np.pi * t / 12)]
    return 15.0 + sum(2.0 * a[:, None, None] * m[None] for a, m in zip(amplitudes, modes, strict=True))


def test_dineof_fills_a_low_rank_stack_better_than_mean_fill():
    truth = low_rank_stack(12, 16)
    ocean = ocean_mask(16, corner=4)
    hidden = (np.random.default_rng(60).random(truth.shape) < 0.5) & ocean[None]
    obs = np.where(~hidden & ocean[None], truth, np.nan)
    out = dineof_fill(obs, ocean, seed=0)
    assert out.shape == truth.shape
    observed = np.isfinite(obs)
    np.testing.assert_array_equal(out[observed], obs[observed])
    assert np.isnan(out[:, ~ocean]).all() and np.isfinite(out[:, ocean]).all()
    mean_fill = np.stack([run_baseline("mean_fill", frame, ocean) for frame in obs])
    assert rmse(out, truth, hidden) < 0.2 * rmse(mean_fill, truth, hidden)


def test_dineof_refuses_clearly():
    ocean = ocean_mask(8, corner=2)
    truth = low_rank_stack(12, 8)
    with pytest.raises(BaselineUnavailable, match="at least 8 frames"):
        dineof_fill(truth[:5], ocean)
    with pytest.raises(BaselineUnavailable, match="no observed ocean pixel"):
        dineof_fill(np.full(truth.shape, np.nan), ocean)
    with pytest.raises(BaselineInputError, match=r"\(T, H, W\)"):
        dineof_fill(truth[0], ocean)
    assert np.isnan(dineof_fill(truth, np.zeros((8, 8), bool))).all()


# ---------------------------------------------------------------- real GLORYS12 sample


def test_on_real_glorys_interpolators_beat_nearest():
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(DATA / "mercatorglorys12v1_gl12_mean_201011.nc") as ds:
        field = ds["thetao"].isel(time=0, depth=1).values[60:124, 20:84]  # 9.6 m, mixed coast/ocean
    ocean = np.isfinite(field)
    assert 0.3 < ocean.mean() < 1.0
    obs, hidden = observe(field, ocean, 0.9, seed=70)
    score = {m: rmse(run_baseline(m, obs, ocean, tune=True), field, hidden) for m in METHODS if m != "eo_regression_oi"}
    assert score["oi"] < score["nearest"]
    assert score["biharmonic"] < score["nearest"]
    assert score["nearest"] < score["mean_fill"]
