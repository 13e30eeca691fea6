"""Print the summary of a scored dataset folder.

Print the fit (eps, tau_d, tau_m), the quadrant counts with their mean difficulty and memorization,
and the intervention weights of a folder written by `hf-carto score`. A dataset with no rows is
refused (exit status 2).
"""

from __future__ import annotations

import argparse
import json

from hf_carto.commands.dataset_inputs import naming_the_file

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="folder written by `hf-carto score`")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from hf_carto.publish.summary import cartography_summary, format_summary
    from hf_carto.score.scored_io import load_scored

    dataset, fit = load_scored(args.path)
    if len(dataset) == 0:  # a summary of nothing would print the fit's counts beside zero rows
        raise ValueError(
            f"{args.path}: the dataset is empty (0 rows, columns {dataset.column_names}); nothing to sum up"
        )
    with naming_the_file(args.path):
        summary = cartography_summary(dataset, fit)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
