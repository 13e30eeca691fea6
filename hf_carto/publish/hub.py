"""The Hub repository layout of a curated dataset, written locally first.

:func:`export_hub_layout` writes what a Hugging Face dataset repository holds (parquet shards
under ``data/`` and a ``README.md`` dataset card whose YAML declares the config, the features with
the quadrant ``ClassLabel`` names, license, tags, task and size category), so that a failed or
interrupted push loses nothing and the folder itself loads with ``datasets.load_dataset(folder)``.

Canary secrets never leave the machine by default. Canaries are test probes inserted into the
training data, not part of it, so the export withholds every row that is marked as one
(``is_canary``, ``carto_canary_id >= 0``, a non-empty ``secret``) or whose text contains one of
the ``secrets`` passed in, and drops the columns that would say which rows were canaries
(``secret``, ``carto_canary_id``, ``is_canary``, and the ``truth``/``group`` ground truth of the
generated corpus). ``include_private_columns=True`` keeps all of it, for a private repository.

A public export also renumbers ``sample_id`` densely in the published order (gaps would show where
the withheld rows were; the mapping to the original ids is written beside the export, in
``EXPORT.private/``, never inside it) and draws its data map from the published rows only.

Nothing the tool did not write is ever deleted: an export replaces its folder as a whole, so it
refuses a non-empty folder that does not carry the marker of an earlier export
(``.hf_carto_export``), and a folder that is, holds or lies inside the source dataset's folder.
Local artefacts that hold canaries carry a ``PRIVATE.md`` (:func:`mark_private`), and
:func:`push_curated_dataset` refuses a folder holding one, a canary registry or a column that marks
canary or planted rows, unless ``allow_private=True``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import math
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from datasets import Dataset

from hf_carto.core.atomic import atomic_folder
from hf_carto.core.columns import (
    CANARY_ID,
    DIFFICULTY,
    DUP_EXACT_ID,
    DUP_EXACT_SIZE,
    DUP_NEAR_ID,
    DUP_NEAR_SIZE,
    IS_CANARY,
    KEEP,
    LOSS_WEIGHT,
    MEMORIZATION,
    QUADRANT,
    SAMPLE_ID,
    SAMPLING_WEIGHT,
    TRUTH,
)
from hf_carto.score.cartography import cartography_summary

__all__ = [
    "EXPORT_MARKER",
    "PRIVATE_COLUMNS",
    "PRIVATE_NOTE",
    "PushResult",
    "dataset_card",
    "check_export_folder",
    "check_push_source",
    "export_hub_layout",
    "mark_private",
    "private_columns_of",
    "private_contents",
    "push_curated_dataset",
    "push_model",
    "render_model_card",
    "repo_name",
]

#: The model card template, shipped inside the package (``hf_carto/publish/templates/``, package data) so
#: that an installed wheel renders cards too: a ``Path`` for a package on disk, a ``Traversable``
#: for one imported from a zip. The repository's ``model_cards/curated_model.md`` is its documented
#: copy; tests/test_packaging.py keeps the two identical.
MODEL_CARD_TEMPLATE = importlib.resources.files(__package__) / "templates" / "curated_model.md"

logger = logging.getLogger(__name__)

#: Columns left out of an export unless ``include_private_columns=True``: each says which rows were
#: canaries or otherwise planted (the secrets, the registry ids and flags, the generated corpus's
#: ground truth, duplicate groups and repetition counts).
PRIVATE_COLUMNS = ("secret", CANARY_ID, IS_CANARY, TRUTH, "group", "repetitions")
#: Of those, the ones private only beside ``truth`` (the generated corpus's own columns): elsewhere
#: ``group`` or ``repetitions`` is an ordinary column of the user's and is published.
GENERATED_ONLY_COLUMNS = ("group", "repetitions")
#: The file an export writes into its folder, so that a later export may replace the folder.
EXPORT_MARKER = ".hf_carto_export"
#: The file that marks a local folder as not to be published.
PRIVATE_NOTE = "PRIVATE.md"
_REGISTRY_FILE = re.compile(r"canar", re.IGNORECASE)
# Files the Hub's loaders read as data; only these can hold rows.
_DATA_SUFFIXES = (".parquet", ".arrow", ".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt")
_SIZE_CATEGORIES = [(1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"), (1e7, "1M<n<10M")]


def _size_category(n: int) -> str:
    for limit, name in _SIZE_CATEGORIES:
        if n < limit:
            return name
    return "10M<n<100M" if n < 1e8 else "n>100M"


def _duplication_lines(duplication: dict[str, int] | None) -> list[str]:
    if not duplication:
        return []
    n = duplication["hotspots"]

    def share(count: int) -> str:
        return f"{count:,} ({count / n:.1%})" if n else f"{count:,}"

    return [
        "## Duplicated or unique",
        "",
        "Memorization hotspots made of text that occurs several times are a deduplication problem; unique ones "
        "are memorization proper. Cluster columns: `carto_dup_exact_*` (identical content) and "
        "`carto_dup_near_*` (MinHash near-duplicates).",
        "",
        "| hotspot rows | exact duplicates | near duplicates only | unique |",
        "|---:|---:|---:|---:|",
        f"| {n:,} | {share(duplication['exact_duplicates'])} | {share(duplication['near_duplicates_only'])} | "
        f"{share(duplication['unique'])} |",
        "",
    ]


def _leakage_lines(leakage: dict[str, Any] | None) -> list[str]:
    if not leakage:
        return []

    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    from hf_carto.measure.leakage_columns import describe_k

    lines = [
        "## Leakage evidence",
        "",
        f"Each row's own evidence under the model trained on these rows (`carto_leak_*`): whether greedy "
        "decoding from its first k tokens reproduces its next k exactly, how many of them it reproduces from "
        "the first, the row's mean token loss and its min-k%++ (higher = more member-like). "
        f"Here {describe_k(leakage['k_range'])}; `carto_leak_k` is 0 where a row was too short to test.",
        "",
        "| quadrant | rows | k-extractable | mean matched tokens | mean loss | mean min-k%++ |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = {**leakage.get("by_quadrant", {}), "all rows": leakage["all"]}
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['rows']:,} | {row['extractable']:,} of {row['tested']:,} | "
            f"{cell(row['mean_matched_tokens'], '.2f')} | {cell(row['mean_loss'], '.4g')} | "
            f"{cell(row['mean_min_k_plus_plus'], '.3g')} |"
        )
    lines += [
        "",
        "```python",
        'leaked = ds.filter(lambda e: e, input_columns="carto_leak_extractable")',
        "```",
        "",
    ]
    return lines


def dataset_card(
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
) -> str:
    """The ``README.md`` of a curated dataset: YAML metadata, then the cartography summary and snippets.

    ``withheld_rows`` and ``withheld_columns`` are what the export left out (the canary rows and
    the columns that would say which rows were canaries); the card states them, so that a reader
    comparing row counts with the source knows where the difference went. ``renumbered`` says that
    ``sample_id`` was renumbered for publication.
    """
    metadata: dict[str, Any] = {
        "pretty_name": pretty_name or repo_id.split("/")[-1],
        "license": license or "other",
        "task_categories": ["text-generation"],
        "tags": ["data-cartography", "memorization", "hf-carto"],
        "size_categories": [_size_category(len(dataset))],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}],
        "dataset_info": {"features": dataset.features._to_yaml_list()},
    }
    lines = ["---", yaml.safe_dump(metadata, sort_keys=False).rstrip(), "---", ""]
    lines += [f"# {metadata['pretty_name']}", ""]
    labelled = (
        "labelled by Generative Data Cartography: each sample's difficulty (mean early loss) and "
        "memorization (fraction of snapshot transitions in which it was forgotten after being fitted), its "
        "quadrant, and the intervention weights for continued training."
    )
    recording = summary.get("recording") or {}
    covered, source_rows = recording.get("snapshot_rows"), recording.get("num_samples")
    if covered and source_rows and covered < source_rows:  # scores exist for a subset only: say which rows these are
        rows, other = (
            f"The {covered:,} rows of the {source_rows:,}-row source training set that its loss snapshots covered (a "
            f"fixed seeded subset), ",
            f" The other {source_rows - covered:,} rows have no scores and are not in this dataset.",
        )
    else:
        rows, other = "", ""
    if withheld_rows:
        total = len(dataset) + withheld_rows
        lines += [
            f"{rows or 'The rows of the source training set, '}{labelled} **{withheld_rows:,} of {total:,} rows are "
            "withheld**: the canary rows, which hold test sequences with random secrets inserted into the training "
            "data to measure memorization; publishing them would publish the secrets. No other row "
            f"{'of these ' if rows else ''}is left out here; `carto_keep` says which rows the curated training "
            f"uses.{other}",
            "",
        ]
    else:
        lines += [
            f"{rows or 'Every row of the source training set, '}{labelled} No row {'of these ' if rows else ''}is "
            f"dropped here; `carto_keep` says which rows the curated training uses.{other}",
            "",
        ]
    if withheld_columns:
        names = ", ".join(f"`{c}`" for c in withheld_columns)
        lines += [
            f"Columns left out (they would say which rows were canaries or otherwise planted): {names}.",
            "",
        ]
    if renumbered:
        lines += [
            "`sample_id` is renumbered 0 to n-1 in the published order, so that its gaps do not show where the "
            "withheld rows were; the mapping to the original ids stays with the publisher.",
            "",
        ]
    settings = summary.get("settings")
    if settings:
        lines += [
            "## How it was scored",
            "",
            "| setting | value |",
            "|---|---|",
            f"| snapshots T | {settings['num_snapshots']} |",
            f"| burn-in T_e | {settings['burn_in']} |",
            f"| eps (forget threshold) | {settings['eps']:.6g} (from `{settings['eps_spec']}`) |",
            f"| tau_d | {settings['tau_d']:.6g} (alpha_d = {settings['alpha_d']:g}) |",
            f"| tau_m | {settings['tau_m']:.6g} (alpha_m = {settings['alpha_m']:g}) |",
        ]
        recording = summary.get("recording")
        if recording:
            processes = recording.get("world_size")
            plural = "process" if processes == 1 else "processes"
            lines.append(f"| recording mode | {recording.get('mode')} ({processes} {plural}) |")
            if recording.get("snapshot_rows"):
                total = recording.get("num_samples")
                of = f" of {total:,}" if total else ""
                lines.append(
                    f"| snapshots cover | a fixed seeded subset of {recording['snapshot_rows']:,}{of} training rows "
                    f"(seed {recording.get('snapshot_seed')}); the scores exist for those rows only |"
                )
        lines.append("")
    lines += [
        "## Quadrants",
        "",
        "| id | quadrant | rows | share | mean difficulty | mean memorization |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for name, row in summary["quadrants"].items():
        md = "-" if row["mean_difficulty"] is None else f"{row['mean_difficulty']:.4g}"
        mm = "-" if row["mean_memorization"] is None else f"{row['mean_memorization']:.3g}"
        lines.append(f"| {row['id']} | {name} | {row['count']:,} | {row['fraction']:.1%} | {md} | {mm} |")
    lines += [
        "",
        f"{summary['num_with_forget_events']:,} of {summary['num_samples']:,} rows were forgotten at least once.",
        "",
    ]
    weights = summary.get("weights")
    if weights:
        lines += [
            "## Interventions",
            "",
            f"- kept: {weights['num_kept']:,}; removed (`carto_keep == False`): {weights['num_removed']:,}",
            f"- down-weighted (0 < `carto_loss_weight` < 1): {weights['num_down_weighted']:,}; total loss weight "
            f"{weights['loss_weight_total']:.6g}",
            f"- up-sampled (`carto_sampling_weight` > 1): {weights['num_up_sampled']:,}; total sampling weight "
            f"{weights['sampling_weight_total']:.6g}",
            "",
        ]
    lines += _duplication_lines(summary.get("hotspot_duplication"))
    lines += _leakage_lines(summary.get("leakage"))
    if data_map:
        lines += ["## Data map", "", f"![data map]({data_map})", ""]
        if withheld_rows:
            lines += ["The map shows the published rows only.", ""]
    lines += [
        "## Use",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{repo_id}", split="train")',
        'curated = ds.filter(lambda keep: keep, input_columns="carto_keep")',
        "```",
        "",
        "Continue training with the weights:",
        "",
        "```python",
        "from hf_carto import CartoTrainer",
        "",
        "trainer = CartoTrainer(model=model, args=args, train_dataset=ds, data_collator=collator)",
        "trainer.train()",
        "```",
    ]
    return "\n".join(lines) + "\n"


def _withhold_canaries(dataset: Dataset, secrets: Sequence[str]) -> tuple[Dataset, int]:
    """The dataset without its canary rows, and how many rows were withheld."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    withhold = np.zeros(len(dataset), dtype=bool)
    if IS_CANARY in table.column_names:
        withhold |= table.column(IS_CANARY).to_numpy(zero_copy_only=False).astype(bool)
    if CANARY_ID in table.column_names:
        withhold |= table.column(CANARY_ID).to_numpy(zero_copy_only=False) >= 0
    if "secret" in table.column_names:
        withhold |= pc.greater(pc.utf8_length(table.column("secret")), 0).to_numpy(zero_copy_only=False)
    text_columns = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    for secret in filter(None, secrets):
        for name in text_columns:
            withhold |= pc.fill_null(pc.match_substring(table.column(name), secret), False).to_numpy(
                zero_copy_only=False
            )
    withheld = int(withhold.sum())
    if withheld:
        logger.info("withholding %d canary rows from the export", withheld)
        # The row indices stay in memory (8 bytes a row) rather than in a cache file beside the source.
        dataset = dataset.select(np.flatnonzero(~withhold), keep_in_memory=True)
    return dataset, withheld


