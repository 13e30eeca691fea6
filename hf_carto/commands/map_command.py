"""Write the interactive data map of a scored dataset (one self-contained HTML file).

Difficulty against memorization (or a detector column), coloured by quadrant or planted label;
hovering a point shows its sample_id and scores; buttons filter by quadrant. A map is a file people
share: row texts are embedded only with --include-text (canary rows are then left out unless
--include-canaries), the planted ground truth only with --include-ground-truth.
"""

from __future__ import annotations

import argparse

from hf_carto.commands.dataset_inputs import naming_the_file

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scored", help="folder written by `hf-carto score` (its cartography.json draws the thresholds)"
    )
    parser.add_argument("output", help="the .html file to write")
    parser.add_argument(
        "--y", default="carto_memorization", help="carto_memorization or a carto_score_<detector> column"
    )
    parser.add_argument(
        "--color-by",
        default="quadrant",
        choices=["quadrant", "planted"],
        help="colour points by quadrant, or by planted kind (needs --include-ground-truth)",
    )
    parser.add_argument("--include-text", action="store_true", help="embed each row's text (its first 200 characters)")
    parser.add_argument("--text-column", default="text", help="with --include-text: the texts come from this column")
    parser.add_argument(
        "--tokenizer", default=None, help="with --include-text: decode input_ids (tokenizer folder or id)"
    )
    parser.add_argument(
        "--include-ground-truth",
        action="store_true",
        help="embed each row's planted truth label (needed by --color-by planted)",
    )
    parser.add_argument(
        "--include-canaries",
        action="store_true",
        help="with --include-text: also draw canary rows and their texts (the secrets)",
    )
    parser.add_argument("--title", default="Data map", help="the page's title")


def run(args: argparse.Namespace) -> int:
    from hf_carto.publish.interactive_map import write_interactive_map
    from hf_carto.score.scored_io import load_scored

    dataset, fit = load_scored(args.scored)
    tokenizer = None
    if args.tokenizer is not None and args.include_text:  # it only decodes texts
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    with naming_the_file(args.scored):
        path = write_interactive_map(
            dataset,
            args.output,
            y=args.y,
            color_by=args.color_by,
            fit=fit,
            text_column=args.text_column,
            tokenizer=tokenizer,
            include_text=args.include_text,
            include_ground_truth=args.include_ground_truth,
            include_canaries=args.include_canaries,
            title=args.title,
        )
    print(f"wrote the interactive data map to {path}")
    return 0
