"""How the leakage measurements run a causal LM: its device and context size, a pad token, the
per-sequence losses of a padded batch, and plain greedy decoding as an attacker would run it.

Everything runs batched, under ``torch.no_grad()``, in ``model.eval()``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from hf_carto.core.batching import evaluation_mode, map_batches
from hf_carto.record.losses import per_sample_loss

__all__ = ["ensure_pad_token", "greedy_continuations"]

logger = logging.getLogger(__name__)


def ensure_pad_token(tokenizer) -> Any:
    """Use the end-of-text token for padding when the tokenizer has no pad token (and say so)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with; set one")
        logger.warning("the tokenizer has no pad token; padding with its eos token %r", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_size(model) -> int | None:
    """The model's context length in tokens (``None`` when its config names none)."""
    config = getattr(model, "config", None)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def model_device(model) -> torch.device:
    """The device the model's parameters are on, where its inputs go."""
    return next(model.parameters()).device


def batch_losses(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence mean NLL and target counts of a right-padded batch (``input_ids``,
    ``attention_mask``, ``labels``)."""
    device = model_device(model)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    return per_sample_loss(logits, batch["labels"].to(device), return_counts=True)


def _check_context(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, names) -> None:
    """Refuse prompts the model cannot continue by ``max_new_tokens`` inside its context, by name."""
    context = context_size(model)
    if context is None:
        return
    too_long = [i for i, p in enumerate(prompts) if len(p) + max_new_tokens > context]
    if too_long:
        label = [names[i] for i in too_long[:5]] if names else too_long[:5]
        raise ValueError(
            f"{len(too_long)} prompts plus {max_new_tokens} new tokens exceed the model context of {context} "
            f"tokens; first: {label}"
        )


def _eos_ids(model, extra: int | Sequence[int] | None) -> list[int]:
    """Every token id that ends a generation: the model's generation-config eos ids and ``extra``."""
    ids: set[int] = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), extra):
        if value is not None:
            ids.update([value] if isinstance(value, int) else value)
    return sorted(ids)


def _left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as one left-padded batch, so that every row's next token comes at the same column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    return ids, mask


def _before_eos(row: list[int], eos: set[int]) -> list[int]:
    """The tokens before the first end-of-text token (the whole row when there is none)."""
    return next((row[:j] for j, token in enumerate(row) if token in eos), row)


def greedy_continuations(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad_token_id: int,
    eos_token_id: int | Sequence[int] | None = None,
    batch_size: int = 32,
    progress: bool = False,
    names: Sequence[str] | None = None,
) -> list[list[int]]:
    """Plain greedy continuation of each token prompt, at most ``max_new_tokens`` long, batched
    with left padding.

    Decoding is what an attacker would run: the model may end the text, so a row stops at its first
    end-of-text token (``eos_token_id`` or one of the model's generation-config eos ids) and its
    continuation is the tokens before it. A continuation shorter than ``max_new_tokens`` therefore
    means the model chose to stop there.
    """
    _check_context(model, prompts, max_new_tokens, names)
    eos = _eos_ids(model, eos_token_id)
    stop = set(eos)
    starts = list(range(0, len(prompts), batch_size))

    def decode(index: int) -> list[list[int]]:
        ids, mask = _left_pad(prompts[starts[index] : starts[index] + batch_size], pad_token_id)
        generated = model.generate(
            input_ids=ids.to(model_device(model)),
            attention_mask=mask.to(model_device(model)),
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos or None,
            pad_token_id=pad_token_id,
        )
        return [_before_eos(row.tolist(), stop) for row in generated[:, ids.shape[1] :].cpu()]

    with evaluation_mode(model):
        batches = map_batches(len(starts), decode, progress=progress, desc="Greedy decoding")
    return [row for batch in batches for row in batch]
