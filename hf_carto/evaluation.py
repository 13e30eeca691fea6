"""Leakage measurements on a causal LM: canary extraction, exposure, contamination, perplexity.

- extraction: greedy decoding from a canary's prefix reproduces its secret token for token;
- exposure (Carlini et al., The Secret Sharer): ``log2 |R| - log2 rank`` of the secret's
  log-perplexity among all candidate secrets, exact when the space can be enumerated, else from a
  skew-normal fitted to a sample of candidates (``exposure = -log2 CDF(secret)``);
- contamination: a sequence is k-extractable when greedy decoding of its first ``k`` tokens
  reproduces its next ``k`` tokens exactly; recall is the extractable fraction;
- perplexity: ``exp`` of the token-weighted mean NLL.

Everything runs batched, under ``torch.no_grad()``, in ``model.eval()``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .batching import batch_starts, evaluation_mode, right_pad
from .canaries import Canary
from .losses import per_sample_loss

__all__ = [
    "ensure_pad_token",
    "greedy_continuations",
    "canary_extraction",
    "secret_log_perplexities",
    "exposure",
    "contamination_recall",
    "perplexity",
]

logger = logging.getLogger(__name__)


def ensure_pad_token(tokenizer) -> Any:
    """Use the end-of-text token for padding when the tokenizer has no pad token (and say so)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad token nor an eos token to pad with; set one")
        logger.warning("the tokenizer has no pad token; padding with its eos token %r", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _context_size(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _batch_losses(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    device = _device(model)
    logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
    return per_sample_loss(logits, batch["labels"].to(device), return_counts=True)


def greedy_continuations(
    model,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad_token_id: int,
    batch_size: int = 32,
    progress: bool = False,
    names: Sequence[str] | None = None,
) -> list[list[int]]:
    """Greedy continuation of each token prompt, ``max_new_tokens`` long, batched with left padding."""
    context = _context_size(model)
    if context is not None:
        too_long = [i for i, p in enumerate(prompts) if len(p) + max_new_tokens > context]
        if too_long:
            label = [names[i] for i in too_long[:5]] if names else too_long[:5]
            raise ValueError(
                f"{len(too_long)} prompts plus {max_new_tokens} new tokens exceed the model context of {context} "
                f"tokens; first: {label}"
            )
    out: list[list[int]] = []
    with evaluation_mode(model):
        for start in batch_starts(len(prompts), batch_size, progress=progress, desc="Greedy decoding"):
            batch = prompts[start : start + batch_size]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, p in enumerate(batch):
                ids[i, width - len(p) :] = torch.as_tensor(p, dtype=torch.long)
                mask[i, width - len(p) :] = 1
            generated = model.generate(
                input_ids=ids.to(_device(model)),
                attention_mask=mask.to(_device(model)),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                pad_token_id=pad_token_id,
            )
            out.extend(row[width:].tolist() for row in generated.cpu())
    return out


def _split_canary(tokenizer, canary: Canary) -> tuple[list[int], list[int]]:
    prefix = tokenizer(canary.prefix)["input_ids"]
    full = tokenizer(canary.text)["input_ids"]
    if full[: len(prefix)] != prefix:
        raise ValueError(f"canary {canary.canary_id}: its prefix tokenizes differently inside the full text")
    return prefix, full[len(prefix) :]


def canary_extraction(
    model, tokenizer, canaries: Sequence[Canary], *, batch_size: int = 32, progress: bool = False
) -> dict[str, Any]:
    """Greedy extraction of every canary's secret from its prefix.

    Returns per-canary rows (`canary_id`, `repetitions`, `extracted`, `matched_tokens`) and the
    success rate overall and per repetition count.
    """
    if not canaries:
        raise ValueError("no canaries to evaluate")
    ensure_pad_token(tokenizer)
    splits = [_split_canary(tokenizer, c) for c in canaries]
    rows = []
    # Secrets of one length are decoded together: generate() needs one max_new_tokens per call.
    for length in sorted({len(secret) for _, secret in splits}):
        chosen = [i for i, (_, secret) in enumerate(splits) if len(secret) == length]
        continuations = greedy_continuations(
            model,
            [splits[i][0] for i in chosen],
            length,
            pad_token_id=tokenizer.pad_token_id,
            batch_size=batch_size,
            progress=progress,
            names=[f"canary {canaries[i].canary_id}" for i in chosen],
        )
        for i, generated in zip(chosen, continuations, strict=True):
            secret = splits[i][1]
            matched = next((j for j, (a, b) in enumerate(zip(generated, secret, strict=True)) if a != b), length)
            rows.append(
                {
                    "canary_id": canaries[i].canary_id,
                    "repetitions": canaries[i].repetitions,
                    "extracted": generated == secret,
                    "matched_tokens": matched,
                    "secret_tokens": length,
                }
            )
    rows.sort(key=lambda r: r["canary_id"])
    by_reps: dict[int, list[bool]] = {}
    for row in rows:
        by_reps.setdefault(row["repetitions"], []).append(row["extracted"])
    return {
        "success_rate": float(np.mean([r["extracted"] for r in rows])),
        "num_extracted": int(sum(r["extracted"] for r in rows)),
        "num_canaries": len(rows),
        "success_rate_by_repetitions": {str(k): float(np.mean(v)) for k, v in sorted(by_reps.items())},
        "canaries": rows,
    }


def secret_log_perplexities(
    model, tokenizer, prefix: str, secrets: Sequence[str], *, batch_size: int = 512, progress: bool = False
) -> np.ndarray:
    """``-log P(secret | prefix)`` in nats, summed over the secret's tokens, for every candidate."""
    prefix_ids = tokenizer(prefix)["input_ids"]
    encoded = tokenizer([f"{prefix} {s}" for s in secrets])["input_ids"]
    out = np.empty(len(secrets), dtype=np.float64)
    desc = f"Scoring {len(secrets):,} candidate secrets"
    with evaluation_mode(model):
        for start in batch_starts(len(encoded), batch_size, progress=progress, desc=desc):
            batch = right_pad(encoded[start : start + batch_size])
            batch["labels"][:, : len(prefix_ids)] = -100  # only the secret's tokens are scored
            losses, counts = _batch_losses(model, batch)
            out[start : start + len(losses)] = (losses * counts).double().cpu().numpy()
    return out


def _random_secrets(canary: Canary, count: int, rng: np.random.Generator) -> list[str]:
    from .canaries import _secret

    length = len(canary.secret) if canary.secret_format == "digits" else len(canary.secret.split())
    return [_secret(rng, canary.secret_format, length) for _ in range(count)]


def exposure(
    model,
    tokenizer,
    canary: Canary,
    *,
    max_exact: int = 1_000_000,
    sample_size: int = 20_000,
    batch_size: int = 512,
    seed: int = 0,
) -> dict[str, Any]:
    """Exposure of one canary: exact rank when the secret space has at most ``max_exact`` members.

    The exact rank is ``1 +`` the number of other candidates with a strictly lower
    log-perplexity (ties in the secret's favour). Larger spaces use the skew-normal
    approximation of the log-perplexity distribution fitted to ``sample_size`` random candidates.
    """
    if canary.secret_format == "digits":
        space = 10 ** len(canary.secret)
    elif canary.secret_format == "words":
        from .canaries import _WORDS

        space = len(_WORDS) ** len(canary.secret.split())
    else:
        space = 26 ** (3 * len(canary.secret.split()))
    if canary.secret_format == "digits" and space <= max_exact:
        width = len(canary.secret)
        candidates = [f"{i:0{width}d}" for i in range(space)]
        scores = secret_log_perplexities(
            model, tokenizer, canary.prefix, candidates, batch_size=batch_size, progress=space > 10_000
        )
        own = int(canary.secret)  # candidates are enumerated in numeric order
        true = float(scores[own])
        rank = 1 + int((np.delete(scores, own) < true).sum())
        return {
            "canary_id": canary.canary_id,
            "method": "exact",
            "space_size": space,
            "rank": rank,
            "log_perplexity": true,
            "exposure": math.log2(space) - math.log2(rank),
        }
    true = float(secret_log_perplexities(model, tokenizer, canary.prefix, [canary.secret])[0])
    from scipy.stats import skewnorm

    rng = np.random.default_rng(seed)
    sample = secret_log_perplexities(
        model, tokenizer, canary.prefix, _random_secrets(canary, sample_size, rng), batch_size=batch_size
    )
    params = skewnorm.fit(sample)
    cdf = float(skewnorm.cdf(true, *params))
    cdf = max(cdf, 1.0 / space)  # the rank is at least 1
    return {
        "canary_id": canary.canary_id,
        "method": "skewnorm",
        "space_size": space,
        "rank": cdf * space,
        "log_perplexity": true,
        "exposure": -math.log2(cdf),
        "sample_size": sample_size,
    }


def contamination_recall(
    model,
    sequences: Sequence[Sequence[int]],
    *,
    k: int = 32,
    pad_token_id: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """k-extractability of each token sequence: greedy decoding of its first ``k`` tokens must
    reproduce its next ``k`` tokens exactly. Reports recall and the mean matched length."""
    if not sequences:
        raise ValueError("no sequences to test for contamination")
    short = [i for i, s in enumerate(sequences) if len(s) < 2 * k]
    if short:
        raise ValueError(f"{len(short)} sequences are shorter than 2k = {2 * k} tokens; first: {short[:5]}")
    prompts = [list(s[:k]) for s in sequences]
    targets = [list(s[k : 2 * k]) for s in sequences]
    generated = greedy_continuations(
        model, prompts, k, pad_token_id=pad_token_id, batch_size=batch_size, progress=progress
    )
    matched = [
        next((j for j, (a, b) in enumerate(zip(g, t, strict=True)) if a != b), k)
        for g, t in zip(generated, targets, strict=True)
    ]
    extractable = [m == k for m in matched]
    return {
        "k": k,
        "recall": float(np.mean(extractable)),
        "num_extractable": int(sum(extractable)),
        "num_sequences": len(sequences),
        "mean_matched_tokens": float(np.mean(matched)),
        "extractable": extractable,
    }


def perplexity(model, sequences: Sequence[Sequence[int]], *, batch_size: int = 32, pad_token_id: int = 0) -> dict:
    """Token-weighted perplexity over token sequences: ``exp(sum NLL / number of targets)``."""
    if not sequences:
        raise ValueError("no sequences to compute perplexity on")
    total, count = 0.0, 0
    with evaluation_mode(model):
        for start in batch_starts(len(sequences), batch_size):
            losses, counts = _batch_losses(model, right_pad(sequences[start : start + batch_size], pad_token_id))
            keep = counts > 0
            total += float((losses[keep] * counts[keep]).double().sum())
            count += int(counts.sum())
    if count == 0:
        raise ValueError("the sequences hold no target token (each needs at least 2 tokens)")
    return {"perplexity": math.exp(total / count), "mean_nll": total / count, "num_tokens": count}
