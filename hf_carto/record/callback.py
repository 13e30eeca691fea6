"""Loss recording for any ``transformers`` Trainer through a callback: no subclass needed.

    carto = CartographyCallback(mode="train")
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[carto],
                      compute_loss_func=carto.compute_loss_func)   # train mode only
    trainer.train()

It works with the stock ``transformers.Trainer`` and with trl's ``SFTTrainer``. The training set
needs an int64 ``sample_id`` column (:func:`ensure_sample_ids`) and the Trainer must keep it
(``remove_unused_columns=False``): the Trainer removes dataset columns before any callback runs.

How ``sample_id`` travels without a subclass: at train begin the callback wraps the training
loader's collate function so that the ids of each batch ride along as a tensor, whatever the
collator does with unknown keys, and a forward pre-hook on the model takes them out of the
forward's keyword arguments before the model sees them. :attr:`CartographyCallback.compute_loss_func`
reads them there (train mode); the eval-mode pass builds its own unshuffled loader over the
training set with the same collate function.

:class:`hf_carto.RecordingTrainer` (the mixin) drives the same callback, reaching the batch
through ``compute_loss`` instead of the hook.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

from hf_carto.core.columns import SAMPLE_ID, read_columns
from hf_carto.core.eps import parse_eps
from hf_carto.record.losses import per_sample_loss, token_nll
from hf_carto.record.recorder import LossRecorder, hf_causal_lm_losses, snapshot_subset, subset_of
from hf_carto.record.store import RecordingSettings
from hf_carto.record.trackers import CartographyTracker

__all__ = ["RecordingConfig", "CartographyCallback", "PerSampleLoss", "ensure_sample_ids"]

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
    snapshot_rows: float | None = field(
        default=None,
        metadata={
            "help": "Eval mode: snapshot a fixed seeded subset of the training rows, a fraction in (0, 1) or a "
            "number of rows, for corpora too big to pass over in full at every snapshot; scores then exist for "
            "those rows only. Train mode covers every row at no cost."
        },
    )
    snapshot_seed: int = field(default=0, metadata={"help": "Seed of the snapshot_rows subset."})

    def subset_rows(self, num_samples: int | None):
        """The row indices every eval-mode snapshot covers, or None for every row."""
        if self.snapshot_rows is None:
            return None
        if num_samples is None:
            raise ValueError("snapshot_rows needs a training set with a length (a map-style dataset)")

        return snapshot_subset(num_samples, self.snapshot_rows, self.snapshot_seed)


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


class PerSampleLoss:
    """``compute_loss_func`` computing the causal-LM loss from per-sample token sums.

    The batch loss is ``sum_i w_i * (sum of sample i's token NLL) / num_items_in_batch`` (or the
    token mean when the Trainer passes no count), with ``w_i = 1`` unless the batch carries loss
    weights: exactly what Hugging Face causal LMs return for unit weights. The same token losses
    give each sample's loss for train-mode recording, so neither needs a second cross-entropy.
    A user-supplied ``compute_loss_func`` is kept and called instead (unweighted only), with
    per-sample losses computed beside it.
    """

    def __init__(self, batch: Any, inner: Any = None) -> None:
        # ``batch`` tells about the running batch: ``recorder``, ``sample_ids``, ``loss_weights``
        # (or None), ``training`` (the forward ran in train mode) and ``step`` (optimizer step).
        self.batch = batch
        self.inner = inner

    def _recording(self) -> bool:
        batch = self.batch
        return (
            batch.recorder is not None
            and batch.recorder.mode == "train"
            and batch.sample_ids is not None
            and batch.training
        )

    def __call__(self, outputs, labels, num_items_in_batch=None):
        batch = self.batch
        weights = batch.loss_weights
        recording = self._recording()
        if self.inner is not None:
            if weights is not None:
                raise ValueError("loss weights cannot be combined with a custom compute_loss_func")
            loss = self.inner(outputs, labels, num_items_in_batch=num_items_in_batch)
            if recording:
                with torch.no_grad():
                    losses, counts = per_sample_loss(outputs.logits.detach(), labels, return_counts=True)
                batch.recorder.record(batch.sample_ids, losses, counts, batch.step)
            return loss
        nll, mask = token_nll(outputs.logits, labels)
        row_sums = nll.sum(dim=1)
        if recording:
            counts = mask.sum(dim=1)
            batch.recorder.record(batch.sample_ids, row_sums.detach() / counts, counts, batch.step)
        if weights is not None:
            row_sums = row_sums * weights.to(device=row_sums.device, dtype=row_sums.dtype)
        total = row_sums.sum()
        if num_items_in_batch is None:
            return total / mask.sum()
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(total.device)
        return total / num_items_in_batch


class _SampleIdCollator:
    """Collates features with any collator and adds their ``sample_id`` as an int64 tensor.

    The ids are taken out before the inner collator runs, so collators that refuse or drop unknown
    keys (trl's) work unchanged. Picklable, so loaders with worker processes keep working.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, features: list[Any]) -> Any:
        if not features or not isinstance(features[0], dict) or SAMPLE_ID not in features[0]:
            raise ValueError(
                "a training batch reached the collator without a 'sample_id' column; give the training set "
                "one (hf_carto.ensure_sample_ids) and pass remove_unused_columns=False to the Trainer's arguments"
            )
        ids = torch.tensor([feature[SAMPLE_ID] for feature in features], dtype=torch.int64)
        batch = self.inner([{k: v for k, v in feature.items() if k != SAMPLE_ID} for feature in features])
        batch[SAMPLE_ID] = ids
        return batch


def _without_sample_ids(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in batch.items() if k != SAMPLE_ID}


class CartographyCallback(TrainerCallback):
    """Records per-sample losses from any ``transformers.Trainer`` (the stock one, trl's ...).

    Args:
        mode (`str`, *optional*, defaults to `"eval"`): `"eval"` (the exact `L[t, i]`, one extra
            no-grad pass over the training set per snapshot) or `"train"` (the loss of each
            sample's own training forward; pass :attr:`compute_loss_func` to the Trainer too).
        snapshot_every (`int`, *optional*): eval mode only; a snapshot every this many optimizer
            steps instead of once per epoch.
        output_dir (`str`, *optional*): where `carto/` goes; defaults to the Trainer's output_dir.
        progress (`bool`, *optional*, defaults to `True`): progress bar on eval-mode passes.
        overwrite (`bool`, *optional*, defaults to `False`): discard an earlier recording in the
            folder when a fresh run starts.
        eps (`float` or `str`, *optional*): the forget threshold (default ``quantile`` 0.05)
            used only for what the snapshots report to the trackers (the fraction of samples
            with a forget event so far), resolved on the losses recorded so far.

    With ``report_to`` naming ``"tensorboard"``, every snapshot logs the loss histogram and the
    fraction of samples with a forget event so far (see :mod:`hf_carto.record.trackers`).

    Raises:
        ValueError: at train begin, when the training set has no ``sample_id`` column (the
            Trainer removed it, or it never had one), or duplicated ids; in train mode, when a
            training step ran without :attr:`compute_loss_func`.
    """

    def __init__(
        self,
        mode: str = "eval",
        *,
        snapshot_every: int | None = None,
        output_dir: str | os.PathLike | None = None,
        progress: bool = True,
        overwrite: bool = False,
        eps: float | str = "quantile:0.05",
        snapshot_rows: float | None = None,
        snapshot_seed: int = 0,
    ) -> None:

        # the same checks, now rather than at train
        RecordingSettings(mode=mode, snapshot_every=snapshot_every, snapshot_rows=1 if snapshot_rows else None)
        parse_eps(eps)
        self.recording = RecordingConfig(
            mode=mode,
            snapshot_every=snapshot_every,
            output_dir=None if output_dir is None else str(output_dir),
            progress=progress,
            overwrite=overwrite,
            snapshot_rows=snapshot_rows,
            snapshot_seed=snapshot_seed,
        )
        self._subset = None  # the rows an eval-mode snapshot covers (None: every row)
        self.eps = eps
        self.recorder: LossRecorder | None = None
        #: The ``compute_loss_func`` to give the Trainer: the Hugging Face causal-LM loss, computed
        #: from per-sample sums so that train mode records every sample's loss at no extra cost.
        self.compute_loss_func = PerSampleLoss(self)
        self.snapshot = 1
        self.open = False  # a train-mode snapshot is collecting records
        self.sample_ids: torch.Tensor | None = None
        self.loss_weights = None  # the callback carries no loss weights; CartoTrainer does
        self.training = False
        self._state = None
        self._hooks: list[Any] = []
        self._collate: _SampleIdCollator | None = None
        self._tracker = None
        self._train_steps_seen = False

    @property
    def step(self) -> int:
        return self._state.global_step if self._state is not None else 0

    # -- what the Trainer-bound subclass of the mixin replaces ------------------------------------

    def _begin(self, args, state, kwargs: dict[str, Any]) -> None:
        """Make the recorder and route ``sample_id`` around ``model.forward``."""
        loader = kwargs.get("train_dataloader")
        model = kwargs.get("model")
        if loader is None or model is None:
            raise ValueError("CartographyCallback needs a Trainer that passes its model and train_dataloader")
        dataset = loader.dataset
        _check_sample_ids(dataset)
        # accelerate's loaders wrap a torch DataLoader (base_dataloader) that does the collating.
        base = getattr(loader, "base_dataloader", loader)
        if not isinstance(base.collate_fn, _SampleIdCollator):
            base.collate_fn = _SampleIdCollator(base.collate_fn)
        self._collate = base.collate_fn
        self._hooks.append(model.register_forward_pre_hook(self._take_sample_ids, with_kwargs=True))
        from accelerate import PartialState

        num_samples = len(dataset) if hasattr(dataset, "__len__") else None
        self._subset = self.recording.subset_rows(num_samples)
        self.recorder = LossRecorder(
            self.recording.output_dir or args.output_dir,
            self.recording.mode,
            snapshot_every=self.recording.snapshot_every,
            num_samples=num_samples,
            accelerator=PartialState(),
            progress=self.recording.progress,
            overwrite=self.recording.overwrite,
            snapshot_rows=None if self._subset is None else self._subset.size,
            snapshot_seed=self.recording.snapshot_seed,
        )

    def _eval_snapshot(self, snapshot: int, args, state, kwargs: dict[str, Any]) -> None:
        """Eval-mode pass over the whole training set, unshuffled, each rank its share."""
        from accelerate import PartialState
        from accelerate.data_loader import prepare_data_loader
        from torch.utils.data import DataLoader

        train_loader = kwargs["train_dataloader"]
        process = PartialState()
        dataset = train_loader.dataset
        loader = DataLoader(
            dataset if self._subset is None else subset_of(dataset, self._subset),
            batch_size=args.per_device_eval_batch_size,
            shuffle=False,
            collate_fn=self._collate,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
        )
        loader = prepare_data_loader(
            loader,
            device=args.device,
            num_processes=process.num_processes,
            process_index=process.process_index,
            put_on_device=True,
        )
        self.recorder.eval_snapshot(
            kwargs["model"],
            loader,
            snapshot=snapshot,
            step=state.global_step,
            epoch=state.epoch,
            loss_fn=lambda model, batch: hf_causal_lm_losses(model, _without_sample_ids(batch)),
        )

    def _take_sample_ids(self, module, args, kwargs):
        ids = kwargs.pop(SAMPLE_ID, None)
        if ids is not None:
            self.sample_ids = ids
            self.training = module.training
            if module.training:
                self._train_steps_seen = True
        return args, kwargs

    # -- the recording state machine --------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        self._begin(args, state, kwargs)
        recorder = self.recorder
        self._state = state
        recorder.start(resume_step=state.global_step)
        if self._subset is not None and recorder.is_main_process:
            recorder.store.write_snapshot_ids(_ids_of_rows(kwargs["train_dataloader"].dataset, self._subset))
        # Epochs are counted here rather than read from state.epoch, which is a fraction of
        # max_steps for datasets without a length. A resumed run restarts the count from the
        # epoch its checkpoint was in.
        self.snapshot = int(math.floor((state.epoch or 0.0) + 1e-9)) + 1
        if recorder.mode == "train" and state.global_step > 0:
            restored = recorder.resume(self.snapshot, state.global_step)
            logger.info("resumed train-mode snapshot %d with %d records", self.snapshot, restored)
        if recorder.is_main_process:
            self._tracker = CartographyTracker.for_training(args)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.open = True

    def on_step_end(self, args, state, control, **kwargs):
        every = self.recorder.settings.snapshot_every
        if every is not None and state.global_step % every == 0:
            snapshot = state.global_step // every
            self._eval_snapshot(snapshot, args, state, kwargs)
            self._after_snapshot(snapshot, state)

    def on_epoch_end(self, args, state, control, **kwargs):
        recorder = self.recorder
        if recorder.mode == "train":
            self._check_train_records()
            recorder.end_snapshot(self.snapshot, state.global_step, state.epoch)
            self._after_snapshot(self.snapshot, state)
        elif recorder.settings.snapshot_every is None:
            self._eval_snapshot(self.snapshot, args, state, kwargs)
            self._after_snapshot(self.snapshot, state)
        self.open = False
        self.snapshot += 1

    def on_save(self, args, state, control, **kwargs):
        if self.open:
            self.recorder.save_partial(self.snapshot, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None
        self.recorder.close()

    def _check_train_records(self) -> None:
        """Train mode without the loss function would write empty snapshots: say so instead."""
        if self._train_steps_seen and self.recorder.num_buffered == 0:
            raise ValueError(
                "train-mode recording got no losses: pass compute_loss_func=callback.compute_loss_func to "
                "the Trainer (or use mode='eval')"
            )

    def _after_snapshot(self, snapshot: int, state) -> None:
        if self._tracker is not None:
            self._tracker.log_snapshot(self.recorder.store, self.eps, step=state.global_step)


def _ids_of_rows(dataset: Any, rows) -> list[int]:
    if hasattr(dataset, "select"):
        return [int(i) for i in dataset.select(rows.tolist())[SAMPLE_ID]]
    return [int(dataset[int(i)][SAMPLE_ID]) for i in rows]


def _check_sample_ids(dataset: Any) -> None:
    import datasets

    if isinstance(dataset, datasets.Dataset):
        if SAMPLE_ID not in dataset.column_names:
            raise ValueError(
                f"the training set reaching the Trainer's loader has no '{SAMPLE_ID}' column (it has "
                f"{dataset.column_names}); add one before training (hf_carto.ensure_sample_ids) and pass "
                "remove_unused_columns=False in the TrainingArguments: the Trainer removes the columns its "
                "model does not take before any callback runs"
            )
        ensure_sample_ids(dataset)  # refuses duplicated ids
