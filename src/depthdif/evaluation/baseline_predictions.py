"""The evaluation's baselines as a stage of their own: every method that is not the model, on every pass.

Rules ``baselines_{variant}`` and ``baselines_real_{variant}`` (the real sample) run :func:`run_baselines`:
it rebuilds the val items of every pass the evaluation scores (:mod:`depthdif.evaluation.passes`), runs mean
fill, nearest, linear, IDW, biharmonic, OI (and ``eo_regression_oi`` for ``eo_4band``), climatology and DINEOF
on them, and stores their predictions with a fingerprint of the items they saw. ``evaluate_{variant}`` reads
the file (:class:`StoredBaselines`) instead of recomputing, so a change of a model setting reruns no baseline.
An evaluation without the file (`depthdif evaluate` without ``--baselines``) computes the same predictions in
place (:class:`InlineBaselines`); both routes are scored by :func:`score_baselines` from float32 predictions,
so they give the same metrics.

The file (``predictions.npz``, readable with ``np.load``) holds, per pass ``<key>`` (e.g. ``occlusion_0.95``)
and method ``<name>``: ``<key>/<name>`` float32 (P, C, H, W) °C, NaN where the method gave nothing, and
``<key>/<name>/available`` bool (P, C), whether the method ran on that patch's band (else it is recorded
as unavailable); and ``meta``, a JSON string: format version, variant, and per pass its kind, level,
methods and fingerprint (:func:`depthdif.evaluation.passes.items_fingerprint`).
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from depthdif.atomic import atomic_path
from depthdif.baselines import (
    BaselineUnavailable,
    baseline_params_from_config,
    climatology,
    climatology_history,
    dineof_fill,
    load_history,
    run_baseline,
)
from depthdif.errors import DepthDifError
from depthdif.evaluation.metrics import ScoreAccumulator
from depthdif.evaluation.passes import (
    CLEAN_SURFACE,
    EvalItems,
    EvalPass,
    evaluation_passes,
    items_config,
    items_fingerprint,
    pass_items,
    select_val_rows,
    target_channels,
    target_depths,
)

log = logging.getLogger(__name__)

PER_PATCH_BASELINES = ("mean_fill", "nearest", "linear", "idw", "biharmonic", "oi")
PREDICTION_DTYPE = np.float32  # what the file stores; both routes score these values
FORMAT_VERSION = 1
META = "meta"
ITEMS_BATCH_SIZE = 16  # the items do not depend on it (masks are fixed per sample); memory only
# DINEOF fills the ocean common to every month of its location, NaN where one month has ocean the others
# lack: it is scored on the hidden pixels it filled
SCORED_WHERE_FILLED = frozenset({"dineof"})

class BaselinesMismatchError(DepthDifError, ValueError):
    """The stored baseline predictions were computed from other val observations than the evaluation's."""


@dataclass
class BaselinePrediction:
    """One method's predictions on one pass.

    Args:
        values: (P, C, H, W) °C, NaN where the method gave nothing (land; a band it could not fill).
        available: (P, C) bool, True where the method ran on that patch's band.
    """

    values: np.ndarray
    available: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype=PREDICTION_DTYPE) -> BaselinePrediction:
        """All NaN, nothing available, for items of ``shape`` (P, C, H, W).

        Args:
            shape: (P, C, H, W).
            dtype: of ``values``.

        Returns:
            ``values`` (P, C, H, W) all NaN, ``available`` (P, C) all False.
        """
        return cls(np.full(shape, np.nan, dtype=dtype), np.zeros(shape[:2], dtype=bool))


