"""Audit messages in the DICOM format (PS3.15 A.5), the records an IHE ATNA repository collects.

One :func:`message` builds the XML of PS3.15 A.5.1 (validated against its RELAX NG schema,
``tests/data/dicom-audit-message.rnc``, in the tests); the constructors below fill it for the
events of PS3.15 A.5.3 this node reports, with the codes of PS3.16 (CID 400-405, DCM and
RFC-3881 code systems). Which node event becomes which message is :mod:`node.audit`'s;
how a message travels is :mod:`node.syslog`'s.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from node.tls import is_address


@dataclass(frozen=True)
class Code:
    """A coded value: ``csd-code``, ``codeSystemName``, ``originalText`` (the Code Meaning)."""

    code: str
    system: str
    meaning: str

    def attrib(self) -> dict[str, str]:
        return {"csd-code": self.code, "codeSystemName": self.system, "originalText": self.meaning}


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# CID 400 Audit Event ID
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
AUDIT_LOG_USED = _dcm("110101", "Audit Log Used")
BEGIN_TRANSFERRING = _dcm("110102", "Begin Transferring DICOM Instances")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
STUDY_DELETED = _dcm("110105", "DICOM Study Deleted")
DATA_EXPORT = _dcm("110106", "Export")
DATA_IMPORT = _dcm("110107", "Import")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
# CID 401 Audit Event Type Code, CID 403 Security Alert Type Code
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
SOFTWARE_CONFIGURATION = _dcm("110131", "Software Configuration")
# CID 402 Audit Active Participant Role ID Code
APPLICATION = _dcm("110150", "Application")
APPLICATION_LAUNCHER = _dcm("110151", "Application Launcher")
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")
DESTINATION_MEDIA = _dcm("110154", "Destination Media")
SOURCE_MEDIA = _dcm("110155", "Source Media")
# CID 404 Audit Participant Object ID Type Code, and RFC 3881's own
STUDY_UID = _dcm("110180", "Study Instance UID")
SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
NODE_ID = _dcm("110182", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
URI = Code("12", "RFC-3881", "URI")
# CID 405 Media Type Code
USB = _dcm("110030", "USB Disk Emulation")
CD = _dcm("110032", "CD")
DVD = _dcm("110033", "DVD")
URI_MEDIUM = _dcm("110037", "URI")

Action = Literal["C", "R", "U", "D", "E"]
#: EventOutcomeIndicator (PS3.15 A.5.1): nominal success, minor, serious failure.
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: a process (its ID, ``AETITLES=`` as AlternativeUserID, PS3.15 A.5.2.1),
    a person, a remote AE (its AE title, its address) or a medium (its label and type)."""

    user_id: str
    requestor: bool
    role: Code | None = None
    ae_titles: tuple[str, ...] = ()
    address: str | None = None
    media: Code | None = None
    name: str | None = None


@dataclass(frozen=True)
class Study:
    """A study's ParticipantObject (PS3.15 A.5.3 "Study"): its UID, and its instances per SOP class."""

    uid: str
    sop_classes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Patient:
    """A patient's ParticipantObject: the Patient ID and name."""

    id: str
    name: str


@dataclass(frozen=True)
class Thing:
    """Any other ParticipantObject: the audit log, a configuration file, an alert's subject."""

    id: str
    id_type: Code
    name: str
    role: str | None = None
    details: tuple[tuple[str, str], ...] = ()
    #: ParticipantObjectQuery (A.5.3.10: the query's keys), given instead of the name.
    query: str | None = None


Object = Study | Patient | Thing


@dataclass(frozen=True)
class Event:
    """What :func:`message` needs beside the audit source: one PS3.15 A.5.3 event."""

    id: Code
    action: Action
    outcome: str
    participants: tuple[Participant, ...]
    objects: tuple[Object, ...] = ()
    types: tuple[Code, ...] = ()
    description: str | None = None


