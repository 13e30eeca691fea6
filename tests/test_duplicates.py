"""Duplicate clusters against a naive exact grouping and datasketch's own MinHash, and cluster-wide curation."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from datasets import Dataset

from hf_carto.core.columns import DUP_EXACT_ID, DUP_EXACT_SIZE, DUP_NEAR_ID, DUP_NEAR_SIZE
from hf_carto.curation.interventions import apply_interventions
from hf_carto.score.duplicates import add_duplicate_columns, duplicate_clusters, hotspot_duplication

datasketch = pytest.importorskip("datasketch", reason="datasketch is a dependency: pip install -e '.[test]'")

BLOCK, VOCAB = 64, 5000


def planted_blocks(seed=0):
    """Random blocks, exact copies of some, and copies of others with one token changed."""
    rng = np.random.default_rng(seed)
    blocks = [rng.integers(0, VOCAB, BLOCK).tolist() for _ in range(120)]
    for source in range(0, 20, 2):  # exact copies: 2 or 3 of a block
        blocks += [list(blocks[source])] * (1 + source % 3)
    for source in range(30, 50, 4):  # near copies: one token replaced in the middle
        copy = list(blocks[source])
        copy[BLOCK // 2] = (copy[BLOCK // 2] + 1) % VOCAB
        blocks.append(copy)
    order = rng.permutation(len(blocks))
    return [blocks[i] for i in order]


def components(n, pairs):
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in pairs:
        parent[max(find(a), find(b))] = min(find(a), find(b))
    return [find(i) for i in range(n)]


def same_partition(labels_a, labels_b):
    pairs_a = {(i, j) for i in range(len(labels_a)) for j in range(i) if labels_a[i] == labels_a[j]}
    pairs_b = {(i, j) for i in range(len(labels_b)) for j in range(i) if labels_b[i] == labels_b[j]}
    return pairs_a == pairs_b


def test_exact_clusters_equal_a_naive_grouping():
    blocks = planted_blocks()
    ids = np.arange(len(blocks), dtype=np.int64) * 10 + 7
    clusters = duplicate_clusters(blocks, ids)
    groups = defaultdict(list)
    for sample_id, block in zip(ids.tolist(), blocks, strict=True):
        groups[tuple(block)].append(sample_id)
    for row, block in enumerate(blocks):
        members = groups[tuple(block)]
        assert clusters.exact_id[row] == min(members)
        assert clusters.exact_size[row] == len(members)
    assert (clusters.exact_size > 1).sum() == 10 + sum(1 + s % 3 for s in range(0, 20, 2))


def test_near_clusters_equal_the_components_of_datasketch_jaccard_pairs():
    blocks = planted_blocks()
    ngram, threshold = 5, 0.8
    clusters = duplicate_clusters(blocks, ngram=ngram, threshold=threshold)

    def minhash(block):
        shingles = {b"\x00".join(np.asarray(block[i : i + ngram], dtype=np.int64)) for i in range(BLOCK - ngram + 1)}
        h = datasketch.MinHash(num_perm=128, seed=1)
        h.update_batch(sorted(shingles))
        return h

    hashes = [minhash(b) for b in blocks]
    pairs = [
        (i, j) for i in range(len(blocks)) for j in range(i) if hashes[i].jaccard(hashes[j]) >= threshold
    ]  # every pair, no LSH: what the index must find
    expected = components(len(blocks), pairs)
    assert same_partition(clusters.near_id.tolist(), expected)
    near_only = (clusters.near_size > 1) & (clusters.exact_size == 1)
    assert near_only.sum() == 10  # the five one-token edits and their sources
    assert (clusters.near_size >= clusters.exact_size).all()


def test_columns_on_a_dataset_and_the_hotspot_breakdown():
    blocks = planted_blocks()
    n = len(blocks)
    ids = np.arange(n, dtype=np.int64) + 1000
    dataset = Dataset.from_dict({"input_ids": blocks, "sample_id": ids, "carto_quadrant": [2] * 40 + [0] * (n - 40)})
    with_dups = add_duplicate_columns(dataset)
    clusters = duplicate_clusters(blocks, ids)
    assert np.array_equal(with_dups[DUP_EXACT_ID], clusters.exact_id)
    assert np.array_equal(with_dups[DUP_NEAR_SIZE], clusters.near_size)
    breakdown = hotspot_duplication(with_dups)
    exact = clusters.exact_size[:40] > 1
    near = ~exact & (clusters.near_size[:40] > 1)
    assert breakdown == {
        "hotspots": 40,
        "exact_duplicates": int(exact.sum()),
        "near_duplicates_only": int(near.sum()),
        "unique": int((~exact & ~near).sum()),
    }
    assert sum(breakdown[k] for k in ("exact_duplicates", "near_duplicates_only", "unique")) == 40


def test_strings_are_clustered_by_words():
    texts = ["the cat sat on the mat today", "the cat sat on the mat today", "a completely different line here"]
    clusters = duplicate_clusters(texts, ngram=2)
    assert clusters.exact_size.tolist() == [2, 2, 1] and clusters.exact_id.tolist() == [0, 0, 2]


def test_interventions_treat_a_whole_cluster_at_once():
    dataset = Dataset.from_dict(
        {
            "carto_quadrant": [2, 0, 1, 3, 0, 1],
            DUP_NEAR_ID: [5, 5, 5, 9, 9, 11],
            DUP_NEAR_SIZE: [3, 3, 3, 2, 2, 1],
        }
    )
    per_row = apply_interventions(dataset, gamma=2.0, alpha=0.5, remove_noisy=True)
    together = apply_interventions(dataset, gamma=2.0, alpha=0.5, remove_noisy=True, by_cluster=DUP_NEAR_ID)
    assert per_row["carto_loss_weight"] == [0.5, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert together["carto_loss_weight"] == [0.5, 0.5, 0.5, 0.0, 0.0, 1.0]
    assert together["carto_sampling_weight"] == [1.0, 1.0, 1.0, 0.0, 0.0, 2.0]
    assert together["carto_keep"] == [True, True, True, False, False, True]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"ngram": 0}, "ngram"), ({"threshold": 1.5}, "threshold"), ({"num_perm": 4}, "num_perm")],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        duplicate_clusters([[1, 2, 3]], **kwargs)


def test_missing_columns_are_named():
    dataset = Dataset.from_dict({"text": ["a b c"], "carto_quadrant": [0]})
    with pytest.raises(ValueError, match="'input_ids'"):
        add_duplicate_columns(dataset)
    with pytest.raises(ValueError, match="cluster column"):
        apply_interventions(dataset, by_cluster=DUP_NEAR_ID)
    with pytest.raises(ValueError, match="add_duplicate_columns"):
        hotspot_duplication(dataset)
    assert DUP_EXACT_SIZE in add_duplicate_columns(dataset, "text").column_names


def test_the_summary_reports_duplicated_and_unique_hotspots():
    from hf_carto.publish.summary import cartography_summary, format_summary

    dataset = Dataset.from_dict(
        {
            "carto_quadrant": [2, 2, 2, 0],
            "carto_difficulty": [1.0, 1.0, 1.0, 1.0],
            "carto_memorization": [0.5, 0.5, 0.5, 0.0],
            DUP_EXACT_SIZE: [2, 1, 1, 2],
            DUP_NEAR_SIZE: [2, 3, 1, 2],
        }
    )
    summary = cartography_summary(dataset)
    assert summary["hotspot_duplication"] == {
        "hotspots": 3,
        "exact_duplicates": 1,
        "near_duplicates_only": 1,
        "unique": 1,
    }
    assert "unique=1" in format_summary(summary)
