"""Exact order statistics of values read in batches, in memory independent of their count.

Scoring 10^8 rows cannot hold every loss (or every difficulty) to take a quantile of it. A radix
selection can: each value maps to an unsigned integer key that sorts as the float does; a first
pass counts keys by their top 16 bits, which names the bucket holding the wanted rank; a second
pass keeps only that bucket's values (or, where one bucket holds too many, counts its next 16 bits
and goes on). The value found is the very element ``np.sort`` would put at that rank, so the
quantiles below equal numpy's to the bit; the tests check them against ``np.quantile`` and
``np.percentile``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

__all__ = ["inverted_cdf_rank", "linear_quantile_ranks", "lerp", "select_ranks"]

_DIGIT = 16
# A bucket at most this large is sorted in memory (float64: 128 MiB); a larger one is split by
# its next 16 bits in another pass.
MAX_BUCKET = 1 << 24


def _keys(values: np.ndarray) -> np.ndarray:
    """Unsigned keys that sort as the (non-NaN) floats do: the sign bit flipped for positive
    numbers, every bit flipped for negative ones."""
    bits = {4: np.uint32, 8: np.uint64}[values.dtype.itemsize]
    u = values.view(bits)
    sign = bits(1) << bits(8 * values.dtype.itemsize - 1)
    return np.where(u & sign, ~u, u | sign)


def _value(key: int, dtype: np.dtype) -> float:
    bits = {4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    sign = int(bits(1) << bits(8 * np.dtype(dtype).itemsize - 1))
    u = key ^ sign if key & sign else ~key & ((sign << 1) - 1)
    return np.array([u], dtype=bits).view(dtype)[0]


def select_ranks(
    batches: Callable[[], Iterable[np.ndarray]],
    ranks: Iterable[int] | Callable[[int], Iterable[int]],
    dtype=np.float64,
) -> dict[int, float]:
    """The values at ``ranks`` (0-based) of all values the batches hold, sorted ascending.

    Args:
        batches: called once per pass; yields 1-D float arrays (no NaN), the same ones every call.
        ranks: the wanted positions in sorted order, or a function of how many values there are
            that returns them (called after the first pass, which counts them).
        dtype: ``float32`` or ``float64``; values are cast to it (the values compared are these).

    Returns:
        ``{rank: value}``, each of type ``dtype``. Two passes over the batches in general; one
        more for every 16 bits of key a bucket larger than ``MAX_BUCKET`` needs.
    """
    dtype = np.dtype(dtype)
    width = 8 * dtype.itemsize
    # Per open rank: the key prefix found so far, its length in bits, the rank inside that prefix
    # and how many values share the prefix (None before the first pass counts them).
    if callable(ranks):
        # The first pass only counts (nothing is kept before the bucket sizes are known), so the
        # ranks can wait for its total.
        counts = np.zeros(1 << _DIGIT, dtype=np.int64)
        for batch in _as_batches(batches(), dtype):
            counts += np.bincount((_keys(batch) >> (width - _DIGIT)).astype(np.int64), minlength=1 << _DIGIT)
        search = {}
        cumulative = np.cumsum(counts)
        for r in ranks(int(cumulative[-1])):
            if not 0 <= r < cumulative[-1]:
                raise ValueError(f"rank {r} is outside the {int(cumulative[-1])} values read")
            digit = int(np.searchsorted(cumulative, r, side="right"))
            before = int(cumulative[digit - 1]) if digit else 0
            search[int(r)] = (digit, _DIGIT, int(r) - before, int(counts[digit]))
    else:
        search = {int(r): (0, 0, int(r), None) for r in ranks}
    found: dict[int, float] = {}
    while search:
        groups = {(prefix, used, size) for prefix, used, _, size in search.values()}
        counts = {g: np.zeros(1 << _DIGIT, dtype=np.int64) for g in groups}
        members: dict[tuple, list[np.ndarray]] = {g: [] for g in groups}
        for batch in _as_batches(batches(), dtype):
            keys = _keys(batch)
            for group in groups:
                prefix, used, size = group
                inside = (keys >> (width - used)) == prefix if used else slice(None)
                if size is not None and size <= MAX_BUCKET:
                    members[group].append(batch[inside])
                else:
                    digits = (keys[inside] >> (width - used - _DIGIT)) & 0xFFFF
                    counts[group] += np.bincount(digits.astype(np.int64), minlength=1 << _DIGIT)
        ordered: dict[tuple, np.ndarray] = {}  # each kept bucket sorted once, for every rank in it
        for rank, (prefix, used, inner, size) in list(search.items()):
            group = (prefix, used, size)
            if size is not None and size <= MAX_BUCKET:
                if group not in ordered:
                    ordered[group] = np.sort(np.concatenate(members[group]))
                found[rank] = ordered[group][inner]
                del search[rank]
                continue
            cumulative = np.cumsum(counts[group])
            if not 0 <= inner < cumulative[-1]:
                raise ValueError(f"rank {rank} is outside the {int(cumulative[-1])} values read")
            digit = int(np.searchsorted(cumulative, inner, side="right"))
            before = int(cumulative[digit - 1]) if digit else 0
            prefix, used, inner = (prefix << _DIGIT) | digit, used + _DIGIT, inner - before
            if used == width:  # the whole key is known: every value under it is this one
                found[rank] = _value(prefix, dtype)
                del search[rank]
            else:
                search[rank] = (prefix, used, inner, int(counts[group][digit]))
    return {r: dtype.type(v) for r, v in found.items()}


def _as_batches(batches: Iterable[np.ndarray], dtype: np.dtype) -> Iterator[np.ndarray]:
    for batch in batches:
        batch = np.ascontiguousarray(batch, dtype=dtype).ravel()
        if batch.size:
            yield batch


def inverted_cdf_rank(n: int, alpha: float) -> int:
    """The 0-based rank ``np.percentile(x, 100 * alpha, method="inverted_cdf")`` takes from ``n``
    sorted values: the smallest ``x`` with ``F(x) >= alpha``, computed with numpy's own arithmetic."""
    q = np.true_divide(np.asanyarray(100.0 * alpha, dtype=np.float64), 100)
    index = n * q - 1
    previous = np.floor(index)
    rank = int(previous + 1) if index - previous > 0 else int(previous)
    return min(max(rank, 0), n - 1)


def linear_quantile_ranks(n: int, q: float) -> tuple[int, int, float]:
    """The two ranks ``np.quantile(x, q)`` (linear) interpolates between, and the weight of the second."""
    virtual = (n - 1) * np.float64(q)
    below = int(np.floor(virtual))
    above = min(below + 1, n - 1)
    return max(below, 0), above, float(virtual - np.floor(virtual))


def lerp(a, b, t: float) -> float:
    """numpy's interpolation between two sorted neighbours (``_lerp``), to the bit: done in the
    type of ``a`` and ``b`` (numpy scalars: float32 values interpolate in float32, as
    ``np.quantile`` does for a float32 array), with the weight ``t`` a Python float."""
    t = float(t)
    diff = b - a
    return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)
