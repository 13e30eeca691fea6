"""Exposure (Carlini et al., The Secret Sharer): ``log2 |R| - log2 rank`` of a canary secret's
log-perplexity among all candidate secrets.

Exact when the space can be enumerated (the prefix runs once and every candidate reuses its
key/value cache), else from a skew-normal fitted to a sample of candidates
(``exposure = -log2 CDF(secret)``) with a bootstrap 95% interval. Everything runs batched, under
``torch.no_grad()``, in ``model.eval()``; results never hold a secret.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import logging
import math
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hf_carto.core.batching import batch_starts, evaluation_mode, right_pad
from hf_carto.data.canaries import SECRET_WORDS, Canary, draw_secret
from hf_carto.measure.causal_lm import batch_losses, context_size, model_device

__all__ = ["secret_log_perplexities", "cached_secret_log_perplexities", "exposure", "exposure_rank"]

logger = logging.getLogger(__name__)

# Candidates whose log-perplexity is within this many nats of the secret's tie with it (float32
# scores of equal candidates can differ in the last bits); ties count against the secret.
_TIE_TOLERANCE = 1e-6


def exposure_rank(scores: np.ndarray, own: int, tolerance: float = _TIE_TOLERANCE) -> int:
    """The secret's rank among all candidates: ``1 +`` the other candidates whose log-perplexity is
    lower than the secret's or ties with it (within ``tolerance`` nats).

    Ties count against the secret: a candidate the model scores as well as the secret is one the
    model does not tell apart from it, so a model that scores every candidate alike ranks the
    secret last and shows no exposure (0 bits), and exposure never credits the model with a
    preference its scores do not show. On scores without ties this is the rank of tensorflow_privacy's
    interpolation exposure (one plus the references strictly below the secret).

    Example:
        >>> exposure_rank(np.array([2.0, 1.0, 3.0]), own=1), exposure_rank(np.zeros(4), own=0)
        (1, 4)
    """
    scores = np.asarray(scores, dtype=np.float64)
    others = np.delete(scores, own)
    return 1 + int((others <= scores[own] + tolerance).sum())


def secret_log_perplexities(
    model, tokenizer, prefix: str, secrets: Sequence[str], *, batch_size: int = 512, progress: bool = False
) -> np.ndarray:
    """``-log P(secret | prefix)`` in nats, summed over the secret's tokens, for every candidate.

    Each candidate runs as a whole sequence, prefix included: the plain reference that
    :func:`cached_secret_log_perplexities` must agree with.
    """
    prefix_ids = tokenizer(prefix)["input_ids"]
    encoded = tokenizer([f"{prefix} {s}" for s in secrets])["input_ids"]
    out = np.empty(len(secrets), dtype=np.float64)
    desc = f"Scoring {len(secrets):,} candidate secrets"
    with evaluation_mode(model):
        for start in batch_starts(len(encoded), batch_size, progress=progress, desc=desc):
            batch = right_pad(encoded[start : start + batch_size])
            batch["labels"][:, : len(prefix_ids)] = -100  # only the secret's tokens are scored
            losses, counts = batch_losses(model, batch)
            out[start : start + len(losses)] = (losses * counts).double().cpu().numpy()
    return out


def _cache_keyword(model) -> str:
    """The forward() keyword of past key/values: ``cache`` in recent transformers, formerly ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prefix_state(model, prefix_ids: list[int]) -> tuple[Any, torch.Tensor]:
    """Run the prefix once: its key/value cache (``None`` from a model that keeps none) and the
    log-distribution of the secret's first token."""
    if not prefix_ids:
        raise ValueError("the prefix has no tokens; cached scoring needs at least one")
    output = model(input_ids=torch.tensor([prefix_ids], device=model_device(model)), use_cache=True)
    cache = getattr(output, "cache", None)
    cache = cache if cache is not None else getattr(output, "past_key_values", None)
    return cache, output.logits[0, -1].float().log_softmax(-1)


def _batch_cache(cache, size: int):
    """The prefix cache repeated ``size`` times along the batch, as a copy: forward() appends the
    batch's keys and values to the cache it is given, and the prefix's must serve every batch."""
    if isinstance(cache, tuple):  # per-layer (key, value) tuples of older models
        return tuple(tuple(t.expand(size, *t.shape[1:]) for t in layer) for layer in cache)
    batched = copy.deepcopy(cache)
    batched.batch_repeat_interleave(size)
    return batched


def _secret_token_rows(tokenizer, prefix: str, prefix_ids: list[int], secrets: Sequence[str]) -> list[list[int]]:
    """Each candidate's tokens after the prefix, split from ``tokenizer(f"{prefix} {secret}")`` as the
    full-sequence scoring tokenizes it; the prefix's cache only fits when the text starts with the
    prefix's own tokens."""
    encoded = tokenizer([f"{prefix} {s}" for s in secrets])["input_ids"]
    n = len(prefix_ids)
    bad = [i for i, ids in enumerate(encoded) if ids[:n] != prefix_ids or len(ids) == n]
    if bad:
        raise ValueError(
            f"the prefix {prefix!r} tokenizes differently inside the full text of {len(bad)} candidates, or the "
            "candidate adds no token after it; its key/value cache cannot be shared with them"
        )
    return [ids[n:] for ids in encoded]