def mark_private(folder: str | os.PathLike, holds: str) -> Path:
    """Write ``folder/PRIVATE.md``: the folder ``holds`` canaries or secrets and must not be
    published (:func:`push_curated_dataset` refuses it unless told otherwise)."""
    path = Path(folder) / PRIVATE_NOTE
    path.write_text(
        "# Private: do not publish\n\n"
        f"This folder holds {holds}. Publishing it would publish the secrets that measure memorization, "
        "or say which rows were planted. `hf-carto push` refuses a folder holding this file unless given "
        "`--allow-private`.\n\n"
        "To publish the data, push the scored dataset: the export withholds the canary rows, leaves out the "
        f"columns that mark planted rows ({', '.join(PRIVATE_COLUMNS)}) and renumbers `sample_id`.\n"
    )
    return path


def private_columns_of(names: Sequence[str]) -> list[str]:
    """Which of ``names`` are private: :data:`PRIVATE_COLUMNS`, the generated corpus's own ones only
    beside its ``truth`` column."""
    generated = TRUTH in names
    return [c for c in PRIVATE_COLUMNS if c in names and (generated or c not in GENERATED_ONLY_COLUMNS)]


def _column_names(path: Path) -> list[str] | None:
    """The column names of a data file (parquet, Arrow, or the header / keys of a text format);
    None when unreadable. Text formats are read in their first megabyte only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_schema(path).names
        if suffix == ".arrow":
            with pa.memory_map(str(path)) as source:
                return pa.ipc.open_stream(source).schema.names
        head = path.read_bytes()[: 1 << 20].decode("utf-8", errors="replace")
    except (OSError, pa.ArrowInvalid):
        return None
    if suffix in (".csv", ".tsv"):
        first = head.splitlines()[0] if head else ""
        return [c.strip().strip('"') for c in re.split(r"[,\t]", first)]
    # JSON and JSON lines: every quoted key; plain text: every word.
    return re.findall(r'"([^"\\]{1,64})"\s*:', head) + (head.split() if suffix == ".txt" else [])


def private_contents(folder: str | os.PathLike) -> list[str]:
    """What in ``folder`` must not be published: a ``PRIVATE.md``, a canary registry
    (``canaries.json``, ``control_canaries.json``), a data file with a column that marks canary or
    planted rows (:data:`PRIVATE_COLUMNS`), or a data file that cannot be read to check. Each entry
    names the file, relative to ``folder``, and why."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.name.lower() == PRIVATE_NOTE.lower():
            found.append(f"{rel} (marks the folder private)")
        elif _REGISTRY_FILE.search(path.name) and path.is_file():
            found.append(f"{rel} (a canary registry, by its name)")
        elif path.suffix.lower() in _DATA_SUFFIXES and path.is_file():
            names = _column_names(path)
            if names is None:
                found.append(f"{rel} (unreadable, so it cannot be checked for canary rows)")
                continue
            marked = private_columns_of(names)
            if marked:
                found.append(f"{rel} (its columns {marked} mark canary or planted rows)")
    return found


