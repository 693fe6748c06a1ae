"""The download stage: manifest, synthetic resume, Copernicus (through a fake client) and local sources.

No test touches the network: an autouse fixture replaces the real toolbox functions and socket connects
with ones that fail the test, and points HOME at a temporary folder so real credentials are never seen.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import sys
import types
from pathlib import Path

import copernicusmarine
import netCDF4
import numpy as np
import pandas as pd
import pytest
from fakes import FakeCopernicusClient, write_cmems_month, write_credentials_file

from depthdif import glorys
from depthdif.config import ConfigError, load_config
from depthdif.download import (
    MANIFEST_COLUMNS,
    DownloadError,
    download_month,
    download_settings,
    gather_manifest,
    run_download,
    sha256_of,
)
from depthdif.layout import layout_of, month_tag
from depthdif.sources import copernicus as cop

USERNAME, PASSWORD = "jdoe-depthdif-user", "S3cr3t-Pa55-for-tests"
CRED_ENV = (cop.USERNAME_ENV, cop.PASSWORD_ENV, cop.CREDENTIALS_DIR_ENV, cop.TIMEOUT_ENV, cop.RETRIES_ENV)
BBOX = {"lon_min": -110.0, "lon_max": -109.5, "lat_min": 20.0, "lat_max": 20.5}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Fail any test that reaches the real toolbox or the network; hide the user's real credentials."""

    def refuse(*args, **kwargs):
        pytest.fail("a test reached the real copernicusmarine toolbox")  # BaseException: not swallowed

    for name in ("get", "subset", "login", "describe", "open_dataset", "read_dataframe"):
        monkeypatch.setattr(copernicusmarine, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("a test opened a connection"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in CRED_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv(cop.USERNAME_ENV, USERNAME)
    monkeypatch.setenv(cop.PASSWORD_ENV, PASSWORD)


def make_config(tmp_path: Path, **source) -> dict:
    source = {"years": [2010], "months": [1, 2], **source}
    return load_config([], overrides={"data_dir": str(tmp_path / "data"), "source": source})


def raw_of(tmp_path: Path) -> Path:
    return tmp_path / "data" / "raw"


def copernicus_config(tmp_path: Path, **copernicus) -> dict:
    return make_config(tmp_path, kind="copernicus", copernicus=copernicus)


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# -- manifest and synthetic ------------------------------------------------------------------------


@pytest.fixture
def synthetic_writer(monkeypatch):
    """Replace depthdif.sources.synthetic by a tiny writer that records which months it was asked for."""
    asked = []

    def write_synthetic_month(config, year, month, path):
        asked.append((year, month))
        write_cmems_month(path, year, month)

    module = types.ModuleType("depthdif.sources.synthetic")
    module.write_synthetic_month = write_synthetic_month
    monkeypatch.setitem(sys.modules, "depthdif.sources.synthetic", module)
    return asked


def test_manifest_lists_every_month_with_real_size_digest_and_date(tmp_path, synthetic_writer):
    config = make_config(tmp_path, kind="synthetic", years=[2010, 2011], months=[12, 3])
    manifest = run_download(config)

    frame = pd.read_csv(manifest)
    assert manifest == raw_of(tmp_path) / "manifest.csv"
    assert list(frame.columns) == MANIFEST_COLUMNS
    expected = sorted(glorys.file_name(y, m) for y in (2010, 2011) for m in (3, 12))
    assert list(frame["file"]) == expected
    for row in frame.itertuples():
        path = raw_of(tmp_path) / row.file
        assert row.bytes == path.stat().st_size
        assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert row.date == glorys.date_of_file(row.file)


def test_sha256_reads_in_chunks_and_matches_hashlib(tmp_path, monkeypatch):
    import depthdif.download as download

    monkeypatch.setattr(download, "HASH_CHUNK_BYTES", 1000)
    path = tmp_path / "blob.bin"
    path.write_bytes(np.random.default_rng(0).bytes(10_500))
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_synthetic_rerun_resumes_and_gives_byte_identical_manifest(tmp_path, synthetic_writer):
    config = make_config(tmp_path, kind="synthetic")
    first = run_download(config).read_bytes()
    assert synthetic_writer == [(2010, 1), (2010, 2)]

    (raw_of(tmp_path) / glorys.file_name(2010, 2)).unlink()
    second = run_download(config).read_bytes()
    assert synthetic_writer[2:] == [(2010, 2)]  # only the missing month was generated again
    third = run_download(config).read_bytes()
    assert synthetic_writer[3:] == []
    assert second == third
    assert first.splitlines()[0] == second.splitlines()[0] == b"file,bytes,sha256,date"


def test_digest_cache_is_not_trusted_when_a_file_changes(tmp_path, synthetic_writer):
    config = make_config(tmp_path, kind="synthetic", months=[1])
    run_download(config)
    path = raw_of(tmp_path) / glorys.file_name(2010, 1)
    write_cmems_month(path, 2010, 1, depths=glorys.DEPTH_LEVELS_M[:2])  # other content, new mtime
    frame = pd.read_csv(run_download(config))
    assert frame.loc[0, "sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# -- copernicus: credentials ------------------------------------------------------------------------


def test_missing_credentials_fail_before_any_client_call(tmp_path):
    client = FakeCopernicusClient()
    with pytest.raises(DownloadError, match="copernicusmarine login") as info:
        run_download(copernicus_config(tmp_path), client=client)
    assert cop.USERNAME_ENV in str(info.value)
    assert client.calls == []
    assert not (raw_of(tmp_path) / "manifest.csv").exists()


def test_half_set_environment_names_the_missing_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(cop.USERNAME_ENV, USERNAME)
    client = FakeCopernicusClient()
    with pytest.raises(DownloadError, match=cop.PASSWORD_ENV):
        run_download(copernicus_config(tmp_path), client=client)
    assert client.calls == []


def test_credentials_file_in_the_configured_directory_is_honoured(tmp_path, monkeypatch, caplog):
    directory = tmp_path / "creds"
    monkeypatch.setenv(cop.CREDENTIALS_DIR_ENV, str(directory))
    write_credentials_file(directory, USERNAME, PASSWORD)
    client = FakeCopernicusClient()
    with caplog.at_level(logging.INFO):
        run_download(copernicus_config(tmp_path), client=client)
    assert str(directory / ".copernicusmarine-credentials") in caplog.text
    assert client.downloads()


def test_damaged_credentials_file_is_reported_with_its_path(tmp_path):
    path = tmp_path / "home" / ".copernicusmarine" / ".copernicusmarine-credentials"
    path.parent.mkdir(parents=True)
    path.write_text("not base64 at all !!!")
    client = FakeCopernicusClient()
    with pytest.raises(DownloadError, match=re.escape(str(path))):
        run_download(copernicus_config(tmp_path), client=client)
    assert client.calls == []


# -- copernicus: get vs subset ----------------------------------------------------------------------


def test_no_bbox_gets_whole_files_per_year_into_staging(tmp_path, credentials):
    config = make_config(
        tmp_path,
        kind="copernicus",
        years=[2010, 2011],
        months=[2, 11],
        copernicus={"dataset_version": "202311"},
    )
    client = FakeCopernicusClient()
    manifest = run_download(config, client=client)

    assert {c.function for c in client.calls} == {"get"}
    listing, *downloads = client.calls
    assert listing.dry_run and len(downloads) == 2  # one listing, then one download per year
    wanted = [glorys.file_name(y, m) for y in (2010, 2011) for m in (2, 11)]
    for call, year in zip(downloads, (2010, 2011), strict=True):
        kwargs = call.kwargs
        assert kwargs["dataset_id"] == glorys.DATASET_ID and kwargs["dataset_version"] == "202311"
        assert kwargs["no_directories"] is True and "filter" not in kwargs  # get ORs filter with regex
        assert Path(kwargs["output_directory"]).parent == raw_of(tmp_path)  # staging, not raw/ itself
        matched = [
            n for n in wanted + [glorys.file_name(year, 5)] if re.search(kwargs["regex"], f"x/{year}/{n}")
        ]
        assert matched == [n for n in wanted if f"_{year}" in n]
    assert sorted(p.name for p in raw_of(tmp_path).glob("*.nc")) == wanted
    assert list(pd.read_csv(manifest)["file"]) == wanted
    assert not list(raw_of(tmp_path).glob(cop.STAGING_PREFIX + "*"))
    for name in wanted:  # byte for byte what the server holds
        assert (raw_of(tmp_path) / name).read_bytes() == client.served_bytes(name)


def test_bbox_subsets_each_month_with_the_box_depths_and_variables(tmp_path, credentials):
    config = copernicus_config(tmp_path, bbox=BBOX, depth_range=[0.0, 3.0], variables=["thetao", "so"])
    client = FakeCopernicusClient()
    run_download(config, client=client)

    assert [c.function for c in client.calls] == ["subset", "subset"]
    for call, month in zip(client.calls, (1, 2), strict=True):
        kwargs = call.kwargs
        assert kwargs["output_filename"] == glorys.file_name(2010, month)
        assert (kwargs["minimum_longitude"], kwargs["maximum_longitude"]) == (
            BBOX["lon_min"],
            BBOX["lon_max"],
        )
        assert (kwargs["minimum_latitude"], kwargs["maximum_latitude"]) == (BBOX["lat_min"], BBOX["lat_max"])
        assert (kwargs["minimum_depth"], kwargs["maximum_depth"]) == (0.0, 3.0)
        assert kwargs["variables"] == ["thetao", "so"]
        start, end = pd.Timestamp(kwargs["start_datetime"]), pd.Timestamp(kwargs["end_datetime"])
        assert (start.year, start.month, end.year, end.month) == (2010, month, 2010, month)
        assert start.day == 1 and (end + pd.Timedelta(seconds=1)).month == month % 12 + 1
    with netCDF4.Dataset(raw_of(tmp_path) / glorys.file_name(2010, 1)) as ds:
        assert float(ds["depth"][:].max()) <= 3.0 and {"thetao", "so"} <= set(ds.variables)


def test_bbox_without_the_export_variable_is_a_config_error(tmp_path, credentials):
    client = FakeCopernicusClient()
    with pytest.raises(ConfigError, match="source.copernicus.variables"):
        run_download(copernicus_config(tmp_path, bbox=BBOX, variables=["so"]), client=client)
    assert client.calls == []


def test_month_missing_on_the_server_is_named(tmp_path, credentials):
    client = FakeCopernicusClient(server_years=range(2010, 2011))
    config = make_config(tmp_path, kind="copernicus", years=[2010, 2011], months=[1])
    with pytest.raises(DownloadError, match=glorys.file_name(2011, 1)):
        run_download(config, client=client)
    assert client.downloads() == []  # found out from the listing, before downloading anything


# -- copernicus: resume -----------------------------------------------------------------------------


def test_get_rerun_fetches_only_missing_or_wrong_size_files(tmp_path, credentials):
    config = copernicus_config(tmp_path)
    client = FakeCopernicusClient()
    first = run_download(config, client=client).read_bytes()
    assert len(client.downloads()) == 1

    client.calls.clear()
    assert run_download(config, client=client).read_bytes() == first  # byte-identical, nothing fetched
    assert client.downloads() == []

    jan, feb = (raw_of(tmp_path) / glorys.file_name(2010, m) for m in (1, 2))
    jan.unlink()
    feb.write_bytes(feb.read_bytes()[:100])  # a short file someone left there
    client.calls.clear()
    assert run_download(config, client=client).read_bytes() == first
    (download,) = client.downloads()
    assert re.search(download.kwargs["regex"], f"x/{jan.name}") and re.search(
        download.kwargs["regex"], f"x/{feb.name}"
    )


def test_subset_rerun_keeps_matching_months_and_refetches_when_the_box_changes(tmp_path, credentials):
    client = FakeCopernicusClient()
    run_download(copernicus_config(tmp_path, bbox=BBOX), client=client)
    client.calls.clear()
    run_download(copernicus_config(tmp_path, bbox=BBOX), client=client)
    assert client.calls == []

    moved = {**BBOX, "lat_min": 21.0, "lat_max": 21.5}
    run_download(copernicus_config(tmp_path, bbox=moved), client=client)
    assert [c.kwargs["minimum_latitude"] for c in client.calls] == [21.0, 21.0]


def test_failure_keeps_accepted_months_and_the_rerun_resumes(tmp_path, credentials):
    config = copernicus_config(tmp_path, bbox=BBOX)
    feb = glorys.file_name(2010, 2)
    with pytest.raises(DownloadError, match=feb):
        run_download(config, client=FakeCopernicusClient(failure="truncate", fail_files={feb}))
    assert [p.name for p in raw_of(tmp_path).glob("*.nc")] == [glorys.file_name(2010, 1)]

    client = FakeCopernicusClient()
    run_download(config, client=client)
    assert [c.kwargs["output_filename"] for c in client.downloads()] == [feb]


# -- copernicus: failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["reject", "none", "raise", "truncate", "no_file", "status_error"])
@pytest.mark.parametrize("bbox", [None, BBOX], ids=["get", "subset"])
def test_every_failure_is_a_download_error_naming_the_file_and_no_manifest(
    tmp_path, credentials, failure, bbox
):
    client = FakeCopernicusClient(failure=failure)
    with pytest.raises(DownloadError) as info:
        run_download(copernicus_config(tmp_path, bbox=bbox), client=client)

    message = str(info.value)
    assert glorys.file_name(2010, 1) in message
    if failure in ("reject", "none"):
        assert "copernicusmarine login" in message
    raw = raw_of(tmp_path)
    assert not (raw / "manifest.csv").exists()
    assert not list(raw.glob("*.nc"))  # nothing partial under a final name
    assert not list(raw.glob(cop.STAGING_PREFIX + "*"))  # partial downloads removed


def test_failed_listing_is_a_download_error(tmp_path, credentials):
    client = FakeCopernicusClient(failure="raise", fail_dry_run=True)
    with pytest.raises(DownloadError, match="connection reset"):
        run_download(copernicus_config(tmp_path), client=client)
    assert len(client.calls) == 1


# -- copernicus: environment and secrets ------------------------------------------------------------


@pytest.mark.parametrize("bbox", [None, BBOX], ids=["get", "subset"])
def test_https_timeout_and_retries_are_set_for_the_call_and_restored(
    tmp_path, credentials, monkeypatch, bbox
):
    monkeypatch.setenv(cop.TIMEOUT_ENV, "99")  # the user's own value, to be restored
    client = FakeCopernicusClient()
    run_download(copernicus_config(tmp_path, bbox=bbox, https_timeout_s=7, https_retries=1), client=client)

    assert client.calls
    for call in client.calls:
        assert call.env == {cop.TIMEOUT_ENV: "7", cop.RETRIES_ENV: "1"}
    assert os.environ[cop.TIMEOUT_ENV] == "99"
    assert cop.RETRIES_ENV not in os.environ


def test_environment_is_restored_after_a_failure(tmp_path, credentials):
    with pytest.raises(DownloadError):
        run_download(copernicus_config(tmp_path), client=FakeCopernicusClient(failure="raise"))
    assert cop.TIMEOUT_ENV not in os.environ and cop.RETRIES_ENV not in os.environ


def test_credentials_never_reach_files_logs_or_errors(tmp_path, credentials, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    texts = []
    run_download(copernicus_config(tmp_path, bbox=BBOX), client=FakeCopernicusClient())
    run_download(make_config(tmp_path, kind="copernicus", years=[2011]), client=FakeCopernicusClient())
    leaky = FakeCopernicusClient(failure="raise", error_message=f"POST failed for {USERNAME}:{PASSWORD}@auth")
    for bbox in (None, BBOX):
        with pytest.raises(DownloadError) as info:
            run_download(
                make_config(tmp_path, kind="copernicus", years=[2012], copernicus={"bbox": bbox}),
                client=leaky,
            )
        texts += [str(info.value), repr(info.value), str(info.value.__cause__), str(info.value.__context__)]
    assert "***" in texts[0]  # the leaky message was scrubbed, not dropped

    written = all_files(tmp_path / "data")
    assert len(written) >= 4
    texts += [p.read_bytes().decode("latin-1") for p in written]
    captured = capsys.readouterr()
    texts += [caplog.text, captured.out, captured.err, repr(cop.find_credentials())]
    for secret in (PASSWORD, USERNAME):
        assert not [t for t in texts if secret in t]


def test_toolbox_imported_earlier_warns_that_its_timeouts_are_fixed(caplog, monkeypatch):
    sessions = pytest.importorskip("copernicusmarine.core_functions.sessions")
    monkeypatch.setattr(sessions, "HTTPS_TIMEOUT", 60.0)
    with caplog.at_level(logging.WARNING):
        assert cop.load_toolbox(5, 1) is copernicusmarine
    assert "imported before" in caplog.text
    caplog.clear()
    monkeypatch.setattr(sessions, "HTTPS_RETRIES", 1)
    monkeypatch.setattr(sessions, "HTTPS_TIMEOUT", 5.0)
    cop.load_toolbox(5, 1)
    assert "imported before" not in caplog.text


# -- local ------------------------------------------------------------------------------------------


def local_config(tmp_path: Path, local_dir: Path) -> dict:
    # every month of the files used here: source.years/months select local files too
    # (tests/test_local_selection.py)
    return make_config(tmp_path, kind="local", local_dir=str(local_dir), years="2000-2030",
                       months=list(range(1, 13)))


def test_local_files_are_linked_into_raw_with_dates(tmp_path):
    local = tmp_path / "mine"
    local.mkdir()
    for month in (3, 4):
        write_cmems_month(local / glorys.file_name(2015, month), 2015, month)
    write_cmems_month(local / "no_date_here.nc", 2016, 7)

    frame = pd.read_csv(run_download(local_config(tmp_path, local)))
    raw = raw_of(tmp_path)
    # the date the file states (time = the 16th) wins over the mid-month its name implies
    assert dict(zip(frame["file"], frame["date"], strict=True)) == {
        glorys.file_name(2015, 3): 20150316,
        glorys.file_name(2015, 4): 20150416,
        "no_date_here.nc": 20160716,
    }
    for name in frame["file"]:
        assert (raw / name).is_symlink() and (raw / name).resolve() == (local / name).resolve()
    assert run_download(local_config(tmp_path, local)).read_bytes() == (raw / "manifest.csv").read_bytes()


def test_local_files_are_copied_where_symlinks_fail(tmp_path, monkeypatch):
    local = tmp_path / "mine"
    local.mkdir()
    source = write_cmems_month(local / glorys.file_name(2015, 3), 2015, 3)

    def no_symlink(*args, **kwargs):
        raise OSError("symlinks not supported here")

    monkeypatch.setattr(os, "symlink", no_symlink)
    run_download(local_config(tmp_path, local))
    target = raw_of(tmp_path) / source.name
    assert not target.is_symlink() and target.read_bytes() == source.read_bytes()

    # replaced by new data carrying an older mtime (`cp -p`, `rsync -a`): the copy is refreshed all the same
    mtime = source.stat().st_mtime_ns
    with netCDF4.Dataset(source, "a") as ds:
        ds["thetao"][:] = ds["thetao"][:] + 1.0
    os.utime(source, ns=(mtime - 10**9, mtime - 10**9))
    frame = pd.read_csv(run_download(local_config(tmp_path, local)))
    assert target.read_bytes() == source.read_bytes()
    assert frame["sha256"].iloc[0] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_local_alias_dimensions_are_mapped_in_a_copy(tmp_path):
    local = tmp_path / "mine"
    local.mkdir()
    path = local / glorys.file_name(2015, 3)
    write_cmems_month(path, 2015, 3)
    with netCDF4.Dataset(path) as ds:
        expected_lat, expected_values = ds["latitude"][:].copy(), ds["thetao"][:].copy()
    aliased = local / "aliased_201503.nc"
    import xarray as xr

    with xr.open_dataset(path, decode_cf=False) as ds:
        ds.rename({"depth": "deptht", "latitude": "lat", "longitude": "lon"}).to_netcdf(aliased)
    path.unlink()

    run_download(local_config(tmp_path, local))
    with netCDF4.Dataset(raw_of(tmp_path) / aliased.name) as ds:
        assert ds["thetao"].dimensions == ("time", "depth", "latitude", "longitude")
        assert ds["thetao"].dtype == np.int16  # packing kept
        np.testing.assert_allclose(ds["latitude"][:], expected_lat)
        np.testing.assert_array_equal(ds["thetao"][:].mask, expected_values.mask)
        np.testing.assert_allclose(ds["thetao"][:].compressed(), expected_values.compressed())


def write_odd_file(path: Path, *, variable: str = "thetao", dims=("time", "depth", "latitude", "longitude")):
    with netCDF4.Dataset(path, "w") as ds:
        for dim in dims:
            ds.createDimension(dim, 2 if dim != "time" else 1)
        ds.createVariable(variable, "f4", dims)[:] = 1.0


@pytest.mark.parametrize(
    ("make_file", "expected"),
    [
        (lambda p: write_odd_file(p, variable="temperature"), "no variable 'thetao'"),
        (lambda p: write_odd_file(p, dims=("time", "level", "latitude", "longitude")), "no depth dimension"),
        (lambda p: write_odd_file(p, dims=("time", "depth", "y", "x")), "no latitude, longitude"),
        (lambda p: write_odd_file(p, dims=("time", "latitude", "longitude", "depth")), "in this order"),
        (lambda p: p.write_bytes(b"this is not a netcdf file"), "not a readable NetCDF"),
    ],
    ids=["missing-variable", "missing-depth", "missing-lat-lon", "wrong-order", "unreadable"],
)
def test_local_checks_name_the_bad_file_and_what_is_wrong(tmp_path, make_file, expected):
    local = tmp_path / "mine"
    local.mkdir()
    write_cmems_month(local / glorys.file_name(2015, 3), 2015, 3)
    bad = local / glorys.file_name(2015, 4)
    make_file(bad)
    with pytest.raises(DownloadError, match=re.escape(expected)) as info:
        run_download(local_config(tmp_path, local))
    assert str(bad) in str(info.value)
    assert glorys.file_name(2015, 3) not in str(info.value)
    assert not (raw_of(tmp_path) / "manifest.csv").exists()
    assert not list(raw_of(tmp_path).glob("*.nc"))  # checked up front: nothing placed


def test_local_folder_without_files_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DownloadError, match="no \\*.nc"):
        run_download(local_config(tmp_path, tmp_path / "empty"))
    with pytest.raises(DownloadError, match="not a folder"):
        run_download(local_config(tmp_path, tmp_path / "absent"))


def test_real_glorys_sample_passes_the_local_checks(tmp_path, real_sample_dir):
    frame = pd.read_csv(run_download(local_config(tmp_path, real_sample_dir)))
    assert list(frame["file"]) == [glorys.file_name(2010, 11), glorys.file_name(2010, 12)]
    assert list(frame["date"]) == [20101116, 20101216]  # the files' time coordinates (16th 00:00 and 12:00)
    for row in frame.itertuples():
        assert row.bytes == (real_sample_dir / row.file).stat().st_size
        assert row.sha256 == hashlib.sha256((real_sample_dir / row.file).read_bytes()).hexdigest()


def test_netrc_credentials_are_accepted_like_the_toolbox_does(tmp_path):
    netrc_path = tmp_path / "home" / ".netrc"
    netrc_path.parent.mkdir(parents=True)
    netrc_path.write_text(f"machine auth.marine.copernicus.eu login {USERNAME} password {PASSWORD}\n")
    netrc_path.chmod(0o600)
    found = cop.find_credentials()
    assert found.origin == str(netrc_path)
    assert found.redact(f"{USERNAME} {PASSWORD}") == "*** ***"


def test_toolbox_errors_get_a_hint_on_what_to_do(tmp_path, credentials, monkeypatch):
    class CouldNotConnectToAuthenticationSystem(Exception):
        pass

    client = FakeCopernicusClient()

    def offline_get(**kwargs):
        raise CouldNotConnectToAuthenticationSystem()

    monkeypatch.setattr(client, "get", offline_get)
    with pytest.raises(DownloadError, match="auth.marine.copernicus.eu: check the internet"):
        run_download(copernicus_config(tmp_path), client=client)


# -- one job per month ------------------------------------------------------------------------------


def test_a_month_job_reads_no_list_of_months_so_adding_one_changes_no_other_job(tmp_path):
    two = make_config(tmp_path, kind="copernicus", years=[2010], months=[1, 2])
    three = make_config(tmp_path, kind="copernicus", years=[2010, 2011], months=[1, 2, 3])
    assert download_settings(two) == download_settings(three)
    assert download_settings(two) == {"source": {"kind": "copernicus", "copernicus": two["source"]["copernicus"]},
                                      "export": {"variable": "thetao"}}
    synthetic = download_settings(make_config(tmp_path, kind="synthetic"))
    assert set(synthetic["source"]) == {"kind", "synthetic"} and "export" not in synthetic


def test_month_jobs_and_their_gather_write_what_the_whole_download_writes(tmp_path, synthetic_writer):
    config = make_config(tmp_path, kind="synthetic", years=[2010, 2011], months=[12, 3])
    whole = run_download(config).read_bytes()
    layout = layout_of(make_config(tmp_path / "jobs", kind="synthetic"))
    layout.raw_dir.mkdir(parents=True)
    layout.manifest.write_text("file,bytes,sha256,date\nfrom-the-last-run.nc,1,x,20000115\n")
    parts = []
    for year, month in ((2011, 3), (2010, 12), (2010, 3), (2011, 12)):  # any order: the gather sorts
        tag = month_tag(year, month)
        parts.append(download_month(download_settings(config), year, month, layout.raw_dir,
                                    layout.month_manifest(tag), layout.month_digests(tag), stale=[layout.manifest]))
        assert not layout.manifest.exists()  # a month rerun makes the gathered manifest stale
        assert len(pd.read_csv(parts[-1])) == 1
    assert gather_manifest(parts, layout.manifest).read_bytes() == whole


def test_a_local_month_job_refuses_a_file_dated_in_another_month(tmp_path):
    local = tmp_path / "mine"
    local.mkdir()
    april = write_cmems_month(local / glorys.file_name(2015, 3), 2015, 4)  # its name says March
    config = local_config(tmp_path, local)
    layout = layout_of(config)
    with pytest.raises(DownloadError, match=rf"{re.escape(glorys.file_name(2015, 3))} states the date 20150416"):
        download_month(download_settings(config), 2015, 3, layout.raw_dir, layout.month_manifest("201503"),
                       local_files=[april])
    assert not layout.month_manifest("201503").exists()
