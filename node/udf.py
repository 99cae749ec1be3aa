"""Read a UDF file system (OSTA UDF 1.02 to 2.60 on ECMA-167) from an image or a block device, never mounted.

One reader for every UDF medium the node meets: the BD images it writes itself
(read back after a burn), Blu-rays, DVDs and DVD-RAMs of other vendors, and
CD-R / CD-RW written in packets. It reads:

- the Volume Recognition Sequence (ECMA-167 2/9: BEA01, NSR02 or NSR03, TEA01),
  an Anchor (3/10.2) at block 256, the last block or 256 before it, the Main
  Volume Descriptor Sequence or else the Reserve one (3/8.4.2);
- partition maps (3/10.7, UDF 2.2.8-2.2.10): Type 1, virtual (a VAT, UDF 2.2.11,
  in its 1.50 and its 2.00+ form), sparable (its sparing table, UDF 2.2.12) and
  metadata (UDF 2.2.13): when the Metadata File or what it holds is damaged,
  the Metadata Mirror File is read instead;
- File Entries (4/14.9) and Extended File Entries (4/14.17), short and long
  allocation descriptors, data embedded in the entry, allocation extents
  continued in Allocation Extent Descriptors (4/14.5), indirect entries (4/14.7);
- File Identifier Descriptors (4/14.4) with OSTA CS0 names, 8 or 16 bits (UDF 2.1.1).

Anything else (extended allocation descriptors, another map type, block sizes
other than 512 to 4096) raises :class:`UnsupportedUdf` naming it; a damaged
structure raises :class:`UdfError`. Every descriptor's tag is checked (3/7.2:
checksum, CRC, location). A hostile image cannot make the reader loop or
allocate beyond the image: directory loops, repeated allocation extents, a depth
past :data:`MAX_DEPTH` and more than :data:`MAX_ENTRIES` entries are refused,
and a file whose extents leave the image or claim more bytes than the image
holds is listed in :attr:`Volume.refused`, never read.

>>> UdfError("x").exit_code
1
"""

from __future__ import annotations

import binascii
import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Literal, TypeVar, cast

from node.errors import ESCAPES_ROOT, NOT_FOLLOWED, MediumError
from node.extents import Extents

#: Deepest directory read (PS3.10 File IDs have at most 8 components; other folders are given room).
MAX_DEPTH = 64
#: Most File Identifier Descriptors read on one medium.
MAX_ENTRIES = 1 << 20
_VRS_START = 32768  # 2/8.3: the Volume Recognition Sequence starts at byte 32768, 2048-byte descriptors
_VRS_MOST = 64
_BLOCK_SIZES = (2048, 512, 1024, 4096)
_VDS_MOST = 256  # descriptors read from one sequence, pointers included
_INDIRECT_MOST = 16
_VAT_SEARCH = 64  # blocks before the last recorded one where a VAT entry is looked for
_UNUSED = 0xFFFFFFFF  # UDF 2.2.11: a VAT entry not in use; 2.2.12: a free sparing map entry is >= 0xFFFFFFF0

# descriptor tag identifiers (3/7.2.1, 4/7.2.1)
_AVDP, _VDP, _PD, _LVD, _TD = 2, 3, 5, 6, 8
_FSD, _FID, _AED, _IE, _FE, _EFE = 256, 257, 258, 259, 261, 266
# ICB file types (4/14.6.6, UDF 2.3.5.2)
_DIRECTORY, _SYMLINK, _VAT, _REALTIME = 4, 12, 248, 249
_REGULAR = {0, 5, _REALTIME}
_SHORT_AD, _LONG_AD, _EMBEDDED = 0, 1, 3  # 4/14.6.8; 2, extended, is not read

Run = tuple[int | None, int]
"""(byte offset in the image, length) of a piece of a file; the offset is None for a piece that reads as zeros."""

T = TypeVar("T")


class UdfError(MediumError):
    """A UDF volume that cannot be read: damaged, or not UDF at all."""


class UnsupportedUdf(UdfError):
    """A UDF volume using something this reader does not read; the message names it."""


