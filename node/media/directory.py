"""The patient / study / series / instance tree of a file-set, with the keys its
directory records carry (PS3.3 F.5) and the values we had to invent.

Type 1 keys that the instances leave empty are invented deterministically, as
DCMTK's ``dcmmkdir +I`` does, and each invention is reported. Two patients
sharing one Patient ID are refused unless ``invent_patient_id`` is set.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from node import dcmio, dicom
from node.errors import BuildError
from node.media.sources import SourceInstance
from node.tags import (
    ACQUISITION_DATE,
    ACQUISITION_TIME,
    CONTENT_DATE,
    CONTENT_SEQUENCE,
    CONTENT_TIME,
    INSTANCE_CREATION_DATE,
    INSTANCE_CREATION_TIME,
    INSTANCE_NUMBER,
    MODALITY,
    PATIENT_ID,
    RELATIONSHIP_TYPE,
    SERIES_DATE,
    SERIES_INSTANCE_UID,
    SERIES_NUMBER,
    SERIES_TIME,
    SPECIFIC_CHARACTER_SET,
    STUDY_DATE,
    STUDY_ID,
    STUDY_INSTANCE_UID,
    STUDY_TIME,
    VERIFICATION_DATETIME,
    VERIFICATION_FLAG,
    VERIFYING_OBSERVER_SEQUENCE,
)

_DATE_SOURCES = (SERIES_DATE, ACQUISITION_DATE, CONTENT_DATE, INSTANCE_CREATION_DATE)
_TIME_SOURCES = (SERIES_TIME, ACQUISITION_TIME, CONTENT_TIME, INSTANCE_CREATION_TIME)
#: Relationship Type of the Content Sequence items a record keeps (PS3.3 F.5.18, F.5.22).
HAS_CONCEPT_MOD = "HAS CONCEPT MOD"


@dataclass
class Node:
    """One directory record to be: its type, its key elements (encoded) and its children."""

    record_type: str
    keys: dict[int, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    instance: SourceInstance | None = None
    #: Specific Character Set element to add when a key is not plain ASCII.
    charset: bytes = b""


@dataclass
class Tree:
    """The file-set's records, in the order they are laid out and written."""

    patients: list[Node]
    inventions: list[str]
    #: (source path, reason) of instances that cannot be recorded.
    refused: list[tuple[str, str]]
    #: SOP Instance UID -> the Patient ID its file must be given (``invent_patient_id``).
    coerced: dict[str, str] = field(default_factory=dict)

    def leaves(self) -> list[Node]:
        return [i for p in self.patients for s in p.children for se in s.children for i in se.children]

    def instances(self) -> list[tuple[Node, SourceInstance]]:
        """Each leaf record with the instance it references, in layout order."""
        return [(leaf, leaf.instance) for leaf in self.leaves() if leaf.instance is not None]


def build_tree(instances: list[SourceInstance], *, invent_patient_id: bool = False) -> Tree:
    """Group ``instances`` by patient, study and series and make their records."""
    inventions: list[str] = []
    refused: list[tuple[str, str]] = []
    studies: dict[str, list[SourceInstance]] = {}
    for inst in instances:
        if not inst.text(STUDY_INSTANCE_UID) or not inst.text(SERIES_INSTANCE_UID):
            refused.append((inst.source, "no Study or Series Instance UID"))
        else:
            studies.setdefault(inst.text(STUDY_INSTANCE_UID), []).append(inst)

    coerced: dict[str, str] = {}
    patients: dict[str, Node] = {}
    owners: dict[str, tuple[str, str, str]] = {}  # Patient ID -> (id, name, birth date) first seen
    for study_uid in sorted(studies, key=lambda u: _study_sort_key(studies[u])):
        members = studies[study_uid]
        first = members[0]
        key = first.patient_key
        for other in members[1:]:
            if _differs(other.patient_key, key):
                raise BuildError(f"study {study_uid} holds instances of two patients: {_who(key)} and {_who(other.patient_key)}")
        pid = key[0]
        if not pid:
            pid = _invented_id(key)
            inventions.append(f"Patient ID {pid} invented for {_who(key)}")
        elif pid in owners and _differs(owners[pid], key):
            if not invent_patient_id:
                raise BuildError(
                    f"Patient ID {pid!r} is shared by {_who(owners[pid])} and {_who(key)}; "
                    "pass --invent-patient-id to give the second its own ID"
                )
            pid = _invented_id(key)
            coerced.update((m.sop_instance_uid, pid) for m in members)
            inventions.append(f"Patient ID {pid} given to {_who(key)} (its ID {key[0]!r} belongs to {_who(owners[key[0]])})")
        owners.setdefault(pid, key)
        patient = patients.get(pid)
        if patient is None:
            invented = {PATIENT_ID: pid} if pid != key[0] else {}
            patient = patients[pid] = _record("PATIENT", first, invented, inventions, refused)
        patient.children.append(_study(study_uid, members, inventions, refused))

    tree = Tree(list(patients.values()), inventions, refused, coerced)
    for p in tree.patients:
        p.children = [s for s in p.children if s.children]
    tree.patients = [p for p in tree.patients if p.children]
    return tree


