"""Leakage evaluation with positive and negative controls: a tiny GPT-2 that memorized, and a fresh one;
decoding rules checked on a scripted model whose every next token is known."""

from __future__ import annotations

import itertools
import json
import logging
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

from hf_carto.core.models import tiny_gpt2
from hf_carto.data.canaries import (
    Canary,
    insert_canaries,
    load_registry,
    locate_canaries,
    make_canaries,
    save_registry,
)
from hf_carto.data.generated import CorpusConfig, generate_corpus
from hf_carto.data.tokenization import train_bpe_tokenizer
from hf_carto.measure.causal_lm import ensure_pad_token, greedy_continuations
from hf_carto.measure.contamination import contamination_recall
from hf_carto.measure.exposure import cached_secret_log_perplexities, exposure, exposure_rank, secret_log_perplexities
from hf_carto.measure.extraction import canary_extraction
from hf_carto.measure.membership import membership_signals, roc_auc
from hf_carto.measure.perplexity import perplexity

pytestmark = pytest.mark.slow
K = 8


def fresh_model(vocab_size: int):
    return tiny_gpt2(vocab_size, n_positions=96, n_embd=64, n_layer=2, n_head=4, eos_token_id=0, seed=0).eval()


@pytest.fixture(scope="module")
def world():
    """Members (trained on, with canaries and contaminating sequences), non-members, two models."""
    corpus = generate_corpus(
        CorpusConfig(num_documents=160, num_duplicate_groups=0, num_canaries=0, num_noise_documents=0, seed=5)
    )
    texts = corpus["text"][:]
    members, non_members = texts[:100], texts[100:160]
    canaries = make_canaries(3, repetitions=(40, 40, 1), secret_length=4, seed=1)
    tokenizer = train_bpe_tokenizer(texts + [c.text for c in canaries], vocab_size=400)
    encode = lambda t: tokenizer(t)["input_ids"][:96]  # noqa: E731
    contaminating = [t for t in non_members[:30] if len(encode(t)) >= 2 * K][:5]
    training_texts, _ = insert_canaries(members + contaminating * 10, canaries, seed=0)
    model = fresh_model(len(tokenizer))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # Each training document ends with end-of-text, as the recipe packs them: a model that never saw
    # the text end after a canary runs on into a longer number, which is not the secret.
    rows = [(tokenizer(t)["input_ids"] + [tokenizer.eos_token_id])[:96] for t in training_texts]
    rng = np.random.default_rng(0)
    for _ in range(30):
        order = rng.permutation(len(rows))
        for start in range(0, len(order), 16):
            batch = [rows[i] for i in order[start : start + 16]]
            width = max(map(len, batch))
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for i, r in enumerate(batch):
                ids[i, : len(r)] = torch.tensor(r)
                labels[i, : len(r)] = torch.tensor(r)
            loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    return {
        "tokenizer": tokenizer,
        "trained": model,
        "fresh": fresh_model(len(tokenizer)),
        "canaries": canaries,
        "members": [encode(t) for t in members],
        "non_members": [encode(t) for t in non_members[30:]],
        "member_texts": members,
        "non_member_texts": non_members[30:],
        "contaminating": [encode(t) for t in contaminating],
        "control": [encode(t) for t in non_members[30:] if len(encode(t)) >= 2 * K][:5],
    }


def test_repeated_canaries_are_extracted_only_by_the_trained_model(world):
    trained = canary_extraction(world["trained"], world["tokenizer"], world["canaries"])
    fresh = canary_extraction(world["fresh"], world["tokenizer"], world["canaries"])
    assert trained["success_rate_by_repetitions"]["40"] == 1.0  # positive control
    assert fresh["num_extracted"] == 0  # negative control
    assert [r["canary_id"] for r in trained["canaries"]] == [0, 1, 2]
    for row in trained["canaries"][:2]:
        assert row["matched_chars"] == row["secret_chars"] == 4 and not row["ended_early"]
    assert "success_rate_by_copies" not in trained  # the canaries were never located in blocks


