"""Membership inference: per-sample signals from a causal LM, and how well they separate members.

Members are training samples, non-members held-out samples of the same distribution and length.
Every signal is oriented so that a **higher score means "more likely a member"**:

- ``loss``: minus the mean token NLL (members are fitted better);
- ``zlib``: minus the NLL summed over the sample divided by its zlib-compressed size in bits
  (Carlini et al. 2021: calibrates away text that is simply easy);
- ``min_k``: mean of the ``k`` fraction lowest token log-probabilities (Shi et al. 2024);
- ``min_k_plus_plus``: the same over token log-probabilities standardised by the mean and
  standard deviation of the log-probability under the model's own next-token distribution
  (Zhang et al. 2024);
- ``reference``: the reference model's mean NLL minus the target's (any second model, e.g. the
  burn-in checkpoint).

Metrics: ROC AUC (the Mann-Whitney statistic, ties counted half), TPR at a fixed FPR (the best
threshold whose false-positive rate does not exceed it), and percentile bootstrap intervals that
resample members and non-members separately.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from hf_carto.core.batching import evaluation_mode, map_batches, right_pad

__all__ = [
    "SIGNALS",
    "roc_auc",
    "tpr_at_fpr",
    "roc_curve",
    "bootstrap_interval",
    "MembershipResult",
    "membership_metrics",
    "token_statistics",
    "membership_signals",
    "plot_roc",
]

SIGNALS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")


def _check_scores(members: np.ndarray, non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(members, dtype=np.float64).ravel()
    b = np.asarray(non_members, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError(f"membership metrics need members and non-members; got {a.size} and {b.size}")
    for name, arr in (("member", a), ("non-member", b)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{bad.size} {name} scores are not finite; first positions: {bad[:5].tolist()}")
    return a, b


def roc_auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(score of a random member > score of a random non-member), ties counted 1/2.

    Example:
        >>> roc_auc(np.array([3.0, 2.0]), np.array([1.0, 2.0]))
        0.875
    """
    a, b = _check_scores(members, non_members)
    ranks = rankdata(np.concatenate([a, b]))  # average ranks: a tie contributes one half
    return float((ranks[: a.size].sum() - a.size * (a.size + 1) / 2) / (a.size * b.size))


def tpr_at_fpr(members: np.ndarray, non_members: np.ndarray, fpr: float) -> float:
    """Best true-positive rate of a rule ``score >= c`` whose false-positive rate is at most ``fpr``.

    With ``k = floor(fpr * #non-members)`` false positives allowed, ``c`` lies just above the
    ``(k + 1)``-th largest non-member score; ties there cannot be split, so they count as negatives.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1]; got {fpr}")
    a, b = _check_scores(members, non_members)
    allowed = int(math.floor(fpr * b.size + 1e-12))
    if allowed >= b.size:
        return 1.0
    threshold = np.sort(b)[::-1][allowed]
    return float((a > threshold).mean())


def roc_curve(members: np.ndarray, non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates of every rule ``score >= c``, from (0, 0) to (1, 1)."""
    a, b = _check_scores(members, non_members)
    scores = np.concatenate([a, b])
    labels = np.concatenate([np.ones(a.size), np.zeros(b.size)])
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_value = np.r_[scores[1:] != scores[:-1], True]
    tp = np.cumsum(labels)[last_of_value]
    fp = np.cumsum(1 - labels)[last_of_value]
    return np.r_[0.0, fp / b.size], np.r_[0.0, tp / a.size]


