"""Tokenizers trained on the data at hand, so that no run needs to download one, and corpora
tokenized into Arrow files with bounded memory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

__all__ = ["EOS_TOKEN", "block_decoder", "tokenize_to_arrow", "train_bpe_tokenizer"]

EOS_TOKEN = "<|endoftext|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    GPT-2's scheme: bytes mapped to printable characters, no prefix space, merges learned up to
    ``vocab_size`` tokens. The only special token is ``<|endoftext|>`` (id 0), which serves as
    end-of-text and padding token. Every byte is in the initial alphabet, so any text encodes.

    Args:
        texts (`Iterable[str]`): the training texts.
        vocab_size (`int`): the vocabulary size to reach; a small corpus may give fewer tokens.

    Returns:
        `transformers.PreTrainedTokenizerFast`: the trained tokenizer.

    Example:
        >>> tokenizer = train_bpe_tokenizer(["the cat sat on the mat"] * 10, vocab_size=300)
        >>> tokenizer.eos_token_id, tokenizer.decode(tokenizer("the mat")["input_ids"])
        (0, 'the mat')
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)


# Documents tokenized in the first slice when a token budget is set; later slices are sized from
# the tokens per document seen so far.
_FIRST_SLICE_DOCUMENTS = 4096
_STREAM_BATCH = 1000


def _token_features():
    from datasets import Features, Value
    from datasets import Sequence as SequenceFeature

    return Features({"ids": SequenceFeature(Value("int32"))})


def eos_encoder(tokenizer, text_column: str) -> Callable[[dict], dict]:
    """A batched ``map`` function: each text's token ids followed by end-of-text, as ``ids``."""
    eos = tokenizer.eos_token_id

    def encode(batch: dict) -> dict:
        return {"ids": [ids + [eos] for ids in tokenizer(batch[text_column])["input_ids"]]}

    return encode


def _leading_documents(lengths: np.ndarray, token_budget: int) -> int:
    """How many leading documents are kept for a budget: up to and including the one whose end
    reaches it (all of them when they hold fewer tokens)."""
    return min(len(lengths), int(np.searchsorted(np.cumsum(lengths), token_budget)) + 1)


def _lengths(ds) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.list_value_length(ds.data.column("ids")).to_numpy(zero_copy_only=False).astype(np.int64)


