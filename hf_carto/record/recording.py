"""Recording per-sample losses while a model trains: the ``T x N`` matrix of Algorithm 1, line 1.

Two modes (see the design notes):

- ``"eval"``: at each snapshot, a no-grad pass in ``model.eval()`` over the whole training set;
  exactly the paper's ``L[t, i] = loss(theta_t, x_i)``. One extra forward pass per snapshot.
- ``"train"``: the loss each sample had in its own training forward pass during epoch ``t``. Free,
  but dropout and within-epoch drift make it an approximation.

Storage, one writer per rank, keyed by ``sample_id``::

    OUTPUT_DIR/carto/manifest.json                        settings + completed snapshots
    OUTPUT_DIR/carto/losses/snapshot=T/rank=R.parquet     sample_id int64, loss float32,
                                                          n_tokens int32, step int64

Every file is written to a temporary name and renamed, so a crash never leaves a half shard that
looks whole. A snapshot counts only once the main process has marked it complete in the manifest,
after every rank wrote its shard. In train mode, the records of the running epoch are also saved
at each checkpoint (``rank=R.partial-STEP.parquet``) so that a run resumed mid-epoch loses nothing.

Integrity: shards carry parquet page checksums (verified whenever a shard is read), and marking a
snapshot complete records each shard's sha256 and size in the manifest
(``"snapshots": {"T": {"step", "epoch", "shards": {"R": {"sha256", "bytes"}}}}``); the merge refuses
a shard whose bytes no longer hash to it. Manifests written before checksums existed have no
``"shards"`` entry, and their shards no page checksums: they still merge, unverified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from hf_carto.core.atomic import write_json_atomic, write_parquet_atomic
from hf_carto.core.columns import SAMPLE_ID
from hf_carto.record.losses import per_sample_loss

__all__ = ["MODES", "RecordingSettings", "LossStore", "LossRecorder", "hf_causal_lm_losses"]

logger = logging.getLogger(__name__)

MODES = ("eval", "train")
FORMAT_VERSION = 1
# The shards' own fields; "sample_id" here is part of the file format (FORMAT_VERSION), spelled out
# so that renaming the dataset column could not silently change what the files hold.
SHARD_SCHEMA = pa.schema(
    [("sample_id", pa.int64()), ("loss", pa.float32()), ("n_tokens", pa.int32()), ("step", pa.int64())]
)
_SNAPSHOT = re.compile(r"^snapshot=([1-9][0-9]*)$")
_SHARD = re.compile(r"^rank=(\d+)\.parquet$")
_PARTIAL = re.compile(r"^rank=(\d+)\.partial-(\d+)\.parquet$")


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


def check_snapshot_rows(rows: float | int) -> None:
    """Refuse a ``snapshot_rows`` that is neither a fraction in (0, 1) nor a whole number >= 1
    (``1000`` or ``1000.0``: a command line parses numbers as floats)."""
    if not (0.0 < rows < 1.0 or (rows >= 1.0 and float(rows).is_integer())):
        raise ValueError(f"snapshot rows are a fraction in (0, 1) or a whole number of rows; got {rows}")


def snapshot_subset(num_samples: int, rows: float | int, seed: int = 0) -> np.ndarray:
    """The row indices an eval-mode snapshot covers when it covers a subset: ``rows`` rows (a whole
    number, ``1000`` or ``1000.0``) or that fraction of them (a float in (0, 1)), drawn without
    replacement by a generator seeded with ``seed``, in row order. It depends on nothing else (not
    on the process count).

    Example:
        >>> snapshot_subset(10, 0.3, seed=0).tolist()
        [5, 6, 9]
    """
    check_snapshot_rows(rows)
    count = max(1, round(rows * num_samples)) if rows < 1.0 else int(rows)
    if not 1 <= count <= num_samples:
        raise ValueError(f"snapshot rows must be between 1 and the {num_samples} training rows; got {rows}")
    return np.sort(np.random.default_rng(seed).choice(num_samples, size=count, replace=False))


def subset_of(dataset: Any, rows: np.ndarray) -> Any:
    """``dataset`` restricted to ``rows``: ``select`` for a ``datasets.Dataset``, a torch
    ``Subset`` for any other map-style dataset."""
    if hasattr(dataset, "select"):
        return dataset.select(rows.tolist())
    from torch.utils.data import Subset

    return Subset(dataset, rows.tolist())


class LossStore:
    """The ``OUTPUT_DIR/carto`` folder: shards, partial shards and the manifest."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / "carto"
        self.manifest_path = self.root / "manifest.json"

    def snapshot_dir(self, snapshot: int) -> Path:
        return self.root / "losses" / f"snapshot={snapshot}"

    def shard_path(self, snapshot: int, rank: int) -> Path:
        return self.snapshot_dir(snapshot) / f"rank={rank}.parquet"

    def partial_path(self, snapshot: int, rank: int, step: int) -> Path:
        return self.snapshot_dir(snapshot) / f"rank={rank}.partial-{step}.parquet"

    # -- manifest ---------------------------------------------------------------------------

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, checked to have the shape this module writes; ``None`` if there is none.

        Raises:
            ValueError: naming the file, when it is not JSON or lacks what a manifest holds.
        """
        if not self.manifest_path.exists():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{self.manifest_path} is not valid JSON: {err}") from None
        problems = _manifest_problems(manifest)
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
        write_parquet_atomic(_records_table(records), path)
        return path

    def write_partial(self, snapshot: int, rank: int, step: int, records: dict[str, np.ndarray]) -> Path:
        path = self.partial_path(snapshot, rank, step)
        write_parquet_atomic(_records_table(records), path)
        return path

    def _files(self, snapshot: int, pattern: re.Pattern) -> list[tuple[re.Match, Path]]:
        folder = self.snapshot_dir(snapshot)
        if not folder.exists():
            return []
        return [(match, path) for path in folder.iterdir() if (match := pattern.match(path.name))]

    def shards(self, snapshot: int) -> dict[int, Path]:
        """``{rank: path}`` of the complete shards of one snapshot."""
        return dict(sorted((int(m[1]), path) for m, path in self._files(snapshot, _SHARD)))

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
        return _parse_records(data, path)

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
        found = ((int(m[2]), path) for m, path in self._files(snapshot, _PARTIAL) if int(m[1]) == rank)
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
            match = _SNAPSHOT.match(path.name)
            if match is None:
                raise ValueError(
                    f"{path} is not a snapshot folder: the recorder names them snapshot=1, snapshot=2, ... "
                    f"Move it out of {base}."
                )
            found.append(int(match[1]))
        return sorted(found)


def _records_table(records: dict[str, np.ndarray]) -> pa.Table:
    return pa.table(
        {
            "sample_id": pa.array(np.asarray(records["sample_id"], dtype=np.int64)),
            "loss": pa.array(np.asarray(records["loss"], dtype=np.float32)),
            "n_tokens": pa.array(np.asarray(records["n_tokens"], dtype=np.int32)),
            "step": pa.array(np.asarray(records["step"], dtype=np.int64)),
        },
        schema=SHARD_SCHEMA,
    )


def _manifest_problems(manifest: Any) -> list[str]:
    """What keeps ``manifest`` from being one this module wrote; empty when nothing does."""
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


def _parse_records(data: bytes, path: Path) -> dict[str, np.ndarray]:
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

    Page checksums are verified; the manifest's sha256 is not (that is :meth:`LossStore.read_shard`,
    for complete shards). Partial shards are read here.

    Raises:
        ValueError: naming the file, when it is not a readable loss shard.
    """
    return _parse_records(Path(path).read_bytes(), Path(path))


