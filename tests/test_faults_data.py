"""Fault matrix, data side: bad NetCDF, land-only tiles, bad index CSVs, bad configs, a killed export.

Every case asserts the outcome (a clear error naming the file/key and the problem, or a correct recovery)
AND that nothing is lost or half-written: no index CSV that looks finished, raw files untouched, no
temporary files left behind, and a rerun after the fault gives an index that matches the files on disk.
Cases already proven elsewhere are listed, with their tests, in docs/guarantees.md.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from fakes import write_cmems_month
from patch_factory import small_config, write_patch_set

from depthdif import cli, glorys
from depthdif.atomic import atomic_path, atomic_to_csv
from depthdif.config import validate_config
from depthdif.data.datamodule import DepthDifDataModule
from depthdif.data.dataset import PatchDataset
from depthdif.data.index import PatchFileError, PatchIndexError
from depthdif.export import INDEX_NAME, NPY_DIR, ExportError, export_patches
from depthdif.layout import RunLayout, month_tag
from depthdif.reconstruction.tiling import tile_fractions, tile_origins
from depthdif.split import SplitError, split_index

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLE = REPO / "tests" / "data" / "glorys12_nwmexico"
SIZE = 16
GRID = 48  # 3 x 3 tiles of 16 px; write_cmems_month makes the first third of rows and columns land
LAT = 20.0 + np.arange(GRID) / 12.0
LON = -110.0 + np.arange(GRID) / 12.0
JAN, FEB = glorys.file_name(2010, 1), glorys.file_name(2010, 2)


# ------------------------------------------------------------------------------------------- helpers


def is_temp_name(name: str) -> bool:
    """Names a writer uses before a file is complete (atomic_path, download staging, editors' partials)."""
    return ".tmp" in name or name.startswith(".incoming-") or name.endswith((".part", ".partial", "~"))


def temp_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if is_temp_name(p.name))


def digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def write_manifest(raw: Path, names: list[str]) -> Path:
    rows = [
        {
            "file": name,
            "bytes": (raw / name).stat().st_size,
            "sha256": hashlib.sha256((raw / name).read_bytes()).hexdigest(),
            "date": glorys.date_of_file(name),
        }
        for name in sorted(names)
    ]
    manifest = raw / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def make_raw(tmp_path: Path) -> tuple[Path, Path]:
    """Two small CMEMS-layout months (48 x 48, 4 levels, a land corner) and their manifest."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    for month, name in ((1, JAN), (2, FEB)):
        write_cmems_month(raw / name, 2010, month, lat=LAT, lon=LON)
    return raw, write_manifest(raw, [JAN, FEB])


def export_config(tmp_path: Path, **export) -> dict:
    settings = {
        "patch_size": SIZE,
        "stride": SIZE,
        "depth_indices": [0, 3],
        "max_nodata_fraction": 1.0,
        **export,
    }
    return validate_config({"data_dir": str(tmp_path / "data"), "export": settings, "variants": ["temp_v1"]})


def assert_index_matches_disk(index_csv: Path, channels: int, size: int) -> pd.DataFrame:
    """Every listed .npy exists and is a complete (C, H, W) float32 patch; no unlisted .npy; no temp file."""
    index = pd.read_csv(index_csv)
    assert index["sample_id"].is_unique
    listed = {Path(p).name for p in index["y_npy_path"]}
    on_disk = {p.name for p in (index_csv.parent / NPY_DIR).iterdir()}
    assert on_disk == listed, (sorted(on_disk - listed)[:5], sorted(listed - on_disk)[:5])
    for relative in index["y_npy_path"]:
        patch = np.load(index_csv.parent / relative, allow_pickle=False)
        assert patch.shape == (channels, size, size) and patch.dtype == np.float32
    assert temp_files(index_csv.parent) == []
    return index


# --------------------------------------------------------------------------------- NetCDF fault matrix


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _not_netcdf(path: Path) -> None:
    path.write_text("<html>502 Bad Gateway</html>\n")  # what a proxy error page saved as .nc looks like


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _other_variable(path: Path) -> None:
    path.unlink()
    write_cmems_month(path, 2010, 2, lat=LAT, lon=LON, variables=("so",))


def _rewrite(path: Path, change: Callable[[xr.Dataset], xr.Dataset]) -> None:
    """Rewrite with xarray without decoding (int16 packing and attributes kept as they are)."""
    with xr.open_dataset(path, decode_cf=False) as ds:
        changed = change(ds.load())
    path.unlink()
    changed.to_netcdf(path)


def _depth_renamed(path: Path) -> None:
    """Neither named nor marked as depth (a standard_name or axis Z would make "level" a depth axis)."""

    def rename(ds):
        ds = ds.rename({"depth": "level"})
        ds["level"].attrs = {k: v for k, v in ds["level"].attrs.items() if k not in ("axis", "standard_name")}
        return ds

    _rewrite(path, rename)


def _no_depth_axis(path: Path) -> None:
    _rewrite(path, lambda ds: ds.assign(thetao=ds["thetao"].isel(depth=0, drop=True)).drop_vars("depth"))


NETCDF_FAULTS = [
    pytest.param(_truncate, {}, "truncated or corrupt", id="truncated"),
    pytest.param(_not_netcdf, {}, "truncated or corrupt", id="not-netcdf"),
    pytest.param(_empty, {}, "truncated or corrupt", id="empty-file"),
    pytest.param(_other_variable, {}, r"variable 'thetao' not found .*'so'", id="missing-variable"),
    pytest.param(
        _depth_renamed, {}, r"has dims \('time', 'level', 'latitude', 'longitude'\)", id="wrong-dims"
    ),
    pytest.param(_no_depth_axis, {}, r"has dims \('time', 'latitude', 'longitude'\)", id="no-depth-axis"),
    pytest.param(
        None, {"depth_indices": [0, 9]}, r"\[9\] out of range: .* 4 levels", id="depth-out-of-range"
    ),
]


@pytest.mark.parametrize(("damage", "export", "problem"), NETCDF_FAULTS)
def test_bad_netcdf_is_named_nothing_half_written_and_the_fixed_rerun_matches_disk(
    tmp_path, damage, export, problem
):
    raw, manifest = make_raw(tmp_path)
    earlier = export_patches(export_config(tmp_path), manifest, workers=1)  # a finished earlier run
    assert earlier.is_file()
    if damage is not None:
        damage(raw / FEB)
    raw_before = digests(raw)

    with pytest.raises(ExportError, match=problem) as caught:
        export_patches(export_config(tmp_path, **export), manifest, workers=1)

    message = str(caught.value)
    assert (FEB if damage is not None else "mercatorglorys12v1_gl12_mean_2010") in message
    if damage is not None:
        assert "rerun the download" in message or "export.variable" in message or "expected" in message
    assert not earlier.exists()  # the old index must not pass for the result of this failed run
    assert digests(raw) == raw_before  # the export never touches its inputs
    assert temp_files(tmp_path) == []

    # recovery: once the input is right again, a rerun finishes and its index matches the disk
    if damage is not None:
        (raw / FEB).unlink()
        write_cmems_month(raw / FEB, 2010, 2, lat=LAT, lon=LON)
    index = assert_index_matches_disk(export_patches(export_config(tmp_path), manifest, workers=1), 2, SIZE)
    assert set(index["source_file"]) == {JAN, FEB}


def test_file_without_time_dimension_exports_the_same_patches(tmp_path):
    raw, manifest = make_raw(tmp_path)
    with_time = export_patches(export_config(tmp_path), manifest, out_dir=tmp_path / "with_time", workers=1)
    _rewrite(raw / FEB, lambda ds: ds.isel(time=0, drop=True))
    _rewrite(raw / JAN, lambda ds: ds.isel(time=0, drop=True))
    with netCDF4.Dataset(raw / FEB) as ds:
        assert ds["thetao"].dimensions == ("depth", "latitude", "longitude")

    without = export_patches(export_config(tmp_path), manifest, out_dir=tmp_path / "no_time", workers=1)

    assert without.read_bytes() == with_time.read_bytes()
    for relative in pd.read_csv(without)["y_npy_path"]:
        np.testing.assert_array_equal(
            np.load(without.parent / relative), np.load(with_time.parent / relative)
        )


# -------------------------------------------------------------------------------- tiles and months


def test_all_land_tile_is_dropped_even_when_every_no_data_share_is_allowed(tmp_path):
    raw, manifest = make_raw(tmp_path)
    index = pd.read_csv(export_patches(export_config(tmp_path, max_nodata_fraction=1.0), manifest, workers=1))

    with netCDF4.Dataset(raw / JAN) as ds:
        nodata = np.ma.getmaskarray(ds["thetao"][0, [0, 3]]).any(axis=0)
    origins = tile_origins(nodata.shape, SIZE, SIZE)
    fractions = tile_fractions(nodata, origins, SIZE)
    all_land = {o for o, f in zip(origins, fractions, strict=True) if f == 1.0}
    assert all_land == {(0, 0)}  # the land corner of the fake files fills exactly the first tile
    for name in (JAN, FEB):
        kept = set(zip(*(index.loc[index["source_file"] == name, c] for c in ("y0", "x0")), strict=True))
        assert kept == set(origins) - all_land
    assert (index["nodata_fraction"] < 1.0).all()
    assert_index_matches_disk(raw.parent / "patches" / INDEX_NAME, 2, SIZE)


# ---------------------------------------------------------------------------------- index CSV faults


@pytest.fixture
def split_csv(tmp_path) -> Path:
    return write_patch_set(tmp_path, size=SIZE)


def _duplicate_first_train_row(csv: Path) -> str:
    frame = pd.read_csv(csv)
    first = frame[frame["split"] == "train"].iloc[[0]]
    pd.concat([frame, first], ignore_index=True).to_csv(csv, index=False)
    return str(first["sample_id"].iloc[0])


def test_duplicated_sample_id_in_the_split_index_is_refused_by_the_dataset(split_csv, tmp_path):
    duplicated = _duplicate_first_train_row(split_csv)
    with pytest.raises(PatchIndexError, match=duplicated):
        PatchDataset(split_csv, small_config(tmp_path), "train", "temp_v1")


def test_duplicated_sample_id_in_the_export_index_is_refused_by_the_split(split_csv, tmp_path):
    duplicated = _duplicate_first_train_row(split_csv)
    out = tmp_path / "split.csv"
    config = validate_config({"export": {"patch_size": SIZE, "stride": SIZE}, "variants": ["temp_v1"]})
    with pytest.raises(SplitError, match=duplicated):
        split_index(config, split_csv, out)
    assert not out.exists()


def test_missing_row_file_stops_the_loader_with_the_row_and_file_named(split_csv, tmp_path):
    """Through a DataLoader worker process, so the error is not swallowed or reduced to 'worker died'."""
    frame = pd.read_csv(split_csv)
    missing = frame[frame["split"] == "train"].iloc[0]
    (split_csv.parent / missing["y_npy_path"]).unlink()
    config = small_config(tmp_path)
    config["loader"].update(num_workers=1, batch_size=64)
    loader = DepthDifDataModule(config, "eo_4band", index_csv=split_csv).train_dataloader()
    with pytest.raises(PatchFileError, match=rf"sample_id {missing['sample_id']}.*does not exist"):
        next(iter(loader))


@pytest.mark.parametrize(
    "escaping",
    ["../../etc/passwd", "/etc/passwd", "y_npy/../../outside.npy", "y_npy/../../../patches_evil/x.npy"],
)
def test_index_path_escaping_the_data_folder_is_refused_before_reading(split_csv, tmp_path, escaping):
    frame = pd.read_csv(split_csv)
    frame.loc[0, "y_npy_path"] = escaping
    frame.to_csv(split_csv, index=False)
    with pytest.raises(PatchFileError, match="outside the index folder"):
        PatchDataset(split_csv, small_config(tmp_path), "all", "temp_v1")


# ------------------------------------------------------------------------------------- config faults


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"export": {"patch_size": 32, "patch_sise": 32}}, "export.patch_sise"),
        ({"export": {"stride": "32"}}, "export.stride"),
        ({"export": {"patch_size": -32, "stride": 1}}, "export.patch_size"),
        ({"dataset": {"mask_fraction": 1.5}}, "dataset.mask_fraction"),
        ({"dataset": {"mask_fraction": -0.05}}, "dataset.mask_fraction"),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "negative-patch-size",
        "mask-fraction-above-1",
        "mask-fraction-below-0",
    ],
)
@pytest.mark.parametrize("command", ["download", "export", "split"])
def test_bad_config_stops_every_stage_before_it_writes_anything(tmp_path, capsys, section, needle, command):
    data_dir = tmp_path / "data"
    config_file = tmp_path / "bad.yaml"
    config_file.write_text(yaml.safe_dump({"data_dir": str(data_dir), **section}))
    assert cli.main([command, "-c", str(config_file)]) == 2
    assert needle in capsys.readouterr().err
    assert not data_dir.exists()
    assert list(tmp_path.iterdir()) == [config_file]


# ------------------------------------------------------------------------------ killed export, rerun


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the export ended (rc {proc.returncode}) before it could be killed; use more data")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the export wrote too little in {timeout_s} s to be killed mid-way")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _count_npy(folder: Path) -> int:
    try:
        return sum(1 for entry in os.scandir(folder) if entry.name.endswith(".npy"))
    except FileNotFoundError:
        return 0


def test_export_killed_mid_way_then_rerun_gives_an_index_matching_the_disk(tmp_path):
    months = 6  # copies of the real sample: ~1,000 small patches each, a few seconds in all
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    names = [glorys.file_name(2011, m) for m in range(1, months + 1)]
    for name in names:
        (raw / name).write_bytes((REAL_SAMPLE / glorys.file_name(2010, 11)).read_bytes())
    manifest = write_manifest(raw, names)
    export = {"patch_size": 8, "stride": 4, "depth_indices": [0, 1], "max_nodata_fraction": 1.0, "workers": 1}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "export": export,
                                           "variants": ["temp_v1"]}))  # fmt: skip
    with netCDF4.Dataset(raw / names[0]) as ds:
        nodata = np.ma.getmaskarray(ds["thetao"][0, [0, 1]]).any(axis=0)
    origins = tile_origins(nodata.shape, 8, 4)
    per_month = int((tile_fractions(nodata, origins, 8) < 1.0).sum())
    patches = tmp_path / "data" / "patches"

    proc = subprocess.Popen(
        [sys.executable, "-m", "depthdif.cli", "export", "-c", str(config_file)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # kill in the middle of the second month: some files done, one half-done, the rest not started
    _kill_when(proc, lambda: _count_npy(patches / NPY_DIR) >= per_month * 3 // 2, timeout_s=120)

    assert proc.returncode == -signal.SIGKILL
    assert not (patches / INDEX_NAME).exists()  # nothing that looks finished
    assert 0 < _count_npy(patches / NPY_DIR) < months * per_month

    index = assert_index_matches_disk(export_patches(validate_config(yaml.safe_load(config_file.read_text())),
                                                     manifest, workers=1), 2, 8)  # fmt: skip
    assert len(index) == months * per_month
    assert sorted(index["source_file"].unique()) == names


def test_temp_files_of_a_killed_run_are_gone_after_the_rerun(tmp_path):
    config = validate_config(
        {"data_dir": str(tmp_path / "data"), "variants": ["temp_v1"],
         "source": {"years": [2010], "months": [1],
                    "synthetic": {"region": {"lon_min": -120.0, "lon_max": -116.0, "lat_min": 20.0, "lat_max": 24.0}}},
         "export": {"patch_size": 16, "stride": 16, "depth_indices": [0, 7], "workers": 1},
         "split": {"window_tiles": 1}}
    )  # fmt: skip
    raw, patches = tmp_path / "data" / "raw", tmp_path / "data" / "patches"
    leftovers = [
        raw / ".manifest.k1ll3d.tmp.csv",
        raw / f".{Path(JAN).stem}.k1ll3d.tmp.nc",
        patches / ".patch_index_with_paths.k1ll3d.tmp.csv",
        patches / ".patch_index_split.k1ll3d.tmp.csv",
        patches / NPY_DIR / ".201001_0_0.k1ll3d.tmp.npy",
    ]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written by a run that was killed")
    from depthdif.download import run_download

    split_index(config, export_patches(config, run_download(config), workers=1))
    assert temp_files(tmp_path / "data") == []


# ----------------------------------------------------------------------------------- atomic outputs


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replacing"])
def test_crash_inside_atomic_path_leaves_no_target_and_no_temp(tmp_path, error, existing):
    target = tmp_path / "patches" / "patch_index_with_paths.csv"
    if existing:
        target.parent.mkdir()
        target.write_text("sample_id\nfrom-a-finished-run\n")
    with pytest.raises(type(error)), atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target  # same folder: the rename is atomic
        tmp.write_text("sample_id\nhalf of the new con")
        raise error
    assert list(target.parent.iterdir()) == ([target] if existing else [])
    if existing:  # the finished file of the earlier run is untouched
        assert target.read_text() == "sample_id\nfrom-a-finished-run\n"


def test_writer_failing_half_way_through_atomic_to_csv_leaves_nothing(tmp_path, monkeypatch):
    def half_then_fail(self, path, **kwargs):
        Path(path).write_text(",".join(self.columns) + "\n")
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    with pytest.raises(OSError, match="Input/output"):
        atomic_to_csv(pd.DataFrame({"a": [1, 2]}), tmp_path / "index.csv")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_during_export_leaves_no_index_and_no_temp_files(tmp_path, monkeypatch):
    _, manifest = make_raw(tmp_path)
    real_write_bytes, calls = Path.write_bytes, []

    def fill_up(self, data):
        calls.append(self)
        if len(calls) > 5:  # a few patches fit, then the disk is full half-way through a file
            real_write_bytes(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", fill_up)
    with pytest.raises(OSError, match="No space left"):
        export_patches(export_config(tmp_path), manifest, workers=1)
    patches = tmp_path / "data" / "patches"
    assert not (patches / INDEX_NAME).exists()
    assert temp_files(tmp_path) == []
    for npy in (patches / NPY_DIR).iterdir():  # what is there under a final name is complete
        assert np.load(npy).shape == (2, SIZE, SIZE)

    monkeypatch.setattr(Path, "write_bytes", real_write_bytes)
    assert_index_matches_disk(export_patches(export_config(tmp_path), manifest, workers=1), 2, SIZE)


def test_end_to_end_data_run_leaves_only_finished_files_and_writes_each_index_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    args = ["-c", str(REPO / "tests" / "configs" / "tiny.yaml"), "--set", f"data_dir={data}",
            "--set", "source.years=[2010, 2011]", "--set", "source.months=[1]"]  # fmt: skip
    for command in ("download", "export", "split"):
        assert cli.main([command, *args]) == 0, command

    raw, patches = data / "raw", data / "patches"
    manifest, index_csv, split_csv = (
        raw / "manifest.csv",
        patches / INDEX_NAME,
        patches / "patch_index_split.csv",
    )
    raw_files = [raw / name for name in pd.read_csv(manifest)["file"]]
    npy_files = [patches / relative for relative in pd.read_csv(index_csv)["y_npy_path"]]
    layout = RunLayout(data, tmp_path / "results")
    months = [month_tag(date // 10000, date // 100 % 100) for date in pd.read_csv(manifest)["date"]]
    parts = [part for month in months for part in (layout.month_manifest(month), layout.month_digests(month),
                                                   layout.month_index(month), layout.month_grid(month))]
    expected = {manifest, index_csv, split_csv, *raw_files, *npy_files, *parts}
    written = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert temp_files(tmp_path) == []
    assert written == expected  # every file is a contract output, listed where it should be
    assert len(raw_files) == 2 and len(npy_files) > 0

    def mtime(path: Path) -> int:
        return path.stat().st_mtime_ns

    assert mtime(manifest) >= max(map(mtime, raw_files))  # each stage's index is written last
    assert mtime(index_csv) >= max(map(mtime, npy_files))
    assert mtime(split_csv) >= mtime(index_csv)
