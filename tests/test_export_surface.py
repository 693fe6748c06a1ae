"""Surface fields (export.surface_variables, e.g. zos) exported beside the temperature patches (issue 14, item 3).

Real runs of the export on small synthetic months (depthdif.sources.synthetic writes thetao and zos) and on the
real GLORYS12 sample of tests/data; no network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from depthdif.config import ConfigError, load_config, validate_config
from depthdif.data.index import resolve_patch_path
from depthdif.download import DownloadError, download_settings, write_manifest, write_month_manifest
from depthdif.evaluation.real_sample import (
    download_real_month,
    export_real_month,
    gather_real_index,
    real_download_settings,
    real_export_params,
)
from depthdif.export import (
    COLUMNS,
    SURFACE_NPY_DIR,
    ExportError,
    export_month,
    export_params,
    export_patches,
    gather_index,
    read_surface,
)
from depthdif.glorys import date_of_file, file_name
from depthdif.layout import layout_of
from depthdif.sources.local import check_local_files, local_months
from depthdif.sources.synthetic import write_synthetic_month
from depthdif.split import split_index

SIZE = 12
LEVELS = [0, 7, 14]
REGION = {"lon_min": -120.0, "lon_max": -116.0, "lat_min": 20.0, "lat_max": 23.0}  # 36 x 48 cells, coast
MONTHS = ((2010, 1), (2010, 7))
SAMPLE = Path(__file__).parent / "data" / "glorys12_nwmexico"


def config_for(tmp_path: Path, **export) -> dict:
    settings = {"patch_size": SIZE, "stride": SIZE, "depth_indices": LEVELS, "max_nodata_fraction": 0.9,
                "surface_variables": ["zos"], **export}
    return validate_config({
        "data_dir": str(tmp_path / "data"), "export": settings, "variants": ["temp_v1"],
        "source": {"kind": "synthetic", "synthetic": {"region": REGION}}, "split": {"window_tiles": 1},
    })


@pytest.fixture(scope="module")
def synthetic_months(tmp_path_factory) -> Path:
    """Two synthetic months (thetao + zos), written once for the module."""
    folder = tmp_path_factory.mktemp("synthetic")
    config = config_for(folder)
    for year, month in MONTHS:
        write_synthetic_month(config, year, month, folder / file_name(year, month))
    return folder


def make_raw(tmp_path: Path, source: Path, change=None) -> tuple[Path, Path]:
    """Copy the months into ``{tmp_path}/data/raw`` (the first changed by ``change(ds) -> ds``), + manifest."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in source.glob("*.nc"))
    for i, name in enumerate(names):
        if change is not None and i == 0:
            with xr.open_dataset(source / name) as ds:
                change(ds.load()).to_netcdf(raw / name)
        else:
            shutil.copy(source / name, raw / name)
    return raw, write_manifest(raw, {name: date_of_file(name) for name in names})


def read_index(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"surface_npy_path": str}, keep_default_na=False)


def reference_zos(path: Path) -> np.ndarray:
    """zos read independently: netCDF4's auto mask/scale, NaN for no data, (H, W)."""
    with netCDF4.Dataset(path) as ds:
        return np.ma.filled(ds.variables["zos"][:].astype(np.float64), np.nan)[0]


def check_surface(index_csv: Path, raw: Path, size: int = SIZE) -> pd.DataFrame:
    """Every surface patch equals the file's zos at the patch's rows/cols, NaN where the file has no data."""
    index = read_index(index_csv)
    assert list(index.columns) == COLUMNS
    refs = {name: reference_zos(raw / name) for name in index["source_file"].unique()}
    for row in index.itertuples():
        assert (row.surface_variables, row.surface_units) == ("zos", "m")
        assert row.surface_npy_path == f"{SURFACE_NPY_DIR}/{row.sample_id}.npy"
        path = resolve_patch_path(index_csv.parent, row.surface_npy_path, row.Index)  # as y_npy_path resolves
        patch = np.load(path)
        assert patch.dtype == np.float32 and patch.shape == (1, size, size)
        window = refs[row.source_file][row.y0 : row.y0 + size, row.x0 : row.x0 + size]
        np.testing.assert_array_equal(patch[0], window.astype(np.float32))  # NaN at the same cells
    on_disk = sorted(p.name for p in (index_csv.parent / SURFACE_NPY_DIR).iterdir())
    assert on_disk == sorted(Path(p).name for p in index["surface_npy_path"])
    return index


# ---------------------------------------------------------------------------------------------- tests


def test_surface_patches_equal_the_files_zos_in_metres_with_nan_on_land(tmp_path, synthetic_months):
    raw, manifest = make_raw(tmp_path, synthetic_months)
    index = check_surface(export_patches(config_for(tmp_path), manifest, workers=1), raw)
    assert len(index) > 4
    patches = [np.load(tmp_path / "data" / "patches" / p) for p in index["surface_npy_path"]]
    assert any(np.isnan(p).any() for p in patches), "the coast: some patch has land in zos"
    assert all(np.isfinite(p).any() for p in patches)
    # metres, as the file stores them (no conversion): sea level of a few decimetres
    values = np.concatenate([p[np.isfinite(p)] for p in patches])
    assert np.abs(values).max() < 3.0


