"""A minimal PS3.5 / PS3.10 reader and encoder for the hot path.

``medianode burn`` reads a handful of attributes from every file and writes
them into the DICOMDIR. pydicom costs 170 ms to import and ~0.8 ms per header;
this module reads the File Meta Information and the wanted top-level elements
of a Little Endian file in a few microseconds, keeping each element's encoded
bytes so that they can be copied into a directory record verbatim (which also
keeps every Specific Character Set byte-exact). Anything unusual (Big Endian,
Deflate, a sequence in Implicit VR) raises :class:`NeedsPydicom` and the caller
falls back to pydicom.

:func:`check_complete` walks a whole data set, in any uncompressed or Deflated
syntax, as a stream, and says why it is not what it claims (cut short, or a
Deflated one that would inflate past :data:`INFLATE_MAX_BYTES` or
:data:`INFLATE_MAX_RATIO`); the receiver and the reading of media both ask it
before trusting a file.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, NamedTuple, Protocol

from node import dicom
from node.tags import (
    FILE_META_INFORMATION_GROUP_LENGTH,
    FILE_META_INFORMATION_VERSION,
    FLOAT_PIXEL_DATA,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    BITS_ALLOCATED,
    COLUMNS,
    ITEM,
    ITEM_DELIMITATION_ITEM,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC_INTERPRETATION,
    PIXEL_DATA,
    ROWS,
    SAMPLES_PER_PIXEL,
    SEQUENCE_DELIMITATION_ITEM,
    TRANSFER_SYNTAX_UID,
)

#: The length of an item or value that ends with a delimiter (PS3.5 7.1.2, 7.5).
UNDEFINED = 0xFFFFFFFF
#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_LONG_VR_BYTES = frozenset(v.encode() for v in LONG_VRS)
_CHUNK = 64 * 1024
#: Every VR of PS3.5 Table 6.2-1, by its two bytes: a dict look-up both decodes and validates.
_VR_NAMES = {v.encode(): v for v in (
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV"
).split()}

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<L")
_TAG = struct.Struct("<HH")
_ELEMENT = struct.Struct("<HHL")  # tag, then an Implicit VR (or item) length
_BIG_ENDIAN = struct.Struct(">HHL"), struct.Struct(">H"), struct.Struct(">L")  # PS3.5 7.3, retired


class NeedsPydicom(Exception):
    """The file is valid DICOM, but beyond what this reader handles."""


class NotDicom(Exception):
    """The file is not DICOM (no preamble and no plausible dataset)."""


class Element(NamedTuple):
    """One element: its VR, its value bytes and its whole Explicit VR Little Endian encoding.

    ``items`` holds the parsed items of a sequence (SQ); ``value`` is empty then.
    """

    vr: str
    value: bytes
    raw: bytes
    items: tuple[dict[int, Element], ...] = ()


@dataclass
class Header:
    """What :func:`read_header` learned about one file."""

    path: str
    size: int
    meta: dict[int, Element]
    #: Offset of the first byte after the File Meta Information (0 when there is none).
    dataset_offset: int
    transfer_syntax: str
    elements: dict[int, Element] = field(default_factory=dict)
    has_pixels: bool = False
    has_preamble: bool = False
    #: Offset of the first pixel element (Float / Double Float / Pixel Data), 0 when none or unknown.
    pixel_offset: int = 0

    def text(self, tag: int) -> str:
        """The element's value as a stripped string ("" when absent)."""
        return text(self.elements.get(tag))


def text(element: Element | None) -> str:
    """Decode a text value for logic and reports (not for writing: copy ``raw``)."""
    if element is None:
        return ""
    return element.value.decode("utf-8", "replace").strip(" \0")


# -- encoding -------------------------------------------------------------------


def pad(value: bytes, vr: str) -> bytes:
    """Pad a value to even length as PS3.5 6.2 requires (UI and binary with NUL)."""
    if len(value) % 2:
        return value + (b"\0" if vr in ("UI", "OB", "UN") else b" ")
    return value


def encode(tag: int, vr: str, value: bytes | str) -> bytes:
    """Encode one element in Explicit VR Little Endian (PS3.5 7.1.2)."""
    data = pad(value.encode("ascii") if isinstance(value, str) else value, vr)
    if vr in LONG_VRS:
        return long_header(tag, vr, len(data)) + data
    return _TAG.pack(tag >> 16, tag & 0xFFFF) + vr.encode("ascii") + _U16.pack(len(data)) + data


