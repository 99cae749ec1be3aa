"""Our own C-STORE data path, for the associations that only store (and verify).

pynetdicom spends most of a C-STORE's CPU in its DUL loop and per-PDU objects (README, Benchmarks).
An association whose accepted contexts are all storage SOP classes or Verification
(:func:`node.receive.accept.own_path`) is served here instead, by one thread that reads the
connection itself (:class:`node.pdu.Wire`): each C-STORE's command set is read, then its data set
fragments go straight from the receive buffer into a temp file in ``data_dir/tmp``, behind the File
Meta the spool keeps (not hashed); :func:`node.receive.storage.store` then checks, places
(fsync'd file, renamed, folder fsync'd) and indexes it exactly as for pynetdicom's associations, and
only then is the C-STORE-RSP sent. C-ECHO is answered; A-RELEASE and A-ABORT are ours too.

The network hardening holds as on pynetdicom's path: each PDU must be whole within
``node.pdu_seconds`` from its first byte, and a P-DATA-TF may not declare more than the Maximum
Length we advertised; every PDV and command element is bounded by what is left of what holds it
(:mod:`node.pdu`). Anything malformed or unexpected aborts that association (A-ABORT) with one line
naming the peer, and nothing else; an association silent for ``node.idle_seconds`` is released. A
data set that cannot be written for want of space is read to its end and answered 0xA700.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from node import dicom
from node.durable import create_new, write_back
from node.pdu import (
    A_ABORT,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    BAD_MESSAGE,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_STORE_RQ,
    C_STORE_RSP,
    COMMAND,
    COMMAND_MAX,
    LAST,
    P_DATA_TF,
    PDU_HEADER,
    REASON_NOT_SPECIFIED,
    UNEXPECTED_PDU,
    Closed,
    Command,
    Malformed,
    Wire,
    a_abort,
    a_release,
    p_data_tf,
    pdu_header,
    pdvs,
    read_command,
    response,
)
from node.receive import access
from node.receive.accept import Request, accept_pdu, own_path, reject_pdu
from node.receive.guard import Alive
from node.receive.instance import network_head
from node.receive.spool import Spool
from node.receive.storage import CALLING_AE_TITLE_NOT_RECOGNISED, Indexer, Live, Written, closed, refused, store

if TYPE_CHECKING:
    from node.netcompat import Gate

logger = logging.getLogger(__name__)

#: A-ASSOCIATE-RJ: called AE title not recognised; local limit exceeded (PS3.8 9.3.4).
CALLED_AE_TITLE_NOT_RECOGNISED = (1, 1, 7)
LOCAL_LIMIT_EXCEEDED = (2, 3, 2)
#: How much of each data set's file is kept in memory for its checks (:class:`node.dcmio.StartedFile`): twice
#: the readers' 64 KiB window, so that the window they read from the data set's start is in it.
START = 1 << 17
#: What a PDU other than P-DATA-TF may hold once associated (A-RELEASE and A-ABORT hold 4 bytes).
SMALL_PDU_MAX = 1024


class Deadline(Exception):
    """A read did not complete in time."""


class _Source:
    """The connection, each read bounded by :attr:`deadline` (monotonic seconds)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = 0.0

    def recv_into(self, buffer: memoryview, nbytes: int) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Deadline
        self.sock.settimeout(left)
        try:
            return self.sock.recv_into(buffer, nbytes)
        except TimeoutError:
            raise Deadline from None


