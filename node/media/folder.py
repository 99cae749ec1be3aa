"""Write a file-set as a folder tree (USB media, ``--format folder``) and check it.

Files are written under a temporary folder, each fsync'd, then compared with
their sources; the caller renames the folder into place (DESIGN.md invariant 2).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from node import filemodes
from node.durable import fsync_dir
from node.errors import BuildError
from node.media.content import Comparer, MediaFile, Progress, copy_pieces


def write_tree(files: Sequence[MediaFile], root: Path, *, progress: Progress | None = None,
               existing: bool = False) -> None:
    """Write every file under ``root`` (created, unless ``existing``: a mounted volume), fsync'ing files
    and folders. A file is never overwritten (``O_EXCL``). The node's umask decides the modes
    (:mod:`node.filemodes`), except on a mounted volume: removable media are for others to read."""
    if not existing:
        root.mkdir()
    folders = {root}
    for f in files:
        path = root.joinpath(*f.components)
        for parent in reversed(path.parents):
            if parent not in folders and parent.is_relative_to(root):
                parent.mkdir(exist_ok=True)
                if existing:
                    filemodes.readable(parent, folder=True)
                folders.add(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            if existing:
                filemodes.readable(fd)
            copy_pieces(f.pieces, fd, 0, progress or (lambda n: None))
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in folders:
        fsync_dir(d)


def verify_tree(root: Path, files: Sequence[MediaFile]) -> None:
    """Re-read every written file and compare it byte for byte with its sources."""
    expected = {f.relpath for f in files}
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    if found != expected:
        raise BuildError(f"written folder differs from the plan: {sorted(found ^ expected)[:3]}")
    verify_files(root, files)


def verify_files(root: Path, files: Sequence[MediaFile]) -> None:
    """Re-read ``files`` under ``root`` (which may hold others) and compare them byte for byte with their sources."""
    compare = Comparer()
    for f in files:
        fd = os.open(root.joinpath(*f.components), os.O_RDONLY)
        try:
            if os.fstat(fd).st_size != f.size:
                raise BuildError(f"{f.relpath} is {os.fstat(fd).st_size} bytes written, {f.size} planned")
            compare(fd, f, [(0, f.size)])
        finally:
            os.close(fd)