def long_header(tag: int, vr: str, length: int) -> bytes:
    """The Explicit VR Little Endian header of an element of a :data:`LONG_VRS` VR (PS3.5 7.1.2)."""
    return _TAG.pack(tag >> 16, tag & 0xFFFF) + vr.encode("ascii") + b"\0\0" + _U32.pack(length)


def item_header(tag: int, length: int) -> bytes:
    """The header of an item or a delimiter: its tag and a 4-byte length (PS3.5 7.5)."""
    return _ELEMENT.pack(tag >> 16, tag & 0xFFFF, length)


def encode_sequence(tag: int, items: list[bytes]) -> bytes:
    """Encode a defined-length sequence from already-encoded item datasets."""
    body = b"".join(item_header(ITEM, len(i)) + i for i in items)
    return long_header(tag, "SQ", len(body)) + body


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, ``DICM`` and a File Meta Information group naming us (PS3.10 7.1)."""
    body = b"".join(
        (
            encode(FILE_META_INFORMATION_VERSION, "OB", b"\0\1"),
            encode(MEDIA_STORAGE_SOP_CLASS_UID, "UI", sop_class_uid),
            encode(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", sop_instance_uid),
            encode(TRANSFER_SYNTAX_UID, "UI", transfer_syntax),
            encode(IMPLEMENTATION_CLASS_UID, "UI", dicom.MEDIANODE_CLASS_UID),
            encode(IMPLEMENTATION_VERSION_NAME, "SH", dicom.MEDIANODE_VERSION_NAME),
        )
    )
    return b"\0" * 128 + b"DICM" + encode(FILE_META_INFORMATION_GROUP_LENGTH, "UL", _U32.pack(len(body))) + body


# -- decoding -------------------------------------------------------------------


def element_header(buf: bytes, off: int, *, implicit: bool, little: bool = True) -> tuple[int, bytes, int, int]:
    """(tag, VR, value length, header length) of the element, item or delimiter encoded at ``buf[off:]``.

    The one decoder of element headers in the package (PS3.5 7.1, 7.5): an item or delimiter
    (group FFFE), and any element in Implicit VR, is a tag and a 4-byte length, with no VR (``b""``);
    an explicit VR of :data:`LONG_VRS` has 2 reserved bytes and a 4-byte length (``buf`` then needs
    12 bytes from ``off``), any other VR a 2-byte length. The VR is returned as read, unchecked.

    >>> element_header(encode(TRANSFER_SYNTAX_UID, "UI", "1.2.840.10008.1.2.1"), 0, implicit=False)
    (131088, b'UI', 20, 8)
    """
    element, u16, u32 = (_ELEMENT, _U16, _U32) if little else _BIG_ENDIAN
    group, number, length = element.unpack_from(buf, off)
    tag = group << 16 | number
    if implicit or group == 0xFFFE:
        return tag, b"", length, 8
    vr = buf[off + 4 : off + 6]
    if vr in _LONG_VR_BYTES:
        return tag, vr, u32.unpack_from(buf, off + 8)[0], 12
    return tag, vr, u16.unpack_from(buf, off + 6)[0], 8


class Source(Protocol):
    """What the readers here need of a file: a binary file, or a :class:`StartedFile`."""

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...


class StartedFile:
    """A file of ``size`` bytes whose first bytes, ``start``, are still in memory (its writer kept them): reads
    within them cost no system call, and the file is opened only when a read goes past them. A receiver
    checks and reads the header of a data set it has just written without reading it back."""

    def __init__(self, path: str | os.PathLike[str], start: bytes, size: int) -> None:
        self.path, self.start, self.size = path, start, size
        self.pos = 0
        self._file: BinaryIO | None = None

    def seek(self, offset: int, whence: int = 0, /) -> int:
        self.pos = offset + (self.size if whence == os.SEEK_END else self.pos if whence == os.SEEK_CUR else 0)
        return self.pos

    def read(self, size: int = -1, /) -> bytes:
        end = self.size if size < 0 else min(self.pos + size, self.size)
        if end <= self.pos:
            return b""
        if end <= len(self.start):
            data = self.start[self.pos:end]
        else:
            if self._file is None:
                self._file = open(self.path, "rb")
            self._file.seek(self.pos)
            data = self._file.read(end - self.pos)
        self.pos += len(data)
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> StartedFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _Reader:
    """Random access to a file through one bounded window."""

    def __init__(self, fp: Source, size: int) -> None:
        self.fp = fp
        self.size = size
        self.start = 0
        self.buf = b""

    def get(self, pos: int, n: int) -> bytes:
        """``n`` bytes from ``pos``, re-reading the window when they are outside it."""
        off = pos - self.start
        if off < 0 or off + n > len(self.buf):
            if pos + n > self.size:
                raise NeedsPydicom("element runs past the end of the file")
            self.fp.seek(pos)
            self.start, off = pos, 0
            self.buf = self.fp.read(max(n, _CHUNK))
        return self.buf[off : off + n]


class _Parser:
    def __init__(self, reader: _Reader, *, implicit: bool, wanted: frozenset[int], vrs: dict[int, str]):
        self.r = reader
        self.implicit = implicit
        self.wanted = wanted
        self.vrs = vrs

    def header(self, pos: int) -> tuple[int, str, int, int]:
        """Return (tag, vr, value length, header length) of the element at ``pos``."""
        r = self.r
        off = pos - r.start
        if off < 0 or off + 12 > len(r.buf):
            r.get(pos, 12 if pos + 12 <= r.size else 8)  # moves the window unless it holds these bytes already
            off = pos - r.start
        try:
            tag, code, length, size = element_header(r.buf, off, implicit=self.implicit)
        except struct.error:  # a 12-byte header in the file's last 8 to 11 bytes
            raise NeedsPydicom("element runs past the end of the file") from None
        if tag >> 16 == 0xFFFE:
            return tag, "", length, 8
        if self.implicit:
            return tag, "SQ" if length == UNDEFINED else self.vrs.get(tag, "UN"), length, 8
        vr = _VR_NAMES.get(code)
        if vr is None:
            raise NotDicom(f"no valid VR at offset {pos}")
        return tag, vr, length, size

    def dataset(
        self, pos: int, end: int, *, capture: bool, top: bool = False
    ) -> tuple[dict[int, Element], int, bool]:
        """Parse elements from ``pos`` to ``end`` (or an item delimiter when ``end`` is None).

        Returns the captured elements, the position after the data set, and
        whether Pixel Data was met (top level only, where parsing stops there).
        """
        out: dict[int, Element] = {}
        while pos < end:
            tag, vr, length, hlen = self.header(pos)
            if tag == ITEM_DELIMITATION_ITEM:
                return out, pos + 8, False
            if top and FLOAT_PIXEL_DATA <= tag <= PIXEL_DATA:
                return out, pos, True
            keep = capture and (not top or tag in self.wanted)
            if vr == "UN" and length == UNDEFINED:
                raise NeedsPydicom("a sequence of unknown VR (Implicit VR inside Explicit)")
            if vr == "SQ":
                items, after = self.sequence(pos + hlen, length, capture=keep)
            elif length == UNDEFINED:
                raise NeedsPydicom(f"undefined length on ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            else:
                items, after = (), pos + hlen + length
            if keep:
                if self.implicit and vr in ("SQ", "UN"):
                    raise NeedsPydicom("a wanted sequence or unknown VR in Implicit VR")
                value = b"" if vr == "SQ" else self.r.get(pos + hlen, length)
                raw = encode(tag, vr, value) if self.implicit else self.r.get(pos, after - pos)
                out[tag] = Element(vr, value, raw, items)
            pos = after
        return out, pos, False

    def sequence(self, pos: int, length: int, *, capture: bool) -> tuple[tuple[dict[int, Element], ...], int]:
        end = self.r.size if length == UNDEFINED else pos + length
        items: list[dict[int, Element]] = []
        while pos < end:
            tag, _, ilen, _ = self.header(pos)
            if tag == SEQUENCE_DELIMITATION_ITEM:
                return tuple(items), pos + 8
            if tag != ITEM:
                raise NeedsPydicom("malformed sequence")
            iend = self.r.size if ilen == UNDEFINED else pos + 8 + ilen
            item, after, _ = self.dataset(pos + 8, iend, capture=capture)
            items.append(item)
            pos = after
        return tuple(items), pos


def read_meta(path: str) -> tuple[dict[int, Element], int, bool]:
    """Return a file's File Meta elements, the offset of its dataset, and whether it has a preamble."""
    with open(path, "rb") as fp:
        return _meta(_Reader(fp, fp.seek(0, 2)))


