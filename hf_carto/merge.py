"""Merging recorded shards into the loss matrix and into ``carto_loss_{t}`` dataset columns.

One snapshot is read at a time: its shards from every rank are concatenated, padding duplicates
are removed by ``sample_id``, and the result is placed by ``sample_id`` into one column. Problems
are named exactly: missing or extra ranks, missing snapshots, missing or unknown samples,
conflicting duplicates, non-finite losses. Each shard is checked against the sha256 the manifest
recorded when its snapshot was completed (recordings made before checksums were kept are merged
unverified), so a shard that changed on disk stops the merge instead of changing a loss.

Duplicates: in eval mode every copy of a sample was computed with the same weights, so copies must
agree (within ``atol + rtol * |loss|``; batch composition changes the last bits) or the merge
refuses. In train mode copies come from different moments of the epoch (a padding duplicate is
trained twice); the record with the smallest ``step`` (then lowest rank) is kept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, Value

from .columns import LOSS_COLUMN_PATTERN, SAMPLE_ID, loss_column, non_canonical_loss_columns, read_columns
from .recording import LossStore, RecordingSettings

__all__ = ["LossMatrix", "load_loss_matrix", "add_loss_columns", "merged_snapshot"]

logger = logging.getLogger(__name__)

DUPLICATE_RTOL = 1e-4
DUPLICATE_ATOL = 1e-4


def _first(ids: np.ndarray, limit: int = 5) -> list[int]:
    return [int(x) for x in ids[:limit]]


def merged_snapshot(store: LossStore, snapshot: int, settings: RecordingSettings) -> dict[str, np.ndarray]:
    """All ranks' records of one snapshot, deduplicated by ``sample_id`` and sorted by it.

    Raises:
        ValueError: missing or extra ranks, a shard that does not match its recorded checksum (named
            with its file, snapshot and rank), no records, conflicting eval-mode duplicates.
    """
    shards = store.shards(snapshot)
    expected = set(range(settings.world_size))
    if set(shards) != expected:
        missing = sorted(expected - set(shards))
        extra = sorted(set(shards) - expected)
        problems = []
        if missing:
            problems.append(f"missing shards for ranks {missing}")
        if extra:
            problems.append(
                f"shards for ranks {extra} that a world size of {settings.world_size} cannot have "
                "(a run with another world size wrote here)"
            )
        raise ValueError(f"{store.snapshot_dir(snapshot)}: {'; '.join(problems)}")
    parts = []
    for rank in shards:
        records = store.read_shard(snapshot, rank)
        records["rank"] = np.full(len(records["sample_id"]), rank, dtype=np.int32)
        parts.append(records)
    records = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.lexsort((records["rank"], records["step"], records["sample_id"]))
    records = {k: v[order] for k, v in records.items()}
    ids = records["sample_id"]
    if ids.size == 0:
        raise ValueError(f"{store.snapshot_dir(snapshot)}: the shards hold no records")
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    if settings.mode == "eval" and starts.size < ids.size:
        losses = records["loss"].astype(np.float64)
        finite = np.where(np.isfinite(losses), losses, 0.0)  # non-finite values are reported later
        high = np.maximum.reduceat(finite, starts)
        low = np.minimum.reduceat(finite, starts)
        conflict = (high - low) > DUPLICATE_ATOL + DUPLICATE_RTOL * np.abs(high)
        if conflict.any():
            bad = ids[starts[conflict]]
            raise ValueError(
                f"snapshot {snapshot}: {bad.size} sample_ids were recorded more than once with different "
                f"losses (more than {DUPLICATE_ATOL} + {DUPLICATE_RTOL} x loss apart); first sample_ids: "
                f"{_first(bad)}. Eval-mode copies of a sample must agree: were these shards written by "
                "different runs?"
            )
    return {k: v[starts] for k, v in records.items() if k != "rank"}


@dataclass
class LossMatrix:
    """The merged ``(N, T)`` loss matrix with its row ``sample_ids`` and recording settings."""

    sample_ids: np.ndarray
    losses: np.ndarray  # float32, (N, T)
    n_tokens: np.ndarray  # int32, (N, T)
    settings: RecordingSettings
    snapshots: dict[int, dict] = field(default_factory=dict)

    @property
    def num_snapshots(self) -> int:
        return self.losses.shape[1]


def _check_completed(store: LossStore) -> dict[int, dict]:
    completed = store.completed()
    if not completed:
        raise ValueError(f"{store.root}: no completed snapshot is recorded in {store.manifest_path.name}")
    numbers = list(completed)
    expected = list(range(1, max(numbers) + 1))
    if numbers != expected:
        missing = sorted(set(expected) - set(numbers))
        raise ValueError(
            f"{store.root}: snapshots {missing} are missing ({len(missing)} of {len(expected)}); "
            f"completed: {numbers}. Resume the run to record them."
        )
    stray = sorted(set(store.snapshots_on_disk()) - set(numbers))
    if stray:
        logger.warning(
            "%s: ignoring snapshot folders %s that were never marked complete (an interrupted run)",
            store.root,
            stray,
        )
    return completed


def _iter_columns(output_dir: str | os.PathLike, expected_ids: np.ndarray, allow_nonfinite: bool, progress: bool):
    """Yield ``(t, losses, n_tokens)`` aligned with ``expected_ids``, one snapshot at a time."""
    store = LossStore(output_dir)
    settings = store.settings()
    completed = _check_completed(store)
    if expected_ids.size == 0:
        raise ValueError("the dataset is empty (0 rows): there are no samples to merge losses into")
    order = np.argsort(expected_ids, kind="stable")
    sorted_ids = expected_ids[order]
    if sorted_ids.size and (sorted_ids[1:] == sorted_ids[:-1]).any():
        dupes = np.unique(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]])
        raise ValueError(f"the dataset has {dupes.size} duplicated sample_ids; first: {_first(dupes)}")
    non_finite: list[tuple[int, int]] = []
    n_non_finite = 0
    snapshots = list(completed)
    if progress:
        from tqdm.auto import tqdm

        snapshots = tqdm(snapshots, desc="Merging loss snapshots")
    for t in snapshots:
        records = merged_snapshot(store, t, settings)
        pos = np.searchsorted(sorted_ids, records["sample_id"])
        pos_clipped = np.minimum(pos, sorted_ids.size - 1)
        known = sorted_ids[pos_clipped] == records["sample_id"]
        if not known.all():
            unknown = records["sample_id"][~known]
            raise ValueError(
                f"snapshot {t}: {unknown.size} recorded sample_ids are not in the dataset; first: "
                f"{_first(unknown)}. Was the dataset re-indexed after recording?"
            )
        if pos.size != sorted_ids.size:
            present = np.zeros(sorted_ids.size, dtype=bool)
            present[pos] = True
            missing = sorted_ids[~present]
            raise ValueError(
                f"snapshot {t}: {missing.size} of {sorted_ids.size} samples have no recorded loss; first "
                f"sample_ids: {_first(missing)}"
            )
        losses = np.empty(sorted_ids.size, dtype=np.float32)
        n_tokens = np.empty(sorted_ids.size, dtype=np.int32)
        losses[order[pos]] = records["loss"]
        n_tokens[order[pos]] = records["n_tokens"]
        bad = np.flatnonzero(~np.isfinite(records["loss"]))
        n_non_finite += bad.size
        non_finite += [(int(records["sample_id"][i]), t) for i in bad[: max(0, 5 - len(non_finite))]]
        yield t, losses, n_tokens
    if n_non_finite and not allow_nonfinite:
        listed = ", ".join(f"sample_id {s} at snapshot {t}" for s, t in non_finite)
        raise ValueError(
            f"{n_non_finite} recorded losses are NaN or infinite (first: {listed}); they are kept in the "
            "shards. Pass allow_nonfinite=True to merge them as they are."
        )


def _expected_ids(store: LossStore, sample_ids: np.ndarray | None) -> np.ndarray:
    if sample_ids is not None:
        return np.asarray(sample_ids, dtype=np.int64)
    settings = store.settings()
    if settings.num_samples is not None:
        return np.arange(settings.num_samples, dtype=np.int64)
    first = min(_check_completed(store))
    return merged_snapshot(store, first, settings)["sample_id"]


def load_loss_matrix(
    output_dir: str | os.PathLike,
    sample_ids: np.ndarray | None = None,
    *,
    allow_nonfinite: bool = False,
    progress: bool = False,
) -> LossMatrix:
    """Merge a recording into an ``(N, T)`` matrix.

    Args:
        output_dir (`str`): the run folder (the one holding `carto/`).
        sample_ids (`np.ndarray`, *optional*): the rows to expect, in the order wanted. Defaults
            to `0..num_samples-1` from the manifest, or the ids of the first snapshot when the
            training set had no length.
        allow_nonfinite (`bool`, *optional*, defaults to `False`): merge NaN/inf losses instead of
            raising.

    Raises:
        ValueError: missing snapshots, missing or extra rank shards, shards that changed since
            they were recorded, samples missing from a snapshot or unknown to `sample_ids`,
            conflicting duplicates, non-finite losses.
    """
    store = LossStore(output_dir)
    settings = store.settings()
    ids = _expected_ids(store, sample_ids)
    columns, counts = [], []
    for _, losses, n_tokens in _iter_columns(output_dir, ids, allow_nonfinite, progress):
        columns.append(losses)
        counts.append(n_tokens)
    return LossMatrix(ids, np.stack(columns, axis=1), np.stack(counts, axis=1), settings, store.completed())


def add_loss_columns(
    dataset: Dataset,
    output_dir: str | os.PathLike,
    *,
    allow_nonfinite: bool = False,
    progress: bool = True,
) -> Dataset:
    """Add one ``carto_loss_{t}`` float32 column per completed snapshot, aligned by ``sample_id``.

    The dataset must carry the ``sample_id`` column the recording used. Existing
    ``carto_loss_{t}`` columns are replaced; other columns with that prefix (``carto_loss_weight``)
    are kept. A column that looks like a loss column without its canonical name
    (``carto_loss_07``) is refused rather than kept beside the new ``carto_loss_7``.
    """
    if SAMPLE_ID not in dataset.column_names:
        raise ValueError(f"the dataset has no '{SAMPLE_ID}' column; merge needs the ids the recording used")
    odd = non_canonical_loss_columns(dataset.column_names)
    if odd:
        raise ValueError(
            f"the dataset has columns {odd} that look like loss columns but are not named carto_loss_<t> "
            "(t = 1, 2, ... without leading zeros); rename or remove them before merging"
        )
    ids = read_columns(dataset, [SAMPLE_ID])[SAMPLE_ID].astype(np.int64)
    old = [c for c in dataset.column_names if LOSS_COLUMN_PATTERN.match(c)]
    if old:
        dataset = dataset.remove_columns(old)
    for t, losses, _ in _iter_columns(output_dir, ids, allow_nonfinite, progress):
        dataset = dataset.add_column(loss_column(t), losses, feature=Value("float32"))
    return dataset


def write_wide_parquet(matrix: LossMatrix, path: str | os.PathLike) -> Path:
    """Write ``sample_id`` + ``carto_loss_{t}`` columns as one parquet file (atomically)."""
    import pyarrow as pa

    from .atomic import write_parquet_atomic

    columns = {SAMPLE_ID: pa.array(matrix.sample_ids)}
    for t in range(matrix.num_snapshots):
        columns[loss_column(t + 1)] = pa.array(matrix.losses[:, t])
    out = Path(path)
    write_parquet_atomic(pa.table(columns), out)
    return out
