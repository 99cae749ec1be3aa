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

import errno
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, cast

from pydicom import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE, N_ACTION, N_CREATE, N_GET
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node import audit, dcmio, dicom, routing
from node.config import TLS, Config
from node.index import Index, Received
from node.netcompat import answer_as, reject, rejected_because, set_reactor_delay, write_failure
from node.receive import access, mcm
from node.receive.instance import ReceivedInstance, UnreadableDataSet, read_instance, routes_digest
from node.receive.spool import Spool, is_uid
from node.tls import server_context

logger = logging.getLogger(__name__)

#: What we accept each storage class in: the seed's Table 6, plus Deflated, Explicit VR
#: Big Endian (retired, still sent by old modalities) and JPEG-LS (PS3.5 Annex A).
TRANSFER_SYNTAXES: tuple[str, ...] = (
    dicom.EXPLICIT_VR_LE,
    dicom.IMPLICIT_VR_LE,
    dicom.DEFLATED_LE,
    dicom.EXPLICIT_VR_BE,
    dicom.JPEG_BASELINE,
    dicom.JPEG_EXTENDED,
    dicom.JPEG_LOSSLESS_P14,
    dicom.JPEG_LOSSLESS_SV1,
    dicom.JPEG_LS_LOSSLESS,
    dicom.JPEG_LS_NEAR_LOSSLESS,
    dicom.J2K_LOSSLESS,
    dicom.J2K,
    dicom.RLE_LOSSLESS,
)

#: What we accept C-ECHO (PS3.4 Annex A) in.
VERIFICATION_SYNTAXES: tuple[str, ...] = (dicom.IMPLICIT_VR_LE, dicom.EXPLICIT_VR_LE, dicom.EXPLICIT_VR_BE)

#: A-ASSOCIATE-RJ rejected-permanent, service-user, calling AE title not recognised (PS3.8 9.3.4).
CALLING_AE_TITLE_NOT_RECOGNISED = (1, 1, 3)
#: A-ASSOCIATE-RJ (result, source, diagnostic) -> words for the log and the audit (PS3.8 9.3.4).
REJECT_REASONS = {
    CALLING_AE_TITLE_NOT_RECOGNISED: "calling AE title not recognised",
    (1, 1, 7): "called AE title not recognised",
    (2, 3, 2): "local limit exceeded (node.max_associations)",
    (2, 2, 1): "no reason given (user identity)",
}

#: Every status a C-STORE is answered with (:func:`handle_store`) -> (its meaning in PS3.4 B.2.3 or
#: PS3.7 C, when we answer it). Only SUCCESS stores; every other status leaves nothing behind.
STORE_STATUSES: dict[int, tuple[str, str]] = {
    dicom.SUCCESS: ("Success", "the instance is in the spool (fsync'd file and folder) and indexed"),
    dicom.REFUSED_NOT_AUTHORIZED: ("Refused: Not Authorized (PS3.7 C.5.3)", "a reject route matched the instance"),
    dicom.OUT_OF_RESOURCES: ("Refused: Out of Resources", "free space in node.data_dir is under node.min_free_mb, "
                             "or the disk filled while the data set arrived"),
    dicom.SPOOL_WRITE_FAILED: ("Refused: Out of Resources", "the spool, or the arriving data set, cannot be written"),
    dicom.DATASET_DOES_NOT_MATCH_SOP_CLASS: ("Error: Data Set does not match SOP Class",
                                             "(0008,0016) is not the command's Affected SOP Class UID"),
    dicom.MISSING_UID: ("Error: Cannot understand", "no valid SOP Instance UID or Study Instance UID"),
    dicom.CANNOT_PARSE: ("Error: Cannot understand", "the data set cannot be parsed, is cut short, or inflates "
                         "past the bounds (README, Security)"),
    dicom.INSTANCE_UID_MISMATCH: ("Error: Cannot understand",
                                  "(0008,0018) is not the command's Affected SOP Instance UID"),
    dicom.PROCESSING_FAILURE: ("Failure: Processing failure (PS3.7 C.4.2)",
                               "the index cannot be written, or an unforeseen error"),
}


def storage_classes(config: Config) -> list[str]:
    """Every storage SOP class we accept: pynetdicom's, the retired ones, the configured private ones.

    ``AllStoragePresentationContexts`` lacks the retired classes the seed's Table 5
    still lists (NM .5, US .6, XA bi-plane .12.3), which the 120-context
    ``StoragePresentationContexts`` keeps; a supported context list has no
    128-context cap (that limit is on what a requestor proposes).
    """
    known = {cx.abstract_syntax for cx in (*AllStoragePresentationContexts, *StoragePresentationContexts)}
    return sorted({str(uid) for uid in known} | set(config.node.extra_sop_classes))


