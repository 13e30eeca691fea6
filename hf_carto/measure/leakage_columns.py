"""Each training row's own leakage evidence under one model, as ``carto_leak_*`` columns.

A Hub user can then ``filter`` a published dataset by evidence of leakage, row by row:

- ``carto_leak_k``: the ``k`` the row was tested with (0: the row is shorter than ``2k`` tokens and
  was not tested for extraction);
- ``carto_leak_extractable``: the row is *k-extractable*: greedy decoding from its first ``k``
  tokens reproduces its next ``k`` tokens exactly (Carlini et al. 2023, "Quantifying memorization
  across neural language models", with the prefix and the suffix taken from the row itself);
- ``carto_leak_matched_tokens``: how many of those ``k`` tokens greedy decoding reproduces, counted
  from the first (``k`` exactly when extractable): graded evidence where extraction is all or nothing;
- ``carto_leak_loss``: the row's mean token loss (NLL, nats) under the model;
- ``carto_leak_min_k_plus_plus``: min-k%++ (Zhang et al. 2024) over the row's tokens: the mean of the
  lowest ``min_k_fraction`` of the standardised token log-probabilities; higher = more member-like.

Why one forward pass is enough: greedy decoding's ``j``-th token is the argmax of the next-token
distribution given the prefix and the ``j - 1`` tokens it produced. As long as those were the row's
own tokens, that context is exactly the teacher-forced one, so the number of leading tokens greedy
decoding reproduces is the number of leading positions ``k .. 2k-1`` where the teacher-forced
argmax equals the row's token. The same forward pass gives the loss and min-k%++, so the columns
cost one evaluation pass instead of ``k`` decoding steps per row (see
``benchmarks/bench_leakage.py``); ``tests/test_leakage_columns.py`` checks the columns against real
greedy ``generate`` calls. Two decodings can part only on an exact argmax tie, or on a near-tie
that the cached (incremental) and the full forward round differently.

With ``split_across_processes=True`` under ``torch.distributed`` (``accelerate launch``, with an
``Accelerator`` or a ``PartialState`` created) every process computes a share of the batches and
all of them receive every row's values; each batch is the same rows whatever the process count, so
the columns equal those of one process. Every process must then call the function (it gathers);
without the flag a process computes every row alone, which is safe on the main process only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hf_carto.core.batching import evaluation_mode, map_batches, right_pad
from hf_carto.core.batching import split_across_processes as process_share
from hf_carto.core.columns import (
    LEAK_COLUMNS,
    LEAK_EXTRACTABLE,
    LEAK_K,
    LEAK_LOSS,
    LEAK_MATCHED,
    LEAK_MIN_K_PLUS_PLUS,
    SAMPLE_ID,
    read_columns,
)

__all__ = ["leakage_evidence", "add_leakage_columns", "leakage_summary", "describe_k"]

logger = logging.getLogger(__name__)

DEFAULT_MIN_K_FRACTION = 0.2


def _row_ks(lengths: np.ndarray, k: int | None) -> np.ndarray:
    """Each row's ``k``: the given one where the row holds ``2k`` tokens (else 0), or half the row."""
    if k is None:
        return lengths // 2
    return np.where(lengths >= 2 * k, k, 0)


