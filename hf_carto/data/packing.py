"""Packing tokenized documents into fixed-size training blocks, keeping track of what went where.

A language-model sample is one block of ``block_size`` tokens cut from the concatenation of all
documents (the ``group_texts`` step of causal-LM training). Planted material (canaries,
contaminating held-out sequences, duplicates) is inserted as whole documents *before* packing, so
every block can say which kinds of documents its tokens came from: the ground truth that a
cartography run is checked against, and what a published dataset must withhold.

These functions hold documents as Python lists: the held-out sets use them, and they are the
reference that :func:`hf_carto.data.stream_packing.pack_arrow`, the recipe's pass over a corpus in Arrow
files, is tested against.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, DatasetInfo, Features, Value
from datasets import Sequence as SequenceFeature

from hf_carto.core.columns import IS_CANARY, PLANTED_NAMES, SAMPLE_ID, TRUTH

__all__ = [
    "block_labels",
    "cut_windows",
    "insert_documents",
    "insertion_slots",
    "pack_documents",
    "whole_copies",
]

# The planted kinds but "ordinary" (PLANTED_NAMES lives in `columns`), in the order a block's label
# is chosen when it mixes several: a block that holds any canary token is a canary block, whatever
# else it holds.
_PRIORITY = ("canary", "contaminated", "duplicate", "noise")


def insertion_slots(num_documents: int, num_inserted: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Where inserted documents go: their sorted positions in the combined list of
    ``num_documents + num_inserted`` documents, and which inserted document takes each position.

    Choosing every final position at once is the same distribution as inserting the documents one
    by one at uniformly random places, without the quadratic cost of list insertion; the in-memory
    and the streaming packer (:mod:`hf_carto.data.stream_packing`) both draw here, so they agree.
    """
    rng = np.random.default_rng(seed)
    slots = np.sort(rng.choice(num_documents + num_inserted, size=num_inserted, replace=False))
    return slots, rng.permutation(num_inserted)


def insert_documents(
    documents: Sequence[Sequence[int]],
    kinds: Sequence[int],
    inserted: Sequence[Sequence[int]],
    inserted_kinds: Sequence[int],
    *,
    seed: int = 0,
) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """Insert each of ``inserted`` (token lists, copies included) at a uniformly random position.

    Returns the new document list (the documents themselves are shared, not copied), the kind of
    every document in it, and its origin: the index in ``inserted`` of an inserted document, -1 for
    the others. The result depends only on the inputs and ``seed``.

    Example:
        >>> docs, kinds, origin = insert_documents([[1], [2], [3]], [0, 0, 0], [[9]], [2], seed=0)
        >>> sorted(map(tuple, docs)), int(kinds.sum()), docs[int(np.flatnonzero(origin == 0)[0])]
        ([(1,), (2,), (3,), (9,)], 2, [9])
    """
    if len(documents) != len(kinds) or len(inserted) != len(inserted_kinds):
        raise ValueError("every document needs exactly one kind")
    total = len(documents) + len(inserted)
    slots, order = insertion_slots(len(documents), len(inserted), seed)
    is_inserted = np.zeros(total, dtype=bool)
    is_inserted[slots] = True
    out: list[list[int]] = [None] * total  # type: ignore[list-item]
    out_kinds = np.empty(total, dtype=np.int64)
    origin = np.full(total, -1, dtype=np.int64)
    original = iter(range(len(documents)))
    chosen = iter(order)
    for position in range(total):
        if is_inserted[position]:
            j = next(chosen)
            out[position], out_kinds[position], origin[position] = inserted[j], inserted_kinds[j], j
        else:
            i = next(original)
            out[position], out_kinds[position] = documents[i], kinds[i]
    return out, out_kinds, origin


