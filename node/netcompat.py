"""What medianode relies on beneath pynetdicom's documented API, in one place.

The AE, events, presentation contexts, statuses and ``pynetdicom._config`` are
used where they are needed. Everything below them (a private attribute, a
method replaced or overridden, a log message read, the order of two steps) is
reached only through this module, each item saying what it relies on and why.
``tests/test_netcompat.py`` pins each one against the installed pynetdicom
(``pynetdicom>=3.0.4,<3.1`` in pyproject.toml), so that an upgrade which moves
one fails there, by name, rather than as a slow or stalled transfer.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

from pynetdicom import dimse_messages, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import _PDU_TYPES
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationServer, AssociationSocket, RequestHandler, ThreadedAssociationServer

from node.errors import one_line
from node.pdu import (  # the PDU framing the gate and the guarded socket share with our own data path
    ASSOCIATE_RQ_MAX,
    INVALID_PARAMETER,
    P_DATA_TF,
    PDU_HEADER,
    REASON_NOT_SPECIFIED,
    a_abort,
    pdu_header,
)
from node.tls import failure

# -- receiving ---------------------------------------------------------------------------


def receive_into(directory: Path) -> None:
    """Make pynetdicom write each received data set into ``directory``.

    With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom streams a C-STORE's data set
    into a ``tempfile.NamedTemporaryFile`` in the default temp directory
    (``dimse_messages.DIMSEMessage.decode_msg``), which has no setting of its
    own; in the spool's ``tmp`` it stays on the spool's file system and is found by its clean-up.
    Each is a :class:`DataSetFile`, so that a full disk is answered, not aborted.
    """
    tempfile.tempdir = str(directory)
    dimse_messages.NamedTemporaryFile = DataSetFile  # type: ignore[attr-defined,assignment]


class DataSetFile:
    """The file pynetdicom streams a received data set into, made to survive a full disk.

    pynetdicom's ``DIMSEMessage.decode_msg`` opens it as
    ``NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")`` and calls
    ``write()`` and ``file.flush()`` for each P-DATA fragment, from the
    association's DUL thread, where an ``OSError`` (ENOSPC, EDQUOT, EIO) would
    abort the association with a traceback and leave the file behind; the
    storage service calls ``close()`` and unlinks ``name`` once the handler
    returns. Here the first failure is kept in :attr:`failure`, the file is
    removed at once, and every later fragment is dropped, so that the message
    completes and the handler answers it (:func:`write_failure`).
    """

    def __init__(self, **options: Any) -> None:
        self.failure: OSError | None = None
        self._fp: IO[bytes] | None = None
        try:
            self._fp = cast(IO[bytes], tempfile.NamedTemporaryFile(**options))  # noqa: SIM115 (closed by pynetdicom)
            self.name = self._fp.name
        except OSError as exc:
            self.name = os.path.join(tempfile.gettempdir(), "unwritten.dcm")
            self.failure = exc

    @property
    def file(self) -> DataSetFile:
        """What pynetdicom flushes (``NamedTemporaryFile.file``)."""
        return self

    def write(self, data: bytes) -> int:
        if self._fp is not None:
            try:
                return self._fp.write(data)
            except OSError as exc:
                self._fail(exc)
        return len(data)

    def flush(self) -> None:
        if self._fp is not None:
            try:
                self._fp.flush()
            except OSError as exc:
                self._fail(exc)

    def close(self) -> None:
        if self._fp is not None:
            try:
                self._fp.close()
            except OSError as exc:
                self._fail(exc)
            self._fp = None

    def _fail(self, exc: OSError) -> None:
        fp, self._fp = self._fp, None
        self.failure = self.failure or exc
        with suppress(OSError):
            if fp is not None:
                fp.close()  # its buffer's flush fails again; the descriptor is closed all the same
        with suppress(OSError):
            os.unlink(self.name)


def write_failure(event: Event) -> OSError | None:
    """Why the C-STORE's data set could not be written to disk (:class:`DataSetFile`), None when it was."""
    received = getattr(event.request, "_dataset_file", None)
    return received.failure if isinstance(received, DataSetFile) else None


