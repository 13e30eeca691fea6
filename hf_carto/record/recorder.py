"""Recording per-sample losses while a model trains: the ``T x N`` matrix of Algorithm 1, line 1.

Two modes (see the design notes):

- ``"eval"``: at each snapshot, a no-grad pass in ``model.eval()`` over the whole training set (or
  a fixed seeded subset of it); exactly the paper's ``L[t, i] = loss(theta_t, x_i)``. One extra
  forward pass per snapshot.
- ``"train"``: the loss each sample had in its own training forward pass during epoch ``t``. Free,
  but dropout and within-epoch drift make it an approximation.

Each rank writes its own shard of every snapshot into the run folder's :class:`LossStore` (the
files and the manifest are described in :mod:`hf_carto.record.shards`). A snapshot counts only once
the main process has marked it complete, after every rank wrote its shard. In train mode, the
records of the running epoch are also saved at each checkpoint so that a run resumed mid-epoch
loses nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hf_carto.core.columns import SAMPLE_ID
from hf_carto.core.locking import FolderLocked, hold_folder_lock
from hf_carto.record.losses import per_sample_loss
from hf_carto.record.shards import empty_records, read_records
from hf_carto.record.store import LossStore, RecordingSettings

__all__ = ["LossRecorder", "hf_causal_lm_losses"]

logger = logging.getLogger(__name__)


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
            return empty_records()
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
