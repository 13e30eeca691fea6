"""Combine seeds run as separate experiment runs into one report.

SOURCES are run folders (or their report.json) of one protocol, one seed each, including earlier
collected OUT/seed_*/report.json. Writes OUT/seed_<N>/report.json (inputs named by relative paths)
and the combined OUT/report.json and OUT/report.md: the table over seeds, paired differences against
the controls, detection quality, time per seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", help="run folders or report.json files, one seed each")
    parser.add_argument("--out", required=True, help="results folder, e.g. results/gpt2_paper_cpu")


def run(args: argparse.Namespace) -> int:
    from hf_carto.experiment.combine import collect

    report = collect(args.sources, args.out)
    seeds = report["settings"]["seeds"]
    print(f"combined seeds {seeds} into {Path(args.out) / 'report.md'} (and report.json)")
    return 0
