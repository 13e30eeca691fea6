"""``hf-carto generate``: write the generated corpus with its planted ground truth."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["generate_command", "generate_command_parser"]


def generate_command_parser(subparsers: Any) -> argparse.ArgumentParser:
    gen = subparsers.add_parser(
        "generate",
        help="write the generated default corpus (save_to_disk folder)",
        description="Write the project's generated corpus (grammar text over a Zipf vocabulary, with planted "
        "exact duplicates, canaries and random-character noise) as a save_to_disk folder with a text column and "
        "its ground truth (truth: ordinary, duplicate, canary, noise).",
    )
    gen.add_argument("output", help="folder to create")
    gen.add_argument("--seed", type=int, default=0, help="seed of the corpus (default 0)")
    gen.add_argument("--num-documents", type=int, default=None, help="ordinary documents (default 2000)")
    gen.set_defaults(func=generate_command)
    return gen


def generate_command(args: argparse.Namespace) -> int:
    import dataclasses

    from hf_carto.data.generated import CorpusConfig, generate_corpus
    from hf_carto.score.scored_io import save_scored

    config = CorpusConfig(seed=args.seed)
    if args.num_documents is not None:
        config = dataclasses.replace(config, num_documents=args.num_documents)
    corpus = generate_corpus(config)
    save_scored(corpus, args.output)
    print(f"wrote {len(corpus)} documents to {args.output}")
    return 0
