"""PatchDataset: the sample contract of both variants, masks, EO degradation, augmentation, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from patch_factory import patch_field, small_config, write_patch_set
from torch.utils.data import default_collate

from depthdif.data.augment import EO_OFFSET_MAX_C, augment_batch, speckle_factors
from depthdif.data.dataset import PatchDataset, collate, unpack_batch
from depthdif.data.index import NpyReader, PatchFileError, PatchIndexError, load_patch, lon_midpoint
from depthdif.data.masking import hidden_fraction
from depthdif.data.normalization import (
    KELVIN_OFFSET,
    Y_MEAN,
    Y_STD,
    temperature_denormalize,
    temperature_normalize,
)

SIZE = 16


@pytest.fixture
def index_csv(tmp_path):
    return write_patch_set(tmp_path, size=SIZE)


def clean(dataset: PatchDataset, item: int) -> np.ndarray:
    return np.load(dataset.paths[item])


def test_temp_v1_sample_contract(index_csv, tmp_path):
    config = small_config(tmp_path, temp_v1_band=2, mask_fraction=0.9, return_info=True)
    ds = PatchDataset(index_csv, config, "val", "temp_v1")
    sample = ds[0]
    assert list(sample) == ["y", "x", "valid_mask", "land_mask", "date", "coords", "info"]
    for key in ("y", "x", "valid_mask", "land_mask"):
        assert sample[key].shape == (1, SIZE, SIZE) and sample[key].dtype == torch.float32
    raw = clean(ds, 0)[2:3]
    land = np.isfinite(raw)
    np.testing.assert_array_equal(sample["land_mask"].numpy(), land.astype(np.float32))
    np.testing.assert_allclose(sample["y"].numpy()[land], temperature_normalize(raw[land]), atol=1e-5)
    assert (sample["y"].numpy()[~land] == 0).all()
    valid = sample["valid_mask"].numpy()
    assert set(np.unique(valid)) <= {0.0, 1.0} and not (valid * ~land).any()
    np.testing.assert_array_equal(sample["x"].numpy(), sample["y"].numpy() * valid)
    assert abs(hidden_fraction(valid > 0, land)[0] - 0.9) <= 0.01
    assert (
        sample["date"].dtype == torch.int64 and sample["date"].ndim == 0 and int(sample["date"]) == 20101115
    )
    assert sample["coords"].shape == (2,) and sample["coords"].dtype == torch.float32
    assert sample["info"]["sample_id"] == ds.sample_ids[0]


def test_val_surface_is_degraded_like_training_and_fixed_by_seed(index_csv, tmp_path):
    """Item 8 of issue 11: validation/evaluation see a satellite-like surface, the same one every time."""
    config = small_config(tmp_path, dataset_variant="eo_4band", mask_fraction=0.5)
    first, again = PatchDataset(index_csv, config, "val")[1], PatchDataset(index_csv, config, "val")[1]
    assert torch.equal(first["eo"], again["eo"])  # fixed by (seed, sample): every method sees this one field
    clean_ds = PatchDataset(index_csv, small_config(tmp_path, dataset_variant="eo_4band", mask_fraction=0.5,
                                                    eo_degraded_val=False), "val")
    ocean = clean_ds[1]["eo"].numpy()[0] != 0
    difference = temperature_denormalize(first["eo"].numpy()[0]) - temperature_denormalize(clean_ds[1]["eo"].numpy()[0])
    offset = difference[ocean].mean()
    assert 0.0 < abs(offset) <= 2.0 + 0.05  # the uniform offset of at most 2 °C
    assert 0.01 < (difference[ocean] - offset).std() < 0.5  # ~1 % speckle of ~20 °C
    assert torch.equal(first["y"], clean_ds[1]["y"])  # only the surface changes


def test_eo_4band_sample_contract(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", mask_fraction=0.5, eo_degraded_val=False)
    ds = PatchDataset(index_csv, config, "val")
    sample = ds[1]
    assert list(sample) == ["y", "x", "valid_mask", "land_mask", "eo", "eo_available", "date", "coords"]
    assert sample["y"].shape == (3, SIZE, SIZE) and sample["eo"].shape == (1, SIZE, SIZE)
    assert sample["eo_available"].shape == (1,) and float(sample["eo_available"]) == 1.0
    raw = clean(ds, 1)
    np.testing.assert_array_equal(sample["land_mask"].numpy(), np.isfinite(raw[1:]).astype(np.float32))
    surface = np.isfinite(raw[0])
    np.testing.assert_allclose(
        sample["eo"].numpy()[0][surface], temperature_normalize(raw[0][surface]), atol=1e-5
    )
    assert (sample["eo"].numpy()[0][~surface] == 0).all()
    valid = sample["valid_mask"].numpy() > 0
    # an independent mask per band: no two bands share their mask
    assert not np.array_equal(valid[0], valid[1]) and not np.array_equal(valid[1], valid[2])
    assert np.all(np.abs(hidden_fraction(valid, raw[1:] == raw[1:]) - 0.5) <= 0.01)


def test_a_real_temperature_of_16_59_stays_valid(tmp_path):
    """16.59 °C normalises to ~0 (and Y_MEAN - 273.15 to exactly 0): it is data, never 'missing'."""
    patches = tmp_path / "patches"
    (patches / "y_npy").mkdir(parents=True)
    field = np.full((4, SIZE, SIZE), 16.59, dtype=np.float32)
    field[:, :4, :] = np.float32(Y_MEAN - KELVIN_OFFSET)
    np.save(patches / "y_npy" / "a.npy", field)
    row = dict(sample_id="a", source_file="f_201011.nc", date=20101115, y0=0, x0=0, patch_size=SIZE, lat0=20,
               lat1=21, lon0=-110, lon1=-109, nodata_fraction=0.0, y_npy_path="y_npy/a.npy", variable="thetao",
               depth_indices="0;1;2;3", depth_values="0;1;2;3", num_channels=4, split="val", window_id="w")  # fmt: skip
    pd.DataFrame([row]).to_csv(patches / "patch_index_split.csv", index=False)
    for variant in ("temp_v1", "eo_4band"):
        ds = PatchDataset(
            patches / "patch_index_split.csv", small_config(tmp_path, mask_fraction=0.5), "val", variant
        )
        sample = ds[0]
        assert (sample["land_mask"] == 1).all()
        assert np.abs(sample["y"].numpy()).max() < 1e-3
        valid = sample["valid_mask"].numpy() > 0
        assert abs(valid.mean() - 0.5) <= 0.01  # half observed: zeros were not taken for gaps
        np.testing.assert_array_equal(sample["x"].numpy()[valid], sample["y"].numpy()[valid])
        if variant == "eo_4band":
            assert float(sample["eo_available"]) == 1.0


def test_fill_value_is_land(tmp_path):
    csv = write_patch_set(tmp_path, size=SIZE, land=False)
    frame = pd.read_csv(csv)
    path = csv.parent / frame["y_npy_path"][0]
    field = np.load(path)
    field[:, 0, :] = -999.0
    np.save(path, field)
    ds = PatchDataset(csv, small_config(tmp_path, fill_value=-999.0), "train", "temp_v1")
    ds_val = PatchDataset(csv, small_config(tmp_path, fill_value=-999.0), "all", "temp_v1")
    sample = ds_val[0]
    assert (sample["land_mask"][0, 0] == 0).all() and (sample["land_mask"][0, 1:] == 1).all()
    assert (sample["y"][0, 0] == 0).all() and (sample["valid_mask"][0, 0] == 0).all()
    assert len(ds) == 12 and len(ds_val) == 16


def test_date_is_the_index_date_column_not_the_file_name(tmp_path):
    csv = write_patch_set(tmp_path, size=SIZE)
    frame = pd.read_csv(csv)
    frame["source_file"] = "cmems_mod_glo_phy_my_0.083deg_P1M-m_thetao_120.00W-117.42W_2010-07-01.nc"
    frame["date"] = 20100716
    frame.to_csv(csv, index=False)
    ds = PatchDataset(csv, small_config(tmp_path), "all", "temp_v1")
    assert {int(ds[k]["date"]) for k in range(len(ds))} == {20100716}
    frame.loc[0, "date"] = 20101332
    frame.to_csv(csv, index=False)
    with pytest.raises(PatchIndexError, match="20101332"):
        PatchDataset(csv, small_config(tmp_path), "all", "temp_v1")


def test_lon_midpoint_is_dateline_safe():
    assert lon_midpoint(170.0, -170.0) == pytest.approx(180.0)
    assert lon_midpoint(-170.0, 170.0) == pytest.approx(180.0)
    assert lon_midpoint(-10.0, 10.0) == pytest.approx(0.0, abs=1e-12)
    assert lon_midpoint(350.0, 10.0) == pytest.approx(0.0, abs=1e-12)
    assert lon_midpoint(-120.0, -110.0) == pytest.approx(-115.0)
    np.testing.assert_allclose(lon_midpoint(np.array([170.0, 10.0]), np.array([-170.0, 20.0])), [180.0, 15.0])


def test_coords_are_the_patch_centre(tmp_path):
    csv = write_patch_set(tmp_path, size=SIZE)
    frame = pd.read_csv(csv)
    frame.loc[0, ["lat0", "lat1", "lon0", "lon1"]] = [10.0, 12.0, 170.0, -170.0]
    frame.to_csv(csv, index=False)
    ds = PatchDataset(csv, small_config(tmp_path), "train", "temp_v1")
    np.testing.assert_allclose(ds[0]["coords"].numpy(), [11.0, 180.0])


def test_val_is_deterministic_across_objects_and_calls(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", eo_dropout_prob=1.0)
    a, b = PatchDataset(index_csv, config, "val"), PatchDataset(index_csv, config, "val")
    for item in range(len(a)):
        first, again, other = a[item], a[item], b[item]
        for key in ("x", "valid_mask", "eo", "eo_available"):
            assert torch.equal(first[key], again[key]) and torch.equal(first[key], other[key])
        assert float(first["eo_available"]) == 1.0  # no dropout (nor any degradation) outside training
    # the seed decides the masks
    c = PatchDataset(index_csv, config, "val", seed=123)
    assert not torch.equal(a[0]["valid_mask"], c[0]["valid_mask"])


def test_val_masks_same_in_worker_processes(index_csv, tmp_path):
    ds = PatchDataset(index_csv, small_config(tmp_path, dataset_variant="eo_4band"), "val")
    direct = torch.stack([ds[i]["valid_mask"] for i in range(len(ds))])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    via_workers = torch.cat([batch["valid_mask"] for batch in loader])
    assert torch.equal(direct, via_workers)


def test_train_masks_are_fresh_and_follow_torch_seed(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", enable_transform=False)
    for reuse in (0, 4):
        config["dataset"]["train_mask_reuse"] = reuse
        torch.manual_seed(5)
        ds = PatchDataset(index_csv, config, "train")
        first, second = ds[0]["valid_mask"], ds[0]["valid_mask"]
        assert not torch.equal(first, second)  # a new mask every time the sample is seen
        torch.manual_seed(5)  # the same torch seed (seed_everything) -> the same run
        assert torch.equal(PatchDataset(index_csv, config, "train")[0]["valid_mask"], first)
        torch.manual_seed(6)  # another seed (as each DataLoader worker gets) -> another stream
        assert not torch.equal(ds[0]["valid_mask"], first)


def test_training_samples_hide_one_of_the_listed_fractions(index_csv, tmp_path):
    fractions = [0.5, 0.95]
    config = small_config(tmp_path, dataset_variant="eo_4band", mask_fraction=0.75, train_mask_fractions=fractions)
    for reuse in (0, 4):
        config["dataset"]["train_mask_reuse"] = reuse
        ds = PatchDataset(index_csv, config, "train")
        seen = []
        for _ in range(4):
            for i in range(len(ds)):
                sample = ds[i]
                share = hidden_fraction(sample["valid_mask"].numpy() > 0, sample["land_mask"].numpy() > 0)
                nearest = min(fractions, key=lambda f: abs(f - share[0]))
                assert np.all(np.abs(share - nearest) <= 0.01), share  # one listed share for all bands
                seen.append(nearest)
        assert set(seen) == set(fractions)
    # validation keeps dataset.mask_fraction, and an explicit fraction (the evaluation's) wins over the list
    val = PatchDataset(index_csv, config, "val")[0]
    assert np.all(np.abs(hidden_fraction(val["valid_mask"].numpy() > 0, val["land_mask"].numpy() > 0) - 0.75) <= 0.01)
    fixed = PatchDataset(index_csv, config, "train", mask_fraction=0.5)[0]
    assert np.all(np.abs(hidden_fraction(fixed["valid_mask"].numpy() > 0, fixed["land_mask"].numpy() > 0) - 0.5) <= 0.01)


def test_eo_dropout_zeroes_eo_and_flags_it(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", eo_dropout_prob=1.0)
    sample = PatchDataset(index_csv, config, "train")[0]
    assert float(sample["eo_available"]) == 0.0 and (sample["eo"] == 0).all()


def test_eo_offset_is_uniform_and_bounded(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", eo_dropout_prob=0.0, eo_speckle=False,
                          enable_transform=False, eo_degraded_val=False)  # fmt: skip
    ds, ref = PatchDataset(index_csv, config, "train"), PatchDataset(index_csv, config, "all")
    offsets = []
    for _ in range(20):
        eo, clean_eo = ds[0]["eo"].numpy()[0], ref[0]["eo"].numpy()[0]
        ocean = clean_eo != 0
        shift = (eo - clean_eo)[ocean] * Y_STD  # °C
        assert np.ptp(shift) < 1e-3  # one offset for the whole patch
        assert (eo[~ocean] == 0).all()
        offsets.append(shift.mean())
    offsets = np.array(offsets)
    assert np.all(np.abs(offsets) <= EO_OFFSET_MAX_C + 1e-3) and offsets.std() > 0.5


def test_eo_speckle_is_multiplicative_and_clamped(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", eo_dropout_prob=0.0, eo_random_offset=False,
                          enable_transform=False, eo_degraded_val=False)  # fmt: skip
    ds, ref = PatchDataset(index_csv, config, "train"), PatchDataset(index_csv, config, "all")
    to_c = lambda z: z * Y_STD + Y_MEAN - KELVIN_OFFSET  # noqa: E731
    eo, clean_eo = ds[0]["eo"].numpy()[0], ref[0]["eo"].numpy()[0]
    ocean = clean_eo != 0
    ratio = to_c(eo[ocean]) / to_c(clean_eo[ocean])
    assert ratio.min() >= 0.9 - 1e-4 and ratio.max() <= 1.1 + 1e-4
    assert 0.005 < ratio.std() < 0.015  # 1 + 0.01 N(0, 1)
    factors = speckle_factors(np.random.default_rng(0), (200_000,))
    assert factors.min() >= 0.9 and factors.max() <= 1.1 and abs(factors.std() - 0.01) < 5e-4


def dihedral_images(image: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        rotated = np.rot90(image, k, axes=(-2, -1))
        out += [rotated, rotated[..., ::-1]]
    return out


def test_augmentation_rotates_data_and_masks_together(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", eo_dropout_prob=0.0, eo_random_offset=False,
                          eo_speckle=False)  # fmt: skip
    ds, ref = PatchDataset(index_csv, config, "train"), PatchDataset(index_csv, config, "all")
    clean_y, clean_land = ref[0]["y"].numpy(), ref[0]["land_mask"].numpy()
    seen = set()
    for _ in range(40):
        sample = ds[0]
        y, land = sample["y"].numpy(), sample["land_mask"].numpy()
        matches = [k for k, im in enumerate(dihedral_images(clean_y)) if np.array_equal(im, y)]
        assert len(matches) == 1, "y is not a rot90/flip of the clean patch"
        np.testing.assert_array_equal(land, dihedral_images(clean_land)[matches[0]])
        np.testing.assert_array_equal(sample["eo"].numpy(), dihedral_images(ref[0]["eo"].numpy())[matches[0]])
        assert not (sample["valid_mask"].numpy() * (1 - land)).any()
        assert sample["y"].is_contiguous() and sample["x"].is_contiguous()
        seen.add(matches[0])
    assert len(seen) >= 6  # all orientations occur


def test_missing_column_is_named(index_csv, tmp_path):
    frame = pd.read_csv(index_csv).drop(columns=["num_channels"])
    frame.to_csv(index_csv, index=False)
    with pytest.raises(PatchIndexError, match="num_channels"):
        PatchDataset(index_csv, small_config(tmp_path), "train")


def test_unknown_split_and_variant(index_csv, tmp_path):
    with pytest.raises(PatchIndexError, match="test"):
        PatchDataset(index_csv, small_config(tmp_path), "test")
    with pytest.raises(PatchIndexError, match="variant"):
        PatchDataset(index_csv, small_config(tmp_path), "train", "temp_v2")


def test_missing_npy_names_row_and_file(index_csv, tmp_path):
    frame = pd.read_csv(index_csv)
    (index_csv.parent / frame["y_npy_path"][0]).unlink()
    ds = PatchDataset(index_csv, small_config(tmp_path), "train")
    with pytest.raises(
        PatchFileError, match=r"row 0 \(sample_id 201011_0_0\).*201011_0_0\.npy.*does not exist"
    ):
        ds[0]


def test_wrong_shape_names_row_and_file(index_csv, tmp_path):
    frame = pd.read_csv(index_csv)
    np.save(index_csv.parent / frame["y_npy_path"][1], np.zeros((4, SIZE, SIZE + 1), dtype=np.float32))
    ds = PatchDataset(index_csv, small_config(tmp_path), "train")
    with pytest.raises(PatchFileError, match=r"row 1 .*201011_0_16\.npy has shape \(4, 16, 17\)"):
        ds[1]
    with pytest.raises(PatchFileError, match="has shape"):
        load_patch(frame.iloc[1], index_csv.parent)


def test_path_escaping_the_index_folder_is_refused(index_csv, tmp_path):
    frame = pd.read_csv(index_csv)
    frame.loc[4, "y_npy_path"] = "../../elsewhere/x.npy"  # a train row
    frame.loc[5, "y_npy_path"] = str(tmp_path / "absolute.npy")  # absolute, outside the index folder
    frame.to_csv(index_csv, index=False)
    with pytest.raises(PatchFileError, match=r"row 4 .*outside the index folder"):
        PatchDataset(index_csv, small_config(tmp_path), "train")
    for row in (4, 5):
        with pytest.raises(PatchFileError, match="outside"):
            load_patch(frame.iloc[row], index_csv.parent)


def test_load_patch_returns_celsius_with_nan(index_csv):
    frame = pd.read_csv(index_csv)
    patch = load_patch(frame.iloc[2], index_csv.parent)
    np.testing.assert_array_equal(patch, np.load(index_csv.parent / frame["y_npy_path"][2]))
    assert patch.dtype == np.float32 and np.isnan(patch).any()


def test_reader_falls_back_to_np_load_for_other_layouts(tmp_path):
    field = patch_field(np.random.default_rng(0), 8, 2)
    reader = NpyReader()

    def read(name):
        out = np.full((2, 8, 8), -1.0, dtype=np.float32)
        reader.read_into(str(tmp_path / name), (2, 8, 8), "row 0", out)
        return out

    cases = {"c32.npy": field, "f64.npy": field.astype(np.float64), "fortran.npy": np.asfortranarray(field)}
    for name, array in cases.items():
        np.save(tmp_path / name, array)
        np.testing.assert_array_equal(read(name), field)
    # trailing bytes: not the fast path's layout, so np.load decides (it reads the array and ignores them)
    (tmp_path / "long.npy").write_bytes((tmp_path / "c32.npy").read_bytes() + b"extra")
    np.testing.assert_array_equal(read("long.npy"), field)
    (tmp_path / "short.npy").write_bytes((tmp_path / "c32.npy").read_bytes()[:-8])
    with pytest.raises(PatchFileError, match="short.npy"):
        read("short.npy")


def test_batches_equal_collated_samples(index_csv, tmp_path):
    """__getitems__ (what the DataLoader calls) gives exactly default_collate of the single samples."""
    for variant in ("temp_v1", "eo_4band"):
        config = small_config(tmp_path, dataset_variant=variant, return_info=True)
        ds = PatchDataset(index_csv, config, "val")
        items = [3, 0, 2]
        built = ds.__getitems__(items)
        batch = collate(built)
        reference = default_collate([ds[i] for i in items])
        assert list(batch) == list(reference) and batch["y"].is_contiguous()
        for key, value in reference.items():
            if key == "info":
                assert batch["info"]["sample_id"] == value["sample_id"]
                assert torch.equal(batch["info"]["y0"], value["y0"])
            else:
                assert torch.equal(batch[key], value), key
        # the samples it holds are those of the single calls too (the default collate path)
        assert torch.equal(default_collate(list(built))["x"], reference["x"])
        assert built[1]["info"]["sample_id"] == ds.sample_ids[0]


def test_first_guess_channels(index_csv, tmp_path, monkeypatch):
    import depthdif.baselines as baselines

    calls = []

    def fake_first_guess(x, valid, land, eo, length_scale_px):
        calls.append((x.shape, valid.dtype, land.dtype, None if eo is None else eo.shape, length_scale_px))
        return np.full(x.shape, 0.5, dtype=np.float32)

    monkeypatch.setattr(baselines, "first_guess_estimate", fake_first_guess)
    config = small_config(tmp_path, dataset_variant="eo_4band", first_guess=True)
    sample = PatchDataset(index_csv, config, "val")[0]
    assert calls == [((3, SIZE, SIZE), np.dtype(bool), np.dtype(bool), (SIZE, SIZE), 6.0)]
    guess = sample["first_guess"].numpy()
    land = sample["land_mask"].numpy() > 0
    assert guess.shape == (3, SIZE, SIZE) and (guess[land] == 0.5).all() and (guess[~land] == 0).all()


def test_first_guess_with_the_real_baseline(index_csv, tmp_path):
    config = small_config(tmp_path, first_guess=True, mask_fraction=0.8)
    sample = PatchDataset(index_csv, config, "val", "temp_v1")[0]
    guess, land = sample["first_guess"].numpy(), sample["land_mask"].numpy() > 0
    assert guess.shape == (1, SIZE, SIZE) and np.isfinite(guess).all() and (guess[~land] == 0).all()
    # closer to the truth at hidden ocean pixels than the 0 that x holds there
    hidden = land & (sample["valid_mask"].numpy() == 0)
    y = sample["y"].numpy()
    assert np.abs(guess - y)[hidden].mean() < np.abs(y)[hidden].mean()


def test_augment_batch_turns_every_sample_consistently(index_csv, tmp_path):
    config = small_config(tmp_path, dataset_variant="eo_4band", first_guess=True, return_info=True)
    ds = PatchDataset(index_csv, config, "val")
    batch = collate(ds.__getitems__(list(range(len(ds)))))
    original = {key: value.clone() for key, value in batch.items() if isinstance(value, torch.Tensor)}
    seen = set()
    generator = torch.Generator().manual_seed(0)
    for _ in range(6):
        turned = augment_batch({k: v.clone() for k, v in original.items()}, generator)
        for k in range(len(ds)):
            options = dihedral_images(original["y"][k].numpy())
            code = [i for i, im in enumerate(options) if np.array_equal(im, turned["y"][k].numpy())]
            assert len(code) == 1
            for key in ("x", "valid_mask", "land_mask", "eo", "first_guess"):
                expected = dihedral_images(original[key][k].numpy())[code[0]]
                np.testing.assert_array_equal(turned[key][k].numpy(), expected)
            seen.add(code[0])
        assert torch.equal(turned["coords"], original["coords"]) and torch.equal(
            turned["date"], original["date"]
        )
    assert len(seen) == 8


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("variant", ["temp_v1", "eo_4band"])
def test_packed_batches_unpack_to_the_same_samples(index_csv, tmp_path, variant, split):
    config = small_config(tmp_path, dataset_variant=variant, first_guess=True, return_info=True,
                          train_mask_reuse=4)  # fmt: skip
    items = [0, 2, 1]
    whole = PatchDataset(index_csv, config, split, augment=False)
    packed = PatchDataset(index_csv, config, split, augment=False, packed=True)
    torch.manual_seed(3)  # the same training draws on both sides (the generator follows torch's seed)
    expected = collate(whole.__getitems__(items))
    torch.manual_seed(3)
    batch = collate(packed.__getitems__(items))
    assert "x" not in batch
    assert batch["valid_mask"].dtype == torch.bool and batch["land_mask"].dtype == torch.bool
    assert unpack_batch(batch) is batch
    assert list(batch) != list(expected) and set(batch) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert batch[key].dtype == value.dtype and torch.equal(batch[key], value), key
    assert batch["info"]["sample_id"] == expected["info"]["sample_id"]
    # unpacking is idempotent, and single samples of a packed dataset are whole
    assert all(torch.equal(unpack_batch(dict(expected))[k], v) for k, v in expected.items() if k != "info")
    sample = packed[0]
    assert sample["valid_mask"].dtype == torch.float32 and "x" in sample
