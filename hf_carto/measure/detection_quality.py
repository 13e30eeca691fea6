"""How well a detector finds the planted material: precision, recall and average precision.

A detector's *ranking* is its score in descending order, equal scores by ascending sample_id: the
order in which :func:`hf_carto.score.detectors.top_budget` cuts a budget, so the precision at budget
``k`` here is exactly the precision of the arm that prunes those ``k`` samples. Average precision
(AP) is taken over that whole ranking: the mean, over the positives, of the precision at each
positive's rank. A random ranking's AP is about the base rate (the share of positives).

The planted truth comes from the data (see :mod:`hf_carto.core.columns`): ``truth`` says which blocks
hold canary or contaminating tokens, ``carto_canary_id`` which blocks hold a whole canary copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hf_carto.core.columns import CANARY_ID, PLANTED_NAMES, SAMPLE_ID, TRUTH, read_columns, score_columns
from hf_carto.core.eps import check_loss_matrix
from hf_carto.core.kernel import burn_in_difficulty, forget_event_counts, memorization_rate
from hf_carto.score.detectors import decided_by_tie_break, memorization_score
from hf_carto.score.scores import check_burn_in, select_top_memorized

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = [
    "TARGETS",
    "ranking",
    "average_precision",
    "precision_recall_curve",
    "precision_recall_at",
    "planted_targets",
    "detection_quality",
    "dataset_detection_quality",
    "memorization_tie_breaks",
    "memorization_sensitivity",
]

#: What a detector is asked to find, with the sentence a report prints for it.
TARGETS = {
    "planted": "blocks holding canary or contaminating tokens",
    "whole_canary": "blocks holding a whole canary copy",
}
#: Planted kinds that make a block a positive of the ``planted`` target.
PLANTED_KINDS = ("canary", "contaminated")


def _check_pair(scores: np.ndarray, positives: np.ndarray, sample_ids: np.ndarray | None):
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(positives)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array; got shape {s.shape}")
    if p.shape != s.shape:
        raise ValueError(f"positives must have the shape of scores {s.shape}; got {p.shape}")
    if p.dtype != bool:
        if not np.isin(p, (0, 1)).all():
            raise ValueError("positives must be a boolean mask (or 0/1)")
        p = p.astype(bool)
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise ValueError(f"scores has {bad.size} non-finite values; first rows {bad[:5].tolist()}")
    if sample_ids is not None and np.shape(sample_ids) != s.shape:
        raise ValueError(f"sample_ids must have the shape of scores {s.shape}; got {np.shape(sample_ids)}")
    return s, p


def ranking(scores: np.ndarray, sample_ids: np.ndarray | None = None) -> np.ndarray:
    """Row indices by descending score, equal scores by ascending sample_id (row index without ids)."""
    s = np.asarray(scores, dtype=np.float64)
    ids = np.arange(s.size) if sample_ids is None else np.asarray(sample_ids)
    return np.lexsort((ids, -s))  # lexsort: the last key is the primary one


def _hits(scores, positives, sample_ids) -> tuple[np.ndarray, int]:
    s, p = _check_pair(scores, positives, sample_ids)
    return p[ranking(s, sample_ids)], int(p.sum())


def average_precision(scores: np.ndarray, positives: np.ndarray, *, sample_ids: np.ndarray | None = None) -> float:
    """Average precision of the ranking over all ``N`` samples; `nan` when there is no positive.

    Example:
        >>> average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]))
        0.8333333333333333
    """
    hits, total = _hits(scores, positives, sample_ids)
    if total == 0:
        return math.nan
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / total)


def precision_recall_curve(
    scores: np.ndarray, positives: np.ndarray, *, sample_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of the top ``k`` for every ``k = 1..N`` (recall is `nan` without positives)."""
    hits, total = _hits(scores, positives, sample_ids)
    found = np.cumsum(hits)
    recall = found / total if total else np.full(hits.size, np.nan)
    return found / np.arange(1, hits.size + 1), recall


