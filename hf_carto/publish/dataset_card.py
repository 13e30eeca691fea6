"""The ``README.md`` of a curated dataset: Hub metadata, then the cartography summary and snippets.

The prose is the template ``templates/dataset_card.md``; this module fills it with the figures of
:func:`~hf_carto.publish.summary.cartography_summary`, formatted here so that the template holds
no number formats. The YAML metadata is a ``huggingface_hub.DatasetCardData``: the config and its
``data_files``, the features with the quadrant ``ClassLabel`` names (in the Hub's ``dataset_info``
form, which ``datasets.load_dataset`` reads back), license, tags, task and size category.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

__all__ = ["DATASET_CARD_TEMPLATE", "dataset_card_data", "render_dataset_card"]

#: The dataset card template, shipped inside the package (``hf_carto/publish/templates/``, package
#: data) like the model card's.
DATASET_CARD_TEMPLATE = importlib.resources.files(__package__) / "templates" / "dataset_card.md"

_SIZE_CATEGORIES = [(1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"), (1e7, "1M<n<10M")]


def _size_category(n: int) -> str:
    for limit, name in _SIZE_CATEGORIES:
        if n < limit:
            return name
    return "10M<n<100M" if n < 1e8 else "n>100M"


def dataset_card_data(
    dataset: Dataset,
    *,
    repo_id: str,
    data_files: str = "data/train-*.parquet",
    license: str | None = None,
    pretty_name: str | None = None,
):
    """The card's YAML metadata, a ``huggingface_hub.DatasetCardData``.

    The features go in through ``datasets``' own writer of card metadata
    (``DatasetInfosDict.to_dataset_card_data``, what ``Dataset.push_to_hub`` uses), so that they
    are in the form the Hub and ``load_dataset`` read: the ``ClassLabel`` names of the quadrants
    survive the round trip.
    """
    from datasets import DatasetInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    card_data = DatasetCardData(
        pretty_name=pretty_name or repo_id.split("/")[-1],
        license=license or "other",
        task_categories=["text-generation"],
        size_categories=[_size_category(len(dataset))],
        tags=["data-cartography", "memorization", "hf-carto"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}],
    )
    DatasetInfosDict({"default": DatasetInfo(features=dataset.features)}).to_dataset_card_data(card_data)
    return card_data


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _settings_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The "How it was scored" table: the fit's settings and, when known, how the losses were recorded."""
    settings = summary.get("settings")
    if not settings:
        return []
    rows = [
        ("snapshots T", f"{settings['num_snapshots']}"),
        ("burn-in T_e", f"{settings['burn_in']}"),
        ("eps (forget threshold)", f"{settings['eps']:.6g} (from `{settings['eps_spec']}`)"),
        ("tau_d", f"{settings['tau_d']:.6g} (alpha_d = {settings['alpha_d']:g})"),
        ("tau_m", f"{settings['tau_m']:.6g} (alpha_m = {settings['alpha_m']:g})"),
    ]
    recording = summary.get("recording")
    if recording:
        processes = recording.get("world_size")
        plural = "process" if processes == 1 else "processes"
        rows.append(("recording mode", f"{recording.get('mode')} ({processes} {plural})"))
        if recording.get("snapshot_rows"):
            total = recording.get("num_samples")
            of = f" of {total:,}" if total else ""
            rows.append(
                (
                    "snapshots cover",
                    f"a fixed seeded subset of {recording['snapshot_rows']:,}{of} training rows "
                    f"(seed {recording.get('snapshot_seed')}); the scores exist for those rows only",
                )
            )
    return rows


def _quadrant_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": row["id"],
            "name": name,
            "rows": f"{row['count']:,}",
            "share": f"{row['fraction']:.1%}",
            "difficulty": _number(row["mean_difficulty"], ".4g"),
            "memorization": _number(row["mean_memorization"], ".3g"),
        }
        for name, row in summary["quadrants"].items()
    ]


def _weight_figures(weights: dict[str, Any] | None) -> dict[str, str] | None:
    if not weights:
        return None
    return {
        "kept": f"{weights['num_kept']:,}",
        "removed": f"{weights['num_removed']:,}",
        "down_weighted": f"{weights['num_down_weighted']:,}",
        "loss_weight": f"{weights['loss_weight_total']:.6g}",
        "up_sampled": f"{weights['num_up_sampled']:,}",
        "sampling_weight": f"{weights['sampling_weight_total']:.6g}",
    }


