"""PS3.15 Annex E Basic Application Level Confidentiality Profile, for teaching and research discs.

:func:`deidentify` applies the Basic Profile column of PS3.15 Table E.1-1 to one dataset, at every
depth of its sequences (E.1.1), removes every private element (the Basic Profile keeps none), gives
every instance UID a new one through the disc's :class:`~node.media.uids.UidMap` (action U, so
references between the disc's files still resolve), and records what was done in the SOP Common
Module (PS3.3 C.12.1.1.7): Patient Identity Removed "YES", De-identification Method and its Code
Sequence (113100, DCM, "Basic Application Confidentiality Profile").

The table (:data:`BASIC_PROFILE`) is data of its own, in :mod:`node.media.basic_profile`.

How each action is carried out (PS3.15 E.1.1 and the table's legend):

- ``X`` removes the attribute; ``Z`` empties it (a sequence loses its items), except Study Date, Study
  Time and Study ID, Type 1 keys of the DICOMDIR's STUDY record (PS3.3 F.5), which get the dummy
  that ``Z`` also allows; ``U`` is the UID map.
- ``D`` replaces the value by a dummy of its VR. Patient's Name and Patient ID (``Z`` and ``Z/D``)
  get a pseudonym derived from the burn's salt and the original Patient ID, so one patient stays one
  patient across the disc, and nobody can recompute it without the salt.
- A ``D`` sequence keeps its items with the profile applied inside them, a dummy of the same shape
  that keeps its references (a de-identified key object still points at its images); the items of
  a Content Sequence that hold free text, a name or a date (TEXT, PNAME, DATE, TIME, DATETIME) are
  dropped, since the table names no attribute inside them. A sequence of codes whose codes are the
  identifier (Institution Code Sequence, Person Identification Code Sequence) becomes one dummy code.
- The choices ``Z/D``, ``X/D``, ``X/Z/D`` depend on the attribute's Type in the IOD, which we do
  not carry: we take ``D`` (a dummy is conformant for Types 1, 2 and 3) and ``Z`` for ``X/Z``. So a
  Type 1 attribute never goes missing and no original value ever stays.
- Curves (50xx) are removed whole, and so is an overlay (60xx) whose Overlay Data the table removes:
  an overlay plane without its data would break the Overlay Plane Module (PS3.3 C.9.2).

Burned-in text cannot be removed from attributes: an image flagged Burned In Annotation "YES", or a
Secondary Capture or Ultrasound image without the flag (both are screen captures that usually carry
the patient's name in the pixels), raises :class:`BurnedInAnnotation` unless the route allows it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from node.errors import NodeError
from node.media.basic_profile import BASIC_PROFILE
from node.media.uids import UidMap, remap
from node.tags import CONTENT_SEQUENCE, PATIENT_ID, PATIENT_NAME, STUDY_DATE, STUDY_ID, STUDY_TIME

if TYPE_CHECKING:
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

#: De-identification Method (0012,0063), LO: at most 64 characters.
METHOD = "PS3.15 E.1 Basic Application Level Confidentiality Profile"
#: De-identification Method Code Sequence (0012,0064) item (PS3.16 CID 7050).
METHOD_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")

#: SOP classes whose images are screen captures or scanner displays: no Burned In Annotation means
#: "unknown", taken as "YES" (PS3.6 Annex A: Secondary Capture family; Ultrasound, retired and current).
BURNS_TEXT = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.6",
        "1.2.840.10008.5.1.4.1.1.6.1",
        "1.2.840.10008.5.1.4.1.1.6.2",
        "1.2.840.10008.5.1.4.1.1.3",
        "1.2.840.10008.5.1.4.1.1.3.1",
    }
)

#: Dummy values per VR for action D (consistent with the VR, PS3.5 Table 6.2-1).
_DUMMY: dict[str, object] = {
    **dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"), "ANONYMOUS"),
    "AS": "000D",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "UR": "urn:none",
    **dict.fromkeys(("DS", "IS"), "0"),
    **dict.fromkeys(("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "AT"), 0),
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), b"\0\0"),
}

#: Content item value types whose value is free text, a name or a date (PS3.3 C.17.3.2.1).
_FREE_TEXT_ITEMS = frozenset({"TEXT", "PNAME", "DATE", "TIME", "DATETIME"})

#: ``Z`` attributes given a dummy: the DICOMDIR's STUDY record needs them (PS3.3 Table F.5-2).
_Z_AS_DUMMY = frozenset({STUDY_DATE, STUDY_TIME, STUDY_ID})


class BurnedInAnnotation(NodeError):
    """An image whose pixels may show who the patient is, and a route that did not allow it."""


def deidentify(ds: Dataset, uids: UidMap, *, allow_burned_in: bool) -> list[str]:
    """De-identify ``ds`` in place with the Basic Profile; return the keywords of what changed, sorted.

    Every instance UID is renamed through ``uids`` (as if ``everything`` were set: de-identification
    renames them all). Raises :class:`BurnedInAnnotation` before touching anything when the pixels
    may carry identity and ``allow_burned_in`` is false.
    """
    if not allow_burned_in:
        _refuse_burned_in(ds)
    from pydicom.datadict import keyword_for_tag

    patient = str(ds.get("PatientID") or ds.get("PatientName") or "")
    pseudonym = "ANON" + uids.pseudonym("patient", patient, 12)
    touched: set[int] = set()
    _apply(ds, touched)
    ds.remove_private_tags()
    ds.PatientName = f"ANON^{pseudonym[4:]}"
    ds.PatientID = pseudonym
    touched |= {PATIENT_NAME, PATIENT_ID}
    remap(ds, replace(uids, everything=True))
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    ds.DeidentificationMethodCodeSequence = [_code(*METHOD_CODE)]
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    return sorted(keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})" for tag in touched)


def _refuse_burned_in(ds: Dataset) -> None:
    flag = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    sop_class = str(ds.get("SOPClassUID", ""))
    if flag == "YES":
        why = "is flagged Burned In Annotation YES"
    elif not flag and sop_class in BURNS_TEXT:
        why = "is a screen-capture or ultrasound image without a Burned In Annotation flag"
    else:
        return
    raise BurnedInAnnotation(
        f"{ds.get('SOPInstanceUID', 'an instance')} {why}: its pixels may show the patient's identity, "
        "which de-identification cannot remove; allow burned-in annotation on the route to burn it anyway"
    )


def action(tag: int) -> str | None:
    """The Basic Profile action for ``tag`` (PS3.15 Table E.1-1), or None when the profile keeps it."""
    group, element = tag >> 16, tag & 0xFFFF
    if 0x5000 <= group <= 0x50FF and not group & 1:
        return "X"  # Curve Data and every curve attribute (retired repeating group)
    if 0x6000 <= group <= 0x60FF and not group & 1:
        return "X" if element in (0x3000, 0x4000) else None  # Overlay Data, Overlay Comments
    return BASIC_PROFILE.get(tag)


def _apply(ds: Dataset, touched: set[int]) -> None:
    """The table's actions on ``ds`` and, recursively, on every item of its sequences."""
    overlays = {elem.tag >> 16 for elem in ds if action(elem.tag) and 0x6000 <= elem.tag >> 16 <= 0x60FF}
    for elem in list(ds):
        what = action(elem.tag)
        if elem.tag >> 16 in overlays:
            what = "X"
        if what is None:
            if elem.VR == "SQ":
                for item in elem.value:
                    _apply(item, touched)
            continue
        if what == "U" or (elem.VR == "UI" and what != "X"):
            continue  # the UID map renames it, with every reference to it
        touched.add(int(elem.tag))
        if what == "X":
            del ds[elem.tag]
        elif what in ("Z", "X/Z") and elem.tag not in _Z_AS_DUMMY:
            elem.value = [] if elem.VR == "SQ" else None
        elif elem.VR == "SQ":
            _dummy_sequence(elem, touched)
        else:
            elem.value = _DUMMY.get(elem.VR, None)


def _dummy_sequence(elem: DataElement, touched: set[int]) -> None:
    """Action D (or X/Z/U*) on a sequence: keep its shape, de-identify inside (see the module docstring)."""
    items = list(elem.value)
    if any("CodeValue" in item or "LongCodeValue" in item or "URNCodeValue" in item for item in items):
        elem.value = [_code("ANONYMOUS", "99MEDIANODE", "De-identified")]
        return
    if elem.tag == CONTENT_SEQUENCE:
        items = [item for item in items if item.get("ValueType") not in _FREE_TEXT_ITEMS]
        elem.value = items
    for item in items:
        _apply(item, touched)


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    from pydicom import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