def _meta(reader: _Reader) -> tuple[dict[int, Element], int, bool]:
    """Parse the preamble and group 0002 (always Explicit VR Little Endian, PS3.10 7.1)."""
    if reader.size < 8:
        raise NotDicom("too short")
    has_preamble = reader.size >= 132 and reader.get(128, 4) == b"DICM"
    pos = 132 if has_preamble else 0
    meta: dict[int, Element] = {}
    parser = _Parser(reader, implicit=False, wanted=frozenset(), vrs={})
    while pos + 8 <= reader.size:
        group = _U16.unpack(reader.get(pos, 2))[0]
        if group != 0x0002:
            break
        tag, vr, length, hlen = parser.header(pos)
        if length == UNDEFINED:
            raise NeedsPydicom("undefined length in File Meta Information")
        meta[tag] = Element(vr, reader.get(pos + hlen, length), reader.get(pos, hlen + length))
        pos += hlen + length
    return meta, pos, has_preamble


def read_header(path: str, *, wanted: frozenset[int], vrs: dict[int, str]) -> Header:
    """Read File Meta Information and the ``wanted`` top-level elements of one file.

    ``vrs`` gives the VR of each wanted tag for Implicit VR files. Raises
    :class:`NotDicom` for files that are not DICOM and :class:`NeedsPydicom`
    for DICOM this reader does not handle (the caller then uses pydicom).
    """
    with open(path, "rb") as fp:
        return header_of(fp, fp.seek(0, 2), wanted=wanted, vrs=vrs, path=path)


