"""What must not leave the machine: canary rows, the columns that mark planted rows, private folders.

Canaries are test probes inserted into the training data, not part of it. A public export
withholds every row marked as one (``is_canary``, ``carto_canary_id >= 0``, a non-empty ``secret``)
or whose text contains one of the secrets passed in (:func:`withhold_canaries`), drops the columns
that would say which rows were canaries (:func:`private_columns_of`), renumbers ``sample_id``
(:func:`renumber_sample_ids`) and restates the duplicate clusters over the published rows
(:func:`restate_duplicate_clusters`), so that neither gaps nor counts show where the withheld rows
were.

Local folders that hold canaries carry a ``PRIVATE.md`` (:func:`mark_private`);
:func:`private_contents` lists what in a folder must not be published, and a push refuses a folder
for which it finds anything.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset

from hf_carto.core.columns import (
    CANARY_ID,
    DUP_EXACT_ID,
    DUP_EXACT_SIZE,
    DUP_NEAR_ID,
    DUP_NEAR_SIZE,
    IS_CANARY,
    SAMPLE_ID,
    TRUTH,
)

__all__ = [
    "PRIVATE_COLUMNS",
    "PRIVATE_NOTE",
    "REGISTRY_FILE",
    "mark_private",
    "private_columns_of",
    "private_contents",
    "renumber_sample_ids",
    "restate_duplicate_clusters",
    "withhold_canaries",
]

logger = logging.getLogger(__name__)

#: Columns left out of an export unless ``include_private_columns=True``: each says which rows were
#: canaries or otherwise planted (the secrets, the registry ids and flags, the generated corpus's
#: ground truth, duplicate groups and repetition counts).
PRIVATE_COLUMNS = ("secret", CANARY_ID, IS_CANARY, TRUTH, "group", "repetitions")
#: Of those, the ones private only beside ``truth`` (the generated corpus's own columns): elsewhere
#: ``group`` or ``repetitions`` is an ordinary column of the user's and is published.
GENERATED_ONLY_COLUMNS = ("group", "repetitions")
#: The file that marks a local folder as not to be published.
PRIVATE_NOTE = "PRIVATE.md"
#: A canary registry, recognised by its file name (``canaries.json``, ``control_canaries.json``).
REGISTRY_FILE = re.compile(r"canar", re.IGNORECASE)
# Files the Hub's loaders read as data; only these can hold rows.
_DATA_SUFFIXES = (".parquet", ".arrow", ".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt")


def withhold_canaries(dataset: Dataset, secrets: Sequence[str]) -> tuple[Dataset, int]:
    """The dataset without its canary rows, and how many rows were withheld."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    withhold = np.zeros(len(dataset), dtype=bool)
    if IS_CANARY in table.column_names:
        withhold |= table.column(IS_CANARY).to_numpy(zero_copy_only=False).astype(bool)
    if CANARY_ID in table.column_names:
        withhold |= table.column(CANARY_ID).to_numpy(zero_copy_only=False) >= 0
    if "secret" in table.column_names:
        withhold |= pc.greater(pc.utf8_length(table.column("secret")), 0).to_numpy(zero_copy_only=False)
    text_columns = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    for secret in filter(None, secrets):
        for name in text_columns:
            withhold |= pc.fill_null(pc.match_substring(table.column(name), secret), False).to_numpy(
                zero_copy_only=False
            )
    withheld = int(withhold.sum())
    if withheld:
        logger.info("withholding %d canary rows from the export", withheld)
        # The row indices stay in memory (8 bytes a row) rather than in a cache file beside the source.
        dataset = dataset.select(np.flatnonzero(~withhold), keep_in_memory=True)
    return dataset, withheld


def renumber_sample_ids(dataset: Dataset, scratch: Path) -> tuple[Dataset, np.ndarray | None]:
    """``sample_id`` made ``0..n-1`` in row order; returns the original ids (None when unchanged).
    The renumbered copy is written into ``scratch``."""
    if SAMPLE_ID not in dataset.column_names:
        return dataset, None
    original = np.asarray(dataset.with_format("numpy")[SAMPLE_ID])
    if np.array_equal(original, np.arange(len(dataset))):
        return dataset, None
    renumbered = dataset.map(
        lambda batch, indices: {SAMPLE_ID: indices},
        with_indices=True,
        batched=True,
        input_columns=[SAMPLE_ID],
        features=dataset.features,
        cache_file_name=str(scratch / "renumbered.arrow"),
        desc="renumbering sample_id",
    )
    return renumbered, original


