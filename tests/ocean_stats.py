"""Statistics of a temperature field that the synthetic ocean is calibrated against.

Definitions (docs/synthetic-ocean.md): the "mesoscale anomaly" is the
field minus a Gaussian-smoothed large-scale field (sigma = 10 px), smoothed by normalised convolution
over ocean cells so that the coast does not pull the large scale towards zero.  Used by
tests/test_synthetic.py and by the measurement command in docs/synthetic-ocean.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

LARGE_SCALE_SIGMA_PX = 10.0
MAX_LAG_PX = 40


def large_scale(field: np.ndarray, ocean: np.ndarray, sigma: float = LARGE_SCALE_SIGMA_PX) -> np.ndarray:
    """Gaussian smoothing of ``field`` over ``ocean`` cells only (normalised convolution)."""
    filled = np.where(ocean, field, 0.0)
    weight = ndimage.gaussian_filter(ocean.astype(float), sigma, mode="nearest")
    smooth = ndimage.gaussian_filter(filled, sigma, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ocean, smooth / weight, np.nan)


def mesoscale_anomaly(field: np.ndarray, ocean: np.ndarray) -> np.ndarray:
    """``field`` minus its large scale; NaN off ``ocean``."""
    return np.where(ocean, field - large_scale(field, ocean), np.nan)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over cells finite in both."""
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _lag_pairs(a: np.ndarray, lag: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    n = a.shape[axis]
    head = np.take(a, np.arange(0, n - lag), axis=axis)
    tail = np.take(a, np.arange(lag, n), axis=axis)
    return head, tail


def autocorrelation(anomaly: np.ndarray, max_lag: int = MAX_LAG_PX) -> np.ndarray:
    """Correlation of the anomaly with itself shifted by 0..max_lag px, averaged over x and y."""
    out = [1.0]
    for lag in range(1, max_lag + 1):
        values = [correlation(*_lag_pairs(anomaly, lag, axis)) for axis in (0, 1)]
        out.append(float(np.mean(values)))
    return np.asarray(out)


def efolding_length_px(anomaly: np.ndarray, max_lag: int = MAX_LAG_PX) -> float:
    """Lag (px, linearly interpolated) where the autocorrelation first falls below 1/e; inf if never."""
    acf = autocorrelation(anomaly, max_lag)
    below = np.nonzero(acf < np.exp(-1.0))[0]
    if below.size == 0:
        return float("inf")
    k = int(below[0])
    a0, a1 = acf[k - 1], acf[k]
    return float(k - 1 + (a0 - np.exp(-1.0)) / (a0 - a1))


def gradient_excess_kurtosis(field: np.ndarray) -> float:
    """Excess kurtosis of one-cell differences in x and y (pairs of finite cells): heavy tails = fronts."""
    diffs = [np.diff(field, axis=axis).ravel() for axis in (0, 1)]
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    return float(stats.kurtosis(d, fisher=True))


def level_statistics(levels: np.ndarray, ocean: np.ndarray) -> list[dict]:
    """Per-level statistics of a (depth, y, x) stack on the ``ocean`` cells (valid at every level).

    Level 0 is taken as the surface for the correlations.
    """
    anomalies = [mesoscale_anomaly(level, ocean) for level in levels]
    surface, surface_anomaly = levels[0], anomalies[0]
    rows = []
    for level, anomaly in zip(levels, anomalies, strict=True):
        rows.append(
            {
                "mean": float(np.mean(level[ocean])),
                "std": float(np.std(level[ocean])),
                "anomaly_std": float(np.nanstd(anomaly)),
                "anomaly_corr_surface": correlation(anomaly, surface_anomaly),
                "corr_surface": correlation(np.where(ocean, level, np.nan), np.where(ocean, surface, np.nan)),
                "efolding_px": efolding_length_px(anomaly),
                "gradient_kurtosis": gradient_excess_kurtosis(np.where(ocean, level, np.nan)),
            }
        )
    return rows


def persistence(levels_a: np.ndarray, levels_b: np.ndarray, ocean: np.ndarray) -> list[float]:
    """Per-level correlation of the mesoscale anomaly between two months (same cells)."""
    return [
        correlation(mesoscale_anomaly(a, ocean), mesoscale_anomaly(b, ocean))
        for a, b in zip(levels_a, levels_b, strict=True)
    ]


# ------------------------------------------------------------------------------ command line
# python tests/ocean_stats.py [--seeds 0 1 2]: the table of docs/synthetic-ocean.md, real sample vs
# synthetic ocean (mean over seeds and over month pairs Nov->Dec 2010, Mar->Apr 2011, Jul->Aug 2012).

SAMPLE_DEPTH_INDICES = [0, 7, 14, 21, 28]  # 0.49, 9.57, 29.4, 92.3, 318 m in the 50-level axis
MONTH_PAIRS = [((2010, 11), (2010, 12)), ((2011, 3), (2011, 4)), ((2012, 7), (2012, 8))]


def _pair_statistics(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(level, statistic) for two months of the five sample levels: the columns of the table."""
    ocean = np.isfinite(first).all(axis=0) & np.isfinite(second).all(axis=0)
    rows = level_statistics(first, ocean)
    keep = persistence(first, second, ocean)
    change = np.mean(second[:, ocean], axis=1) - np.mean(first[:, ocean], axis=1)
    land = np.isnan(first).mean(axis=(1, 2))
    columns = [
        "mean",
        "std",
        "anomaly_std",
        "anomaly_corr_surface",
        "corr_surface",
        "efolding_px",
        "gradient_kurtosis",
    ]
    return np.array(
        [[r[c] for c in columns] + [p, d, f] for r, p, d, f in zip(rows, keep, change, land, strict=True)]
    )


TABLE_COLUMNS = [
    "mean (°C)", "std (°C)", "anomaly std (°C)", "anomaly corr. surface", "full corr. surface",
    "e-folding (px)", "gradient excess kurtosis", "persistence (1 month)", "mean change (°C)", "land fraction",
]  # fmt: skip


def _real_table() -> np.ndarray:
    import xarray as xr

    from depthdif import glorys

    folder = __import__("pathlib").Path(__file__).parent / "data" / "glorys12_nwmexico"
    nov, dec = (xr.open_dataset(folder / glorys.file_name(2010, m))["thetao"].values[0] for m in (11, 12))
    return _pair_statistics(nov, dec)


def _synthetic_tables(seeds: list[int]) -> np.ndarray:
    from depthdif.config import validate_config
    from depthdif.sources.synthetic import synthetic_dataset

    """(seed, month pair, level, statistic)."""
    tables = []
    for seed in seeds:
        config = validate_config({"source": {"synthetic": {"seed": seed}}})
        for first, second in MONTH_PAIRS:
            a, b = (
                synthetic_dataset(config, *ym)["thetao"].values[0][SAMPLE_DEPTH_INDICES]
                for ym in (first, second)
            )
            tables.append(_pair_statistics(a, b))
    return np.stack(tables).reshape(len(seeds), len(MONTH_PAIRS), *tables[0].shape)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    real, synthetic = _real_table(), _synthetic_tables(args.seeds)
    depths = [0.49, 9.57, 29.4, 92.3, 318.1]
    print(
        f"real: GLORYS12 Nov->Dec 2010 sample; synthetic: mean [min, max] over seeds {args.seeds} x "
        f"{len(MONTH_PAIRS)} month pairs (mean change: Nov->Dec 2010 only, as the real one)\n"
    )
    print("| statistic | " + " | ".join(f"{d} m real / synthetic" for d in depths) + " |")
    print("|---" * (len(depths) + 1) + "|")
    for j, name in enumerate(TABLE_COLUMNS):
        values = synthetic[:, :1] if name.startswith("mean change") else synthetic
        values = values.reshape(-1, *synthetic.shape[2:])
        cells = [
            f"{real[i, j]:.2f} / {values[:, i, j].mean():.2f} [{values[:, i, j].min():.2f}, {values[:, i, j].max():.2f}]"
            for i in range(len(depths))
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
