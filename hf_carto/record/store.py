"""The ``OUTPUT_DIR/carto`` folder of a loss recording: its manifest, settings and shards.

:class:`LossStore` is what both sides go through: the recorder writes shards and marks snapshots
complete with it, and the merge reads them back, each complete shard checked against the sha256
the manifest recorded (the format is in :mod:`hf_carto.record.shards`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hf_carto.core.atomic import write_json_atomic, write_parquet_atomic
from hf_carto.core.columns import SAMPLE_ID
from hf_carto.record.shards import (
    FORMAT_VERSION,
    PARTIAL_FILE,
    SHARD_FILE,
    SHARD_SCHEMA,
    SNAPSHOT_FOLDER,
    manifest_problems,
    parse_records,
    partial_file_name,
    records_table,
    shard_file_name,
    snapshot_folder_name,
)

__all__ = ["MODES", "RecordingSettings", "LossStore"]

MODES = ("eval", "train")


@dataclass(frozen=True)
class RecordingSettings:
    """What must be equal for two processes or two launches to write into the same folder."""

    mode: str = "eval"
    world_size: int = 1
    snapshot_every: int | None = None  # optimizer steps between eval snapshots; None: once per epoch
    num_samples: int | None = None  # None when the dataset has no length (iterable)
    # Eval mode on a fixed seeded subset: how many rows each snapshot covers, and the seed that
    # chose them (None: every row). The rows' sample_ids are kept in carto/snapshot_rows.parquet.
    snapshot_rows: int | None = None
    snapshot_seed: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"recording mode must be one of {MODES}; got {self.mode!r}")
        if self.snapshot_rows is not None:
            if self.mode == "train":
                raise ValueError(
                    "snapshot_rows needs mode='eval': train mode records every row's loss at no extra cost"
                )
            if self.snapshot_rows < 1 or (self.num_samples is not None and self.snapshot_rows > self.num_samples):
                raise ValueError(
                    f"snapshot_rows must be between 1 and the {self.num_samples} training rows; "
                    f"got {self.snapshot_rows}"
                )
        if self.snapshot_every is not None:
            if self.mode == "train":
                raise ValueError("snapshot_every needs mode='eval': train-mode snapshots are whole epochs")
            if self.snapshot_every < 1:
                raise ValueError(f"snapshot_every must be a positive number of steps; got {self.snapshot_every}")
        if self.world_size < 1:
            raise ValueError(f"world_size must be >= 1; got {self.world_size}")


class LossStore:
    """The ``OUTPUT_DIR/carto`` folder: shards, partial shards and the manifest."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / "carto"
        self.manifest_path = self.root / "manifest.json"

    @classmethod
    def of(cls, recording: LossStore | str | os.PathLike) -> LossStore:
        """``recording`` itself when it is a store, else the store of that run folder: the one
        conversion at the entry points that accept either, so that what they call gets the store."""
        return recording if isinstance(recording, cls) else cls(recording)

    def __str__(self) -> str:
        return str(self.output_dir)

    def snapshot_dir(self, snapshot: int) -> Path:
        return self.root / "losses" / snapshot_folder_name(snapshot)

    def shard_path(self, snapshot: int, rank: int) -> Path:
        return self.snapshot_dir(snapshot) / shard_file_name(rank)

    def partial_path(self, snapshot: int, rank: int, step: int) -> Path:
        return self.snapshot_dir(snapshot) / partial_file_name(rank, step)

    # -- manifest ---------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, checked to have the shape the recorder writes; ``None`` if there is none.

        Raises:
            ValueError: naming the file, when it is not JSON or lacks what a manifest holds.
        """
        if not self.manifest_path.exists():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{self.manifest_path} is not valid JSON: {err}") from None
        problems = manifest_problems(manifest)
        if problems:
            raise ValueError(
                f"{self.manifest_path} is not a recording manifest: {'; '.join(problems[:3])}"
                f"{f' (and {len(problems) - 3} more problems)' if len(problems) > 3 else ''}. Was it edited or "
                "damaged? Restore it, or record the run again into another folder."
            )
        return manifest

    def settings(self) -> RecordingSettings:
        manifest = self.read_manifest()
        if manifest is None:
            raise FileNotFoundError(f"no recording manifest at {self.manifest_path}")
        try:
            return RecordingSettings(**manifest["settings"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.manifest_path}: its settings are not valid recording settings: {err}") from None

    def check_settings(self, settings: RecordingSettings) -> dict[str, Any] | None:
        """The existing manifest if its settings equal ``settings``; ``None`` if there is none.

        Raises:
            ValueError: naming every setting that differs, when the folder holds another run.
        """
        manifest = self.read_manifest()
        if manifest is None:
            return None
        old = manifest.get("settings", {})
        new = asdict(settings)
        diff = {k: (old.get(k), new[k]) for k in new if old.get(k) != new[k]}
        if diff:
            detail = ", ".join(f"{k}: recorded {a!r}, now {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{self.root} holds losses recorded with other settings ({detail}); refusing to mix "
                "runs. Use another output_dir, or delete that folder to start over."
            )
        return manifest

    def create_or_check(self, settings: RecordingSettings) -> dict[str, Any]:
        """Create the manifest, or check that an existing one has the same settings."""
        manifest = self.check_settings(settings)
        if manifest is None:
            manifest = {"format_version": FORMAT_VERSION, "settings": asdict(settings), "snapshots": {}}
            write_json_atomic(manifest, self.manifest_path)
        return manifest

    @property
    def snapshot_rows_path(self) -> Path:
        return self.root / "snapshot_rows.parquet"

    def snapshot_ids(self) -> np.ndarray | None:
        """The ``sample_id``s an eval-mode subset recording covers (None: every row)."""
        if not self.snapshot_rows_path.exists():
            return None
        return pq.read_table(self.snapshot_rows_path).column(SAMPLE_ID).to_numpy()

    def write_snapshot_ids(self, sample_ids: np.ndarray) -> None:
        """Keep the subset's ids (once; a resumed run must cover the same rows)."""
        ids = np.asarray(sample_ids, dtype=np.int64)
        earlier = self.snapshot_ids()
        if earlier is not None:
            if not np.array_equal(earlier, ids):
                raise ValueError(
                    f"{self.snapshot_rows_path} holds another subset of rows ({earlier.size} rows) than this run "
                    f"snapshots ({ids.size} rows): the training set changed. Use another output_dir."
                )
            return
        write_parquet_atomic(pa.table({SAMPLE_ID: pa.array(ids)}), self.snapshot_rows_path)

    def completed(self) -> dict[int, dict[str, Any]]:
        """Completed snapshots ``{t: {"step": ..., "epoch": ..., "shards": ...}}`` in snapshot order.

        ``"shards"`` (``{rank: {"sha256": ..., "bytes": ...}}``) is absent from snapshots recorded
        before checksums were kept.
        """
        manifest = self.read_manifest() or {"snapshots": {}}
        return {int(t): info for t, info in sorted(manifest["snapshots"].items(), key=lambda kv: int(kv[0]))}

    def shard_checksums(self, snapshot: int) -> dict[int, str] | None:
        """``{rank: sha256}`` recorded when ``snapshot`` was marked complete; ``None`` when none was.

        ``None`` for a snapshot that is not complete, and for one recorded before checksums were
        kept (such shards are read unverified).
        """
        shards = self.completed().get(snapshot, {}).get("shards")
        if shards is None:
            return None
        return {int(rank): entry["sha256"] for rank, entry in shards.items()}

    def unmark_after(self, step: int) -> list[int]:
        """Forget completed snapshots taken after optimizer step ``step``; returns their numbers."""
        manifest = self.read_manifest()
        if manifest is None:
            return []
        dropped = sorted(int(t) for t, info in manifest["snapshots"].items() if info["step"] > step)
        if dropped:
            for t in dropped:
                del manifest["snapshots"][str(t)]
            write_json_atomic(manifest, self.manifest_path)
        return dropped

    def mark_complete(self, snapshot: int, step: int, epoch: float | None) -> None:
        """Record ``snapshot`` as complete, with the sha256 and size of every rank's shard.

        Called on the main process after every rank wrote its shard (the recorder waits at a
        barrier first), so the checksums are taken from the files the merge will read.
        """
        manifest = self.read_manifest()
        if manifest is None:
            raise FileNotFoundError(f"no recording manifest at {self.manifest_path}")
        shards = {}
        for rank, path in self.shards(snapshot).items():
            data = path.read_bytes()
            shards[str(rank)] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        manifest["snapshots"][str(snapshot)] = {"step": int(step), "epoch": epoch, "shards": shards}
        write_json_atomic(manifest, self.manifest_path)

    # -- shards -----------------------------------------------------------------------------

    def write_shard(self, snapshot: int, rank: int, records: dict[str, np.ndarray]) -> Path:
        path = self.shard_path(snapshot, rank)
        write_parquet_atomic(records_table(records), path)
        return path

    def write_partial(self, snapshot: int, rank: int, step: int, records: dict[str, np.ndarray]) -> Path:
        path = self.partial_path(snapshot, rank, step)
        write_parquet_atomic(records_table(records), path)
        return path

    def _files(self, snapshot: int, pattern: re.Pattern) -> list[tuple[re.Match, Path]]:
        folder = self.snapshot_dir(snapshot)
        if not folder.exists():
            return []
        return [(match, path) for path in folder.iterdir() if (match := pattern.match(path.name))]

    def shards(self, snapshot: int) -> dict[int, Path]:
        """``{rank: path}`` of the complete shards of one snapshot."""
        return dict(sorted((int(m[1]), path) for m, path in self._files(snapshot, SHARD_FILE)))

    def read_shard(self, snapshot: int, rank: int) -> dict[str, np.ndarray]:
        """One complete shard's records, checked against the sha256 the manifest recorded for it.

        Raises:
            ValueError: naming the file, the snapshot and the rank, when its bytes do not hash to
                the recorded sha256 (the file changed after the snapshot was completed), when the
                manifest recorded no shard for this rank, or when the file cannot be read as a
                shard (a page checksum, the footer or the columns).
        """
        path = self.shard_path(snapshot, rank)
        data = path.read_bytes()
        self._verify(snapshot, rank, lambda: hashlib.sha256(data).hexdigest())
        return parse_records(data, path)

    def _verify(self, snapshot: int, rank: int, digest) -> None:
        """Check a complete shard against the sha256 the manifest recorded (``digest()`` computes
        the file's); manifests from before checksums existed record none, and nothing is checked."""
        recorded = self.shard_checksums(snapshot)
        if recorded is None:
            return
        where = f"{self.shard_path(snapshot, rank)} (snapshot {snapshot}, rank {rank})"
        if rank not in recorded:
            raise ValueError(
                f"{where}: {self.manifest_path.name} completed snapshot {snapshot} with shards for ranks "
                f"{sorted(recorded)} only; this file was written afterwards (another run?). Remove it, or "
                "record the snapshot again."
            )
        actual = digest()
        if actual != recorded[rank]:
            raise ValueError(
                f"{where} is corrupted: its sha256 is {actual}, but {self.manifest_path} recorded "
                f"{recorded[rank]} when the snapshot was completed. The file changed on disk or in a copy; "
                "restore it from a good copy, or record this snapshot again."
            )

    def iter_shard(self, snapshot: int, rank: int, batch_rows: int = 1 << 20):
        """One complete shard's records in batches of at most ``batch_rows`` rows, after its bytes
        were checked against the manifest's sha256 (read in blocks): memory stays at one batch
        whatever the shard's size. Raises what :meth:`read_shard` raises."""
        path = self.shard_path(snapshot, rank)

        def digest() -> str:
            running = hashlib.sha256()
            with open(path, "rb") as handle:
                while block := handle.read(1 << 23):
                    running.update(block)
            return running.hexdigest()

        self._verify(snapshot, rank, digest)
        try:
            shard = pq.ParquetFile(path, page_checksum_verification=True)
            missing = [name for name in SHARD_SCHEMA.names if name not in shard.schema_arrow.names]
            if missing:
                raise ValueError(f"{path} is not a loss shard: it lacks columns {missing}")
            for batch in shard.iter_batches(batch_size=batch_rows, columns=SHARD_SCHEMA.names):
                yield {name: batch.column(name).to_numpy() for name in SHARD_SCHEMA.names}
        except (pa.ArrowException, OSError) as err:
            raise ValueError(f"{path} is not a readable loss shard (damaged or truncated?): {err}") from None

    def partials(self, snapshot: int, rank: int) -> dict[int, Path]:
        """``{step: path}`` of the partial shards one rank saved during a train-mode snapshot."""
        found = ((int(m[2]), path) for m, path in self._files(snapshot, PARTIAL_FILE) if int(m[1]) == rank)
        return dict(sorted(found))

    def snapshots_on_disk(self) -> list[int]:
        """Numbers of the ``snapshot=T`` folders, complete or not.

        Raises:
            ValueError: naming a ``snapshot=...`` folder whose name is not ``snapshot=`` and a
                snapshot number (1, 2, ...): a stray folder the merge cannot place.
        """
        base = self.root / "losses"
        if not base.exists():
            return []
        found = []
        for path in sorted(base.iterdir()):
            if not path.name.startswith("snapshot="):
                continue
            match = SNAPSHOT_FOLDER.match(path.name)
            if match is None:
                raise ValueError(
                    f"{path} is not a snapshot folder: the recorder names them snapshot=1, snapshot=2, ... "
                    f"Move it out of {base}."
                )
            found.append(int(match[1]))
        return sorted(found)
