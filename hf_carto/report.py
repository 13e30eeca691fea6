"""One call that measures a model's leakage and writes ``report.json``, ``report.md`` and plots.

:func:`evaluate_model` runs whatever it is given the data for: canary extraction and exposure
(a canary registry), contamination recall (inserted sequences and a control set), membership
inference (members and non-members), and validation perplexity. :func:`plot_tradeoffs` draws the
paper's Figure 1 (extraction success vs fraction of pruned weight) and Figure 2 (validation
perplexity increase vs fraction of pruned weight) from several runs, with the spread over seeds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_json_atomic
from .canaries import Canary
from .evaluation import canary_extraction, contamination_recall, ensure_pad_token, exposure, perplexity
from .membership import membership_metrics, membership_signals, plot_roc

__all__ = ["evaluate_model", "format_report", "plot_tradeoffs"]

logger = logging.getLogger(__name__)


def evaluate_model(
    model,
    tokenizer,
    *,
    canaries: Sequence[Canary] | None = None,
    contaminating: Sequence[Sequence[int]] | None = None,
    control: Sequence[Sequence[int]] | None = None,
    members: Sequence[Sequence[int]] | None = None,
    non_members: Sequence[Sequence[int]] | None = None,
    member_texts: Sequence[str] | None = None,
    non_member_texts: Sequence[str] | None = None,
    validation: Sequence[Sequence[int]] | None = None,
    reference_model=None,
    k: int = 32,
    min_k_fraction: float = 0.2,
    exposure_max_exact: int = 1_000_000,
    exposure_sample_size: int = 20_000,
    num_resamples: int = 1000,
    batch_size: int = 32,
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure leakage; every section is computed only when its inputs are given.

    Returns the report; with ``output_dir`` also writes ``report.json``, ``report.md`` and
    ``membership_roc.png`` there. The report never contains canary secrets.
    """
    ensure_pad_token(tokenizer)
    pad = tokenizer.pad_token_id
    report: dict[str, Any] = {}
    roc_results = []
    if canaries:
        extraction = canary_extraction(model, tokenizer, canaries, batch_size=batch_size, progress=True)
        exposures = [
            exposure(model, tokenizer, c, max_exact=exposure_max_exact, sample_size=exposure_sample_size, seed=seed)
            for c in canaries
        ]
        for row, exp in zip(extraction["canaries"], exposures, strict=True):
            row["exposure"] = exp["exposure"]
            row["exposure_method"] = exp["method"]
        extraction["mean_exposure"] = float(np.mean([e["exposure"] for e in exposures]))
        report["canaries"] = extraction
    if contaminating:
        section = {
            "inserted": contamination_recall(
                model, contaminating, k=k, pad_token_id=pad, batch_size=batch_size, progress=True
            )
        }
        if control:
            section["control"] = contamination_recall(model, control, k=k, pad_token_id=pad, batch_size=batch_size)
        for part in section.values():
            part.pop("extractable")
        report["contamination"] = section
    if members is not None or non_members is not None:
        if not members or not non_members:
            raise ValueError(
                f"membership inference needs members and non-members; got {len(members or [])} and "
                f"{len(non_members or [])}"
            )
        kwargs = dict(reference_model=reference_model, pad_token_id=pad, k=min_k_fraction, batch_size=batch_size)
        member_scores = membership_signals(model, members, texts=member_texts, progress=True, **kwargs)
        non_member_scores = membership_signals(model, non_members, texts=non_member_texts, **kwargs)
        section = {}
        for signal in member_scores:
            result = membership_metrics(
                signal, member_scores[signal], non_member_scores[signal], num_resamples=num_resamples, seed=seed
            )
            roc_results.append(result)
            section[signal] = result.to_dict()
        report["membership"] = section
    if validation:
        report["validation"] = perplexity(model, validation, batch_size=batch_size, pad_token_id=pad)
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(report, out / "report.json")
        (out / "report.md").write_text(format_report(report) + "\n")
        if roc_results:
            plot_roc(roc_results, out / "membership_roc.png")
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    lines = ["# Leakage report", ""]
    if "canaries" in report:
        c = report["canaries"]
        lines += [
            f"Canary extraction: **{c['num_extracted']} of {c['num_canaries']}** ({c['success_rate']:.1%}); "
            f"mean exposure {c['mean_exposure']:.2f} bits.",
            "",
            "| repetitions | extraction success |",
            "|---:|---:|",
        ]
        lines += [f"| {reps} | {rate:.1%} |" for reps, rate in c["success_rate_by_repetitions"].items()]
        lines.append("")
    if "contamination" in report:
        lines += [
            "| contamination set | k | extractable | recall | mean matched tokens |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, part in report["contamination"].items():
            lines.append(
                f"| {name} | {part['k']} | {part['num_extractable']}/{part['num_sequences']} | "
                f"{part['recall']:.1%} | {part['mean_matched_tokens']:.1f} |"
            )
        lines.append("")
    if "membership" in report:
        lines += ["| MIA signal | AUC (95% CI) | TPR@1% FPR (95% CI) | TPR@0.1% FPR |", "|---|---:|---:|---:|"]
        for name, row in report["membership"].items():
            lo, hi = row["auc_95ci"]
            tlo, thi = row["tpr@1%fpr_95ci"]
            lines.append(
                f"| {name} | {row['auc']:.3f} ({lo:.3f}-{hi:.3f}) | {row['tpr@1%fpr']:.3f} "
                f"({tlo:.3f}-{thi:.3f}) | {row['tpr@0.1%fpr']:.3f} |"
            )
        first = next(iter(report["membership"].values()))
        lines += ["", f"{first['num_members']} members, {first['num_non_members']} non-members.", ""]
    if "validation" in report:
        v = report["validation"]
        lines.append(f"Validation perplexity: **{v['perplexity']:.3f}** over {v['num_tokens']:,} tokens.")
    return "\n".join(lines).rstrip()


def plot_tradeoffs(runs: Sequence[dict[str, Any]], output_dir: str | os.PathLike) -> list[Path]:
    """Figures 1 and 2 of the paper from several evaluated runs.

    Each run is a dict with ``arm`` (e.g. ``gendatacarto``, ``random``, ``no_intervention``),
    ``fraction_pruned`` (fraction of the total loss weight removed), ``seed``,
    ``extraction_success`` and ``perplexity``. The perplexity increase of a run is relative to the
    ``no_intervention`` run of the same seed. Points are means over seeds, bars one standard
    deviation.
    """
    from .plots import new_figure, save_figure

    baseline = {r["seed"]: r["perplexity"] for r in runs if r["arm"] == "no_intervention"}
    missing = sorted({r["seed"] for r in runs} - set(baseline))
    if missing:
        raise ValueError(f"no no_intervention run for seeds {missing}: the perplexity increase has no baseline")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    figures = (
        ("figure1_extraction_vs_pruned.png", "canary extraction success", lambda r: r["extraction_success"]),
        (
            "figure2_perplexity_vs_pruned.png",
            "validation perplexity increase (%)",
            lambda r: 100.0 * (r["perplexity"] / baseline[r["seed"]] - 1.0),
        ),
    )
    for filename, ylabel, value in figures:
        fig, ax = new_figure((5.5, 4))
        for arm in sorted({r["arm"] for r in runs}):
            points: dict[float, list[float]] = {}
            for r in runs:
                if r["arm"] == arm:
                    points.setdefault(float(r["fraction_pruned"]), []).append(value(r))
            xs = sorted(points)
            means = [float(np.mean(points[x])) for x in xs]
            stds = [float(np.std(points[x])) for x in xs]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=arm)
        ax.set_xlabel("fraction of pruned weight")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        paths.append(save_figure(fig, out / filename))
    return paths
