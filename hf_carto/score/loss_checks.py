"""Checks of the ``carto_loss_{t}`` columns of a dataset, batch by batch, before any row is scored.

A cross-entropy loss is a finite number >= 0. NaN or infinite values (a NaN compares false with
every threshold, so its row would be labelled ``stable_easy``) and negative ones are refused: the
error names the columns, how many rows and their first ``sample_id``s, counted over every batch.
``allow_nonfinite`` and ``allow_negative`` accept them on purpose.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import Dataset, Value

from hf_carto.core.columns import SAMPLE_ID, iter_columns

__all__ = [
    "stack_losses",
    "as_numpy",
    "losses_are_clean",
    "checked_columns",
    "check_loss_types",
    "refused_in_batch",
]


def stack_losses(columns: tuple[Any, ...]) -> np.ndarray:
    return np.stack([np.asarray(col, dtype=np.float64) for col in columns], axis=1)


def as_numpy(column: Any) -> np.ndarray:
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return column.to_numpy(zero_copy_only=False)
    array = np.asarray(column)
    # A Python list with None (a null) is an object array: float64, None as NaN, as stack_losses reads it.
    return array.astype(np.float64) if array.dtype == object else array


def losses_are_clean(columns: list[np.ndarray], allow_negative: bool) -> bool:
    """Whether every value is finite (and >= 0 unless ``allow_negative``): a min and a max per
    column, which NaN propagates into, decide it without a per-value mask."""
    low = -math.inf if allow_negative else 0.0
    for column in columns:
        if column.size:
            smallest, largest = column.min(), column.max()
            if not (smallest >= low and -math.inf < smallest and largest < math.inf):
                return False
    return True


def checked_columns(
    dataset: Dataset, columns: list[str], batch_size: int, allow_nonfinite: bool, allow_negative: bool, check=True
) -> Iterator[list[np.ndarray]]:
    """Yield each batch's loss columns, restricted to its rows with finite losses; with ``check``,
    after the last batch raise if any loss was refused, every batch checked first so that the
    message counts all offending rows.

    A batch whose values are all accepted (the normal case) goes through as the stored arrays; only
    a batch with a refused or non-finite value is made a float64 matrix, masked, and has its
    ``sample_id``s read to name the rows.
    """
    nonfinite = _Refused("non-finite (NaN or inf)", "allow_nonfinite=True (hf-carto score --allow-nonfinite)")
    negative = _Refused("negative", "allow_negative=True (hf-carto score --allow-negative)")
    ids_view = None
    for start, batch in iter_columns(dataset, columns, batch_size):
        arrays = [batch[c] for c in columns]
        if losses_are_clean(arrays, allow_negative):
            yield arrays
            continue
        losses = stack_losses(arrays)
        finite = np.isfinite(losses)
        if check:
            ids = None
            if SAMPLE_ID in dataset.column_names:
                if ids_view is None:
                    ids_view = dataset.select_columns([SAMPLE_ID]).with_format("arrow")
                ids = ids_view[start : start + losses.shape[0]].column(SAMPLE_ID).to_numpy()
            if not allow_nonfinite:
                nonfinite.add(~finite, start, ids)
            if not allow_negative:
                negative.add(finite & (losses < 0), start, ids)
        rows = finite.all(axis=1)
        kept = losses if rows.all() else losses[rows]
        yield [kept[:, t] for t in range(kept.shape[1])]
    refused = [r for r in (nonfinite, negative) if r.rows]
    if refused:
        label = "sample_ids" if SAMPLE_ID in dataset.column_names else "rows"
        problems = "; ".join(r.describe(len(dataset), columns, label) for r in refused)
        options = " or ".join(r.option for r in refused)
        raise ValueError(
            f"{problems}. A cross-entropy loss is a finite number >= 0: were these columns recorded or edited "
            f"by something else? Pass {options} to score them as they are"
        )


def check_loss_types(dataset: Dataset, columns: list[str]) -> None:
    """Refuse loss columns that do not hold one number per row (strings, lists, booleans)."""
    bad = []
    for name in columns:
        feature = dataset.features.get(name)
        pa_type = getattr(feature, "pa_type", None) if isinstance(feature, Value) else None
        if pa_type is None or not (pa.types.is_floating(pa_type) or pa.types.is_integer(pa_type)):
            bad.append(f"{name} ({feature})")
    if bad:
        raise ValueError(
            f"loss columns must hold one number per row; {len(bad)} of {len(columns)} do not, in all "
            f"{len(dataset)} rows: {', '.join(bad[:3])}{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}. "
            "Cast them to float32 (Dataset.cast_column) if they hold numbers written as text"
        )


@dataclass
class _Refused:
    """Rows with losses of one refused kind, counted over every batch, the first few named."""

    kind: str
    option: str
    rows: int = 0
    first: list[int] = field(default_factory=list)
    columns: set[int] = field(default_factory=set)

    def add(self, bad: np.ndarray, start: int, ids: np.ndarray | None) -> None:
        """``bad``: the ``(B, T)`` mask of refused values of the batch starting at row ``start``."""
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size == 0:
            return
        self.rows += rows.size
        labels = ids[rows] if ids is not None else rows + start
        self.first.extend(int(x) for x in labels[: max(0, 5 - len(self.first))])
        self.columns.update(int(c) for c in np.flatnonzero(bad.any(axis=0)))

    def describe(self, total: int, columns: list[str], label: str) -> str:
        names = [columns[c] for c in sorted(self.columns)]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return f"{self.rows} of {total} rows have {self.kind} losses (in {shown}); first {label}: {self.first}"


def refused_in_batch(losses: np.ndarray, allow_nonfinite: bool, allow_negative: bool) -> str | None:
    finite = np.isfinite(losses)
    problems = []
    if not allow_nonfinite and not finite.all():
        problems.append(f"{int((~finite).any(axis=1).sum())} rows with non-finite (NaN or inf) losses")
    if not allow_negative and (negative := finite & (losses < 0)).any():
        problems.append(f"{int(negative.any(axis=1).sum())} rows with negative losses")
    return " and ".join(problems) or None
