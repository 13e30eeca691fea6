"""Write the generated default corpus (save_to_disk folder).

Write the project's generated corpus (grammar text over a Zipf vocabulary, with planted exact
duplicates, canaries and random-character noise) as a save_to_disk folder with a text column and its
ground truth (truth: ordinary, duplicate, canary, noise).
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="folder to create")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus (default 0)")
    parser.add_argument("--num-documents", type=int, default=None, help="ordinary documents (default 2000)")


def run(args: argparse.Namespace) -> int:
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
