"""Master a file-set into a UDF 2.60 image for BD (DICOM PS3.12 STD-GEN-BD), streamed by us.

The image is UDF only, no ISO 9660 bridge: PS3.12 asks for UDF 2.60 on BD,
and every reader of it reads UDF. It is a read-only volume of OSTA UDF 2.60
(on ECMA-167 3rd edition), laid out for a BD-R written in one pass:

======================  ==========================================================
sector 16..18           Volume Recognition Sequence: BEA01, NSR03, TEA01 (2/9)
sectors 32.., 48..      Main and Reserve Volume Descriptor Sequences (3/10, UDF 2.2)
sector 64..             Logical Volume Integrity Sequence, closed (3/10.10)
sector 256, last        Anchor Volume Descriptor Pointers (3/8.4.2.1, 3/10.2)
sector 288..            the read-only partition (ECC-block aligned):
  block 0                 Metadata File entry (UDF 2.2.13.1, file type 250)
  block 32..              metadata extent: FSD, directories and every file entry
  then                    each file's data, contiguous, in extents below 1 GiB,
                          and amid them the Metadata Mirror: a second copy of
                          the metadata extent, then its entry (file type 251)
======================  ==========================================================

The mirror sits in the middle of the data, away from the metadata extent,
yet never last: a reader that looks past the last file's data for the final
anchor (7-Zip) finds only zeros there, not metadata it does not know about.

The logical volume has two partition maps (3/10.7, UDF 2.2.4): a Type 1 map of the
physical partition (reference 0) and the Metadata Partition Map (reference 1,
UDF 2.2.10) that UDF 2.50 and later require: all file entries and directory
data live in the metadata partition. Entries are Extended File Entries
(4/14.17); names are OSTA CS0 with 8-bit compression (UDF 2.1.1).

Only metadata is built in memory, one directory at a time; file data is
copied by the kernel (``os.copy_file_range``) straight from the sources.
``read_listing`` re-reads an image with the node's UDF reader (``node.udf``), checking every tag.
"""

from __future__ import annotations

import binascii
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import BinaryIO, Literal

from node.errors import BuildError, MediumError
from node.media.content import MediaFile, Progress, copy_pieces, pwrite_all, verify_extents
from node.profiles import SECTOR
from node.udf import Volume

_REVISION = 0x0260  # UDF 2.1.5.3: the revision in binary-coded decimal
_MAX_EXTENT = 2**30 - SECTOR  # 4/14.14.1.1: an extent is shorter than 2^30 bytes, whole blocks
_UNIT = 32  # blocks of a BD ECC block: the metadata allocation and alignment unit (UDF 2.2.10)
_MAX_META_EXTENT = 2**30 - _UNIT * SECTOR  # a metadata extent is also whole units
_VRS, _MAIN_VDS, _RESERVE_VDS, _INTEGRITY = 16, 32, 48, 64  # sectors
_VDS_SECTORS, _INTEGRITY_SECTORS = 16, 4  # UDF 2.2.3: each VDS at least 16 sectors; 8 KiB for the LVID
_ANCHOR, _PARTITION = 256, 288
_FIRST_UNIQUE_ID = 16  # UDF 3.2.1.1: 0 is the root's, 1 to 15 are reserved
_FILE_PERMS = 0x1084  # 4/14.9.5: read for owner, group and others
_DIR_PERMS = 0x14A5  # read and execute for all
_UNSPECIFIED = 0xFFFFFFFF  # UDF 3.3.3.1 (uid, gid); UDF 2.2.10 (no Metadata Bitmap File)
_UNIX_LINUX = bytes([4, 5])  # UDF 6.3: OS class UNIX, OS identifier Linux