def header_of(fp: Source, size: int, *, wanted: frozenset[int], vrs: dict[int, str], path: str = "") -> Header:
    """:func:`read_header` of an open file of ``size`` bytes (a medium's stream), ``path`` its name."""
    reader = _Reader(fp, size)
    meta, pos, has_preamble = _meta(reader)
    ts = text(meta.get(TRANSFER_SYNTAX_UID))
    if not ts:
        if meta:
            raise NeedsPydicom("File Meta Information without Transfer Syntax UID")
        ts = _guess_syntax(reader)
    if ts == dicom.EXPLICIT_VR_BE or ts == dicom.DEFLATED_LE:
        raise NeedsPydicom("Big Endian or Deflate")
    parser = _Parser(reader, implicit=ts == dicom.IMPLICIT_VR_LE, wanted=wanted, vrs=vrs)
    try:
        elements, end, has_pixels = parser.dataset(pos, size, capture=True, top=True)
    except struct.error as exc:
        raise NeedsPydicom(str(exc)) from None
    except NotDicom as exc:
        if has_preamble or meta:  # DICOM by its header: pydicom will say what is wrong
            raise NeedsPydicom(str(exc)) from None
        raise
    return Header(path, size, meta, pos, ts, elements, has_pixels, has_preamble, end if has_pixels else 0)


def pixel_data(data: bytes, offset: int) -> tuple[int, int] | None:
    """(value offset, length) of a native Pixel Data element at ``offset`` of Explicit VR LE ``data``, else None."""
    head = data[offset:offset + 12]
    if len(head) < 12 or head[4:6] not in (b"OB", b"OW"):
        return None
    if _TAG.unpack_from(head) != (PIXEL_DATA >> 16, PIXEL_DATA & 0xFFFF):
        return None
    length = _U32.unpack_from(head, 8)[0]
    return (None if length == UNDEFINED else (offset + 12, length))


def _guess_syntax(reader: _Reader) -> str:
    """Guess the syntax of a dataset without File Meta (Little Endian only)."""
    head = reader.get(0, 8)
    group = _U16.unpack(head[:2])[0]
    if group == 0 or group > 0x00FF or group % 2:
        # Big Endian or not DICOM at all; pydicom will decide.
        if head[0] == 0 and head[1] in (0x08, 0x10):
            raise NeedsPydicom("dataset without File Meta looks Big Endian")
        raise NotDicom("no DICOM preamble or dataset")
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return dicom.EXPLICIT_VR_LE
    return dicom.IMPLICIT_VR_LE


