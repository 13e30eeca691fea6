"""Training on curated data with trl's ``SFTTrainer``: :class:`CartoSFTTrainer`.

``CartoTrainer`` takes token blocks; this is the same curation for the datasets ``SFTTrainer``
takes: plain text (``text``), ``prompt``/``completion`` (standard or conversational) and
conversational ``messages``, each row carrying the intervention columns that
:func:`hf_carto.apply_interventions` adds. The semantics are ``CartoTrainer``'s, from the same code
(:func:`hf_carto.prepare_curated_dataset`, :class:`hf_carto.WeightedEpochSampler`):

- ``carto_keep``: rows with ``False`` are filtered out before trl tokenizes anything;
- ``carto_loss_weight``: the training loss is ``sum_i w_i * (sum of sample i's target-token NLL) /
  (unweighted number of target tokens)``, the count taken across devices and accumulation steps
  as trl does. Target tokens are the ones trl trains on: every token, the completion only
  (``completion_only_loss``) or the assistant turns only (``assistant_only_loss``). Unit weights
  reproduce ``SFTTrainer`` exactly and a zero weight removes a sample's gradient without
  rescaling the others. The eval loss stays unweighted, as in ``CartoTrainer``;
- ``carto_sampling_weight``: each epoch draws its samples with replacement, proportionally to the
  weight (equal weights keep the Trainer's own sampler).

Both layouts of trl's collator are supported: padded rows, and ``padding_free=True`` (all rows of
a batch concatenated into one), where each token gets the weight of the sample it came from.
``packing=True`` is refused with loss or sampling weights: it cuts and merges samples into blocks
and keeps only the token columns, so there is no sample left to weight.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from datasets import Dataset

try:
    from trl import SFTTrainer
    from trl import __version__ as trl_version
except ImportError as err:  # trl is an optional dependency: the rest of hf_carto works without it
    raise ImportError("hf_carto.curation.sft needs trl: pip install 'hf_carto[sft]'") from err

from hf_carto.core.columns import LOSS_WEIGHT, SAMPLING_WEIGHT
from hf_carto.curation.weighted_trainer import WeightedEpochSampler, admit_train_dataset, prepare_curated_dataset
from hf_carto.record.recording_trainer import trainer_call_without_hub_token

__all__ = ["CartoSFTTrainer", "LossWeightCollator"]

logger = logging.getLogger(__name__)


class LossWeightCollator:
    """Collates with any collator and adds every token's loss weight to the batch.

    The ``carto_loss_weight`` of each feature is taken out before the inner collator runs (trl's
    collators drop keys they do not know) and comes back under the same key with the shape of
    the batch's ``input_ids``: row ``i`` of a padded batch is ``w_i`` throughout; in the
    padding-free layout (one row holding every sample end to end) each token has the weight of
    its sample, and the padding after them 0. Features without the column pass through unchanged.

    Example:
        >>> from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
        >>> collate = LossWeightCollator(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True))
        >>> batch = collate([{"input_ids": [1, 2, 3], LOSS_WEIGHT: 2.0}, {"input_ids": [4, 5], LOSS_WEIGHT: 0.5}])
        >>> batch[LOSS_WEIGHT].tolist()
        [[2.0, 2.0, 2.0, 0.5, 0.5]]
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features or LOSS_WEIGHT not in features[0]:
            return self.inner(features)
        weights = torch.tensor([float(feature[LOSS_WEIGHT]) for feature in features], dtype=torch.float32)
        batch = self.inner([{k: v for k, v in feature.items() if k != LOSS_WEIGHT} for feature in features])
        rows, width = batch["input_ids"].shape
        if rows == len(features):
            token_weights = weights[:, None].expand(rows, width).contiguous()
        elif rows == 1:
            lengths = torch.tensor([len(feature["input_ids"]) for feature in features])
            total = int(lengths.sum())
            if total > width:
                raise ValueError(
                    f"the collator put {len(features)} samples of {total} tokens into one row of {width}: "
                    "cannot tell which token belongs to which sample"
                )
            token_weights = torch.zeros(1, width)
            token_weights[0, :total] = torch.repeat_interleave(weights, lengths)
        else:
            raise ValueError(
                f"the collator made {rows} rows from {len(features)} samples; loss weights need one row per "
                "sample, or all samples concatenated into one row (padding_free=True)"
            )
        batch[LOSS_WEIGHT] = token_weights
        return batch