def pack_documents(
    documents: Sequence[Sequence[int]],
    block_size: int,
    *,
    kinds: Sequence[int] | None = None,
    first_sample_id: int = 0,
) -> Dataset:
    """Concatenate ``documents`` and cut the stream into blocks of ``block_size`` tokens.

    The tail shorter than a block is dropped. Returns ``input_ids``, ``labels`` (a copy of the
    inputs: the model shifts them), a stable ``sample_id`` and, when ``kinds`` is given, ``truth``
    (a ``ClassLabel`` over :data:`PLANTED_NAMES`: the highest-priority kind among the documents
    the block's tokens come from) and ``is_canary`` (the block holds any canary token).

    Example:
        >>> ds = pack_documents([[1, 2, 3], [4, 5], [6, 7, 8]], 3, kinds=[0, 2, 0])
        >>> ds["input_ids"][:], ds["is_canary"][:]
        ([[1, 2, 3], [4, 5, 6]], [False, True])
    """
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2 (one input and one target); got {block_size}")
    lengths = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
    stream = np.fromiter(itertools.chain.from_iterable(documents), dtype=np.int32, count=int(lengths.sum()))
    num_blocks = stream.size // block_size
    if num_blocks == 0:
        raise ValueError(f"{stream.size} tokens do not fill one block of {block_size}")
    # Arrow list arrays over the flat token buffer: no Python list per block, whatever the corpus size.
    offsets = pa.array(np.arange(0, (num_blocks + 1) * block_size, block_size, dtype=np.int32))
    ids = pa.ListArray.from_arrays(offsets, pa.array(stream[: num_blocks * block_size]))
    columns = {
        "input_ids": ids,
        "labels": ids,
        SAMPLE_ID: pa.array(np.arange(first_sample_id, first_sample_id + num_blocks, dtype=np.int64)),
    }
    features = {
        "input_ids": SequenceFeature(Value("int32")),
        "labels": SequenceFeature(Value("int32")),
        SAMPLE_ID: Value("int64"),
    }
    if kinds is not None:
        kinds = np.asarray(kinds, dtype=np.int64)
        if kinds.shape != lengths.shape:
            raise ValueError(f"got {kinds.size} kinds for {lengths.size} documents")
        token_kinds = np.repeat(kinds, lengths)[: num_blocks * block_size].reshape(num_blocks, block_size)
        truth, is_canary = block_labels(token_kinds)
        columns[TRUTH] = pa.array(truth)
        columns[IS_CANARY] = pa.array(is_canary)
        features[TRUTH] = ClassLabel(names=PLANTED_NAMES)
        features[IS_CANARY] = Value("bool")
    return Dataset(pa.table(columns), info=DatasetInfo(features=Features(features)))


def block_labels(token_kinds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each block's ``truth`` (the highest-priority planted kind among its tokens) and ``is_canary``
    (it holds any canary token), from the ``(num_blocks, block_size)`` kinds of its tokens."""
    truth = np.zeros(token_kinds.shape[0], dtype=np.int64)
    for name in reversed(_PRIORITY):  # later (higher-priority) kinds overwrite earlier ones
        k = PLANTED_NAMES.index(name)
        truth[(token_kinds == k).any(axis=1)] = k
    return truth, (token_kinds == PLANTED_NAMES.index("canary")).any(axis=1)


def whole_copies(documents: Sequence[Sequence[int]], selected: np.ndarray, block_size: int) -> np.ndarray:
    """For each selected document, the block holding all its tokens but the last (its end-of-text
    separator), or -1 when the document crosses a block boundary or falls in the dropped tail.

    Example:
        >>> whole_copies([[1, 2, 0], [3, 4, 5, 0], [6, 0]], np.array([0, 1, 2]), 4).tolist()
        [0, -1, 1]
    """
    lengths = np.fromiter((len(d) for d in documents), dtype=np.int64, count=len(documents))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    usable = (ends[-1] // block_size) * block_size if len(ends) else 0
    first, last = starts[selected] // block_size, (ends[selected] - 2) // block_size
    return np.where((first == last) & (ends[selected] - 1 <= usable), first, -1)


def cut_windows(
    documents: Sequence[Sequence[int]], count: int, length: int, rng: np.random.Generator
) -> tuple[list[list[int]], list[int], int]:
    """``count`` windows of ``length`` tokens, each from inside one document, one per document.

    A window that crosses a document boundary holds an end-of-text token: a model cannot be
    expected to continue across it, so such a window could never count as reproduced. Documents
    are taken in the given order (shuffle them first); each window starts at a random offset of
    its document. ``documents`` must not carry their end-of-text separator.

    Returns the windows, the index of the document each came from, and how many documents were
    long enough (the usable count, for the report).

    Example:
        >>> windows, used, usable = cut_windows([[1, 2], [3, 4, 5, 6], [7, 8, 9]], 2, 3, np.random.default_rng(0))
        >>> used, usable, all(len(w) == 3 for w in windows)
        ([1, 2], 2, True)
    """
    long_enough = [i for i, doc in enumerate(documents) if len(doc) >= length]
    if len(long_enough) < count:
        raise ValueError(
            f"{count} windows of {length} tokens need as many documents of at least {length} tokens; "
            f"only {len(long_enough)} of {len(documents)} documents are that long"
        )
    used = long_enough[:count]
    windows = []
    for i in used:
        start = int(rng.integers(0, len(documents[i]) - length + 1))
        windows.append(list(documents[i][start : start + length]))
    return windows, used, len(long_enough)
