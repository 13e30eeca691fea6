"""Small helpers shared by the batched evaluation loops."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

__all__ = ["batch_starts", "evaluation_mode"]


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