def test_the_real_glorys_sample_exports_its_zos(tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    names = sorted(p.name for p in SAMPLE.glob("*.nc"))
    for name in names:
        shutil.copy(SAMPLE / name, raw / name)
    manifest = write_manifest(raw, {name: date_of_file(name) for name in names})
    config = config_for(tmp_path, depth_indices=[0, 2], patch_size=32, stride=32, max_nodata_fraction=0.5)
    index = check_surface(export_patches(config, manifest, workers=1), raw, size=32)
    assert len(index) and set(index["date"] // 100) == {201011, 201012}


def test_the_real_sample_stages_export_zos_at_the_main_exports_settings(tmp_path, synthetic_months):
    """download_real_month, export_real_month and export_real (as the DAG runs them) give the real patches
    their zos too: the rules' params carry export.surface_variables."""
    _, manifest = make_raw(tmp_path, synthetic_months)
    config = config_for(tmp_path)
    export_patches(config, manifest, workers=1)
    main, real = layout_of(config), layout_of(config).real_data
    levels = sorted(main.patches_dir.glob("months/*.grid.npz"))[0]
    months = local_months(SAMPLE, None)
    for tag, files in months.items():
        download_real_month(real_download_settings(config), int(tag[:4]), int(tag[4:]), files, real.raw_dir,
                            real.month_manifest(tag))
        export_real_month(real_export_params(config["export"]), levels, real.month_manifest(tag), real.raw_dir,
                          real.month_index(tag), real.month_grid(tag), real.patches_dir)
    split = gather_real_index([real.month_index(t) for t in months], [real.month_grid(t) for t in months],
                              real.patch_index, real.split_index)
    index = check_surface(real.patch_index, real.raw_dir)
    assert len(index) and set(index["source_file"]) == {p.name for p in SAMPLE.glob("*.nc")}
    assert (read_index(split)["surface_npy_path"] == index["surface_npy_path"]).all()


def test_month_parts_the_gather_and_the_split_carry_the_surface_columns(tmp_path, synthetic_months):
    raw, _ = make_raw(tmp_path, synthetic_months)
    config = config_for(tmp_path)
    layout = layout_of(config)
    tags = []
    for name in sorted(p.name for p in raw.glob("*.nc")):
        tag = name[-9:-3]
        tags.append(tag)
        month_manifest = write_month_manifest(raw, {name: date_of_file(name)}, layout.month_manifest(tag))
        export_month(export_params(config["export"]), month_manifest, raw, layout.month_index(tag),
                     layout.month_grid(tag), layout.patches_dir)
        month_rows = read_index(layout.month_index(tag))
        assert list(month_rows.columns) == COLUMNS
        assert set(month_rows["surface_npy_path"]) == {f"surface_npy/{s}.npy" for s in month_rows["sample_id"]}
    stale = layout.patches_dir / SURFACE_NPY_DIR / "199901_0_0.npy"
    stale.write_bytes(b"of an earlier export")
    gathered = gather_index([layout.month_index(t) for t in tags], [layout.month_grid(t) for t in tags],
                            layout.patch_index)
    index = check_surface(gathered, raw)
    assert not stale.exists()
    split = pd.read_csv(split_index(config, gathered), dtype=str, keep_default_na=False)
    assert {"surface_variables", "surface_units", "surface_npy_path"} <= set(split.columns)
    assert len(split) and (split["surface_units"] == "m").all()
    by_id = dict(zip(index["sample_id"], index["surface_npy_path"], strict=True))
    assert all(by_id[s] == p for s, p in zip(split["sample_id"], split["surface_npy_path"], strict=True))


def test_no_surface_variable_writes_no_folder_and_empty_columns_with_the_same_patches(tmp_path, synthetic_months):
    _, manifest = make_raw(tmp_path, synthetic_months)
    with_zos = read_index(export_patches(config_for(tmp_path), manifest, out_dir=tmp_path / "zos", workers=1))
    out = tmp_path / "data" / "patches"
    index = read_index(export_patches(config_for(tmp_path, surface_variables=[]), manifest, out_dir=out, workers=1))
    assert not (out / SURFACE_NPY_DIR).exists()
    for column in ("surface_variables", "surface_units", "surface_npy_path"):
        assert (index[column] == "").all()
    # the temperature stack alone decides which patches are kept: same rows, same y patches
    surface_columns = ["surface_variables", "surface_units", "surface_npy_path"]
    pd.testing.assert_frame_equal(index.drop(columns=surface_columns), with_zos.drop(columns=surface_columns))
    for name in index["y_npy_path"]:
        assert (out / name).read_bytes() == (tmp_path / "zos" / name).read_bytes()


def test_dropping_the_surface_variables_removes_their_files_and_a_rerun_is_identical(tmp_path, synthetic_months):
    _, manifest = make_raw(tmp_path, synthetic_months)
    first = export_patches(config_for(tmp_path), manifest, workers=1)
    first_bytes = first.read_bytes()
    surface_dir = first.parent / SURFACE_NPY_DIR
    (surface_dir / ".201001_0_0.x1y2.tmp.npy").write_bytes(b"left by a killed run")
    assert export_patches(config_for(tmp_path), manifest, workers=1).read_bytes() == first_bytes
    assert sorted(p.name for p in surface_dir.iterdir()) == sorted(f"{s}.npy" for s in read_index(first)["sample_id"])
    export_patches(config_for(tmp_path, surface_variables=[]), manifest, workers=1)
    assert not surface_dir.exists()


def test_a_file_without_the_surface_variable_is_a_clear_error(tmp_path, synthetic_months):
    raw, manifest = make_raw(tmp_path, synthetic_months, change=lambda ds: ds.drop_vars("zos"))
    name = sorted(p.name for p in raw.glob("*.nc"))[0]
    with pytest.raises(ExportError, match=f"{name}.*'zos' not found.*export.surface_variables"):
        export_patches(config_for(tmp_path), manifest, workers=1)
    assert not (tmp_path / "data" / "patches" / "patch_index_with_paths.csv").exists()
    # the download of a local folder says so first, naming the file and the key
    with pytest.raises(DownloadError, match=f"{name} has no surface variable \\['zos'\\] \\(export.surface_variables\\)"):
        check_local_files(raw, "thetao", surface_variables=["zos"])
    assert len(check_local_files(raw, "thetao")) == 2


def test_a_surface_variable_with_a_depth_axis_or_another_grid_is_refused(tmp_path, synthetic_months):
    path = sorted(synthetic_months.glob("*.nc"))[0]
    with pytest.raises(ExportError, match="depth axis"):
        read_surface(path, "thetao", "thetao")

    def shifted_grid(ds):
        lon = ds["longitude"].values + 0.5
        zos = xr.Variable(("time", "latitude", "lon_b"), ds["zos"].values, ds["zos"].attrs)
        return ds.assign(zos=zos).assign_coords(lon_b=("lon_b", lon, {"axis": "X", "units": "degrees_east"}))

    raw, _ = make_raw(tmp_path, synthetic_months, change=shifted_grid)
    moved = sorted(raw.glob("*.nc"))[0]
    with pytest.raises(ExportError, match="not on the grid of 'thetao': longitude"):
        read_surface(moved, "zos", "thetao")


def test_read_surface_decodes_like_netcdf4_in_the_files_units(synthetic_months):
    path = sorted(synthetic_months.glob("*.nc"))[0]
    field = read_surface(path, "zos", "thetao")
    assert field.data.dtype == np.float32 and field.units == "m"
    np.testing.assert_array_equal(field.data, reference_zos(path).astype(np.float32))
    with netCDF4.Dataset(path) as ds:
        np.testing.assert_array_equal(field.latitude, ds["latitude"][:])


def test_surface_variables_are_export_params_so_a_change_reruns_the_export(tmp_path):
    with_zos, without = config_for(tmp_path), config_for(tmp_path, surface_variables=[])
    assert export_params(with_zos["export"])["surface_variables"] == ["zos"]
    assert export_params(with_zos["export"]) != export_params(without["export"])
    assert real_export_params(with_zos["export"])["surface_variables"] == ["zos"]
    assert real_download_settings(with_zos)["export"] == {"variable": "thetao", "surface_variables": ["zos"]}
    # a download without surface fields keeps the params it had
    assert real_download_settings(without)["export"] == {"variable": "thetao"}
    local = {"kind": "local", "local_dir": str(tmp_path)}
    assert download_settings(load_config([], overrides={"source": local, "export": {"surface_variables": ["zos"]}})
                             )["export"] == {"variable": "thetao", "surface_variables": ["zos"]}


def test_a_copernicus_subset_must_ask_for_the_surface_variables(tmp_path):
    bbox = {"lon_min": -100.0, "lon_max": -95.0, "lat_min": 20.0, "lat_max": 25.0}
    source = {"kind": "copernicus", "copernicus": {"bbox": bbox, "variables": ["thetao"]}}
    with pytest.raises(ConfigError, match="source.copernicus.variables.*\\['zos'\\].*export.surface_variables"):
        load_config([], overrides={"source": source, "export": {"surface_variables": ["zos"]}})
    source["copernicus"]["variables"] = ["thetao", "zos"]
    load_config([], overrides={"source": source, "export": {"surface_variables": ["zos"]}})
    # whole files (get) hold every variable: the list is not checked
    load_config([], overrides={"source": {"kind": "copernicus"}, "export": {"surface_variables": ["zos"]}})


def test_the_shipped_configs_export_zos(repo_root):
    default = load_config([repo_root / "config" / "config.yaml"])
    glorys = load_config([repo_root / "config" / "config.yaml", repo_root / "config" / "glorys.yaml"])
    assert default["export"]["surface_variables"] == glorys["export"]["surface_variables"] == ["zos"]
    assert "zos" in glorys["source"]["copernicus"]["variables"]
