"""The experiment's data stage: canaries, contamination windows and evaluation sets measure what
they claim to, and the presets that produce results are large enough to mean something."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shared_data import WIKITEXT as SHARED
from shared_data import require

from hf_carto.data.canaries import make_canaries, unused_templates
from hf_carto.experiment import parse_arguments
from hf_carto.experiment.stage_data import load_documents, prepare_data


def _contains(haystack: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def test_every_canary_has_its_own_prompt_template():
    canaries = make_canaries(32, repetitions=(1, 2, 4, 8, 16), secret_length=4, seed=0)
    stems = [c.prefix.rsplit(" ", 2)[0] for c in canaries]
    assert len(set(stems)) == 32  # no two canaries teach one prompt with two answers
    controls = make_canaries(32, templates=unused_templates(canaries), seed=1, first_id=32)
    assert not {c.prefix.rsplit(" ", 2)[0] for c in controls} & set(stems)
    assert [c.canary_id for c in controls] == list(range(32, 64))
    with pytest.raises(ValueError, match="distinct templates"):
        make_canaries(5, templates=["the code of {name} is"] * 2)


def prepare(tmp_path, *argv):
    model_args, data_args, carto, training = parse_arguments(["--output_dir", str(tmp_path), *argv])
    tokenizer, blocks, canaries, eval_sets = prepare_data(model_args, data_args, tmp_path, True)
    return data_args, carto, tokenizer, blocks, canaries, eval_sets


def test_contamination_windows_lie_inside_one_held_out_document(tmp_path):
    data_args, _, tokenizer, blocks, _, eval_sets = prepare(tmp_path, "--preset", "cpu-tiny")
    _, _, heldout_texts = load_documents(data_args, data_args.data_seed_offset)
    documents = [tokenizer(t)["input_ids"] for t in heldout_texts]
    k2 = 2 * data_args.contamination_k
    for name in ("contaminating", "control"):
        windows = eval_sets[name]
        assert len(windows) == data_args.num_contaminating
        for window in windows:
            assert len(window) == k2 and tokenizer.eos_token_id not in window
            assert any(_contains(doc, window) for doc in documents)
    counts = eval_sets["counts"]
    assert counts["contaminating"] == counts["control"] == data_args.num_contaminating
    assert counts["heldout_documents_long_enough"] <= counts["heldout_documents"]
    # Read back identically by a resumed run.
    again = prepare_data(*parse_arguments(["--output_dir", str(tmp_path), "--preset", "cpu-tiny"])[:2], tmp_path, True)
    assert again[3]["contaminating"] == eval_sets["contaminating"]
    assert [c.canary_id for c in again[3]["control_canaries"]] == [c.canary_id for c in eval_sets["control_canaries"]]


def test_evaluation_sets_separate_members_planted_blocks_and_controls(tmp_path):
    data_args, _, tokenizer, blocks, canaries, eval_sets = prepare(tmp_path, "--preset", "cpu-tiny")
    truth = np.asarray(blocks["truth"][:])
    ids = np.asarray(blocks["sample_id"][:])
    assert (truth[np.isin(ids, eval_sets["member_ids"])] == 0).all()
    planted = np.isin(ids, eval_sets["planted_member_ids"])
    assert planted.sum() == len(eval_sets["planted_members"]) > 0
    assert set(truth[planted].tolist()) <= {2, 4}  # canary, contaminated
    assert len(eval_sets["planted_non_members"]) > 0
    assert all(len(b) == data_args.block_size for b in eval_sets["planted_non_members"])
    # Control canaries: never in the training text, with prompts no trained canary uses.
    text = "\n".join(blocks["text"][:])
    controls = eval_sets["control_canaries"]
    assert len(controls) == len(canaries)
    assert not any(c.text in text for c in controls)
    assert all(c.text in text for c in canaries if c.sample_ids)
    saved = json.loads((tmp_path / "data" / "eval_sets.json").read_text())
    assert "control_canaries" not in saved  # the registries hold secrets: separate local files
    assert (tmp_path / "control_canaries.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cpu-demo", "cpu-wikitext2"])
def test_result_presets_plant_at_most_five_percent_with_enough_canaries_and_seeds(tmp_path, preset):
    argv = ["--preset", preset]
    if preset == "cpu-wikitext2":
        require(SHARED, "WikiText-2 (raw)")
        argv += ["--train_file", str(SHARED / "wiki.train.raw"), "--validation_file", str(SHARED / "wiki.valid.raw")]
    data_args, carto, _, blocks, canaries, eval_sets = prepare(tmp_path, *argv)
    assert data_args.num_canaries >= 32 and len(set(data_args.canary_repetitions)) >= 4
    assert eval_sets["counts"]["planted_share"] <= 0.05
    assert float((np.asarray(blocks["truth"][:]) != 0).mean()) == pytest.approx(eval_sets["counts"]["planted_share"])
    assert carto.exposure_max_exact >= 10**data_args.secret_length  # exposure is exact
    if preset == "cpu-wikitext2":
        assert len(carto.seeds) >= 5
    # Most canaries have whole copies to learn from; the high-count ones all do.
    top = max(data_args.canary_repetitions)
    assert all(c.sample_ids for c in canaries if c.repetitions == top)
