"""``hf-carto combine``: seeds run as separate experiment runs, combined into one report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["combine_command", "combine_command_parser"]


def combine_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    combine = subparsers.add_parser(
        "combine",
        help="combine seeds run as separate experiment runs into one report",
        description="SOURCES are run folders (or their report.json) of one protocol, one seed each, including "
        "earlier collected OUT/seed_*/report.json. Writes OUT/seed_<N>/report.json (inputs named by relative "
        "paths) and the combined OUT/report.json and OUT/report.md: the table over seeds, paired differences "
        "against the controls, detection quality, time per seed.",
    )
    combine.add_argument("sources", nargs="+", help="run folders or report.json files, one seed each")
    combine.add_argument("--out", required=True, help="results folder, e.g. results/gpt2_paper_cpu")
    combine.set_defaults(func=combine_command)
    return combine


def combine_command(args: argparse.Namespace) -> int:
    from hf_carto.experiment.combine import collect

    report = collect(args.sources, args.out)
    seeds = report["settings"]["seeds"]
    print(f"combined seeds {seeds} into {Path(args.out) / 'report.md'} (and report.json)")
    return 0
