"""Import coercion: ``import.coerce`` applied to one data set, and recorded as PS3.3 C.12.1 asks.

:class:`node.config.Coercion` says what changes (Issuer of Patient ID, a Patient
ID prefix or map); :class:`Coercing` is that coercion during one import: the
medium the old values came from and the time. For an instance whose values it
changes, :meth:`Coercing.apply` sets the new values and appends one item to the
Original Attributes Sequence (0400,0561), PS3.3 C.12.1.1.9.2 and Table C.12-1:

- Modified Attributes Sequence (0400,0550): one item with the old values of the
  changed attributes; an attribute that was absent is recorded with no value;
- Attribute Modification DateTime (0400,0562): when, a DT with its UTC offset;
- Modifying System (0400,0563): ``MEDIANODE``;
- Source of Previous Values (0400,0564): the medium's label (Type 2: may be empty);
- Reason for the Attribute Modification (0400,0565): ``COERCE``, the defined term
  for values replaced during the import of media from another institution.

Items already in the sequence are kept. A coerced instance is always re-encoded,
never sent as its own bytes (:mod:`node.read.sender`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from node.config import Coercion
from node.tags import PATIENT_ID

#: What a coercion may change, keyword -> (tag, VR): both LO, of the Patient Module (PS3.3 C.7.1.1, PS3.6).
ATTRIBUTES = {"PatientID": (PATIENT_ID, "LO"), "IssuerOfPatientID": (0x00100021, "LO")}
#: Modifying System (0400,0563), LO.
MODIFYING_SYSTEM = "MEDIANODE"
#: Reason for the Attribute Modification (0400,0565): PS3.3 C.12.1.1.9.2, defined terms COERCE and CORRECT.
REASON = "COERCE"
_LO_MAX = 64  # PS3.5 Table 6.2-1


class CoercionError(ValueError):
    """The coercion cannot be applied to this instance (it is then not sent at all)."""


@dataclass(frozen=True)
class Change:
    """One attribute changed in one instance: ``old`` is None when the attribute was absent."""

    attribute: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"{self.attribute} {'(absent)' if self.old is None else repr(self.old)} -> {self.new!r}"


@dataclass(frozen=True)
class Coercing:
    """``import.coerce`` as one import applies it: the rules, where the old values came from, and when."""

    rules: Coercion
    #: Source of Previous Values (0400,0564): the medium's label, LO, possibly empty.
    source: str = ""
    #: Attribute Modification DateTime (0400,0562), DT.
    when: str = ""

    @classmethod
    def start(cls, rules: Coercion, source: str, *, now: datetime | None = None) -> Coercing:
        """The rules, ``source`` made a Long String (printable ASCII, no backslash, 64 at most), now as a DT.

        >>> c = Coercing.start(Coercion(), "VOL\\\\1 é", now=datetime(2026, 1, 2, 3, 4, 5))
        >>> c.source, c.when[:14]
        ('VOL_1 _', '20260102030405')
        """
        label = "".join(c if " " <= c <= "~" and c != "\\" else "_" for c in source).strip(" ")[:_LO_MAX]
        when = (now or datetime.now()).astimezone().strftime("%Y%m%d%H%M%S.%f%z")  # PS3.5 6.2 DT, 26 characters
        return cls(rules, label, when)

    def may_change(self, patient_id: str) -> bool:
        """Could an instance of this Patient ID be changed? (Only :meth:`changes` of its data set knows.)"""
        return bool(self.rules.issuer_of_patient_id) or self.rules.patient_id(patient_id) != patient_id

    def changes(self, ds: Dataset) -> tuple[Change, ...]:
        """What the rules change in ``ds`` (a header is enough); raises :class:`CoercionError` when they cannot."""
        found: list[Change] = []
        old_id = _single(ds, "PatientID")
        new_id = self.rules.patient_id(old_id or "").strip(" ")
        if new_id != (old_id or "").strip(" "):
            if len(new_id) > _LO_MAX:
                raise CoercionError(f"the coerced Patient ID {new_id!r} would be longer than {_LO_MAX} characters "
                                    "(PS3.5 6.2: LO)")
            found.append(Change("PatientID", old_id, new_id))
        issuer = self.rules.issuer_of_patient_id
        old_issuer = _single(ds, "IssuerOfPatientID")
        if issuer and issuer != (old_issuer or "").strip(" "):
            found.append(Change("IssuerOfPatientID", old_issuer, issuer))
        return tuple(found)

    def apply(self, ds: Dataset, changes: tuple[Change, ...]) -> None:
        """Set the new values in ``ds`` and append the Original Attributes Sequence item that records the old."""
        if not changes:
            return
        old = Dataset()
        for change in changes:
            tag, vr = ATTRIBUTES[change.attribute]
            if _single(ds, change.attribute) != change.old:
                raise CoercionError(f"{change.attribute} changed on the medium since it was read")
            if tag in ds:
                old.add(copy.deepcopy(ds[tag]))
            else:
                old.add_new(tag, vr, "")  # absent before: recorded with no value
            ds.add_new(tag, vr, change.new)
        for group in {ATTRIBUTES[c.attribute][0] >> 16 for c in changes} | {0x0400}:
            ds.pop(Tag(group, 0x0000), None)  # a (retired) Group Length would now lie (PS3.5 7.2)
        record = Dataset()
        record.ModifiedAttributesSequence = Sequence([old])
        record.AttributeModificationDateTime = self.when
        record.ModifyingSystem = MODIFYING_SYSTEM
        record.SourceOfPreviousValues = self.source
        record.ReasonForTheAttributeModification = REASON
        if "OriginalAttributesSequence" in ds:
            ds.OriginalAttributesSequence.append(record)
        else:
            ds.OriginalAttributesSequence = Sequence([record])


def _single(ds: Dataset, keyword: str) -> str | None:
    """The attribute's one value as text, "" when empty, None when absent; several values cannot be coerced."""
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None:
        return ""
    if not isinstance(value, str):
        raise CoercionError(f"{keyword} holds {len(value) if hasattr(value, '__len__') else 'no'} text values, "
                            "not one (PS3.3 C.7.1.1: VM 1)")
    return value
