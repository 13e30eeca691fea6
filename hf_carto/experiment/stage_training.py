"""The training stages, where every process takes part: the mapping run (T epochs from scratch,
recording every block's loss), scoring, the arms, and each arm's continuation from the burn-in
checkpoint. Each stage is cached in the run folder (see :func:`~.run_folder.cached_stage`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_carto.core.atomic import write_parquet_atomic
from hf_carto.core.columns import (
    CURATION_COLUMNS,
    DUP_COLUMNS,
    DUP_NEAR_ID,
    LEAK_COLUMNS,
    PLANTED_NAMES,
    SAMPLE_ID,
    TRUTH,
    read_columns,
    score_column,
)
from hf_carto.curation.policy import PAPER, resolve_policy
from hf_carto.experiment.arguments import CartoArguments, ModelArguments, model_config
from hf_carto.experiment.run_folder import DONE, cached_stage, write_json
from hf_carto.score.detectors import DETECTORS, add_detector_scores, decided_by_tie_break, top_budget
from hf_carto.score.duplicates import add_duplicate_columns

if TYPE_CHECKING:
    from hf_carto.record.store import LossStore

logger = logging.getLogger(__name__)

PRUNED_FAMILY, RANDOM_PRUNED_FAMILY = "gendatacarto (top m pruned)", "random (pruned)"
DOWNWEIGHTED_FAMILY, RANDOM_DOWNWEIGHTED_FAMILY = "gendatacarto (top m down-weighted)", "random (down-weighted)"
QUADRANT_FAMILIES = {"gendatacarto": "gendatacarto (quadrant rules)", "random": "random (quadrant rules)"}
MAPPING_FAMILY = "mapping run (T epochs, no intervention)"
ARM_COLUMNS = ["input_ids", "labels", "sample_id", "carto_loss_weight", "carto_sampling_weight", "carto_keep"]


def steps_per_epoch(num_samples: int, training, world_size: int) -> int:
    """Optimizer steps in one epoch, as the Trainer counts them under ``accelerate``."""
    batches = math.ceil(num_samples / (training.per_device_train_batch_size * world_size))
    return math.ceil(batches / training.gradient_accumulation_steps)


def new_model(model_args: ModelArguments, tokenizer, seed: int):
    """The model the mapping run starts from; its initial weights depend on the seed only, never on
    the process count."""
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(seed)
    if model_args.model_name_or_path:
        return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
    config = model_config(model_args, vocab_size=len(tokenizer))
    config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
    return AutoModelForCausalLM.from_config(config)


def training_args(training, **changes):
    """The TrainingArguments of one stage. The experiment publishes at the end; the Trainer itself
    never pushes, evaluates or saves on its own.

    They hold no Hub token: the Trainer pickles its arguments whole into ``training_args.bin`` beside
    every checkpoint and saved model, and the model folder is what the experiment uploads, so a
    ``--hub_token`` kept here would be written to disk and published with the model."""
    return dataclasses.replace(
        training, push_to_hub=False, save_strategy="no", eval_strategy="no", hub_token=None, **changes
    )


def mapping_run(
    seed: int, model_args, carto: CartoArguments, training, blocks, tokenizer, seed_dir: Path, state
) -> dict:
    """Train T epochs from scratch, recording eval-mode losses; save the burn-in checkpoint."""
    run_dir = seed_dir / "mapping"
    return cached_stage(
        run_dir, lambda: _train_mapping(seed, model_args, carto, training, blocks, tokenizer, run_dir, state), state
    )


def _train_mapping(seed, model_args, carto, training, blocks, tokenizer, run_dir: Path, state) -> dict:
    from transformers import TrainerCallback, default_data_collator

    from hf_carto.record.callback import RecordingConfig
    from hf_carto.record.recording_trainer import RecordingTrainer

    epochs = int(training.num_train_epochs)
    per_epoch = steps_per_epoch(len(blocks), training, state.num_processes)
    every = max(1, per_epoch // carto.snapshots_per_epoch) if carto.snapshots_per_epoch > 1 else None
    burn_in_step = carto.burn_in * per_epoch

    class SaveBurnIn(TrainerCallback):
        def on_step_end(self, args, state_, control, **kwargs):
            if state_.global_step == burn_in_step:
                control.should_save = True

    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = RecordingTrainer(
        model=new_model(model_args, tokenizer, seed),
        args=training_args(training, output_dir=str(run_dir), seed=seed, num_train_epochs=epochs),
        train_dataset=blocks.select_columns(["input_ids", "labels", "sample_id"]),
        data_collator=default_data_collator,
        recording=RecordingConfig(
            mode="eval",
            snapshot_every=every,
            overwrite=True,
            snapshot_rows=carto.snapshot_rows,
            snapshot_seed=carto.snapshot_seed,
        ),
        callbacks=[SaveBurnIn()],
    )
    checkpoint = last_complete_checkpoint(run_dir)
    if checkpoint:
        logger.info("resuming the mapping run from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.state.global_step != epochs * per_epoch:
        raise RuntimeError(f"expected {epochs * per_epoch} steps, the Trainer took {trainer.state.global_step}")
    trainer.save_model(str(run_dir / "final"))
    return {
        "global_step": trainer.state.global_step,
        "steps_per_epoch": per_epoch,
        "snapshot_every": every,
        "checkpoint": str(run_dir / f"checkpoint-{burn_in_step}"),
        "burn_in_step": burn_in_step,
        "final_train_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
    }


def last_complete_checkpoint(run_dir: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing, or None.

    The Trainer writes ``trainer_state.json`` last, after the weights, optimizer, scheduler and
    random states; a checkpoint without it (or with a truncated one) is what a kill during saving
    left. Such folders are removed (the run wrote them and cannot resume from them), and the log
    says which checkpoint the run resumes from instead, or that it restarts from scratch.
    """
    import re

    folders = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    for folder in sorted(folders, key=lambda p: int(p.name.split("-")[1]), reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text())["global_step"]
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning(
                "%s is incomplete (no readable trainer_state.json: the run was stopped while saving it); removing it",
                folder,
            )
            shutil.rmtree(folder)
            continue
        return str(folder)
    if folders:
        logger.warning("no complete checkpoint is left in %s: the mapping run restarts from scratch", run_dir)
    return None


