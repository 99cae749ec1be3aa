"""Read one DICOM file up to its pixel data, tolerantly and without trusting its lengths.

A PS3.10 file (preamble, 'DICM', File Meta) or a bare data set, which pydicom
reads with ``force``. pydicom reads short values silently, so the declared end
of every element, of every skipped (deferred) value and of the pixel data
(PS3.5 7.1, A.4) is compared with the file's size: a file cut short is told
from a whole one without reading its pixel data. :func:`data_set_offset` says
where the data set starts, so that its bytes can be sent as they are.

What a survey of a medium reads of each file (:class:`Attributes`) comes from
:func:`plain_attributes` without pydicom when the file is a plain one (PS3.10,
Explicit or Implicit VR Little Endian as its File Meta says, values pydicom
would read alike and without a warning), else from pydicom's data set.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from node.dcmio import UNDEFINED, Element, NeedsPydicom, NotDicom, element_header, header_of
from node.dicom import DEFLATED_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE
from node.tags import (
    DOUBLE_FLOAT_PIXEL_DATA,
    FLOAT_PIXEL_DATA,
    ITEM,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    PATIENT_ID,
    PIXEL_DATA,
    SEQUENCE_DELIMITATION_ITEM,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
    TRANSFER_SYNTAX_UID,
)

if TYPE_CHECKING:  # pydicom is imported where a file needs it, never by a survey of plain files
    from pydicom.dataset import Dataset

#: Float, Double Float and (plain) Pixel Data: where stop_before_pixels stops (PS3.6).
_PIXEL_TAGS = frozenset({FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA, PIXEL_DATA})
#: Values larger than this are skipped, not read, while reading headers.
_DEFER_BYTES = 64 * 1024
#: What :func:`plain_attributes` reads of the data set: tag -> (keyword, VR) (PS3.6).
_PLAIN = {
    SOP_CLASS_UID: ("SOPClassUID", "UI"),
    SOP_INSTANCE_UID: ("SOPInstanceUID", "UI"),
    PATIENT_ID: ("PatientID", "LO"),
    STUDY_INSTANCE_UID: ("StudyInstanceUID", "UI"),
    SERIES_INSTANCE_UID: ("SeriesInstanceUID", "UI"),
    SPECIFIC_CHARACTER_SET: ("SpecificCharacterSet", "CS"),
}
_PLAIN_VRS = {tag: vr for tag, (_, vr) in _PLAIN.items()}
_PLAIN_META = {
    TRANSFER_SYNTAX_UID: "TransferSyntaxUID",
    MEDIA_STORAGE_SOP_CLASS_UID: "MediaStorageSOPClassUID",
    MEDIA_STORAGE_SOP_INSTANCE_UID: "MediaStorageSOPInstanceUID",
}
#: A UID pydicom reads without a warning (PS3.5 9.1), with its NUL padding.
_PLAIN_UID = re.compile(rb"^(?=[0-9.]{1,64}\0?$)(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\0?$")
#: A Long String or Code String of printable ASCII, no backslash (a single value), 64 characters at most.
_PLAIN_TEXT = re.compile(rb"^[\x20-\x5b\x5d-\x7e]{0,64}$")
#: The Specific Character Sets pydicom knows (the keys of ``pydicom.charset.python_encoding``, PS3.3
#: C.12.1.1.2): under each, ASCII values decode alike and without a warning.
CHARACTER_SETS = frozenset({
    "", "GB18030", "GBK", "ISO 2022 58", "ISO 2022 GBK", "ISO 2022 IR 100", "ISO 2022 IR 101", "ISO 2022 IR 109",
    "ISO 2022 IR 110", "ISO 2022 IR 126", "ISO 2022 IR 127", "ISO 2022 IR 13", "ISO 2022 IR 138", "ISO 2022 IR 144",
    "ISO 2022 IR 148", "ISO 2022 IR 149", "ISO 2022 IR 159", "ISO 2022 IR 166", "ISO 2022 IR 58", "ISO 2022 IR 6",
    "ISO 2022 IR 87", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 126", "ISO_IR 127", "ISO_IR 13",
    "ISO_IR 138", "ISO_IR 144", "ISO_IR 148", "ISO_IR 166", "ISO_IR 192", "ISO_IR 6",
})


class Attributes(Protocol):
    """The attributes of a file that a survey reads, as text ("" when absent)."""

    def get(self, keyword: str) -> str:
        """A data set attribute."""
        ...

    def meta(self, keyword: str) -> str:
        """A File Meta Information attribute."""
        ...

    def encoding(self) -> str:
        """The uncompressed syntax the data set is really encoded in (see :func:`encoded_syntax`)."""
        ...


class ReadAttributes:
    """:class:`Attributes` of a data set pydicom read; each value decoded when first asked for."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def get(self, keyword: str) -> str:
        return str(self.ds.get(keyword, "") or "")

    def meta(self, keyword: str) -> str:
        return str(self.ds.file_meta.get(keyword, "") or "")

    def encoding(self) -> str:
        return encoded_syntax(self.ds)


