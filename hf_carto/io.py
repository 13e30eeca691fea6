"""Reading loss datasets and writing scored ones without ever leaving a half-written folder.

A scored dataset folder is a ``Dataset.save_to_disk`` folder plus ``cartography.json`` (the fit:
resolved eps, thresholds, settings) and ``summary.json``. It is written under a temporary name
beside the target and renamed into place, so an interrupted run leaves either the previous
folder or nothing, never a folder that looks complete and is not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datasets import Dataset, load_from_disk

from .atomic import atomic_folder, write_json_atomic
from .curation import CartographyFit

__all__ = ["FIT_FILE", "SUMMARY_FILE", "load_table", "save_scored", "load_scored"]

FIT_FILE = "cartography.json"
SUMMARY_FILE = "summary.json"


def load_table(path: str | os.PathLike) -> Dataset:
    """Open a dataset from a ``save_to_disk`` folder, a parquet file, or a folder of parquet files.

    Parquet is memory-mapped through the ``datasets`` cache; nothing is read eagerly.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "state.json").exists():
        loaded = load_from_disk(str(path))
        if not isinstance(loaded, Dataset):
            raise ValueError(f"{path} holds a DatasetDict with splits {list(loaded)}; pass one split's folder")
        return loaded
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files or any(f.suffix != ".parquet" for f in files):
        raise ValueError(f"{path} is neither a save_to_disk folder (no state.json) nor parquet file(s)")
    return Dataset.from_parquet([str(f) for f in files])


def save_scored(
    dataset: Dataset,
    output_dir: str | os.PathLike,
    *,
    fit: CartographyFit | None = None,
    summary: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Save a scored dataset with its fit and summary into ``output_dir``, atomically.

    Raises:
        FileExistsError: when ``output_dir`` exists and ``overwrite`` is false.
    """
    target = Path(output_dir)
    with atomic_folder(target, overwrite=overwrite) as staging:
        dataset.save_to_disk(str(staging))
        if fit is not None:
            write_json_atomic(fit.to_dict(), staging / FIT_FILE)
        if summary is not None:
            write_json_atomic(summary, staging / SUMMARY_FILE)
    return target


def load_scored(path: str | os.PathLike) -> tuple[Dataset, CartographyFit | None]:
    """Open a folder written by :func:`save_scored`: the dataset and its fit (``None`` if absent)."""
    path = Path(path)
    dataset = load_table(path)
    fit_file = path / FIT_FILE
    fit = CartographyFit.from_dict(json.loads(fit_file.read_text())) if fit_file.exists() else None
    return dataset, fit
