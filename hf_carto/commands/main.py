"""The ``hf-carto`` command line.

hf-carto demo                       # cartography alone on the generated corpus (make demo: the experiment)
hf-carto score LOSSES OUT --burn-in 2 --eps quantile:0.05
hf-carto summary OUT [--json]
hf-carto map OUT map.html           # the interactive data map: one self-contained HTML file
hf-carto generate OUT [--seed 0]    # write the generated corpus with its ground truth

Each command lives in a module of its own (``hf_carto/commands/<name>_command.py``) that adds its
sub-parser and sets its handler as ``func``; :data:`COMMANDS` lists them once, in the order
``hf-carto --help`` shows them. The modules import nothing heavy until their handler runs, so the
parser (and ``--help``) stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hf_carto.commands.arms_command import arms_command_parser
from hf_carto.commands.combine_command import combine_command_parser
from hf_carto.commands.demo_command import demo_command_parser
from hf_carto.commands.evaluate_command import evaluate_command_parser
from hf_carto.commands.generate_command import generate_command_parser
from hf_carto.commands.map_command import map_command_parser
from hf_carto.commands.merge_command import merge_command_parser
from hf_carto.commands.push_command import push_command_parser
from hf_carto.commands.score_command import score_command_parser
from hf_carto.commands.summary_command import summary_command_parser

__all__ = ["COMMANDS", "main", "make_parser"]

#: Every command's ``<name>_command_parser``: each adds its sub-command to the ``subparsers`` of
#: :func:`make_parser`, with its ``<name>_command`` handler as ``func``.
COMMANDS = (
    demo_command_parser,
    score_command_parser,
    merge_command_parser,
    arms_command_parser,
    evaluate_command_parser,
    push_command_parser,
    summary_command_parser,
    map_command_parser,
    combine_command_parser,
    generate_command_parser,
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-carto", description="Generative Data Cartography: find and curate memorization hotspots."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hf-carto``; returns the process exit code (2 on a user error).

    A user error is a ``ValueError`` (bad input: the library's messages name the file, the column,
    how many rows and the first sample_ids; a refused experiment, ``hf_carto.experiment.ExperimentError``,
    is one), an ``OSError`` (the file system: a missing or existing path, a full disk, an unreadable
    file) or a ``FolderLocked`` (another live process writes the same output; the message names its
    PID). It is printed as one line, without a traceback. Anything else is a bug and keeps its
    traceback.
    """
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from hf_carto.core.locking import FolderLocked

    try:
        return args.func(args)
    except (ValueError, OSError, FolderLocked) as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"hf-carto {args.command}: error: {message or type(err).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
