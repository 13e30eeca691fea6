"""Small helpers shared by the batched evaluation loops, and the split of their batches across
processes.

Inside ``with split_across_processes():`` under ``torch.distributed`` (an ``accelerate launch``
with an ``Accelerator`` or a ``PartialState`` created), every loop written with
:func:`map_batches` runs each process on every world-size-th batch and gives every process all
results, in batch order. A batch holds the same items whatever the process count, so the results
equal one process's; every process must then run the same calls. Loops nested inside a batch run
whole on the process that took the batch. Outside the block nothing is split, so a process alone
(the main one after the others have left) never waits for the others.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch

__all__ = [
    "batch_starts",
    "evaluation_mode",
    "right_pad",
    "split_across_processes",
    "map_batches",
    "writes_outputs",
]

T = TypeVar("T")
_SPLIT: contextvars.ContextVar[bool] = contextvars.ContextVar("hf_carto_split_across_processes", default=False)


@contextlib.contextmanager
def split_across_processes(enabled: bool = True) -> Iterator[None]:
    """Split the batches of :func:`map_batches` loops across the processes inside the block."""
    token = _SPLIT.set(enabled)
    try:
        yield
    finally:
        _SPLIT.reset(token)


def _share() -> tuple[int, int]:
    """``(rank, world size)`` the batches are split by: the process group's inside the block."""
    if _SPLIT.get() and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def writes_outputs() -> bool:
    """Whether this process writes shared outputs: always, unless batches are split across
    processes (then the first process does)."""
    return _share()[0] == 0


def map_batches(count: int, compute: Callable[[int], T], *, progress: bool = False, desc: str = "") -> list[T]:
    """``[compute(0), ..., compute(count - 1)]`` on every process; inside
    :func:`split_across_processes`, each process computes every world-size-th item and the results
    are gathered."""
    rank, world = _share()
    mine: Iterable[int] = range(rank, count, world)
    if progress and rank == 0:
        from tqdm.auto import tqdm

        mine = tqdm(mine, desc=desc)
    token = _SPLIT.set(False)  # what a batch runs inside stays on this process
    try:
        results = [(index, compute(index)) for index in mine]
    finally:
        _SPLIT.reset(token)
    if world == 1:
        return [value for _, value in results]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, results)
    merged = sorted((pair for part in gathered for pair in part), key=lambda pair: pair[0])
    return [value for _, value in merged]


def batch_starts(total: int, batch_size: int, *, progress: bool = False, desc: str = "") -> Iterable[int]:
    """Start offsets of the batches, wrapped in a progress bar when asked."""
    starts = range(0, total, batch_size)
    if not progress:
        return starts
    from tqdm.auto import tqdm

    return tqdm(starts, desc=desc)


@contextlib.contextmanager
def evaluation_mode(*models: torch.nn.Module | None) -> Iterator[None]:
    """``model.eval()`` and no gradients inside the block; each model's training flag restored after."""
    present = [m for m in models if m is not None]
    flags = [m.training for m in present]
    for model in present:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for model, flag in zip(present, flags, strict=True):
            model.train(flag)


def right_pad(rows: Sequence[Sequence[int]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Token rows of different lengths as one right-padded batch.

    Returns ``input_ids`` (``pad_id`` after each row), ``labels`` (the tokens, ``-100`` on padding)
    and ``attention_mask``, each of shape ``(len(rows), longest row)``.
    """
    width = max(len(r) for r in rows)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        labels[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    mask = (labels != -100).long()
    return {"input_ids": labels.masked_fill(mask == 0, pad_id), "labels": labels, "attention_mask": mask}
