"""The fuzz targets: every parser that reads outside bytes, each run on one input as the node runs it.

Shared by the bounded property tests (``tests/test_fuzz.py``, Hypothesis) and the long runs
(``scripts/fuzz``, atheris). A target's :meth:`Target.run` feeds one input to the node's own entry
points and lets through only what their callers catch and turn into a clear message; any other
exception escaping it is a finding. Seeds are real files (pydicom's test files, media made by
``medianode burn`` and by DCMTK ``dcmmkdir`` + xorriso, PDUs from pynetdicom and DCMTK ``echoscu``),
built into a scratch folder, never committed. :func:`apply` mutates a seed the structure-aware way
(truncation, byte flips, length fields set to interesting values, inserted items and sequences,
copied ranges) from a list of operations that Hypothesis can draw and shrink and a random fuzzer can
generate.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: (kind, position, argument): what :func:`apply` does to a seed.
Op = tuple[str, int, int]
KINDS = ("truncate", "byte", "u16", "u32", "insert", "copy", "delete")
#: Values a length field is set to: off-by-one, odd, zero, and the huge ones (PS3.5 7.1: undefined is FFFFFFFF).
LENGTHS = (0, 1, 2, 3, 7, 8, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
           0xFFFFFFFE, 0xFFFFFFFF)
#: Tokens inserted whole: items, delimiters, sequences of undefined length, element headers, a preamble's end.
TOKENS = (
    b"\xfe\xff\x00\xe0\xff\xff\xff\xff",  # an item of undefined length (Little Endian)
    b"\xfe\xff\x0d\xe0\x00\x00\x00\x00",  # an Item Delimitation Item
    b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",  # a Sequence Delimitation Item
    b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff",  # a sequence of undefined length, Explicit VR
    b"\x08\x00\x15\x11\xff\xff\xff\xff",  # the same, Implicit VR
    b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff",  # encapsulated Pixel Data
    b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00",  # a Transfer Syntax UID
    b"\x02\x00\x10\x00UI\x16\x001.2.840.10008.1.2.1.99",  # Deflated
    b"DICM",
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
)


def apply(seed: bytes, ops: Sequence[Op], *, hot: tuple[int, int] = (0, 0)) -> bytes:
    """``seed`` mutated by ``ops``; positions fall in the ``hot`` range of bytes (anywhere when it is empty)."""
    data = bytearray(seed)
    for kind, position, arg in ops:
        low, high = hot if hot[0] < min(len(data), hot[1]) else (0, len(data))
        span = min(len(data), high) - low
        at = low + position % (span + 1)
        if kind == "truncate":
            del data[at:]
        elif kind == "byte":
            data[at:at + 1] = bytes([arg & 0xFF])
        elif kind == "u16":
            data[at:at + 2] = struct.pack("<H" if arg & 1 else ">H", LENGTHS[arg % len(LENGTHS)] & 0xFFFF)
        elif kind == "u32":
            data[at:at + 4] = struct.pack("<L" if arg & 1 else ">L", LENGTHS[arg % len(LENGTHS)])
        elif kind == "insert":
            data[at:at] = TOKENS[arg % len(TOKENS)] * (1 + (arg >> 8) % 64)  # also deeply nested sequences
        elif kind == "copy":
            start = arg % (span + 1)
            data[at:at] = data[start:start + 1 + (arg >> 4) % 512]
        elif kind == "delete":
            del data[at:at + 1 + arg % 64]
    return bytes(data)


def random_ops(rng: random.Random, n: int) -> list[Op]:
    """``n`` operations for :func:`apply`, drawn from ``rng`` (the long runs' mutator)."""
    return [(rng.choice(KINDS), rng.getrandbits(32), rng.getrandbits(32)) for _ in range(n)]


@dataclass
class Target:
    """One parser's entry points: ``run`` takes one input; ``hot`` bounds where mutations land."""

    name: str
    run: Callable[[bytes], None]
    seeds: list[bytes]
    hot: tuple[int, int] = (0, 0)


# -- seeds ----------------------------------------------------------------------------


def pydicom_files(max_bytes: int) -> list[Path]:
    """pydicom's bundled test files up to ``max_bytes``: instances, DICOMDIRs, damaged ones."""
    from pydicom.data import get_testdata_files

    files = [Path(p) for p in get_testdata_files() if os.path.isfile(p) and os.path.getsize(p) <= max_bytes]
    return sorted(p for p in files if p.suffix.lower() not in (".txt", ".json", ".gz", ".bz2", ".py", ".zip"))


def instance_seeds(limit: int | None = None) -> list[bytes]:
    """Real instances and data sets: every pydicom test file up to 64 KiB (the first ``limit``)."""
    return [p.read_bytes() for p in pydicom_files(64 * 1024)[:limit]]


def _medianode(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "node", *args], check=True, capture_output=True, timeout=300)


