"""Packing a tokenized corpus that lives in Arrow files into training blocks, in one pass with
bounded memory.

:func:`pack_arrow` gives exactly what :func:`hf_carto.data.packing.insert_documents`,
:func:`~hf_carto.data.packing.pack_documents` and :func:`~hf_carto.data.packing.whole_copies` give together
(the same blocks, ``sample_id``, ``truth``, ``is_canary`` and the block holding each inserted
document whole), but reads the documents a slice of about ``chunk_tokens`` tokens at a time from
the memory-mapped token column and writes the blocks to an Arrow file as it goes. Memory is one
slice, the inserted documents and one length per document, whatever the corpus size; the
in-memory functions hold every document as a Python list and stay as the reference the tests
check this pass against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetInfo, Features, Value
from datasets import Sequence as SequenceFeature

from hf_carto.core.columns import IS_CANARY, PLANTED_NAMES, SAMPLE_ID, TRUTH
from hf_carto.data.packing import block_labels, insertion_slots

__all__ = ["PackedArrow", "pack_arrow"]

DEFAULT_CHUNK_TOKENS = 1 << 22
DECODE_TOKENS = 1 << 18


class PackedArrow(NamedTuple):
    """What :func:`pack_arrow` made: the blocks, for every inserted document (in the order it was
    given) the ``sample_id`` of the block that holds it whole (-1 where none does), and how many
    tokens were packed (the dropped tail included)."""

    blocks: Dataset
    whole_copy_blocks: np.ndarray
    num_tokens: int


def _features(with_text: bool) -> Features:
    features = {
        "input_ids": SequenceFeature(Value("int32")),
        "labels": SequenceFeature(Value("int32")),
        SAMPLE_ID: Value("int64"),
        TRUTH: ClassLabel(names=PLANTED_NAMES),
        IS_CANARY: Value("bool"),
    }
    if with_text:
        features["text"] = Value("string")
    return Features(features)


def _document_lengths(tokens: pa.ChunkedArray) -> np.ndarray:
    return pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64)


def _flat_tokens(tokens: pa.ChunkedArray) -> np.ndarray:
    """The token ids of a slice of documents, concatenated (``flatten`` honours slice offsets)."""
    parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in tokens.chunks if len(chunk)]
    if not parts:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate(parts).astype(np.int32, copy=False)


class _BlockWriter:
    """Cuts a token stream, fed in pieces, into blocks and writes them as Arrow record batches."""

    def __init__(self, path: Path, block_size: int, decode: Callable[[list[list[int]]], list[str]] | None):
        self.block_size = block_size
        self.decode = decode
        self.schema = _features(decode is not None).arrow_schema
        self.writer = pa.ipc.new_stream(str(path), self.schema)
        self.tokens = np.zeros(0, dtype=np.int32)
        self.kinds = np.zeros(0, dtype=np.int8)
        self.num_blocks = 0

    def feed(self, tokens: np.ndarray, kinds: np.ndarray) -> None:
        tokens = np.concatenate([self.tokens, tokens]) if self.tokens.size else tokens
        kinds = np.concatenate([self.kinds, kinds]) if self.kinds.size else kinds
        n = tokens.size // self.block_size
        cut = n * self.block_size
        self.tokens, self.kinds = tokens[cut:].copy(), kinds[cut:].copy()
        if n:
            self._write(tokens[:cut], kinds[:cut].reshape(n, self.block_size))

    def _write(self, tokens: np.ndarray, token_kinds: np.ndarray) -> None:
        n = token_kinds.shape[0]
        offsets = pa.array(np.arange(0, (n + 1) * self.block_size, self.block_size, dtype=np.int32))
        ids = pa.ListArray.from_arrays(offsets, pa.array(tokens))
        truth, is_canary = block_labels(token_kinds)
        arrays = [
            ids,
            ids,
            pa.array(np.arange(self.num_blocks, self.num_blocks + n, dtype=np.int64)),
            pa.array(truth),
            pa.array(is_canary),
        ]
        if self.decode is not None:
            # A few hundred blocks at a time: the token lists handed to the tokenizer are Python
            # ints (about 36 bytes a token), which for a whole slice would dwarf the slice itself.
            rows = tokens.reshape(n, self.block_size)
            step = max(1, DECODE_TOKENS // self.block_size)
            texts = [text for i in range(0, n, step) for text in self.decode(rows[i : i + step].tolist())]
            arrays.append(pa.array(texts, type=pa.string()))
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.num_blocks += n

    def close(self) -> None:
        self.writer.close()


def pack_arrow(
    tokenized: Dataset,
    path: str | Path,
    block_size: int,
    *,
    column: str = "ids",
    kinds: Sequence[int] | np.ndarray | None = None,
    inserted: Sequence[Sequence[int]] = (),
    inserted_kinds: Sequence[int] = (),
    seed: int = 0,
    decode: Callable[[list[list[int]]], list[str]] | None = None,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    progress: bool = True,
) -> PackedArrow:
    """Insert ``inserted`` among ``tokenized``'s documents and pack everything into blocks.

    Args:
        tokenized (`datasets.Dataset`): one document per row, ``column`` holding its token ids (end
            of text included), as ``datasets.map`` tokenization writes it.
        path (`str` or `Path`): the Arrow file the blocks are written to; the returned dataset
            memory-maps it.
        block_size (`int`): tokens per block; the tail shorter than a block is dropped.
        kinds (*optional*): the planted kind of every document of ``tokenized`` (default: all
            ordinary, 0).
        inserted, inserted_kinds (*optional*): documents (token lists) to insert at uniformly
            random places, drawn with ``seed`` exactly as :func:`~hf_carto.data.packing.insert_documents`.
        decode (*optional*): ids of many blocks -> their texts; adds a ``text`` column.
        chunk_tokens (`int`): about how many tokens are read at once.

    Returns:
        :class:`PackedArrow`.
    """
    from tqdm.auto import tqdm

    if block_size < 2:
        raise ValueError(f"block_size must be >= 2 (one input and one target); got {block_size}")
    if len(inserted) != len(inserted_kinds):
        raise ValueError("every inserted document needs exactly one kind")
    if tokenized._indices is not None:  # a shuffled or filtered view: read its rows in order once
        tokenized = tokenized.flatten_indices()
    tokens = tokenized.data.column(column)
    lengths = _document_lengths(tokens)
    num_docs = len(lengths)
    if kinds is None:
        kinds = np.zeros(num_docs, dtype=np.int8)
    kinds = np.asarray(kinds).astype(np.int8)
    if kinds.shape != (num_docs,):
        raise ValueError(f"got {kinds.size} kinds for {num_docs} documents")
    slots, order = insertion_slots(num_docs, len(inserted), seed)
    # The inserted document at slot r comes right before original document slots[r] - r.
    originals_before = slots - np.arange(len(slots))
    inserted_lengths = np.array([len(d) for d in inserted], dtype=np.int64)
    starts = np.full(len(inserted), -1, dtype=np.int64)

    ends = np.cumsum(lengths)
    writer = _BlockWriter(Path(path), block_size, decode)
    emitted = 0  # tokens fed to the writer so far
    first = 0
    bar = tqdm(total=int(ends[-1]) if num_docs else 0, unit="tok", desc="Packing blocks", disable=not progress)
    try:
        while True:
            done = int(ends[first - 1]) if first else 0
            last = min(num_docs, max(first + 1, int(np.searchsorted(ends, done + chunk_tokens, side="right"))))
            final = last == num_docs
            flat = _flat_tokens(tokens.slice(first, last - first))
            flat_kinds = np.repeat(kinds[first:last], lengths[first:last])
            local_ends = ends[first:last] - done
            # Inserted documents placed before an original of this slice (or after the last one).
            lo = np.searchsorted(originals_before, first, side="left")
            hi = np.searchsorted(originals_before, last, side="right" if final else "left")
            cursor = 0
            for r in range(lo, hi):
                doc = int(originals_before[r]) - first
                cut = int(local_ends[doc - 1]) if doc > 0 else 0
                if cut > cursor:
                    writer.feed(flat[cursor:cut], flat_kinds[cursor:cut])
                    emitted += cut - cursor
                    cursor = cut
                j = int(order[r])
                starts[j] = emitted
                writer.feed(
                    np.asarray(inserted[j], dtype=np.int32), np.full(len(inserted[j]), inserted_kinds[j], np.int8)
                )
                emitted += len(inserted[j])
            if flat.size > cursor:
                writer.feed(flat[cursor:], flat_kinds[cursor:])
                emitted += flat.size - cursor
            bar.update(int(flat.size))
            if final:
                break
            first = last
    finally:
        writer.close()
        bar.close()
    if writer.num_blocks == 0:
        raise ValueError(f"{emitted} tokens do not fill one block of {block_size}")
    usable = writer.num_blocks * block_size
    first_block, last_block = starts // block_size, (starts + inserted_lengths - 2) // block_size
    whole = np.where((first_block == last_block) & (starts + inserted_lengths - 1 <= usable), first_block, -1)
    blocks = Dataset.from_file(str(path), info=DatasetInfo(features=_features(decode is not None)))
    return PackedArrow(blocks, whole.astype(np.int64), emitted)
