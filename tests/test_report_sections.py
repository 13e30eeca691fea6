"""evaluate_model's membership sections: subsets of the members against the same non-members, and
planted blocks against blocks of the same construction."""

from __future__ import annotations

import numpy as np
import pytest

from hf_carto.membership import membership_metrics, membership_signals
from hf_carto.report import evaluate_model, format_report


class _Tokenizer:
    """Only what evaluate_model asks of a tokenizer when it is given token ids."""

    pad_token_id = 0
    eos_token = "<eos>"


@pytest.fixture(scope="module")
def model():
    from hf_carto.models import tiny_gpt2

    return tiny_gpt2(50, n_positions=32, n_embd=32, n_layer=1, n_head=2, seed=0).eval()


def sequences(n: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 50, size=(n, 16)).tolist()


def test_member_subsets_are_scored_against_the_same_non_members(model):
    members, non_members = sequences(40, 0), sequences(30, 1)
    mask = np.arange(40) % 3 != 0
    report = evaluate_model(
        model, _Tokenizer(), members=members, non_members=non_members, member_subsets={"common": mask}, seed=4
    )
    subset = report["membership_subsets"]["common"]
    scores = membership_signals(model, [m for m, keep in zip(members, mask, strict=True) if keep])
    outside = membership_signals(model, non_members)
    for signal in ("loss", "min_k"):
        direct = membership_metrics(signal, scores[signal], outside[signal], seed=4)
        assert subset[signal]["auc"] == pytest.approx(direct.auc)
        assert subset[signal]["num_members"] == int(mask.sum()) and subset[signal]["num_non_members"] == 30
    assert report["membership"]["loss"]["num_members"] == 40
    with pytest.raises(ValueError, match="non-empty boolean mask over the 40 members"):
        evaluate_model(model, _Tokenizer(), members=members, non_members=non_members, member_subsets={"x": mask[:5]})


def test_planted_blocks_get_their_own_membership_test(model):
    planted, planted_out = sequences(12, 2), sequences(9, 3)
    report = evaluate_model(model, _Tokenizer(), planted_members=planted, planted_non_members=planted_out)
    section = report["planted_membership"]
    assert section["loss"]["num_members"] == 12 and section["loss"]["num_non_members"] == 9
    direct = membership_metrics(
        "loss", membership_signals(model, planted)["loss"], membership_signals(model, planted_out)["loss"]
    )
    assert section["loss"]["auc"] == pytest.approx(direct.auc)
    assert "planted blocks" in format_report(report)
    with pytest.raises(ValueError, match="needs both sets"):
        evaluate_model(model, _Tokenizer(), planted_members=planted)
