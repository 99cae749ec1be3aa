"""Write an image and read it back from the disk while it is still being written.

The image writers put each file's data once, in the order of :func:`placement`, never going back (the
descriptors and directories are written first). So once the writer has reported a file's last byte, the
file's extent holds its final bytes: a reader thread reads them back with ``O_DIRECT`` (the kernel writes
the range's dirty pages to the disk, then reads the disk, not the page cache) and compares them with the
file's pieces re-read from the sources, while the writer goes on with the next files. When the writer is
done, the image is fsync'd, its pages dropped, and its directories parsed from the disk by a reader
independent of the writer (pycdlib for ISO 9660, :mod:`node.udf` for UDF): every file of the set must be
there, nothing else, each at the extent whose bytes were compared.

What that covers: every byte of every file, as the disk returned it after the writer's last write to it,
and the image's structures as parsed after the fsync. A change made to a file's extent after its compare
(another process writing into the temporary image before it is renamed) is not seen, as one made after the
rename is not. Where the file system refuses ``O_DIRECT``, each range is fsync'd and its pages dropped
(``POSIX_FADV_DONTNEED``) before it is read.
"""

from __future__ import annotations

import bisect
import errno
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType, TracebackType

from node.errors import BuildError
from node.media.content import Extents, MediaFile, PieceReader, Progress

#: Bytes of complete files the reader waits for before it reads (fewer at the end): the image's write-back
#: and read-back go in steps this large, behind the writer.
STEP = 8 << 20
_CHUNK = 4 << 20  # bytes read from the image at once
_ALIGN = 4096  # O_DIRECT: offsets, lengths and buffer addresses aligned for any logical block size up to 4 KiB

Placement = Sequence[tuple[MediaFile, int]]


def write_verified(path: str | os.PathLike[str], files: Sequence[MediaFile], *, writer: ModuleType, volume_id: str,
                   progress: Progress | None = None, **options: str) -> None:
    """Write the image of ``files`` to ``path`` with ``writer`` (:mod:`node.media.iso`, :mod:`node.media.udf`),
    fsync it and read it back from the disk as it is written (the module's docstring).

    Raises BuildError naming the first file missing, extra, misplaced or different, or the image that
    cannot be written or parsed.
    """
    placed = writer.placement(files, **options)
    with open(path, "wb+") as out, ReadBack(os.fspath(path), placed, progress) as reader:
        writer.write_image(files, out, volume_id=volume_id, progress=reader.progress, **options)
        out.flush()
        os.fsync(out.fileno())
        os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # the structures are parsed from the disk
        extents = writer.read_extents(path, **options)
        reader.finish()
    check_placement(files, placed, extents)


def check_placement(files: Sequence[MediaFile], placed: Placement, extents: Extents) -> None:
    """Every file of ``files`` is in ``extents`` (what an independent reader found), nothing else, each in one
    run at the offset ``placed`` gives (where its bytes were compared)."""
    expected = {f.relpath for f in files}
    if missing := sorted(expected - extents.keys()):
        raise BuildError(f"{missing[0]} is missing from the image")
    if extra := sorted(extents.keys() - expected):
        raise BuildError(f"{extra[0]} is on the image but not in the file-set")
    for f, at in placed:
        runs = _merged(extents[f.relpath])
        if runs != ([(at, f.size)] if f.size else []):
            raise BuildError(f"{f.relpath} is at {runs} on the image, written at byte {at} ({f.size} bytes)")


