"""CartoTrainer: weighted loss, up-sampling, removal, continuation and its arms, bad input."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_carto import add_cartography
from hf_carto.curation.arms import arm_budget, build_arms, continue_from_checkpoint
from hf_carto.curation.weighted_trainer import CartoTrainer, WeightedEpochSampler
from hf_carto.record.losses import token_nll
from hf_carto.record.merge import load_loss_matrix

sys.path.insert(0, str(Path(__file__).parent / "launch"))
from record_tiny import collate, make_dataset, make_model  # noqa: E402

BLOCK, VOCAB = 12, 50


def args_for(out, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        num_train_epochs=2,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def with_columns(ds: Dataset, loss_w=None, sample_w=None, keep=None) -> Dataset:
    n = len(ds)
    ds = ds.add_column("carto_loss_weight", np.ones(n, np.float32) if loss_w is None else np.float32(loss_w))
    ds = ds.add_column("carto_sampling_weight", np.ones(n, np.float32) if sample_w is None else np.float32(sample_w))
    return ds.add_column("carto_keep", np.ones(n, bool) if keep is None else np.asarray(keep, bool))


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def assert_same_params(a, b, atol=1e-6):
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=atol, msg=name)


def test_unit_weights_reproduce_the_plain_trainer(tmp_path):
    data = make_dataset(24, BLOCK, VOCAB, 0)
    plain = Trainer(
        model=make_model(VOCAB, BLOCK, 0),
        args=args_for(tmp_path / "p"),
        train_dataset=data.remove_columns("sample_id"),
        data_collator=collate,
    )
    plain.train()
    carto = CartoTrainer(
        model=make_model(VOCAB, BLOCK, 0),
        args=args_for(tmp_path / "c"),
        train_dataset=with_columns(data),
        data_collator=collate,
    )
    carto.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (plain, carto)]
    assert len(losses[0]) == 12
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)
    assert_same_params(params(plain.model), params(carto.model))


def test_zero_weight_samples_contribute_no_gradient(tmp_path):
    """Zero-weight rows replaced by other tokens (same length): the trained weights do not change."""
    data = make_dataset(24, BLOCK, VOCAB, 0)
    weights = np.where(np.arange(24) % 3 == 0, 0.0, 1.0)
    other = make_dataset(24, BLOCK, VOCAB, 99)
    swapped_ids = [other[i]["input_ids"] if weights[i] == 0 else data[i]["input_ids"] for i in range(24)]
    swapped = Dataset.from_dict({"input_ids": swapped_ids, "labels": swapped_ids, "sample_id": data["sample_id"][:]})
    trained = []
    for name, ds in (("a", data), ("b", swapped)):
        trainer = CartoTrainer(
            model=make_model(VOCAB, BLOCK, 0),
            args=args_for(tmp_path / name),
            train_dataset=with_columns(ds, loss_w=weights),
            data_collator=collate,
        )
        trainer.train()
        trained.append(params(trainer.model))
    assert_same_params(*trained)
    untouched = params(make_model(VOCAB, BLOCK, 0))
    assert any(not torch.allclose(trained[0][k], untouched[k]) for k in untouched)  # it did train


def test_weights_and_gradient_accumulation_match_a_hand_computed_update(tmp_path):
    """One SGD step over 2 micro-batches of 4: theta - lr * grad(sum_i w_i * nll_i / #target tokens)."""
    data = make_dataset(8, BLOCK, VOCAB, 0)
    weights = np.array([0.0, 0.5, 1.0, 2.0, 1.0, 0.25, 3.0, 1.0])
    lr = 0.5
    trainer = CartoTrainer(
        model=make_model(VOCAB, BLOCK, 0),
        args=args_for(
            tmp_path, gradient_accumulation_steps=2, max_steps=1, optim="sgd", learning_rate=lr, max_grad_norm=0.0
        ),
        train_dataset=with_columns(data, loss_w=weights),
        data_collator=collate,
    )
    reference = make_model(VOCAB, BLOCK, 0)
    batch = collate(data.to_list())
    nll, mask = token_nll(reference(input_ids=batch["input_ids"]).logits, batch["labels"])
    # The Trainer's token count: labels[..., 1:] when it knows the model shifts labels, else every
    # label (transformers does the latter for a GPT-2 built from a config without loss_type).
    count = mask.sum() if trainer._loss_shifts_labels else (batch["labels"] != -100).sum()
    loss = (nll.sum(dim=1) * torch.tensor(weights, dtype=torch.float32)).sum() / count
    loss.backward()
    with torch.no_grad():
        expected = {k: p - lr * p.grad for k, p in reference.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 1
    assert_same_params(params(trainer.model), expected, atol=1e-5)


def test_sampling_frequencies_follow_the_weights():
    weights = np.array([0.0, 1.0, 2.0, 4.0, 1.0])
    sampler = WeightedEpochSampler(weights, num_samples=200_000, seed=3)
    counts = np.bincount(sampler.indices(0), minlength=5)
    expected = 200_000 * weights / weights.sum()
    # Binomial standard deviation: sqrt(n p (1 - p)); 5 sigma leaves no room for a flaky failure.
    sigma = np.sqrt(expected * (1 - weights / weights.sum()))
    assert counts[0] == 0
    assert (np.abs(counts - expected) <= 5 * sigma + 1e-9).all(), (counts, expected)
    assert not np.array_equal(sampler.indices(0), sampler.indices(1))  # a new draw each epoch
    np.testing.assert_array_equal(sampler.indices(1), WeightedEpochSampler(weights, 200_000, seed=3).indices(1))


def test_up_sampling_and_removal_reach_the_training_batches(tmp_path):
    data = make_dataset(30, BLOCK, VOCAB, 0)
    keep = np.arange(30) % 10 != 0  # rows 0, 10, 20 (sample_ids 100, 110, 120) removed
    sample_w = np.where(np.arange(30) < 15, 4.0, 1.0)
    trainer = CartoTrainer(
        model=make_model(VOCAB, BLOCK, 0),
        args=args_for(tmp_path, num_train_epochs=1, learning_rate=0.0),
        train_dataset=with_columns(data, sample_w=sample_w, keep=keep),
        data_collator=collate,
        recording="train",
        epoch_samples=600,
    )
    assert len(trainer.train_dataset) == 27
    trainer.train()
    seen = Counter()
    for path in (tmp_path / "carto" / "losses" / "snapshot=1").glob("rank=*.parquet"):
        import pyarrow.parquet as pq

        seen.update(pq.read_table(path).column("sample_id").to_pylist())
    assert sum(seen.values()) == 600
    assert not {100, 110, 120} & set(seen)
    heavy = sum(c for s, c in seen.items() if s < 115)
    light = sum(c for s, c in seen.items() if s >= 115)
    # 13 kept rows of weight 4 against 14 of weight 1: expected share 52 / 66 = 0.788.
    assert abs(heavy / (heavy + light) - 52 / 66) < 0.06


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({}, "none of the columns"),
        (
            {"carto_loss_weight": [1.0, -1.0, 1.0, float("nan")]},
            r"2 negative or non-finite values; first sample_ids: \[101, 103\]",
        ),
        ({"carto_loss_weight": [0.0, 0.0, 0.0, 0.0]}, "'carto_loss_weight' is 0 for every one"),
        ({"carto_sampling_weight": [0.0, 0.0, 0.0, 0.0]}, "'carto_sampling_weight' is 0 for every one"),
        ({"carto_keep": [False] * 4}, "False for all 4 rows"),
        ({"carto_loss_weight": [1.0, None, 1.0, None]}, r"missing in 2 of 4 rows \(first sample_ids: \[101, 103\]\)"),
    ],
)
def test_bad_intervention_columns_fail_before_training(tmp_path, columns, match):
    data = make_dataset(4, BLOCK, VOCAB, 0)
    for name, values in columns.items():
        data = data.add_column(name, values)
    with pytest.raises(ValueError, match=match):
        CartoTrainer(
            model=make_model(VOCAB, BLOCK, 0), args=args_for(tmp_path), train_dataset=data, data_collator=collate
        )
    assert not (tmp_path / "carto").exists()