# descriptor tag identifiers (3/7.2.1, 4/7.2.1)
_PVD, _AVDP, _IUVD, _PD, _LVD, _USD, _TD, _LVID = 1, 2, 4, 5, 6, 7, 8, 9
_FSD, _FID, _EFE = 256, 257, 266
# ICB file types (4/14.6.6, UDF 2.2.13.1) and allocation descriptor types (4/14.6.8)
_DIRECTORY, _FILE, _METADATA, _MIRROR = 4, 5, 250, 251
_SHORT_AD, _LONG_AD = 0, 1
_PHYSICAL, _META = 0, 1  # partition reference numbers: the order of the partition maps


def _ignore(n: int) -> None:
    """The progress callback used when the caller gives none."""


def _blocks(n_bytes: int) -> int:
    return -(-n_bytes // SECTOR)


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


# ---- basic structures (ECMA-167 part 1, 3/7, 4/14.14; UDF 2.1) ----


def _tag(ident: int, location: int, body: bytes) -> bytes:
    """A whole descriptor: the 16-byte tag (3/7.2; version 3 for NSR03) then ``body``.

    The CRC (CRC-16 CCITT, 3/7.2.6) covers the body; the checksum the tag's other 15 bytes.
    """
    head = struct.pack("<HHBBHHHI", ident, 3, 0, 0, 0, binascii.crc_hqx(body, 0), len(body), location)
    return head[:4] + bytes([sum(head) & 0xFF]) + head[5:] + body


def _charspec() -> bytes:
    """1/7.2.1, UDF 2.1.2: CS0, "OSTA Compressed Unicode"."""
    return b"\0" + b"OSTA Compressed Unicode".ljust(63, b"\0")


def _cs0(name: str) -> bytes:
    """UDF 2.1.1: OSTA Compressed Unicode, compression ID 8 (one byte a character)."""
    return b"\x08" + name.encode("latin-1")


def _dstring(text: str, size: int) -> bytes:
    """1/7.2.12, UDF 2.1.3: ``text`` in CS0, cut to fit, the used length in the last byte."""
    data = _cs0(text)[: size - 1] if text else b""
    return data.ljust(size - 1, b"\0") + bytes([len(data)])


def _regid(ident: str, suffix: bytes) -> bytes:
    """1/7.4, UDF 2.1.5: an entity identifier."""
    return b"\0" + ident.encode("ascii").ljust(23, b"\0") + suffix.ljust(8, b"\0")


def _udf_regid(ident: str) -> bytes:
    """UDF 2.1.5.3: a UDF identifier, its suffix the revision, OS class and OS identifier."""
    return _regid(ident, struct.pack("<H", _REVISION) + _UNIX_LINUX)


_DOMAIN = _regid("*OSTA UDF Compliant", struct.pack("<HB", _REVISION, 0))  # UDF 2.1.5.3, no write-protect flags
_IMPLEMENTATION = _regid("*medianode", _UNIX_LINUX)  # UDF 2.1.5.3: implementation identifier suffix


def _timestamp(t: datetime) -> bytes:
    """1/7.3, UDF 2.1.4: type 1 (local time) with an offset of 0 minutes, that is UTC."""
    centi, rest = divmod(t.microsecond, 10_000)
    return struct.pack("<HhBBBBBBBB", 0x1000, t.year, t.month, t.day, t.hour, t.minute, t.second,
                       centi, *divmod(rest, 100))  # fmt: skip


def _extent_ad(length: int, location: int) -> bytes:
    """3/7.1."""
    return struct.pack("<II", length, location)


def _long_ad(length: int, block: int, partition: int, unique_id: int = 0) -> bytes:
    """4/14.14.2; its implementation use is UDF 2.3.10.1's ADImpUse: flags, then the UDF Unique ID."""
    return struct.pack("<IIHHI", length, block, partition, 0, unique_id & 0xFFFFFFFF)


def _runs(first_block: int, size: int, most: int = _MAX_EXTENT) -> Iterator[tuple[int, int]]:
    """(length, block) of the extents holding ``size`` bytes from ``first_block``, each at most ``most``."""
    done = 0
    while done < size:
        length = min(most, size - done)
        yield length, first_block + done // SECTOR
        done += length


# ---- the layout ----


@dataclass(eq=False)
class _Dir:
    path: str  # "" for the root, else "/DICOM/PA000000"
    parent: _Dir | None
    dirs: dict[str, _Dir] = field(default_factory=dict)
    files: dict[str, _File] = field(default_factory=dict)
    icb: int = 0  # metadata block of its entry; its File Identifier Descriptors follow
    unique_id: int = 0

    def entries(self) -> list[tuple[str, _Dir | _File]]:
        return sorted([*self.dirs.items(), *self.files.items()])

    def size(self) -> int:
        """Bytes of its FIDs: the parent FID, then one a child (4/14.4, padded to 4 bytes)."""
        return _fid_length(b"") + sum(_fid_length(_cs0(name)) for name, _ in self.entries())


@dataclass(eq=False)
class _File:
    media: MediaFile
    size: int
    icb: int = 0  # metadata block of its entry
    unique_id: int = 0
    start: int = 0  # physical partition block of its data


@dataclass
class _Layout:
    dirs: list[_Dir]  # breadth first, the root first
    files: list[_File]  # in the order of their data
    meta_blocks: int  # of the metadata extent, whole allocation units
    mirror: int  # partition block of the Metadata Mirror extent; its entry follows it
    partition_blocks: int
    sectors: int  # of the whole image
    next_unique_id: int


def _tree(files: Sequence[MediaFile]) -> _Dir:
    root = _Dir("", None)
    for f in files:
        for name in f.components:
            if not name or not name.isascii() or len(name) > 254:  # 4/14.4.4: L_FI is a byte, the 8 counts
                raise BuildError(f"{f.relpath}: {name!r} cannot be a UDF file identifier")
        d = root
        for name in f.components[:-1]:
            if name in d.files:
                raise BuildError(f"{f.relpath}: {d.path}/{name} is a file, it cannot be a directory too")
            d = d.dirs.setdefault(name, _Dir(f"{d.path}/{name}", d))
        name = f.components[-1]
        if name in d.dirs:
            raise BuildError(f"{f.relpath} is a directory, it cannot be a file too")
        if name in d.files:
            raise BuildError(f"{f.relpath} is twice in the file-set")
        d.files[name] = _File(f, f.size)
    return root


def _layout(files: Sequence[MediaFile]) -> _Layout:
    """Assign every block: metadata partition blocks to entries and FIDs, partition blocks to data."""
    dirs, placed = [_tree(files)], []
    block, unique_id = 2, _FIRST_UNIQUE_ID  # metadata blocks 0 and 1: the FSD and its terminator
    for d in dirs:  # breadth first, children by name
        d.icb, block = block, block + 1 + _blocks(d.size())
        if d.parent:
            d.unique_id, unique_id = unique_id, unique_id + 1
        for _, f in sorted(d.files.items()):
            f.icb, f.unique_id = block, unique_id
            block, unique_id = block + 1, unique_id + 1
            placed.append(f)
        dirs.extend(sub for _, sub in sorted(d.dirs.items()))
    meta_blocks = _round_up(block, _UNIT)
    first = data = _UNIT + meta_blocks  # the Metadata File entry at block 0, its extent at the first whole unit
    half, mirror = sum(_blocks(f.size) for f in placed) // 2, -1
    for f in placed:  # the mirror goes amid the data, the file crossing the middle after it
        if mirror < 0 and data - first + _blocks(f.size) >= half:
            mirror = _round_up(data, _UNIT)
            data = mirror + meta_blocks + 1
        f.start, data = data, data + _blocks(f.size)
    if mirror < 0:  # no file
        mirror = _round_up(data, _UNIT)
        data = mirror + meta_blocks + 1
    partition_blocks = data
    sectors = _PARTITION + partition_blocks + 1  # and the last sector for the second anchor
    if sectors > 2**32:
        raise BuildError(f"{sectors} sectors: UDF addresses at most 2^32 blocks (8 TiB)")
    if crowded := [d.path or "/" for d in dirs if len(d.dirs) >= 0xFFFF]:
        raise BuildError(f"{crowded[0]} has too many subdirectories: a link count is 16 bits (4/14.9.6)")
    return _Layout(dirs, placed, meta_blocks, mirror, partition_blocks, sectors, unique_id)


def image_sectors(files: Sequence[MediaFile]) -> int:
    """The exact number of 2048-byte sectors of the image ``write_image`` would produce.

    Needs only the sizes of the pieces, not their content. Raises BuildError if
    the file-set cannot be a UDF file system (a name twice, a file used as a
    directory, an identifier UDF cannot hold, more than 8 TiB).
    """
    return _layout(files).sectors


# ---- volume structure (ECMA-167 part 2 and 3, UDF 2.2) ----


def _vrs() -> bytes:
    """2/9.1-9.3, 3/9.1: BEA01, NSR03 (ECMA-167 3rd edition), TEA01, a 2048-byte descriptor each."""
    return b"".join(b"\0" + name + b"\x01".ljust(SECTOR - 6, b"\0") for name in (b"BEA01", b"NSR03", b"TEA01"))


def _pvd(location: int, volume_id: str, volume_set_id: str, now: datetime) -> bytes:
    """3/10.1, UDF 2.2.2: interchange level 2, at most 3; CS0 only."""
    return _tag(_PVD, location, b"".join([
        struct.pack("<II", 1, 0), _dstring(volume_id, 32),  # sequence number, PVD number, volume id
        struct.pack("<HHHHII", 1, 1, 2, 3, 1, 1), _dstring(volume_set_id, 128),
        _charspec(), _charspec(), bytes(16), _IMPLEMENTATION,  # no abstract nor copyright; application
        _timestamp(now), _IMPLEMENTATION, bytes(64), struct.pack("<IH", 0, 0), bytes(22),
    ]))  # fmt: skip


def _iuvd(location: int, volume_id: str) -> bytes:
    """3/10.4, UDF 2.2.7: "*UDF LV Info" and its LVInformation (UDF 2.2.7.2)."""
    info = _charspec() + _dstring(volume_id, 128) + bytes(3 * 36) + _IMPLEMENTATION + bytes(128)
    return _tag(_IUVD, location, struct.pack("<I", 2) + _udf_regid("*UDF LV Info") + info)


def _pd(location: int, lay: _Layout) -> bytes:
    """3/10.5, UDF 2.2.14: partition 0, "+NSR03", read-only (access type 1), no space bitmaps (4/14.3)."""
    return _tag(_PD, location, b"".join([
        struct.pack("<IHH", 3, 1, 0), _regid("+NSR03", b""), bytes(128),
        struct.pack("<III", 1, _PARTITION, lay.partition_blocks), _IMPLEMENTATION, bytes(128 + 156),
    ]))  # fmt: skip


def _metadata_map(lay: _Layout) -> bytes:
    """3/10.7.3, UDF 2.2.10: the Metadata Partition Map over partition 0, duplicated (flag bit 0)."""
    return struct.pack("<BBH", 2, 64, 0) + _udf_regid("*UDF Metadata Partition") + struct.pack(
        "<HHIIIIHB5x", 1, 0, 0, lay.mirror + lay.meta_blocks, _UNSPECIFIED, _UNIT, _UNIT, 1
    )


def _lvd(location: int, lay: _Layout, volume_id: str) -> bytes:
    """3/10.6, UDF 2.2.4: 2048-byte blocks, the FSD at metadata block 0, a Type 1 then a metadata map."""
    maps = struct.pack("<BBHH", 1, 6, 1, 0) + _metadata_map(lay)  # 3/10.7.2: volume 1, partition 0
    return _tag(_LVD, location, b"".join([
        struct.pack("<I", 4), _charspec(), _dstring(volume_id, 128), struct.pack("<I", SECTOR), _DOMAIN,
        _long_ad(2 * SECTOR, 0, _META), struct.pack("<II", len(maps), 2), _IMPLEMENTATION, bytes(128),
        _extent_ad(_INTEGRITY_SECTORS * SECTOR, _INTEGRITY), maps,
    ]))  # fmt: skip


def _usd(location: int) -> bytes:
    """3/10.8, UDF 2.2.5: no unallocated space."""
    return _tag(_USD, location, struct.pack("<II", 5, 0))


def _td(location: int) -> bytes:
    """3/10.9, 4/14.2: a Terminating Descriptor."""
    return _tag(_TD, location, bytes(496))


def _vds(start: int, lay: _Layout, volume_id: str, volume_set_id: str, now: datetime) -> bytes:
    """A Volume Descriptor Sequence (3/8.4.2, UDF 2.2.3) from sector ``start``, a descriptor a sector."""
    descriptors = [
        _pvd(start, volume_id, volume_set_id, now), _iuvd(start + 1, volume_id), _pd(start + 2, lay),
        _lvd(start + 3, lay, volume_id), _usd(start + 4), _td(start + 5),
    ]  # fmt: skip
    return b"".join(d.ljust(SECTOR, b"\0") for d in descriptors)


def _lvid(lay: _Layout, now: datetime) -> bytes:
    """3/10.10, UDF 2.2.6: closed; no free space; UDF 2.2.6.4's counts and revisions 0x0260."""
    files, dirs = len(lay.files), len(lay.dirs)
    return _tag(_LVID, _INTEGRITY, b"".join([
        _timestamp(now), struct.pack("<I", 1), _extent_ad(0, 0),  # close integrity, no next extent
        struct.pack("<Q24x", lay.next_unique_id),  # 4/14.15 Logical Volume Header Descriptor
        struct.pack("<II", 2, 46), struct.pack("<IIII", 0, 0, lay.partition_blocks, lay.meta_blocks),
        _IMPLEMENTATION, struct.pack("<IIHHH", files, dirs, _REVISION, _REVISION, _REVISION),
    ]))  # fmt: skip


def _anchor(location: int) -> bytes:
    """3/10.2, UDF 2.2.3: the Main and Reserve VDS extents."""
    extents = _extent_ad(_VDS_SECTORS * SECTOR, _MAIN_VDS) + _extent_ad(_VDS_SECTORS * SECTOR, _RESERVE_VDS)
    return _tag(_AVDP, location, extents + bytes(480))


# ---- file structure (ECMA-167 part 4, UDF 2.3) ----


def _fid_length(ident: bytes) -> int:
    return (38 + len(ident) + 3) // 4 * 4


def _fid(location: int, ident: bytes, characteristics: int, icb: int, unique_id: int) -> bytes:
    """4/14.4, UDF 2.3.4: version 1, no implementation use, padded to 4 bytes (the CRC covers the padding)."""
    body = struct.pack("<HBB", 1, characteristics, len(ident)) + _long_ad(SECTOR, icb, _META, unique_id)
    body += struct.pack("<H", 0) + ident
    return _tag(_FID, location, body.ljust(_fid_length(ident) - 16, b"\0"))


def _efe(location: int, file_type: int, ad_type: int, ads: bytes, size: int, links: int, perms: int,
         unique_id: int, now: datetime) -> bytes:  # fmt: skip
    """4/14.17 Extended File Entry, UDF 2.3.6; its ICB tag (4/14.6, UDF 2.3.5) is strategy 4, one entry."""
    icb_tag = struct.pack("<IHHHBB6sH", 0, 4, 0, 1, 0, file_type, bytes(6), ad_type)
    return _tag(_EFE, location, b"".join([
        icb_tag, struct.pack("<IIIHBBI", _UNSPECIFIED, _UNSPECIFIED, perms, links, 0, 0, 0),
        struct.pack("<QQQ", size, size, _blocks(size)), _timestamp(now) * 4,  # access, modify, create, attr
        struct.pack("<II", 1, 0), bytes(32), _IMPLEMENTATION,  # checkpoint; no EA ICB nor stream directory
        struct.pack("<QII", unique_id, 0, len(ads)), ads,
    ]))  # fmt: skip


def _fsd(volume_id: str, root: _Dir, now: datetime) -> bytes:
    """4/14.1, UDF 2.3.2: file set 0 at metadata block 0, interchange level 3, the root's ICB."""
    return _tag(_FSD, 0, b"".join([
        _timestamp(now), struct.pack("<HHIIII", 3, 3, 1, 1, 0, 0), _charspec(), _dstring(volume_id, 128),
        _charspec(), _dstring(volume_id, 32), bytes(64),  # file set id; no copyright nor abstract file
        _long_ad(SECTOR, root.icb, _META, root.unique_id), _DOMAIN, bytes(64),
    ]))  # fmt: skip


def _directory(d: _Dir, now: datetime) -> bytes:
    """Metadata blocks from d.icb: d's entry, its FIDs, then its files' entries (UDF 2.3.4, 2.3.6)."""
    fids, first = bytearray(), d.icb + 1
    parent = d.parent or d  # 4/8.6: the root is its own parent
    for name, e in [("", parent), *d.entries()]:
        ident = _cs0(name) if name else b""
        flags = (2 if isinstance(e, _Dir) else 0) | (8 if not name else 0)  # 4/14.4.3: directory, parent
        fids += _fid(first + len(fids) // SECTOR, ident, flags, e.icb, e.unique_id)  # tagged where it starts
    links = 1 + len(d.dirs)  # 4/14.9.6: its FID in the parent (its own for the root), its children's parent FIDs
    entry = _efe(d.icb, _DIRECTORY, _SHORT_AD, struct.pack("<II", len(fids), first), len(fids), links,
                 _DIR_PERMS, d.unique_id, now)  # fmt: skip
    out = [entry.ljust(SECTOR, b"\0"), bytes(fids.ljust(_blocks(len(fids)) * SECTOR, b"\0"))]
    for _, f in sorted(d.files.items()):
        ads = b"".join(_long_ad(n, block, _PHYSICAL) for n, block in _runs(f.start, f.size))
        out.append(_efe(f.icb, _FILE, _LONG_AD, ads, f.size, 1, _FILE_PERMS, f.unique_id, now).ljust(SECTOR, b"\0"))
    return b"".join(out)


def _metadata(lay: _Layout, volume_id: str, now: datetime) -> Iterator[tuple[int, bytes]]:
    """The metadata partition's content in (first block, bytes) chunks: the FSD and its terminator
    (4/8.3.1), then each directory's entries and FIDs, one directory at a time."""
    yield 0, _fsd(volume_id, lay.dirs[0], now).ljust(SECTOR, b"\0") + _td(1)
    for d in lay.dirs:
        yield d.icb, _directory(d, now)


def _metadata_file(location: int, lay: _Layout, file_type: int, first: int, now: datetime) -> bytes:
    """UDF 2.2.13.1: the Metadata (250) or Mirror (251) File, short_ad extents of the physical partition."""
    size = lay.meta_blocks * SECTOR
    ads = b"".join(struct.pack("<II", n, block) for n, block in _runs(first, size, _MAX_META_EXTENT))
    return _efe(location, file_type, _SHORT_AD, ads, size, 1, 0, 0, now)


def write_image(
    files: Sequence[MediaFile], out: BinaryIO, *, volume_id: str, progress: Progress | None = None
) -> None:
    """Write the whole UDF 2.60 image of ``files`` to ``out``, a real file opened "wb+".

    ``volume_id`` (validated d-characters, at most 32) names the logical volume
    and the file set; the Primary Volume Descriptor and the File Set
    Identifier hold at most 30 characters of it (dstring[32], UDF 2.1.3).
    ``progress(n)`` is called as file data is written, ``n`` being the bytes
    written since the previous call. Raises BuildError if the set cannot be
    UDF (before writing anything), on an unreadable source or an unwritable out.
    """
    lay = _layout(files)
    report = progress or _ignore
    now = datetime.now(UTC)
    volume_set_id = f"{int(now.timestamp()):08x}{os.urandom(4).hex()}{volume_id}"  # UDF 2.2.2.5
    mirror = _PARTITION + lay.mirror
    out.flush()
    fd, where = out.fileno(), "its volume structure"
    try:
        os.ftruncate(fd, 0)  # what is not written then reads as zeros
        for sector, data in [
            (_VRS, _vrs()),
            (_MAIN_VDS, _vds(_MAIN_VDS, lay, volume_id, volume_set_id, now)),
            (_RESERVE_VDS, _vds(_RESERVE_VDS, lay, volume_id, volume_set_id, now)),
            (_INTEGRITY, _lvid(lay, now).ljust(SECTOR, b"\0") + _td(_INTEGRITY + 1)),
            (_ANCHOR, _anchor(_ANCHOR)),
            (lay.sectors - 1, _anchor(lay.sectors - 1)),
            (_PARTITION, _metadata_file(0, lay, _METADATA, _UNIT, now)),
            (mirror + lay.meta_blocks, _metadata_file(lay.mirror + lay.meta_blocks, lay, _MIRROR, lay.mirror, now)),
        ]:  # fmt: skip
            pwrite_all(fd, data, sector * SECTOR)
        where = "its metadata"
        for block, data in _metadata(lay, volume_id, now):
            for start in (_PARTITION + _UNIT, mirror):  # the Metadata File's extent and its mirror
                pwrite_all(fd, data, (start + block) * SECTOR)
        for f in lay.files:
            where = f.media.relpath
            copy_pieces(f.media.pieces, fd, (_PARTITION + f.start) * SECTOR, report)
        os.ftruncate(fd, lay.sectors * SECTOR)
    except OSError as e:
        raise BuildError(f"cannot write the image ({where}): {e}") from e
    out.seek(0, os.SEEK_END)


# ---- reading back ----


def read_listing(
    path: str | os.PathLike[str], *, metadata: Literal["main", "mirror"] = "main"
) -> dict[str, tuple[list[tuple[int, int]], int]]:
    """Every file of the UDF image at ``path``: "/DICOM/..." -> ((byte offset, length) runs, size).

    Read by the node's UDF reader (:mod:`node.udf`), independent of the
    writer's layout, every tag checked, through the Metadata File or, with
    ``metadata="mirror"``, its mirror alone. Raises BuildError on an image it
    cannot read, or one holding what this writer never writes (embedded or
    unrecorded data).
    """
    try:
        with open(path, "rb") as fp:
            volume = Volume(fp, metadata=metadata)
    except (OSError, MediumError) as e:
        raise BuildError(f"cannot read back {os.fspath(path)}: {e}") from e
    if volume.refused:
        name, why = sorted(volume.refused.items())[0]
        raise BuildError(f"cannot read back {os.fspath(path)}: {name} {why}")
    out = {}
    for name, f in volume.files.items():
        runs = [(at, n) for at, n in f.runs if at is not None]
        if f.embedded is not None or len(runs) < len(f.runs):
            raise BuildError(f"cannot read back {os.fspath(path)}: {name} is not recorded in whole blocks")
        out[f"/{name}"] = runs, f.size
    return out


def verify_image(path: str | os.PathLike[str], files: Sequence[MediaFile]) -> None:
    """Read the image back with :func:`read_listing`, through the metadata and its mirror, and compare every
    file with its sources."""
    listing = read_listing(path)
    if read_listing(path, metadata="mirror") != listing:
        raise BuildError(f"{os.fspath(path)}: the Metadata Mirror does not list what the Metadata File lists")
    verify_extents(path, files, {name.removeprefix("/"): runs for name, (runs, _) in listing.items()})
