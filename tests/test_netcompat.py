"""node.netcompat against the installed pynetdicom: each internal we rely on is still there and still works."""

from __future__ import annotations

import inspect
import socket
import socketserver
import tempfile
import threading
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationServer

from node import netcompat
from tests.conftest import bundled, free_port, until

VERIFICATION = (Verification, [ImplicitVRLittleEndian])


def test_the_installed_pynetdicom_is_the_pinned_one() -> None:
    major, minor, patch = (int(n) for n in version("pynetdicom").split(".")[:3])
    assert (3, 0, 4) <= (major, minor, patch) < (3, 1, 0)


@pytest.fixture
def scp() -> Iterator[AE]:
    """A pynetdicom SCP on a free loopback port (``ae.port``), C-ECHO and CT storage, stopped afterwards."""
    ae = AE("NETCOMPAT")
    ae.require_called_aet = True
    ae.add_supported_context(*VERIFICATION)
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", [ImplicitVRLittleEndian, "1.2.840.10008.1.2.1"])
    yield ae
    # An association that rejected or released waits in Sta13 for the peer to close, and shutdown's abort
    # there is an event pynetdicom's state machine refuses, in its own thread. Every test here ends its
    # associations (released or rejected): let their peers close them first.
    until(lambda: not ae.active_associations, "the SCP's associations to end")
    ae.shutdown()


def start(ae: AE, *handlers: Any, server_class: Any = None) -> int:
    port = free_port()
    ae.start_server(("127.0.0.1", port), block=False, evt_handlers=list(handlers),
                    **({"server_class": server_class} if server_class else {}))
    return port


def associate(port: int, called: str = "NETCOMPAT") -> Association:
    ae = AE("SCU")
    ae.add_requested_context(*VERIFICATION)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ImplicitVRLittleEndian)
    return ae.associate("127.0.0.1", port, ae_title=called)


def unconnected() -> Association:
    """An association whose threads never start: its DUL and DIMSE providers, idle."""
    assoc = Association(AE(), "requestor")
    assoc.dimse_timeout = 0.05
    return assoc


# -- receiving ---------------------------------------------------------------------------


