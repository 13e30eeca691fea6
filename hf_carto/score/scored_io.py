"""Reading loss datasets and writing scored ones without ever leaving a half-written folder.

A scored dataset folder is a ``Dataset.save_to_disk`` folder plus ``cartography.json`` (the fit:
resolved eps, thresholds, settings) and ``summary.json``. It is written under a temporary name
beside the target and renamed into place, so an interrupted run leaves either the previous
folder or nothing, never a folder that looks complete and is not.

Reading names the file at fault: a damaged parquet footer or schema, a truncated ``.arrow`` file,
invalid JSON in ``state.json``, ``dataset_info.json`` or ``cartography.json``, a fit with missing
keys. Empty datasets load as empty ``Dataset``s (``datasets`` itself fails on them).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetInfo, Features, load_from_disk
from datasets import config as datasets_config
from datasets.exceptions import DatasetGenerationError
from datasets.table import InMemoryTable

from hf_carto.core.atomic import atomic_folder, disk_full_error, is_disk_full, write_json_atomic
from hf_carto.core.columns import QUADRANT
from hf_carto.score.cartography import CartographyFit

__all__ = ["FIT_FILE", "SUMMARY_FILE", "load_table", "save_scored", "load_scored"]

FIT_FILE = "cartography.json"
SUMMARY_FILE = "summary.json"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _parquet_footer(file: Path) -> pq.FileMetaData:
    """The footer of one parquet file, checked to decode (thrift, the arrow schema, datasets' features)."""
    try:
        metadata = pq.read_metadata(file)
        # The arrow schema is stored base64-encoded and the datasets features as JSON: both are
        # decoded here so that a damaged one is reported with its file.
        Features.from_arrow_schema(metadata.schema.to_arrow_schema())
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{file} is not a readable parquet file (damaged, truncated or another format?): {err}"
        ) from None
    return metadata


def _load_parquet(path: Path, files: list[Path]) -> Dataset:
    footers = [_parquet_footer(f) for f in files]
    if sum(f.num_rows for f in footers) == 0:
        # datasets' parquet builder fails on zero rows; an empty dataset keeps the columns.
        return Dataset(InMemoryTable(footers[0].schema.to_arrow_schema().empty_table()))
    # What the cached arrow copy takes, about: the uncompressed size of every row group.
    needed = sum(f.row_group(i).total_byte_size for f in footers for i in range(f.num_row_groups))
    try:
        return Dataset.from_parquet([str(f) for f in files])
    except OSError as err:
        if not is_disk_full(err):
            raise
        raise disk_full_error(datasets_config.HF_DATASETS_CACHE, f"the cached copy of {path}", needed) from err
    except DatasetGenerationError as err:
        cause = err.__cause__ or err
        if is_disk_full(cause):
            raise disk_full_error(datasets_config.HF_DATASETS_CACHE, f"the cached copy of {path}", needed) from err
        raise ValueError(f"{path}: its parquet data cannot be read as one dataset: {cause}") from None


def _load_saved(path: Path) -> Dataset:
    state = _read_json(path / "state.json")
    if (path / "dataset_info.json").exists():
        _read_json(path / "dataset_info.json")
    data_files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(data_files, list) or not all(isinstance(f, dict) and "filename" in f for f in data_files):
        raise ValueError(f"{path / 'state.json'} is not a save_to_disk state: it lacks a '_data_files' list of files")
    if not data_files:
        # datasets fails on a saved dataset without data files (0 rows); its features are in
        # dataset_info.json.
        features = DatasetInfo.from_directory(str(path)).features
        if features is None:
            raise ValueError(f"{path} holds an empty dataset whose dataset_info.json names no features")
        return Dataset.from_dict({name: [] for name in features}, features=features)
    try:
        return load_from_disk(str(path))
    except (pa.ArrowException, OSError) as err:
        names = [f["filename"] for f in data_files]
        for name in names:
            try:
                with pa.memory_map(str(path / name)) as source:
                    pa.ipc.open_stream(source).read_all()
            except (pa.ArrowException, OSError) as bad:
                raise ValueError(f"{path / name} cannot be read (truncated or damaged?): {bad}") from None
        raise ValueError(f"{path}: its data files {names} cannot be read: {err}") from None


def load_table(path: str | os.PathLike) -> Dataset:
    """Open a dataset from a ``save_to_disk`` folder, a parquet file, or a folder of parquet files.

    Parquet is memory-mapped through the ``datasets`` cache; nothing is read eagerly. An empty
    dataset loads with its columns and no rows.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: naming the file, when a file cannot be read (a damaged parquet footer or
            page, a truncated ``.arrow`` file, invalid JSON), or when ``path`` is neither.
        OSError: ``errno.ENOSPC``, naming the cache folder, when the disk fills up while
            ``datasets`` caches a parquet file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "state.json").exists():
        return _load_saved(path)
    if path.is_dir() and (path / "dataset_dict.json").exists():
        layout = _read_json(path / "dataset_dict.json")
        splits = layout.get("splits", []) if isinstance(layout, dict) else []
        raise ValueError(f"{path} holds a DatasetDict with splits {splits}; pass one split's folder")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files or any(f.suffix != ".parquet" for f in files):
        raise ValueError(f"{path} is neither a save_to_disk folder (no state.json) nor parquet file(s)")
    return _load_parquet(path, files)


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
    with atomic_folder(target, overwrite=overwrite, needed_bytes=dataset.data.nbytes) as staging:
        dataset.save_to_disk(str(staging))
        if fit is not None:
            write_json_atomic(fit.to_dict(), staging / FIT_FILE)
        if summary is not None:
            write_json_atomic(summary, staging / SUMMARY_FILE)
    return target


def load_scored(path: str | os.PathLike) -> tuple[Dataset, CartographyFit | None]:
    """Open a folder written by :func:`save_scored`: the dataset and its fit (``None`` if absent).

    Raises:
        ValueError: naming ``cartography.json`` when it is not valid JSON or not a fit (missing
            keys, values of the wrong type), and as :func:`load_table`.
    """
    path = Path(path)
    dataset = load_table(path)
    fit_file = path / FIT_FILE
    if not fit_file.exists():
        if QUADRANT in dataset.column_names:
            # Scored without its fit (a plain save_to_disk): maps get no threshold lines and cards
            # no "How it was scored"; say so rather than leave it to be noticed.
            warnings.warn(
                f"{path} holds scores but no {FIT_FILE}: eps, the thresholds and the settings are unknown, so "
                "maps draw no threshold lines and dataset cards say nothing of how it was scored. Save a "
                "scored dataset with hf_carto.save_scored(dataset, path, fit=fit)",
                stacklevel=2,
            )
        return dataset, None
    try:
        fit = CartographyFit.from_dict(_read_json(fit_file))
    except ValueError as err:
        if str(fit_file) in str(err):
            raise
        raise ValueError(f"{fit_file}: {err}") from None
    return dataset, fit
