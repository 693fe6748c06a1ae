"""The real sample of the sim-to-real evaluation: a second dataset through the same per-month stages.

Models trained on the synthetic ocean are scored on real GLORYS12 files (``evaluate.real_sample_dir``). The
files go through the run's own download (a local source) and export code into a second data folder,
``{data_dir}/real`` (``depthdif.layout.RunLayout.real_data``), one job per month like the run's data:

    download_real_month   link a month's real files into real/raw/ and write its manifest rows
    download_real         gather the manifest (real/raw/manifest.csv)
    export_real_month     cut the month into patches of the main export's levels, found by value
    export_real           gather the index and a split index in which every patch is val
    baselines_real_{v}    the baselines on that split index (as baselines_{v})
    evaluate_real_{v}     the model scored with them (as evaluate_{v}, same run_evaluation)

The levels are matched by value: a real subset need not hold the 50 GLORYS12 levels, so ``export.depth_indices``
(positions in the main source's depth axis) would pick other depths. The main export's depths come from its
first month's grid file (every month holds the same; the export's gather checks it), so no real data stage
reads the model: a retrained model reruns only ``evaluate_real_{v}``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd

from depthdif.atomic import atomic_to_csv
from depthdif.cf.axes import axis_roles, depth_below_surface_m, match_levels
from depthdif.cf.decode import decode_values
from depthdif.download import download_month, file_variables
from depthdif.errors import DepthDifError
from depthdif.export import SETTINGS_KEYS, FileJob, export_month, gather_index, load_grids, read_manifest

log = logging.getLogger(__name__)


class RealDataError(DepthDifError, ValueError):
    """The real sample cannot be exported at the run's levels or scored (missing levels, no files)."""


# ----------------------------------------------------------------------------------------------- download


def real_download_settings(config: Mapping) -> dict:
    """What a month's download of the real sample reads: the params of the rule ``download_real_month``.

    The real sample is a local source of every file in ``evaluate.real_sample_dir`` whatever
    ``source.years``/``source.months`` say; its folder is not part of the params (the job takes it from its
    input files, declared relative to the working directory), so a moved checkout reruns nothing.

    Args:
        config: a validated config.

    Returns:
        ``{"source": {"kind": "local"}, "export": {"variable": ..., "surface_variables": [...]}}`` (the
        latter when not empty: the real files must hold the surface fields too), read like a config by
        ``download_real_month``.
    """
    return {"source": {"kind": "local"}, "export": file_variables(config["export"])}


def download_real_month(
    settings: Mapping,
    year: int,
    month: int,
    local_files: Sequence[Path],
    raw_dir: Path,
    out_csv: Path,
    digest_cache: Path | None = None,
    stale: Iterable[Path] = (),
) -> Path:
    """One month of the real sample: link its files into ``raw_dir`` and write their manifest rows.

    Args:
        settings: ``real_download_settings(config)``, the rule's params.
        year, month: the month (the rule's wildcard).
        local_files: the real files dated in this month (their folder is the source's ``local_dir``).
        raw_dir: ``{data_dir}/real/raw``.
        out_csv: the month's manifest (``RunLayout.real_data.month_manifest``), written last.
        digest_cache: the month's SHA-256 cache (see ``depthdif.download.file_digests``).
        stale: the gathered real manifest, removed first.

    Returns:
        ``out_csv``.

    Raises:
        DownloadError: as ``depthdif.download.download_month`` (no file in this month, a file that cannot be
            used, a file dated in another month).
    """
    located = copy.deepcopy(dict(settings))
    if local_files:
        located["source"]["local_dir"] = str(Path(local_files[0]).parent)
    return download_month(located, year, month, raw_dir, out_csv, digest_cache=digest_cache,
                          local_files=local_files, stale=stale)


# ------------------------------------------------------------------------------------------------- export


