"""A file of an image read in place: its byte runs, read with ``os.pread``.

No file position of the image is shared, so any number of its files may be open
at once. Small reads (a header's) are served from a 64 KiB window, large ones (a
data set's pieces) read straight. The object has no ``name`` and is no
``io.BufferedReader``: pydicom reads a deferred value of a named file object by
opening that name again, and of this one by seeking the object itself.

>>> import tempfile
>>> with tempfile.TemporaryFile() as image:
...     _ = image.write(b"..abc..de"); image.flush()
...     f = Extents(image.fileno(), [(2, 3), (None, 2), (7, 2)], 7)
...     f.read(), f.seek(4), f.read(2)
(b'abc\\x00\\x00de', 4, b'\\x00d')
"""

from __future__ import annotations

import errno
import io
import os
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

#: Bytes read at once for small reads.
WINDOW = 64 * 1024


class Extents(io.RawIOBase):
    """``size`` bytes made of ``runs`` of the image open as ``fd``: (byte offset, length) each, an offset
    of None for bytes never recorded (read as zeros). A read past the image's end is an OSError (EIO)."""

    def __init__(self, fd: int, runs: Sequence[tuple[int | None, int]], size: int) -> None:
        super().__init__()
        self._fd, self._runs, self._size, self._pos = fd, runs, size, 0
        self._starts = list(accumulate((n for _, n in runs), initial=0))[:-1]
        self._window, self._window_at = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = max(0, self._size - self._pos)
        size = left if size is None or size < 0 else min(size, left)
        if size >= WINDOW:
            data = self._pread(self._pos, size)
        else:
            skip = self._pos - self._window_at
            if not 0 <= skip <= len(self._window) - size:
                self._window_at, skip = self._pos, 0
                self._window = self._pread(self._pos, min(WINDOW, left))
            data = self._window[skip : skip + size]
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer).cast("B")))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _pread(self, pos: int, n: int) -> bytes:
        """``n`` bytes of the file from ``pos``, across its runs."""
        pieces = []
        while n:
            i = bisect_right(self._starts, pos) - 1
            at, length = self._runs[i]
            skip = pos - self._starts[i]
            want = min(n, length - skip)
            if at is None:
                data = bytes(want)
            elif not (data := os.pread(self._fd, want, at + skip)):
                raise OSError(errno.EIO, f"the image ends inside a file, at byte {at + skip}")
            pieces.append(data)
            pos, n = pos + len(data), n - len(data)
        return b"".join(pieces)
