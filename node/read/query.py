"""The C-FIND SCU of reconciliation: the worklist's scheduled imports and the archive's patients and studies.

- **Modality Worklist** (PS3.4 K.6, Modality Worklist Information Model - FIND): the items whose
  patient has the medium's birth date (or, without one, whose family name starts with its first
  letter), within ``days`` of today, scheduled for our AE title or a modality when ``scheduled_only``.
- **The archive** (PS3.4 C.6): Study Root at STUDY level (or Patient Root at PATIENT level), the
  same keys; and, Study Root only, whether it holds a Study Instance UID already.

The name is a return key, never a matching key: DCMTK's SCPs match it literally and with case, so it
is compared here (:mod:`node.read.match`). Every query asks for Specific Character Set and the
answers are decoded by theirs. One association per query; any failure (no connection, a rejection,
a timeout, a failure status) is a :class:`QueryError` with a one-line reason, never a partial answer.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from node.config import ClientTLS, PatientQuery, Worklist
from node.dicom import EXPLICIT_VR_LE, IMPLICIT_VR_LE, MEDIANODE_CLASS_UID, MEDIANODE_VERSION_NAME
from node.errors import one_line
from node.netcompat import collect_failed, connection_errors
from node.read.match import Candidate, Demographics
from node.tls import client_context, failure

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
ACSE_TIMEOUT = 30.0
DIMSE_TIMEOUT = 30.0
#: The most answers one query takes: past it the query was too wide to decide anything on.
MAX_ANSWERS = 500
#: C-FIND statuses (PS3.4 C.4.1.1.4, K.4.1.1.4): pending (with or without optional keys), success.
_PENDING = (0xFF00, 0xFF01)
_SUCCESS = 0x0000
#: The transfer syntaxes proposed for each query model: Explicit, then Implicit VR Little Endian (PS3.5 A.2, A.1).
SYNTAXES = (EXPLICIT_VR_LE, IMPLICIT_VR_LE)
#: The character set we ask to be answered in (the SCP may answer in its own, which is then decoded).
_UTF8 = "ISO_IR 192"

class QueryError(Exception):
    """A source could not be asked (its reason is one line, for the report and the hold)."""


@dataclass(frozen=True)
class Asked:
    """One query as the audit trail records it: where, which model, with what keys, how many answers."""

    where: str
    model: str
    keys: dict[str, str]
    answers: int


def worklist_items(source: Worklist, medium: Demographics, *, calling_aet: str, scheduled_only: bool,
                   today: date | None = None) -> tuple[list[Candidate], Asked]:
    """The worklist items that may be the medium's patient's (their names are compared by the caller)."""
    today = today or date.today()
    first, last = today - timedelta(days=source.days), today + timedelta(days=source.days)
    query = _patient_keys(medium)
    for keyword in ("AccessionNumber", "RequestedProcedureID", "RequestedProcedureDescription", "StudyInstanceUID"):
        setattr(query, keyword, "")
    query.ReferencedStudySequence = []
    step = Dataset()
    step.ScheduledStationAETitle = calling_aet if scheduled_only and not source.modality else ""
    step.ScheduledProcedureStepStartDate = f"{first:%Y%m%d}-{last:%Y%m%d}"
    step.Modality = source.modality if scheduled_only and source.modality else ""
    step.ScheduledProcedureStepID = ""
    step.ScheduledProcedureStepDescription = ""
    query.ScheduledProcedureStepSequence = [step]
    answers = _find(source, calling_aet, ModalityWorklistInformationFind, query)
    found = []
    for ds in answers:
        steps = ds.get("ScheduledProcedureStepSequence") or [Dataset()]
        refs = tuple((str(r.get("ReferencedSOPClassUID", "")), str(r.get("ReferencedSOPInstanceUID", "")))
                     for r in ds.get("ReferencedStudySequence") or [] if r.get("ReferencedSOPInstanceUID"))
        found.append(Candidate("worklist", *_patient(ds), accession=_text(ds, "AccessionNumber"),
                               requested_procedure_id=_text(ds, "RequestedProcedureID"),
                               requested_procedure_description=_text(ds, "RequestedProcedureDescription"),
                               study_uid=_text(ds, "StudyInstanceUID"),
                               step_id=_text(steps[0], "ScheduledProcedureStepID"),
                               step_description=_text(steps[0], "ScheduledProcedureStepDescription"),
                               referenced_studies=refs))
    return found, _asked(source, "MWL", query, len(found))


def archive_patients(source: PatientQuery, medium: Demographics, *, calling_aet: str) -> tuple[list[Candidate], Asked]:
    """The archive's patients who may be the medium's patient, one candidate per Patient ID and issuer."""
    query = _patient_keys(medium)
    if source.model == "study":
        query.QueryRetrieveLevel, model, name = "STUDY", StudyRootQueryRetrieveInformationModelFind, "Study Root"
        query.StudyInstanceUID = ""
    else:
        query.QueryRetrieveLevel, model, name = "PATIENT", PatientRootQueryRetrieveInformationModelFind, "Patient Root"
    found = {c.key: c for c in (Candidate("patients", *_patient(ds)) for ds in _find(source, calling_aet, model, query))
             if c.patient_id}
    return list(found.values()), _asked(source, name, query, len(found))


def archived_studies(source: PatientQuery, study_uids: Iterable[str], *, calling_aet: str) -> tuple[set[str], list[Asked]]:
    """Which of ``study_uids`` the archive holds already (Study Root, one query per study)."""
    held, asked = set(), []
    for uid in sorted(set(study_uids)):
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = uid
        answers = _find(source, calling_aet, StudyRootQueryRetrieveInformationModelFind, query)
        if any(_text(ds, "StudyInstanceUID") == uid for ds in answers):
            held.add(uid)
        asked.append(_asked(source, "Study Root", query, len(answers)))
    return held, asked


def _patient_keys(medium: Demographics) -> Dataset:
    """The patient's keys: Birth Date to match on when known, else the family name's first letter as a
    wildcard (upper case: names are mostly kept so); the others return keys."""
    query = Dataset()
    query.SpecificCharacterSet = _UTF8
    family = medium.name.split("=")[0].split("^")[0].strip()
    query.PatientName = f"{family[0].upper()}*" if not medium.birth_date.strip() and family[:1].isalpha() else ""
    query.PatientID = ""
    query.IssuerOfPatientID = ""
    query.PatientBirthDate = medium.birth_date.strip()
    query.PatientSex = ""
    return query


def _patient(ds: Dataset) -> tuple[str, str, str, str, str]:
    return (_text(ds, "PatientID"), _text(ds, "IssuerOfPatientID"), _text(ds, "PatientName"),
            _text(ds, "PatientBirthDate"), _text(ds, "PatientSex"))


def _text(ds: Dataset, keyword: str) -> str:
    """An attribute's value as text, decoded by the data set's Specific Character Set; "" when absent."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _asked(source: Worklist | PatientQuery, model: str, query: Dataset, answers: int) -> Asked:
    keys = {e.keyword: str(e.value) for e in query if e.VR != "SQ" and e.value not in ("", None)
            and e.keyword != "SpecificCharacterSet"}
    return Asked(f"{source.ae_title}@{source.host}:{source.port}", model, keys, answers)