def tokenize_to_arrow(
    texts,
    tokenizer,
    cache_dir: str | Path,
    *,
    text_column: str = "text",
    token_budget: int | None = None,
    num_proc: int | None = None,
    desc: str = "Tokenizing",
):
    """Every text's token ids followed by end-of-text, as a ``datasets.Dataset`` (column ``ids``)
    memory-mapped from Arrow files under ``cache_dir``.

    A ``datasets.Dataset`` is tokenized with ``datasets.map(batched=True, num_proc=num_proc)``;
    with ``token_budget`` it is tokenized a slice at a time and reading stops once the documents
    so far hold that many tokens. A streaming ``datasets.IterableDataset`` is read in batches and
    written as it goes (its empty and blank rows are skipped, as the caller skips them in a
    ``Dataset``). Either way the leading documents are kept up to and including the one that
    reaches the budget, and memory holds one batch at a time.

    Args:
        texts (`datasets.Dataset` or `datasets.IterableDataset`): one document per row.
        tokenizer (`transformers.PreTrainedTokenizerBase`): a tokenizer with an end-of-text token.
        cache_dir (`str` or `Path`): where the Arrow files go (it is created).
        token_budget (`int`, *optional*): stop once this many tokens are read.
        num_proc (`int`, *optional*): processes for ``datasets.map``.
    """
    from datasets import Dataset, concatenate_datasets

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not isinstance(texts, Dataset):
        import tempfile

        # A new file each call: rewriting one that an earlier result still memory-maps would break it.
        handle, name = tempfile.mkstemp(prefix="tokens-stream-", suffix=".arrow", dir=cache_dir)
        os.close(handle)
        return _tokenize_stream(texts, tokenizer, Path(name), text_column, token_budget, desc)
    encode = eos_encoder(tokenizer, text_column)

    def tokenize_slice(start: int, stop: int) -> Dataset:
        part = texts if (start, stop) == (0, len(texts)) else texts.select(range(start, stop))
        return part.map(
            encode,
            batched=True,
            num_proc=num_proc if num_proc and num_proc > 1 else None,
            remove_columns=part.column_names,
            features=_token_features(),
            cache_file_name=str(cache_dir / f"tokens-{start}.arrow"),
            load_from_cache_file=False,
            desc=desc,
        )

    if token_budget is None:
        return tokenize_slice(0, len(texts))
    parts, lengths, start, seen = [], [], 0, 0
    while start < len(texts) and seen < token_budget:
        # Later slices are sized from the tokens per document so far, at most 4x the documents read
        # (a corpus that opens with short titles would otherwise be read whole at the second slice).
        size = (
            _FIRST_SLICE_DOCUMENTS
            if not start
            else min(
                4 * start, int((token_budget - seen) / max(seen / start, 1e-9) * 1.1) + _FIRST_SLICE_DOCUMENTS // 4
            )
        )
        stop = min(len(texts), start + size)
        parts.append(tokenize_slice(start, stop))
        lengths.append(_lengths(parts[-1]))
        seen += int(lengths[-1].sum())
        start = stop
    tokens = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    keep = _leading_documents(np.concatenate(lengths), token_budget)
    return tokens.select(range(keep)) if keep < len(tokens) else tokens


def _tokenize_stream(texts, tokenizer, path: Path, text_column: str, token_budget: int | None, desc: str):
    """Read a streaming dataset in batches, tokenize, write each batch; stop at the budget."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo
    from tqdm.auto import tqdm

    features = _token_features()
    schema = features.arrow_schema
    encode = eos_encoder(tokenizer, text_column)
    total, row = 0, 0
    with pa.ipc.new_stream(str(path), schema) as writer, tqdm(desc=desc, unit="tok") as bar:
        for batch in texts.iter(batch_size=_STREAM_BATCH):
            if text_column not in batch:
                raise ValueError(f"the streamed rows have no {text_column!r} column (columns: {sorted(batch)})")
            values = batch[text_column]
            bad = [row + i for i, v in enumerate(values) if not isinstance(v, str)]
            if bad:
                raise ValueError(
                    f"streamed rows {bad[:5]} (counted from 0) of column {text_column!r} hold "
                    f"{type(values[bad[0] - row]).__name__}, not text; {len(bad)} in this batch of {len(values)}"
                )
            row += len(values)
            kept = [v for v in values if v.strip()]
            if not kept:
                continue
            ids = encode({text_column: kept})["ids"]
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            if token_budget is not None:
                ids = ids[: _leading_documents(lengths, token_budget - total)]
                lengths = lengths[: len(ids)]
            writer.write_batch(pa.RecordBatch.from_pydict({"ids": ids}, schema=schema))
            total += int(lengths.sum())
            bar.update(int(lengths.sum()))
            if token_budget is not None and total >= token_budget:
                break
    if total == 0:
        raise ValueError(f"the streamed column {text_column!r} holds no text: {row} rows, all empty or blank")
    return Dataset.from_file(str(path), info=DatasetInfo(features=features))


def block_decoder(tokenizer) -> Callable[[list[list[int]]], list[str]]:
    """Token ids of many blocks -> their texts, equal to ``tokenizer.batch_decode``.

    A fast tokenizer that does not clean up spaces decodes through its Rust backend directly: the
    same strings at about a third of the cost, which matters once every block of a large corpus
    is decoded.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return lambda rows: backend.decode_batch(rows, skip_special_tokens=False)
    return tokenizer.batch_decode