# -- completeness ---------------------------------------------------------------

#: A Deflated data set (PS3.5 A.5) is refused once it inflates past this many bytes ...
INFLATE_MAX_BYTES = 1 << 30
#: ... or, past :data:`INFLATE_RATIO_FROM` bytes, past this many times its deflated size. A blank
#: image deflates a thousandfold, so the ratio alone would refuse small honest instances.
INFLATE_MAX_RATIO = 200
INFLATE_RATIO_FROM = 64 << 20
#: How :func:`check_complete` begins the reason for a Deflated data set refused by those bounds.
INFLATION_REFUSED = "the Deflated data set inflates past"
#: What every reason for a file cut short begins with.
TRUNCATED = "truncated: "
#: How :func:`check_complete` begins the reason for a file that is no DICOM data set it can walk.
NOT_DICOM = "not DICOM: "
_ENDS_INSIDE = TRUNCATED + "the file ends inside a data element"
#: Sequences nested deeper than this are refused rather than walked (PS3.5 7.5 sets no limit).
_MAX_DEPTH = 64
#: The top-level values that size native Pixel Data (PS3.3 C.7.6.3).
_IMAGE_TAGS = frozenset({ROWS, COLUMNS, SAMPLES_PER_PIXEL, PHOTOMETRIC_INTERPRETATION, BITS_ALLOCATED,
                         NUMBER_OF_FRAMES})


class _Refused(Exception):
    """Why the walk stopped: the data set is not what it claims."""


class _FileStream:
    """A data set read forward from the first ``size`` bytes of a file, through one window of
    :data:`_CHUNK` bytes: the elements' headers are taken from it, a value is skipped by moving past
    it, and only a value that leaves the window costs a seek and another read."""

    def __init__(self, fp: Source, start: int, size: int) -> None:
        self.fp, self.pos, self.size = fp, start, size
        self.window, self.window_at = b"", start

    def read(self, n: int) -> bytes:
        off = self.pos - self.window_at
        if off < 0 or off + n > len(self.window):
            self.fp.seek(self.pos)
            self.window = self.fp.read(max(0, min(max(n, _CHUNK), self.size - self.pos)))
            self.window_at, off = self.pos, 0
        data = self.window[off : off + n]
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        n = max(0, min(n, self.size - self.pos))
        self.pos += n
        return n


