"""Master a file-set into a UDF image, streamed by us: UDF 2.60 for BD, UDF 1.50 for DVD-RAM.

The image is UDF only, no ISO 9660 bridge: PS3.12 asks for UDF 2.60 on BD
(Annex Y) and for UDF 1.50 on DVD-RAM (Annex J, which forbids a later
revision, the Virtual Allocation Table and sparing tables), and every reader
of either reads UDF. One writer, ``revision`` choosing what differs:

======================  ==========================================================
sector 16..18           Volume Recognition Sequence: BEA01, NSR03 (2.60) or NSR02
                        (1.50, ECMA-167 2nd edition), TEA01 (2/9)
sectors 32.., 48..      Main and Reserve Volume Descriptor Sequences (3/10, UDF 2.2)
sector 64..             Logical Volume Integrity Sequence, closed (3/10.10)
sector 256, last        Anchor Volume Descriptor Pointers (3/8.4.2.1, 3/10.2)
sector 288..            the partition (ECC-block aligned), UDF 2.60:
  block 0                 Metadata File entry (UDF 2.2.13.1, file type 250)
  block 32..              metadata extent: FSD, directories and every file entry
  then                    each file's data, contiguous, in extents below 1 GiB,
                          and amid them the Metadata Mirror: a second copy of
                          the metadata extent, then its entry (file type 251)
                        UDF 1.50:
  block 0..               the Unallocated Space Bitmap (4/14.12)
  then                    FSD, directories and every file entry
  then                    each file's data, contiguous, in extents below 1 GiB
======================  ==========================================================

UDF 2.60 (BD-R, written once): the partition is read-only (access type 1) and
the logical volume has two partition maps (3/10.7, UDF 2.2.4): a Type 1 map of
the physical partition (reference 0) and the Metadata Partition Map (reference
1, UDF 2.2.10) that UDF 2.50 and later require: all file entries and directory
data live in the metadata partition. Entries are Extended File Entries
(4/14.17). The mirror sits in the middle of the data, away from the metadata
extent, yet never last: a reader that looks past the last file's data for the
final anchor (7-Zip) finds only zeros there, not metadata it does not know about.

UDF 1.50 (DVD-RAM, a rewritable medium): one Type 1 partition map, no metadata
partition, no VAT, no sparing table (DVD-RAM drives manage defects
themselves); entries are File Entries (4/14.9); descriptor tags are version 2
(ECMA-167 2nd edition, "+NSR02"). The partition is overwritable (access type 4,
3/10.5.7) as DVD-RAM is, so UDF asks for its free space to be recorded: an
Unallocated Space Bitmap (UDF 2.3.3, 2.3.8), every block allocated, and the
integrity descriptor's free space 0 (UDF 2.2.6.2) -- the layout mkudffs
writes for ``--media-type=dvdram``, sized to the file-set.

Names are OSTA CS0 with 8-bit compression (UDF 2.1.1) in both. Only metadata
is built in memory, one directory at a time; file data is copied by the kernel
(``os.copy_file_range``) straight from the sources. ``read_listing`` re-reads an
image with the node's UDF reader (``node.udf``), checking every tag.
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
from node.media.content import Extents, MediaFile, Progress, copy_pieces, pwrite_all, verify_extents
from node.profiles import SECTOR
from node.udf import Volume

#: The module ``read_extents`` reads with, independent of this writer.
READER = "node.udf"
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
_FSD, _FID, _FE, _SBD, _EFE = 256, 257, 261, 264, 266
# ICB file types (4/14.6.6, UDF 2.2.13.1) and allocation descriptor types (4/14.6.8)
_DIRECTORY, _FILE, _METADATA, _MIRROR = 4, 5, 250, 251
_SHORT_AD, _LONG_AD = 0, 1
_PHYSICAL, _META = 0, 1  # partition reference numbers: the order of the partition maps
_READ_ONLY, _OVERWRITABLE = 1, 4  # partition access types (3/10.5.7)

#: The UDF revisions written: UDF 2.60 (PS3.12 Annex Y, BD) and UDF 1.50 (PS3.12 Annex J, DVD-RAM).
Revision = Literal["1.50", "2.60"]


@dataclass(frozen=True)
class _Rev:
    """What a UDF revision changes in the image (see the module docstring)."""

    bcd: int  # UDF 2.1.5.3: the revision in binary-coded decimal
    nsr: bytes  # the ECMA-167 edition (2/9.1, 3/10.5.5): NSR02 (2nd) or NSR03 (3rd)
    tag_version: int  # 3/7.2.2: 2 for NSR02, 3 for NSR03
    metadata: bool  # UDF 2.2.10: a Metadata Partition holds the entries and directories (2.50 and later)
    rewritable: bool  # an overwritable partition with an Unallocated Space Bitmap, else read-only

    @property
    def entry(self) -> int:
        """The tag of its file entries: 4/14.17 Extended File Entry (NSR03), else 4/14.9 File Entry."""
        return _EFE if self.metadata else _FE

    @property
    def ref(self) -> int:
        """The partition reference of the FSD, every entry and directory."""
        return _META if self.metadata else _PHYSICAL


_REVISIONS: dict[Revision, _Rev] = {
    "1.50": _Rev(0x0150, b"NSR02", 2, metadata=False, rewritable=True),
    "2.60": _Rev(0x0260, b"NSR03", 3, metadata=True, rewritable=False),
}


def _ignore(n: int) -> None:
    """The progress callback used when the caller gives none."""


def _blocks(n_bytes: int) -> int:
    return -(-n_bytes // SECTOR)


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


# ---- basic structures (ECMA-167 part 1, 3/7, 4/14.14; UDF 2.1) ----


def _tag(ident: int, location: int, body: bytes, rev: _Rev, *, crc: bool = True) -> bytes:
    """A whole descriptor: the 16-byte tag (3/7.2; version 2 for NSR02, 3 for NSR03) then ``body``.

    The CRC (CRC-16 CCITT, 3/7.2.6) covers the body, unless ``crc`` is False (CRC and its length 0,
    UDF 2.3.8.1); the checksum the tag's other 15 bytes.
    """
    covered = body if crc else b""
    head = struct.pack("<HHBBHHHI", ident, rev.tag_version, 0, 0, 0, binascii.crc_hqx(covered, 0), len(covered),
                       location)  # fmt: skip
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


def _udf_regid(ident: str, rev: _Rev) -> bytes:
    """UDF 2.1.5.3: a UDF identifier, its suffix the revision, OS class and OS identifier."""
    return _regid(ident, struct.pack("<H", rev.bcd) + _UNIX_LINUX)


def _domain(rev: _Rev) -> bytes:
    """UDF 2.1.5.3: the domain identifier, its suffix the revision and no write-protect flags."""
    return _regid("*OSTA UDF Compliant", struct.pack("<HB", rev.bcd, 0))


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
    rev: _Rev
    dirs: list[_Dir]  # breadth first, the root first
    files: list[_File]  # in the order of their data
    meta_blocks: int  # of the metadata extent, whole allocation units (UDF 1.50: of the FSD and entries)
    mirror: int  # partition block of the Metadata Mirror extent; its entry follows it (UDF 2.60)
    fsd: int  # block of the FSD: 0, or after the Unallocated Space Bitmap at block 0 (UDF 1.50)
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


def _bitmap_bytes(blocks: int) -> int:
    """The bytes of the Space Bitmap Descriptor of a partition of ``blocks`` (4/14.12: a bit a block)."""
    return 24 + -(-blocks // 8)


def _layout(files: Sequence[MediaFile], rev: _Rev) -> _Layout:
    """Assign every block: metadata (UDF 1.50: partition) blocks to entries and FIDs, partition blocks to data."""
    dirs, placed = [_tree(files)], []
    block, unique_id = 2, _FIRST_UNIQUE_ID  # blocks 0 and 1: the FSD and its terminator
    for d in dirs:  # breadth first, children by name
        d.icb, block = block, block + 1 + _blocks(d.size())
        if d.parent:
            d.unique_id, unique_id = unique_id, unique_id + 1
        for _, f in sorted(d.files.items()):
            f.icb, f.unique_id = block, unique_id
            block, unique_id = block + 1, unique_id + 1
            placed.append(f)
        dirs.extend(sub for _, sub in sorted(d.dirs.items()))
    meta_blocks = _round_up(block, _UNIT) if rev.metadata else block
    # 2.60: the Metadata File entry at block 0, its extent at the first whole unit; 1.50: data after the entries
    first = data = _UNIT + meta_blocks if rev.metadata else meta_blocks
    half, mirror = sum(_blocks(f.size) for f in placed) // 2, -1
    for f in placed:  # the mirror goes amid the data, the file crossing the middle after it
        if rev.metadata and mirror < 0 and data - first + _blocks(f.size) >= half:
            mirror = _round_up(data, _UNIT)
            data = mirror + meta_blocks + 1
        f.start, data = data, data + _blocks(f.size)
    if rev.metadata and mirror < 0:  # no file
        mirror = _round_up(data, _UNIT)
        data = mirror + meta_blocks + 1
    fsd = 0
    while rev.rewritable and _blocks(_bitmap_bytes(data + fsd)) > fsd:  # its own blocks have a bit each
        fsd += 1
    if fsd:  # the bitmap goes first, as mkudffs lays DVD-RAM out: the last file's data ends the partition
        for d in dirs:
            d.icb += fsd
        for f in placed:
            f.icb, f.start = f.icb + fsd, f.start + fsd
    partition_blocks = data + fsd
    sectors = _PARTITION + partition_blocks + 1  # and the last sector for the second anchor
    if sectors > 2**32:
        raise BuildError(f"{sectors} sectors: UDF addresses at most 2^32 blocks (8 TiB)")
    if crowded := [d.path or "/" for d in dirs if len(d.dirs) >= 0xFFFF]:
        raise BuildError(f"{crowded[0]} has too many subdirectories: a link count is 16 bits (4/14.9.6)")
    return _Layout(rev, dirs, placed, meta_blocks, mirror, fsd, partition_blocks, sectors, unique_id)


def image_sectors(files: Sequence[MediaFile], *, revision: Revision = "2.60") -> int:
    """The exact number of 2048-byte sectors of the image ``write_image`` would produce.

    Needs only the sizes of the pieces, not their content. Raises BuildError if
    the file-set cannot be a UDF file system (a name twice, a file used as a
    directory, an identifier UDF cannot hold, more than 8 TiB).
    """
    return _layout(files, _REVISIONS[revision]).sectors


# ---- volume structure (ECMA-167 part 2 and 3, UDF 2.2) ----


def _vrs(rev: _Rev) -> bytes:
    """2/9.1-9.3, 3/9.1: BEA01, NSR02 or NSR03 (the ECMA-167 edition), TEA01, a 2048-byte descriptor each."""
    return b"".join(b"\0" + name + b"\x01".ljust(SECTOR - 6, b"\0") for name in (b"BEA01", rev.nsr, b"TEA01"))


def _pvd(location: int, volume_id: str, volume_set_id: str, now: datetime, rev: _Rev) -> bytes:
    """3/10.1, UDF 2.2.2: interchange level 2, at most 3; CS0 only."""
    return _tag(_PVD, location, b"".join([
        struct.pack("<II", 1, 0), _dstring(volume_id, 32),  # sequence number, PVD number, volume id
        struct.pack("<HHHHII", 1, 1, 2, 3, 1, 1), _dstring(volume_set_id, 128),
        _charspec(), _charspec(), bytes(16), _IMPLEMENTATION,  # no abstract nor copyright; application
        _timestamp(now), _IMPLEMENTATION, bytes(64), struct.pack("<IH", 0, 0), bytes(22),
    ]), rev)  # fmt: skip


def _iuvd(location: int, volume_id: str, rev: _Rev) -> bytes:
    """3/10.4, UDF 2.2.7: "*UDF LV Info" and its LVInformation (UDF 2.2.7.2)."""
    info = _charspec() + _dstring(volume_id, 128) + bytes(3 * 36) + _IMPLEMENTATION + bytes(128)
    return _tag(_IUVD, location, struct.pack("<I", 2) + _udf_regid("*UDF LV Info", rev) + info, rev)


def _pd(location: int, lay: _Layout) -> bytes:
    """3/10.5, UDF 2.2.14: partition 0, "+NSR02" or "+NSR03"; read-only (access type 1) without space
    sets, or overwritable (4) with the Unallocated Space Bitmap in its Partition Header (4/14.3, UDF 2.3.3)."""
    rev = lay.rev
    access, header = _READ_ONLY, bytes(128)
    if rev.rewritable:  # the Unallocated Space Table is not used: 8 zero bytes, then the bitmap's short_ad
        access = _OVERWRITABLE
        header = bytes(8) + struct.pack("<II", _bitmap_bytes(lay.partition_blocks), 0) + bytes(112)
    return _tag(_PD, location, b"".join([
        struct.pack("<IHH", 3, 1, 0), _regid("+" + rev.nsr.decode(), b""), header,
        struct.pack("<III", access, _PARTITION, lay.partition_blocks), _IMPLEMENTATION, bytes(128 + 156),
    ]), rev)  # fmt: skip


def _metadata_map(lay: _Layout) -> bytes:
    """3/10.7.3, UDF 2.2.10: the Metadata Partition Map over partition 0, duplicated (flag bit 0)."""
    return struct.pack("<BBH", 2, 64, 0) + _udf_regid("*UDF Metadata Partition", lay.rev) + struct.pack(
        "<HHIIIIHB5x", 1, 0, 0, lay.mirror + lay.meta_blocks, _UNSPECIFIED, _UNIT, _UNIT, 1
    )


def _lvd(location: int, lay: _Layout, volume_id: str) -> bytes:
    """3/10.6, UDF 2.2.4: 2048-byte blocks, where the FSD is; a Type 1 map, then (2.60) a metadata map."""
    rev = lay.rev
    maps = struct.pack("<BBHH", 1, 6, 1, 0)  # 3/10.7.2: volume 1, partition 0
    if rev.metadata:
        maps += _metadata_map(lay)
    return _tag(_LVD, location, b"".join([
        struct.pack("<I", 4), _charspec(), _dstring(volume_id, 128), struct.pack("<I", SECTOR), _domain(rev),
        _long_ad(2 * SECTOR, lay.fsd, rev.ref), struct.pack("<II", len(maps), 1 + rev.metadata), _IMPLEMENTATION,
        bytes(128), _extent_ad(_INTEGRITY_SECTORS * SECTOR, _INTEGRITY), maps,
    ]), rev)  # fmt: skip


def _usd(location: int, rev: _Rev) -> bytes:
    """3/10.8, UDF 2.2.5: no unallocated space."""
    return _tag(_USD, location, struct.pack("<II", 5, 0), rev)


def _td(location: int, rev: _Rev) -> bytes:
    """3/10.9, 4/14.2: a Terminating Descriptor."""
    return _tag(_TD, location, bytes(496), rev)


def _vds(start: int, lay: _Layout, volume_id: str, volume_set_id: str, now: datetime) -> bytes:
    """A Volume Descriptor Sequence (3/8.4.2, UDF 2.2.3) from sector ``start``, a descriptor a sector."""
    rev = lay.rev
    descriptors = [
        _pvd(start, volume_id, volume_set_id, now, rev), _iuvd(start + 1, volume_id, rev), _pd(start + 2, lay),
        _lvd(start + 3, lay, volume_id), _usd(start + 4, rev), _td(start + 5, rev),
    ]  # fmt: skip
    return b"".join(d.ljust(SECTOR, b"\0") for d in descriptors)


def _lvid(lay: _Layout, now: datetime) -> bytes:
    """3/10.10, UDF 2.2.6: closed; no free space in any partition; UDF 2.2.6.4's counts and revisions."""
    files, dirs, rev = len(lay.files), len(lay.dirs), lay.rev
    sizes = (lay.partition_blocks, lay.meta_blocks) if rev.metadata else (lay.partition_blocks,)
    return _tag(_LVID, _INTEGRITY, b"".join([
        _timestamp(now), struct.pack("<I", 1), _extent_ad(0, 0),  # close integrity, no next extent
        struct.pack("<Q24x", lay.next_unique_id),  # 4/14.15 Logical Volume Header Descriptor
        struct.pack("<II", len(sizes), 46), struct.pack(f"<{2 * len(sizes)}I", *(0 for _ in sizes), *sizes),
        _IMPLEMENTATION, struct.pack("<IIHHH", files, dirs, rev.bcd, rev.bcd, rev.bcd),
    ]), rev)  # fmt: skip