def answer_as(assoc: Association, ae_title: str) -> None:
    """Answer this association as ``ae_title``: call it from ``EVT_REQUESTED``.

    pynetdicom triggers ``EVT_REQUESTED`` before ACSE negotiation
    (``Association.run_reactor``), and ``require_called_aet`` compares the called
    AE title with ``assoc.acceptor.ae_title`` during negotiation
    (``ACSE._negotiate_as_acceptor``), so one AE can answer to several titles,
    each a route's.
    """
    assoc.acceptor.ae_title = ae_title


def reject(assoc: Association, result: int, source: int, diagnostic: int, reason: str) -> None:
    """Refuse the association with A-ASSOCIATE-RJ (PS3.8 9.3.4): call it from ``EVT_REQUESTED``.

    pynetdicom has no public call for it. Its own checks (``ACSE._negotiate_as_acceptor``)
    call ``ACSE.send_reject`` (which sets ``is_rejected``, so ``Association.run`` skips
    negotiation), trigger ``EVT_REJECTED`` and ``kill()`` the association; the same steps here,
    ``reason`` riding on the ``EVT_REJECTED`` event for :func:`rejected_because`.
    """
    assoc.acse.send_reject(result, source, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {"medianode_reason": reason})
    assoc.kill()


def rejected_because(event: Event) -> str | None:
    """The reason :func:`reject` gave, or None for a rejection of pynetdicom's own."""
    reason = getattr(event, "medianode_reason", None)
    return reason if isinstance(reason, str) else None


def set_reactor_delay(assoc: Association, seconds: float) -> None:
    """Set how long the association's DUL reactor sleeps when a loop found nothing to do.

    pynetdicom's ``DULServiceProvider._run_loop_delay`` (1 ms) is paid twice per
    C-STORE, for the response to leave and the next request to be noticed;
    :class:`node.receive.storage.Live` shortens it for a lone storing association.
    Ignored if the attribute is gone (the speed-up is lost, nothing else).
    """
    if hasattr(assoc.dul, "_run_loop_delay"):
        assoc.dul._run_loop_delay = seconds


def is_busy(assoc: Association) -> bool:
    """True while a DIMSE message is half received or waiting in the queue.

    Reads ``DIMSEServiceProvider.message`` (the message being decoded) and
    ``msg_queue``: a draining receiver aborts an association only when neither
    holds a request it would lose.
    """
    return assoc.dimse.message is not None or not assoc.dimse.msg_queue.empty()


def dul_running(assoc: Association) -> bool:
    """True while the association's DUL thread runs (an A-ABORT it was given may not have left yet)."""
    return assoc.dul.is_alive()


class ReceiverServer(ThreadedAssociationServer):
    """pynetdicom's server for the associations our own data path declines, on the listening socket the
    receiver processes share, never accepting on it: :class:`node.receive.listener.Acceptor` accepts, and
    the lobby (:class:`Gate`) hands each connection that sent a whole A-ASSOCIATE-RQ to
    :meth:`start_association`.

    It overrides ``AssociationServer.server_bind`` (which binds a socket of its
    own) and ``server_close`` (which shuts the socket down for every process).
    """

    request_queue_size = socket.SOMAXCONN
    #: The shared listening socket (a descriptor of its own, closed here); None binds one of our own (tests).
    listener: socket.socket | None = None
    #: The bounds of an association's reads (:class:`node.receive.guard.Lobby`).
    gate: Gate | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", GuardedRequestHandler)
        self._handing: dict[int, tuple[bytes, Association | None]] = {}
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.listener is None:
            super().server_bind()
        else:
            cast(socket.socket, self.socket).close()
            self.socket = self.listener
            self.server_address = self.socket.getsockname()

    def start_association(self, client: socket.socket, address: Any, received: bytes) -> Association:
        """Give a connection that sent a whole A-ASSOCIATE-RQ (``received``) its association and threads.

        ``AssociationServer.process_request`` makes the association in the
        calling thread (``RequestHandler.handle``) and starts it; the request
        is read from ``received`` before the socket (:class:`GuardedSocket`).
        """
        client.setblocking(True)
        self._handing[id(client)] = (received, None)
        try:
            AssociationServer.process_request(self, client, address)
            assoc = self._handing[id(client)][1]
        finally:
            del self._handing[id(client)]
        assert assoc is not None
        return assoc

    def server_close(self) -> None:
        # Never shutdown(): it would stop the listening socket in every process sharing it.
        cast(socket.socket, self.socket).close()


