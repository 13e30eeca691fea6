"""One snapshot's losses placed into a column by ``sample_id``, a shard batch at a time, so that
merging never holds a snapshot's records at once.

Duplicates: in eval mode every copy of a sample was computed with the same weights, so copies must
agree (within ``atol + rtol * |loss|``; batch composition changes the last bits) or the merge
refuses. In train mode copies come from different moments of the epoch (a padding duplicate is
trained twice); the record with the smallest ``step`` (then lowest rank) is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["DUPLICATE_ATOL", "DUPLICATE_RTOL", "IdIndex", "SnapshotColumn"]

DUPLICATE_RTOL = 1e-4
DUPLICATE_ATOL = 1e-4


def first_ids(ids: np.ndarray, limit: int = 5) -> list[int]:
    """The first few ids of ``ids``, as the errors list them."""
    return [int(x) for x in ids[:limit]]


def disagreeing(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each group of copies (``values`` grouped, each group starting at ``starts``), whether its
    largest and smallest value lie further apart than the eval-mode tolerance. Non-finite values
    count as 0 here: they are reported on their own, after the merge."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.where(np.isfinite(values), values, 0.0)
    high = np.maximum.reduceat(finite, starts)
    low = np.minimum.reduceat(finite, starts)
    return (high - low) > DUPLICATE_ATOL + DUPLICATE_RTOL * np.abs(high)


def conflicting_copies(snapshot: int, ids: np.ndarray) -> ValueError:
    """The error for eval-mode copies of the samples ``ids`` that disagree."""
    return ValueError(
        f"snapshot {snapshot}: {ids.size} sample_ids were recorded more than once with different "
        f"losses (more than {DUPLICATE_ATOL} + {DUPLICATE_RTOL} x loss apart); first sample_ids: "
        f"{first_ids(ids)}. Eval-mode copies of a sample must agree: were these shards written by "
        "different runs?"
    )


class IdIndex:
    """Where each ``sample_id`` goes: its position among the expected ids sorted. For ids that form
    a run of consecutive integers (``0..N-1`` as the recorder numbers them) the position is the id
    minus the first, and no sorted copy is kept."""

    def __init__(self, sorted_ids: np.ndarray) -> None:
        self.n = sorted_ids.size
        contiguous = self.n > 0 and int(sorted_ids[-1]) - int(sorted_ids[0]) == self.n - 1
        self.base = int(sorted_ids[0]) if contiguous else None
        self.sorted_ids = None if contiguous else sorted_ids

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, known)`` of ids (positions of unknown ids are meaningless)."""
        if self.sorted_ids is None:
            pos = ids - self.base
            return pos, (pos >= 0) & (pos < self.n)
        pos = np.searchsorted(self.sorted_ids, ids)
        return pos, self.sorted_ids[np.minimum(pos, self.n - 1)] == ids

    def ids_at(self, positions: np.ndarray) -> np.ndarray:
        return positions + self.base if self.sorted_ids is None else self.sorted_ids[positions]


class SnapshotColumn:
    """One snapshot's losses placed by ``sample_id``, shard batch by shard batch.

    Memory: the loss column (and the token counts, when asked), a flag per sample and, for the
    copy rule, each placed record's step; the shards are read one batch at a time. The record kept
    for a sample is the one with the smallest ``step``, then the lowest rank, then the first in
    its file: what :func:`hf_carto.record.merge.merged_snapshot` keeps. In eval mode the copies of a
    sample must all lie within the tolerance of each other (largest minus smallest, as
    ``merged_snapshot`` checks): the values of every sample that has copies are kept aside (a few
    per sample, for the padding copies a sampler adds) and compared at the end.
    """

    def __init__(self, index: IdIndex, snapshot: int, mode: str, with_tokens: bool = True) -> None:
        n = index.n
        self.index, self.snapshot, self.mode = index, snapshot, mode
        self.losses = np.empty(n, dtype=np.float32)
        self.n_tokens = np.empty(n, dtype=np.int32) if with_tokens else None
        self.step = np.empty(n, dtype=np.int64)
        self.seen = np.zeros(n, dtype=bool)
        self.num_records = 0
        self.unknown: list[np.ndarray] = []  # distinct unknown ids of each batch
        self.copies: list[tuple[np.ndarray, np.ndarray]] = []  # (positions, losses) of samples with copies

    def add(self, records: dict[str, np.ndarray]) -> None:
        self.num_records += records["sample_id"].size
        # By id, then step; stable, so among equal steps the first in the file comes first. Sorted
        # queries also keep the id look-up cache-friendly.
        order = np.lexsort((records["step"], records["sample_id"]))
        ids, loss, tokens, step = (records[k][order] for k in ("sample_id", "loss", "n_tokens", "step"))
        pos, known = self.index.positions(ids)
        if not known.all():
            self.unknown.append(np.unique(ids[~known]))
            pos, loss, tokens, step = pos[known], loss[known], tokens[known], step[known]
        if not pos.size:
            return
        first = np.r_[True, pos[1:] != pos[:-1]]
        if self.mode == "eval":
            self._keep_copies(pos, loss, first)
        pos, loss, tokens, step = pos[first], loss[first], tokens[first], step[first]
        earlier = self.seen[pos]
        take = ~earlier | (step < self.step[pos])
        where = pos[take]
        self.losses[where], self.step[where] = loss[take], step[take]
        if self.n_tokens is not None:
            self.n_tokens[where] = tokens[take]
        self.seen[pos] = True

    def _keep_copies(self, pos: np.ndarray, loss: np.ndarray, first: np.ndarray) -> None:
        """Set aside every value of a sample with copies: copies within this batch, and for a
        sample placed by an earlier batch, the value placed then (earlier copies beyond it were set
        aside when they met)."""
        group = np.cumsum(first) - 1
        multiple = np.bincount(group)[group] > 1
        before = self.seen[pos]
        involved = multiple | before
        if involved.any():
            self.copies.append((pos[involved], loss[involved]))
            placed = np.unique(pos[before])
            self.copies.append((placed, self.losses[placed]))

    def _conflicts(self) -> np.ndarray:
        """The ids whose eval-mode copies lie further apart than the tolerance."""
        if not self.copies:
            return np.empty(0, dtype=np.int64)
        pos = np.concatenate([p for p, _ in self.copies])
        values = np.concatenate([v for _, v in self.copies])
        order = np.argsort(pos, kind="stable")
        pos, values = pos[order], values[order]
        starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])
        return np.sort(self.index.ids_at(pos[starts[disagreeing(values, starts)]]))

    def finish(self, where: Path) -> None:
        """Raise what went wrong, the way :func:`hf_carto.record.merge.merged_snapshot` names it."""
        t = self.snapshot
        if self.num_records == 0:
            raise ValueError(f"{where}: the shards hold no records")
        conflicts = self._conflicts()
        if conflicts.size:
            raise conflicting_copies(t, conflicts)
        if self.unknown:
            unknown = np.unique(np.concatenate(self.unknown))
            raise ValueError(
                f"snapshot {t}: {unknown.size} recorded sample_ids are not in the dataset; first: "
                f"{first_ids(unknown)}. Was the dataset re-indexed after recording?"
            )
        if not self.seen.all():
            missing = np.flatnonzero(~self.seen)
            raise ValueError(
                f"snapshot {t}: {missing.size} of {self.index.n} samples have no recorded loss; first "
                f"sample_ids: {first_ids(self.index.ids_at(missing[:5]))}"
            )
