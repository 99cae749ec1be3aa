"""Our own C-STORE data path (node.receive.storer, node.pdu): real peers through a real serve, then the
association itself in-process over a socket pair, fed streams framed every way the standard allows and
streams that break it (Hypothesis). Each C-STORE answered with success leaves the data set byte for
byte in the spool; each malformed stream ends that association with an A-ABORT or a closed connection,
never an unforeseen error, and leaves no file behind.
"""
from __future__ import annotations

import errno
import io
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import build_context

from node import pdu
from node.config import parse_config
from node.index import Index
from node.receive.accept import Request, own_path
from node.receive.instance import read_instance
from node.receive.storage import Live, SharedIndex, own_path_classes, supported
from node.receive.spool import Spool
from node.receive import storer
from node.receive.storer import Dispatcher, StoreAssociation
from tests.conftest import PEER_ENV, ct_series, need, until
from tests.test_serve import Node

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT = "1.2.840.10008.1.2.1"
STORE = "routes:\n  - {match: {called_aet: MEDIANODE}, action: store}\n"
#: The context IDs the in-process requests propose: CT Image Storage, Verification.
CT_CX, ECHO_CX = 1, 3


def dataset_bytes(path: Path) -> bytes:
    """A file's data set bytes, after its File Meta: what the spool must keep unchanged."""
    return path.read_bytes()[read_instance(path).dataset_offset:]


def spooled(data: Path) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of every file in the spool."""
    return {read_instance(p).sop_instance_uid: dataset_bytes(p) for p in (data / "spool").glob("*/*.dcm")}


def sent(files: list[Path]) -> dict[str, bytes]:
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in files}


# -- real peers through a real serve ---------------------------------------------------------


@pytest.fixture
def big_pdu_node(tmp_path: Path) -> Iterator[Node]:
    """A node whose maximum PDU is DCMTK's largest, 128 KiB, so that every size up to ours is tried."""
    need("echoscu", "storescu", "dcmsend")
    n = Node(tmp_path, extra=", max_pdu: 131072", routes=STORE)
    n.start()
    yield n
    n.stop()


@pytest.mark.parametrize("max_pdu", [4096, 16384, 65536, 131072])
def test_dcmtk_storescu_and_dcmsend_at_every_pdu_size_store_byte_for_byte(big_pdu_node: Node, tmp_path: Path,
                                                                       max_pdu: int) -> None:
    node = big_pdu_node
    files = ct_series(tmp_path / "a", 3, size=200) + ct_series(tmp_path / "b", 3, size=90)
    for tool, chunk in (("storescu", files[:3]), ("dcmsend", files[3:])):
        done = subprocess.run([tool, "--max-send-pdu", str(max_pdu), "-aet", "CT1", "-aec", "MEDIANODE", "127.0.0.1",
                               str(node.port), *map(str, chunk)], capture_output=True, env=PEER_ENV, timeout=60)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert spooled(node.data) == sent(files)
    assert "refused or aborted" not in node.logs()


@pytest.mark.parametrize("max_pdu", [4096, 0])
def test_pynetdicom_scu_stores_byte_for_byte_and_is_answered_by_our_own_path(tmp_path: Path, max_pdu: int) -> None:
    need("echoscu")
    node = Node(tmp_path, extra=f", max_pdu: {max_pdu}" if max_pdu else "",
                routes=STORE)
    node.start()
    try:
        files = ct_series(tmp_path / "c", 4, size=120)
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(CT, EXPLICIT)
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDIANODE")
        assert assoc.is_established
        assert str(assoc.acceptor.implementation_class_uid).startswith("2.25.")  # ours, not pydicom's
        assert assoc.acceptor.maximum_length == (max_pdu or 65536)
        assert assoc.send_c_echo().Status == 0
        for p in files:
            assert assoc.send_c_store(dcmread(p)).Status == 0
        assoc.release()
        assert spooled(node.data) == sent(files)
    finally:
        node.stop()


