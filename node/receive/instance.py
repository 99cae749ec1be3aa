"""What the receiver reads of an instance, and the start-up re-indexing of the spool.

pynetdicom-free: :mod:`node.receive.scp` calls :func:`read_instance` on each
received file and keeps its :meth:`ReceivedInstance.spool_head` in the spool,
and ``service.py`` calls :func:`index_orphans` before the receivers start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from node import dcmio, dicom, routing
from node.config import Route
from node.index import Index, Received
from node.receive.spool import Spool, is_uid
from node.tags import (
    ACCESSION_NUMBER,
    FILE_META_INFORMATION_GROUP_LENGTH,
    FILE_META_INFORMATION_VERSION,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    MEDIA_STORAGE_SOP_CLASS_UID,
    MEDIA_STORAGE_SOP_INSTANCE_UID,
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    PRIVATE_INFORMATION,
    PRIVATE_INFORMATION_CREATOR_UID,
    RECEIVING_APPLICATION_ENTITY_TITLE,
    SENDING_APPLICATION_ENTITY_TITLE,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
    STUDY_DATE,
    TRANSFER_SYNTAX_UID,
)
from node.tags import SERIES_INSTANCE_UID as SERIES_UID
from node.tags import STUDY_INSTANCE_UID as STUDY_UID
from node.words import counted

logger = logging.getLogger(__name__)

#: What the receiver reads of each received data set (tag -> VR, for Implicit VR files, PS3.6).
READ_VRS = {SPECIFIC_CHARACTER_SET: "CS", SOP_CLASS_UID: "UI", SOP_INSTANCE_UID: "UI", STUDY_DATE: "DA",
            ACCESSION_NUMBER: "SH", MODALITY: "CS", PATIENT_NAME: "PN", PATIENT_ID: "LO", STUDY_UID: "UI",
            SERIES_UID: "UI"}
_WANTED = frozenset(READ_VRS)
#: ``.<8 hex>.dcm`` after the SOP Instance UID in a spool file's name (spool.Spool.place).
_SUFFIX = len(".0123abcd.dcm")


class UnreadableDataSet(Exception):
    """The data set cannot be parsed."""


@dataclass(frozen=True)
class ReceivedInstance:
    """What the index and the routes need of one received data set."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    patient_name: str
    modality: str
    transfer_syntax: str
    #: Offset of the data set: the first byte after the File Meta Information (PS3.10 7.1).
    dataset_offset: int
    #: The File Meta Information elements as the file holds them.
    meta: Mapping[int, dcmio.Element] = field(default_factory=dict, compare=False, repr=False)
    #: (0008,0020) Study Date and (0008,0050) Accession Number, for the console's searches ("" when absent).
    study_date: str = ""
    accession_number: str = ""

    def spool_head(self, *, calling_aet: str, called_aet: str, routes: str) -> bytes:
        """The head the spool keeps for this file (:func:`spool_head`), from the File Meta as received."""
        return spool_head({tag: e.raw for tag, e in self.meta.items()}, calling_aet=calling_aet,
                          called_aet=called_aet, routes=routes)

    def titles(self) -> tuple[str, str, str] | None:
        """(calling AE title, called AE title, routes digest) the spool recorded, or None when it did not."""
        if SENDING_APPLICATION_ENTITY_TITLE not in self.meta or RECEIVING_APPLICATION_ENTITY_TITLE not in self.meta:
            return None
        ours = dcmio.text(self.meta.get(PRIVATE_INFORMATION_CREATOR_UID)) == dicom.MEDIANODE_CLASS_UID
        return (dcmio.text(self.meta[SENDING_APPLICATION_ENTITY_TITLE]),
                dcmio.text(self.meta[RECEIVING_APPLICATION_ENTITY_TITLE]),
                dcmio.text(self.meta.get(PRIVATE_INFORMATION)) if ours else "")

    def stored(self, path: str, size: int, *, calling_aet: str, called_aet: str, route: str,
               received_at: float, digest: str) -> Received:
        """The index's record of this instance, stored at ``path``."""
        return Received(
            sop_instance_uid=self.sop_instance_uid, sop_class_uid=self.sop_class_uid, study_uid=self.study_uid,
            series_uid=self.series_uid, patient_id=self.patient_id, patient_name=self.patient_name,
            modality=self.modality, transfer_syntax=self.transfer_syntax, path=path, size=size,
            calling_aet=calling_aet, called_aet=called_aet, route=route, received_at=received_at, digest=digest,
            study_date=self.study_date, accession_number=self.accession_number)


