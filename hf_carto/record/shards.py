"""The on-disk format of a loss recording, shared by the recorder that writes it and the store and
merge that read it.

One writer per rank, keyed by ``sample_id``::

    OUTPUT_DIR/carto/manifest.json                        settings + completed snapshots
    OUTPUT_DIR/carto/snapshot_rows.parquet                eval mode on a subset: its sample_ids
    OUTPUT_DIR/carto/losses/snapshot=T/rank=R.parquet     sample_id int64, loss float32,
                                                          n_tokens int32, step int64
    OUTPUT_DIR/carto/losses/snapshot=T/rank=R.partial-STEP.parquet
                                                          train mode: the running epoch so far

Every file is written to a temporary name and renamed, so a crash never leaves a half shard that
looks whole. A snapshot counts only once the main process has marked it complete in the manifest,
after every rank wrote its shard.

Integrity: shards carry parquet page checksums (verified whenever a shard is read), and marking a
snapshot complete records each shard's sha256 and size in the manifest
(``"snapshots": {"T": {"step", "epoch", "shards": {"R": {"sha256", "bytes"}}}}``); the merge refuses
a shard whose bytes no longer hash to it. Manifests written before checksums existed have no
``"shards"`` entry, and their shards no page checksums: they still merge, unverified.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["FORMAT_VERSION", "SHARD_SCHEMA", "read_records"]

FORMAT_VERSION = 1
# The shards' own fields; "sample_id" here is part of the file format (FORMAT_VERSION), spelled out
# so that renaming the dataset column could not silently change what the files hold.
SHARD_SCHEMA = pa.schema(
    [("sample_id", pa.int64()), ("loss", pa.float32()), ("n_tokens", pa.int32()), ("step", pa.int64())]
)
SNAPSHOT_FOLDER = re.compile(r"^snapshot=([1-9][0-9]*)$")
SHARD_FILE = re.compile(r"^rank=(\d+)\.parquet$")
PARTIAL_FILE = re.compile(r"^rank=(\d+)\.partial-(\d+)\.parquet$")


def snapshot_folder_name(snapshot: int) -> str:
    return f"snapshot={snapshot}"


def shard_file_name(rank: int) -> str:
    return f"rank={rank}.parquet"


def partial_file_name(rank: int, step: int) -> str:
    return f"rank={rank}.partial-{step}.parquet"


def empty_records() -> dict[str, np.ndarray]:
    """No records, with the shard's dtypes (a rank that saw no sample still writes its shard)."""
    return {field.name: np.zeros(0, dtype=field.type.to_pandas_dtype()) for field in SHARD_SCHEMA}


def records_table(records: dict[str, np.ndarray]) -> pa.Table:
    """Records as a table of exactly :data:`SHARD_SCHEMA`, each array cast to its field's type."""
    return pa.table(
        {
            field.name: pa.array(np.asarray(records[field.name], dtype=field.type.to_pandas_dtype()))
            for field in SHARD_SCHEMA
        },
        schema=SHARD_SCHEMA,
    )


def manifest_problems(manifest: Any) -> list[str]:
    """What keeps ``manifest`` from being one the recorder wrote; empty when nothing does."""
    if not isinstance(manifest, dict):
        return [f"it holds a JSON {type(manifest).__name__}, not an object"]
    problems = [f"it has no '{key}' entry" for key in ("settings", "snapshots") if key not in manifest]
    if not isinstance(manifest.get("settings", {}), dict):
        problems.append("'settings' is not an object")
    snapshots = manifest.get("snapshots", {})
    if not isinstance(snapshots, dict):
        return [*problems, "'snapshots' is not an object"]
    for key, info in snapshots.items():
        if not re.fullmatch(r"[1-9][0-9]*", key):
            problems.append(f"snapshot {key!r} is not a snapshot number (1, 2, ...)")
        elif not isinstance(info, dict) or not isinstance(info.get("step"), int):
            problems.append(f"snapshot {key} has no integer 'step'")
        elif "shards" in info and not (
            isinstance(info["shards"], dict)
            and all(
                re.fullmatch(r"[0-9]+", rank) and isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                for rank, entry in info["shards"].items()
            )
        ):
            problems.append(f"snapshot {key} has a 'shards' entry that is not {{rank: {{'sha256': ...}}}}")
    return problems


def parse_records(data: bytes, path: Path) -> dict[str, np.ndarray]:
    """The records of a shard's bytes ``data`` (read from ``path``, which errors name)."""
    try:
        # Page checksums catch a flipped bit inside the data pages of shards that carry them.
        table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{path} is not a readable loss shard (damaged or truncated?): {err}") from None
    missing = [name for name in SHARD_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a loss shard: it lacks columns {missing}")
    return {name: table.column(name).to_numpy() for name in SHARD_SCHEMA.names}


def read_records(path: Path) -> dict[str, np.ndarray]:
    """One shard as numpy arrays (``sample_id``, ``loss``, ``n_tokens``, ``step``).

    Page checksums are verified; the manifest's sha256 is not (that is
    :meth:`hf_carto.record.store.LossStore.read_shard`, for complete shards). Partial shards are
    read here.

    Raises:
        ValueError: naming the file, when it is not a readable loss shard.
    """
    return parse_records(Path(path).read_bytes(), Path(path))