def test_garbage_after_associating_aborts_that_association_only(tmp_path: Path) -> None:
    need("echoscu", "storescu")
    node = Node(tmp_path, routes=STORE)
    node.start()
    try:
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(CT, EXPLICIT)
        good = ae.associate("127.0.0.1", node.port, ae_title="MEDIANODE")
        bad = ae.associate("127.0.0.1", node.port, ae_title="MEDIANODE")
        assert good.is_established and bad.is_established
        raw = cast(Any, bad).dul.socket.socket
        raw.sendall(struct.pack(">BBLLBB", 4, 0, 12, 2000, CT_CX, 0) + bytes(6))  # a PDV longer than its PDU
        until(lambda: bad.is_aborted or None, "the garbled association to be aborted", timeout=30)
        files = ct_series(tmp_path / "d", 2)
        for p in files:
            assert good.send_c_store(dcmread(p)).Status == 0
        good.release()
        assert spooled(node.data) == sent(files)
        said = "refused or aborted: malformed P-DATA-TF PDU: PDV item of 2000 bytes, 8 left in its P-DATA-TF"
        assert said in node.logs()
        done = subprocess.run(["storescu", "-aet", "CT1", "-aec", "MEDIANODE", "127.0.0.1", str(node.port),
                               *map(str, ct_series(tmp_path / "e", 1))], capture_output=True, env=PEER_ENV, timeout=60)
        assert done.returncode == 0
    finally:
        node.stop()


def test_past_max_associations_an_association_is_rejected_and_one_freed_is_taken_again(tmp_path: Path) -> None:
    need("echoscu")
    node = Node(tmp_path, extra=", max_associations: 2", routes=STORE)
    node.config.write_text(node.config.read_text().replace("workers: 2", "workers: 1"))  # one receiver: one cap
    node.start()
    try:
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(CT, EXPLICIT)
        held = [ae.associate("127.0.0.1", node.port, ae_title="MEDIANODE") for _ in range(2)]
        assert all(a.is_established for a in held)
        refused = ae.associate("127.0.0.1", node.port, ae_title="MEDIANODE")
        assert refused.is_rejected
        rj = cast(Any, refused.acceptor.primitive)
        assert (rj.result, rj.result_source, rj.diagnostic) == (2, 3, 2)
        held[0].release()
        until(lambda: "local limit exceeded (node.max_associations)" in node.logs() or None, "the refusal's line")
        again = until(lambda: (a := ae.associate("127.0.0.1", node.port, ae_title="MEDIANODE")).is_established
                      and a or None, "an association once one was released", timeout=30)
        again.release()
        held[1].release()
    finally:
        node.stop()


# -- the association in-process, over a socket pair -------------------------------------------


@dataclass
class Gate:
    """The lobby's bounds, and the culprit lines it would log."""

    max_pdu: int = 16384
    pdu_seconds: float = 5.0
    lines: list[str] = field(default_factory=list)

    def park(self, client: socket.socket, address: Any) -> None:
        raise AssertionError("not used in-process")

    def cut(self, peer: str, reason: str) -> None:
        self.lines.append(reason)


@dataclass
class Here:
    dispatcher: Dispatcher
    request: Request
    gate: Gate
    data: Path


def request_pdu(peer_max: int = 16384, *, also: str = "", identity: bool = False) -> bytes:
    """An A-ASSOCIATE-RQ for CT Image Storage and Verification (and ``also``, a third SOP class), as pynetdicom
    encodes it; ``identity``: with a User Identity item."""
    rq = A_ASSOCIATE()
    rq.application_context_name = "1.2.840.10008.3.1.1.1"
    rq.calling_ae_title, rq.called_ae_title = "CT1", "MEDIANODE"
    ct, echo = build_context(CT, [EXPLICIT]), build_context(VERIFICATION)
    ct.context_id, echo.context_id = CT_CX, ECHO_CX
    rq.presentation_context_definition_list = [ct, echo]
    if also:
        third = build_context(also)
        third.context_id = 5
        rq.presentation_context_definition_list = [ct, echo, third]
    length, klass = MaximumLengthNotification(), ImplementationClassUIDNotification()
    length.maximum_length_received, klass.implementation_class_uid = peer_max, "1.2.3.4"
    rq.user_information = [length, klass]
    if identity:
        user = UserIdentityNegotiation()
        user.user_identity_type, user.primary_field = 1, b"clerk"
        rq.user_information = [length, klass, user]
    encoded = A_ASSOCIATE_RQ()
    encoded.from_primitive(rq)
    return bytes(encoded.encode())


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Here]:
    data = tmp_path_factory.mktemp("storer") / "var"
    config = parse_config(f"node: {{data_dir: {data}, min_free_mb: 0, idle_seconds: 5}}\n"
                          "routes:\n  - {match: {called_aet: MEDIANODE}, action: store}\n", source="test")
    spool = Spool(data)
    index = Index(data / "index.sqlite")
    dispatcher = Dispatcher(cast(Any, None), cast(Any, None), supported=supported(config),
                            served=own_path_classes(config), spool=spool, index=SharedIndex(index), live=Live(config))
    gate = Gate()
    dispatcher.gate = gate
    request = own_path(request_pdu(), supported(config), own_path_classes(config))
    assert isinstance(request, Request) and set(request.accepted) == {CT_CX, ECHO_CX}
    yield Here(dispatcher, request, gate, data)
    index.close()


