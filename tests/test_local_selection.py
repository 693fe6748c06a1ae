"""``source.years`` and ``source.months`` select a local source's files by their date, as for every source.

A file's date is what the file states (its time coordinate, see depthdif.cf.dates): the writer below puts
the 16th of the month there. Files outside the selection are not linked and are logged with their dates; a
selection that leaves no file is an error naming it and the files' dates.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest
from fakes import write_cmems_month

from depthdif import glorys
from depthdif.config import load_config
from depthdif.download import DownloadError, run_download
from depthdif.sources.local import local_months

FILES = {glorys.file_name(2010, 1): (2010, 1), glorys.file_name(2010, 2): (2010, 2),
         glorys.file_name(2015, 3): (2015, 3), "no_date_in_the_name.nc": (2015, 7)}


@pytest.fixture
def local_dir(tmp_path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, (year, month) in FILES.items():
        write_cmems_month(folder / name, year, month)
    return folder


def download(tmp_path: Path, local_dir: Path, years, months=None) -> pd.DataFrame:
    source = {"kind": "local", "local_dir": str(local_dir), "years": years}
    if months is not None:
        source["months"] = months
    config = load_config([], {"data_dir": str(tmp_path / "data"), "source": source})
    return pd.read_csv(run_download(config))


def raw_names(tmp_path: Path) -> set[str]:
    return {path.name for path in (tmp_path / "data" / "raw").glob("*.nc")}


def test_files_outside_the_years_are_not_linked_and_are_logged_with_their_dates(tmp_path, local_dir, caplog):
    with caplog.at_level(logging.INFO, logger="depthdif.sources.local"):
        manifest = download(tmp_path, local_dir, [2015])
    assert dict(zip(manifest["file"], manifest["date"], strict=True)) == {
        glorys.file_name(2015, 3): 20150316, "no_date_in_the_name.nc": 20150716}
    assert raw_names(tmp_path) == set(manifest["file"])
    logged = caplog.text
    assert "2 of 4 files" in logged and "source.years [2015]" in logged
    assert f"{glorys.file_name(2010, 1)} (2010-01-16)" in logged
    assert f"{glorys.file_name(2010, 2)} (2010-02-16)" in logged


def test_months_and_year_ranges_select_too(tmp_path, local_dir):
    manifest = download(tmp_path, local_dir, "2009-2011", months=[2, 7])
    assert list(manifest["file"]) == [glorys.file_name(2010, 2)]


def test_a_file_without_a_date_in_its_name_is_selected_by_its_time_coordinate(tmp_path, local_dir):
    assert "no_date_in_the_name.nc" in set(download(tmp_path, local_dir, [2015], months=[7])["file"])
    assert "no_date_in_the_name.nc" not in set(download(tmp_path, local_dir, [2015], months=[3])["file"])


def test_a_selection_that_leaves_no_file_is_an_error_naming_it_and_the_dates(tmp_path, local_dir):
    with pytest.raises(DownloadError) as info:
        download(tmp_path, local_dir, [2020], months=[1, 6])
    message = str(info.value)
    assert str(local_dir) in message
    assert "source.years [2020] x source.months [1, 6]" in message
    for name, (year, month) in FILES.items():
        assert f"{name} ({year}-{month:02d}-16)" in message
    assert re.search("set them to the months you want", message)  # what to do
    assert not (tmp_path / "data" / "raw" / "manifest.csv").exists()
    assert not raw_names(tmp_path)


def test_a_new_selection_removes_the_links_of_files_it_leaves_out(tmp_path, local_dir):
    download(tmp_path, local_dir, [2010])
    assert raw_names(tmp_path) == {glorys.file_name(2010, 1), glorys.file_name(2010, 2)}
    unrelated = tmp_path / "data" / "raw" / "kept_by_hand.nc"  # not a link into local_dir: never touched
    write_cmems_month(unrelated, 2011, 1)
    manifest = download(tmp_path, local_dir, [2015], months=[3])
    assert list(manifest["file"]) == [glorys.file_name(2015, 3)]
    assert raw_names(tmp_path) == {glorys.file_name(2015, 3), unrelated.name}


def test_planning_groups_the_selected_files_by_the_month_they_state(local_dir):
    months = local_months(local_dir, [(2010, 1), (2010, 2), (2015, 7)])
    assert months == {"201001": [local_dir / glorys.file_name(2010, 1)],
                      "201002": [local_dir / glorys.file_name(2010, 2)],
                      "201507": [local_dir / "no_date_in_the_name.nc"]}


def test_planning_names_every_file_without_a_readable_date(local_dir):
    (local_dir / "broken.nc").write_bytes(b"not a netcdf file")
    (local_dir / "also_broken.nc").write_bytes(b"")
    with pytest.raises(DownloadError, match="2 of 6 files") as info:
        local_months(local_dir, None)
    assert "broken.nc" in str(info.value) and "also_broken.nc" in str(info.value)