class _WeightedLogProbs:
    """The model as ``SFTTrainer.compute_loss`` calls it, each label's log-probability times its weight.

    trl's loss is ``-sum(log_probs) / number of target tokens`` over the fused LM head's per-token
    log-probabilities, so scaling them gives the weighted loss with trl's own reduction (a unit
    weight leaves every number, and so the whole training, unchanged) and keeps trl's metrics,
    token counting and multi-device scaling as they are. Forwards without the fused head (the
    logits trl recomputes for ``return_outputs``) are passed through.
    """

    def __init__(self, model: Any, token_weights: torch.Tensor) -> None:
        self.model = model
        self.token_weights = token_weights
        self.applied = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outputs = self.model(*args, **kwargs)
        if kwargs.get("fused_lm_head"):
            # log_probs[:, j] scores the label at position j + 1, which belongs to that token's sample.
            weights = self.token_weights[:, 1:]
            if weights.shape != outputs.log_probs.shape:
                raise ValueError(
                    f"loss weights of shape {tuple(weights.shape)} do not match the per-token log-probabilities "
                    f"{tuple(outputs.log_probs.shape)} (labels shifted by the collator are not supported)"
                )
            outputs.log_probs = outputs.log_probs * weights.to(outputs.log_probs.device, outputs.log_probs.dtype)
            self.applied = True
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def _refuse_unweightable_settings(config: Any, dataset: Dataset, kwargs: dict[str, Any], sampling: bool) -> None:
    """Settings under which trl's loss would not see the weights, or no sample would be left to weight."""
    weighted = LOSS_WEIGHT in dataset.column_names
    if config is not None and getattr(config, "packing", False) and (weighted or sampling):
        column = LOSS_WEIGHT if weighted else SAMPLING_WEIGHT
        raise ValueError(
            f"packing=True merges samples into blocks and drops '{column}'; use padding_free=True "
            "(samples side by side, each keeping its weight) or packing=False"
        )
    if not weighted:
        return
    if "image" in dataset.column_names or "images" in dataset.column_names:
        raise ValueError(f"'{LOSS_WEIGHT}' is not supported for vision datasets (their batches are built on the fly)")
    reasons = []
    if kwargs.get("compute_loss_func") is not None:
        reasons.append("a compute_loss_func")
    if config is not None and getattr(config, "loss_type", "nll") != "nll":
        reasons.append(f"loss_type={config.loss_type!r}")
    if config is not None and getattr(config, "label_smoothing_factor", 0.0) > 0:
        reasons.append("label smoothing")
    if reasons:
        raise ValueError(
            f"'{LOSS_WEIGHT}' cannot be combined with {' or '.join(reasons)}: the weights apply to trl's "
            "negative log-likelihood loss"
        )


class CartoSFTTrainer(SFTTrainer):
    """trl's ``SFTTrainer`` for a curated dataset: loss weights, up-sampling, removal.

    Takes everything ``SFTTrainer`` takes (``train_dataset`` by keyword), and:

    Extra keyword arguments:
        epoch_samples (`int`, *optional*): samples drawn per epoch when sampling weights are used;
            defaults to the number of kept rows.

    Example::

        curated = apply_interventions(add_cartography(ds, fit), gamma=2.0, alpha=0.5)  # a "text" column
        trainer = CartoSFTTrainer(model=model, args=SFTConfig(...), train_dataset=curated,
                                  processing_class=tokenizer)
        trainer.train()
    """

    def __init__(
        self,
        *args: Any,
        train_dataset: Dataset | None = None,
        epoch_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        # Checked and filtered before trl tokenizes: removed rows cost nothing and bad columns fail fast.
        train_dataset, sampling_weights, n_before = admit_train_dataset(
            "CartoSFTTrainer", args, train_dataset, epoch_samples
        )
        config = kwargs.get("args", args[1] if len(args) > 1 else None)
        _refuse_unweightable_settings(config, train_dataset, kwargs, sampling_weights is not None)
        self.uses_loss_weights = LOSS_WEIGHT in train_dataset.column_names
        self.epoch_samples = epoch_samples
        # As every trainer of the package: the Hub token stays out of the pickled arguments.
        args, kwargs = trainer_call_without_hub_token(args, kwargs)
        super().__init__(*args, train_dataset=train_dataset, **kwargs)
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        if self.uses_loss_weights and getattr(parallelism, "sp_enabled", False):
            # Sequence parallelism makes trl take the model's own (unweighted) loss.
            raise ValueError(f"'{LOSS_WEIGHT}' is not supported with sequence parallelism")
        for column, used in ((LOSS_WEIGHT, self.uses_loss_weights), (SAMPLING_WEIGHT, sampling_weights is not None)):
            if used and column not in self.train_dataset.column_names:
                raise ValueError(f"'{column}' did not survive trl's dataset preparation")
        # trl may drop rows (left without targets by truncation) or shuffle them (shuffle_dataset),
        # so the sampling weights are read again from the rows that will be trained on.
        self.sampling_weights = None if sampling_weights is None else prepare_curated_dataset(self.train_dataset)[1]
        if self.uses_loss_weights:
            self.data_collator = LossWeightCollator(self.data_collator)
        logger.info(
            "CartoSFTTrainer: %d of %d rows kept; loss weights %s; sampling weights %s",
            len(self.train_dataset),
            n_before,
            "on" if self.uses_loss_weights else "off",
            "on" if self.sampling_weights is not None else "off (uniform)",
        )

    def _set_signature_columns_if_needed(self) -> None:
        # The Trainer removes the columns the model does not take before collating; the weight
        # must reach the collator, which turns it into a tensor that compute_loss takes out.
        super()._set_signature_columns_if_needed()
        if self.uses_loss_weights and LOSS_WEIGHT not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, LOSS_WEIGHT]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(LOSS_WEIGHT, None)
        if weights is None or not self.model.training:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        weighted = _WeightedLogProbs(model, weights)
        result = super().compute_loss(
            weighted, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if not weighted.applied:
            # A trl whose SFTTrainer computes its loss another way would train without the weights.
            raise RuntimeError(
                f"trl {trl_version} computed the loss without its fused LM head, so '{LOSS_WEIGHT}' was not applied; "
                "CartoSFTTrainer needs trl>=1.16"
            )
        return result

    def _get_train_sampler(self, train_dataset=None):
        if self.sampling_weights is None:
            return super()._get_train_sampler(train_dataset)
        return WeightedEpochSampler(self.sampling_weights, self.epoch_samples, seed=self.args.seed)