def test_only_associations_that_store_or_verify_take_our_own_path(tmp_path: Path) -> None:
    config = parse_config(f"node: {{data_dir: {tmp_path}}}\nmcm: {{}}\n", source="test")
    contexts, served = supported(config), own_path_classes(config)
    mcm = "1.2.840.10008.5.1.1.33"
    assert isinstance(own_path(request_pdu(), contexts, served), Request)
    assert isinstance(own_path(request_pdu(also="1.2.3.4.5"), contexts, served), Request)  # a class we refuse anyway
    # Media Creation Management, a user identity, a malformed request: pynetdicom's, which aborts the last
    assert own_path(request_pdu(also=mcm), contexts, served) == f"SOP class {mcm}"
    assert own_path(request_pdu(identity=True), contexts, served) == "user information item 0x58"
    assert own_path(request_pdu()[:-3], contexts, served) == "a malformed A-ASSOCIATE-RQ (its header)"


def converse(here: Here, chunks: list[bytes]) -> list[tuple[int, bytes]]:
    """Run one association on ``chunks`` (sent as they are, then the sending side shut); the PDUs it answered."""
    ours, theirs = socket.socketpair()
    received = bytearray()

    def send() -> None:
        try:
            for chunk in chunks:
                theirs.sendall(chunk)
            theirs.shutdown(socket.SHUT_WR)
        except OSError:  # aborted and closed meanwhile
            pass

    def read() -> None:
        while chunk := theirs.recv(1 << 16):
            received.extend(chunk)

    threads = [threading.Thread(target=send), threading.Thread(target=read)]
    for t in threads:
        t.start()
    StoreAssociation(here.dispatcher, ours, "peer:1", here.request, None).run()
    for t in threads:
        t.join(30)
    theirs.close()
    pdus, at = [], 0
    while at + 6 <= len(received):
        kind, length = pdu.pdu_header(received[at:])
        pdus.append((kind, bytes(received[at + 6:at + 6 + length])))
        at += 6 + length
    assert at == len(received)
    return pdus


def statuses(pdus: list[tuple[int, bytes]]) -> list[int]:
    """The Status of each response in the P-DATA-TF PDUs answered."""
    found, command = [], b""
    for kind, body in pdus:
        if kind != pdu.P_DATA_TF:
            continue
        at = 0
        while at < len(body):
            item, _, control = struct.unpack_from(">LBB", body, at)
            command += body[at + 6:at + 4 + item]
            at += 4 + item
            if control & pdu.LAST:
                values, i = {}, 0
                while i < len(command):
                    _, tag, n = struct.unpack_from("<HHL", command, i)
                    values[tag] = command[i + 8:i + 8 + n]
                    i += 8 + n
                found.append(struct.unpack("<H", values[0x0900])[0])
                command = b""
    return found


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    path = ct_series(tmp_path_factory.mktemp("ct"), 1, size=24)[0]
    return str(dcmread(path).SOPInstanceUID), dataset_bytes(path)


