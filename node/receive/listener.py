"""A receiver's accept loop on the listening socket every receiver process shares, without pynetdicom.

Every receiver polls the same socket (:func:`node.receive.workers.listen`); one serving ``n``
associations waits ``n`` x :data:`ACCEPT_DEFER_S` (at most 8 of them) before it accepts, so that new
associations go to the least busy process (one process is GIL-bound to about one core). SO_REUSEPORT
would hash connections to processes blindly: with 4 associations on 2 processes, 5 runs in 8 put 3 or 4
in one process, which then serves them at a single core's rate. Each accepted connection gets
TCP_NODELAY (without it every C-STORE response waits for Nagle's timer, 40 ms; ../shared/BENCHMARKS.md),
its TLS wrapper (the handshake is left to the lobby, so a slow client cannot stall accepting), and waits in
the lobby (:class:`node.receive.guard.Lobby`) until it asks to associate.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
import time
from typing import Any, Protocol

#: A receiver waits this long per association it is serving before it accepts a connection,
#: so that an idle receiver, sharing the listening socket, takes it first.
ACCEPT_DEFER_S = 0.01


class Parker(Protocol):
    def park(self, client: socket.socket, address: Any) -> None: ...


class Acceptor:
    """Accepts connections on ``listener`` for one receiver process, until :meth:`shutdown`.

    The process's load is the connections it counts as :meth:`serving` (associated, on either data path,
    until closed); a connection still in the lobby does not count, so that a flood of them never slows
    accepting.
    """

    def __init__(self, listener: socket.socket, ssl_context: ssl.SSLContext | None = None) -> None:
        self.listener, self.ssl_context = listener, ssl_context
        self.gate: Parker | None = None
        self.server_address = listener.getsockname()
        # accept() must not block when another process took the connection first
        listener.setblocking(False)
        self._serving: list[socket.socket] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self._done = threading.Event()

    def serving(self, client: socket.socket) -> None:
        """``client`` associated: it counts in this process's load until closed."""
        with self._lock:
            self._serving.append(client)

    def load(self) -> int:
        with self._lock:
            self._serving = [s for s in self._serving if s.fileno() != -1]
            return len(self._serving)

    def serve_forever(self) -> None:
        """The accepting thread: each connection parked at :attr:`gate`."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.listener, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stop:
                    if not any(key.fileobj is self.listener for key, _ in selector.select()):
                        continue
                    if busy := self.load():
                        time.sleep(min(busy, 8) * ACCEPT_DEFER_S)
                    self._accept()
        finally:
            self._done.set()

    def _accept(self) -> None:
        try:
            client, address = self.listener.accept()
        except OSError:  # another process took it (EAGAIN), or no descriptor left (EMFILE) for now
            return
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context:
                client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        except OSError:
            client.close()
            return
        assert self.gate is not None
        self.gate.park(client, address)

    def shutdown(self) -> None:
        """Stop accepting and close our descriptor of the listening socket (never shut it down: that would
        stop it in every process sharing it). Once: a second call does nothing."""
        if self._stop:
            return
        self._stop = True
        self._wake_w.send(b"\0")
        self._done.wait(5)
        for sock in (self.listener, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()
