"""The Storage SCP (the DIGATE role): C-ECHO, C-STORE, access control.

A C-STORE is answered with success only once its instance is in the spool
(fsync'd file and directory) and indexed (DESIGN.md invariant 1). pynetdicom
streams each received data set into ``data_dir/tmp``
(``STORE_RECV_CHUNKED_DATASET``), so no instance sits in memory (invariant 4);
the handler reads the few attributes the index and the routes need with
:func:`node.dcmio.read_header` and copies the file into the spool with the File
Meta it keeps (the calling and called AE titles, for a rebuilt index), the data
set bytes unchanged and hashed on the way.

The same instance again (the SOP Instance UID and the SHA-256 of the data set
bytes of the copy the index holds, in the spool or in a job) is answered with
success and changes nothing: no file kept, no study made pending, no job.

Refusals, each with a named status (node.dicom) and a log line, leave nothing
behind (pynetdicom unlinks the temp file once the handler returns):

- no valid SOP Instance UID or Study Instance UID: ``MISSING_UID`` 0xC001 (PS3.4 B.2.3, Cxxx);
- a data set that cannot be parsed, is cut short (an element longer than what follows, Pixel Data
  shorter than its Rows, Columns and Bits Allocated need, a fragment cut) or is Deflated past the
  bounds of :func:`node.dcmio.check_complete`: ``CANNOT_PARSE`` 0xC002 (B.2.3, Cxxx), walked on disk
  before anything else reads it;
- (0008,0018) not the command's Affected SOP Instance UID: ``INSTANCE_UID_MISMATCH`` 0xC003 (B.2.3, Cxxx);
- (0008,0016) not the command's Affected SOP Class UID: ``DATASET_DOES_NOT_MATCH_SOP_CLASS`` 0xA900 (B.2.3);
- a ``reject`` route: ``REFUSED_NOT_AUTHORIZED`` 0x0124 (PS3.7 C.5.3);
- free space under ``node.min_free_mb``, or the data set cannot be written for want of space (the disk
  filled while it arrived; its temporary file is removed at once, :class:`node.netcompat.DataSetFile`):
  ``OUT_OF_RESOURCES`` 0xA700 (B.2.3);
- the spool, or the received data set, cannot be written otherwise: ``SPOOL_WRITE_FAILED`` 0xA701 (B.2.3, A7xx);
- the index cannot be written, or anything unforeseen: ``PROCESSING_FAILURE`` 0x0110 (PS3.7 C.4.2).

Associations are refused (A-ASSOCIATE-RJ, PS3.8 9.3.4) when the called AE
title is neither ours nor a route's (rejected-permanent, service-user,
reason 7) and when the calling AE title may not call from its address
(reason 3: ``node.allowed_calling_aets`` and ``node.allowed_peers``,
:mod:`node.receive.access`); each refusal is logged and audited (:mod:`node.audit`) with its reason.
So is each association that stored instances, when it closes: its studies, their patients and
instances per SOP class (``instances-received``), recorded off the C-STORE path.
The processes that run this SCP are in :mod:`node.receive.workers`. With ``mcm:`` configured, the same AE
is a Media Creation Management SCP too: its N-CREATE, N-ACTION and N-GET handlers here only bind
:mod:`node.receive.mcm`, which records the requests in the index.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from pydicom import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE, N_ACTION, N_CREATE, N_GET
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE

from node import dicom
from node.config import Config
from node.netcompat import answer_as, reject, rejected_because, set_reactor_delay, write_failure
from node.receive import access, mcm
from node.receive.spool import Spool
from node.receive.storage import (  # pynetdicom-free, shared with our own data path; the names read here too
    CALLING_AE_TITLE_NOT_RECOGNISED,
    REJECT_REASONS,
    STORE_STATUSES,
    TRANSFER_SYNTAXES,
    VERIFICATION_SYNTAXES,
    Indexer,
    Live,
    SharedIndex,
    closed,
    refused,
    storage_classes,
    store,
    supported,
)

__all__ = ["REJECT_REASONS", "STORE_STATUSES", "TRANSFER_SYNTAXES", "VERIFICATION_SYNTAXES", "evt_handlers", "make_ae",
           "reactor_delay", "storage_classes"]

logger = logging.getLogger(__name__)


def make_ae(config: Config) -> AE:
    """The AE for one receiver process.

    Sets two process-wide pynetdicom settings: received data sets go to a temp
    file (``STORE_RECV_CHUNKED_DATASET``), and the per-PDU debug handlers are
    not bound (``LOG_HANDLER_LEVEL``), which costs time on every PDU.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    node = config.node
    ae = AE(ae_title=node.ae_title)
    ae.implementation_class_uid = dicom.MEDIANODE_CLASS_UID
    ae.implementation_version_name = dicom.MEDIANODE_VERSION_NAME
    ae.maximum_pdu_size = node.pdu_limit
    ae.maximum_associations = node.max_associations
    ae.acse_timeout = node.artim_seconds
    ae.network_timeout = node.idle_seconds
    ae.require_called_aet = True  # against the title handle_requested sets per association
    for uid, syntaxes in supported(config).items():
        ae.add_supported_context(uid, list(syntaxes))
    return ae