def spool_head(meta: Mapping[int, bytes], *, calling_aet: str, called_aet: str, routes: str) -> bytes:
    """Preamble, ``DICM`` and the File Meta group the spool keeps (PS3.10 7.1): ``meta`` (tag -> encoded
    element) as received, plus (0002,0017) Sending and (0002,0018) Receiving Application Entity Title, the
    calling and called AE titles that routing needs, and (0002,0100) / (0002,0102) our Private Information:
    the :func:`routes_digest` of the routes that received it. A rebuilt index routes by them."""
    ours = {SENDING_APPLICATION_ENTITY_TITLE: dcmio.encode(SENDING_APPLICATION_ENTITY_TITLE, "AE", calling_aet),
            RECEIVING_APPLICATION_ENTITY_TITLE: dcmio.encode(RECEIVING_APPLICATION_ENTITY_TITLE, "AE", called_aet),
            PRIVATE_INFORMATION_CREATOR_UID: dcmio.encode(PRIVATE_INFORMATION_CREATOR_UID, "UI",
                                                          dicom.MEDIANODE_CLASS_UID),
            PRIVATE_INFORMATION: dcmio.encode(PRIVATE_INFORMATION, "OB", routes)}
    kept = {tag: raw for tag, raw in meta.items() if tag != FILE_META_INFORMATION_GROUP_LENGTH}
    body = b"".join(raw for _, raw in sorted((kept | ours).items()))
    return (b"\0" * 128 + b"DICM"
            + dcmio.encode(FILE_META_INFORMATION_GROUP_LENGTH, "UL", len(body).to_bytes(4, "little")) + body)


