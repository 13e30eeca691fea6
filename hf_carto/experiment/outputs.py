"""Outputs of a run beside its report (``report.md`` is written by
:mod:`hf_carto.experiment.report_markdown`): the data map and trade-off figures, the curated dataset
(``save_to_disk``) and its Hub layout with a dataset card, the model card; pushed when asked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hf_carto.core.columns import read_columns
from hf_carto.curation.policy import curate
from hf_carto.experiment.arguments import CartoArguments, DataArguments, ModelArguments
from hf_carto.experiment.presets import GENERATED
from hf_carto.experiment.results import tradeoff_points, write_frontier_figures
from hf_carto.experiment.stage_training import curation_policy
from hf_carto.measure.comparison import METRICS
from hf_carto.publish.interactive_map import write_interactive_map
from hf_carto.publish.model_card import render_model_card


def default_dataset_id(data_args: DataArguments) -> str:
    """A placeholder Hub id named after the data, for the card when --hub_dataset_id is not given."""
    from hf_carto.publish.push import repo_name

    if data_args.train_file is not None:
        source = Path(data_args.train_file).stem  # wiki.train.raw -> wiki.train
    elif data_args.dataset_name in (None, GENERATED):
        source = GENERATED
    else:
        source = data_args.dataset_name.split("/")[-1]
        config = data_args.dataset_config_name
        if config:  # wikitext + wikitext-103-raw-v1 -> wikitext-103-raw-v1
            source = config if config.startswith(source) else f"{source}-{config}"
    return f"your-name/gpt2-{repo_name(source, default='data', max_length=96 - len('gpt2--curated'))}-curated"


def _data_map(scored, fit, seed: int, out: Path, tokenizer=None) -> Path:
    """``data_map.png`` (canary blocks circled) and, beside it, the interactive ``data_map.html``
    (hover a block for its id, scores, leakage columns and text; canary blocks left out)."""
    from hf_carto.core.plots import plot_data_map

    write_interactive_map(scored, out / "data_map.html", fit=fit, tokenizer=tokenizer, title=f"Data map (seed {seed})")
    cols = read_columns(scored, ["carto_difficulty", "carto_memorization", "carto_quadrant", "is_canary"])
    return plot_data_map(
        cols["carto_difficulty"],
        cols["carto_memorization"],
        cols["carto_quadrant"],
        out / "data_map.png",
        tau_d=fit.tau_d,
        tau_m=fit.tau_m,
        num_snapshots=fit.num_snapshots,
        highlight=cols["is_canary"],
        highlight_label="canary blocks",
        title=f"Data map (seed {seed})",
    )


def _model_card(report: dict, model_args: ModelArguments, data_args, carto: CartoArguments, model_id, dataset_id):

    results = [
        {"arm": arm, **{key: entry[key]["values"] for key, _, _ in METRICS if key != "perplexity_change"}}
        for arm, entry in report["summary"].items()
    ]

    policy = curation_policy(carto)
    curation = {
        "policy": f"{carto.policy}: {policy.describe()} (this model is the {policy.arm_name} arm)",
        "burn-in (epochs)": carto.burn_in,
        "eps": carto.eps,
        "alpha_d / alpha_m": f"{carto.alpha_d} / {carto.alpha_m}",
        "seeds": carto.seeds,
    }
    if carto.policy == "paper":
        curation.update(
            {
                "hotspot loss weight": carto.alpha,
                "up-sampling of ambiguous-hard": carto.gamma,
                "remove noisy outliers": carto.remove_noisy,
            }
        )
    if carto.snapshot_rows:
        rows = f"--snapshot_rows {carto.snapshot_rows:g}, seed {carto.snapshot_seed}"
        curation["scored blocks"] = f"a fixed seeded subset ({rows}); the other blocks trained with weight 1"
    return render_model_card(
        repo_id=model_id,
        base_model=model_args.model_name_or_path or f"{model_args.config_name} config, trained from scratch",
        dataset_id=dataset_id,
        curation=curation,
        results=results,
        k=data_args.contamination_k,
        conclusion=report["conclusion"],
        license=carto.license,
    )


def write_outputs(
    report: dict, seeds_data: dict, canaries, model_args, data_args, carto, training, out: Path, tokenizer=None
) -> None:
    """Figures, the curated dataset (save_to_disk and Hub layout), the model card; push if asked."""
    from hf_carto.curation.interventions import apply_interventions
    from hf_carto.measure.model_report import plot_tradeoffs
    from hf_carto.publish.export import export_hub_layout
    from hf_carto.publish.privacy import mark_private
    from hf_carto.publish.push import push_curated_dataset, push_model
    from hf_carto.publish.summary import cartography_summary
    from hf_carto.record.store import LossStore
    from hf_carto.score.scored_io import save_scored

    seed = carto.seeds[0]
    scored, fit = seeds_data[seed]
    _data_map(scored, fit, seed, out, tokenizer)  # the local maps; the export draws its own
    plot_tradeoffs(tradeoff_points(report["rows"]), out)
    write_frontier_figures(report, out)
    policy = curation_policy(carto)
    if carto.policy == "paper":  # the per-quadrant rules with every setting of the run
        curated = apply_interventions(scored, gamma=carto.gamma, alpha=carto.alpha, remove_noisy=carto.remove_noisy)
    else:
        curated = curate(scored, policy, fit=fit, seed=seed)
    curated = curated.remove_columns("labels")  # the same tokens as input_ids
    # what the mapping run's snapshots covered (every block, or the --snapshot_rows subset): the card says it
    recording = dataclasses.asdict(LossStore(out / f"seed{seed}" / "mapping").settings())
    summary = {**cartography_summary(curated, fit), "recording": recording, "policy": policy.describe()}
    save_scored(curated, out / "curated", fit=fit, summary=summary, overwrite=True)
    mark_private(out / "curated", "every scored training block, the canary blocks and the columns that mark them")
    dataset_id = carto.hub_dataset_id or default_dataset_id(data_args)
    export_hub_layout(
        curated,
        out / "hub",
        repo_id=dataset_id,
        fit=fit,
        data_map=True,
        license=carto.license,
        secrets=[c.secret for c in canaries],
        recording=recording,
        overwrite=True,
    )
    model_id = training.hub_model_id or "your-name/gpt2-gendatacarto"
    card = _model_card(report, model_args, data_args, carto, model_id, dataset_id)
    (out / "model_card.md").write_text(card)
    if training.push_to_hub:
        # The token is used in memory only: no stage's arguments (and so no saved file) hold it.
        pushed = push_curated_dataset(out / "hub", dataset_id, token=training.hub_token)
        model_dir = out / f"seed{seed}" / "arms" / policy.arm_name / "model"
        model_pushed = push_model(model_dir, model_id, card, token=training.hub_token)
        report["pushed"] = {"dataset": pushed.commit_url, "model": model_pushed.commit_url}
        print(f"pushed the dataset ({pushed.commit_url}) and the model ({model_pushed.commit_url})")
