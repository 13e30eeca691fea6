"""The budget frontier: what each curation policy buys in leakage for what it costs in perplexity.

A report over seeds (:func:`hf_carto.experiment.combine`, or one multi-seed run) holds, for every
arm, its metrics and the paired differences against no intervention and against random at the
same budget (:func:`hf_carto.measure.comparison.compare_arms`). :func:`frontier_points` turns them into one
point per curated arm, grouped into lines (a detector through its budgets); :func:`plot_frontier`
draws leakage against perplexity cost, a panel per detector beside random at the same budgets,
with the paired 95% intervals as bars;
:func:`recommend_policy` picks the arm with the largest extraction reduction at a perplexity cost
within a bound, and says plainly when none reduces extraction measurably.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hf_carto.measure.comparison import control_of

__all__ = [
    "FrontierPoint",
    "parse_arm",
    "frontier_points",
    "frontier_panels",
    "plot_frontier",
    "recommend_policy",
    "PAPER_BAR",
]

#: The paper's claim to aim at: at least 40% fewer extractions at no more than 1% perplexity cost.
PAPER_BAR = {"extraction_reduction": 0.40, "perplexity_cost": 0.01}

#: Tableau colours without its grey, which marks the random controls.
_PANEL_COLORS = ("C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9")
_ARM = re.compile(r"^(?P<policy>.+)_(?P<kind>prune|downweight)(?P<fraction>[0-9][0-9.e+-]*)$")
_LEAKAGE = ("extraction_success", "mean_exposure", "contamination_recall", "planted_mia_auc")

FrontierPoint = dict  # one arm: see frontier_points


def parse_arm(arm: str) -> dict[str, Any] | None:
    """``{"policy", "kind", "fraction"}`` of a budget arm's name (``loss_std_prune0.05`` ->
    ``loss_std``, ``prune``, 0.05); the paper's per-quadrant rules (``gendatacarto``) are
    ``{"policy": "quadrants", "kind": "quadrants", "fraction": None}``; None for anything else
    (no_intervention, random at the quadrant rules' budget, the mapping run).

    Example:
        >>> parse_arm("combined_downweight0.02")
        {'policy': 'combined', 'kind': 'downweight', 'fraction': 0.02}
    """
    if arm == "gendatacarto":
        return {"policy": "quadrants", "kind": "quadrants", "fraction": None}
    match = _ARM.match(arm)
    if not match:
        return None
    try:
        fraction = float(match["fraction"])
    except ValueError:
        return None
    policy = "memorization_sweep" if match["policy"] == "gendatacarto" else match["policy"]
    return {"policy": policy, "kind": match["kind"], "fraction": fraction}


def _difference(comparisons: dict, arm: str, control: str, key: str) -> dict[str, Any] | None:
    result = comparisons.get(f"{arm} vs {control}", {}).get(key)
    if result is None:
        return None
    return {
        "difference": result["difference"],
        "interval": result.get("interval"),
        "verdict": result.get("verdict"),
        "units": result.get("unit"),
        "num_seeds": result.get("num_seeds"),
    }


def frontier_points(report: dict[str, Any]) -> list[FrontierPoint]:
    """One point per curated or random arm of ``report`` with a budget (and the quadrant rules and
    their random control), plus the no-intervention origin.

    Each point: ``arm``, ``family`` (the line it belongs to), ``policy``/``kind``/``fraction``
    (:func:`parse_arm`), ``fraction_pruned`` (mean over seeds), the mean of every leakage metric and
    of ``perplexity_change``, and under ``vs_none`` / ``vs_random`` the paired differences (with
    their 95% intervals and verdicts) against no intervention and against random at the same budget.
    """
    summary, comparisons = report["summary"], report["comparisons"]
    if "no_intervention" not in summary:
        raise ValueError("the report has no no_intervention arm: the frontier has no origin")
    families = {row["arm"]: row["family"] for row in report["rows"]}
    points = []
    for arm, entry in summary.items():
        if arm == "mapping_run":
            continue
        parsed = parse_arm(arm)
        if arm == "no_intervention":
            parsed = {"policy": "none", "kind": "none", "fraction": 0.0}
        elif arm == "random":
            parsed = {"policy": "random", "kind": "quadrants", "fraction": None}
        if parsed is None:
            continue
        point = {"arm": arm, "family": families.get(arm, arm), **parsed}
        point["fraction_pruned"] = entry["fraction_pruned"]["mean"]
        point["num_seeds"] = len(entry["seeds"])
        for key in (*_LEAKAGE, "perplexity_change"):
            value = entry.get(key, {}).get("mean", float("nan"))
            point[key] = value
        control = control_of(arm)
        point["vs_none"] = {
            k: d for k in (*_LEAKAGE, "perplexity") if (d := _difference(comparisons, arm, "no_intervention", k))
        }
        point["vs_random"] = (
            {k: d for k in (*_LEAKAGE, "perplexity") if (d := _difference(comparisons, arm, control, k))}
            if control
            else {}
        )
        points.append(point)
    return points


def _policy_of(point: FrontierPoint, settings: dict[str, Any]) -> dict[str, Any]:
    weight = 0.0
    if point["kind"] == "downweight":
        weight = settings.get("downweight_alpha")
        weight = settings.get("alpha") if weight is None else weight
    elif point["kind"] == "quadrants":
        weight = settings.get("alpha")
    return {"detector": point["policy"], "kind": point["kind"], "budget": point["fraction"], "weight": weight}


def _candidates(points: list[FrontierPoint], metric: str, max_perplexity_cost: float) -> list[dict[str, Any]]:
    """Every curated arm's reduction of ``metric`` against no intervention, its cost, and whether the
    paired 95% interval lies below zero (a reduction the seeds and the units support)."""
    candidates = []
    for point in points:
        if point["policy"] in ("none", "random"):
            continue
        difference = point["vs_none"].get(metric)
        cost = point["perplexity_change"]
        if difference is None or not math.isfinite(cost):
            continue
        interval = difference.get("interval")
        # "lower", or "lower than <control>" when the comparison names its control
        measured = interval is not None and interval[1] < 0 and str(difference.get("verdict")).startswith("lower")
        candidates.append(
            {
                "arm": point["arm"],
                "reduction": -difference["difference"],
                "interval": interval,
                "perplexity_change": cost,
                "within_cost": cost <= max_perplexity_cost,
                "measured": measured,
            }
        )
    return sorted(candidates, key=lambda c: -c["reduction"])


def _largest(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    eligible = [c for c in candidates if c["within_cost"] and c["measured"]]
    return max(eligible, key=lambda c: (c["reduction"], -c["perplexity_change"]), default=None)


def recommend_policy(report: dict[str, Any], *, max_perplexity_cost: float = 0.01) -> dict[str, Any]:
    """The curated arm with the largest mean extraction reduction against no intervention among
    those whose mean relative perplexity change is at most ``max_perplexity_cost``, counted only
    when its paired 95% interval against no intervention lies below zero (a reduction the seeds
    and canaries support). Random arms are controls, never recommended.

    Where no arm lowers extraction measurably (or nothing is extracted), the arm with the largest
    measured exposure reduction within the same cost is recommended instead, with ``basis``
    ``"exposure"``: exposure ranks each secret among its candidates, so it moves where extraction,
    all or nothing per canary, cannot yet show a change.

    Returns ``{"policy": {...} or None, "basis": "extraction" | "exposure" | None, "point": ...,
    "reason": str, "meets_paper_bar": bool, "relative_reduction": float, "candidates": [...],
    "exposure_candidates": [...]}``; ``relative_reduction`` is always the chosen arm's extraction
    reduction relative to no intervention; ``policy`` is None, with the reason, when no arm qualifies.
    """
    points = frontier_points(report)
    base = next(p for p in points if p["arm"] == "no_intervention")
    base_rate = base["extraction_success"]
    result: dict[str, Any] = {
        "max_perplexity_cost": max_perplexity_cost,
        "no_intervention_extraction": base_rate,
        "candidates": _candidates(points, "extraction_success", max_perplexity_cost),
        "exposure_candidates": _candidates(points, "mean_exposure", max_perplexity_cost),
    }
    cost = f"<= {max_perplexity_cost:.1%} perplexity cost"
    chosen = _largest(result["candidates"]) if base_rate > 0 else None
    basis = "extraction"
    if chosen is None:
        if base_rate == 0:
            why = "the no-intervention arm extracts nothing: no extraction reduction can be shown"
        else:
            best = result["candidates"][0]["arm"] if result["candidates"] else None
            why = f"no curated arm lowers extraction measurably at {cost}" + (
                f"; the largest mean reduction is {best}'s" if best else ""
            )
        chosen, basis = _largest(result["exposure_candidates"]), "exposure"
        if chosen is None:
            return {
                **result,
                "policy": None,
                "basis": None,
                "point": None,
                "meets_paper_bar": False,
                "relative_reduction": math.nan,
                "reason": f"{why}, nor exposure",
            }
        reason = f"{why}; {chosen['arm']}: the largest exposure reduction measured at {cost}"
    else:
        reason = f"{chosen['arm']}: the largest extraction reduction measured at {cost}"
    point = next(p for p in points if p["arm"] == chosen["arm"])
    relative = 1.0 - point["extraction_success"] / base_rate if base_rate > 0 else math.nan
    meets = (
        basis == "extraction"
        and relative >= PAPER_BAR["extraction_reduction"]
        and point["perplexity_change"] <= PAPER_BAR["perplexity_cost"]
    )
    return {
        **result,
        "policy": _policy_of(point, report.get("settings", {})),
        "basis": basis,
        "point": point,
        "relative_reduction": relative,
        "meets_paper_bar": meets,
        "reason": reason,
    }


def frontier_panels(points: Sequence[FrontierPoint]) -> list[dict[str, Any]]:
    """What :func:`plot_frontier` draws, panel by panel: one panel per curated family (a detector
    through its budgets, the quadrant rules, dedup), ``{"family", "points", "controls"}`` where
    ``points`` are the family's arms in budget order and ``controls`` the random arms at the same
    budgets that the report holds (drawn beside it, so each panel reads "below grey is better than
    chance"). A report with only random arms gets one panel per random family."""
    by_arm = {p["arm"]: p for p in points}
    families: dict[str, list[FrontierPoint]] = {}
    for point in points:
        if point["arm"] != "no_intervention":
            families.setdefault(point["family"], []).append(point)
    curated = {f: m for f, m in families.items() if any(p["policy"] != "random" for p in m)}
    panels = []
    for family, members in sorted((curated or families).items()):
        members = sorted(members, key=lambda p: (p["fraction"] is None, p["fraction"] or 0.0))
        controls = [by_arm[c] for p in members if (c := control_of(p["arm"])) in by_arm]
        panels.append({"family": family, "points": members, "controls": controls})
    return panels


def plot_frontier(
    points: Sequence[FrontierPoint],
    path: str | Path,
    *,
    metric: str = "extraction_success",
    label: str = "canary extraction",
    percent: bool = True,
) -> Path:
    """``metric`` against relative perplexity change: one panel per curated family
    (:func:`frontier_panels`), its line through its budgets from the no-intervention origin in
    colour, the random arms at the same budgets in grey; bars are the paired 95% intervals against
    no intervention (vertical: the metric, offset by the no-intervention mean; horizontal:
    perplexity). Panels share their axes, so lines compare across them."""
    from hf_carto.core.plots import new_figure, save_figure

    base = next(p for p in points if p["arm"] == "no_intervention")
    scale = 100.0 if percent else 1.0
    panels = frontier_panels(points)
    ncols = max(1, min(3, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = new_figure((3.4 * ncols, 2.6 * nrows + 0.7), nrows, ncols, sharex=True, sharey=True, squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(panels):
            ax.set_visible(False)
            continue
        panel = panels[index]
        _draw_line(ax, base, panel["controls"], metric, scale, color="grey", linestyle="--", label="random")
        _draw_line(
            ax,
            base,
            panel["points"],
            metric,
            scale,
            color=_PANEL_COLORS[index % len(_PANEL_COLORS)],
            linestyle="-",
            label="curated",
        )
        ax.axhline(scale * base[metric], color="grey", linewidth=0.8, linestyle=":")
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.axvline(100.0 * PAPER_BAR["perplexity_cost"], color="red", linewidth=0.8, linestyle=":")
        ax.set_title(panel["family"], fontsize=8)
        ax.tick_params(labelsize=7)
        if index == 0:
            ax.legend(fontsize=6, loc="best")
    fig.supxlabel("validation perplexity change against no intervention (%)", fontsize=8)
    fig.supylabel(label + (" (%)" if percent else ""), fontsize=8)
    fig.suptitle(
        f"{label} against perplexity cost; labels: budget; bars: paired 95% intervals vs no intervention; "
        "dotted: no intervention, red: +1% cost",
        fontsize=8,
    )
    return save_figure(fig, path)


def _draw_line(ax, base, members, metric, scale, *, color, linestyle, label) -> None:
    """One family through its budgets, starting at the no-intervention origin when it has several,
    each point labelled with its budget."""
    if not members:
        return
    budgeted = [p for p in members if p["fraction"] is not None]
    chain = ([base] if len(budgeted) > 1 else []) + list(members)
    xs = [100.0 * p["perplexity_change"] for p in chain]
    ys = [scale * p[metric] for p in chain]
    xerr = [[0.0, 0.0] if p is base else _err(p, "perplexity", 100.0 * p["perplexity_change"], 100.0) for p in chain]
    yerr = [[0.0, 0.0] if p is base else _err(p, metric, scale * p[metric], scale, origin=base[metric]) for p in chain]
    ax.errorbar(
        xs,
        ys,
        xerr=np.asarray(xerr).T,
        yerr=np.asarray(yerr).T,
        color=color,
        marker="o",
        linestyle=linestyle if len(chain) > 1 else "none",
        capsize=2,
        linewidth=1.0,
        elinewidth=0.7,
        markersize=3.5,
        label=label,
    )
    for point, x, y in zip(chain, xs, ys, strict=True):
        if point is not base and point["fraction"] is not None:
            ax.annotate(
                f"{100 * point['fraction']:.2g}%",
                (x, y),
                fontsize=6,
                color=color,
                xytext=(3, 3),
                textcoords="offset points",
            )


def _err(point: FrontierPoint, key: str, value: float, scale: float, origin: float | None = None) -> list[float]:
    """Distances below and above ``value`` of the paired interval against no intervention; the
    interval of a difference is placed at ``origin + difference`` (or at the value itself)."""
    diff = point["vs_none"].get(key)
    if not diff or diff.get("interval") is None:
        return [0.0, 0.0]
    low, high = diff["interval"]
    centre = diff["difference"]
    if origin is not None:
        low, high, centre = origin + low, origin + high, origin + centre
    low, high = scale * low, scale * high
    if origin is not None:  # a rate or an exposure cannot fall below 0: the bar stops there
        low = max(low, 0.0)
    return [max(0.0, value - low), max(0.0, high - value)]