def own_path_classes(config: Config) -> frozenset[str]:
    """The SOP classes our own data path serves (:mod:`node.receive.storer`): storage, and Verification."""
    return frozenset(storage_classes(config)) | {str(Verification)}


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
    ae.add_supported_context(Verification, list(VERIFICATION_SYNTAXES))
    for uid in storage_classes(config):
        ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
    if config.mcm is not None:
        ae.add_supported_context(mcm.MEDIA_CREATION_MANAGEMENT, list(VERIFICATION_SYNTAXES))
    return ae


def ssl_context(tls: TLS) -> ssl.SSLContext:
    """Server TLS (PS3.15 B.9): our certificate; client certificates required when a CA is set."""
    return server_context(tls.certificate, tls.key, tls.ca)


# -- State shared by the handlers of one process ------------------------------------


class Indexer(Protocol):
    def holds(self, sop_instance_uid: str, digest: str) -> bool: ...

    def add_instance(self, r: Received) -> bool: ...

    def resent(self, study_uid: str, at: float) -> None: ...


class SharedIndex:
    """One process's :class:`Index` connection, shared by its association threads.

    A sqlite3 connection cannot interleave two threads' transactions, so writes take a lock.
    """

    def __init__(self, index: Index) -> None:
        self.index = index
        self.lock = threading.Lock()

    def holds(self, sop_instance_uid: str, digest: str) -> bool:
        with self.lock:
            return self.index.holds(sop_instance_uid, digest)

    def add_instance(self, r: Received) -> bool:
        with self.lock:
            return self.index.add_instance(r)

    def resent(self, study_uid: str, at: float) -> None:
        with self.lock:
            self.index.resent(study_uid, at)


#: pynetdicom's DUL thread sleeps 1 ms whenever a loop of its reactor found nothing to do
#: (:func:`node.netcompat.set_reactor_delay`), so each C-STORE waits for it twice: for our response to leave and
#: for the next request to be noticed. While a process serves one storing association, that
#: latency is what bounds it, and a shorter delay gains ~10 % instances/s; with several, CPU
#: is (the GIL), and the shorter delay's extra wake-ups would cost more than they gain. An
#: association idle for a second goes back to the default either way.
FAST_LOOP_S = 0.0002
IDLE_LOOP_S = 0.001


