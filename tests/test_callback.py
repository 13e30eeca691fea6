"""CartographyCallback with the stock transformers Trainer and trl's SFTTrainer: no subclass."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import Trainer, TrainingArguments

from hf_carto.record.callback import CartographyCallback, RecordingConfig
from hf_carto.record.merge import load_loss_matrix
from hf_carto.record.recording_trainer import RecordingTrainer

sys.path.insert(0, str(Path(__file__).parent / "launch"))
from record_tiny import collate, make_dataset, make_model  # noqa: E402
from test_recording import training_args as recording_args  # noqa: E402

N, BLOCK, VOCAB, BATCH, EPOCHS = 37, 12, 50, 4, 3
IDS = np.arange(100, 100 + N)


def training_args(out, **overrides) -> TrainingArguments:
    """test_recording's arguments, keeping sample_id: the stock Trainer removes unused columns first."""
    return recording_args(out, **{"remove_unused_columns": False, **overrides})


def stock_trainer(out, callback, *, with_loss_func=True, **overrides) -> Trainer:
    return Trainer(
        model=make_model(VOCAB, BLOCK, seed=0),
        args=training_args(out, **overrides),
        train_dataset=make_dataset(N, BLOCK, VOCAB, seed=0),
        data_collator=collate,
        callbacks=[callback],
        compute_loss_func=callback.compute_loss_func if with_loss_func else None,
    )


def subclass_matrix(out, mode):
    trainer = RecordingTrainer(
        model=make_model(VOCAB, BLOCK, seed=0),
        args=training_args(out),
        train_dataset=make_dataset(N, BLOCK, VOCAB, seed=0),
        data_collator=collate,
        recording=RecordingConfig(mode=mode, progress=False),
    )
    trainer.train()
    return load_loss_matrix(out, IDS)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_stock_trainer_records_the_same_matrix_as_the_recording_trainer(tmp_path, mode):
    callback = CartographyCallback(mode, progress=False)
    stock_trainer(tmp_path / "stock", callback).train()
    stock = load_loss_matrix(tmp_path / "stock", IDS)
    reference = subclass_matrix(tmp_path / "subclass", mode)
    assert stock.losses.shape == (N, EPOCHS) and stock.settings.mode == mode
    np.testing.assert_array_equal(stock.losses, reference.losses)
    np.testing.assert_array_equal(stock.n_tokens, reference.n_tokens)
    assert [s["step"] for s in stock.snapshots.values()] == [s["step"] for s in reference.snapshots.values()]


def test_eval_mode_needs_no_loss_function_and_snapshots_every_k_steps(tmp_path):
    callback = CartographyCallback("eval", snapshot_every=4, progress=False)
    stock_trainer(tmp_path, callback, with_loss_func=False).train()
    matrix = load_loss_matrix(tmp_path, IDS)
    assert [s["step"] for s in matrix.snapshots.values()] == [4, 8, 12, 16, 20, 24, 28]
    assert np.isfinite(matrix.losses).all()


def test_the_folder_lock_is_released_at_train_end(tmp_path):
    from hf_carto.core.locking import lock_holder

    callback = CartographyCallback("eval", progress=False)
    stock_trainer(tmp_path, callback, num_train_epochs=1).train()
    assert lock_holder(tmp_path) is None
    assert callback.recorder.settings.num_samples == N


def test_a_removed_sample_id_column_is_named(tmp_path):
    callback = CartographyCallback("eval", progress=False)
    trainer = stock_trainer(tmp_path, callback, remove_unused_columns=True)
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        trainer.train()


def test_train_mode_without_the_loss_function_is_refused(tmp_path):
    callback = CartographyCallback("train", progress=False)
    trainer = stock_trainer(tmp_path, callback, with_loss_func=False, num_train_epochs=1)
    with pytest.raises(ValueError, match="compute_loss_func"):
        trainer.train()


@pytest.mark.parametrize("kwargs", [{"mode": "sideways"}, {"mode": "train", "snapshot_every": 3}, {"eps": "bogus"}])
def test_bad_settings_are_refused_when_the_callback_is_made(kwargs):
    with pytest.raises(ValueError):
        CartographyCallback(**kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_sft_trainer_records_a_full_matrix(tmp_path, mode, gpt2_tokenizer_dir):
    trl = pytest.importorskip("trl", reason="trl is a test dependency: pip install -e '.[test]'")
    from datasets import Dataset
    from transformers import AutoTokenizer

    from hf_carto.core.models import tiny_gpt2

    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    tokenizer.pad_token = tokenizer.eos_token
    rng = np.random.default_rng(0)
    # Pre-tokenized rows of different lengths, so that padding (ignored targets) is part of the test.
    rows = [rng.integers(0, tokenizer.vocab_size, size=int(n)).tolist() for n in rng.integers(6, 14, size=N)]
    dataset = Dataset.from_dict({"input_ids": rows, "sample_id": IDS})
    model = tiny_gpt2(len(tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2, seed=0)
    callback = CartographyCallback(mode, progress=False)
    config = trl.SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        num_train_epochs=2,
        learning_rate=5e-3,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        max_length=16,
        packing=False,
    )
    extra = {"compute_loss_func": callback.compute_loss_func} if mode == "train" else {}
    trainer = trl.SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[callback], **extra
    )
    trainer.train()
    matrix = load_loss_matrix(tmp_path, IDS)
    assert matrix.losses.shape == (N, 2) and matrix.settings.mode == mode
    assert np.isfinite(matrix.losses).all() and (matrix.losses > 0).all()
    # Every target token of each row counted once, and no padding: a row of n tokens has n - 1 targets.
    lengths = np.array([len(r) for r in rows])
    np.testing.assert_array_equal(matrix.n_tokens[:, 0], lengths - 1)
