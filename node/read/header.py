"""Read one DICOM file up to its pixel data, tolerantly and without trusting its lengths.

A PS3.10 file (preamble, 'DICM', File Meta) or a bare data set, which pydicom
reads with ``force``. pydicom reads short values silently, so the declared end
of every element, of every skipped (deferred) value and of the pixel data
(PS3.5 7.1, A.4) is compared with the file's size: a file cut short is told
from a whole one without reading its pixel data. :func:`data_set_offset` says
where the data set starts, so that its bytes can be sent as they are.
"""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from node.dcmio import UNDEFINED, element_header
from node.tags import DOUBLE_FLOAT_PIXEL_DATA, FLOAT_PIXEL_DATA, ITEM, PIXEL_DATA, SEQUENCE_DELIMITATION_ITEM

#: Float, Double Float and (plain) Pixel Data: where stop_before_pixels stops (PS3.6).
_PIXEL_TAGS = frozenset({FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA, PIXEL_DATA})
#: Values larger than this are skipped, not read, while reading headers.
_DEFER_BYTES = 64 * 1024


def read_until_pixels(fp: BinaryIO, size: int, *, force: bool = False) -> tuple[Dataset | None, bool, bool]:
    """(The data set before its pixel data or None, has it pixel data?, is the file complete?).

    pydicom reads short values silently, so the declared end of every element,
    of every skipped (deferred) value and of the pixel data (PS3.5 7.1, A.4) is
    compared with the file size. Deflated files are left to zlib: their offsets
    are in the inflated stream.
    """
    try:
        ds = dcmread(fp, stop_before_pixels=True, defer_size=_DEFER_BYTES, force=force)
    except InvalidDicomError:
        raise
    except Exception:
        if fp.tell() < size:
            raise
        return None, False, False  # pydicom ran out of bytes
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
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
    for element in ds.elements():
        if isinstance(element, RawDataElement):
            return bool(element.is_implicit_VR), bool(element.is_little_endian)
    implicit, little = ds.original_encoding
    return bool(implicit), little is not False


def encoded_syntax(ds: Dataset) -> str:
    """The uncompressed syntax the data set is really encoded in."""
    implicit, little = _read_encoding(ds)
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


def elements_end(ds: Dataset) -> int:
    """Where the last top-level element read or skipped (not yet decoded) should end."""
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warnings about a file that is not DICOM are noise
        try:
            ds = dcmread(io.BytesIO(head), force=True, specific_tags=["SOPInstanceUID"])
            return bool(ds.get("SOPInstanceUID"))
        except Exception:  # not DICOM after all
            return False
