"""Master a file-set into a disc image, and read the image back to check it.

ISO 9660 images (CD, DVD) come from our own streaming ECMA-119 level-1 writer:
the metadata is laid out in memory (a few dozen bytes per file), then each
file's pieces are copied by the kernel (``os.copy_file_range``) straight to
their extent, one source file open at a time.

``read_extents`` reads an image's directories with pycdlib, independently of
our writer; ``verify_image`` also compares every file with its sources (a burn
reads back as it writes: node.media.readback). (BD images are UDF: see udf.py.)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import BinaryIO

from node.errors import BuildError
from node.media.content import Extents, MediaFile, Progress, copy_pieces, pwrite_all, verify_extents
from node.profiles import SECTOR

#: The module ``read_extents`` reads with, independent of this writer.
READER = "pycdlib"
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
    an extension (7.5.1), and ``NAME.EXT;1`` with one (IHE PDI's README.TXT);
    directory identifiers are the bare name.
    """
    records, pos = [], 0
    dots: list[tuple[str, _Dir | MediaFile]] = [("\0", d), ("\1", d.parent or d)]  # "." and ".." (9.1.11)
    for name, e in dots + sorted(d.entries.items()):
        ident = (name if isinstance(e, _Dir) else f"{name};1" if "." in name else f"{name}.;1").encode("ascii")
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


def image_sectors(files: Sequence[MediaFile]) -> int:
    """The exact number of 2048-byte sectors of the image ``write_image`` would produce.

    The system area, volume descriptors, both path tables and the directories
    (ECMA-119 6.2, 6.8), then each file rounded up to a sector. Raises
    BuildError if a file cannot be on the image.
    """
    return _layout(files).sectors


def write_image(
    files: Sequence[MediaFile],
    out: BinaryIO,
    *,
    volume_id: str,
    progress: Progress | None = None,
) -> None:
    """Write the whole image of ``files`` to ``out``, a real file opened "wb+".

    ECMA-119 level 1 (10.1).
    ``volume_id`` must be validated d-characters, at most 32 (ECMA-119 8.4.6).
    ``progress(n)`` is called as file data is written, ``n`` being the bytes
    written since the previous call. Raises BuildError on a file of 4 GiB or
    more (before writing anything), an unreadable source or an unwritable out.
    """
    report = progress or _ignore
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


def placement(files: Sequence[MediaFile]) -> list[tuple[MediaFile, int]]:
    """Each file with the byte offset of its extent, in the order ``write_image`` writes them."""
    return [(f, extent * SECTOR) for f, extent in _layout(files).files]


def read_extents(path: str | os.PathLike[str]) -> Extents:
    """Every file of the image at ``path``, as pycdlib finds it walking the ISO 9660 directories (ECMA-119
    9.1) independently of our writer: its path without the version (``DICOM/P0000001/...``) -> its
    (byte offset, length) runs. Raises BuildError on an image pycdlib cannot read."""
    import pycdlib  # loaded when an image is read back, after the scan and the writing

    extents: Extents = {}
    iso = pycdlib.PyCdlib()
    try:
        iso.open(os.fspath(path))
        try:
            for top, _, names in iso.walk(iso_path="/"):
                for name in (f"{top.rstrip('/')}/{n}" for n in names):
                    runs = iso.get_file_byte_extents(iso_path=name)
                    extents[name[1:].removesuffix(";1").removesuffix(".")] = [(start, n) for start, n in runs if n]
        finally:
            iso.close()
    except Exception as e:  # pycdlib trips in many ways on a damaged image: PyCdlibException, struct.error...
        raise BuildError(f"cannot read back {path}: {e}") from e
    return extents


def verify_image(path: str | os.PathLike[str], files: Sequence[MediaFile]) -> None:
    """Read the image at ``path`` back with pycdlib and compare it with ``files``.

    Every file of the set must be there (:func:`read_extents`), nothing else, and its bytes must equal its
    pieces, re-read from the sources. Raises BuildError naming the first file that is missing, extra or
    different.
    """
    verify_extents(path, files, read_extents(path))
