"""Repair what PS3.5 forbids in an instance's values, when asked (``repair: true``, ``burn --repair``).

The seed's Appendix C coerces attributes "as necessary to provide a complete, DICOM-compliant study".
We correct exactly these, in the data set and in its sequence items, and nothing else:

- a Code String value (PS3.5 Table 6.2-1, CS: ``A-Z``, ``0-9``, space, ``_``), Image Type (0008,0008)
  included: lower-case letters upper-cased, any other character not allowed replaced by ``_``;
- a date or time in the ACR-NEMA form PS3.5 6.2 retired: DA ``1998.01.02`` -> ``19980102``, TM
  ``12:30:45`` -> ``123045`` (``12:30`` -> ``1230``, a fraction kept), when it is a real date or time;
- a UID with trailing spaces or NULs beyond its one NUL of padding (PS3.5 9.1): trimmed;
- a Type 2 attribute absent from a module of the instance's IOD (:data:`TYPE_2`, :data:`IODS`): added
  empty, at the top level.

Nothing is truncated and no value is guessed: a CS longer than 16 characters keeps its length, a date in
any other form stays as it is. Private attributes and the Original Attributes Sequence (0400,0561), whose
old values must stay old, are left alone. Each value corrected gets a new Original Attributes Sequence
item, reason ``CORRECT`` (:mod:`node.original`): the attribute (or the top-level sequence holding it)
listed with no value, as PS3.3 C.12.1.1.9 asks of a value that did not conform to its VR, and the old
value's bytes in its Nonconforming Modified Attributes Sequence; one more item lists the Type 2
attributes added.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from node.original import modification_time, nonconforming, record

#: Type 2 attributes of each module (PS3.3 2025b: C.7.1.1, C.7.2.1, C.7.3.1, C.7.5.1, C.7.6.1, and of the
#: cross-sectional IODs C.7.4.1, C.7.6.2, C.8.2.1), written from the standard's tables; Type 2C
#: ones (Laterality, Patient Orientation, Content Date and Time) are left out: their condition needs the
#: clinical context.
TYPE_2: dict[str, tuple[str, ...]] = {
    "Patient": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "General Study": ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"),
    "General Series": ("SeriesNumber",),
    "General Equipment": ("Manufacturer",),
    "General Image": ("InstanceNumber",),
    "Frame of Reference": ("PositionReferenceIndicator",),  # C.7.4.1
    "Image Plane": ("SliceThickness",),  # C.7.6.2
    "CT Image": ("KVP", "AcquisitionNumber"),  # C.8.2.1
}
#: A User Optional module's attributes: when the instance holds none, the module is absent and so are its
#: Type 2 attributes (PS3.3 C.7.5.1).
_EQUIPMENT = ("Manufacturer", "InstitutionName", "InstitutionAddress", "StationName", "InstitutionalDepartmentName",
              "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions", "GantryID", "SpatialResolution",
              "DateOfLastCalibration", "TimeOfLastCalibration", "PixelPaddingValue", "DeviceUID")
_GENERAL = ("Patient", "General Study", "General Series", "General Equipment", "General Image")
_IMAGE = tuple((module, "M") for module in _GENERAL)
_SC = tuple((module, "U" if module == "General Equipment" else "M") for module in _GENERAL)  # PS3.3 A.8
_PLANES = (*_IMAGE, ("Frame of Reference", "M"), ("Image Plane", "M"))  # MR (A.4), PET (A.21)
#: The image IODs whose modules we know (PS3.3 Annex A), by SOP Class UID (PS3.4 B.5): each holds the
#: general modules of :data:`TYPE_2`, Mandatory (M), but Secondary Capture's General Equipment (User
#: Optional, U); CT, MR and PET their cross-sectional modules too.
#: Any other SOP class: Patient and General Study, Mandatory in every composite IOD, and General Equipment
#: when present.
IODS: dict[str, tuple[tuple[str, str], ...]] = {
    "1.2.840.10008.5.1.4.1.1.1": _IMAGE,  # CR Image (A.2)
    "1.2.840.10008.5.1.4.1.1.1.1": _IMAGE,  # Digital X-Ray, for presentation (A.26)
    "1.2.840.10008.5.1.4.1.1.1.1.1": _IMAGE,  # Digital X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.1.2": _IMAGE,  # Digital Mammography X-Ray, for presentation (A.27)
    "1.2.840.10008.5.1.4.1.1.1.2.1": _IMAGE,  # Digital Mammography X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.1.3": _IMAGE,  # Digital Intra-Oral X-Ray, for presentation (A.28)
    "1.2.840.10008.5.1.4.1.1.1.3.1": _IMAGE,  # Digital Intra-Oral X-Ray, for processing
    "1.2.840.10008.5.1.4.1.1.2": (*_PLANES, ("CT Image", "M")),  # CT Image (A.3)
    "1.2.840.10008.5.1.4.1.1.4": _PLANES,  # MR Image (A.4)
    "1.2.840.10008.5.1.4.1.1.20": _IMAGE,  # NM Image (A.5)
    "1.2.840.10008.5.1.4.1.1.6.1": _IMAGE,  # US Image (A.6)
    "1.2.840.10008.5.1.4.1.1.3.1": _IMAGE,  # US Multi-frame Image (A.7)
    "1.2.840.10008.5.1.4.1.1.7": _SC,  # Secondary Capture Image (A.8.1)
    "1.2.840.10008.5.1.4.1.1.7.1": _SC,  # Multi-frame Single Bit SC (A.8.2)
    "1.2.840.10008.5.1.4.1.1.7.2": _SC,  # Multi-frame Grayscale Byte SC (A.8.3)
    "1.2.840.10008.5.1.4.1.1.7.3": _SC,  # Multi-frame Grayscale Word SC (A.8.4)
    "1.2.840.10008.5.1.4.1.1.7.4": _SC,  # Multi-frame True Color SC (A.8.5)
    "1.2.840.10008.5.1.4.1.1.12.1": _IMAGE,  # X-Ray Angiographic Image (A.14)
    "1.2.840.10008.5.1.4.1.1.12.2": _IMAGE,  # X-Ray Radiofluoroscopic Image (A.16)
    "1.2.840.10008.5.1.4.1.1.128": _PLANES,  # PET Image (A.21)
    "1.2.840.10008.5.1.4.1.1.481.1": _IMAGE,  # RT Image (A.17)
    "1.2.840.10008.5.1.4.1.1.77.1.1": _IMAGE,  # VL Endoscopic Image (A.32.1)
    "1.2.840.10008.5.1.4.1.1.77.1.2": _IMAGE,  # VL Microscopic Image (A.32.2)
    "1.2.840.10008.5.1.4.1.1.77.1.4": _IMAGE,  # VL Photographic Image (A.32.4)
}
_OTHER = (("Patient", "M"), ("General Study", "M"), ("General Equipment", "U"))
#: What shows a User Optional module present.
_PRESENT_WHEN = {"General Equipment": _EQUIPMENT}
#: Prefix of the description of each repair in a task's report lines (:func:`is_repair`).
PREFIX = "repaired "
_ORIGINAL_ATTRIBUTES = Tag(0x0400, 0x0561)
_CS = re.compile(r"[A-Z0-9 _]*")
_ACR_NEMA_DATE = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})")
_ACR_NEMA_TIME = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?")


@dataclass(frozen=True)
class Repair:
    """One value corrected (``old`` None: the attribute was absent)."""

    attribute: str
    old: str | None
    new: str
    why: str
    tag: int = field(default=0, compare=False, repr=False)
    #: (sequence tag, item number from 1) of the sequences that hold the attribute, outermost first.
    within: tuple[tuple[int, int], ...] = field(default=(), compare=False, repr=False)
    #: The old value's bytes (None: it was absent).
    was: bytes | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        old = "(absent)" if self.old is None else repr(self.old)
        return f"{PREFIX}{self.attribute} {old} -> {self.new!r} ({self.why})"


def is_repair(line: str) -> bool:
    """Whether a task's report line describes a repair (see :meth:`Repair.__str__`)."""
    return line.startswith(PREFIX)


