"""Write an image and read it back from the disk while it is still being written.

The image writers put each file's data once, in the order of their ``placement``, never going back (the
descriptors and directories are written first). So once the writer is past a file (past the memory page
holding its last byte, which the next file may share), the file's extent holds its final bytes: a reader
thread has the kernel write that range to the disk and waits for it (:func:`node.durable.write_back`),
drops its pages from the page cache (``POSIX_FADV_DONTNEED``), reads it, so from the disk, and compares it with the file's pieces re-read from the sources, while the writer goes on with the
next files. When the writer is done, the image is fsync'd, its pages dropped, and its directories parsed
from the disk by a reader independent of the writer (pycdlib for ISO 9660, :mod:`node.udf` for UDF): every
file of the set must be there, nothing else, each at the extent whose bytes were compared.

What that covers: every byte of every file, as the disk returned it after the writer's last write to it,
and the image's structures as parsed after the fsync. A change made to a file's extent after its compare
(another process writing into the temporary image before it is renamed) is not seen, as one made after
the rename is not.
"""

from __future__ import annotations

import bisect
import importlib
import itertools
import mmap
import os
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType, TracebackType

from node.durable import write_back
from node.errors import BuildError
from node.media.content import Extents, MediaFile, PieceReader, Progress

#: Bytes of complete files the reader waits for before it reads (fewer at the end): the image's write-back
#: and read-back go in steps this large, behind the writer.
STEP = 32 << 20
_CHUNK = 4 << 20  # bytes read from the image at once

Placement = Sequence[tuple[MediaFile, int]]


def write_verified(path: str | os.PathLike[str], files: Sequence[MediaFile], *, writer: ModuleType, volume_id: str,
                   progress: Progress | None = None, **options: str) -> None:
    """Write the image of ``files`` to ``path`` with ``writer`` (:mod:`node.media.iso`, :mod:`node.media.udf`),
    fsync it and read it back from the disk as it is written (the module's docstring).

    Raises BuildError naming the first file missing, extra, misplaced or different, or the image that
    cannot be written or parsed.
    """
    placed = writer.placement(files, **options)
    # The independent reader (pycdlib: 0.02 s to import) is loaded while the kernel copies the files.
    loading = threading.Thread(target=importlib.import_module, args=(writer.READER,), daemon=True)
    loading.start()
    with open(path, "wb+") as out, ReadBack(os.fspath(path), placed, progress) as reader:
        writer.write_image(files, out, volume_id=volume_id, progress=reader.progress, **options)
        out.flush()
        os.fsync(out.fileno())
        os.posix_fadvise(out.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # the structures are parsed from the disk
        loading.join()
        extents = writer.read_extents(path)
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
    """A reader thread comparing each file of ``placed`` once the writer is past it (:meth:`progress`).

    ``progress(n)`` counts file data in the order of ``placed`` and passes ``n`` on to ``then``. A file is
    compared once the writer has moved past the memory page holding its last byte (the next file may
    begin in that page), in steps of :data:`STEP` bytes. Used as a context manager: leaving it stops the
    thread (the writer failed) or, after :meth:`finish`, finds it done.
    """

    def __init__(self, path: str, placed: Placement, then: Progress | None = None) -> None:
        self._path, self._then = path, then
        self._placed = [(f, at) for f, at in placed if f.size]
        self._ends = list(itertools.accumulate(f.size for f, _ in self._placed))  # data written when each is done
        self._final = [-(-(at + f.size) // mmap.PAGESIZE) * mmap.PAGESIZE for f, at in self._placed]
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

    def _position(self) -> int:
        """The image's first byte the writer may still write (the data of the first file not complete)."""
        complete = bisect.bisect_right(self._ends, self._written)
        if self._done or complete == len(self._placed):
            return 1 << 63
        return self._placed[complete][1] + self._written - (self._ends[complete - 1] if complete else 0)

    def _ready(self, first: int) -> int:
        """Wait until files from ``first`` on are final, a step of them or the last; return how many are."""
        with self._wake:
            while not self._stop:
                final = bisect.bisect_right(self._final, self._position())
                base = self._ends[first - 1] if first else 0
                if final > first and (final == len(self._placed) or self._ends[final - 1] - base >= STEP):
                    return final - first
                if self._done:  # the writer is done but reported less: finish() says so
                    return 0
                self._wake.wait()
            return 0

    def _run(self) -> None:
        try:
            with _Image(self._path) as image:
                compare, first = _Compare(image), 0
                while first < len(self._placed) and (final := self._ready(first)):
                    base = self._ends[first - 1] if first else 0
                    count = min(final, bisect.bisect_left(self._ends, base + STEP, first) + 1 - first)
                    if count < final:  # the disk writes the next step while this one is compared
                        step = bisect.bisect_left(self._ends, self._ends[first + count - 1] + STEP, first + count)
                        image.write_back(self._placed[first + count][1], self._final[min(first + final - 1, step)])
                    compare(self._placed[first : first + count])
                    first += count
        except BaseException as e:  # handed to finish(), in the writer's thread
            self._error = e


class _Image:
    """The image open for reading what its disk holds: each range written back, dropped from the page cache,
    then read (the reads go to the disk)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.buffer = bytearray(_CHUNK)

    def __enter__(self) -> _Image:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write_back(self, start: int, end: int) -> None:
        """Start writing the range back, not waiting for it."""
        write_back(self.fd, start, end - start)

    def chunks(self, start: int, end: int) -> Iterator[tuple[int, memoryview]]:
        """The bytes from ``start`` to ``end`` as the disk returns them, in (offset, bytes) chunks; fewer at
        the image's end."""
        write_back(self.fd, start, end - start, wait=True)
        os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)
        view, pos = memoryview(self.buffer), start
        while pos < end:
            got = os.preadv(self.fd, [view[: min(_CHUNK, end - pos)]], pos)
            if not got:
                return
            yield pos, view[:got]
            pos += got
        os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)  # read once: no need to keep it


class _Compare:
    """Compares the extents of placed files with their pieces, reading the image in large chunks."""

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
        for _ in chunks:  # to its end: the pages read are dropped
            pass
