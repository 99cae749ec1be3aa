"""What a receiver keeps whichever data path serves an association, without pynetdicom: the presentation
contexts and statuses we answer, the shared index and live state of one receiver process, and the
C-STORE itself.

A C-STORE is answered with success only once its instance is in the spool
(fsync'd file and directory) and indexed (DESIGN.md invariant 1): :func:`store`
checks a received data set on disk, copies it (pynetdicom's temp file) or renames
it (our own path's, :mod:`node.receive.storer`) into the spool, indexes it, and
gives the status, each refusal with its Error Comment (the list is in
:mod:`node.receive.scp`'s docstring and :data:`STORE_STATUSES`). pynetdicom's
handlers (:mod:`node.receive.scp`) call the same functions.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from node import audit, dcmio, dicom, routing
from node.config import TLS, Config
from node.index import Index, Received
from node.receive.instance import (
    Copies,
    ReceivedInstance,
    UnreadableDataSet,
    again,
    digest_of_spooled,
    instance_of,
    routes_digest,
)
from node.receive.sopclasses import MEDIA_CREATION_MANAGEMENT, STORAGE, VERIFICATION
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

#: Every status a C-STORE is answered with (:func:`store`) -> (its meaning in PS3.4 B.2.3 or
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
    """Every storage SOP class we accept: pynetdicom's (:mod:`node.receive.sopclasses`, the retired ones
    the seed's Table 5 lists among them), the configured private ones. A supported context list has no
    128-context cap (that limit is on what a requestor proposes)."""
    return sorted(set(STORAGE) | set(config.node.extra_sop_classes))


def own_path_classes(config: Config) -> frozenset[str]:
    """The SOP classes our own data path serves (:mod:`node.receive.storer`): storage, and Verification."""
    return frozenset(storage_classes(config)) | {VERIFICATION}


def supported(config: Config) -> dict[str, tuple[str, ...]]:
    """Every SOP class we accept -> its transfer syntaxes, ours first: what the AE of
    :func:`node.receive.scp.make_ae` supports, Media Creation Management when ``mcm`` is configured."""
    contexts = {VERIFICATION: VERIFICATION_SYNTAXES} | {uid: TRANSFER_SYNTAXES for uid in storage_classes(config)}
    if config.mcm is not None:
        contexts[MEDIA_CREATION_MANAGEMENT] = VERIFICATION_SYNTAXES
    return contexts


def ssl_context(tls: TLS) -> ssl.SSLContext:
    """Server TLS (PS3.15 B.9): our certificate; client certificates required when a CA is set."""
    return server_context(tls.certificate, tls.key, tls.ca)


# -- State shared by the handlers of one process ------------------------------------


class Indexer(Copies, Protocol):
    def add_instance(self, r: Received) -> bool: ...

    def resent(self, study_uid: str, at: float) -> None: ...


class SharedIndex:
    """One process's :class:`Index` connection, shared by its association threads.

    A sqlite3 connection cannot interleave two threads' transactions, so writes take a lock.
    """

    def __init__(self, index: Index) -> None:
        self.index = index
        self.lock = threading.Lock()

    def copy_of(self, sop_instance_uid: str) -> tuple[str, str] | None:
        with self.lock:
            return self.index.copy_of(sop_instance_uid)

    def record_digest(self, sop_instance_uid: str, path: str, digest: str) -> None:
        with self.lock:
            self.index.record_digest(sop_instance_uid, path, digest)

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
        #: Sets an association's reactor delay: pynetdicom's (:func:`node.receive.scp.reactor_delay`, bound once
        #: pynetdicom is loaded); our own path's have no reactor.
        self.reactor_delay: Callable[[object, float], None] = _no_reactor

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
                self.reactor_delay(self._active.pop(key)[0], IDLE_LOOP_S)
            if idle:
                self._pace()

    def _pace(self) -> None:
        """The short reactor delay for a lone storing association, the default for several (pynetdicom's
        associations: those on our own data path have no reactor)."""
        delay = FAST_LOOP_S if len(self._active) == 1 else IDLE_LOOP_S
        for assoc, _ in self._active.values():
            self.reactor_delay(assoc, delay)

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


def _no_reactor(assoc: object, seconds: float) -> None:
    """No association has a reactor until pynetdicom is loaded."""


# -- Storing --------------------------------------------------------------------------------------


#: A write refused for want of space (0xA700, Out of Resources); any other is 0xA701.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def refused(live: Live, calling: str, called: str, peer: str, code: tuple[int, int, int], reason: str | None) -> None:
    """Log and audit a refused association (A-ASSOCIATE-RJ ``code``), whichever data path refused it."""
    reason = reason or REJECT_REASONS.get(code, f"result {code[0]}, source {code[1]}, reason {code[2]}")
    logger.warning("Refused association from %s (%s) to %s: %s", calling, peer, called, reason)
    _audit(live, "association-refused", calling_aet=calling, called_aet=called, peer=peer, reason=reason)


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


@dataclass(frozen=True)
class Written:
    """A data set our own data path wrote behind the spool's File Meta: the file's size and its first bytes
    (:class:`node.dcmio.StartedFile`). It is not hashed: :func:`node.receive.instance.again` hashes only an
    instance the index has a copy of."""

    size: int
    start: bytes


def store(path: Path, sop_class: str, sop_instance: str, *, calling: str, called: str, spool: Spool,
          index: Indexer, live: Live, key: int, failure: OSError | None = None,
          written: Written | None = None) -> tuple[int, str]:
    """Keep one received data set: its status and Error Comment ("" when there is none).

    ``path`` is a temp file holding the data set behind a File Meta: pynetdicom's, copied behind the
    File Meta the spool keeps; or, with ``written``, already written with it (:mod:`node.receive.storer`),
    and then renamed into the spool or removed. ``failure``: why the data set could not be written as it
    arrived.
    """
    try:
        if failure:
            raise Refused(dicom.OUT_OF_RESOURCES if failure.errno in _FULL else dicom.SPOOL_WRITE_FAILED,
                          f"{failure.strerror or failure}: the data set cannot be written in {spool.tmp}")
        return _store(path, sop_class, sop_instance, calling=calling, called=called, spool=spool, index=index,
                      live=live, key=key, written=written), ""
    except Refused as r:
        logger.warning("Refused C-STORE from %s to %s of %s: 0x%04X %s", calling, called, sop_instance, r.status,
                       r.reason)
        return r.status, r.reason.replace("\\", "/")[:64]  # LO (PS3.5 6.2)
    except Exception:
        logger.exception("C-STORE from %s to %s of %s failed", calling, called, sop_instance)
        return dicom.PROCESSING_FAILURE, ""


def _store(path: Path, sop_class: str, sop_instance: str, *, calling: str, called: str,
           spool: Spool, index: Indexer, live: Live, key: int, written: Written | None) -> int:
    try:
        inst, routes, staged = _admit(path, sop_class, sop_instance, calling=calling, called=called,
                                      spool=spool, live=live, written=written)
    except BaseException:
        if written is not None:
            path.unlink(missing_ok=True)  # refused: our own temp file goes (pynetdicom's is its own)
        raise
    placed = False
    try:
        same, digest = again(index, inst.sop_instance_uid, lambda: digest_of_spooled(str(staged)))
        if same:
            return _again(inst, calling, called, index)
        try:
            final, size = spool.place(staged, study_uid=inst.study_uid, sop_instance_uid=inst.sop_instance_uid)
        except OSError as exc:
            raise Refused(dicom.SPOOL_WRITE_FAILED, f"study {inst.study_uid}: cannot write the spool: {exc}") from None
        placed = True
    finally:
        if not placed:
            staged.unlink(missing_ok=True)  # not news, or refused
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


def _admit(path: Path, sop_class: str, sop_instance: str, *, calling: str, called: str, spool: Spool,
           live: Live, written: Written | None) -> tuple[ReceivedInstance, str, Path]:
    """Check a received data set and stage it: the instance, its routes and the file to place; or
    :class:`Refused`, why not. Our own path's file is read from its start in memory; pynetdicom's is copied
    behind the spool's File Meta. Neither is hashed (:func:`node.receive.instance.again`)."""
    with (dcmio.StartedFile(path, written.start, written.size) if written else open(path, "rb")) as fp:
        size = written.size if written else fp.seek(0, os.SEEK_END)
        if reason := dcmio.check_complete(fp, size):
            raise Refused(dicom.CANNOT_PARSE, f"the data set is not what it claims: {reason}")
        try:
            inst = instance_of(fp, size, path)
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
    config = live.config
    refusing, routes = routing.record(config.routes, called_aet=called, calling_aet=calling,
                                      modality=inst.modality, sop_class=inst.sop_class_uid)
    if refusing is not None:
        raise Refused(dicom.REFUSED_NOT_AUTHORIZED, f"study {inst.study_uid}: rejected by the route at {refusing.where}")
    floor, free = config.node.min_free_mb << 20, spool.free_bytes()
    if free < floor:
        raise Refused(dicom.OUT_OF_RESOURCES, f"study {inst.study_uid}: {free >> 20} MB free in "
                      f"{config.node.data_dir}, under node.min_free_mb {config.node.min_free_mb}")
    if written is not None:
        return inst, routes, path
    head = inst.spool_head(calling_aet=calling, called_aet=called, routes=live.routes_digest)
    try:
        staged = spool.stage(path, head=head, offset=inst.dataset_offset)
    except OSError as exc:
        raise Refused(dicom.SPOOL_WRITE_FAILED, f"study {inst.study_uid}: cannot write the spool: {exc}") from None
    return inst, routes, staged


def _again(inst: ReceivedInstance, calling: str, called: str, index: Indexer) -> int:
    """The same instance again (same SOP Instance UID, same data set bytes) is not news: success, nothing kept,
    no job. Only a study still waiting for its job counts its quiet period from it: its sender is at work (a
    sender resuming after a restart re-sends what it had sent), so the study is not cut short of the rest."""
    index.resent(inst.study_uid, time.time())
    logger.debug("C-STORE from %s to %s of %s (study %s): the same instance again, nothing changed",
                 calling, called, inst.sop_instance_uid, inst.study_uid)
    return dicom.SUCCESS