# --- Algorithm 1: arms and continuation ------------------------------------------------------


@pytest.fixture(scope="module")
def scored() -> Dataset:
    rng = np.random.default_rng(0)
    losses = rng.choice([0.3, 1.0, 2.0, 4.0], size=(200, 6)).astype(np.float32)
    cols = {f"carto_loss_{t + 1}": losses[:, t] for t in range(6)}
    cols["sample_id"] = np.arange(200)
    return add_cartography(Dataset.from_dict(cols), burn_in=2, eps=1.5)


@pytest.mark.parametrize("kwargs", [{"alpha": 0.5, "gamma": 2.0, "remove_noisy": True}, {"budget": 0.1, "alpha": 0.0}])
def test_random_arm_has_the_same_budget(scored, kwargs):
    arms = build_arms(scored, seed=1, **kwargs)
    budgets = {name: arm_budget(arm) for name, arm in arms.items()}
    assert budgets["no_intervention"]["fraction_of_weight_pruned"] == 0.0
    assert budgets["random"] == budgets["gendatacarto"]
    assert budgets["gendatacarto"]["fraction_of_weight_pruned"] > 0
    treated = {name: np.asarray(arms[name]["carto_loss_weight"][:]) for name in ("gendatacarto", "random")}
    assert (treated["gendatacarto"] != treated["random"]).any()  # other rows, same treatments
    q = np.asarray(arms["gendatacarto"]["carto_keep"][:])
    if "budget" in kwargs:
        assert budgets["gendatacarto"]["num_removed"] == 20
        m = np.asarray(scored["carto_memorization"][:])
        assert m[~q].min() >= m[q].max()  # the removed rows are the most memorized


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_arms_carry_the_budget_selection(scored, alpha):
    arms = build_arms(scored, budget=0.1, alpha=alpha, seed=1)
    assert isinstance(arms, dict) and set(arms) == {"no_intervention", "gendatacarto", "random"}
    selection = arms.selection
    gendatacarto = arms["gendatacarto"]
    treated = np.asarray(gendatacarto["carto_loss_weight"][:]) < 1
    assert selection.n_selected == 20 == int(treated.sum())
    assert np.flatnonzero(treated).tolist() == sorted(selection.indices.tolist())
    removed = int((~np.asarray(gendatacarto["carto_keep"][:])).sum())
    assert removed == (selection.n_selected if alpha == 0 else 0)
    assert build_arms(scored, alpha=0.5, gamma=2.0).selection is None  # per-quadrant rules: no cut