def score_blocks(
    blocks, recording: LossStore, burn_in_step: int, carto: CartoArguments, scored_dir: Path, *, seed: int
):
    """Merge the losses of ``recording`` into columns, score, assign quadrants and write every
    registered detector's ``carto_score_<name>`` column (``random`` drawn with ``seed``): saved in
    ``scored_dir`` once (its ``done.json`` last), then read back, so that the arms, the detection
    section and the report read the same scores without computing them again. Returns
    ``(scored, fit)``.

    ``burn_in_step`` is the optimizer step of the burn-in checkpoint: the snapshots taken up to it
    are the burn-in window of the difficulty score. With ``--snapshot_rows`` only the snapshotted
    blocks are scored (:func:`hf_carto.record.merge.unrecorded_rows` gives the others).
    """
    from hf_carto.publish.summary import cartography_summary
    from hf_carto.record.merge import add_loss_columns, select_recorded_rows
    from hf_carto.score.cartography import add_cartography, fit_cartography
    from hf_carto.score.scored_io import load_scored, save_scored

    if (scored_dir / DONE).exists():
        return load_scored(scored_dir)
    snapshots = recording.completed()
    burn_in = sum(1 for info in snapshots.values() if info["step"] <= burn_in_step)
    data = add_loss_columns(select_recorded_rows(blocks, recording), recording)
    fit = fit_cartography(data, burn_in=burn_in, eps=carto.eps, alpha_d=carto.alpha_d, alpha_m=carto.alpha_m)
    scored = add_cartography(data, fit)
    scored = add_detector_scores(
        scored, list(DETECTORS), eps=fit.eps, burn_in=fit.burn_in, seed=seed, keep_in_memory=True
    )
    save_scored(scored, scored_dir, fit=fit, summary=cartography_summary(scored, fit), overwrite=True)
    write_json(scored_dir / DONE, {"num_samples": len(scored), "burn_in_snapshots": burn_in})
    return scored, fit


