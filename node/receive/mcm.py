"""The Media Creation Management SCP (PS3.4 Annex S, SOP class 1.2.840.10008.5.1.1.33): what an N-CREATE,
N-ACTION and N-GET of a media creation request do, on pydicom data sets. :mod:`node.receive.scp` binds
them to pynetdicom's events.

This side only records and reads: the request and the instances it references (N-CREATE), its
initiation or cancellation (N-ACTION), its state (N-GET), all in the index. The service's loop
(:mod:`node.media_requests`) turns an initiated request whose instances are all in the spool into jobs,
which the builder and the outputs handle like any other.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.sequence import Sequence

from node import dicom
from node.config import MediaRequests, Output, PublisherOutput
from node.index import Index, MediaRequest
from node.profiles import PROFILES
from node.receive.sopclasses import MEDIA_CREATION_MANAGEMENT as MEDIA_CREATION_MANAGEMENT  # PS3.4 Annex S
from node.receive.spool import is_uid


# Statuses (PS3.7 Annex C; PS3.4 Annex S for the N-ACTION ones).
SUCCESS = dicom.SUCCESS
INVALID_ATTRIBUTE_VALUE = 0x0106  # PS3.7 Annex C: a value we cannot honour
PROCESSING_FAILURE = 0x0110  # PS3.7 C.4.2: the index cannot be written
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 Annex C: the SOP Instance UID of an existing request
NO_SUCH_SOP_INSTANCE = 0x0112  # no such request (never created, or forgotten after mcm.keep_hours)
ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116  # warning: a default substituted, said in the Error Comment
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_SUCH_ACTION_TYPE = 0x0123
ALREADY_INITIATED = 0xA510  # PS3.4 Annex S (N-ACTION): an Initiate Media Creation was received before
ALREADY_COMPLETED = 0xC201  # PS3.4 Annex S (N-ACTION): Cancel of a request already completed
CANNOT_INTERRUPT = 0xC202  # Cancel while a medium is being written
CANCEL_DENIED = 0xC203  # Cancel refused otherwise (failed or cancelled already)

#: Every status we answer -> (the service, its meaning, when), for the conformance statement.
STATUSES: dict[int, tuple[str, str, str]] = {
    SUCCESS: ("all", "Success", "the request is recorded, initiated, cancelled or read"),
    ATTRIBUTE_VALUE_OUT_OF_RANGE: ("N-CREATE", "Warning: Attribute Value Out of Range",
                                   "a value we cannot honour was replaced by our default (Error Comment says which)"),
    MISSING_ATTRIBUTE: ("N-CREATE", "Failure: Missing Attribute", "no Referenced SOP Sequence"),
    MISSING_ATTRIBUTE_VALUE: ("N-CREATE", "Failure: Missing Attribute Value",
                              "an empty Referenced SOP Sequence, or an item without its SOP Class or Instance UID"),
    INVALID_ATTRIBUTE_VALUE: ("N-CREATE, N-ACTION", "Failure: Invalid Attribute Value",
                              "an application profile we do not write, FOR_TEACHING / FOR_RESEARCH without "
                              "mcm.deidentify, a value outside "
                              "its enumerated values, a Number of Copies outside 1 to 99 (Error Comment says which)"),
    DUPLICATE_SOP_INSTANCE: ("N-CREATE", "Failure: Duplicate SOP Instance", "the SOP Instance UID of a request we hold"),
    NO_SUCH_SOP_INSTANCE: ("N-ACTION, N-GET", "Failure: No Such SOP Instance",
                           "no such request (or one forgotten after mcm.keep_hours)"),
    NO_SUCH_ACTION_TYPE: ("N-ACTION", "Failure: No Such Action Type", "an Action Type ID other than 1 or 2"),
    ALREADY_INITIATED: ("N-ACTION 1", "Failure: already initiated", "a second Initiate Media Creation"),
    ALREADY_COMPLETED: ("N-ACTION 2", "Failure: Media creation request already completed",
                        "Cancel after every medium was written"),
    CANNOT_INTERRUPT: ("N-ACTION 2", "Failure: Media creation request already in progress and cannot be interrupted",
                       "Cancel while a medium is built or written"),
    CANCEL_DENIED: ("N-ACTION 2", "Failure: Cancellation denied for unspecified reason",
                    "Cancel of a request that failed or was cancelled"),
    PROCESSING_FAILURE: ("all", "Failure: Processing Failure", "the index cannot be written, or an unforeseen error"),
}

INITIATE, CANCEL = 1, 2  # Action Type ID (PS3.4 Annex S)

#: Execution Status (2100,0020) -> when (PS3.4 Annex S).
EXECUTION_STATUS: dict[str, str] = {
    "IDLE": "created, not initiated",
    "PENDING": "initiated; waiting for its instances, its jobs for the builder, or its medium for a blank medium "
               "or a free device",
    "CREATING": "a medium is being built or written",
    "DONE": "every medium is written",
    "FAILURE": "it failed, or was cancelled",
}

#: Execution Status Info (2100,0030) values we give -> when (PS3.3 defined terms).
EXECUTION_STATUS_INFO: dict[str, str] = {
    "NORMAL": "IDLE, CREATING, DONE",
    "QUEUED": "PENDING: waiting for its instances or for the builder",
    "OUT_OF_SUPPLIES": "PENDING: its output (a drive, a USB volume) waits for a blank medium",
    "MCD_BUSY": "PENDING: its medium is built and waits while another job is written on the same device",
    "NO_INSTANCE": "a referenced instance was not received within mcm.wait_seconds of the Initiate",
    "INST_AP_CONFLICT": "an instance's SOP class is not the one referenced, or the items ask for different "
                        "profiles (Allow Media Splitting not YES, or one study under two)",
    "SET_OVERSIZED": "the instances exceed the medium and Allow Media Splitting is not YES",
    "INST_OVERSIZED": "a single study exceeds the medium (no study is ever split)",
    "DUPL_REF_INST": "an instance referenced twice",
    "PROC_FAILURE": "the build or the output failed (medianode jobs shows why)",
    "UNKNOWN": "cancelled (N-ACTION 2, or medianode jobs cancel)",
}


_YES_NO = ("YES", "NO")
_NON_DICOM = ("NO", "FOR_PHYSICIAN", "FOR_PATIENT", "FOR_TEACHING", "FOR_RESEARCH")
_PRIORITIES = ("HIGH", "MED", "LOW")
_CS = re.compile(r"[A-Z0-9_ ]{1,16}")
#: What a publisher writes on its label (:data:`node.media.publisher.REQUEST_LABEL_FIELDS`).
_LABEL_ATTRIBUTES = ("LabelText", "LabelStyleSelection", "BarcodeValue", "BarcodeSymbology")

#: The N-CREATE attributes we act on: keyword -> what each does (the conformance statement's table).
ATTRIBUTES: dict[str, str] = {
    "ReferencedSOPSequence": "required: Referenced SOP Class / Instance UID of each instance; an item's Requested "
                             "Media Application Profile, one we write (else 0x0106)",
    "StorageMediaFileSetID": "the File-set ID of the media (else the volume label's); not a CS of 16: warning 0x0116",
    "LabelText": "a publisher's label field label_text (mcm.output a publisher with a label_template; else "
                 "warning 0x0116); recorded and returned by N-GET either way",
    "LabelUsingInformationExtractedFromInstances": "YES / NO; the label record is made from the instances either way",
    "LabelStyleSelection": "a publisher's label field label_style (else warning 0x0116)",
    "BarcodeValue": "a publisher's label field barcode_value (else warning 0x0116)",
    "BarcodeSymbology": "a publisher's label field barcode_symbology (else warning 0x0116)",
    "MediaDisposition": "recorded and shown",
    "PreserveCompositeInstancesAfterMediaCreation": "YES keeps the instances in the spool mcm.keep_hours after the "
                                                    "request ends; NO lets the spool's retention take them",
    "IncludeNonDICOMObjects": "NO: DICOM only; FOR_PHYSICIAN / FOR_PATIENT: IHE PDI media with web content; "
                              "FOR_TEACHING / FOR_RESEARCH: with mcm.deidentify, IHE PDI media de-identified (the "
                              "PS3.15 Basic Profile, as a route's deidentify), else 0x0106",
    "IncludeDisplayApplication": "YES copies mcm.viewer (none configured: warning 0x0116)",
    "AllowLossyCompression": "YES takes effect only with mcm.allow_lossy (else warning 0x0116)",
    "AllowMediaSplitting": "YES lets the request span several media, split only between studies",
}


@dataclass(frozen=True)
class Answer:
    """A response: its status, the Error Comment (LO, at most 64 characters), the data set it carries."""

    status: int
    comment: str = ""
    reply: Dataset | None = None
    uid: str = ""


class Refused(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status, self.comment = status, comment


def _cs(ds: Dataset, keyword: str, allowed: tuple[str, ...], default: str) -> str:
    value = str(ds.get(keyword, "") or "").strip()
    if not value:
        return default
    if value not in allowed:
        raise Refused(INVALID_ATTRIBUTE_VALUE, f"{keyword} {value[:16]!r} is not {'/'.join(allowed)}"[:64])
    return value


def _references(ds: Dataset) -> list[tuple[str, str, str]]:
    if "ReferencedSOPSequence" not in ds:
        raise Refused(MISSING_ATTRIBUTE, "Referenced SOP Sequence (0008,1199) is missing")
    items = ds.ReferencedSOPSequence or []
    if not items:
        raise Refused(MISSING_ATTRIBUTE_VALUE, "Referenced SOP Sequence (0008,1199) is empty")
    refs = []
    for n, item in enumerate(items, 1):
        sop_class, sop_instance = (str(item.get(k, "") or "") for k in ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"))
        if not sop_class or not sop_instance:
            raise Refused(MISSING_ATTRIBUTE_VALUE, f"Referenced SOP Sequence item {n}: no SOP Class/Instance UID")
        if not is_uid(sop_class) or not is_uid(sop_instance):
            raise Refused(INVALID_ATTRIBUTE_VALUE, f"Referenced SOP Sequence item {n}: not a UID")
        profile = str(item.get("RequestedMediaApplicationProfile", "") or "").strip().upper()
        if profile and profile not in PROFILES:
            raise Refused(INVALID_ATTRIBUTE_VALUE, f"profile {profile[:20]!r} (item {n}) is not one we write")
        refs.append((sop_instance, sop_class, profile))
    return refs


def _prints_labels(output: Output) -> bool:
    """Whether ``output`` prints a label with fields: a publisher with a label design."""
    return isinstance(output, PublisherOutput) and bool(output.label_template)


def create(ds: Dataset, *, uid: str | None, calling_aet: str, settings: MediaRequests, output: Output,
           index: Index, lock: threading.Lock) -> Answer:
    """N-CREATE: check the request's attributes, record it (state IDLE) with a new SOP Instance UID when the
    SCU gave none. Nothing is recorded when it is refused."""
    try:
        if uid is not None and not is_uid(uid):
            raise Refused(INVALID_ATTRIBUTE_VALUE, "the Affected SOP Instance UID is not a UID")
        refs = _references(ds)
        warnings: list[str] = []
        non_dicom = _cs(ds, "IncludeNonDICOMObjects", _NON_DICOM, "")
        deidentify = non_dicom in ("FOR_TEACHING", "FOR_RESEARCH")
        if deidentify and not settings.deidentify:
            raise Refused(INVALID_ATTRIBUTE_VALUE, f"{non_dicom} needs de-identification (mcm.deidentify)")
        profiles = {p or settings.profile for _, _, p in refs}
        if non_dicom.startswith("FOR_") and not all(PROFILES[p].pdi for p in profiles):
            warnings.append("no PDI media on this profile: DICOM only")
        display = _cs(ds, "IncludeDisplayApplication", _YES_NO, "NO")
        if display == "YES" and settings.viewer is None:
            warnings.append("no viewer configured (mcm.viewer)")
        lossy = _cs(ds, "AllowLossyCompression", _YES_NO, "NO")
        if lossy == "YES" and not settings.allow_lossy:
            warnings.append("lossy compression not allowed here")
        if not _prints_labels(output) and any(ds.get(k) for k in _LABEL_ATTRIBUTES):
            warnings.append("label text, style, barcode: no label printed here")
        fileset_id = str(ds.get("StorageMediaFileSetID", "") or "").strip()
        if fileset_id and not _CS.fullmatch(fileset_id):
            warnings.append("File-set ID not a CS of 16: ours used")
            fileset_id = ""
        request: dict[str, Any] = {
            "fileset_id": fileset_id,
            "label_text": str(ds.get("LabelText", "") or ""),
            "label_from_instances": _cs(ds, "LabelUsingInformationExtractedFromInstances", _YES_NO, "YES"),
            "label_style": str(ds.get("LabelStyleSelection", "") or ""),
            "barcode_value": str(ds.get("BarcodeValue", "") or ""),
            "barcode_symbology": str(ds.get("BarcodeSymbology", "") or ""),
            "media_disposition": str(ds.get("MediaDisposition", "") or ""),
            "non_dicom": non_dicom,
            "deidentify": deidentify,
            "display_application": display == "YES" and settings.viewer is not None,
            "lossy": lossy == "YES" and settings.allow_lossy,
            "splitting": _cs(ds, "AllowMediaSplitting", _YES_NO, "NO") == "YES",
        }
        preserve = _cs(ds, "PreserveCompositeInstancesAfterMediaCreation", _YES_NO, "YES") == "YES"
    except Refused as r:
        return Answer(r.status, r.comment)
    uid = uid or dicom.new_uid()
    with lock:
        added = index.add_media_request(uid, calling_aet=calling_aet, request=request, preserve=preserve,
                                        refs=refs, now=time.time())
    if not added:
        return Answer(DUPLICATE_SOP_INSTANCE, "a media creation request with this UID exists", uid=uid)
    if warnings:
        more = f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""
        return Answer(ATTRIBUTE_VALUE_OUT_OF_RANGE, (warnings[0] + more)[:64], uid=uid)
    return Answer(SUCCESS, uid=uid)


def action(uid: str, action_type: int, ds: Dataset | None, *, settings: MediaRequests, index: Index,
           lock: threading.Lock) -> Answer:
    """N-ACTION 1 (Initiate Media Creation: Number of Copies, Request Priority) or 2 (Cancel)."""
    ds = ds if ds is not None else Dataset()
    now = time.time()
    if action_type == INITIATE:
        try:
            given = ds.get("NumberOfCopies")
            copies = settings.copies if given is None or str(given).strip() == "" else int(str(given))
            if not 1 <= copies <= 99:
                raise ValueError
        except ValueError:
            return Answer(INVALID_ATTRIBUTE_VALUE, "Number of Copies (2000,0010) is not 1 to 99")
        try:
            priority = _cs(ds, "RequestPriority", _PRIORITIES, "MED")
        except Refused as r:
            return Answer(r.status, r.comment)
        with lock:
            before = index.initiate_media_request(uid, copies=copies, priority=priority, now=now)
        if before is None:
            return Answer(NO_SUCH_SOP_INSTANCE, "no such media creation request")
        return Answer(SUCCESS) if before == "idle" else Answer(ALREADY_INITIATED, "initiated before")
    if action_type == CANCEL:
        with lock:
            outcome = index.cancel_media_request(uid, now=now)
        status = {None: NO_SUCH_SOP_INSTANCE, "cancelled": SUCCESS, "completed": ALREADY_COMPLETED,
                  "writing": CANNOT_INTERRUPT, "refused": CANCEL_DENIED}[outcome]
        return Answer(status, "" if status == SUCCESS else STATUSES[status][2][:64])
    return Answer(NO_SUCH_ACTION_TYPE, f"Action Type ID {action_type} is not 1 or 2")


def execution(req: MediaRequest) -> tuple[str, str]:
    """(Execution Status, Execution Status Info) of a request, from its state and its jobs' states."""
    if req.state == "idle":
        return "IDLE", "NORMAL"
    if req.state == "done":
        return "DONE", "NORMAL"
    if req.state == "failed":
        return "FAILURE", req.info or "PROC_FAILURE"
    if req.state == "cancelled":
        return "FAILURE", "UNKNOWN"
    states = {j[1] for j in req.jobs}
    if not states or states == {"pending"}:
        return "PENDING", "QUEUED"
    held_up = {j[5] for j in req.jobs}
    if "media" in held_up:
        return "PENDING", "OUT_OF_SUPPLIES"
    if "busy" in held_up and not states & {"building", "delivering"}:
        return "PENDING", "MCD_BUSY"
    if "failed" in states:
        return "FAILURE", "PROC_FAILURE"
    if "cancelled" in states:
        return "FAILURE", "UNKNOWN"
    return ("DONE", "NORMAL") if states == {"done"} else ("CREATING", "NORMAL")


