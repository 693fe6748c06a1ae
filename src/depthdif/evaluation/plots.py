"""Figures of the evaluation: example reconstructions, RMSE against occlusion, against profile density and
against DDIM steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cmocean
import matplotlib

matplotlib.use("Agg")  # figures are written by batch jobs without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from depthdif.atomic import atomic_path  # noqa: E402

THERMAL = cmocean.cm.thermal
BALANCE = cmocean.cm.balance


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def plot_example(
    truth: np.ndarray,
    observed: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    spread: np.ndarray | None,
    band_labels: Sequence[str],
    title: str,
    path: Path,
) -> Path:
    """One row per band: truth, observations, each method, and the ensemble spread, all in °C.

    ``truth``/``observed``/each prediction are (C, H, W) in °C with NaN on land (and NaN where not observed
    in ``observed``). All temperature panels of a row share the truth's colour range so they compare.
    """
    columns = ["truth", "observed", *predictions] + (["ensemble std"] if spread is not None else [])
    n_bands = truth.shape[0]
    fig, axes = plt.subplots(
        n_bands, len(columns), figsize=(1.9 * len(columns), 2.0 * n_bands + 0.4), squeeze=False
    )
    for b in range(n_bands):
        finite = truth[b][np.isfinite(truth[b])]
        vmin, vmax = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        panels = [truth[b], observed[b], *(p[b] for p in predictions.values())]
        for c, field in enumerate(panels):
            image = axes[b, c].imshow(field, cmap=THERMAL, vmin=vmin, vmax=vmax, origin="lower")
        fig.colorbar(image, ax=axes[b, : len(panels)].tolist(), shrink=0.8, label="°C", pad=0.01)
        if spread is not None:
            spread_image = axes[b, -1].imshow(spread[b], cmap="viridis", vmin=0, origin="lower")
            fig.colorbar(spread_image, ax=axes[b, -1], shrink=0.8, label="°C")
        axes[b, 0].set_ylabel(band_labels[b])
    for c, name in enumerate(columns):
        axes[0, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_rmse_vs_occlusion(metrics: pd.DataFrame, path: Path) -> Path:
    """RMSE (°C) of every method against the hidden share, one panel per band."""
    bands = sorted(metrics["band"].unique())
    fig, axes = plt.subplots(1, len(bands), figsize=(4.2 * len(bands), 3.6), squeeze=False, sharey=False)
    for ax, band in zip(axes[0], bands, strict=True):
        rows = metrics[metrics["band"] == band]
        for method, group in rows.groupby("method", sort=True):
            group = group.sort_values("mask_fraction")
            style = "-o" if method.startswith("diffusion") else "--."
            ax.plot(group["mask_fraction"], group["rmse_c"], style, label=method, linewidth=1.2, markersize=3)
        depth = rows["depth_m"].iloc[0]
        ax.set_title(f"band {band} ({depth:.1f} m)")
        ax.set_xlabel("hidden share of ocean pixels")
        ax.set_ylabel("RMSE on hidden pixels (°C)")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_rmse_vs_profile_density(metrics: pd.DataFrame, path: Path) -> Path:
    """RMSE (°C) of every method against the density of vertical profiles, one panel per band (log x axis).

    Args:
        metrics: the profile rows of metrics.csv (``observations`` = profiles): ``method``, ``band``,
            ``depth_m``, ``rmse_c``, ``n_pixels``, ``profiles_per_deg2_month`` (profiles per (1°)² a month)
            and ``profile_density_factor`` (the multiple of the Argo density). Rows without pixels are left
            out.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    scored = metrics[(metrics["n_pixels"] > 0) & np.isfinite(metrics["rmse_c"])]
    bands = sorted(metrics["band"].unique()) or [0]
    fig, axes = plt.subplots(1, len(bands), figsize=(4.2 * len(bands), 3.6), squeeze=False)
    levels = metrics[["profiles_per_deg2_month", "profile_density_factor"]].drop_duplicates()
    levels = levels.sort_values("profiles_per_deg2_month")
    # a colour per method: a dozen methods would repeat the default cycle's ten
    colours = {m: plt.cm.tab20(i % 20) for i, m in enumerate(sorted(metrics["method"].unique()))}
    for ax, band in zip(axes[0], bands, strict=True):
        rows = scored[scored["band"] == band]
        for method, group in rows.groupby("method", sort=True):
            group = group.sort_values("profiles_per_deg2_month")
            style = "-o" if method.startswith("diffusion") else "--."
            ax.plot(group["profiles_per_deg2_month"], group["rmse_c"], style, label=method, linewidth=1.2,
                    markersize=3, color=colours[method])
        depth = metrics[metrics["band"] == band]["depth_m"]
        ax.set_title(f"band {band} ({depth.iloc[0]:.1f} m)" if len(depth) else f"band {band}", fontsize=9)
        if len(levels):
            ax.set_xscale("log")
            ax.set_xticks(levels["profiles_per_deg2_month"],
                          [f"{d:g}\n({f:g}x Argo)" for d, f in levels.itertuples(index=False)])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if not len(rows):
            ax.text(0.5, 0.5, "no band reached by a profile", transform=ax.transAxes, ha="center", fontsize=8)
        ax.set_xlabel("profiles per (1°)² per month")
        ax.set_ylabel("RMSE on hidden pixels (°C)")
        ax.grid(alpha=0.3, which="both")
    handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    if handles:
        axes[0, -1].legend(handles.values(), handles.keys(), fontsize=7, loc="upper left",
                           bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Observing-system experiment: vertical profiles at multiples of the Argo density",
                 fontsize=9)
    return _save(fig, path)


