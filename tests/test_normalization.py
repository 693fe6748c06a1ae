"""Temperature normalisation: °C -> K -> z-score and back; error scaling; plot range in °C."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from depthdif.data.normalization import (
    KELVIN_OFFSET,
    PLOT_TEMP_MAX,
    PLOT_TEMP_MIN,
    Y_MEAN,
    Y_STD,
    temperature_denormalize,
    temperature_error_to_celsius,
    temperature_normalize,
)

OCEAN_CELSIUS = st.floats(min_value=-5.0, max_value=45.0, allow_nan=False, allow_infinity=False)


def test_constants_are_the_issue_values():
    assert Y_MEAN == 289.74267177946783
    assert Y_STD == 10.933397487585731
    assert KELVIN_OFFSET == 273.15


def test_normalize_is_a_z_score_of_kelvin():
    # the training mean in °C maps to 0 and one std above it to 1
    mean_c = Y_MEAN - KELVIN_OFFSET
    assert abs(temperature_normalize(mean_c)) < 1e-12
    assert abs(temperature_normalize(mean_c + Y_STD) - 1.0) < 1e-12
    # 0 °C is 273.15 K: (273.15 - Y_MEAN) / Y_STD
    assert np.isclose(temperature_normalize(0.0), (273.15 - Y_MEAN) / Y_STD)
    # 16.59 °C is (nearly) the mean: it must come out as ~0 (the datasets must not take it for "missing")
    assert abs(temperature_normalize(16.59)) < 1e-3


@given(OCEAN_CELSIUS)
@settings(max_examples=200, deadline=None)
def test_round_trip_scalar(celsius):
    assert abs(temperature_denormalize(temperature_normalize(celsius)) - celsius) < 1e-9


@given(st.lists(OCEAN_CELSIUS, min_size=1, max_size=64))
@settings(max_examples=100, deadline=None)
def test_round_trip_arrays_numpy_and_torch(values):
    array = np.asarray(values, dtype=np.float32)
    back = temperature_denormalize(temperature_normalize(array))
    assert back.dtype == np.float32  # float32 in, float32 out (no silent float64 copies of patches)
    np.testing.assert_allclose(back, array, atol=2e-5)
    tensor = torch.from_numpy(array)
    back_t = temperature_denormalize(temperature_normalize(tensor))
    assert back_t.dtype == torch.float32
    np.testing.assert_allclose(back_t.numpy(), array, atol=2e-5)


@given(OCEAN_CELSIUS, OCEAN_CELSIUS)
@settings(max_examples=100, deadline=None)
def test_error_scaling_has_no_offset(a, b):
    # a difference of normalised values is a difference of temperatures divided by Y_STD
    z_error = temperature_normalize(a) - temperature_normalize(b)
    assert abs(temperature_error_to_celsius(z_error) - (a - b)) < 1e-9


def test_nan_stays_nan():
    out = temperature_normalize(np.array([np.nan, 10.0], dtype=np.float32))
    assert np.isnan(out[0]) and np.isfinite(out[1])


def test_plot_range_is_in_celsius():
    assert PLOT_TEMP_MIN < PLOT_TEMP_MAX
    assert -5.0 <= PLOT_TEMP_MIN <= 5.0 and 25.0 <= PLOT_TEMP_MAX <= 40.0  # °C, not K or z
