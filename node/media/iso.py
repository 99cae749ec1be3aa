"""Master a file-set into a disc image, and read the image back to check it.

ISO 9660 images (CD, DVD) come from our own streaming ECMA-119 level-1 writer:
the metadata is laid out in memory (a few dozen bytes per file), then each
file's pieces are copied by the kernel (``os.copy_file_range``) straight to
their extent, one source file open at a time.

UDF images (BD: DICOM PS3.12 asks for UDF 2.60) are a UDF 2.60 + ISO 9660
bridge mastered by pycdlib, fed by lazy file objects that open a source only
while pycdlib reads it.

``verify_image`` re-reads an image with pycdlib, independently of our writer,
and compares every file with its sources.
"""

from __future__ import annotations

import bisect
import errno
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import BinaryIO, Literal, cast

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from node.errors import BuildError
from node.media.content import FileSlice, MediaFile, Piece

SECTOR = 2048
FileSystem = Literal["iso9660", "udf"]
Progress = Callable[[int], None]

_CHUNK = 8 << 20  # the most bytes copied or held per step
_MAX_SIZE = 2**32 - 1  # ECMA-119 9.1.4: Data Length is a 32-bit field
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}
_NAME = b"MEDIANODE"
_FIRST_PATH_TABLE = 18  # 16 system-area sectors, the PVD, the terminator (ECMA-119 6.2, 6.7.1)


def _ignore(n: int) -> None:
    """The progress callback used when the caller gives none."""


# --- the file hierarchy ------------------------------------------------------


@dataclass(eq=False)
class _Dir:
    name: str  # "" for the root
    path: str  # "" for the root, else "/DICOM/P0000001"
    parent: _Dir | None
    entries: dict[str, _Dir | MediaFile] = field(default_factory=dict)
    number: int = 1  # ECMA-119 9.4: directory number in the path table
    extent: int = 0
    size: int = 0  # bytes, a whole number of sectors
    file_extents: dict[str, int] = field(default_factory=dict)


def _tree(files: Sequence[MediaFile]) -> list[_Dir]:
    """The directories in path-table order (ECMA-119 9.4: level, parent number, name), root first."""
    root = _Dir("", "", None)
    for f in files:
        if f.size > _MAX_SIZE:
            raise BuildError(f"{f.relpath} is {f.size} bytes: ISO 9660 cannot hold a file of 4 GiB or more")
        d = root
        for name in f.components[:-1]:
            sub = d.entries.get(name)
            if sub is None:
                sub = d.entries[name] = _Dir(name, f"{d.path}/{name}", d)
            elif not isinstance(sub, _Dir):
                raise BuildError(f"{f.relpath}: {sub.relpath} is a file, it cannot be a directory too")
            d = sub
        if f.components[-1] in d.entries:
            raise BuildError(f"{f.relpath} is twice in the file-set")
        d.entries[f.components[-1]] = f
    dirs = [root]
    for d in dirs:  # breadth first, children by name: the path-table order
        dirs.extend(e for _, e in sorted(d.entries.items()) if isinstance(e, _Dir))
    for number, d in enumerate(dirs, 1):
        d.number = number
    return dirs


# --- ISO 9660 layout and encoding ----------------------------------------------