def build_media(work: Path) -> dict[str, Path]:
    """Small media, each holding a DICOMDIR and two images: ours (a folder and an ISO), and DCMTK's with xorriso."""
    from pydicom.data import get_testdata_file

    images = [Path(str(get_testdata_file(n))) for n in ("CT_small.dcm", "MR_small.dcm")]
    media = {"ours-folder": work / "ours-folder", "ours-iso": work / "ours.iso",
             "dcmtk-folder": work / "dcmtk-folder", "dcmtk-iso": work / "dcmtk.iso"}
    if not media["ours-iso"].exists():
        _medianode("burn", "--no-pdi", "--format", "folder", "--out", str(media["ours-folder"]), *map(str, images))
        _medianode("burn", "--no-pdi", "--out", str(media["ours-iso"]), *map(str, images))
        folder = media["dcmtk-folder"]
        (folder / "DICOM").mkdir(parents=True)
        for i, image in enumerate(images, 1):
            shutil.copy(image, folder / "DICOM" / f"IM{i}")
        subprocess.run(["dcmmkdir", "--recurse", "+I", "DICOM"], cwd=folder, check=True, capture_output=True)
        subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-J", "-V", "DCMTK", "-o", str(media["dcmtk-iso"]),
                        str(folder)], check=True, capture_output=True)
    return media