def repair(ds: Dataset, *, now: datetime | None = None) -> list[Repair]:
    """Correct ``ds`` in place as the module docstring says; return what was changed.

    Call it before anything reads the values: a UID's trailing junk is seen in the bytes as read.

    >>> ds = Dataset()
    >>> ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    >>> for tag, vr, value in ((0x00080020, "DA", "1998.01.02"), (0x00080060, "CS", "ot")):
    ...     ds.add(DataElement(tag, vr, value, validation_mode=0))  # as a file may hold them
    >>> for r in repair(ds)[:2]:
    ...     print(r)
    repaired StudyDate '1998.01.02' -> '19980102' (DA: ACR-NEMA form)
    repaired Modality 'ot' -> 'OT' (CS: upper case)
    >>> item = ds.OriginalAttributesSequence[0]
    >>> item.ReasonForTheAttributeModification, item.NonconformingModifiedAttributesSequence[0][0x04000552].value
    ('CORRECT', b'1998.01.02')
    """
    found: list[Repair] = []
    for tag in list(ds.keys()):
        if not tag.is_private and tag != _ORIGINAL_ATTRIBUTES:
            _attribute(ds, tag, (), found)
    sop_class = str(ds.get("SOPClassUID", ""))
    for module, usage in IODS.get(sop_class, _OTHER):
        if usage == "U" and not any(k in ds for k in _PRESENT_WHEN[module]):
            continue
        for keyword in TYPE_2[module]:
            if keyword not in ds:
                ds.add_new(Tag(keyword), dictionary_VR(Tag(keyword)), None)
                found.append(Repair(keyword, None, "", f"Type 2 of the {module} module, added empty", Tag(keyword)))
    when = modification_time(now)
    for r in found:
        if r.was is not None:
            record(ds, _listed([r]), reason="CORRECT", when=when,
                   nonconforming=nonconforming(r.tag, r.was, within=r.within))
    if added := [r for r in found if r.was is None]:
        record(ds, _listed(added), reason="CORRECT", when=when)
    return found


