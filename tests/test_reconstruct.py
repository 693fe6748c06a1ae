"""`depthdif reconstruct` on the real GLORYS12 sample with most ocean cells hidden."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from batch_factory import TinyDataModule

from depthdif import cli
from depthdif.config import load_config
from depthdif.glorys import DEPTH_LEVELS_M
from depthdif.models.module import (
    DepthDifModule,
    model_settings,
    num_target_bands,
    sampling_train_config,
    save_model,
)
from depthdif.reconstruction.gridded import ReconstructionError, reconstruct_file
from depthdif.train import fit_first_guess

REAL = Path(__file__).parent / "data" / "glorys12_nwmexico" / "mercatorglorys12v1_gl12_mean_201011.nc"


def untrained_checkpoint(tmp_path: Path, variant: str) -> Path:
    config = load_config([], {"export": {"depth_indices": [0, 7, 14, 21], "patch_size": 32, "stride": 32},
                              "dataset": {"temp_v1_band": 3}, "model": {"dim": 8, "dim_mults": [1, 2]}})
    depths = [DEPTH_LEVELS_M[i] for i in config["export"]["depth_indices"]]  # the real sample's levels
    module = DepthDifModule(model_settings(config, variant, depths), sampling_train_config(),
                            num_target_bands(config, variant))
    # an untrained network on a first guess fitted to small synthetic patches of the model's size
    fit_first_guess(module, TinyDataModule(variant, train_size=32, batch_size=16, size=32), config)
    path = tmp_path / f"{variant}.ckpt"
    save_model(module, module.state_dict(), path)
    return path


def sparse_observations(tmp_path: Path, hidden: float = 0.95, with_mask: bool = True) -> Path:
    rng = np.random.default_rng(0)
    ds = xr.open_dataset(REAL).load()
    field = ds["thetao"]
    ocean = np.isfinite(field.values)
    keep = rng.random(field.shape) > hidden
    out = ds[["thetao"]].copy()
    out["thetao"] = field.where(keep)
    if with_mask:
        out["ocean_mask"] = (field.dims, ocean.astype(np.int8))
    path = tmp_path / "sparse.nc"
    out.to_netcdf(path)
    return path


def test_reconstruct_temp_v1_on_real_sample(tmp_path):
    checkpoint = untrained_checkpoint(tmp_path, "temp_v1")
    obs = sparse_observations(tmp_path)
    out = reconstruct_file(checkpoint, obs, tmp_path / "out.nc", ensemble_size=2, steps=2)
    result = xr.open_dataset(out)
    truth = xr.open_dataset(REAL)["thetao"].sel(depth=92.3, method="nearest").isel(time=0)
    assert result["thetao"].dims == ("time", "depth", "latitude", "longitude")
    assert result["depth"].values == pytest.approx([92.326], abs=0.01)
    assert result["thetao"].attrs["units"] == "degC"
    assert result["thetao"].attrs["standard_name"] == "sea_water_potential_temperature"
    assert result.attrs["Conventions"] == "CF-1.8"
    np.testing.assert_array_equal(result["latitude"].values, truth["latitude"].values)
    recon = result["thetao"].isel(time=0, depth=0).values
    ocean = np.isfinite(truth.values)
    assert np.isnan(recon[~ocean]).all()  # land stays land
    assert np.isfinite(recon[ocean]).all()  # every ocean cell is filled
    observed = result["observation_mask"].isel(time=0, depth=0).values.astype(bool)
    np.testing.assert_allclose(recon[observed], truth.values[observed], rtol=0, atol=1e-4)  # obs kept exactly
    assert np.isfinite(result["thetao_std"].isel(time=0, depth=0).values[ocean]).all()


def test_reconstruct_eo_needs_a_surface_on_the_same_grid(tmp_path):
    checkpoint = untrained_checkpoint(tmp_path, "eo_4band")
    obs = sparse_observations(tmp_path, with_mask=False)
    with pytest.raises(ReconstructionError, match="--surface"):
        reconstruct_file(checkpoint, obs, tmp_path / "out.nc")
    other_grid = tmp_path / "surface_other.nc"
    xr.open_dataset(REAL).isel(latitude=slice(0, 100)).to_netcdf(other_grid)
    with pytest.raises(ReconstructionError, match="another grid"):
        reconstruct_file(checkpoint, obs, tmp_path / "out.nc", surface=other_grid)
    out = reconstruct_file(checkpoint, obs, tmp_path / "out.nc", surface=REAL, ensemble_size=1, steps=2)
    depths = xr.open_dataset(out)["depth"].values
    assert depths == pytest.approx([9.573, 29.445, 92.326], abs=0.01)


def test_clear_errors_for_bad_observations(tmp_path):
    checkpoint = untrained_checkpoint(tmp_path, "temp_v1")
    with pytest.raises(ReconstructionError, match="ocean_mask"):
        reconstruct_file(checkpoint, sparse_observations(tmp_path, with_mask=False), tmp_path / "o.nc")
    empty = sparse_observations(tmp_path, hidden=1.01)
    with pytest.raises(ReconstructionError, match="no observed"):
        reconstruct_file(checkpoint, empty, tmp_path / "o.nc")
    shallow = tmp_path / "shallow.nc"
    xr.open_dataset(sparse_observations(tmp_path)).isel(depth=[0, 1]).to_netcdf(shallow)
    with pytest.raises(ReconstructionError, match="no level near 92"):
        reconstruct_file(checkpoint, shallow, tmp_path / "o.nc")
    assert not (tmp_path / "o.nc").exists()


def test_cli_reconstruct(tmp_path):
    checkpoint = untrained_checkpoint(tmp_path, "temp_v1")
    obs = sparse_observations(tmp_path)
    out = tmp_path / "cli.nc"
    code = cli.main(["reconstruct", str(checkpoint), str(obs), str(out), "--ensemble-size", "1", "--steps", "2"])
    assert code == 0
    assert out.is_file()
    assert cli.main(["reconstruct", str(checkpoint), str(tmp_path / "missing.nc"), str(out)]) == 1


def test_cli_reconstruct_seed_reaches_the_sampler(tmp_path):
    checkpoint = untrained_checkpoint(tmp_path, "temp_v1")
    obs = sparse_observations(tmp_path)
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        out = tmp_path / f"{name}.nc"
        assert cli.main(["reconstruct", str(checkpoint), str(obs), str(out), "--ensemble-size", "2", "--steps", "2",
                         "--seed", seed]) == 0
        with xr.open_dataset(out) as ds:
            runs[name] = ds.load()
    same, again, other = runs["a"], runs["b"], runs["c"]
    np.testing.assert_array_equal(same["thetao_std"].values, again["thetao_std"].values)
    np.testing.assert_array_equal(same["thetao"].values, again["thetao"].values)
    ocean = np.isfinite(same["thetao_std"].values)
    assert ocean.sum() > 1000
    assert not np.allclose(same["thetao_std"].values[ocean], other["thetao_std"].values[ocean])
    assert "(2 members in antithetic pairs, 2 DDPM steps, seed 1)" in same.attrs["source"]
    assert "seed 2" in other.attrs["source"]


def test_reconstruct_uses_the_checkpoint_first_guess_statistics(tmp_path):
    """Change the trained covariance in model.ckpt: `depthdif reconstruct` follows it (nothing is hard-coded)."""
    import torch

    from depthdif.baselines.cokriging import _torus_distance, covariance_dictionary
    from depthdif.models.module import load_model

    distance, _ = _torus_distance(32)
    outputs = {}
    for name, scale in {"short": 1, "long": -1}.items():  # exponential 1 px / Gaussian 24 px correlation
        (tmp_path / name).mkdir()
        path = untrained_checkpoint(tmp_path / name, "temp_v1")
        module = load_model(path)
        table = covariance_dictionary(distance)[scale].expand_as(module.cokriging.covariance).clone()
        module.cokriging.set_statistics({"covariance": table, "sigma_table": torch.full_like(
            module.cokriging.sigma_table, 1e-5)})  # sigma ~ 0: every member is the first guess itself
        save_model(module, module.state_dict(), path)
        obs = sparse_observations(tmp_path / name)
        runs = [xr.open_dataset(reconstruct_file(path, obs, tmp_path / name / f"out{k}.nc", ensemble_size=2, steps=2))
                ["thetao"].values for k in range(2)]
        np.testing.assert_allclose(runs[0], runs[1], atol=1e-3)  # deterministic: the stored first guess
        outputs[name] = runs[0]
    ocean = np.isfinite(outputs["short"])
    assert np.abs(outputs["short"][ocean] - outputs["long"][ocean]).max() > 0.05


def test_loader_style_first_guess_follows_the_trained_length_scale():
    """observed_mean units with dataset.first_guess: reconstruct builds the OI with the length scale the model was
    trained with, not a hard-coded one."""
    from depthdif.reconstruction.inference import TileInput, build_batch

    rng = np.random.default_rng(0)
    field = rng.normal(20.0, 1.0, size=(1, 16, 16))
    observed = np.where(rng.random(field.shape) > 0.9, field, np.nan)
    tile = TileInput(observed=observed, ocean=np.ones(field.shape, bool), eo=None, date=20100115,
                     lat_centre=20.0, lon_centre=-110.0)
    guesses = []
    for length in (2.0, 12.0):
        config = load_config([], {"dataset": {"first_guess": True, "temp_v1_band": 0},
                                  "model": {"working_units": "observed_mean"},
                                  "evaluate": {"oi_length_scale_px": length}})
        guesses.append(build_batch([tile], model_settings(config, "temp_v1"))["first_guess"])
    assert not np.allclose(guesses[0], guesses[1])


def test_cells_without_any_observation_within_a_tile_are_left_nan(tmp_path, caplog):
    """Observations only in the western strip: far to the east no tile has an observation of the band, so the
    model cannot know its level there; those cells are NaN (and said), not a mean that looks like data."""
    import logging

    checkpoint = untrained_checkpoint(tmp_path, "temp_v1")
    obs_path = sparse_observations(tmp_path, hidden=0.9)
    ds = xr.open_dataset(obs_path).load()
    west = ds["longitude"] < float(ds["longitude"][20])
    ds["thetao"] = ds["thetao"].where(west)
    strip = tmp_path / "strip.nc"
    ds.to_netcdf(strip)
    with caplog.at_level(logging.WARNING, logger="depthdif"):
        out = reconstruct_file(checkpoint, strip, tmp_path / "out.nc", ensemble_size=2, steps=2)
    recon = xr.open_dataset(out)["thetao"].isel(time=0, depth=0)
    ocean = xr.open_dataset(out)["ocean_mask"].isel(time=0, depth=0).values.astype(bool)
    columns = np.arange(recon.sizes["longitude"])
    near, far = ocean & (columns < 20)[None, :], ocean & (columns >= 20 + 32)[None, :]
    assert np.isfinite(recon.values[near]).all()
    assert far.any() and np.isnan(recon.values[far]).all()
    assert any("no observation of their band within one 32 px tile" in r.getMessage() for r in caplog.records)


def test_ensemble_size_and_steps_must_be_whole_numbers_and_the_output_says_how_it_sampled(tmp_path, caplog):
    checkpoint = untrained_checkpoint(tmp_path, "temp_v1")
    obs = sparse_observations(tmp_path)
    for bad in ({"ensemble_size": 2.5}, {"ensemble_size": True}, {"ensemble_size": 0}, {"steps": 2.7}):
        with pytest.raises(ReconstructionError, match=f"{next(iter(bad))} must be a whole number"):
            reconstruct_file(checkpoint, obs, tmp_path / "out.nc", **{"ensemble_size": 2, "steps": 2, **bad})
    assert not (tmp_path / "out.nc").exists()
    with caplog.at_level("WARNING"):
        out = reconstruct_file(checkpoint, obs, tmp_path / "out.nc", ensemble_size=3, steps=2)
    assert "ensemble_size 3 is odd" in caplog.text
    source = xr.open_dataset(out).attrs["source"]
    assert "3 members in antithetic pairs, 2 DDPM steps" in source and "DDIM" not in source
