"""CartoSFTTrainer: trl's SFTTrainer on curated text, prompt/completion and messages datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import trl  # a test dependency (the test extra): a missing trl fails these tests, it does not skip them
from datasets import Dataset
from transformers import AutoTokenizer

from hf_carto.core.columns import KEEP, LOSS_WEIGHT, SAMPLE_ID, SAMPLING_WEIGHT
from hf_carto.core.models import tiny_gpt2
from hf_carto.curation.sft import CartoSFTTrainer

# A chat template with generation markers, so that assistant_only_loss can find the assistant turns
# (the GPT-2 tokenizer has no template of its own).
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ 'assistant: ' + m['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)
WORDS = "the cat sat on a mat while seven red birds sang over quiet hills near old stone walls".split()


@pytest.fixture(scope="module")
def tokenizer(gpt2_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_model(tokenizer):
    # No dropout: the hand-written references below run the same model in train mode.
    return tiny_gpt2(
        len(tokenizer),
        n_positions=64,
        n_embd=16,
        n_layer=2,
        n_head=2,
        seed=0,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
    )


def phrase(i: int, length: int) -> str:
    return " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(length))


def rows(kind: str, n: int) -> dict[str, list]:
    """n rows of one of trl's dataset formats, of different lengths (so padding is exercised)."""
    if kind == "text":
        return {"text": [phrase(i, 4 + i % 5) for i in range(n)]}
    if kind == "prompt_completion":
        return {
            "prompt": [phrase(i, 2 + i % 3) for i in range(n)],
            "completion": [phrase(i + 1, 3 + i % 4) for i in range(n)],
        }
    return {
        "messages": [
            [
                {"role": "user", "content": phrase(i, 2 + i % 3)},
                {"role": "assistant", "content": phrase(i + 5, 3 + i % 4)},
            ]
            for i in range(n)
        ]
    }


def curated(kind: str, n: int, loss_w=None, sample_w=None, keep=None, columns=(LOSS_WEIGHT, SAMPLING_WEIGHT, KEEP)):
    data = {**rows(kind, n), SAMPLE_ID: np.arange(100, 100 + n)}
    values = {
        LOSS_WEIGHT: np.ones(n, np.float32) if loss_w is None else np.float32(loss_w),
        SAMPLING_WEIGHT: np.ones(n, np.float32) if sample_w is None else np.float32(sample_w),
        KEEP: np.ones(n, bool) if keep is None else np.asarray(keep, bool),
    }
    return Dataset.from_dict({**data, **{c: values[c] for c in columns}})


def config(out, **overrides):
    values = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        use_cpu=True,
        disable_tqdm=True,
        max_length=None,
        dataset_num_proc=None,
    )
    values.update(overrides)
    return trl.SFTConfig(**values)


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def first_rows_batch(trainer, n: int):
    """The collated batch of the first n prepared rows, as the training loop would build it."""
    features = trainer._remove_unused_columns(trainer.train_dataset.select(range(n))).to_list()
    return features, trainer._prepare_inputs(trainer.data_collator(features))


def hand_weighted_loss(model, features, weights) -> torch.Tensor:
    """sum_i w_i * (sum of sample i's target-token NLL) / (number of target tokens), one sample at a time."""
    total, count = torch.zeros(()), 0
    for feature, w in zip(features, weights, strict=True):
        ids = torch.tensor([feature["input_ids"]])
        labels = torch.tensor(feature["labels"][1:])
        log_probs = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        target = labels != -100
        total = total - w * log_probs[target].gather(1, labels[target][:, None]).sum()
        count += int(target.sum())
    return total / count


@pytest.mark.parametrize(
    "kind, overrides",
    [("text", {}), ("prompt_completion", {"padding_free": True, "per_device_train_batch_size": 3})],
)
def test_unit_weights_reproduce_the_plain_sft_trainer(tmp_path, tokenizer, kind, overrides):
    data = curated(kind, 12)
    trained = []
    for name, cls, ds in (
        ("plain", trl.SFTTrainer, data.remove_columns([LOSS_WEIGHT, SAMPLING_WEIGHT, KEEP])),
        ("carto", CartoSFTTrainer, data),
    ):
        trainer = cls(
            model=make_model(tokenizer),
            args=config(tmp_path / name, **overrides),
            train_dataset=ds,
            processing_class=tokenizer,
        )
        trainer.train()
        trained.append(([h["loss"] for h in trainer.state.log_history if "loss" in h], params(trainer.model)))
    (plain_losses, plain_params), (carto_losses, carto_params) = trained
    assert len(plain_losses) == 3
    assert carto_losses == plain_losses  # exactly: a unit weight changes no number
    for name, value in plain_params.items():
        assert torch.equal(carto_params[name], value), name
    untouched = params(make_model(tokenizer))
    assert any(not torch.equal(plain_params[k], untouched[k]) for k in untouched)  # it did train


