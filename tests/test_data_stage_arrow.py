"""The recipe's data stage, tokenized into Arrow and packed in one streaming pass, against the
in-memory path it replaced (documents as Python lists, inserted and packed by `hf_carto.data.packing`):
the same blocks, the same canary registry, the same planted labels, whichever way the text is read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset
from shared_data import DATA_DIR as SHARED
from shared_data import WIKITEXT

from hf_carto.data.canaries import canary_id_column
from hf_carto.data.packing import insert_documents, pack_documents, whole_copies
from hf_carto.experiment import InputDataError, SettingsError, parse_arguments
from hf_carto.experiment.stage_data import prepare_data


def _prepare(out: Path, *argv):
    model_args, data_args, _, _ = parse_arguments(["--output_dir", str(out), *argv])
    return data_args, prepare_data(model_args, data_args, out, True)


def _in_memory_blocks(train_texts, kinds, data_args, prepared):
    """The earlier data stage from the same texts, canaries and contaminating windows: every
    document a Python list, the leading documents kept for --max_train_samples, inserted copies
    placed by insert_documents, packed by pack_documents, whole copies from whole_copies."""
    tokenizer, eos = prepared.tokenizer, prepared.tokenizer.eos_token_id
    docs = [ids + [eos] for ids in tokenizer(train_texts)["input_ids"]]
    if data_args.max_train_samples is not None:
        cumulative = np.cumsum([len(d) for d in docs])
        keep = int(np.searchsorted(cumulative, data_args.max_train_samples * data_args.block_size)) + 1
        docs, kinds = docs[:keep], kinds[:keep]
    canaries = prepared.canaries
    copies = [c for c in canaries for _ in range(c.repetitions)]
    inserted = [tokenizer(c.text)["input_ids"] + [eos] for c in copies]
    inserted += [
        w + [eos] for w in prepared.eval_sets["contaminating"] for _ in range(data_args.contamination_repetitions)
    ]
    inserted_kinds = [2] * len(copies) + [4] * (len(inserted) - len(copies))
    combined, combined_kinds, origin = insert_documents(
        docs, kinds, inserted, inserted_kinds, seed=data_args.data_seed_offset + 1
    )
    blocks = pack_documents(combined, data_args.block_size, kinds=combined_kinds)
    registry = {c.canary_id: set() for c in canaries}
    positions = np.flatnonzero((origin >= 0) & (origin < len(copies)))
    for position, block in zip(positions, whole_copies(combined, positions, data_args.block_size), strict=True):
        if block >= 0:
            registry[copies[origin[position]].canary_id].add(int(block))
    return blocks, {k: sorted(v) for k, v in registry.items()}


def _check_against_in_memory(prepared, train_texts, kinds, data_args):
    blocks, registry = _in_memory_blocks(train_texts, kinds, data_args, prepared)
    new = prepared.blocks
    for name in blocks.column_names:
        assert new[name][:] == blocks[name][:], name
    assert {c.canary_id: c.sample_ids for c in prepared.canaries} == registry
    assert any(registry.values())
    expected_ids = canary_id_column(prepared.canaries, np.asarray(blocks["sample_id"][:]))
    assert new["carto_canary_id"][:] == list(expected_ids)
    assert new["text"][:] == prepared.tokenizer.batch_decode(blocks["input_ids"][:])
    return blocks


def test_generated_corpus_with_planted_kinds_equals_the_in_memory_stage(tmp_path):
    data_args, prepared = _prepare(tmp_path, "--preset", "cpu-tiny")
    from hf_carto.experiment.stage_data import load_documents

    train, kinds, _ = load_documents(data_args, data_args.data_seed_offset)
    blocks = _check_against_in_memory(prepared, train["text"][:], list(kinds), data_args)
    assert len(set(blocks["truth"][:])) >= 4  # ordinary, canary, contaminated and generated kinds
    assert not (tmp_path / "data" / "cache").exists()  # the tokenized corpus is removed once saved


def _wikitext_args(*extra):
    if not WIKITEXT.exists():
        pytest.fail(f"the WikiText-2 files are missing from {WIKITEXT}")
    return [
        "--preset", "cpu-tiny", "--dataset_name", "none", "--train_file", str(WIKITEXT / "wiki.train.raw"),
        "--validation_file", str(WIKITEXT / "wiki.valid.raw"), "--block_size", "32", "--max_train_samples", "900",
        "--tokenizer_name", str(SHARED / "gpt2-tokenizer"), "--train_tokenizer_vocab_size", "0", *extra,
    ]  # fmt: skip


def _wikitext_texts():
    lines = load_dataset("text", data_files={"train": str(WIKITEXT / "wiki.train.raw")}, split="train")["text"]
    return [t for t in lines if t.strip()]


def test_a_text_file_read_a_slice_at_a_time_stops_early_and_equals_the_in_memory_stage(tmp_path):
    data_args, prepared = _prepare(tmp_path / "file", *_wikitext_args())
    texts = _wikitext_texts()
    _check_against_in_memory(prepared, texts, [0] * len(texts), data_args)


@pytest.mark.parametrize("how", ["streaming", "two_workers"])
def test_streaming_and_parallel_tokenization_give_the_same_stage(tmp_path, how):
    """Both ways of reading must reproduce a plain run byte for byte (blocks, registry, eval sets)."""
    _, plain = _prepare(tmp_path / "plain", *_wikitext_args())
    extra = ["--streaming", "true"] if how == "streaming" else ["--preprocessing_num_workers", "2"]
    _, other = _prepare(tmp_path / how, *_wikitext_args(*extra))
    for name in plain.blocks.column_names:
        assert other.blocks[name][:] == plain.blocks[name][:], name
    assert [vars(c) for c in other.canaries] == [vars(c) for c in plain.canaries]
    for name in ("canaries.json", "data/eval_sets.json"):
        assert json.loads((tmp_path / how / name).read_text()) == json.loads((tmp_path / "plain" / name).read_text())


def _check(out: Path, *argv):
    from hf_carto.experiment.arguments import check_arguments

    check_arguments(*parse_arguments(["--output_dir", str(out), *argv]))


def test_a_streamed_dataset_folder_with_a_validation_file_gives_the_same_stage(tmp_path):
    """--dataset_name (here a local folder, read as the Hub reads a repository) streamed, with
    held-out text from --validation_file: the blocks of the plain --train_file run."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    load_dataset("text", data_files={"train": str(WIKITEXT / "wiki.train.raw")}, split="train").to_parquet(
        str(folder / "train.parquet")
    )
    _, plain = _prepare(tmp_path / "plain", *_wikitext_args())
    args = _wikitext_args("--streaming", "true", "--dataset_name", str(folder), "--dataset_config_name", "default")
    position = args.index("--train_file")
    del args[position : position + 2]
    _, streamed = _prepare(tmp_path / "streamed", *args)
    for name in plain.blocks.column_names:
        assert streamed.blocks[name][:] == plain.blocks[name][:], name
    assert [vars(c) for c in streamed.canaries] == [vars(c) for c in plain.canaries]


