"""Leakage measurements on a causal LM: canary extraction, exposure, contamination, perplexity.

- extraction: plain greedy decoding from a canary's prefix, end-of-text allowed as an attacker
  would decode, reproduces the secret's characters exactly and then stops or goes on with a
  character that cannot lengthen the secret;
- exposure (Carlini et al., The Secret Sharer): ``log2 |R| - log2 rank`` of the secret's
  log-perplexity among all candidate secrets. Exact when the space can be enumerated (the prefix
  runs once and every candidate reuses its key/value cache), else from a skew-normal fitted to a
  sample of candidates (``exposure = -log2 CDF(secret)``) with a bootstrap 95% interval;
- contamination: a sequence is k-extractable when greedy decoding of its first ``k`` tokens
  reproduces its next ``k`` tokens exactly; recall is the extractable fraction;
- perplexity: ``exp`` of the token-weighted mean NLL.

Everything runs batched, under ``torch.no_grad()``, in ``model.eval()``. Results never hold a
secret or a decoded continuation: reports built from them are published.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import logging
import math
import os
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hf_carto.core.batching import batch_starts, evaluation_mode, map_batches, right_pad
from hf_carto.data.canaries import Canary
from hf_carto.record.losses import per_sample_loss

__all__ = [
    "ensure_pad_token",
    "greedy_continuations",
    "canary_extraction",
    "score_extraction",
    "secret_log_perplexities",
    "cached_secret_log_perplexities",
    "exposure",
    "exposure_rank",
    "contamination_recall",
    "perplexity",
]

logger = logging.getLogger(__name__)

# Tokens decoded past a secret's own: enough to see whether the model stops after the secret or
# runs on into a longer one ("1234" then "5" is not the secret "1234").
_BOUNDARY_TOKENS = 2
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


def _check_context(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, names) -> None:
    """Refuse prompts the model cannot continue by ``max_new_tokens`` inside its context, by name."""
    context = _context_size(model)
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
            input_ids=ids.to(_device(model)),
            attention_mask=mask.to(_device(model)),
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
            losses, counts = _batch_losses(model, batch)
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
    output = model(input_ids=torch.tensor([prefix_ids], device=_device(model)), use_cache=True)
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
    inputs = right_pad(contexts)["input_ids"].to(_device(model))
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
    context = _context_size(model)
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
        from hf_carto.data.canaries import SECRET_WORDS

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
    from hf_carto.data.canaries import draw_secret

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


def perplexity(model, sequences: Sequence[Sequence[int]], *, batch_size: int = 32, pad_token_id: int = 0) -> dict:
    """Token-weighted perplexity over token sequences: ``exp(sum NLL / number of targets)``."""
    if not sequences:
        raise ValueError("no sequences to compute perplexity on")
    starts = list(range(0, len(sequences), batch_size))

    def batch_totals(index: int) -> tuple[float, int]:
        start = starts[index]
        losses, counts = _batch_losses(model, right_pad(sequences[start : start + batch_size], pad_token_id))
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