def budget_size(fraction: float, num_samples: int) -> int:
    """``floor(fraction * N + 0.5)``: the number of samples a budget ``fraction`` cuts."""
    if not 0.0 <= float(fraction) <= 1.0:
        raise ValueError(f"budget fractions must be in [0, 1]; got {fraction!r}")
    return int(math.floor(float(fraction) * num_samples + 0.5))


def precision_recall_at(
    scores: np.ndarray, positives: np.ndarray, fractions: Sequence[float], *, sample_ids: np.ndarray | None = None
) -> list[dict]:
    """For each budget ``fraction``: the cut's size ``k``, the positives in it, precision and recall."""
    hits, total = _hits(scores, positives, sample_ids)
    found = np.concatenate([[0], np.cumsum(hits)])
    rows = []
    for fraction in fractions:
        k = budget_size(fraction, hits.size)
        rows.append(
            {
                "fraction": float(fraction),
                "num_selected": k,
                "num_found": int(found[k]),
                "precision": float(found[k] / k) if k else math.nan,
                "recall": float(found[k] / total) if total else math.nan,
            }
        )
    return rows


def planted_targets(truth: np.ndarray, canary_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The masks of :data:`TARGETS` from the ``truth`` and ``carto_canary_id`` columns."""
    truth = np.asarray(truth)
    canary_ids = np.asarray(canary_ids)
    if truth.ndim != 1 or truth.shape != canary_ids.shape:
        raise ValueError(f"truth and canary ids must be 1-D of equal length; got {truth.shape} and {canary_ids.shape}")
    kinds = [PLANTED_NAMES.index(k) for k in PLANTED_KINDS]
    return {"planted": np.isin(truth, kinds), "whole_canary": canary_ids >= 0}


def detection_quality(
    scores: dict[str, np.ndarray],
    targets: dict[str, np.ndarray],
    fractions: Sequence[float],
    *,
    sample_ids: np.ndarray | None = None,
) -> dict[str, dict]:
    """Per target: its number of positives and base rate, and per detector the AP over the whole
    ranking and the precision and recall at each budget fraction."""
    out = {}
    for target, positives in targets.items():
        positives = np.asarray(positives, dtype=bool)
        entry = {
            "num_positive": int(positives.sum()),
            "num_samples": int(positives.size),
            "base_rate": float(positives.mean()) if positives.size else math.nan,
            "detectors": {},
        }
        for name, s in scores.items():
            entry["detectors"][name] = {
                "average_precision": average_precision(s, positives, sample_ids=sample_ids),
                "at_budget": precision_recall_at(s, positives, fractions, sample_ids=sample_ids),
            }
        out[target] = entry
    return out


def dataset_detection_quality(dataset: Dataset, fractions: Sequence[float]) -> dict[str, dict]:
    """:func:`detection_quality` of every ``carto_score_<name>`` column of ``dataset`` against the
    planted truth of its ``truth`` and ``carto_canary_id`` columns (ties by ``sample_id``)."""
    columns = score_columns(dataset.column_names)
    if not columns:
        raise ValueError("the dataset has no carto_score_<detector> columns; add them with add_detector_scores")
    missing = [c for c in (TRUTH, CANARY_ID, SAMPLE_ID) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"detection quality needs the planted truth; the dataset lacks columns {missing}")
    cols = read_columns(dataset, [TRUTH, CANARY_ID, SAMPLE_ID, *columns.values()])
    scores = {name: cols[column] for name, column in columns.items()}
    targets = planted_targets(cols[TRUTH], cols[CANARY_ID])
    return detection_quality(scores, targets, fractions, sample_ids=cols[SAMPLE_ID])


def memorization_tie_breaks(
    losses: np.ndarray,
    fractions: Sequence[float],
    *,
    eps: float,
    burn_in: int,
    sample_ids: np.ndarray | None = None,
) -> list[dict]:
    """How much of each top-``fraction`` cut by memorization ``m`` the paper's difficulty
    tie-break decided: the cut's size, the ``m`` at the cut, the samples sharing it, and how many
    of the cut were chosen among them by difficulty (the cut :func:`hf_carto.select_top_memorized`
    makes, which is also the top of the ``memorization`` detector's ranking)."""
    arr = check_loss_matrix(losses, min_snapshots=2)
    burn_in = check_burn_in(burn_in, arr.shape[1])
    if not math.isfinite(float(eps)):
        raise ValueError(f"eps must be a finite number (the resolved forget threshold); got {eps!r}")
    m = memorization_rate(forget_event_counts(arr, float(eps)), arr.shape[1])
    d = burn_in_difficulty(arr, burn_in)
    rows = []
    for fraction in fractions:
        cut = select_top_memorized(m, fraction, difficulty=d, sample_ids=sample_ids)
        decided = decided_by_tie_break(cut)
        rows.append(
            {
                "fraction": float(fraction),
                "num_selected": cut.n_selected,
                "cut_value": cut.cut_value,
                "tied_at_cut": cut.n_tied_at_cut,
                "decided_by_tie_break": decided,
                "tie_break_share": decided / cut.n_selected if cut.n_selected else math.nan,
            }
        )
    return rows


def _subsampled(num_snapshots: int, snapshots_per_epoch: int, step: int) -> np.ndarray:
    # Every step-th snapshot of each epoch, counted from the epoch's start, so the epoch's last
    # snapshot (the one a single-snapshot run takes) is always kept.
    return np.flatnonzero((np.arange(num_snapshots) % snapshots_per_epoch + 1) % step == 0)


def memorization_sensitivity(
    losses: np.ndarray,
    positives: np.ndarray,
    *,
    burn_in: int,
    snapshots_per_epoch: int,
    quantiles: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3),
    sample_ids: np.ndarray | None = None,
) -> list[dict]:
    """Forget events and memorization's AP as ``eps`` and the snapshot density change.

    For every divisor ``step`` of ``snapshots_per_epoch`` the matrix keeps every ``step``-th snapshot
    of each epoch (``snapshots_per_epoch / step`` per epoch, each epoch's last one always kept, the
    burn-in shortened to the snapshots it keeps), and for every ``q`` in ``quantiles`` the threshold
    is ``eps = quantile:q`` of that matrix's losses. Each row gives the samples with at least one
    forget event, the events in all, and the AP of memorization with its difficulty tie-break (the
    ``memorization`` detector) and of ``m`` alone (ties by sample_id) against ``positives``.

    Args:
        losses (`np.ndarray` of shape `(N, T)`): ``T = epochs * snapshots_per_epoch`` snapshots.
        positives (`np.ndarray` of shape `(N,)`): the planted samples to find.
        burn_in (`int`): ``T_e`` in snapshots of the full matrix.
    """
    arr = check_loss_matrix(losses, min_snapshots=2)
    n, t = arr.shape
    burn_in = check_burn_in(burn_in, t)
    if snapshots_per_epoch < 1 or t % snapshots_per_epoch:
        raise ValueError(f"T = {t} snapshots is not a whole number of epochs of {snapshots_per_epoch} snapshots")
    for q in quantiles:
        if not 0.0 <= float(q) <= 1.0:
            raise ValueError(f"eps quantiles must be in [0, 1]; got {q!r}")
    rows = []
    for step in (s for s in range(1, snapshots_per_epoch + 1) if snapshots_per_epoch % s == 0):
        kept = _subsampled(t, snapshots_per_epoch, step)
        sub = arr[:, kept]
        if sub.shape[1] < 2:
            continue
        sub_burn_in = min(max(1, int(np.sum(kept < burn_in))), sub.shape[1] - 1)
        for q in quantiles:
            eps = float(np.quantile(sub, q))
            events = forget_event_counts(sub, eps)
            rows.append(
                {
                    "snapshots_per_epoch": snapshots_per_epoch // step,
                    "num_snapshots": int(sub.shape[1]),
                    "burn_in": sub_burn_in,
                    "quantile": float(q),
                    "eps": eps,
                    "num_with_forget_events": int((events > 0).sum()),
                    "num_forget_events": int(events.sum()),
                    "average_precision": average_precision(
                        memorization_score(sub, eps=eps, burn_in=sub_burn_in), positives, sample_ids=sample_ids
                    ),
                    "average_precision_m_alone": average_precision(events, positives, sample_ids=sample_ids),
                }
            )
    return rows
