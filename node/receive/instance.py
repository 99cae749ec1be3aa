"""What the receiver reads of an instance, and the start-up re-indexing of the spool.

pynetdicom-free: :mod:`node.receive.scp` calls :func:`read_instance` on each
received file, and ``service.py`` calls :func:`index_orphans` before the
receivers start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from node import dcmio, routing
from node.index import Index, Received
from node.receive.spool import Spool, is_uid
from node.tags import (
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    SPECIFIC_CHARACTER_SET,
)
from node.tags import SERIES_INSTANCE_UID as SERIES_UID
from node.tags import STUDY_INSTANCE_UID as STUDY_UID

logger = logging.getLogger(__name__)

#: What the receiver reads of each received data set (tag -> VR, for Implicit VR files, PS3.6).
READ_VRS = {SPECIFIC_CHARACTER_SET: "CS", SOP_CLASS_UID: "UI", SOP_INSTANCE_UID: "UI", MODALITY: "CS",
        PATIENT_NAME: "PN", PATIENT_ID: "LO", STUDY_UID: "UI", SERIES_UID: "UI"}
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

    def stored(self, path: str, size: int, *, calling_aet: str, called_aet: str, route: str,
               received_at: float, digest: str) -> Received:
        """The index's record of this instance, stored at ``path``."""
        return Received(
            sop_instance_uid=self.sop_instance_uid, sop_class_uid=self.sop_class_uid, study_uid=self.study_uid,
            series_uid=self.series_uid, patient_id=self.patient_id, patient_name=self.patient_name,
            modality=self.modality, transfer_syntax=self.transfer_syntax, path=path, size=size,
            calling_aet=calling_aet, called_aet=called_aet, route=route, received_at=received_at, digest=digest)


def dataset_digest(path: str | os.PathLike[str], offset: int) -> str:
    """SHA-256 (hex) of a file's data set bytes, after its File Meta: what tells the same instance again,
    whoever sent it (the File Meta differs per sender)."""
    h = hashlib.sha256()
    with open(path, "rb") as fp:
        fp.seek(offset)
        while chunk := fp.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_instance(path: str | os.PathLike[str]) -> ReceivedInstance:
    """Read an instance's identifying attributes: dcmio, and pydicom only for what dcmio declines.

    Raises :class:`UnreadableDataSet` when neither can parse the file.
    """
    name = os.fspath(path)
    try:
        h = dcmio.read_header(name, wanted=_WANTED, vrs=READ_VRS)
    except dcmio.NotDicom as exc:
        raise UnreadableDataSet(str(exc)) from None
    except dcmio.NeedsPydicom:
        return _read_with_pydicom(name)
    charset = h.text(SPECIFIC_CHARACTER_SET)
    return ReceivedInstance(
        h.text(SOP_CLASS_UID), h.text(SOP_INSTANCE_UID), h.text(STUDY_UID), h.text(SERIES_UID),
        _decode(h.elements.get(PATIENT_ID), charset), _decode(h.elements.get(PATIENT_NAME), charset),
        h.text(MODALITY), h.transfer_syntax, h.dataset_offset)


def _read_with_pydicom(path: str) -> ReceivedInstance:
    """Deflated, Big Endian or unusual files: pydicom reads the same few tags."""
    from pydicom import dcmread

    tags = (SOP_CLASS_UID, SOP_INSTANCE_UID, STUDY_UID, SERIES_UID, PATIENT_ID, PATIENT_NAME, MODALITY)
    try:
        _, offset, _ = dcmio.read_meta(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, stop_before_pixels=True, specific_tags=[*_WANTED])
            v = [str(ds[tag].value or "").strip(" \0") if tag in ds else "" for tag in tags]
            syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    except Exception as exc:  # pydicom raises many types for bad input
        raise UnreadableDataSet(f"{type(exc).__name__}: {exc}") from None
    return ReceivedInstance(v[0], v[1], v[2], v[3], v[4], v[5], v[6], syntax, offset)


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


def index_orphans(spool: Spool, index: Index, *, known: set[str]) -> int:
    """Index spooled instances the index lost; return how many. Run before the receivers start.

    A file is fsync'd into the spool before its index commit, and the index
    (WAL, ``synchronous=NORMAL``) may lose its last commits in a power cut, so
    the spool can hold instances that were answered with success but are not
    indexed. Each gets its study's recorded route (a new study: store only);
    the calling and called AE titles are not known any more (""). A file whose
    SOP Instance UID the index holds under another path is an older or newer
    copy of an indexed instance, and is left alone.
    """
    indexed = {Path(p).name[:-_SUFFIX] for p in known}
    found: dict[str, list[Path]] = {}
    for study in sorted(spool.root.iterdir()):
        if not study.is_dir():
            continue
        for path in study.iterdir():
            sop = path.name[:-_SUFFIX]
            if path.suffix == ".dcm" and str(path) not in known and sop not in indexed:
                found.setdefault(sop, []).append(path)
    count = 0
    for sop, paths in found.items():
        path = max(paths, key=lambda p: p.stat().st_mtime)  # the copy received last
        try:
            inst = read_instance(path)
        except (UnreadableDataSet, OSError) as exc:
            logger.warning("start-up: spooled file %s cannot be read, left alone: %s", path, exc)
            continue
        if inst.sop_instance_uid != sop or not is_uid(inst.study_uid) or inst.study_uid != path.parent.name:
            logger.warning("start-up: spooled file %s does not hold what its name says, left alone", path)
            continue
        stat = path.stat()
        if index.add_instance(inst.stored(str(path), stat.st_size, calling_aet="", called_aet="",
                                          route=index.study_route(inst.study_uid) or routing.STORE_ONLY,
                                          received_at=stat.st_mtime,
                                          digest=dataset_digest(path, inst.dataset_offset))):
            count += 1
        else:
            path.unlink()  # the index holds the same instance (a job took it): this copy is not news
    return count
