"""Audit messages to an audit record repository by syslog, in the background (IHE ATNA ITI-20).

RFC 5424 messages (facility authpriv, MSGID ``IHE+RFC-3881``, the XML as a UTF-8 MSG after its
BOM), one per datagram over UDP (RFC 5426), or octet-counted over TLS (RFC 5425, the node's TLS
profile: :func:`node.tls.client_context`). Nothing here may slow or fail the caller: :meth:`Sender.send`
puts the message in a bounded queue and returns; one thread per process sends. A message the queue
has no room for, or that cannot be sent (the collector down, unreachable, refusing TLS), is counted
as lost and logged at most once a minute; after a failure the TLS connection is tried again at the
next message past a back-off (1 s, doubling to a minute), and a connection the collector closed is
opened again before the next message.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import select
import socket
import ssl
import threading
import time
from datetime import datetime

from node.config import Syslog
from node.tls import client_context
from node.words import counted

logger = logging.getLogger(__name__)

#: Messages waiting per process; past it a message is lost (and counted), the caller never waits.
QUEUE = 1000
CONNECT_S = 5.0
BACKOFF_S = (1.0, 60.0)
LOG_EVERY_S = 60.0
#: RFC 5424 6.2.1: facility 10 (security/authorization, authpriv), severity 5 (notice) or 4 (warning).
FACILITY = 10
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"


def frame(xml: bytes, *, when: datetime, warning: bool = False, host: str | None = None) -> bytes:
    """One RFC 5424 SYSLOG-MSG carrying ``xml``.

    >>> from datetime import UTC
    >>> frame(b"<A/>", when=datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC), host="n").split(b" ")[:3]
    [b'<85>1', b'2026-01-02T03:04:05.600000+00:00', b'n']
    """
    pri = FACILITY * 8 + (4 if warning else 5)
    hostname = (host or socket.getfqdn() or "-")[:255].replace(" ", "_")
    header = f"<{pri}>1 {when.isoformat()} {hostname} medianode {os.getpid()} {MSGID} - "
    return header.encode("ascii", "replace") + BOM + xml


class Sender:
    """One process's sender to one collector: a bounded queue and the thread that empties it."""

    def __init__(self, settings: Syslog, *, size: int = QUEUE) -> None:
        self.settings = settings
        self.sent = 0
        self.lost = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(size)
        self._tls: ssl.SSLSocket | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_S[0]
        self._logged_at = -LOG_EVERY_S
        self._thread = threading.Thread(target=self._run, name="medianode-audit", daemon=True)
        self._thread.start()

    @property
    def where(self) -> str:
        return f"{self.settings.protocol}://{self.settings.host}:{self.settings.port}"

    def send(self, message: bytes) -> None:
        """Queue one framed message; never blocks, never raises."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._lose(f"{self._queue.maxsize} audit messages already wait")

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued message to be sent or lost."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 2.0) -> None:
        """Send what waits (up to ``timeout`` seconds), then stop the thread; the count of lost messages
        is logged when there is one."""
        self.flush(timeout)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        if self.lost:
            logger.warning("audit: %s could not be sent to %s (%d sent)", counted(self.lost, "message"), self.where,
                           self.sent)

    def _run(self) -> None:
        try:
            while (message := self._queue.get()) is not None:
                try:
                    self._deliver(message)
                except Exception as exc:  # a bug here must not end the thread: the node keeps auditing
                    self._lose(f"{type(exc).__name__}: {exc}")
                finally:
                    self._queue.task_done()
        finally:
            self._queue.task_done()
            self._disconnect()

    def _deliver(self, message: bytes) -> None:
        s = self.settings
        if s.protocol == "udp":
            try:
                family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
                with socket.socket(family, socket.SOCK_DGRAM) as udp:
                    udp.sendto(message, (s.host, s.port))
            except OSError as exc:
                self._lose(exc.strerror or str(exc))
                return
        else:
            if not self._connected():
                return
            assert self._tls is not None
            try:
                self._tls.sendall(b"%d " % len(message) + message)  # RFC 5425 4.3: octet counting
            except OSError as exc:
                self._disconnect()
                self._fail(exc)
                return
        self.sent += 1

    def _connected(self) -> bool:
        """An open TLS connection (a closed one replaced), or False (the message is counted lost)."""
        if self._tls is not None and _closed(self._tls):
            self._disconnect()
        if self._tls is not None:
            return True
        if time.monotonic() < self._retry_at:
            self._lose("the collector is down; trying again later")
            return False
        s, tls = self.settings, self.settings.tls
        assert tls is not None  # config: protocol tls needs audit.syslog.tls
        try:
            context = client_context(tls.ca, tls.certificate, tls.key)
            raw = socket.create_connection((s.host, s.port), timeout=CONNECT_S)
            try:
                self._tls = context.wrap_socket(raw, server_hostname=s.host)
            except BaseException:
                raw.close()
                raise
        except (OSError, ssl.SSLError) as exc:
            self._fail(exc)
            return False
        self._backoff = BACKOFF_S[0]
        logger.info("audit: connected to %s", self.where)
        return True

    def _fail(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_S[1])
        self._lose(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)

    def _disconnect(self) -> None:
        if self._tls is not None:
            try:
                self._tls.close()
            except OSError:
                pass
            self._tls = None

    def _lose(self, why: str) -> None:
        self.lost += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            logger.warning("audit: a message to %s is lost: %s (%d lost so far, %d sent); the node goes on",
                           self.where, why, self.lost, self.sent)


def _closed(sock: ssl.SSLSocket) -> bool:
    """True when the collector closed the connection: readable, and end of stream or an error to read
    (TLS 1.3 session resumption data the collector sends is readable too, and leaves nothing to read:
    still open)."""
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        sock.setblocking(False)
        try:
            return not sock.recv(1)
        finally:
            sock.settimeout(CONNECT_S)
    except ssl.SSLWantReadError:
        return False
    except (OSError, ValueError):
        return True


_senders: dict[Syslog, Sender] = {}
_lock = threading.Lock()


def sender(settings: Syslog) -> Sender:
    """This process's sender to ``settings``' collector (one per setting; a reload to another
    collector closes the former's in the background)."""
    with _lock:
        found = _senders.get(settings)
        if found is None:
            for old in _senders.values():
                threading.Thread(target=old.close, name="medianode-audit-close", daemon=True).start()
            _senders.clear()
            found = _senders[settings] = Sender(settings)
        return found


@atexit.register
def close_all(timeout: float = 2.0) -> None:
    """Send what waits, up to ``timeout`` seconds (at exit; a receiver process calls it before ``os._exit``)."""
    with _lock:
        senders = list(_senders.values())
        _senders.clear()
    for s in senders:
        s.close(timeout)
