"""Import coercion: ``import.coerce`` or a reconciled identity applied to one data set, and recorded
as PS3.3 C.12.1 asks.

:class:`node.config.Coercion` says what changes (Issuer of Patient ID, a Patient
ID prefix or map); a :class:`~node.read.match.Candidate` is the local identity
reconciliation found (:data:`RECONCILED`): Patient ID and issuer, the local
spelling of the name, birth date and sex, and from a worklist item Accession
Number, Study Description when empty, the Referenced Study Sequence and a
Request Attributes Sequence item (PS3.3 Table 10-9); the foreign Patient ID and
its issuer are added to Other Patient IDs Sequence (0010,1002). No UID is
changed. :class:`Coercing` is either during one import: the
medium the old values came from and the time. For an instance whose values it
changes, :meth:`Coercing.apply` sets the new values and appends one item to the
Original Attributes Sequence (0400,0561) (:mod:`node.original`): the old values, Source of
Previous Values the medium's label, reason ``COERCE``, the defined term for values replaced
during the import of media from another institution. A local value the instance's Specific
Character Set cannot hold makes it ISO_IR 192 (UTF-8), every text value decoded
first (the old character set is recorded too). A coerced instance is always
re-encoded, never sent as its own bytes (:mod:`node.read.sender`).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from node.original import MODIFYING_SYSTEM as MODIFYING_SYSTEM  # named by the conformance statement
from node.original import Reason, modification_time, record
from node.read.match import Candidate
from node.tags import PATIENT_ID
from node.words import counted

if TYPE_CHECKING:  # a type only: an import does not load the configuration's module
    from node.config import Coercion

#: What a coercion may change, keyword -> (tag, VR): both LO, of the Patient Module (PS3.3 C.7.1.1, PS3.6).
ATTRIBUTES = {"PatientID": (PATIENT_ID, "LO"), "IssuerOfPatientID": (0x00100021, "LO")}
#: What reconciliation may change (besides Specific Character Set, when a local value needs UTF-8).
RECONCILED = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
              "StudyDescription", "ReferencedStudySequence", "RequestAttributesSequence", "OtherPatientIDsSequence")
#: The character set a local value is written in when the instance's cannot hold it (PS3.3 C.12.1.1.2).
UTF8 = "ISO_IR 192"
#: Reason for the Attribute Modification (0400,0565), PS3.3 C.12.1.1.9.2.
REASON: Reason = "COERCE"
_LO_MAX = 64  # PS3.5 Table 6.2-1


class CoercionError(ValueError):
    """The coercion cannot be applied to this instance (it is then not sent at all)."""


@dataclass(frozen=True)
class Change:
    """One attribute changed in one instance: ``old`` is None when the attribute was absent. A sequence's
    ``old`` and ``new`` say how many items; ``value`` is then the new sequence itself."""

    attribute: str
    old: str | None
    new: str
    value: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.attribute} {'(absent)' if self.old is None else repr(self.old)} -> {self.new!r}"


@dataclass(frozen=True)
class Coercing:
    """``import.coerce`` or a local identity as one import applies it: the rules, where the old values came
    from, and when."""

    rules: Coercion | Candidate
    #: Source of Previous Values (0400,0564): the medium's label, LO, possibly empty.
    source: str = ""
    #: Attribute Modification DateTime (0400,0562), DT.
    when: str = ""

    @classmethod
    def start(cls, rules: Coercion | Candidate, source: str, *, now: datetime | None = None) -> Coercing:
        """The rules, ``source`` made a Long String (printable ASCII, no backslash, 64 at most), now as a DT.

        >>> from node.config import Coercion
        >>> c = Coercing.start(Coercion(), "VOL\\\\1 é", now=datetime(2026, 1, 2, 3, 4, 5))
        >>> c.source, c.when[:14]
        ('VOL_1 _', '20260102030405')
        """
        label = "".join(c if " " <= c <= "~" and c != "\\" else "_" for c in source).strip(" ")[:_LO_MAX]
        return cls(rules, label, modification_time(now))

    def may_change(self, patient_id: str) -> bool:
        """Could an instance of this Patient ID be changed? (Only :meth:`changes` of its data set knows.)"""
        if isinstance(self.rules, Candidate):
            return True
        return bool(self.rules.issuer_of_patient_id) or self.rules.patient_id(patient_id) != patient_id

    def changes(self, ds: Dataset) -> tuple[Change, ...]:
        """What the rules change in ``ds`` (a header is enough); raises :class:`CoercionError` when they cannot."""
        if isinstance(self.rules, Candidate):
            return _reconciled(ds, self.rules)
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
        if any(c.attribute == "SpecificCharacterSet" for c in changes):
            ds.walk(lambda _ds, _elem: None)  # every text value decoded in the old character set before it changes
        for change in sorted(changes, key=lambda c: c.attribute != "SpecificCharacterSet"):
            tag = _tag(change.attribute)
            vr = dictionary_VR(tag)
            if _describe(ds, change.attribute) != change.old:
                raise CoercionError(f"{change.attribute} changed on the medium since it was read")
            if tag in ds:
                old.add(copy.deepcopy(ds[tag]))
            else:
                old.add_new(tag, vr, [] if vr == "SQ" else "")  # absent before: recorded with no value
            ds.add_new(tag, vr, change.new if change.value is None else copy.deepcopy(change.value))
        record(ds, old, reason=REASON, when=self.when, source=self.source)


def _reconciled(ds: Dataset, local: Candidate) -> tuple[Change, ...]:
    """The changes that give ``ds`` the identity ``local`` (see the module docstring)."""
    wanted: dict[str, Any] = {"PatientID": local.patient_id, "IssuerOfPatientID": local.issuer}
    wanted |= {k: v for k, v in (("PatientName", local.name), ("PatientBirthDate", local.birth_date),
                                 ("PatientSex", local.sex)) if v}
    if len(local.patient_id) > _LO_MAX:
        raise CoercionError(f"the local Patient ID {local.patient_id!r} is longer than {_LO_MAX} characters (LO)")
    if local.source == "worklist":
        wanted["AccessionNumber"] = local.accession
        if not _single(ds, "StudyDescription") and local.requested_procedure_description:
            wanted["StudyDescription"] = local.requested_procedure_description
        if local.referenced_studies:
            wanted["ReferencedStudySequence"] = Sequence([_item(ReferencedSOPClassUID=c, ReferencedSOPInstanceUID=i)
                                                          for c, i in local.referenced_studies])
        request = _item(RequestedProcedureID=local.requested_procedure_id, AccessionNumber=local.accession,
                        StudyInstanceUID=local.study_uid, RequestedProcedureDescription=local.requested_procedure_description,
                        ScheduledProcedureStepID=local.step_id,
                        ScheduledProcedureStepDescription=local.step_description)
        wanted["RequestAttributesSequence"] = Sequence([*(ds.get("RequestAttributesSequence") or []), request])
    foreign_id, foreign_issuer = (_single(ds, "PatientID") or "").strip(), (_single(ds, "IssuerOfPatientID") or "").strip()
    if foreign_id and (foreign_id, foreign_issuer) != (local.patient_id, local.issuer):
        other = _item(PatientID=foreign_id, IssuerOfPatientID=foreign_issuer, TypeOfPatientID="TEXT")
        wanted["OtherPatientIDsSequence"] = Sequence([*(ds.get("OtherPatientIDsSequence") or []), other])
    found = []
    for keyword, value in wanted.items():
        old = _describe(ds, keyword)
        if isinstance(value, Sequence):
            found.append(Change(keyword, old, counted(len(value), "item"), value))
        elif value.strip() != (old or "").strip() and (value or old is not None):
            found.append(Change(keyword, old, value))
    charset = ds.get("SpecificCharacterSet") or "ISO_IR 6"
    texts = [c.new for c in found if c.value is None] + [str(e.value) for c in found if c.value is not None
                                                         for item in c.value for e in item]
    if not all(_encodable(text, charset) for text in texts):
        found.append(Change("SpecificCharacterSet", _describe(ds, "SpecificCharacterSet"), UTF8))
    return tuple(found)


def _item(**values: str) -> Dataset:
    """A sequence item of the non-empty ``values``."""
    item = Dataset()
    for keyword, value in values.items():
        if value:
            setattr(item, keyword, value)
    return item


def _tag(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise CoercionError(f"{keyword} is no DICOM keyword")
    return Tag(tag)


def _encodable(text: str, charset: Any) -> bool:
    """Whether ``text`` can be written in the Specific Character Set ``charset`` without a replacement."""
    terms = [str(t) for t in charset] if isinstance(charset, (list, tuple, MultiValue)) else [str(charset)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            encode_string(text, convert_encodings(terms))
        except (UnicodeError, LookupError, ValueError):
            return False
    return not caught


def _describe(ds: Dataset, keyword: str) -> str | None:
    """An attribute as a :class:`Change` shows it: a sequence's item count, else :func:`_single`."""
    if keyword in ds and dictionary_VR(_tag(keyword)) == "SQ":
        return counted(len(ds[keyword].value or []), "item")
    return _single(ds, keyword)


def _single(ds: Dataset, keyword: str) -> str | None:
    """The attribute's one value as text, "" when empty, None when absent; several values cannot be coerced."""
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None:
        return ""
    if isinstance(value, PersonName):
        return str(value)
    if not isinstance(value, str):
        raise CoercionError(f"{keyword} holds {len(value) if hasattr(value, '__len__') else 'no'} text values, "
                            "not one (PS3.3 C.7.1.1: VM 1)")
    return value