def get(uid: str, identifiers: list[int], *, index: Index, lock: threading.Lock) -> Answer:
    """N-GET: the request's state, its media and its failures; only ``identifiers`` when the SCU lists some."""
    with lock:
        req = index.media_request(uid)
    if req is None:
        return Answer(NO_SUCH_SOP_INSTANCE, "no such media creation request")
    return Answer(SUCCESS, reply=describe(req, identifiers))


def describe(req: MediaRequest, identifiers: Iterable[int] = ()) -> Dataset:
    """The N-GET reply of a request (PS3.4 Annex S)."""
    status, info = execution(req)
    ds = Dataset()
    ds.ExecutionStatus = status
    ds.ExecutionStatusInfo = info
    made = [j for j in req.jobs if j[1] == "done" and j[3]]
    ds.TotalNumberOfPiecesOfMediaCreated = len(made) * (req.copies or 1)
    media = Sequence()
    for _, _, fileset_id, fileset_uid, _, _ in made:
        item = Dataset()
        item.StorageMediaFileSetID = fileset_id or ""
        item.StorageMediaFileSetUID = fileset_uid
        media.append(item)
    ds.ReferencedStorageMediaSequence = media
    failed = Sequence()
    for sop_instance, sop_class, reason in req.failed:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        item.FailureReason = reason
        failed.append(item)
    if failed:
        ds.FailedSOPSequence = failed
    ds.NumberOfCopies = req.copies or ""
    ds.RequestPriority = req.priority or ""
    ds.LabelText = req.request.get("label_text", "")
    ds.MediaDisposition = req.request.get("media_disposition", "")
    ds.StorageMediaFileSetID = req.request.get("fileset_id", "")
    wanted = set(identifiers)
    if wanted:
        for tag in [e.tag for e in ds if e.tag not in wanted]:
            del ds[tag]
    return ds