def test_streaming_and_budget_refusals_come_before_any_process_starts_the_stage(tmp_path):
    """Refused in check_arguments, which every process runs, not inside the main process's stage."""
    with pytest.raises(SettingsError, match="--streaming needs a pretrained tokenizer"):
        _check(tmp_path / "a", *_wikitext_args("--streaming", "true", "--train_tokenizer_vocab_size", "300"))
    args = [a for a in _wikitext_args("--streaming", "true") if a != str(WIKITEXT / "wiki.valid.raw")]
    args.remove("--validation_file")
    with pytest.raises(SettingsError, match="--streaming needs --validation_file"):
        _check(tmp_path / "b", *args)
    with pytest.raises(SettingsError, match="max_train_samples must be >= 1"):
        _check(tmp_path / "c", *_wikitext_args("--max_train_samples", "0"))


def test_checking_inputs_does_not_read_a_streamed_training_file(tmp_path):
    from hf_carto.experiment.stage_data import check_inputs

    bad = tmp_path / "train.jsonl"
    bad.write_text('{"text": null}\n')  # would be refused if it were read whole
    _, data_args, _, _ = parse_arguments(
        ["--output_dir", str(tmp_path), *_wikitext_args("--train_file", str(bad), "--streaming", "true")]
    )
    check_inputs(data_args)  # the validation file is read and fine; the stream is checked as it is read
    data_args.streaming = False
    with pytest.raises(InputDataError, match="1 of 1 rows are null"):
        check_inputs(data_args)


def test_the_saved_blocks_keep_their_column_order(tmp_path):
    _, prepared = _prepare(tmp_path, "--preset", "cpu-tiny")
    expected = ["input_ids", "labels", "sample_id", "truth", "is_canary", "carto_canary_id", "text"]
    assert prepared.blocks.column_names == expected
