"""Per-row leakage columns against real greedy `generate` calls and per-row naive references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from hf_carto.core.columns import LEAK_COLUMNS
from hf_carto.core.models import tiny_gpt2
from hf_carto.measure.leakage_columns import add_leakage_columns, leakage_evidence, leakage_summary

VOCAB, K = 40, 6


@pytest.fixture(scope="module")
def model():
    m = tiny_gpt2(VOCAB, n_layer=2, n_embd=32, n_head=2, n_positions=64, eos_token_id=0, seed=3)
    m.generation_config.eos_token_id = None  # decode exactly k tokens: the reference never stops early
    return m.eval()


def greedy(model, prefix: list[int], n: int) -> list[int]:
    """The naive reference: transformers' own greedy decoding (cached, one token at a time)."""
    ids = torch.tensor([prefix])
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n, pad_token_id=0
    )
    return out[0, len(prefix) :].tolist()


def leading(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def naive_loss_and_min_k_plus_plus(model, row: list[int], fraction: float) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([row])).logits[0, :-1].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(row[1:])
    logp = log_probs[torch.arange(len(targets)), targets]
    probs = log_probs.exp()
    mu = (probs * log_probs).sum(-1)
    sigma = ((probs * log_probs**2).sum(-1) - mu**2).sqrt()
    z = sorted(((logp - mu) / sigma).tolist())
    take = max(1, math.ceil(fraction * len(z)))
    return float(-logp.mean()), float(np.mean(z[:take]))


def planted_rows(model, rng, count: int) -> tuple[list[list[int]], list[int]]:
    """Rows of 2K tokens: a random prefix, then the model's greedy continuation with its j-th token
    changed (j = K: unchanged, so the row is extractable). Returns the rows and each j."""
    rows, js = [], []
    for i in range(count):
        prefix = rng.integers(1, VOCAB, size=K).tolist()
        continuation = greedy(model, prefix, K)
        j = int(i % (K + 1))
        if j < K:
            continuation[j] = (continuation[j] % (VOCAB - 1)) + 1 if continuation[j] != VOCAB - 1 else 1
        rows.append(prefix + continuation)
        js.append(j)
    return rows, js


def test_the_columns_equal_greedy_generate_and_per_row_references(model):
    rng = np.random.default_rng(0)
    rows, js = planted_rows(model, rng, 21)
    rows += rng.integers(0, VOCAB, size=(11, 2 * K)).tolist()  # ordinary rows: whatever greedy gives
    got = leakage_evidence(model, rows, batch_size=5)
    for i, row in enumerate(rows):
        reference = greedy(model, row[:K], K)
        matched = leading(reference, row[K:])
        assert got["carto_leak_k"][i] == K
        assert got["carto_leak_matched_tokens"][i] == matched, i
        assert got["carto_leak_extractable"][i] == (reference == row[K:]), i
        loss, mkpp = naive_loss_and_min_k_plus_plus(model, row, 0.2)
        assert got["carto_leak_loss"][i] == pytest.approx(loss, rel=1e-4, abs=1e-5)
        assert got["carto_leak_min_k_plus_plus"][i] == pytest.approx(mkpp, rel=1e-4, abs=1e-4)
    # The planted rows: j leading tokens reproduced, extractable exactly when nothing was changed.
    np.testing.assert_array_equal(got["carto_leak_matched_tokens"][:21], js)
    np.testing.assert_array_equal(got["carto_leak_extractable"][:21], np.array(js) == K)
    assert got["carto_leak_extractable"].sum() >= 3


def test_batching_does_not_change_the_values(model):
    rng = np.random.default_rng(1)
    rows = rng.integers(0, VOCAB, size=(13, 2 * K)).tolist()
    one = leakage_evidence(model, rows, batch_size=1)
    many = leakage_evidence(model, rows, batch_size=13)
    for name in LEAK_COLUMNS:
        np.testing.assert_allclose(one[name], many[name], rtol=1e-5, atol=1e-6)