# -- guarding ---------------------------------------------------------------------------

class Gate(Protocol):
    #: The Maximum Length we advertise (PS3.8 D.1.1): the largest P-DATA-TF body read.
    max_pdu: int
    #: Seconds a PDU has to arrive whole, from its first byte.
    pdu_seconds: float

    def cut(self, peer: str, reason: str) -> None:
        """Log (rate-limited) that the connection from ``peer`` was aborted, and why."""


class _Quiet(threading.local):
    cut = False


_quiet = _Quiet()


class _PDULossFilter(logging.Filter):
    """Drops the error lines (and tracebacks) pynetdicom's DUL logs for a PDU we cut, which we already logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _quiet.cut


for _logger in ("pynetdicom.dul", "pynetdicom.dimse"):
    logging.getLogger(_logger).addFilter(_PDULossFilter())

#: What ``Association._run_reactor`` logs when ``network_timeout`` expires, with no peer named.
IDLE_LINE = "Network timeout reached"


class _IdleFilter(logging.Filter):
    """Turns pynetdicom's idle-timeout line into the gate's line naming the peer: the record is
    logged from the association's own thread, which knows its peer and its gate."""

    def filter(self, record: logging.LogRecord) -> bool:
        assoc = threading.current_thread()
        if record.msg != IDLE_LINE or not isinstance(assoc, Association):
            return True
        sock = assoc.dul.socket
        if not isinstance(sock, GuardedSocket):
            return True
        sock._gate.cut(sock._peer, f"idle for {assoc.network_timeout:g} s, released")
        return False


logging.getLogger("pynetdicom.association").addFilter(_IdleFilter())


class Cut(OSError):
    """A PDU read stopped by its bound or deadline: the connection was aborted."""


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket, reading each PDU within :class:`Gate`.

    ``DULServiceProvider._read_pdu_data`` calls ``recv(6)`` for a PDU's header,
    then ``recv(length)`` for its body, blocking until all of it came. Here a
    header whose length is over the bound (``Gate.max_pdu`` for P-DATA-TF,
    :data:`ASSOCIATE_RQ_MAX` for the others) is answered with A-ABORT and the
    connection closed before its body is read; a PDU that is not whole within
    ``Gate.pdu_seconds`` of its first byte likewise. ``recv`` then returns
    nothing (the DUL takes a transport close, Evt17) or raises :class:`Cut`
    (the DUL logs it, :class:`_PDULossFilter` drops the lines). ``ready`` is
    true while the A-ASSOCIATE-RQ the gate read is still to be taken.
    """

    _received: bytearray
    _gate: Gate
    _peer: str
    _deadline: float | None

    def guard(self, received: bytes, bounds: Gate, peer: str) -> None:
        self._received, self._gate, self._peer, self._deadline = bytearray(received), bounds, peer, None

    @property
    def ready(self) -> bool:
        return bool(self._received) or super().ready

    def recv(self, nr_bytes: int) -> bytearray:
        if self._deadline is None:  # a header
            self._deadline = time.monotonic() + self._gate.pdu_seconds
            header = self._read(nr_bytes)
            if len(header) < PDU_HEADER:
                self._deadline = None
                if header:
                    self._abort(REASON_NOT_SPECIFIED, f"closed the connection within a PDU header ({len(header)} bytes)")
                return bytearray()
            kind, length = pdu_header(header)
            bound = self._gate.max_pdu if kind == P_DATA_TF else ASSOCIATE_RQ_MAX
            if length > bound:
                self._abort(INVALID_PARAMETER, f"PDU type 0x{kind:02X} of {length} bytes, over the {bound} we accept")
                self._deadline = None
                return bytearray()
            return header
        try:
            body = self._read(nr_bytes)
        finally:
            self._deadline = None
        if len(body) < nr_bytes:
            self._abort(REASON_NOT_SPECIFIED, f"closed the connection within a PDU ({len(body)} of {nr_bytes} bytes)")
        return body

    def _read(self, n: int) -> bytearray:
        """Up to ``n`` bytes: fewer only when the peer closed; :class:`Cut` at the deadline."""
        data = self._received[:n]
        del self._received[:n]
        sock = cast(socket.socket, self.socket)
        while len(data) < n:
            left = cast(float, self._deadline) - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(min(n - len(data), 1 << 16))
            except TimeoutError:
                self._abort(REASON_NOT_SPECIFIED, f"PDU not whole within {self._gate.pdu_seconds:g} s "
                                                  f"({len(data)} of {n} bytes)")
                raise Cut("PDU deadline") from None
            if not chunk:
                break
            data += chunk
        return data

    def _abort(self, reason: int, why: str) -> None:
        """A-ABORT the peer, close the connection, log why; silence pynetdicom's lines about it."""
        _quiet.cut = True
        self._gate.cut(self._peer, why)
        sock = cast(socket.socket, self.socket)
        try:
            sock.settimeout(1.0)
            sock.sendall(a_abort(reason))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class MalformedPDU(Exception):
    """A PDU (PS3.8 9.3), or a DIMSE message carried in P-DATA (PS3.7 6.3, PS3.8 E), that cannot be decoded."""


