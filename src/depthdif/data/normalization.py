"""Temperature units: °C in files and plots, a z-score of Kelvin inside the model."""

from __future__ import annotations

KELVIN_OFFSET = 273.15
Y_MEAN = 289.74267177946783  # K, mean of the training temperatures of the system this re-creates
Y_STD = 10.933397487585731  # K

# colour range of every temperature plot, in °C
PLOT_TEMP_MIN = 0.0
PLOT_TEMP_MAX = 32.0


def temperature_normalize(celsius):
    """°C -> K -> z-score. Works on floats, numpy arrays and torch tensors alike."""
    return (celsius + KELVIN_OFFSET - Y_MEAN) / Y_STD


def temperature_denormalize(z):
    """Inverse of :func:`temperature_normalize`: z-score -> °C."""
    return z * Y_STD + Y_MEAN - KELVIN_OFFSET


def temperature_error_to_celsius(z_error):
    """A difference or spread in z units -> °C (no offset: only the scale applies)."""
    return z_error * Y_STD
