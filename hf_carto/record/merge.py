"""Merging recorded shards into the loss matrix and into ``carto_loss_{t}`` dataset columns.

One snapshot is read at a time: its shards from every rank are concatenated, padding duplicates
are removed by ``sample_id``, and the result is placed by ``sample_id`` into one column. Problems
are named exactly: missing or extra ranks, missing snapshots, missing or unknown samples,
conflicting duplicates, non-finite losses. Each shard is checked against the sha256 the manifest
recorded when its snapshot was completed (recordings made before checksums were kept are merged
unverified), so a shard that changed on disk stops the merge instead of changing a loss.

Duplicates: eval-mode copies of a sample must agree, and of train-mode copies the earliest is kept
(:mod:`hf_carto.record.snapshot_column`, which places a snapshot's records a shard batch at a time).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import Dataset, Value

from hf_carto.core.atomic import write_parquet_atomic
from hf_carto.core.columns import LOSS_COLUMN_PATTERN, SAMPLE_ID, loss_column, non_canonical_loss_columns, read_columns
from hf_carto.record.snapshot_column import IdIndex, SnapshotColumn, conflicting_copies, disagreeing, first_ids
from hf_carto.record.store import LossStore, RecordingSettings

__all__ = [
    "LossMatrix",
    "load_loss_matrix",
    "add_loss_columns",
    "merged_snapshot",
    "select_recorded_rows",
    "unrecorded_rows",
]

logger = logging.getLogger(__name__)


def merged_snapshot(store: LossStore, snapshot: int, settings: RecordingSettings) -> dict[str, np.ndarray]:
    """All ranks' records of one snapshot, deduplicated by ``sample_id`` and sorted by it.

    Raises:
        ValueError: missing or extra ranks, a shard that does not match its recorded checksum (named
            with its file, snapshot and rank), no records, conflicting eval-mode duplicates.
    """
    shards = _check_ranks(store, snapshot, settings)
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
        conflict = disagreeing(records["loss"], starts)
        if conflict.any():
            raise conflicting_copies(snapshot, ids[starts[conflict]])
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


def _check_ranks(store: LossStore, snapshot: int, settings: RecordingSettings) -> list[int]:
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
    return sorted(shards)


def _iter_columns(
    store: LossStore,
    expected_ids: np.ndarray,
    allow_nonfinite: bool,
    progress: bool,
    batch_rows: int = 1 << 20,
    with_tokens: bool = True,
):
    """Yield ``(t, losses, n_tokens)`` aligned with ``expected_ids``, one snapshot at a time
    (``n_tokens`` is None without ``with_tokens``).

    Each snapshot's shards are read ``batch_rows`` records at a time (:class:`SnapshotColumn`), so
    memory is the id index and one snapshot's columns, never a snapshot's records at once.
    """
    settings = store.settings()
    completed = _check_completed(store)
    if expected_ids.size == 0:
        raise ValueError("the dataset is empty (0 rows): there are no samples to merge losses into")
    order = np.argsort(expected_ids, kind="stable")
    sorted_ids = expected_ids[order]
    if sorted_ids.size and (sorted_ids[1:] == sorted_ids[:-1]).any():
        dupes = np.unique(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]])
        raise ValueError(f"the dataset has {dupes.size} duplicated sample_ids; first: {first_ids(dupes)}")
    index = IdIndex(sorted_ids)
    del sorted_ids
    non_finite: list[tuple[int, int]] = []
    n_non_finite = 0
    snapshots = list(completed)
    if progress:
        from tqdm.auto import tqdm

        snapshots = tqdm(snapshots, desc="Merging loss snapshots")
    for t in snapshots:
        column = SnapshotColumn(index, t, settings.mode, with_tokens)
        for rank in _check_ranks(store, t, settings):
            for records in store.iter_shard(t, rank, batch_rows):
                column.add(records)
        column.finish(store.snapshot_dir(t))
        bad = np.flatnonzero(~np.isfinite(column.losses))
        n_non_finite += bad.size
        non_finite += [(int(i), t) for i in index.ids_at(bad[: max(0, 5 - len(non_finite))])]
        del column.step, column.seen
        losses = np.empty_like(column.losses)
        losses[order] = column.losses
        column.losses = None
        n_tokens = None
        if with_tokens:
            n_tokens = np.empty_like(column.n_tokens)
            n_tokens[order] = column.n_tokens
        del column
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
    subset = store.snapshot_ids()
    if subset is not None:
        return subset
    settings = store.settings()
    if settings.num_samples is not None:
        return np.arange(settings.num_samples, dtype=np.int64)
    first = min(_check_completed(store))
    return merged_snapshot(store, first, settings)["sample_id"]


def load_loss_matrix(
    recording: LossStore | str | os.PathLike,
    sample_ids: np.ndarray | None = None,
    *,
    allow_nonfinite: bool = False,
    progress: bool = False,
    batch_rows: int = 1 << 20,
) -> LossMatrix:
    """Merge a recording into an ``(N, T)`` matrix.

    Args:
        recording (`LossStore` or `str`): the recording, or the run folder holding its `carto/`.
        sample_ids (`np.ndarray`, *optional*): the rows to expect, in the order wanted. Defaults
            to `0..num_samples-1` from the manifest, or the ids of the first snapshot when the
            training set had no length.
        allow_nonfinite (`bool`, *optional*, defaults to `False`): merge NaN/inf losses instead of
            raising.
        batch_rows (`int`, *optional*): shard records read at a time; memory beyond the result
            is the id index and one snapshot's column, whatever the shards' size.

    Raises:
        ValueError: missing snapshots, missing or extra rank shards, shards that changed since
            they were recorded, samples missing from a snapshot or unknown to `sample_ids`,
            conflicting duplicates, non-finite losses.
    """
    store = LossStore.of(recording)
    settings = store.settings()
    ids = _expected_ids(store, sample_ids)
    columns, counts = [], []
    for _, losses, n_tokens in _iter_columns(store, ids, allow_nonfinite, progress, batch_rows):
        columns.append(losses)
        counts.append(n_tokens)
    return LossMatrix(ids, np.stack(columns, axis=1), np.stack(counts, axis=1), settings, store.completed())


def add_loss_columns(
    dataset: Dataset,
    recording: LossStore | str | os.PathLike,
    *,
    allow_nonfinite: bool = False,
    progress: bool = True,
    batch_rows: int = 1 << 20,
    cache_file_name: str | os.PathLike | None = None,
) -> Dataset:
    """Add one ``carto_loss_{t}`` float32 column per completed snapshot, aligned by ``sample_id``.

    ``recording`` is the :class:`LossStore` or the run folder holding its ``carto/``. The dataset
    must carry the ``sample_id`` column the recording used. Existing
    ``carto_loss_{t}`` columns are replaced; other columns with that prefix (``carto_loss_weight``)
    are kept. A column that looks like a loss column without its canonical name
    (``carto_loss_07``) is refused rather than kept beside the new ``carto_loss_7``.

    Where the columns go: a dataset that lives in Arrow files (``load_from_disk``, ``load_dataset``,
    a ``map`` result) gets them in an Arrow file of their own beside its first cache file
    (``cache-carto-losses-<hash>.arrow``, which ``Dataset.cleanup_cache_files`` removes like
    ``map``'s cache files; or at ``cache_file_name``), written ``batch_rows`` rows at a time and
    memory-mapped like the rest, so memory stays at the id index and one snapshot's column
    whatever the number of snapshots; an in-memory dataset gets in-memory columns.
    """
    if SAMPLE_ID not in dataset.column_names:
        raise ValueError(f"the dataset has no '{SAMPLE_ID}' column; merge needs the ids the recording used")
    odd = non_canonical_loss_columns(dataset.column_names)
    if odd:
        raise ValueError(
            f"the dataset has columns {odd} that look like loss columns but are not named carto_loss_<t> "
            "(t = 1, 2, ... without leading zeros); rename or remove them before merging"
        )
    store = LossStore.of(recording)
    ids = np.asarray(read_columns(dataset, [SAMPLE_ID])[SAMPLE_ID], dtype=np.int64)
    subset = store.snapshot_ids()
    if subset is not None and (ids.size != subset.size or not np.array_equal(np.sort(ids), np.sort(subset))):
        raise ValueError(
            f"{store} recorded eval-mode snapshots of {subset.size:,} of the training rows (snapshot_rows), "
            f"and the dataset's {ids.size:,} rows are not those: select them first, "
            "dataset = hf_carto.record.merge.select_recorded_rows(dataset, recording)"
        )
    old = [c for c in dataset.column_names if LOSS_COLUMN_PATTERN.match(c)]
    if old:
        dataset = dataset.remove_columns(old)
    columns = _iter_columns(store, ids, allow_nonfinite, progress, batch_rows, with_tokens=False)
    target = Path(cache_file_name) if cache_file_name is not None else _cache_file_beside(dataset, store)
    if target is None:
        for t, losses, _ in columns:
            dataset = dataset.add_column(loss_column(t), losses, feature=Value("float32"))
        return dataset
    from datasets import concatenate_datasets

    _write_columns_file(columns, ids.size, target, batch_rows)
    if dataset._indices is not None:  # a select/shuffle result: its rows are put in order first
        dataset = dataset.flatten_indices()
    return concatenate_datasets([dataset, Dataset.from_file(str(target))], axis=1)


def select_recorded_rows(dataset: Dataset, recording: LossStore | str | os.PathLike) -> Dataset:
    """The rows of ``dataset`` a subset recording (``snapshot_rows``) covers, in the dataset's order;
    the whole dataset when the recording covers every row."""
    subset = LossStore.of(recording).snapshot_ids()
    if subset is None:
        return dataset
    ids = np.asarray(read_columns(dataset, [SAMPLE_ID])[SAMPLE_ID], dtype=np.int64)
    rows = np.flatnonzero(np.isin(ids, subset))
    if rows.size != subset.size:
        missing = np.setdiff1d(subset, ids)
        raise ValueError(
            f"{missing.size} of the {subset.size} recorded sample_ids are not in the dataset; "
            f"first: {first_ids(missing)}"
        )
    return dataset.select(rows)


def unrecorded_rows(dataset: Dataset, recording: LossStore | str | os.PathLike) -> Dataset | None:
    """The rows of ``dataset`` a subset recording (``snapshot_rows``) left out, in the dataset's
    order: the rows without scores, which a curation keeps as they are; None when the recording
    covers every row."""
    subset = LossStore.of(recording).snapshot_ids()
    if subset is None:
        return None
    ids = np.asarray(read_columns(dataset, [SAMPLE_ID])[SAMPLE_ID], dtype=np.int64)
    return dataset.select(np.flatnonzero(~np.isin(ids, subset)))


def _cache_file_beside(dataset: Dataset, store: LossStore) -> Path | None:
    """An Arrow file for the loss columns beside the dataset's first cache file, named after the
    dataset and the recording; None for an in-memory dataset or a folder this process cannot write."""
    import hashlib

    if not dataset.cache_files:
        return None
    folder = Path(dataset.cache_files[0]["filename"]).parent
    if not os.access(folder, os.W_OK):
        logger.info("%s is not writable: the loss columns are kept in memory", folder)
        return None
    manifest = store.manifest_path
    key = hashlib.sha256(f"{dataset._fingerprint}\n".encode() + manifest.read_bytes()).hexdigest()[:16]
    # "cache-*.arrow", as datasets names its own cache files: Dataset.cleanup_cache_files removes it
    return folder / f"cache-carto-losses-{key}.arrow"


def _write_columns_file(columns, num_rows: int, target: Path, batch_rows: int) -> None:
    """Write the ``(t, losses, n_tokens)`` columns as one Arrow stream file, ``batch_rows`` rows at
    a time: each column goes to a raw file first, so only one is ever held in memory."""
    import shutil
    import tempfile

    import pyarrow as pa

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        raw = {}
        for t, losses, _ in columns:
            raw[t] = scratch / f"{t}.f32"
            losses.tofile(raw[t])
        schema = pa.schema([(loss_column(t), pa.float32()) for t in raw])
        staged = scratch / "columns.arrow"
        with pa.OSFile(str(staged), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for start in range(0, num_rows, batch_rows):
                count = min(batch_rows, num_rows - start)
                arrays = [np.fromfile(path, dtype=np.float32, count=count, offset=4 * start) for path in raw.values()]
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
        os.replace(staged, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_wide_parquet(matrix: LossMatrix, path: str | os.PathLike) -> Path:
    """Write ``sample_id`` + ``carto_loss_{t}`` columns as one parquet file (atomically)."""
    import pyarrow as pa

    columns = {SAMPLE_ID: pa.array(matrix.sample_ids)}
    for t in range(matrix.num_snapshots):
        columns[loss_column(t + 1)] = pa.array(matrix.losses[:, t])
    out = Path(path)
    write_parquet_atomic(pa.table(columns), out)
    return out
