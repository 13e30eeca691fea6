"""Results: one row per (seed, arm) from the evaluation reports, the summary over seeds, paired
comparisons and the reading, the cartography section per seed, and the trade-off points of
Figures 1 and 2."""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_carto.core.columns import (
    DUP_COLUMNS,
    LEAK_COLUMNS,
    PLANTED_NAMES,
    QUADRANT,
    TRUTH,
    Quadrant,
    loss_columns,
    read_columns,
)
from hf_carto.experiment.stage_training import MAPPING_FAMILY, PRUNED_FAMILY, QUADRANT_FAMILIES, RANDOM_PRUNED_FAMILY
from hf_carto.measure.comparison import budget_suffix, compare_arms, leakage_row, reading, summarize
from hf_carto.measure.frontier import frontier_points, parse_arm, plot_frontier, recommend_policy
from hf_carto.score.duplicates import hotspot_duplication
from hf_carto.score.scores import planted_vs_quadrant

MAPPING_RUN = "mapping_run"


def arm_rows(seed: int, reports: dict[str, dict], trained: dict[str, tuple[str, dict]], mapping: dict) -> list[dict]:
    """One row per evaluated model of a seed: leakage metrics, pruned weight, perplexity change
    against the seed's no-intervention arm, the optimizer steps it covers."""

    base = reports["no_intervention"]["validation"]["perplexity"]
    rows = []
    for name, report in reports.items():
        family, info = trained.get(name, (MAPPING_FAMILY, None))
        row = {"seed": seed, "arm": name, "family": family, **leakage_row(report)}
        row["fraction_pruned"] = info["budget"]["fraction_of_weight_pruned"] if info else 0.0
        row["perplexity_change"] = row["perplexity"] / base - 1.0
        row["steps"] = [info["start_step"], info["end_step"]] if info else [0, mapping["global_step"]]
        row["extraction_by_copies"] = report["canaries"].get("success_rate_by_copies", {})
        row["control_extraction"] = report["canaries"].get("control", {})
        row["exposure_methods"] = [c.get("exposure_method", "exact") for c in report["canaries"]["canaries"]]
        rows.append(row)
    return rows