def bootstrap_interval(
    members: np.ndarray,
    non_members: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    num_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric``, members and non-members resampled separately."""
    a, b = _check_scores(members, non_members)
    rng = np.random.default_rng(seed)
    values = [
        metric(a[rng.integers(0, a.size, a.size)], b[rng.integers(0, b.size, b.size)]) for _ in range(num_resamples)
    ]
    tail = (1.0 - level) / 2.0
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


@dataclass
class MembershipResult:
    """Attack quality of one signal."""

    signal: str
    auc: float
    auc_interval: tuple[float, float]
    tpr_at_1pct_fpr: float
    tpr_at_1pct_interval: tuple[float, float]
    tpr_at_01pct_fpr: float
    num_members: int
    num_non_members: int
    roc: tuple[np.ndarray, np.ndarray] = field(repr=False, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "auc": self.auc,
            "auc_95ci": list(self.auc_interval),
            "tpr@1%fpr": self.tpr_at_1pct_fpr,
            "tpr@1%fpr_95ci": list(self.tpr_at_1pct_interval),
            "tpr@0.1%fpr": self.tpr_at_01pct_fpr,
            "num_members": self.num_members,
            "num_non_members": self.num_non_members,
        }


def membership_metrics(
    signal: str, members: np.ndarray, non_members: np.ndarray, *, num_resamples: int = 1000, seed: int = 0
) -> MembershipResult:
    """AUC, TPR at 1% and 0.1% FPR with bootstrap intervals, and the ROC curve of one signal.

    TPR at 0.1% FPR needs at least 1,000 non-members to mean anything; below that it is the TPR
    at zero false positives.
    """
    a, b = _check_scores(members, non_members)
    return MembershipResult(
        signal=signal,
        auc=roc_auc(a, b),
        auc_interval=bootstrap_interval(a, b, roc_auc, num_resamples=num_resamples, seed=seed),
        tpr_at_1pct_fpr=tpr_at_fpr(a, b, 0.01),
        tpr_at_1pct_interval=bootstrap_interval(
            a, b, lambda x, y: tpr_at_fpr(x, y, 0.01), num_resamples=num_resamples, seed=seed
        ),
        tpr_at_01pct_fpr=tpr_at_fpr(a, b, 0.001),
        num_members=int(a.size),
        num_non_members=int(b.size),
        roc=roc_curve(a, b),
    )


@torch.no_grad()
def token_statistics(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """Per-position statistics of a right-padded batch, for positions that predict a real token.

    Returns ``logp`` (log-probability of the actual next token), ``mu`` and ``sigma`` (mean and
    standard deviation of the log-probability under the model's next-token distribution) and
    ``mask``, each of shape ``(B, L - 1)``.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return statistics_from_logits(logits, input_ids, attention_mask)


def statistics_from_logits(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """:func:`token_statistics` from a forward pass's ``(B, L, V)`` logits, for callers that need the
    logits for something else too."""
    logits = logits[:, :-1]
    targets = input_ids[:, 1:]
    logp, mu, sigma = (torch.empty(targets.shape, dtype=torch.float32, device=logits.device) for _ in range(3))
    # A few rows at a time: the (rows, L, V) temporaries then stay small enough for the cache,
    # which makes a large batch as fast per token as a small one.
    for start in range(0, logits.shape[0], 4):
        rows = slice(start, start + 4)
        log_probs = torch.log_softmax(logits[rows].float(), dim=-1)
        logp[rows] = log_probs.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1)
        weighted = log_probs.exp().mul_(log_probs)  # p * log p
        mu[rows] = weighted.sum(-1)
        second = weighted.mul_(log_probs).sum(-1)  # sum p * (log p)^2
        sigma[rows] = (second - mu[rows].square()).clamp_min(1e-12).sqrt()
    mask = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    return {"logp": logp, "mu": mu, "sigma": sigma, "mask": mask}


def lowest_fraction_mean(values: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per row: mean of the ``ceil(fraction * n)`` smallest masked values."""
    filled = values.masked_fill(~mask, float("inf"))
    ordered = filled.sort(dim=1).values
    counts = mask.sum(dim=1)
    take = torch.clamp(torch.ceil(fraction * counts.float()).long(), min=1)
    keep = torch.arange(values.shape[1], device=values.device)[None, :] < take[:, None]
    return torch.where(keep, ordered, torch.zeros_like(ordered)).sum(dim=1) / take


def _row_signals(model, batch_ids: Sequence[Sequence[int]], pad_id: int, k: float) -> dict[str, np.ndarray]:
    batch = right_pad(batch_ids, pad_id)
    device = next(model.parameters()).device
    stats = token_statistics(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
    m = stats["mask"]
    n = m.sum(dim=1).clamp_min(1)
    nll_sum = -(stats["logp"] * m).sum(dim=1)
    z = (stats["logp"] - stats["mu"]) / stats["sigma"]
    return {
        "nll_mean": (nll_sum / n).cpu().numpy(),
        "nll_sum": nll_sum.cpu().numpy(),
        "min_k": lowest_fraction_mean(stats["logp"], m, k).cpu().numpy(),
        "min_k_plus_plus": lowest_fraction_mean(z, m, k).cpu().numpy(),
    }


def membership_signals(
    model: torch.nn.Module,
    sequences: Sequence[Sequence[int]],
    *,
    texts: Sequence[str] | None = None,
    reference_model: torch.nn.Module | None = None,
    pad_token_id: int = 0,
    k: float = 0.2,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Every signal for every token sequence, batched (higher = more likely a member).

    Args:
        sequences: token ids of each sample (at least 2 tokens each).
        texts: the samples' text for the zlib signal (the decoded tokens otherwise are not known here);
            without it, the zlib signal uses the token ids' bytes.
        reference_model: second model for the `reference` signal (omitted when `None`).
        k (`float`, *optional*, defaults to `0.2`): fraction of tokens for min-k% and min-k%++.
    """
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k must be a fraction in (0, 1]; got {k}")
    short = [i for i, s in enumerate(sequences) if len(s) < 2]
    if short:
        raise ValueError(
            f"{len(short)} sequences have fewer than 2 tokens (no prediction to score); first: {short[:5]}"
        )
    if texts is not None and len(texts) != len(sequences):
        raise ValueError(f"got {len(texts)} texts for {len(sequences)} sequences")
    if not sequences:
        raise ValueError("no sequences to score")
    starts = list(range(0, len(sequences), batch_size))

    def signals(index: int) -> dict[str, np.ndarray]:
        batch = sequences[starts[index] : starts[index] + batch_size]
        values = _row_signals(model, batch, pad_token_id, k)
        if reference_model is not None:
            values["ref_nll_mean"] = _row_signals(reference_model, batch, pad_token_id, k)["nll_mean"]
        return values

    with evaluation_mode(model, reference_model):
        parts = map_batches(len(starts), signals, progress=progress, desc="Membership signals")
    cols = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    if texts is not None:
        sizes = np.array([len(zlib.compress(t.encode("utf-8"))) * 8 for t in texts], dtype=np.float64)
    else:
        sizes = np.array(
            [len(zlib.compress(np.asarray(s, dtype=np.int32).tobytes())) * 8 for s in sequences], dtype=np.float64
        )
    out = {
        "loss": -cols["nll_mean"],
        "zlib": -cols["nll_sum"] / sizes,
        "min_k": cols["min_k"],
        "min_k_plus_plus": cols["min_k_plus_plus"],
    }
    if reference_model is not None:
        out["reference"] = cols["ref_nll_mean"] - cols["nll_mean"]
    return out


def plot_roc(results: Sequence[MembershipResult], path, title: str = "Membership inference ROC"):
    """Log-log ROC curves of several signals, the chance line, and the AUCs in the legend."""
    from hf_carto.core.plots import new_figure, save_figure

    fig, ax = new_figure((5.5, 5))
    floor = 1e-4
    for result in results:
        fpr, tpr = result.roc
        ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=f"{result.signal} (AUC {result.auc:.3f})")
    ax.plot([floor, 1], [floor, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)
