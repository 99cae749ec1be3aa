"""Find and read the DICOM instances to put on a medium.

Every file under the sources is read once, headers only, with
:mod:`node.dcmio` (pydicom only for what it cannot read). Non-DICOM files are
skipped with a reason, a second copy of a SOP Instance UID is reported and
left out, and a DICOMDIR found among the sources is never taken as an instance.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from node import dcmio, dicom
from node.dcmio import Element, Header
from node.errors import UsageError, one_line
from node.tags import (
    ACQUISITION_DATE,
    ACQUISITION_TIME,
    BITS_ALLOCATED,
    BITS_STORED,
    COLUMNS,
    DOUBLE_FLOAT_PIXEL_DATA,
    FLOAT_PIXEL_DATA,
    INSTANCE_CREATION_DATE,
    INSTANCE_CREATION_TIME,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    MODALITY_LUT_SEQUENCE,
    NUMBER_OF_FRAMES,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    PHOTOMETRIC_INTERPRETATION,
    PIXEL_DATA,
    PIXEL_REPRESENTATION,
    RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
    RELATIONSHIP_TYPE,
    ROWS,
    SAMPLES_PER_PIXEL,
    SERIES_DATE,
    SERIES_TIME,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    VERIFYING_OBSERVER_SEQUENCE,
)

logger = logging.getLogger(__name__)

#: Attributes read besides the record keys: identity, and the dates a Study
#: Date or Content Date may be invented from.
_EXTRA_KEYS = (
    (SPECIFIC_CHARACTER_SET, "CS"),
    (INSTANCE_CREATION_DATE, "DA"),
    (INSTANCE_CREATION_TIME, "TM"),
    (SOP_CLASS_UID, "UI"),
    (SOP_INSTANCE_UID, "UI"),
    (SERIES_DATE, "DA"),
    (ACQUISITION_DATE, "DA"),
    (SERIES_TIME, "TM"),
    (ACQUISITION_TIME, "TM"),
    # The Image Pixel module as a compression plan needs it (node.media.plan):
    (SAMPLES_PER_PIXEL, "US"),
    (PHOTOMETRIC_INTERPRETATION, "CS"),
    (NUMBER_OF_FRAMES, "IS"),
    (ROWS, "US"),
    (COLUMNS, "US"),
    (BITS_ALLOCATED, "US"),
    (BITS_STORED, "US"),
    (PIXEL_REPRESENTATION, "US"),
    (0x00280301, "CS"),  # Burned In Annotation
    (RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR, "US"),
    (MODALITY_LUT_SEQUENCE, "SQ"),  # its LUT Descriptor
    (RELATIONSHIP_TYPE, "CS"),  # in Content Sequence items
    (VERIFYING_OBSERVER_SEQUENCE, "SQ"),  # its Verification DateTime
)
VRS: dict[int, str] = dict(_EXTRA_KEYS) | {
    k.tag: k.vr for keys in dicom.RECORD_KEYS.values() for k in keys
}
WANTED = frozenset(VRS)


@dataclass
class SourceInstance:
    """One SOP instance found under the sources."""

    header: Header
    sop_class_uid: str
    sop_instance_uid: str
    record_type: str
    #: The file as the user gave it (``header.path`` points at a converted copy).
    source: str
    #: What conversion made of it, for the report ("" when kept as it was).
    conversion: str = ""

    def text(self, tag: int) -> str:
        return self.header.text(tag)

    @property
    def patient_key(self) -> tuple[str, str, str]:
        """(Patient ID, Patient's Name, Birth Date): who this instance is of."""
        return (self.text(PATIENT_ID), self.text(PATIENT_NAME), self.text(PATIENT_BIRTH_DATE))


@dataclass
class Scan:
    """What the sources held."""

    instances: list[SourceInstance] = field(default_factory=list)
    #: (path, reason) for files that are not instances we can use.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (path, reason) for DICOM files (or files we could not open) that cannot be read.
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    #: (path, path of the copy kept) for repeated SOP Instance UIDs.
    duplicates: list[tuple[str, str]] = field(default_factory=list)


def walk(sources: Sequence[str]) -> Iterator[str]:
    """Yield every regular file under ``sources`` in a stable (sorted) order."""
    for src in sources:
        if os.path.isfile(src):
            yield src
        elif os.path.isdir(src):
            for top, dirs, files in os.walk(src):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(top, name)
                    if os.path.isfile(path):
                        yield path
        else:
            raise UsageError(f"{src}: no such file or folder")


def scan(sources: Sequence[str]) -> Scan:
    """Read the header of every file under ``sources``."""
    result = Scan()
    seen: dict[str, SourceInstance] = {}
    for path in walk(sources):
        try:
            header = read(path)
        except dcmio.NotDicom as exc:
            result.skipped.append((path, f"not DICOM ({exc})"))
            continue
        except (UnreadableSource, OSError) as exc:
            result.unreadable.append((path, f"unreadable: {exc.strerror if isinstance(exc, OSError) else exc}"))
            continue
        inst = instance(header, source=path)
        if inst is None:
            result.skipped.append((path, "not a SOP instance (no SOP Class or Instance UID)"))
        elif inst.sop_class_uid == dicom.MEDIA_STORAGE_DIRECTORY:
            result.skipped.append((path, "a DICOMDIR, not an instance: a new one is written"))
        elif inst.sop_instance_uid in seen:
            result.duplicates.append((path, seen[inst.sop_instance_uid].source))
        else:
            seen[inst.sop_instance_uid] = inst
            result.instances.append(inst)
    return result


def read(path: str) -> Header:
    """Read one file's header: fast path first, pydicom for the rest."""
    try:
        return dcmio.read_header(path, wanted=WANTED, vrs=VRS)
    except dcmio.NeedsPydicom as exc:
        logger.debug("%s: reading with pydicom (%s)", path, exc)
        return _read_with_pydicom(path)


def instance(header: Header, *, source: str) -> SourceInstance | None:
    """Make a :class:`SourceInstance` of a header, or None when it has no SOP identity."""
    sop_class = header.text(SOP_CLASS_UID) or dcmio.text(header.meta.get(MEDIA_STORAGE_SOP_CLASS_UID))
    sop_instance = header.text(SOP_INSTANCE_UID) or dcmio.text(header.meta.get(MEDIA_STORAGE_SOP_INSTANCE_UID))
    if not sop_class or not sop_instance:
        return None
    record = dicom.record_type(sop_class, has_pixels=header.has_pixels)
    return SourceInstance(header, sop_class, sop_instance, record, source)


class UnreadableSource(Exception):
    """A file that says it is DICOM (preamble or File Meta) but cannot be parsed."""


def _read_with_pydicom(path: str) -> Header:
    """Read a header pydicom's way (Big Endian, Deflate, odd encodings)."""
    import warnings

    from pydicom import dcmread

    try:
        meta, offset, has_preamble = dcmio.read_meta(path)
    except dcmio.NeedsPydicom as exc:  # File Meta Information cut short, or of undefined length
        raise UnreadableSource(f"malformed File Meta Information: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what matters is whether it parses
            ds = dcmread(path, force=True, defer_size="4 KB")
            elements = {tag: _element(ds[tag], ds._character_set) for tag in WANTED if tag in ds}
    except Exception as exc:  # pydicom raises many kinds on damaged data
        reason = one_line(exc)
        raise (UnreadableSource if has_preamble or meta else dcmio.NotDicom)(reason) from None
    implicit, little = ds.original_encoding
    ts = str(ds.file_meta.get("TransferSyntaxUID", "")) or (
        dicom.IMPLICIT_VR_LE if implicit else dicom.EXPLICIT_VR_LE if little else dicom.EXPLICIT_VR_BE
    )
    has_pixels = any(t in ds for t in (PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA))
    return Header(path, os.path.getsize(path), meta, offset, ts, elements, has_pixels, has_preamble)


def _element(elem: object, encodings: str | list[str]) -> Element:
    """Encode a pydicom element in Explicit VR Little Endian, as :mod:`node.dcmio` keeps them."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_data_element(fp, elem, encodings)  # type: ignore[arg-type]
    raw = fp.getvalue()
    vr = str(elem.VR)  # type: ignore[attr-defined]
    if vr == "SQ":
        items = tuple(
            {e.tag: _element(e, encodings) for e in item} for item in elem.value  # type: ignore[attr-defined]
        )
        return Element(vr, b"", raw, items)
    header_length = 12 if vr in dcmio.LONG_VRS else 8
    return Element(vr, raw[header_length:], raw)