def network_head(sop_class: str, sop_instance: str, syntax: str, *, calling_aet: str, called_aet: str,
                 routes: str) -> bytes:
    """The spool's head for a data set received over the network, which carries no File Meta: the one a
    C-STORE's Affected SOP Class and Instance UIDs and its presentation context's transfer syntax make."""
    meta = {FILE_META_INFORMATION_VERSION: dcmio.encode(FILE_META_INFORMATION_VERSION, "OB", b"\0\1"),
            MEDIA_STORAGE_SOP_CLASS_UID: dcmio.encode(MEDIA_STORAGE_SOP_CLASS_UID, "UI", sop_class),
            MEDIA_STORAGE_SOP_INSTANCE_UID: dcmio.encode(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", sop_instance),
            TRANSFER_SYNTAX_UID: dcmio.encode(TRANSFER_SYNTAX_UID, "UI", syntax),
            IMPLEMENTATION_CLASS_UID: dcmio.encode(IMPLEMENTATION_CLASS_UID, "UI", dicom.MEDIANODE_CLASS_UID),
            IMPLEMENTATION_VERSION_NAME: dcmio.encode(IMPLEMENTATION_VERSION_NAME, "SH", dicom.MEDIANODE_VERSION_NAME)}
    return spool_head(meta, calling_aet=calling_aet, called_aet=called_aet, routes=routes)


def dataset_digest(path: str | os.PathLike[str], offset: int) -> str:
    """SHA-256 (hex) of a file's data set bytes, after its File Meta: what tells the same instance again,
    whoever sent it (the File Meta differs per sender)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(offset)
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def digest_of_spooled(path: str) -> str:
    """A spooled file's :func:`dataset_digest`; "" for a file gone or unreadable (the same as nothing)."""
    try:
        return dataset_digest(path, dcmio.read_meta(path)[1])
    except (OSError, dcmio.NotDicom, dcmio.NeedsPydicom):
        return ""


class Copies(Protocol):
    """The index's copies of instances, and their digests as they are computed."""

    def copy_of(self, sop_instance_uid: str) -> tuple[str, str] | None: ...

    def record_digest(self, sop_instance_uid: str, path: str, digest: str) -> None: ...


def again(index: Copies, sop_instance_uid: str, digest: Callable[[], str]) -> tuple[bool, str]:
    """Whether a data set is the same instance again (its digest equals that of the index's copy), and its
    digest when it was computed, else "".

    Receiving hashes nothing: only an instance the index has a copy of is hashed, and that copy too when
    its digest is not yet known (it is recorded then). A copy that cannot be read is the same as nothing.
    """
    copy = index.copy_of(sop_instance_uid)
    if copy is None:
        return False, ""
    path, theirs = copy
    if not theirs and (theirs := digest_of_spooled(path)):
        index.record_digest(sop_instance_uid, path, theirs)
    mine = digest()
    return mine == theirs != "", mine


def routes_digest(routes: tuple[Route, ...]) -> str:
    """What the routes decide, as 16 hex digits: equal for routes that route alike (where each is written aside)."""
    text = repr([dataclasses.replace(r, where="") for r in routes])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_instance(path: str | os.PathLike[str]) -> ReceivedInstance:
    """Read an instance's identifying attributes: dcmio, and pydicom only for what dcmio declines.

    Raises :class:`UnreadableDataSet` when neither can parse the file.
    """
    with open(path, "rb") as fp:
        return instance_of(fp, fp.seek(0, os.SEEK_END), path)


def instance_of(fp: dcmio.Source, size: int, path: str | os.PathLike[str]) -> ReceivedInstance:
    """:func:`read_instance` of ``path`` open as ``fp``, of ``size`` bytes."""
    name = os.fspath(path)
    try:
        h = dcmio.header_of(fp, size, wanted=_WANTED, vrs=READ_VRS, path=name)
    except dcmio.NotDicom as exc:
        raise UnreadableDataSet(str(exc)) from None
    except dcmio.NeedsPydicom:
        return _read_with_pydicom(name)
    charset = h.text(SPECIFIC_CHARACTER_SET)
    return ReceivedInstance(
        h.text(SOP_CLASS_UID), h.text(SOP_INSTANCE_UID), h.text(STUDY_UID), h.text(SERIES_UID),
        _decode(h.elements.get(PATIENT_ID), charset), _decode(h.elements.get(PATIENT_NAME), charset),
        h.text(MODALITY), h.transfer_syntax, h.dataset_offset, h.meta, study_date=h.text(STUDY_DATE),
        accession_number=_decode(h.elements.get(ACCESSION_NUMBER), charset))


def _read_with_pydicom(path: str) -> ReceivedInstance:
    """Deflated, Big Endian or unusual files: pydicom reads the same few tags."""
    from pydicom import dcmread

    tags = (SOP_CLASS_UID, SOP_INSTANCE_UID, STUDY_UID, SERIES_UID, PATIENT_ID, PATIENT_NAME, MODALITY, STUDY_DATE,
            ACCESSION_NUMBER)
    try:
        meta, offset, _ = dcmio.read_meta(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, stop_before_pixels=True, specific_tags=[*_WANTED])
            v = [str(ds[tag].value or "").strip(" \0") if tag in ds else "" for tag in tags]
            syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    except Exception as exc:  # pydicom raises many types for bad input
        raise UnreadableDataSet(f"{type(exc).__name__}: {exc}") from None
    return ReceivedInstance(v[0], v[1], v[2], v[3], v[4], v[5], v[6], syntax, offset, meta, study_date=v[7],
                            accession_number=v[8])


def _decode(element: dcmio.Element | None, charset: str) -> str:
    """A text value in its Specific Character Set (PS3.5 6.1), for the index and the logs."""
    raw = element.value.rstrip(b" \0") if element else b""
    if raw.isascii():
        return raw.decode("ascii")
    try:
        from pydicom.charset import convert_encodings, decode_bytes

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            encodings = convert_encodings([c.strip() for c in charset.split("\\")] if charset else ["ISO_IR 6"])
            return str(decode_bytes(raw, encodings, {0x5E, 0x3D}))
    except Exception:  # a bad charset never refuses an instance
        return raw.decode("latin-1")


def index_orphans(spool: Spool, index: Index, *, known: set[str], routes: tuple[Route, ...]) -> int:
    """Index spooled instances the index lost; return how many. Run before the receivers start.

    A file is fsync'd into the spool before its index commit, and a crash can
    come between the two, so the spool can hold instances that are not indexed;
    after a power loss, also ones answered with success (the index's commits reach
    the disk with the next flush, not each on its own). Each is routed as the
    receiver would have routed it, by the calling and called AE titles its File
    Meta records (0002,0017) / (0002,0018), with ``routes``, the configuration in
    force now; a log line
    says when that differs from the one that received it. A file from before
    the spool recorded them gets its study's recorded route (a new study:
    store only). A file whose SOP Instance UID the index holds under another
    path is a copy of an indexed instance: written after every indexed copy, it
    is one sent again whose commit was lost, and is indexed as the receiver would
    have (the older copy released); written before, it is left alone. An
    identical copy of an instance the index or a job holds is removed.
    """
    indexed: dict[str, list[str]] = {}
    for known_path in known:
        indexed.setdefault(Path(known_path).name[:-_SUFFIX], []).append(known_path)
    found: dict[str, list[Path]] = {}
    for study in sorted(spool.root.iterdir()):
        if not study.is_dir():
            continue
        for path in study.iterdir():
            if path.suffix == ".dcm" and str(path) not in known:
                found.setdefault(path.name[:-_SUFFIX], []).append(path)
    count = 0
    other_routes, in_force = 0, routes_digest(routes)
    for sop, paths in found.items():
        path = max(paths, key=lambda p: p.stat().st_mtime)  # the copy received last
        if path.stat().st_mtime <= max(map(_mtime, indexed.get(sop, ())), default=-1.0):
            continue  # older than the copy the index holds: not what the sender sent last
        try:
            inst = read_instance(path)
        except (UnreadableDataSet, OSError) as exc:
            logger.warning("start-up: spooled file %s cannot be read, left alone: %s", path, exc)
            continue
        if inst.sop_instance_uid != sop or not is_uid(inst.study_uid) or inst.study_uid != path.parent.name:
            logger.warning("start-up: spooled file %s does not hold what its name says, left alone", path)
            continue
        titles = inst.titles()
        if titles is None:
            calling = called = ""
            route = index.study_route(inst.study_uid) or routing.STORE_ONLY
        else:
            calling, called, received_under = titles
            route = _route_now(routes, inst, calling=calling, called=called)
            other_routes += received_under != in_force
        stat = path.stat()
        same, digest = again(index, sop, lambda: dataset_digest(path, inst.dataset_offset))
        if not same and index.add_instance(inst.stored(str(path), stat.st_size, calling_aet=calling,
                                                       called_aet=called, route=route, received_at=stat.st_mtime,
                                                       digest=digest)):
            count += 1
        else:
            path.unlink()  # the index holds the same instance (a job took it): this copy is not news
    if other_routes:
        logger.warning("start-up: %s %s received under other routes than those in force now; %s routed by the "
                       "routes in force", counted(other_routes, "re-indexed instance"),
                       *(("was", "it is") if other_routes == 1 else ("were", "they are")))
    return count


def _mtime(path: str) -> float:
    """When a spooled file was last written; -1 for one no longer there."""
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return -1.0


def _route_now(routes: tuple[Route, ...], inst: ReceivedInstance, *, calling: str, called: str) -> str:
    """What the receiver would record for ``inst`` now. It was acknowledged: a route that rejects it now
    stores it."""
    refusing, recorded = routing.record(routes, called_aet=called, calling_aet=calling, modality=inst.modality,
                                        sop_class=inst.sop_class_uid)
    if refusing is not None:
        logger.warning("start-up: %s was acknowledged, the route at %s rejects it now: stored",
                       inst.sop_instance_uid, refusing.where)
        return routing.STORE_ONLY
    return recorded