@dataclass
class BaselineContext:
    """What the baselines need besides a pass's items.

    Args:
        index: the whole split index (climatology looks up the other years of a place).
        patches_dir: the index's folder (its ``y_npy_path`` are relative to it).
        rows: the val rows of the items (DINEOF stacks a location's months).
        channels: exported channel of each target band.
        params: the per-patch baselines' parameters (:func:`depthdif.baselines.baseline_params_from_config`).
        seed: DINEOF's cross-validation points.
        dineof: run DINEOF (``evaluate.dineof``).
        dineof_max_modes: ``evaluate.dineof_max_modes``.
    """

    index: pd.DataFrame
    patches_dir: Path
    rows: pd.DataFrame
    channels: list[int]
    params: dict
    seed: int
    dineof: bool
    dineof_max_modes: int


def read_val_selection(config: Mapping, index_csv: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split index and the val rows the evaluation scores (the same for the baselines and the model).

    Args:
        config: reads ``seed``, ``evaluate.max_patches`` and ``evaluate.months_per_location``.
        index_csv: the split index.

    Returns:
        ``(index, rows)``: the whole index (``attrs["origin"]`` = its path) and the val rows
        (:func:`depthdif.evaluation.passes.select_val_rows`, ``attrs["index_dir"]`` = the index's folder).

    Raises:
        ValueError: the index has no val rows.
    """
    index_csv = Path(index_csv)
    index = pd.read_csv(index_csv)
    index.attrs["origin"] = str(index_csv)
    settings = config["evaluate"]
    rows = select_val_rows(index, settings["max_patches"], int(config["seed"]), settings["months_per_location"])
    rows.attrs["index_dir"] = str(index_csv.parent)
    return index, rows


def baseline_context(config: Mapping, variant: str, index: pd.DataFrame, rows: pd.DataFrame,
                     n_bands: int) -> BaselineContext:
    """The :class:`BaselineContext` of ``config``.

    Args:
        config: reads ``seed``, ``dataset.temp_v1_band`` and the baseline keys of ``evaluate``
            (``oi_*``, ``idw_neighbours``, ``dineof``, ``dineof_max_modes``).
        variant: ``temp_v1`` or ``eo_4band``.
        index: the whole split index, as :func:`read_val_selection` returns it.
        rows: the val rows, as :func:`read_val_selection` returns them (``attrs["index_dir"]``).
        n_bands: C, the number of target bands.

    Returns:
        The context.
    """
    settings = config["evaluate"]
    return BaselineContext(
        index=index, patches_dir=Path(rows.attrs["index_dir"]), rows=rows,
        channels=target_channels(config, variant, n_bands), params=baseline_params_from_config(config),
        seed=int(config["seed"]), dineof=bool(settings["dineof"]),
        dineof_max_modes=int(settings["dineof_max_modes"]),
    )


def baseline_names(eval_pass: EvalPass, variant: str, dineof: bool) -> list[str]:
    """The baselines scored on a pass: every one on the occlusion and profile passes, only the surface
    regression on the clean-surface pass (the one baseline the surface changes).

    Args:
        eval_pass: the pass.
        variant: ``temp_v1`` or ``eo_4band`` (``eo_regression_oi`` is an eo_4band method).
        dineof: whether DINEOF is scored (``evaluate.dineof``).

    Returns:
        The method names (metrics.csv's ``method``), in scoring order.
    """
    if eval_pass.kind == CLEAN_SURFACE:
        return ["eo_regression_oi"]
    names = list(PER_PATCH_BASELINES) + (["eo_regression_oi"] if variant == "eo_4band" else []) + ["climatology"]
    return names + (["dineof"] if dineof else [])


def compute_baselines(items: EvalItems, eval_pass: EvalPass, variant: str, context: BaselineContext,
                      dtype=PREDICTION_DTYPE) -> dict[str, BaselinePrediction]:
    """Every baseline of :func:`baseline_names` on one pass's items.

    Args:
        items: the pass's items.
        eval_pass: the pass.
        variant: ``temp_v1`` or ``eo_4band``.
        context: see :class:`BaselineContext`.
        dtype: of the predictions (float32: what the file stores).

    Returns:
        Method name -> its predictions, in :func:`baseline_names` order.
    """
    names = baseline_names(eval_pass, variant, context.dineof)
    per_patch = [name for name in names if name not in ("climatology", "dineof")]
    # one BLAS thread: the many small OI solves run 5-30x slower with threads fighting over 2 cores
    with threadpool_limits(limits=1, user_api="blas"):
        out = per_patch_predictions(items, per_patch, context.params, eval_pass.key, dtype)
        if "climatology" in names:
            out["climatology"] = climatology_predictions(items, context, dtype)
        if "dineof" in names:
            out["dineof"] = dineof_predictions(items, context.rows, context.seed, context.dineof_max_modes,
                                               dtype=dtype)
    return {name: out[name] for name in names}


def per_patch_predictions(items: EvalItems, names: list[str], params: Mapping, label: str = "",
                          dtype=PREDICTION_DTYPE) -> dict[str, BaselinePrediction]:
    """The per-patch baselines ``names`` (:data:`depthdif.baselines.BASELINES`) on every patch and band.

    Args:
        items: a pass's items (``eo`` feeds ``eo_regression_oi``).
        names: the methods.
        params: their parameters (each method takes those it accepts).
        label: for the progress bar.
        dtype: of the predictions.

    Returns:
        Method name -> predictions; a band with no observation is not available.
    """
    out = {name: BaselinePrediction.empty(items.truth.shape, dtype) for name in names}
    for i in tqdm(range(items.truth.shape[0]), desc=f"baselines @ {label}", unit="patch", leave=False):
        eo = None if items.eo is None else items.eo[i]
        for b in range(items.truth.shape[1]):
            for name in names:
                try:
                    pred = run_baseline(name, items.observed[i, b], items.ocean[i, b], eo=eo, **params)
                except BaselineUnavailable:
                    continue
                out[name].values[i, b] = pred
                out[name].available[i, b] = True
    return out


def climatology_predictions(items: EvalItems, context: BaselineContext, dtype=PREDICTION_DTYPE
                            ) -> BaselinePrediction:
    """Same place, same calendar month, other years (information the model does NOT get).

    Args:
        items: a pass's items.
        context: ``index``, ``patches_dir`` and ``channels`` are read.
        dtype: of the predictions.

    Returns:
        The predictions; a patch without other years at its place is not available.
    """
    out = BaselinePrediction.empty(items.truth.shape, dtype)
    for i, sample_id in enumerate(items.sample_ids):
        same_month, other_months = climatology_history(context.index, sample_id)
        for b, channel in enumerate(context.channels):
            try:
                pred = climatology(
                    load_history(same_month, channel, context.patches_dir) if len(same_month) else None,
                    items.ocean[i, b], obs=items.observed[i, b],
                    history_other_months=(load_history(other_months, channel, context.patches_dir)
                                          if len(other_months) else None),
                )
            except BaselineUnavailable:
                continue
            out.values[i, b] = pred
            out.available[i, b] = True
    return out


def dineof_predictions(items: EvalItems, rows: pd.DataFrame, seed: int, max_modes: int, stack: str = "window",
                       dtype=PREDICTION_DTYPE) -> BaselinePrediction:
    """The published peer DINEOF (pydineof) on the val time stacks, band by band.

    Args:
        items: a pass's items (DINEOF sees exactly their observed pixels).
        rows: the val index rows of ``items`` (``sample_id``, ``y0``, ``x0``, ``date``).
        seed: chooses DINEOF's cross-validation points.
        max_modes: the most EOF modes DINEOF may retain (``evaluate.dineof_max_modes``).
        stack: ``"window"``: one DINEOF per val location on its own months (``(T, H, W)``);
            ``"locations"``: one DINEOF for all val locations side by side (``(L, T, H, W)``) on the union
            of their months, a month a location lacks entering as an all-missing frame (not scored).
        dtype: of the predictions.

    Returns:
        (P, C, H, W) °C, NaN on land and outside the ocean common to the location's months; not available
        where DINEOF could not run.

    Raises:
        ValueError: unknown ``stack``.

    ``"window"`` is the default because it measured better on this repo's ocean at every band and
    occlusion (bench/dineof_peer.py): its eddies are independent from place to place, so one matrix for
    all locations needs the sum of their ranks while 24 months allow at most 17 modes.
    """
    if stack not in ("window", "locations"):
        raise ValueError(f"run_dineof: stack must be 'window' or 'locations'; got {stack!r}")
    out = BaselinePrediction.empty(items.truth.shape, dtype)
    positions = {sid: i for i, sid in enumerate(items.sample_ids)}
    present = rows[rows["sample_id"].isin(positions)]
    groups = [group for _, group in present.groupby(["y0", "x0"])]
    units = [groups] if stack == "locations" else [[group] for group in groups]
    for unit in units:
        months = sorted(set().union(*(group["date"] for group in unit)))
        slot = {month: t for t, month in enumerate(months)}
        # item index of each (location, month); -1 where a location lacks that month
        members = np.full((len(unit), len(months)), -1)
        for k, group in enumerate(unit):
            for date, sample_id in zip(group["date"], group["sample_id"], strict=True):
                members[k, slot[date]] = positions[sample_id]
        where = [tuple(group.iloc[0][["y0", "x0"]]) for group in unit]
        for b in range(items.truth.shape[1]):
            ocean = np.stack([items.ocean[row[row >= 0], b].all(axis=0) for row in members])
            observed = np.where(members[..., None, None] >= 0, items.observed[members, b], np.nan)
            try:
                filled = dineof_fill(observed, ocean, max_modes=max_modes, seed=seed)
            except BaselineUnavailable as why:
                log.info("dineof skipped at %s band %d: %s", where if len(where) > 1 else where[0], b, why)
                continue
            for k, t in zip(*np.nonzero(members >= 0), strict=True):
                out.values[members[k, t], b] = filled[k, t]
                out.available[members[k, t], b] = True
    return out


def score_baselines(predictions: Mapping[str, BaselinePrediction], items: EvalItems, level: float,
                    depths: list[float], scores: ScoreAccumulator) -> None:
    """Score each baseline on the pass's hidden ocean (:data:`SCORED_WHERE_FILLED`: where it filled).

    Args:
        predictions: method -> its predictions on ``items``.
        items: the pass's items.
        level: the pass's key in ``scores`` (its ``mask_fraction``).
        depths: depth (m) of each band.
        scores: the accumulator; a method that never ran on a band still gets its row (NaN, 0 pixels).
    """
    hidden = items.hidden
    for name, pred in predictions.items():
        for b, depth in enumerate(depths):
            scores.add_unavailable(name, b, level, depth)
            for i in np.nonzero(pred.available[:, b])[0]:
                region = hidden[i, b]
                if name in SCORED_WHERE_FILLED:
                    region = region & np.isfinite(pred.values[i, b])
                scores.add(name, b, level, pred.values[i, b], items.truth[i, b], region, depth,
                           location=items.locations[i])


def run_dineof(items: EvalItems, rows: pd.DataFrame, fraction: float, depths: list[float],
               scores: ScoreAccumulator, seed: int, max_modes: int, stack: str = "window") -> np.ndarray:
    """:func:`dineof_predictions` in float64, scored into ``scores`` at ``fraction`` (for studies of DINEOF
    itself, bench/dineof_peer.py).

    Args:
        items: a pass's items.
        rows: the val index rows of ``items``.
        fraction: the pass's key in ``scores``.
        depths: depth (m) of each band.
        scores: the accumulator the scores are added to.
        seed: chooses DINEOF's cross-validation points.
        max_modes: the most EOF modes DINEOF may retain.
        stack: ``"window"`` or ``"locations"``, see :func:`dineof_predictions`.

    Returns:
        (P, C, H, W) float64 °C predictions, NaN where DINEOF gave nothing.

    Raises:
        ValueError: unknown ``stack``.
    """
    pred = dineof_predictions(items, rows, seed, max_modes, stack, dtype=np.float64)
    score_baselines({"dineof": pred}, items, fraction, depths, scores)
    return pred.values


class InlineBaselines:
    """Baseline predictions computed when the evaluation asks for them (no baselines file).

    Args:
        context: see :class:`BaselineContext`.
        variant: ``temp_v1`` or ``eo_4band``.
    """

    def __init__(self, context: BaselineContext, variant: str):
        self.context, self.variant = context, variant

    def predictions(self, eval_pass: EvalPass, items: EvalItems) -> dict[str, BaselinePrediction]:
        """Every baseline of ``eval_pass`` on ``items`` (float32, as the file would hold them).

        Args:
            eval_pass: the pass.
            items: the pass's items.

        Returns:
            Method name -> its predictions ((P, C, H, W) °C), in :func:`baseline_names` order.
        """
        return compute_baselines(items, eval_pass, self.variant, self.context)

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`StoredBaselines`)."""


class StoredBaselines:
    """The predictions of a baselines file, handed out only for the items they were computed from.

    Args:
        path: the file :func:`run_baselines` wrote.
        variant: the evaluated variant.
        passes: the passes the evaluation scores (the file must hold exactly these).
        dineof: whether the evaluation scores DINEOF (``evaluate.dineof``).

    Raises:
        BaselinesMismatchError: the file is missing, of another format or variant, or holds other passes or
            methods.
    """

    def __init__(self, path: Path, variant: str, passes: list[EvalPass], dineof: bool):
        self.path, self.variant = Path(path), variant
        if not self.path.is_file():
            raise BaselinesMismatchError(f"baselines file {self.path} does not exist; {self._rerun()}")
        self._npz = np.load(self.path, allow_pickle=False)
        meta = json.loads(str(self._npz[META]))
        if meta.get("format_version") != FORMAT_VERSION or meta.get("variant") != variant:
            self._mismatch(f"it holds format {meta.get('format_version')} for variant {meta.get('variant')!r}, "
                           f"this evaluation reads format {FORMAT_VERSION} for {variant!r}")
        self._passes = {entry["key"]: entry for entry in meta["passes"]}
        wanted = [p.key for p in passes]
        if list(self._passes) != wanted:
            self._mismatch(f"it holds the passes {list(self._passes)}, this evaluation scores {wanted}")
        for eval_pass in passes:
            names = baseline_names(eval_pass, variant, dineof)
            if self._passes[eval_pass.key]["methods"] != names:
                self._mismatch(f"pass {eval_pass.key} holds the methods {self._passes[eval_pass.key]['methods']}, "
                               f"this evaluation scores {names}")

    def predictions(self, eval_pass: EvalPass, items: EvalItems) -> dict[str, BaselinePrediction]:
        """The stored predictions of ``eval_pass``, after checking they were computed from ``items``.

        Args:
            eval_pass: the pass (one the file holds: checked when the file was opened).
            items: the pass's items as the evaluation rebuilt them.

        Returns:
            Method name -> its stored predictions ((P, C, H, W) float32 °C), in the file's order.

        Raises:

            BaselinesMismatchError: other samples, another order or other masks than ``items``.
        """
        entry = self._passes[eval_pass.key]
        stored, found = entry["fingerprint"], items_fingerprint(items)
        if stored["sample_ids"] != found["sample_ids"]:
            self._mismatch(f"pass {eval_pass.key} was computed on other val patches ({len(stored['sample_ids'])} "
                           f"from {stored['sample_ids'][:1]}, here {len(found['sample_ids'])} from "
                           f"{found['sample_ids'][:1]})")
        if stored != found:
            self._mismatch(f"pass {eval_pass.key} was computed from other observation masks than this "
                           "evaluation draws")
        return {name: BaselinePrediction(self._npz[f"{eval_pass.key}/{name}"],
                                         self._npz[f"{eval_pass.key}/{name}/available"])
                for name in entry["methods"]}

    def close(self) -> None:
        """Release the file."""
        self._npz.close()

    def _rerun(self) -> str:
        return (f"rerun the baselines (snakemake --forcerun baselines_{self.variant} evaluate_{self.variant}, or "
                f"`depthdif baselines {self.variant}` with the evaluation's config), or run `depthdif evaluate` "
                "without --baselines to compute them in place")

    def _mismatch(self, what: str) -> None:
        raise BaselinesMismatchError(f"baselines file {self.path} does not match this evaluation: {what}. It was "
                                     f"computed from another config or split index; {self._rerun()}.")


def write_baselines(path: Path, variant: str,
                    results: Iterable[tuple[EvalPass, dict, Mapping[str, BaselinePrediction]]]) -> Path:
    """Write the baselines file, one pass at a time (only one pass's predictions are in memory at once).

    Args:
        path: the ``.npz`` to write (atomically: it appears only once complete).
        variant: ``temp_v1`` or ``eo_4band``.
        results: ``(pass, fingerprint, predictions)`` per pass, in the evaluation's order.

    Returns:
        ``path``.
    """
    passes = []
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for eval_pass, fingerprint, predictions in results:
            for name, pred in predictions.items():
                _write_array(archive, f"{eval_pass.key}/{name}", pred.values.astype(PREDICTION_DTYPE, copy=False))
                _write_array(archive, f"{eval_pass.key}/{name}/available", pred.available)
            passes.append({"key": eval_pass.key, "kind": eval_pass.kind, "level": eval_pass.level,
                           "methods": list(predictions), "fingerprint": fingerprint})
        meta = {"format_version": FORMAT_VERSION, "variant": variant, "units": "degC", "passes": passes}
        _write_array(archive, META, np.array(json.dumps(meta)))
    return Path(path)


def _write_array(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    """One ``name.npy`` member, as ``np.savez`` writes it."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def run_baselines(config: Mapping, variant: str, index_csv: Path, out_path: Path) -> Path:
    """Stage entry point of rules ``baselines_{variant}``, ``baselines_real_{variant}`` and of
    `depthdif baselines <variant>`: every baseline on every pass of the evaluation.

    Args:
        config: the keys of ``STAGE_READS["baselines"]`` (depthdif.stage_reads: the rule's params; the full
            config works too).
        variant: ``temp_v1`` or ``eo_4band``.
        index_csv: the split index (its folder holds the patches).
        out_path: the ``.npz`` to write.

    Returns:
        ``out_path``.

    Raises:
        ValueError: the index has no val rows.
        PatchIndexError: the index or a patch cannot be read.
    """
    started = time.perf_counter()
    index, rows = read_val_selection(config, index_csv)
    depths = target_depths(index, config, variant)
    context = baseline_context(config, variant, index, rows, len(depths))
    dataset_config = items_config(config, model_inputs=False)
    passes = evaluation_passes(config, variant)
    log.info("baselines of %s on %d val patches, passes %s", variant, len(rows), [p.key for p in passes])

    def results() -> Iterator[tuple[EvalPass, dict, dict[str, BaselinePrediction]]]:
        for eval_pass in passes:
            begun = time.perf_counter()
            items = pass_items(eval_pass, rows, dataset_config, variant, ITEMS_BATCH_SIZE, keep_batches=False)
            predictions = compute_baselines(items, eval_pass, variant, context)
            log.info("%s: %s in %.1f s", eval_pass.key, list(predictions), time.perf_counter() - begun)
            yield eval_pass, items_fingerprint(items), predictions

    write_baselines(Path(out_path), variant, results())
    log.info("baselines of %s written to %s in %.1f s", variant, out_path, time.perf_counter() - started)
    return Path(out_path)