def _is_legacy_export(folder: Path) -> bool:
    """An export written before the marker existed: only README.md, data_map.png and data/ shards."""
    entries = {p.name: p for p in folder.iterdir()}
    if "README.md" not in entries or not entries.get("data", folder / "-").is_dir():
        return False
    if set(entries) - {"README.md", "data_map.png", "data"}:
        return False
    if "- hf-carto" not in entries["README.md"].read_text(errors="replace"):
        return False  # a Hub layout of the user's own, not a card this tool wrote
    return all(
        p.is_file() and re.fullmatch(r"train-\d{5}-of-\d{5}\.parquet", p.name) for p in entries["data"].iterdir()
    )


def check_export_folder(folder: str | os.PathLike, sources: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse an export folder whose replacement could delete what the tool did not write.

    Raises:
        ValueError: ``folder`` is, contains or lies inside one of ``sources``.
        FileExistsError: ``folder`` is a file, or a non-empty folder that is not an earlier export.
    """
    folder = Path(folder)
    target = folder.resolve()
    if target == target.parent or folder.name in ("", ".", ".."):
        raise ValueError(f"the export folder {str(folder)!r} names no folder of its own; give a new folder's path")
    for source in sources:
        resolved = Path(source).resolve()
        if target == resolved or target in resolved.parents:
            relation = "is" if target == resolved else "contains"
            raise ValueError(
                f"the export folder {folder} {relation} the source {source}: an export replaces its folder as a "
                "whole and would delete the source; choose a folder outside it"
            )
        if resolved in target.parents:
            raise ValueError(
                f"the export folder {folder} lies inside the source folder {source}; choose a folder outside it"
            )
    if not folder.exists():
        return
    if not folder.is_dir():
        raise FileExistsError(f"{folder} is a file, not an export folder; choose another --export-dir")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries or (folder / EXPORT_MARKER).is_file() or _is_legacy_export(folder):
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise FileExistsError(
        f"{folder} holds {len(entries)} entries that are not an earlier export ({shown}); an export replaces "
        "its folder as a whole, so it only writes into a new or empty folder or over an earlier export; "
        "choose another folder"
    )


# What a run folder of the experiment or of the demo holds at its top, by which it is recognised.
_RUN_FOLDER_FILES = (".hf_carto_run", "run_config.json", "run_config.pending.json", "report.json", "stage_times.json")


def check_push_source(source: str | os.PathLike) -> None:
    """Refuse to export a run folder of the experiment or of the demo: it is not a dataset, and it
    holds private material (its ``PRIVATE.md``, its canary registry). Read as a dataset, it would be
    every parquet file under it, of several schemas; the message names the private files and the
    folder to push instead: the export or the scored dataset the run wrote.

    Raises:
        ValueError: naming the private files and the folder to push instead.
    """
    source = Path(source)
    if not source.is_dir() or (source / "state.json").exists() or (source / "README.md").exists():
        return  # a file, a saved dataset (its export withholds the canaries) or a Hub layout (checked on push)
    if not any((source / name).exists() for name in _RUN_FOLDER_FILES):
        return
    private = sorted(
        p.name
        for p in source.iterdir()
        if p.is_file() and (p.name.lower() == PRIVATE_NOTE.lower() or _REGISTRY_FILE.search(p.name))
    )
    exports = sorted(p for p in source.iterdir() if (p / EXPORT_MARKER).is_file() and not private_contents(p))
    datasets = sorted(p for p in source.iterdir() if (p / "state.json").is_file())
    if exports:
        instead = f"push its export {exports[0]} (canary rows withheld) instead"
    elif datasets:
        instead = f"push its scored dataset {datasets[0]} instead (the export withholds the canary rows)"
    else:
        instead = "push the scored dataset a finished run writes instead (the export withholds the canary rows)"
    held = (
        f", and holds private material ({', '.join(private)}: the canary secrets and which rows were planted)"
        if private
        else ""
    )
    raise ValueError(f"{source} is a run folder, not a dataset{held}; it is never pushed: {instead}")


def _renumber_sample_ids(dataset: Dataset, scratch: Path) -> tuple[Dataset, np.ndarray | None]:
    """``sample_id`` made ``0..n-1`` in row order; returns the original ids (None when unchanged).
    The renumbered copy is written into ``scratch``."""
    if SAMPLE_ID not in dataset.column_names:
        return dataset, None
    original = np.asarray(dataset.with_format("numpy")[SAMPLE_ID])
    if np.array_equal(original, np.arange(len(dataset))):
        return dataset, None
    renumbered = dataset.map(
        lambda batch, indices: {SAMPLE_ID: indices},
        with_indices=True,
        batched=True,
        input_columns=[SAMPLE_ID],
        features=dataset.features,
        cache_file_name=str(scratch / "renumbered.arrow"),
        desc="renumbering sample_id",
    )
    return renumbered, original


def _published_clusters(dataset: Dataset) -> Dataset:
    """Duplicate clusters restated over the published rows: a cluster's id becomes the smallest
    published ``sample_id`` in it and its size counts the published rows only, so that neither
    an original id nor a withheld copy shows through."""
    pairs = [
        (i, n) for i, n in ((DUP_EXACT_ID, DUP_EXACT_SIZE), (DUP_NEAR_ID, DUP_NEAR_SIZE)) if i in dataset.column_names
    ]
    if not pairs or len(dataset) == 0:
        return dataset
    ids = (
        np.asarray(dataset.with_format("numpy")[SAMPLE_ID], dtype=np.int64)
        if SAMPLE_ID in dataset.column_names
        else np.arange(len(dataset), dtype=np.int64)
    )
    order = dataset.column_names
    for id_column, size_column in pairs:
        old = np.asarray(dataset.with_format("numpy")[id_column])
        groups, inverse = np.unique(old, return_inverse=True)
        smallest = np.full(groups.size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(smallest, inverse, ids)
        sizes = np.bincount(inverse, minlength=groups.size)
        features = {id_column: dataset.features[id_column], size_column: dataset.features[size_column]}
        dataset = dataset.remove_columns([id_column, size_column])
        dataset = dataset.add_column(id_column, smallest[inverse].astype(old.dtype), feature=features[id_column])
        dataset = dataset.add_column(size_column, sizes[inverse], feature=features[size_column])
    return dataset.select_columns(order)


def _mapping_dir(output_dir: Path) -> Path:
    return output_dir.with_name(output_dir.name + ".private")


def _remove_id_mapping(output_dir: Path) -> None:
    """Remove the id mapping an earlier export left beside ``output_dir`` (recognised by its PRIVATE.md)."""
    private_dir = _mapping_dir(output_dir)
    if not private_dir.exists():
        return
    if any(private_dir.iterdir()) and not (private_dir / PRIVATE_NOTE).exists():
        raise FileExistsError(f"{private_dir} exists and was not written by an export; move it away")
    shutil.rmtree(private_dir)


def _write_id_mapping(output_dir: Path, original: np.ndarray) -> Path:
    """The published-to-original ``sample_id`` mapping, kept beside the export (never pushed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    private_dir = _mapping_dir(output_dir)
    with atomic_folder(private_dir, overwrite=True) as staging:
        table = pa.table({SAMPLE_ID: np.arange(len(original)), f"source_{SAMPLE_ID}": original})
        pq.write_table(table, staging / "sample_ids.parquet")
        mark_private(staging, f"the mapping from the published `sample_id`s of {output_dir.name} to the original ones")
    return private_dir


def _draw_data_map(dataset: Dataset, fit, summary: dict[str, Any], path: Path) -> Path:
    """The data map of the published rows only, with nothing marked."""
    from hf_carto.core.columns import read_columns
    from hf_carto.core.plots import plot_data_map

    settings = summary.get("settings") or {}
    cols = read_columns(dataset, [DIFFICULTY, MEMORIZATION, QUADRANT])
    return plot_data_map(
        cols[DIFFICULTY],
        cols[MEMORIZATION],
        cols[QUADRANT],
        path,
        tau_d=fit.tau_d if fit is not None else settings.get("tau_d"),
        tau_m=fit.tau_m if fit is not None else settings.get("tau_m"),
        num_snapshots=fit.num_snapshots if fit is not None else settings.get("num_snapshots"),
        title="Data map of the published rows",
    )


def export_hub_layout(
    dataset: Dataset,
    output_dir: str | os.PathLike,
    *,
    repo_id: str,
    fit=None,
    summary: dict[str, Any] | None = None,
    data_map: bool | str | os.PathLike | None = None,
    license: str | None = None,
    pretty_name: str | None = None,
    max_shard_rows: int = 500_000,
    include_private_columns: bool = False,
    secrets: Sequence[str] = (),
    recording: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``data/train-XXXXX-of-YYYYY.parquet`` and ``README.md`` (and the data map) atomically.

    Args:
        data_map (`bool` or path, *optional*): `True` draws the data map of the published rows
            (nothing marked, no withheld row). A ready image (a path) is copied only with
            ``include_private_columns=True``: one drawn from the source shows the withheld rows.
        include_private_columns (`bool`, *optional*, defaults to `False`): keep the canary rows,
            the private columns and the original ``sample_id``s, for a private repository; the
            export then carries a ``PRIVATE.md`` and pushing it needs ``allow_private=True``.
        overwrite (`bool`, *optional*, defaults to `False`): replace an earlier export in
            ``output_dir``; never a folder the tool did not write (see :func:`check_export_folder`).

    Raises:
        ValueError: when the dataset lacks the cartography columns, or when ``output_dir`` is, holds
            or lies inside the folder the dataset was loaded from.
        FileExistsError: when ``output_dir`` exists and ``overwrite`` is false, or holds what is not
            an earlier export.
        FolderLocked: another live process is writing ``output_dir``.

    The export holds :func:`~hf_carto.core.locking.output_lock` on ``output_dir`` while it writes, and
    first removes what killed exports left beside it. Nothing is written into the folder the
    dataset was loaded from (its ``datasets`` cache goes into a scratch folder removed at the end).
    """
    needed = [DIFFICULTY, MEMORIZATION, QUADRANT]
    missing = [c for c in needed if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset lacks the cartography columns {missing}; run add_cartography first")
    if Path(output_dir).name in ("", ".", ".."):
        check_export_folder(output_dir)  # refuses it, naming it as given
    output_dir = Path(os.path.abspath(output_dir))
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} already exists; choose another folder or pass overwrite=True")
    sources = [Path(f["filename"]).parent for f in dataset.cache_files]
    check_export_folder(output_dir, sources)
    copied_map = data_map not in (None, True, False)
    if copied_map and not include_private_columns:
        raise ValueError(
            "a data map drawn before the export shows the rows it withholds; pass data_map=True and the export "
            "draws one from the published rows"
        )
    from hf_carto.core.locking import output_lock, remove_stale_staging_of

    # Every check above comes before the lock, so that a refusal leaves nothing behind, not even a lock file.
    with output_lock(output_dir, "an export"), _cleaned_up_when_terminated():
        check_export_folder(output_dir, sources)  # again under the lock: another export may have written it
        # What killed exports left (staging folders, scratch, a set-aside earlier export): nobody else
        # writes here while the lock is held.
        remove_stale_staging_of(output_dir)
        remove_stale_staging_of(_mapping_dir(output_dir))
        # The datasets cache of the transformations below goes into this scratch folder, removed at the
        # end: by default it would go into the folder the dataset was loaded from (cache-*.arrow files
        # left in the user's source). Its name is a staging name, so a killed export's is removed too.
        scratch = Path(tempfile.mkdtemp(dir=output_dir.parent, prefix=f".{output_dir.name}.", suffix=".tmp"))
        try:
            _export(
                dataset,
                output_dir,
                scratch,
                repo_id=repo_id,
                fit=fit,
                summary=summary,
                data_map=data_map,
                copied_map=copied_map,
                license=license,
                pretty_name=pretty_name,
                max_shard_rows=max_shard_rows,
                include_private_columns=include_private_columns,
                secrets=secrets,
                recording=recording,
                overwrite=overwrite,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return output_dir


@contextlib.contextmanager
def _cleaned_up_when_terminated() -> Iterator[None]:
    """Turn SIGTERM (what ``kill`` and ``timeout`` send) into ``SystemExit`` for the block, so that
    a terminated export removes its staging folder and scratch as any other error does, instead of
    leaving them for the next export. Only where Python lets a handler be set (the main thread) and
    nobody has set one already; SIGKILL leaves them to the next export."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL,
        None,
    ):
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _export(
    dataset: Dataset,
    output_dir: Path,
    scratch: Path,
    *,
    repo_id: str,
    fit,
    summary: dict[str, Any] | None,
    data_map,
    copied_map: bool,
    license: str | None,
    pretty_name: str | None,
    max_shard_rows: int,
    include_private_columns: bool,
    secrets: Sequence[str],
    recording: dict[str, Any] | None,
    overwrite: bool,
) -> None:
    """The export itself, under the lock of :func:`export_hub_layout`."""
    withheld, private, original_ids = 0, [], None
    if not include_private_columns:
        dataset, withheld = _withhold_canaries(dataset, secrets)
        private = private_columns_of(dataset.column_names)
        if private:
            dataset = dataset.remove_columns(private)
        dataset, original_ids = _renumber_sample_ids(dataset, scratch)
        dataset = _published_clusters(dataset)
    summary = summary or cartography_summary(dataset, fit)
    summary = dict(summary)
    if recording is not None:  # e.g. LossStore(run_dir).settings().__dict__: mode and world size for the card
        summary["recording"] = recording
    weights_present = all(c in dataset.column_names for c in (LOSS_WEIGHT, SAMPLING_WEIGHT, KEEP))
    if not weights_present:
        summary.pop("weights", None)
    num_shards = max(1, math.ceil(len(dataset) / max_shard_rows))
    # An earlier export's id mapping goes first, so that it never sits beside another export's rows;
    # the new one is written once the export is in place.
    _remove_id_mapping(output_dir)
    with atomic_folder(output_dir, overwrite=overwrite) as staging:
        (staging / "data").mkdir()
        for index in range(num_shards):
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
            shard.to_parquet(str(staging / "data" / f"train-{index:05d}-of-{num_shards:05d}.parquet"))
        image = None
        if copied_map:
            image = "data_map.png"
            shutil.copyfile(data_map, staging / image)
        elif data_map:
            image = _draw_data_map(dataset, fit, summary, staging / "data_map.png").name
        card = dataset_card(
            dataset,
            repo_id=repo_id,
            summary=summary,
            license=license,
            pretty_name=pretty_name,
            data_map=image,
            withheld_rows=withheld,
            withheld_columns=private,
            renumbered=original_ids is not None,
        )
        (staging / "README.md").write_text(card)
        marker = {
            "repo_id": repo_id,
            "rows": len(dataset),
            "withheld_rows": withheld,
            "withheld_columns": private,
            "sample_ids_renumbered": original_ids is not None,
            "private": include_private_columns,
        }
        (staging / EXPORT_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if include_private_columns:
            mark_private(
                staging,
                "canary rows and the columns that mark planted rows (exported with include_private_columns=True)",
            )
    if original_ids is not None:
        _write_id_mapping(output_dir, original_ids)


@dataclass(frozen=True)
class PushResult:
    """Where a push landed."""

    repo_id: str
    commit: str
    commit_url: str
    url: str
    export_dir: Path


def repo_name(text: str, default: str = "dataset", max_length: int = 96) -> str:
    """``text`` made into a valid Hub repository name (without namespace).

    Characters other than ASCII letters, digits, ``-``, ``_`` and ``.`` become ``-``; the ``--`` and
    ``..`` runs, leading or trailing ``-``/``.`` and a ``.git`` ending, which the Hub refuses, are
    removed, and the name is cut to ``max_length`` (the Hub allows 96). ``default`` when nothing is
    left.

    >>> repo_name("wiki.train")
    'wiki.train'
    >>> repo_name("Salesforce/wikitext: 103 (raw)")
    'Salesforce-wikitext-103-raw'
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", name))
    name = name[:max_length].strip("-.")
    while name.endswith(".git"):
        name = name.removesuffix(".git").strip("-.")
    return name or default


def check_repo_id(repo_id: str) -> None:
    """Raise ``ValueError`` unless ``repo_id`` is a valid ``namespace/name`` Hub repository id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{repo_id!r} is not a valid Hub repository id (expected 'namespace/name'): {err}") from None
    if "/" not in repo_id:
        raise ValueError(f"{repo_id!r} is not a valid Hub repository id: give it as 'namespace/name'")


def push_curated_dataset(
    dataset: Dataset | str | os.PathLike,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload curated dataset (hf_carto)",
    export_dir: str | os.PathLike | None = None,
    allow_private: bool = False,
    **export_kwargs: Any,
) -> PushResult:
    """Publish a curated dataset to the Hub through ``huggingface_hub``'s own upload code.

    Args:
        dataset: a scored `datasets.Dataset` (exported first to `export_dir`), or the folder of an
            earlier :func:`export_hub_layout`, pushed as it is. Keeping the export on disk means a
            failed push loses nothing: call again with the folder to retry.
        repo_id (`str`): `namespace/name`.
        private (`bool`, *optional*, defaults to `True`): visibility when the repository is created.
        token (`str`, *optional*): Hub token; never printed or logged.
        revision (`str`, *optional*): branch to commit to (default: the main branch).
        allow_private (`bool`, *optional*, defaults to `False`): push a folder that holds what
            :func:`private_contents` finds (a ``PRIVATE.md``, a canary registry, columns marking
            canary rows); refused otherwise.

    Returns:
        :class:`PushResult` with the commit id and URLs. Pushing unchanged files again makes no new
        commit and returns the current one.

    Raises:
        ValueError: an invalid ``repo_id``, a folder that is not an export, or one that holds private
            contents without ``allow_private``.
    """
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    if isinstance(dataset, Dataset):
        folder = Path(export_dir or Path("hub_exports") / repo_id.replace("/", "__"))
        export_hub_layout(dataset, folder, repo_id=repo_id, overwrite=True, **export_kwargs)
    else:
        folder = Path(dataset)
        check_push_source(folder)
        if not (folder / "README.md").exists() or not (folder / "data").is_dir():
            raise ValueError(f"{folder} is not a Hub export (it needs README.md and data/); run export_hub_layout")
    private_files = private_contents(folder)
    if private_files and not allow_private:
        shown = "; ".join(private_files[:5]) + ("; ..." if len(private_files) > 5 else "")
        raise ValueError(
            f"{folder} holds {len(private_files)} private entries ({shown}); refusing to publish them. Push the "
            "scored dataset instead (its export withholds the canaries), or pass allow_private=True "
            "(--allow-private) for a private repository"
        )
    if private_files:
        logger.warning("pushing %d private entries of %s, as allowed", len(private_files), folder)
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        commit_message=commit_message,
        ignore_patterns=[EXPORT_MARKER, ".*.lock"],  # the tool's own bookkeeping
    )
    logger.info("pushed %s to %s at commit %s", folder, repo_id, info.oid)
    return PushResult(
        repo_id=repo_id, commit=info.oid, commit_url=info.commit_url, url=str(repo_url), export_dir=folder
    )


def _cell(values: Any, fmt: str) -> str:
    """One table cell: a number, or the mean and standard deviation of several seeds."""
    if values is None:
        return "-"
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.size == 1:
        return format(arr[0], fmt)
    return f"{format(arr.mean(), fmt)} ± {format(arr.std(), fmt)}"


def render_model_card(
    *,
    repo_id: str,
    base_model: str,
    dataset_id: str,
    curation: dict[str, Any],
    results: Sequence[dict[str, Any]],
    k: int = 32,
    conclusion: str = "",
    license: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> str:
    """Fill the model card template for a model trained on curated data.

    Args:
        curation: settings to list (interventions, thresholds, budget...), name -> value.
        results: one dict per arm with `arm` and any of `extraction_success`, `mean_exposure`,
            `contamination_recall`, `mia_auc`, `mia_tpr_at_1pct_fpr`, `perplexity`; each a number or
            a list over seeds.
        conclusion: a sentence stating what the comparison shows, negative results included.
    """
    from huggingface_hub import ModelCard, ModelCardData

    template = Path(template_path) if template_path else MODEL_CARD_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"model card template {template} not found; pass template_path")
    seeds = max((np.atleast_1d(r.get("perplexity", [0])).size for r in results), default=1)
    rows = [
        {
            "arm": r["arm"],
            "extraction": _cell(r.get("extraction_success"), ".1%"),
            "exposure": _cell(r.get("mean_exposure"), ".2f"),
            "contamination": _cell(r.get("contamination_recall"), ".1%"),
            "auc": _cell(r.get("mia_auc"), ".3f"),
            "tpr": _cell(r.get("mia_tpr_at_1pct_fpr"), ".3f"),
            "perplexity": _cell(r.get("perplexity"), ".2f"),
        }
        for r in results
    ]
    card_data = ModelCardData(
        base_model=base_model,
        datasets=[dataset_id],
        license=license,
        library_name="transformers",
        tags=["data-cartography", "memorization", "hf-carto"],
        pipeline_tag="text-generation",
    )
    with importlib.resources.as_file(template) as template_file:  # a real file, even from a zip
        card = ModelCard.from_template(
            card_data,
            template_path=str(template_file),
            model_name=repo_id.split("/")[-1],
            repo_id=repo_id,
            base_model=base_model,
            dataset_id=dataset_id,
            dataset_url=f"https://huggingface.co/datasets/{dataset_id}",
            curation=list(curation.items()),
            results=rows,
            num_seeds=seeds,
            k=k,
            conclusion=conclusion,
        )
    return str(card)


def push_model(
    model_dir: str | os.PathLike,
    repo_id: str,
    card: str,
    *,
    private: bool = True,
    token: str | None = None,
    commit_message: str = "Upload model trained on curated data (hf_carto)",
) -> PushResult:
    """Write ``card`` as the folder's ``README.md`` and upload the folder as a model repository."""
    from huggingface_hub import HfApi

    check_repo_id(repo_id)
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model folder")
    (folder / "README.md").write_text(card)
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return PushResult(repo_id=repo_id, commit=info.oid, commit_url=info.commit_url, url=str(url), export_dir=folder)
