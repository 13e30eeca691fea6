"""Per-sample causal-LM loss: the quantity every cartography score is built from."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["per_sample_loss", "token_nll"]


def token_nll(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token negative log-likelihood of every position, and the mask of real targets.

    Returns ``(nll, mask)``, both of shape ``(B, L - 1)``: ``nll[i, j]`` is the loss of predicting
    ``labels[i, j + 1]`` from ``logits[i, j]`` (0 where the target is ``ignore_index``). The
    log-softmax runs in float32, as in the Hugging Face causal-LM loss.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits (B, L, V) and labels (B, L); got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    # Shift the labels, not the logits: slicing logits[:, :-1] would make a strided view that
    # cross_entropy must copy (B x L x V floats). The padded last position is ignored.
    shift_labels = F.pad(labels, (0, 1), value=ignore_index)[:, 1:].to(logits.device)
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).view_as(shift_labels)[:, :-1]
    shift_labels = shift_labels[:, :-1]
    return nll, shift_labels != ignore_index


def per_sample_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -100,
    return_counts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mean next-token negative log-likelihood of each row, ignoring ``ignore_index`` targets.

    Position ``j`` of ``logits`` predicts ``labels[:, j + 1]`` (the shift the Hugging Face
    causal-LM loss applies). For row ``i`` with target set ``S_i = {j : labels[i, j+1] != ignore}``::

        loss_i = -(1 / |S_i|) * sum_{j in S_i} log softmax(logits[i, j])[labels[i, j + 1]]

    so the token-weighted mean of ``loss_i`` (weights ``|S_i|``) equals the HF batch loss. The
    log-softmax runs in float32 even for half-precision logits. A row with no target gets ``nan``
    (it has no loss), which callers must handle rather than average in.

    Args:
        logits (`torch.Tensor` of shape `(B, L, V)`): model outputs.
        labels (`torch.Tensor` of shape `(B, L)`): token ids, `ignore_index` where no target.
        ignore_index (`int`, *optional*, defaults to `-100`): label value to skip.
        return_counts (`bool`, *optional*, defaults to `False`): also return `|S_i|` (int64).

    Returns:
        `torch.Tensor` of shape `(B,)` (float32), and the counts when `return_counts`.

    Example:
        >>> logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens
        >>> per_sample_loss(logits, torch.tensor([[1, 2, 3]])).item() == torch.log(torch.tensor(4.0)).item()
        True
    """
    nll, mask = token_nll(logits, labels, ignore_index)
    counts = mask.sum(dim=1)
    losses = nll.sum(dim=1) / counts  # 0 / 0 = nan for rows without targets
    return (losses, counts) if return_counts else losses