def _sectors(n_bytes: int) -> int:
    return -(-n_bytes // SECTOR)


def _both(fmt: str, value: int) -> bytes:
    """A both-byte-order field (ECMA-119 7.2.3, 7.3.3)."""
    return struct.pack("<" + fmt, value) + struct.pack(">" + fmt, value)


def _records(d: _Dir) -> list[tuple[bytes, _Dir | str]]:
    """(identifier, target) of d's records: ".", "..", then by name (ECMA-119 9.3).

    A target is a directory or the name of a file of d. File identifiers are
    ``NAME.;1``: the separators are mandatory even without an extension (7.5.1).
    """
    records: list[tuple[bytes, _Dir | str]] = [(b"\0", d), (b"\1", d.parent or d)]
    for name, e in sorted(d.entries.items()):
        records.append((name.encode("ascii"), e) if isinstance(e, _Dir) else (f"{name}.;1".encode("ascii"), name))
    return records


def _record_len(ident: bytes) -> int:
    return 33 + len(ident) + (1 - len(ident) % 2)  # ECMA-119 9.1.12: pad to an even length


def _placed(records: list[tuple[bytes, _Dir | str]]) -> tuple[list[int], int]:
    """Record offsets, none spanning a sector boundary (ECMA-119 6.8.1.1), and the directory size."""
    offsets, pos = [], 0
    for ident, _ in records:
        n = _record_len(ident)
        if pos % SECTOR + n > SECTOR:
            pos += SECTOR - pos % SECTOR
        offsets.append(pos)
        pos += n
    return offsets, _sectors(pos) * SECTOR


@dataclass
class _Layout:
    dirs: list[_Dir]
    path_table_size: int
    files: list[tuple[MediaFile, int]]  # each file with its first sector, in image order
    meta_sectors: int  # everything before the first file extent
    sectors: int


def _layout(files: Sequence[MediaFile]) -> _Layout:
    """Assign every sector of the image (ECMA-119 6.2: system area, descriptors, path tables, directories, files)."""
    dirs = _tree(files)
    pt_size = sum(8 + len(d.name or "\0") + len(d.name or "\0") % 2 for d in dirs)
    extent = _FIRST_PATH_TABLE + 2 * _sectors(pt_size)
    for d in dirs:
        d.size = _placed(_records(d))[1]
        d.extent = extent
        extent += d.size // SECTOR
    meta_sectors, placed = extent, []
    for d in dirs:
        for name, e in sorted(d.entries.items()):
            if isinstance(e, MediaFile):
                d.file_extents[name] = extent if e.size else 0  # an empty file has no extent
                placed.append((e, extent))
                extent += _sectors(e.size)
    return _Layout(dirs, pt_size, placed, meta_sectors, extent)


def _directory_record(ident: bytes, extent: int, length: int, is_dir: bool, date: bytes) -> bytes:
    """ECMA-119 9.1."""
    head = struct.pack("<BB", _record_len(ident), 0) + _both("I", extent) + _both("I", length)
    tail = date + bytes([2 if is_dir else 0, 0, 0]) + _both("H", 1) + bytes([len(ident)]) + ident
    return (head + tail).ljust(_record_len(ident), b"\0")


def _directory(d: _Dir, date: bytes) -> bytes:
    records = _records(d)
    offsets, size = _placed(records)
    out = bytearray(size)
    for (ident, target), offset in zip(records, offsets):
        if isinstance(target, _Dir):
            rec = _directory_record(ident, target.extent, target.size, True, date)
        else:
            f = cast(MediaFile, d.entries[target])
            rec = _directory_record(ident, d.file_extents[target], f.size, False, date)
        out[offset : offset + len(rec)] = rec
    return bytes(out)


def _path_table(dirs: list[_Dir], order: str) -> bytes:
    """ECMA-119 9.4; ``order`` is "<" for the L table, ">" for the M table."""
    out = []
    for d in dirs:
        ident = d.name.encode("ascii") or b"\0"
        parent = d.parent.number if d.parent else 1
        out.append(struct.pack(order + "BBIH", len(ident), 0, d.extent, parent) + ident + bytes(len(ident) % 2))
    return b"".join(out)


def _metadata(lay: _Layout, volume_id: str, now: datetime) -> bytes:
    """Sectors 0 to lay.meta_sectors: system area, PVD, terminator, path tables, directories."""
    pt_sectors = _sectors(lay.path_table_size)
    l_table, m_table = _FIRST_PATH_TABLE, _FIRST_PATH_TABLE + pt_sectors
    date = bytes([now.year - 1900, now.month, now.day, now.hour, now.minute, now.second, 0])  # 9.1.5
    stamp = now.strftime("%Y%m%d%H%M%S00").encode("ascii") + b"\0"  # 8.4.26.1, UTC
    unset = b"0" * 16 + b"\0"
    root = lay.dirs[0]
    vol = volume_id.encode("ascii")
    pvd = b"".join(  # ECMA-119 8.4
        [
            b"\x01CD001\x01\0",
            _NAME.ljust(32),  # system identifier
            vol.ljust(32),
            bytes(8),
            _both("I", lay.sectors),  # volume space size
            bytes(32),
            _both("H", 1),  # volume set size
            _both("H", 1),  # volume sequence number
            _both("H", SECTOR),  # logical block size
            _both("I", lay.path_table_size),
            struct.pack("<II", l_table, 0),
            struct.pack(">II", m_table, 0),
            _directory_record(b"\0", root.extent, root.size, True, date),
            vol.ljust(128),  # volume set identifier
            _NAME.ljust(128),  # publisher
            b"".ljust(128),  # data preparer
            _NAME.ljust(128),  # application
            b"".ljust(37 * 3),  # copyright, abstract, bibliographic files
            stamp,  # creation
            stamp,  # modification
            unset,  # expiration
            unset,  # effective
            b"\x01",  # file structure version
        ]
    )
    out = bytearray(lay.meta_sectors * SECTOR)
    out[16 * SECTOR : 16 * SECTOR + len(pvd)] = pvd
    out[17 * SECTOR : 17 * SECTOR + 7] = b"\xffCD001\x01"  # terminator, 8.3
    out[l_table * SECTOR : l_table * SECTOR + lay.path_table_size] = _path_table(lay.dirs, "<")
    out[m_table * SECTOR : m_table * SECTOR + lay.path_table_size] = _path_table(lay.dirs, ">")
    for d in lay.dirs:
        out[d.extent * SECTOR : d.extent * SECTOR + d.size] = _directory(d, date)
    return bytes(out)


# --- ISO 9660 streaming --------------------------------------------------------


def _pwrite_all(fd: int, data: bytes, pos: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return len(data)


def _copy(src: int, dst: int, piece: FileSlice, pos: int, report: Progress) -> None:
    """Copy ``piece`` to ``dst`` at ``pos``: in the kernel if it can, else through an 8 MiB buffer."""
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
            done = _pwrite_all(dst, os.pread(src, n, offset), pos)
        if not done:
            raise BuildError(f"{piece.path} is shorter than expected: was it changed while the image was written?")
        offset, pos, left = offset + done, pos + done, left - done
        report(done)


def _write_file(fd: int, f: MediaFile, pos: int, report: Progress) -> None:
    for piece in f.pieces:
        if isinstance(piece, bytes):
            report(_pwrite_all(fd, piece, pos))
            pos += len(piece)
            continue
        src = os.open(piece.path, os.O_RDONLY)
        try:
            _copy(src, fd, piece, pos, report)
        finally:
            os.close(src)
        pos += piece.length
    _pwrite_all(fd, bytes(-pos % SECTOR), pos)  # pad the extent to its last sector


# --- UDF through pycdlib --------------------------------------------------------


class _LazySource:
    """A read-only file over a MediaFile's pieces, for pycdlib.

    pycdlib keeps every added file object until it writes; this one opens a
    source file only while it is being read, so one fd is open at a time. It
    has no ``fileno()``: pycdlib only seeks and reads (``utils.copy_data``),
    and a short read would end its copy silently, so ``read`` fills its
    request unless at the end of the file.
    """

    mode = "rb"  # pycdlib's add_fp insists on a binary file

    def __init__(self, f: MediaFile, report: Progress) -> None:
        self._pieces: list[Piece] = f.pieces
        self._starts: list[int] = []
        self._size = 0
        for p in f.pieces:
            self._starts.append(self._size)
            self._size += len(p) if isinstance(p, bytes) else p.length
        self._report = report
        self._pos = 0
        self._fd: int | None = None
        self._open = -1  # index of the piece whose source is open

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = offset + {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._size if size < 0 else min(self._size, self._pos + size)
        parts = []
        while self._pos < end:
            i = bisect.bisect_right(self._starts, self._pos) - 1
            piece, skip = self._pieces[i], self._pos - self._starts[i]
            if isinstance(piece, bytes):
                data = piece[skip : skip + end - self._pos]
            else:
                data = self._pread(i, piece, skip, min(end - self._pos, piece.length - skip))
            parts.append(data)
            self._pos += len(data)
            self._report(len(data))
        return b"".join(parts)

    def _pread(self, i: int, piece: FileSlice, skip: int, n: int) -> bytes:
        if self._open != i:
            self.close()
            self._fd, self._open = os.open(piece.path, os.O_RDONLY), i
        data = os.pread(cast(int, self._fd), n, piece.offset + skip)
        if not data:
            raise BuildError(f"{piece.path} is shorter than expected: was it changed while the image was written?")
        if skip + len(data) == piece.length:
            self.close()
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._open = None, -1


def _udf_iso(
    files: Sequence[MediaFile], volume_id: str, report: Progress
) -> tuple[pycdlib.PyCdlib, list[_LazySource]]:
    """A pycdlib UDF 2.60 + ISO 9660 level-1 bridge holding ``files``, not yet written."""
    dirs = _tree(files)
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=1,
        sys_ident=_NAME.decode(),
        vol_ident=volume_id,
        vol_set_ident=volume_id,
        pub_ident_str=_NAME.decode(),
        app_ident_str=_NAME.decode(),
        udf="2.60",
    )
    sources = [_LazySource(f, report) for f in files]
    where = "/"
    try:
        for d in dirs[1:]:
            where = d.path
            iso.add_directory(iso_path=where, udf_path=where)
        for f, src in zip(files, sources):
            where = f"/{f.relpath}"
            iso.add_fp(cast(BinaryIO, src), f.size, iso_path=f"{where}.;1", udf_path=where)
    except PyCdlibException as e:  # e.g. a file 8 levels deep: pycdlib allows 7 (ECMA-119 6.8.2.1 says 8 directories)
        raise BuildError(f"cannot put {where} on a UDF image: {e}") from e
    return iso, sources


# --- public API -------------------------------------------------------------


def image_sectors(files: Sequence[MediaFile], *, file_system: FileSystem) -> int:
    """The exact number of 2048-byte sectors of the image ``write_image`` would produce.

    For iso9660: the system area, volume descriptors, both path tables and the
    directories (ECMA-119 6.2, 6.8) then each file rounded up to a sector. For
    udf: pycdlib's own layout of the bridge, every UDF structure included
    (ECMA-167 3/8, 4/8). Raises BuildError if a file cannot be on the image.
    """
    if file_system == "iso9660":
        return _layout(files).sectors
    iso, _ = _udf_iso(files, "SIZE", _ignore)
    try:
        iso.force_consistency()
        return int(iso.pvd.space_size)
    finally:
        iso.close()


def write_image(
    files: Sequence[MediaFile],
    out: BinaryIO,
    *,
    volume_id: str,
    file_system: FileSystem,
    progress: Progress | None = None,
) -> None:
    """Write the whole image of ``files`` to ``out``, a real file opened "wb+".

    iso9660 is ECMA-119 level 1 (10.1); udf is a UDF 2.60 + ISO 9660 bridge.
    ``volume_id`` must be validated d-characters, at most 32 (ECMA-119 8.4.6).
    ``progress(n)`` is called as file data is written, ``n`` being the bytes
    written since the previous call. Raises BuildError on a file of 4 GiB or
    more (before writing anything), an unreadable source or an unwritable out.
    """
    report = progress or _ignore
    if file_system == "udf":
        iso, sources = _udf_iso(files, volume_id, report)
        try:
            iso.write_fp(out, blocksize=_CHUNK)
        except OSError as e:
            raise BuildError(f"cannot write the image: {e}") from e
        finally:
            for src in sources:
                src.close()
            iso.close()
        return
    lay = _layout(files)
    out.flush()
    fd, where = out.fileno(), "its metadata"
    try:
        _pwrite_all(fd, _metadata(lay, volume_id, datetime.now(timezone.utc)), 0)
        for f, extent in lay.files:
            where = f.relpath
            _write_file(fd, f, extent * SECTOR, report)
        os.ftruncate(fd, lay.sectors * SECTOR)
    except OSError as e:
        raise BuildError(f"cannot write the image ({where}): {e}") from e
    out.seek(0, os.SEEK_END)


def _listing(iso: pycdlib.PyCdlib, kind: str) -> dict[str, list[tuple[int, int]]]:
    """Every file pycdlib finds walking the ``kind`` ("iso_path", "udf_path") tree, with its byte extents."""
    found = {}
    for top, _, names in iso.walk(**{kind: "/"}):
        for name in names:
            path = f"{top.rstrip('/')}/{name}"
            runs = iso.get_file_byte_extents(**{kind: path})
            found[path[1:]] = [(start, n) for start, n in runs if n]
    return found


def _source_chunks(f: MediaFile, buf: bytearray) -> Iterator[memoryview]:
    """f's content in chunks of at most len(buf) bytes, file pieces read into ``buf``."""
    view = memoryview(buf)
    for piece in f.pieces:
        if isinstance(piece, bytes):
            yield from (memoryview(piece)[i : i + len(buf)] for i in range(0, len(piece), len(buf)))
            continue
        fd = os.open(piece.path, os.O_RDONLY)
        try:
            for pos in range(piece.offset, piece.offset + piece.length, len(buf)):
                n = os.preadv(fd, [view[: min(len(buf), piece.offset + piece.length - pos)]], pos)
                if not n:
                    raise BuildError(f"{piece.path} is shorter than expected: was it changed?")
                yield view[:n]
        finally:
            os.close(fd)


def _read_runs(img: int, runs: list[tuple[int, int]], pos: int, into: memoryview) -> int:
    """Read the image bytes at [pos, pos + len(into)) of a file stored at ``runs``; return how many."""
    filled = 0
    for start, n in runs:
        if pos >= n:
            pos -= n
            continue
        want = min(len(into) - filled, n - pos)
        got = os.preadv(img, [into[filled : filled + want]], start + pos)
        filled, pos = filled + got, 0
        if filled == len(into) or got < want:
            break
    return filled


def _compare(img: int, f: MediaFile, runs: list[tuple[int, int]], bufs: tuple[bytearray, bytearray]) -> None:
    """Raise BuildError unless the image bytes at ``runs`` are exactly f's pieces."""
    on_image = sum(n for _, n in runs)
    if on_image != f.size:
        raise BuildError(f"{f.relpath} is {on_image} bytes on the image, {f.size} in the file-set")
    source, image = bufs
    pos = 0
    for chunk in _source_chunks(f, source):
        n = _read_runs(img, runs, pos, memoryview(image)[: len(chunk)])
        if n < len(chunk):
            raise BuildError(f"{f.relpath} is cut short at byte {pos + n}: the image is truncated")
        if not image.startswith(chunk):  # a memcmp, without copying either side
            raise BuildError(f"{f.relpath} differs on the image from its source, between bytes {pos} and {pos + n}")
        pos += n


def _listings(path: str) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """pycdlib's view of the image: by name suffix (".;1" ISO 9660, "" UDF), each file's byte extents."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(path)
        try:
            views = {".;1": _listing(iso, "iso_path")}
            if iso.has_udf():
                views[""] = _listing(iso, "udf_path")
            return views
        finally:
            iso.close()
    except Exception as e:  # pycdlib trips in many ways on a damaged image: PyCdlibException, struct.error...
        raise BuildError(f"cannot read back {path}: {e}") from e


def verify_image(path: str | os.PathLike[str], files: Sequence[MediaFile]) -> None:
    """Read the image at ``path`` back with pycdlib and compare it with ``files``.

    Walks the ISO 9660 directories (ECMA-119 9.1) and, when the image has UDF,
    the UDF file set too (ECMA-167 4/14); every file of the set must be there,
    nothing else, and its bytes must equal its pieces, re-read from the
    sources. The two views of a UDF bridge must share each file's extents.
    Raises BuildError naming the first file that is missing, extra or different.
    """
    expected = {f.relpath: f for f in files}
    views = _listings(os.fspath(path))
    for suffix, found in views.items():
        names = {relpath + suffix for relpath in expected}
        if missing := sorted(names - found.keys()):
            raise BuildError(f"{missing[0]} is missing from the image")
        if extra := sorted(found.keys() - names):
            raise BuildError(f"{extra[0]} is on the image but not in the file-set")
    bufs = bytearray(_CHUNK), bytearray(_CHUNK)
    img = os.open(path, os.O_RDONLY)
    try:
        for relpath, f in expected.items():
            runs = views[".;1"][relpath + ".;1"]
            if "" in views and views[""][relpath] != runs:
                raise BuildError(f"{relpath} has different extents in the UDF and ISO 9660 directories")
            _compare(img, f, runs, bufs)
    finally:
        os.close(img)