@dataclass(frozen=True)
class UdfFile:
    """A regular file: its size and where its bytes are (``runs``), or its bytes when embedded in its entry."""

    size: int
    runs: tuple[Run, ...]
    embedded: bytes | None = None


#: The Standard Identifiers that make a Volume Recognition Sequence UDF (ECMA-167 3/9.1).
NSR = frozenset({b"NSR02", b"NSR03"})


def vrs_identifiers(fp: BinaryIO) -> set[bytes]:
    """The Standard Identifiers of the Volume Recognition Sequence (``CD001``, ``BEA01``, ``NSR03``...; 2/9.1)."""
    found = set()
    for n in range(_VRS_MOST):
        data = _pread(fp, _VRS_START + n * 2048, 7)
        if len(data) < 7 or data[6] != 1 or not data[1:6].isalnum():  # 2/9.1: a descriptor of version 1
            break
        found.add(data[1:6])
    return found


def _pread(fp: BinaryIO, offset: int, n: int) -> bytes:
    try:
        return os.pread(fp.fileno(), n, offset)
    except OSError as exc:
        raise UdfError(f"unreadable at byte {offset} ({exc.strerror})") from None


def _tagged(data: bytes, location: int | None, idents: tuple[int, ...], where: str) -> bytes:
    """``data`` if it starts with a valid tag (3/7.2) of one of ``idents``, recorded at ``location`` when given."""
    if len(data) < 16:
        raise UdfError(f"no descriptor tag at {where}")
    ident, version, checksum, _, _, crc, crc_length, at = struct.unpack_from("<HHBBHHHI", data)
    if (sum(data[:16]) - checksum) & 0xFF != checksum or version not in (2, 3) or not any(data[:16]):
        raise UdfError(f"no descriptor tag at {where}")
    if ident not in idents:
        raise UdfError(f"descriptor {ident} at {where} is not one of {idents}")
    if location is not None and at != location:
        raise UdfError(f"descriptor {ident} at {where} is recorded as at block {at}")
    if 16 + crc_length > len(data) or binascii.crc_hqx(data[16 : 16 + crc_length], 0) != crc:
        raise UdfError(f"descriptor {ident} at {where} fails its CRC")
    return data


def _dstring(field: bytes) -> str:
    """1/7.2.12: a CS0 dstring, its used length in the last byte."""
    used = field[-1]
    return _cs0(field[:used]) if 0 < used < len(field) else ""


def _cs0(data: bytes) -> str:
    """UDF 2.1.1: OSTA Compressed Unicode, 8 or 16 bits a character."""
    if data[0] == 8:
        return data[1:].decode("latin-1")
    if data[0] == 16 and len(data) % 2:
        return data[1:].decode("utf-16-be", errors="replace")
    raise UnsupportedUdf(f"an identifier in OSTA CS0 with compression ID {data[0]}")


# ---- partitions (3/10.7, UDF 2.2.8-2.2.13): logical block -> absolute block ----


class _Partition:
    """A Type 1 partition (3/10.7.2): ``length`` blocks from absolute block ``start``."""

    def __init__(self, number: int, start: int, length: int) -> None:
        self.number, self.start, self.length = number, start, length

    def contiguous(self, block: int) -> tuple[int, int]:
        """(absolute block of ``block``, how many blocks from there are contiguous)."""
        if block >= self.length:
            raise UdfError(f"block {block} is past the end of partition {self.number} ({self.length} blocks)")
        return self.start + block, self.length - block


class _Sparable(_Partition):
    """UDF 2.2.9: a Type 1 partition whose damaged packets were moved elsewhere, as its sparing table says."""

    def __init__(self, base: _Partition, packet: int, table: dict[int, int]) -> None:
        super().__init__(base.number, base.start, base.length)
        self.packet, self.table = packet, table

    def contiguous(self, block: int) -> tuple[int, int]:
        where, _ = super().contiguous(block)
        first, offset = divmod(block, self.packet)
        moved = self.table.get(first * self.packet)
        return (where if moved is None else moved + offset), self.packet - offset