def _merged(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``runs`` with empty ones left out and each run that starts where the previous ends joined to it."""
    out: list[tuple[int, int]] = []
    for at, n in runs:
        if out and out[-1][0] + out[-1][1] == at:
            out[-1] = (out[-1][0], out[-1][1] + n)
        elif n:
            out.append((at, n))
    return out


class ReadBack:
    """A reader thread comparing each file of ``placed`` once the writer has written it (:meth:`progress`).

    ``progress(n)`` counts file data in the order of ``placed`` and passes ``n`` on to ``then``. Used as a
    context manager: leaving it stops the thread (the writer failed) or, after :meth:`finish`, finds it done.
    """

    def __init__(self, path: str, placed: Placement, then: Progress | None = None) -> None:
        self._path, self._placed, self._then = path, [(f, at) for f, at in placed if f.size], then
        self._ends, total = [], 0  # data bytes written when each file is complete
        for f, _ in self._placed:
            total += f.size
            self._ends.append(total)
        self._written, self._done, self._stop = 0, False, False
        self._error: BaseException | None = None
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="read-back", daemon=True)

    def __enter__(self) -> ReadBack:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join()

    def progress(self, n: int) -> None:
        """The writer's callback: ``n`` more bytes of file data written. Raises the difference found, if any,
        so that the writer stops."""
        if self._error is not None:
            raise self._error
        if self._then is not None:
            self._then(n)
        with self._wake:
            self._written += n
            self._wake.notify()

    def finish(self) -> None:
        """Wait until every file is compared; raise the first difference found."""
        with self._wake:
            self._done = True
            self._wake.notify()
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self._written < (self._ends[-1] if self._ends else 0):
            raise BuildError(f"the writer reported {self._written} bytes of file data, not {self._ends[-1]}")

    def _ready(self, first: int) -> int:
        """Wait until files from ``first`` on are written, a step of them or the last; return how many."""
        with self._wake:
            while True:
                if self._stop:
                    return 0
                complete = bisect.bisect_right(self._ends, self._written)
                base = self._ends[first - 1] if first else 0
                if complete > first and (complete == len(self._ends) or self._done
                                         or self._ends[complete - 1] - base >= STEP):
                    return complete - first
                if self._done:  # the writer is done but reported less: finish() says so
                    return 0
                self._wake.wait()

    def _run(self) -> None:
        try:
            with _Image(self._path) as image:
                compare, first = _Compare(image), 0
                while first < len(self._placed) and (count := self._ready(first)):
                    compare(self._placed[first : first + count])
                    first += count
        except BaseException as e:  # handed to finish(), in the writer's thread
            self._error = e


class _Image:
    """The image open for reading what its disk holds: ``O_DIRECT``, else fsync and drop before each read."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd, self.direct = os.open(path, os.O_RDONLY | os.O_DIRECT), True
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.fd, self.direct = os.open(path, os.O_RDONLY), False
        self.buffer = mmap.mmap(-1, _CHUNK)  # page-aligned, as O_DIRECT needs

    def __enter__(self) -> _Image:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # the buffer goes with the last view of it

    def chunks(self, start: int, end: int) -> Iterator[tuple[int, memoryview]]:
        """The bytes from ``start`` to ``end`` as the disk returns them, in (offset, bytes) chunks; fewer at the
        image's end. The chunks are aligned: the first may begin before ``start``, the last end after ``end``."""
        if not self.direct:
            os.fdatasync(self.fd)
            os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)
        pos, stop = start - start % _ALIGN, end + -end % _ALIGN
        view = memoryview(self.buffer)
        while pos < stop:
            got = os.preadv(self.fd, [view[: min(_CHUNK, stop - pos)]], pos)
            if not got:
                return
            yield pos, view[:got]
            pos += got
        if self.direct:  # the pages the writer left, clean: the compare had their bytes from the disk
            os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)


class _Compare:
    """Compares the extents of placed files with their pieces, reading the image in large aligned chunks."""

    def __init__(self, image: _Image) -> None:
        self.image, self.source = image, bytearray(_CHUNK)

    def __call__(self, run: Placement) -> None:
        """Raise BuildError unless each file of ``run`` (in image order, none empty) is on the disk as its pieces."""
        chunks = self.image.chunks(run[0][1], run[-1][1] + run[-1][0].size)
        at, view = 0, memoryview(b"")
        source = memoryview(self.source)
        for f, start in run:
            src, done = PieceReader(f), 0
            try:
                while done < f.size:
                    pos = start + done
                    while pos >= at + len(view):
                        if (chunk := next(chunks, None)) is None:
                            raise BuildError(f"{f.relpath} is cut short at byte {done}: the image is truncated")
                        at, view = chunk
                    n = min(f.size - done, at + len(view) - pos)
                    src.readinto(source[:n])
                    if not self.source.startswith(view[pos - at : pos - at + n]):  # a memcmp, copying neither side
                        raise BuildError(f"{f.relpath} differs from its source in bytes {done} to {done + n}")
                    done += n
            finally:
                src.close()
        for _ in chunks:  # the last chunk's pages dropped
            pass
