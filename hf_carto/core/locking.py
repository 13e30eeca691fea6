"""An exclusive lock on an output folder, held for a whole run.

Two runs writing into one folder produce results that match neither (losses of one run scored
with the thresholds of the other). :func:`folder_lock` takes an exclusive ``flock`` on
``FOLDER/.hf_carto.lock`` and writes the holder's PID, host and start time into it. The operating
system releases the lock when the process ends, however it ends (an exception, ``kill -9``), so a
lock file left by a dead process never blocks a rerun: it is reported with the dead holder's PID
and taken over. A lock file inside its folder is never deleted, only emptied at a clean end; the
lock of :func:`output_lock` sits beside its target, in a folder the tool does not own, and is
deleted at a clean end (see :class:`HeldLock` for why that is safe).

Under the lock, nothing else writes into the folder, so staging files found there (``.*.partial``
folders, ``.*.tmp`` files) are what killed runs left: :func:`remove_stale_staging` removes them.
:func:`replace_outputs` moves a finished staging folder's results over the earlier ones, deleting
an earlier result only once its replacement is in place.

Why ``fcntl.flock`` and not the ``filelock`` package: the refusal names the live holder, and a
takeover names the dead one, because the holder writes its PID, host and start into the lock file
and the refused process reads them from it. ``filelock`` 3.x (what many environments hold, and the
line for Python 3.10, which this package supports; ``filelock`` 4.3 needs 3.11) opens the lock file
with ``O_TRUNC`` before it tries the lock, so every refused attempt would erase the live holder's
details, and the next taker would erase a dead holder's before it could name it. ``filelock`` 4.x
keeps the contents and can write them (``on_acquired``), an API 3.x lacks; and whether the lock
file is removed at release differs between its versions (late 3.x removes it, 4.x keeps it), where
:func:`output_lock` must not leave one in the user's folder. ``filelock`` has no shared probe of a
flock lock for :func:`lock_holder` either (its ``ReadWriteLock`` is an SQLite database, another file
and protocol). The crash safety both rely on is the same: the kernel releases a ``flock`` when its
holder dies. ``tests/test_run_safety.py`` holds these properties with real processes.
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


def _read_open(handle) -> dict:
    """The holder details in an open lock file: the file the lock was tried on, which may no longer
    be the one at its path."""
    try:
        handle.seek(0)
        return json.loads(handle.read() or "{}")
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
    try:
        # Opened for reading only: a probe never creates a lock file (nor recreates one a holder just removed).
        handle = open(path)  # noqa: SIM115  (closed below; the shared lock goes with it)
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_open(handle)
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

    With ``remove=True`` a clean release deletes the lock file. That is safe because the file is
    unlinked while still locked, and whoever wins the lock next first checks that the file it locked
    is still the one at the path: a process that opened the file before it was unlinked, and locks it
    after, finds it gone, lets it go and locks the file now at the path instead; two processes can
    therefore never each hold a different file of one path.
    """

    def __init__(self, path: Path, label: str, what: str, *, remove: bool = False) -> None:
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
            self._acquire(path, label, what, remove)

    def _acquire(self, path: Path, label: str, what: str, remove: bool) -> None:
        for _ in range(_REPLACED_TRIES):
            handle = open(path, "a+")  # noqa: SIM115  (held open while locked: closing it releases the lock)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_open(handle)
                handle.close()
                raise FolderLocked(
                    f"{label} is in use by {_describe(holder)}: two runs writing it would mix "
                    "their results; wait for it, stop it, or use another output folder"
                ) from None
            if _is_at(path, handle):
                break
            handle.close()  # the previous holder removed this file as it released: lock the one at the path
        else:
            raise FolderLocked(f"{label}: its lock file {path} kept being replaced while this process took it")
        earlier = _read_open(handle)
        if earlier.get("pid") not in (None, os.getpid()):
            logger.warning("%s: taking over a lock left by %s, which is gone", label, _describe(earlier))
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": what})
        )
        handle.flush()
        _HELD[self._key] = [handle, 1, threading.get_ident(), remove]

    def release(self) -> None:
        """Release this hold; the outermost release of the process gives the lock up."""
        if self._released:
            return
        self._released = True
        with _HELD_GUARD:
            held = _HELD[self._key]
            held[1] -= 1
            if held[1] == 0:
                handle, _, _, remove = _HELD.pop(self._key)
                # A clean end leaves the file empty: only a holder that died leaves its details behind.
                handle.seek(0)
                handle.truncate()
                if remove and _is_at(self.path, handle):
                    self.path.unlink()  # still locked: see the class docstring
                handle.close()  # releases the flock


def _is_at(path: Path, handle) -> bool:
    """Whether the open ``handle`` is the file at ``path`` now (not one unlinked or replaced since)."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(handle.fileno()))
    except FileNotFoundError:
        return False


# Attempts at a lock whose file each time turned out removed by the holder releasing it: one retry
# is what a release in the same instant needs; more mean something keeps replacing the file.
_REPLACED_TRIES = 20

#: Locks this process holds: resolved lock path -> [open handle, nesting depth, owning thread,
#: whether the release deletes the file].
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
    replacement, and two targets in one folder do not exclude each other. A clean end deletes it; a
    killed writer's stays, naming that writer, until the next one takes it over.

    Raises:
        FolderLocked: another live process is writing ``target``; the message names its PID.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The lock file goes at a clean end: it sits in a folder of the user's, not in the output.
    lock = HeldLock(_lock_path(target, beside=True), str(target), what, remove=True)
    try:
        yield lock.path
    finally:
        lock.release()


STAGING_SUFFIX = ".partial"  # the suffix of staging folders (hf_carto.core.atomic uses it too)
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