def reactor_delay(assoc: object, seconds: float) -> None:
    """:attr:`Live.reactor_delay` once pynetdicom is loaded: its associations' (our own path's have no reactor)."""
    if isinstance(assoc, Association):
        set_reactor_delay(assoc, seconds)


# -- Event handlers ----------------------------------------------------------------------


def handle_requested(event: Event, live: Live) -> None:
    """EVT_REQUESTED: answer to any called AE title the config knows (ours or a route's), to a caller
    :func:`node.receive.access.refusal` lets in from its address.

    An unknown called title is left to fail ACSE negotiation (``require_called_aet``, :func:`make_ae`),
    whoever calls: that refusal, reason 7, says the least.
    """
    assoc = event.assoc
    rq = cast(A_ASSOCIATE, assoc.requestor.primitive)
    called = rq.called_ae_title.strip()
    if called not in live.config.called_aets:
        return
    answer_as(assoc, called)
    if why := access.refusal(live.config.node, rq.calling_ae_title.strip(), assoc.requestor.address):
        reject(assoc, *CALLING_AE_TITLE_NOT_RECOGNISED, why)


def handle_rejected(event: Event, live: Live) -> None:
    """EVT_REJECTED: one log line and one audit line per refused association, with its reason."""
    assoc = event.assoc
    rj, rq = cast(A_ASSOCIATE, assoc.acceptor.primitive), cast(A_ASSOCIATE, assoc.requestor.primitive)
    code = (int(rj.result or 0), int(rj.result_source or 0), int(rj.diagnostic or 0))
    refused(live, rq.calling_ae_title.strip(), rq.called_ae_title.strip(),
            f"{assoc.requestor.address}:{assoc.requestor.port}", code, rejected_because(event))


def handle_closed(event: Event, live: Live) -> None:
    """EVT_CONN_CLOSE: one audit line for the studies the association stored, if it stored any."""
    assoc = event.assoc
    closed(live, id(assoc), assoc.requestor.ae_title.strip(), assoc.acceptor.ae_title.strip(),
           f"{assoc.requestor.address}:{assoc.requestor.port}")


def handle_store(event: Event, spool: Spool, index: Indexer, live: Live) -> int | Dataset:
    """EVT_C_STORE: place the received file in the spool, index it, then answer success.

    A refusal is answered with its status and its reason as the Error Comment (PS3.7 C.4.2).
    """
    assoc = event.assoc
    req = cast(C_STORE, event.request)
    with live.storing(assoc):
        status, comment = store(event.dataset_path, str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID),
                                calling=assoc.requestor.ae_title.strip(), called=assoc.acceptor.ae_title.strip(),
                                spool=spool, index=index, live=live, key=id(assoc), failure=write_failure(event))
    if not comment:
        return status
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment
    return answer


# -- Media Creation Management (PS3.4 Annex S: node.receive.mcm) ------------------------

_Reply = tuple[Dataset, Dataset | None]


def _answer(answer: mcm.Answer, what: str, uid: str, calling: str) -> Dataset:
    """The status data set of a response: Status, and the Error Comment when there is one."""
    status = Dataset()
    status.Status = answer.status
    if answer.comment:
        status.ErrorComment = answer.comment.replace("\\", "/")[:64]  # LO (PS3.5 6.2)
    if answer.uid:  # N-CREATE: the UID we assigned, in the response of a warning too
        status.AffectedSOPInstanceUID = answer.uid
    log = logger.info if answer.status in (mcm.SUCCESS, mcm.ATTRIBUTE_VALUE_OUT_OF_RANGE) else logger.warning
    log("%s of media creation request %s from %s: 0x%04X %s", what, uid or "(new)", calling, answer.status,
        answer.comment)
    return status