class _Incoming:
    """The data set of one C-STORE being received: a temp file behind the spool's head.

    A write that fails (a full disk) is kept in :attr:`failure`, the file removed at once, and the rest of
    the data set read and dropped, so that the C-STORE is answered, not the association aborted.
    """

    def __init__(self, tmp: Path, head: bytes, context: int, command: Command) -> None:
        self.context, self.command = context, command
        self.failure: OSError | None = None
        #: The file's first bytes (up to :data:`START`), and how many it has: the checks read these, not the disk.
        self.start = bytearray()
        self.size = 0
        self.fd = -1
        self.path = tmp / "recv-unwritten.dcm"
        try:
            self.fd, name = create_new(tmp, "recv-", ".dcm")
        except OSError as exc:  # no temp file at all: the data set is read and dropped
            self.failure = exc
            return
        self.path = Path(name)
        self._write(head)

    def write(self, piece: memoryview) -> None:
        if self.fd >= 0:
            self._write(piece)

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self.size < START:
            self.start += view[:START - self.size]
        self.size += len(view)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            self.failure = exc
            self.discard()

    def close(self) -> None:
        """Close the file, its write to the disk started: it goes on while the data set is checked, and the
        fsync that places it finds less to wait for (one association received 9–12 % more a second)."""
        if self.fd >= 0:
            try:
                write_back(self.fd, 0, self.size)
            except OSError:
                pass  # a hint: what the disk refuses, the fsync reports
            self._drop_fd()

    def discard(self) -> None:
        self._drop_fd()
        self.path.unlink(missing_ok=True)

    def _drop_fd(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class StoreAssociation(threading.Thread):
    """One association on our own data path, from its A-ASSOCIATE-AC (or -RJ) to its end."""

    def __init__(self, dispatcher: Dispatcher, sock: socket.socket, peer: str, request: Request,
                 refusal: tuple[tuple[int, int, int], str | None] | None) -> None:
        super().__init__(name=f"medianode-store-{peer}", daemon=True)
        self.d, self.sock, self.peer, self.request, self.refusal = dispatcher, sock, peer, request, refusal
        self.source = _Source(sock)
        self.wire = Wire(self.source)
        self.fragment = request.peer_max - 6 if request.peer_max > 6 else 1 << 20  # of our PDVs, PS3.8 D.1
        self._lock = threading.Lock()
        self._command = bytearray()
        self._incoming: _Incoming | None = None
        self._stopping = False
        self._storing = contextlib.ExitStack()

    # -- what the drain asks --------------------------------------------------------------

    def abort(self, *, force: bool = False) -> bool:
        """A-ABORT now, unless a request is in hand (and not ``force``); True when aborted."""
        with self._lock:
            if (self._command or self._incoming is not None) and not force:
                return False
            self._stopping = True
        self._send(a_abort(REASON_NOT_SPECIFIED))
        self._shut()
        return True

    # -- the association's thread ----------------------------------------------------------

    def run(self) -> None:
        try:
            self.sock.setblocking(True)
            if self.refusal is not None:
                code, reason = self.refusal
                refused(self.d.live, self.request.calling, self.request.called, self.peer, code, reason)
                self._send(reject_pdu(code))  # after the audit line: a peer told is a peer on record
                return
            if self._send(accept_pdu(self.request, max_pdu=self.d.gate.max_pdu)):
                self._serve()
        except Malformed as exc:
            self._cut(exc.abort, str(exc))
        except Deadline:
            self._cut(REASON_NOT_SPECIFIED, f"PDU not whole within {self.d.gate.pdu_seconds:g} s")
        except Closed as exc:
            if exc.got or self.wire.buffered or self._incoming is not None or self._command:
                self._cut(None, "closed the connection within a PDU or a message")
        except OSError as exc:
            if not self._stopping:
                logger.info("Association from %s ended: %s", self.peer, exc)
        except Exception:
            logger.exception("Association from %s failed", self.peer)
            self._cut(REASON_NOT_SPECIFIED, "unforeseen error")
        finally:
            self._end()

    def _serve(self) -> None:
        gate, idle = self.d.gate, self.d.live.config.node.idle_seconds
        while True:
            self.source.deadline = time.monotonic() + idle
            try:
                self.wire.more()
            except Deadline:
                self._release_idle(idle)
                return
            self.source.deadline = time.monotonic() + gate.pdu_seconds
            kind, length = pdu_header(self.wire.take(PDU_HEADER))
            if kind == P_DATA_TF:
                if length > gate.max_pdu:
                    raise Malformed(f"PDU type 0x04 of {length} bytes, over the {gate.max_pdu} we accept")
                self._p_data(length)
                continue
            if kind not in (A_RELEASE_RQ, A_ABORT):
                raise Malformed(f"PDU type 0x{kind:02X} where P-DATA-TF, A-RELEASE-RQ or A-ABORT was due",
                                UNEXPECTED_PDU)
            if length > SMALL_PDU_MAX:
                raise Malformed(f"PDU type 0x{kind:02X} of {length} bytes, over the {SMALL_PDU_MAX} we accept")
            self.wire.take(length)
            if kind == A_ABORT:
                logger.info("Association from %s aborted by the peer", self.peer)
                return
            closed(self.d.live, id(self), self.request.calling, self.request.called, self.peer)  # before it is told
            self._send(a_release(A_RELEASE_RP))
            self._linger()
            return

    def _p_data(self, length: int) -> None:
        for context, control, n in pdvs(self.wire, length):
            if context not in self.request.accepted:
                raise Malformed(f"{BAD_MESSAGE}presentation context {context} is not accepted")
            if control & COMMAND:
                if self._incoming is not None:
                    raise Malformed(f"{BAD_MESSAGE}a command fragment within a data set", UNEXPECTED_PDU)
                if len(self._command) + n > COMMAND_MAX:
                    raise Malformed(f"{BAD_MESSAGE}a command set over {COMMAND_MAX} bytes")
                with self._lock:
                    if self._stopping:
                        raise Closed(0)
                    self._command += self.wire.take(n)
                if control & LAST:
                    self._request(context)
            else:
                incoming = self._incoming
                if incoming is None or context != incoming.context:
                    raise Malformed(f"{BAD_MESSAGE}a data set fragment without its C-STORE-RQ", UNEXPECTED_PDU)
                for piece in self.wire.stream(n):
                    incoming.write(piece)
                if control & LAST:
                    self._stored(incoming)

    def _request(self, context: int) -> None:
        """A whole command set: answer C-ECHO, or start receiving a C-STORE's data set."""
        command = read_command(self._command)
        abstract, syntax = self.request.accepted[context]
        if command.field == C_ECHO_RQ and not command.has_data_set:
            self._respond(context, response(C_ECHO_RSP, command.message_id, command.sop_class or abstract,
                                            dicom.SUCCESS))
            with self._lock:
                self._command.clear()
            return
        if command.field != C_STORE_RQ or not command.has_data_set:
            data_set = "with" if command.has_data_set else "without"
            raise Malformed(f"command 0x{command.field:04X} {data_set} a data set is not served on this association",
                            UNEXPECTED_PDU)
        live = self.d.live
        self._storing.enter_context(live.storing(self))
        head = network_head(command.sop_class, command.sop_instance, syntax, calling_aet=self.request.calling,
                            called_aet=self.request.called, routes=live.routes_digest)
        incoming = _Incoming(self.d.spool.tmp, head, context, command)
        with self._lock:
            self._incoming = incoming
            self._command.clear()

    def _stored(self, incoming: _Incoming) -> None:
        incoming.close()
        command = incoming.command
        written = Written(incoming.size, bytes(incoming.start))
        status, comment = store(incoming.path, command.sop_class, command.sop_instance, calling=self.request.calling,
                                called=self.request.called, spool=self.d.spool, index=self.d.index, live=self.d.live,
                                key=id(self), failure=incoming.failure, written=written)
        self._respond(incoming.context, response(C_STORE_RSP, command.message_id, command.sop_class, status,
                                                 sop_instance=command.sop_instance, comment=comment))
        with self._lock:
            self._incoming = None
        self._storing.close()

    def _respond(self, context: int, command_set: bytes) -> None:
        self.sock.settimeout(self.d.gate.pdu_seconds)
        self.sock.sendall(b"".join(p_data_tf(context, command_set, self.fragment, COMMAND | LAST)))

    def _release_idle(self, idle: float) -> None:
        """Silent for ``idle`` seconds: A-RELEASE-RQ, and the answer awaited for ARTIM at most."""
        self.d.gate.cut(self.peer, f"idle for {idle:g} s, released")
        if self._send(a_release(A_RELEASE_RQ)):
            self._linger()

    def _linger(self) -> None:
        """Let the peer close first (it reads our last PDU), for ARTIM at most (PS3.8 9.1.5)."""
        with contextlib.suppress(OSError, Deadline, Closed):
            self.source.deadline = time.monotonic() + self.d.live.config.node.artim_seconds
            while True:
                for _ in self.wire.stream(max(self.wire.buffered, 1)):
                    pass

    def _send(self, data: bytes) -> bool:
        try:
            self.sock.settimeout(self.d.gate.pdu_seconds)
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def _cut(self, reason: int | None, why: str) -> None:
        """A-ABORT (``reason``; None: the peer is gone) and one line naming the peer."""
        if not self._stopping:
            self.d.gate.cut(self.peer, why)
            if reason is not None:
                self._send(a_abort(reason))

    def _shut(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _end(self) -> None:
        incoming, self._incoming = self._incoming, None
        if incoming is not None:
            incoming.discard()  # never answered: the sender keeps it
        self._command.clear()
        self._storing.close()
        self._shut()
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.refusal is None:
            closed(self.d.live, id(self), self.request.calling, self.request.called, self.peer)
        self.d.ended(self)


class Fallback(Protocol):
    """pynetdicom's server, for the associations our own path declines (:class:`node.receive.workers.Pynetdicom`)."""

    def start_association(self, client: socket.socket, address: Any, received: bytes, why: str) -> Alive: ...

    def running(self) -> int:
        """pynetdicom's associations running."""


class Load(Protocol):
    def serving(self, client: socket.socket) -> None: ...


class Dispatcher:
    """What the lobby hands each whole A-ASSOCIATE-RQ to: our own data path, or pynetdicom's server."""

    #: The lobby, whose bounds and culprit log our own path shares (set once the lobby exists).
    gate: Gate

    def __init__(self, fallback: Fallback, load: Load, *, supported: Mapping[str, Sequence[str]],
                 served: frozenset[str], spool: Spool, index: Indexer, live: Live) -> None:
        self.fallback, self.load, self.supported, self.served = fallback, load, supported, served
        self.spool, self.index, self.live = spool, index, live
        self._lock = threading.Lock()
        self._own: set[StoreAssociation] = set()

    def start_association(self, client: socket.socket, address: Any, received: bytes) -> Alive:
        request = own_path(received, self.supported, self.served)  # Malformed: the lobby aborts it
        if isinstance(request, str):
            theirs = self.fallback.start_association(client, address, received,
                                                     f"an association from {address[0]}:{address[1]} with {request}")
            self.load.serving(client)
            return theirs
        config = self.live.config
        refusal: tuple[tuple[int, int, int], str | None] | None = None
        if request.called not in config.called_aets:
            refusal = (CALLED_AE_TITLE_NOT_RECOGNISED, None)
        elif why := access.refusal(config.node, request.calling, address[0]):
            refusal = (CALLING_AE_TITLE_NOT_RECOGNISED, why)
        if (refusal is None or refusal[0] != CALLING_AE_TITLE_NOT_RECOGNISED) and \
                self.fallback.running() + len(self.own()) >= config.node.max_associations:
            refusal = (LOCAL_LIMIT_EXCEEDED, None)
        assoc = StoreAssociation(self, client, f"{address[0]}:{address[1]}", request, refusal)
        if refusal is None:
            self.load.serving(client)
        with self._lock:
            self._own.add(assoc)
        assoc.start()
        return assoc

    def own(self) -> list[StoreAssociation]:
        """The associations on our own path, still running."""
        with self._lock:
            return list(self._own)

    def ended(self, assoc: StoreAssociation) -> None:
        with self._lock:
            self._own.discard(assoc)