def plot_rmse_vs_steps(sweep: pd.DataFrame, path: Path) -> Path:
    """RMSE (°C) of the diffusion ensemble mean against the number of DDIM steps, per band."""
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for band, group in sweep.groupby("band", sort=True):
        group = group.sort_values("steps")
        ax.plot(group["steps"], group["rmse_c"], "-o", label=f"band {band} ({group['depth_m'].iloc[0]:.1f} m)")
    ax.set_xscale("log")
    ax.set_xlabel("DDIM steps")
    ax.set_ylabel("RMSE on hidden pixels (°C)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_rank_histograms(counts: Mapping[float, np.ndarray], band_labels: Sequence[str], path: Path) -> Path:
    """Rank histograms of the truth among the ensemble members, one panel per band, one line per occlusion.

    ``counts[fraction]`` is (C, N + 1). Flat = calibrated; U-shaped = over-confident (too little spread);
    dome-shaped = under-confident; sloped = biased.
    """
    bands = len(band_labels)
    fig, axes = plt.subplots(1, bands, figsize=(4.2 * bands, 3.4), squeeze=False)
    for b, ax in enumerate(axes[0]):
        for fraction, table in sorted(counts.items()):
            share = table[b] / max(table[b].sum(), 1)
            ax.step(np.arange(len(share)), share * len(share), where="mid", label=f"{fraction:.1%} hidden")
        ax.axhline(1.0, color="0.5", lw=0.8, ls="--")
        ax.set_title(band_labels[b])
        ax.set_xlabel("rank of the truth among the members")
        ax.set_ylabel("frequency / uniform")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Rank histograms of the diffusion ensemble (flat = calibrated)")
    return _save(fig, path)


def plot_field(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, title: str, path: Path) -> Path:
    """A reconstructed map (°C) on its latitude/longitude grid."""
    fig, ax = plt.subplots(figsize=(6, 4))
    mesh = ax.pcolormesh(lon, lat, field, cmap=THERMAL, shading="auto")
    fig.colorbar(mesh, ax=ax, label="°C")
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_power_spectra(table: pd.DataFrame, fraction: float, path: Path) -> Path:
    """PSD(method) / PSD(truth) against wavelength (px, log axes), one panel per band, one line per method.

    ``table`` is depthdif.evaluation.spectra.spectral_table's (spectra.csv); the occlusion level shown is the
    one of the table nearest ``fraction``.  1 (dashed) = the truth's variance at that scale; below = too
    smooth. The shaded span is the small-scale band of ``psd_ratio_small_scales``.
    """
    from depthdif.evaluation.spectra import SMALL_SCALE_WAVELENGTH_PX

    rows = table[np.isfinite(table["psd_ratio"]) & (table["psd_ratio"] > 0)]
    shown = min(rows["mask_fraction"].unique(), key=lambda f: abs(f - fraction)) if len(rows) else fraction
    rows = rows[rows["mask_fraction"] == shown]
    bands = sorted(table["band"].unique()) or [0]
    longest = float(table["wavelength_px"].max()) if len(table) else 2.0
    fig, axes = plt.subplots(1, len(bands), figsize=(4.2 * len(bands), 3.6), squeeze=False)
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(table["method"]))}  # one colour per method
    for ax, band in zip(axes[0], bands, strict=True):
        at = rows[rows["band"] == band]
        for method, group in at.groupby("method", sort=False):
            group = group.sort_values("wavelength_px")
            style = "-" if method.startswith("diffusion") else "--"
            ax.plot(group["wavelength_px"], group["psd_ratio"], style, marker=".", markersize=3, linewidth=1.2,
                    color=colours[method], label=method)
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        ax.axvspan(2.0, SMALL_SCALE_WAVELENGTH_PX, color="0.9", zorder=0)
        ax.set_xscale("log")
        ticks = [2.0**e for e in range(1, 11) if 2.0**e <= longest]  # 2, 4, 8, ... px up to the patch size
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if len(at):
            ax.set_yscale("log")  # ratios span decades below 1; log keeps 0.5 and 2 equally far from 1
        else:
            ax.text(0.5, 0.5, "no entirely-ocean patch", transform=ax.transAxes, ha="center", fontsize=8)
        depth = table[table["band"] == band]["depth_m"]
        patches = int(at["n_patches"].max()) if len(at) else 0
        ax.set_title(f"band {band} ({depth.iloc[0]:.1f} m), {patches} patches" if len(depth) else f"band {band}",
                     fontsize=9)
        ax.set_xlabel("wavelength (px)")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("PSD(method) / PSD(truth)")
    handles = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    if handles:
        axes[0, -1].legend(handles.values(), handles.keys(), fontsize=7, loc="upper left",
                           bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"Power spectra relative to the truth, {shown:.1%} of ocean pixels hidden", fontsize=9)
    return _save(fig, path)