def _requests(event: Event, shared: SharedIndex, live: Live, what: str, run: Any) -> _Reply:
    calling = event.assoc.requestor.ae_title.strip()
    settings = live.config.mcm
    try:
        if settings is None:  # turned off by a reload; the context stays until the restart
            return _answer(mcm.Answer(mcm.PROCESSING_FAILURE, "media creation is not configured (mcm)"), what, "",
                           calling), None
        answer, uid, reply = run(calling, settings)
    except Exception:
        logger.exception("%s of a media creation request from %s failed", what, calling)
        return _answer(mcm.Answer(mcm.PROCESSING_FAILURE, "unforeseen error"), what, "", calling), None
    return _answer(answer, what, uid, calling), reply


def handle_n_create(event: Event, shared: SharedIndex, live: Live) -> _Reply:
    """EVT_N_CREATE: record a media creation request; its SOP Instance UID is ours when the SCU gave none."""
    req = cast(N_CREATE, event.request)
    asked = str(req.AffectedSOPInstanceUID) if req.AffectedSOPInstanceUID else None

    def run(calling: str, settings: Any) -> tuple[mcm.Answer, str, Dataset | None]:
        answer = mcm.create(event.attribute_list, uid=asked, calling_aet=calling, settings=settings,
                            output=settings.output or live.config.burn.output, index=shared.index, lock=shared.lock)
        reply = None
        if answer.status == mcm.SUCCESS and asked is None:
            reply = Dataset()
            reply.AffectedSOPInstanceUID = answer.uid  # pynetdicom moves it into the response (PS3.7 10.1.5.1.4)
        return answer, answer.uid or asked or "", reply

    return _requests(event, shared, live, "N-CREATE", run)


def handle_n_action(event: Event, shared: SharedIndex, live: Live) -> _Reply:
    """EVT_N_ACTION: 1 Initiate Media Creation, 2 Cancel Media Creation."""
    req = cast(N_ACTION, event.request)
    uid = str(req.RequestedSOPInstanceUID)
    info = event.action_information if req.ActionInformation is not None else None

    def run(calling: str, settings: Any) -> tuple[mcm.Answer, str, Dataset | None]:
        return mcm.action(uid, int(req.ActionTypeID or 0), info, settings=settings, index=shared.index,
                          lock=shared.lock), uid, None

    return _requests(event, shared, live, f"N-ACTION {req.ActionTypeID}", run)


def handle_n_get(event: Event, shared: SharedIndex, live: Live) -> _Reply:
    """EVT_N_GET: Execution Status, its Info, the media made, the instances that failed."""
    req = cast(N_GET, event.request)
    uid = str(req.RequestedSOPInstanceUID)
    listed = req.AttributeIdentifierList
    wanted = [int(t) for t in (listed if isinstance(listed, list) else [listed] if listed is not None else [])]

    def run(calling: str, settings: Any) -> tuple[mcm.Answer, str, Dataset | None]:
        answer = mcm.get(uid, wanted, index=shared.index, lock=shared.lock)
        return answer, uid, answer.reply

    return _requests(event, shared, live, "N-GET", run)


def evt_handlers(config: Config, spool: Spool, index: SharedIndex, live: Live) -> list[Any]:
    """The handlers of one receiver process, their collaborators bound as pynetdicom's third element;
    ``config`` is the one :func:`make_ae` made the AE from (the one the process started with)."""
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, handle_requested, [live]),
        (evt.EVT_REJECTED, handle_rejected, [live]),
        (evt.EVT_C_STORE, handle_store, [spool, index, live]),
        (evt.EVT_CONN_CLOSE, handle_closed, [live]),
    ]
    if config.mcm is not None:
        handlers += [(evt.EVT_N_CREATE, handle_n_create, [index, live]),
                     (evt.EVT_N_ACTION, handle_n_action, [index, live]),
                     (evt.EVT_N_GET, handle_n_get, [index, live])]
    return handlers