def _study(uid: str, members: list[SourceInstance], inventions: list[str], refused: list[tuple[str, str]]) -> Node:
    values: dict[int, str] = {}
    if not _first(members, (STUDY_DATE,)):
        values[STUDY_DATE] = _first(members, _DATE_SOURCES) or "19000101"
        inventions.append(f"Study Date {values[STUDY_DATE]} invented for study {uid}")
    if not _first(members, (STUDY_TIME,)):
        values[STUDY_TIME] = _first(members, _TIME_SOURCES) or "000000"
        inventions.append(f"Study Time {values[STUDY_TIME]} invented for study {uid}")
    if not _first(members, (STUDY_ID,)):
        values[STUDY_ID] = hashlib.sha1(uid.encode()).hexdigest()[:8].upper()
        inventions.append(f"Study ID {values[STUDY_ID]} invented for study {uid}")
    study = _record("STUDY", members[0], values, inventions, refused)

    series: dict[str, list[SourceInstance]] = {}
    for inst in members:
        series.setdefault(inst.text(SERIES_INSTANCE_UID), []).append(inst)
    numbers = [_int(_first(m, (SERIES_NUMBER,))) for m in series.values()]
    next_number = max([n for n in numbers if n is not None], default=0) + 1
    for series_uid in sorted(series, key=lambda u: (_int(_first(series[u], (SERIES_NUMBER,))) or 0, u)):
        insts = series[series_uid]
        values = {}
        if not _first(insts, (MODALITY,)):
            values[MODALITY] = "OT"
            inventions.append(f"Modality OT invented for series {series_uid}")
        if _int(_first(insts, (SERIES_NUMBER,))) is None:
            values[SERIES_NUMBER] = str(next_number)
            inventions.append(f"Series Number {next_number} invented for series {series_uid}")
            next_number += 1
        node = _record("SERIES", insts[0], values, inventions, refused)
        node.children = _leaves(insts, study_date=study_value(study, STUDY_DATE), study_time=study_value(study, STUDY_TIME),
                                inventions=inventions, refused=refused)
        if node.children:
            study.children.append(node)
    return study


def _leaves(insts: list[SourceInstance], *, study_date: str, study_time: str,
            inventions: list[str], refused: list[tuple[str, str]]) -> list[Node]:
    numbers = [_int(i.text(INSTANCE_NUMBER)) for i in insts]
    next_number = max([n for n in numbers if n is not None], default=0) + 1
    leaves = []
    for inst in sorted(insts, key=lambda i: (_int(i.text(INSTANCE_NUMBER)) or 0, i.sop_instance_uid)):
        values = {}
        if _int(inst.text(INSTANCE_NUMBER)) is None:
            values[INSTANCE_NUMBER] = str(next_number)
            inventions.append(f"Instance Number {next_number} invented for {inst.source}")
            next_number += 1
        wanted = {k.tag for k in dicom.record_keys(inst.record_type)}
        if CONTENT_DATE in wanted and not inst.text(CONTENT_DATE):
            values[CONTENT_DATE] = inst.text(INSTANCE_CREATION_DATE) or study_date
            inventions.append(f"Content Date {values[CONTENT_DATE]} invented for {inst.source}")
        if CONTENT_TIME in wanted and not inst.text(CONTENT_TIME):
            values[CONTENT_TIME] = inst.text(INSTANCE_CREATION_TIME) or study_time
            inventions.append(f"Content Time {values[CONTENT_TIME]} invented for {inst.source}")
        record = "GENERIC" if inst.record_type not in dicom.RECORD_KEYS else inst.record_type
        leaf = _record(record, inst, values, inventions, refused)
        if leaf.record_type:
            leaf.record_type = inst.record_type
            leaf.instance = inst
            leaves.append(leaf)
    return leaves


