"""per_sample_loss against a per-row loop and against the Hugging Face causal-LM loss."""

from __future__ import annotations

import math

import pytest
import torch

from hf_carto.record.losses import per_sample_loss


def loop_reference(logits, labels, ignore_index=-100):
    out = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        total, count = 0.0, 0
        for j in range(len(row_labels) - 1):
            target = int(row_labels[j + 1])
            if target == ignore_index:
                continue
            total -= float(torch.log_softmax(row_logits[j].double(), dim=-1)[target])
            count += 1
        out.append(total / count if count else math.nan)
    return torch.tensor(out, dtype=torch.float64)


def random_batch(seed=0, batch=5, length=9, vocab=13):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=g) * 3
    labels = torch.randint(0, vocab, (batch, length), generator=g)
    labels[1, 5:] = -100  # right padding
    labels[2, :3] = -100  # masked prompt
    labels[3, 1:] = -100  # no target at all
    return logits, labels


def test_matches_per_row_loop():
    logits, labels = random_batch()
    losses, counts = per_sample_loss(logits, labels, return_counts=True)
    expected = loop_reference(logits, labels)
    torch.testing.assert_close(losses.double(), expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert counts.tolist() == [8, 4, 6, 0, 8]
    assert math.isnan(losses[3].item())


def test_token_weighted_mean_equals_hf_loss(tiny_gpt2):
    torch.manual_seed(1)
    input_ids = torch.randint(0, 97, (4, 20))
    labels = input_ids.clone()
    labels[0, 12:] = -100
    labels[2, 7:] = -100
    with torch.no_grad():
        out = tiny_gpt2(input_ids=input_ids, labels=labels)
    losses, counts = per_sample_loss(out.logits, labels, return_counts=True)
    weighted = (losses * counts).sum() / counts.sum()
    torch.testing.assert_close(weighted, out.loss, rtol=1e-5, atol=1e-6)


def test_half_precision_logits_are_computed_in_float32():
    logits, labels = random_batch(seed=3)
    full = per_sample_loss(logits, labels)
    half = per_sample_loss(logits.bfloat16(), labels)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=2e-2, atol=2e-2, equal_nan=True)


def test_custom_ignore_index():
    logits, labels = random_batch(seed=4)
    labels = torch.where(labels == -100, torch.tensor(7), labels)
    losses = per_sample_loss(logits, labels, ignore_index=7)
    torch.testing.assert_close(
        losses.double(), loop_reference(logits, labels, 7), rtol=1e-5, atol=1e-6, equal_nan=True
    )


def test_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 4\) and \(2, 4\)"):
        per_sample_loss(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
