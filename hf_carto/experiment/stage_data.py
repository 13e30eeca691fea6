"""The data stage: documents -> tokens -> inserted canaries and held-out sequences -> packed blocks,
and the evaluation sets cut from the held-out text (:mod:`hf_carto.experiment.eval_sets`). Made once
by the main process and read back by every other process and every resumption.

The training corpus stays in Arrow files from reading to saving (tokenized by ``datasets.map``,
packed by one streaming pass, :mod:`hf_carto.data.stream_packing`), so its size is bounded by disk, not
memory; the held-out text, which only the evaluation sets are cut from, is handled as lists."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from hf_carto.core.columns import CANARY_ID, PLANTED_NAMES, SAMPLE_ID, read_columns
from hf_carto.data.canaries import canary_id_column, load_registry, save_registry
from hf_carto.data.tokenization import block_decoder, eos_encoder, tokenize_to_arrow, train_bpe_tokenizer
from hf_carto.experiment.arguments import DataArguments, ModelArguments
from hf_carto.experiment.errors import InputDataError, SettingsError
from hf_carto.experiment.eval_sets import (
    build_eval_sets,
    canaries_and_controls,
    contamination_windows,
    planted_non_members,
)
from hf_carto.experiment.presets import GENERATED

logger = logging.getLogger(__name__)

# How often each canary prompt is shown to a tokenizer trained here (see prepare_data).
PROMPT_REPEATS_FOR_TOKENIZER = 20


class PreparedData(NamedTuple):
    tokenizer: Any
    blocks: Any  # datasets.Dataset: input_ids, labels, sample_id, truth, carto_canary_id, text
    canaries: list
    eval_sets: dict[str, Any]


# ----------------------------------------------------------------------------------------------
# Reading and checking the input text.


def file_builder(path: str) -> str:
    """The ``datasets`` builder that reads a local data file, by its extension (text otherwise)."""
    return {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}.get(
        Path(path).suffix.lower(), "text"
    )


def read_text_file(path: str, text_column: str, flag: str = "--train_file"):
    """The file as a dataset, refused (:class:`InputDataError` naming the file and column) unless it holds text."""
    from datasets import load_dataset

    if os.path.getsize(path) == 0:
        # The loaders fail on an empty file with a bare StopIteration or a schema error.
        raise InputDataError(f"refusing to start: {flag} {path} is empty (0 bytes): no {text_column!r} rows to read")
    builder = file_builder(path)
    try:
        ds = load_dataset(builder, data_files={"train": path}, split="train")
    except Exception as err:
        cause = err
        while cause.__cause__ is not None:  # DatasetGenerationError hides the reason in its cause
            cause = cause.__cause__
        raise InputDataError(
            f"refusing to start: {flag} {path} could not be read as {builder}: {type(cause).__name__}: {cause}"
        ) from err
    if text_column not in ds.column_names:
        raise InputDataError(f"{path} has no {text_column!r} column (columns: {ds.column_names}); set --text_column")
    check_text_column(ds, text_column, f"{flag} {path}")
    return ds


def _row_list(indices, shown: int = 5) -> str:
    head = ", ".join(str(int(i)) for i in indices[:shown])
    return head + (", ..." if len(indices) > shown else "")


def _nonblank(column) -> np.ndarray:
    """Which rows of a text column hold more than white space; one Arrow chunk at a time, since
    trimming makes a copy of the text and a corpus may be larger than memory."""
    import pyarrow.compute as pc

    parts = [
        pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(chunk)), 0).to_numpy(zero_copy_only=False)
        for chunk in column.chunks
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def check_text_column(ds, text_column: str, source: str) -> None:
    """Refuse a text column with no rows, null rows, non-text values or only blank rows.

    Null rows are refused, not dropped: a null usually means a broken export or the wrong column,
    and dropping them would change the corpus without anyone noticing. Blank rows are dropped
    later, as before, since plain-text corpora (WikiText's blank lines between paragraphs) hold
    many; a column with nothing but blank rows is refused.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    column = ds.data.column(text_column)
    total = len(column)
    where = f"{source}, column {text_column!r}"
    if total == 0:
        raise InputDataError(f"refusing to start: {where}: 0 rows; nothing to train or evaluate on")
    nulls = np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))
    if len(nulls):
        raise InputDataError(
            f"refusing to start: {where}: {len(nulls):,} of {total:,} rows are null (rows {_row_list(nulls)}, "
            "counted from 0); fill them in or remove those rows (null rows are refused, not dropped)"
        )
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise InputDataError(f"refusing to start: {where} holds {column.type} values, not text; set --text_column")
    blank = ~_nonblank(column)
    if blank.all():
        raise InputDataError(
            f"refusing to start: {where}: all {total:,} rows are empty or blank "
            f"(rows {_row_list(np.flatnonzero(blank))}, counted from 0); nothing to train or evaluate on"
        )


