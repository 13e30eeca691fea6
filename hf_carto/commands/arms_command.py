"""``hf-carto arms``: the comparison arms (no intervention, gendatacarto, random at the same budget)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hf_carto.commands.dataset_inputs import load_rows, naming_the_file, options, refuse_existing

__all__ = ["arms_command", "arms_command_parser"]


def arms_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    arms = subparsers.add_parser(
        "arms",
        help="build the comparison arms (no_intervention, gendatacarto, random at the same budget)",
        description="Write OUT/no_intervention, OUT/gendatacarto and OUT/random (save_to_disk folders with "
        "carto_loss_weight, carto_sampling_weight and carto_keep) and OUT/budgets.json. The random arm applies "
        "the same treatments as gendatacarto to rows chosen by a seeded permutation.",
    )
    arms.add_argument("scored", help="a dataset scored by `hf-carto score`")
    arms.add_argument("output", help="folder to create for the three arms")
    arms.add_argument(
        "--budget",
        type=float,
        default=None,
        help="treat the top fraction by memorization instead of the per-quadrant rules",
    )
    arms.add_argument("--alpha", type=float, default=0.5, help="loss weight of treated rows; 0 removes them")
    arms.add_argument("--gamma", type=float, default=1.0, help="up-sampling of ambiguous-hard (quadrant rules)")
    arms.add_argument("--remove-noisy", action="store_true", help="remove noisy outliers (quadrant rules)")
    arms.add_argument("--seed", type=int, default=0, help="seed of the random arm")
    arms.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    arms.set_defaults(func=arms_command)
    return arms


def arms_command(args: argparse.Namespace) -> int:
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
