"""A scored dataset summed up: quadrant counts and means, thresholds, eps, weight totals, and,
when their columns are there, duplicated hotspots and leakage evidence per quadrant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from datasets import Dataset

from hf_carto.core.columns import (
    CURATION_COLUMNS,
    DIFFICULTY,
    DUP_EXACT_SIZE,
    DUP_NEAR_SIZE,
    KEEP,
    LEAK_COLUMNS,
    LOSS_WEIGHT,
    MEMORIZATION,
    QUADRANT,
    SAMPLING_WEIGHT,
    Quadrant,
    read_columns,
)
from hf_carto.score.duplicates import hotspot_duplication

if TYPE_CHECKING:
    from hf_carto.score.cartography import CartographyFit

__all__ = ["cartography_summary", "format_summary"]


def cartography_summary(dataset: Dataset, fit: CartographyFit | None = None) -> dict[str, Any]:
    """Dataset-level summary: quadrant counts and means, thresholds, eps, weight totals.

    Reads only the ``carto_*`` score and weight columns. ``fit`` adds the settings (eps, burn-in,
    thresholds); without it only what the columns say is reported. With the duplicate columns
    (:func:`hf_carto.add_duplicate_columns`), ``"hotspot_duplication"`` says how many hotspots are
    duplicated text and how many unique; with the leakage columns
    (:func:`hf_carto.add_leakage_columns`), ``"leakage"`` counts extractable rows and averages the
    evidence, overall and per quadrant.
    """
    if QUADRANT not in dataset.column_names:
        raise ValueError(f"the dataset has no '{QUADRANT}' column; run add_cartography first")
    cols = read_columns(dataset, [QUADRANT, DIFFICULTY, MEMORIZATION])
    q, d, m = cols[QUADRANT].astype(np.int64), cols[DIFFICULTY], cols[MEMORIZATION]
    n = int(q.size)
    quadrants = {}
    for quad in Quadrant:
        sel = q == quad
        count = int(sel.sum())
        quadrants[quad.name.lower()] = {
            "id": int(quad),
            "count": count,
            "fraction": count / n if n else 0.0,
            "mean_difficulty": float(d[sel].mean()) if count else None,
            "mean_memorization": float(m[sel].mean()) if count else None,
        }
    summary: dict[str, Any] = {
        "num_samples": n,
        "num_with_forget_events": int((m > 0).sum()),
        "max_memorization": float(m.max()) if n else None,
        "quadrants": quadrants,
    }
    if fit is not None:
        summary["settings"] = fit.to_dict()
    if all(c in dataset.column_names for c in CURATION_COLUMNS):
        cols = read_columns(dataset, list(CURATION_COLUMNS))
        lw, sw, keep = cols[LOSS_WEIGHT], cols[SAMPLING_WEIGHT], cols[KEEP]
        summary["weights"] = {
            "num_kept": int(keep.sum()),
            "num_removed": int((~keep).sum()),
            "loss_weight_total": float(lw.sum(dtype=np.float64)),
            "sampling_weight_total": float(sw.sum(dtype=np.float64)),
            "num_down_weighted": int(((lw > 0) & (lw < 1)).sum()),
            "num_up_sampled": int((sw > 1).sum()),
        }
    if all(c in dataset.column_names for c in (DUP_EXACT_SIZE, DUP_NEAR_SIZE)):
        summary["hotspot_duplication"] = hotspot_duplication(dataset)
    if all(c in dataset.column_names for c in LEAK_COLUMNS):
        from hf_carto.measure.leakage_columns import leakage_summary  # loads torch: only when the columns are there

        leakage = leakage_summary(dataset, by=QUADRANT)
        names = {str(int(quad)): quad.name.lower() for quad in Quadrant}
        leakage["by_quadrant"] = {names[key]: value for key, value in leakage.pop("by").items()}
        summary["leakage"] = leakage
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of :func:`cartography_summary`'s output."""
    lines = []
    settings = summary.get("settings")
    if settings:
        lines.append(
            f"snapshots T={settings['num_snapshots']}  burn-in T_e={settings['burn_in']}  "
            f"eps={settings['eps']:.6g} (from {settings['eps_spec']!r})"
        )
        lines.append(
            f"tau_d={settings['tau_d']:.6g} (alpha_d={settings['alpha_d']:g})  "
            f"tau_m={settings['tau_m']:.6g} (alpha_m={settings['alpha_m']:g})"
        )
    n = summary["num_samples"]
    max_m = summary["max_memorization"]
    lines.append(
        f"samples={n}  with a forget event={summary['num_with_forget_events']} "
        f"({summary['num_with_forget_events'] / max(n, 1):.1%})  max m={'-' if max_m is None else f'{max_m:.3g}'}"
    )
    if settings and settings.get("num_never_learned") is not None:
        never = settings["num_never_learned"]
        lines.append(
            f"never below eps={never} ({never / max(settings['num_samples'], 1):.1%}): never fitted, so m = 0 "
            "(hf_carto.score.scores.never_learned names them)"
        )
    header = f"{'quadrant':<20} {'count':>9} {'share':>7} {'mean d':>9} {'mean m':>8}"
    lines += [header, "-" * len(header)]
    for name, row in summary["quadrants"].items():
        md = "-" if row["mean_difficulty"] is None else f"{row['mean_difficulty']:.4g}"
        mm = "-" if row["mean_memorization"] is None else f"{row['mean_memorization']:.3g}"
        lines.append(f"{row['id']} {name:<18} {row['count']:>9} {row['fraction']:>7.1%} {md:>9} {mm:>8}")
    weights = summary.get("weights")
    if weights:
        lines.append(
            f"kept={weights['num_kept']} removed={weights['num_removed']} "
            f"down-weighted={weights['num_down_weighted']} up-sampled={weights['num_up_sampled']}  "
            f"loss-weight total={weights['loss_weight_total']:.6g}  "
            f"sampling-weight total={weights['sampling_weight_total']:.6g}"
        )
    duplication = summary.get("hotspot_duplication")
    if duplication:
        lines.append(
            f"hotspots={duplication['hotspots']}: exact duplicates={duplication['exact_duplicates']} "
            f"near duplicates={duplication['near_duplicates_only']} unique={duplication['unique']}"
        )
    leakage = summary.get("leakage")
    if leakage:
        from hf_carto.measure.leakage_columns import describe_k

        every = leakage["all"]
        lines.append(
            f"k-extractable rows ({describe_k(leakage['k_range'])}): {every['extractable']} of "
            f"{every['tested']} tested; "
            f"mean loss under the model {every['mean_loss']:.4g}"
        )
    return "\n".join(lines)