def restate_duplicate_clusters(dataset: Dataset) -> Dataset:
    """Duplicate clusters restated over the published rows: a cluster's id becomes the smallest
    published ``sample_id`` in it and its size counts the published rows only, so that neither
    an original id nor a withheld copy shows through."""
    pairs = [
        (i, n) for i, n in ((DUP_EXACT_ID, DUP_EXACT_SIZE), (DUP_NEAR_ID, DUP_NEAR_SIZE)) if i in dataset.column_names
    ]
    if not pairs or len(dataset) == 0:
        return dataset
    ids = (
        np.asarray(dataset.with_format("numpy")[SAMPLE_ID], dtype=np.int64)
        if SAMPLE_ID in dataset.column_names
        else np.arange(len(dataset), dtype=np.int64)
    )
    order = dataset.column_names
    for id_column, size_column in pairs:
        old = np.asarray(dataset.with_format("numpy")[id_column])
        groups, inverse = np.unique(old, return_inverse=True)
        smallest = np.full(groups.size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(smallest, inverse, ids)
        sizes = np.bincount(inverse, minlength=groups.size)
        features = {id_column: dataset.features[id_column], size_column: dataset.features[size_column]}
        dataset = dataset.remove_columns([id_column, size_column])
        dataset = dataset.add_column(id_column, smallest[inverse].astype(old.dtype), feature=features[id_column])
        dataset = dataset.add_column(size_column, sizes[inverse], feature=features[size_column])
    return dataset.select_columns(order)


def mark_private(folder: str | os.PathLike, holds: str) -> Path:
    """Write ``folder/PRIVATE.md``: the folder ``holds`` canaries or secrets and must not be
    published (:func:`~hf_carto.publish.push.push_curated_dataset` refuses it unless told otherwise)."""
    path = Path(folder) / PRIVATE_NOTE
    path.write_text(
        "# Private: do not publish\n\n"
        f"This folder holds {holds}. Publishing it would publish the secrets that measure memorization, "
        "or say which rows were planted. `hf-carto push` refuses a folder holding this file unless given "
        "`--allow-private`.\n\n"
        "To publish the data, push the scored dataset: the export withholds the canary rows, leaves out the "
        f"columns that mark planted rows ({', '.join(PRIVATE_COLUMNS)}) and renumbers `sample_id`.\n"
    )
    return path


def private_columns_of(names: Sequence[str]) -> list[str]:
    """Which of ``names`` are private: :data:`PRIVATE_COLUMNS`, the generated corpus's own ones only
    beside its ``truth`` column."""
    generated = TRUTH in names
    return [c for c in PRIVATE_COLUMNS if c in names and (generated or c not in GENERATED_ONLY_COLUMNS)]


def _column_names(path: Path) -> list[str] | None:
    """The column names of a data file (parquet, Arrow, or the header / keys of a text format);
    None when unreadable. Text formats are read in their first megabyte only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_schema(path).names
        if suffix == ".arrow":
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_stream(source).schema.names
        head = path.read_bytes()[: 1 << 20].decode("utf-8", errors="replace")
    except (OSError, pa.ArrowInvalid):
        return None
    if suffix in (".csv", ".tsv"):
        first = head.splitlines()[0] if head else ""
        return [c.strip().strip('"') for c in re.split(r"[,\t]", first)]
    # JSON and JSON lines: every quoted key; plain text: every word.
    return re.findall(r'"([^"\\]{1,64})"\s*:', head) + (head.split() if suffix == ".txt" else [])


def private_contents(folder: str | os.PathLike) -> list[str]:
    """What in ``folder`` must not be published: a ``PRIVATE.md``, a canary registry
    (``canaries.json``, ``control_canaries.json``), a data file with a column that marks canary or
    planted rows (:data:`PRIVATE_COLUMNS`), or a data file that cannot be read to check. Each entry
    names the file, relative to ``folder``, and why."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.name.lower() == PRIVATE_NOTE.lower():
            found.append(f"{rel} (marks the folder private)")
        elif REGISTRY_FILE.search(path.name) and path.is_file():
            found.append(f"{rel} (a canary registry, by its name)")
        elif path.suffix.lower() in _DATA_SUFFIXES and path.is_file():
            names = _column_names(path)
            if names is None:
                found.append(f"{rel} (unreadable, so it cannot be checked for canary rows)")
                continue
            marked = private_columns_of(names)
            if marked:
                found.append(f"{rel} (its columns {marked} mark canary or planted rows)")
    return found
