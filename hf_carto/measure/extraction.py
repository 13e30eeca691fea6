"""Canary extraction: plain greedy decoding from a canary's prefix, end-of-text allowed as an
attacker would decode, reproduces the secret's characters exactly and then stops or goes on with a
character that cannot lengthen the secret.

Results never hold a secret or a decoded continuation: reports built from them are published.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_carto.data.canaries import Canary
from hf_carto.measure.causal_lm import ensure_pad_token, greedy_continuations

__all__ = ["canary_extraction", "score_extraction"]

# Tokens decoded past a secret's own: enough to see whether the model stops after the secret or
# runs on into a longer one ("1234" then "5" is not the secret "1234").
_BOUNDARY_TOKENS = 2


def _split_canary(tokenizer, canary: Canary) -> tuple[list[int], list[int]]:
    prefix = tokenizer(canary.prefix)["input_ids"]
    full = tokenizer(canary.text)["input_ids"]
    if full[: len(prefix)] != prefix:
        raise ValueError(f"canary {canary.canary_id}: its prefix tokenizes differently inside the full text")
    return prefix, full[len(prefix) :]


def _lengthens_secret(char: str, secret_format: str) -> bool:
    """Whether ``char`` right after a secret's characters would make them a longer secret
    (another digit after a number; a letter or digit after a word)."""
    return char.isdigit() if secret_format == "digits" else char.isalnum()


def _extraction_row(canary: Canary, text: str, stopped: bool) -> dict[str, Any]:
    """One canary's outcome from its decoded continuation ``text``; holds neither text nor secret."""
    text, secret = text.lstrip(), canary.secret
    matched = len(os.path.commonprefix([text, secret]))
    after = text[len(secret) : len(secret) + 1]
    return {
        "canary_id": canary.canary_id,
        "repetitions": canary.repetitions,
        "extracted": matched == len(secret) and not (after and _lengthens_secret(after, canary.secret_format)),
        "matched_chars": matched,
        "secret_chars": len(secret),
        "ended_early": stopped and len(text) < len(secret),
    }


def _rates_by(keys: Sequence[int], extracted: Sequence[bool]) -> dict[str, float]:
    """Extraction success rate per key value, keyed by ``str(key)`` in numeric order."""
    groups: dict[int, list[bool]] = {}
    for key, hit in zip(keys, extracted, strict=True):
        groups.setdefault(key, []).append(hit)
    return {str(k): float(np.mean(v)) for k, v in sorted(groups.items())}


def canary_extraction(
    model, tokenizer, canaries: Sequence[Canary], *, batch_size: int = 32, progress: bool = False
) -> dict[str, Any]:
    """Greedy extraction of every canary's secret from its prefix.

    The continuation is decoded to text (up to the first end-of-text token) and compared by
    characters, not tokens: a model can spell the secret with other tokens, and a secret it
    reproduces but then lengthens ("1234" then "5") or cuts short with end-of-text is not extracted.

    Returns per-canary rows (`canary_id`, `repetitions`, `extracted`, `matched_chars`: the longest
    common character prefix of continuation and secret, `secret_chars`, `ended_early`: the model
    ended the text before producing as many characters as the secret has), `success_rate`,
    `num_extracted`, `num_canaries`, `success_rate_by_repetitions` and, once the canaries have been
    located in the training blocks, `success_rate_by_copies` (keyed by the number of whole copies
    inside one training block: the copies the model could learn).
    """
    if not canaries:
        raise ValueError("no canaries to evaluate")
    ensure_pad_token(tokenizer)
    splits = [_split_canary(tokenizer, c) for c in canaries]
    budgets = [len(secret) + _BOUNDARY_TOKENS for _, secret in splits]
    texts, stopped = [""] * len(canaries), [False] * len(canaries)
    # generate() takes one max_new_tokens per call: canaries with equal budgets are decoded together.
    for budget in sorted(set(budgets)):
        chosen = [i for i, b in enumerate(budgets) if b == budget]
        continuations = greedy_continuations(
            model,
            [splits[i][0] for i in chosen],
            budget,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            batch_size=batch_size,
            progress=progress,
            names=[f"canary {canaries[i].canary_id}" for i in chosen],
        )
        for i, tokens in zip(chosen, continuations, strict=True):
            texts[i] = tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            stopped[i] = len(tokens) < budget
    return score_extraction(canaries, texts, stopped)


def score_extraction(canaries: Sequence[Canary], texts: Sequence[str], stopped: Sequence[bool]) -> dict[str, Any]:
    """The extraction result of :func:`canary_extraction` from decoded greedy continuations.

    For models that ``generate`` cannot drive (a hand-written LSTM): decode greedily yourself,
    stopping at end-of-text, and pass each canary's continuation text and whether the model ended
    it. Neither texts nor secrets appear in the result.
    """
    if not len(canaries) == len(texts) == len(stopped):
        raise ValueError(f"got {len(texts)} continuations and {len(stopped)} flags for {len(canaries)} canaries")
    rows = [_extraction_row(c, text, stop) for c, text, stop in zip(canaries, texts, stopped, strict=True)]
    extracted = [r["extracted"] for r in rows]
    result = {
        "success_rate": float(np.mean(extracted)),
        "num_extracted": int(sum(extracted)),
        "num_canaries": len(rows),
        "success_rate_by_repetitions": _rates_by([c.repetitions for c in canaries], extracted),
        "canaries": sorted(rows, key=lambda r: r["canary_id"]),
    }
    if any(c.sample_ids for c in canaries):
        result["success_rate_by_copies"] = _rates_by([len(c.sample_ids) for c in canaries], extracted)
    return result