def decode_pdu(data: bytes) -> Any:
    """One whole PDU decoded as ``DULServiceProvider._decode_pdu`` does, and made the primitive the state machine
    makes of it next (``to_primitive``, which checks values decoding lets through); else :class:`MalformedPDU`.

    pynetdicom catches what decoding raises (Evt19, A-ABORT) but logs its traceback, and what
    ``to_primitive`` raises kills the association's thread with one (``StateMachine.do_action``).
    A P-DATA-TF's primitive is a list of its values, made without checks: it is left to the state machine.
    """
    kind = _PDU_TYPES.get(data[:1])
    if kind is None:
        raise MalformedPDU(f"unknown PDU type 0x{data[0]:02X}" if data else "an empty PDU")
    pdu = kind[0]()
    try:
        pdu.decode(data)
        if data[0] != P_DATA_TF:
            pdu.to_primitive()
    except Exception as exc:  # pynetdicom raises many kinds (struct.error, KeyError, ValueError, AssertionError)
        raise MalformedPDU(f"malformed {type(pdu).__name__.replace('_', '-')} PDU: {one_line(exc)}") from None
    return pdu


def decode_message(message: DIMSEMessage, primitive: P_DATA, assoc: Any) -> bool:
    """Add one P-DATA to a DIMSE message (``DIMSEMessage.decode_msg``); True once it is whole, then also converted
    as ``DIMSEServiceProvider.receive_primitive`` will (``message_to_primitive``); else :class:`MalformedPDU`.

    ``decode_msg`` raises out of the state machine, killing the association's thread with a traceback,
    for a command set it cannot decode, an unknown Command Field, or a presentation context not accepted.
    """
    try:
        whole = DIMSEMessage.decode_msg(message, primitive, assoc)
        if whole:
            message.message_to_primitive()
    except Exception as exc:  # pydicom and pynetdicom raise many kinds on a malformed command set
        raise MalformedPDU(f"malformed DIMSE message: {one_line(exc)}") from None
    return whole


