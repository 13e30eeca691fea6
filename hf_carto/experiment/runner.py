"""The whole experiment as one call: check, prepare the data, and per seed the mapping run,
scoring, the arms and their continuation (every process), then evaluation, the report and the
outputs (the main process). Each stage is a function of its own in this package, so a user can run
the arms and the evaluation around their own mapping run."""

from __future__ import annotations

import logging
import resource
import shutil
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_carto.experiment.arguments import (
    CartoArguments,
    DataArguments,
    ModelArguments,
    check_arguments,
    parse_arguments,
)
from hf_carto.experiment.errors import ExperimentError, SettingsError
from hf_carto.experiment.outputs import write_outputs
from hf_carto.experiment.report_markdown import format_markdown
from hf_carto.experiment.results import MAPPING_RUN, arm_rows, build_report, cartography_section
from hf_carto.experiment.run_folder import (
    CONFIG,
    StageTimer,
    open_run_folder,
    record_settings,
    run_settings,
    write_json,
)
from hf_carto.experiment.stage_data import PreparedData, check_inputs, prepare_data
from hf_carto.experiment.stage_detection import detection_section
from hf_carto.experiment.stage_evaluation import (
    eval_settings,
    evaluate_saved_model,
    leakage_probes,
    trained_by_every_arm,
)
from hf_carto.experiment.stage_training import (
    add_row_evidence,
    keep_unscored,
    make_arms,
    mapping_run,
    score_blocks,
    train_arm,
)
from hf_carto.record.store import LossStore
from hf_carto.record.trackers import log_cartography, tracker_log_dir


@dataclass
class SeedResult:
    """What the training stages of one seed leave for evaluation."""

    mapping: dict
    scored: Any
    fit: Any
    trained: dict[str, tuple[str, dict]] = field(default_factory=dict)  # arm -> (family, done info)
    member_mask: list[bool] = field(default_factory=list)
    cuts: list[dict] = field(default_factory=list)  # the pruning cuts build_arms made


def _report_to(training) -> list[str]:
    value = training.report_to or []
    return [value] if isinstance(value, str) else list(value)


def _check_push(carto: CartoArguments, training) -> None:
    if training.push_to_hub:
        from hf_carto.publish.push import check_repo_id

        if not (training.hub_model_id and carto.hub_dataset_id):
            raise SettingsError("--push_to_hub needs --hub_model_id and --hub_dataset_id")
        check_repo_id(training.hub_model_id)
        check_repo_id(carto.hub_dataset_id)


def train_seed(seed: int, model_args, carto: CartoArguments, training, data: PreparedData, out: Path, state, timer):
    """Mapping run, scores, arms and their continuation for one seed (every process)."""
    seed_dir = out / f"seed{seed}"
    with timer("mapping"):
        mapping = mapping_run(seed, model_args, carto, training, data.blocks, data.tokenizer, seed_dir, state)
    with timer("scoring"), state.main_process_first():
        recording = LossStore(seed_dir / "mapping")
        scored, fit = score_blocks(
            data.blocks, recording, mapping["burn_in_step"], carto, seed_dir / "scored", seed=seed
        )
    if state.is_main_process and "tensorboard" in _report_to(training):
        # beside the mapping run's snapshots: quadrant counts, thresholds, the data map
        log_cartography(scored, fit, tracker_log_dir(seed_dir / "mapping"), step=mapping["global_step"])
    if carto.row_evidence:
        with timer("row evidence"):
            scored = add_row_evidence(scored, seed_dir / "mapping", carto, training, seed_dir / "evidence", state)
    result = SeedResult(mapping, scored, fit)
    epochs = int(training.num_train_epochs) - carto.burn_in
    with timer("continuation"):
        arms, result.cuts = make_arms(scored, carto, seed, fit=fit)
        if len(scored) < len(data.blocks):  # --snapshot_rows: arms from the scored blocks, the rest train as is
            arms = {name: (family, keep_unscored(arm, data.blocks)) for name, (family, arm) in arms.items()}
        result.member_mask = trained_by_every_arm(arms, data.eval_sets["member_ids"])
        for name, (family, arm) in arms.items():
            info = train_arm(name, arm, mapping["checkpoint"], epochs, training, seed_dir / "arms" / name, seed, state)
            result.trained[name] = (family, info)
    return result


def evaluate_seed(
    seed: int, result: SeedResult, data: PreparedData, data_args, carto, training, out: Path, state=None
) -> list:
    """Every arm's model and the mapping run's final model, evaluated on the same probes; the rows.
    With ``state``, every process takes part (each a share of every measurement's batches)."""
    seed_dir = out / f"seed{seed}"
    probes = leakage_probes(data.tokenizer, data.canaries, data.eval_sets, result.member_mask)
    settings = eval_settings(data_args, carto, seed)
    models = {name: seed_dir / "arms" / name for name in result.trained}
    models[MAPPING_RUN] = seed_dir / "mapping"
    reports = {
        name: evaluate_saved_model(
            folder / ("final" if name == MAPPING_RUN else "model"),
            folder / "eval",
            data.tokenizer,
            probes,
            settings,
            use_cpu=training.use_cpu,
            state=state,
        )  # fmt: skip
        for name, folder in models.items()
    }
    return arm_rows(seed, reports, result.trained, result.mapping)


