"""Measure leakage of a model: canaries, exposure, contamination, membership inference, perplexity.

Each section runs when its data is given. Datasets (save_to_disk folder or parquet) need an
input_ids column; a text column, when present, feeds the zlib signal. Writes OUT/report.json,
OUT/report.md and OUT/membership_roc.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_carto.commands.dataset_inputs import load_rows

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder (from save_pretrained)")
    parser.add_argument("--out", required=True, help="folder for the report")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    parser.add_argument("--registry", default=None, help="canary registry JSON (local; holds the secrets)")
    parser.add_argument("--members", default=None, help="training samples for membership inference")
    parser.add_argument("--non-members", default=None, help="held-out samples of the same distribution and length")
    parser.add_argument("--contaminating", default=None, help="held-out sequences that were inserted into training")
    parser.add_argument("--control", default=None, help="sequences that were not inserted (false-positive control)")
    parser.add_argument("--validation", default=None, help="validation samples for perplexity")
    parser.add_argument("--reference-model", default=None, help="second model for the reference MIA signal")
    parser.add_argument("--k", type=int, default=32, help="tokens of prefix and continuation for k-extractability")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default 32)")


def _token_lists(path: str | None) -> tuple[list[list[int]] | None, list[str] | None]:
    if path is None:
        return None, None
    from hf_carto.core.columns import read_columns

    table = load_rows(path)
    if "input_ids" not in table.column_names:
        raise ValueError(f"{path} has no input_ids column (columns: {table.column_names})")
    ids = [list(map(int, row)) for row in read_columns(table, ["input_ids"])["input_ids"]]
    texts = table["text"][:] if "text" in table.column_names else None
    return ids, (list(texts) if texts is not None else None)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_carto.data.canaries import load_registry
    from hf_carto.measure.model_report import evaluate_model, format_report

    if not any([args.registry, args.members, args.non_members, args.contaminating, args.validation]):
        raise ValueError(
            "nothing to evaluate: give --registry, --members/--non-members, --contaminating or --validation"
        )
    for name in ("model", "tokenizer", "registry", "reference_model"):
        value = getattr(args, name)
        if value is not None and not Path(value).exists():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {value}: no such file or folder")
    model = AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    reference = AutoModelForCausalLM.from_pretrained(args.reference_model) if args.reference_model else None
    members, member_texts = _token_lists(args.members)
    non_members, non_member_texts = _token_lists(args.non_members)
    report = evaluate_model(
        model,
        tokenizer,
        canaries=load_registry(args.registry) if args.registry else None,
        contaminating=_token_lists(args.contaminating)[0],
        control=_token_lists(args.control)[0],
        members=members,
        non_members=non_members,
        member_texts=member_texts,
        non_member_texts=non_member_texts,
        validation=_token_lists(args.validation)[0],
        reference_model=reference,
        k=args.k,
        num_resamples=args.resamples,
        batch_size=args.batch_size,
        output_dir=args.out,
    )
    if not report:
        raise ValueError(
            "nothing to evaluate: give --registry, --members/--non-members, --contaminating or --validation"
        )
    print(format_report(report))
    print(f"\nwrote {Path(args.out) / 'report.json'} and {Path(args.out) / 'report.md'}")
    return 0