def _guard_decoding(assoc: Association, sock: GuardedSocket) -> None:
    """Decode the association's PDUs and DIMSE messages with :func:`decode_pdu` and :func:`decode_message`:
    a malformed one is answered with A-ABORT and one log line (:meth:`GuardedSocket._abort`), no traceback.

    Replaces ``DULServiceProvider._decode_pdu`` (the DUL then takes the exception as Evt19, its lines
    dropped) and wraps ``DIMSEServiceProvider.receive_primitive``, giving each new DIMSE message a
    ``decode_msg`` of :func:`decode_message`; an instance attribute survives ``decode_msg`` changing
    the message's class to the one its Command Field names.
    """
    dul, dimse = assoc.dul, assoc.dimse
    receive = dimse.receive_primitive

    def decode(bytestream: bytearray) -> tuple[Any, str]:
        data = bytes(bytestream)
        evt.trigger(assoc, evt.EVT_DATA_RECV, {"data": data})
        try:
            pdu = decode_pdu(data)
        except MalformedPDU as exc:
            sock._abort(INVALID_PARAMETER, str(exc))
            raise
        evt.trigger(assoc, evt.EVT_PDU_RECV, {"pdu": pdu})
        return pdu, _PDU_TYPES[data[:1]][1]

    def receive_primitive(primitive: P_DATA) -> None:
        if dimse.message is None:
            message = dimse.message = DIMSEMessage()
            message.decode_msg = lambda p, a=None: decode_message(message, p, a)  # type: ignore[method-assign,assignment]
        try:
            receive(primitive)
        except MalformedPDU as exc:
            dimse.message = None
            sock._abort(INVALID_PARAMETER, str(exc))  # the DUL then reads the closed connection (Evt17)

    dul._decode_pdu = decode  # type: ignore[method-assign]
    dimse.receive_primitive = receive_primitive  # type: ignore[method-assign]


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's handler, its association's socket a :class:`GuardedSocket` (``_create_association``)."""

    server: ReceiverServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        server = self.server
        received, _ = server._handing.get(id(self.request), (b"", None))
        if server.gate is not None:
            sock = assoc.dul.socket
            sock.__class__ = GuardedSocket
            host, port = self.client_address[:2]
            cast(GuardedSocket, sock).guard(received, server.gate, f"{host}:{port}")
            _guard_decoding(assoc, cast(GuardedSocket, sock))
        if id(self.request) in server._handing:
            server._handing[id(self.request)] = (received, assoc)
        return assoc


# -- sending -----------------------------------------------------------------------------


def raw_socket(assoc: Association) -> socket.socket | None:
    """The association's TCP socket (``assoc.dul.socket.socket``), None once it is gone: the tests
    write hostile PDUs straight to it, past pynetdicom's encoders."""
    transport = assoc.dul.socket
    return None if transport is None else transport.socket


#: What pynetdicom's transport logs at ERROR, before the OS's reason, when connect() fails.
CONNECT_ERROR_PREFIX = "TCP Initialisation Error: "


@dataclass(frozen=True)
class ConnectFailure:
    """Why a connection failed: the OS's reason, or (``tls``) why the TLS handshake failed."""

    reason: str
    tls: bool = False


class _Failures(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.failures: list[ConnectFailure] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(CONNECT_ERROR_PREFIX):
            self.failures.append(ConnectFailure(message.removeprefix(CONNECT_ERROR_PREFIX)))
        elif record.exc_info and isinstance(record.exc_info[1], ssl.SSLError):
            self.failures[-1:] = [ConnectFailure(failure(record.exc_info[1]), tls=True)]
            return False  # its traceback, kept by a log handler, would keep the failed socket open
        return True


def collect_failed(assoc: Association) -> None:
    """Free now the socket of an association that failed to establish, without a ResourceWarning.

    pynetdicom drops it unclosed when connect() or the TLS handshake fails, or when
    its DUL thread (``assoc.dul``) meets an error reading the first PDU; a reference
    cycle through the exception's traceback keeps it until the collector runs, at
    some later moment, in some other code's warning filters. The DUL thread is
    joined (it ends once the association is aborted), then the collector run here.
    """
    if assoc.dul.is_alive():
        assoc.dul.join(assoc.acse_timeout or None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


#: pynetdicom's loggers that report a failed connection: the transport (connect(), the TLS handshake)
#: and the DUL (reading the first PDU, where TLS 1.3 tells of a client certificate the peer refused).
CONNECT_LOGGERS = ("pynetdicom.transport", "pynetdicom.dul")


@contextmanager
def connection_errors() -> Iterator[list[ConnectFailure]]:
    """Why a connection failed (e.g. "[Errno 111] Connection refused"), which pynetdicom only logs.

    ``AssociationSocket.connect`` catches the ``OSError`` and logs it on the
    transport's logger as :data:`CONNECT_ERROR_PREFIX` + the error, then, for an
    :class:`ssl.SSLError` (a failed handshake), the exception itself; the DUL logs
    an ``ssl.SSLError`` met reading a PDU (a TLS 1.3 alert after the handshake) the
    same way. Those exceptions are read here and their records dropped; the
    association then merely fails to establish.
    """
    failures = _Failures()
    loggers = [logging.getLogger(name) for name in CONNECT_LOGGERS]
    for each in loggers:
        each.addFilter(failures)
    try:
        yield failures.failures
    finally:
        for each in loggers:
            each.removeFilter(failures)
