"""Security: no pickle is ever executed, credentials never reach any output, paths cannot escape.

Every pickle payload here is live (``test_the_pickle_payload_is_live`` proves it runs when loaded the
unsafe way); what it does is create a marker file, and each test asserts that the marker never appears.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path

import copernicusmarine
import numpy as np
import pandas as pd
import pytest
import torch
from fakes import FakeCopernicusClient, write_cmems_month
from patch_factory import small_config, write_patch_set

from depthdif import cli, glorys
from depthdif.baselines import load_history
from depthdif.config import ConfigError, load_config, validate_config
from depthdif.data.dataset import PatchDataset
from depthdif.data.index import PatchFileError, load_patch
from depthdif.download import DownloadError, run_download
from depthdif.export import ExportError, export_patches
from depthdif.models.module import CheckpointError, load_model
from depthdif.sources import copernicus as cop
from depthdif.split import split_index
from depthdif.train import resumable_checkpoint

USERNAME, PASSWORD = "mallory-depthdif-user", "Pa55w0rd-must-never-leak"


class Payload:
    """Unpickling this runs ``exec``: the classic code-execution pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def write_payload_checkpoint(path: Path, marker: Path, *, wrapped: bool) -> Path:
    """A .ckpt whose unpickling runs code; ``wrapped`` hides it inside a model.ckpt-shaped dict."""
    payload = Payload(marker)
    obj = (
        {"format_version": 1, "variant": "temp_v1", "num_bands": 1, "state_dict": {"w": payload}}
        if wrapped
        else payload
    )
    torch.save(obj, path)
    return path


# --------------------------------------------------------------------------------------- checkpoints


def test_the_pickle_payload_is_live(tmp_path):
    marker = tmp_path / "marker"
    path = write_payload_checkpoint(tmp_path / "evil.ckpt", marker, wrapped=False)
    torch.load(path, weights_only=False)  # the unsafe way: runs the payload
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "inside-a-model-dict"])
def test_model_loader_rejects_a_pickle_payload_without_running_it(tmp_path, wrapped):
    marker = tmp_path / "marker"
    path = write_payload_checkpoint(tmp_path / "model.ckpt", marker, wrapped=wrapped)
    with pytest.raises(CheckpointError, match="weights_only=True") as caught:
        load_model(path)
    assert str(path) in str(caught.value)
    assert not marker.exists()


def test_reconstruct_cli_rejects_a_pickle_checkpoint_and_writes_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    checkpoint = write_payload_checkpoint(tmp_path / "model.ckpt", marker, wrapped=True)
    observations = write_cmems_month(tmp_path / "obs.nc", 2010, 1)
    output = tmp_path / "out.nc"
    assert cli.main(["reconstruct", str(checkpoint), str(observations), str(output)]) == 1
    assert "weights_only" in capsys.readouterr().err
    assert not marker.exists() and not output.exists()


def test_resuming_training_never_unpickles_a_planted_last_checkpoint(tmp_path):
    marker = tmp_path / "marker"
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    write_payload_checkpoint(last, marker, wrapped=True)
    with contextlib.suppress(Exception):  # refusing loudly is fine too; only running the payload is not
        resumable_checkpoint(last)
    assert not marker.exists()


def test_patch_files_are_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    csv = write_patch_set(tmp_path, size=16)
    frame = pd.read_csv(csv)
    evil = np.empty((4, 16, 16), dtype=object)
    evil[0, 0, 0] = Payload(marker)
    np.save(csv.parent / frame["y_npy_path"][0], evil, allow_pickle=True)

    dataset = PatchDataset(csv, small_config(tmp_path), "all", "temp_v1")
    with pytest.raises(PatchFileError, match="not a readable .npy"):
        dataset[0]
    with pytest.raises(PatchFileError):
        load_patch(frame.iloc[0], csv.parent)
    with pytest.raises(ValueError):
        load_history(frame.iloc[[0]], 0, csv.parent)
    assert not marker.exists()