class _Buffer:
    """Records of the running snapshot, kept as numpy chunks (no per-sample Python objects)."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []

    def add(self, records: dict[str, np.ndarray]) -> None:
        self.chunks.append(records)

    def __len__(self) -> int:
        return sum(len(c["sample_id"]) for c in self.chunks)

    def merged(self) -> dict[str, np.ndarray]:
        if not self.chunks:
            return {
                name: np.zeros(0, dtype=dtype)
                for name, dtype in (
                    ("sample_id", np.int64),
                    ("loss", np.float32),
                    ("n_tokens", np.int32),
                    ("step", np.int64),
                )
            }
        return {k: np.concatenate([c[k] for c in self.chunks]) for k in self.chunks[0]}

    def clear(self) -> None:
        self.chunks.clear()


def hf_causal_lm_losses(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Default eval-pass forward for Hugging Face causal LMs: per-sample loss and target counts.

    Labels are kept out of the forward call so the model does not also compute a batch loss.
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    return per_sample_loss(logits, labels, return_counts=True)


class LossRecorder:
    """Records per-sample losses for one process of a (possibly distributed) training run.

    Use it from a hand-written ``accelerate`` loop, or through
    :class:`hf_carto.RecordingTrainer`, which drives it for ``transformers.Trainer``.

    Args:
        output_dir (`str`): run folder; records go to `output_dir/carto`.
        mode (`str`, *optional*, defaults to `"eval"`): `"eval"` or `"train"`.
        snapshot_every (`int`, *optional*): eval mode only; snapshot every this many optimizer
            steps instead of once per epoch.
        num_samples (`int`, *optional*): training-set size, checked at merge.
        accelerator (`accelerate.Accelerator`, *optional*): gives rank, world size and barriers;
            without it the recorder runs as a single process.
        overwrite (`bool`, *optional*, defaults to `False`): delete an earlier recording in
            `output_dir/carto` when a fresh run starts, instead of refusing.
        progress (`bool`, *optional*, defaults to `True`): progress bar on the eval pass (main
            process only).

    Example (hand-written loop, eval mode)::

        recorder = LossRecorder(out, mode="eval", accelerator=accelerator, num_samples=len(ds))
        recorder.start()
        for epoch in range(epochs):
            for batch in train_loader:
                batch.pop("sample_id")
                ...  # forward, backward, step
            recorder.eval_snapshot(model, snapshot_loader, snapshot=epoch + 1, step=global_step)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        mode: str = "eval",
        *,
        snapshot_every: int | None = None,
        num_samples: int | None = None,
        accelerator: Any = None,
        progress: bool = True,
        overwrite: bool = False,
        snapshot_rows: int | None = None,
        snapshot_seed: int | None = None,
    ) -> None:
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator is not None else 0
        world_size = accelerator.num_processes if accelerator is not None else 1
        self.settings = RecordingSettings(
            mode, world_size, snapshot_every, num_samples, snapshot_rows, snapshot_seed if snapshot_rows else None
        )
        self.store = LossStore(output_dir)
        self.progress = progress
        self.overwrite = overwrite
        self._buffer = _Buffer()
        self._started = False
        self._lock = None

    def _take_lock(self) -> None:
        """The main process takes the run folder's lock (held until :meth:`close` or the end of the
        process) and tells every rank whether it could, so that all of them raise together."""
        from hf_carto.core.locking import FolderLocked, hold_folder_lock

        refusal = None
        if self.is_main_process and self._lock is None:
            try:
                self._lock = hold_folder_lock(self.store.output_dir, "hf_carto loss recording")
            except FolderLocked as err:
                refusal = str(err)
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            refusal = broadcast_object_list([refusal], from_process=0)[0]
        if refusal is not None:
            raise FolderLocked(f"{refusal} (recording into it)")

    def close(self) -> None:
        """Release the run folder's lock (the main process holds it from :meth:`start` on; the end
        of the process releases it too)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def mode(self) -> str:
        return self.settings.mode

    @property
    def num_buffered(self) -> int:
        """Records of the running snapshot held by this rank, not yet written."""
        return len(self._buffer)

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    def _barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def start(self, resume_step: int = 0) -> None:
        """Check the folder on every rank, then create or update the manifest on the main process.

        Args:
            resume_step (`int`, *optional*, defaults to `0`): the optimizer step a resumed run
                restarts from. Snapshots completed after it belong to the abandoned run and are
                forgotten (they will be taken again). A fresh run (`0`) refuses a folder that
                already holds snapshots, unless the recorder was made with `overwrite=True`.
        """
        # Every rank reads and judges the folder before anyone writes, so that all ranks raise
        # together instead of leaving the others waiting at a barrier.
        self._take_lock()
        discard = resume_step == 0 and self.overwrite and self.store.root.exists()
        if not discard:
            self.store.check_settings(self.settings)
            completed = self.store.completed()
            if resume_step == 0 and completed:
                raise ValueError(
                    f"{self.store.root} already holds {len(completed)} completed snapshots from an earlier "
                    "run. Resume that run (resume_from_checkpoint), choose another output_dir, or pass "
                    "overwrite=True to discard them."
                )
        self._barrier()
        if self.is_main_process:
            if discard:
                import shutil

                shutil.rmtree(self.store.root)
            self.store.create_or_check(self.settings)
            if resume_step > 0:
                dropped = self.store.unmark_after(resume_step)
                if dropped:
                    logger.info("resuming at step %d: snapshots %s will be taken again", resume_step, dropped)
        self._barrier()
        self._started = True

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("call LossRecorder.start() before recording")

    # -- train mode -------------------------------------------------------------------------

    def record(self, sample_ids: Any, losses: Any, n_tokens: Any, step: int) -> None:
        """Buffer one batch of this rank's training losses (train mode)."""
        ids = _to_numpy(sample_ids, np.int64)
        self._buffer.add(
            {
                "sample_id": ids,
                "loss": _to_numpy(losses, np.float32),
                "n_tokens": _to_numpy(n_tokens, np.int32),
                "step": np.full(ids.shape, step, dtype=np.int64),
            }
        )

    def save_partial(self, snapshot: int, step: int) -> None:
        """Save the running snapshot's records so far (called at checkpoints in train mode)."""
        self._require_started()
        if self.mode != "train":
            return
        self.store.write_partial(snapshot, self.rank, step, self._buffer.merged())
        # Older partials of this rank are contained in the new one.
        for old_step, path in self.store.partials(snapshot, self.rank).items():
            if old_step < step:
                path.unlink(missing_ok=True)

    def resume(self, snapshot: int, step: int) -> int:
        """Reload this rank's records of ``snapshot`` made before optimizer step ``step``.

        Called when a run resumes from a checkpoint at ``step`` in the middle of a train-mode
        snapshot; records from after the checkpoint belong to an abandoned run and are dropped.
        Returns the number of records restored.
        """
        self._require_started()
        self._buffer.clear()
        if self.mode != "train":
            return 0
        partials = self.store.partials(snapshot, self.rank)
        usable = [s for s in partials if s <= step]
        if usable:
            records = read_records(partials[max(usable)])
            keep = records["step"] < step
            self._buffer.add({k: v[keep] for k, v in records.items()})
        return len(self._buffer)

    def end_snapshot(self, snapshot: int, step: int, epoch: float | None = None) -> Path:
        """Write this rank's buffered records as the shard of ``snapshot`` and mark it complete."""
        self._require_started()
        path = self.store.write_shard(snapshot, self.rank, self._buffer.merged())
        self._buffer.clear()
        self._barrier()
        if self.is_main_process:
            self.store.mark_complete(snapshot, step, epoch)
            for rank in range(self.settings.world_size):
                for partial in self.store.partials(snapshot, rank).values():
                    partial.unlink(missing_ok=True)
        self._barrier()
        return path

    # -- eval mode --------------------------------------------------------------------------

    @torch.no_grad()
    def eval_snapshot(
        self,
        model: torch.nn.Module,
        dataloader: Iterable[dict[str, Any]],
        *,
        snapshot: int,
        step: int,
        epoch: float | None = None,
        loss_fn: Callable[[torch.nn.Module, dict[str, Any]], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> Path:
        """One no-grad pass in ``model.eval()`` over this rank's share of the training set.

        ``dataloader`` yields dicts with a ``sample_id`` entry (an accelerate-prepared,
        unshuffled loader; its padding duplicates are removed at merge). ``loss_fn(model,
        batch)`` returns per-sample losses and target counts; the default handles Hugging Face
        causal LMs (``input_ids``, ``attention_mask``, ``labels``).
        """
        self._require_started()
        loss_fn = loss_fn or hf_causal_lm_losses
        was_training = model.training
        model.eval()
        self._buffer.clear()
        try:
            iterator = dataloader
            if self.progress and self.is_main_process:
                from tqdm.auto import tqdm

                total = len(dataloader) if hasattr(dataloader, "__len__") else None
                iterator = tqdm(dataloader, total=total, desc=f"loss snapshot {snapshot}", leave=False)
            for batch in iterator:
                batch = dict(batch)
                ids = batch.pop(SAMPLE_ID)
                losses, counts = loss_fn(model, batch)
                self.record(ids, losses, counts, step)
        finally:
            model.train(was_training)
        return self.end_snapshot(snapshot, step, epoch)


def _to_numpy(values: Any, dtype: np.dtype) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu() if dtype == np.float32 else values.detach().cpu()
        return values.numpy().astype(dtype, copy=False).reshape(-1)
    return np.asarray(values, dtype=dtype).reshape(-1)