def _record(record: str, inst: SourceInstance, values: dict[int, str],
            inventions: list[str], refused: list[tuple[str, str]]) -> Node:
    """Make one record from ``inst``'s elements and the ``values`` invented for it.

    A missing Type 1 key that cannot be invented refuses the instance: the
    returned node then has an empty record type.
    """
    node = Node(record)
    elements = inst.header.elements
    for key in dicom.record_keys(record):
        if key.tag in values:
            node.keys[key.tag] = dcmio.encode(key.tag, key.vr, values[key.tag])
            continue
        element = elements.get(key.tag)
        if key.tag == CONTENT_SEQUENCE and element is not None:
            element = _concept_modifiers(element)
        elif key.tag == VERIFICATION_DATETIME and dcmio.text(elements.get(VERIFICATION_FLAG)) == "VERIFIED":
            element = _verification_datetime(elements.get(VERIFYING_OBSERVER_SEQUENCE))
        elif key.vr in ("DA", "TM") and element is not None and dcmio.text(element):
            element = _date_or_time(key, element, inst, inventions)
        if element is not None and (element.items or dcmio.text(element)):
            node.keys[key.tag] = element.raw
            charset = elements.get(SPECIFIC_CHARACTER_SET)
            if charset is not None and _not_ascii(element):
                node.charset = charset.raw
        elif key.type == "1":
            refused.append((inst.source, f"no {_tag(key.tag)} for its {record} record (Type 1)"))
            return Node("")
        elif key.type == "2":
            node.keys[key.tag] = dcmio.encode(key.tag, key.vr, b"")
    return node


def _verification_datetime(observers: dcmio.Element | None) -> dcmio.Element | None:
    """The latest Verification DateTime of a verified SR (F.5.18: 1C when VERIFIED)."""
    times = [i[VERIFICATION_DATETIME] for i in observers.items if VERIFICATION_DATETIME in i] if observers else []
    return max(times, key=dcmio.text, default=None)


_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")


def _date_or_time(key: dicom.Key, element: dcmio.Element, inst: SourceInstance,
                  notes: list[str]) -> dcmio.Element | None:
    """A valid DA / TM as it is; the ACR-NEMA forms (1997.04.24, 14:04:38) rewritten; else None."""
    value = dcmio.text(element)
    pattern = _DA if key.vr == "DA" else _TM
    if pattern.match(value):
        return element
    fixed = value.replace(".", "") if key.vr == "DA" else value.replace(":", "")
    if not pattern.match(fixed):
        notes.append(f"{_tag(key.tag)} {value!r} of {inst.source} is not a valid {key.vr}: left out")
        return None
    notes.append(f"{_tag(key.tag)} {value!r} of {inst.source} written as {fixed}")
    return dcmio.Element(key.vr, fixed.encode(), dcmio.encode(key.tag, key.vr, fixed))


def _concept_modifiers(element: dcmio.Element) -> dcmio.Element | None:
    """Keep only the HAS CONCEPT MOD items of a Content Sequence (PS3.3 F.5.18)."""
    kept = [i for i in element.items if dcmio.text(i.get(RELATIONSHIP_TYPE)) == HAS_CONCEPT_MOD]
    if not kept:
        return None
    items = [b"".join(e.raw for _, e in sorted(i.items())) for i in kept]
    return dcmio.Element("SQ", b"", dcmio.encode_sequence(CONTENT_SEQUENCE, items), tuple(kept))


_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})


def _not_ascii(element: dcmio.Element) -> bool:
    """True when a text value (at any depth) uses bytes beyond ASCII or escapes (PS3.5 6.1)."""
    if element.items:
        return any(_not_ascii(e) for item in element.items for e in item.values())
    return element.vr in _TEXT_VRS and any(b >= 0x80 or b == 0x1B for b in element.value)


def study_value(study: Node, tag: int) -> str:
    """A study record's key value, decoded (for inventions further down)."""
    raw = study.keys.get(tag, b"")
    return raw[8:].decode("ascii", "replace").strip() if raw else ""


def _first(insts: list[SourceInstance], tags: tuple[int, ...]) -> str:
    for tag in tags:
        for inst in insts:
            if inst.text(tag):
                return inst.text(tag)
    return ""


def _study_sort_key(members: list[SourceInstance]) -> tuple[str, str, str]:
    first = members[0]
    return (first.text(PATIENT_ID), first.text(STUDY_DATE), first.text(STUDY_INSTANCE_UID))


def _differs(a: tuple[str, str, str], b: tuple[str, str, str]) -> bool:
    """Two (ID, name, birth date) keys name different patients (empty values match anything)."""
    return any(x and y and x.rstrip("^ ") != y.rstrip("^ ") for x, y in zip(a[1:], b[1:])) or a[0] != b[0]


def _who(key: tuple[str, str, str]) -> str:
    pid, name, born = key
    return f"{name or '(no name)'!r}" + (f" born {born}" if born else "") + (f" (ID {pid!r})" if pid else "")


def _invented_id(key: tuple[str, str, str]) -> str:
    return "MN" + hashlib.sha1("|".join(key).encode()).hexdigest()[:10].upper()


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