class _InflatedStream:
    """A Deflated data set (PS3.5 A.5) inflated a chunk at a time as it is read, within the bounds."""

    def __init__(self, fp: Source, start: int, size: int) -> None:
        fp.seek(start)
        self.fp, self.pos, self.deflated = fp, 0, size - start
        self.z = zlib.decompressobj(-zlib.MAX_WBITS)
        self.buf = bytearray()
        self.inflated = 0

    def _more(self) -> bool:
        """Inflate the next piece into :attr:`buf`; False at the end of the stream."""
        while not self.z.eof:
            data = self.z.unconsumed_tail or self.fp.read(_CHUNK)
            out = self.z.decompress(data, _CHUNK) if data else self.z.flush()
            self.inflated += len(out)
            if self.inflated > INFLATE_MAX_BYTES or (
                    self.inflated > INFLATE_RATIO_FROM and self.inflated > INFLATE_MAX_RATIO * self.deflated):
                raise _Refused(f"{INFLATION_REFUSED} {self.inflated >> 20} MiB from {self.deflated} bytes "
                               f"(limits: {INFLATE_MAX_BYTES >> 20} MiB, and {INFLATE_MAX_RATIO} times "
                               f"the deflated size past {INFLATE_RATIO_FROM >> 20} MiB)")
            self.buf += out
            if out:
                return True
            if not data:
                return False  # the compressed stream is cut short
        return False

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and self._more():
            pass
        data = bytes(self.buf[:n])
        del self.buf[:n]
        self.pos += len(data)
        return data

    def skip(self, n: int) -> int:
        left = n
        while left and (self.buf or self._more()):
            k = min(left, len(self.buf))
            del self.buf[:k]
            left -= k
        self.pos += n - left
        return n - left


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Walk:
    """Every element, item and fragment of a data set, its lengths checked against what encloses it."""

    def __init__(self, stream: _FileStream | _InflatedStream, *, implicit: bool, little: bool) -> None:
        self.s = stream
        self.implicit = implicit
        self.little = little
        self.depth = 0

    def header(self, *, items: bool = False) -> tuple[int, str, int] | None:
        """(tag, VR, length) of the next element, item or delimiter; None at the stream's end."""
        at = self.s.pos
        head = self.s.read(8)
        if not head:
            return None
        if len(head) < 8:
            raise _Refused(_ENDS_INSIDE)
        implicit = self.implicit or items or head[:2] == (b"\xfe\xff" if self.little else b"\xff\xfe")
        if not implicit and head[4:6] in _LONG_VR_BYTES:
            head += self.s.read(4)
            if len(head) < 12:
                raise _Refused(_ENDS_INSIDE)
        tag, code, length, _ = element_header(head, 0, implicit=implicit, little=self.little)
        if tag >> 16 == 0xFFFE or implicit:
            return tag, "", length
        vr = _VR_NAMES.get(code)
        if vr is None:
            raise _Refused(f"malformed: no valid VR in {_name(tag)} at byte {at}")
        return tag, vr, length

    def elements(self, end: int | None, *, top: bool) -> None:
        """Walk to ``end``, to an Item Delimitation Item (``end`` None inside an item), or to the stream's end."""
        image: dict[int, bytes] = {}
        start = self.s.pos
        while end is None or self.s.pos < end:
            at = self.s.pos
            found = self.header()
            if found is None:
                if top:
                    break
                raise _Refused(_ENDS_INSIDE)
            tag, vr, length = found
            if tag == ITEM_DELIMITATION_ITEM and end is None and not top:
                return
            if tag in (ITEM_DELIMITATION_ITEM, SEQUENCE_DELIMITATION_ITEM):
                continue  # a stray delimiter: nothing follows from it
            if tag == ITEM:
                raise _Refused(f"malformed: an item outside a sequence at byte {at}")
            if length == UNDEFINED:
                if vr in ("", "SQ", "UN") and tag != PIXEL_DATA:
                    self.sequence(None, implicit=self.implicit or vr == "UN")  # UN: PS3.5 6.2.2
                elif vr in ("", "OB", "OW"):
                    self.fragments(tag)
                else:
                    raise _Refused(f"malformed: undefined length on {_name(tag)} of VR {vr}")
            else:
                value_end = self.s.pos + length
                if end is not None and value_end > end:
                    raise _Refused(_ENDS_INSIDE if top else
                                   f"malformed: {_name(tag)} at byte {at} runs past the end of its item")
                if vr == "SQ":
                    self.sequence(value_end, implicit=self.implicit)
                elif top and tag in _IMAGE_TAGS and length <= 16:
                    image[tag] = self.s.read(length)
                elif self.s.skip(length) < length:
                    raise _Refused(_ENDS_INSIDE)
                if top and tag == PIXEL_DATA:
                    self.native_pixels(image, length)
        if end is not None and self.s.pos > end:
            raise _Refused(f"malformed: an element runs past the end of its item at byte {end}")
        if top and self.s.pos == start:
            raise _Refused(TRUNCATED + "no data set follows the File Meta Information")

    def sequence(self, end: int | None, *, implicit: bool) -> None:
        """Walk items to ``end``, or to the Sequence Delimitation Item (``end`` None)."""
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Refused(f"malformed: sequences nested more than {_MAX_DEPTH} deep")
        outer, self.implicit = self.implicit, implicit
        while end is None or self.s.pos < end:
            at = self.s.pos
            found = self.header(items=True)
            if found is None:
                raise _Refused(_ENDS_INSIDE)
            tag, _, length = found
            if tag == SEQUENCE_DELIMITATION_ITEM:
                if end is None:
                    break
                continue
            if tag != ITEM:
                raise _Refused(f"malformed: {_name(tag)} where a sequence item was expected, at byte {at}")
            if length == UNDEFINED:
                self.elements(None, top=False)
            elif end is not None and self.s.pos + length > end:
                raise _Refused(f"malformed: the item at byte {at} runs past the end of its sequence")
            else:
                self.elements(self.s.pos + length, top=False)
        if end is not None and self.s.pos > end:
            raise _Refused(f"malformed: an item runs past the end of its sequence at byte {end}")
        self.implicit = outer
        self.depth -= 1

    def fragments(self, tag: int) -> None:
        """Encapsulated values (PS3.5 A.4): whole items up to the Sequence Delimitation Item."""
        while True:
            at = self.s.pos
            found = self.header(items=True)
            if found is None:
                raise _Refused(_ENDS_INSIDE)
            item, _, length = found
            if item == SEQUENCE_DELIMITATION_ITEM:
                return
            if item != ITEM or length == UNDEFINED:
                raise _Refused(f"malformed: the fragments of {_name(tag)} hold something other than an item "
                               f"at byte {at}")
            if self.s.skip(length) < length:
                raise _Refused(_ENDS_INSIDE)

    def native_pixels(self, image: dict[int, bytes], length: int) -> None:
        """Native Pixel Data holds Rows x Columns x Samples per Pixel x Bits Allocated x frames (PS3.5 8.1.1)."""
        u16 = _U16 if self.little else _BIG_ENDIAN[1]
        try:
            rows, columns, bits = (u16.unpack(image[t][:2])[0] for t in (ROWS, COLUMNS, BITS_ALLOCATED))
            samples = u16.unpack(image[SAMPLES_PER_PIXEL][:2])[0] if SAMPLES_PER_PIXEL in image else 1
            frames = int(image.get(NUMBER_OF_FRAMES, b"1").strip(b" \0") or 1)
        except (KeyError, ValueError, struct.error):
            return  # not sized, or sized by values we cannot read: only the lengths are checked
        need = (rows * columns * samples * frames * bits + 7) // 8
        if image.get(PHOTOMETRIC_INTERPRETATION, b"").strip(b" \0") == b"YBR_FULL_422":
            need = need * 2 // 3  # two samples of chrominance per two pixels (PS3.3 C.7.6.3.1.2)
        if length < need:
            raise _Refused(f"{TRUNCATED}Pixel Data holds {length} bytes; Rows {rows} x Columns {columns} x Samples "
                           f"per Pixel {samples} x Bits Allocated {bits} x {frames} frames need {need}")