@dataclass(frozen=True)
class PlainAttributes:
    """:class:`Attributes` read by :func:`plain_attributes`, every value as pydicom would give it."""

    values: dict[str, str]

    def get(self, keyword: str) -> str:
        return self.values.get(keyword, "")

    def meta(self, keyword: str) -> str:
        return self.values.get(keyword, "")

    def encoding(self) -> str:
        return self.values["TransferSyntaxUID"]


def plain_attributes(fp: BinaryIO, size: int) -> tuple[PlainAttributes, bool, int] | None:
    """(attributes, has pixel data?, where the data set starts) of a whole PS3.10 file, read without pydicom;
    None when pydicom must read it: another syntax, an encoding other than its File Meta says (PS3.5 7.1),
    or a value pydicom would decode otherwise or warn about (not a plain UID, several values, not ASCII,
    a Specific Character Set it does not know).

    >>> plain_attributes(io.BytesIO(b"not DICOM"), 9) is None
    True
    """
    try:
        header = header_of(fp, size, wanted=frozenset(_PLAIN), vrs=_PLAIN_VRS)
        fp.seek(header.dataset_offset)
        first = fp.read(6)
        if header.has_pixels:
            fp.seek(header.pixel_offset)
            pixels = struct.unpack("<HH", fp.read(4))
    except (NeedsPydicom, NotDicom, struct.error):
        return None
    implicit = header.transfer_syntax == IMPLICIT_VR_LE
    if (len(first) < 6 or header.transfer_syntax not in (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
            or implicit == (0x40 < first[4] < 0x5B and 0x40 < first[5] < 0x5B)):  # pydicom's test of the VR
        return None
    if header.has_pixels and (pixels[0] << 16 | pixels[1]) not in _PIXEL_TAGS:
        return None
    values: dict[str, str] = {}
    for tag, keyword in _PLAIN_META.items():
        if tag in header.meta and (value := _plain(header.meta[tag], "UI")) is not None:
            values[keyword] = value
        elif tag in header.meta:
            return None
    for tag, (keyword, vr) in _PLAIN.items():
        if tag in header.elements and (value := _plain(header.elements[tag], vr)) is not None:
            values[keyword] = value
        elif tag in header.elements:
            return None
    if values.get("SpecificCharacterSet", "") not in CHARACTER_SETS:
        return None
    return PlainAttributes(values), header.has_pixels, header.dataset_offset


def _plain(element: Element, vr: str) -> str | None:
    """The value as pydicom gives it, or None when pydicom would give something else or warn."""
    if element.vr != vr:
        return None
    if vr == "UI":
        return plain_uid(element.value)
    return element.value.decode().strip(" ") if _PLAIN_TEXT.match(element.value) else None


def plain_uid(value: bytes) -> str | None:
    """A UID as pydicom gives it (without its NUL padding; "" when empty), or None when pydicom would warn
    about it or split it (PS3.5 9.1).

    >>> plain_uid(b"1.2.840.10008.1.2.1\\0"), plain_uid(b"1.2\\\\3"), plain_uid(b"01.2")
    ('1.2.840.10008.1.2.1', None, None)
    """
    return value.rstrip(b"\0").decode() if _PLAIN_UID.match(value) or not value else None


def read_until_pixels(fp: BinaryIO, size: int, *, force: bool = False) -> tuple[Dataset | None, bool, bool]:
    """(The data set before its pixel data or None, has it pixel data?, is the file complete?).

    pydicom reads short values silently, so the declared end of every element,
    of every skipped (deferred) value and of the pixel data (PS3.5 7.1, A.4) is
    compared with the file size. Deflated files are left to zlib: their offsets
    are in the inflated stream.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(fp, stop_before_pixels=True, defer_size=_DEFER_BYTES, force=force)
    except InvalidDicomError:
        raise
    except Exception:
        if fp.tell() < size:
            raise
        return None, False, False  # pydicom ran out of bytes
    if ds.file_meta.get("TransferSyntaxUID") == DEFLATED_LE:
        return ds, "Rows" in ds, True
    stopped = fp.tell()  # past the end when a deferred value was skipped beyond it
    implicit, little = _read_encoding(ds)
    pixel_end = _pixel_data_end(fp, implicit=implicit, little=little)
    complete = max(elements_end(ds), stopped, pixel_end or 0) <= size
    return ds, pixel_end is not None, complete


def data_set_offset(fp: BinaryIO) -> int:
    """Where the data set starts: after the preamble and the File Meta group, if any (PS3.10 7.1).

    File Meta is Explicit VR Little Endian; some writers use Implicit VR, which is
    recognised by the VR field not being two upper-case letters (PS3.5 7.1).
    """
    fp.seek(0)
    position = 132 if fp.read(132)[128:132] == b"DICM" else 0
    while True:
        fp.seek(position)
        element = fp.read(12)
        if len(element) < 8 or element[:2] != b"\x02\x00":  # group 0002, little endian
            return position
        vr = element[4:6]
        # A short read of a 4-byte length is taken as undefined (malformed) by the padding.
        _, _, length, size = element_header(element.ljust(12, b"\xff"), 0, implicit=not (vr.isalpha() and vr.isupper()))
        position += size
        if length == UNDEFINED:
            raise ValueError(f"malformed File Meta Information at byte {position}")
        position += length


def _read_encoding(ds: Dataset) -> tuple[bool, bool]:
    """(implicit VR?, little endian?) as the elements were really read.

    ``original_encoding`` follows the File Meta, even when pydicom found the
    other VR encoding and read with it (and warned); each raw element knows.
    """
    from pydicom.dataelem import RawDataElement

    for element in ds.elements():
        if isinstance(element, RawDataElement):
            return bool(element.is_implicit_VR), bool(element.is_little_endian)
    implicit, little = ds.original_encoding
    return bool(implicit), little is not False


def encoded_syntax(ds: Dataset) -> str:
    """The uncompressed syntax the data set is really encoded in."""
    implicit, little = _read_encoding(ds)
    if implicit:
        return IMPLICIT_VR_LE
    return EXPLICIT_VR_LE if little else EXPLICIT_VR_BE


def elements_end(ds: Dataset) -> int:
    """Where the last top-level element read or skipped (not yet decoded) should end."""
    from pydicom.dataelem import RawDataElement

    return max(
        (e.value_tell + e.length for e in ds.elements() if isinstance(e, RawDataElement) and e.length != UNDEFINED),
        default=0,
    )


def _pixel_data_end(fp: BinaryIO, *, implicit: bool, little: bool) -> int | None:
    """Where the pixel data element at ``fp`` ends (PS3.5 7.1, A.4), or None if there is none."""
    start = fp.tell()
    header = fp.read(12)
    if len(header) < 8:
        return None
    tag, _, length, size = element_header(header.ljust(12, b"\0"), 0, implicit=implicit, little=little)
    if tag not in _PIXEL_TAGS:
        return None
    if len(header) < size:
        return start + size  # its length is cut off: the file ends inside the header
    position = start + size
    if length != UNDEFINED:
        return position + int(length)
    while True:  # encapsulated: walk the fragment items without reading them
        fp.seek(position)
        item = fp.read(8)
        if len(item) < 8:
            return position + 8
        tag, _, length, _ = element_header(item, 0, implicit=True, little=little)
        if tag == SEQUENCE_DELIMITATION_ITEM:
            return position + 8
        if tag != ITEM or length == UNDEFINED:
            raise ValueError(f"malformed encapsulated pixel data at byte {position}")
        position += 8 + int(length)


def is_dicom(head: bytes) -> bool:
    """A Part 10 file, or a bare data set (no preamble) that pydicom reads with a SOP Instance UID."""
    if head[128:132] == b"DICM":
        return True
    if head[:2] not in (b"\x02\x00", b"\x08\x00"):  # a bare data set starts with group 0002 or 0008
        return False
    from pydicom import dcmread

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings about a file that is not DICOM are noise
        try:
            ds = dcmread(io.BytesIO(head), force=True, specific_tags=["SOPInstanceUID"])
            return bool(ds.get("SOPInstanceUID"))
        except Exception:  # not DICOM after all
            return False