def udf_seeds(work: Path) -> list[bytes]:
    """UDF-only images: our BD (UDF 2.60, metadata partition), genisoimage's UDF 1.02 without its ISO 9660 side,
    and mkudffs's empty CD-R (a VAT) and CD-RW (a sparing table), cut after their last written block."""
    bd, fs = work / "ours-bd.udf", work / "ours-folder"
    if not bd.exists():
        _medianode("burn", "--no-pdi", "--profile", "STD-GEN-BD", "--out", str(bd),
                   *(str(p) for p in sorted((fs / "DICOM").rglob("*")) if p.is_file()))
    seeds = [bd.read_bytes()]
    bridge = work / "genisoimage.iso"
    subprocess.run(["genisoimage", "-quiet", "-udf", "-o", str(bridge), str(fs)], check=True, capture_output=True)
    data = bridge.read_bytes()
    vrs = [data[s * 2048 : (s + 1) * 2048] for s in range(16, 24) if data[s * 2048 + 1 : s * 2048 + 6] in
           (b"BEA01", b"NSR02", b"TEA01")]  # fmt: skip
    seeds.append(data[: 16 * 2048] + b"".join(vrs).ljust(8 * 2048, b"\0") + data[24 * 2048 :])
    for media in ("cdr", "cdrw"):
        image = work / f"mkudffs-{media}.udf"
        with open(image, "wb") as fp:
            fp.truncate(4 << 20)
        subprocess.run(["mkudffs", f"--media-type={media}", "--blocksize=2048", str(image)], check=True,
                       capture_output=True)  # fmt: skip
        data = image.read_bytes().rstrip(b"\0")
        seeds.append(data.ljust(-(-len(data) // 2048) * 2048, b"\0"))
    return seeds


def dicomdir_seeds(media: dict[str, Path]) -> list[bytes]:
    """Our DICOMDIR, DCMTK's, and pydicom's (implicit, Big Endian, reordered, without offsets...)."""
    ours = [media["ours-folder"] / "DICOMDIR", media["dcmtk-folder"] / "DICOMDIR"]
    theirs = [p for p in pydicom_files(64 * 1024) if p.name.startswith("DICOMDIR")]
    return [p.read_bytes() for p in ours + theirs]


def association_pdus() -> list[bytes]:
    """An A-ASSOCIATE-RQ with many presentation contexts and every user information item, an AC, an RJ,
    A-RELEASE-RQ/RP and an A-ABORT, as pynetdicom encodes them."""
    from pynetdicom import AE, StoragePresentationContexts
    from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, A_RELEASE_RP, A_RELEASE_RQ
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        AsynchronousOperationsWindowNegotiation,
        ImplementationClassUIDNotification,
        ImplementationVersionNameNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
        SOPClassCommonExtendedNegotiation,
        SOPClassExtendedNegotiation,
        UserIdentityNegotiation,
    )

    ae = AE()
    ae.requested_contexts = StoragePresentationContexts[:40]
    contexts = ae.requested_contexts
    for i, cx in enumerate(contexts):
        cx.context_id = 2 * i + 1
    rq = A_ASSOCIATE()
    rq.application_context_name = "1.2.840.10008.3.1.1.1"
    rq.calling_ae_title, rq.called_ae_title = "FUZZ", "MEDIANODE"
    rq.presentation_context_definition_list = contexts
    items: list[Any] = []
    for item, values in (
        (MaximumLengthNotification(), {"maximum_length_received": 16384}),
        (ImplementationClassUIDNotification(), {"implementation_class_uid": "1.2.3.4"}),
        (ImplementationVersionNameNotification(), {"implementation_version_name": "FUZZ_1"}),
        (AsynchronousOperationsWindowNegotiation(), {"maximum_number_operations_invoked": 2,
                                                     "maximum_number_operations_performed": 3}),
        (SCP_SCU_RoleSelectionNegotiation(), {"sop_class_uid": contexts[0].abstract_syntax, "scu_role": True,
                                              "scp_role": True}),
        (SOPClassExtendedNegotiation(), {"sop_class_uid": contexts[0].abstract_syntax,
                                         "service_class_application_information": b"\x01\x00\x01"}),
        (SOPClassCommonExtendedNegotiation(), {"sop_class_uid": contexts[1].abstract_syntax,
                                               "service_class_uid": "1.2.840.10008.4.2",
                                               "related_general_sop_class_identification": ["1.2.3"]}),
        (UserIdentityNegotiation(), {"user_identity_type": 2, "positive_response_requested": True,
                                     "primary_field": b"user", "secondary_field": b"secret"}),
    ):
        for key, value in values.items():
            setattr(item, key, value)
        items.append(item)
    rq.user_information = items
    request = A_ASSOCIATE_RQ()
    request.from_primitive(rq)
    rq.result, rq.result_source, rq.diagnostic = 0x00, None, None
    for cx in contexts:
        cx.result, cx.transfer_syntax = 0x00, cx.transfer_syntax[:1]
    rq.presentation_context_definition_results_list = contexts
    rq.user_information = items[:3]
    accept = A_ASSOCIATE_AC()
    accept.from_primitive(rq)
    rq.result, rq.result_source, rq.diagnostic = 0x01, 0x01, 0x03
    reject = A_ASSOCIATE_RJ()
    reject.from_primitive(rq)
    abort = A_ABORT_RQ()
    abort.source, abort.reason_diagnostic = 0x02, 0x06
    return [request.encode(), accept.encode(), reject.encode(), A_RELEASE_RQ().encode(), A_RELEASE_RP().encode(),
            abort.encode()]


def echoscu_request(work: Path) -> bytes:
    """The A-ASSOCIATE-RQ DCMTK's ``echoscu`` sends, read from a socket that answers nothing."""
    cached = work / "echoscu-rq.pdu"
    if cached.exists():
        return cached.read_bytes()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        peer = subprocess.Popen(["echoscu", "-to", "10", "127.0.0.1", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            server.settimeout(30)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(30)
                data = b""
                while len(data) < 6 or len(data) < 6 + struct.unpack(">L", data[2:6])[0]:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        finally:
            peer.kill()
            peer.wait()
    cached.write_bytes(data)
    return data


#: The presentation context the command seeds use, and its transfer syntax.
CONTEXT_ID = 1


def message_pdus(instance: bytes) -> list[bytes]:
    """C-ECHO-RQ and C-STORE-RQ messages (command set and data set) as P-DATA-TF PDUs, one message per seed."""
    from pydicom import dcmread
    from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
    from pynetdicom.dimse_primitives import C_ECHO, C_STORE
    from pynetdicom.pdu import P_DATA_TF

    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    ds = dcmread(io.BytesIO(instance))
    store = C_STORE()
    store.MessageID, store.Priority = 2, 0
    store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    store.MoveOriginatorApplicationEntityTitle, store.MoveOriginatorMessageID = "MOVER", 7
    data_set = instance[ds.preamble is not None and 132 or 0:]
    store.DataSet = io.BytesIO(data_set[_meta_end(data_set):])
    seeds = []
    for primitive, message in ((echo, C_ECHO_RQ()), (store, C_STORE_RQ())):
        message.primitive_to_message(primitive)
        pdus = []
        for p_data in message.encode_msg(CONTEXT_ID, 1024):
            pdu = P_DATA_TF()
            pdu.from_primitive(p_data)
            pdus.append(pdu.encode())
        seeds.append(b"".join(pdus))
    return seeds


def _meta_end(data: bytes) -> int:
    """Where the data set starts after a File Meta group (Explicit VR Little Endian, group 0002)."""
    at = 0
    while data[at:at + 2] == b"\x02\x00":
        vr = data[at + 4:at + 6]
        if vr in (b"OB", b"UN", b"SQ", b"UT"):
            at += 12 + struct.unpack_from("<L", data, at + 8)[0]
        else:
            at += 8 + struct.unpack_from("<H", data, at + 6)[0]
    return at


# -- the targets -----------------------------------------------------------------------


def _elements(scratch: Path) -> Callable[[bytes], None]:
    """The element walker on one file: dcmio's readers, and the node's callers that fall back to pydicom."""
    from node import dcmio
    from node.errors import MediumError
    from node.media.sources import VRS, WANTED, UnreadableSource
    from node.media.sources import read as read_source
    from node.read.check import check_medium
    from node.receive.instance import UnreadableDataSet, read_instance

    medium = scratch / "one-file"
    medium.mkdir(exist_ok=True)
    path = medium / "IM1"

    def run(data: bytes) -> None:
        path.write_bytes(data)
        reason = dcmio.check_complete(io.BytesIO(data), len(data))
        assert reason is None or isinstance(reason, str)
        for implicit in (False, True):
            for little in (False, True):
                dcmio.element_header(data[:12].ljust(12, b"\0"), 0, implicit=implicit, little=little)
        try:
            dcmio.read_meta(str(path))
        except (dcmio.NotDicom, dcmio.NeedsPydicom):
            pass
        try:
            dcmio.read_header(str(path), wanted=WANTED, vrs=VRS)
        except (dcmio.NotDicom, dcmio.NeedsPydicom):
            pass
        try:  # what burn and the watched folders do with a file
            read_source(str(path))
        except (dcmio.NotDicom, UnreadableSource):
            pass
        try:  # what the receiver does with a data set it was sent
            read_instance(path)
        except UnreadableDataSet:
            pass
        try:  # what check and import do with a file they find on a medium
            check_medium(medium)
        except MediumError:
            pass

    return run


def _dicomdir(scratch: Path, media: dict[str, Path]) -> Callable[[bytes], None]:
    """The DICOMDIR walker: ``check`` on a folder medium holding two images and the input as its DICOMDIR."""
    from node.errors import MediumError
    from node.read.check import check_medium

    medium = scratch / "dicomdir-medium"
    if not medium.exists():
        shutil.copytree(media["ours-folder"], medium)

    def run(data: bytes) -> None:
        (medium / "DICOMDIR").write_bytes(data)
        try:
            check_medium(medium)
        except MediumError:
            pass

    return run


def _image(scratch: Path, name: str) -> Callable[[bytes], None]:
    """The image readers (ISO 9660, UDF): the input's label, then ``check`` on it as an image (which opens every
    file)."""
    from node.errors import MediumError
    from node.read.check import check_medium
    from node.read.medium import medium_label

    path = scratch / name

    def run(data: bytes) -> None:
        path.write_bytes(data)
        try:
            medium_label(path)
            check_medium(path)
        except MediumError:
            pass

    return run


def _pdus(data: bytes) -> list[bytes]:
    """The PDUs of a byte stream, as the gate lets them through: the header read first, its bound checked."""
    from node.netcompat import ASSOCIATE_RQ_MAX, PDU_HEADER, pdu_header

    pdus, at = [], 0
    while at + PDU_HEADER <= len(data):
        _, length = pdu_header(data[at:])
        if length > ASSOCIATE_RQ_MAX or at + PDU_HEADER + length > len(data):
            break  # refused before its body is read, or cut short: the connection is closed
        pdus.append(data[at:at + PDU_HEADER + length])
        at += PDU_HEADER + length
    return pdus


def _pdu(data: bytes) -> None:
    """The PDU reader: every PDU of the stream decoded as the receiver's associations decode them."""
    from node.netcompat import MalformedPDU, decode_pdu

    for pdu in _pdus(data):
        try:
            decode_pdu(pdu)
        except MalformedPDU:
            return  # A-ABORT and one log line: the connection ends


class Association:
    """What pynetdicom's ``DIMSEMessage.decode_msg`` consults: the accepted presentation contexts."""

    def __init__(self) -> None:
        from pynetdicom.presentation import PresentationContext

        cx = PresentationContext()
        cx.context_id, cx.abstract_syntax = CONTEXT_ID, "1.2.840.10008.5.1.4.1.1.2"
        cx.transfer_syntax = ["1.2.840.10008.1.2.1"]
        self._accepted_cx = {CONTEXT_ID: cx}


def _commands(scratch: Path) -> Callable[[bytes], None]:
    """The command set and data set reader: P-DATA-TF PDUs decoded into DIMSE messages, as the receiver does."""
    from pynetdicom import _config
    from pynetdicom.dimse_messages import DIMSEMessage
    from node.netcompat import P_DATA_TF, MalformedPDU, decode_message, decode_pdu, receive_into

    spool = scratch / "received"
    spool.mkdir(exist_ok=True)
    receive_into(spool)
    _config.STORE_RECV_CHUNKED_DATASET = True
    assoc = Association()

    def run(data: bytes) -> None:
        message = DIMSEMessage()
        try:
            for pdu in _pdus(data):
                if pdu[0] != P_DATA_TF:
                    break
                if decode_message(message, decode_pdu(pdu).to_primitive(), assoc):
                    message = DIMSEMessage()
        except MalformedPDU:
            pass  # A-ABORT and one log line: the association ends
        finally:
            for left in spool.iterdir():
                left.unlink()

    return run


def targets(scratch: Path) -> dict[str, Target]:
    """Every target, its seeds built (once) under ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)
    media = build_media(scratch)
    instances = instance_seeds()
    isos = [media["ours-iso"].read_bytes(), media["dcmtk-iso"].read_bytes()]
    small = [i for i in instances if len(i) < 16 * 1024]
    stored = [i for i in small if _storable(i)]
    return {
        "elements": Target("elements", _elements(scratch), instances, hot=(0, 4096)),
        "dicomdir": Target("dicomdir", _dicomdir(scratch, media), dicomdir_seeds(media)),
        # The volume descriptors, path tables and directories: the first sectors past the system area.
        "iso": Target("iso", _image(scratch, "input.iso"), isos, hot=(16 * 2048, 40 * 2048)),
        # The recognition sequence, volume descriptors, anchor, and our BD's metadata partition (sectors 288..).
        "udf": Target("udf", _image(scratch, "input.udf"), udf_seeds(scratch), hot=(16 * 2048, 360 * 2048)),
        "pdu": Target("pdu", _pdu, [*association_pdus(), echoscu_request(scratch)]),
        "commands": Target("commands", _commands(scratch),
                           [m for i in stored[:4] for m in message_pdus(i)]),
    }


def _storable(instance: bytes) -> bool:
    """An instance with the SOP Class and Instance UIDs a C-STORE-RQ names."""
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(instance))
        return bool(ds.SOPClassUID and ds.SOPInstanceUID and ds.preamble is not None)
    except Exception:  # damaged test files: not a seed for this target
        return False
