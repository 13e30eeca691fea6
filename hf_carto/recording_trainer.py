"""Loss recording for ``transformers.Trainer``: add one argument to an existing training script.

    trainer = RecordingTrainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                               recording=RecordingConfig(mode="eval"))
    trainer.train()
    ds = add_loss_columns(ds, args.output_dir)     # carto_loss_1 .. carto_loss_T

The ``sample_id`` column survives ``remove_unused_columns`` and is taken out of every batch before
``model.forward``. In train mode the per-sample losses come from the same token losses as the
training loss (one cross-entropy, installed as the Trainer's ``compute_loss_func``), so recording
adds no forward pass and no second cross-entropy.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from .columns import LOSS_WEIGHT, SAMPLE_ID, read_columns
from .losses import per_sample_loss, token_nll
from .recording import LossRecorder, hf_causal_lm_losses

__all__ = ["RecordingConfig", "LossRecordingMixin", "RecordingTrainer", "ensure_sample_ids"]

logger = logging.getLogger(__name__)


@dataclass
class RecordingConfig:
    """How a Trainer records per-sample losses."""

    mode: str = field(default="eval", metadata={"help": "'eval' (exact L[t,i], one extra pass) or 'train' (free)."})
    snapshot_every: int | None = field(
        default=None,
        metadata={"help": "Eval mode: snapshot every N optimizer steps instead of once per epoch."},
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Where `carto/` goes; defaults to TrainingArguments.output_dir."}
    )
    progress: bool = field(default=True, metadata={"help": "Progress bar on eval-mode passes."})
    overwrite: bool = field(
        default=False,
        metadata={"help": "Discard an earlier recording in output_dir when a fresh run starts."},
    )


def ensure_sample_ids(dataset: Any) -> Any:
    """Return ``dataset`` with a unique int64 ``sample_id`` column.

    A map-style ``datasets.Dataset`` without one gets ``sample_id = row index`` with a warning:
    the Trainer shuffles through its sampler, never the dataset, so the row index is stable. An
    iterable dataset has no stable row index, so it must bring its own (raises ``ValueError``).
    Duplicated ids raise ``ValueError`` naming how many and the first ones.
    """
    import datasets

    if isinstance(dataset, datasets.Dataset):
        if SAMPLE_ID not in dataset.column_names:
            warnings.warn(
                "the training dataset has no 'sample_id' column; using the row index. Add it yourself "
                "before any shuffle or filter if you need ids that survive such steps.",
                stacklevel=3,
            )
            return dataset.add_column(SAMPLE_ID, np.arange(len(dataset), dtype=np.int64))
        ids = read_columns(dataset, [SAMPLE_ID])[SAMPLE_ID]
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != ids.size:
            dupes = uniq[counts > 1]
            raise ValueError(
                f"the training dataset has {dupes.size} duplicated sample_ids ({ids.size - uniq.size} extra "
                f"rows); first: {dupes[:5].tolist()}"
            )
        return dataset
    if isinstance(dataset, datasets.IterableDataset):
        names = dataset.column_names
        if names is not None and SAMPLE_ID not in names:
            raise ValueError(
                "the iterable training dataset has no 'sample_id' column; add one before streaming "
                "(e.g. from the source row index) so that losses can be keyed by sample"
            )
        return dataset
    return dataset


class _RecordingCallback(TrainerCallback):
    def __init__(self, trainer: LossRecordingMixin) -> None:
        self.trainer = trainer
        self.snapshot = 1
        self.open = False  # a train-mode snapshot is collecting records

    def on_train_begin(self, args, state, control, **kwargs):
        recorder = self.trainer.recorder
        recorder.start(resume_step=state.global_step)
        # Epochs are counted here rather than read from state.epoch, which is a fraction of
        # max_steps for datasets without a length. A resumed run restarts the count from the
        # epoch its checkpoint was in.
        self.snapshot = int(math.floor((state.epoch or 0.0) + 1e-9)) + 1
        if recorder.mode == "train" and state.global_step > 0:
            restored = recorder.resume(self.snapshot, state.global_step)
            logger.info("resumed train-mode snapshot %d with %d records", self.snapshot, restored)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.open = True

    def on_step_end(self, args, state, control, **kwargs):
        every = self.trainer.recorder.settings.snapshot_every
        if every is not None and state.global_step % every == 0:
            self.trainer.record_eval_snapshot(state.global_step // every, state)

    def on_epoch_end(self, args, state, control, **kwargs):
        recorder = self.trainer.recorder
        if recorder.mode == "train":
            recorder.end_snapshot(self.snapshot, state.global_step, state.epoch)
        elif recorder.settings.snapshot_every is None:
            self.trainer.record_eval_snapshot(self.snapshot, state)
        self.open = False
        self.snapshot += 1

    def on_save(self, args, state, control, **kwargs):
        if self.open:
            self.trainer.recorder.save_partial(self.snapshot, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.trainer.recorder.close()


class _PerSampleLoss:
    """``compute_loss_func`` computing the causal-LM loss from per-sample token sums.

    The batch loss is ``sum_i w_i * (sum of sample i's token NLL) / num_items_in_batch`` (or the
    token mean when the Trainer passes no count), with ``w_i = 1`` unless the batch carries loss
    weights: exactly what Hugging Face causal LMs return for unit weights. The same token losses
    give each sample's loss for train-mode recording, so neither needs a second cross-entropy.
    A user-supplied ``compute_loss_func`` is kept and called instead (unweighted only), with
    per-sample losses computed beside it.
    """

    def __init__(self, trainer: LossRecordingMixin, inner: Any = None) -> None:
        self.trainer = trainer
        self.inner = inner

    def _recording(self) -> bool:
        trainer = self.trainer
        return (
            trainer.recorder is not None
            and trainer.recorder.mode == "train"
            and trainer._pending_sample_ids is not None
            and trainer.model.training
        )

    def __call__(self, outputs, labels, num_items_in_batch=None):
        trainer = self.trainer
        weights = trainer._pending_loss_weights
        recording = self._recording()
        if self.inner is not None:
            if weights is not None:
                raise ValueError("loss weights cannot be combined with a custom compute_loss_func")
            loss = self.inner(outputs, labels, num_items_in_batch=num_items_in_batch)
            if recording:
                with torch.no_grad():
                    losses, counts = per_sample_loss(outputs.logits.detach(), labels, return_counts=True)
                trainer.recorder.record(trainer._pending_sample_ids, losses, counts, trainer.state.global_step)
            return loss
        nll, mask = token_nll(outputs.logits, labels)
        row_sums = nll.sum(dim=1)
        if recording:
            counts = mask.sum(dim=1)
            trainer.recorder.record(
                trainer._pending_sample_ids, row_sums.detach() / counts, counts, trainer.state.global_step
            )
        if weights is not None:
            row_sums = row_sums * weights.to(device=row_sums.device, dtype=row_sums.dtype)
        total = row_sums.sum()
        if num_items_in_batch is None:
            return total / mask.sum()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch


class LossRecordingMixin:
    """Mix into a ``transformers.Trainer`` subclass to record per-sample losses.

    Adds one keyword argument, ``recording`` (a :class:`RecordingConfig`, or a mode string).
    Subclasses may set ``records_by_default = False`` (then ``recording=None`` records nothing)
    and extend ``batch_columns``: dataset columns that reach ``compute_loss`` but never
    ``model.forward``.
    """

    records_by_default = True
    batch_columns: tuple[str, ...] = (SAMPLE_ID,)
    recorder: LossRecorder | None

    def __init__(self, *args: Any, recording: RecordingConfig | str | None = None, **kwargs: Any) -> None:
        if isinstance(recording, str):
            recording = RecordingConfig(mode=recording)
        if recording is None and self.records_by_default:
            recording = RecordingConfig()
        self.recording = recording
        super().__init__(*args, **kwargs)
        self.recorder = None
        self._pending_sample_ids: torch.Tensor | None = None
        self._pending_loss_weights: torch.Tensor | None = None
        if recording is not None:
            self.train_dataset = ensure_sample_ids(self.train_dataset)
            num_samples = len(self.train_dataset) if hasattr(self.train_dataset, "__len__") else None
            self.recorder = LossRecorder(
                recording.output_dir or self.args.output_dir,
                recording.mode,
                snapshot_every=recording.snapshot_every,
                num_samples=num_samples,
                accelerator=self.accelerator,
                progress=recording.progress,
                overwrite=recording.overwrite,
            )
            self.add_callback(_RecordingCallback(self))
        if self._needs_per_sample_loss():
            self.compute_loss_func = _PerSampleLoss(self, self.compute_loss_func)

    def _needs_per_sample_loss(self) -> bool:
        return self.recorder is not None and self.recorder.mode == "train"

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        for column in self.batch_columns:
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def _pop_batch_columns(self, inputs) -> dict[str, Any]:
        inputs = dict(inputs)
        for column in self.batch_columns:
            inputs.pop(column, None)
        return inputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._pending_sample_ids = inputs.get(SAMPLE_ID)
        self._pending_loss_weights = inputs.get(LOSS_WEIGHT)
        try:
            return super().compute_loss(
                model,
                self._pop_batch_columns(inputs),
                return_outputs=return_outputs,
                num_items_in_batch=num_items_in_batch,
            )
        finally:
            self._pending_sample_ids = None
            self._pending_loss_weights = None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        return super().prediction_step(
            model, self._pop_batch_columns(inputs), prediction_loss_only, ignore_keys=ignore_keys
        )

    def record_eval_snapshot(self, snapshot: int, state) -> None:
        """Eval-mode pass over the whole training set with the current weights."""
        loader = self.get_eval_dataloader(self.train_dataset)
        self.recorder.eval_snapshot(
            self.model,
            loader,
            snapshot=snapshot,
            step=state.global_step,
            epoch=state.epoch,
            loss_fn=lambda model, batch: hf_causal_lm_losses(model, self._pop_batch_columns(batch)),
        )


class RecordingTrainer(LossRecordingMixin, Trainer):
    """``transformers.Trainer`` that records per-sample losses (see :class:`RecordingConfig`)."""
