"""Comparing training arms over seeds: per-arm summaries, paired differences, the reading.

An experiment yields one *row* per (seed, arm): the arm's name, its ``fraction_pruned``, one
number per metric and, for unit-level metrics, the per-unit values (``units``: one value per
canary or per sequence, in the same order for every arm of a seed). :func:`leakage_row` builds
such a row from an :func:`~hf_carto.evaluate_model` report.

:func:`summarize` gives each arm's mean and spread over seeds; :func:`compare_arms` gives paired
differences with 95% intervals (:mod:`hf_carto.measure.statistics`) of every curated arm against its random
control at the same budget and against no intervention, and the noise floor (the mapping run's
own final model against the no-intervention arm: they differ only in the data order of the
continued epochs); :func:`reading` states what the intervals support, negative results included.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from hf_carto.measure.statistics import paired_difference, verdict

__all__ = [
    "METRICS",
    "COMPARED",
    "leakage_row",
    "summarize",
    "compare",
    "compare_arms",
    "control_of",
    "budget_suffix",
    "format_difference",
    "units_on",
    "reading",
    "reading_statements",
]

# (key, label, format) of every column of the arm table.
METRICS = [
    ("extraction_success", "canary extraction", ".1%"),
    ("mean_exposure", "mean exposure (bits)", ".2f"),
    ("contamination_recall", "contamination recall", ".1%"),
    ("control_recall", "control recall", ".1%"),
    ("mia_auc", "MIA AUC, common members", ".3f"),
    ("mia_tpr_at_1pct_fpr", "TPR@1% FPR, common members", ".3f"),
    ("planted_mia_auc", "MIA AUC, planted blocks", ".3f"),
    ("perplexity", "validation ppl", ".2f"),
    ("perplexity_change", "ppl change", "+.2%"),
]
# Metrics with a paired comparison: (key, label, unit name or None for seed-level, format).
COMPARED = [
    ("extraction_success", "canary extraction", "canaries", "+.1%"),
    ("mean_exposure", "exposure (bits)", "canaries", "+.2f"),
    ("contamination_recall", "contamination recall", "sequences", "+.1%"),
    ("mia_auc", "MIA AUC, common members", None, "+.3f"),
    ("planted_mia_auc", "MIA AUC, planted blocks", None, "+.3f"),
    ("perplexity", "validation perplexity (relative)", None, "+.2%"),
]
NOISE_FLOOR = ("mapping_run", "no_intervention")


def leakage_row(report: dict[str, Any], *, subset: str = "trained_by_every_arm", signal: str = "loss") -> dict:
    """The numbers of one evaluated arm, from an :func:`~hf_carto.evaluate_model` report.

    The membership columns use ``subset`` of the members when the report has it (the members every
    compared arm trained on) and all members otherwise; ``planted_mia_auc`` is NaN without a
    planted-block test.
    """
    canaries = report["canaries"]["canaries"]
    inserted = report["contamination"]["inserted"]
    membership = report.get("membership_subsets", {}).get(subset, report["membership"])[signal]
    planted = report.get("planted_membership", {}).get(signal, {}).get("auc", float("nan"))
    return {
        "extraction_success": report["canaries"]["success_rate"],
        "mean_exposure": report["canaries"]["mean_exposure"],
        "contamination_recall": inserted["recall"],
        "control_recall": report["contamination"]["control"]["recall"],
        "mia_auc": membership["auc"],
        "mia_tpr_at_1pct_fpr": membership["tpr@1%fpr"],
        "mia_auc_all_members": report["membership"][signal]["auc"],
        "planted_mia_auc": planted,
        "perplexity": report["validation"]["perplexity"],
        "units": {
            "extraction_success": [float(r["extracted"]) for r in canaries],
            "mean_exposure": [float(r["exposure"]) for r in canaries],
            "contamination_recall": [float(x) for x in inserted["extractable"]],
        },
    }


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per arm: the seeds, and every metric's (and the pruned fraction's) values, mean and spread."""
    summary: dict[str, dict[str, Any]] = {}
    keys = ["fraction_pruned"] + [key for key, _, _ in METRICS]
    for row in rows:
        entry = summary.setdefault(row["arm"], {"seeds": [], **{key: [] for key in keys}})
        entry["seeds"].append(row["seed"])
        for key in keys:
            entry[key].append(row[key])
    for entry in summary.values():
        for key in keys:
            values = np.asarray(entry[key], dtype=np.float64)
            entry[key] = {"values": values.tolist(), "mean": float(values.mean()), "std": float(values.std())}
    return summary


def _paired_values(rows, arm: str, control: str, key: str, unit: str | None):
    by = {(r["seed"], r["arm"]): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if r["arm"] == arm} & {r["seed"] for r in rows if r["arm"] == control})
    if not seeds:
        return None, None, seeds
    if key == "perplexity":  # relative change: comparable across seeds whose perplexity differs
        a = [by[s, arm][key] / by[s, control][key] - 1.0 for s in seeds]
        return np.asarray(a), np.zeros(len(seeds)), seeds
    if unit is None:
        return np.asarray([by[s, arm][key] for s in seeds]), np.asarray([by[s, control][key] for s in seeds]), seeds
    return (
        np.asarray([by[s, arm]["units"][key] for s in seeds]),
        np.asarray([by[s, control]["units"][key] for s in seeds]),
        seeds,
    )


