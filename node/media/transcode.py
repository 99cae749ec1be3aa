"""Bring an instance into a transfer syntax its profile allows.

An instance already in an allowed syntax is never touched: its dataset bytes go
onto the medium as they are. Anything else becomes Explicit VR Little Endian:
Implicit VR and Big Endian are re-encoded, Deflate inflated, compressed pixel
data decoded (:mod:`node.pixels`). The converted file is written to a staging
folder and read back like any source, so the directory records describe what
is really on the medium.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from node import dcmio, dicom
from node.dicom import syntax_name
from node.errors import one_line
from node.media.sources import Instance, instance, read
from node.profiles import Profile

if TYPE_CHECKING:
    from pydicom import Dataset

#: Syntaxes converted by re-encoding the data set; any other is converted by decoding its pixel data.
UNCOMPRESSED = frozenset({dicom.IMPLICIT_VR_LE, dicom.EXPLICIT_VR_LE, dicom.EXPLICIT_VR_BE, dicom.DEFLATED_LE})


class CannotConvert(Exception):
    """The instance cannot be brought into an allowed syntax; ``str()`` says why."""


def needs_conversion(inst: Instance, profile: Profile) -> bool:
    """True when ``inst`` may not go onto a medium of ``profile`` as it is."""
    return not profile.allows(inst.header.transfer_syntax, record_type=inst.record_type)


def convert(inst: Instance, *, dest: str, patient_id: str | None = None) -> Instance:
    """Write ``inst`` as Explicit VR Little Endian to ``dest`` and return it re-read.

    ``patient_id`` replaces the Patient ID, keeping the old one in Other Patient
    IDs Sequence (used when two patients shared one ID and the user asked us to
    invent one).
    """
    from node import pixels  # pydicom and the codecs load only when something needs converting

    ts = inst.header.transfer_syntax
    if ts not in UNCOMPRESSED and not pixels.can_decode(ts):
        raise CannotConvert(f"pixel data in {syntax_name(ts)} cannot be decoded")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a file pydicom frowns at either converts or fails below
            what = _rewrite(inst, dest, patient_id)
    except Exception as exc:  # pydicom and the codecs raise many kinds; each refuses the instance
        raise CannotConvert(f"cannot convert from {syntax_name(ts)}: {one_line(exc)}") from None
    converted = instance(read(dest), source=inst.source)
    if converted is None:  # pragma: no cover - we just wrote both UIDs
        raise CannotConvert("the converted file lost its SOP identity")
    converted.conversion = ", ".join(what)
    return converted


def _rewrite(inst: Instance, dest: str, patient_id: str | None) -> list[str]:
    """Decode, re-encode and write one instance; return what was done."""
    from pydicom import Dataset, dcmread
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    ts = inst.header.transfer_syntax
    what = []
    ds = dcmread(inst.header.path, force=True)
    if ts not in UNCOMPRESSED:
        from node import pixels

        pixels.decompress(ds)
        what.append(f"{syntax_name(ts)} decoded")
    elif ts != dicom.EXPLICIT_VR_LE:
        _from_big_endian(ds)
        what.append(f"{syntax_name(ts)} re-encoded")
    if patient_id is not None:
        old = Dataset()
        old.PatientID = ds.get("PatientID", "")
        old.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = [*ds.get("OtherPatientIDsSequence", []), old]
        ds.PatientID = patient_id
        what.append(f"Patient ID set to {patient_id}")
    with open(dest, "wb") as f:
        f.write(dcmio.file_meta(inst.sop_class_uid, inst.sop_instance_uid, dicom.EXPLICIT_VR_LE))
        fp = DicomFileLike(f)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
    return what


def _from_big_endian(ds: Dataset) -> None:
    """Byte-swap what pydicom leaves in Big Endian order (PS3.5 7.3): OW/OL/OF/OD values.

    pydicom decodes numbers and text from Big Endian but keeps the bytes of
    "other" VRs as read, and writes them back unchanged. Pixel Data is rebuilt
    from the decoded array, whatever its Bits Allocated.
    """
    import numpy as np

    if ds.original_encoding[1]:
        return
    for elem in ds.iterall():
        width = _WORD.get(elem.VR)
        if width and elem.tag != PIXEL_DATA and isinstance(elem.value, bytes):
            elem.value = np.frombuffer(elem.value, f">u{width}").astype(f"<u{width}").tobytes()
    if "PixelData" in ds:
        arr = ds.pixel_array
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        ds.PixelData = data + b"\0" * (len(data) % 2)
        ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
        if ds.get("SamplesPerPixel", 1) > 1:
            ds.PlanarConfiguration = 0  # pixel_array is always colour-by-pixel


_WORD = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
PIXEL_DATA = 0x7FE00010
