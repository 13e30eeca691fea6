"""Small helpers shared by the batched evaluation loops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence

import torch

__all__ = ["batch_starts", "evaluation_mode", "right_pad"]


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