# --------------------------------------------------------------------------------------- credentials


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Fake credentials in the environment; the real toolbox and any connection fail the test."""

    def refuse(*args, **kwargs):
        pytest.fail("a test reached the real copernicusmarine toolbox")

    for name in ("get", "subset", "login", "describe", "open_dataset"):
        monkeypatch.setattr(copernicusmarine, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("a test opened a connection"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(cop.CREDENTIALS_DIR_ENV, raising=False)
    monkeypatch.setenv(cop.USERNAME_ENV, USERNAME)
    monkeypatch.setenv(cop.PASSWORD_ENV, PASSWORD)


def test_credentials_never_reach_logs_configs_manifests_or_outputs(tmp_path, offline, capfd, caplog):
    log_file = tmp_path / "logs" / "run.log"
    log_file.parent.mkdir()
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    package_log = logging.getLogger("depthdif")
    package_log.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    config = load_config(
        [],
        {
            "data_dir": str(tmp_path / "data"),
            "variants": ["temp_v1"],
            "source": {"kind": "copernicus", "years": [2010], "months": [1, 2],
                       "copernicus": {"bbox": {"lon_min": -110.0, "lon_max": -108.0, "lat_min": 20.0, "lat_max": 22.0}}},
            "export": {"patch_size": 8, "stride": 8, "depth_indices": [0, 1, 2, 3], "workers": 1},
            "split": {"window_tiles": 1},
        },
    )  # fmt: skip
    try:
        client = FakeCopernicusClient()
        manifest = run_download(config, client=client)
        index = export_patches(config, manifest)
        split = split_index(config, index)
        # a failing call whose error text carries the secrets, as some HTTP errors do
        leaky = FakeCopernicusClient(failure="raise", error_message=f"401 for {USERNAME}:{PASSWORD}@auth")
        retry = load_config([], {**config, "data_dir": str(tmp_path / "data_failed")})
        with pytest.raises(DownloadError) as caught:
            run_download(retry, client=leaky)
    finally:
        package_log.removeHandler(handler)
        handler.close()

    assert client.downloads() and len(pd.read_csv(split)) > 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {manifest, index, split, log_file} <= set(files) and any(p.suffix == ".npy" for p in files)
    assert log_file.stat().st_size > 0
    captured = capfd.readouterr()
    texts = {str(p): p.read_bytes() for p in files}
    texts["stdout"], texts["stderr"] = captured.out.encode(), captured.err.encode()
    texts["caplog"] = caplog.text.encode()
    texts["config"] = repr(config).encode()
    texts["error"] = f"{caught.value!s} {caught.value!r} {caught.value.__cause__!r}".encode()
    for secret in (USERNAME, PASSWORD):
        leaks = [name for name, blob in texts.items() if secret.encode() in blob]
        assert leaks == [], f"{secret} found in {leaks}"
    assert b"***" in texts["error"]  # scrubbed, not dropped


# --------------------------------------------------------------------------------------------- paths


@pytest.mark.parametrize("escape", ["../outside/{name}", "{absolute}"], ids=["dot-dot", "absolute"])
def test_manifest_entries_cannot_escape_the_raw_folder(tmp_path, escape):
    outside = tmp_path / "data" / "outside"
    outside.mkdir(parents=True)
    name = glorys.file_name(2010, 1)
    write_cmems_month(outside / name, 2010, 1, lat=20.0 + np.arange(16) / 12, lon=-110.0 + np.arange(16) / 12)
    raw = tmp_path / "data" / "raw"
    raw.mkdir()
    entry = escape.format(name=name, absolute=outside / name)
    pd.DataFrame([{"file": entry, "bytes": 1, "sha256": "0", "date": 20100115}]).to_csv(
        raw / "manifest.csv", index=False
    )
    config = validate_config({"data_dir": str(tmp_path / "data"), "variants": ["temp_v1"],
                              "export": {"patch_size": 8, "stride": 8, "depth_indices": [0], "workers": 1}})  # fmt: skip
    with pytest.raises(ExportError, match="outside"):
        export_patches(config, raw / "manifest.csv")
    assert not (tmp_path / "data" / "patches" / "patch_index_with_paths.csv").exists()


def test_climatology_history_cannot_read_outside_the_index_folder(tmp_path):
    csv = write_patch_set(tmp_path / "data", size=16)
    secret = tmp_path / "secret"
    secret.mkdir()
    np.save(secret / "x.npy", np.zeros((4, 16, 16), dtype=np.float32))
    frame = pd.read_csv(csv)
    frame.loc[0, "y_npy_path"] = "../../secret/x.npy"
    assert (csv.parent / frame.loc[0, "y_npy_path"]).resolve() == (secret / "x.npy").resolve()
    with pytest.raises(ValueError, match="outside"):
        load_history(frame.iloc[[0]], 0, csv.parent)


@pytest.mark.parametrize("variant", ["../../etc", "temp_v1/../../x", "/tmp/x"])
def test_config_and_cli_names_that_become_paths_are_closed_lists(tmp_path, variant):
    with pytest.raises(ConfigError, match="variants"):
        load_config([], {"variants": [variant]})
    with pytest.raises(ConfigError, match="dataset.dataset_variant"):
        load_config([], {"dataset": {"dataset_variant": variant}})
    with pytest.raises(SystemExit) as caught:  # results_dir/<variant>/ for train and evaluate
        cli.main(["train", variant])
    assert caught.value.code == 2
