"""Canary rules that need no model: which canary labels a block, and how secrets are drawn."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_carto.data.canaries import SECRET_FORMATS, SECRET_WORDS, Canary, canary_id_column, draw_secret


def naive_canary_ids(canaries, sample_ids):
    """Every block, every canary: the lowest id among the canaries that list the block."""
    out = []
    for sid in sample_ids:
        owners = [c.canary_id for c in canaries if int(sid) in c.sample_ids]
        out.append(min(owners) if owners else -1)
    return out


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 30), max_size=6), max_size=6),
    st.permutations(list(range(6))),
    st.lists(st.integers(0, 35), max_size=40),
)
def test_canary_id_column_matches_a_naive_loop(listed, ids, sample_ids):
    # Canary ids in any order: the lowest id wins, not the first canary in the list.
    canaries = [Canary(ids[i], "p", "1", "digits", 1, blocks) for i, blocks in enumerate(listed)]
    labels = canary_id_column(canaries, np.array(sample_ids, dtype=np.int64))
    assert labels.dtype == np.int64 and labels.shape == (len(sample_ids),)
    assert labels.tolist() == naive_canary_ids(canaries, sample_ids)


def test_canary_id_column_matches_the_packed_blocks_rule():
    # The rule the packed-data builder applied by hand: over the canaries in reverse id order,
    # write each canary's id into its blocks, so the lowest id is written last.
    canaries = [Canary(0, "a", "1", "digits", 1, [1, 4]), Canary(1, "b", "2", "digits", 1, [4, 5, 7])]
    by_hand = np.full(9, -1, dtype=np.int64)
    for canary in reversed(canaries):
        by_hand[canary.sample_ids] = canary.canary_id
    np.testing.assert_array_equal(canary_id_column(canaries, np.arange(9)), by_hand)


def test_drawn_secrets_have_their_format():
    rng = np.random.default_rng(0)
    assert len(draw_secret(rng, "digits", 7)) == 7
    assert all(word in SECRET_WORDS for word in draw_secret(rng, "words", 3).split(" "))
    tokens = draw_secret(rng, "tokens", 4).split(" ")
    assert len(tokens) == 4 and all(len(t) == 3 and t.isalpha() for t in tokens)
    assert set(SECRET_FORMATS) == {"digits", "words", "tokens"}
