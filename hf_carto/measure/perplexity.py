"""Perplexity: ``exp`` of the token-weighted mean NLL over token sequences, in ``model.eval()``
under ``torch.no_grad()``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hf_carto.core.batching import evaluation_mode, map_batches, right_pad
from hf_carto.measure.causal_lm import batch_losses

__all__ = ["perplexity"]


def perplexity(model, sequences: Sequence[Sequence[int]], *, batch_size: int = 32, pad_token_id: int = 0) -> dict:
    """Token-weighted perplexity over token sequences: ``exp(sum NLL / number of targets)``."""
    if not sequences:
        raise ValueError("no sequences to compute perplexity on")
    starts = list(range(0, len(sequences), batch_size))

    def batch_totals(index: int) -> tuple[float, int]:
        start = starts[index]
        losses, counts = batch_losses(model, right_pad(sequences[start : start + batch_size], pad_token_id))
        keep = counts > 0
        return float((losses[keep] * counts[keep]).double().sum()), int(counts.sum())

    total, count = 0.0, 0
    with evaluation_mode(model):
        for batch_total, batch_count in map_batches(len(starts), batch_totals):  # summed in batch order
            total += batch_total
            count += batch_count
    if count == 0:
        raise ValueError("the sequences hold no target token (each needs at least 2 tokens)")
    return {"perplexity": math.exp(total / count), "mean_nll": total / count, "num_tokens": count}
