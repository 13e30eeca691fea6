"""An exclusive lock on an output folder, held for a whole run.

Two runs writing into one folder produce results that match neither (losses of one run scored
with the thresholds of the other). :func:`folder_lock` takes an exclusive ``flock`` on
``FOLDER/.hf_carto.lock`` and writes the holder's PID, host and start time into it. The operating
system releases the lock when the process ends, however it ends (an exception, ``kill -9``), so a
lock file left by a dead process never blocks a rerun: it is reported with the dead holder's PID
and taken over. The file itself is never deleted (a process waiting on the old file while a new one
is created would hold a second, separate lock); a clean end empties it.

Under the lock, nothing else writes into the folder, so staging files found there (``.*.partial``
folders, ``.*.tmp`` files) are what killed runs left: :func:`remove_stale_staging` removes them.
:func:`replace_outputs` moves a finished staging folder's results over the earlier ones, deleting
an earlier result only once its replacement is in place.
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "LOCK_FILE",
    "STAGING_SUFFIX",
    "FolderLocked",
    "HeldLock",
    "folder_lock",
    "hold_folder_lock",
    "lock_holder",
    "output_lock",
    "remove_stale_staging",
    "remove_stale_staging_of",
    "replace_outputs",
]

logger = logging.getLogger(__name__)

LOCK_FILE = ".hf_carto.lock"


class FolderLocked(RuntimeError):
    """Another live process holds the folder's lock."""


def _read_holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that left no details"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"PID {holder.get('pid')} on {holder.get('host')} (started {started}, {holder.get('what', 'a run')})"


def _lock_path(target: Path, beside: bool) -> Path:
    return target.parent / f".{target.name}.lock" if beside else target / LOCK_FILE


def _holder_of(path: Path) -> dict | None:
    if path.resolve() in _HELD:
        return _read_holder(path)
    if not path.exists():
        return None
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path)
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def lock_holder(folder: str | os.PathLike, *, beside: bool = False) -> dict | None:
    """Who holds ``folder``'s lock now (``pid``, ``host``, ``started``, ``what``), or None when
    nobody does. Takes and releases a shared lock, so it never blocks. ``beside=True`` asks about
    the lock of :func:`output_lock`."""
    return _holder_of(_lock_path(Path(folder), beside))


class HeldLock:
    """An exclusive lock this process holds until :meth:`release` (or until it ends).

    Locks are re-entrant within one thread: taking a lock the same thread already holds nests inside
    it (the same run, not a concurrent one), and the lock is released when the outermost holder
    releases it. Another thread of the process is refused like another process.
    """

    def __init__(self, path: Path, label: str, what: str) -> None:
        self.path = path
        self._key = path.resolve()
        self._released = False
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is not None:
                if held[2] != threading.get_ident():  # another thread of this process: a concurrent writer
                    raise FolderLocked(
                        f"{label} is in use by another thread of this process (PID {os.getpid()}); two writers "
                        "would mix their results"
                    )
                held[1] += 1
                return
            self._acquire(path, label, what)

    def _acquire(self, path: Path, label: str, what: str) -> None:
        handle = open(path, "a+")  # noqa: SIM115  (held open while locked: closing it releases the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FolderLocked(
                f"{label} is in use by {_describe(_read_holder(path))}: two runs writing it would mix "
                "their results; wait for it, stop it, or use another output folder"
            ) from None
        earlier = _read_holder(path)
        if earlier.get("pid") not in (None, os.getpid()):
            logger.warning("%s: taking over a lock left by %s, which is gone", label, _describe(earlier))
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": what})
        )
        handle.flush()
        _HELD[self._key] = [handle, 1, threading.get_ident()]

    def release(self) -> None:
        """Release this hold; the outermost release of the process gives the lock up."""
        if self._released:
            return
        self._released = True
        with _HELD_GUARD:
            held = _HELD[self._key]
            held[1] -= 1
            if held[1] == 0:
                handle = _HELD.pop(self._key)[0]
                # A clean end leaves the file empty: only a holder that died leaves its details behind.
                handle.seek(0)
                handle.truncate()
                handle.close()  # releases the flock


#: Locks this process holds: resolved lock path -> [open handle, nesting depth, owning thread].
_HELD: dict[Path, list] = {}
_HELD_GUARD = threading.RLock()