def test_receive_into_places_the_streamed_data_set(scp: AE, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    monkeypatch.setattr(tempfile, "tempdir", None)
    netcompat.receive_into(tmp_path)
    seen: list[Path] = []

    def handle_store(event: Event) -> int:
        seen.append(Path(event.dataset_path))
        return 0x0000

    port = start(scp, (evt.EVT_C_STORE, handle_store))
    assoc = associate(port)
    assert int(assoc.send_c_store(dcmread(bundled("CT_small.dcm"))).Status) == 0x0000
    assoc.release()
    assert [p.parent for p in seen] == [tmp_path]


def test_answer_as_from_evt_requested_passes_the_called_title_check(scp: AE) -> None:
    port = start(scp, (evt.EVT_REQUESTED, lambda event: netcompat.answer_as(event.assoc, "ROUTE")))
    assoc = associate(port, called="ROUTE")
    assert assoc.is_established
    assoc.release()


def test_reject_from_evt_requested_refuses_with_the_reason_on_evt_rejected(scp: AE) -> None:
    reasons: list[str | None] = []
    port = start(scp, (evt.EVT_REQUESTED, lambda event: netcompat.reject(event.assoc, 1, 1, 3, "wrong address")),
                 (evt.EVT_REJECTED, lambda event: reasons.append(netcompat.rejected_because(event))))
    assoc = associate(port)
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (1, 1, 3)
    assert reasons == ["wrong address"]


def test_a_rejection_of_pynetdicom_s_own_has_no_reason_of_ours(scp: AE) -> None:
    reasons: list[str | None] = []
    assoc = associate(start(scp, (evt.EVT_REJECTED, lambda event: reasons.append(netcompat.rejected_because(event)))),
                      called="ROUTE")
    assert assoc.is_rejected and reasons == [None]


def test_without_answer_as_the_called_title_is_refused(scp: AE) -> None:
    assoc = associate(start(scp), called="ROUTE")
    assert assoc.is_rejected


def test_the_reactor_sleeps_the_delay_we_set() -> None:
    assoc = unconnected()
    assert assoc.dul._run_loop_delay == 0.001  # the default our IDLE_LOOP_S restores
    netcompat.set_reactor_delay(assoc, 0.0002)
    assert assoc.dul._run_loop_delay == 0.0002
    assert "time.sleep(self._run_loop_delay)" in inspect.getsource(DULServiceProvider.run_reactor)


def test_is_busy_reads_the_partial_message_and_the_queue() -> None:
    assoc = unconnected()
    assert not netcompat.is_busy(assoc)
    assoc.dimse.msg_queue.put((1, object()))  # type: ignore[arg-type]
    assert netcompat.is_busy(assoc)
    assoc.dimse.msg_queue.get()
    assoc.dimse.message = object()  # type: ignore[assignment]
    assert netcompat.is_busy(assoc)
    assert not netcompat.dul_running(assoc)


@pytest.mark.parametrize("method", ["server_bind", "server_close"])
def test_the_server_methods_we_override_are_on_the_base_class(method: str) -> None:
    ours = inspect.signature(getattr(netcompat.ReceiverServer, method))
    theirs = inspect.signature(getattr(AssociationServer, method))
    assert list(ours.parameters) == list(theirs.parameters) == ["self"]


def test_the_base_server_does_what_we_override() -> None:
    """It shuts the listening socket down for everyone; it makes and starts an association in process_request."""
    assert "SHUT_RDWR" in inspect.getsource(AssociationServer.server_close)
    assert "finish_request" in inspect.getsource(socketserver.BaseServer.process_request)


class Bounds:
    max_pdu, pdu_seconds = 16384, 5.0

    def cut(self, peer: str, reason: str) -> None:
        raise AssertionError(reason)


def test_receiver_server_serves_a_connection_handed_over_with_its_request(scp: AE) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server_class = type("Shared", (netcompat.ReceiverServer,), {"listener": listener.dup()})
    server = scp.make_server(("127.0.0.1", port), server_class=server_class)
    server.gate = Bounds()

    def hand_over() -> None:
        client, address = listener.accept()
        received = client.recv(6)
        while len(received) < 6 + int.from_bytes(received[2:6], "big"):
            received += client.recv(6 + int.from_bytes(received[2:6], "big") - len(received))
        server.start_association(client, address, received)

    threading.Thread(target=hand_over, daemon=True).start()
    try:
        assoc = associate(port)
        assert int(assoc.send_c_echo().Status) == 0x0000
        assoc.release()
    finally:
        server.server_close()
    assert listener.fileno() != -1  # its own descriptor closed, the listening socket not shut down
    listener.close()


# -- sending -----------------------------------------------------------------------------


def test_raw_socket_is_the_association_s_tcp_socket(scp: AE) -> None:
    port = start(scp)
    assoc = associate(port)
    sock = netcompat.raw_socket(assoc)
    assert isinstance(sock, socket.socket)
    assert sock.getpeername() == ("127.0.0.1", port)
    assoc.release()
    assert netcompat.raw_socket(assoc) is None


def test_connection_errors_reads_the_reason_pynetdicom_logs() -> None:
    ae = AE("SCU")
    ae.add_requested_context(*VERIFICATION)
    with netcompat.connection_errors() as errors, warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # pynetdicom drops the failed socket unclosed
        assoc = ae.associate("127.0.0.1", free_port())
    assert not assoc.is_established
    assert errors == [netcompat.ConnectFailure("[Errno 111] Connection refused")]


def test_the_idle_line_is_logged_by_the_association_s_own_thread() -> None:
    """_IdleFilter names the peer from ``threading.current_thread()``: pynetdicom must still log its
    idle line from ``Association._run_reactor`` (which runs in the Association thread)."""
    source = inspect.getsource(Association._run_reactor)
    assert f'LOGGER.error("{netcompat.IDLE_LINE}")' in source
    assert issubclass(Association, threading.Thread)


def test_the_loggers_and_thread_a_failed_connection_is_read_from() -> None:
    """:func:`netcompat.connection_errors` listens on these loggers; :func:`netcompat.collect_failed` joins the DUL."""
    from pynetdicom import dul, transport

    assert {transport.LOGGER.name, dul.LOGGER.name} == set(netcompat.CONNECT_LOGGERS)
    ae = AE("SCU")
    ae.add_requested_context(*VERIFICATION)
    with netcompat.connection_errors() as errors, warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        assoc = ae.associate("127.0.0.1", free_port())
    assert isinstance(assoc, Association) and errors and not errors[0].tls
    netcompat.collect_failed(assoc)
    assert not assoc.dul.is_alive()


def test_the_decoding_we_guard_is_where_pynetdicom_calls_it() -> None:
    """``_guard_decoding`` replaces the DUL's ``_decode_pdu`` and wraps the DIMSE provider's ``receive_primitive``,
    which asks ``self.message.decode_msg``: each must still be called so, and ``decode_msg`` must still change
    the message's class (an instance attribute outlives that)."""
    assert "self._decode_pdu(bytestream)" in inspect.getsource(DULServiceProvider._read_pdu_data)
    assert "self.message.decode_msg(primitive, self.assoc)" in inspect.getsource(DIMSEServiceProvider.receive_primitive)
    assert "self.__class__ = _MESSAGE_TYPES[" in inspect.getsource(DIMSEMessage.decode_msg)