def _context_logits(model, cache, contexts: list[tuple[int, ...]], keyword: str) -> tuple[torch.Tensor, ...]:
    """Float32 logits, and their log-normalizers, at every position of each token context fed after
    the prefix cache. Right padding needs no attention mask: causal attention keeps every real token
    from seeing the pads after it, and the pads' outputs are never read."""
    inputs = right_pad(contexts)["input_ids"].to(model_device(model))
    logits = model(input_ids=inputs, use_cache=True, **{keyword: _batch_cache(cache, len(contexts))}).logits.float()
    return logits, logits.logsumexp(dim=-1)


def _score_rows(model, cache, first_logprobs: torch.Tensor, rows: list[list[int]], keyword: str) -> torch.Tensor:
    """``-log P(row | prefix)`` of each token row after the shared prefix cache.

    The first token's log-probability comes from the prefix's last logits. Each later one depends
    only on the tokens before it, so rows that agree on all but their last token (most candidates of
    an enumerated space: "1234" and "1235") share one forward pass: every distinct ``row[:-1]`` runs
    once, and no row's last token is fed.
    """
    device = first_logprobs.device
    nll = -first_logprobs[torch.tensor([r[0] for r in rows], device=device)]
    longer = [i for i, r in enumerate(rows) if len(r) > 1]
    if not longer:
        return nll
    contexts: dict[tuple[int, ...], int] = {}
    which = [contexts.setdefault(tuple(rows[i][:-1]), len(contexts)) for i in longer]
    logits, norms = _context_logits(model, cache, list(contexts), keyword)
    targets = right_pad([rows[i][1:] for i in longer])["labels"].to(device)  # -100 after each row
    which = torch.tensor(which, device=device)[:, None]
    positions = torch.arange(targets.shape[1], device=device)
    picked = logits[which, positions, targets.clamp(min=0)] - norms[which, positions]
    longer = torch.tensor(longer, device=device)
    nll[longer] -= torch.where(targets != -100, picked, 0.0).sum(dim=1)
    return nll


def cached_secret_log_perplexities(
    model, tokenizer, prefix: str, secrets: Sequence[str], *, batch_size: int = 512, progress: bool = False
) -> np.ndarray:
    """``-log P(secret | prefix)`` in nats for every candidate, as :func:`secret_log_perplexities`
    computes it, with the prefix run once.

    Every candidate shares the prefix, so its key/value cache is computed once and each batch feeds
    only the candidates' own tokens (those shared by several candidates once): exact exposure over
    10^6 candidates costs a few tokens each instead of a whole sequence. Candidates may differ in
    token count.
    """
    prefix_ids = tokenizer(prefix)["input_ids"]
    context = context_size(model)
    keyword = _cache_keyword(model)
    out = np.empty(len(secrets), dtype=np.float64)
    desc = f"Scoring {len(secrets):,} candidate secrets"
    with evaluation_mode(model):
        cache, first_logprobs = _prefix_state(model, prefix_ids)
        if cache is None:
            logger.warning("the model returns no key/value cache; scoring every candidate as a whole sequence")
            return secret_log_perplexities(model, tokenizer, prefix, secrets, batch_size=batch_size, progress=progress)
        for start in batch_starts(len(secrets), batch_size, progress=progress, desc=desc):
            rows = _secret_token_rows(tokenizer, prefix, prefix_ids, secrets[start : start + batch_size])
            if context is not None and len(prefix_ids) + max(map(len, rows)) > context:
                raise ValueError(f"prefix and candidate secrets exceed the model context of {context} tokens")
            scores = _score_rows(model, cache, first_logprobs, rows, keyword)
            out[start : start + len(rows)] = scores.double().cpu().numpy()
    return out


def _secret_space(canary: Canary) -> tuple[list[str], Sequence[str], str]:
    """The canary's secret as ``(units, alphabet, separator)``: its format's generator draws every
    unit uniformly from ``alphabet`` and joins them with ``separator``, so the candidate space is
    ``alphabet ** len(units)``."""
    if canary.secret_format == "digits":
        units, alphabet, separator = list(canary.secret), string.digits, ""
    elif canary.secret_format == "words":
        units, alphabet, separator = canary.secret.split(" "), SECRET_WORDS, " "
    elif canary.secret_format == "tokens":
        letters = itertools.product(string.ascii_lowercase, repeat=3)
        units, alphabet, separator = canary.secret.split(" "), ["".join(t) for t in letters], " "
    else:
        raise ValueError(f"canary {canary.canary_id}: unknown secret format {canary.secret_format!r}")
    if not set(units) <= set(alphabet):
        raise ValueError(f"canary {canary.canary_id}: its secret is not in the {canary.secret_format} secret space")
    return units, alphabet, separator


def _random_secrets(canary: Canary, count: int, rng: np.random.Generator) -> list[str]:

    length = len(canary.secret) if canary.secret_format == "digits" else len(canary.secret.split())
    return [draw_secret(rng, canary.secret_format, length) for _ in range(count)]


