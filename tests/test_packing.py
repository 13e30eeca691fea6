"""Packing and insertion against naive reference implementations."""

from __future__ import annotations

import numpy as np
import pytest

from hf_carto.core.columns import PLANTED_NAMES
from hf_carto.data.packing import insert_documents, pack_documents, whole_copies

PRIORITY = ["canary", "contaminated", "duplicate", "noise", "ordinary"]


def naive_pack(docs, kinds, block_size):
    stream, stream_kinds = [], []
    for doc, kind in zip(docs, kinds, strict=True):
        for token in doc:
            stream.append(token)
            stream_kinds.append(kind)
    blocks, truth = [], []
    for start in range(0, len(stream) - block_size + 1, block_size):
        blocks.append(stream[start : start + block_size])
        present = {PLANTED_NAMES[k] for k in stream_kinds[start : start + block_size]}
        truth.append(PLANTED_NAMES.index(next(name for name in PRIORITY if name in present)))
    return blocks, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pack_documents_matches_a_token_by_token_reference(seed):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 50, size=rng.integers(1, 20)).tolist() for _ in range(60)]
    kinds = rng.integers(0, len(PLANTED_NAMES), size=len(docs)).tolist()
    block_size = int(rng.integers(2, 17))
    packed = pack_documents(docs, block_size, kinds=kinds, first_sample_id=7)
    blocks, truth = naive_pack(docs, kinds, block_size)
    assert packed["input_ids"][:] == blocks
    assert packed["labels"][:] == blocks
    assert packed["truth"][:] == truth
    assert packed["sample_id"][:] == list(range(7, 7 + len(blocks)))
    canary = PLANTED_NAMES.index("canary")
    assert packed["is_canary"][:] == [t == canary for t in truth]  # canary has the top priority


def test_pack_documents_refuses_too_little_text():
    with pytest.raises(ValueError, match="do not fill one block"):
        pack_documents([[1, 2]], 3)
    with pytest.raises(ValueError, match="block_size must be >= 2"):
        pack_documents([[1, 2]], 1)


def test_insert_documents_keeps_every_document_and_the_original_order():
    docs = [[i] for i in range(100)]
    inserted = [[1000 + j] for j in range(30)]
    out, kinds, origin = insert_documents(docs, [0] * 100, inserted, [2] * 30, seed=3)
    flat = [d[0] for d in out]
    assert sorted(flat) == sorted(range(100)) + sorted(1000 + j for j in range(30))
    assert [t for t in flat if t < 1000] == list(range(100))  # originals keep their order
    assert all((k == 2) == (t >= 1000) for t, k in zip(flat, kinds, strict=True))
    assert all(o == (t - 1000 if t >= 1000 else -1) for t, o in zip(flat, origin, strict=True))
    again, _, _ = insert_documents(docs, [0] * 100, inserted, [2] * 30, seed=3)
    assert again == out
    other, _, _ = insert_documents(docs, [0] * 100, inserted, [2] * 30, seed=4)
    assert other != out
    positions = [i for i, t in enumerate(flat) if t >= 1000]
    assert positions[0] < 65 and positions[-1] > 65  # spread over the corpus, not appended


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_whole_copies_matches_a_search_of_the_packed_blocks(seed):
    """The block found from document offsets is the one a token search of the blocks finds."""
    rng = np.random.default_rng(seed)
    eos = 0
    needle = [97, 98, 99]  # tokens no ordinary document uses
    docs = [rng.integers(1, 50, size=rng.integers(1, 12)).tolist() + [eos] for _ in range(40)]
    docs, _, origin = insert_documents(docs, [0] * len(docs), [needle + [eos]] * 12, [2] * 12, seed=seed)
    block_size = int(rng.integers(4, 10))
    blocks = pack_documents(docs, block_size)["input_ids"][:]
    positions = np.flatnonzero(origin >= 0)
    found = whole_copies(docs, positions, block_size)
    expected = []
    for position in positions:
        start = sum(len(d) for d in docs[:position])
        block = start // block_size
        inside = block < len(blocks) and blocks[block][start % block_size : start % block_size + 3] == needle
        expected.append(block if inside else -1)
    assert found.tolist() == expected
    assert (found >= 0).any() and (found < 0).any()  # both cases occur in these seeds
