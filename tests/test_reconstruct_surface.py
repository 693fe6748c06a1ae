"""`depthdif reconstruct` of an eo_4band model conditioned on surface variables (export.surface_variables: zos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from batch_factory import TinyDataModule

from depthdif.cf.errors import FieldFileError
from depthdif.config import load_config
from depthdif.glorys import DEPTH_LEVELS_M
from depthdif.models.module import (
    DepthDifModule,
    model_settings,
    num_target_bands,
    sampling_train_config,
    save_model,
)
from depthdif.reconstruction import gridded
from depthdif.reconstruction.gridded import ReconstructionError, reconstruct_file
from depthdif.reconstruction.tiling import tile_origins
from depthdif.train import fit_first_guess

REAL = Path(__file__).parent / "data" / "glorys12_nwmexico" / "mercatorglorys12v1_gl12_mean_201011.nc"
# 48 x 64 cells of the real sample across the coast of Baja California (land and ocean): 2 x 3 tiles of 32 px
WINDOW = {"latitude": slice(96, 144), "longitude": slice(20, 84)}
SIZE = 32


def eo_config(surface_variables: list[str], first_guess: bool = False) -> dict:
    return load_config([], {"export": {"depth_indices": [0, 7, 14, 21], "patch_size": SIZE, "stride": SIZE,
                                       "surface_variables": surface_variables},
                            "dataset": {"first_guess": first_guess},
                            "model": {"dim": 8, "dim_mults": [1, 2]}})


def settings_of(config: dict) -> dict:
    return model_settings(config, "eo_4band", [DEPTH_LEVELS_M[i] for i in config["export"]["depth_indices"]])


@pytest.fixture(scope="module")
def zos_checkpoint(tmp_path_factory) -> Path:
    """An untrained eo_4band model with export.surface_variables [zos], first guess fitted on tiny patches."""
    config = eo_config(["zos"])
    module = DepthDifModule(settings_of(config), sampling_train_config(), num_target_bands(config, "eo_4band"))
    assert module.surface_variables == ("zos",)
    fit_first_guess(module, TinyDataModule("eo_4band", train_size=32, batch_size=16, size=SIZE, surface_variables=1),
                    config)
    path = tmp_path_factory.mktemp("ckpt") / "eo_zos.ckpt"
    save_model(module, module.state_dict(), path)
    return path


def window() -> xr.Dataset:
    return xr.open_dataset(REAL).isel(WINDOW).load()


def observations(tmp_path: Path) -> Path:
    ds = window()
    field = ds["thetao"]
    keep = np.random.default_rng(0).random(field.shape) > 0.9
    out = ds[["thetao"]].copy()
    out["thetao"] = field.where(keep)
    out["ocean_mask"] = (field.dims, np.isfinite(field.values).astype(np.int8))
    path = tmp_path / "sparse.nc"
    out.to_netcdf(path)
    return path


def surface_file(tmp_path: Path, name: str, zos_factor: float = 1.0, units: str = "m", with_zos: bool = True) -> Path:
    """thetao (+ zos) of the window; zos stored int16-packed as in GLORYS12, in m or (``zos_factor`` 100) cm."""
    ds = window()[["thetao", "zos"]]
    if not with_zos:
        ds = ds.drop_vars("zos")
    else:
        scale = ds["zos"].encoding["scale_factor"]
        ds["zos"] = (ds["zos"] * zos_factor).assign_attrs(units=units, standard_name="sea_surface_height_above_geoid")
        ds["zos"].encoding = {"dtype": "int16", "scale_factor": scale * zos_factor, "add_offset": 0.0,
                              "_FillValue": np.int16(-32767)}
    path = tmp_path / name
    ds.to_netcdf(path)
    return path


def captured_batches(monkeypatch) -> list[dict]:
    """The batches `reconstruct_grid` hands to the sampler (copies), collected while it runs."""
    batches: list[dict] = []
    sample = gridded.sample_celsius

    def spy(module, batch, *args, **kwargs):
        batches.append({key: value.clone() for key, value in batch.items() if torch.is_tensor(value)})
        return sample(module, batch, *args, **kwargs)

    monkeypatch.setattr(gridded, "sample_celsius", spy)
    return batches


def expected_surface(zos_m: np.ndarray, sst: np.ndarray) -> np.ndarray:
    """(tiles, 1, 32, 32) of the contract: zos in m at the tile's cells, 0 on land / where the EO is NaN."""
    tiles = []
    for y0, x0 in tile_origins(zos_m.shape, SIZE, SIZE // 2):
        cut = (slice(y0, y0 + SIZE), slice(x0, x0 + SIZE))
        tiles.append(np.where(np.isfinite(sst[cut]) & np.isfinite(zos_m[cut]), zos_m[cut], 0.0)[None])
    return np.stack(tiles)


def test_reconstruct_feeds_zos_to_the_model_in_metres(tmp_path, zos_checkpoint, monkeypatch):
    obs = observations(tmp_path)
    truth = window().isel(time=0)
    zos, sst = truth["zos"].values, truth["thetao"].isel(depth=0).values
    assert np.isnan(sst).any() and np.isfinite(sst).any()  # the window holds land and ocean
    surfaces = {}
    for name, factor, units in (("m", 1.0, "m"), ("cm", 100.0, "cm")):
        batches = captured_batches(monkeypatch)
        out = reconstruct_file(zos_checkpoint, obs, tmp_path / f"out_{name}.nc",
                               surface=surface_file(tmp_path, f"surface_{name}.nc", factor, units),
                               ensemble_size=1, steps=2)
        assert len(batches) == 1  # 6 tiles, one batch
        surfaces[name] = batches[0]["surface"].numpy()
        assert surfaces[name].dtype == np.float32 and surfaces[name].shape == (6, 1, SIZE, SIZE)
        np.testing.assert_allclose(surfaces[name], expected_surface(zos, sst), rtol=0, atol=1e-6)
        # the surface is 0 wherever the contract's EO is (land)
        assert (surfaces[name][batches[0]["eo"].numpy() == 0] == 0).all()
        recon = xr.open_dataset(out)["thetao"].isel(time=0, depth=0).values
        ocean = xr.open_dataset(out)["ocean_mask"].isel(time=0, depth=0).values.astype(bool)
        assert np.isfinite(recon[ocean]).all() and np.isnan(recon[~ocean]).all()
    np.testing.assert_allclose(surfaces["cm"], surfaces["m"], rtol=1e-6, atol=1e-7)


def test_a_surface_without_zos_is_refused_naming_it(tmp_path, zos_checkpoint):
    obs = observations(tmp_path)
    no_zos = surface_file(tmp_path, "sst_only.nc", with_zos=False)
    with pytest.raises(ReconstructionError, match=r"no variable 'zos'.*export.surface_variables \['zos'\]") as err:
        reconstruct_file(zos_checkpoint, obs, tmp_path / "out.nc", surface=no_zos)
    assert str(no_zos) in str(err.value) and "GLORYS12" in str(err.value)
    kelvin = surface_file(tmp_path, "zos_in_k.nc", units="K")
    with pytest.raises(FieldFileError, match="units 'K' are not a length"):
        reconstruct_file(zos_checkpoint, obs, tmp_path / "out.nc", surface=kelvin)
    assert not (tmp_path / "out.nc").exists()


def test_profiles_reconstruct_with_zos_from_the_surface(tmp_path, zos_checkpoint, monkeypatch):
    from depthdif.reconstruction.profiles import reconstruct

    sample = window()
    thetao = sample["thetao"].isel(time=0)
    rows, cols = np.nonzero(np.isfinite(thetao.isel(depth=-1).values))
    pick = np.random.default_rng(1).choice(rows.size, 20, replace=False)
    profiles = xr.Dataset({
        "TEMP": (("N_PROF", "N_LEVELS"), thetao.values[:, rows[pick], cols[pick]].T, {"units": "degree_Celsius"}),
        "DEPTH": ("N_LEVELS", sample["depth"].values, {"units": "m", "positive": "down"}),
        "LATITUDE": ("N_PROF", sample["latitude"].values[rows[pick]]),
        "LONGITUDE": ("N_PROF", sample["longitude"].values[cols[pick]]),
        "JULD": ("N_PROF", np.full(20, np.datetime64("2010-11-16", "ns"))),
    })
    batches = captured_batches(monkeypatch)
    out = reconstruct(profiles, surface_file(tmp_path, "surface.nc"), zos_checkpoint, ensemble_size=1, steps=2)
    assert out.attrs["profiles_used"] == 20
    np.testing.assert_allclose(batches[0]["surface"].numpy(),
                               expected_surface(sample["zos"].isel(time=0).values, thetao.isel(depth=0).values),
                               rtol=0, atol=1e-6)
    with pytest.raises(ReconstructionError, match="'zos'"):
        reconstruct(profiles, surface_file(tmp_path, "sst.nc", with_zos=False), zos_checkpoint)


def test_build_batch_regresses_the_first_guess_on_the_surface_variables():
    """dataset.first_guess: the loader-style first guess is a regression on [SST, zos], so a band that follows
    the sea level (not the SST) is guessed from zos; a model without surface variables gets no ``surface``."""
    from depthdif.reconstruction.inference import TileInput, build_batch

    rng = np.random.default_rng(0)
    size = 16
    yy, xx = np.mgrid[0:size, 0:size] / size
    zos = 0.3 * np.sin(3 * xx) * np.cos(2 * yy) + 0.1 * yy  # m
    truth = np.stack([20.0 + 8.0 * zos - 1.0 * k for k in range(3)])  # the bands follow the sea level
    eo = 22.0 + rng.normal(0, 0.5, (size, size))  # an SST unrelated to them
    eo[0, :3] = np.nan  # "land" in the EO
    observed = np.where(rng.random(truth.shape) > 0.9, truth, np.nan)
    tile = TileInput(observed=observed, ocean=np.ones(truth.shape, bool), eo=eo, date=20101115, lat_centre=22.0,
                     lon_centre=-115.0, surface=zos[None])
    with_zos = build_batch([tile], settings_of(eo_config(["zos"], first_guess=True)))
    surface = with_zos["surface"][0, 0].numpy()
    np.testing.assert_allclose(surface[1:], zos[1:], atol=1e-6)
    assert (surface[0, :3] == 0).all()  # no EO there: no surface either
    without = build_batch([tile], settings_of(eo_config([], first_guess=True)))
    assert "surface" not in without

    def error(batch):
        hidden = ~np.isfinite(observed)
        from depthdif.data.normalization import temperature_normalize

        return np.abs(batch["first_guess"][0].numpy() - temperature_normalize(truth))[hidden].mean()

    assert error(with_zos) < 0.5 * error(without)
    with pytest.raises(ValueError, match="surface variables"):
        build_batch([TileInput(observed, tile.ocean, eo, 20101115, 22.0, -115.0)],
                    settings_of(eo_config(["zos"])))


def test_month_reconstruction_reads_the_surface_variables_from_its_source(tmp_path):
    from depthdif.reconstruction.month import _surface_fields

    shape = (169, 181)
    fields = _surface_fields(settings_of(eo_config(["zos"])), REAL, "thetao", (), shape)
    expected = xr.open_dataset(REAL)["zos"].isel(time=0).values
    assert fields.shape == (1, *shape)
    np.testing.assert_allclose(fields[0], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.isnan(fields[0]), np.isnan(expected))
    assert _surface_fields(settings_of(eo_config([])), REAL, "thetao", (), shape) is None
    no_zos = tmp_path / "no_zos.nc"
    xr.open_dataset(REAL).drop_vars("zos").to_netcdf(no_zos)
    with pytest.raises(ReconstructionError, match=r"export.surface_variables \['zos'\].*zos"):
        _surface_fields(settings_of(eo_config(["zos"])), no_zos, "thetao", (), shape)


def test_missing_sea_level_is_no_anomaly_not_zero_metres_and_none_at_all_is_refused(tmp_path, zos_checkpoint,
                                                                                  monkeypatch, caplog):
    """A new user's case: zos NaN over part of the ocean used to enter the model as 0 m (a false signal next to
    sea levels of decimetres, 1.7 °C of change in the output); NaN everywhere was accepted silently."""
    obs = observations(tmp_path)
    truth = window().isel(time=0)
    sst = truth["thetao"].isel(depth=0).values
    ds = window()[["thetao", "zos"]]
    half = ds["zos"].copy()
    half[..., half.shape[-1] // 2:] = np.nan
    ds["zos"] = half
    path = tmp_path / "half.nc"
    ds.to_netcdf(path)
    batches = captured_batches(monkeypatch)
    with caplog.at_level("WARNING"):
        reconstruct_file(zos_checkpoint, obs, tmp_path / "out.nc", surface=path, ensemble_size=1, steps=2)
    assert "no value at" in caplog.text and "'zos'" in caplog.text
    surface = batches[0]["surface"].numpy()
    assert np.isfinite(surface).all()
    # where zos is NaN on the ocean, each tile holds its own mean of the field, not 0
    for tile, (y0, x0) in zip(surface, tile_origins(sst.shape, SIZE, SIZE // 2), strict=True):
        cut = (slice(y0, y0 + SIZE), slice(x0, x0 + SIZE))
        field, ocean = half.values[0][cut], np.isfinite(sst[cut])
        gap = ocean & np.isnan(field)
        if gap.any() and (ocean & np.isfinite(field)).any():
            np.testing.assert_allclose(tile[0][gap], np.nanmean(np.where(ocean, field, np.nan)), rtol=1e-5)
    ds["zos"] = half * np.nan
    ds.to_netcdf(tmp_path / "none.nc")
    with pytest.raises(ReconstructionError, match="no value on any ocean cell"):
        reconstruct_file(zos_checkpoint, obs, tmp_path / "out2.nc", surface=tmp_path / "none.nc")
