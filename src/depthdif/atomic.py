"""Write files so that an interrupted run never leaves one that looks finished."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    The temporary name keeps the target's suffix (``x.npy`` -> ``.x.<random>.tmp.npy``) because some
    writers (np.save, netCDF) choose their format from it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; finished files follow the umask
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | Path, stems: Iterable[str] | None = None) -> list[Path]:
    """Delete temporary files that a killed run left in ``folder`` (the names atomic_path gives them).

    Called by each stage before it writes into a folder, so a SIGKILL (which skips the cleanup in
    atomic_path) never leaves clutter that lingers across reruns.

    Args:
        folder: where to look.
        stems: only the temporary files of these targets (``x`` for ``x.nc``); None: every one. A per-month
            job passes its own files' stems: the jobs of other months may be writing into the same folder.

    Returns:
        the files deleted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(".*.tmp*") if p.is_file() and ".tmp" in p.name]
    if stems is not None:
        prefixes = tuple(f".{stem}." for stem in stems)
        stale = [p for p in stale if p.name.startswith(prefixes)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_to_csv(frame, target: str | Path) -> None:
    """``DataFrame.to_csv`` through a temporary file; a stable float format keeps reruns byte-identical."""
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