class Live:
    """What the handlers of one receiver process share: the running config (replaced on
    SIGHUP), the C-STOREs being handled (so that a drain waits for them), when each
    association last stored, and the studies this process has logged."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._cond = threading.Condition()
        self._storing: dict[int, int] = {}
        self._active: dict[int, tuple[object, float]] = {}  # association by id: last C-STORE's time
        self._studies: OrderedDict[str, None] = OrderedDict()
        self._received: dict[int, dict[str, dict[str, Any]]] = {}  # by association: study UID -> record

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """A new configuration (SIGHUP), and the digest of its routes each spooled file records."""
        self._config = config
        self.routes_digest = routes_digest(config.routes)

    @contextmanager
    def storing(self, assoc: object) -> Iterator[None]:
        key = id(assoc)
        with self._cond:
            known = key in self._active
            self._active[key] = (assoc, time.monotonic())
            if not known:
                self._pace()
            self._storing[key] = self._storing.get(key, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                left = self._storing.pop(key) - 1
                if left:
                    self._storing[key] = left
                self._cond.notify_all()

    def is_storing(self, assoc: object) -> bool:
        with self._cond:
            return id(assoc) in self._storing

    def slow_down_idle(self, *, idle_s: float = 1.0) -> None:
        """Forget associations that have not stored for ``idle_s`` (default reactor delay again)."""
        now = time.monotonic()
        with self._cond:
            idle = [k for k, (a, last) in self._active.items() if now - last > idle_s and k not in self._storing]
            for key in idle:
                if isinstance(assoc := self._active.pop(key)[0], Association):
                    set_reactor_delay(assoc, IDLE_LOOP_S)
            if idle:
                self._pace()

    def _pace(self) -> None:
        """The short reactor delay for a lone storing association, the default for several (pynetdicom's
        associations: those on our own data path have no reactor)."""
        delay = FAST_LOOP_S if len(self._active) == 1 else IDLE_LOOP_S
        for assoc, _ in self._active.values():
            if isinstance(assoc, Association):
                set_reactor_delay(assoc, delay)

    def wait(self, timeout: float) -> None:
        """Wait until a C-STORE handler finishes, or ``timeout`` seconds."""
        with self._cond:
            self._cond.wait(timeout)

    def received(self, key: int, inst: ReceivedInstance) -> None:
        """Count a stored instance for the audit of its association (``key``: the association's id)."""
        with self._cond:
            study = self._received.setdefault(key, {}).setdefault(inst.study_uid, {
                "study_uid": inst.study_uid, "patient_id": inst.patient_id, "patient_name": inst.patient_name,
                "sop_classes": {}})
            study["sop_classes"][inst.sop_class_uid] = study["sop_classes"].get(inst.sop_class_uid, 0) + 1

    def transferred(self, key: int) -> list[dict[str, Any]]:
        """The studies an association stored, forgotten here."""
        with self._cond:
            return list(self._received.pop(key, {}).values())

    def first_time(self, study_uid: str) -> bool:
        """True the first time this process sees a study (for one log line per study)."""
        with self._cond:
            if study_uid in self._studies:
                self._studies.move_to_end(study_uid)
                return False
            self._studies[study_uid] = None
            if len(self._studies) > 4096:
                self._studies.popitem(last=False)
            return True


# -- Event handlers ----------------------------------------------------------------------


#: A write refused for want of space (0xA700, Out of Resources); any other is 0xA701.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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


def refused(live: Live, calling: str, called: str, peer: str, code: tuple[int, int, int], reason: str | None) -> None:
    """Log and audit a refused association (A-ASSOCIATE-RJ ``code``), whichever data path refused it."""
    reason = reason or REJECT_REASONS.get(code, f"result {code[0]}, source {code[1]}, reason {code[2]}")
    logger.warning("Refused association from %s (%s) to %s: %s", calling, peer, called, reason)
    _audit(live, "association-refused", calling_aet=calling, called_aet=called, peer=peer, reason=reason)


def handle_closed(event: Event, live: Live) -> None:
    """EVT_CONN_CLOSE: one audit line for the studies the association stored, if it stored any."""
    assoc = event.assoc
    closed(live, id(assoc), assoc.requestor.ae_title.strip(), assoc.acceptor.ae_title.strip(),
           f"{assoc.requestor.address}:{assoc.requestor.port}")


def closed(live: Live, key: int, calling: str, called: str, peer: str) -> None:
    """Audit the studies an association (``key``) stored, if it stored any, when it closes."""
    studies = live.transferred(key)
    if studies:
        _audit(live, "instances-received", calling_aet=calling, called_aet=called, peer=peer,
               studies=studies, instances=sum(n for s in studies for n in s["sop_classes"].values()))


def _audit(live: Live, event: str, **fields: object) -> None:
    try:
        audit.append(live.config, event, **fields)
    except OSError as exc:
        logger.error("Cannot write the audit log in %s: %s", live.config.node.data_dir, exc)


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


def store(path: Path, sop_class: str, sop_instance: str, *, calling: str, called: str, spool: Spool,
          index: Indexer, live: Live, key: int, failure: OSError | None = None,
          digest: str | None = None) -> tuple[int, str]:
    """Keep one received data set: its status and Error Comment ("" when there is none).

    ``path`` is a temp file holding the data set behind a File Meta: pynetdicom's, copied behind the
    File Meta the spool keeps; or, with ``digest`` (the SHA-256 of its data set bytes), already written
    with it (:mod:`node.receive.storer`), and then renamed into the spool or removed. ``failure``: why
    the data set could not be written as it arrived.
    """
    try:
        if failure:
            raise Refused(dicom.OUT_OF_RESOURCES if failure.errno in _FULL else dicom.SPOOL_WRITE_FAILED,
                          f"{failure.strerror or failure}: the data set cannot be written in {spool.tmp}")
        return _store(path, sop_class, sop_instance, calling=calling, called=called, spool=spool, index=index,
                      live=live, key=key, digest=digest), ""
    except Refused as r:
        logger.warning("Refused C-STORE from %s to %s of %s: 0x%04X %s", calling, called, sop_instance, r.status,
                       r.reason)
        return r.status, r.reason.replace("\\", "/")[:64]  # LO (PS3.5 6.2)
    except Exception:
        logger.exception("C-STORE from %s to %s of %s failed", calling, called, sop_instance)
        return dicom.PROCESSING_FAILURE, ""
    finally:
        if digest is not None:
            path.unlink(missing_ok=True)  # placed (renamed away), or not news, or refused


def _store(path: Path, sop_class: str, sop_instance: str, *, calling: str, called: str,
           spool: Spool, index: Indexer, live: Live, key: int, digest: str | None) -> int:
    config = live.config
    if reason := dcmio.check_complete(path):
        raise Refused(dicom.CANNOT_PARSE, f"the data set is not what it claims: {reason}")
    try:
        inst = read_instance(path)
    except UnreadableDataSet as exc:
        raise Refused(dicom.CANNOT_PARSE, f"cannot parse the data set: {exc}") from None
    for label, uid in (("SOP Instance UID", inst.sop_instance_uid), ("Study Instance UID", inst.study_uid)):
        if not is_uid(uid):
            raise Refused(dicom.MISSING_UID, f"{label} is missing or not a UID: {uid[:70]!r}")
    if inst.sop_class_uid != sop_class:
        raise Refused(dicom.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                      f"SOP Class UID {inst.sop_class_uid!r} in the data set, {sop_class} in the request")
    if inst.sop_instance_uid != sop_instance:
        raise Refused(dicom.INSTANCE_UID_MISMATCH, f"SOP Instance UID {inst.sop_instance_uid} in the data set")
    refusing, routes = routing.record(config.routes, called_aet=called, calling_aet=calling,
                                      modality=inst.modality, sop_class=inst.sop_class_uid)
    if refusing is not None:
        raise Refused(dicom.REFUSED_NOT_AUTHORIZED, f"study {inst.study_uid}: rejected by the route at {refusing.where}")
    floor, free = config.node.min_free_mb << 20, spool.free_bytes()
    if free < floor:
        raise Refused(dicom.OUT_OF_RESOURCES, f"study {inst.study_uid}: {free >> 20} MB free in "
                      f"{config.node.data_dir}, under node.min_free_mb {config.node.min_free_mb}")
    if digest is None:
        head = inst.spool_head(calling_aet=calling, called_aet=called, routes=live.routes_digest)
        try:
            staged, digest = spool.stage(path, head=head, offset=inst.dataset_offset)
        except OSError as exc:
            raise Refused(dicom.SPOOL_WRITE_FAILED, f"study {inst.study_uid}: cannot write the spool: {exc}") from None
    else:
        staged = path
    try:
        if index.holds(inst.sop_instance_uid, digest):
            return _again(inst, calling, called, index)
        try:
            final, size = spool.place(staged, study_uid=inst.study_uid, sop_instance_uid=inst.sop_instance_uid)
        except OSError as exc:
            raise Refused(dicom.SPOOL_WRITE_FAILED, f"study {inst.study_uid}: cannot write the spool: {exc}") from None
    finally:
        staged.unlink(missing_ok=True)  # placed (renamed away), or not news, or refused
    try:
        added = index.add_instance(inst.stored(str(final), size, calling_aet=calling, called_aet=called,
                                               route=routes, received_at=time.time(), digest=digest))
    except Exception as exc:
        os.unlink(final)  # not indexed, so not stored: the sender will retry
        raise Refused(dicom.PROCESSING_FAILURE, f"study {inst.study_uid}: cannot index: {exc}") from None
    if not added:  # another association stored the same instance meanwhile
        os.unlink(final)
        return _again(inst, calling, called, index)
    live.received(key, inst)
    if live.first_time(inst.study_uid):
        logger.info("Receiving study %s (patient %s) from %s to %s: %s", inst.study_uid, inst.patient_id,
                    calling, called, "burn" if routes != routing.STORE_ONLY else "store (no burn route matched)")
    return dicom.SUCCESS


def _again(inst: ReceivedInstance, calling: str, called: str, index: Indexer) -> int:
    """The same instance again (same SOP Instance UID, same data set bytes) is not news: success, nothing kept,
    no job. Only a study still waiting for its job counts its quiet period from it: its sender is at work (a
    sender resuming after a restart re-sends what it had sent), so the study is not cut short of the rest."""
    index.resent(inst.study_uid, time.time())
    logger.debug("C-STORE from %s to %s of %s (study %s): the same instance again, nothing changed",
                 calling, called, inst.sop_instance_uid, inst.study_uid)
    return dicom.SUCCESS


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


def evt_handlers(spool: Spool, index: SharedIndex, live: Live) -> list[Any]:
    """The handlers of one receiver process, their collaborators bound as pynetdicom's third element."""
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, handle_requested, [live]),
        (evt.EVT_REJECTED, handle_rejected, [live]),
        (evt.EVT_C_STORE, handle_store, [spool, index, live]),
        (evt.EVT_CONN_CLOSE, handle_closed, [live]),
    ]
    if live.config.mcm is not None:
        handlers += [(evt.EVT_N_CREATE, handle_n_create, [index, live]),
                     (evt.EVT_N_ACTION, handle_n_action, [index, live]),
                     (evt.EVT_N_GET, handle_n_get, [index, live])]
    return handlers

