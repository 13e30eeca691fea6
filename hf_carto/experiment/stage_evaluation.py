"""The evaluation stage: every arm's model, and the mapping run's final one, probed for leakage on
the same sets (the main process alone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_carto.core.columns import read_columns
from hf_carto.experiment.arguments import CartoArguments, DataArguments
from hf_carto.experiment.run_folder import cached_stage


def leakage_probes(tokenizer, canaries, eval_sets: dict[str, Any], member_mask: list[bool]):
    """The :class:`~hf_carto.measure.model_report.LeakageProbes` of the data stage's sets; membership is also
    measured on the members every arm trained on (``member_mask``)."""
    from hf_carto.measure.model_report import LeakageProbes

    return LeakageProbes(
        canaries=canaries,
        control_canaries=eval_sets["control_canaries"],
        contaminating=eval_sets["contaminating"],
        control=eval_sets["control"],
        members=eval_sets["members"],
        non_members=eval_sets["non_members"],
        member_texts=tokenizer.batch_decode(eval_sets["members"]),
        non_member_texts=tokenizer.batch_decode(eval_sets["non_members"]),
        member_subsets={"trained_by_every_arm": member_mask},
        planted_members=eval_sets["planted_members"],
        planted_non_members=eval_sets["planted_non_members"],
        validation=eval_sets["validation"],
    )


def eval_settings(data_args: DataArguments, carto: CartoArguments, seed: int):
    from hf_carto.measure.model_report import EvalSettings

    return EvalSettings(
        k=data_args.contamination_k,
        exposure_max_exact=carto.exposure_max_exact,
        exposure_sample_size=carto.exposure_sample_size,
        batch_size=carto.eval_batch_size,
        seed=seed,
    )


def evaluate_saved_model(
    model_dir: Path, out_dir: Path, tokenizer, probes, settings, use_cpu: bool = False, state=None
) -> dict:
    """Evaluate the model saved in ``model_dir``; ``out_dir`` gets its report and ROC figure, and
    ``done.json`` after both, so a run stopped in between evaluates it again.

    With ``state`` (accelerate's ``PartialState``), every process must call it: the decoding and
    scoring batches are split across the processes (each on its own device), the main process
    writes the files, and all of them return the same report."""
    from hf_carto.core.batching import split_across_processes

    if state is None or state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)

    def run() -> dict:
        import torch
        from transformers import AutoModelForCausalLM

        from hf_carto.measure.model_report import evaluate_leakage

        if state is not None:
            device = state.device
        else:
            device = "cuda" if torch.cuda.is_available() and not use_cpu else "cpu"
        model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(device)
        with split_across_processes(state is not None):
            evaluate_leakage(model, tokenizer, probes, settings, output_dir=out_dir)
        return {"report": "report.json"}

    cached_stage(out_dir, run, state)
    return json.loads((out_dir / "report.json").read_text())


def trained_by_every_arm(arms: dict[str, tuple[str, Any]], member_ids: list[int]) -> list[bool]:
    """For each membership member, whether every arm trained on it (kept, with a positive weight):
    arms that removed some members would otherwise be scored on rows they never saw."""

    trained = None
    for _, arm in arms.values():
        cols = read_columns(arm, ["sample_id", "carto_keep", "carto_loss_weight"])
        ids = set(cols["sample_id"][cols["carto_keep"] & (cols["carto_loss_weight"] > 0)].tolist())
        trained = ids if trained is None else trained & ids
    return [sid in trained for sid in member_ids]
