"""What goes onto a medium: files described as pieces, never held in memory whole.

A file on a medium is usually a new File Meta header (a few hundred bytes)
followed by the dataset bytes of the source file, untouched. Describing it as
``[b"<new header>", FileSlice(src, offset, length)]`` lets the writers stream it
straight from the source into the image (``os.copy_file_range``), keeping memory
bounded whatever the size of the set (DESIGN.md invariant 4).
"""

from __future__ import annotations

import bisect
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from node.errors import BuildError

#: Called with the number of bytes just written, for a progress bar.
Progress = Callable[[int], None]


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
_VERIFY_THREADS = 2
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


def pwrite_all(fd: int, data: bytes | memoryview, pos: int) -> int:
    """Write all of ``data`` at ``pos``; return its length."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return len(data)


def copy_pieces(pieces: list[Piece], dst: int, pos: int, progress: Progress) -> int:
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


def _copy(src: int, dst: int, piece: FileSlice, pos: int, progress: Progress) -> None:
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


class PieceReader:
    """A MediaFile's content read in order, opening one source at a time (for read-back checks)."""

    def __init__(self, f: MediaFile) -> None:
        self._pieces, self._starts, self._size = f.pieces, [], 0
        for p in f.pieces:
            self._starts.append(self._size)
            self._size += len(p) if isinstance(p, bytes) else p.length
        self._pos, self._fd, self._open = 0, -1, -1  # _open: index of the piece whose source is _fd

    def readinto(self, view: memoryview) -> int:
        """Fill ``view`` (short only at the end); raise BuildError if a source got shorter."""
        done = 0
        while done < len(view) and self._pos < self._size:
            i = bisect.bisect_right(self._starts, self._pos) - 1  # the last piece starting here: skips empty ones
            piece, skip = self._pieces[i], self._pos - self._starts[i]
            if isinstance(piece, bytes):
                n = min(len(view) - done, len(piece) - skip)
                view[done : done + n] = memoryview(piece)[skip : skip + n]
            else:
                if self._open != i:
                    self.close()
                    self._fd, self._open = os.open(piece.path, os.O_RDONLY), i
                n = os.preadv(self._fd, [view[done : done + piece.length - skip]], piece.offset + skip)
                if not n:
                    raise BuildError(f"{piece.path} is shorter than expected: was it changed meanwhile?")
                if skip + n == piece.length:
                    self.close()
            done, self._pos = done + n, self._pos + n
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._open = -1, -1


Extents = dict[str, list[tuple[int, int]]]


def verify_extents(image: str | os.PathLike[str], files: Sequence[MediaFile], extents: Extents) -> None:
    """Compare each file of the set with the image bytes a reader found for it.

    ``extents`` maps each relpath found on the image to its (byte offset,
    length) runs, as an independent reader of the image's directories saw them.
    Every file must be there, nothing else, and equal its pieces re-read from
    the sources. Raises BuildError naming the first file that differs.
    """
    expected = {f.relpath: f for f in files}
    if missing := sorted(expected.keys() - extents.keys()):
        raise BuildError(f"{missing[0]} is missing from the image")
    if extra := sorted(extents.keys() - expected.keys()):
        raise BuildError(f"{extra[0]} is on the image but not in the file-set")
    order = list(expected.values())

    def compare_share(share: list[MediaFile]) -> None:
        compare = Comparer()
        fd = os.open(image, os.O_RDONLY)
        try:
            for f in share:
                compare(fd, f, extents[f.relpath])
        finally:
            os.close(fd)

    from concurrent.futures import ThreadPoolExecutor  # a burn reads back as it writes (node.media.readback)

    # Two readers: the reads release the GIL, so the second core works too.
    with ThreadPoolExecutor(_VERIFY_THREADS) as pool:
        for done in [pool.submit(compare_share, order[i::_VERIFY_THREADS]) for i in range(_VERIFY_THREADS)]:
            done.result()


class Comparer:
    """Compares written bytes with a file's pieces through two reused buffers (a memcmp, no copies)."""

    def __init__(self) -> None:
        self.bufs = bytearray(_CHUNK), bytearray(_CHUNK)

    def __call__(self, img: int, f: MediaFile, runs: list[tuple[int, int]]) -> None:
        """Raise BuildError unless the bytes of ``img`` at ``runs`` are exactly f's pieces."""
        on_image = sum(n for _, n in runs)
        if on_image != f.size:
            raise BuildError(f"{f.relpath} is {on_image} bytes on the image, {f.size} in the file-set")
        image, source = self.bufs
        src, done = PieceReader(f), 0
        try:
            for start, length in runs:
                for pos in range(start, start + length, len(image)):
                    n = min(len(image), start + length - pos)
                    got = os.preadv(img, [memoryview(image)[:n]], pos)
                    src.readinto(memoryview(source)[:n])
                    if got < n:
                        raise BuildError(f"{f.relpath} is cut short at byte {done + got}: the image is truncated")
                    if not image.startswith(memoryview(source)[:n]):  # a memcmp, copying neither side
                        raise BuildError(f"{f.relpath} differs from its source in bytes {done} to {done + n}")
                    done += n
        finally:
            src.close()