def test_exact_exposure_matches_one_by_one_enumeration(world):
    canary = Canary(9, world["canaries"][0].prefix, "42", "digits", 1)
    result = exposure(world["trained"], world["tokenizer"], canary)
    one_by_one = np.array(
        [
            secret_log_perplexities(world["trained"], world["tokenizer"], canary.prefix, [f"{i:02d}"])[0]
            for i in range(100)
        ]
    )
    rank = 1 + int((np.delete(one_by_one, 42) < one_by_one[42] - 1e-6).sum())
    assert result["method"] == "exact" and result["space_size"] == 100
    assert result["rank"] == rank
    assert result["exposure"] == pytest.approx(math.log2(100) - math.log2(rank))


def test_memorized_canary_has_high_exposure_and_extrapolation_agrees(world):
    canary = world["canaries"][0]  # 4 digits, repeated 40 times
    exact = exposure(world["trained"], world["tokenizer"], canary)
    fresh = exposure(world["fresh"], world["tokenizer"], canary)
    assert exact["rank"] == 1 and exact["exposure"] == pytest.approx(math.log2(10_000))
    assert fresh["exposure"] < exact["exposure"]
    # The skew-normal estimate on the fresh model, where the secret is not in the extreme tail.
    estimate = exposure(world["fresh"], world["tokenizer"], canary, max_exact=0, sample_size=3000)
    assert estimate["method"] == "skewnorm"
    assert abs(estimate["exposure"] - fresh["exposure"]) < 1.0
    low, high = estimate["exposure_ci95"]
    assert low <= estimate["exposure"] <= high


def test_membership_auc_high_when_overfit_and_near_chance_when_fresh(world):
    pad = world["tokenizer"].pad_token_id
    results = {}
    for name in ("trained", "fresh"):
        member = membership_signals(
            world[name],
            world["members"],
            texts=world["member_texts"],
            pad_token_id=pad,
            reference_model=world["fresh"] if name == "trained" else None,
        )
        non = membership_signals(
            world[name],
            world["non_members"],
            texts=world["non_member_texts"],
            pad_token_id=pad,
            reference_model=world["fresh"] if name == "trained" else None,
        )
        results[name] = {signal: roc_auc(member[signal], non[signal]) for signal in member}
    assert set(results["trained"]) == {"loss", "zlib", "min_k", "min_k_plus_plus", "reference"}
    assert results["trained"]["loss"] > 0.9
    assert results["trained"]["reference"] > 0.9
    for signal, auc in results["fresh"].items():
        assert 0.25 < auc < 0.75, (signal, auc)


def test_contamination_recall_with_a_control_set(world):
    pad = world["tokenizer"].pad_token_id
    inserted = contamination_recall(world["trained"], world["contaminating"], k=K, pad_token_id=pad)
    control = contamination_recall(world["trained"], world["control"], k=K, pad_token_id=pad)
    assert inserted["recall"] >= 0.8
    assert control["recall"] <= 0.2
    assert inserted["mean_matched_tokens"] > control["mean_matched_tokens"]
    with pytest.raises(ValueError, match=r"shorter than 2k = 200 tokens"):
        contamination_recall(world["trained"], world["control"], k=100)


def test_perplexity_is_exp_of_the_hand_computed_mean_nll(world):
    model, sequences = world["trained"], world["non_members"][:7]
    total, count = 0.0, 0
    with torch.no_grad():
        for s in sequences:
            ids = torch.tensor([s])
            total += float(model(input_ids=ids, labels=ids).loss) * (len(s) - 1)
            count += len(s) - 1
    result = perplexity(model, sequences, batch_size=3, pad_token_id=world["tokenizer"].pad_token_id)
    assert result["num_tokens"] == count
    assert result["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_registry_round_trip_and_location(world, tmp_path):
    tokenizer, canaries = world["tokenizer"], world["canaries"]
    blocks = [tokenizer(c.text)["input_ids"] + [0, 0] for c in canaries] + [world["members"][0]]
    located = locate_canaries(blocks, [10, 11, 12, 13], canaries, tokenizer)
    assert [c.sample_ids for c in located] == [[10], [11], [12]]
    path = save_registry(located, tmp_path / "canaries.json")
    assert load_registry(path) == located
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="is not a canary registry"):
        load_registry(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="got 2 blocks for 1 sample_ids"):
        locate_canaries(blocks[:2], [1], canaries, tokenizer)


