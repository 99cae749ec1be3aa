"""Master a file-set into a disc image, and read the image back to check it.

ISO 9660 images (CD, DVD) come from our own streaming ECMA-119 level-1 writer:
the metadata is laid out in memory (a few dozen bytes per file), then each
file's pieces are copied by the kernel (``os.copy_file_range``) straight to
their extent, one source file open at a time.

UDF images (BD) are a UDF + ISO 9660 bridge mastered by pycdlib, fed by lazy
file objects that open a source only while pycdlib reads it. pycdlib 1.22
accepts only udf="2.60" but records UDF 1.02 structures (NSR02, domain
revision 0x0102, no metadata partition), short of the UDF 2.50 / 2.60 that
DICOM PS3.12 Annex X asks for on BD-RE / BD-R.

``verify_image`` re-reads an image with pycdlib, independently of our writer,
and compares every file with its sources.
"""

from __future__ import annotations

import bisect
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import BinaryIO, Literal, cast

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from node.errors import BuildError
from node.media.content import MediaFile, copy_pieces, pwrite_all

SECTOR = 2048
FileSystem = Literal["iso9660", "udf"]
Progress = Callable[[int], None]

_CHUNK = 8 << 20  # the most bytes copied or held per step
_MAX_SIZE = 2**32 - 1  # ECMA-119 9.1.4: Data Length is a 32-bit field
_NAME = b"MEDIANODE"
_FIRST_PATH_TABLE = 18  # 16 system-area sectors, the PVD, the terminator (ECMA-119 6.2, 6.7.1)


def _ignore(n: int) -> None:
    """The progress callback used when the caller gives none."""


@dataclass(eq=False)
class _Dir:
    name: str  # "" for the root
    path: str  # "" for the root, else "/DICOM/P0000001"
    parent: _Dir | None
    entries: dict[str, _Dir | MediaFile] = field(default_factory=dict)
    number: int = 1  # ECMA-119 9.4: directory number in the path table
    extent: int = 0
    size: int = 0  # bytes, a whole number of sectors
    file_extents: dict[str, int] = field(default_factory=dict)  # by name; 0 for an empty file


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
    for number, d in enumerate(dirs, 1):  # breadth first, children by name: the path-table order
        d.number = number
        dirs.extend(e for _, e in sorted(d.entries.items()) if isinstance(e, _Dir))
    if len(dirs) > 0xFFFF:
        raise BuildError(f"{len(dirs)} directories: ISO 9660 numbers at most 65535 (ECMA-119 9.4.4)")
    return dirs


