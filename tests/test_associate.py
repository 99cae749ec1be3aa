"""The importer's own association set-up, release and abort (PS3.8 9.3.2-9.3.4, 9.3.6-9.3.8, Annex D).

Peers on 127.0.0.1: DCMTK storescp (its default maximum PDU and ``--max-pdu 4096``), the pynetdicom SCP of
tests/status_scp.py, and :class:`RawPeer`, a listening socket in this process that answers each
A-ASSOCIATE-RQ with chosen bytes (a rejection, no context accepted, garbage, an A-ABORT, a close, silence)
and plays the release's end of it. What our side sent is decoded with pynetdicom's own PDU classes, a
second reading of the standard.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom.pdu import A_ASSOCIATE_RQ as RQ_PDU

from node import pdu
from node.dicom import MEDIANODE_CLASS_UID, MEDIANODE_VERSION_NAME
from node.read import sender
from node.read.importer import import_medium
from node.read.sender import SendTarget, _NoAssociation, associate
from tests.conftest import StatusSCP, StoreSCP, ct_series, until
from tests.test_import import dcmtk_medium, received, to

VERIFICATION, CT = "1.2.840.10008.1.1", "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"
CONTEXTS = [(VERIFICATION, [IMPLICIT]), (CT, [EXPLICIT, IMPLICIT])]
RELEASE_RQ, RELEASE_RP = pdu.a_release(pdu.A_RELEASE_RQ), pdu.a_release(pdu.A_RELEASE_RP)
USER_ABORT = pdu.a_abort(0, source=0)
ROOT = Path(__file__).resolve().parents[1]


def item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def ac(*contexts: tuple[int, int, str], max_length: int = 16384) -> bytes:
    """An A-ASSOCIATE-AC PDU: (ID, result, transfer syntax) per context (PS3.8 9.3.3)."""
    body = struct.pack(">HH16s16s32s", 1, 0, b"PEER".ljust(16), b"MEDIANODE".ljust(16), bytes(32))
    body += item(0x10, pdu.APPLICATION_CONTEXT.encode())
    for number, result, syntax in contexts:
        body += item(0x21, bytes([number, 0, result, 0]) + item(0x40, syntax.encode()))
    body += item(0x50, item(0x51, struct.pack(">L", max_length)))
    return struct.pack(">BBL", pdu.A_ASSOCIATE_AC, 0, len(body)) + body


def rj(result: int, source: int, reason: int) -> bytes:
    return struct.pack(">BBLBBBB", pdu.A_ASSOCIATE_RJ, 0, 4, 0, result, source, reason)


ACCEPTED = ac((1, 0, IMPLICIT), (3, 0, EXPLICIT))


# -- a peer of raw bytes -------------------------------------------------------------------------------


def read_pdu(conn: socket.socket) -> bytes | None:
    """One whole PDU, or None once the connection is closed."""
    head = conn.recv(6, socket.MSG_WAITALL)
    if len(head) < 6:
        return None
    length = struct.unpack(">L", head[2:])[0]
    return head + (conn.recv(length, socket.MSG_WAITALL) if length else b"")


@dataclass
class RawPeer:
    """Answers each connection's A-ASSOCIATE-RQ with ``answer`` (None: close at once), then each A-RELEASE-RQ
    with ``on_release`` (None: silence); records, per connection, every PDU it was sent until the close."""

    answer: bytes | None
    on_release: bytes | None = RELEASE_RP
    listener: socket.socket = field(default_factory=socket.socket)
    connections: list[list[bytes]] = field(default_factory=list)
    ended: list[threading.Event] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def target(self, called: str = "PEER") -> SendTarget:
        return SendTarget(called, "127.0.0.1", self.port)

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # the listener closed: stopped
                return
            pdus: list[bytes] = []
            ended = threading.Event()
            self.connections.append(pdus)
            self.ended.append(ended)
            with conn:
                self.converse(conn, pdus)
            ended.set()

    def converse(self, conn: socket.socket, pdus: list[bytes]) -> None:
        while (got := read_pdu(conn)) is not None:
            pdus.append(got)
            reply = self.answer if got[0] == pdu.A_ASSOCIATE_RQ else self.on_release if got == RELEASE_RQ else b""
            if reply is None and got[0] == pdu.A_ASSOCIATE_RQ:
                return
            if reply:
                conn.sendall(reply)

    def finished(self, n: int = 0) -> list[bytes]:
        """What connection ``n`` was sent, once our side has closed it."""
        until(lambda: len(self.ended) > n and self.ended[n].is_set(), f"connection {n} to end")
        return self.connections[n]


@pytest.fixture
def raw_peer() -> Iterator[Callable[..., RawPeer]]:
    peers: list[tuple[RawPeer, threading.Thread]] = []

    def start(answer: bytes | None, on_release: bytes | None = RELEASE_RP) -> RawPeer:
        peer = RawPeer(answer, on_release)
        peer.listener.bind(("127.0.0.1", 0))
        peer.listener.listen(4)
        thread = threading.Thread(target=peer.serve, daemon=True)
        thread.start()
        peers.append((peer, thread))
        return peer

    yield start
    for peer, thread in peers:
        peer.listener.shutdown(socket.SHUT_RDWR)
        peer.listener.close()
        thread.join(timeout=10)
        assert not thread.is_alive()


@pytest.fixture
def one_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "RETRY_DELAYS", ())


def refused(target: SendTarget, contexts: list[tuple[str, list[str]]] | None = None) -> _NoAssociation:
    with pytest.raises(_NoAssociation) as caught:
        associate(target, contexts or CONTEXTS)
    return caught.value


# -- what we send -----------------------------------------------------------------------------------


def test_the_request_is_what_pynetdicom_reads_it_to_be(raw_peer: Callable[..., RawPeer]) -> None:
    peer = raw_peer(ACCEPTED)
    session = associate(peer.target("THEIRS"), CONTEXTS)
    session.close()
    rq, release = peer.finished()
    assert release == RELEASE_RQ
    decoded = RQ_PDU()
    decoded.decode(rq)
    primitive = decoded.to_primitive()
    assert (primitive.calling_ae_title, primitive.called_ae_title) == ("MEDIANODE", "THEIRS")
    assert primitive.application_context_name == pdu.APPLICATION_CONTEXT
    assert [(cx.context_id, cx.abstract_syntax, cx.transfer_syntax)
            for cx in primitive.presentation_context_definition_list] == [
        (1, VERIFICATION, [IMPLICIT]), (3, CT, [EXPLICIT, IMPLICIT])]
    info = {type(i).__name__: i for i in primitive.user_information}
    assert info["MaximumLengthNotification"].maximum_length_received == sender.MAX_PDU_LENGTH == 16382
    assert info["ImplementationClassUIDNotification"].implementation_class_uid == MEDIANODE_CLASS_UID
    assert info["ImplementationVersionNameNotification"].implementation_version_name == MEDIANODE_VERSION_NAME


def test_an_import_starts_without_pynetdicom_pydicom_or_numpy() -> None:
    """What `medianode import` loads before it meets a file that needs them (seconds of start-up on 2 cores)."""
    loaded = subprocess.run([sys.executable, "-c", "import json, sys, node.read.importer; print(json.dumps(sorted("
                             "m for m in ('pynetdicom', 'pydicom', 'numpy') if m in sys.modules)))"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(loaded.stdout) == []


# -- real peers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "fragment"), [((), 16384 - 6), (("--max-pdu", "4096"), 4096 - 6)],
                         ids=["storescp", "storescp --max-pdu 4096"])
def test_storescp_s_maximum_sizes_the_fragments(tmp_path: Path, storescp_with: Callable[..., StoreSCP],
                                                options: tuple[str, ...], fragment: int) -> None:
    scp = storescp_with("+xa", *options)
    session = associate(SendTarget(*to(scp)), CONTEXTS)
    try:
        assert session.fragment == fragment
        assert session.contexts == {(VERIFICATION, IMPLICIT): 1, (CT, EXPLICIT): 3}
    finally:
        session.close()
    assert not session.open
    sources = dcmtk_medium(tmp_path / "cd", ct_series(tmp_path / "src", 3, size=128))
    report = import_medium(tmp_path / "cd", destination=to(scp), associations=1)
    assert (report.ok, report.sent) == (True, 3), report.outcomes
    assert set(received(scp.folder)) == set(sources)


@pytest.mark.parametrize(("max_pdu", "fragment"), [(16382, 16376), (0, 1 << 20)], ids=["16382", "unlimited"])
def test_a_pynetdicom_scp(status_scp: Callable[..., StatusSCP], max_pdu: int, fragment: int) -> None:
    scp = status_scp(max_pdu=max_pdu)
    session = associate(SendTarget(*to(scp)), CONTEXTS)
    assert session.fragment == fragment
    assert {abstract for abstract, _ in session.contexts} == {VERIFICATION, CT}
    session.close()
    assert session.socket.fileno() == -1
    again = associate(SendTarget(*to(scp)), CONTEXTS)  # the release left the SCP ready for the next
    again.abort()


# -- refusals ----------------------------------------------------------------------------------------


def test_a_permanent_rejection_is_not_retried(raw_peer: Callable[..., RawPeer]) -> None:
    peer = raw_peer(rj(1, 1, 7))
    error = refused(peer.target())
    assert (error.reason, error.permanent) == (
        f"PEER@127.0.0.1:{peer.port} rejected the association "
        "(Rejected Permanent, Service User: Called AE title not recognised)", True)
    assert [pdus[0][0] for pdus in (peer.finished(0),)] == [pdu.A_ASSOCIATE_RQ]
    assert len(peer.connections) == 1


def test_a_transient_rejection_is_retried(raw_peer: Callable[..., RawPeer], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "RETRY_DELAYS", (0.0, 0.0))
    peer = raw_peer(rj(2, 3, 1))
    error = refused(peer.target())
    assert (error.reason, error.permanent) == (
        f"PEER@127.0.0.1:{peer.port} rejected the association "
        "(Rejected Transient, Service Provider (Presentation): Temporary congestion)", False)
    peer.finished(2)
    assert len(peer.connections) == 3


def test_no_context_accepted(raw_peer: Callable[..., RawPeer]) -> None:
    peer = raw_peer(ac((1, 3, IMPLICIT), (3, 4, EXPLICIT)))
    error = refused(peer.target())
    assert error.permanent
    assert error.reason == (f"PEER@127.0.0.1:{peer.port} accepted none of the SOP classes: CT Image Storage "
                            f"({CT}), Verification SOP Class ({VERIFICATION})")
    assert peer.finished()[1:] == [USER_ABORT]


@pytest.mark.parametrize(("answer", "why"), [
    (b"HELLO, THIS IS NO PDU AT ALL", "answered the association request with a malformed PDU (PDU type 0x48 of "
                                      "1280069420 bytes, over the 1048576 taken)"),
    (ac((2, 0, IMPLICIT)), "answered the association request with a malformed PDU (presentation context 2 "
                           "accepted, with 1 transfer syntaxes, of 2 proposed)"),
    (ac((3, 0, "1.2.840.10008.1.2.5")), "answered the association request with a malformed PDU (presentation "
                                        "context 3 accepted in '1.2.840.10008.1.2.5', which we did not propose)"),
    (ACCEPTED[:99] + struct.pack(">BBH", 0x21, 0, 5000) + ACCEPTED[103:], None),
], ids=["garbage", "an even context ID", "a syntax not proposed", "an item past its PDU"])
def test_a_malformed_answer_is_aborted(raw_peer: Callable[..., RawPeer], one_attempt: None, answer: bytes,
                                       why: str | None) -> None:
    peer = raw_peer(answer)
    error = refused(peer.target())
    assert not error.permanent
    assert error.reason.startswith(f"PEER@127.0.0.1:{peer.port} answered the association request with a malformed "
                                   "PDU ("), error.reason
    if why is not None:
        assert error.reason == f"PEER@127.0.0.1:{peer.port} {why}"
    assert peer.finished()[1:] == [USER_ABORT]


def test_an_abort_or_a_close_instead_of_an_answer(raw_peer: Callable[..., RawPeer], one_attempt: None) -> None:
    aborting = raw_peer(pdu.a_abort(0, source=0))
    assert refused(aborting.target()).reason == f"PEER@127.0.0.1:{aborting.port} aborted the association request"
    closing = raw_peer(None)
    assert refused(closing.target()).reason == (
        f"PEER@127.0.0.1:{closing.port} closed the connection instead of answering the association request")


def test_no_answer_within_the_acse_timeout(raw_peer: Callable[..., RawPeer], one_attempt: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "ACSE_TIMEOUT", 1.0)
    peer = raw_peer(b"")  # reads the request, says nothing
    error = refused(peer.target())
    assert (error.reason, error.permanent) == (f"no association with PEER@127.0.0.1:{peer.port}: no answer within 1 s",
                                               False)
    assert len(peer.finished()) == 1  # and we closed the connection


def test_a_refused_connection(one_attempt: None) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        error = refused(SendTarget("PACS", "127.0.0.1", port))
    assert error.reason == f"cannot connect to PACS@127.0.0.1:{port}: [Errno 111] Connection refused"


def test_an_ae_title_no_pdu_can_carry() -> None:
    with pytest.raises(ValueError, match="called AE title 'SEVENTEEN_LETTERS': 1 to 16 ASCII characters"):
        associate(SendTarget("SEVENTEEN_LETTERS", "127.0.0.1", 9), CONTEXTS)


# -- release -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("on_release", "sent"), [
    (RELEASE_RP, [RELEASE_RQ]),
    (RELEASE_RQ + RELEASE_RP, [RELEASE_RQ, RELEASE_RP]),  # a collision: we answer its RQ, then take its RP
    (pdu.a_abort(0, source=0), [RELEASE_RQ]),
], ids=["answered", "collision", "aborted"])
def test_release(raw_peer: Callable[..., RawPeer], on_release: bytes, sent: list[bytes]) -> None:
    peer = raw_peer(ACCEPTED, on_release)
    session = associate(peer.target(), CONTEXTS)
    session.close()
    assert session.socket.fileno() == -1
    assert peer.finished()[1:] == sent


def test_a_release_never_answered_is_bounded(raw_peer: Callable[..., RawPeer], monkeypatch: pytest.MonkeyPatch) -> None:
    peer = raw_peer(ACCEPTED, None)
    session = associate(peer.target(), CONTEXTS)
    monkeypatch.setattr(sender, "ACSE_TIMEOUT", 0.5)
    session.close()
    assert peer.finished()[1:] == [RELEASE_RQ]


def test_abort_then_close(raw_peer: Callable[..., RawPeer]) -> None:
    peer = raw_peer(ACCEPTED)
    session = associate(peer.target(), CONTEXTS)
    session.abort()
    session.close()  # nothing more once aborted
    assert peer.finished()[1:] == [USER_ABORT]


# -- the answer's reader, on any bytes ------------------------------------------------------------------


def read_any(data: bytes) -> None:
    """Only a valid answer or Malformed, never another exception."""
    kind = data[0] if data else 0
    try:
        answer = pdu.associate_answer(kind, data[6:], CONTEXTS)
    except pdu.Malformed:
        return
    assert isinstance(answer, pdu.Accepted | pdu.Rejected)
    if isinstance(answer, pdu.Accepted):
        for number, (abstract, syntax) in answer.contexts.items():
            assert (abstract, syntax) in [(a, s) for a, ss in CONTEXTS for s in ss]
            assert CONTEXTS[number // 2][0] == abstract
    else:
        str(answer)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    read_any(bytes([pdu.A_ASSOCIATE_AC]) + data)
    read_any(bytes([pdu.A_ASSOCIATE_RJ]) + data)
    read_any(data)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from([ACCEPTED, ac((1, 0, IMPLICIT), (3, 2, EXPLICIT), max_length=0), rj(1, 2, 2)]),
       st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 400))
def test_mutated_answers(valid: bytes, changes: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(valid)
    for at, value in changes:
        if at < len(data):
            data[at] = value
    read_any(bytes(data[:len(data) - cut % (len(data) + 1)]))
