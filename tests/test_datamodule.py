"""DepthDifDataModule: the window split is honoured, random mode warns, val is fixed, loader options apply."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from patch_factory import small_config, write_patch_set

from depthdif.data.datamodule import DepthDifDataModule, random_split
from depthdif.data.index import PatchIndexError


@pytest.fixture
def index_csv(tmp_path):
    return write_patch_set(tmp_path, size=16, windows=5, val_windows=(1, 3))


def config_with(tmp_path, split=None, loader=None, **dataset):
    config = small_config(tmp_path, return_info=True, **dataset)
    config["split"].update(split or {})
    config["loader"].update(loader or {})
    return config


def ids_of(loader) -> list[str]:
    return [sid for batch in loader for sid in batch["info"]["sample_id"]]


def test_index_split_is_honoured_no_val_window_in_training(index_csv, tmp_path):
    dm = DepthDifDataModule(config_with(tmp_path), variant="eo_4band")  # default index path
    frame = pd.read_csv(index_csv, dtype={"sample_id": str})
    window_of = dict(zip(frame["sample_id"], frame["window_id"], strict=True))
    train_ids, val_ids = ids_of(dm.train_dataloader()), ids_of(dm.val_dataloader())
    val_windows = set(frame.loc[frame["split"] == "val", "window_id"])
    assert val_windows == {"w1_0", "w3_0"}
    assert not {window_of[s] for s in train_ids} & val_windows
    assert {window_of[s] for s in val_ids} == val_windows
    assert sorted(train_ids) == sorted(frame.loc[frame["split"] == "train", "sample_id"])
    assert dm.train_set is not dm.val_set and dm.train_set.train and not dm.val_set.train


def test_a_window_on_both_sides_is_refused(index_csv, tmp_path):
    frame = pd.read_csv(index_csv)
    frame.loc[frame.index[frame["window_id"] == "w1_0"][0], "split"] = "train"
    frame.to_csv(index_csv, index=False)
    with pytest.raises(PatchIndexError, match="w1_0.*both train and val"):
        DepthDifDataModule(config_with(tmp_path), index_csv=index_csv).setup("fit")


def test_missing_index_says_what_to_run(tmp_path):
    with pytest.raises(PatchIndexError, match="snakemake split"):
        DepthDifDataModule(config_with(tmp_path)).setup("fit")


def test_random_mode_warns_and_is_seeded(index_csv, tmp_path):
    config = config_with(tmp_path, split={"mode": "random", "val_fraction": 0.25, "seed": 3})
    dm = DepthDifDataModule(config, variant="temp_v1")
    with pytest.warns(UserWarning, match="locations leak"):
        dm.setup("fit")
    n = len(pd.read_csv(index_csv))
    assert len(dm.val_set) == round(0.25 * n) and len(dm.train_set) == n - round(0.25 * n)
    assert not set(dm.train_set.sample_ids) & set(dm.val_set.sample_ids)
    frame = pd.read_csv(index_csv)
    again = random_split(frame, 0.25, 3)["split"].tolist()
    assert again == random_split(frame, 0.25, 3)["split"].tolist()
    assert again != random_split(frame, 0.25, 4)["split"].tolist()
    # random rows ignore windows: with these sizes some window ends up on both sides (the leak)
    both = random_split(frame, 0.25, 3).groupby("window_id")["split"].nunique()
    assert (both > 1).any()


def test_val_loader_is_the_same_every_epoch(index_csv, tmp_path):
    dm = DepthDifDataModule(config_with(tmp_path), variant="eo_4band")
    epochs = [list(dm.val_dataloader()) for _ in range(2)]
    assert ids_of(epochs[0]) == list(dm.val_set.sample_ids)  # no shuffle
    for first, second in zip(*epochs, strict=True):
        for key in ("x", "valid_mask", "eo", "eo_available"):
            assert torch.equal(first[key], second[key])


def test_train_loader_shuffles_and_draws_fresh_masks(index_csv, tmp_path):
    dm = DepthDifDataModule(config_with(tmp_path, loader={"batch_size": 20}), variant="temp_v1")
    torch.manual_seed(0)
    a, b = next(iter(dm.train_dataloader())), next(iter(dm.train_dataloader()))
    assert a["info"]["sample_id"] != b["info"]["sample_id"]  # another order
    order = [b["info"]["sample_id"].index(s) for s in a["info"]["sample_id"]]
    assert not torch.equal(a["valid_mask"], b["valid_mask"][order])  # same samples, new masks


def test_batches_follow_the_contract(index_csv, tmp_path):
    dm = DepthDifDataModule(config_with(tmp_path, loader={"batch_size": 3}), variant="eo_4band")
    batch = next(iter(dm.val_dataloader()))
    assert batch["y"].shape == (3, 3, 16, 16) and batch["eo"].shape == (3, 1, 16, 16)
    assert batch["eo_available"].shape == (3, 1) and batch["date"].shape == (3,)
    assert batch["date"].dtype == torch.int64 and batch["coords"].shape == (3, 2)


def test_loader_options(index_csv, tmp_path):
    loader = {"batch_size": 5, "num_workers": 2, "pin_memory": False, "persistent_workers": True,
              "prefetch_factor": 3}  # fmt: skip
    dm = DepthDifDataModule(config_with(tmp_path, loader=loader))
    train = dm.train_dataloader()
    assert train.batch_size == 5 and train.num_workers == 2 and train.persistent_workers
    assert train.prefetch_factor == 3
    assert len(next(iter(train))["y"]) == 5
    single = DepthDifDataModule(config_with(tmp_path, loader={"num_workers": 0, "persistent_workers": True}))
    assert single.val_dataloader().num_workers == 0  # options that need workers are left out


def test_training_batches_are_packed_and_the_device_hook_unpacks_them(index_csv, tmp_path):
    from types import SimpleNamespace

    dm = DepthDifDataModule(config_with(tmp_path, loader={"batch_size": 4}), variant="eo_4band")
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    packed = next(iter(dm.train_dataloader()))
    assert "x" not in packed and packed["valid_mask"].dtype == torch.bool
    bools = {k: packed[k].clone() for k in ("valid_mask", "land_mask")}
    batch = dm.on_after_batch_transfer(packed, 0)
    assert batch["valid_mask"].dtype == torch.float32 and batch["land_mask"].dtype == torch.float32
    assert torch.equal(batch["x"], batch["y"] * batch["valid_mask"])
    assert not (batch["valid_mask"] * (1 - batch["land_mask"])).any()
    # the masks were turned with the data: the hidden share per band is what it was before the hook
    for key, before in bools.items():
        assert torch.equal(batch[key].sum(dim=(-1, -2)), before.sum(dim=(-1, -2)).float())
    assert next(iter(dm.val_dataloader()))["valid_mask"].dtype != torch.bool  # val batches are whole


def test_training_batches_are_turned_on_the_device_hook_only(index_csv, tmp_path):
    from types import SimpleNamespace

    dm = DepthDifDataModule(config_with(tmp_path, loader={"batch_size": 16}), variant="eo_4band")
    dm.setup("fit")
    assert not dm.train_set.transform  # the loader does not turn patches: the hook does
    batch = next(iter(dm.val_dataloader()))
    original = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    dm.trainer = SimpleNamespace(training=False)  # validation: untouched
    out = dm.on_after_batch_transfer({k: v.clone() for k, v in original.items()}, 0)
    assert all(torch.equal(out[k], original[k]) for k in original)
    dm.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    out = dm.on_after_batch_transfer({k: v.clone() for k, v in original.items()}, 0)
    assert not torch.equal(out["y"], original["y"])
    # the same turn for data and masks: y where observed is x, and nothing is observed on land
    assert torch.equal(out["x"], out["y"] * out["valid_mask"])
    assert not (out["valid_mask"] * (1 - out["land_mask"])).any()
    assert torch.equal(out["coords"], original["coords"])
    config = config_with(tmp_path, enable_transform=False)
    off = DepthDifDataModule(config, variant="eo_4band")
    off.trainer = SimpleNamespace(training=True)
    out = off.on_after_batch_transfer({k: v.clone() for k, v in original.items()}, 0)
    assert torch.equal(out["y"], original["y"])
