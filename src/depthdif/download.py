"""The download stage: put the monthly NetCDF files in ``{data_dir}/raw/`` and describe them in a manifest.

This module only orchestrates. Each source lives in its own module (``depthdif.sources.copernicus``,
``depthdif.sources.local``, ``depthdif.sources.synthetic``) and returns ``{file name: YYYYMMDD}`` for the
files it placed in ``raw/``; the manifest is then written last, atomically, so that its presence means the
stage finished.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from depthdif import glorys
from depthdif.atomic import atomic_to_csv, atomic_write_text, remove_stale_temps
from depthdif.config import ConfigError, get_path, months_of
from depthdif.errors import DepthDifError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = ["file", "bytes", "sha256", "date"]
# hashing 300 real months (~600 GB) takes minutes; remember digests of files whose size and mtime did not
# change, so that a resumed download does not hash everything again
SHA256_CACHE_NAME = ".sha256-cache.json"
HASH_CHUNK_BYTES = 8 * 1024 * 1024


class DownloadError(DepthDifError, RuntimeError):
    """A raw file could not be fetched, generated or accepted; the message names it and says what to do."""


def raw_dir_of(config: Mapping) -> Path:
    return get_path(config, "raw")


def run_download(config: dict, client=None) -> Path:
    """Fill ``{data_dir}/raw/`` from ``config["source"]`` and write ``raw/manifest.csv``; return its path.

    ``config`` is a validated config (``depthdif.config.load_config`` or Snakemake's validated config).
    ``client`` replaces the ``copernicusmarine`` module (tests pass a fake); other sources ignore it.
    A failed run raises ``DownloadError`` and leaves no manifest; files already accepted stay, so a rerun
    resumes.
    """
    raw_dir = raw_dir_of(config)
    raw_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(raw_dir)
    manifest = raw_dir / MANIFEST_NAME
    # an old manifest must not survive a failed run: its presence means "this stage finished"
    manifest.unlink(missing_ok=True)

    kind = config["source"]["kind"]
    log.info("download: source %s -> %s", kind, raw_dir)
    if kind == "synthetic":
        dates = generate_synthetic(config, raw_dir)
    elif kind == "copernicus":
        from depthdif.sources.copernicus import fetch_copernicus

        dates = fetch_copernicus(config, raw_dir, client=client)
    elif kind == "local":
        from depthdif.sources.local import link_local_files

        local_dir = config["source"].get("local_dir")
        if not local_dir:
            raise ConfigError(
                "source.kind is 'local' but source.local_dir is not set: give the folder of *.nc."
            )
        dates = link_local_files(Path(local_dir), raw_dir, config["export"]["variable"], months_of(config))
    else:
        raise ConfigError(f"source.kind '{kind}' is unknown; use synthetic, copernicus or local.")
    return write_manifest(raw_dir, dates)


def generate_synthetic(config: Mapping, raw_dir: Path) -> dict[str, int]:
    """Write one synthetic month per configured (year, month); months already on disk are kept.

    The synthetic writer is atomic, so a file under its final name is complete and a rerun resumes.
    """
    # looked up at call time (not imported at the top): the module is optional for the other sources and
    # tests replace it in sys.modules
    synthetic = importlib.import_module("depthdif.sources.synthetic")
    dates = {}
    for year, month in tqdm(months_of(config), desc="synthetic months", unit="month"):
        name = glorys.file_name(year, month)
        target = raw_dir / name
        if target.is_file():
            log.debug("kept %s (already generated)", target)
        else:
            synthetic.write_synthetic_month(config, year, month, target)
            if not target.is_file():
                raise DownloadError(
                    f"the synthetic writer returned without creating {target}; this is a bug in "
                    "depthdif.sources.synthetic.write_synthetic_month, please report it."
                )
        dates[name] = glorys.own_file_date(name)
    return dates


def sha256_of(path: Path, progress: tqdm | None = None) -> str:
    """SHA-256 of a file read in chunks (real months are GBs; never read one into memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def _read_sha256_cache(raw_dir: Path) -> dict:
    path = raw_dir / SHA256_CACHE_NAME
    try:
        cache = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("ignoring unreadable digest cache %s (every file will be hashed again)", path)
        return {}
    return cache if isinstance(cache, dict) else {}


def _file_key(path: Path) -> dict:
    stat = path.stat()  # follows symlinks: local sources are linked into raw/
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_digests(raw_dir: Path, names: list[str]) -> dict[str, tuple[int, str]]:
    """``{name: (bytes, sha256)}``; digests of files unchanged since the last run (size, mtime) are reused."""
    cache = _read_sha256_cache(raw_dir)
    keys = {name: _file_key(raw_dir / name) for name in names}
    stale = [name for name in names if {k: cache.get(name, {}).get(k) for k in keys[name]} != keys[name]]
    fresh_cache = {name: cache[name] for name in names if name not in stale}
    with tqdm(
        total=sum(keys[n]["bytes"] for n in stale),
        desc="sha256",
        unit="B",
        unit_scale=True,
        disable=not stale,
    ) as bar:
        for name in stale:
            fresh_cache[name] = {**keys[name], "sha256": sha256_of(raw_dir / name, progress=bar)}
    if stale or set(cache) != set(fresh_cache):
        atomic_write_text(raw_dir / SHA256_CACHE_NAME, json.dumps(fresh_cache, indent=1, sort_keys=True))
    return {name: (keys[name]["bytes"], fresh_cache[name]["sha256"]) for name in names}


def write_manifest(raw_dir: Path, dates: Mapping[str, int]) -> Path:
    """Write ``raw/manifest.csv`` (file, bytes, sha256, date), sorted by file, atomically; return its path."""
    if not dates:
        raise DownloadError(
            f"no NetCDF file was placed in {raw_dir}: check source.years / source.months (or the files in "
            "source.local_dir) and run again."
        )
    names = sorted(dates)
    missing = [name for name in names if not (raw_dir / name).is_file()]
    if missing:
        raise DownloadError(f"files expected in {raw_dir} are missing: {', '.join(missing)}; run again.")
    unlisted = sorted(set(p.name for p in raw_dir.glob("*.nc")) - set(names))
    if unlisted:
        log.warning(
            "%d file(s) in %s are not part of this config and stay out of the manifest (e.g. %s)",
            len(unlisted),
            raw_dir,
            unlisted[0],
        )
    digests = file_digests(raw_dir, names)
    frame = pd.DataFrame(
        {
            "file": names,
            "bytes": [digests[n][0] for n in names],
            "sha256": [digests[n][1] for n in names],
            "date": [int(dates[n]) for n in names],
        },
        columns=MANIFEST_COLUMNS,
    )
    manifest = raw_dir / MANIFEST_NAME
    atomic_to_csv(frame, manifest)
    log.info("wrote %s (%d files, %.1f MB)", manifest, len(frame), frame["bytes"].sum() / 1e6)
    return manifest
