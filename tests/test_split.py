"""Window split: whole windows per split, no shared pixel between train and val, buffers, determinism."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from depthdif.config import validate_config
from depthdif.reconstruction.tiling import tile_origins
from depthdif.split import SplitError, split_index

MONTHS = (20101115, 20101215, 20110115)


def make_index(path: Path, shape: tuple[int, int], patch: int, stride: int, drop_every: int = 0) -> Path:
    """An export-like index: every tile of ``shape`` for a few months (optionally some tiles missing)."""
    rows = []
    for date in MONTHS:
        for k, (y0, x0) in enumerate(tile_origins(shape, patch, stride)):
            if drop_every and k % drop_every == 0:
                continue  # like land tiles filtered by the export
            sample_id = f"{date // 100}_{y0}_{x0}"
            rows.append(
                {"sample_id": sample_id, "date": date, "y0": y0, "x0": x0, "patch_size": patch,
                 "lat0": 20.0 + y0 / 12, "y_npy_path": f"y_npy/{sample_id}.npy", "split": "unassigned"}
            )  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def config_for(patch: int, stride: int, **split) -> dict:
    return validate_config(
        {"export": {"patch_size": patch, "stride": stride}, "split": split, "variants": ["temp_v1"]}
    )


def pixel_cover(frame: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    cover = np.zeros(shape, dtype=bool)
    for y0, x0, size in frame[["y0", "x0", "patch_size"]].itertuples(index=False):
        cover[y0 : y0 + size, x0 : x0 + size] = True
    return cover


def window_of(window_id: str) -> tuple[int, int]:
    wy, wx = window_id[1:].split("_")
    return int(wy), int(wx)


# (shape, patch, stride, window_tiles): exact grid, shifted edge tiles, overlapping tiles
CASES = [((128, 192), 16, 16, 2), ((169, 181), 16, 16, 2), ((150, 210), 16, 8, 3), ((100, 130), 16, 4, 2)]


@pytest.mark.parametrize(("shape", "patch", "stride", "k"), CASES)
def test_no_window_and_no_pixel_in_both_splits(tmp_path, shape, patch, stride, k):
    index = make_index(tmp_path / "index.csv", shape, patch, stride, drop_every=7)
    out = pd.read_csv(split_index(config_for(patch, stride, window_tiles=k, seed=1), index))
    assert set(out["split"]) == {"train", "val"}
    splits_per_window = out.groupby("window_id")["split"].nunique()
    assert (splits_per_window == 1).all()
    # every month of one location lands in the same split
    assert (out.groupby(["y0", "x0"])["split"].nunique() == 1).all()
    train = pixel_cover(out[out["split"] == "train"], shape)
    val = pixel_cover(out[out["split"] == "val"], shape)
    assert not (train & val).any()
    # the window of a row is the block of its origin
    block = k * stride
    for y0, x0, window_id in out[["y0", "x0", "window_id"]].itertuples(index=False):
        assert window_of(window_id) == (y0 // block, x0 // block)


def test_rows_are_kept_verbatim_and_in_order(tmp_path):
    index = make_index(tmp_path / "index.csv", (128, 192), 16, 16)
    out_csv = split_index(config_for(16, 16, window_tiles=2), index)
    assert out_csv == tmp_path / "patch_index_split.csv"
    before = pd.read_csv(index, dtype=str, keep_default_na=False)
    after = pd.read_csv(out_csv, dtype=str, keep_default_na=False)
    assert list(after.columns) == [*before.columns, "window_id"]
    # exact grid, no buffer: nothing is dropped and, but for split, nothing changes (not even float text)
    unchanged = [c for c in before.columns if c != "split"]
    pd.testing.assert_frame_equal(after[unchanged], before[unchanged])


def test_val_fraction_of_windows(tmp_path):
    index = make_index(tmp_path / "index.csv", (128, 192), 16, 16)  # 4 x 6 = 24 windows of 2x2 tiles
    out = pd.read_csv(split_index(config_for(16, 16, window_tiles=2, val_fraction=0.25), index))
    assert out["window_id"].nunique() == 24
    assert out.loc[out["split"] == "val", "window_id"].nunique() == 6


def test_same_seed_byte_identical_other_seed_differs(tmp_path):
    index = make_index(tmp_path / "index.csv", (169, 181), 16, 16, drop_every=5)
    first = split_index(config_for(16, 16, seed=7), index, tmp_path / "a.csv").read_bytes()
    second = split_index(config_for(16, 16, seed=7), index, tmp_path / "b.csv").read_bytes()
    assert first == second
    others = {
        split_index(config_for(16, 16, seed=s), index, tmp_path / f"s{s}.csv").read_bytes() for s in range(4)
    }
    assert len(others) > 1


def test_buffer_ring_is_dropped(tmp_path, caplog):
    index = make_index(tmp_path / "index.csv", (256, 320), 16, 16)  # 8 x 10 windows
    plain = pd.read_csv(split_index(config_for(16, 16, val_fraction=0.1, seed=3), index, tmp_path / "p.csv"))
    with caplog.at_level(logging.INFO, logger="depthdif.split"):
        out = pd.read_csv(
            split_index(
                config_for(16, 16, val_fraction=0.1, seed=3, buffer_windows=1), index, tmp_path / "b.csv"
            )
        )
    val_windows = {window_of(w) for w in out.loc[out["split"] == "val", "window_id"]}
    train_windows = {window_of(w) for w in out.loc[out["split"] == "train", "window_id"]}
    assert val_windows == {window_of(w) for w in plain.loc[plain["split"] == "val", "window_id"]}
    for ty, tx in train_windows:
        assert all(max(abs(ty - vy), abs(tx - vx)) > 1 for vy, vx in val_windows)
    # the rows of the ring are gone, and the log says how many
    ring = {(vy + dy, vx + dx) for vy, vx in val_windows for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    ring = {w for w in ring if 0 <= w[0] < 8 and 0 <= w[1] < 10} - val_windows
    dropped = len(plain) - len(out)
    assert dropped == sum(window_of(w) in ring for w in plain["window_id"]) > 0
    assert f"{dropped} dropped in buffer windows" in caplog.text


def test_one_window_is_a_clear_error(tmp_path):
    index = make_index(tmp_path / "index.csv", (32, 32), 16, 16)  # 2x2 tiles = a single 2x2 window
    with pytest.raises(SplitError, match="window_tiles"):
        split_index(config_for(16, 16, window_tiles=2), index)


def test_buffer_that_leaves_no_train_is_a_clear_error(tmp_path):
    index = make_index(tmp_path / "index.csv", (64, 64), 16, 16)  # 2 x 2 windows
    with pytest.raises(SplitError, match="no train patch"):
        split_index(config_for(16, 16, val_fraction=0.25, buffer_windows=1), index)
    assert not (tmp_path / "patch_index_split.csv").exists()


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(SplitError, match="run the export stage"):
        split_index(config_for(16, 16), tmp_path / "nope.csv")