def real_export_params(export: Mapping) -> dict:
    """What a month's export of the real sample reads of ``config["export"]``: the rule's params.

    The main export's settings without ``depth_indices`` (the levels are matched by value, from the main
    export's grid file) and with patches overlapping by half (``stride = patch_size // 2``): the real sample
    is small, and overlapping patches give more val locations.

    Args:
        export: ``config["export"]``.

    Returns:
        ``variable``, ``patch_size``, ``stride``, ``max_nodata_fraction``, ``fill_values``,
        ``surface_variables`` (the real patches get the same surface fields as the main export's).
    """
    params = {key: copy.deepcopy(export[key]) for key in SETTINGS_KEYS if key != "depth_indices"}
    params["stride"] = max(1, int(export["patch_size"]) // 2)
    return params


def export_levels_m(grid_npz: Path) -> list[float]:
    """Depths (m) of the main export's channels, from a month's grid file (``RunLayout.month_grid``).

    Args:
        grid_npz: a month's grid of the main export; every month holds the same depths (the gather checks).

    Returns:
        One depth (m) per exported channel, in channel order.

    Raises:
        ExportError: the file is missing or not a grid file.
        RealDataError: it lists no file.
    """
    grids = load_grids(Path(grid_npz))
    if not grids:
        raise RealDataError(f"{grid_npz} lists no exported file; delete it and run the export again.")
    return [float(depth) for depth in grids[0].depth_values]


def matching_depth_indices(nc_file: Path, depths_m: Sequence[float], variable: str = "thetao") -> list[int]:
    """Positions in ``nc_file``'s depth axis of the levels nearest to ``depths_m`` (within 2 % + 1 cm).

    Args:
        nc_file: a real file; its depth dimension is found by role (``depth``, ``deptht``, axis Z...).
        depths_m: the depths (m) wanted (the main export's levels, which the models are trained on).
        variable: the temperature variable whose depth axis counts (``export.variable``).

    Returns:
        One position per wanted depth.

    Raises:
        RealDataError: a depth has no level near it (or the file lacks ``variable``).
        FieldFileError: the variable's dimensions cannot be told apart.
    """
    with netCDF4.Dataset(nc_file) as ds:
        if variable not in ds.variables:
            raise RealDataError(f"{nc_file} has no variable '{variable}' (export.variable); it has "
                                f"{sorted(ds.variables)}.")
        attrs_of = {name: {k: var.getncattr(k) for k in var.ncattrs()} for name, var in ds.variables.items()}
        dim = axis_roles(ds.variables[variable].dimensions, nc_file, variable, attrs_of.get)["depth"]
        if dim not in ds.variables:
            raise RealDataError(f"{nc_file}: depth dimension '{dim}' has no coordinate variable (the depth of "
                                "each level); add one.")
        depth = ds.variables[dim]
        depth.set_auto_maskandscale(False)
        where = f"{nc_file}, variable '{dim}'"
        axis = np.asarray(depth_below_surface_m(decode_values(np.asarray(depth[:]), attrs_of[dim], where),
                                                attrs_of[dim], where), float)
    positions = match_levels(axis, depths_m)
    for wanted, position in zip(depths_m, positions, strict=True):
        if position is None:
            raise RealDataError(
                f"{nc_file} has no level near {wanted:.2f} m (its levels: {np.round(axis, 2).tolist()}), a level "
                "of the run's export (export.depth_indices); the models cannot be scored on it. Export levels "
                "the real sample holds, or set evaluate.real_sample_dir to files that hold these levels."
            )
    return positions


def real_depth_indices(jobs: Sequence[FileJob], depths_m: Sequence[float], variable: str) -> list[int]:
    """The positions at which every file of a real month holds ``depths_m`` (one set: one export per month).

    Args:
        jobs: the month's files (``depthdif.export.read_manifest``).
        depths_m: the main export's depths (m).
        variable: ``export.variable``.

    Returns:
        One position per depth.

    Raises:
        RealDataError: a file lacks a level, or two files of the month hold the levels at different positions.
    """
    found = {job.path: matching_depth_indices(job.path, depths_m, variable) for job in jobs}
    distinct = {tuple(positions) for positions in found.values()}
    if len(distinct) != 1:
        listed = "; ".join(f"{path}: {positions}" for path, positions in found.items())
        raise RealDataError(
            f"the real files of one month hold the levels {list(depths_m)} m at different positions ({listed}); "
            "put files of one depth axis per month in evaluate.real_sample_dir."
        )
    return list(distinct.pop())


def export_real_month(
    export: Mapping,
    levels_npz: Path,
    manifest_csv: Path,
    raw_dir: Path,
    index_csv: Path,
    grid_npz: Path,
    patches_dir: Path,
    stale: Iterable[Path] = (),
) -> Path:
    """One month of the real sample's export, at the main export's levels found by value in its files.

    Args:
        export: ``real_export_params(config["export"])``, the rule's params.
        levels_npz: a month's grid file of the main export (``RunLayout.month_grid``): the depths to export.
        manifest_csv: the real month's manifest (``RunLayout.real_data.month_manifest``).
        raw_dir: ``{data_dir}/real/raw``.
        index_csv, grid_npz: the month's index rows and axes (``RunLayout.real_data.month_index/month_grid``).
        patches_dir: ``{data_dir}/real/patches``.
        stale: the real sample's gathered index and split index, removed first.

    Returns:
        ``index_csv``; its ``depth_indices`` column holds the positions in the real files.

    Raises:
        RealDataError: a real file lacks one of the levels (see ``real_depth_indices``).
        ExportError: as ``depthdif.export.export_month``.
    """
    depths = export_levels_m(levels_npz)
    jobs = read_manifest(Path(manifest_csv), raw_dir=Path(raw_dir))
    positions = real_depth_indices(jobs, depths, str(export["variable"]))
    log.info("real sample: levels %s m of the run's export are at positions %s of %s",
             [round(depth, 3) for depth in depths], positions, ", ".join(job.source_file for job in jobs))
    return export_month({**export, "depth_indices": positions}, manifest_csv, raw_dir, index_csv, grid_npz,
                        patches_dir, workers=1, stale=stale)


def mark_all_val(index_csv: Path, out_csv: Path) -> Path:
    """Every real patch is a val patch (the models never saw this ocean); each location its own window.

    Args:
        index_csv: the real sample's index (``export_real``'s gather).
        out_csv: the split index to write: the same rows, ``split`` = val, ``window_id`` = ``real_<y0>_<x0>``.

    Returns:
        ``out_csv``.
    """
    index = pd.read_csv(index_csv)
    index["split"] = "val"
    index["window_id"] = [f"real_{y}_{x}" for y, x in zip(index["y0"], index["x0"], strict=True)]
    atomic_to_csv(index, out_csv)
    return out_csv


def gather_real_index(indexes: Sequence[Path], grids: Sequence[Path], index_csv: Path, split_csv: Path) -> Path:
    """The real sample's index after the checks across months (``gather_index``), then its all-val split.

    Args:
        indexes, grids: the real months' parts (``export_real_month``).
        index_csv: ``{data_dir}/real/patches/patch_index_with_paths.csv``.
        split_csv: ``{data_dir}/real/patches/patch_index_split.csv`` (``mark_all_val``), written last.

    Returns:
        ``split_csv``.

    Raises:
        ExportError: as ``depthdif.export.gather_index`` (months of different levels or grids, no patch).
    """
    gather_index(indexes, grids, Path(index_csv), split_csv=Path(split_csv))
    return mark_all_val(Path(index_csv), Path(split_csv))


# --------------------------------------------------------------------------------------------- evaluation


def real_eval_config(settings: Mapping, index_csv: Path, data_dir: Path) -> dict:
    """The evaluation's config on the real sample: the rule's params pointed at the real data folder.

    ``run_evaluation`` reads the val patches from ``index_csv`` whatever the config says; the whole-region
    reconstruction (``reconstruct_month``) reads one real month from ``{data_dir}/raw`` at
    ``export.depth_indices``, which for the real files are the positions ``export_real_month`` found.

    Args:
        settings: ``stage_params(config, "evaluate_real")``, the rule's params.
        index_csv: the real sample's split index (its ``depth_indices`` column).
        data_dir: the real sample's data folder (``RunLayout.real_data.data_dir``).

    Returns:
        A copy of ``settings`` with ``data_dir`` and ``export.depth_indices`` replaced.

    Raises:
        RealDataError: the real months hold the levels at different positions (one reconstruction reads
            one month by one set of positions).
    """
    positions = set(pd.read_csv(index_csv, usecols=["depth_indices"], dtype=str)["depth_indices"])
    if len(positions) != 1:
        raise RealDataError(
            f"{index_csv}: the real months hold the run's levels at different positions {sorted(positions)}; "
            "put files of one depth axis in evaluate.real_sample_dir."
        )
    config = copy.deepcopy(dict(settings))
    config["data_dir"] = str(data_dir)
    config["export"] = {**config["export"], "depth_indices": [int(v) for v in positions.pop().split(";")]}
    return config