def _duplication_figures(duplication: dict[str, int] | None) -> dict[str, str] | None:
    """How many hotspots are duplicated text and how many unique, each with its share of the hotspots."""
    if not duplication:
        return None
    n = duplication["hotspots"]

    def share(count: int) -> str:
        return f"{count:,} ({count / n:.1%})" if n else f"{count:,}"

    return {
        "hotspots": f"{n:,}",
        "exact": share(duplication["exact_duplicates"]),
        "near": share(duplication["near_duplicates_only"]),
        "unique": share(duplication["unique"]),
    }


def _leakage_figures(leakage: dict[str, Any] | None) -> dict[str, Any] | None:
    """The leakage evidence per quadrant and over all rows."""
    if not leakage:
        return None
    from hf_carto.measure.leakage_columns import describe_k

    rows = {**leakage.get("by_quadrant", {}), "all rows": leakage["all"]}
    return {
        "k": describe_k(leakage["k_range"]),
        "rows": [
            {
                "name": name,
                "rows": f"{row['rows']:,}",
                "extractable": f"{row['extractable']:,}",
                "tested": f"{row['tested']:,}",
                "matched": _number(row["mean_matched_tokens"], ".2f"),
                "loss": _number(row["mean_loss"], ".4g"),
                "min_k": _number(row["mean_min_k_plus_plus"], ".3g"),
            }
            for name, row in rows.items()
        ],
    }


def _coverage(summary: dict[str, Any]) -> dict[str, str | None]:
    """Which rows the scores cover, when the loss snapshots covered a subset of the training set only."""
    recording = summary.get("recording") or {}
    covered, source_rows = recording.get("snapshot_rows"), recording.get("num_samples")
    if not (covered and source_rows and covered < source_rows):
        return {"covered": None, "source_rows": None, "uncovered": None}
    return {"covered": f"{covered:,}", "source_rows": f"{source_rows:,}", "uncovered": f"{source_rows - covered:,}"}


def render_dataset_card(
    dataset: Dataset,
    *,
    repo_id: str,
    summary: dict[str, Any],
    data_files: str = "data/train-*.parquet",
    license: str | None = None,
    pretty_name: str | None = None,
    data_map: str | None = None,
    withheld_rows: int = 0,
    withheld_columns: Sequence[str] = (),
    renumbered: bool = False,
    template_path: str | os.PathLike | None = None,
) -> str:
    """The ``README.md`` of a curated dataset: YAML metadata, then the cartography summary and snippets.

    ``withheld_rows`` and ``withheld_columns`` are what the export left out (the canary rows and
    the columns that would say which rows were canaries); the card states them, so that a reader
    comparing row counts with the source knows where the difference went. ``renumbered`` says that
    ``sample_id`` was renumbered for publication.
    """
    import jinja2
    from huggingface_hub import DatasetCard

    template = Path(template_path) if template_path else DATASET_CARD_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"dataset card template {template} not found; pass template_path")
    card_data = dataset_card_data(
        dataset, repo_id=repo_id, data_files=data_files, license=license, pretty_name=pretty_name
    )
    # trim_blocks and lstrip_blocks: a line holding only a block tag leaves nothing in the card, so
    # that the template can put each condition on a line of its own.
    environment = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    content = environment.from_string(template.read_text(encoding="utf-8")).render(
        card_data=card_data.to_yaml(),
        pretty_name=card_data.pretty_name,
        repo_id=repo_id,
        **_coverage(summary),
        withheld_rows=f"{withheld_rows:,}" if withheld_rows else None,
        total_rows=f"{len(dataset) + withheld_rows:,}",
        withheld_columns=", ".join(f"`{c}`" for c in withheld_columns),
        renumbered=renumbered,
        settings=_settings_rows(summary),
        quadrants=_quadrant_rows(summary),
        forgotten=f"{summary['num_with_forget_events']:,}",
        num_samples=f"{summary['num_samples']:,}",
        weights=_weight_figures(summary.get("weights")),
        duplication=_duplication_figures(summary.get("hotspot_duplication")),
        leakage=_leakage_figures(summary.get("leakage")),
        data_map=data_map,
    )
    return str(DatasetCard(content))