def _sectors(n_bytes: int) -> int:
    return -(-n_bytes // SECTOR)


def _both(fmt: str, value: int) -> bytes:
    """A both-byte-order field (ECMA-119 7.2.3, 7.3.3)."""
    return struct.pack("<" + fmt, value) + struct.pack(">" + fmt, value)


def _record_len(ident: bytes) -> int:
    return 33 + len(ident) + (1 - len(ident) % 2)  # ECMA-119 9.1.12: pad to an even length


def _records(d: _Dir) -> tuple[list[tuple[int, bytes, str, _Dir | MediaFile]], int]:
    """(offset, identifier, name, entry) of d's records, and d's size in bytes.

    ".", "..", then by name (ECMA-119 9.3); no record spans a sector (6.8.1.1).
    File identifiers are ``NAME.;1``: both separators are there even without
    an extension (7.5.1); directory identifiers are the bare name.
    """
    records, pos = [], 0
    dots: list[tuple[str, _Dir | MediaFile]] = [("\0", d), ("\1", d.parent or d)]  # "." and ".." (9.1.11)
    for name, e in dots + sorted(d.entries.items()):
        ident = (name if isinstance(e, _Dir) else f"{name}.;1").encode("ascii")
        if pos % SECTOR + _record_len(ident) > SECTOR:
            pos += SECTOR - pos % SECTOR
        records.append((pos, ident, name, e))
        pos += _record_len(ident)
    return records, _sectors(pos) * SECTOR


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
        d.size = _records(d)[1]
        d.extent = extent
        extent += d.size // SECTOR
    meta_sectors, placed = extent, []
    for d in dirs:
        for name, e in sorted(d.entries.items()):
            if isinstance(e, MediaFile):
                d.file_extents[name] = extent if e.size else 0  # an empty file has no extent (9.1.3)
                placed.append((e, extent))
                extent += _sectors(e.size)
    return _Layout(dirs, pt_size, placed, meta_sectors, extent)


def _directory_record(ident: bytes, extent: int, length: int, is_dir: bool, date: bytes) -> bytes:
    """ECMA-119 9.1."""
    head = struct.pack("<BB", _record_len(ident), 0) + _both("I", extent) + _both("I", length)
    tail = date + bytes([2 if is_dir else 0, 0, 0]) + _both("H", 1) + bytes([len(ident)]) + ident
    return (head + tail).ljust(_record_len(ident), b"\0")


def _directory(d: _Dir, date: bytes) -> bytes:
    records, size = _records(d)
    out = bytearray(size)
    for offset, ident, name, e in records:
        if isinstance(e, _Dir):
            rec = _directory_record(ident, e.extent, e.size, True, date)
        else:
            rec = _directory_record(ident, d.file_extents[name], e.size, False, date)
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
    l_table, m_table = _FIRST_PATH_TABLE, _FIRST_PATH_TABLE + _sectors(lay.path_table_size)
    date = bytes([now.year - 1900, now.month, now.day, now.hour, now.minute, now.second, 0])  # 9.1.5
    stamp = now.strftime("%Y%m%d%H%M%S00").encode("ascii") + b"\0"  # 8.4.26.1, UTC
    unset = b"0" * 16 + b"\0"
    root = lay.dirs[0]
    vol = volume_id.encode("ascii")
    pvd = b"".join(  # ECMA-119 8.4, field by field
        [
            b"\x01CD001\x01\0", _NAME.ljust(32), vol.ljust(32), bytes(8),  # type, system id, volume id
            _both("I", lay.sectors), bytes(32),  # volume space size
            _both("H", 1), _both("H", 1), _both("H", SECTOR),  # set size, sequence number, block size
            _both("I", lay.path_table_size), struct.pack("<II", l_table, 0), struct.pack(">II", m_table, 0),
            _directory_record(b"\0", root.extent, root.size, True, date),
            vol.ljust(128), _NAME.ljust(128), b"".ljust(128), _NAME.ljust(128),  # set, publisher, preparer, app
            b"".ljust(37 * 3),  # copyright, abstract, bibliographic file identifiers
            stamp, stamp, unset, unset, b"\x01",  # created, modified, expires, effective; structure version
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


class _Source:
    """A MediaFile's content as a read-only file that opens a source only while reading it.

    pycdlib keeps every added file object until it writes: with these, one
    source fd is open at a time. It has no ``fileno()``: pycdlib seeks and
    reads (``utils.copy_data``), taking a short read for the end of the data,
    so ``read`` and ``readinto`` fill their request unless at the end.
    """

    mode = "rb"  # pycdlib's add_fp insists on a binary file

    def __init__(self, f: MediaFile, report: Progress = _ignore) -> None:
        self._pieces, self._starts, self._size = f.pieces, [], 0
        for p in f.pieces:
            self._starts.append(self._size)
            self._size += len(p) if isinstance(p, bytes) else p.length
        self._report = report
        self._pos, self._fd, self._open = 0, -1, -1  # _open: index of the piece whose source is _fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = offset + {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytearray:
        buf = bytearray(self._size - self._pos if size < 0 else min(size, self._size - self._pos))
        self.readinto(memoryview(buf))
        return buf

    def readinto(self, view: memoryview) -> int:
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
            self._report(n)
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._open = -1, -1


def _udf_iso(files: Sequence[MediaFile], volume_id: str, report: Progress) -> tuple[pycdlib.PyCdlib, list[_Source]]:
    """A pycdlib UDF + ISO 9660 level-1 bridge holding ``files``, not yet written."""
    dirs = _tree(files)
    iso = pycdlib.PyCdlib()
    name = _NAME.decode()
    iso.new(interchange_level=1, sys_ident=name, vol_ident=volume_id, vol_set_ident=volume_id,
            pub_ident_str=name, app_ident_str=name, udf="2.60")  # fmt: skip
    sources = [_Source(f, report) for f in files]
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

    iso9660 is ECMA-119 level 1 (10.1); udf is pycdlib's UDF + ISO 9660 bridge.
    ``volume_id`` must be validated d-characters, at most 32 (ECMA-119 8.4.6).
    ``progress(n)`` is called as file data is written, ``n`` being the bytes
    written since the previous call. Raises BuildError on a file of 4 GiB or
    more (before writing anything), an unreadable source or an unwritable out.
    """
    report = progress or _ignore
    if file_system == "udf":
        iso, sources = _udf_iso(files, volume_id, report)
        try:
            out.seek(0)
            out.truncate()  # pycdlib seeks over what it has nothing to write: that must read as zeros
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
        os.ftruncate(fd, 0)  # what is not written (the end of each file's last sector) then reads as zeros
        pwrite_all(fd, _metadata(lay, volume_id, datetime.now(timezone.utc)), 0)
        for f, extent in lay.files:
            where = f.relpath
            copy_pieces(f.pieces, fd, extent * SECTOR, report)
        os.ftruncate(fd, lay.sectors * SECTOR)
    except OSError as e:
        raise BuildError(f"cannot write the image ({where}): {e}") from e
    out.seek(0, os.SEEK_END)


def _compare(img: int, f: MediaFile, runs: list[tuple[int, int]], bufs: tuple[bytearray, bytearray]) -> None:
    """Raise BuildError unless the image bytes at ``runs`` are exactly f's pieces."""
    on_image = sum(n for _, n in runs)
    if on_image != f.size:
        raise BuildError(f"{f.relpath} is {on_image} bytes on the image, {f.size} in the file-set")
    image, source = bufs
    src, done = _Source(f), 0
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


def _listings(path: str) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """pycdlib's view of the image: for the ISO 9660 tree (key ".;1", its name suffix) and the UDF
    one if any (key ""), every file's path and the (offset, length) runs of its bytes."""
    views: dict[str, dict[str, list[tuple[int, int]]]] = {}
    iso = pycdlib.PyCdlib()
    try:
        iso.open(path)
        try:
            kinds = {".;1": "iso_path", "": "udf_path"} if iso.has_udf() else {".;1": "iso_path"}
            for suffix, kind in kinds.items():
                views[suffix] = {}
                for top, _, names in iso.walk(**{kind: "/"}):
                    for name in (f"{top.rstrip('/')}/{n}" for n in names):
                        runs = iso.get_file_byte_extents(**{kind: name})
                        views[suffix][name[1:]] = [(start, n) for start, n in runs if n]
        finally:
            iso.close()
    except Exception as e:  # pycdlib trips in many ways on a damaged image: PyCdlibException, struct.error...
        raise BuildError(f"cannot read back {path}: {e}") from e
    return views


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
