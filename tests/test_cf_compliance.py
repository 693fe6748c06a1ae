"""Every NetCDF DepthDif writes passes the IOOS compliance checker's CF-1.8 suite: no error, no warning.

The checker runs offline: it uses the standard-name table shipped in its package unless a file names another
version in ``standard_name_vocabulary`` (none of ours does), and the autouse fixture below fails any test
that opens a connection, so a checker that started fetching would be caught here.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from compliance_checker.runner import CheckSuite, ComplianceChecker

from depthdif import glorys
from depthdif.config import load_config
from depthdif.models.module import (
    DepthDifModule,
    model_settings,
    num_target_bands,
    sampling_train_config,
    save_model,
)
from depthdif.reconstruction.gridded import reconstruct_file, reconstruction_dataset, write_netcdf
from depthdif.reconstruction.month import reconstruct_month
from depthdif.sources.synthetic import write_synthetic_month

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
REAL = REPO / "tests" / "data" / "glorys12_nwmexico" / "mercatorglorys12v1_gl12_mean_201011.nc"
CF_SUITE = "cf:1.8"
# the checker's levels: high = errors, medium = warnings (low = suggestions, not checked)
REPORTED_LEVELS = ("high_priorities", "medium_priorities")
SMALL_REGION = {"lon_min": -120.0, "lon_max": -117.0, "lat_min": 20.0, "lat_max": 22.0}  # 24 x 36 cells


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The checker must not need the network (no connection is possible on the machines that run it)."""
    def refuse(*args, **kwargs):
        pytest.fail("the CF checker opened a connection")  # BaseException: the checker cannot swallow it

    monkeypatch.setattr(socket.socket, "connect", refuse)


def cf_problems(path: Path, tmp_path: Path) -> list[str]:
    """Errors and warnings of the CF-1.8 suite for ``path``, as ``'<check>: <message>'`` lines.

    Args:
        path: the NetCDF file to check.
        tmp_path: a folder for the checker's JSON report.

    Returns:
        One line per message of a failed error- or warning-level check; empty when the file passes.
    """
    CheckSuite.load_all_available_checkers()
    report = tmp_path / f"{path.stem}.cf.json"
    ComplianceChecker.run_checker(str(path), [CF_SUITE], 0, "normal", output_filename=str(report),
                                  output_format="json")
    results = json.loads(report.read_text())[CF_SUITE]
    return [f"{check['name']}: {message}" for level in REPORTED_LEVELS for check in results[level]
            for message in check["msgs"]]


def tiny_config(tmp_path: Path, **overrides) -> dict:
    return load_config([TINY], {"data_dir": str(tmp_path / "data"),
                                "source": {"synthetic": {"region": SMALL_REGION}}, **overrides})


def untrained_module(config: dict, variant: str) -> DepthDifModule:
    """A network never trained, in observed-mean units (no first guess to fit): only the file matters here."""
    config = load_config([TINY], {**config, "model": {**config["model"], "working_units": "observed_mean"}})
    depths = [glorys.DEPTH_LEVELS_M[i] for i in config["export"]["depth_indices"]]  # synthetic = real levels
    settings = model_settings(config, variant, depths)
    return DepthDifModule(settings, sampling_train_config(), num_target_bands(config, variant))


def test_synthetic_month_passes_cf_1_8(tmp_path):
    path = tmp_path / glorys.file_name(2010, 1)
    write_synthetic_month(tiny_config(tmp_path), 2010, 1, path)
    assert cf_problems(path, tmp_path) == []


@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
def test_evaluation_reconstruction_passes_cf_1_8(tmp_path, variant):
    config = tiny_config(tmp_path)
    name = glorys.file_name(2010, 1)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    write_synthetic_month(config, 2010, 1, tmp_path / "data" / "raw" / name)
    index = pd.DataFrame({"date": [20100115], "source_file": [name]})
    path = reconstruct_month(untrained_module(config, variant), config, index, variant, 20100115,
                             tmp_path / "reconstruction.nc", ensemble_size=1, steps=1)
    assert cf_problems(path, tmp_path) == []
    with xr.open_dataset(path) as written:
        assert "thetao_truth" in written  # the evaluation's file, with the field the observations came from


def sparse_real_observations(tmp_path: Path) -> Path:
    """The real sample with 95 % of its cells hidden and an ocean mask, as a user would give them."""
    with xr.open_dataset(REAL) as real:
        field = real["thetao"].load()
    keep = np.random.default_rng(0).random(field.shape) > 0.95
    observations = xr.Dataset({"thetao": field.where(keep),
                               "ocean_mask": (field.dims, np.isfinite(field.values).astype(np.int8))})
    path = tmp_path / "sparse.nc"
    observations.to_netcdf(path)
    return path


@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
def test_depthdif_reconstruct_output_passes_cf_1_8(tmp_path, variant):
    config = load_config([], {"export": {"depth_indices": [0, 7, 14, 21], "patch_size": 32, "stride": 32},
                              "dataset": {"temp_v1_band": 3}, "model": {"dim": 8, "dim_mults": [1, 2]}})
    module = untrained_module(config, variant)
    checkpoint = tmp_path / f"{variant}.ckpt"
    save_model(module, module.state_dict(), checkpoint)
    surface = REAL if variant == "eo_4band" else None
    path = reconstruct_file(checkpoint, sparse_real_observations(tmp_path), tmp_path / "out.nc",
                            surface=surface, ensemble_size=1, steps=1)
    assert cf_problems(path, tmp_path) == []


def test_input_coordinate_attributes_cannot_break_the_output(tmp_path):
    # what a user's observation file may carry on latitude: its own encoding and non-CF names
    latitude = xr.DataArray(np.arange(20, 22, 1 / 12, dtype=np.float32), dims="latitude", attrs={
        "standard_name": "lat", "units": "degrees", "_FillValue": np.float32(np.nan), "valid_min": -90.0,
        "long_name": "Latitude (T points)"})
    longitude = np.arange(-120, -118, 1 / 12)
    field = np.full((1, latitude.size, longitude.size), 20.0, np.float32)
    dataset = reconstruction_dataset(field, field, field > 0, field > 0, latitude, longitude, [0.494],
                                     20100115, source="test")
    path = write_netcdf(dataset, tmp_path / "reconstruction.nc")
    assert cf_problems(path, tmp_path) == []
    with xr.open_dataset(path) as written:
        assert written["latitude"].attrs["long_name"] == "Latitude (T points)"  # descriptive ones are kept
        assert written["latitude"].attrs["units"] == "degrees_north"
