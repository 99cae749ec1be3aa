"""A DICOMDIR's directory records, read without pydicom when the file is plain.

A survey of a medium reads a few values of every directory record (PS3.3
F.3.2.2): the offsets that chain the records, the Record In-use Flag, the
Directory Record Type, the Referenced File ID and Referenced UIDs in File, and
the identifiers its children inherit. :func:`read_directory` reads them from a
PS3.10 Explicit VR Little Endian DICOMDIR (:func:`node.dcmio.directory_items`),
each decoded as pydicom presents it: strings without their padding, a
multi-valued Referenced File ID as a list, US and UL as ints. Any file it does
not take as plain (another syntax, a length that disagrees, a value pydicom
would decode otherwise or warn about) is read by pydicom (:class:`ReadDirectory`),
so a report never depends on which reader read it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from node.dcmio import Element, NeedsPydicom, NotDicom, directory_items
from node.read.header import CHARACTER_SETS, plain_uid
from node.tags import (
    FILE_META_INFORMATION_GROUP_LENGTH,
    MEDIA_STORAGE_SOP_CLASS_UID,
    PATIENT_ID,
    SERIES_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_INSTANCE_UID,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

DIRECTORY_RECORD_SEQUENCE = 0x00041220
#: Offset of the First Directory Record of the Root Directory Entity (PS3.3 F.3.2.1).
ROOT_OFFSET = 0x00041200
#: What the survey reads of a directory record: tag -> (keyword, VR) (PS3.3 Table F.3-3, PS3.6).
_RECORD = {
    0x00041400: ("OffsetOfTheNextDirectoryRecord", "UL"),
    0x00041410: ("RecordInUseFlag", "US"),
    0x00041420: ("OffsetOfReferencedLowerLevelDirectoryEntity", "UL"),
    0x00041430: ("DirectoryRecordType", "CS"),
    0x00041500: ("ReferencedFileID", "CS"),  # VM 1-8
    0x00041510: ("ReferencedSOPClassUIDInFile", "UI"),
    0x00041511: ("ReferencedSOPInstanceUIDInFile", "UI"),
    0x00041512: ("ReferencedTransferSyntaxUIDInFile", "UI"),
    PATIENT_ID: ("PatientID", "LO"),
    STUDY_INSTANCE_UID: ("StudyInstanceUID", "UI"),
    SERIES_INSTANCE_UID: ("SeriesInstanceUID", "UI"),
}
_NUMBERS = {"US": struct.Struct("<H"), "UL": struct.Struct("<L")}
#: A Code String of the standard's characters (PS3.5 6.2), one value; a File ID of 1 to 8 of them, no space.
_CODE = re.compile(rb"^[A-Z0-9_][A-Z0-9_ ]{0,15}$")
_FILE_ID = re.compile(rb"^[A-Z0-9_]{1,16}(\\[A-Z0-9_]{1,16}){0,7} ?$")
#: A Long String of printable ASCII without backslash (one value), its first character not a space.
_LONG = re.compile(rb"^([\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]{0,63})?$")

#: A value of a directory record as pydicom gives it.
Value = str | int | list[str]


class DirectoryRecord(Protocol):
    """What the survey asks of a directory record: a pydicom item, or the values read without it."""

    def get(self, keyword: str, default: Any = None, /) -> Any: ...

    def __contains__(self, keyword: str, /) -> bool: ...


class Directory(Protocol):
    """What the survey reads of a DICOMDIR, each part decoded when asked for (in the order it asks)."""

    def sop_class(self) -> str:
        """Its Media Storage SOP Class UID; "" when there is none."""
        ...

    def records(self) -> dict[int, DirectoryRecord] | None:
        """Its directory records by offset from the file's start; None without a Directory Record Sequence."""
        ...

    def first(self) -> int:
        """The Offset of the First Directory Record of the Root Directory Entity; 0 when absent."""
        ...


@dataclass(frozen=True)
class Record:
    """A directory record read by :func:`read_directory`."""

    values: dict[str, Value]

    def get(self, keyword: str, default: Any = None, /) -> Any:
        return self.values.get(keyword, default)

    def __contains__(self, keyword: str, /) -> bool:
        return keyword in self.values


@dataclass(frozen=True)
class PlainDirectory:
    """:class:`Directory` read by :func:`read_directory`."""

    media_storage_sop_class_uid: str
    root_offset: int
    by_offset: dict[int, DirectoryRecord] | None

    def sop_class(self) -> str:
        return self.media_storage_sop_class_uid

    def records(self) -> dict[int, DirectoryRecord] | None:
        return self.by_offset

    def first(self) -> int:
        return self.root_offset


