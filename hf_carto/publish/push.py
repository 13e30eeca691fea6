"""Uploading a curated dataset or a model to the Hub through ``huggingface_hub``'s own upload code.

A dataset goes up as the folder :func:`~hf_carto.publish.export.export_hub_layout` wrote, so that a
failed push loses nothing. :func:`push_curated_dataset` refuses a folder holding what
:func:`~hf_carto.publish.privacy.private_contents` finds (a ``PRIVATE.md``, a canary registry, a
column that marks canary or planted rows) unless ``allow_private=True``, and
:func:`check_push_source` refuses a run folder of the experiment or the demo before anything is
exported.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from hf_carto.publish.export import EXPORT_MARKER, export_hub_layout
from hf_carto.publish.privacy import PRIVATE_NOTE, REGISTRY_FILE, private_contents

__all__ = ["PushResult", "check_push_source", "check_repo_id", "push_curated_dataset", "push_model", "repo_name"]

logger = logging.getLogger(__name__)

# What a run folder of the experiment or of the demo holds at its top, by which it is recognised.
_RUN_FOLDER_FILES = (".hf_carto_run", "run_config.json", "run_config.pending.json", "report.json", "stage_times.json")


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
        if p.is_file() and (p.name.lower() == PRIVATE_NOTE.lower() or REGISTRY_FILE.search(p.name))
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
            earlier :func:`~hf_carto.publish.export.export_hub_layout`, pushed as it is. Keeping the
            export on disk means a failed push loses nothing: call again with the folder to retry.
        repo_id (`str`): `namespace/name`.
        private (`bool`, *optional*, defaults to `True`): visibility when the repository is created.
        token (`str`, *optional*): Hub token; never printed or logged.
        revision (`str`, *optional*): branch to commit to (default: the main branch).
        allow_private (`bool`, *optional*, defaults to `False`): push a folder that holds what
            :func:`~hf_carto.publish.privacy.private_contents` finds (a ``PRIVATE.md``, a canary
            registry, columns marking canary rows); refused otherwise.

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
