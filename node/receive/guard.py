"""The gate in front of the Storage SCP: a connection costs a file descriptor, and nothing else, until
it has sent a whole A-ASSOCIATE-RQ.

pynetdicom gives each accepted socket an association, two threads and a slot
of ``node.max_associations`` at once, and then reads whatever length a PDU
declares, for as long as the peer takes. Here one thread per receiver process
(the :class:`Lobby`) holds every new connection, non-blocking, until it has
sent an A-ASSOCIATE-RQ of at most :data:`~node.netcompat.ASSOCIATE_RQ_MAX`
bytes within ARTIM (``node.artim_seconds``, PS3.8 9.1.5); only then does
pynetdicom see it (:meth:`~node.netcompat.ReceiverServer.start_association`).
Anything else is answered with A-ABORT (PS3.8 9.3.8) and closed at once:
another PDU type (garbage, a scanner's probe), a longer request, a deadline
passed. One remote address holds at most ``node.max_connections_per_address``
connections, across every receiver process (:class:`AddressCounts`). Each
refusal is one log line naming the peer (:class:`CulpritLog`).
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.pdu import (
    A_ASSOCIATE_RQ,
    ASSOCIATE_RQ_MAX,
    INVALID_PARAMETER,
    PDU_HEADER,
    Malformed,
    REASON_NOT_SPECIFIED,
    UNEXPECTED_PDU,
    a_abort,
    pdu_header,
)

logger = logging.getLogger(__name__)

#: Connections one receiver process holds while they have not associated; past it the oldest is closed
#: (it had longest to ask), so a real peer always gets in.
LOBBY_MAX = 512
#: Slots of the shared per-address counts: remote addresses are hashed to one (CRC-32), so two
#: addresses rarely share a count (and then share the cap).
ADDRESS_SLOTS = 1 << 14


class Alive(Protocol):
    def is_alive(self) -> bool: ...


class Server(Protocol):
    def start_association(self, client: socket.socket, address: Any, received: bytes) -> Alive:
        """The association of a connection that sent a whole A-ASSOCIATE-RQ (``received``); :class:`Malformed`
        for a request whose items run past their ends, which the lobby then aborts."""


class CulpritLog:
    """One warning per refused or aborted connection, naming the peer and why; at most ``burst`` lines
    per ``per_s`` seconds, the rest counted and reported with the next line that is let through."""

    def __init__(self, burst: int = 20, per_s: float = 10.0) -> None:
        self.burst, self.per_s = burst, per_s
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._lines = 0
        self._dropped = 0

    def __call__(self, peer: str, reason: str) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self.per_s:
                self._window_start, self._lines = now, 0
            if self._lines >= self.burst:
                self._dropped += 1
                return
            self._lines += 1
            dropped, self._dropped = self._dropped, 0
        more = f" ({dropped} more refused connections not logged)" if dropped else ""
        logger.warning("Connection from %s refused or aborted: %s%s", peer, reason, more)


class AddressCounts:
    """Open connections per remote address, this process's in ``row`` of a table every receiver shares.

    Each process writes only its own row (so a restarted receiver starts from a
    zeroed row, not from its predecessor's leftovers) and reads every row.
    """

    def __init__(self, table: MutableSequence[int] | None = None, row: int = 0) -> None:
        self.table = table if table is not None else [0] * ADDRESS_SLOTS
        self.rows = len(self.table) // ADDRESS_SLOTS
        self.base = row * ADDRESS_SLOTS
        self._lock = threading.Lock()
        for i in range(self.base, self.base + ADDRESS_SLOTS):
            self.table[i] = 0

    @staticmethod
    def slot(host: str) -> int:
        return zlib.crc32(host.encode()) % ADDRESS_SLOTS

    def open(self, host: str) -> int:
        """The connections ``host`` holds across every process, this one counted first."""
        slot = self.slot(host)
        with self._lock:
            self.table[self.base + slot] += 1
        return sum(self.table[r * ADDRESS_SLOTS + slot] for r in range(self.rows))

    def close(self, host: str) -> None:
        with self._lock:
            self.table[self.base + self.slot(host)] -= 1


@dataclass
class _Parked:
    sock: socket.socket
    address: Any
    deadline: float
    fd: int = -1
    received: bytearray = field(default_factory=bytearray)
    shaken: bool = True  # the TLS handshake is done (or there is none)

    @property
    def peer(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


class Lobby:
    """Where a receiver's accepted connections wait, in one thread, for their A-ASSOCIATE-RQ.

    Implements :class:`node.netcompat.Gate`: ``max_pdu`` and ``pdu_seconds``
    bound the reads of the associations it hands on.
    """

    def __init__(self, server: Server, *, artim_seconds: float, pdu_seconds: float, max_pdu: int,
                 per_address: int, counts: AddressCounts | None = None, log: CulpritLog | None = None,
                 lobby_max: int = LOBBY_MAX) -> None:
        self.server = server
        self.artim_seconds, self.pdu_seconds, self.max_pdu = artim_seconds, pdu_seconds, max_pdu
        self.per_address, self.lobby_max = per_address, lobby_max
        self.counts = counts or AddressCounts()
        self.cut: Callable[[str, str], None] = log or CulpritLog()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._arriving: list[_Parked] = []
        self._parked: dict[int, _Parked] = {}  # by fd, oldest first
        self._associated: list[tuple[Alive, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="medianode-lobby", daemon=True)
        self._thread.start()

    # -- the accepting thread --------------------------------------------------------

    def park(self, client: socket.socket, address: Any) -> None:
        host = address[0]
        held = self.counts.open(host)
        if held > self.per_address:
            self.counts.close(host)
            self.cut(f"{host}:{address[1]}", f"{held - 1} connections already open from {host} "
                                             f"(node.max_connections_per_address {self.per_address})")
            _close(client)
            return
        client.setblocking(False)
        with self._lock:
            self._arriving.append(_Parked(client, address, time.monotonic() + self.artim_seconds,
                                          shaken=not isinstance(client, ssl.SSLSocket)))
        self._wake_w.send(b"\0")

    def close(self) -> None:
        """Stop the thread and close every connection still waiting."""
        self._stop = True
        self._wake_w.send(b"\0")
        self._thread.join(5)

    @property
    def waiting(self) -> int:
        return len(self._parked)

    # -- the lobby's thread ----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            soonest = min((p.deadline for p in self._parked.values()), default=time.monotonic() + 0.5)
            for key, _ in self._selector.select(max(0.0, min(soonest - time.monotonic(), 0.5))):
                if key.fileobj is self._wake_r:
                    self._take_arrivals()
                else:
                    parked = self._parked.get(key.fd)
                    if parked is not None:
                        self._read(parked)
            now = time.monotonic()
            for parked in [p for p in self._parked.values() if p.deadline <= now]:
                self._refuse(parked, REASON_NOT_SPECIFIED, f"no whole A-ASSOCIATE-RQ within "
                             f"{self.artim_seconds:g} s (node.artim_seconds; {len(parked.received)} bytes came)")
            self._forget_ended()
        for parked in list(self._parked.values()):
            self._drop(parked)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _take_arrivals(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            arriving, self._arriving = self._arriving, []
        for parked in arriving:
            if len(self._parked) >= self.lobby_max:
                oldest = next(iter(self._parked.values()))
                self._refuse(oldest, REASON_NOT_SPECIFIED, f"{self.lobby_max} connections waiting to associate "
                             "in this receiver; the oldest is closed")
            parked.fd = parked.sock.fileno()
            self._parked[parked.fd] = parked
            self._selector.register(parked.sock, selectors.EVENT_READ)
            self._read(parked)  # TLS: start the handshake; plain: data may be there already

    def _read(self, parked: _Parked) -> None:
        sock = parked.sock
        try:
            if not parked.shaken:
                sock.do_handshake()  # type: ignore[attr-defined]
                parked.shaken = True
            while True:
                have = len(parked.received)
                need = PDU_HEADER - have if have < PDU_HEADER else PDU_HEADER + pdu_header(parked.received)[1] - have
                chunk = sock.recv(min(need, 1 << 16))
                if not chunk:  # closed by the peer before associating: a port probe, nothing to say
                    self._drop(parked)
                    return
                parked.received += chunk
                if len(parked.received) >= PDU_HEADER and self._judge(parked):
                    return
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ssl.SSLError) as exc:
            self._refuse(parked, None, f"connection failed before associating: {exc}")

    def _judge(self, parked: _Parked) -> bool:
        """True when the connection left the lobby: handed on with its whole request, or refused."""
        kind, length = pdu_header(parked.received)
        if kind != A_ASSOCIATE_RQ:
            self._refuse(parked, UNEXPECTED_PDU, f"PDU type 0x{kind:02X} where an A-ASSOCIATE-RQ (0x01) was due")
        elif length > ASSOCIATE_RQ_MAX:
            self._refuse(parked, INVALID_PARAMETER, f"A-ASSOCIATE-RQ declaring {length} bytes, over "
                                                    f"{ASSOCIATE_RQ_MAX}")
        elif len(parked.received) < PDU_HEADER + length:
            return False
        else:
            self._leave(parked)
            try:
                assoc = self.server.start_association(parked.sock, parked.address, bytes(parked.received))
            except Malformed as exc:
                self._turn_away(parked, exc.abort, str(exc))
                return True
            except Exception as exc:  # an association that cannot start costs its peer only
                logger.error("Connection from %s: cannot start its association: %s", parked.peer, exc)
                _close(parked.sock)
                self.counts.close(parked.address[0])
                return True
            self._associated.append((assoc, parked.address[0]))
        return True

    def _refuse(self, parked: _Parked, reason: int | None, why: str) -> None:
        self._leave(parked)
        self._turn_away(parked, reason, why)

    def _turn_away(self, parked: _Parked, reason: int | None, why: str) -> None:
        """A connection out of the lobby refused: one line saying why, A-ABORT (``reason``; None: the peer
        is gone), closed."""
        self.cut(parked.peer, why)
        if reason is not None:
            try:
                parked.sock.send(a_abort(reason))
            except (OSError, ssl.SSLError):
                pass
        _close(parked.sock)
        self.counts.close(parked.address[0])

    def _leave(self, parked: _Parked) -> None:
        self._selector.unregister(parked.fd)
        del self._parked[parked.fd]

    def _drop(self, parked: _Parked) -> None:
        self._leave(parked)
        _close(parked.sock)
        self.counts.close(parked.address[0])

    def _forget_ended(self) -> None:
        """Give back the per-address count of associations that ended."""
        ended = [(a, host) for a, host in self._associated if not a.is_alive()]
        if ended:
            self._associated = [(a, host) for a, host in self._associated if a.is_alive()]
            for _, host in ended:
                self.counts.close(host)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def raise_file_limit() -> None:
    """Lift this process's open-file limit to its hard limit: every waiting connection holds one."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        logger.debug("open-file limit left at its value in process %d", os.getpid())
