"""Build the comparison arms (no_intervention, gendatacarto, random at the same budget).

Write OUT/no_intervention, OUT/gendatacarto and OUT/random (save_to_disk folders with
carto_loss_weight, carto_sampling_weight and carto_keep) and OUT/budgets.json. The random arm
applies the same treatments as gendatacarto to rows chosen by a seeded permutation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_carto.commands.dataset_inputs import load_rows, naming_the_file, options, refuse_existing

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scored", help="a dataset scored by `hf-carto score`")
    parser.add_argument("output", help="folder to create for the three arms")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="treat the top fraction by memorization instead of the per-quadrant rules",
    )
    parser.add_argument("--alpha", type=float, default=0.5, help="loss weight of treated rows; 0 removes them")
    parser.add_argument("--gamma", type=float, default=1.0, help="up-sampling of ambiguous-hard (quadrant rules)")
    parser.add_argument("--remove-noisy", action="store_true", help="remove noisy outliers (quadrant rules)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random arm")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def run(args: argparse.Namespace) -> int:
    from hf_carto.core.locking import output_lock, remove_stale_staging_of

    with output_lock(args.output, "hf-carto arms"):
        remove_stale_staging_of(args.output)
        return _arms(args)


def _arms(args: argparse.Namespace) -> int:
    from hf_carto.core.atomic import atomic_folder, write_json_atomic
    from hf_carto.curation.arms import arm_budget, build_arms
    from hf_carto.score.scored_io import save_scored

    target = Path(args.output)
    refuse_existing(target, args.overwrite)
    scored = load_rows(args.scored)
    with naming_the_file(args.scored):
        arms = build_arms(scored, **options(args, "budget", "alpha", "gamma", "remove_noisy", "seed"))
    budgets = {}
    with atomic_folder(target, overwrite=args.overwrite) as staging:
        for name, arm in arms.items():
            save_scored(arm, staging / name)
            budgets[name] = arm_budget(arm)
        write_json_atomic(budgets, staging / "budgets.json")
    for name, budget in budgets.items():
        print(
            f"{name:<16} removed={budget['num_removed']:<6} down-weighted={budget['num_down_weighted']:<6} "
            f"up-sampled={budget['num_up_sampled']:<6} pruned weight={budget['fraction_of_weight_pruned']:.2%}"
        )
    print(f"wrote {target}")
    return 0