def keep_unscored(arm, blocks):
    """Every block, in block order, with the arm's treatment where it has one (the scored blocks,
    ``arm``'s rows) and loss and sampling weight 1, kept, everywhere else: what every arm does
    with the blocks a ``--snapshot_rows`` run has no scores for. Only the three weight columns are
    new; the blocks' token columns are not copied."""

    treatment = read_columns(arm, [SAMPLE_ID, *CURATION_COLUMNS])
    ids = np.asarray(read_columns(blocks, [SAMPLE_ID])[SAMPLE_ID])
    order = np.argsort(ids, kind="stable")
    where = np.searchsorted(ids, treatment[SAMPLE_ID], sorter=order)
    rows = order[np.minimum(where, ids.size - 1)]
    if np.unique(treatment[SAMPLE_ID]).size != len(arm) or (ids[rows] != treatment[SAMPLE_ID]).any():
        raise ValueError("an arm's rows must be distinct blocks of the training set (by sample_id)")
    full = blocks.select_columns(["input_ids", "labels", SAMPLE_ID])
    for name in CURATION_COLUMNS:
        values = np.ones(len(blocks), dtype=np.dtype(arm.features[name].dtype))
        values[rows] = treatment[name]
        full = full.add_column(name, values, feature=arm.features[name])
    return full


def add_row_evidence(scored, mapping_dir: Path, carto: CartoArguments, training, evidence_dir: Path, state):
    """``scored`` with the ``carto_leak_*`` columns of every block under the mapping run's final
    model (every process computes a share of the batches) and its ``carto_dup_*`` clusters;
    computed once into ``evidence_dir/columns.parquet`` (keyed by ``sample_id``), then read back."""
    import pyarrow.parquet as pq

    path = evidence_dir / "columns.parquet"

    def run() -> dict:
        from transformers import AutoModelForCausalLM

        from hf_carto.measure.leakage_columns import add_leakage_columns

        model = AutoModelForCausalLM.from_pretrained(mapping_dir / "final").to(state.device)
        blocks = scored.select_columns(["input_ids", SAMPLE_ID])
        leaked = add_leakage_columns(
            blocks,
            model,
            k=carto.leak_k,
            batch_size=training.per_device_eval_batch_size,
            progress=state.is_main_process,
            split_across_processes=True,  # every process calls this stage
        )
        if state.is_main_process:
            evidence = add_duplicate_columns(leaked).remove_columns("input_ids")
            write_parquet_atomic(evidence.with_format("arrow")[:], path)
        return {"rows": len(blocks)}

    cached_stage(evidence_dir, run, state)
    table = pq.read_table(path)
    ids = table.column(SAMPLE_ID).to_numpy()
    expected = np.asarray(scored[SAMPLE_ID])
    if ids.shape != expected.shape or (ids != expected).any():
        raise RuntimeError(f"{path} does not hold the blocks of this run in order; remove {evidence_dir} and rerun")
    for name in LEAK_COLUMNS + DUP_COLUMNS:
        scored = scored.add_column(name, table.column(name).to_numpy())
    return scored


def budget_family(detector: str, kind: str) -> str:
    """The family (a line of the trade-off figures) of a detector's budget arms: ``kind`` is
    ``prune`` or ``downweight``; ``gendatacarto`` is the paper's memorization sweep."""
    if detector == "random":
        return RANDOM_PRUNED_FAMILY if kind == "prune" else RANDOM_DOWNWEIGHTED_FAMILY
    if detector == "gendatacarto":
        return PRUNED_FAMILY if kind == "prune" else DOWNWEIGHTED_FAMILY
    return f"{detector} (top {'pruned' if kind == 'prune' else 'down-weighted'})"


def _cut(kind: str, fraction: float, detector: str, selection) -> dict:

    return {
        "fraction": fraction,
        "kind": kind,
        "detector": detector,
        "num_selected": selection.n_selected,
        "cut_value": selection.cut_value,
        "tied_at_cut": selection.n_tied_at_cut,
        "tied_selected": selection.n_tied_selected,
        "decided_by_tie_break": decided_by_tie_break(selection),
    }


def budgets(carto: CartoArguments) -> list[tuple[str, float, float]]:
    """``(kind, fraction, loss weight)`` of every budget: the prune fractions (weight 0), then the
    down-weighting fractions (weight ``--downweight_alpha``, by default ``--alpha``)."""
    weight = carto.alpha if carto.downweight_alpha is None else carto.downweight_alpha
    prune = sorted([*carto.prune_fractions, *(carto.frontier_fractions if carto.detectors else [])])
    return [("prune", f, 0.0) for f in prune] + [("downweight", f, weight) for f in carto.downweight_fractions]


