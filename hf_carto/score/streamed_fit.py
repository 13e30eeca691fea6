"""The quantities a fit needs from every row, read from the loss columns in batches.

``eps``, ``tau_d``, ``tau_m`` and two counts, as :func:`hf_carto.score.scores.resolve_eps` and
:func:`hf_carto.score.scores.assign_quadrants` give them on the whole matrix, without holding a
per-row array: the quantiles are found exactly by radix selection
(:mod:`hf_carto.score.order_statistics`).
"""

from __future__ import annotations

import math

import numpy as np
from datasets import Dataset

from hf_carto.core.eps import eps_from_min
from hf_carto.core.kernel import (
    burn_in_difficulty,
    forget_count_dtype,
    forget_event_counts,
    memorization_rate,
    never_below,
)
from hf_carto.score.loss_checks import checked_columns
from hf_carto.score.order_statistics import inverted_cdf_rank, lerp, linear_quantile_ranks, select_ranks

__all__ = ["streamed_scores"]


def _quantile_dtype(dataset: Dataset, columns: list[str]) -> np.dtype:
    """The type a quantile eps is taken in: the type ``np.stack`` gives the loss columns, as
    :func:`~hf_carto.score.scores.resolve_eps` takes ``np.quantile`` of that matrix. float32 columns (what
    the recorder writes) give float32; any float64 or integer column gives float64, so a float64
    loss of 0.7 is not read as float32's 0.699999988."""
    types = [np.dtype(dataset.features[name].pa_type.to_pandas_dtype()) for name in columns]
    common = np.result_type(*types)
    return np.dtype(np.float32) if common in (np.float16, np.float32) else np.dtype(np.float64)


def _as_dtype(column: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``column`` in ``dtype``, through float64 as the matrix holds integers (an int64 above 2^53
    rounds differently straight to float32)."""
    if column.dtype.kind == "f" and column.dtype.itemsize >= 4:
        return column.astype(dtype, copy=False)
    return np.asarray(column, dtype=np.float64).astype(dtype, copy=False)


def streamed_scores(
    dataset: Dataset,
    columns: list[str],
    batch_size: int,
    allow_nonfinite: bool,
    allow_negative: bool,
    kind: str,
    parameter: float,
    burn_in: int,
    alpha_d: float,
    alpha_m: float,
) -> tuple[float, float, float, int, int]:
    """eps, tau_d, tau_m, the number of rows with a forget event and of rows never below eps: the numbers
    :func:`~hf_carto.score.scores.resolve_eps` and :func:`~hf_carto.score.scores.assign_quadrants` give
    on the whole matrix, read in batches.

    The first pass over the columns is the check (every refused value counted before the error).
    ``m`` takes at most ``T`` values, so a count per forget-event number gives ``tau_m`` exactly;
    ``d`` and the losses are continuous and go through :func:`~hf_carto.score.order_statistics.select_ranks`.
    """

    num_snapshots = len(columns)
    state = {"passes": 0, "rows": 0, "smallest": math.inf, "eps": parameter if kind == "value" else None}
    forget = np.zeros(num_snapshots, dtype=np.int64)  # rows by number of forget events
    never = [0]  # rows never below eps

    def fitted_columns():
        """The loss columns of the rows the fit uses, batch by batch; the first call checks every value."""
        state["passes"] += 1
        first = state["passes"] == 1
        for batch in checked_columns(dataset, columns, batch_size, allow_nonfinite, allow_negative, check=first):
            if first:
                state["rows"] += batch[0].shape[0]
                if batch[0].size and kind in ("min_plus", "min_times"):
                    state["smallest"] = min(state["smallest"], *(float(c.min()) for c in batch))
            yield batch

    def check_count(count: int) -> int:
        if count == 0:
            raise ValueError(
                f"all {len(dataset)} rows have a non-finite (NaN or inf) loss in {columns[0]}..{columns[-1]}; "
                "there is nothing to fit eps and the thresholds on"
            )
        return count

    if kind == "quantile":  # resolve_eps's numpy linear quantile of every fitted loss, in their type
        ranks = {}
        dtype = _quantile_dtype(dataset, columns)

        def eps_ranks(count: int) -> list[int]:
            ranks["below"], ranks["above"], ranks["weight"] = linear_quantile_ranks(check_count(count), parameter)
            return sorted({ranks["below"], ranks["above"]})

        found = select_ranks(
            lambda: (_as_dtype(c, dtype) for batch in fitted_columns() for c in batch),
            eps_ranks,
            dtype,
        )
        state["eps"] = lerp(found[ranks["below"]], found[ranks["above"]], ranks["weight"])

    def difficulties():
        if state["eps"] is None and state["passes"] >= 1:  # a min policy: the check pass found the minimum
            state["eps"] = eps_from_min(kind, parameter, state["smallest"])
        counting = state["eps"] is not None and not forget.any()
        for batch in fitted_columns():
            if counting:
                events = forget_event_counts(batch, state["eps"], dtype=forget_count_dtype(num_snapshots))
                forget[:] += np.bincount(events, minlength=num_snapshots)
                never[0] += int(never_below(batch, state["eps"]).sum())
            yield burn_in_difficulty(batch, burn_in)  # d exactly as the map computes it

    def d_rank(count: int) -> list[int]:
        return [inverted_cdf_rank(check_count(count), alpha_d)]

    tau_d = float(next(iter(select_ranks(difficulties, d_rank).values())))
    fitted = state["rows"]
    # select_ranks always reads at least twice (count, then keep), so one pass with eps known counted
    # every fitted row's forget events.
    assert forget.sum() == fitted, (int(forget.sum()), fitted)
    rank_m = inverted_cdf_rank(fitted, alpha_m)
    events = int(np.searchsorted(np.cumsum(forget), rank_m, side="right"))
    tau_m = float(memorization_rate(events, num_snapshots))  # m exactly as the map computes it
    return float(state["eps"]), tau_d, tau_m, int(fitted - forget[0]), never[0]
