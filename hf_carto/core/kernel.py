"""The arithmetic of difficulty and forget events, written once for every scoring path.

The loss-matrix scores (:mod:`hf_carto.score.scores`), the streamed dataset scoring
(:mod:`hf_carto.score.cartography`), the combination of several runs
(:mod:`hf_carto.score.combined_runs`) and the detectors (:mod:`hf_carto.score.detectors`) all
compute ``d`` and ``m`` here, so the same losses give the same bits whichever path read them.

Every function takes the losses in either of the two forms the callers hold, without copying
them into the other:

- an ``(N, T)`` ndarray, one row per sample and one column per snapshot (a 2-D ndarray is always
  read this way);
- a sequence of ``T`` arrays of shape ``(N,)``, one per snapshot in order (the columns a dataset
  batch yields, which may differ in type).

Nothing here checks its input: NaN compares false with every threshold, so a NaN loss is never
fitted and never above ``eps``, and gives a NaN difficulty. Callers refuse non-finite losses first
(or score them on purpose, as ``allow_nonfinite`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "burn_in_difficulty",
    "forget_event_counts",
    "forget_count_dtype",
    "memorization_rate",
    "never_below",
    "difficulty_and_memorization",
]

Losses = np.ndarray | Sequence[np.ndarray]


def _columns(losses: Losses) -> Sequence[np.ndarray]:
    """The per-snapshot columns: views of a matrix's columns, or the sequence as it is."""
    if isinstance(losses, np.ndarray) and losses.ndim == 2:
        return [losses[:, t] for t in range(losses.shape[1])]
    return losses


def burn_in_difficulty(losses: Losses, burn_in: int) -> np.ndarray:
    """``d_i = mean(L[i, :burn_in])`` in float64 (paper, 3.1), unchecked.

    A matrix is reduced in place with numpy's mean. Columns give the same bits: one or two need
    no matrix and are added as numpy's reduction adds them (the first value, plus the sum of the
    others started from 0.0, which is what turns a -0.0 mean into 0.0); more are stacked, only the
    first ``burn_in`` of them, and reduced the same way.

    Returns:
        `np.ndarray` of shape `(N,)`, float64.
    """
    if isinstance(losses, np.ndarray) and losses.ndim == 2:
        return losses[:, :burn_in].mean(axis=1, dtype=np.float64)
    first = np.asarray(losses[0], dtype=np.float64)
    if burn_in == 1:
        return (first + 0.0) / 1.0
    if burn_in == 2:
        total = first + (0.0 + np.asarray(losses[1], dtype=np.float64))
        total /= 2.0
        return total
    return np.stack([np.asarray(c, dtype=np.float64) for c in losses[:burn_in]], axis=1).mean(axis=1)


def forget_event_counts(losses: Losses, eps: float, dtype=np.int64) -> np.ndarray:
    """Forget events per row, unchecked (paper, 3.2).

    A row is *fitted* while its loss is below ``eps`` and *unfitted* while it is above; a forget
    event is a move from fitted to unfitted between two snapshots (the paper's
    ``L[t] < eps and L[t+1] > eps``, both strict). A loss exactly at ``eps`` is neither, so it
    keeps the state the row had: ``[0.5, 1.0, 2.0]`` at eps 1.0 was fitted, passed the threshold
    and rose above it, which is one event (the paper's prose, "rises above a threshold after
    earlier fitting", and the correct-to-incorrect transition of forgetting events), where
    comparing neighbours alone would count none. Without a loss exactly at ``eps`` the two
    readings agree. The comparisons are made in float64 whatever the losses' type, so a float32
    loss of 0.7 (0.699999988) is below an eps of 0.7.

    Args:
        losses: an `(N, T)` matrix or `T` columns of shape `(N,)`, `T >= 1`.
        eps (`float`): the threshold.
        dtype (*optional*, defaults to `np.int64`): of the counts; see :func:`forget_count_dtype`.

    Returns:
        `np.ndarray` of shape `(N,)`, each count in `[0, T - 1]`.
    """
    columns = _columns(losses)
    eps = np.float64(eps)
    counts = np.zeros(np.shape(columns[0])[0], dtype=dtype)
    # Cast explicitly: numpy 1.x would compare a float32 column with a float64 scalar in float32.
    fitted = np.asarray(columns[0], dtype=np.float64) < eps
    for column in columns[1:]:
        column = np.asarray(column, dtype=np.float64)
        counts += fitted & (column > eps)
        # A loss at eps carries the state across; elsewhere the state is what the loss says.
        fitted = np.where(column == eps, fitted, column < eps)
    return counts


def forget_count_dtype(num_snapshots: int) -> type:
    """The smallest count type for ``num_snapshots`` snapshots: uint8 while ``T < 256``, which
    keeps the counts of a 10^8-row batch small."""
    return np.uint8 if num_snapshots < 256 else np.int64


def memorization_rate(events: np.ndarray, num_snapshots: int) -> np.ndarray:
    """``m_i = events_i / (T - 1)``: the fraction of snapshot transitions with a forget event."""
    return events / float(num_snapshots - 1)


def never_below(losses: Losses, eps: float) -> np.ndarray:
    """True for the rows no loss of which is below ``eps`` (compared in float64, as
    :func:`forget_event_counts` does): never fitted, so never forgotten, unchecked."""
    columns = _columns(losses)
    eps = np.float64(eps)
    learned = np.zeros(np.shape(columns[0])[0], dtype=bool)
    for column in columns:
        learned |= np.asarray(column, dtype=np.float64) < eps
    return ~learned


def difficulty_and_memorization(losses: Losses, burn_in: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(d, m)`` of a batch, unchecked; the counts behind ``m`` are kept in
    :func:`forget_count_dtype`, since they are divided at once."""
    columns = _columns(losses)
    events = forget_event_counts(columns, eps, dtype=forget_count_dtype(len(columns)))
    return burn_in_difficulty(losses, burn_in), memorization_rate(events, len(columns))