def budget_detectors(carto: CartoArguments, kind: str, fraction: float) -> list[str]:
    """The detectors that get an arm at a budget: every one of ``--detectors`` at the prune
    fractions, ``--frontier_detectors`` (when given) at the frontier fractions,
    ``--downweight_detectors`` (when given) at the down-weighting ones."""
    if kind == "downweight" and carto.downweight_detectors:
        return list(carto.downweight_detectors)
    if kind == "prune" and fraction in carto.frontier_fractions and carto.frontier_detectors:
        return list(carto.frontier_detectors)
    return list(carto.detectors)


def make_arms(scored, carto: CartoArguments, seed: int, fit=None) -> tuple[dict[str, tuple[str, Any]], list[dict]]:
    """The arms, ``name -> (family, dataset)``: the paper's intervention, its random control, and
    for every budget (prune and down-weighting fraction) the budget arms; and every budget arm's
    cut (how many blocks, at which score, how many of them the tie-break chose).

    Without ``--detectors`` the budget arms are ``gendatacarto_<kind><fraction>`` (top by
    memorization, ties by difficulty; :func:`~hf_carto.build_arms`) and its shuffled control
    ``random_<kind><fraction>``. With ``--detectors``, one arm ``<detector>_<kind><fraction>`` per
    detector and ``random_<kind><fraction>`` (the ``random`` detector, seeded by ``seed``), all
    of the same size (:func:`~hf_carto.build_detector_arms`); the detector scores need ``fit``
    (its resolved eps and burn-in snapshots).
    """
    from hf_carto.curation.arms import build_arms

    main = build_arms(scored, alpha=carto.alpha, gamma=carto.gamma, remove_noisy=carto.remove_noisy, seed=seed)
    arms = {
        "no_intervention": ("no_intervention", main["no_intervention"]),
        "gendatacarto": (QUADRANT_FAMILIES["gendatacarto"], main["gendatacarto"]),
        "random": (QUADRANT_FAMILIES["random"], main["random"]),
    }
    cuts = []
    with_scores = detector_scored(scored, carto, seed, fit) if carto.detectors else None
    for kind, fraction, alpha in budgets(carto):
        suffix = f"_{kind}{fraction:g}"
        if with_scores is None:
            built = build_arms(scored, budget=fraction, alpha=alpha, seed=seed)
            for name in ("gendatacarto", "random"):
                arms[name + suffix] = (budget_family(name, kind), built[name])
            cuts.append(_cut(kind, fraction, "gendatacarto", built.selection))
            continue
        from hf_carto.curation.arms import build_detector_arms

        built = build_detector_arms(with_scores, budget_detectors(carto, kind, fraction), budget=fraction, alpha=alpha)
        for name, arm in built.items():
            arms[name + suffix] = (budget_family(name, kind), arm)
            cuts.append(_cut(kind, fraction, name, built.selections[name]))
    if carto.dedup_arm:
        dedup, cut = dedup_arms(scored, seed)
        add_arms(arms, dedup)
        cuts.append(cut)
    policy = curation_policy(carto)
    if policy.arm_name not in arms:  # the published curation is always one of the arms measured
        from hf_carto.curation.arms import build_detector_arms

        if fit is None:
            raise ValueError(f"the policy's arm ({policy.describe()}) needs the CartographyFit of the scores")
        with_scores = detector_scored(scored, carto, seed, fit, names=[policy.detector])
        built = build_detector_arms(with_scores, [policy.detector], budget=policy.budget, alpha=policy.weight)
        suffix = f"_{policy.kind}{policy.budget:g}"
        add_arms(arms, {name + suffix: (budget_family(name, policy.kind), arm) for name, arm in built.items()})
        cuts += [_cut(policy.kind, policy.budget, name, built.selections[name]) for name in built]
    return arms, cuts


def curation_policy(carto: CartoArguments):
    """The :class:`hf_carto.CurationPolicy` of ``--policy``; ``paper`` takes the run's ``--alpha``."""
    import dataclasses as dc

    policy = resolve_policy(carto.policy)
    return dc.replace(PAPER, weight=carto.alpha) if policy.detector == PAPER.detector else policy