def check_inputs(data_args: DataArguments) -> None:
    """Read the local data files and refuse empty, null or blank text columns.

    Every process calls this before the processes meet for the first time: each one then stops with
    the same message, where a failure inside the main process's data stage would leave the others
    waiting at a barrier for a peer that is gone. Reading is cached by ``datasets``, so the data
    stage reads the files again at no cost.
    """
    for flag, path in (("--train_file", data_args.train_file), ("--validation_file", data_args.validation_file)):
        if path is not None and not (flag == "--train_file" and data_args.streaming):
            read_text_file(path, data_args.text_column, flag)
    # A streamed training file is checked as it is read (non-text rows are named there); reading it
    # whole here would defeat the stream.


def _generated_documents(data_args: DataArguments, seed: int):
    from datasets import Dataset

    from hf_carto.data.generated import CorpusConfig, generate_corpus, hold_out

    corpus = generate_corpus(
        CorpusConfig(
            num_documents=data_args.generated_documents + data_args.generated_heldout_documents,
            num_canaries=0,
            num_duplicate_groups=data_args.generated_duplicate_groups,
            num_noise_documents=data_args.generated_noise_documents,
            seed=seed,
        )
    )
    train, heldout = hold_out(corpus, data_args.generated_heldout_documents, seed=seed)
    names = corpus.features["truth"].names
    kinds = np.array([PLANTED_NAMES.index(names[t]) for t in train["truth"][:]], dtype=np.int64)
    return Dataset.from_dict({"text": train["text"][:]}), kinds, heldout["text"][:]


def _hub_texts(data_args: DataArguments):
    from datasets import load_dataset

    column = data_args.text_column
    raw = load_dataset(data_args.dataset_name, data_args.dataset_config_name)
    name = f"--dataset_name {data_args.dataset_name}"
    for split in ("train", "validation"):
        if split in raw:
            if column not in raw[split].column_names:
                raise InputDataError(
                    f"{name} ({split}) has no {column!r} column (columns: {raw[split].column_names}); "
                    "set --text_column"
                )
            check_text_column(raw[split], column, f"{name} ({split} split)")
    return raw["train"], raw["validation"][column][:] if "validation" in raw else None


def _streamed_texts(data_args: DataArguments):
    """The training text as a streaming dataset, and the held-out texts (read whole: the held-out
    set is what evaluation needs, not the corpus)."""
    from datasets import load_dataset

    column = data_args.text_column
    if data_args.train_file is not None:
        train = load_dataset(
            file_builder(data_args.train_file),
            data_files={"train": data_args.train_file},
            split="train",
            streaming=True,
        )
        heldout = read_text_file(data_args.validation_file, column, "--validation_file")[column][:]
        return train, heldout
    name = f"--dataset_name {data_args.dataset_name}"
    train = load_dataset(data_args.dataset_name, data_args.dataset_config_name, split="train", streaming=True)
    if data_args.validation_file is not None:  # held-out text of one's own beside a streamed corpus
        return train, read_text_file(data_args.validation_file, column, "--validation_file")[column][:]
    try:
        validation = load_dataset(
            data_args.dataset_name, data_args.dataset_config_name, split="validation", streaming=True
        )
    except (ValueError, KeyError) as err:
        raise InputDataError(f"--streaming needs a validation split; {name} has none ({err})") from None
    heldout = [row[column] for row in validation if isinstance(row.get(column), str)]
    return train, heldout


def _without_blank_rows(ds, column: str):
    """The rows of ``ds`` whose ``column`` holds more than white space, as a ``text`` column."""

    ds = ds.select_columns([column])
    if column != "text":
        ds = ds.rename_column(column, "text")
    if ds._indices is not None:  # a view: its rows in order, so that positions below are its own
        ds = ds.flatten_indices()
    keep = np.flatnonzero(_nonblank(ds.data.column("text")))
    return ds if len(keep) == len(ds) else ds.select(keep)