def extraction_by_copies(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per arm, extraction rate by the number of whole copies a canary had, means over seeds."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for copies, rate in row["extraction_by_copies"].items():
            out.setdefault(row["arm"], {}).setdefault(copies, []).append(rate)
    return {arm: {c: float(np.mean(v)) for c, v in rates.items()} for arm, rates in out.items()}


def exposure_methods(rows: list[dict]) -> str:
    """One sentence: how many canary evaluations ranked the whole secret space, how many estimated."""
    methods = [m for row in rows for m in row["exposure_methods"]]
    estimated = sum(m != "exact" for m in methods)
    if not estimated:
        return f"exact for all {len(methods)} canary evaluations (the whole secret space ranked)"
    return (
        f"{estimated} of {len(methods)} canary evaluations use the skew-normal estimate (space above "
        "--exposure_max_exact; intervals in each arm's eval/report.json), the rest are exact"
    )


def planted_table(scored) -> dict[str, dict[str, int]]:
    """How many blocks of each planted kind landed in each quadrant."""

    cols = read_columns(scored, [TRUTH, QUADRANT])
    return planted_vs_quadrant(cols[TRUTH], cols[QUADRANT])


def cartography_section(scored, fit, cuts: list[dict]) -> dict:
    """The seed's scores at a glance: thresholds, quadrant counts, each pruning cut and how much of
    it the tie-break decided (``cuts``, from :func:`~.training.make_arms`), where the planted blocks
    landed."""

    quadrants = read_columns(scored, [QUADRANT])[QUADRANT]
    losses = read_columns(scored, loss_columns(scored.column_names))
    section = {
        # The regime: training-set perplexity at every snapshot (eval mode, every scored block), to set
        # beside the validation perplexity of the mapping run's final model.
        "train_perplexity_by_snapshot": [float(np.exp(np.mean(v, dtype=np.float64))) for v in losses.values()],
        "num_samples": fit.num_samples,
        "num_snapshots": fit.num_snapshots,
        "burn_in_snapshots": fit.burn_in,
        "eps": fit.eps,
        "tau_d": fit.tau_d,
        "tau_m": fit.tau_m,
        "num_with_forget_events": fit.num_with_forget_events,
        "quadrant_counts": {q.name.lower(): int((quadrants == q).sum()) for q in Quadrant},
        "budget_cuts": cuts,
        "planted_vs_quadrant": planted_table(scored),
    }
    evidence = row_evidence_section(scored)
    if evidence:
        section["row_evidence"] = evidence
    return section


def row_evidence_section(scored) -> dict | None:
    """With the ``carto_leak_*`` and ``carto_dup_*`` columns: how many hotspots are duplicated text,
    and the leakage evidence per quadrant and per planted kind (None without the columns)."""
    from hf_carto.measure.leakage_columns import leakage_summary

    if not all(c in scored.column_names for c in LEAK_COLUMNS + DUP_COLUMNS):
        return None

    by_quadrant = leakage_summary(scored, by=QUADRANT)
    section = {
        "hotspot_duplication": hotspot_duplication(scored),
        "leak_k_range": by_quadrant["k_range"],
        "leakage_by_quadrant": {Quadrant(int(q)).name.lower(): v for q, v in by_quadrant["by"].items()},
        "leakage_all": by_quadrant["all"],
    }
    if TRUTH in scored.column_names:
        by_truth = leakage_summary(scored, by=TRUTH)["by"]
        section["leakage_by_planted"] = {PLANTED_NAMES[int(t)]: v for t, v in by_truth.items()}
    return section


def build_report(rows: list[dict], settings: dict, num_blocks: int, counts: dict, cartography: dict) -> dict[str, Any]:
    """The run's report: every row, the summary over seeds, paired comparisons, the reading."""

    summary = summarize([r for r in rows if r["arm"] != MAPPING_RUN])
    summary[MAPPING_RUN] = summarize([r for r in rows if r["arm"] == MAPPING_RUN])[MAPPING_RUN]
    comparisons = compare_arms(rows)
    report = {
        "settings": settings,
        "num_blocks": num_blocks,
        "data_counts": counts,
        "rows": rows,
        "summary": summary,
        "comparisons": comparisons,
        "conclusion": reading(summary, comparisons),
        "extraction_by_copies": extraction_by_copies(rows),
        "extraction_floor": {
            "num_extracted": sum(r["control_extraction"].get("num_extracted", 0) for r in rows),
            "num_decoded": sum(r["control_extraction"].get("num_canaries", 0) for r in rows),
        },
        "exposure_methods": exposure_methods(rows),
        "cartography": cartography,
    }
    if has_frontier(report):
        report["recommendation"] = recommend_policy(report)
    return report


def has_frontier(report: dict) -> bool:
    """Whether ``report`` has budget arms to draw a frontier through."""

    return any((parse_arm(arm) or {}).get("fraction") for arm in report["summary"])


def write_frontier_figures(report: dict, out) -> list:
    """``frontier_extraction.png`` and ``frontier_exposure.png`` in ``out`` (none without budget arms)."""
    from pathlib import Path

    if not has_frontier(report):
        return []
    points = frontier_points(report)
    out = Path(out)
    return [
        plot_frontier(points, out / "frontier_extraction.png"),
        plot_frontier(
            points, out / "frontier_exposure.png", metric="mean_exposure", label="mean exposure (bits)", percent=False
        ),
    ]


def tradeoff_points(rows: list[dict]) -> list[dict]:
    """Points of Figures 1 and 2, one line per family; every budget line (pruning or
    down-weighting, per detector and random) starts at the no-intervention arm (nothing pruned) of
    the same seed. The per-quadrant rules prune a slightly different weight in each seed; their
    point sits at the mean over seeds."""

    budget_families = list(dict.fromkeys(r["family"] for r in rows if budget_suffix(r["arm"])))
    points = []
    for row in rows:
        if row["arm"] == MAPPING_RUN:
            continue
        points.append(dict(row, arm=row["family"]))
        if row["arm"] == "no_intervention":
            points += [dict(row, arm=family) for family in budget_families or (PRUNED_FAMILY, RANDOM_PRUNED_FAMILY)]
    for name in ("gendatacarto", "random"):
        chosen = [p for p in points if p["arm"] == QUADRANT_FAMILIES[name]]
        mean = float(np.mean([p["fraction_pruned"] for p in chosen])) if chosen else 0.0
        for p in chosen:
            p["fraction_pruned"] = mean
    return points