def _leading_matches(hits: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Per row, how many of the positions ``k-1 .. 2k-2`` of ``hits`` (the teacher-forced argmax at
    position ``j`` equals token ``j + 1``) are True, counted from the first until one is not."""
    width = int(ks.max()) if ks.numel() else 0
    if width == 0:
        return torch.zeros(hits.shape[0], dtype=torch.long)
    offsets = torch.arange(width)[None, :]
    positions = (ks[:, None] - 1 + offsets).clamp(min=0, max=hits.shape[1] - 1)
    valid = offsets < ks[:, None]
    window = hits.gather(1, positions) & valid
    return window.long().cumprod(dim=1).sum(dim=1)


def _batch_evidence(model, rows: Sequence[Sequence[int]], ks: np.ndarray, pad_token_id: int, fraction: float) -> dict:
    from hf_carto.measure.membership import lowest_fraction_mean, statistics_from_logits

    batch = right_pad(rows, pad_token_id)
    device = next(model.parameters()).device
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    hits = (logits[:, :-1].argmax(dim=-1) == ids[:, 1:]).cpu()
    stats = statistics_from_logits(logits, ids, mask)
    del logits
    m = stats["mask"]
    loss = -(stats["logp"] * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)
    z = (stats["logp"] - stats["mu"]) / stats["sigma"]
    ks_t = torch.as_tensor(ks, dtype=torch.long)
    matched = _leading_matches(hits, ks_t)
    return {
        LEAK_K: ks.astype(np.int32),
        LEAK_EXTRACTABLE: ((matched == ks_t) & (ks_t > 0)).numpy(),
        LEAK_MATCHED: matched.numpy().astype(np.int32),
        LEAK_LOSS: loss.float().cpu().numpy(),
        LEAK_MIN_K_PLUS_PLUS: lowest_fraction_mean(z, m, fraction).float().cpu().numpy(),
    }


class _ColumnRows:
    """A dataset's token column as the sequence of rows :func:`leakage_evidence` reads: sliced one
    batch at a time, its lengths taken from the Arrow list offsets, its rows named by
    ``sample_id`` in errors."""

    def __init__(self, dataset, column: str):
        self.dataset = dataset
        self.column = column
        self.tokens = dataset.select_columns([column])

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, rows: slice) -> list:
        return self.tokens[rows][self.column]

    def lengths(self) -> np.ndarray:
        """Each row's number of tokens, from the Arrow list offsets (no row is decoded)."""
        import pyarrow.compute as pc

        tokens, name = self.tokens, self.column
        table = tokens.with_format("arrow")[:][name] if tokens._indices is not None else tokens.data.table[name]
        if not len(table):
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([pc.list_value_length(c).to_numpy(zero_copy_only=False) for c in table.chunks])

    def names(self, rows: np.ndarray) -> list:
        if SAMPLE_ID not in self.dataset.column_names:
            return rows.tolist()
        return [int(i) for i in self.dataset.select(rows.tolist())[SAMPLE_ID]]


def leakage_evidence(
    model,
    sequences: Sequence[Sequence[int]],
    *,
    k: int | None = None,
    min_k_fraction: float = DEFAULT_MIN_K_FRACTION,
    pad_token_id: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    split_across_processes: bool = False,
) -> dict[str, np.ndarray]:
    """The ``carto_leak_*`` values of token sequences under ``model``, one entry per sequence.

    Args:
        k (`int`, *optional*): prefix and continuation length. Default: half of each row (packed
            blocks of 32 tokens: the first 16 must reproduce the next 16). A row shorter than
            ``2k`` gets ``carto_leak_k = 0`` and is not extractable.
        min_k_fraction (`float`, *optional*, defaults to 0.2): the fraction of tokens min-k%++ averages.
        batch_size (`int`, *optional*, defaults to 16): rows per forward pass; each pass holds
            ``batch_size x length x vocabulary`` logits.
        progress (`bool`, *optional*, defaults to `False`): show a progress bar over the batches.
        split_across_processes (`bool`, *optional*, defaults to `False`): under ``torch.distributed``,
            each process computes a share of the batches and all return every row's values; every
            process must then call it.

    Raises:
        ValueError: when a setting is out of range, or a row has fewer than 2 tokens (naming the
            first ten rows, by ``sample_id`` where the rows are a dataset's).
    """
    if k is not None and k < 1:
        raise ValueError(f"k must be a positive number of tokens; got {k}")
    if not 0.0 < min_k_fraction <= 1.0:
        raise ValueError(f"min_k_fraction must be a fraction in (0, 1]; got {min_k_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    from_dataset = isinstance(sequences, _ColumnRows)
    lengths = sequences.lengths() if from_dataset else np.array([len(s) for s in sequences], dtype=np.int64)
    # Checked before any batch, on every process alike: a process that raised inside its share
    # would leave the others waiting for its results.
    bad = np.flatnonzero(lengths < 2)
    if bad.size:
        names = sequences.names(bad[:10]) if from_dataset else bad[:10].tolist()
        raise ValueError(
            f"{bad.size} rows have fewer than 2 tokens (nothing to score); first sample_ids (or rows): {names}"
        )
    num_rows = len(lengths)
    starts = list(range(0, num_rows, batch_size))

    def batch(index: int) -> dict:
        start = starts[index]
        stop = min(start + batch_size, num_rows)
        rows = sequences[start:stop]
        return _batch_evidence(model, rows, _row_ks(lengths[start:stop], k), pad_token_id, min_k_fraction)

    with process_share() if split_across_processes else contextlib.nullcontext(), evaluation_mode(model):
        parts = map_batches(len(starts), batch, progress=progress, desc="Leakage columns")
    if not parts:
        empty = {LEAK_K: np.int32, LEAK_EXTRACTABLE: bool, LEAK_MATCHED: np.int32}
        return {name: np.zeros(0, dtype=empty.get(name, np.float32)) for name in LEAK_COLUMNS}
    return {name: np.concatenate([part[name] for part in parts]) for name in LEAK_COLUMNS}


def add_leakage_columns(dataset, model, *, column: str = "input_ids", overwrite: bool = False, **options: Any):
    """``dataset`` with the ``carto_leak_*`` columns of its token rows under ``model`` (usually the
    final model of the run that trained on it). Rows are read one batch at a time.

    Args:
        column (`str`, *optional*, defaults to ``"input_ids"``): the column of token ids.
        overwrite (`bool`, *optional*, defaults to `False`): replace ``carto_leak_*`` columns that
            are there already.
        **options: the keyword arguments of :func:`leakage_evidence` (``k``, ``min_k_fraction``,
            ``pad_token_id``, ``batch_size``, ``progress``, ``split_across_processes``); the
            progress bar is on by default here.

    Raises:
        ValueError: when ``column`` is missing, a row has fewer than 2 tokens (naming their
            ``sample_id``), or the columns exist and ``overwrite`` is False.
    """
    if column not in dataset.column_names:
        raise ValueError(f"the dataset has no {column!r} column of token ids; columns: {dataset.column_names}")
    present = [c for c in LEAK_COLUMNS if c in dataset.column_names]
    if present and not overwrite:
        raise ValueError(f"the dataset already has {present}; pass overwrite=True to replace them")
    values = leakage_evidence(model, _ColumnRows(dataset, column), **{"progress": True, **options})
    if present:
        dataset = dataset.remove_columns(present)
    for name in LEAK_COLUMNS:
        dataset = dataset.add_column(name, values[name])
    return dataset


def describe_k(k_range: list[int] | None) -> str:
    """``k = 16``, or ``k = 5-14 (half of each row)`` when the rows were tested with several."""
    if not k_range:
        return "k: no row long enough to test"
    low, high = k_range
    return f"k = {low}" if low == high else f"k = {low}-{high} (half of each row)"


def leakage_summary(dataset, by: str | None = None) -> dict[str, Any]:
    """Counts and means of the ``carto_leak_*`` columns, overall and per value of ``by`` (e.g.
    ``carto_quadrant``): rows tested for extraction, extractable rows, mean matched tokens, mean
    loss and mean min-k%++; ``k_range`` is the smallest and largest k a row was tested with."""
    cols = read_columns(dataset, list(LEAK_COLUMNS) + ([by] if by else []))

    def block(sel: np.ndarray) -> dict[str, Any]:
        tested = sel & (cols[LEAK_K] > 0)
        n = int(sel.sum())
        return {
            "rows": n,
            "tested": int(tested.sum()),
            "extractable": int((cols[LEAK_EXTRACTABLE] & sel).sum()),
            "mean_matched_tokens": float(cols[LEAK_MATCHED][tested].mean()) if tested.any() else None,
            "mean_loss": float(cols[LEAK_LOSS][sel].mean(dtype=np.float64)) if n else None,
            "mean_min_k_plus_plus": float(cols[LEAK_MIN_K_PLUS_PLUS][sel].mean(dtype=np.float64)) if n else None,
        }

    ks = cols[LEAK_K][cols[LEAK_K] > 0]
    summary: dict[str, Any] = {
        "k_range": [int(ks.min()), int(ks.max())] if ks.size else None,
        "all": block(np.ones(len(cols[LEAK_K]), dtype=bool)),
    }
    if by:
        summary["by"] = {str(v): block(cols[by] == v) for v in np.unique(cols[by])}
    return summary
