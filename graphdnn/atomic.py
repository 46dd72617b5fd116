"""Atomic, concurrency-safe file writes.

A commit point (a single file, a shard index, an ``.onnx`` file) is written into a temporary file in
the target's folder, flushed (and fsync'ed on request), then renamed over the target, so a reader
or a crash never sees a half-written file, and of two concurrent writers the last rename wins whole.

Files that a commit point names (shards, external data) get unique generation names
(:func:`new_generation`) and are never rewritten. Each writer holds an exclusive ``flock`` on every
file it creates until its commit point is in place (:func:`create_locked`); the lock dies with the
writer, so a killed writer's files become free. :func:`collect_garbage` removes only files that it
could lock (shared: no live writer holds them, while other collectors may look at them too) and
that the committed file, read after the locks were taken, does not name: a writer never deletes
what another may still commit, and the orphans of a failed or killed save go at the next save.
Scratch folders (memory-mapped caches) are locked the same way while in use (:func:`locked_folder`).
Without ``fcntl`` (Windows) nothing is collected.

A reader that read an index just before a concurrent save replaced it may find a superseded shard
gone: ``TensorFile`` then reads the new index (a reader that holds a ``TensorFile`` while another
program saves over it may still find its shards gone when it reads tensors later).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["GENERATION", "atomic_write", "collect_garbage", "create_locked", "create_temp", "file_identity",
           "fsync_folder", "locked_folder", "new_generation", "temp_pattern"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS}
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: The random part of generation names: 12 lowercase hex digits.
GENERATION = r"[0-9a-f]{12}"


def new_generation() -> str:
    """A fresh generation tag (12 hex digits) for the files of one save."""
    return secrets.token_hex(6)


def temp_pattern(name: str) -> str:
    """Regex of the temporary files written for the target file ``name`` (ours, and the 8-character
    ``mkstemp`` names of older versions)."""
    return rf"\.{re.escape(name)}\.[0-9a-z_]{{8,12}}\.tmp"


def _same_file(fd: int, path: Path) -> bool:
    try:
        st, here = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def create_locked(path: str | os.PathLike[str], mode: int = 0o644) -> BinaryIO:
    """Create ``path`` (it must not exist) and return it open for writing, under an exclusive lock
    that lasts until the file object is closed (or the process dies)."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC | _NOFOLLOW, mode)
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a collector that saw the file first removes it
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                break  # a file system without flock: unlocked, and no collector can lock it either
            os.close(fd)
            raise
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # a collector removed the file between its creation and our lock: create it again
    return os.fdopen(fd, "wb")


def create_temp(folder: str | os.PathLike[str], name: str, mode: int = 0o600) -> tuple[BinaryIO, Path]:
    """A new locked temporary file (see :func:`create_locked`) for the target ``folder/name``, matching
    :func:`temp_pattern`; returns it open for writing and its path."""
    folder = Path(folder)
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return create_locked(tmp, mode), tmp
        except FileExistsError:
            continue


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Make renames and new names in ``folder`` durable (no-op where folders cannot be opened)."""
    if hasattr(os, "O_DIRECTORY"):
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], fsync: bool = False) -> Path:
    """Write ``path`` through ``write(file)``; an existing file keeps its permissions (new ones get
    0644). ``fsync=True`` also syncs the file and its folder. Temporary files left by killed writers
    of the same target are removed afterwards."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    f, tmp = create_temp(path.parent, path.name)
    try:
        with f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)  # still under our lock: no collector takes the file before it is in place
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_folder(path.parent)
    collect_garbage(path.parent, temp_pattern(path.name), lambda: set())
    return path


def collect_garbage(folder: str | os.PathLike[str], pattern: str,
                    referenced: Callable[[], Collection[str] | None]) -> list[str]:
    """Remove the files of ``folder`` whose names fully match ``pattern`` and that are neither held by
    a live writer (locked) nor named by ``referenced()``, which reads the committed file *after* the
    candidates are locked and returns the names it uses (None: unknown, remove nothing). Returns
    the names removed."""
    if fcntl is None:
        return []
    folder = Path(folder)
    regex = re.compile(pattern)
    held: list[tuple[str, int]] = []
    try:
        try:
            names = [n for n in os.listdir(folder) if regex.fullmatch(n)]
        except OSError:
            return []
        for name in names:
            try:
                fd = os.open(folder / name, os.O_RDONLY | _CLOEXEC | _NOFOLLOW)
            except OSError:
                continue
            try:  # shared: another collector looking at the same file does not make it look in use
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it
                os.close(fd)
                continue
            if not _same_file(fd, folder / name):
                os.close(fd)
                continue
            held.append((name, fd))
        if not held:
            return []
        try:
            keep = referenced()
        except Exception:
            keep = None
        if keep is None:
            return []
        removed = []
        for name, _ in held:
            if name not in keep:
                try:
                    os.unlink(folder / name)
                    removed.append(name)
                except OSError:
                    pass
        return removed
    finally:
        for _, fd in held:
            os.close(fd)


def locked_folder(parent: str | os.PathLike[str] | None, prefix: str) -> tuple[Path, int]:
    """A new private folder ``parent/<prefix><random>`` (``parent`` None: the system's temporary folder)
    and a descriptor holding an exclusive lock on it; close the descriptor when the folder's files are
    no longer used. Folders of the same prefix that no live process holds (left by killed or finished
    programs) are removed first."""
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    if fcntl is not None:
        regex = re.compile(re.escape(prefix) + r"[0-9a-z_]{8}")
        try:
            names = [n for n in os.listdir(parent) if regex.fullmatch(n)]
        except OSError:
            names = []
        for name in names:
            try:
                fd = os.open(parent / name, os.O_RDONLY | _CLOEXEC | _NOFOLLOW | getattr(os, "O_DIRECTORY", 0))
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, parent / name):
                    shutil.rmtree(parent / name, ignore_errors=True)
            except OSError:
                pass  # a live process holds it
            finally:
                os.close(fd)
    while True:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        fd = os.open(path, os.O_RDONLY | _CLOEXEC | getattr(os, "O_DIRECTORY", 0))
        if fcntl is None:
            return path, fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno in _NO_LOCKS:
                return path, fd
            os.close(fd)
            raise
        if _same_file(fd, path):
            return path, fd
        os.close(fd)  # removed by another program's sweep before we locked it


def file_identity(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(device, inode, modification time) of ``path``, or None when it cannot be read: a reader compares two of
    them to tell whether a writer replaced the file (its commit point) while it was being read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns
