"""Durable placement of received instances (DESIGN.md invariant 1).

An instance is answered with success only once it is on disk under its final
name: the file is fsync'd, renamed into ``spool/<StudyInstanceUID>/`` and the
directory fsync'd. Nothing is ever written under a final name, and a final name
is never reused: an instance received again with other content gets a new file,
and the index releases the older one (the same content again is not placed; jobs
read a snapshot of paths, so a file a job holds must not change under it).

This module knows nothing of pynetdicom: ``scp.py`` has it :meth:`Spool.stage` the
data set of the temp file pynetdicom wrote (in ``data_dir/tmp``) behind the File
Meta the spool keeps, hashed on the way, then :meth:`Spool.place` it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import time
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

from node.durable import create_new, fsync_dir
from node.errors import NodeError

logger = logging.getLogger(__name__)

#: A UID as PS3.5 9.1 allows it: digits and dots, at most 64 characters. Only such
#: a value ever becomes part of a path in the spool.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: How many study folders a Spool remembers having made durable.
_KNOWN_DIRS = 4096


class SpoolError(NodeError):
    """An instance could not be placed in the spool (bad UID, I/O error)."""


def is_uid(value: str) -> bool:
    """True for a value that may name a spool file or folder (PS3.5 9.1).

    >>> is_uid("1.2.840.10008.5.1.4.1.1.2"), is_uid("../etc"), is_uid("1..2"), is_uid("")
    (True, False, False, False)
    """
    return len(value) <= 64 and _UID.match(value) is not None


class Spool:
    """``data_dir/spool/<StudyInstanceUID>/<SOPInstanceUID>.<8 hex>.dcm`` and ``data_dir/tmp``.

    One instance per process; :meth:`place` may be called from many threads.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).absolute()  # index paths must not depend on the cwd
        self.root = self.data_dir / "spool"
        self.tmp = self.data_dir / "tmp"
        for folder in (self.root, self.tmp):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                fsync_dir(folder.parent)
        # Study folders whose entry in spool/ this process has fsync'd.
        self._durable: OrderedDict[str, None] = OrderedDict()

    def place(self, src: str | os.PathLike[str] | bytes, *, study_uid: str, sop_instance_uid: str) -> tuple[Path, int]:
        """Make one instance durable in the spool; return its final path and size.

        ``src`` is a file (renamed into place: it must be on the spool's file
        system, ideally in :attr:`tmp`; another file system costs a copy) or the
        encoded file as bytes. Raises :class:`SpoolError` for a UID that is not
        digits and dots, and ``OSError`` when the disk refuses.
        """
        for uid in (study_uid, sop_instance_uid):
            if not is_uid(uid):
                raise SpoolError(f"not a valid UID for a spool path: {uid[:80]!r}")
        study_dir = self.root / study_uid
        final = study_dir / f"{sop_instance_uid}.{secrets.token_hex(4)}.dcm"
        created = _mkdir(study_dir)
        if isinstance(src, bytes):
            size = self._write_tmp_and_rename(src, final)
        else:
            size = self._rename(Path(src), final)
        fsync_dir(study_dir)
        if created or study_uid not in self._durable:
            # Also when another thread or process made the folder: its entry in
            # spool/ must be durable before we answer success, and only the
            # maker's fsync would otherwise guarantee it.
            fsync_dir(self.root)
            self._durable[study_uid] = None
            if len(self._durable) > _KNOWN_DIRS:
                self._durable.popitem(last=False)
        return final, size

    def stage(self, src: str | os.PathLike[str], *, head: bytes, offset: int) -> Path:
        """A new file in :attr:`tmp`: ``head``, then ``src`` from ``offset`` on.

        How a received file gets the File Meta the spool keeps: the data set bytes
        are copied unchanged. The file is not yet durable: :meth:`place` fsyncs it;
        the caller removes it when it does not place it.
        """
        fd, name = create_new(self.tmp, "place-", ".tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as fp:
                out.write(head)
                fp.seek(offset)
                shutil.copyfileobj(fp, out, 1 << 20)
        except BaseException:
            _unlink(name)
            raise
        return Path(name)

    def _rename(self, src: Path, final: Path) -> int:
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        try:
            os.rename(src, final)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # Another file system: copy into tmp (the spool's), then rename.
            with open(src, "rb") as fp:
                return self._write_tmp_and_rename(fp, final)
        return size

    def _write_tmp_and_rename(self, data: bytes | BinaryIO, final: Path) -> int:
        fd, name = create_new(self.tmp, "place-", ".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, bytes):
                    out.write(data)
                else:
                    shutil.copyfileobj(data, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
                size = out.tell()
            os.rename(name, final)
        except BaseException:
            _unlink(name)
            raise
        return size

    def free_bytes(self) -> int:
        """Bytes an unprivileged process may still write on the spool's file system."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def orphans(self, *, older_than: float = 0.0) -> list[Path]:
        """Files left in :attr:`tmp` (by a crash, or a peer that aborted mid-transfer).

        ``older_than`` (seconds since the last write) spares the transfers in
        progress when other receivers are running; 0 at start-up takes all.
        """
        limit = time.time() - older_than
        found = []
        with os.scandir(self.tmp) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime <= limit:
                        found.append(Path(entry.path))
                except FileNotFoundError:
                    continue
        return found

    def cleanup_tmp(self, *, older_than: float = 0.0) -> int:
        """Remove :meth:`orphans`; return how many were removed."""
        removed = 0
        for path in self.orphans(older_than=older_than):
            if _unlink(path):
                removed += 1
        if removed:
            logger.info("Removed %d leftover temporary files from %s", removed, self.tmp)
        return removed


def _mkdir(folder: Path) -> bool:
    """Create ``folder``; say whether this call created it."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        return False
    return True


def _unlink(path: str | Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
