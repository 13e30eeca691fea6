"""Paired comparisons between training arms, with intervals a reader can act on.

Two arms of one seed start from the same checkpoint with the same data order, so their difference
is measured on the same units (canaries, sequences) and the seeds pair up. A difference is
reported with a 95% interval and the number of units it rests on:

- unit-level metrics (extraction and exposure per canary, k-extractability per sequence): a
  two-level bootstrap that resamples seeds, then units within each drawn seed, of the per-unit
  paired differences; this keeps both sources of noise (training randomness and which canaries
  happen to be planted);
- seed-level metrics (a membership AUC, a perplexity): the paired t interval over seeds.

:func:`verdict` turns an interval into words: "lower" or "higher" only when the interval excludes
zero, "no measurable difference" otherwise.

A bootstrap interval's ends are themselves estimates: another bootstrap seed moves them. Every
bootstrap interval therefore comes with the Monte Carlo error of each end (``interval_mc_error``,
twice the standard error, from the spread of the ends over independent batches of the draws).
200,000 draws keep that error near 0.006 standard deviations of the bootstrap distribution, below
the digits the reports print. When an end lies within four standard errors of zero, where a
verdict could flip with the bootstrap's seed, the draws are quadrupled until it does not or
12.8 million draws are reached (``num_resamples`` says how many were used). An interval counts as
excluding zero only when its end is beyond zero by more than its Monte Carlo error; an end that
is not stays "within Monte Carlo error of zero" and is never called a difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["paired_difference", "verdict"]


def _as_matrix(values: Sequence[Sequence[float]] | Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"expected values per seed (and per unit); got shape {np.shape(values)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{int((~np.isfinite(arr)).sum())} of {arr.size} values are not finite")
    return arr


def paired_difference(
    arm: Sequence | np.ndarray,
    control: Sequence | np.ndarray,
    *,
    level: float = 0.95,
    num_resamples: int = 200_000,
    max_resamples: int = 12_800_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean paired difference ``arm - control`` with a ``level`` interval.

    Args:
        arm: shape ``(num_seeds,)`` for a seed-level metric, or ``(num_seeds, num_units)`` for a
            unit-level one (row ``s`` holds a seed, column ``u`` a unit).
        control: the same shape, the same seeds and units in the same places.

    Returns ``difference`` (the mean over every seed and unit), ``interval`` ``[low, high]``
    (``None`` with a single seed of a seed-level metric: no interval exists), ``method``,
    ``num_seeds`` and ``num_units`` (units per seed; 1 for seed-level metrics); a bootstrap also
    ``num_resamples`` (the draws used: ``num_resamples``, or up to ``max_resamples`` when an end
    is near zero) and ``interval_mc_error`` (the Monte Carlo error of each end: see the module).

    Example:
        >>> out = paired_difference([0.30, 0.28, 0.31, 0.29], [0.20, 0.19, 0.22, 0.18])
        >>> low, high = out["interval"]
        >>> round(out["difference"], 3), out["method"], low > 0
        (0.098, 'paired t over seeds', True)
    """
    a, b = _as_matrix(arm), _as_matrix(control)
    if a.shape != b.shape:
        raise ValueError(f"arm and control are measured on different units: shapes {a.shape} and {b.shape}")
    diff = a - b
    num_seeds, num_units = diff.shape
    out: dict[str, Any] = {
        "difference": float(diff.mean()),
        "num_seeds": int(num_seeds),
        "num_units": int(num_units),
        "level": level,
    }
    if num_units == 1:
        out["method"] = "paired t over seeds"
        out["interval"] = _t_interval(diff[:, 0], level)
    else:
        out["method"] = "bootstrap over seeds and units"
        draws = num_resamples
        interval, errors = _two_level_bootstrap(diff, level, draws, seed)
        # An end within two Monte Carlo errors (four standard errors) of zero could change its
        # side with the bootstrap's seed: more draws until it cannot, or the cap.
        while draws < max_resamples and any(abs(end) < 2.0 * err for end, err in zip(interval, errors, strict=True)):
            draws = min(4 * draws, max_resamples)
            interval, errors = _two_level_bootstrap(diff, level, draws, seed)
        out["interval"], out["interval_mc_error"], out["num_resamples"] = interval, errors, int(draws)
    return out


def _t_interval(diff: np.ndarray, level: float) -> list[float] | None:
    if diff.size < 2:
        return None
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2.0, diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size))
    return [float(diff.mean() - half), float(diff.mean() + half)]


#: Independent batches the bootstrap draws are split into to measure the Monte Carlo error of the ends.
_MC_BATCHES = 20


def _two_level_bootstrap(
    diff: np.ndarray, level: float, num_resamples: int, seed: int
) -> tuple[list[float], list[float]]:
    """The interval's ends and their Monte Carlo errors: twice the standard error of each end,
    estimated from the spread of the ends over ``_MC_BATCHES`` independent batches of the draws
    (the standard error of the whole run's end is that spread over the square root of the number
    of batches)."""
    if num_resamples < 10 * _MC_BATCHES:
        raise ValueError(f"num_resamples must be at least {10 * _MC_BATCHES}; got {num_resamples}")
    num_seeds, num_units = diff.shape
    rng = np.random.default_rng(seed)
    means = np.empty(num_resamples)
    # In chunks, so that memory stays at a few MB however many units there are.
    chunk = max(1, 2_000_000 // (num_seeds * num_units))
    for start in range(0, num_resamples, chunk):
        n = min(chunk, num_resamples - start)
        seeds = rng.integers(0, num_seeds, size=(n, num_seeds))
        units = rng.integers(0, num_units, size=(n, num_seeds, num_units))
        means[start : start + n] = diff[seeds[:, :, None], units].mean(axis=(1, 2))
    tail = (1.0 - level) / 2.0
    ends = [float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))]
    batches = np.array_split(means, _MC_BATCHES)
    per_batch = np.array([np.quantile(b, [tail, 1.0 - tail]) for b in batches])
    errors = 2.0 * per_batch.std(axis=0, ddof=1) / math.sqrt(_MC_BATCHES)
    return ends, [float(errors[0]), float(errors[1])]


def verdict(comparison: dict[str, Any], *, lower: str = "lower", higher: str = "higher") -> str:
    """``lower``/``higher`` when the interval excludes zero, else ``no measurable difference``.

    A bootstrap interval excludes zero only when its end is beyond zero by more than the end's
    Monte Carlo error, so the verdict does not depend on the bootstrap's seed; an end that is
    beyond zero but within that error reads "no measurable difference (the interval's end is
    within Monte Carlo error of zero)".
    """
    interval = comparison.get("interval")
    if interval is None:
        return "no interval (one seed)"
    low, high = interval
    err_low, err_high = comparison.get("interval_mc_error") or (0.0, 0.0)
    if high < -err_high:
        return lower
    if low > err_low:
        return higher
    if high < 0 or low > 0:
        return "no measurable difference (the interval's end is within Monte Carlo error of zero)"
    return "no measurable difference"
