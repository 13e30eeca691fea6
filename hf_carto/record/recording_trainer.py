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

import copy
import logging
from typing import Any

import torch
from transformers import Trainer

from hf_carto.core.columns import LOSS_WEIGHT, SAMPLE_ID
from hf_carto.record.callback import CartographyCallback, PerSampleLoss, RecordingConfig, ensure_sample_ids
from hf_carto.record.recorder import LossRecorder, hf_causal_lm_losses, subset_of

__all__ = ["LossRecordingMixin", "RecordingTrainer", "without_hub_token"]

logger = logging.getLogger(__name__)


def without_hub_token(args):
    """``args`` without its Hub token (a copy; ``args`` itself is left as it is).

    ``transformers.Trainer`` pickles its arguments whole into ``training_args.bin`` beside every
    checkpoint and saved model, and its own pushes upload that file with the model: a token kept in
    the arguments is written to disk and published. Without it, ``huggingface_hub`` takes the token
    from the login (``hf auth login``) or the ``HF_TOKEN`` environment variable, which reach no file.
    """
    if getattr(args, "hub_token", None) is None:
        return args
    logger.warning(
        "the Hub token in the training arguments is not kept: the Trainer would write it into training_args.bin "
        "and push it with the model; pushes use the login (hf auth login) or HF_TOKEN instead"
    )
    args = copy.copy(args)
    args.hub_token = None
    return args


def trainer_call_without_hub_token(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """A Trainer constructor's positional and keyword arguments with :func:`without_hub_token`
    applied to its ``args`` (the second positional, or the keyword)."""
    if len(args) > 1:
        return (args[0], without_hub_token(args[1]), *args[2:]), kwargs
    if kwargs.get("args") is not None:
        return args, {**kwargs, "args": without_hub_token(kwargs["args"])}
    return args, kwargs


class _TrainerBatch:
    """The running batch as :class:`PerSampleLoss` reads it, from a recording Trainer."""

    def __init__(self, trainer: LossRecordingMixin) -> None:
        self.trainer = trainer

    @property
    def recorder(self) -> LossRecorder | None:
        return self.trainer.recorder

    @property
    def sample_ids(self) -> torch.Tensor | None:
        return self.trainer._pending_sample_ids

    @property
    def loss_weights(self) -> torch.Tensor | None:
        return self.trainer._pending_loss_weights

    @property
    def training(self) -> bool:
        return self.trainer.model.training

    @property
    def step(self) -> int:
        return self.trainer.state.global_step


class _RecordingCallback(CartographyCallback):
    """The callback driven by the Trainer it belongs to: its recorder, its eval loader, and the
    batch columns its ``compute_loss`` takes out (no collate wrapper or forward hook needed)."""

    def __init__(self, trainer: LossRecordingMixin) -> None:
        super().__init__(trainer.recording.mode, snapshot_every=trainer.recording.snapshot_every)
        self.trainer = trainer
        self.recorder = trainer.recorder
        self._subset = trainer.snapshot_subset

    def _begin(self, args, state, kwargs: dict[str, Any]) -> None:
        pass

    def _eval_snapshot(self, snapshot: int, args, state, kwargs: dict[str, Any]) -> None:
        self.trainer.record_eval_snapshot(snapshot, state)


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
        # Every trainer built on the mixin keeps the Hub token out of the arguments it pickles.
        args, kwargs = trainer_call_without_hub_token(args, kwargs)
        super().__init__(*args, **kwargs)
        self.recorder = None
        self._pending_sample_ids: torch.Tensor | None = None
        self._pending_loss_weights: torch.Tensor | None = None
        self.snapshot_subset = None  # the rows eval-mode snapshots cover (None: every row)
        if recording is not None:
            self.train_dataset = ensure_sample_ids(self.train_dataset)
            num_samples = len(self.train_dataset) if hasattr(self.train_dataset, "__len__") else None
            self.snapshot_subset = recording.subset_rows(num_samples)
            self.recorder = LossRecorder(
                recording.output_dir or self.args.output_dir,
                recording.mode,
                snapshot_every=recording.snapshot_every,
                num_samples=num_samples,
                accelerator=self.accelerator,
                progress=recording.progress,
                overwrite=recording.overwrite,
                snapshot_rows=None if self.snapshot_subset is None else self.snapshot_subset.size,
                snapshot_seed=recording.snapshot_seed,
            )
            self.add_callback(_RecordingCallback(self))
        if self._needs_per_sample_loss():
            self.compute_loss_func = PerSampleLoss(_TrainerBatch(self), self.compute_loss_func)

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
        """Eval-mode pass over the training set (or its ``snapshot_rows`` subset) with the current weights."""

        rows = (
            self.train_dataset if self.snapshot_subset is None else subset_of(self.train_dataset, self.snapshot_subset)
        )
        loader = self.get_eval_dataloader(rows)
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
