"""What goes onto a medium: files described as pieces, never held in memory whole.

A file on a medium is usually a new File Meta header (a few hundred bytes)
followed by the dataset bytes of the source file, untouched. Describing it as
``[b"<new header>", FileSlice(src, offset, length)]`` lets the writers stream it
straight from the source into the image (``os.copy_file_range``), keeping memory
bounded whatever the size of the set (DESIGN.md invariant 4).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from node.errors import BuildError


class FileSlice(NamedTuple):
    """``length`` bytes of the file at ``path``, from ``offset``."""

    path: str
    offset: int
    length: int


Piece = bytes | FileSlice


@dataclass
class MediaFile:
    """One file of the medium: its File ID components and its content, in pieces.

    ``components`` are the upper-case path components as written, e.g.
    ``("DICOM", "P0000001", "S0000001", "I0000001")`` or ``("DICOMDIR",)``.
    """

    components: tuple[str, ...]
    pieces: list[Piece] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Length of the file in bytes."""
        return sum(len(p) if isinstance(p, bytes) else p.length for p in self.pieces)

    @property
    def relpath(self) -> str:
        """The path below the medium root, with ``/`` separators."""
        return "/".join(self.components)


_CHUNK = 8 << 20  # the most bytes copied or held per step
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


def pwrite_all(fd: int, data: bytes | memoryview, pos: int) -> int:
    """Write all of ``data`` at ``pos``; return its length."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return len(data)


def copy_pieces(pieces: list[Piece], dst: int, pos: int, progress: Callable[[int], None]) -> int:
    """Write ``pieces`` to ``dst`` from ``pos``, file slices copied in the kernel when it can.

    Returns the position after the last byte. One source file is open at a time.
    """
    for piece in pieces:
        if isinstance(piece, bytes):
            progress(pwrite_all(dst, piece, pos))
            pos += len(piece)
            continue
        src = os.open(piece.path, os.O_RDONLY)
        try:
            _copy(src, dst, piece, pos, progress)
        finally:
            os.close(src)
        pos += piece.length
    return pos


def _copy(src: int, dst: int, piece: FileSlice, pos: int, progress: Callable[[int], None]) -> None:
    """Copy one slice: ``os.copy_file_range`` if the kernel can, else through an 8 MiB buffer."""
    offset, left, kernel = piece.offset, piece.length, True
    while left:
        n = min(left, _CHUNK)
        if kernel:
            try:
                done = os.copy_file_range(src, dst, n, offset, pos)
            except OSError as e:
                if e.errno not in _NO_COPY_FILE_RANGE:
                    raise
                kernel = False
                continue
        else:
            done = pwrite_all(dst, os.pread(src, n, offset), pos)
        if not done:
            raise BuildError(f"{piece.path} is shorter than expected: was it changed while the medium was written?")
        offset, pos, left = offset + done, pos + done, left - done
        progress(done)


def read_pieces(pieces: list[Piece], size: int = 1 << 20) -> Iterator[bytes]:
    """The content of ``pieces`` in chunks of at most ``size`` bytes, re-read from the sources."""
    for piece in pieces:
        if isinstance(piece, bytes):
            yield from (piece[i : i + size] for i in range(0, len(piece), size))
            continue
        with open(piece.path, "rb") as fp:
            fp.seek(piece.offset)
            left = piece.length
            while left:
                chunk = fp.read(min(size, left))
                if not chunk:
                    raise BuildError(f"{piece.path} is shorter than expected: was it changed?")
                left -= len(chunk)
                yield chunk
