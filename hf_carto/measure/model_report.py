"""One call that measures a model's leakage and writes ``report.json``, ``report.md`` and plots.

:func:`evaluate_leakage` (or :func:`evaluate_model`, the same with keyword arguments) runs whatever
it is given the data for: canary extraction and exposure (a canary registry), contamination recall
(inserted sequences and a control set), membership inference (members and non-members), and
validation perplexity. :func:`plot_tradeoffs` draws the paper's Figure 1 (extraction success vs
fraction of pruned weight) and Figure 2 (validation perplexity increase vs fraction of pruned
weight) from several runs, with the spread over seeds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hf_carto.core.atomic import write_json_atomic
from hf_carto.core.batching import map_batches, writes_outputs
from hf_carto.data.canaries import Canary
from hf_carto.measure.causal_lm import ensure_pad_token
from hf_carto.measure.contamination import contamination_recall
from hf_carto.measure.exposure import exposure
from hf_carto.measure.extraction import canary_extraction
from hf_carto.measure.membership import membership_metrics, membership_signals, plot_roc
from hf_carto.measure.perplexity import perplexity

__all__ = ["EvalSettings", "LeakageProbes", "evaluate_leakage", "evaluate_model", "format_report", "plot_tradeoffs"]

logger = logging.getLogger(__name__)


@dataclass
class LeakageProbes:
    """What to probe a model with; every section of the report is measured only when its sets are given.

    Args:
        canaries: inserted canaries (extraction and exposure).
        control_canaries: canaries that were never inserted, decoded the same way: their extraction
            rate is the floor a trained canary's rate is read against.
        contaminating: token sequences of ``2k`` tokens inserted into training (contamination recall).
        control: sequences cut the same way that were not inserted.
        members: token blocks trained on (membership inference); ``member_texts`` their texts, for
            the zlib signal.
        non_members: token blocks never trained on; ``non_member_texts`` their texts.
        member_subsets: named boolean masks over ``members``; each subset is measured against the
            same non-members (``membership_subsets`` in the report). Comparing arms that trained on
            different rows needs the members every arm trained on.
        planted_members: blocks holding planted material (canaries, contaminating sequences)
            that were trained on: the membership question the curation targets
            (``planted_membership`` in the report).
        planted_non_members: blocks built the same way from held-out text and never-inserted
            material.
        validation: token blocks for validation perplexity.
    """

    canaries: Sequence[Canary] | None = None
    control_canaries: Sequence[Canary] | None = None
    contaminating: Sequence[Sequence[int]] | None = None
    control: Sequence[Sequence[int]] | None = None
    members: Sequence[Sequence[int]] | None = None
    non_members: Sequence[Sequence[int]] | None = None
    member_texts: Sequence[str] | None = None
    non_member_texts: Sequence[str] | None = None
    member_subsets: Mapping[str, Sequence[bool]] | None = None
    planted_members: Sequence[Sequence[int]] | None = None
    planted_non_members: Sequence[Sequence[int]] | None = None
    validation: Sequence[Sequence[int]] | None = None


@dataclass
class EvalSettings:
    """How to measure: ``k`` of k-extractability, the min-k% fraction, the exposure ranking's exact
    limit and estimate sample, bootstrap resamples, batch size and seed."""

    k: int = 32
    min_k_fraction: float = 0.2
    exposure_max_exact: int = 1_000_000
    exposure_sample_size: int = 20_000
    num_resamples: int = 1000
    batch_size: int = 32
    seed: int = 0


def evaluate_leakage(
    model,
    tokenizer,
    probes: LeakageProbes,
    settings: EvalSettings | None = None,
    *,
    reference_model=None,
    output_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Measure leakage; every section is computed only when its probes are given.

    Returns the report; with ``output_dir`` also writes ``report.json``, ``report.md`` and
    ``membership_roc.png`` there. The report never contains canary secrets.

    Inside ``with hf_carto.core.batching.split_across_processes():`` under ``accelerate launch``, every
    process must call it: the decoding, scoring and exposure batches are split across the
    processes, every process returns the same report (equal to one process's), and the first one
    writes the files.
    """
    settings = settings or EvalSettings()
    ensure_pad_token(tokenizer)
    report: dict[str, Any] = {}
    if probes.canaries:
        report["canaries"] = _canary_section(model, tokenizer, probes, settings)
    if probes.contaminating:
        report["contamination"] = _contamination_section(model, tokenizer, probes, settings)
    roc_results: list = []
    signal_args = dict(
        reference_model=reference_model, pad_token_id=tokenizer.pad_token_id, k=settings.min_k_fraction,
        batch_size=settings.batch_size,
    )  # fmt: skip
    if probes.members is not None or probes.non_members is not None:
        report.update(_membership_sections(model, probes, settings, signal_args, roc_results))
    if probes.planted_members is not None or probes.planted_non_members is not None:
        report["planted_membership"] = _planted_section(model, probes, settings, signal_args)
    if probes.validation:
        report["validation"] = perplexity(
            model, probes.validation, batch_size=settings.batch_size, pad_token_id=tokenizer.pad_token_id
        )
    if output_dir is not None and writes_outputs():
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(report, out / "report.json")
        (out / "report.md").write_text(format_report(report) + "\n")
        if roc_results:
            plot_roc(roc_results, out / "membership_roc.png")
    return report