def pynetdicom_messages(uid: str, data_set: bytes, max_pdu: int) -> bytes:
    """A C-ECHO-RQ and a C-STORE-RQ as pynetdicom frames them for a peer of Maximum Length ``max_pdu``."""
    echo = C_ECHO()
    echo.MessageID, echo.AffectedSOPClassUID = 1, VERIFICATION
    store = C_STORE()
    store.MessageID, store.Priority = 2, 0
    store.AffectedSOPClassUID, store.AffectedSOPInstanceUID = CT, uid
    store.DataSet = io.BytesIO(data_set)
    out = b""
    for cx, primitive, message in ((ECHO_CX, echo, C_ECHO_RQ()), (CT_CX, store, C_STORE_RQ())):
        message.primitive_to_message(primitive)  # type: ignore[attr-defined]
        for p_data in message.encode_msg(cx, max_pdu):
            encoded = P_DATA_TF()
            encoded.from_primitive(p_data)
            out += encoded.encode()
    return out


RELEASE = pdu.a_release(pdu.A_RELEASE_RQ)


def leftovers(here: Here) -> list[Path]:
    return list((here.data / "tmp").iterdir())


@pytest.mark.parametrize("max_pdu", [4096, 4097, 8192, 16384])
def test_pynetdicom_framing_at_every_size_is_answered_and_released(here: Here, instance: tuple[str, bytes],
                                                                  max_pdu: int) -> None:
    uid, data_set = instance
    pdus = converse(here, [pynetdicom_messages(uid, data_set, max_pdu) + RELEASE])
    assert pdus[0][0] == pdu.A_ASSOCIATE_AC and pdus[-1][0] == pdu.A_RELEASE_RP
    assert statuses(pdus) == [0, 0]
    assert spooled(here.data)[uid] == data_set
    assert not leftovers(here)


def own_framing(uid: str, data_set: bytes, fragment: int, *, together: bool) -> bytes:
    """C-STORE-RQ framed by node.pdu: fragments of ``fragment`` bytes; ``together``: the command and the first
    data fragment as two PDVs of one PDU."""
    command = b"".join(pdu.p_data_tf(CT_CX, pdu.c_store_rq(5, CT, uid), fragment, pdu.COMMAND | pdu.LAST))
    data = b"".join(pdu.p_data_tf(CT_CX, data_set, fragment, pdu.LAST))
    if not together:
        return command + data
    (_, n_cmd), (_, n_data) = pdu.pdu_header(command), pdu.pdu_header(data)
    if len(command) != 6 + n_cmd:  # the command took several PDUs: join the last with the first data PDU
        return command + data
    merged = command[6:] + data[6:6 + n_data]
    return struct.pack(">BBL", 4, 0, len(merged)) + merged + data[6 + n_data:]


@pytest.mark.parametrize("fragment", [1, 2, 7, 64, 1000, 16378])
@pytest.mark.parametrize("together", [False, True])
def test_fragments_of_every_size_and_command_with_data_in_one_pdu(here: Here, instance: tuple[str, bytes],
                                                                   fragment: int, together: bool) -> None:
    uid, data_set = instance
    pdus = converse(here, [own_framing(uid, data_set, fragment, together=together) + RELEASE])
    assert statuses(pdus) == [0]
    assert spooled(here.data)[uid] == data_set


