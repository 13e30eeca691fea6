"""The ``hf-carto`` command line.

hf-carto demo                       # cartography alone on the generated corpus (make demo: the experiment)
hf-carto score LOSSES OUT --burn-in 2 --eps quantile:0.05
hf-carto summary OUT [--json]
hf-carto map OUT map.html           # the interactive data map: one self-contained HTML file
hf-carto generate OUT [--seed 0]    # write the generated corpus with its ground truth

Each command lives in a module of its own (``hf_carto/commands/<name>_command.py``) with its
help, its arguments and its handler; :data:`COMMANDS` registers them once, in the order
``hf-carto --help`` shows them. The modules import nothing heavy until their handler runs, so the
parser (and ``--help``) stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from hf_carto.commands import (
    arms_command,
    combine_command,
    demo_command,
    evaluate_command,
    generate_command,
    map_command,
    merge_command,
    push_command,
    score_command,
    summary_command,
)

__all__ = ["COMMANDS", "main", "make_parser"]

#: Every command by name, in the order ``hf-carto --help`` lists them: a module whose docstring is
#: its help (the first paragraph: its line in that list; the rest: its description), with
#: ``add_arguments(parser)`` and the handler ``run(args)``.
COMMANDS = {
    "demo": demo_command,
    "score": score_command,
    "merge": merge_command,
    "arms": arms_command,
    "evaluate": evaluate_command,
    "push": push_command,
    "summary": summary_command,
    "map": map_command,
    "combine": combine_command,
    "generate": generate_command,
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-carto", description="Generative Data Cartography: find and curate memorization hotspots."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        # ``python -OO`` strips docstrings: the commands still parse, without their help text
        summary, _, description = (command.__doc__ or "").partition("\n\n")
        summary = " ".join(summary.split()).rstrip(".")
        sub = subparsers.add_parser(
            name, help=summary[:1].lower() + summary[1:], description=" ".join(description.split())
        )
        command.add_arguments(sub)
        sub.set_defaults(func=command.run)
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