def run_experiment(model_args: ModelArguments, data_args: DataArguments, carto: CartoArguments, training):
    """Run (or resume) the experiment in ``training.output_dir``; returns the report on the main
    process and None on the others. The main process holds the folder's lock for the whole run."""
    from accelerate import PartialState

    check_arguments(model_args, data_args, carto, training)
    check_inputs(data_args)  # on every process, before any of them waits for another
    _check_push(carto, training)
    state = PartialState(cpu=training.use_cpu)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if state.is_main_process else logging.WARNING,
    )
    out = Path(training.output_dir)
    settings = run_settings(model_args, data_args, carto, training, state.num_processes)
    created = _missing_folders(out) if state.is_main_process else []
    with ExitStack() as stack:
        open_run_folder(out, settings, carto, state, stack)
        try:
            return _run(model_args, data_args, carto, training, settings, out, state)
        except ExperimentError:
            # A refused start (its data stage found a problem) leaves no folder of its own making;
            # once the settings are recorded the folder holds a run to resume, and stays.
            if created and not (out / CONFIG).exists():
                stack.close()  # the lock's file is inside
                _remove_folders(created)
            raise


def _missing_folders(out: Path) -> list[Path]:
    """``out`` and each of its parents that does not exist yet, deepest first: what a start creates."""
    missing = []
    path = out.absolute()
    while not path.exists():
        missing.append(path)
        path = path.parent
    return missing


def _remove_folders(created: list[Path]) -> None:
    """Remove the folder this start created and the parents it created, as long as they are empty
    (another run may have started in one of them since)."""
    shutil.rmtree(created[0], ignore_errors=True)
    for parent in created[1:]:
        try:
            parent.rmdir()
        except OSError:
            return


def _run(model_args, data_args, carto, training, settings: dict, out: Path, state):
    timer = StageTimer(out / "stage_times.json" if state.is_main_process else None)
    with timer("data"), state.main_process_first():
        data = prepare_data(model_args, data_args, out, state.is_main_process)
        if state.is_main_process:
            record_settings(out, settings)
    if state.is_main_process:
        blocks, vocab = len(data.blocks), len(data.tokenizer)
        print(f"{blocks:,} training blocks of {data_args.block_size} tokens, tokenizer of {vocab:,}")
    results = {seed: train_seed(seed, model_args, carto, training, data, out, state, timer) for seed in carto.seeds}
    rows = []
    for seed, result in results.items():  # every process evaluates a share of each model's probes
        with timer("evaluation"):
            rows += evaluate_seed(seed, result, data, data_args, carto, training, out, state)
    state.wait_for_everyone()
    if not state.is_main_process:
        leave_process_group()
        return None
    cartography = {str(seed): cartography_section(r.scored, r.fit, r.cuts) for seed, r in results.items()}
    for seed, r in results.items():
        if len(r.scored) < len(data.blocks):
            cartography[str(seed)]["snapshot_subset"] = {
                "scored_blocks": len(r.scored),
                "unscored_blocks": len(data.blocks) - len(r.scored),
                "snapshot_seed": carto.snapshot_seed,
            }
    with timer("detection"):
        for seed, r in results.items():
            cartography[str(seed)]["detection"] = detection_section(r.scored, r.fit, carto, seed, out)
    report = build_report(rows, settings, len(data.blocks), data.eval_sets["counts"], cartography)
    seeds_data = {seed: (r.scored, r.fit) for seed, r in results.items()}
    with timer("outputs"):
        write_outputs(report, seeds_data, data.canaries, model_args, data_args, carto, training, out, data.tokenizer)
    _finish(report, timer, out)
    leave_process_group()
    return report


def _finish(report: dict, timer: StageTimer, out: Path) -> None:
    report["stage_seconds"] = timer.seconds  # this invocation
    report["stage_seconds_total"] = timer.total  # every invocation of this run
    report["invocations"] = timer.invocations
    report["stage_table"] = timer.table(timer.total)
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json(out / "report.json", {k: v for k, v in report.items() if k != "stage_table"})
    text = format_markdown(report)
    (out / "report.md").write_text(text)
    print("\n" + text)
    print(f"report: {out / 'report.md'} (and report.json, figures, curated/, hub/, model_card.md)")


def main(argv: list[str] | None = None) -> dict | None:
    """Parse the command line (presets included) and run the experiment."""
    return run_experiment(*parse_arguments(argv))


def leave_process_group() -> None:
    # Leaving the process group to interpreter shutdown can abort gloo's worker threads.
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