@pytest.mark.parametrize("padding_free", [False, True])
def test_batch_loss_is_the_weighted_sum_over_target_tokens(tmp_path, tokenizer, padding_free):
    """Completion-only loss (prompt/completion rows), so only some tokens are targets."""
    weights = np.array([0.0, 0.5, 2.0, 3.0, 1.0, 1.0])
    trainer = CartoSFTTrainer(
        model=make_model(tokenizer),
        args=config(tmp_path, padding_free=padding_free),
        train_dataset=curated("prompt_completion", 6, loss_w=weights),
        processing_class=tokenizer,
    )
    features, batch = first_rows_batch(trainer, 4)
    assert batch["input_ids"].shape[0] == (1 if padding_free else 4)
    assert any(-100 in f["labels"][1:] for f in features)  # prompts are masked
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    reference = make_model(tokenizer)
    expected = hand_weighted_loss(reference, features, weights[:4])
    unweighted = hand_weighted_loss(reference, features, np.ones(4))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert not torch.isclose(expected, unweighted, rtol=1e-3)  # the weights matter in this batch


@pytest.mark.parametrize("padding_free", [False, True])
def test_zero_weight_rows_contribute_no_gradient(tmp_path, tokenizer, padding_free):
    """The gradient of a batch equals that of the batch without its weight-0 rows.

    Both are divided by the same token count: the loss normalises by the batch's *unweighted*
    number of target tokens (zero-weight rows included, as CartoTrainer does), so that removing
    a sample's gradient does not rescale the others'.
    """
    weights = np.array([1.0, 0.0, 2.0, 0.0, 1.0, 0.5])
    data = curated("text", 6, loss_w=weights)
    grads = []
    for name, ds in (("all", data), ("nonzero", data.select(np.flatnonzero(weights)))):
        trainer = CartoSFTTrainer(
            model=make_model(tokenizer),
            args=config(tmp_path / name, padding_free=padding_free),
            train_dataset=ds,
            processing_class=tokenizer,
        )
        if name == "all":
            count = sum(len(f) - 1 for f in trainer.train_dataset["input_ids"])  # every token is a target
        _, batch = first_rows_batch(trainer, len(ds))
        trainer.model.train()
        trainer.compute_loss(trainer.model, batch, num_items_in_batch=count).backward()
        grads.append({k: p.grad.clone() for k, p in trainer.model.named_parameters()})
    assert any(g.abs().sum() > 0 for g in grads[0].values())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize(
    "kind, overrides",
    [
        ("text", {}),
        ("prompt_completion", {}),
        ("messages", {}),
        ("messages", {"assistant_only_loss": True}),
    ],
)
def test_every_dataset_format_trains_with_its_weights(tmp_path, tokenizer, kind, overrides):
    n = 10
    trainer = CartoSFTTrainer(
        model=make_model(tokenizer),
        args=config(tmp_path, max_steps=2, **overrides),
        train_dataset=curated(
            kind,
            n,
            loss_w=np.linspace(0.0, 2.0, n),
            sample_w=np.r_[np.ones(n - 2), 4.0, 4.0],
            keep=np.r_[False, np.ones(n - 1, bool)],
        ),
        processing_class=tokenizer,
    )
    prepared = trainer.train_dataset
    assert len(prepared) == n - 1 and 100 not in prepared[SAMPLE_ID]  # carto_keep == False is gone
    for row in prepared:  # the weights stayed with their rows through trl's tokenization
        assert row[LOSS_WEIGHT] == pytest.approx(2.0 * (row[SAMPLE_ID] - 100) / (n - 1))
    masked = kind == "prompt_completion" or overrides.get("assistant_only_loss", False)
    # Only the completion / the assistant turns are targets; otherwise every token.
    assert all((-100 in labels) == masked for labels in prepared["labels"])
    before = params(trainer.model)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert any(not torch.equal(before[k], v) for k, v in params(trainer.model).items())