def _find(source: Worklist | PatientQuery, calling_aet: str, model: str, query: Dataset) -> list[Dataset]:
    """Every answer of one C-FIND, decoded; :class:`QueryError` for anything but a complete answer."""
    where = f"{source.ae_title}@{source.host}:{source.port}"
    ae = AE(ae_title=calling_aet)
    ae.implementation_class_uid = MEDIANODE_CLASS_UID
    ae.implementation_version_name = MEDIANODE_VERSION_NAME
    ae.connection_timeout, ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = (
        CONNECT_TIMEOUT, ACSE_TIMEOUT, DIMSE_TIMEOUT, DIMSE_TIMEOUT)
    ae.add_requested_context(model, list(SYNTAXES))
    try:
        tls = _tls(source.tls, source.host)
    except OSError as exc:
        raise QueryError(f"TLS with {where}: cannot load our TLS files: {failure(exc)}") from None
    with connection_errors() as errors, warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # pynetdicom drops the socket of a failed connect()
        assoc = ae.associate(source.host, source.port, ae_title=source.ae_title, tls_args=tls)
    if not assoc.is_established:
        collect_failed(assoc)
        if errors:
            raise QueryError(f"cannot connect to {where}: {errors[-1].reason}")
        if assoc.is_rejected:
            rsp = assoc.acceptor.primitive
            detail = f"{rsp.result_str}, {rsp.source_str}: {rsp.reason_str}" if rsp is not None else "rejected"
            raise QueryError(f"{where} rejected the association ({detail})")
        raise QueryError(f"no association with {where} (aborted, or no answer within {ACSE_TIMEOUT:.0f} s)")
    answers: list[Dataset] = []
    try:
        if not assoc.accepted_contexts:
            raise QueryError(f"{where} does not offer the query ({getattr(model, 'name', model)})")
        with warnings.catch_warnings(record=True) as caught:  # a hostile value is a note in the log, not a stop
            warnings.simplefilter("always")
            code = _collect(assoc, model, query, answers, where)
        for w in caught:
            logger.info("query of %s: pydicom: %s", where, w.message)
        if code == -1:
            raise QueryError(f"{where} did not answer the query (timeout or aborted)")
        if code != _SUCCESS:
            raise QueryError(f"{where} failed the query with status 0x{code:04X}")
        return answers
    except (ValueError, RuntimeError, AttributeError) as exc:  # pynetdicom refuses what it cannot send
        raise QueryError(f"query of {where} failed: {one_line(exc)}") from None
    finally:
        if assoc.is_established:
            assoc.release()


def _collect(assoc: Any, model: Any, query: Dataset, answers: list[Dataset], where: str) -> int:
    """Send the C-FIND and gather its pending answers; return the final status (-1: none came)."""
    for status, identifier in assoc.send_c_find(query, model):
        code = int(getattr(status, "Status", -1)) if status else -1
        if code not in _PENDING:
            return code
        if identifier is not None:
            if len(answers) >= MAX_ANSWERS:
                assoc.send_c_cancel(1, query_model=model)  # PS3.7 9.3.2.3: cancel the request we sent
                raise QueryError(f"{where} answered more than {MAX_ANSWERS} matches: too wide to decide on")
            answers.append(identifier)
    return -1


def _tls(tls: ClientTLS | None, host: str) -> tuple[Any, str] | None:
    return None if tls is None else (client_context(tls.ca, tls.certificate, tls.key, host=host), host)