class _Virtual:
    """UDF 2.2.10, 2.2.11: blocks numbered through the Virtual Allocation Table, over a Type 1 partition."""

    def __init__(self, base: _Partition, table: bytes) -> None:
        self.base, self.table = base, table
        self.length = len(table) // 4

    def contiguous(self, block: int) -> tuple[int, int]:
        if block >= self.length:
            raise UdfError(f"virtual block {block} is past the Virtual Allocation Table ({self.length} entries)")
        (physical,) = struct.unpack_from("<I", self.table, block * 4)
        if physical == _UNUSED:
            raise UdfError(f"virtual block {block} is not in use")
        return self.base.contiguous(physical)[0], 1


class _Metadata:
    """UDF 2.2.10, 2.2.13: blocks of the Metadata File (or of its mirror), over a Type 1 partition."""

    def __init__(self, base: _Partition | _Sparable) -> None:
        self.base = base
        self.main: list[tuple[int, int]] | None = None  # (first base block, blocks) of each extent
        self.mirror: list[tuple[int, int]] | None = None
        self.view: list[tuple[int, int]] = []

    def contiguous(self, block: int) -> tuple[int, int]:
        first = 0
        for start, count in self.view:
            if block < first + count:
                where, run = self.base.contiguous(start + block - first)
                return where, min(run, first + count - block)
            first += count
        raise UdfError(f"metadata block {block} is past the Metadata File ({first} blocks)")


_Map = _Partition | _Virtual | _Metadata


@dataclass
class _Entry:
    """A File Entry or Extended File Entry, read (4/14.9, 4/14.17)."""

    file_type: int
    size: int
    ad_type: int
    ads: bytes  # the allocation descriptors, or the embedded data