def check_complete(src: str | os.PathLike[str] | Source, size: int | None = None) -> str | None:
    """Why a DICOM file's data set is not what it claims, or None when it is whole.

    Walks the data set to its end as a stream, holding no value in memory: every
    element's, item's and fragment's length must fit in what encloses it and in
    the file (PS3.5 7.1, 7.5, A.4), native Pixel Data must hold what its Rows,
    Columns, Samples per Pixel, Bits Allocated and Number of Frames need. A Deflated data set
    (PS3.5 A.5) is inflated as it is walked, within :data:`INFLATE_MAX_BYTES` and
    :data:`INFLATE_MAX_RATIO`. A reason for a file cut short starts with
    :data:`TRUNCATED`, one for a Deflated data set past the bounds with
    :data:`INFLATION_REFUSED`. ``src`` is a path or a seekable binary file of
    ``size`` bytes (its end when not given).
    """
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as file:
            return check_complete(file, os.fstat(file.fileno()).st_size)
    fp = src
    if size is None:
        size = fp.seek(0, 2)
    try:
        reader = _Reader(fp, size)
        meta, start, _ = _meta(reader)
        syntax = text(meta.get(TRANSFER_SYNTAX_UID))
        if not syntax and not meta:
            try:
                syntax = _guess_syntax(reader)
            except NeedsPydicom:
                syntax = dicom.EXPLICIT_VR_BE
        stream: _FileStream | _InflatedStream
        if syntax == dicom.DEFLATED_LE:
            stream, end, little, implicit = _InflatedStream(fp, start, size), None, True, False
        else:
            stream, end, little = _FileStream(fp, start, size), size, syntax != dicom.EXPLICIT_VR_BE
            first = reader.get(start, 6) if little and start + 6 <= size else b""
            # Little Endian as encoded, whatever the File Meta says (pydicom reads it so too).
            implicit = first[4:6] not in _VR_NAMES if first else syntax == dicom.IMPLICIT_VR_LE
        _Walk(stream, implicit=implicit, little=little).elements(end, top=True)
    except _Refused as exc:
        return str(exc)
    except NeedsPydicom as exc:  # the File Meta Information, cut short or malformed
        return _ENDS_INSIDE if "past the end" in str(exc) else f"malformed: {exc}"
    except NotDicom as exc:
        return f"{NOT_DICOM}{exc}"
    except (struct.error, zlib.error) as exc:
        return f"malformed: {exc}"
    return None