def test_bad_inputs_are_named(world, caplog):
    long_prefix = Canary(7, "word " * 200, "1234", "digits", 1)
    with pytest.raises(ValueError, match=r"exceed the model context of 96 tokens; first: \['canary 7'\]"):
        canary_extraction(world["fresh"], world["tokenizer"], [long_prefix])
    with pytest.raises(ValueError, match="no canaries"):
        canary_extraction(world["fresh"], world["tokenizer"], [])
    tokenizer = world["tokenizer"].__class__(
        tokenizer_object=world["tokenizer"].backend_tokenizer, eos_token="<|endoftext|>"
    )
    assert tokenizer.pad_token is None
    with caplog.at_level(logging.WARNING):
        ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<|endoftext|>" and "no pad token" in caplog.text
    with pytest.raises(ValueError, match="no sequences"):
        perplexity(world["fresh"], [])
    assert make_canaries(2, secret_format="words")[0].secret.count(" ") == 5
    with pytest.raises(ValueError, match="unknown secret format"):
        make_canaries(1, secret_format="emoji")


def test_evaluate_model_writes_a_report_without_secrets(world, tmp_path):
    from hf_carto.measure.model_report import evaluate_model

    report = evaluate_model(
        world["trained"],
        world["tokenizer"],
        canaries=world["canaries"][:2],
        contaminating=world["contaminating"],
        control=world["control"],
        members=world["members"][:40],
        non_members=world["non_members"][:30],
        validation=world["non_members"][:10],
        reference_model=world["fresh"],
        k=K,
        num_resamples=50,
        exposure_max_exact=10_000,
        output_dir=tmp_path,
    )
    assert report["canaries"]["num_extracted"] == 2
    assert set(report["membership"]) == {"loss", "zlib", "min_k", "min_k_plus_plus", "reference"}
    assert report["contamination"]["inserted"]["recall"] > report["contamination"]["control"]["recall"]
    written = (tmp_path / "report.json").read_text() + (tmp_path / "report.md").read_text()
    for canary in world["canaries"]:
        assert canary.secret not in written
    assert "| MIA signal |" in written and (tmp_path / "membership_roc.png").exists()
    with pytest.raises(ValueError, match="needs both sets; got 3 members and 0 non-members"):
        evaluate_model(world["trained"], world["tokenizer"], members=world["members"][:3], non_members=[])