def test_a_refused_write_back_leaves_the_answer_to_the_fsync(here: Here, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a data set's write to the disk as it ends is a hint: when the kernel refuses it, the instance is
    placed all the same (its fsync says whether the disk holds it) and answered with success."""
    asked: list[int] = []

    def refuse(fd: int, offset: int, length: int, *, wait: bool = False) -> None:
        asked.append(length)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(storer, "write_back", refuse)
    path = ct_series(tmp_path, 1, size=24)[0]
    uid, data_set = str(dcmread(path).SOPInstanceUID), dataset_bytes(path)
    pdus = converse(here, [own_framing(uid, data_set, 16378, together=False) + RELEASE])
    assert statuses(pdus) == [0]
    assert spooled(here.data)[uid] == data_set
    assert len(asked) == 1 and asked[0] > len(data_set)  # the whole file: the spool's File Meta, then the data set
    assert not leftovers(here)


def test_a_stream_split_at_every_boundary_is_read_alike(here: Here, instance: tuple[str, bytes]) -> None:
    uid, data_set = instance
    stream = own_framing(uid, data_set, 300, together=True) + RELEASE
    for cut in [*range(1, 80), *range(80, len(stream), 37)]:
        pdus = converse(here, [stream[:cut], stream[cut:]])
        assert statuses(pdus) == [0], cut
    assert spooled(here.data)[uid] == data_set
    assert not leftovers(here)


def test_a_data_set_cut_short_by_the_peer_leaves_nothing_and_is_named(here: Here, instance: tuple[str, bytes]) -> None:
    uid, data_set = instance
    before = dict(spooled(here.data))
    stream = own_framing(uid + ".9", data_set, 1000, together=False)
    pdus = converse(here, [stream[:len(stream) // 2]])
    assert statuses(pdus) == []
    assert spooled(here.data) == before and not leftovers(here)
    assert here.gate.lines[-1] == "closed the connection within a PDU or a message"


def test_a_pdu_over_our_maximum_is_aborted_unread(here: Here) -> None:
    pdus = converse(here, [struct.pack(">BBL", 4, 0, here.gate.max_pdu + 1)])
    assert pdus[-1] == (pdu.A_ABORT, pdu.a_abort(pdu.INVALID_PARAMETER)[6:])
    assert here.gate.lines[-1] == f"PDU type 0x04 of {here.gate.max_pdu + 1} bytes, over the 16384 we accept"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_and_mutated_streams_end_in_an_abort_or_a_close_and_leave_nothing(
        here: Here, instance: tuple[str, bytes], data: st.DataObject) -> None:
    uid, data_set = instance
    valid = own_framing(uid, data_set, data.draw(st.integers(1, 600)), together=data.draw(st.booleans())) + RELEASE
    stream = data.draw(st.one_of(
        st.binary(max_size=4000),
        st.builds(lambda at, b: valid[:at] + bytes([b]) + valid[at + 1:], st.integers(0, len(valid) - 1),
                  st.integers(0, 255)),
        st.builds(lambda at, junk: valid[:at] + junk + valid[at:], st.integers(0, len(valid)), st.binary(max_size=64)),
        st.builds(lambda at: valid[:at], st.integers(0, len(valid)))))
    before, files = len(here.gate.lines), set((here.data / "spool").glob("*/*.dcm"))
    pdus = converse(here, [stream])
    assert pdus[0][0] == pdu.A_ASSOCIATE_AC
    assert all(kind in (pdu.A_ASSOCIATE_AC, pdu.P_DATA_TF, pdu.A_RELEASE_RP, pdu.A_ABORT) for kind, _ in pdus)
    assert "unforeseen error" not in here.gate.lines[before:]
    assert not leftovers(here)
    new = set((here.data / "spool").glob("*/*.dcm")) - files
    assert len(new) <= statuses(pdus).count(0)  # only what was answered with success is kept


def test_pdvs_and_command_sets_read_as_pynetdicom_frames_them(instance: tuple[str, bytes]) -> None:
    uid, data_set = instance
    wire = pdu.Wire(_Trickle(pynetdicom_messages(uid, data_set, 4096)), size=4096)
    commands, data, command = [], bytearray(), b""
    with pytest.raises(pdu.Closed):
        while True:
            kind, length = pdu.pdu_header(wire.take(pdu.PDU_HEADER))
            assert kind == pdu.P_DATA_TF
            for _, control, n in pdu.pdvs(wire, length):
                piece = b"".join(bytes(p) for p in wire.stream(n))
                if not control & pdu.COMMAND:
                    data += piece
                    continue
                command += piece
                if control & pdu.LAST:
                    commands.append(pdu.read_command(command))
                    command = b""
    assert [(c.field, c.message_id, c.sop_class, c.has_data_set) for c in commands] == \
        [(pdu.C_ECHO_RQ, 1, VERIFICATION, False), (pdu.C_STORE_RQ, 2, CT, True)]
    assert commands[1].sop_instance == uid and bytes(data) == data_set


class _Trickle:
    """Bytes handed over as a connection may: five at a time."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)

    def recv_into(self, buffer: memoryview, nbytes: int) -> int:
        return self.stream.readinto(buffer[:min(nbytes, 5)])