# -- a DICOMDIR's records -------------------------------------------------------


class DirectoryItems(NamedTuple):
    """A DICOMDIR as its bytes lay it out: its File Meta, its other top-level elements, and each item of
    its Directory Record Sequence by the offset of its Item tag from the file's start (PS3.3 F.3.2.1)."""

    meta: dict[int, Element]
    elements: dict[int, Element]
    #: None when there is no Directory Record Sequence.
    items: dict[int, dict[int, Element]] | None


def directory_items(fp: BinaryIO, size: int, *, sequence: int) -> DirectoryItems:
    """The top-level elements and the items of the ``sequence`` of a PS3.10 Explicit VR Little Endian file.

    Raises :class:`NeedsPydicom` (or :class:`NotDicom`) for anything else, and for any item, sequence
    or element whose length disagrees with what encloses it: pydicom then reads it.
    """
    reader = _Reader(fp, size)
    meta, pos, has_preamble = _meta(reader)
    if not has_preamble or meta.get(TRANSFER_SYNTAX_UID, Element("", b"", b"")).value.rstrip(b"\0") != (
            dicom.EXPLICIT_VR_LE.encode()):
        raise NeedsPydicom("not a PS3.10 Explicit VR Little Endian file")
    parser = _Parser(reader, implicit=False, wanted=frozenset(), vrs={})
    elements: dict[int, Element] = {}
    items: dict[int, dict[int, Element]] | None = None
    try:
        while pos < size:
            tag, vr, length, hlen = parser.header(pos)
            if tag >> 16 == 0xFFFE or tag in elements or (tag == sequence and items is not None):
                raise NeedsPydicom(f"a stray delimiter or a repeated element at byte {pos}")
            if tag == sequence and vr == "SQ":
                items, after = _items(parser, pos + hlen, length)
            elif vr == "SQ":
                after = parser.sequence(pos + hlen, length, capture=False)[1]
                if length == UNDEFINED and after >= size:  # no Sequence Delimitation Item before the end
                    raise NeedsPydicom(f"{_name(tag)} has no end")
            elif length == UNDEFINED:
                raise NeedsPydicom(f"undefined length on {_name(tag)}")
            else:
                after = pos + hlen + length
                elements[tag] = Element(vr, reader.get(pos + hlen, length), reader.get(pos, after - pos))
            pos = after
    except struct.error as exc:
        raise NeedsPydicom(str(exc)) from None
    if pos != size:
        raise NeedsPydicom("the last element runs past the end of the file")
    return DirectoryItems(meta, elements, items)


def _items(parser: _Parser, pos: int, length: int) -> tuple[dict[int, dict[int, Element]], int]:
    """The items of a sequence by their offsets, each item's elements captured; the position after it."""
    size = parser.r.size
    end = size if length == UNDEFINED else pos + length
    items: dict[int, dict[int, Element]] = {}
    while pos < end:
        tag, _, item_length, _ = parser.header(pos)
        if tag == SEQUENCE_DELIMITATION_ITEM and length == UNDEFINED:
            return items, pos + 8
        if tag != ITEM:
            raise NeedsPydicom(f"{_name(tag)} where a sequence item was expected, at byte {pos}")
        item_end = size if item_length == UNDEFINED else pos + 8 + item_length
        item, after, _ = parser.dataset(pos + 8, item_end, capture=True)
        # Undefined: it ended on its Item Delimitation Item, not at the end of the file.
        ended = after < size if item_length == UNDEFINED else after == item_end
        if not ended:
            raise NeedsPydicom(f"the item at byte {pos} does not end where it says")
        if any(t >> 16 == 0xFFFE for t in item):
            raise NeedsPydicom(f"a stray delimiter in the item at byte {pos}")
        items[pos] = item
        pos = after
    if pos != end or length == UNDEFINED:
        raise NeedsPydicom("the sequence does not end where it says")
    return items, pos