def compare(
    rows: Sequence[dict[str, Any]],
    arm: str,
    control: str,
    *,
    metrics: Sequence[tuple[str, str, str | None, str]] = COMPARED,
    name_control: bool = False,
) -> dict[str, dict[str, Any]]:
    """Paired differences ``arm - control`` for every compared metric, over their common seeds.

    Args:
        metrics: ``(key, label, unit or None for seed-level, format)`` of each compared metric;
            rows need the key (and ``units[key]`` for unit-level metrics). Defaults to the
            leakage metrics of :data:`COMPARED`.
        name_control: verdicts say "lower than <control>" instead of "lower".
    """
    out = {}
    words = {"lower": f"lower than {control}", "higher": f"higher than {control}"} if name_control else {}
    for key, _, unit, _ in metrics:
        a, b, seeds = _paired_values(rows, arm, control, key, unit)
        if a is None or not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        result = paired_difference(a, b)
        result["unit"] = unit or "seeds"
        result["seeds"] = seeds
        result["verdict"] = verdict(result, **words)
        out[key] = result
    return out


#: The budget at the end of a budget arm's name: ``final_loss_prune0.1`` -> ``_prune0.1``.
_BUDGET_SUFFIX = re.compile(r"_(?:prune|downweight)[0-9][0-9.e+-]*$")


def budget_suffix(arm: str) -> str | None:
    """The budget a budget arm's name ends with (``_prune0.1``, ``_downweight0.05``), or None."""
    match = _BUDGET_SUFFIX.search(arm)
    return match.group(0) if match else None


def control_of(arm: str) -> str | None:
    """The random control of a curated arm, or None for an arm that is no curated arm.

    ``gendatacarto<suffix>`` is controlled by ``random<suffix>``; a detector's budget arm
    ``<detector>_prune<f>`` or ``<detector>_downweight<f>`` by ``random_prune<f>`` /
    ``random_downweight<f>``.

    Example:
        >>> control_of("gendatacarto_prune0.1"), control_of("final_loss_downweight0.05"), control_of("random_prune0.1")
        ('random_prune0.1', 'random_downweight0.05', None)
    """
    if arm.startswith("gendatacarto"):
        return "random" + arm[len("gendatacarto") :]
    suffix = budget_suffix(arm)
    if suffix is not None and not arm.startswith("random"):
        return "random" + suffix
    return None


def compare_arms(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every curated arm against ``random`` at the same budget and against ``no_intervention``,
    every random arm against ``no_intervention``, and the noise floor.

    Arm names follow the recipe's convention (see :func:`control_of`): a curated arm
    ``gendatacarto<suffix>`` is controlled by ``random<suffix>``, a detector's budget arm
    ``<detector>_prune<f>`` by ``random_prune<f>``. Returns ``{"<arm> vs <control>": {metric: comparison}}``.
    """
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    comparisons = {}
    for arm in arms:
        control = control_of(arm)
        if control is not None and control in arms:
            comparisons[f"{arm} vs {control}"] = compare(rows, arm, control)
        if (control is not None or arm.startswith("random")) and "no_intervention" in arms:
            comparisons[f"{arm} vs no_intervention"] = compare(rows, arm, "no_intervention")
    if all(name in arms for name in NOISE_FLOOR):
        comparisons[f"{NOISE_FLOOR[0]} vs {NOISE_FLOOR[1]}"] = compare(rows, *NOISE_FLOOR)
    return comparisons


def format_difference(comparison: dict[str, Any], fmt: str) -> str:
    """``+1.2% [-0.4%, +2.9%]``; the interval is missing with a single seed of a seed-level metric."""
    text = format(comparison["difference"], fmt)
    if comparison.get("interval") is None:
        return text + " (no interval)"
    low, high = comparison["interval"]
    return f"{text} [{format(low, fmt)}, {format(high, fmt)}]"


def units_on(comparison: dict[str, Any]) -> str:
    """``5 seeds x 32 canaries`` or ``5 seeds``: what a difference rests on."""
    seeds = comparison["num_seeds"]
    text = f"{seeds} seed{'s' if seeds != 1 else ''}"
    if comparison["num_units"] > 1:
        text += f" x {comparison['num_units']} {comparison['unit']}"
    return text


def reading_statements(
    summary: dict[str, Any], comparisons: dict[str, dict[str, Any]]
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """What the paired intervals support: sentences about what the no-intervention arm leaves to
    show, then for every curated arm against its random control one statement per metric (the
    difference with its interval, the verdict, the units and the noise floor beside it)."""
    preamble = []
    base = summary.get("no_intervention")
    if base is not None:
        if base["extraction_success"]["mean"] == 0:
            preamble.append(
                "The no-intervention arm extracts no canary, so this run cannot show a reduction in extraction."
            )
        if base["contamination_recall"]["mean"] == 0:
            preamble.append("No inserted held-out sequence is k-extractable without intervention either.")
    floor = comparisons.get(f"{NOISE_FLOOR[0]} vs {NOISE_FLOOR[1]}", {})
    labels = {key: (label, fmt) for key, label, _, fmt in COMPARED}
    arms = []
    for name, metrics in comparisons.items():
        arm, control = name.split(" vs ")
        if control_of(arm) != control or not metrics:  # only a curated arm against its random control
            continue
        said = []
        for key, result in metrics.items():
            label, fmt = labels[key]
            words = verdict(result, lower="lower than random", higher="higher than random")
            noise = f"; noise floor {format_difference(floor[key], fmt)}" if key in floor else ""
            said.append(f"{label} {format_difference(result, fmt)} ({words}; {units_on(result)}{noise})")
        arms.append((name, said))
    return preamble, arms


def reading(summary: dict[str, Any], comparisons: dict[str, dict[str, Any]]) -> str:
    """:func:`reading_statements` as one paragraph, a sentence per curated arm."""
    preamble, arms = reading_statements(summary, comparisons)
    return " ".join(preamble + [f"{name}: " + "; ".join(said) + "." for name, said in arms])
