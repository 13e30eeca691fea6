"""Contamination recall: a sequence is k-extractable when greedy decoding of its first ``k`` tokens
reproduces its next ``k`` tokens exactly; recall is the extractable fraction.

Results hold flags and counts, never a decoded continuation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_carto.measure.causal_lm import greedy_continuations

__all__ = ["contamination_recall"]


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix; the rows may differ in length (a continuation can stop early)."""
    return next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def contamination_recall(
    model,
    sequences: Sequence[Sequence[int]],
    *,
    k: int = 32,
    pad_token_id: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """k-extractability of each token sequence: plain greedy decoding of its first ``k`` tokens must
    reproduce its next ``k`` tokens exactly. Decoding stops at end-of-text (the model's eos ids and
    ``eos_token_id``), so a continuation that ends early is not extractable; the sequences are
    windows inside one document, with no end-of-text among their tokens.

    Returns `k`, `recall`, `num_extractable`, `num_sequences`, `mean_matched_tokens` and the
    per-sequence `extractable` flags.
    """
    if not sequences:
        raise ValueError("no sequences to test for contamination")
    short = [i for i, s in enumerate(sequences) if len(s) < 2 * k]
    if short:
        raise ValueError(f"{len(short)} sequences are shorter than 2k = {2 * k} tokens; first: {short[:5]}")
    prompts = [list(s[:k]) for s in sequences]
    targets = [list(s[k : 2 * k]) for s in sequences]
    generated = greedy_continuations(
        model,
        prompts,
        k,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        batch_size=batch_size,
        progress=progress,
    )
    matched = [_common_prefix_length(g, t) for g, t in zip(generated, targets, strict=True)]
    extractable = [m == k for m in matched]
    return {
        "k": k,
        "recall": float(np.mean(extractable)),
        "num_extractable": int(sum(extractable)),
        "num_sequences": len(sequences),
        "mean_matched_tokens": float(np.mean(matched)),
        "extractable": extractable,
    }
