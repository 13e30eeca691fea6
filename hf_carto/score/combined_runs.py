"""Scores over several mapping runs (seeds) of the same data, combined into one per sample.

A single mapping run's forget events are few and depend on its seed (the order the samples were
seen, the initial weights). Several runs over the same rows give each sample more chances to be
fitted and forgotten. The combination, for runs ``r = 1..R`` with ``T_r`` snapshots each:

- ``eps`` is resolved once, on the losses of every run pooled (a number stays a number), so one
  threshold decides every forget event;
- difficulty ``d_i = mean_r d_{r,i}``: the mean over runs of each run's burn-in mean;
- memorization ``m_i = sum_r F_{r,i} / sum_r (T_r - 1)``: the summed forget events over the summed
  number of snapshot pairs. With equal ``T`` this is the mean over runs of each run's ``m``; it
  stays in ``[0, 1]``, and one event in any run counts the same;
- ``tau_d`` / ``tau_m`` are the usual percentiles of the combined scores.

Rows are matched by ``sample_id`` when every run has it (each run must hold the same ids), else by
position (then every run must have the same length). Every run's ``N x T`` matrix is held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from datasets import Dataset

from hf_carto.core.columns import SAMPLE_ID, loss_columns, read_columns
from hf_carto.core.eps import eps_from_min, parse_eps
from hf_carto.core.kernel import burn_in_difficulty, forget_event_counts

__all__ = ["run_matrices", "pooled_eps", "combined_scores"]


def _ids(dataset: Dataset) -> np.ndarray | None:
    if SAMPLE_ID not in dataset.column_names:
        return None
    return read_columns(dataset, [SAMPLE_ID])[SAMPLE_ID].astype(np.int64)


def run_matrices(
    runs: Sequence[Dataset], read_checked: Callable[[Dataset, list[str]], np.ndarray]
) -> tuple[list[np.ndarray], list[list[str]]]:
    """Each run's ``(N, T_r)`` loss matrix, rows in the order of the first run.

    ``read_checked(run, loss_columns)`` reads one run's matrix and refuses bad losses (curation
    passes its checks, so one run and several are refused alike).

    Raises:
        ValueError: fewer than two runs, a run with under two loss columns, runs of other rows
            (ids or lengths), and what ``read_checked`` refuses.
    """
    if len(runs) < 2:
        raise ValueError(f"combining runs needs at least two; got {len(runs)} (pass one Dataset to score one run)")
    first_ids = _ids(runs[0])
    matrices, names = [], []
    for number, run in enumerate(runs, start=1):
        columns = loss_columns(run.column_names)
        if len(columns) < 2:
            raise ValueError(f"run {number} has {len(columns)} loss columns; memorization needs T >= 2 snapshots")
        if len(run) != len(runs[0]):
            raise ValueError(
                f"run {number} has {len(run)} rows and run 1 has {len(runs[0])}; runs must score the same data"
            )
        matrix = read_checked(run, columns)
        ids = _ids(run)
        if (first_ids is None) != (ids is None):
            raise ValueError(f"run {number} and run 1 differ in having a '{SAMPLE_ID}' column; give every run one")
        if ids is not None and number > 1:
            order = np.argsort(ids, kind="stable")
            where = np.searchsorted(ids, first_ids, sorter=order)
            where = order[np.minimum(where, ids.size - 1)]
            unmatched = ids[where] != first_ids
            if unmatched.any():
                raise ValueError(
                    f"run {number} lacks {int(unmatched.sum())} sample_ids of run 1 (first: "
                    f"{first_ids[unmatched][:5].tolist()}); runs must score the same samples"
                )
            matrix = matrix[where]
        matrices.append(matrix)
        names.append(columns)
    return matrices, names


def pooled_eps(matrices: list[np.ndarray], eps: float | str) -> float:
    """``eps`` resolved on the losses of every run together."""
    kind, parameter = parse_eps(eps)
    if kind == "value":
        return parameter
    if kind == "quantile":
        return float(np.quantile(np.concatenate([m.ravel() for m in matrices]), parameter))
    return eps_from_min(kind, parameter, min(float(m.min()) for m in matrices))


def combined_scores(matrices: list[np.ndarray], burn_in: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Combined ``(d, m)`` of aligned run matrices (see the module notes)."""
    d = np.mean([burn_in_difficulty(m, burn_in) for m in matrices], axis=0)
    forgets = np.sum([forget_event_counts(m, eps) for m in matrices], axis=0)
    pairs = sum(m.shape[1] - 1 for m in matrices)
    return d, forgets / float(pairs)
