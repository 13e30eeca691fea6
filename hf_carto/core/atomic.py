"""Writes that are all or nothing: a crash leaves the previous file or folder, never half of one.

Everything is written under a temporary name in the destination's own folder (same filesystem)
and moved into place with ``os.replace``. A write that runs out of disk space raises an ``OSError``
(``errno.ENOSPC``) that names the folder, the space left and, when the caller knows it, about how
much was needed: the operating system's own message names neither.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_folder",
    "is_disk_full",
    "disk_full_error",
    "write_json_atomic",
    "write_parquet_atomic",
    "write_text_atomic",
]


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the device ran out of space.

    Arrow's writers do not always set ``errno``, so their message is read too.
    """
    return isinstance(err, OSError) and (
        err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or "No space left on device" in str(err)
    )


def _size(num_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


def disk_full_error(folder: str | os.PathLike, what: str, needed_bytes: int | None = None) -> OSError:
    """An ``OSError(ENOSPC)`` saying which folder is full, what was being written and how much it needed."""
    folder = Path(folder)
    try:
        free = f"{_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "free space unknown"
    needed = f", about {_size(needed_bytes)} needed" if needed_bytes else ""
    return OSError(
        errno.ENOSPC,
        f"no space left on the device of {folder} while writing {what} ({free}{needed}); free some space or "
        "choose a folder on another disk",
    )


@contextlib.contextmanager
def _temporary_file(path: Path) -> Iterator[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp makes the file readable by its owner only; the result gets the mode any new file gets.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full_error(path.parent, str(path)) from err
        raise


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON to ``path``."""
    with _temporary_file(Path(path)) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path``; returns the path."""
    path = Path(path)
    with _temporary_file(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def write_parquet_atomic(table: Any, path: str | os.PathLike) -> None:
    """Write a ``pyarrow.Table`` to ``path``, with page checksums.

    Readers that ask for it (``page_checksum_verification=True``) then refuse a data page whose
    bytes changed after writing instead of returning the changed values.
    """
    import pyarrow.parquet as pq

    with _temporary_file(Path(path)) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike, *, overwrite: bool = False, needed_bytes: int | None = None
) -> Iterator[Path]:
    """Yield a staging folder that replaces ``target`` when the block ends without error.

    Args:
        needed_bytes (`int`, *optional*): about how much the block writes; only quoted when the
            disk fills up.

    Raises:
        FileExistsError: when ``target`` exists and ``overwrite`` is false (checked first).
        OSError: ``errno.ENOSPC``, naming the folder, when the disk fills up.
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
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(err):
            raise disk_full_error(target.parent, str(target), needed_bytes) from err
        raise