def _anchor(location: int, rev: _Rev) -> bytes:
    """3/10.2, UDF 2.2.3: the Main and Reserve VDS extents."""
    extents = _extent_ad(_VDS_SECTORS * SECTOR, _MAIN_VDS) + _extent_ad(_VDS_SECTORS * SECTOR, _RESERVE_VDS)
    return _tag(_AVDP, location, extents + bytes(480), rev)


# ---- file structure (ECMA-167 part 4, UDF 2.3) ----


def _fid_length(ident: bytes) -> int:
    return (38 + len(ident) + 3) // 4 * 4


def _fid(location: int, ident: bytes, characteristics: int, icb: int, unique_id: int, rev: _Rev) -> bytes:
    """4/14.4, UDF 2.3.4: version 1, no implementation use, padded to 4 bytes (the CRC covers the padding)."""
    body = struct.pack("<HBB", 1, characteristics, len(ident)) + _long_ad(SECTOR, icb, rev.ref, unique_id)
    body += struct.pack("<H", 0) + ident
    return _tag(_FID, location, body.ljust(_fid_length(ident) - 16, b"\0"), rev)


def _entry(location: int, file_type: int, ad_type: int, ads: bytes, size: int, links: int, perms: int,
           unique_id: int, now: datetime, rev: _Rev) -> bytes:  # fmt: skip
    """4/14.17 Extended File Entry (UDF 2.3.6) for NSR03, else 4/14.9 File Entry (UDF 1.50 2.3.6); its
    ICB tag (4/14.6, UDF 2.3.5) is strategy 4, one entry. An EFE adds the object size, the creation
    time and a stream directory ICB to what a File Entry holds."""
    icb_tag = struct.pack("<IHHHBB6sH", 0, 4, 0, 1, 0, file_type, bytes(6), ad_type)
    extended = rev.entry == _EFE
    return _tag(rev.entry, location, b"".join([
        icb_tag, struct.pack("<IIIHBBI", _UNSPECIFIED, _UNSPECIFIED, perms, links, 0, 0, 0),
        struct.pack("<QQQ", size, size, _blocks(size)) if extended else struct.pack("<QQ", size, _blocks(size)),
        _timestamp(now) * (4 if extended else 3),  # access, modify, (create,) attributes
        struct.pack("<II", 1, 0) if extended else struct.pack("<I", 1),  # checkpoint (and reserved)
        bytes(32 if extended else 16), _IMPLEMENTATION,  # no EA ICB (nor stream directory)
        struct.pack("<QII", unique_id, 0, len(ads)), ads,
    ]), rev)  # fmt: skip