def test_evaluate_cli(world, tmp_path, capsys):
    from datasets import Dataset

    from hf_carto.commands.main import main

    world["trained"].save_pretrained(tmp_path / "model")
    world["tokenizer"].save_pretrained(tmp_path / "model")
    for name, seqs, texts in (
        ("members", world["members"][:30], world["member_texts"][:30]),
        ("non_members", world["non_members"][:30], world["non_member_texts"][:30]),
    ):
        Dataset.from_dict({"input_ids": seqs, "text": texts}).save_to_disk(str(tmp_path / name))
    save_registry(world["canaries"][:1], tmp_path / "canaries.json")
    argv = [
        "evaluate",
        str(tmp_path / "model"),
        "--out",
        str(tmp_path / "report"),
        "--registry",
        str(tmp_path / "canaries.json"),
        "--members",
        str(tmp_path / "members"),
        "--non-members",
        str(tmp_path / "non_members"),
        "--validation",
        str(tmp_path / "members"),
        "--resamples",
        "20",
    ]
    assert main(argv) == 0
    assert "Canary extraction: **1 of 1**" in capsys.readouterr().out
    assert (tmp_path / "report" / "report.json").exists()
    assert main(["evaluate", str(tmp_path / "model"), "--out", str(tmp_path / "r2")]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nope"), "--out", str(tmp_path / "r3"), "--validation", "x"]) == 2


def test_tradeoff_figures(tmp_path):
    from hf_carto.measure.model_report import plot_tradeoffs

    runs = [
        {
            "arm": "no_intervention",
            "fraction_pruned": 0.0,
            "seed": s,
            "extraction_success": 0.9,
            "perplexity": 10.0 + s,
        }
        for s in (0, 1)
    ]
    runs += [
        {"arm": arm, "fraction_pruned": f, "seed": s, "extraction_success": 0.9 - f, "perplexity": 10.5 + s}
        for arm in ("gendatacarto", "random")
        for f in (0.05, 0.1)
        for s in (0, 1)
    ]
    paths = plot_tradeoffs(runs, tmp_path)
    assert [p.name for p in paths] == ["figure1_extraction_vs_pruned.png", "figure2_perplexity_vs_pruned.png"]
    assert all(p.stat().st_size > 5000 for p in paths)
    with pytest.raises(ValueError, match=r"no no_intervention run for seeds \[2\]"):
        plot_tradeoffs(runs + [{**runs[-1], "seed": 2}], tmp_path)


def test_canary_columns_and_registry_verification(world):
    from datasets import Dataset

    from hf_carto.data.canaries import insert_canaries_dataset, mark_canary_blocks, verify_registry

    tokenizer = world["tokenizer"]
    canaries = make_canaries(2, repetitions=(3, 1), secret_length=4, seed=7)
    docs = insert_canaries_dataset(Dataset.from_dict({"text": world["member_texts"][:20]}), canaries, seed=1)
    assert len(docs) == 24 and int(np.sum(docs["is_canary"][:])) == 4
    assert sorted(set(docs["carto_canary_id"][:])) == [-1, 0, 1]
    blocks = Dataset.from_dict(
        {"input_ids": [tokenizer(t)["input_ids"] for t in docs["text"][:]], "sample_id": np.arange(len(docs)) + 500}
    )
    marked = mark_canary_blocks(blocks, canaries, tokenizer)
    expected = np.asarray(docs["carto_canary_id"][:])
    np.testing.assert_array_equal(np.asarray(marked["carto_canary_id"][:]), expected)
    assert [len(c.sample_ids) for c in canaries] == [3, 1]
    verify_registry(canaries, marked, tokenizer)  # consistent: no error
    canaries[1].sample_ids = [999]
    with pytest.raises(ValueError, match=r"does not match the dataset for 1 of 2 canaries \(canary ids \[1\]\)"):
        verify_registry(canaries, marked, tokenizer)
    with pytest.raises(ValueError, match="lacks columns"):
        mark_canary_blocks(Dataset.from_dict({"input_ids": [[1, 2]]}), canaries, tokenizer)


# --- Decoding rules on a scripted model ----------------------------------------------------------

EOS, FILLER = 0, 1  # train_bpe_tokenizer's end-of-text id; FILLER is the second choice no rule needs


class ScriptedLM(GPT2LMHeadModel):
    """A causal LM whose next token is a fixed function of the real tokens so far.

    ``script`` maps a token history (left padding excluded) to the model's first and second choice;
    any other history ends the text. Only forward() is replaced, so ``model.generate`` runs for
    real: left padding, batching, end-of-text stopping.
    """

    def __init__(self, vocab_size: int, script: dict[tuple[int, ...], tuple[int, int]]):
        super().__init__(
            GPT2Config(vocab_size=vocab_size, n_embd=8, n_layer=1, n_head=1, bos_token_id=EOS, eos_token_id=EOS)
        )
        self.script = script
        self.generation_config.use_cache = False  # forward() must see the whole history at every step
        self.eval()

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        logits = torch.zeros((*input_ids.shape, self.config.vocab_size))
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        for i, (row, keep) in enumerate(zip(input_ids.tolist(), mask.tolist(), strict=True)):
            history = tuple(t for t, m in zip(row, keep, strict=True) if m)
            first, second = self.script.get(history, (EOS, FILLER))
            logits[i, -1, first], logits[i, -1, second] = 10.0, 5.0
        return CausalLMOutputWithCrossAttentions(logits=logits)


def scripted(prompt, emitted, *, stop_at: int | None = None) -> dict[tuple[int, ...], tuple[int, int]]:
    """Script entries that continue ``prompt`` with ``emitted`` and then end the text. With
    ``stop_at``, end-of-text is the first choice at that step and the emitted token only the second
    (a decoder that bans end-of-text goes on with the rest of ``emitted``)."""
    entries, history = {}, list(prompt)
    for step, token in enumerate(emitted):
        entries[tuple(history)] = (EOS, token) if step == stop_at else (token, FILLER)
        history.append(token)
    entries[tuple(history)] = (EOS, FILLER)
    return entries


@pytest.fixture(scope="module")
def digit_tokenizer():
    """A byte-level BPE small enough that most digits are tokens of their own."""
    texts = [f"the pin of user walnut-{i} is {i * 37 % 1000:03d}" for i in range(200)]
    return train_bpe_tokenizer(texts + ["the pin is 12 345 6789 120 340 tiger ocean river"] * 20, vocab_size=300)


def test_greedy_decoding_stops_each_row_at_end_of_text():
    prompts = [[5, 6], [4], [7, 8, 9]]
    script = {**scripted([5, 6], [11, 12, 13, 14]), **scripted([4], [15]), **scripted([7, 8, 9], [16], stop_at=0)}
    model = ScriptedLM(64, script)
    out = greedy_continuations(model, prompts, 3, pad_token_id=EOS, batch_size=2)
    # Left-padded batches of two: the first row runs to the budget, the others end where the model
    # ends the text, with end-of-text itself dropped (an eos-banning decoder gives 3 tokens each).
    assert out == [[11, 12, 13], [15], []]


def test_extraction_needs_the_secrets_characters_with_end_of_text_allowed(digit_tokenizer):
    tokenizer = digit_tokenizer
    token = tokenizer.convert_tokens_to_ids
    canaries = [
        Canary(0, "the pin of user walnut-1 is", "8531", "digits", 1, sample_ids=[10, 11]),
        Canary(1, "the pin of server maple-2 is", "8531", "digits", 2, sample_ids=[12, 13]),
        Canary(2, "the pin is", "8531", "digits", 4, sample_ids=[14]),
        Canary(3, "the code of vault amber-3 is", "tiger ocean", "words", 4),
        Canary(4, "the code of vault ember-4 is", "tiger ocean", "words", 8, sample_ids=[15]),
    ]
    splits = [(tokenizer(c.prefix)["input_ids"], tokenizer(c.text)["input_ids"]) for c in canaries]
    prompts = [full[: len(prefix)] for prefix, full in splits]
    secrets = [full[len(prefix) :] for prefix, full in splits]
    assert all(len(s) >= 3 for s in secrets) and secrets[0] == secrets[1]
    script = {
        **scripted(prompts[0], secrets[0]),  # (a) the secret, then end of text: extracted
        # (b) all but the secret's last token, then end of text, the last token only second: not
        # extracted (a decoder that bans end-of-text would emit the whole secret)
        **scripted(prompts[1], secrets[1], stop_at=len(secrets[1]) - 1),
        **scripted(prompts[2], secrets[2] + [token("7")]),  # (c) "85317" is another number: not extracted
        **scripted(prompts[3], secrets[3] + tokenizer(" river")["input_ids"]),  # a next word: extracted
        **scripted(prompts[4], secrets[4] + [token("s")]),  # "oceans" is another word: not extracted
    }
    result = canary_extraction(ScriptedLM(len(tokenizer), script), tokenizer, canaries, batch_size=2)
    rows = result["canaries"]
    assert [r["extracted"] for r in rows] == [True, False, False, True, False]
    assert [r["matched_chars"] for r in rows] == [4, 3, 4, 11, 11]
    assert [r["secret_chars"] for r in rows] == [4, 4, 4, 11, 11]
    assert [r["ended_early"] for r in rows] == [False, True, False, False, False]
    assert set(rows[0]) == {"canary_id", "repetitions", "extracted", "matched_chars", "secret_chars", "ended_early"}
    assert result["num_extracted"] == 2 and result["success_rate"] == pytest.approx(0.4)
    assert result["success_rate_by_repetitions"] == {"1": 1.0, "2": 0.0, "4": 0.5, "8": 0.0}
    assert result["success_rate_by_copies"] == {"0": 1.0, "1": 0.0, "2": 0.5}
    written = json.dumps(result)
    assert all(c.secret not in written for c in canaries) and "ocean" not in written


def test_contamination_continuation_that_ends_early_is_not_extractable():
    k = 4
    stops, complete = list(range(10, 18)), list(range(20, 28))
    # The first sequence's model ends the text two tokens in; its next token is only second choice.
    script = {**scripted(stops[:k], stops[k:], stop_at=2), **scripted(complete[:k], complete[k:])}
    result = contamination_recall(ScriptedLM(64, script), [stops, complete], k=k, pad_token_id=EOS)
    assert result["extractable"] == [False, True]
    assert result["recall"] == 0.5 and result["num_extractable"] == 1
    assert result["mean_matched_tokens"] == pytest.approx((2 + 4) / 2)


# --- Exposure with the shared prefix cache ---------------------------------------------------------


@pytest.fixture(scope="module")
def random_gpt2(digit_tokenizer):
    return tiny_gpt2(
        len(digit_tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4, eos_token_id=0, seed=3
    ).eval()


def test_cached_scores_equal_full_sequence_scores_for_every_candidate(random_gpt2, digit_tokenizer):
    prefix = "the pin of user walnut-3 is"
    prefix_length = len(digit_tokenizer(prefix)["input_ids"])
    for width in (2, 3):
        candidates = [f"{i:0{width}d}" for i in range(10**width)]
        lengths = {len(digit_tokenizer(f"{prefix} {c}")["input_ids"]) - prefix_length for c in candidates}
        assert len(lengths) > 1  # candidates differ in token count: padding and masking are exercised
        # An odd batch size: many batches share (and must not alter) the prefix cache, the last one short.
        cached = cached_secret_log_perplexities(random_gpt2, digit_tokenizer, prefix, candidates, batch_size=97)
        full = secret_log_perplexities(random_gpt2, digit_tokenizer, prefix, candidates, batch_size=97)
        np.testing.assert_allclose(cached, full, rtol=0, atol=1e-4)


def test_exact_exposure_enumerates_word_secrets(random_gpt2, digit_tokenizer):
    from hf_carto.data.canaries import SECRET_WORDS

    canary = Canary(5, "the code of vault amber-3 is", "tiger ocean", "words", 1)
    result = exposure(random_gpt2, digit_tokenizer, canary, batch_size=128)
    candidates = [" ".join(p) for p in itertools.product(SECRET_WORDS, repeat=2)]
    scores = secret_log_perplexities(random_gpt2, digit_tokenizer, canary.prefix, candidates)
    own = candidates.index(canary.secret)
    rank = 1 + int((np.delete(scores, own) <= scores[own] + 1e-6).sum())
    assert result["method"] == "exact" and result["space_size"] == len(SECRET_WORDS) ** 2
    assert result["rank"] == rank and result["log_perplexity"] == pytest.approx(scores[own], abs=1e-4)
    assert result["exposure"] == pytest.approx(math.log2(len(SECRET_WORDS) ** 2) - math.log2(rank))


def test_estimated_exposure_reports_a_bootstrap_interval(random_gpt2, digit_tokenizer):
    canary = Canary(6, "the pin of user walnut-3 is", "853", "digits", 1)
    exact = exposure(random_gpt2, digit_tokenizer, canary)
    estimate = exposure(random_gpt2, digit_tokenizer, canary, max_exact=100, sample_size=400)
    assert exact["method"] == "exact" and "exposure_ci95" not in exact
    assert estimate["method"] == "skewnorm" and estimate["sample_size"] == 400
    low, high = estimate["exposure_ci95"]
    assert 0 <= low <= estimate["exposure"] <= high
    assert estimate["log_perplexity"] == pytest.approx(exact["log_perplexity"], abs=1e-4)


def test_cached_scoring_refuses_a_prefix_that_tokenizes_differently(random_gpt2, digit_tokenizer):
    import copy

    from tokenizers.processors import TemplateProcessing

    # A tokenizer that appends end-of-text to every text: the prefix alone ends in a token that the
    # full text has elsewhere, so the prefix's cache would not be the candidates' context.
    tokenizer = copy.deepcopy(digit_tokenizer)
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", EOS)]
    )
    canary = Canary(8, "the pin of user walnut-3 is", "85", "digits", 1)
    with pytest.raises(ValueError, match="tokenizes differently inside the full text of 100 candidates"):
        exposure(random_gpt2, tokenizer, canary)


def _tensorflow_privacy_rank(scores: np.ndarray, own: int) -> int:
    """tensorflow_privacy's interpolation rank, written out: sort the secret with the references
    (every other candidate) and count the references in front of it, plus one."""
    references = np.delete(scores, own)
    values = np.concatenate([[scores[own]], references])
    is_reference = np.concatenate([[False], np.ones(references.size, dtype=bool)])
    in_front = np.cumsum(is_reference[np.argsort(values, kind="stable")])
    position = int(np.flatnonzero(~is_reference[np.argsort(values, kind="stable")])[0])
    return int(in_front[position]) + 1


def test_exposure_rank_equals_the_interpolation_rank_on_continuous_scores():
    rng = np.random.default_rng(11)
    for size in (2, 10, 1000):
        scores = rng.normal(10.0, 3.0, size)
        for own in rng.choice(size, size=min(size, 50), replace=False):
            rank = exposure_rank(scores, int(own))
            assert rank == _tensorflow_privacy_rank(scores, int(own))
            assert rank == 1 + sum(s < scores[own] for i, s in enumerate(scores) if i != own)


def test_exposure_rank_counts_ties_against_the_secret():
    tied = np.full(100, 7.25)
    assert exposure_rank(tied, 0) == 100 and exposure_rank(tied, 63) == 100  # no preference: last
    one_tie = np.array([5.0, 3.0, 3.0, 8.0])
    assert exposure_rank(one_tie, 1) == 2 and exposure_rank(one_tie, 2) == 2  # the best two tie
    assert exposure_rank(np.array([5.0, 3.0, 3.0 + 5e-7, 8.0]), 1) == 2  # within the float tolerance
    assert exposure_rank(np.array([5.0, 3.0, 3.0 + 1e-3, 8.0]), 1) == 1  # a real difference


def test_a_model_without_preference_has_no_exposure_exact_or_estimated():
    # Digits are never adjacent in the tokenizer's training text, so every 3-digit secret is one
    # space-digit token and two digit tokens; a model whose embeddings are zero gives every
    # candidate the same log-perplexity.
    texts = [f"the pin of user {name} is {' '.join('0123456789')}" for name in ("ash", "elm", "oak")] * 30
    tokenizer = train_bpe_tokenizer(texts, vocab_size=120)
    prefix = "the pin of user ash is"
    lengths = {len(tokenizer(f"{prefix} {i:03d}")["input_ids"]) for i in range(1000)}
    assert len(lengths) == 1
    model = tiny_gpt2(len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2, seed=0).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
    canary = Canary(3, prefix, "407", "digits", 1)
    exact = exposure(model, tokenizer, canary)
    assert exact["method"] == "exact" and exact["rank"] == 1000 and exact["exposure"] == 0.0
    estimate = exposure(model, tokenizer, canary, max_exact=100, sample_size=200)
    assert estimate["method"] == "skewnorm" and estimate["exposure"] == 0.0