def test_sampling_weights_follow_their_rows_through_trl_shuffling(tmp_path, tokenizer):
    n = 12
    ids = np.arange(100, 100 + n)
    trainer = CartoSFTTrainer(
        model=make_model(tokenizer),
        args=config(tmp_path, shuffle_dataset=True),
        train_dataset=curated("text", n, sample_w=(ids % 2 == 0) * 1.0, columns=(SAMPLING_WEIGHT,)),
        processing_class=tokenizer,
        epoch_samples=200,
    )
    prepared_ids = np.asarray(trainer.train_dataset[SAMPLE_ID])
    assert not np.array_equal(prepared_ids, ids)  # trl did reorder the rows
    drawn = prepared_ids[list(trainer._get_train_sampler())]
    assert len(drawn) == 200 and set(drawn) == set(ids[ids % 2 == 0])


@pytest.mark.parametrize(
    "columns, values, overrides, match",
    [
        ((), {}, {}, "none of the columns carto_loss_weight"),
        ((LOSS_WEIGHT,), {LOSS_WEIGHT: [1.0, None, 1.0, 1.0]}, {}, "'carto_loss_weight' is missing in 1 of 4 rows"),
        ((LOSS_WEIGHT,), {}, {"packing": True, "max_length": 32}, "packing=True .* drops 'carto_loss_weight'"),
        ((LOSS_WEIGHT,), {}, {"loss_type": "dft"}, "'carto_loss_weight' cannot be combined with loss_type='dft'"),
    ],
)
def test_unusable_weight_columns_are_named_before_training(tmp_path, tokenizer, columns, values, overrides, match):
    ds = curated("text", 4, columns=columns)
    for column, column_values in values.items():
        ds = ds.remove_columns(column).add_column(column, column_values)
    with pytest.raises(ValueError, match=match):
        CartoSFTTrainer(
            model=make_model(tokenizer),
            args=config(tmp_path, **overrides),
            train_dataset=ds,
            processing_class=tokenizer,
        )


def test_a_loss_computed_without_the_fused_head_is_refused(tmp_path, tokenizer, monkeypatch):
    """A trl whose SFTTrainer takes the model's own loss would never see the weights: no silent ignore."""
    trainer = CartoSFTTrainer(
        model=make_model(tokenizer),
        args=config(tmp_path),
        train_dataset=curated("text", 4, loss_w=[1.0, 2.0, 0.0, 1.0]),
        processing_class=tokenizer,
    )
    _, batch = first_rows_batch(trainer, 4)
    trainer.model.train()
    monkeypatch.setattr(
        trl.SFTTrainer,
        "compute_loss",
        lambda self, model, inputs, return_outputs=False, num_items_in_batch=None: model(**inputs).loss,
    )
    with pytest.raises(RuntimeError, match="'carto_loss_weight' was not applied"):
        trainer.compute_loss(trainer.model, batch)


def test_the_weighted_sft_trainer_is_a_top_level_name_outside_star_imports():
    import hf_carto
    from hf_carto.curation.sft import CartoSFTTrainer

    assert hf_carto.CartoSFTTrainer is CartoSFTTrainer and "CartoSFTTrainer" in dir(hf_carto)
    assert "CartoSFTTrainer" not in hf_carto.__all__  # `import *` must not need trl


def test_no_trainer_of_the_package_writes_a_hub_token_into_what_it_saves(tmp_path, tokenizer):
    from transformers import TrainingArguments, default_data_collator

    from hf_carto import RecordingTrainer

    sentinel = "hf_sentinel_" + "x" * 24
    sft = CartoSFTTrainer(
        model=make_model(tokenizer),
        args=config(tmp_path / "sft", hub_token=sentinel, max_steps=1),
        train_dataset=curated("text", 8),
        processing_class=tokenizer,
    )
    blocks = Dataset.from_dict({"input_ids": [[1, 2, 3, 4]] * 8, "labels": [[1, 2, 3, 4]] * 8, SAMPLE_ID: range(8)})
    args = TrainingArguments(
        str(tmp_path / "rec"), hub_token=sentinel, max_steps=1, report_to="none", use_cpu=True, save_strategy="no"
    )
    recording = RecordingTrainer(
        model=make_model(tokenizer), args=args, train_dataset=blocks, data_collator=default_data_collator
    )
    for trainer, folder in ((sft, tmp_path / "sft"), (recording, tmp_path / "rec")):
        assert trainer.args.hub_token is None
        trainer.train()
        trainer.save_model(str(folder / "saved"))
        files = [f for f in folder.rglob("*") if f.is_file()]
        assert any(f.name == "training_args.bin" for f in files)
        assert not [f for f in files if sentinel.encode() in f.read_bytes()]
