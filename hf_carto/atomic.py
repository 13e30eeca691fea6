"""Writes that are all or nothing: a crash leaves the previous file or folder, never half of one.

Everything is written under a temporary name in the destination's own folder (same filesystem)
and moved into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_folder", "write_json_atomic", "write_parquet_atomic"]


@contextlib.contextmanager
def _temporary_file(path: Path) -> Iterator[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON to ``path``."""
    with _temporary_file(Path(path)) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def write_parquet_atomic(table: Any, path: str | os.PathLike) -> None:
    """Write a ``pyarrow.Table`` to ``path``."""
    import pyarrow.parquet as pq

    with _temporary_file(Path(path)) as tmp:
        pq.write_table(table, tmp)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder that replaces ``target`` when the block ends without error.

    Raises:
        FileExistsError: when ``target`` exists and ``overwrite`` is false (checked first).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; choose another folder or pass overwrite=True")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    try:
        yield staging
        if target.exists():
            retired = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
