"""Exact and near-duplicate clusters of training blocks, to tell duplicated text from unique text.

A memorization hotspot made of text that occurs many times is a deduplication problem; a unique
hotspot is the memorization the paper targets. Each row gets four columns:

- ``carto_dup_exact_id`` / ``carto_dup_exact_size``: rows with identical content (the same token
  ids, or the same string) form a cluster, found by a 128-bit BLAKE2b hash of the content;
- ``carto_dup_near_id`` / ``carto_dup_near_size``: rows whose n-gram sets are similar, found with
  MinHash LSH (``datasketch``): candidate pairs from an LSH index banded for a lower threshold
  are kept when their MinHash Jaccard estimate reaches ``threshold``, and clusters are the
  connected components of the kept pairs (so near-duplicates chain). Every exact cluster lies inside one near cluster.

A cluster's id is the smallest ``sample_id`` in it (the row index without that column); a size of
1 means unique. Shingles are ``ngram`` consecutive tokens (token-id lists) or words (strings); a
row shorter than ``ngram`` is one shingle.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from hf_carto.core.columns import (
    DUP_COLUMNS,
    DUP_EXACT_SIZE,
    DUP_NEAR_SIZE,
    QUADRANT,
    SAMPLE_ID,
    Quadrant,
    read_columns,
)

__all__ = ["DuplicateClusters", "duplicate_clusters", "add_duplicate_columns", "hotspot_duplication"]

DEFAULT_NGRAM = 5
DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
LSH_MARGIN = 0.2


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:  # path compression keeps later look-ups short
            self.parent[i], i = root, self.parent[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(self.parent.size)], dtype=np.int64)


def _cluster_columns(roots: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster id (smallest sample_id) and size of every row, from any per-row group label."""
    _, inverse, sizes = np.unique(roots, return_inverse=True, return_counts=True)
    smallest = np.full(sizes.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, inverse, ids)
    return smallest[inverse], sizes[inverse].astype(np.int64)


def _content(value: Any) -> tuple[bytes, list[bytes]]:
    """The bytes hashed for exact duplicates, and the units n-grams are built from."""
    if isinstance(value, str):
        return value.encode("utf-8"), [w.encode("utf-8") for w in value.split()]
    tokens = np.asarray(value, dtype=np.int64)
    if tokens.ndim != 1:
        raise ValueError(f"a row's content must be a string or a flat list of token ids; got shape {tokens.shape}")
    return tokens.tobytes(), [t.tobytes() for t in tokens]


def _shingles(units: list[bytes], ngram: int) -> set[bytes]:
    if len(units) <= ngram:
        return {b"\x00".join(units)} if units else set()
    return {b"\x00".join(units[i : i + ngram]) for i in range(len(units) - ngram + 1)}


class DuplicateClusters:
    """Per-row cluster ids and sizes (numpy arrays in row order) of one dataset."""

    def __init__(self, exact_id, exact_size, near_id, near_size) -> None:
        self.exact_id, self.exact_size = exact_id, exact_size
        self.near_id, self.near_size = near_id, near_size

    def as_columns(self) -> dict[str, np.ndarray]:
        return dict(zip(DUP_COLUMNS, (self.exact_id, self.exact_size, self.near_id, self.near_size), strict=True))


