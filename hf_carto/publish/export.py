"""The Hub repository layout of a curated dataset, written locally first.

:func:`export_hub_layout` writes what a Hugging Face dataset repository holds (parquet shards
under ``data/`` and a ``README.md`` dataset card, :mod:`hf_carto.publish.dataset_card`), so that a
failed or interrupted push loses nothing and the folder itself loads with
``datasets.load_dataset(folder)``.

Canary secrets never leave the machine by default: the export withholds the canary rows and the
columns that would say which rows were canaries (:mod:`hf_carto.publish.privacy`);
``include_private_columns=True`` keeps all of it, for a private repository. A public export also
renumbers ``sample_id`` densely in the published order (the mapping to the original ids is written
beside the export, in ``EXPORT.private/``, never inside it) and draws its data map from the
published rows only.

Nothing the tool did not write is ever deleted: an export replaces its folder as a whole, so it
refuses a non-empty folder that does not carry the marker of an earlier export
(``.hf_carto_export``), and a folder that is, holds or lies inside the source dataset's folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from hf_carto.core.atomic import atomic_folder
from hf_carto.core.columns import (
    CURATION_COLUMNS,
    DIFFICULTY,
    MAP_COLUMNS,
    MEMORIZATION,
    QUADRANT,
    SAMPLE_ID,
    read_columns,
)
from hf_carto.core.locking import output_lock, remove_stale_staging_of
from hf_carto.publish.dataset_card import render_dataset_card
from hf_carto.publish.privacy import (
    PRIVATE_NOTE,
    mark_private,
    private_columns_of,
    renumber_sample_ids,
    restate_duplicate_clusters,
    withhold_canaries,
)
from hf_carto.publish.summary import cartography_summary

__all__ = ["EXPORT_MARKER", "check_export_folder", "export_hub_layout"]

#: The file an export writes into its folder, so that a later export may replace the folder.
EXPORT_MARKER = ".hf_carto_export"


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
    if not entries or (folder / EXPORT_MARKER).is_file():
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise FileExistsError(
        f"{folder} holds {len(entries)} entries that are not an earlier export ({shown}); an export replaces "
        "its folder as a whole, so it only writes into a new or empty folder or over an earlier export; "
        "choose another folder"
    )


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
    from hf_carto.core.plots import plot_data_map

    settings = summary.get("settings") or {}
    cols = read_columns(dataset, list(MAP_COLUMNS))
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
    needed = list(MAP_COLUMNS)
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


def _published_rows(
    dataset: Dataset, scratch: Path, secrets: Sequence[str]
) -> tuple[Dataset, int, list[str], np.ndarray | None]:
    """What a public export publishes: the rows without the canaries, the columns without the
    private ones, ``sample_id`` renumbered and the duplicate clusters restated over these rows.
    Returns them with the number of withheld rows, the withheld columns and the original ids (None
    when ``sample_id`` was left as it was)."""
    dataset, withheld = withhold_canaries(dataset, secrets)
    private = private_columns_of(dataset.column_names)
    if private:
        dataset = dataset.remove_columns(private)
    dataset, original_ids = renumber_sample_ids(dataset, scratch)
    return restate_duplicate_clusters(dataset), withheld, private, original_ids


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
        dataset, withheld, private, original_ids = _published_rows(dataset, scratch, secrets)
    summary = dict(summary or cartography_summary(dataset, fit))
    if recording is not None:  # e.g. LossStore(run_dir).settings().__dict__: mode and world size for the card
        summary["recording"] = recording
    if not all(c in dataset.column_names for c in CURATION_COLUMNS):
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
        card = render_dataset_card(
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