class ReadDirectory:
    """:class:`Directory` of a DICOMDIR pydicom read; each value decoded when first asked for."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def sop_class(self) -> str:
        return str(self.ds.file_meta.get("MediaStorageSOPClassUID", "") or "")

    def records(self) -> dict[int, DirectoryRecord] | None:
        if "DirectoryRecordSequence" not in self.ds:
            return None
        return {item.seq_item_tell: item for item in self.ds.DirectoryRecordSequence}

    def first(self) -> int:
        # As pydicom gives it, not made an int: a malformed one fails the walk as it always did.
        offset: int = self.ds.get("OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity") or 0
        return offset


def open_directory(fp: BinaryIO, size: int, *, plain: bool = True, force: bool = False) -> Directory:
    """The DICOMDIR in ``fp``: read without pydicom when it is plain (and ``plain`` allows it), else by
    pydicom (``force``: also without a preamble), whose errors and warnings then reach the caller."""
    directory = read_directory(fp, size) if plain else None
    if directory is not None:
        return directory
    from pydicom import dcmread

    fp.seek(0)
    return ReadDirectory(dcmread(fp, force=force))


def read_directory(fp: BinaryIO, size: int) -> PlainDirectory | None:
    """The DICOMDIR in ``fp`` (``size`` bytes), read without pydicom; None when pydicom must read it.

    >>> import io
    >>> read_directory(io.BytesIO(b"not DICOM"), 9) is None
    True
    """
    try:
        layout = directory_items(fp, size, sequence=DIRECTORY_RECORD_SEQUENCE)
    except (NeedsPydicom, NotDicom):
        return None
    sop_class = _uid(layout.meta.get(MEDIA_STORAGE_SOP_CLASS_UID))
    root = layout.elements.get(ROOT_OFFSET)
    first = 0 if root is None else _number(root, "UL")
    if sop_class is None or first is None or not _plain_meta(layout.meta) or not _plain_charset(layout.elements):
        return None
    if layout.items is None:
        return PlainDirectory(sop_class, first, None)
    records: dict[int, DirectoryRecord] = {}
    for offset, item in layout.items.items():
        values = _record(item)
        if values is None or not _plain_charset(item):
            return None
        records[offset] = Record(values)
    return PlainDirectory(sop_class, first, records)


def _record(item: dict[int, Element]) -> dict[str, Value] | None:
    """The values the survey reads of one record as pydicom gives them; None when one is not plain."""
    values: dict[str, Value] = {}
    for tag, (keyword, vr) in _RECORD.items():
        element = item.get(tag)
        if element is None:
            continue
        if element.vr != vr:
            return None
        if vr in _NUMBERS:
            value: Value | None = _number(element, vr)
        else:
            value = _uid(element) if vr == "UI" else _text(element, multiple=keyword == "ReferencedFileID")
        if value is None:
            return None
        values[keyword] = value
    return values


def _number(element: Element, vr: str) -> int | None:
    """One US or UL value; None for any other length (pydicom gives None or a list)."""
    number = _NUMBERS[vr]
    if element.vr != vr or len(element.value) != number.size:
        return None
    return int(number.unpack(element.value)[0])


def _uid(element: Element | None) -> str | None:
    """A plain UID without its padding, "" when empty or absent; None when pydicom would warn or split it."""
    return "" if element is None else plain_uid(element.value)


def _text(element: Element, *, multiple: bool = False) -> Value | None:
    """A Long String, or a Code String (with ``multiple``, a File ID: a list when it has several values)."""
    if element.vr == "LO":
        return element.value.decode().rstrip(" ") if _LONG.match(element.value) else None
    if not element.value:
        return ""
    if multiple and b"\\" in element.value:
        return element.value.decode().rstrip(" ").split("\\") if _FILE_ID.match(element.value) else None
    return element.value.decode().rstrip(" ") if _CODE.match(element.value) else None


def _plain_meta(meta: dict[int, Element]) -> bool:
    """A File Meta Information Group Length that counts the group's other elements (PS3.10 7.1), as
    pydicom reads it first."""
    length = meta.get(FILE_META_INFORMATION_GROUP_LENGTH)
    counted = sum(len(element.raw) for tag, element in meta.items() if tag != FILE_META_INFORMATION_GROUP_LENGTH)
    return length is not None and _number(length, "UL") == counted


def _plain_charset(elements: dict[int, Element]) -> bool:
    """No Specific Character Set, or one pydicom knows: its ASCII values decode alike under it (PS3.5 6.1)."""
    element = elements.get(SPECIFIC_CHARACTER_SET)
    if element is None:
        return True
    value = _text(element) if element.vr == "CS" else None
    return isinstance(value, str) and value in CHARACTER_SETS
