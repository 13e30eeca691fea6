"""The streaming Arrow packer against the in-memory insert + pack + whole-copies reference."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, Features, Value
from datasets import Sequence as SequenceFeature

from hf_carto.data.packing import insert_documents, pack_documents, whole_copies
from hf_carto.data.stream_packing import pack_arrow


def _tokenized(docs, tmp_path):
    """Documents in an Arrow file (a new one each call), as datasets.map tokenization leaves them."""
    name = f"tokens-{len(list(tmp_path.glob('tokens-*.arrow')))}.arrow"
    features = Features({"ids": SequenceFeature(Value("int32"))})
    return Dataset.from_dict({"ids": docs}, features=features).map(
        lambda b: b, batched=True, cache_file_name=str(tmp_path / name)
    )


def _reference(docs, kinds, inserted, inserted_kinds, block_size, seed):
    combined, combined_kinds, origin = insert_documents(docs, kinds, inserted, inserted_kinds, seed=seed)
    blocks = pack_documents(combined, block_size, kinds=combined_kinds)
    positions = np.flatnonzero(origin >= 0)
    whole = np.full(len(inserted), -1, dtype=np.int64)
    whole[origin[positions]] = whole_copies(combined, positions, block_size)
    return blocks, whole


@pytest.mark.parametrize(
    ("seed", "chunk_tokens", "block_size"),
    [(0, 7, 5), (1, 1, 3), (2, 64, 8), (3, 10**6, 4), (4, 13, 16)],
)
def test_pack_arrow_equals_insert_pack_and_whole_copies(tmp_path, seed, chunk_tokens, block_size):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(1, 50, size=rng.integers(1, 25)).tolist() + [0] for _ in range(120)]
    kinds = rng.choice([0, 0, 0, 3, 4], size=len(docs)).tolist()
    # Planted documents, some longer than a block, and copies that share their token list.
    inserted = [rng.integers(50, 90, size=rng.integers(1, 12)).tolist() + [0] for _ in range(9)]
    inserted = inserted + inserted[:3] * 4
    inserted_kinds = rng.choice([1, 2], size=len(inserted)).tolist()
    ref, ref_whole = _reference(docs, kinds, inserted, inserted_kinds, block_size, seed)

    packed = pack_arrow(
        _tokenized(docs, tmp_path),
        tmp_path / "blocks.arrow",
        block_size,
        kinds=kinds,
        inserted=inserted,
        inserted_kinds=inserted_kinds,
        seed=seed,
        decode=lambda rows: [" ".join(map(str, row)) for row in rows],
        chunk_tokens=chunk_tokens,
        progress=False,
    )
    assert packed.blocks.features.copy() == {**ref.features, "text": packed.blocks.features["text"]}
    for name in ref.column_names:
        assert packed.blocks[name][:] == ref[name][:], name
    assert packed.blocks["text"][:] == [" ".join(map(str, row)) for row in ref["input_ids"][:]]
    np.testing.assert_array_equal(packed.whole_copy_blocks, ref_whole)
    assert (ref_whole >= 0).any() and (ref_whole < 0).any()  # both cases occur
    assert packed.num_tokens == sum(map(len, docs)) + sum(map(len, inserted))


def test_pack_arrow_places_inserted_documents_at_both_ends(tmp_path):
    """A seed that puts inserted documents before the first and after the last original."""
    docs = [[1, 2, 0], [3, 0], [4, 5, 6, 0]]
    inserted = [[9, 0], [8, 0], [7, 0]]
    for seed in range(40):
        combined, _, origin = insert_documents(docs, [0] * 3, inserted, [1] * 3, seed=seed)
        if origin[0] >= 0 and origin[-1] >= 0:
            break
    else:
        pytest.fail("no seed places inserted documents at both ends")
    packed = pack_arrow(
        _tokenized(docs, tmp_path), tmp_path / "b.arrow", 2, inserted=inserted, inserted_kinds=[1] * 3, seed=seed
    )
    assert packed.blocks["input_ids"][:] == pack_documents(combined, 2)["input_ids"][:]


def test_pack_arrow_reads_a_shuffled_view_in_its_order(tmp_path):
    docs = [[i, i + 1, 0] for i in range(1, 40, 2)]
    view = _tokenized(docs, tmp_path).shuffle(seed=0)
    packed = pack_arrow(view, tmp_path / "b.arrow", 4, progress=False)
    assert packed.blocks["input_ids"][:] == pack_documents(view["ids"][:], 4)["input_ids"][:]


def test_pack_arrow_refuses_what_the_reference_refuses(tmp_path):
    with pytest.raises(ValueError, match="do not fill one block"):
        pack_arrow(_tokenized([[1, 0]], tmp_path), tmp_path / "b.arrow", 3, progress=False)
    with pytest.raises(ValueError, match="block_size must be >= 2"):
        pack_arrow(_tokenized([[1, 0]], tmp_path), tmp_path / "c.arrow", 1, progress=False)
    with pytest.raises(ValueError, match="got 1 kinds for 2 documents"):
        pack_arrow(_tokenized([[1, 0], [2, 0]], tmp_path), tmp_path / "d.arrow", 2, kinds=[0], progress=False)
