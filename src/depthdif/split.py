"""Split stage: assign whole geographic windows of patches to train or val, so no location leaks.

Windows are square blocks of pixels, ``B = split.window_tiles * export.stride`` pixels on a side, laid on
the exported grid from pixel (0, 0): block (wy, wx) covers rows [wy*B, (wy+1)*B) and columns
[wx*B, (wx+1)*B); the last block of each axis also takes the rows/columns past its end (the tail of a
grid that B does not divide), so every pixel belongs to exactly one block. A block holds k x k tile
origins, and a patch's ``window_id`` is the block of its origin (y0, x0); since every month of a place
has the same (y0, x0), every month of a place lands in the same window and split.

Tiles can cover more than one block: the edge tile that the export shifts inward, and, with
stride < patch_size, most tiles. To guarantee that **no pixel of a val tile lies in a train tile**, a
tile is kept only if every block it touches has the same split; a tile that straddles train and val (or
touches a buffer block) is dropped. Blocks are disjoint, so train and val tiles then never share a pixel.

``split.buffer_windows = r`` additionally leaves out every block within r blocks (Chebyshev distance) of
a val block: neither train nor val, its rows are dropped. Spatial correlation reaches past a window
edge, so a buffer makes val scores more honest at the cost of data.

The val windows are drawn with ``numpy.random.default_rng(split.seed)`` among the windows that hold
patches, ``round(split.val_fraction * n_windows)`` of them, at least one and leaving at least one for
train. Rows keep the input order and text, so the same inputs and seed give a byte-identical file.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from depthdif.atomic import atomic_to_csv, remove_stale_temps
from depthdif.errors import DepthDifError
from depthdif.layout import SPLIT_NAME

log = logging.getLogger(__name__)

TRAIN, VAL, BUFFER = "train", "val", "buffer"
_REQUIRED = ("sample_id", "y0", "x0", "patch_size")


class SplitError(DepthDifError, ValueError):
    """The index cannot be split as configured; the message says which key to change."""


@dataclass(frozen=True)
class BlockGrid:
    """Square pixel blocks of ``size`` px; the last block index per axis absorbs the tail of the grid.

    Args:
        size: block side, px (``split.window_tiles * export.stride``).
        last_y: the last block row (it also covers the rows past its end).
        last_x: the last block column (it also covers the columns past its end).
    """

    size: int
    last_y: int
    last_x: int

    def span(self, start: int, length: int, last: int) -> range:
        """Block indices covered by pixels [start, start + length) along one axis.

        Args:
            start: first pixel, px.
            length: number of pixels, px (at least 1).
            last: the last block index of the axis (``last_y`` or ``last_x``).

        Returns:
            The block indices, in order, at most ``last``.
        """
        first = min(start // self.size, last)
        end = min((start + length - 1) // self.size, last)
        return range(first, end + 1)

    def blocks_of_tile(self, y0: int, x0: int, patch: int) -> list[tuple[int, int]]:
        """Every block a tile touches.

        Args:
            y0: the tile's first row, px.
            x0: the tile's first column, px.
            patch: the tile's side, px.

        Returns:
            ``(block row, block column)`` of each block the tile covers, row-major.
        """
        rows = self.span(y0, patch, self.last_y)
        cols = self.span(x0, patch, self.last_x)
        return list(itertools.product(rows, cols))


def split_index(config: dict, index_csv: Path, out_csv: Path | None = None) -> Path:
    """Stage entry point of rule ``split`` (and `depthdif split`): the index with ``split`` and ``window_id``.

    Rows in buffer blocks or straddling blocks of different splits are dropped (and counted in the log); the
    other rows keep their order and text, so the same inputs and seed give a byte-identical file.

    Args:
        config: a validated config (reads ``split.window_tiles``, ``split.val_fraction``, ``split.seed``,
            ``split.buffer_windows`` and ``export.stride``).
        index_csv: the export's index (``patch_index_with_paths.csv``).
        out_csv: the split index to write, atomically; default ``patch_index_split.csv`` beside
            ``index_csv``.

    Returns:
        ``out_csv``: the index's columns with ``split`` (``train``/``val``) and ``window_id`` (``w<wy>_<wx>``)
        filled.

    Raises:
        SplitError: the index is missing, unreadable, lacks a column, is empty, lists a sample twice or mixes
            patch sizes; the patches fall in fewer than 2 windows; or no train or no val patch is left.
    """
    index_csv = Path(index_csv)
    out_csv = Path(out_csv) if out_csv is not None else index_csv.parent / SPLIT_NAME
    split_cfg = config["split"]
    remove_stale_temps(out_csv.parent)
    frame = _read_index(index_csv)
    y0 = frame["y0"].astype(int).to_numpy()
    x0 = frame["x0"].astype(int).to_numpy()
    patch = _single_patch_size(frame, index_csv)
    block = int(split_cfg["window_tiles"]) * int(config["export"]["stride"])
    if patch > block:
        log.warning(
            "patch_size %d > window of %d px (split.window_tiles x export.stride): every tile straddles "
            "windows and most will be dropped; raise split.window_tiles", patch, block,
        )  # fmt: skip
    origin_blocks = list(zip((y0 // block).tolist(), (x0 // block).tolist(), strict=True))
    windows = sorted(set(origin_blocks))
    grid = BlockGrid(block, max(w[0] for w in windows), max(w[1] for w in windows))
    val = choose_val_windows(windows, float(split_cfg["val_fraction"]), int(split_cfg["seed"]), index_csv)
    buffer = buffer_windows(val, int(split_cfg["buffer_windows"]), grid)

    def status(block_yx: tuple[int, int]) -> str:
        return VAL if block_yx in val else BUFFER if block_yx in buffer else TRAIN

    splits = []
    for row_y0, row_x0 in zip(y0.tolist(), x0.tolist(), strict=True):
        statuses = {status(b) for b in grid.blocks_of_tile(row_y0, row_x0, patch)}
        splits.append(statuses.pop() if len(statuses) == 1 else "straddle")
    out = frame.copy()
    out["split"] = splits
    out["window_id"] = [f"w{wy}_{wx}" for wy, wx in origin_blocks]
    _log_counts(out, windows, val, buffer)
    out = out[out["split"].isin([TRAIN, VAL])]
    for name in (TRAIN, VAL):
        if not (out["split"] == name).any():
            raise SplitError(
                f"{index_csv}: no {name} patch left after the split ({len(windows)} windows of {block} px, "
                f"buffer_windows={split_cfg['buffer_windows']}); lower split.buffer_windows or "
                "split.window_tiles, or export a larger region"
            )
    atomic_to_csv(out, out_csv)
    log.info("wrote %s", out_csv)
    return out_csv


def choose_val_windows(
    windows: list[tuple[int, int]], val_fraction: float, seed: int, origin: Path | str = "index"
) -> set[tuple[int, int]]:
    """Seeded choice of round(val_fraction * n) windows (at least 1, at most n - 1) for val.

    Args:
        windows: the ``(wy, wx)`` blocks that hold patches, sorted.
        val_fraction: share of the windows for val (``split.val_fraction``).
        seed: ``numpy.random.default_rng`` seed (``split.seed``).
        origin: the index the windows come from, for the error message.

    Returns:
        The val windows.

    Raises:
        SplitError: fewer than 2 windows.
    """
    n = len(windows)
    if n < 2:
        raise SplitError(
            f"{origin}: all patches fall in {n} window(s); a train/val split needs at least 2: lower "
            "split.window_tiles or export a larger region"
        )
    n_val = min(max(int(np.floor(val_fraction * n + 0.5)), 1), n - 1)
    chosen = np.random.default_rng(seed).choice(n, size=n_val, replace=False)
    return {windows[i] for i in sorted(chosen.tolist())}


def buffer_windows(val: set[tuple[int, int]], rings: int, grid: BlockGrid) -> set[tuple[int, int]]:
    """Blocks within ``rings`` blocks (Chebyshev distance) of a val block that are not val themselves.

    Args:
        val: the val blocks ``(wy, wx)``.
        rings: ``split.buffer_windows``; 0 or less leaves no buffer.
        grid: the block grid (blocks past its last row/column are not returned).

    Returns:
        The buffer blocks ``(wy, wx)``.
    """

    if rings <= 0:
        return set()
    buffer = set()
    for wy, wx in val:
        for dy in range(-rings, rings + 1):
            for dx in range(-rings, rings + 1):
                ny, nx = wy + dy, wx + dx
                if 0 <= ny <= grid.last_y and 0 <= nx <= grid.last_x:
                    buffer.add((ny, nx))
    return buffer - val


def _read_index(index_csv: Path) -> pd.DataFrame:
    """Every column as text, so rows are written back exactly as the export wrote them."""
    try:
        frame = pd.read_csv(index_csv, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise SplitError(f"patch index not found: {index_csv}; run the export stage first") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise SplitError(f"patch index {index_csv} is not a readable CSV ({err}); rerun the export") from None
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise SplitError(f"patch index {index_csv} lacks column(s) {missing}; rerun the export stage")
    if frame.empty:
        raise SplitError(f"patch index {index_csv} has no rows; rerun the export stage")
    duplicated = sorted(set(frame.loc[frame["sample_id"].duplicated(), "sample_id"]))
    if duplicated:
        raise SplitError(
            f"patch index {index_csv} lists sample_id(s) {duplicated[:5]} more than once; a patch must appear "
            "once (rerun the export stage rather than editing the index)"
        )
    return frame


def _single_patch_size(frame: pd.DataFrame, index_csv: Path) -> int:
    sizes = sorted(set(frame["patch_size"].astype(int)))
    if len(sizes) != 1:
        raise SplitError(f"patch index {index_csv} mixes patch sizes {sizes}; rerun the export stage")
    return sizes[0]


def _log_counts(out: pd.DataFrame, windows, val, buffer) -> None:
    counts = out["split"].value_counts()
    log.info(
        "%d windows: %d val, %d buffer; rows: %d train, %d val, %d dropped in buffer windows, "
        "%d dropped straddling windows of different splits",
        len(windows), len(val), len(buffer & set(windows)), counts.get(TRAIN, 0), counts.get(VAL, 0),
        counts.get(BUFFER, 0), counts.get("straddle", 0),
    )  # fmt: skip
