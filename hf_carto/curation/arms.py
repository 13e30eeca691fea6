"""Algorithm 1's continuation and its comparison arms.

A reduction in leakage means something only against controls trained from the same checkpoint
with the same seed:

- ``no_intervention``: every row kept with weight 1;
- ``gendatacarto``: the cartography intervention (per quadrant, or the top ``budget`` fraction by
  memorization);
- ``random``: the *same multiset* of per-row treatments as ``gendatacarto``, shuffled over the rows
  with a seeded permutation. It prunes, down-weights and up-samples exactly as many rows by exactly
  as much, so the budget and every weight total are equal by construction; only the choice of rows
  differs.

:func:`build_detector_arms` makes the same comparison across hotspot detectors
(:mod:`hf_carto.score.detectors`): at one budget, one arm per detector and the random arm (the ``random``
detector's top rows), each treating exactly as many rows by exactly as much.

:func:`continue_from_checkpoint` then trains one arm from the burn-in checkpoint with the
optimizer and learning-rate scheduler restored, for the remaining ``T - T_e`` epochs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from hf_carto.core.columns import (
    CURATION_COLUMNS,
    DIFFICULTY,
    KEEP,
    LOSS_WEIGHT,
    MEMORIZATION,
    QUADRANT,
    SAMPLE_ID,
    SAMPLING_WEIGHT,
    read_columns,
    score_column,
)
from hf_carto.curation.interventions import CURATION_FEATURES, apply_interventions
from hf_carto.score.detectors import detector_names, top_budget
from hf_carto.score.scores import BudgetSelection, select_top_memorized

__all__ = ["Arms", "build_arms", "build_detector_arms", "treated", "arm_budget", "continue_from_checkpoint"]

logger = logging.getLogger(__name__)


class Arms(dict):
    """The arms of one comparison, ``{name: Dataset}``, and the selection that made them.

    A plain ``dict`` of the arm datasets for every use, with one attribute more:

    Attributes:
        selection (:class:`hf_carto.BudgetSelection` or `None`): the rows the budget rule chose
            (``n_selected``, the cut and its ties) when :func:`build_arms` was given a ``budget``;
            `None` for the per-quadrant rules, which select by quadrant, not by a cut.
        selections (`dict[str, BudgetSelection]`): from :func:`build_detector_arms`, each arm's cut
            by name (the random arm's included); empty otherwise.
    """

    def __init__(
        self,
        arms: dict[str, Dataset],
        selection: BudgetSelection | None = None,
        selections: dict[str, BudgetSelection] | None = None,
    ) -> None:
        super().__init__(arms)
        self.selection = selection
        self.selections = dict(selections or {})


def _with_treatment(dataset: Dataset, loss_w: np.ndarray, sample_w: np.ndarray, keep: np.ndarray) -> Dataset:
    dataset = dataset.remove_columns([c for c in CURATION_COLUMNS if c in dataset.column_names])
    for column, values in ((LOSS_WEIGHT, loss_w), (SAMPLING_WEIGHT, sample_w), (KEEP, keep)):
        feature = CURATION_FEATURES[column]
        dataset = dataset.add_column(column, np.asarray(values).astype(feature.dtype), feature=feature)
    return dataset


def _budget_treatment(dataset: Dataset, budget: float, alpha: float) -> tuple[tuple[np.ndarray, ...], BudgetSelection]:
    cols = read_columns(
        dataset, [MEMORIZATION, DIFFICULTY] + ([SAMPLE_ID] if SAMPLE_ID in dataset.column_names else [])
    )
    selection = select_top_memorized(
        cols[MEMORIZATION], budget, difficulty=cols[DIFFICULTY], sample_ids=cols.get(SAMPLE_ID)
    )
    logger.info(
        "budget %.3g: %d samples selected, cut at m=%.4g with %d of %d tied samples chosen by the tie-break",
        budget,
        selection.n_selected,
        selection.cut_value,
        selection.n_tied_selected,
        selection.n_tied_at_cut,
    )
    return _treatment(selection.mask(len(dataset)), alpha), selection


def _treatment(chosen: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loss weight ``alpha`` on the chosen rows (``alpha = 0`` removes them), 1 elsewhere."""
    loss_w = np.where(chosen, alpha, 1.0)
    keep = ~chosen if alpha == 0 else np.ones(chosen.size, dtype=bool)
    sample_w = np.where(keep, 1.0, 0.0)
    loss_w = np.where(keep, loss_w, 0.0)
    return loss_w, sample_w, keep


def treated(dataset: Dataset, chosen: np.ndarray, weight: float) -> Dataset:
    """``dataset`` with the treatment columns of one selection: loss weight ``weight`` on the
    ``chosen`` rows (``weight = 0`` removes them: ``carto_keep`` False, both weights 0), 1 elsewhere."""
    return _with_treatment(dataset, *_treatment(np.asarray(chosen, dtype=bool), weight))


def build_arms(
    scored: Dataset,
    *,
    budget: float | None = None,
    alpha: float = 0.5,
    gamma: float = 1.0,
    remove_noisy: bool = False,
    seed: int = 0,
) -> Arms:
    """The three arms of one comparison, each labelled with the intervention columns.

    Args:
        scored (`datasets.Dataset`): output of :func:`hf_carto.add_cartography`.
        budget (`float`, *optional*): when set, GenDataCarto treats the top `budget` fraction by
            memorization (ties broken by difficulty, then sample_id) with loss weight `alpha`
            (`alpha = 0` removes them); when `None`, the per-quadrant rules of
            :func:`hf_carto.apply_interventions` with `gamma`, `alpha` and `remove_noisy`.
        seed (`int`, *optional*, defaults to `0`): seed of the random arm's permutation.

    Returns:
        :class:`Arms`, the dict `{"no_intervention": ..., "gendatacarto": ..., "random": ...}`;
        all rows are present in every arm (removal is `carto_keep == False`). With a `budget`, its
        `.selection` is the :class:`hf_carto.BudgetSelection` that chose the treated rows (report
        the cut from it rather than recomputing it); otherwise `None`.
    """
    if QUADRANT not in scored.column_names or MEMORIZATION not in scored.column_names:
        raise ValueError("build_arms needs a dataset scored by add_cartography (carto_quadrant, carto_memorization)")
    n = len(scored)
    selection = None
    if budget is None:
        labelled = apply_interventions(scored, gamma=gamma, alpha=alpha, remove_noisy=remove_noisy)
        cols = read_columns(labelled, list(CURATION_COLUMNS))
        loss_w, sample_w, keep = (cols[c] for c in CURATION_COLUMNS)
    else:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
        (loss_w, sample_w, keep), selection = _budget_treatment(scored, budget, alpha)
    order = np.random.default_rng(seed).permutation(n)
    arms = {
        "no_intervention": _with_treatment(scored, np.ones(n), np.ones(n), np.ones(n, dtype=bool)),
        "gendatacarto": _with_treatment(scored, loss_w, sample_w, keep),
        "random": _with_treatment(scored, loss_w[order], sample_w[order], keep[order]),
    }
    return Arms(arms, selection)


def build_detector_arms(scored: Dataset, detectors: list[str], *, budget: float, alpha: float = 0.0) -> Arms:
    """At one budget, one arm per detector plus the random arm, each labelled with the intervention columns.

    Every arm treats the top ``budget`` fraction of its detector's ranking (the
    ``carto_score_<name>`` column written by :func:`hf_carto.add_detector_scores`; ties by ascending
    sample_id, see :func:`hf_carto.top_budget`) with loss weight ``alpha`` (``alpha = 0`` removes
    them). The random arm is the ``random`` detector's top rows, so the dataset must carry its
    column too (its seed is the one given to ``add_detector_scores``). All arms treat
    ``floor(budget * N + 0.5)`` rows by the same weight: their budgets are equal by construction.

    Args:
        scored (`datasets.Dataset`): carries ``carto_score_<name>`` for every detector and ``random``.
        detectors (`list[str]`): detector names; ``random`` among them names the random arm, which
            is built in any case.

    Returns:
        :class:`Arms` ``{name: Dataset}`` in the order given, ``"random"`` last, with
        ``.selections`` holding each arm's :class:`hf_carto.BudgetSelection`.
    """
    names = [n for n in detector_names(detectors) if n != "random"] + ["random"]
    missing = [score_column(n) for n in names if score_column(n) not in scored.column_names]
    if missing:
        raise ValueError(f"build_detector_arms needs the detector score columns {missing}; add them first")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    ids = [SAMPLE_ID] if SAMPLE_ID in scored.column_names else []
    cols = read_columns(scored, [score_column(n) for n in names] + ids)
    arms, selections = {}, {}
    for name in names:
        selection = top_budget(cols[score_column(name)], budget, sample_ids=cols.get(SAMPLE_ID))
        arms[name] = _with_treatment(scored, *_treatment(selection.mask(len(scored)), alpha))
        selections[name] = selection
    return Arms(arms, selections=selections)


def arm_budget(arm: Dataset) -> dict[str, float]:
    """What an arm changes: removed rows, down-weighted rows, pruned loss weight, up-sampled rows."""
    cols = read_columns(arm, list(CURATION_COLUMNS))
    loss_w, sample_w, keep = (cols[c].astype(np.float64) for c in CURATION_COLUMNS)
    n = len(arm)
    return {
        "num_samples": n,
        "num_removed": int((keep == 0).sum()),
        "num_down_weighted": int(((loss_w > 0) & (loss_w < 1)).sum()),
        "num_up_sampled": int((sample_w > 1).sum()),
        "loss_weight_total": float(loss_w.sum()),
        "fraction_of_weight_pruned": float(1.0 - loss_w.sum() / n) if n else 0.0,
    }


def continue_from_checkpoint(
    checkpoint: str | os.PathLike,
    train_dataset: Dataset,
    args: Any,
    *,
    model: torch.nn.Module | None = None,
    **trainer_kwargs: Any,
):
    """A :class:`hf_carto.CartoTrainer` that continues a mapping run from ``checkpoint``.

    The model weights come from the checkpoint (unless ``model`` is given), and the optimizer and
    learning-rate scheduler are rebuilt as in the mapping run and then loaded from the
    checkpoint's ``optimizer.pt`` and ``scheduler.pt``. The scheduler is built for the checkpoint's
    step plus this continuation's steps, so a decaying schedule carries on from where it was
    instead of restarting. ``args.num_train_epochs`` is the number of epochs to continue
    (``T - T_e``). Call ``.train()`` on the result (not with ``resume_from_checkpoint``: the
    curated dataset has another length, so the Trainer's own resume would skip the wrong batches).
    """
    import json

    from transformers import AutoModelForCausalLM
    from transformers.optimization import get_scheduler

    from hf_carto.curation.weighted_trainer import CartoTrainer

    checkpoint = Path(checkpoint)
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json"):
        if not (checkpoint / name).exists():
            raise FileNotFoundError(f"{checkpoint / name} is missing: continue from a Trainer checkpoint folder")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    start_step = int(state["global_step"])
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
    trainer = CartoTrainer(model=model, args=args, train_dataset=train_dataset, **trainer_kwargs)
    if args.max_steps > 0:
        remaining = args.max_steps
    else:
        per_epoch = max(1, len(trainer.get_train_dataloader()) // args.gradient_accumulation_steps)
        remaining = max(1, int(per_epoch * args.num_train_epochs))
    total_steps = start_step + remaining
    trainer.create_optimizer()
    # Built here rather than by Trainer.create_scheduler, which train() would rebuild for the
    # continuation's steps alone. Order as in the Trainer's own resume: schedule, then both states.
    trainer.lr_scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=trainer.optimizer,
        num_warmup_steps=args.get_warmup_steps(total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    trainer.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    trainer.lr_scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    # The loaded state holds the mapping run's last learning rate; take one step back and forward
    # so the optimizer gets this schedule's rate at the checkpoint step.
    trainer.lr_scheduler.last_epoch -= 1
    trainer.lr_scheduler.step()
    logger.info("continuing from %s at step %d for %d more steps", checkpoint, start_step, total_steps - start_step)
    trainer.continued_from_step = start_step
    return trainer
