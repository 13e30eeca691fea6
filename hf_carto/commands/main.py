"""The ``hf-carto`` command line.

hf-carto demo                       # cartography alone on the generated corpus (make demo: the experiment)
hf-carto score LOSSES OUT --burn-in 2 --eps quantile:0.05
hf-carto summary OUT [--json]
hf-carto map OUT map.html           # the interactive data map: one self-contained HTML file
hf-carto generate OUT [--seed 0]    # write the generated corpus with its ground truth
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "make_parser"]

# Each _add_<command> takes what `ArgumentParser.add_subparsers` returns (its class is private to
# argparse, hence `Any`) and adds one sub-command with its arguments.


def _add_score(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="score a dataset with carto_loss_{t} columns and label quadrants and interventions",
        description="Read a dataset (save_to_disk folder, parquet file, or folder of parquet files) with "
        "carto_loss_1..carto_loss_T columns; write it with carto_difficulty, carto_memorization, "
        "carto_quadrant and the intervention columns to OUTPUT (a save_to_disk folder with "
        "cartography.json and summary.json), atomically.",
    )
    p.add_argument("input", help="dataset with the loss columns")
    p.add_argument("output", help="folder to create for the scored dataset")
    p.add_argument("--burn-in", type=int, required=True, help="T_e: snapshots averaged for difficulty")
    p.add_argument(
        "--eps",
        required=True,
        help="forget threshold: a number (the paper: 4.7055 for GPT-2), quantile:q, min+delta, min*(1+f)",
    )
    p.add_argument("--alpha-d", type=float, default=0.75, help="percentile for tau_d (default 0.75)")
    p.add_argument("--alpha-m", type=float, default=0.75, help="percentile for tau_m (default 0.75)")
    p.add_argument("--gamma", type=float, default=2.0, help="up-sampling of ambiguous-hard (default 2)")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.5,
        help="loss weight of hotspot-memorized, 0 removes them (default 0.5)",
    )
    p.add_argument("--keep-noisy", action="store_true", help="keep noisy outliers (removed by default)")
    p.add_argument("--stable-easy-gamma", type=float, default=1.0, help="up-sampling of stable-easy (default 1)")
    p.add_argument("--no-interventions", action="store_true", help="add scores and quadrants only")
    p.add_argument(
        "--allow-nonfinite",
        action="store_true",
        help="score rows with NaN/inf losses as they are (left out of eps and the thresholds) instead of failing",
    )
    p.add_argument(
        "--allow-negative", action="store_true", help="score negative losses (no cross-entropy has them) as they are"
    )
    p.add_argument("--num-proc", type=int, default=None, help="processes for Dataset.map")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="cartography alone: a tiny GPT-2 on the generated corpus in a plain loop, its data mapped (CPU, ~1 min; "
        "the whole experiment is `make demo`)",
        description="Cartography alone, on CPU in about a minute, nothing downloaded: generate the corpus "
        "(planted duplicates, canaries and noise, each labelled), train a byte-level BPE tokenizer and a tiny "
        "GPT-2 in a plain PyTorch loop (hf_carto/experiment/loop_demo.py) recording every sample's eval-mode loss, "
        "then score "
        "the samples, split them into quadrants and compare the quadrants with what was planted. Writes "
        "OUTPUT_DIR/scored (the scored dataset with its leakage and duplicate columns), data_map.png, "
        "data_map.html, report.json and the recorded losses (OUTPUT_DIR/run), replacing an earlier run once "
        "complete. No arms, no leakage evaluation of arms: that is the experiment, "
        "`python recipes/gpt2_wikitext.py --preset cpu-demo` (`make demo`).",
    )
    demo.add_argument("--output-dir", default="outputs/demo", help="folder to write (default outputs/demo)")
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the model's weights and the data order; the corpus is always the same (default 0)",
    )
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default 12)")
    demo.add_argument(
        "--snapshots-per-epoch", type=int, default=None, help="eval-mode loss snapshots per epoch (default 2)"
    )
    demo.add_argument("--eps", default=None, help="forget threshold policy (default quantile:0.05)")


def _add_merge(sub: Any) -> None:
    merge = sub.add_parser(
        "merge",
        help="merge recorded loss shards into carto_loss_{t} columns",
        description="Merge RUN_DIR/carto/losses/snapshot=T/rank=R.parquet into one column per snapshot. "
        "With --dataset, the columns are added to that dataset (aligned by sample_id) and saved to --out "
        "(default RUN_DIR/carto/dataset); without it, a parquet file of sample_id + carto_loss_{t} is written "
        "(default RUN_DIR/carto/losses.parquet). Either output feeds `hf-carto score`.",
    )
    merge.add_argument("run_dir", help="the training output_dir that holds carto/")
    merge.add_argument("--dataset", default=None, help="training dataset with its sample_id column")
    merge.add_argument("--out", default=None, help="where to write the merged result")
    merge.add_argument("--allow-nonfinite", action="store_true", help="merge NaN/inf losses instead of failing")
    merge.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _add_arms(sub: Any) -> None:
    arms = sub.add_parser(
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


def _add_evaluate(sub: Any) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="measure leakage of a model: canaries, exposure, contamination, membership inference, perplexity",
        description="Each section runs when its data is given. Datasets (save_to_disk folder or parquet) need an "
        "input_ids column; a text column, when present, feeds the zlib signal. Writes OUT/report.json, "
        "OUT/report.md and OUT/membership_roc.png.",
    )
    ev.add_argument("model", help="model folder (from save_pretrained)")
    ev.add_argument("--out", required=True, help="folder for the report")
    ev.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    ev.add_argument("--registry", default=None, help="canary registry JSON (local; holds the secrets)")
    ev.add_argument("--members", default=None, help="training samples for membership inference")
    ev.add_argument("--non-members", default=None, help="held-out samples of the same distribution and length")
    ev.add_argument("--contaminating", default=None, help="held-out sequences that were inserted into training")
    ev.add_argument("--control", default=None, help="sequences that were not inserted (false-positive control)")
    ev.add_argument("--validation", default=None, help="validation samples for perplexity")
    ev.add_argument("--reference-model", default=None, help="second model for the reference MIA signal")
    ev.add_argument("--k", type=int, default=32, help="tokens of prefix and continuation for k-extractability")
    ev.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for the intervals")
    ev.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default 32)")


def _add_push(sub: Any) -> None:
    push = sub.add_parser(
        "push",
        help="publish a scored dataset to the Hub (exported locally first, then uploaded)",
        description="DATASET_DIR is a folder written by `hf-carto score` (exported to --export-dir first) or an "
        "export folder (README.md + data/). Canary rows and secrets are withheld. The token comes from HF_TOKEN "
        "or the cached login and is never printed.",
    )
    push.add_argument("dataset_dir", help="a folder written by `hf-carto score`, or an export folder")
    push.add_argument("repo_id", help="namespace/name")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private",
        dest="private",
        action="store_true",
        default=True,
        help="create the repository as private (default)",
    )
    visibility.add_argument("--public", dest="private", action="store_false", help="create the repository as public")
    push.add_argument("--revision", default=None, help="branch to commit to")
    push.add_argument("--message", default="Upload curated dataset (hf_carto)", help="commit message")
    push.add_argument("--export-dir", default=None, help="where the Hub layout is written (default DATASET_DIR.hub)")
    push.add_argument("--license", default=None, help="license for the card, e.g. cc-by-sa-3.0")
    push.add_argument(
        "--allow-private",
        action="store_true",
        help="push a folder holding a PRIVATE.md, a canary registry or columns marking canary rows (refused "
        "otherwise)",
    )


def _add_summary(sub: Any) -> None:
    summary = sub.add_parser(
        "summary",
        help="print the summary of a scored dataset folder",
        description="Print the fit (eps, tau_d, tau_m), the quadrant counts with their mean difficulty and "
        "memorization, and the intervention weights of a folder written by `hf-carto score`. A dataset with "
        "no rows is refused (exit status 2).",
    )
    summary.add_argument("path", help="folder written by `hf-carto score`")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_combine(sub: Any) -> None:
    combine = sub.add_parser(
        "combine",
        help="combine seeds run as separate experiment runs into one report",
        description="SOURCES are run folders (or their report.json) of one protocol, one seed each, including "
        "earlier collected OUT/seed_*/report.json. Writes OUT/seed_<N>/report.json (inputs named by relative "
        "paths) and the combined OUT/report.json and OUT/report.md: the table over seeds, paired differences "
        "against the controls, detection quality, time per seed.",
    )
    combine.add_argument("sources", nargs="+", help="run folders or report.json files, one seed each")
    combine.add_argument("--out", required=True, help="results folder, e.g. results/gpt2_paper_cpu")


def _add_map(sub: Any) -> None:
    p = sub.add_parser(
        "map",
        help="write the interactive data map of a scored dataset (one self-contained HTML file)",
        description="Difficulty against memorization (or a detector column), coloured by quadrant or planted "
        "label; hovering a point shows its sample_id and scores; buttons filter by quadrant. A map is a file people "
        "share: row texts are embedded only with --include-text (canary rows are then left out unless "
        "--include-canaries), the planted ground truth only with --include-ground-truth.",
    )
    p.add_argument("scored", help="folder written by `hf-carto score` (its cartography.json draws the thresholds)")
    p.add_argument("output", help="the .html file to write")
    p.add_argument("--y", default="carto_memorization", help="carto_memorization or a carto_score_<detector> column")
    p.add_argument(
        "--color-by",
        default="quadrant",
        choices=["quadrant", "planted"],
        help="colour points by quadrant, or by planted kind (needs --include-ground-truth)",
    )
    p.add_argument("--include-text", action="store_true", help="embed each row's text (its first 200 characters)")
    p.add_argument("--text-column", default="text", help="with --include-text: the texts come from this column")
    p.add_argument("--tokenizer", default=None, help="with --include-text: decode input_ids (tokenizer folder or id)")
    p.add_argument(
        "--include-ground-truth",
        action="store_true",
        help="embed each row's planted truth label (needed by --color-by planted)",
    )
    p.add_argument(
        "--include-canaries",
        action="store_true",
        help="with --include-text: also draw canary rows and their texts (the secrets)",
    )
    p.add_argument("--title", default="Data map", help="the page's title")


def _add_generate(sub: Any) -> None:
    gen = sub.add_parser(
        "generate",
        help="write the generated default corpus (save_to_disk folder)",
        description="Write the project's generated corpus (grammar text over a Zipf vocabulary, with planted "
        "exact duplicates, canaries and random-character noise) as a save_to_disk folder with a text column and "
        "its ground truth (truth: ordinary, duplicate, canary, noise).",
    )
    gen.add_argument("output", help="folder to create")
    gen.add_argument("--seed", type=int, default=0, help="seed of the corpus (default 0)")
    gen.add_argument("--num-documents", type=int, default=None, help="ordinary documents (default 2000)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-carto", description="Generative Data Cartography: find and curate memorization hotspots."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_demo,
        _add_score,
        _add_merge,
        _add_arms,
        _add_evaluate,
        _add_push,
        _add_summary,
        _add_map,
        _add_combine,
        _add_generate,
    ):
        add(sub)
    return parser


@contextlib.contextmanager
def _about(path: str | Path) -> Iterator[None]:
    """Name ``path`` in the ValueErrors of the work done on the dataset read from it.

    The library names columns, rows and sample_ids but does not know which file the dataset came
    from; the command line does.
    """
    try:
        yield
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: {err}") from None


def _load_rows(path: str | Path) -> Any:
    """The dataset at ``path`` (see :func:`hf_carto.core.io.load_table`), refused when it has no rows."""
    from hf_carto.core.io import load_table

    dataset = load_table(path)
    if len(dataset) == 0:
        raise ValueError(f"{path}: the dataset is empty (0 rows, columns {dataset.column_names})")
    return dataset


def _run_score(args: argparse.Namespace) -> int:
    from hf_carto.core.locking import output_lock, remove_stale_staging_of

    with output_lock(args.output, "hf-carto score"):  # two scorings into one folder would mix
        remove_stale_staging_of(args.output)
        return _score(args)


def _score(args: argparse.Namespace) -> int:
    from hf_carto.core.io import save_scored
    from hf_carto.score.cartography import (
        add_cartography,
        apply_interventions,
        cartography_summary,
        fit_cartography,
        format_summary,
    )

    # Checked before any work, so a long scoring run cannot end in this refusal.
    if not args.overwrite and Path(args.output).exists():
        raise FileExistsError(f"{args.output} already exists; pass --overwrite to replace it")
    dataset = _load_rows(args.input)
    with _about(args.input):
        fit = fit_cartography(
            dataset,
            burn_in=args.burn_in,
            eps=args.eps,
            alpha_d=args.alpha_d,
            alpha_m=args.alpha_m,
            allow_nonfinite=args.allow_nonfinite,
            allow_negative=args.allow_negative,
        )
        scored = add_cartography(dataset, fit, num_proc=args.num_proc)
        if not args.no_interventions:
            scored = apply_interventions(
                scored,
                gamma=args.gamma,
                alpha=args.alpha,
                remove_noisy=not args.keep_noisy,
                stable_easy_gamma=args.stable_easy_gamma,
                num_proc=args.num_proc,
            )
        summary = cartography_summary(scored, fit)
    save_scored(scored, args.output, fit=fit, summary=summary, overwrite=args.overwrite)
    print(format_summary(summary))
    print(f"wrote {args.output}")
    return 0


def _run_merge(args: argparse.Namespace) -> int:
    from hf_carto.core.locking import output_lock, remove_stale_staging_of
    from hf_carto.record.merge import add_loss_columns, load_loss_matrix, write_wide_parquet

    run_dir = Path(args.run_dir)
    if not (run_dir / "carto" / "manifest.json").exists():
        raise FileNotFoundError(f"{run_dir / 'carto' / 'manifest.json'}: no recording in {run_dir}")
    if args.dataset is None:
        out = Path(args.out) if args.out else run_dir / "carto" / "losses.parquet"
        with output_lock(out, "hf-carto merge"):
            remove_stale_staging_of(out)
            if out.exists() and not args.overwrite:
                raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
            matrix = load_loss_matrix(run_dir, allow_nonfinite=args.allow_nonfinite, progress=True)
            write_wide_parquet(matrix, out)
        n, t = matrix.losses.shape
    else:
        from hf_carto.core.io import save_scored

        out = Path(args.out) if args.out else run_dir / "carto" / "dataset"
        with output_lock(out, "hf-carto merge"):
            remove_stale_staging_of(out)
            if out.exists() and not args.overwrite:
                raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
            merged = add_loss_columns(_load_rows(args.dataset), run_dir, allow_nonfinite=args.allow_nonfinite)
            save_scored(merged, out, overwrite=args.overwrite)
        n, t = len(merged), sum(c.startswith("carto_loss_") for c in merged.column_names)
    print(f"merged {t} snapshots of {n} samples into {out}")
    return 0


def _run_arms(args: argparse.Namespace) -> int:
    from hf_carto.core.locking import output_lock, remove_stale_staging_of

    with output_lock(args.output, "hf-carto arms"):
        remove_stale_staging_of(args.output)
        return _arms(args)


def _arms(args: argparse.Namespace) -> int:
    from hf_carto.core.atomic import atomic_folder, write_json_atomic
    from hf_carto.core.io import save_scored
    from hf_carto.curation.arms import arm_budget, build_arms

    target = Path(args.output)
    if target.exists() and not args.overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
    scored = _load_rows(args.scored)
    with _about(args.scored):
        arms = build_arms(
            scored,
            budget=args.budget,
            alpha=args.alpha,
            gamma=args.gamma,
            remove_noisy=args.remove_noisy,
            seed=args.seed,
        )
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


def _token_lists(path: str | None) -> tuple[list[list[int]] | None, list[str] | None]:
    if path is None:
        return None, None
    from hf_carto.score.cartography import read_columns

    table = _load_rows(path)
    if "input_ids" not in table.column_names:
        raise ValueError(f"{path} has no input_ids column (columns: {table.column_names})")
    ids = [list(map(int, row)) for row in read_columns(table, ["input_ids"])["input_ids"]]
    texts = table["text"][:] if "text" in table.column_names else None
    return ids, (list(texts) if texts is not None else None)


def _run_evaluate(args: argparse.Namespace) -> int:
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


def _run_push(args: argparse.Namespace) -> int:
    from hf_carto.core.locking import output_lock
    from hf_carto.publish.hub import check_push_source, check_repo_id

    check_repo_id(args.repo_id)  # before any export work
    source = Path(args.dataset_dir)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such folder")
    check_push_source(source)  # a run folder: its private files and what to push instead, before any lock
    exported = (source / "README.md").exists() and (source / "data").is_dir()
    folder = (
        source if exported else Path(args.export_dir) if args.export_dir else source.with_name(source.name + ".hub")
    )
    if not exported:
        from hf_carto.publish.hub import check_export_folder

        check_export_folder(folder, [source])  # before anything is written, the lock file included
    # From the export to the end of the upload: another push would replace the folder being read.
    with output_lock(Path(os.path.abspath(folder)), "hf-carto push"):
        return _push(args, source, folder, exported)


def _push(args: argparse.Namespace, source: Path, folder: Path, exported: bool) -> int:
    from hf_carto.publish.hub import check_export_folder, export_hub_layout, push_curated_dataset

    if not exported:
        from hf_carto.core.io import load_scored

        check_export_folder(folder, [source])  # again under the lock: another push may have written it
        dataset, fit = load_scored(source)
        export_hub_layout(
            dataset, folder, repo_id=args.repo_id, fit=fit, license=args.license, overwrite=True, data_map=True
        )
        print(f"exported the Hub layout to {folder}")
    try:
        result = push_curated_dataset(
            folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.message,
            allow_private=args.allow_private,
        )
    except Exception as err:  # network and server errors: the export stays for a retry
        if isinstance(err, (ValueError, FileNotFoundError)):
            raise
        print(
            f"hf-carto push: error: the push to {args.repo_id} failed ({type(err).__name__}: {err}); "
            f"the export in {folder} is intact, run the same command again to retry",
            file=sys.stderr,
        )
        return 1
    print(f"pushed {folder} to {result.url}\ncommit {result.commit}")
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    from hf_carto.core.io import load_scored
    from hf_carto.score.cartography import cartography_summary, format_summary

    dataset, fit = load_scored(args.path)
    if len(dataset) == 0:  # a summary of nothing would print the fit's counts beside zero rows
        raise ValueError(
            f"{args.path}: the dataset is empty (0 rows, columns {dataset.column_names}); nothing to sum up"
        )
    with _about(args.path):
        summary = cartography_summary(dataset, fit)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _run_map(args: argparse.Namespace) -> int:
    from hf_carto.core.io import load_scored
    from hf_carto.publish.interactive_map import write_interactive_map

    dataset, fit = load_scored(args.scored)
    tokenizer = None
    if args.tokenizer is not None and args.include_text:  # it only decodes texts
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    with _about(args.scored):
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


def _run_demo(args: argparse.Namespace) -> int:
    from hf_carto.experiment.loop_demo import DemoConfig, run_demo

    config = DemoConfig(output_dir=args.output_dir, seed=args.seed)
    for name in ("epochs", "snapshots_per_epoch", "eps"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    run_demo(config)
    return 0


def _run_combine(args: argparse.Namespace) -> int:
    from hf_carto.experiment.combine import collect

    report = collect(args.sources, args.out)
    seeds = report["settings"]["seeds"]
    print(f"combined seeds {seeds} into {Path(args.out) / 'report.md'} (and report.json)")
    return 0


def _run_generate(args: argparse.Namespace) -> int:
    import dataclasses

    from hf_carto.core.io import save_scored
    from hf_carto.data.generated import CorpusConfig, generate_corpus

    config = CorpusConfig(seed=args.seed)
    if args.num_documents is not None:
        config = dataclasses.replace(config, num_documents=args.num_documents)
    corpus = generate_corpus(config)
    save_scored(corpus, args.output)
    print(f"wrote {len(corpus)} documents to {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hf-carto``; returns the process exit code (2 on a user error).

    A user error is a ``ValueError`` (bad input: the library's messages name the file, the column,
    how many rows and the first sample_ids), an ``OSError`` (the file system: a missing or
    existing path, a full disk, an unreadable file) or a ``FolderLocked`` (another live process
    writes the same output; the message names its PID). It is printed as one line, without a
    traceback. Anything else is a bug and keeps its traceback.
    """
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runners = {
        "arms": _run_arms,
        "evaluate": _run_evaluate,
        "push": _run_push,
        "merge": _run_merge,
        "score": _run_score,
        "summary": _run_summary,
        "map": _run_map,
        "combine": _run_combine,
        "demo": _run_demo,
        "generate": _run_generate,
    }
    from hf_carto.core.locking import FolderLocked

    try:
        return runners[args.command](args)
    except (ValueError, OSError, FolderLocked) as err:
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"hf-carto {args.command}: error: {message or type(err).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