class Volume:
    """The files of a UDF volume, read once when it is created.

    With ``listing`` false only the volume structure is read (its label and
    revision), not the directories. ``metadata`` says which copy of a
    metadata partition is read: "main", "mirror", or "either" (the main one,
    the mirror where the main one is damaged; :attr:`notes` then says so). Raises :class:`UdfError` (or
    :class:`UnsupportedUdf`) when the volume cannot be read.
    """

    def __init__(
        self, fp: BinaryIO, *, metadata: Literal["main", "mirror", "either"] = "either", listing: bool = True
    ) -> None:
        self.fp, self.metadata = fp, metadata
        try:
            self.image_size = os.lseek(fp.fileno(), 0, os.SEEK_END)
        except OSError as exc:
            raise UdfError(f"unreadable ({exc.strerror})") from None
        #: relative POSIX path -> the file
        self.files: dict[str, UdfFile] = {}
        #: relative POSIX path -> why the entry is never read
        self.refused: dict[str, str] = {}
        #: what was odd but read anyway (the Metadata Mirror used)
        self.notes: list[str] = []
        self.revision = ""  # "2.60", from the Logical Volume Descriptor's domain (UDF 2.1.5.3)
        self.label = ""  # the Logical Volume Identifier
        self.maps: list[_Map] = []
        self.entries = 0
        self.known: dict[tuple[int, int], UdfFile | str] = {}  # (ref, block) of an entry read -> file or refusal
        # Allocation descriptors left to read: a file's are at most its blocks and one, so the whole
        # volume's at most the image's blocks and one per entry; past that an image is hostile.
        self.ads_left = 0
        # Directory bytes left to read: directories do not overlap, so twice the image (the mirror's reread).
        self.directory_bytes_left = 0
        if not vrs_identifiers(fp) & NSR:
            raise UdfError("no NSR02 or NSR03 descriptor in the Volume Recognition Sequence: not UDF")
        try:
            self.bs, anchor = self._anchor()
            self.ads_left = self.image_size // self.bs + 2 * MAX_ENTRIES
            self.directory_bytes_left = 2 * self.image_size
            lvd = self._volume_descriptors(anchor)
            if listing:
                self._walk(lvd)
        except (struct.error, IndexError) as exc:  # a field past the end of its descriptor
            raise UdfError(f"a damaged descriptor ({exc})") from None

    # -- reading blocks

    def block(self, absolute: int, count: int = 1) -> bytes:
        data = _pread(self.fp, absolute * self.bs, count * self.bs)
        if len(data) < count * self.bs:
            raise UdfError(f"block {absolute} is past the end of the image")
        return data

    def runs(self, ref: int, block: int, length: int) -> list[tuple[int, int]]:
        """(byte offset, length) in the image of ``length`` bytes from ``block`` of partition reference ``ref``."""
        part = self._map(ref)
        out: list[tuple[int, int]] = []
        while length > 0:
            where, count = part.contiguous(block)
            n = min(length, count * self.bs)
            if (where * self.bs) + n > self.image_size:
                raise UdfError(f"an extent at block {where} runs past the end of the image")
            if out and out[-1][0] + out[-1][1] == where * self.bs:
                out[-1] = (out[-1][0], out[-1][1] + n)
            else:
                out.append((where * self.bs, n))
            block, length = block + -(-n // self.bs), length - n
        return out

    def _map(self, ref: int) -> _Map:
        if ref >= len(self.maps):
            raise UdfError(f"partition reference {ref} is not in the logical volume")
        return self.maps[ref]

    def descriptor(self, ref: int, block: int, idents: tuple[int, ...]) -> bytes:
        """The descriptor at ``block`` of partition reference ``ref``, its tag checked."""
        (offset, _), *_ = self.runs(ref, block, self.bs)
        return _tagged(_pread(self.fp, offset, self.bs), block, idents, f"block {block} of partition {ref}")

    # -- the volume structure (ECMA-167 part 3)

    def _anchor(self) -> tuple[int, bytes]:
        """(block size, Anchor Volume Descriptor Pointer): the first valid anchor of 3/8.4.2.1 at any size."""
        for bs in _BLOCK_SIZES:
            last = self.image_size // bs - 1
            for at in (256, last, last - 256):
                if at < 256 or (at + 1) * bs > self.image_size:
                    continue
                try:
                    return bs, _tagged(_pread(self.fp, at * bs, 512), at, (_AVDP,), f"block {at}")
                except UdfError:
                    continue
        raise UdfError("no Anchor Volume Descriptor Pointer at block 256 nor at the end")

    def _volume_descriptors(self, anchor: bytes) -> bytes:
        """The Logical Volume Descriptor; the partitions are mapped. The Reserve sequence if the Main one fails."""
        first_error = None
        for at in (16, 24):  # 3/10.2: the Main, then the Reserve VDS extent
            length, start = struct.unpack_from("<II", anchor, at)
            try:
                return self._sequence(start, length)
            except UnsupportedUdf:
                raise
            except UdfError as exc:
                first_error = first_error or exc
        raise UdfError(f"no readable Volume Descriptor Sequence ({first_error})")

    def _sequence(self, start: int, length: int) -> bytes:
        lvd, pds = b"", {}
        n, seen = 0, set()
        while length >= self.bs and n < _VDS_MOST:
            if start in seen:
                raise UdfError(f"the Volume Descriptor Sequence loops at block {start}")
            seen.add(start)
            data = _tagged(self.block(start), start, (1, 3, 4, 5, 6, 7, 8), f"block {start}")
            ident, n = struct.unpack_from("<H", data)[0], n + 1
            if ident == _TD:
                break
            if ident == _VDP:  # 3/10.3: the sequence goes on elsewhere
                length, start = struct.unpack_from("<II", data, 20)
                continue
            number = struct.unpack_from("<I", data, 16)[0]  # Volume Descriptor Sequence Number: the latest wins
            if ident == _LVD and (not lvd or number >= struct.unpack_from("<I", lvd, 16)[0]):
                lvd = data
            elif ident == _PD:
                pds[struct.unpack_from("<H", data, 22)[0]] = data
            start, length = start + 1, length - self.bs
        if not lvd or not pds:
            raise UdfError("the Volume Descriptor Sequence lacks a Logical Volume or Partition Descriptor")
        if struct.unpack_from("<I", lvd, 212)[0] != self.bs:
            raise UnsupportedUdf(f"a logical block size of {struct.unpack_from('<I', lvd, 212)[0]} bytes "
                                 f"on {self.bs}-byte sectors")
        if lvd[217:236] != b"*OSTA UDF Compliant":
            raise UnsupportedUdf(f"a domain other than OSTA UDF ({lvd[217:240].rstrip(bytes(1))!r})")
        revision = struct.unpack_from("<H", lvd, 240)[0]  # UDF 2.1.5.3: the domain suffix's UDF revision
        if not 0x0100 <= revision <= 0x0260:
            raise UnsupportedUdf(f"UDF revision {revision >> 8:x}.{revision & 0xFF:02x} (1.02 to 2.60 are read)")
        self.revision = f"{revision >> 8:x}.{revision & 0xFF:02x}"
        self.label = _dstring(lvd[84:212])
        self._partition_maps(lvd, pds)
        return lvd

    def _partition_maps(self, lvd: bytes, pds: dict[int, bytes]) -> None:
        """3/10.7, UDF 2.2.8: one map a partition reference, in order; virtual and metadata maps last."""
        table_length, count = struct.unpack_from("<II", lvd, 264)
        table, pos = lvd[440 : 440 + table_length], 0
        later: list[tuple[int, bytes]] = []
        placeholders: dict[int, _Partition] = {}
        for ref in range(count):
            if pos + 2 > len(table) or table[pos + 1] < 6 or pos + table[pos + 1] > len(table):
                raise UdfError(f"partition map {ref} runs past the Logical Volume Descriptor")
            kind, size = table[pos], table[pos + 1]
            entry, pos = table[pos : pos + size], pos + size
            if kind == 1:  # 3/10.7.2: volume sequence number, partition number
                self.maps.append(self._physical(struct.unpack_from("<H", entry, 4)[0], pds))
                continue
            ident = entry[5:28].rstrip(b"\0") if kind == 2 and size == 64 else b""
            base = self._physical(struct.unpack_from("<H", entry, 38)[0], pds) if ident else None
            if base is None:
                raise UnsupportedUdf(f"a partition map of type {kind} and {size} bytes")
            if ident == b"*UDF Sparable Partition":
                self.maps.append(self._sparable(base, entry))
            elif ident in (b"*UDF Virtual Partition", b"*UDF Metadata Partition"):
                self.maps.append(base)  # a placeholder until every physical partition is known
                placeholders[ref] = base
                later.append((ref, entry))
            else:
                raise UnsupportedUdf(f"a partition map {ident.decode('latin-1')!r}")
        for ref, entry in later:
            base = placeholders[ref]
            under = next((m for m in self.maps if isinstance(m, _Partition) and m.number == base.number), base)
            if entry[5:28].rstrip(b"\0") == b"*UDF Virtual Partition":
                self.maps[ref] = _Virtual(under, self._vat(under))
            else:
                self.maps[ref] = self._metadata_partition(under, entry)

    def _physical(self, number: int, pds: dict[int, bytes]) -> _Partition:
        pd = pds.get(number)
        if pd is None:
            raise UdfError(f"no Partition Descriptor for partition {number}")
        start, length = struct.unpack_from("<II", pd, 188)
        if start * self.bs >= self.image_size:
            raise UdfError(f"partition {number} starts past the end of the image")
        return _Partition(number, start, min(length, self.image_size // self.bs - start))

    def _sparable(self, base: _Partition, entry: bytes) -> _Sparable:
        """UDF 2.2.9, 2.2.12: the first readable sparing table of the map's (at most 4)."""
        packet, tables, _ = struct.unpack_from("<HBxI", entry, 40)
        if packet == 0:
            raise UdfError("a sparable partition with packets of 0 blocks")
        for n in range(min(tables, 4)):
            at = struct.unpack_from("<I", entry, 48 + 4 * n)[0]
            try:
                data = self.block(at)
                if data[17:35] != b"*UDF Sparing Table":
                    continue
                count = struct.unpack_from("<H", data, 48)[0]
                data = _tagged(self.block(at, -(-(56 + 8 * count) // self.bs)), at, (0,), f"block {at}")
            except UdfError:
                continue
            pairs = struct.iter_unpack("<II", data[56 : 56 + 8 * count])
            return _Sparable(base, packet, {old: new for old, new in pairs if old < 0xFFFFFFF0})
        raise UdfError("no readable sparing table for the sparable partition")

    def _vat(self, base: _Partition) -> bytes:
        """UDF 2.2.11: the Virtual Allocation Table, in the last recorded blocks (1.50 form or 2.00+)."""
        last = base.start + base.length - 1
        while last > base.start and not any(self.block(last)):  # the zeros after the last written block
            last -= 1
        for at in range(last, max(base.start, last - _VAT_SEARCH) - 1, -1):
            try:
                entry = self._entry_at(self.block(at), None, f"block {at}")
            except UdfError:
                continue
            if entry.file_type not in (0, _VAT) or entry.size > self.image_size:
                continue
            data = self._data(entry, self.maps.index(base), f"the VAT at block {at}")
            if entry.file_type == _VAT and len(data) >= 152:  # 2.00+: a header, then the table
                header = struct.unpack_from("<H", data)[0]
                return data[header:]
            if data[-35:-13] == b"*UDF Virtual Alloc Tbl":  # 1.50: the table, then an identifier
                return data[:-36]
        raise UdfError("no Virtual Allocation Table at the end of the recorded area")

    def _metadata_partition(self, base: _Partition, entry: bytes) -> _Metadata:
        """UDF 2.2.10, 2.2.13: the Metadata File's extents, and its mirror's."""
        main_at, mirror_at = struct.unpack_from("<II", entry, 40)
        meta = _Metadata(base)
        ref = self.maps.index(base)
        errors = []
        for name, at in (("main", main_at), ("mirror", mirror_at)):
            if self.metadata not in (name, "either"):
                continue
            try:
                fe = self._entry_at(self.descriptor(ref, at, (_FE, _EFE)), None, f"the Metadata File at {at}")
                extents = self._ads(fe, f"the Metadata File at {at}")
            except UdfError as exc:
                errors.append(f"{name}: {exc}")
                continue
            setattr(meta, name, extents)
        if meta.main is None and meta.mirror is None:
            raise UdfError(f"neither the Metadata File nor its mirror is readable ({'; '.join(errors)})")
        if meta.main is None and errors:
            self.notes.append(f"the Metadata File is damaged ({errors[0]}); its mirror was read")
        meta.view = meta.main if meta.main is not None else meta.mirror or []
        return meta

    # -- entries and their data (ECMA-167 part 4)

    def _entry_at(self, data: bytes, location: int | None, where: str) -> _Entry:
        fe = _tagged(data, location, (_FE, _EFE), where)
        strategy, file_type, flags = struct.unpack_from("<H", fe, 20)[0], fe[27], struct.unpack_from("<H", fe, 34)[0]
        if strategy not in (4, 4096):
            raise UnsupportedUdf(f"ICB strategy {strategy} at {where}")
        size = struct.unpack_from("<Q", fe, 56)[0]
        first = 176 if struct.unpack_from("<H", fe)[0] == _FE else 216  # 4/14.9.20, 4/14.17.22
        ea, ad = struct.unpack_from("<II", fe, first - 8)
        if first + ea + ad > len(fe):
            raise UdfError(f"the entry at {where} overflows its block")
        return _Entry(file_type, size, flags & 7, fe[first + ea : first + ea + ad])

    def entry(self, ref: int, block: int) -> _Entry:
        """The File Entry at (ref, block), following indirect entries (4/14.7, strategy 4096)."""
        for _ in range(_INDIRECT_MOST):
            data = self.descriptor(ref, block, (_FE, _EFE, _IE))
            if struct.unpack_from("<H", data)[0] != _IE:
                return self._entry_at(data, block, f"block {block} of partition {ref}")
            _, block, ref = struct.unpack_from("<IIH", data, 36)  # the indirect ICB's long_ad
        raise UdfError(f"more than {_INDIRECT_MOST} indirect entries from block {block}")

    def _ads(self, entry: _Entry, what: str) -> list[tuple[int, int]]:
        """(first block, blocks) of each extent of a metadata file: short_ads, no continuation (UDF 2.2.13.1)."""
        if entry.ad_type != _SHORT_AD:
            raise UnsupportedUdf(f"{what} with allocation descriptors of type {entry.ad_type}")
        out: list[tuple[int, int]] = []
        for raw, block in struct.iter_unpack("<II", entry.ads[: len(entry.ads) // 8 * 8]):
            if raw >> 30 == 3 or not raw & 0x3FFFFFFF:
                break
            out.append((block, -(-(raw & 0x3FFFFFFF) // self.bs)))
        return out

    def extents(self, entry: _Entry, ref: int, what: str) -> list[Run]:
        """The runs holding an entry's ``size`` bytes (4/12, 4/14.14), allocation extents followed (4/14.5)."""
        if entry.ad_type not in (_SHORT_AD, _LONG_AD):  # embedded data is taken by the callers before
            raise UnsupportedUdf(f"{what}: allocation descriptors of type {entry.ad_type} (4/14.6.8)")
        width, area, left = (8 if entry.ad_type == _SHORT_AD else 16), entry.ads, entry.size
        out: list[Run] = []
        seen: set[tuple[int, int]] = set()
        while left > 0:
            next_area = None
            for pos in range(0, len(area) - width + 1, width):
                self.ads_left -= 1
                if self.ads_left < 0:
                    raise UdfError("more allocation descriptors than the image has blocks")
                raw, block = struct.unpack_from("<II", area, pos)
                part = ref if width == 8 else struct.unpack_from("<H", area, pos + 8)[0]
                kind, length = raw >> 30, raw & 0x3FFFFFFF
                if length == 0:
                    break
                if kind == 3:  # the next extent of allocation descriptors
                    if (part, block) in seen:
                        raise UdfError(f"{what}: its allocation extents loop at block {block}")
                    seen.add((part, block))
                    aed = self.descriptor(part, block, (_AED,))
                    next_area = aed[24 : 24 + struct.unpack_from("<I", aed, 20)[0]]
                    break
                length = min(length, left)
                out += self.runs(part, block, length) if kind == 0 else [(None, length)]  # 1, 2: read as zeros
                left -= length
                if left == 0:
                    break
            if next_area is None:
                break
            area = next_area
        if left:
            raise UdfError(f"{what} records {entry.size - left} of its {entry.size} bytes")
        return out

    def _data(self, entry: _Entry, ref: int, what: str) -> bytes:
        """The whole content of a small file (a directory, the VAT), read into memory."""
        if entry.ad_type == _EMBEDDED:
            if entry.size > len(entry.ads):
                raise UdfError(f"{what} claims {entry.size} bytes but embeds {len(entry.ads)}")
            return entry.ads[: entry.size]
        runs = self.extents(entry, ref, what)
        return b"".join(bytes(n) if at is None else _pread(self.fp, at, n) for at, n in runs)

    # -- the file set (4/14.1) and its directories (4/14.4)

    def _either(self, ref: int, what: str, read: Callable[[], T]) -> T:
        """``read()``, again through the Metadata Mirror when it fails on a damaged metadata partition."""
        part = self.maps[ref] if ref < len(self.maps) else None
        if not isinstance(part, _Metadata) or part.mirror is None or part.view is part.mirror:
            return read()
        try:
            return read()
        except UnsupportedUdf:
            raise
        except UdfError as exc:
            part.view = part.mirror
            try:
                found = read()
            except UdfError:
                raise exc from None
            finally:
                part.view = part.main or part.mirror
            self.notes.append(f"{what}: {exc}; read from the Metadata Mirror")
            return found

    def _walk(self, lvd: bytes) -> None:
        fsd_block, fsd_ref = struct.unpack_from("<IH", lvd, 252)  # 3/10.6.7: the FSD's long_ad
        fsd = self._either(fsd_ref, "the File Set Descriptor", lambda: self.descriptor(fsd_ref, fsd_block, (_FSD,)))
        root_block, root_ref = struct.unpack_from("<IH", fsd, 404)  # 4/14.1.7: the root directory ICB
        todo, seen = [("", root_ref, root_block, 0)], {(root_ref, root_block)}
        while todo:
            path, ref, block, depth = todo.pop()
            children = self._either(ref, path or "/", lambda: self._directory(path, ref, block))
            for name, child_ref, child_block in children:
                child = f"{path}/{name}".lstrip("/")
                if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
                    self.refused[child] = ESCAPES_ROOT
                    continue
                kind = self._either(child_ref, child, lambda: self.entry(child_ref, child_block))
                if kind.file_type == _DIRECTORY:
                    if (child_ref, child_block) in seen:
                        raise UdfError(f"{child}: a directory loop (its entry is reached again)")
                    if depth + 1 >= MAX_DEPTH:
                        raise UdfError(f"{child}: directories nested deeper than {MAX_DEPTH} levels")
                    seen.add((child_ref, child_block))
                    todo.append((child, child_ref, child_block, depth + 1))
                elif kind.file_type == _SYMLINK:
                    self.refused[child] = NOT_FOLLOWED
                elif kind.file_type not in _REGULAR:
                    self.refused[child] = f"is a UDF entry of file type {kind.file_type}, not a file; not read"
                else:
                    key = (child_ref, child_block)  # hard links (4/14.9.6) share one entry, read once
                    found = self.known.get(key) or self.known.setdefault(key, self._file(child, kind, child_ref))
                    if isinstance(found, str):
                        self.refused[child] = found
                    else:
                        self.files[child] = found

    def _file(self, path: str, entry: _Entry, ref: int) -> UdfFile | str:
        """The file of a regular entry, or why it is not read."""
        if entry.size > self.image_size:
            return (f"its UDF entry claims {entry.size} bytes, more than the whole image ({self.image_size} bytes); "
                    "not read")
        if entry.ad_type == _EMBEDDED:
            if entry.size > len(entry.ads):
                return f"its UDF entry claims {entry.size} bytes but embeds {len(entry.ads)}; not read"
            return UdfFile(entry.size, (), entry.ads[: entry.size])
        try:
            return UdfFile(entry.size, tuple(self.extents(entry, ref, path)))
        except UnsupportedUdf:
            raise
        except UdfError as exc:
            if self.ads_left < 0:
                raise
            return f"{exc}; not read"

    def _directory(self, path: str, ref: int, block: int) -> list[tuple[str, int, int]]:
        """(name, partition reference, block) of each child, parents and deleted skipped."""
        entry = self.entry(ref, block)
        if entry.file_type != _DIRECTORY:
            raise UdfError(f"{path or '/'}: its entry is of file type {entry.file_type}, not a directory")
        self.directory_bytes_left -= entry.size
        if self.directory_bytes_left < 0:
            raise UdfError(f"{path or '/'}: the directories claim more bytes than the image holds")
        data, pos, out = self._data(entry, ref, path or "/"), 0, []
        names: set[str] = set()
        while pos + 38 <= len(data):
            characteristics, name_length = data[pos + 18], data[pos + 19]
            _, child_block, child_ref = struct.unpack_from("<IIH", data, pos + 20)
            use = struct.unpack_from("<H", data, pos + 36)[0]
            length = (38 + use + name_length + 3) // 4 * 4
            _tagged(data[pos : pos + length], None, (_FID,), f"{path or '/'} byte {pos}")
            name_bytes, pos = data[pos + 38 + use : pos + 38 + use + name_length], pos + length
            if characteristics & 0x0C:  # 4/14.4.3: deleted or parent
                continue
            self.entries += 1
            if self.entries > MAX_ENTRIES:
                raise UdfError(f"more than {MAX_ENTRIES} directory entries")
            name = _cs0(name_bytes) if name_bytes else ""
            if name in names:
                raise UdfError(f"{path}/{name}: recorded twice in its directory")
            names.add(name)
            out.append((name, child_ref, child_block))
        return out

    # -- reading files

    def open(self, path: str) -> BinaryIO:
        """A seekable reader of a file of :attr:`files` (:class:`node.extents.Extents`); nothing is read up front."""
        try:
            f = self.files[path]
        except KeyError:
            raise MediumError(f"{path}: no such file on the medium") from None
        if f.embedded is not None:
            return io.BytesIO(f.embedded)
        return cast(BinaryIO, Extents(self.fp.fileno(), f.runs, f.size))
