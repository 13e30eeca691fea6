"""Loss recording with the real Trainer, in one process: exact values, modes, resume, bad input."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_carto.record.callback import RecordingConfig, ensure_sample_ids
from hf_carto.record.losses import per_sample_loss
from hf_carto.record.merge import add_loss_columns, load_loss_matrix
from hf_carto.record.recorder import LossRecorder
from hf_carto.record.recording_trainer import RecordingTrainer
from hf_carto.record.store import LossStore, RecordingSettings

sys.path.insert(0, str(Path(__file__).parent / "launch"))
from record_tiny import collate, make_dataset, make_model  # noqa: E402

N, BLOCK, VOCAB, BATCH = 37, 12, 50, 4
IDS = np.arange(100, 100 + N)


def training_args(out, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        num_train_epochs=3,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def recording_trainer(out, mode="eval", dataset=None, callbacks=None, snapshot_every=None, **overrides):
    return RecordingTrainer(
        model=make_model(VOCAB, BLOCK, seed=0),
        args=training_args(out, **overrides),
        train_dataset=dataset if dataset is not None else make_dataset(N, BLOCK, VOCAB, seed=0),
        data_collator=collate,
        callbacks=callbacks,
        recording=RecordingConfig(mode=mode, snapshot_every=snapshot_every, progress=False),
    )


@torch.no_grad()
def direct_losses(model, dataset) -> np.ndarray:
    model.eval()
    batch = collate(dataset.to_list())
    return per_sample_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"]).numpy()


def test_eval_mode_records_the_exact_loss_of_every_sample(tmp_path):
    trainer = recording_trainer(tmp_path)
    trainer.train()
    matrix = load_loss_matrix(tmp_path, IDS)
    assert matrix.losses.shape == (N, 3) and matrix.settings.mode == "eval"
    np.testing.assert_allclose(
        matrix.losses[:, -1],
        direct_losses(trainer.model, make_dataset(N, BLOCK, VOCAB, 0)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert (matrix.n_tokens == BLOCK - 1).all()
    steps = [info["step"] for info in matrix.snapshots.values()]
    assert steps == [10, 20, 30]  # ceil(37 / 4) = 10 steps per epoch


def test_train_mode_equals_eval_mode_when_weights_do_not_move(tmp_path):
    recording_trainer(tmp_path / "eval", "eval", learning_rate=0.0).train()
    recording_trainer(tmp_path / "train", "train", learning_rate=0.0).train()
    eval_m = load_loss_matrix(tmp_path / "eval", IDS)
    train_m = load_loss_matrix(tmp_path / "train", IDS)
    assert train_m.settings.mode == "train"
    np.testing.assert_allclose(train_m.losses, eval_m.losses, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_recording_does_not_change_training(tmp_path, mode):
    plain = Trainer(
        model=make_model(VOCAB, BLOCK, seed=0),
        args=training_args(tmp_path / "plain"),
        train_dataset=make_dataset(N, BLOCK, VOCAB, 0).remove_columns("sample_id"),
        data_collator=collate,
    )
    plain.train()
    recorded = recording_trainer(tmp_path / "rec", mode)
    recorded.train()
    for (name, a), (_, b) in zip(plain.model.named_parameters(), recorded.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)


def test_sample_id_never_reaches_forward(tmp_path):
    trainer = recording_trainer(tmp_path, "train", num_train_epochs=1)
    seen = []
    trainer.model.register_forward_pre_hook(lambda m, a, kw: seen.append(sorted(kw)), with_kwargs=True)
    trainer.train()
    trainer.evaluate(make_dataset(8, BLOCK, VOCAB, 1))
    assert seen and all("sample_id" not in kw for kw in seen)


def test_snapshots_every_k_steps(tmp_path):
    recording_trainer(tmp_path, "eval", snapshot_every=4, num_train_epochs=2).train()
    matrix = load_loss_matrix(tmp_path, IDS)
    assert [info["step"] for info in matrix.snapshots.values()] == [4, 8, 12, 16, 20]
    with pytest.raises(ValueError, match="snapshot_every needs mode='eval'"):
        RecordingSettings(mode="train", snapshot_every=3)


class Crash(TrainerCallback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_crash_and_resume_completes_the_matrix(tmp_path, mode):
    reference = recording_trainer(tmp_path / "ref", mode, save_strategy="steps", save_steps=7)
    reference.train()
    expected = load_loss_matrix(tmp_path / "ref", IDS).losses

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        recording_trainer(out, mode, callbacks=[Crash(25)], save_strategy="steps", save_steps=7).train()
    store = LossStore(out)
    assert list(store.completed()) == [1, 2]  # epoch 3 was cut short at step 25
    if mode == "train":
        assert list(store.partials(3, 0)) == [21]  # records of epoch 3 up to the checkpoint
    # What was completed before the crash merges on its own; the unfinished snapshot is ignored.
    np.testing.assert_allclose(load_loss_matrix(out, IDS).losses, expected[:, :2], rtol=1e-5, atol=1e-6)
    resumed = recording_trainer(out, mode, save_strategy="steps", save_steps=7)
    resumed.train(resume_from_checkpoint=True)
    got = load_loss_matrix(out, IDS)
    assert list(got.snapshots) == [1, 2, 3]
    np.testing.assert_allclose(got.losses, expected, rtol=1e-5, atol=1e-6)
    assert not store.partials(3, 0)
    assert not list(out.rglob("*.tmp"))


def test_a_run_with_other_settings_is_refused(tmp_path):
    recording_trainer(tmp_path, "eval", num_train_epochs=1).train()
    with pytest.raises(ValueError, match=r"mode: recorded 'eval', now 'train'"):
        recording_trainer(tmp_path, "train", num_train_epochs=1).train()


def test_missing_and_duplicate_sample_ids():
    ds = make_dataset(10, BLOCK, VOCAB, 0).remove_columns("sample_id")
    with pytest.warns(UserWarning, match="no 'sample_id' column; using the row index"):
        fixed = ensure_sample_ids(ds)
    assert fixed["sample_id"][:] == list(range(10))
    dup = Dataset.from_dict({"input_ids": [[1, 2]] * 4, "sample_id": [5, 6, 5, 6]})
    with pytest.raises(ValueError, match=r"2 duplicated sample_ids \(2 extra rows\); first: \[5, 6\]"):
        ensure_sample_ids(dup)
    stream = ds.to_iterable_dataset()
    with pytest.raises(ValueError, match="iterable training dataset has no 'sample_id'"):
        ensure_sample_ids(stream)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_sample_ids(fixed)  # nothing to say about a good dataset


def test_add_loss_columns_aligns_by_sample_id(tmp_path):
    recording_trainer(tmp_path, "eval", num_train_epochs=2).train()
    dataset = make_dataset(N, BLOCK, VOCAB, 0).shuffle(seed=3)  # another row order than the recording
    merged = add_loss_columns(dataset, tmp_path, progress=False)
    matrix = load_loss_matrix(tmp_path, IDS)
    for row in merged.select(range(5)):
        i = row["sample_id"] - 100
        assert row["carto_loss_1"] == pytest.approx(float(matrix.losses[i, 0]))
        assert row["carto_loss_2"] == pytest.approx(float(matrix.losses[i, 1]))
    assert merged.features["carto_loss_1"].dtype == "float32"


def test_hand_written_loop_records_with_a_custom_loss_fn(tmp_path):
    """A model that is not a Hugging Face causal LM brings its own loss_fn."""
    dataset = make_dataset(N, BLOCK, VOCAB, 0)
    model = torch.nn.Sequential(torch.nn.Embedding(VOCAB, 8), torch.nn.Linear(8, VOCAB))
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=collate)

    def loss_fn(m, batch):
        return per_sample_loss(m(batch["input_ids"]), batch["labels"], return_counts=True)

    recorder = LossRecorder(tmp_path, "eval", progress=False)  # length unknown, as for a stream
    recorder.start()
    for t in (1, 2):
        recorder.eval_snapshot(model, loader, snapshot=t, step=t, loss_fn=loss_fn)
    matrix = load_loss_matrix(tmp_path)  # ids come from the first snapshot when none are given
    assert matrix.sample_ids.tolist() == IDS.tolist()
    np.testing.assert_array_equal(matrix.losses[:, 0], matrix.losses[:, 1])
    assert model.training  # restored after the pass
    manifest = json.loads((tmp_path / "carto" / "manifest.json").read_text())
    assert manifest["settings"]["num_samples"] is None


def test_a_fresh_run_refuses_an_earlier_recording_unless_told(tmp_path):
    recording_trainer(tmp_path, "eval", num_train_epochs=2).train()
    with pytest.raises(ValueError, match="already holds 2 completed snapshots from an earlier run"):
        recording_trainer(tmp_path, "eval", num_train_epochs=1).train()
    trainer = RecordingTrainer(
        model=make_model(VOCAB, BLOCK, seed=0),
        args=training_args(tmp_path, num_train_epochs=1),
        train_dataset=make_dataset(N, BLOCK, VOCAB, 0),
        data_collator=collate,
        recording=RecordingConfig(mode="eval", progress=False, overwrite=True),
    )
    trainer.train()
    assert list(load_loss_matrix(tmp_path, IDS).snapshots) == [1]  # nothing stale from the first run


def test_resume_forgets_snapshots_taken_after_the_checkpoint(tmp_path):
    store = LossStore(tmp_path)
    recorder = LossRecorder(tmp_path, "eval", num_samples=2, progress=False)
    recorder.start()
    for t, step in ((1, 5), (2, 10), (3, 15)):
        recorder.record([0, 1], [1.0, 2.0], [3, 3], step)
        recorder.end_snapshot(t, step)
    LossRecorder(tmp_path, "eval", num_samples=2, progress=False).start(resume_step=10)
    assert list(store.completed()) == [1, 2]


def subset_trainer(out, snapshot_rows, **kwargs):
    return RecordingTrainer(
        model=make_model(VOCAB, BLOCK, seed=0),
        args=training_args(out),
        train_dataset=make_dataset(N, BLOCK, VOCAB, seed=0),
        data_collator=collate,
        recording=RecordingConfig(mode="eval", progress=False, snapshot_rows=snapshot_rows, **kwargs),
    )


def test_snapshots_of_a_seeded_subset_record_those_rows_exactly(tmp_path):
    """Eval-mode snapshots on a fixed seeded subset: the same losses the full snapshots give for
    those rows, training unchanged; the stock Trainer with the callback picks the same rows; the
    merge expects them and asks to select them from the full dataset."""
    from hf_carto import CartographyCallback
    from hf_carto.record.merge import select_recorded_rows, unrecorded_rows
    from hf_carto.record.recorder import snapshot_subset

    full = recording_trainer(tmp_path / "full")
    full.train()
    part = subset_trainer(tmp_path / "part", 0.4, snapshot_seed=3)
    part.train()
    for (name, a), (_, b) in zip(full.model.named_parameters(), part.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # snapshots do not touch training
    rows = snapshot_subset(N, 0.4, seed=3)
    assert rows.size == round(0.4 * N)
    store = LossStore(tmp_path / "part")
    np.testing.assert_array_equal(store.snapshot_ids(), IDS[rows])
    assert store.settings().snapshot_rows == rows.size and store.settings().snapshot_seed == 3
    subset = load_loss_matrix(tmp_path / "part")  # the expected ids default to the subset's
    np.testing.assert_array_equal(subset.sample_ids, IDS[rows])
    everything = load_loss_matrix(tmp_path / "full", IDS).losses[rows]
    np.testing.assert_allclose(subset.losses, everything, rtol=1e-5, atol=1e-6)

    dataset = make_dataset(N, BLOCK, VOCAB, seed=0)
    with pytest.raises(
        ValueError, match=r"snapshots of 15 of the training rows .*37 rows are not those.*select_recorded_rows"
    ):
        add_loss_columns(dataset, tmp_path / "part", progress=False)
    chosen = select_recorded_rows(dataset, tmp_path / "part")
    merged = add_loss_columns(chosen, tmp_path / "part", progress=False)
    np.testing.assert_array_equal(np.asarray(merged["sample_id"]), IDS[rows])
    np.testing.assert_allclose(np.asarray(merged["carto_loss_3"]), everything[:, 2], rtol=1e-5, atol=1e-6)
    rest = unrecorded_rows(dataset, tmp_path / "part")  # the rows without scores, in the dataset's order
    np.testing.assert_array_equal(np.asarray(rest["sample_id"]), np.delete(IDS, rows))
    assert unrecorded_rows(dataset, tmp_path / "full") is None
    # The dataset card says that the scores cover a subset.
    from hf_carto import add_cartography, fit_cartography
    from hf_carto.publish.export import export_hub_layout

    fit = fit_cartography(merged, burn_in=1, eps=2.0)
    card = (
        export_hub_layout(
            add_cartography(merged, fit), tmp_path / "hub", repo_id="x/y", fit=fit, recording=vars(store.settings())
        )
        / "README.md"
    )
    assert "| snapshots cover | a fixed seeded subset of 15 of 37 training rows (seed 3)" in card.read_text()

    callback = CartographyCallback("eval", progress=False, snapshot_rows=0.4, snapshot_seed=3)
    Trainer(
        model=make_model(VOCAB, BLOCK, seed=0),
        args=training_args(tmp_path / "stock", remove_unused_columns=False),
        train_dataset=make_dataset(N, BLOCK, VOCAB, seed=0),
        data_collator=collate,
        callbacks=[callback],
    ).train()
    stock = load_loss_matrix(tmp_path / "stock")
    np.testing.assert_array_equal(stock.sample_ids, IDS[rows])
    np.testing.assert_allclose(stock.losses, subset.losses, rtol=1e-5, atol=1e-6)


def test_subset_snapshots_refuse_what_cannot_work(tmp_path):
    from hf_carto import CartographyCallback
    from hf_carto.record.recorder import snapshot_subset

    with pytest.raises(ValueError, match="snapshot_rows needs mode='eval'"):
        CartographyCallback("train", snapshot_rows=0.5)
    with pytest.raises(ValueError, match=r"a fraction in \(0, 1\) or a whole number of rows; got 1.5"):
        snapshot_subset(10, 1.5)
    with pytest.raises(ValueError, match=r"a fraction in \(0, 1\) or a whole number of rows; got -0.5"):
        snapshot_subset(10, -0.5)
    assert snapshot_subset(10, 4.0, seed=2).tolist() == snapshot_subset(10, 4, seed=2).tolist()  # as parsed
    with pytest.raises(ValueError, match="between 1 and the 10 training rows"):
        snapshot_subset(10, 11)
    assert snapshot_subset(10, 4, seed=1).tolist() == snapshot_subset(10, 4, seed=1).tolist()
    # A resumed run must cover the same rows.
    subset_trainer(tmp_path / "run", 5).train()
    with pytest.raises(ValueError, match="holds another subset of rows"):
        LossStore(tmp_path / "run").write_snapshot_ids(IDS[:5])