def load_documents(data_args: DataArguments, seed: int):
    """Training documents, their planted kinds, and held-out documents of the same distribution.

    The training documents are a ``datasets.Dataset`` with a ``text`` column (a streaming
    ``IterableDataset`` with ``--streaming``), never a Python list: a corpus of any size stays in
    its memory-mapped Arrow files. Kinds are ``None`` when every document is ordinary text. The
    held-out documents are a list of texts.
    """
    if data_args.dataset_name == GENERATED:
        return _generated_documents(data_args, seed)
    if data_args.streaming:
        train, heldout_texts = _streamed_texts(data_args)
        return train, None, [t for t in heldout_texts if t.strip()]
    column = data_args.text_column
    if data_args.train_file is not None:
        train = read_text_file(data_args.train_file, column)
        heldout_texts = (
            read_text_file(data_args.validation_file, column, "--validation_file")[column][:]
            if data_args.validation_file
            else None
        )
    else:
        train, heldout_texts = _hub_texts(data_args)
    total = len(train)
    train = _without_blank_rows(train, column)
    if len(train) < total:
        logger.info("skipping %d of %d training rows that are empty or blank", total - len(train), total)
    if heldout_texts is None:
        n = max(1, len(train) * data_args.validation_split_percentage // 100)
        if n >= len(train):
            raise InputDataError(
                f"refusing to start: {len(train)} training document(s) with text; holding out "
                f"{data_args.validation_split_percentage}% for evaluation leaves none to train on"
            )
        heldout_texts = train.select(range(len(train) - n, len(train)))["text"][:]
        train = train.select(range(len(train) - n))
    heldout_texts = [t for t in heldout_texts if t.strip()]
    return train, None, heldout_texts


def _texts(documents, prompts: list[str]):
    """Every training text (a batch at a time from the dataset), then the prompts."""
    for batch in documents.iter(batch_size=1000):
        yield from batch["text"]
    yield from prompts


def build_tokenizer(model_args: ModelArguments, texts):
    """A byte-level BPE trained on ``texts`` (an iterable of strings; ``--train_tokenizer_vocab_size``)
    or a pretrained one."""
    from transformers import AutoTokenizer

    if model_args.train_tokenizer_vocab_size:
        return train_bpe_tokenizer(texts, model_args.train_tokenizer_vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    if tokenizer.eos_token_id is None:
        raise SettingsError(f"tokenizer {model_args.tokenizer_name} has no end-of-text token to separate documents")
    return tokenizer


def tokenize(tokenizer, texts: list[str], desc: str) -> list[list[int]]:
    """Each text's token ids followed by end-of-text."""
    from datasets import Dataset

    ds = Dataset.from_dict({"text": texts}).map(
        eos_encoder(tokenizer, "text"),
        batched=True,
        remove_columns=["text"],
        desc=desc,
    )
    return ds["ids"][:]


# ----------------------------------------------------------------------------------------------
# The stage.


def _load_prepared(out: Path) -> PreparedData:
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    blocks = load_from_disk(str(out / "data" / "train_blocks"))
    canaries = load_registry(out / "canaries.json")
    eval_sets = json.loads((out / "data" / "eval_sets.json").read_text())
    eval_sets["control_canaries"] = load_registry(out / "control_canaries.json")
    return PreparedData(tokenizer, blocks, canaries, eval_sets)


def _training_blocks(tokens, kinds, canaries, contaminating, tokenizer, data_args: DataArguments, seed: int, cache):
    """Insert every canary copy and contaminating sequence as a document of its own, pack, and label
    the blocks, one streaming pass over the tokenized corpus; returns the blocks and the number of
    inserted documents."""
    from hf_carto.data.stream_packing import pack_arrow

    eos = tokenizer.eos_token_id
    copies = [c for c in canaries for _ in range(c.repetitions)]
    inserted = [tokenizer(c.text)["input_ids"] + [eos] for c in copies]
    inserted += [seq + [eos] for seq in contaminating for _ in range(data_args.contamination_repetitions)]
    canary_kind, contaminated_kind = PLANTED_NAMES.index("canary"), PLANTED_NAMES.index("contaminated")
    inserted_kinds = [canary_kind] * len(copies) + [contaminated_kind] * (len(inserted) - len(copies))
    packed = pack_arrow(
        tokens,
        Path(cache) / "train_blocks.arrow",
        data_args.block_size,
        kinds=kinds,
        inserted=inserted,
        inserted_kinds=inserted_kinds,
        seed=seed + 1,
        decode=block_decoder(tokenizer),
    )
    # is_canary (what publishing withholds) marks every block with a canary token, since part of a
    # copy is part of a secret; a canary's sample_ids (and carto_canary_id) are the blocks that
    # hold a whole copy, the ones it can be extracted from.
    for copy, block in zip(copies, packed.whole_copy_blocks[: len(copies)], strict=True):
        if block >= 0:
            copy.sample_ids.append(int(block))
    for canary in canaries:
        canary.sample_ids = sorted(set(canary.sample_ids))
    blocks = packed.blocks
    ids = read_columns(blocks, [SAMPLE_ID])[SAMPLE_ID]
    blocks = blocks.add_column(CANARY_ID, canary_id_column(canaries, ids))
    order = [c for c in blocks.column_names if c != "text"] + ["text"]  # text last, as it has always been
    blocks = blocks.select_columns(order)
    missing = [c.canary_id for c in canaries if not c.sample_ids]
    if missing:
        logger.warning("canaries %s have no whole copy inside one block; they stay in the extraction test", missing)
    return blocks, len(inserted)


def prepare_data(model_args: ModelArguments, data_args: DataArguments, out: Path, is_main: bool) -> PreparedData:
    """Blocks, canaries and evaluation sets; made once by the main process and read by the others.

    The training corpus never becomes Python objects: it is tokenized into Arrow files (in
    ``data/cache``, removed once the blocks are saved) and packed in one streaming pass, so memory
    is bounded by the held-out text, not the corpus.
    """
    import shutil

    cache = out / "data" / "cache"
    if (out / "data" / "done.json").exists():
        shutil.rmtree(cache, ignore_errors=True)  # what a stop between the last two steps left
        return _load_prepared(out)
    if not is_main:
        raise RuntimeError("prepare_data: the main process has not written the data")
    shutil.rmtree(cache, ignore_errors=True)  # an interrupted data stage starts over
    seed = data_args.data_seed_offset
    rng = np.random.default_rng(seed)
    train_texts, kinds, heldout_texts = load_documents(data_args, seed)
    canaries, control_canaries = canaries_and_controls(data_args, seed)
    # A tokenizer trained here sees every canary prompt (trained and control alike, never a secret)
    # as often as common phrases: prompts of words the corpus lacks would otherwise fall apart into
    # single characters and make canaries far longer than a real tokenizer makes them.
    prompts = [c.prefix for c in canaries + control_canaries for _ in range(PROMPT_REPEATS_FOR_TOKENIZER)]
    tokenizer = build_tokenizer(
        model_args, _texts(train_texts, prompts) if model_args.train_tokenizer_vocab_size else None
    )

    budget = None if data_args.max_train_samples is None else data_args.max_train_samples * data_args.block_size
    tokens = tokenize_to_arrow(
        train_texts,
        tokenizer,
        cache,
        token_budget=budget,
        num_proc=data_args.preprocessing_num_workers,
        desc="Tokenizing training documents",
    )
    if kinds is not None:
        kinds = kinds[: len(tokens)]
    heldout_docs = tokenize(tokenizer, heldout_texts, "Tokenizing held-out documents")
    heldout_docs = [heldout_docs[i] for i in rng.permutation(len(heldout_docs))]
    contaminating, control, rest, usable = contamination_windows(heldout_docs, data_args, rng)
    blocks, num_inserted = _training_blocks(tokens, kinds, canaries, contaminating, tokenizer, data_args, seed, cache)
    planted_out, rest = planted_non_members(
        rest, control_canaries, control, tokenizer, data_args, rng, density=num_inserted / max(1, len(tokens))
    )
    eval_sets = build_eval_sets(blocks, rest, planted_out, contaminating, control, data_args, seed)
    eval_sets["counts"].update(
        heldout_documents=len(heldout_docs),
        heldout_documents_long_enough=usable,
        canary_whole_copies={str(c.canary_id): len(c.sample_ids) for c in canaries},
    )
    _save_prepared(out, PreparedData(tokenizer, blocks, canaries, eval_sets), control_canaries)
    del blocks, tokens
    prepared = _load_prepared(out)  # the saved blocks, so that the cache can go
    shutil.rmtree(cache, ignore_errors=True)
    return prepared


def _save_prepared(out: Path, data: PreparedData, control_canaries) -> None:
    """Every file of the stage, ``data/done.json`` last."""
    from hf_carto.publish.privacy import mark_private

    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    data.tokenizer.save_pretrained(str(out / "tokenizer"))
    data.blocks.save_to_disk(str(data_dir / "train_blocks"))
    save_registry(data.canaries, out / "canaries.json")
    save_registry(control_canaries, out / "control_canaries.json")
    mark_private(
        out,
        "the canary registry (canaries.json: the secrets), the training blocks with their canary "
        "columns, and models trained on them",
    )
    (data_dir / "eval_sets.json").write_text(json.dumps(data.eval_sets))
    (data_dir / "done.json").write_text(json.dumps({"num_blocks": len(data.blocks)}))