def _listed(repairs: list[Repair]) -> Dataset:
    """The Modified Attributes Sequence item of ``repairs``: each top-level attribute, with no value."""
    old = Dataset()
    for r in repairs:
        top = r.within[0][0] if r.within else r.tag
        old.add_new(top, dictionary_VR(top), None)
    return old


def _attribute(ds: Dataset, tag: BaseTag, within: tuple[tuple[int, int], ...], found: list[Repair]) -> None:
    """Repair one attribute of ``ds`` in place, a sequence item by item."""
    kept = ds.get_item(tag)
    vr = _vr(kept)
    if vr == "SQ":
        for n, item in enumerate(ds[tag].value or (), start=1):
            for inner in list(item.keys()):
                if not inner.is_private:
                    _attribute(item, inner, (*within, (int(tag), n)), found)
        return
    if vr not in ("CS", "DA", "TM", "UI"):
        return
    if isinstance(kept, RawDataElement):
        was = bytes(kept.value or b"")
        text = was.decode("latin-1") if vr == "UI" else _text(ds[tag].value)
    else:
        text = _text(kept.value)
        was = text.encode("latin-1", "replace")
    new, why = _fix(vr, text.split("\\"))
    if why is None:
        return
    path = "".join(f"{_name(Tag(t))}[{n - 1}]." for t, n in within)
    found.append(Repair(path + _name(tag), text, "\\".join(new), why, int(tag), within, was))
    ds[tag] = DataElement(tag, vr, new if len(new) > 1 else new[0])


def _text(value: object) -> str:
    """A text value as one string, its values joined by backslashes."""
    return "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value or "")


def _fix(vr: str, values: list[str]) -> tuple[list[str], str | None]:
    """The values corrected, and why (None: they need nothing)."""
    if vr == "UI":
        trimmed = [v.rstrip(" \0") for v in values]
        joined = "\\".join(trimmed)
        if "\\".join(values) in (joined, joined + "\0" * (len(joined) % 2)):
            return values, None
        return trimmed, "UI: trailing space or NUL trimmed"
    if vr == "CS":
        fixed = ["".join(c.upper() if "a" <= c <= "z" else c if _CS.fullmatch(c) else "_" for c in v) for v in values]
        if fixed == values:
            return values, None
        lower = all(_CS.fullmatch(v.upper()) for v in values)
        return fixed, "CS: upper case" if lower else "CS: characters not allowed replaced by _"
    pattern, form = (_ACR_NEMA_DATE, "%Y%m%d") if vr == "DA" else (_ACR_NEMA_TIME, "%H%M%S")
    fixed = [_acr_nema(v, pattern, form) for v in values]
    if fixed == values:
        return values, None
    return fixed, f"{vr}: ACR-NEMA form"


def _acr_nema(value: str, pattern: re.Pattern[str], form: str) -> str:
    """``value`` rewritten from its ACR-NEMA form, when it is one and names a real date or time.

    >>> _acr_nema("12:30", _ACR_NEMA_TIME, "%H%M%S"), _acr_nema("1998.02.30", _ACR_NEMA_DATE, "%Y%m%d")
    ('1230', '1998.02.30')
    """
    match = pattern.fullmatch(value.strip())
    if match is None:
        return value
    parts = [p for p in match.groups() if p is not None]
    digits = "".join(p for p in parts if not p.startswith("."))
    try:
        datetime.strptime(digits, form[: len(digits)])
    except ValueError:
        return value
    return "".join(parts)


def _vr(elem: DataElement | RawDataElement) -> str:
    """The element's VR as written, else as the data dictionary says (UN for a tag it does not know)."""
    if elem.VR:
        return str(elem.VR)
    try:
        return dictionary_VR(elem.tag)
    except KeyError:
        return "UN"


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or str(tag)