def test_rows_of_different_lengths_and_an_explicit_k(model):
    rng = np.random.default_rng(2)
    rows = [rng.integers(1, VOCAB, size=n).tolist() for n in (2, 5, 9, 12, 20)]
    halves = leakage_evidence(model, rows, batch_size=2)
    np.testing.assert_array_equal(halves["carto_leak_k"], [1, 2, 4, 6, 10])
    for i, row in enumerate(rows):
        k = len(row) // 2
        reference = greedy(model, row[:k], k)
        assert halves["carto_leak_matched_tokens"][i] == leading(reference, row[k : 2 * k])
        loss, _ = naive_loss_and_min_k_plus_plus(model, row, 0.2)  # padding does not leak into the loss
        assert halves["carto_leak_loss"][i] == pytest.approx(loss, rel=1e-4, abs=1e-5)
    fixed = leakage_evidence(model, rows, k=5, batch_size=4)
    np.testing.assert_array_equal(fixed["carto_leak_k"], [0, 0, 0, 5, 5])  # shorter than 2k: not tested
    assert not fixed["carto_leak_extractable"][:3].any()
    for i in (3, 4):
        assert fixed["carto_leak_matched_tokens"][i] == leading(greedy(model, rows[i][:5], 5), rows[i][5:10])


def test_add_leakage_columns_to_a_dataset_and_its_errors(model):
    rng = np.random.default_rng(3)
    rows, _ = planted_rows(model, rng, 14)
    ds = Dataset.from_dict({"input_ids": rows, "sample_id": list(range(500, 514))})
    out = add_leakage_columns(ds, model, batch_size=4, progress=False)
    assert out.column_names == ["input_ids", "sample_id", *LEAK_COLUMNS]
    direct = leakage_evidence(model, rows, batch_size=4)
    for name in LEAK_COLUMNS:
        np.testing.assert_array_equal(np.asarray(out[name]), direct[name])
    assert out.features["carto_leak_extractable"].dtype == "bool"
    extractable = out.filter(lambda e: e, input_columns="carto_leak_extractable")
    assert extractable["sample_id"] == [500 + i for i in range(14) if i % (K + 1) == K]

    with pytest.raises(ValueError, match="already has"):
        add_leakage_columns(out, model, progress=False)
    again = add_leakage_columns(out, model, progress=False, overwrite=True)
    assert again.column_names == out.column_names
    with pytest.raises(ValueError, match="no 'tokens' column"):
        add_leakage_columns(ds, model, column="tokens", progress=False)
    short = Dataset.from_dict({"input_ids": [[1, 2, 3], [4], [5, 6], []], "sample_id": [7, 8, 9, 10]})
    with pytest.raises(ValueError, match=r"2 rows .* fewer than 2 tokens.*\[8, 10\]"):
        add_leakage_columns(short, model, progress=False)
    with pytest.raises(ValueError, match="k must be"):
        leakage_evidence(model, rows, k=0)


def test_the_summary_counts_by_hand(model):
    rng = np.random.default_rng(4)
    rows, js = planted_rows(model, rng, 14)
    quadrant = [i % 3 for i in range(14)]
    ds = Dataset.from_dict({"input_ids": rows, "carto_quadrant": quadrant})
    ds = add_leakage_columns(ds, model, progress=False)
    s = leakage_summary(ds, by="carto_quadrant")
    assert s["k_range"] == [K, K]
    assert s["all"]["rows"] == s["all"]["tested"] == 14
    assert s["all"]["extractable"] == sum(j == K for j in js)
    assert s["all"]["mean_matched_tokens"] == pytest.approx(np.mean(js))
    for q in range(3):
        members = [j for j, qq in zip(js, quadrant, strict=True) if qq == q]
        assert s["by"][str(q)]["extractable"] == sum(j == K for j in members)
        assert s["by"][str(q)]["rows"] == len(members)