def hold_folder_lock(folder: str | os.PathLike, what: str = "a run") -> HeldLock:
    """Take ``folder``'s lock (creating the folder) and keep it until ``release()`` or exit.

    Raises:
        FolderLocked: another live process holds it; the message names its PID, host and start.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return HeldLock(_lock_path(folder, beside=False), str(folder), what)


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "a run") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block; the lock
    file is ``FOLDER/.hf_carto.lock``.

    Raises:
        FolderLocked: another live process holds it; the message names its PID, host and start.
    """
    lock = hold_folder_lock(folder, what)
    try:
        yield lock.path
    finally:
        lock.release()


@contextmanager
def output_lock(target: str | os.PathLike, what: str = "a run") -> Iterator[Path]:
    """Hold an exclusive lock on an output ``target`` that is replaced as a whole (a folder written
    by ``atomic_folder``, a file): the lock file ``.NAME.lock`` sits beside it, so it survives the
    replacement, and two targets in one folder do not exclude each other.

    Raises:
        FolderLocked: another live process is writing ``target``; the message names its PID.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = HeldLock(_lock_path(target, beside=True), str(target), what)
    try:
        yield lock.path
    finally:
        lock.release()


STAGING_SUFFIX = ".partial"  # the suffix of staging folders (hf_carto.atomic uses it too)
_STALE = re.compile(r"^\..+(\.partial|\.tmp)$")


def remove_stale_staging(folder: str | os.PathLike) -> list[Path]:
    """Remove the staging folders and temporary files that killed runs left anywhere in ``folder``
    (names ``.<name>.partial`` and ``.<name>.tmp``); call it while holding ``folder``'s lock.
    Returns what was removed, each logged."""
    folder = Path(folder)
    if not folder.exists():
        return []
    removed = []
    for path in sorted(folder.rglob(".*"), key=lambda p: len(p.parts)):
        if not _STALE.match(path.name) or not path.exists():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        logger.warning("removed %s, left by a run that was stopped while writing it", path)
        removed.append(path)
    return removed


def remove_stale_staging_of(target: str | os.PathLike) -> list[Path]:
    """Remove what killed writers of ``target`` left beside it (``.NAME.*.partial`` staging folders,
    ``.NAME.*.tmp`` files, ``.NAME.old-*`` set-aside copies); call it while holding
    :func:`output_lock` on ``target``, so that no live writer owns them. A set-aside copy whose
    replacement never arrived (``target`` is missing) is the earlier result: it is put back, not
    removed. Returns what was removed."""
    target = Path(target)
    if not target.parent.exists():
        return []
    removed = []
    # The random part tempfile adds has no dot, which tells ".a.x1.tmp" (of "a") from ".a.b.x2.tmp" (of "a.b").
    staged = re.compile(rf"^\.{re.escape(target.name)}\.[^.]+(\.partial|\.tmp)$")
    set_aside_name = re.compile(rf"^\.{re.escape(target.name)}\.old-\d+$")
    for path in sorted(target.parent.glob(f".{glob.escape(target.name)}.*")):
        set_aside = bool(set_aside_name.match(path.name))
        if not (staged.match(path.name) or set_aside):
            continue
        if set_aside and not target.exists():
            os.replace(path, target)
            logger.warning("put back %s as %s: a run was stopped while replacing it", path, target)
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        logger.warning("removed %s, left by a run that was stopped while writing %s", path, target)
        removed.append(path)
    return removed


def replace_outputs(staging: str | os.PathLike, folder: str | os.PathLike) -> list[Path]:
    """Move every entry of the finished ``staging`` folder into ``folder``, replacing the entries of
    the same name; the earlier entry is renamed aside first and deleted only after the new one is in
    place. Removes ``staging``. Returns the paths now in ``folder``."""
    staging, folder = Path(staging), Path(folder)
    placed = []
    for entry in sorted(staging.iterdir()):
        target = folder / entry.name
        aside = folder / f".{entry.name}.old-{os.getpid()}{STAGING_SUFFIX}"
        if target.exists():
            os.replace(target, aside)
        os.replace(entry, target)
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        elif aside.exists():
            aside.unlink()
        placed.append(target)
    staging.rmdir()
    return placed