def message(event: Event, *, when: str, source_id: str) -> bytes:
    """The AuditMessage XML of ``event`` at ``when`` (xsd:dateTime), reported by ``source_id``.

    >>> m = message(Event(APPLICATION_ACTIVITY, "E", SUCCESS, (Participant("4711", False, APPLICATION),),
    ...                   types=(APPLICATION_START,)), when="2026-01-02T03:04:05+00:00", source_id="NODE")
    >>> m.startswith(b'<?xml') and b'<EventID csd-code="110100"' in m and b'AuditSourceID="NODE"' in m
    True
    """
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", EventActionCode=event.action, EventDateTime=when,
                          EventOutcomeIndicator=event.outcome)
    ET.SubElement(ident, "EventID", event.id.attrib())
    for code in event.types:
        ET.SubElement(ident, "EventTypeCode", code.attrib())
    if event.description:
        ET.SubElement(ident, "EventOutcomeDescription").text = event.description
    for p in event.participants:
        _participant(root, p)
    source = ET.SubElement(root, "AuditSourceIdentification", AuditSourceID=source_id)
    ET.SubElement(source, "AuditSourceTypeCode", {"csd-code": "4"})  # application server process
    for o in event.objects:
        _object(root, o)
    # one line: a collector writes each message on one line, and escapes a line break (rsyslog: #012)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(root, encoding="unicode").encode()


def _participant(root: ET.Element, p: Participant) -> None:
    attrib = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
    if p.ae_titles:
        attrib["AlternativeUserID"] = "AETITLES=" + ";".join(p.ae_titles)
    if p.name:
        attrib["UserName"] = p.name
    if p.address:
        # A.5.2.1: 2 an IP address, 1 a machine name
        attrib |= {"NetworkAccessPointID": p.address,
                   "NetworkAccessPointTypeCode": "2" if is_address(p.address) else "1"}
    element = ET.SubElement(root, "ActiveParticipant", attrib)
    if p.role:
        ET.SubElement(element, "RoleIDCode", p.role.attrib())
    if p.media:
        ET.SubElement(ET.SubElement(element, "MediaIdentifier"), "MediaType", p.media.attrib())


def _object(root: ET.Element, o: Object) -> None:
    if isinstance(o, Study):
        element = ET.SubElement(root, "ParticipantObjectIdentification", ParticipantObjectID=o.uid,
                                ParticipantObjectTypeCode="2", ParticipantObjectTypeCodeRole="3")
        ET.SubElement(element, "ParticipantObjectIDTypeCode", STUDY_UID.attrib())
        ET.SubElement(element, "ParticipantObjectName").text = o.uid  # the schema wants a name or a query
        if o.sop_classes:
            description = ET.SubElement(element, "ParticipantObjectDescription")
            for uid, count in sorted(o.sop_classes.items()):
                ET.SubElement(description, "SOPClass", UID=uid, NumberOfInstances=str(count))
    elif isinstance(o, Patient):
        element = ET.SubElement(root, "ParticipantObjectIdentification", ParticipantObjectID=o.id,
                                ParticipantObjectTypeCode="1", ParticipantObjectTypeCodeRole="1")
        ET.SubElement(element, "ParticipantObjectIDTypeCode", PATIENT_NUMBER.attrib())
        ET.SubElement(element, "ParticipantObjectName").text = o.name
    else:
        element = ET.SubElement(root, "ParticipantObjectIdentification", ParticipantObjectID=o.id,
                                ParticipantObjectTypeCode="2")
        if o.role:
            element.set("ParticipantObjectTypeCodeRole", o.role)
        ET.SubElement(element, "ParticipantObjectIDTypeCode", o.id_type.attrib())
        if o.query is None:
            ET.SubElement(element, "ParticipantObjectName").text = o.name
        else:
            ET.SubElement(element, "ParticipantObjectQuery").text = base64.b64encode(o.query.encode()).decode()
        for kind, value in o.details:  # values are base64 (A.5.1: text that may hold XML or nulls)
            ET.SubElement(element, "ParticipantObjectDetail", type=kind,
                          value=base64.b64encode(value.encode()).decode())


def studies_and_patients(studies: Iterable[Mapping[str, object]]) -> tuple[Object, ...]:
    """Study and Patient objects from ``{study_uid, patient_id, patient_name?, sop_classes?}`` records."""
    objects: list[Object] = []
    patients: dict[str, Patient] = {}
    for s in studies:
        classes = s.get("sop_classes")
        objects.append(Study(str(s["study_uid"]), {str(k): int(str(v)) for k, v in classes.items()}
                             if isinstance(classes, Mapping) else {}))
        pid = str(s.get("patient_id") or "")
        patients.setdefault(pid, Patient(pid, str(s.get("patient_name") or pid)))
    return (*objects, *patients.values())