def _exact_exposure(model, tokenizer, canary: Canary, space: tuple, *, batch_size: int) -> dict[str, Any]:
    """Rank of the secret among every candidate of its ``space`` (from :func:`_secret_space`), all
    scored with the shared prefix cache."""
    units, alphabet, separator = space
    candidates = [separator.join(p) for p in itertools.product(alphabet, repeat=len(units))]
    position = {symbol: i for i, symbol in enumerate(alphabet)}
    own = 0  # candidates are enumerated in the alphabet's order, units as digits of base len(alphabet)
    for unit in units:
        own = own * len(alphabet) + position[unit]
    scores = cached_secret_log_perplexities(
        model, tokenizer, canary.prefix, candidates, batch_size=batch_size, progress=len(candidates) > 10_000
    )
    true = float(scores[own])
    rank = exposure_rank(scores, own)
    return {
        "canary_id": canary.canary_id,
        "method": "exact",
        "space_size": len(candidates),
        "rank": rank,
        "log_perplexity": true,
        "exposure": math.log2(len(candidates)) - math.log2(rank),
    }


def _skewnorm_tail(true: float, params: tuple[float, ...], space: int, sample: np.ndarray) -> float:
    """Fraction of the space at or below the secret's log-perplexity under a fitted skew-normal; at
    least ``1 / space`` (the secret's rank is at least 1), and at least the share of the sampled
    candidates that score as well as the secret or better: ties count against the secret, as in
    the exact rank, so a model that scores every candidate alike shows no exposure."""
    from scipy.stats import skewnorm

    tied_or_better = float(np.mean(sample <= true + _TIE_TOLERANCE))
    return max(float(skewnorm.cdf(true, *params)), tied_or_better, 1.0 / space)


def _estimated_exposure(
    model, tokenizer, canary: Canary, space: int, *, sample_size: int, batch_size: int, seed: int, resamples: int
) -> dict[str, Any]:
    """Exposure from a skew-normal fitted to a random sample of candidates, with a bootstrap 95%
    interval: the fit to one sample moves the far tail, where a memorized secret sits, a lot."""
    from scipy.stats import skewnorm

    rng = np.random.default_rng(seed)
    texts = [canary.secret, *_random_secrets(canary, sample_size, rng)]
    scores = cached_secret_log_perplexities(model, tokenizer, canary.prefix, texts, batch_size=batch_size)
    true, sample = float(scores[0]), scores[1:]
    if np.ptp(sample) <= _TIE_TOLERANCE:  # nothing to fit: the model scores every sampled candidate alike
        tail = max(float(np.mean(sample <= true + _TIE_TOLERANCE)), 1.0 / space)
        interval = [-math.log2(tail)] * 2
    else:
        params = skewnorm.fit(sample)
        tail = _skewnorm_tail(true, params, space, sample)
        # Each resample's fit starts from the full sample's parameters, which keeps the refits fast.
        boot = []
        for _ in range(resamples):
            resample = rng.choice(sample, sample.size)
            refit = skewnorm.fit(resample, params[0], loc=params[1], scale=params[2])
            boot.append(-math.log2(_skewnorm_tail(true, refit, space, resample)))
        interval = [float(v) for v in np.percentile(boot, [2.5, 97.5])]
    return {
        "canary_id": canary.canary_id,
        "method": "skewnorm",
        "space_size": space,
        "rank": tail * space,
        "log_perplexity": true,
        "exposure": -math.log2(tail),
        "sample_size": sample_size,
        "exposure_ci95": interval,
    }


def exposure(
    model,
    tokenizer,
    canary: Canary,
    *,
    max_exact: int = 1_000_000,
    sample_size: int = 20_000,
    batch_size: int = 512,
    seed: int = 0,
    bootstrap_resamples: int = 40,
) -> dict[str, Any]:
    """Exposure of one canary: exact rank when the secret space has at most ``max_exact`` members.

    The exact rank is :func:`exposure_rank`: ``1 +`` the number of other candidates with a lower or
    tied log-perplexity (ties, within a float tolerance, count against the secret, so a model
    that scores every candidate alike has exposure 0); every secret format is enumerated when
    its space fits. Larger spaces use the skew-normal approximation of the log-perplexity
    distribution fitted to ``sample_size`` random candidates, with a bootstrap 95% interval of
    ``bootstrap_resamples`` refits.

    Returns `canary_id`, `method` (``"exact"`` or ``"skewnorm"``), `space_size`, `rank`,
    `log_perplexity` (of the secret, in nats) and `exposure` (bits); estimates also `sample_size`
    and `exposure_ci95`.
    """
    units, alphabet, separator = _secret_space(canary)
    size = len(alphabet) ** len(units)
    if size <= max_exact:
        return _exact_exposure(model, tokenizer, canary, (units, alphabet, separator), batch_size=batch_size)
    return _estimated_exposure(
        model,
        tokenizer,
        canary,
        size,
        sample_size=sample_size,
        batch_size=batch_size,
        seed=seed,
        resamples=bootstrap_resamples,
    )
