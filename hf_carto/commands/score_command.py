"""Score a dataset with carto_loss_{t} columns and label quadrants and interventions.

Read a dataset (save_to_disk folder, parquet file, or folder of parquet files) with
carto_loss_1..carto_loss_T columns; write it with carto_difficulty, carto_memorization,
carto_quadrant and the intervention columns to OUTPUT (a save_to_disk folder with cartography.json
and summary.json), atomically.
"""

from __future__ import annotations

import argparse

from hf_carto.commands.dataset_inputs import load_rows, naming_the_file, options, refuse_existing

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="dataset with the loss columns")
    parser.add_argument("output", help="folder to create for the scored dataset")
    parser.add_argument("--burn-in", type=int, required=True, help="T_e: snapshots averaged for difficulty")
    parser.add_argument(
        "--eps",
        required=True,
        help="forget threshold: a number (the paper: 4.7055 for GPT-2), quantile:q, min+delta, min*(1+f)",
    )
    parser.add_argument("--alpha-d", type=float, default=0.75, help="percentile for tau_d (default 0.75)")
    parser.add_argument("--alpha-m", type=float, default=0.75, help="percentile for tau_m (default 0.75)")
    parser.add_argument("--gamma", type=float, default=2.0, help="up-sampling of ambiguous-hard (default 2)")
    parser.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="loss weight of hotspot-memorized, 0 removes them (default 0.5)",
    )
    parser.add_argument("--keep-noisy", action="store_true", help="keep noisy outliers (removed by default)")
    parser.add_argument("--stable-easy-gamma", type=float, default=1.0, help="up-sampling of stable-easy (default 1)")
    parser.add_argument("--no-interventions", action="store_true", help="add scores and quadrants only")
    parser.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="score rows with NaN/inf losses as they are (left out of eps and the thresholds) instead of failing",
    )
    parser.add_argument(
        "--allow-negative", action="store_true", help="score negative losses (no cross-entropy has them) as they are"
    )
    parser.add_argument("--num-proc", type=int, default=None, help="processes for Dataset.map")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
    from hf_carto.core.locking import output_lock, remove_stale_staging_of

    with output_lock(args.output, "hf-carto score"):  # two scorings into one folder would mix
        remove_stale_staging_of(args.output)
        return _score(args)


def _score(args: argparse.Namespace) -> int:
    from hf_carto.curation.interventions import apply_interventions
    from hf_carto.publish.summary import cartography_summary, format_summary
    from hf_carto.score.cartography import add_cartography, fit_cartography
    from hf_carto.score.scored_io import save_scored

    refuse_existing(args.output, args.overwrite)
    dataset = load_rows(args.input)
    with naming_the_file(args.input):
        fit = fit_cartography(
            dataset,
            **options(args, "burn_in", "eps", "alpha_d", "alpha_m", "allow_nonfinite", "allow_negative"),
        )
        scored = add_cartography(dataset, fit, num_proc=args.num_proc)
        if not args.no_interventions:
            scored = apply_interventions(
                scored,
                gamma=args.gamma,
                alpha=args.alpha,
                remove_noisy=not args.keep_noisy,
                stable_easy_gamma=args.stable_easy_gamma,
                num_proc=args.num_proc,
            )
        summary = cartography_summary(scored, fit)
    save_scored(scored, args.output, fit=fit, summary=summary, overwrite=args.overwrite)
    print(format_summary(summary))
    print(f"wrote {args.output}")
    return 0
