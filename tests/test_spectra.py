"""Power spectra, spectral ratio and effective resolution (depthdif.evaluation.spectra) on fields of known
spectrum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from depthdif.evaluation.spectra import (
    SCORE_COLUMNS,
    TABLE_COLUMNS,
    effective_resolution,
    merge_spectral_scores,
    radial_power_spectrum,
    resolution_from_score,
    scores_from_table,
    small_scale_ratio,
    spectral_ratio,
    spectral_scores,
    spectral_table,
)

N = 32  # the default patch size


def red_field(n: int = 256, slope: float = 3.0, seed: int = 0) -> np.ndarray:
    """A periodic Gaussian random field with power ~ k^-slope, unit variance (°C)."""
    rng = np.random.default_rng(seed)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    amplitude = np.where(k > 0, np.where(k > 0, k, 1.0) ** (-slope / 2), 0.0)
    field = np.fft.ifft2(amplitude * np.fft.fft2(rng.standard_normal((n, n)))).real
    return field / field.std()


def gaussian_smooth(field: np.ndarray, sigma_px: float) -> np.ndarray:
    """Periodic Gaussian smoothing of standard deviation ``sigma_px`` (exact transfer function)."""
    k2 = sum(g**2 for g in np.meshgrid(np.fft.fftfreq(field.shape[0]), np.fft.fftfreq(field.shape[1]),
                                        indexing="ij"))
    return np.fft.ifft2(np.fft.fft2(field) * np.exp(-2 * np.pi**2 * sigma_px**2 * k2)).real


def to_patches(field: np.ndarray, size: int = N) -> np.ndarray:
    m = field.shape[0] // size
    return field[: m * size, : m * size].reshape(m, size, m, size).transpose(0, 2, 1, 3).reshape(-1, size, size)


def all_ocean(fields: np.ndarray) -> np.ndarray:
    return np.ones(fields.shape, dtype=bool)


def test_white_noise_has_a_flat_spectrum():
    rng = np.random.default_rng(1)
    a, b = to_patches(rng.standard_normal((256, 256))), to_patches(rng.standard_normal((256, 256)))
    spectrum = radial_power_spectrum(a, all_ocean(a))
    assert spectrum.n_patches == 64
    np.testing.assert_allclose(spectrum.wavenumber, np.arange(1, N // 2 + 1) / N)
    # a density (°C² per (cycle/px)²): white noise of variance 1 has ~1 at every wavenumber
    assert np.all(np.abs(spectrum.power - 1.0) < 0.25)
    ratio = spectral_ratio(a, b, all_ocean(a))
    assert np.all(np.abs(ratio.ratio - 1.0) < 0.2)
    assert small_scale_ratio(ratio.wavenumber, ratio.ratio) == pytest.approx(1.0, abs=0.05)


def test_a_plane_adds_no_power():
    """The least-squares plane is removed: a gradient must not leak into the spectrum."""
    field = to_patches(red_field(seed=2))
    yy, xx = np.mgrid[0:N, 0:N]
    ramp = field + 5.0 + 0.3 * yy - 0.2 * xx  # a gradient far stronger than the field's variability
    ocean = all_ocean(field)
    np.testing.assert_allclose(radial_power_spectrum(ramp, ocean).power, radial_power_spectrum(field, ocean).power,
                               rtol=1e-9)


@pytest.mark.parametrize("slope", [2.0, 3.0])
def test_smoothed_field_loses_small_scales_only(slope):
    truth = red_field(slope=slope, seed=3)
    smooth = gaussian_smooth(truth, 1.5)
    ratio = spectral_ratio(to_patches(smooth), to_patches(truth), all_ocean(to_patches(truth)))
    assert ratio.ratio[0] > 0.8  # the patch scale (32 px) keeps its variance
    assert small_scale_ratio(ratio.wavenumber, ratio.ratio) < 0.3
    assert np.all(ratio.ratio[ratio.wavenumber > 1 / 8] < 0.3)


def test_perfect_prediction_is_resolved_at_the_smallest_scale():
    truth = to_patches(red_field(seed=4))
    assert effective_resolution(truth, truth, all_ocean(truth)) == pytest.approx(2.0)  # N / (N / 2) px


def test_effective_resolution_grows_with_smoothing():
    """Gaussian smoothing of width s has score 1 - (1 - exp(-2 pi^2 s^2 k^2))^2 = 0.5 at ~4.0 s px."""
    truth = red_field(slope=2.0, seed=5)
    patches = to_patches(truth)
    resolutions = [effective_resolution(to_patches(gaussian_smooth(truth, s)), patches, all_ocean(patches))
                   for s in (1.0, 1.5, 2.0, 3.0)]
    assert np.all(np.diff(resolutions) > 0)
    np.testing.assert_allclose(resolutions, [4.0, 6.0, 8.0, 12.0], rtol=0.1)
    assert all(r > 2.0 for r in resolutions)


def test_resolution_definition_at_the_ends():
    k = np.arange(1, 17) / 32
    assert np.isnan(resolution_from_score(k, np.full(16, 0.2)))  # unresolved even at the patch scale
    assert resolution_from_score(k, np.ones(16)) == pytest.approx(2.0)  # never crosses: smallest scale
    assert np.isnan(resolution_from_score(k, np.full(16, np.nan)))
    # halfway in score between 16 px (0.75) and 32 / 3 px (0.25): halfway in wavelength
    score = np.where(np.arange(1, 17) <= 2, 0.75, 0.25)
    assert resolution_from_score(k, score) == pytest.approx((16 + 32 / 3) / 2)


def test_patches_with_land_are_left_out_by_default():
    truth = to_patches(red_field(seed=6))
    pred = to_patches(gaussian_smooth(red_field(seed=6), 2.0))
    ocean = all_ocean(truth)
    ocean[:10, 5:8, 5:8] = False  # an island in 10 of the 64 patches
    pred = np.where(ocean, pred, np.nan)  # land may be NaN in the inputs
    truth_nan = np.where(ocean, truth, np.nan)
    assert radial_power_spectrum(truth_nan, ocean).n_patches == 54
    ratio = spectral_ratio(pred, truth_nan, ocean)
    assert ratio.n_patches == 54
    np.testing.assert_allclose(ratio.ratio, spectral_ratio(pred[10:], truth[10:], ocean[10:]).ratio)
    # an island-only patch set has no spectrum
    only_land = radial_power_spectrum(truth_nan[:10], ocean[:10])
    assert only_land.n_patches == 0 and np.isnan(only_land.power).all()
    assert np.isnan(effective_resolution(pred[:10], truth_nan[:10], ocean[:10]))


def test_small_land_share_is_filled_when_allowed():
    truth = to_patches(red_field(seed=7))
    ocean = all_ocean(truth)
    ocean[:10, 5:8, 5:8] = False  # 9 / 1024 px of land
    truth_nan = np.where(ocean, truth, np.nan)
    spectrum = radial_power_spectrum(truth_nan, ocean, max_land_fraction=0.01)
    assert spectrum.n_patches == 64 and np.isfinite(spectrum.power).all()
    # land values of the prediction are ignored: garbage there changes nothing
    garbage = np.where(ocean, truth, 1e3)
    ratio = spectral_ratio(garbage, truth_nan, ocean, max_land_fraction=0.01)
    np.testing.assert_allclose(ratio.ratio, 1.0)
    assert effective_resolution(garbage, truth_nan, ocean, max_land_fraction=0.01) == pytest.approx(2.0)
    assert radial_power_spectrum(truth_nan, ocean, max_land_fraction=0.005).n_patches == 54
    with pytest.raises(ValueError, match="max_land_fraction"):
        radial_power_spectrum(truth, ocean, max_land_fraction=0.9)


def test_prediction_nan_on_ocean_drops_the_patch():
    truth = to_patches(red_field(seed=8))
    pred = truth.copy()
    pred[3, 0, 0] = np.nan  # e.g. a baseline that could not fill one pixel
    assert spectral_ratio(pred, truth, all_ocean(truth)).n_patches == 63


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="square"):
        radial_power_spectrum(np.zeros((2, 16, 32)), np.ones((2, 16, 32), bool))
    with pytest.raises(ValueError, match="differs"):
        spectral_ratio(np.zeros((2, 16, 16)), np.zeros((3, 16, 16)), np.ones((2, 16, 16), bool))


def test_tables_per_method_band_and_fraction():
    rng = np.random.default_rng(9)
    bands = [red_field(seed=10 + b) for b in range(2)]
    truth = np.stack([to_patches(f) for f in bands], axis=1)  # (P, C, H, W)
    ocean = all_ocean(truth)
    truth[0, 1, :4, :4] = np.nan  # land in one patch of band 1
    ocean[0, 1, :4, :4] = False
    smooth = np.stack([to_patches(gaussian_smooth(f, 2.0)) for f in bands], axis=1)
    predictions = {
        "diffusion_sample": truth + 0.05 * rng.standard_normal(truth.shape),
        "oi": smooth,
        "dineof": np.full(truth.shape, np.nan),  # unavailable
        "nearest": smooth,  # not a spectral method: ignored
    }
    table = spectral_table(truth, ocean, predictions, 0.95, [9.57, 29.4])
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert set(table["method"]) == {"diffusion_sample", "oi", "dineof"}
    assert len(table) == 3 * 2 * (N // 2)
    scores = scores_from_table(table)
    assert list(scores.columns) == list(SCORE_COLUMNS)
    pd.testing.assert_frame_equal(scores, spectral_scores(truth, ocean, predictions, 0.95, [9.57, 29.4]))
    by = scores.set_index(["method", "band"])
    assert by.loc[("oi", 0), "n_patches"] == 64 and by.loc[("oi", 1), "n_patches"] == 63
    assert by.loc[("dineof", 0), "n_patches"] == 0 and np.isnan(by.loc[("dineof", 0), "effective_resolution_px"])
    for b in (0, 1):
        assert by.loc[("oi", b), "psd_ratio_small_scales"] < 0.3
        assert by.loc[("diffusion_sample", b), "psd_ratio_small_scales"] > 0.8
        assert by.loc[("oi", b), "effective_resolution_px"] > by.loc[("diffusion_sample", b), "effective_resolution_px"]

    metrics = pd.DataFrame({"method": ["oi", "climatology", "diffusion_sample", "oi"], "band": [0, 0, 1, 0],
                            "depth_m": [9.57, 9.57, 29.4, 9.57], "mask_fraction": [0.95, 0.95, 0.95, 0.5],
                            "rmse_c": [0.1, 0.2, 0.3, 0.05]})
    merged = merge_spectral_scores(metrics, scores)
    assert list(merged["method"]) == list(metrics["method"])  # order and rows kept
    assert merged.loc[0, "effective_resolution_px"] == by.loc[("oi", 0), "effective_resolution_px"]
    assert merged.loc[[1, 3], ["psd_ratio_small_scales", "effective_resolution_px"]].isna().all().all()


def test_power_spectra_figure(tmp_path):
    from depthdif.evaluation.plots import plot_power_spectra

    truth = to_patches(red_field(seed=11))[:, None]
    smooth = to_patches(gaussian_smooth(red_field(seed=11), 2.0))[:, None]
    table = pd.concat([spectral_table(truth, all_ocean(truth), {"diffusion_sample": truth, "oi": smooth}, f, [5.0])
                       for f in (0.5, 0.95)], ignore_index=True)
    assert plot_power_spectra(table, 0.9, tmp_path / "spectra.png").stat().st_size > 0
    empty = spectral_table(truth, all_ocean(truth), {}, 0.95, [5.0])
    assert empty.empty and plot_power_spectra(empty, 0.95, tmp_path / "empty.png").exists()