def evaluate_model(
    model,
    tokenizer,
    *,
    reference_model=None,
    output_dir: str | os.PathLike | None = None,
    **sets_and_settings: Any,
) -> dict[str, Any]:
    """:func:`evaluate_leakage` with the fields of :class:`LeakageProbes` and :class:`EvalSettings`
    given as keyword arguments (``canaries=..., members=..., k=..., batch_size=...``)."""
    probe_names = {f.name for f in fields(LeakageProbes)}
    setting_names = {f.name for f in fields(EvalSettings)}
    unknown = sorted(set(sets_and_settings) - probe_names - setting_names)
    if unknown:
        raise TypeError(f"evaluate_model got unexpected keyword arguments {unknown}")
    probes = LeakageProbes(**{k: v for k, v in sets_and_settings.items() if k in probe_names})
    settings = EvalSettings(**{k: v for k, v in sets_and_settings.items() if k in setting_names})
    return evaluate_leakage(model, tokenizer, probes, settings, reference_model=reference_model, output_dir=output_dir)


def _canary_section(model, tokenizer, probes: LeakageProbes, settings: EvalSettings) -> dict[str, Any]:
    extraction = canary_extraction(model, tokenizer, probes.canaries, batch_size=settings.batch_size, progress=True)
    canaries = list(probes.canaries)
    exposures = map_batches(  # one canary a "batch": split across processes when asked
        len(canaries),
        lambda i: exposure(
            model,
            tokenizer,
            canaries[i],
            max_exact=settings.exposure_max_exact,
            sample_size=settings.exposure_sample_size,
            seed=settings.seed,
        ),
    )
    by_id = {e["canary_id"]: e for e in exposures}  # extraction rows come sorted by canary id
    for row in extraction["canaries"]:
        exp = by_id[row["canary_id"]]
        row["exposure"] = exp["exposure"]
        row["exposure_method"] = exp["method"]
        if "exposure_ci95" in exp:
            row["exposure_ci95"] = exp["exposure_ci95"]
    extraction["mean_exposure"] = float(np.mean([e["exposure"] for e in exposures]))
    extraction["num_exposure_estimated"] = sum(e["method"] != "exact" for e in exposures)
    if probes.control_canaries:
        floor = canary_extraction(model, tokenizer, probes.control_canaries, batch_size=settings.batch_size)
        extraction["control"] = {k: floor[k] for k in ("success_rate", "num_extracted", "num_canaries")}
    return extraction


def _contamination_section(model, tokenizer, probes: LeakageProbes, settings: EvalSettings) -> dict[str, Any]:
    args = dict(
        k=settings.k, pad_token_id=tokenizer.pad_token_id, eos_token_id=getattr(tokenizer, "eos_token_id", None),
        batch_size=settings.batch_size,
    )  # fmt: skip
    section = {"inserted": contamination_recall(model, probes.contaminating, progress=True, **args)}
    if probes.control:
        section["control"] = contamination_recall(model, probes.control, **args)
    return section


def _membership_sections(model, probes: LeakageProbes, settings: EvalSettings, signal_args, roc_results) -> dict:
    members, non_members = probes.members, probes.non_members
    _require_both("membership inference", "members", members, "non-members", non_members)
    member_scores = membership_signals(model, members, texts=probes.member_texts, progress=True, **signal_args)
    non_member_scores = membership_signals(model, non_members, texts=probes.non_member_texts, **signal_args)
    metrics = dict(num_resamples=settings.num_resamples, seed=settings.seed)
    section = {}
    for signal in member_scores:
        result = membership_metrics(signal, member_scores[signal], non_member_scores[signal], **metrics)
        roc_results.append(result)
        section[signal] = result.to_dict()
    out: dict[str, Any] = {"membership": section}
    subsets = {}
    for name, mask in (probes.member_subsets or {}).items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(members),) or not mask.any():
            raise ValueError(
                f"member subset {name!r} must be a non-empty boolean mask over the {len(members)} members; "
                f"got shape {mask.shape} with {int(mask.sum())} selected"
            )
        subsets[name] = {
            signal: membership_metrics(signal, scores[mask], non_member_scores[signal], **metrics).to_dict()
            for signal, scores in member_scores.items()
        }
    if subsets:
        out["membership_subsets"] = subsets
    return out


