"""The experiment's stages are usable from Python around a mapping run of one's own: score what a
stock recording wrote, build the arms, continue them from one's own burn-in checkpoint and evaluate
them on the data stage's probes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from accelerate import PartialState
from transformers import TrainingArguments, default_data_collator

from hf_carto import LossStore, RecordingConfig, RecordingTrainer
from hf_carto.experiment import parse_arguments
from hf_carto.experiment.stage_data import prepare_data
from hf_carto.experiment.stage_evaluation import (
    eval_settings,
    evaluate_saved_model,
    leakage_probes,
    trained_by_every_arm,
)
from hf_carto.experiment.stage_training import make_arms, new_model, score_blocks, steps_per_epoch, train_arm


@pytest.mark.slow
def test_arms_and_evaluation_run_around_an_own_mapping_run(tmp_path):
    out = tmp_path / "run"
    model_args, data_args, carto, _ = parse_arguments(["--preset", "cpu-tiny", "--output_dir", str(out)])
    data = prepare_data(model_args, data_args, out, is_main=True)

    # One's own mapping run: a RecordingTrainer over two epochs, a checkpoint after the first.
    own = TrainingArguments(
        output_dir=str(out / "mine"), num_train_epochs=2, per_device_train_batch_size=8, learning_rate=3e-3,
        save_strategy="epoch", report_to="none", use_cpu=True, seed=0, lr_scheduler_type="constant",
    )  # fmt: skip
    trainer = RecordingTrainer(
        model=new_model(model_args, data.tokenizer, seed=0),
        args=own,
        train_dataset=data.blocks.select_columns(["input_ids", "labels", "sample_id"]),
        data_collator=default_data_collator,
        recording=RecordingConfig(mode="eval", progress=False),
    )
    trainer.train()
    per_epoch = steps_per_epoch(len(data.blocks), own, world_size=1)
    checkpoint = str(out / "mine" / f"checkpoint-{per_epoch}")

    scored, fit = score_blocks(data.blocks, LossStore(out / "mine"), per_epoch, carto, out / "scored", seed=0)
    assert fit.num_snapshots == 2 and fit.burn_in == 1
    assert (out / "scored" / "done.json").exists()
    arms, cuts = make_arms(scored, carto, seed=0, fit=fit)
    # The regime line's training perplexity: exp of the mean eval-mode loss of every block, per snapshot.
    from hf_carto.experiment.results import cartography_section

    section = cartography_section(scored, fit, cuts)
    naive = [float(np.exp(sum(scored[f"carto_loss_{t}"]) / len(scored))) for t in (1, 2)]
    assert section["train_perplexity_by_snapshot"] == pytest.approx(naive, rel=1e-6)
    assert [c["fraction"] for c in cuts][0] == 0.1 and cuts[0]["num_selected"] == round(0.1 * len(scored))
    # the recommended policy (the default) is always one of the arms, beside its random control
    from hf_carto import RECOMMENDED

    policy = {RECOMMENDED.arm_name, f"random_{RECOMMENDED.kind}{RECOMMENDED.budget:g}"}
    assert {"no_intervention", "gendatacarto", "random", "gendatacarto_prune0.1", "random_prune0.1"} | policy == set(
        arms
    )
    assert [c["fraction"] for c in cuts][1:] == [RECOMMENDED.budget] * 2
    state = PartialState(cpu=True)
    chosen = {name: arms[name] for name in ("no_intervention", "gendatacarto_prune0.1")}
    for name, (_, arm) in chosen.items():
        info = train_arm(name, arm, checkpoint, 1, own, out / "arms" / name, seed=0, state=state)
        kept = int(np.sum(arm["carto_keep"][:]))
        assert info["start_step"] == per_epoch  # continued from one's own checkpoint
        assert info["end_step"] - per_epoch == steps_per_epoch(kept, own, world_size=1)  # one epoch of what it kept
    again = train_arm(
        "no_intervention", chosen["no_intervention"][1], checkpoint, 1, own, out / "arms" / "no_intervention", 0, state
    )
    assert again == json.loads((out / "arms" / "no_intervention" / "done.json").read_text())  # read back

    mask = trained_by_every_arm(chosen, data.eval_sets["member_ids"])
    probes = leakage_probes(data.tokenizer, data.canaries, data.eval_sets, mask)
    report = evaluate_saved_model(
        out / "arms" / "gendatacarto_prune0.1" / "model", out / "eval", data.tokenizer, probes,
        eval_settings(data_args, carto, seed=0), use_cpu=True,
    )  # fmt: skip
    assert report["canaries"]["num_canaries"] == len(data.canaries)
    assert np.isfinite(report["validation"]["perplexity"])
    assert report["membership_subsets"]["trained_by_every_arm"]["loss"]["num_members"] == sum(mask) < len(mask)
    # The done marker comes after the report and the ROC figure.
    assert {"report.json", "membership_roc.png", "done.json"} <= {p.name for p in (out / "eval").iterdir()}