def dedup_arms(scored, seed: int) -> tuple[dict[str, tuple[str, Any]], dict]:
    """Deduplication as an arm, the field's standard baseline (Lee et al. 2022; Kandpal et al.
    2022): every block but the first (smallest ``sample_id``) of each near-duplicate cluster is
    pruned (exact clusters lie inside near ones), and a random arm prunes as many blocks.

    The arms are named by their natural budget, ``dedup_prune<f>`` and ``random_prune<f>`` with
    ``f`` the pruned fraction, so the random one is dedup's control. Returns the arms (none when
    no block has a duplicate: dedup is then the no-intervention arm) and the cut, with the share of
    the canary and contaminating blocks it removed.
    """
    from hf_carto.curation.arms import treated

    clustered = scored
    if not all(c in scored.column_names for c in DUP_COLUMNS):
        clustered = add_duplicate_columns(scored.select_columns(["input_ids", SAMPLE_ID]))
    cols = read_columns(clustered, [SAMPLE_ID, DUP_NEAR_ID])
    if TRUTH in scored.column_names:
        cols[TRUTH] = read_columns(scored, [TRUTH])[TRUTH]
    redundant = cols[DUP_NEAR_ID] != cols[SAMPLE_ID]  # a cluster's id is its smallest sample_id
    n, k = len(redundant), int(redundant.sum())
    fraction = k / n
    cut = {"fraction": fraction, "kind": "dedup", "detector": "dedup", "num_selected": k}
    if TRUTH in cols:
        for kind in ("canary", "contaminated", "duplicate"):
            planted = cols[TRUTH] == PLANTED_NAMES.index(kind)
            cut[f"{kind}_blocks"] = int(planted.sum())
            cut[f"{kind}_blocks_removed"] = int((planted & redundant).sum())
    if k == 0:
        logger.info("dedup: no block has a duplicate; the dedup arm would be the no-intervention arm")
        return {}, cut
    suffix = f"_prune{fraction:g}"
    rand = top_budget(np.random.default_rng(seed).random(n), fraction, sample_ids=cols[SAMPLE_ID])
    if rand.n_selected != k:
        raise RuntimeError(f"the random control of dedup selects {rand.n_selected} blocks, not {k}")
    arms = {
        "dedup" + suffix: ("dedup (one copy kept)", treated(scored, redundant, 0.0)),
        "random" + suffix: (RANDOM_PRUNED_FAMILY, treated(scored, rand.mask(n), 0.0)),
    }
    return arms, cut


def add_arms(arms: dict, new: dict) -> None:
    """``arms`` updated with ``new``; a random arm already there at the same budget stays (it is a
    control of that size already), any other clash is an error."""
    for name, arm in new.items():
        if name in arms:
            if name.startswith("random"):
                continue
            raise ValueError(f"two arms are named {name!r}")
        arms[name] = arm


def detector_scored(scored, carto: CartoArguments, seed: int, fit, names=None):
    """``scored`` with a ``carto_score_<name>`` column for each of ``names`` (default
    ``--detectors``) and ``random``. The blocks :func:`score_blocks` saved carry every detector's
    column already; only a dataset scored elsewhere gets the missing ones computed here."""

    names = list(dict.fromkeys([*(carto.detectors if names is None else names), "random"]))
    missing = [name for name in names if score_column(name) not in scored.column_names]
    if not missing:
        return scored
    if fit is None:
        raise ValueError("arms by --detectors need the CartographyFit of the scores (its eps and burn-in)")
    return add_detector_scores(scored, missing, eps=fit.eps, burn_in=fit.burn_in, seed=seed, keep_in_memory=True)


def train_arm(name: str, arm, checkpoint: str, epochs: int, training, arm_dir: Path, seed: int, state) -> dict:
    """Continue from the burn-in ``checkpoint`` for ``epochs`` epochs (T - T_e) on one arm's data."""
    return cached_stage(arm_dir, lambda: _continue(name, arm, checkpoint, epochs, training, arm_dir, seed), state)


def _continue(name, arm, checkpoint, epochs, training, arm_dir: Path, seed: int) -> dict:
    from transformers import default_data_collator

    from hf_carto.curation.arms import arm_budget, continue_from_checkpoint

    args = training_args(training, output_dir=str(arm_dir), seed=seed, num_train_epochs=epochs)
    trainer = continue_from_checkpoint(
        checkpoint, arm.select_columns(ARM_COLUMNS), args, data_collator=default_data_collator
    )
    trainer.train()
    trainer.save_model(str(arm_dir / "model"))
    return {
        "arm": name,
        "budget": arm_budget(arm),
        "start_step": trainer.continued_from_step,
        "end_step": trainer.continued_from_step + trainer.state.global_step,
    }
