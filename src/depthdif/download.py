"""The download stage: put the monthly NetCDF files in ``{data_dir}/raw/`` and describe them in a manifest.

One job per month (Snakemake rule ``download_month``, wildcard ``month`` = YYYYMM): ``download_month`` places
that month's file(s) in ``raw/`` and writes its rows of the manifest to ``raw/months/{month}.csv``; the rule
``download`` (``gather_manifest``) joins the months into the contract file ``raw/manifest.csv``. A month's job
reads only ``download_settings(config)``, the source without its list of years and months, so adding a
month to the config reruns no other month. The CLI's ``run_download`` writes the same parts and the same
manifest in one process (Copernicus months fetched in one batch).

This module only orchestrates. Each source lives in its own module (``depthdif.sources.copernicus``,
``depthdif.sources.local``, ``depthdif.sources.synthetic``) and returns ``{file name: YYYYMMDD}`` for the
files it placed in ``raw/``; each manifest is written last, atomically, so that its presence means the
stage finished.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from depthdif import glorys
from depthdif.atomic import atomic_to_csv, atomic_write_text, remove_stale_temps
from depthdif.config import ConfigError, months_of
from depthdif.errors import DepthDifError
from depthdif.layout import MANIFEST_NAME, layout_of, month_tag
from depthdif.month_parts import read_month_part

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["file", "bytes", "sha256", "date"]
HASH_CHUNK_BYTES = 8 * 1024 * 1024
KINDS = ("synthetic", "copernicus", "local")


class DownloadError(DepthDifError, RuntimeError):
    """A raw file could not be fetched, generated or accepted; the message names it and says what to do."""


def download_settings(config: Mapping) -> dict:
    """What one month's download reads of a validated config, in the config's own shape.

    These are the ``params`` of the rule ``download_month``: the source's kind and the section of that kind
    (``synthetic``, ``copernicus`` or ``local_dir``), plus ``export.variable`` (and
    ``export.surface_variables`` when not empty) for the sources that check them. ``source.years`` and ``source.months`` are left out on purpose: the month is the job's wildcard, and
    adding a month to the list must leave the params of every other month's job unchanged.

    Args:
        config: a validated config.

    Returns:
        ``{"source": {...}}`` (+ ``{"export": {"variable": ..., "surface_variables": [...]}}``), a copy that
        ``download_month`` and the sources read like a config.

    Raises:
        ConfigError: ``source.kind`` is not one DepthDif knows.
    """
    source = config["source"]
    kind = source["kind"]
    if kind not in KINDS:
        raise ConfigError(f"source.kind '{kind}' is unknown; use synthetic, copernicus or local.")
    section = "local_dir" if kind == "local" else kind
    settings: dict = {"source": {"kind": kind, section: copy.deepcopy(source[section])}}
    if kind != "synthetic":  # the synthetic ocean writes its own variables (thetao, zos) whatever export says
        settings["export"] = file_variables(config["export"])
    return settings


def file_variables(export: Mapping) -> dict:
    """The keys of ``config["export"]`` that say which variables every raw file must hold.

    ``surface_variables`` only when not empty, so that the params of a download without surface fields stay
    what they were (no rerun of every month for an empty list).

    Args:
        export: ``config["export"]``.

    Returns:
        ``{"variable": ...}`` (+ ``"surface_variables": [...]``).
    """
    variables: dict = {"variable": export["variable"]}
    if export.get("surface_variables"):
        variables["surface_variables"] = list(export["surface_variables"])
    return variables


def fetch_months(
    settings: Mapping,
    months: Sequence[tuple[int, int]],
    raw_dir: Path,
    local_files: Sequence[Path] = (),
    client=None,
) -> dict[str, int]:
    """Place the files of ``months`` in ``raw_dir``; files already there and complete are kept.

    Args:
        settings: ``download_settings(config)`` (or a whole validated config).
        months: the (year, month) pairs to fetch or generate; a local source places ``local_files`` instead.
        raw_dir: ``{data_dir}/raw``.
        local_files: for ``source.kind: local``, the files of ``source.local_dir`` to place.
        client: replaces the ``copernicusmarine`` module (tests pass a fake); other sources ignore it.

    Returns:
        ``{file name in raw_dir: YYYYMMDD}`` of the files placed.

    Raises:
        DownloadError: a file cannot be fetched, generated or used; the message names it.
        ConfigError: the source settings cannot work (e.g. a Copernicus subset without export.variable).
    """
    raw_dir.mkdir(parents=True, exist_ok=True)
    source = settings["source"]
    kind = source["kind"]
    log.info("download: source %s, %d month(s) -> %s", kind, len(months), raw_dir)
    if kind == "synthetic":
        return generate_synthetic(settings, raw_dir, months)
    if kind == "copernicus":
        from depthdif.sources.copernicus import fetch_copernicus

        return fetch_copernicus(settings, raw_dir, client=client, months=months)
    if kind == "local":
        from depthdif.sources.local import link_files

        if not source.get("local_dir"):
            raise ConfigError(
                "source.kind is 'local' but source.local_dir is not set: give the folder of *.nc."
            )
        export = settings["export"]
        return link_files(local_files, Path(source["local_dir"]), raw_dir, export["variable"],
                          surface_variables=export.get("surface_variables") or ())
    raise ConfigError(f"source.kind '{kind}' is unknown; use synthetic, copernicus or local.")


def download_month(
    settings: Mapping,
    year: int,
    month: int,
    raw_dir: Path,
    out_csv: Path,
    digest_cache: Path | None = None,
    local_files: Sequence[Path] = (),
    client=None,
    stale: Iterable[Path] = (),
) -> Path:
    """One month of the download: place its file(s) in ``raw_dir`` and write their manifest rows.

    Args:
        settings: ``download_settings(config)``, the rule's params.
        year, month: the month (the rule's wildcard).
        raw_dir: ``{data_dir}/raw``.
        out_csv: the month's manifest (``RunLayout.month_manifest``): file (relative to ``raw_dir``), bytes,
            sha256, date; written last, atomically.
        digest_cache: where to keep the month's SHA-256 by size and mtime (``RunLayout.month_digests``);
            None hashes every time.
        local_files: for a local source, the files of ``source.local_dir`` dated in this month.
        client: replaces the ``copernicusmarine`` module (tests pass a fake).
        stale: files this month makes stale (the gathered ``raw/manifest.csv``): removed first, so that no
            finished-looking manifest lists a month being replaced.

    Returns:
        ``out_csv``.

    Raises:
        DownloadError: a file cannot be fetched, generated or used, or a file's own date is not in this
            month (a local file changed since the run was planned: run again).
    """
    out_csv = Path(out_csv)
    out_csv.unlink(missing_ok=True)  # a failed month must not leave rows that look finished
    for path in stale:
        if Path(path).exists():
            Path(path).unlink()
            log.info("removed %s: it lists the months before this one was downloaded again", path)
    names = _month_names(settings, year, month, local_files)
    remove_stale_temps(raw_dir, stems=[Path(name).stem for name in names])  # only this month's
    dates = fetch_months(settings, [(year, month)], raw_dir, local_files=local_files, client=client)
    _check_in_month(dates, year, month, raw_dir)
    return write_month_manifest(raw_dir, dates, out_csv, digest_cache)


def _month_names(settings: Mapping, year: int, month: int, local_files: Sequence[Path]) -> list[str]:
    """Names the month's files get in raw/ (a local file keeps its own)."""
    if settings["source"]["kind"] == "local":
        if not local_files:
            raise DownloadError(
                f"no file of source.local_dir is dated {year:04d}-{month:02d}; plan the run again "
                "(snakemake reads the files' dates when it plans)."
            )
        return [Path(path).name for path in local_files]
    return [glorys.file_name(year, month)]


def _check_in_month(dates: Mapping[str, int], year: int, month: int, raw_dir: Path) -> None:
    """Every file placed for a month must state a date in that month."""
    wanted = year * 100 + month
    for name, date in sorted(dates.items()):
        if date // 100 != wanted:
            raise DownloadError(
                f"{raw_dir / name} states the date {date}, not in {year:04d}-{month:02d}, the month it was "
                "placed for; if the file changed since the run was planned, run it again (the month is taken "
                "from each file's own date)."
            )


def months_by_tag(dates: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """Files grouped by the month of their own date, in time order.

    Args:
        dates: ``{file name: YYYYMMDD}``.

    Returns:
        ``{YYYYMM: {name: date}}``, months and the files in each in time order (then by name).
    """
    grouped: dict[str, dict[str, int]] = {}
    for name, date in sorted(dates.items(), key=lambda item: (item[1], item[0])):
        grouped.setdefault(month_tag(date // 10000, date // 100 % 100), {})[name] = date
    return grouped


def run_download(config: dict, client=None) -> Path:
    """The whole download in one process (the CLI): every month's part, then ``raw/manifest.csv``.

    Args:
        config: a validated config (``depthdif.config.load_config`` or Snakemake's validated config).
        client: replaces the ``copernicusmarine`` module (tests pass a fake); other sources ignore it.

    Returns:
        the path of ``raw/manifest.csv``.

    Raises:
        DownloadError: as ``fetch_months``; then no manifest is left, and files already accepted stay, so a
            rerun resumes. A local source checks every file first and names all that cannot be used.
    """
    layout = layout_of(config)
    raw_dir = layout.raw_dir
    raw_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(raw_dir)  # this process is the only writer of raw/
    # an old manifest must not survive a failed run: its presence means "this stage finished"
    layout.manifest.unlink(missing_ok=True)
    settings = download_settings(config)
    local_dir, local_files = None, []
    if config["source"]["kind"] == "local":
        from depthdif.sources.local import check_local_files

        local_dir = Path(config["source"]["local_dir"])
        checked = check_local_files(local_dir, config["export"]["variable"], months_of(config),
                                    surface_variables=config["export"].get("surface_variables") or ())
        local_files = [local.path for local in checked]
    dates = fetch_months(settings, months_of(config), raw_dir, local_files=local_files, client=client)
    parts = [
        write_month_manifest(raw_dir, month_dates, layout.month_manifest(tag), layout.month_digests(tag))
        for tag, month_dates in months_by_tag(dates).items()
    ]
    return gather_manifest(parts, layout.manifest, local_dir=local_dir)


def generate_synthetic(config: Mapping, raw_dir: Path, months: Iterable[tuple[int, int]]) -> dict[str, int]:
    """Write one synthetic month per (year, month); months already on disk are kept.

    The synthetic writer is atomic, so a file under its final name is complete and a rerun resumes.

    Args:
        config: a validated config (``depthdif.sources.synthetic.write_synthetic_month`` reads it).
        raw_dir: the folder of the monthly files.
        months: ``(year, month)`` pairs to write.

    Returns:
        ``{file name: YYYYMMDD}`` of every requested month, written now or kept.

    Raises:
        DownloadError: the synthetic writer returned without creating its file (a bug).
    """
    # looked up at call time (not imported at the top): the module is optional for the other sources and
    # tests replace it in sys.modules
    synthetic = importlib.import_module("depthdif.sources.synthetic")
    dates = {}
    for year, month in tqdm(list(months), desc="synthetic months", unit="month"):
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
    """SHA-256 of a file read in chunks (real months are GBs; never read one into memory).

    Args:
        path: the file.
        progress: a tqdm bar advanced by the bytes read, or None.

    Returns:
        The hex digest (64 characters).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def _read_sha256_cache(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        cache = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        log.warning("ignoring unreadable digest cache %s (its files will be hashed again)", path)
        return {}
    return cache if isinstance(cache, dict) else {}


def _file_key(path: Path) -> dict:
    stat = path.stat()  # follows symlinks: local sources are linked into raw/
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def file_digests(
    raw_dir: Path, names: list[str], cache_path: Path | None = None
) -> dict[str, tuple[int, str]]:
    """``{name: (bytes, sha256)}`` of files in ``raw_dir``.

    Hashing 300 real months (~300 GB) takes many minutes; digests of files whose size and mtime did not
    change since they were hashed are taken from ``cache_path`` (one cache per month: the months' jobs run
    side by side and must not rewrite each other's).

    Args:
        raw_dir: the folder of the files.
        names: their names.
        cache_path: the cache to read and update; None hashes every file.

    Returns:
        size and digest of each file.
    """
    cache = _read_sha256_cache(cache_path)
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
    if cache_path is not None and (stale or set(cache) != set(fresh_cache)):
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_path, json.dumps(fresh_cache, indent=1, sort_keys=True))
    return {name: (keys[name]["bytes"], fresh_cache[name]["sha256"]) for name in names}


def manifest_frame(raw_dir: Path, dates: Mapping[str, int], cache_path: Path | None = None) -> pd.DataFrame:
    """The manifest rows (file, bytes, sha256, date) of files in ``raw_dir``, sorted by file.

    Args:
        raw_dir: the folder of the files.
        dates: ``{file name: YYYYMMDD}`` of the files to list.
        cache_path: a digest cache (see ``file_digests``); None hashes every file.

    Returns:
        One row per file: ``file`` (name relative to ``raw_dir``), ``bytes``, ``sha256``, ``date`` (YYYYMMDD).

    Raises:
        DownloadError: ``dates`` is empty, or a file is missing from ``raw_dir``.
    """
    if not dates:
        raise DownloadError(
            f"no NetCDF file was placed in {raw_dir}: check source.years / source.months (or the files in "
            "source.local_dir) and run again."
        )
    names = sorted(dates)
    missing = [name for name in names if not (raw_dir / name).is_file()]
    if missing:
        raise DownloadError(f"files expected in {raw_dir} are missing: {', '.join(missing)}; run again.")
    digests = file_digests(raw_dir, names, cache_path)
    return pd.DataFrame(
        {
            "file": names,
            "bytes": [digests[n][0] for n in names],
            "sha256": [digests[n][1] for n in names],
            "date": [int(dates[n]) for n in names],
        },
        columns=MANIFEST_COLUMNS,
    )


def write_month_manifest(
    raw_dir: Path, dates: Mapping[str, int], out_csv: Path, cache_path: Path | None = None
) -> Path:
    """Write one month's manifest rows to ``out_csv`` (names relative to ``raw_dir``), atomically.

    Args:
        raw_dir: where the month's files are.
        dates: ``{file name: YYYYMMDD}`` of the month's files.
        out_csv: the part (``RunLayout.month_manifest``).
        cache_path: the month's digest cache (see ``file_digests``).

    Returns:
        ``out_csv``.

    Raises:
        DownloadError: as ``manifest_frame``.
    """
    frame = manifest_frame(raw_dir, dates, cache_path)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    atomic_to_csv(frame, out_csv)
    log.info("wrote %s (%d file(s), %.1f MB)", out_csv, len(frame), frame["bytes"].sum() / 1e6)
    return out_csv


def gather_manifest(parts: Collection[Path], out_csv: Path, local_dir: Path | str | None = None) -> Path:
    """Join the months' manifests into ``raw/manifest.csv`` (file, bytes, sha256, date), sorted by file.

    File names stay relative to the manifest's folder (the contract), which is the folder of the raw files.
    Checks and clean-ups across months happen here, when no month's job is running: temporary files of
    killed jobs, and (``local_dir``) links of local files no longer part of the run are removed; files in
    ``raw/`` that no month lists are logged.

    Args:
        parts: the months' manifests (``RunLayout.month_manifest``).
        out_csv: ``raw/manifest.csv``, written last, atomically.
        local_dir: ``source.local_dir`` of a local source, else None.

    Returns:
        ``out_csv``.

    Raises:
        DownloadError: no part, no row, a file listed twice or missing from ``raw/``.
    """
    out_csv = Path(out_csv)
    raw_dir = out_csv.parent
    out_csv.unlink(missing_ok=True)
    for folder in {raw_dir, *(Path(part).parent for part in parts)}:
        remove_stale_temps(folder)  # of killed jobs: no month's job is running now
    frames = [read_month_part(Path(part), MANIFEST_COLUMNS, DownloadError, "manifest", "download") for part in parts]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MANIFEST_COLUMNS)
    if frame.empty:
        raise DownloadError(
            f"no NetCDF file was placed in {raw_dir}: check source.years / source.months (or the files in "
            "source.local_dir) and run again."
        )
    twice = sorted(set(frame.loc[frame["file"].duplicated(), "file"]))
    if twice:
        raise DownloadError(
            f"{', '.join(twice)} listed by more than one month's manifest in {raw_dir}: delete "
            f"{raw_dir}/months and run the download again."
        )
    frame = frame.sort_values("file", kind="stable")
    names = list(frame["file"])
    missing = [name for name in names if not (raw_dir / name).is_file()]
    if missing:
        raise DownloadError(f"files expected in {raw_dir} are missing: {', '.join(missing)}; run again.")
    if local_dir is not None:
        from depthdif.sources.local import remove_stale_links

        remove_stale_links(raw_dir, Path(local_dir), set(names))
    _log_unlisted(raw_dir, names)
    atomic_to_csv(frame, out_csv)
    log.info("wrote %s (%d files, %.1f MB)", out_csv, len(frame), frame["bytes"].astype(int).sum() / 1e6)
    return out_csv


def _log_unlisted(raw_dir: Path, names: Collection[str]) -> None:
    unlisted = sorted(set(p.name for p in raw_dir.glob("*.nc")) - set(names))
    if unlisted:
        log.warning(
            "%d file(s) in %s are not part of this config and stay out of the manifest (e.g. %s)",
            len(unlisted),
            raw_dir,
            unlisted[0],
        )


def write_manifest(raw_dir: Path, dates: Mapping[str, int]) -> Path:
    """Write ``raw/manifest.csv`` of ``dates`` in one go (no parts, no digest cache).

    For files placed by other means (tests, tools); the stage writes months' parts and gathers them.

    Args:
        raw_dir: the folder of the files; the manifest is written into it.
        dates: ``{file name: YYYYMMDD}`` of the files to list.

    Returns:
        The path of ``raw_dir/manifest.csv``.

    Raises:

        DownloadError: as ``manifest_frame``.
    """
    frame = manifest_frame(raw_dir, dates)
    _log_unlisted(raw_dir, list(frame["file"]))
    manifest = raw_dir / MANIFEST_NAME
    atomic_to_csv(frame, manifest)
    log.info("wrote %s (%d files, %.1f MB)", manifest, len(frame), frame["bytes"].sum() / 1e6)
    return manifest
