"""Training samples from exported patches: the ``temp_v1`` and ``eo_4band`` datasets.

One sample is a dict of float32 tensors (C = target bands, H = W = patch size), values normalised with
:func:`depthdif.data.normalization.temperature_normalize`:

    y            (C,H,W)  clean target; 0 on land
    x            (C,H,W)  observations: y where observed, 0 where hidden or land
    valid_mask   (C,H,W)  1 where observed in x (never on land); eo_4band: an independent mask per band
    land_mask    (C,H,W)  1 on ocean (for that band's depth), 0 where the export wrote NaN (or fill_value)
    eo           (1,H,W)  eo_4band only: surface field (export channel 0), 0 on land or when dropped
    eo_available (1,)     eo_4band only: 1.0, or 0.0 when EO dropout removed it
    surface      (S,H,W)  eo_4band only: the S = len(export.surface_variables) other dense surface fields (e.g.
                          sea-surface height ``zos``), each in its own unit (m), 0 on land or when dropped with eo
    first_guess  (C,H,W)  only with dataset.first_guess: a classical estimate of y from x (and eo)
    date         int64 scalar, YYYYMMDD: the index's ``date`` column (the export's date of the file)
    coords       (2,)     [lat_centre, lon_centre] in degrees (dataset.return_coords)
    info         dict     sample_id, source_file, y0, x0, row (dataset.return_info)

``temp_v1``: C = 1, the export channel ``dataset.temp_v1_band``. ``eo_4band``: channel 0 of the export is
the EO/surface condition, channels 1..num_channels-1 are the targets. The loss/score region is the hidden
ocean, ``(1 - valid_mask) * land_mask``.

The train split draws fresh masks (from a :class:`~depthdif.data.masking.TorusMaskPool`, or exactly per
sample when ``dataset.train_mask_reuse`` is 0), degrades the EO band and turns each sample by a random
rot90/flip (here, or, in the DataModule, on the training device with
:func:`~depthdif.data.augment.augment_batch`). Any other split is deterministic: the mask of band k of a
sample comes from ``mask_rng(seed, sample_key(sample_id), channel)`` (channel = export channel, so the same
sample and depth get the same mask in both variants), with no degradation and no augmentation, so a
validation score means the same thing every epoch.

Observing systems (``dataset.observations``): ``rectangles`` hide random rectangles per band (above);
``profiles`` observe whole columns, the same pixels in every band, at a Poisson number of uniform positions
over the patch's ocean surface (:func:`~depthdif.data.masking.make_profile_masks`; the mean is the density
``dataset.profiles_per_deg2_month`` times the patch's ocean area from its index row, cos(latitude) included).
Training draws the density per sample from ``dataset.train_profile_density_factors`` (null: the evaluation's
``evaluate.profile_density_factors``) times the Argo density; validation uses the Argo density, with one
generator per sample, ``mask_rng(seed, sample_key, PROFILE_RNG_CHANNEL)``, so both variants see the same
profiles. ``both``: a training sample draws rectangles or profiles with probability 1/2; a validation sample's
system is fixed by ``mask_rng(seed, sample_key, SYSTEM_RNG_CHANNEL)``. A sample may hold no profile at all.

Speed (bench/loader.py): a DataLoader calls ``__getitems__`` with a batch's indices; the batch is built sample
by sample straight into one allocation (no second copy by the collate function), patches are read with one
``readv`` each (:class:`~depthdif.data.index.NpyReader`), and every step is a handful of whole-array numpy
calls. The DataModule's training loader builds *packed* batches (``packed=True``): ``valid_mask`` and
``land_mask`` stay bool and ``x`` is left out, which is 5 float planes a sample instead of 13 to write, pin
and copy to the GPU; :func:`unpack_batch` turns them into the samples above on the training device
(``x = y * valid_mask``, masks as float32).

The index and patch files are read by :mod:`depthdif.data.index`; the rot90/flip and the EO speckle are in
:mod:`depthdif.data.augment`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from depthdif.data.augment import EO_OFFSET_MAX_C, SpeckleBank, dihedral, speckle_factors
from depthdif.data.index import (
    INDEX_COLUMNS,
    NpyReader,
    PatchIndexError,
    check_index_columns,
    check_unique_ids,
    index_dates,
    patch_centres,
    read_index,
    resolve_patch_path,
)
from depthdif.data.masking import (
    TorusMaskPool,
    cell_area_deg2,
    make_band_masks,
    make_profile_masks,
    mask_rng,
    sample_key,
)
from depthdif.data.normalization import temperature_normalize
from depthdif.layout import data_layout_of

logger = logging.getLogger(__name__)

VARIANTS = ("temp_v1", "eo_4band")
EO_RNG_CHANNEL = 1_000  # the mask_rng stream of a sample's surface degradation (bands use 0..C)
SURFACE_RNG_CHANNEL = 1_001  # the mask_rng stream of a sample's surface-variable degradation
PROFILE_RNG_CHANNEL = 2_000  # the mask_rng stream of a sample's fixed profile positions (one for all bands)
SYSTEM_RNG_CHANNEL = 2_001  # the mask_rng stream choosing a validation sample's observing system (``both``)


class _Samples(Sequence):
    """Samples built together: a sequence of per-sample dicts (views into the batch arrays).

    ``batch`` is the already collated batch (what ``default_collate`` of the samples gives);
    :func:`collate` returns it as is instead of stacking the samples again.
    """

    def __init__(self, batch: dict[str, Any] | None, samples: list[dict[str, Any]] | None = None,
                 infos: list[dict[str, Any]] | None = None):  # fmt: skip
        self.batch, self._samples, self._infos = batch, samples, infos
        self._length = len(samples) if samples is not None else len(batch["date"])

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if self._samples is not None:
            return self._samples[k]
        sample = {key: value[k] for key, value in self.batch.items() if key != "info"}
        if self._infos is not None:
            sample["info"] = self._infos[k]
        return sample


def collate(samples):
    """``default_collate``, but a batch built by :meth:`PatchDataset.__getitems__` is passed through."""
    if isinstance(samples, _Samples) and samples.batch is not None:
        return samples.batch
    return default_collate(samples)


# --------------------------------------------------------------------------- the dataset
class PatchDataset(Dataset):
    """Samples of one split of the patch index for ``temp_v1`` or ``eo_4band`` (see the module docstring).

    ``index``: the split CSV, or a DataFrame (its ``attrs['index_dir']``, else ``{data_dir}/patches``, is the
    folder ``y_npy_path`` is relative to). ``split``: a value of the ``split`` column, or ``"all"``; only
    ``"train"`` draws fresh masks and degrades/augments; each training sample hides one of
    ``dataset.train_mask_fractions`` (drawn per sample) when that is set. ``mask_fraction`` and ``seed``
    override ``dataset.mask_fraction`` (and the training list) and ``seed`` (the evaluation stage scores
    several fractions). ``augment`` (train only) overrides ``dataset.enable_transform`` for the rot90/flip
    done here; see :func:`~depthdif.data.augment.augment_batch`. ``profile_density`` (profiles per (1°)² a
    month) makes every sample observed by profiles at that density, whatever ``dataset.observations`` says
    (the evaluation's profile levels); ``mask_fraction`` makes every sample a rectangles one. Give at most one
    of the two.
    ``packed``: batches from ``__getitems__`` have bool ``valid_mask``/``land_mask`` and no ``x`` (see
    :func:`unpack_batch`); single samples (``__getitem__``) are always whole.
    """

    def __init__(
        self,
        index: str | Path | pd.DataFrame,
        config: dict,
        split: str,
        variant: str | None = None,
        mask_fraction: float | None = None,
        seed: int | None = None,
        augment: bool | None = None,
        packed: bool = False,
        profile_density: float | None = None,
    ):
        options = config["dataset"]
        self.packed = packed
        self.variant = variant or options["dataset_variant"]
        if self.variant not in VARIANTS:
            raise PatchIndexError(f"unknown dataset variant '{self.variant}'; use one of {VARIANTS}")
        self.split = split
        self.train = split == "train"
        if mask_fraction is not None:
            self.mask_fraction = float(mask_fraction)
        else:  # a profiles-only set draws no rectangles: the evaluation's baselines build it without this key
            self.mask_fraction = float(options["mask_fraction"]) if profile_density is None else 0.0
        if not 0.0 <= self.mask_fraction <= 1.0:
            raise PatchIndexError(f"mask fraction {self.mask_fraction} is outside [0, 1]")
        listed = options.get("train_mask_fractions") if mask_fraction is None else None
        self.train_fractions = [float(f) for f in listed] if self.train and listed else [self.mask_fraction]
        self.seed = int(config["seed"] if seed is None else seed)
        self._set_observations(config, mask_fraction, profile_density)
        self.side_min, self.side_max = int(options["mask_patch_min"]), int(options["mask_patch_max"])
        self.fill_value = options["fill_value"]
        # rot90/flip here, on the CPU; the DataModule passes augment=False and turns whole batches on the
        # training device instead (augment_batch), which takes the slowest step off the loader
        self.transform = self.train and (options["enable_transform"] if augment is None else augment)
        # validation/evaluation see the same satellite-like surface as training, fixed by (seed, sample), unless
        # dataset.eo_degraded_val is off (the reanalysis's own surface, which no satellite provides)
        self.eo_degraded_val = not self.train and bool(options["eo_degraded_val"])
        self.eo_offset = (self.train or self.eo_degraded_val) and options["eo_random_offset"]
        self.eo_speckle = (self.train or self.eo_degraded_val) and options["eo_speckle"]
        self.eo_dropout = float(options["eo_dropout_prob"]) if self.train else 0.0
        self.return_coords, self.return_info = options["return_coords"], options["return_info"]
        self.first_guess = options["first_guess"]
        self.length_scale_px = float(config["evaluate"]["oi_length_scale_px"])
        self.mask_reuse = int(options["train_mask_reuse"]) if self.train else 0  # val masks are never reused
        self.temp_v1_band = int(options["temp_v1_band"])
        # eo_4band's other dense conditions (sea-surface height, ...), degraded like the EO band is
        self.surface_variables = (tuple(str(v) for v in config["export"]["surface_variables"])
                                  if self.variant == "eo_4band" else ())
        self.surface_noise = float(options["surface_noise_fraction"]) if self.train or self.eo_degraded_val else 0.0

        frame = self._select(index, config, split)
        self._set_rows(frame)
        self._reader = NpyReader()
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple[int, int] | None = None
        self._pools: dict[tuple[int, int, float], TorusMaskPool] = {}
        self._speckle_bank: SpeckleBank | None = None
        self._scratch: dict[tuple[int, int, int], np.ndarray] = {}  # the raw patch being processed

    # ----- set-up
    def _set_observations(self, config: dict, mask_fraction: float | None,
                          profile_density: float | None) -> None:
        """The observing system (``rectangles``/``profiles``/``both``) and the profile densities (profiles per
        (1°)² a month) this split draws from.

        Raises:
            PatchIndexError: both overrides are given, or ``profile_density`` is negative or not finite.
        """
        options = config["dataset"]
        self.observations = str(options["observations"])
        argo = float(options["profiles_per_deg2_month"])
        if self.train:
            factors = options["train_profile_density_factors"] or config["evaluate"]["profile_density_factors"]
            self.profile_densities = [argo * float(f) for f in factors]
        else:  # validation draws at one density: the training factors are not read
            self.profile_densities = [argo]
        if mask_fraction is not None and profile_density is not None:
            raise PatchIndexError("PatchDataset takes mask_fraction (rectangles) or profile_density "
                                  "(profiles), not both")
        if mask_fraction is not None:
            self.observations = "rectangles"
        if profile_density is not None:
            if not math.isfinite(float(profile_density)) or float(profile_density) < 0:
                raise PatchIndexError(f"profile density {profile_density} must be finite and >= 0 "
                                      "(profiles per (1°)² a month)")
            self.observations, self.profile_densities = "profiles", [float(profile_density)]

    def _select(self, index, config: dict, split: str) -> pd.DataFrame:
        if isinstance(index, pd.DataFrame):
            frame = index
            if "index_dir" not in frame.attrs:
                frame.attrs["index_dir"] = str(data_layout_of(config).patches_dir)
        else:
            frame = read_index(index)
        self.index_dir = frame.attrs.get("index_dir")
        required = INDEX_COLUMNS + (("split",) if split != "all" else ())
        check_index_columns(frame, required)
        check_unique_ids(frame)
        if split != "all":
            known = sorted(set(frame["split"].astype(str)))
            if split not in known:
                raise PatchIndexError(
                    f"no rows with split '{split}' in patch index {frame.attrs.get('origin', '<DataFrame>')} "
                    f"(it has {known}); check the split stage (split.val_fraction) or the index."
                )
            frame = frame[frame["split"].astype(str) == split]
        return frame

    def _set_rows(self, frame: pd.DataFrame) -> None:
        channels = frame["num_channels"].to_numpy(np.int64)
        sizes = frame["patch_size"].to_numpy(np.int64)
        need = 2 if self.variant == "eo_4band" else self.temp_v1_band + 1
        short = np.flatnonzero(channels < need)
        if short.size:
            row = frame.iloc[short[0]]
            raise PatchIndexError(
                f"row {row.name} (sample_id {row['sample_id']}) has num_channels {row['num_channels']}; "
                f"variant {self.variant} needs at least {need} (eo_4band: surface + deeper bands; temp_v1: "
                "dataset.temp_v1_band must be an exported channel)."
            )
        self.frame = frame
        self.sample_ids = frame["sample_id"].astype(str).tolist()
        self.row_names = [
            f"{label} (sample_id {sid})" for label, sid in zip(frame.index, self.sample_ids, strict=True)
        ]
        self.paths = [
            resolve_patch_path(self.index_dir, rel, name)
            for rel, name in zip(frame["y_npy_path"], self.row_names, strict=True)
        ]
        self.shapes = [(int(c), int(s), int(s)) for c, s in zip(channels, sizes, strict=True)]
        self.surface_paths = self._surface_paths(frame)
        self.keys = [sample_key(s) for s in self.sample_ids]
        self.dates = index_dates(frame)
        self.coords = patch_centres(frame) if len(frame) else np.zeros((0, 2), np.float32)
        corners = (frame[c].to_numpy(np.float64) for c in ("lat0", "lat1", "lon0", "lon1"))
        self.cell_areas = cell_area_deg2(*corners, sizes)  # (1°)² per pixel: the profiles' expected count

    def _surface_paths(self, frame: pd.DataFrame) -> list[str]:
        """Paths of the rows' surface-field files (``surface_npy_path``), or [] when the variant takes none.

        Raises:
            PatchIndexError: the index was exported without these surface variables (or others, or in another
                order): the export and the config disagree, so re-export.
        """
        if not self.surface_variables:
            return []
        wanted = ";".join(self.surface_variables)
        missing = [c for c in ("surface_variables", "surface_npy_path") if c not in frame.columns]
        exported = set() if missing else set(frame["surface_variables"].fillna("").astype(str))
        if missing or exported - {wanted}:
            have = "no surface variables" if missing else f"surface variables {sorted(exported)}"
            raise PatchIndexError(
                f"patch index {frame.attrs.get('origin', '<DataFrame>')} has {have}; export.surface_variables is "
                f"{list(self.surface_variables)} (eo_4band's dense conditions). Re-run the export with this config "
                "(snakemake export), or set export.surface_variables to what was exported."
            )
        return [resolve_patch_path(self.index_dir, rel, name)
                for rel, name in zip(frame["surface_npy_path"], self.row_names, strict=True)]

    def __len__(self) -> int:
        return len(self.paths)

    # ----- randomness
    def _train_rng(self) -> np.random.Generator:
        """One generator per process, seeded from ``seed`` and torch's per-worker seed.

        torch gives every DataLoader worker (and every epoch's workers) its own initial seed, and Lightning's
        ``seed_everything`` fixes it, so masks are fresh, different across workers and reproducible. The
        generator is re-created when the dataset is used in another process (the copy a worker receives).
        """
        owner = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_owner != owner:
            words = [self.seed & 0xFFFF_FFFF_FFFF_FFFF, owner[1] & 0xFFFF_FFFF_FFFF_FFFF]
            self._rng, self._rng_owner = np.random.default_rng(np.random.SeedSequence(words)), owner
            self._pools, self._speckle_bank = {}, None
        return self._rng

    def _masks(self, item: int, ocean: np.ndarray, channels: range, out: np.ndarray | None = None,
               raw: np.ndarray | None = None, code: int = 0) -> np.ndarray:
        """The observed pixels (C, H, W) bool of sample ``item``, in ``out`` when given.

        Args:
            item: the sample.
            ocean: (C, H, W) bool, ocean at each target band, already turned by ``code``.
            channels: the export channels of the target bands (they key the fixed rectangle masks).
            out: (C, H, W) bool to write into, or None.
            raw: (C_export, H, W) °C, NaN = no data, not turned: the whole exported column (profiles may land
                wherever any level is ocean). None: the target bands' ocean stands for it.
            code: the rot90/flip of the sample (:func:`~depthdif.data.augment.dihedral`).

        Returns:
            (C, H, W) bool, True where observed (``out`` when given).
        """
        if self._system(item) == "profiles":
            if raw is None:
                columns = ocean.any(axis=0)
            else:
                columns = dihedral(np.isfinite(raw).any(axis=0)[None], code)[0]
            if self.train:
                rng = self._train_rng()
                density = self.profile_densities[int(rng.integers(len(self.profile_densities)))]
            else:  # one generator for the sample, not one per band: the bands share the profiles
                rng = mask_rng(self.seed, self.keys[item], PROFILE_RNG_CHANNEL)
                density = self.profile_densities[0]
            valid = make_profile_masks(rng, columns, ocean, density, float(self.cell_areas[item]))
            if out is None:
                return valid
            out[...] = valid
            return out
        if self.train:
            rng = self._train_rng()
            fraction = self.train_fractions[0]
            if len(self.train_fractions) > 1:
                fraction = self.train_fractions[int(rng.integers(len(self.train_fractions)))]
            if self.mask_reuse > 0:
                return self._pool(ocean.shape[1:], len(channels), fraction).masks(ocean, out)
            rngs = [rng] * len(channels)
        else:
            fraction = self.mask_fraction
            rngs = [mask_rng(self.seed, self.keys[item], c) for c in channels]
        valid = make_band_masks(rngs, ocean, fraction, self.side_min, self.side_max)
        if out is None:
            return valid
        out[...] = valid
        return out

    def _system(self, item: int) -> str:
        """``rectangles`` or ``profiles`` for this draw of sample ``item`` (``both``: a coin, fixed by seed
        and sample outside training)."""
        if self.observations != "both":
            return self.observations
        coin = self._train_rng() if self.train else mask_rng(self.seed, self.keys[item], SYSTEM_RNG_CHANNEL)
        return "profiles" if coin.random() < 0.5 else "rectangles"

    def _pool(self, shape: tuple[int, int], n_bands: int, fraction: float) -> TorusMaskPool:
        """The training mask pool of one patch shape and hidden share (made on first use in each process)."""
        rng = self._train_rng()  # first: a new process starts with no pools
        key = (*shape, fraction)
        if key not in self._pools:
            self._pools[key] = TorusMaskPool(
                rng, shape[0], shape[1], fraction, self.side_min, self.side_max,
                reuse=self.mask_reuse, n_tori=2 * n_bands,
            )  # fmt: skip
        return self._pools[key]

    # ----- samples
    def read(self, item: int) -> np.ndarray:
        """The raw patch of sample ``item``: float32 (C_export, H, W) °C, NaN = no data (a fresh array)."""
        out = np.empty(self.shapes[item], dtype=np.float32)
        self._reader.read_into(self.paths[item], self.shapes[item], self.row_names[item], out)
        return out

    def __getitem__(self, item: int) -> dict[str, Any]:
        return self._samples([item], packed=False)[0]

    def __getitems__(self, items: list[int]) -> _Samples:
        """Several samples built together (vectorised over the batch); the DataLoader calls this with a
        batch's indices, and :func:`collate` then hands over the batch without copying it again."""
        return self._samples([int(i) for i in items], self.packed)

    def _samples(self, items: list[int], packed: bool) -> _Samples:
        if len({self.shapes[i] for i in items}) > 1:  # mixed patch sizes cannot share arrays
            return _Samples(None, [self._samples([i], packed=False)[0] for i in items])
        infos = [self._info(item) for item in items] if self.return_info else None
        return _Samples(self._batch(items, infos, packed), infos=infos)

    def _batch(self, items: list[int], infos: list[dict[str, Any]] | None, packed: bool) -> dict[str, Any]:
        """The collated batch of ``items`` (packed: bool masks, no ``x``). Sample by sample (so that a patch's
        intermediate arrays stay in the CPU cache, which whole-batch passes over several MB do not), written
        straight into the batch."""
        n, (n_channels, height, width) = len(items), self.shapes[items[0]]
        eo_variant = self.variant == "eo_4band"
        channels = range(1, n_channels) if eo_variant else range(self.temp_v1_band, self.temp_v1_band + 1)
        targets = slice(channels.start, channels.stop)
        rng = self._train_rng() if self.train else None
        codes = rng.integers(8, size=n) if self.transform else np.zeros(n, dtype=np.int64)
        available = np.ones(n, dtype=np.float32)
        if eo_variant and self.train and self.eo_dropout:
            available = (rng.random(n) >= self.eo_dropout).astype(np.float32)

        parts = {"y": len(channels)}
        parts.update({} if packed else {"x": len(channels), "valid": len(channels), "land": len(channels)})
        parts.update({"eo": 1} if eo_variant else {})
        n_surface = len(self.surface_variables)
        parts.update({"surface": n_surface} if n_surface else {})
        parts.update({"guess": len(channels)} if self.first_guess else {})
        out = _carve(n, height, width, parts)
        y, eo, guesses, surface = out["y"], out.get("eo"), out.get("guess"), out.get("surface")
        if packed:
            valid_b = np.empty((n, len(channels), height, width), dtype=bool)
            land_b = np.empty_like(valid_b)
            x = np.empty((n, len(channels), height, width), np.float32) if guesses is not None else None
        else:
            x, valid_f, land_f = out["x"], out["valid"], out["land"]
        raw = self._scratch.get((n_channels, height, width))
        if raw is None:
            raw = self._scratch[(n_channels, height, width)] = np.empty(
                (n_channels, height, width), np.float32
            )
        for k, item in enumerate(items):
            self._reader.read_into(self.paths[item], self.shapes[item], self.row_names[item], raw)
            if self.fill_value is not None:  # from here on NaN is the one no-data marker
                raw[raw == np.float32(self.fill_value)] = np.nan
            code = int(codes[k])
            land = _normalize_into(raw[targets], code, y[k], land_b[k] if packed else None)
            valid = self._masks(item, land, channels, valid_b[k] if packed else None, raw, code)
            if packed:
                if x is not None:
                    np.multiply(y[k], valid, out=x[k])
            else:
                np.copyto(valid_f[k], valid.view(np.uint8))
                np.copyto(land_f[k], land.view(np.uint8))
                np.multiply(y[k], valid_f[k], out=x[k])
            eo_field = None
            if eo_variant:
                if not available[k]:
                    eo[k] = 0.0  # dropout: no EO at all, flagged by eo_available
                else:
                    if self.train:
                        self._degrade_eo(raw[0], rng)
                    elif self.eo_degraded_val:
                        self._degrade_eo(raw[0], mask_rng(self.seed, self.keys[item], EO_RNG_CHANNEL))
                    _normalize_into(raw[0:1], code, eo[k])
                    eo_field = eo[k, 0]
            if surface is not None:
                self._surface_into(item, code, bool(available[k]), rng, surface[k], (n_surface, height, width))
                if eo_field is not None:  # the loader's first guess regresses on every dense surface field
                    eo_field = np.concatenate([eo[k], surface[k]])
            if guesses is not None:
                guesses[k] = self._first_guess(x[k], valid, land, eo_field)

        if packed:
            batch: dict[str, Any] = {
                "y": torch.from_numpy(y),
                "valid_mask": torch.from_numpy(valid_b),
                "land_mask": torch.from_numpy(land_b),
            }
        else:
            batch = {
                "y": torch.from_numpy(y),
                "x": torch.from_numpy(x),
                "valid_mask": torch.from_numpy(valid_f),
                "land_mask": torch.from_numpy(land_f),
            }
        if eo_variant:
            batch["eo"] = torch.from_numpy(eo)
            batch["eo_available"] = torch.from_numpy(available[:, None])
        if surface is not None:
            batch["surface"] = torch.from_numpy(surface)
        if guesses is not None:
            batch["first_guess"] = torch.from_numpy(guesses)
        batch["date"] = torch.from_numpy(self.dates[items])
        if self.return_coords:
            batch["coords"] = torch.from_numpy(self.coords[items])
        if infos is not None:
            batch["info"] = default_collate(infos)
        return batch

    def _info(self, item: int) -> dict[str, Any]:
        row = self.frame.iloc[item]
        label = row.name
        return {
            "sample_id": self.sample_ids[item],
            "source_file": str(row["source_file"]),
            "y0": int(row["y0"]),
            "x0": int(row["x0"]),
            "row": int(label) if isinstance(label, int | np.integer) else str(label),
        }

    def _degrade_eo(self, eo_celsius: np.ndarray, rng: np.random.Generator) -> None:
        """Make a training EO band (H, W) look like a satellite product, in place, in °C.

        An offset uniform in [-2, 2] °C over the patch (a bias between sensor and model) and per-pixel
        multiplicative speckle ``1 + 0.01 N(0, 1)`` clamped to [0.9, 1.1]; dropout (no image that day,
        ``eo_dropout_prob``) is drawn by the caller, which zeroes that EO and sets ``eo_available`` to 0 so a
        dropped field is not mistaken for a 16.59 °C one. Applied to the °C field, so the speckle is ~0.2 °C
        at 20 °C, not a noise that scales with the z-score; NaN land stays NaN. Done before the rot90/flip
        (the same statistics, on the still contiguous patch).
        """
        if self.eo_offset:
            eo_celsius += np.float32(rng.uniform(-EO_OFFSET_MAX_C, EO_OFFSET_MAX_C))
        if self.eo_speckle:
            eo_celsius *= self._speckle(rng, eo_celsius.shape)

    def _surface_into(self, item: int, code: int, available: bool, rng: np.random.Generator | None,
                      out: np.ndarray, shape: tuple[int, int, int]) -> None:
        """``out`` (S, H, W) = the sample's surface fields turned by ``code``, 0 on land and when the surface was
        dropped; in training and degraded validation plus white noise of ``dataset.surface_noise_fraction``
        times each field's standard deviation over the patch (a gridded altimetry map's error, which no model
        output has)."""
        if not available:
            out.fill(0.0)
            return
        fields = np.empty(shape, np.float32)
        self._reader.read_into(self.surface_paths[item], shape, self.row_names[item], fields)
        if self.surface_noise > 0:
            rng = rng if self.train else mask_rng(self.seed, self.keys[item], SURFACE_RNG_CHANNEL)
            spread = np.nanstd(fields, axis=(1, 2), keepdims=True) if np.isfinite(fields).any() else 0.0
            fields += (self.surface_noise * spread * rng.standard_normal(shape)).astype(np.float32)
        np.copyto(out, dihedral(fields, code) if code else fields)
        np.nan_to_num(out, copy=False, nan=0.0)

    def _speckle(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if self.mask_reuse <= 0 or not self.train:
            return speckle_factors(rng, shape)
        if self._speckle_bank is None:
            self._speckle_bank = SpeckleBank(rng, self.mask_reuse)
        return self._speckle_bank.take(rng, shape)

    def _first_guess(self, x, valid, land, eo) -> np.ndarray:
        from depthdif.baselines import first_guess_estimate  # lazy: only when dataset.first_guess is on

        guess = np.asarray(first_guess_estimate(x, valid, land, eo, self.length_scale_px), dtype=np.float32)
        if guess.shape != x.shape:
            raise PatchIndexError(f"first_guess_estimate returned shape {guess.shape}, expected {x.shape}")
        return np.where(land & np.isfinite(guess), guess, np.float32(0.0))


_NORM_SCALE = np.float32(temperature_normalize(1.0) - temperature_normalize(0.0))
_NORM_OFFSET = np.float32(temperature_normalize(0.0))


def _carve(n: int, height: int, width: int, parts: dict[str, int]) -> dict[str, np.ndarray]:
    """Contiguous (n, c, H, W) float32 arrays for ``parts`` ({name: c}), all cut from one allocation.

    One block of a batch's size (~13 MB for 16 eo_4band 128x128 samples) gets transparent huge pages from
    numpy (it advises them from 4 MB on), so filling it costs a few page faults instead of thousands:
    separate 3 MB arrays made batch building several times slower.
    """
    plane = height * width
    block = np.empty(n * plane * sum(parts.values()), dtype=np.float32)
    out, start = {}, 0
    for name, channels in parts.items():
        size = n * channels * plane
        out[name] = block[start : start + size].reshape(n, channels, height, width)
        start += size
    return out


def _normalize_into(celsius: np.ndarray, code: int, out: np.ndarray, ocean: np.ndarray | None = None) -> np.ndarray:
    """``out`` = normalised ``celsius`` (C, H, W) turned by ``code``, land 0; returns the ocean mask (bool, in
    ``ocean`` when given).

    The same affine map as ``temperature_normalize`` as a multiply-add on float32 (equal to ~1e-7). A turned
    patch is first copied in its new orientation (one strided copy; multiplying straight from the strided
    view is slower), then scaled in contiguous passes. NaN (no data) becomes 0 and False in the mask.
    """
    if code:
        np.copyto(out, dihedral(celsius, code))
        out *= _NORM_SCALE
    else:
        np.multiply(celsius, _NORM_SCALE, out=out)
    out += _NORM_OFFSET
    ocean = np.isfinite(out, out=ocean)
    np.copyto(out, np.float32(0.0), where=~ocean)
    return ocean


def unpack_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A packed batch (bool ``valid_mask``/``land_mask``, no ``x``) as the documented samples, in place, on
    the batch's device: float32 masks and ``x = y * valid_mask``. A batch that is not packed is returned as is.
    """
    if batch["valid_mask"].dtype != torch.bool:
        return batch
    dtype = batch["y"].dtype
    batch["valid_mask"] = batch["valid_mask"].to(dtype)
    batch["land_mask"] = batch["land_mask"].to(dtype)
    batch["x"] = batch["y"] * batch["valid_mask"]
    return batch