def test_continuation_restores_optimizer_and_scheduler(tmp_path):
    data = make_dataset(24, BLOCK, VOCAB, 0)
    mapping = Trainer(
        model=make_model(VOCAB, BLOCK, 0),
        args=args_for(tmp_path / "map", num_train_epochs=4, lr_scheduler_type="linear", save_strategy="epoch"),
        train_dataset=data.remove_columns("sample_id"),
        data_collator=collate,
    )
    mapping.train()
    checkpoint = tmp_path / "map" / "checkpoint-12"  # end of epoch 2 = T_e
    assert checkpoint.exists()
    saved_optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    lr_at_checkpoint = [h["learning_rate"] for h in mapping.state.log_history if h.get("step") == 13][0]

    arm = with_columns(data, keep=np.arange(24) % 4 != 0)  # 18 rows: another length than the mapping run
    trainer = continue_from_checkpoint(
        checkpoint,
        arm,
        args_for(tmp_path / "cont", num_train_epochs=2, lr_scheduler_type="linear"),
        data_collator=collate,
    )
    state = trainer.optimizer.state_dict()
    first = next(iter(saved_optimizer["state"]))
    torch.testing.assert_close(state["state"][first]["exp_avg"], saved_optimizer["state"][first]["exp_avg"])
    assert trainer.lr_scheduler.last_epoch == 12
    # The schedule carries on: 12 steps done, 2 epochs of ceil(18 / 4) = 5 steps to go.
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-2 * (22 - 12) / 22)
    trainer.train()
    logged = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert logged[0] == pytest.approx(1e-2 * (22 - 12) / 22)
    assert logged[-1] == pytest.approx(1e-2 * (22 - 21) / 22)
    assert lr_at_checkpoint > 0
    with pytest.raises(FileNotFoundError, match="optimizer.pt is missing"):
        continue_from_checkpoint(tmp_path / "map", arm, args_for(tmp_path / "x"), data_collator=collate)


def test_continuation_can_map_phase_b(tmp_path):
    """CartoTrainer records while it trains on curated data (the phase after T_e is mapped too)."""
    data = with_columns(make_dataset(20, BLOCK, VOCAB, 0), loss_w=np.linspace(0, 1, 20))
    CartoTrainer(
        model=make_model(VOCAB, BLOCK, 0),
        args=args_for(tmp_path),
        train_dataset=data,
        data_collator=collate,
        recording="eval",
    ).train()
    matrix = load_loss_matrix(tmp_path, np.arange(100, 120))
    assert matrix.losses.shape == (20, 2) and np.isfinite(matrix.losses).all()


def test_loss_weight_never_reaches_forward(tmp_path):
    data = with_columns(make_dataset(8, BLOCK, VOCAB, 0), loss_w=np.full(8, 0.5))
    trainer = CartoTrainer(
        model=make_model(VOCAB, BLOCK, 0),
        args=args_for(tmp_path, num_train_epochs=1),
        train_dataset=data,
        data_collator=collate,
        recording="eval",
    )
    seen = []
    trainer.model.register_forward_pre_hook(lambda m, a, kw: seen.append(set(kw)), with_kwargs=True)
    trainer.train()
    assert seen and not any({"carto_loss_weight", "sample_id"} & kw for kw in seen)