def duplicate_clusters(
    contents: list[Any],
    sample_ids: np.ndarray | None = None,
    *,
    ngram: int = DEFAULT_NGRAM,
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    seed: int = 1,
) -> DuplicateClusters:
    """Exact and near-duplicate clusters of ``contents`` (strings or token-id lists).

    Args:
        sample_ids (`np.ndarray`, *optional*): one id per row, used as cluster ids (row indices otherwise).
        ngram (`int`, *optional*, defaults to `5`): shingle length in tokens (or words).
        threshold (`float`, *optional*, defaults to `0.8`): MinHash Jaccard for near-duplicates.
        num_perm (`int`, *optional*, defaults to `128`): MinHash permutations.
        seed (`int`, *optional*, defaults to `1`): seed of the MinHash permutations.

    Raises:
        ValueError: ``ngram < 1``, ``threshold`` outside ``(0, 1]``, ``num_perm < 16``, ids not
            one per row or repeated, or a row that is neither a string nor a flat id list.
    """
    from datasketch import MinHash, MinHashLSH

    if ngram < 1:
        raise ValueError(f"ngram must be >= 1; got {ngram}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold}")
    if num_perm < 16:
        raise ValueError(f"num_perm must be >= 16 for a usable Jaccard estimate; got {num_perm}")
    n = len(contents)
    ids = np.arange(n, dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"got {ids.size} sample_ids for {n} rows")
    if np.unique(ids).size != n:
        raise ValueError("sample_ids repeat; a cluster id must name one row")

    digests, shingle_sets = [], []
    for value in contents:
        raw, units = _content(value)
        digests.append(hashlib.blake2b(raw, digest_size=16).digest())
        shingle_sets.append(_shingles(units, ngram))
    _, exact_group = np.unique(np.array(digests, dtype="S16"), return_inverse=True)
    exact_id, exact_size = _cluster_columns(exact_group, ids)

    near = _UnionFind(n)
    first_of_group: dict[int, int] = {}
    for row, group in enumerate(exact_group.tolist()):
        near.union(first_of_group.setdefault(group, row), row)
    # The index only proposes candidates; each is verified against `threshold` below. Banding it
    # for a lower threshold, with misses weighted over false candidates, keeps pairs just above
    # `threshold` from slipping through the bands (at 0.8 as banded for 0.8, about one in five does).
    lsh = MinHashLSH(threshold=max(0.05, threshold - LSH_MARGIN), num_perm=num_perm, weights=(0.2, 0.8))
    hashes: dict[int, Any] = {}
    for row, group in enumerate(exact_group.tolist()):
        if first_of_group[group] != row or not shingle_sets[row]:
            continue  # one representative per exact cluster; empty rows have nothing to compare
        minhash = MinHash(num_perm=num_perm, seed=seed)
        minhash.update_batch(sorted(shingle_sets[row]))
        for other in lsh.query(minhash):
            if minhash.jaccard(hashes[other]) >= threshold:
                near.union(other, row)
        lsh.insert(row, minhash)
        hashes[row] = minhash
    near_id, near_size = _cluster_columns(near.roots(), ids)
    return DuplicateClusters(exact_id, exact_size, near_id, near_size)


def add_duplicate_columns(dataset: Any, column: str = "input_ids", **options: Any) -> Any:
    """``dataset`` with ``carto_dup_exact_id/size`` and ``carto_dup_near_id/size`` on every row.

    Args:
        dataset (`datasets.Dataset`): the training blocks; cluster ids are `sample_id`s when the
            column exists, row indices otherwise.
        column (`str`, *optional*, defaults to `"input_ids"`): token-id lists or strings.
        **options: the keyword arguments of :func:`duplicate_clusters` (``ngram``, ``threshold``,
            ``num_perm``, ``seed``).

    Raises:
        ValueError: when `column` is missing, and as :func:`duplicate_clusters`.
    """
    from datasets import Value

    if column not in dataset.column_names:
        raise ValueError(f"the dataset has no {column!r} column to find duplicates in (it has {dataset.column_names})")
    ids = read_columns(dataset, [SAMPLE_ID])[SAMPLE_ID] if SAMPLE_ID in dataset.column_names else None
    clusters = duplicate_clusters(dataset[column], ids, **options)
    for name in DUP_COLUMNS:
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
    for name, values in clusters.as_columns().items():
        dataset = dataset.add_column(name, values, feature=Value("int64"))
    return dataset


def hotspot_duplication(dataset: Any) -> dict[str, int]:
    """How many memorization hotspots are duplicated text and how many are unique.

    Returns ``{"hotspots", "exact_duplicates", "near_duplicates_only", "unique"}``: hotspot rows
    (quadrant ``hotspot_memorized``) in an exact cluster of size > 1; in a near cluster of size > 1
    but no exact one; in neither.

    Raises:
        ValueError: when the quadrant or duplicate columns are missing.
    """

    missing = [c for c in (QUADRANT, DUP_EXACT_SIZE, DUP_NEAR_SIZE) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset lacks {missing}; run add_cartography and add_duplicate_columns first")
    columns = read_columns(dataset, [QUADRANT, DUP_EXACT_SIZE, DUP_NEAR_SIZE])
    hot = columns[QUADRANT] == Quadrant.HOTSPOT_MEMORIZED
    exact = hot & (columns[DUP_EXACT_SIZE] > 1)
    near = hot & ~exact & (columns[DUP_NEAR_SIZE] > 1)
    return {
        "hotspots": int(hot.sum()),
        "exact_duplicates": int(exact.sum()),
        "near_duplicates_only": int(near.sum()),
        "unique": int((hot & ~exact & ~near).sum()),
    }
