"""How well each hotspot detector finds the planted blocks of one seed, and the figures of it.

Every registered detector's scores of the seed's blocks (whatever ``--detectors`` trained arms for),
as the scoring stage saved them: the section tells which ranking a budget should use."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hf_carto.core.columns import CANARY_ID, SAMPLE_ID, TRUTH, loss_columns, read_columns, score_column
from hf_carto.core.plots import plot_precision_recall, plot_sensitivity
from hf_carto.experiment.arguments import CartoArguments
from hf_carto.experiment.stage_training import detector_scored
from hf_carto.measure.detection_quality import (
    TARGETS,
    dataset_detection_quality,
    memorization_sensitivity,
    memorization_tie_breaks,
    planted_targets,
    precision_recall_curve,
)
from hf_carto.score.detectors import DETECTORS

# Figures of each seed, in its folder.
PR_FIGURE = "detection_pr_{target}.png"
SENSITIVITY_FIGURE = "memorization_sensitivity.png"


def detection_section(scored, fit, carto: CartoArguments, seed: int, out: Path | None = None) -> dict:
    """Average precision and precision/recall at every budget of each detector for both targets
    (:data:`hf_carto.measure.detection_quality.TARGETS`), how much of each memorization cut the difficulty
    tie-break decided, and memorization's sensitivity to eps and to the snapshot density.

    With ``out`` (the run folder), the precision-recall figure of each target and the sensitivity
    figure are written in its ``seed<seed>`` folder; the section names them relative to ``out``.
    """

    # every detector's column, as score_blocks saved it (computed here only for blocks scored elsewhere)
    with_scores = detector_scored(scored, carto, seed, fit, names=list(DETECTORS))
    fractions = sorted(set(carto.prune_fractions) | set(carto.downweight_fractions))
    names = loss_columns(scored.column_names)
    cols = read_columns(with_scores, [*names, SAMPLE_ID, TRUTH, CANARY_ID])
    losses = np.column_stack([cols[c].astype(np.float64) for c in names])
    ids = cols[SAMPLE_ID]
    targets = planted_targets(cols[TRUTH], cols[CANARY_ID])
    # A run whose epochs do not split into equal snapshot counts is varied in eps only.
    per_epoch = carto.snapshots_per_epoch if losses.shape[1] % carto.snapshots_per_epoch == 0 else 1
    section = {
        "detectors": list(DETECTORS),
        "fractions": fractions,
        "targets": dataset_detection_quality(with_scores, fractions),
        "target_descriptions": TARGETS,
        "memorization_tie_breaks": memorization_tie_breaks(
            losses, fractions, eps=fit.eps, burn_in=fit.burn_in, sample_ids=ids
        ),
        "sensitivity": memorization_sensitivity(
            losses, targets["planted"], burn_in=fit.burn_in, snapshots_per_epoch=per_epoch, sample_ids=ids
        ),
        "figures": [],
    }
    if out is not None:
        paths = _figures(section, with_scores, targets, ids, seed, Path(out) / f"seed{seed}")
        section["figures"] = [str(p.relative_to(out)) for p in paths]
    return section


def _figures(section: dict, with_scores, targets: dict, ids, seed: int, figure_dir: Path) -> list[Path]:

    scores = read_columns(with_scores, [score_column(n) for n in section["detectors"]])
    paths = []
    for target, positives in targets.items():
        entry = section["targets"][target]
        if entry["num_positive"] == 0:
            continue
        curves = {
            n: precision_recall_curve(scores[score_column(n)], positives, sample_ids=ids) for n in section["detectors"]
        }
        aps = {n: d["average_precision"] for n, d in entry["detectors"].items()}
        paths.append(
            plot_precision_recall(
                curves,
                figure_dir / PR_FIGURE.format(target=target),
                base_rate=entry["base_rate"],
                average_precision=aps,
                budgets=tuple(section["fractions"]),
                title=f"{section['target_descriptions'][target].capitalize()} (seed {seed})",
            )
        )
    title = f"Memorization: sensitivity (seed {seed})"
    paths.append(plot_sensitivity(section["sensitivity"], figure_dir / SENSITIVITY_FIGURE, title=title))
    return paths