def _fsd(location: int, volume_id: str, root: _Dir, now: datetime, rev: _Rev) -> bytes:
    """4/14.1, UDF 2.3.2: file set 0, interchange level 3, the root's ICB."""
    return _tag(_FSD, location, b"".join([
        _timestamp(now), struct.pack("<HHIIII", 3, 3, 1, 1, 0, 0), _charspec(), _dstring(volume_id, 128),
        _charspec(), _dstring(volume_id, 32), bytes(64),  # file set id; no copyright nor abstract file
        _long_ad(SECTOR, root.icb, rev.ref, root.unique_id), _domain(rev), bytes(64),
    ]), rev)  # fmt: skip


def _space_bitmap(lay: _Layout) -> bytes:
    """4/14.12, UDF 2.3.8: a bit a partition block, 1 when free; none is. Its CRC is not maintained
    (UDF 2.3.8.1): a 16-bit CRC length cannot span a DVD's bitmap. Only the head: the bits are zeros."""
    n = lay.partition_blocks
    return _tag(_SBD, 0, struct.pack("<II", n, -(-n // 8)), lay.rev, crc=False)


def _directory(d: _Dir, now: datetime, rev: _Rev) -> bytes:
    """Metadata blocks from d.icb: d's entry, its FIDs, then its files' entries (UDF 2.3.4, 2.3.6)."""
    fids, first = bytearray(), d.icb + 1
    parent = d.parent or d  # 4/8.6: the root is its own parent
    for name, e in [("", parent), *d.entries()]:
        ident = _cs0(name) if name else b""
        flags = (2 if isinstance(e, _Dir) else 0) | (8 if not name else 0)  # 4/14.4.3: directory, parent
        fids += _fid(first + len(fids) // SECTOR, ident, flags, e.icb, e.unique_id, rev)  # tagged where it starts
    links = 1 + len(d.dirs)  # 4/14.9.6: its FID in the parent (its own for the root), its children's parent FIDs
    entry = _entry(d.icb, _DIRECTORY, _SHORT_AD, struct.pack("<II", len(fids), first), len(fids), links,
                   _DIR_PERMS, d.unique_id, now, rev)  # fmt: skip
    out = [entry.ljust(SECTOR, b"\0"), bytes(fids.ljust(_blocks(len(fids)) * SECTOR, b"\0"))]
    for _, f in sorted(d.files.items()):
        ads = b"".join(_long_ad(n, block, _PHYSICAL) for n, block in _runs(f.start, f.size))
        entry = _entry(f.icb, _FILE, _LONG_AD, ads, f.size, 1, _FILE_PERMS, f.unique_id, now, rev)
        out.append(entry.ljust(SECTOR, b"\0"))
    return b"".join(out)


def _metadata(lay: _Layout, volume_id: str, now: datetime) -> Iterator[tuple[int, bytes]]:
    """The metadata partition's (UDF 1.50: the partition's first) content in (first block, bytes) chunks:
    the FSD and its terminator (4/8.3.1), then each directory's entries and FIDs, one directory at a time."""
    yield lay.fsd, _fsd(lay.fsd, volume_id, lay.dirs[0], now, lay.rev).ljust(SECTOR, b"\0") + _td(lay.fsd + 1, lay.rev)
    for d in lay.dirs:
        yield d.icb, _directory(d, now, lay.rev)


def _metadata_file(location: int, lay: _Layout, file_type: int, first: int, now: datetime) -> bytes:
    """UDF 2.2.13.1: the Metadata (250) or Mirror (251) File, short_ad extents of the physical partition."""
    size = lay.meta_blocks * SECTOR
    ads = b"".join(struct.pack("<II", n, block) for n, block in _runs(first, size, _MAX_META_EXTENT))
    return _entry(location, file_type, _SHORT_AD, ads, size, 1, 0, 0, now, lay.rev)


def write_image(
    files: Sequence[MediaFile], out: BinaryIO, *, volume_id: str, progress: Progress | None = None,
    revision: Revision = "2.60",
) -> None:
    """Write the whole UDF image of ``files`` to ``out``, a real file opened "wb+", in UDF ``revision``.

    ``volume_id`` (validated d-characters, at most 32) names the logical volume
    and the file set; the Primary Volume Descriptor and the File Set
    Identifier hold at most 30 characters of it (dstring[32], UDF 2.1.3).
    ``progress(n)`` is called as file data is written, ``n`` being the bytes
    written since the previous call. Raises BuildError if the set cannot be
    UDF (before writing anything), on an unreadable source or an unwritable out.
    """
    lay = _layout(files, rev := _REVISIONS[revision])
    report = progress or _ignore
    now = datetime.now(UTC)
    volume_set_id = f"{int(now.timestamp()):08x}{os.urandom(4).hex()}{volume_id}"  # UDF 2.2.2.5
    mirror = _PARTITION + lay.mirror
    if rev.metadata:  # the Metadata File's entry, its extent and its mirror's (with its entry after it)
        mirror_entry = lay.mirror + lay.meta_blocks
        structure = [(_PARTITION, _metadata_file(0, lay, _METADATA, _UNIT, now)),
                     (_PARTITION + mirror_entry, _metadata_file(mirror_entry, lay, _MIRROR, lay.mirror, now))]
        meta_starts = [_PARTITION + _UNIT, mirror]
    else:
        structure, meta_starts = [(_PARTITION, _space_bitmap(lay))], [_PARTITION]
    out.flush()
    fd, where = out.fileno(), "its volume structure"
    try:
        os.ftruncate(fd, 0)  # what is not written then reads as zeros
        for sector, data in [
            (_VRS, _vrs(rev)),
            (_MAIN_VDS, _vds(_MAIN_VDS, lay, volume_id, volume_set_id, now)),
            (_RESERVE_VDS, _vds(_RESERVE_VDS, lay, volume_id, volume_set_id, now)),
            (_INTEGRITY, _lvid(lay, now).ljust(SECTOR, b"\0") + _td(_INTEGRITY + 1, rev)),
            (_ANCHOR, _anchor(_ANCHOR, rev)),
            (lay.sectors - 1, _anchor(lay.sectors - 1, rev)),
            *structure,
        ]:  # fmt: skip
            pwrite_all(fd, data, sector * SECTOR)
        where = "its metadata"
        for block, data in _metadata(lay, volume_id, now):
            for start in meta_starts:  # 2.60: the Metadata File's extent and its mirror
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


def placement(files: Sequence[MediaFile], *, revision: Revision = "2.60") -> list[tuple[MediaFile, int]]:
    """Each file with the byte offset of its data, in the order ``write_image`` writes them."""
    return [(f.media, (_PARTITION + f.start) * SECTOR) for f in _layout(files, _REVISIONS[revision]).files]


def read_extents(path: str | os.PathLike[str]) -> Extents:
    """Every file of the image at ``path`` (``DICOM/...``) -> its (byte offset, length) runs, as
    :func:`read_listing` finds them through the Metadata File and, identically, through its mirror (of
    whichever UDF revision the image is)."""
    listing = read_listing(path)
    if read_listing(path, metadata="mirror") != listing:
        raise BuildError(f"{os.fspath(path)}: the Metadata Mirror does not list what the Metadata File lists")
    return {name.removeprefix("/"): runs for name, (runs, _) in listing.items()}


def verify_image(path: str | os.PathLike[str], files: Sequence[MediaFile]) -> None:
    """Read the image back with :func:`read_extents` and compare every file with its sources."""
    verify_extents(path, files, read_extents(path))
