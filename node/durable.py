"""Durable, atomic placement of small files: the pattern every writer here follows.

Write to a temporary name in the target folder, fsync, rename over the final
name, fsync the folder (STYLE.md §3.6): a reader sees the old file or the new
one, never half of one, and a crash after the call loses nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

from node.errors import BuildError


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: sync_file_range(2), loaded at the first :func:`write_back` (a burn's start-up does without ctypes).
_sync_file_range: Callable[[int, int, int, int], int] | None = None
_WRITE, _WAIT_BEFORE_WRITE_WAIT_AFTER = 2, 7


def write_back(fd: int, offset: int, length: int, *, wait: bool = False) -> None:
    """Have the kernel write ``length`` bytes of ``fd`` from ``offset`` to the disk: started only, or with
    ``wait`` finished (Linux's sync_file_range(2), which Python's os lacks; elsewhere starting does
    nothing and waiting is an fdatasync). Pages stay cached. It promises no durability (the file's
    metadata is the fsync's): the disk writes a growing file while it is written, and a range written
    back can be dropped from the cache and read back from the disk.
    """
    global _sync_file_range
    import ctypes  # loaded once; then a lookup

    if _sync_file_range is None:
        try:
            call = ctypes.CDLL(None, use_errno=True).sync_file_range
        except (AttributeError, OSError):
            if wait:
                os.fdatasync(fd)
            return
        call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        _sync_file_range = cast(Callable[[int, int, int, int], int], call)
    if _sync_file_range(fd, offset, length, _WAIT_BEFORE_WRITE_WAIT_AFTER if wait else _WRITE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sync_file_range: {os.strerror(err)}")


def create_new(folder: Path, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file of a unique name in ``folder``, open for writing, and its name. Unlike ``mkstemp``
    (always 0600) it asks for 0666, so the umask (:mod:`node.filemodes`) decides, as for every file."""
    while True:
        name = str(folder / f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name
        except FileExistsError:
            continue


def write_atomic(path: Path, content: bytes) -> Path:
    """Write ``content`` durably under ``path`` (its folder created), never visible half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = create_new(path.parent, f".{path.name}.", ".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


@contextmanager
def published(target: Path) -> Iterator[Path]:
    """A temporary name beside ``target`` (``.NAME.part-PID``, which crash recovery removes) for a file or a
    folder tree: renamed to ``target`` (the folder then fsync'd) when the block succeeds, removed when it fails.
    The writer fsyncs what it writes; an OSError becomes a :class:`BuildError` naming ``target``."""
    tmp = target.with_name(f".{target.name}.part-{os.getpid()}")
    try:
        yield tmp
        os.rename(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise BuildError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            tmp.unlink()