def _planted_section(model, probes: LeakageProbes, settings: EvalSettings, signal_args) -> dict[str, Any]:
    _require_both(
        "the planted-block membership test", "planted members", probes.planted_members,
        "planted non-members", probes.planted_non_members,
    )  # fmt: skip
    planted = membership_signals(model, probes.planted_members, **signal_args)
    planted_out = membership_signals(model, probes.planted_non_members, **signal_args)
    metrics = dict(num_resamples=settings.num_resamples, seed=settings.seed)
    return {
        signal: membership_metrics(signal, planted[signal], planted_out[signal], **metrics).to_dict()
        for signal in planted
    }


def _require_both(test: str, first: str, a, second: str, b) -> None:
    if not a or not b:
        raise ValueError(f"{test} needs both sets; got {len(a or [])} {first} and {len(b or [])} {second}")


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
        if "success_rate_by_copies" in c:
            lines += ["| whole copies in training blocks | extraction success |", "|---:|---:|"]
            lines += [f"| {copies} | {rate:.1%} |" for copies, rate in c["success_rate_by_copies"].items()]
            lines.append("")
        if "control" in c:
            lines += [
                f"Never-inserted control canaries extracted: {c['control']['num_extracted']} of "
                f"{c['control']['num_canaries']} (the floor).",
                "",
            ]
        if c.get("num_exposure_estimated"):
            lines += [
                f"Exposure of {c['num_exposure_estimated']} canaries is a skew-normal estimate (the secret "
                "space is too large to rank exactly); their 95% intervals are in report.json.",
                "",
            ]
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
    sections = []
    if "membership" in report:
        sections.append(("all members", report["membership"]))
    for name, section in report.get("membership_subsets", {}).items():
        sections.append((f"members {name.replace('_', ' ')}", section))
    if "planted_membership" in report:
        sections.append(
            ("planted blocks vs blocks built the same way from never-trained material", report["planted_membership"])
        )
    for title, section in sections:
        lines += [
            f"Membership inference, {title}:",
            "",
            "| MIA signal | AUC (95% CI) | TPR@1% FPR (95% CI) | TPR@0.1% FPR |",
            "|---|---:|---:|---:|",
        ]
        for name, row in section.items():
            lo, hi = row["auc_95ci"]
            tlo, thi = row["tpr@1%fpr_95ci"]
            lines.append(
                f"| {name} | {row['auc']:.3f} ({lo:.3f}-{hi:.3f}) | {row['tpr@1%fpr']:.3f} "
                f"({tlo:.3f}-{thi:.3f}) | {row['tpr@0.1%fpr']:.3f} |"
            )
        first = next(iter(section.values()))
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
    from hf_carto.core.plots import new_figure, save_figure

    baseline = {r["seed"]: r["perplexity"] for r in runs if r["arm"] == "no_intervention"}
    missing = sorted({r["seed"] for r in runs} - set(baseline))
    if missing:
        raise ValueError(f"no no_intervention run for seeds {missing}: the perplexity increase has no baseline")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    figures = (
        (
            "figure1_extraction_vs_pruned.png",
            "Canary extraction against pruned weight",
            "canary extraction success",
            lambda r: r["extraction_success"],
        ),
        (
            "figure2_perplexity_vs_pruned.png",
            "Validation perplexity against pruned weight",
            "validation perplexity increase (%)",
            lambda r: 100.0 * (r["perplexity"] / baseline[r["seed"]] - 1.0),
        ),
    )
    nothing_extracted = all(r["extraction_success"] == 0 for r in runs)
    for filename, title, ylabel, value in figures:
        fig, ax = new_figure((5.5, 4))
        ax.set_title(title, fontsize=10)
        if nothing_extracted and filename.startswith("figure1"):
            # Every line lies on 0: matplotlib would centre them on a +-0.04 axis, a flat pile that
            # reads like a result. The rate's own axis, and the figure says there is nothing to compare.
            ax.set_ylim(-0.05, 1.0)
            ax.text(
                0.5,
                0.55,
                "nothing extracted in any arm",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=11,
            )
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
