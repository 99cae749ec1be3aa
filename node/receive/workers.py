"""The receiver processes: ``node.workers`` spawned processes, each running the Storage SCP on one
listening socket that they share.

One process is GIL-bound to about one core (../shared/BENCHMARKS.md), so
concurrent associations are served by several processes, each with its own
:class:`~node.index.Index` connection (SQLite serialises their commits). The
least busy process accepts each new association
(:class:`~node.receive.listener.Acceptor`). The associations that only store
and verify run on our own data path (:mod:`node.receive.storer`); pynetdicom
(:mod:`node.receive.scp`) is loaded by the first association that needs it
(:class:`Pynetdicom`). ``service.py`` uses :func:`start_receivers`,
:meth:`Receiver.reload` and :func:`stop_receivers`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable
from multiprocessing.connection import Connection, Pipe
from typing import TYPE_CHECKING, Any, Protocol, cast

from node import filemodes, syslog
from node.config import Config, load_config
from node.errors import NodeError
from node.index import Index
from node.lifeline import Child, SharedInts, await_ready, die_with_parent, spawn
from node.receive.guard import ADDRESS_SLOTS, AddressCounts, Lobby, raise_file_limit
from node.receive.listener import Acceptor
from node.receive.spool import Spool
from node.receive.storage import Live, SharedIndex, own_path_classes, ssl_context, supported
from node.receive.storer import Dispatcher, StoreAssociation

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from node.netcompat import Gate, ReceiverServer

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: How long a stopping receiver waits for the C-STOREs in flight before it aborts them.
DRAIN_S = 30.0
#: Temp files untouched this long are a peer's abandoned transfer (the network timeout is far shorter).
STALE_TMP_S = 3600.0


class StopFlag(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class ReceiverError(NodeError):
    """A receiver process could not start (port taken, data_dir unwritable, bad TLS files)."""


def serve_receivers(config: Config, *, listener: socket.socket | None = None, stop: StopFlag | None = None,
                    ready: Callable[[], None] | None = None, drain_s: float = DRAIN_S,
                    counts: AddressCounts | None = None) -> None:
    """Run one receiver until ``stop`` is set or, in the main thread, SIGTERM / SIGINT arrives.

    ``listener`` is the listening socket the receivers share (:func:`listen`);
    without one the receiver binds ``node.host:node.port`` itself. New
    connections wait in a :class:`~node.receive.guard.Lobby` until they ask to
    associate; ``counts`` is this receiver's row of the per-address table.
    The associations that only store and verify run on our own data path
    (:mod:`node.receive.storer`); pynetdicom is loaded by the first one that
    does not (:class:`Pynetdicom`).

    In the main thread the three signals are blocked and taken synchronously
    (``sigtimedwait``), so no handler interrupts a thread: SIGTERM and SIGINT
    drain (stop accepting, let each C-STORE in flight be answered, abort the
    associations; a second SIGINT aborts at once), SIGHUP reloads the routes
    and the allowed callers from ``config.source``. Elsewhere (a
    test's thread), ``stop`` is required.
    """
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main and stop is None:
        raise ValueError("serve_receivers outside the main thread needs a stop flag")
    # Blocked before any thread starts, native ones included (numpy's BLAS pool starts at import):
    # a thread that leaves SIGTERM unblocked would let its default action kill the process.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS) if in_main else None
    with contextlib.ExitStack() as cleanup:
        if old_mask is not None:
            cleanup.callback(_unblock, old_mask)
        node = config.node
        spool = Spool(node.data_dir)
        live = Live(config)
        index = Index(spool.data_dir / "index.sqlite")
        cleanup.callback(index.close)
        shared = SharedIndex(index)
        acceptor = Acceptor(listener or listen(node.host, node.port),
                            ssl_context(node.tls) if node.tls else None)
        cleanup.callback(acceptor.shutdown)
        fallback = Pynetdicom(config, acceptor.listener, spool, shared, live)
        dispatcher = Dispatcher(fallback, acceptor, supported=supported(config), served=own_path_classes(config),
                                spool=spool, index=shared, live=live)
        lobby = Lobby(dispatcher, artim_seconds=node.artim_seconds, pdu_seconds=node.pdu_seconds,
                      max_pdu=node.pdu_limit, per_address=node.max_connections_per_address, counts=counts)
        acceptor.gate = dispatcher.gate = fallback.gate = lobby
        cleanup.callback(lobby.close)
        threading.Thread(target=acceptor.serve_forever, name="medianode-accept", daemon=True).start()
        cleanup.callback(_drain, acceptor, dispatcher, fallback, live, drain_s=drain_s, signals=old_mask is not None)
        host, port = acceptor.server_address[:2]
        logger.info("Receiver %d listening as %s on %s:%d", os.getpid(), node.ae_title, host, port)
        if ready:
            ready()
        last_sweep = time.monotonic()
        while not (stop and stop.is_set()):
            if old_mask is None:
                cast(StopFlag, stop).wait(1.0)
            else:
                sig = _next_signal(1.0)
                if sig == signal.SIGHUP:
                    _reload(live)
                elif sig is not None:
                    break
            live.slow_down_idle()
            if time.monotonic() - last_sweep > STALE_TMP_S:
                spool.cleanup_tmp(older_than=STALE_TMP_S)
                last_sweep = time.monotonic()
    logger.info("Receiver %d stopped", os.getpid())


class Pynetdicom:
    """pynetdicom's AE and server, for the associations our own data path declines (Media Creation
    Management, a user identity, role selection, extended negotiation, a request it does not read plainly).

    Built by the first of them, once (under a lock, with one INFO line "loading pynetdicom for ..."): a
    receiver that has served only storage and Verification never loads pynetdicom nor pydicom. From then
    on it serves those associations as it always did: the AE of :func:`node.receive.scp.make_ae` with the
    configuration the process started with, on a duplicate of the shared listening socket it never
    accepts on (:class:`~node.receive.listener.Acceptor` does), each association handed over with the
    request the lobby read (:meth:`~node.netcompat.ReceiverServer.start_association`).
    """

    gate: Gate

    def __init__(self, config: Config, listener: socket.socket, spool: Spool, index: SharedIndex, live: Live) -> None:
        self.config, self.listener, self.spool, self.index, self.live = config, listener, spool, index, live
        self.server: ReceiverServer | None = None
        self._lock = threading.Lock()

    def start_association(self, client: socket.socket, address: Any, received: bytes, why: str) -> Association:
        return self._server(why).start_association(client, address, received)

    def running(self) -> int:
        return len(self.associations())

    def associations(self) -> list[Association]:
        server = self.server
        return [] if server is None else server.active_associations

    def close(self) -> None:
        """Close the server's duplicate of the listening socket."""
        with self._lock:
            if self.server is not None:
                self.server.server_close()

    def _server(self, why: str) -> ReceiverServer:
        with self._lock:
            if self.server is None:
                logger.info("Receiver %d loading pynetdicom for %s", os.getpid(), why)
                from node.netcompat import ReceiverServer, receive_into
                from node.receive.scp import evt_handlers, make_ae, reactor_delay

                receive_into(self.spool.tmp)
                ae = make_ae(self.config)
                server_class = type("SharedReceiverServer", (ReceiverServer,), {"listener": self.listener.dup()})
                server = cast(ReceiverServer, ae.make_server(
                    self.listener.getsockname()[:2], server_class=server_class,
                    evt_handlers=evt_handlers(self.config, self.spool, self.index, self.live)))
                server.gate = self.gate
                self.live.reactor_delay = reactor_delay
                self.server = server
            return self.server


def _unblock(old_mask: Iterable[int]) -> None:
    """Take the signals still pending (not to meet the default handlers), then restore the mask."""
    while _next_signal(0) is not None:
        pass
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _next_signal(timeout: float) -> int | None:
    info = signal.sigtimedwait(_SIGNALS, timeout)
    return info.si_signo if info else None


def _reload(live: Live) -> None:
    """SIGHUP: routes, allowed callers (AE titles and addresses) and the disk floor change now; the rest at restart."""
    source = live.config.source
    if source is None:
        logger.warning("SIGHUP: no configuration file to reload")
        return
    try:
        new = load_config(source)
    except NodeError as exc:
        logger.error("Receiver %d keeps its configuration: %s", os.getpid(), exc)
        return
    live.config = new
    logger.info("Receiver %d reloaded %s: %d routes, called AE titles %s", os.getpid(), source,
                len(new.routes), ", ".join(sorted(new.called_aets)))


def _drain(acceptor: Acceptor, dispatcher: Dispatcher, fallback: Pynetdicom, live: Live, *, drain_s: float,
           signals: bool) -> None:
    """Stop accepting, then abort each association (pynetdicom's, if it was loaded, and our own path's) once no
    C-STORE of it is in flight.

    An association whose connection died before negotiation (a failed TLS
    handshake) waits out pynetdicom's ACSE timeout; aborting it is all we can
    do, and the process exits without waiting for it (:func:`_receiver_main`).
    """
    acceptor.shutdown()
    fallback.close()
    deadline = time.monotonic() + drain_s
    aborted: dict[int, Association] = {}
    aborted_own: list[StoreAssociation] = []
    while True:
        left = [a for a in fallback.associations() if a.is_alive() and id(a) not in aborted]
        own = [a for a in dispatcher.own() if a.is_alive() and a not in aborted_own]
        if not left and not own:
            break
        force = time.monotonic() >= deadline
        for mine in own:
            if mine.abort(force=force):
                aborted_own.append(mine)
        if left:
            from node.netcompat import is_busy  # loaded already, with the associations it serves

            for assoc in left:
                if force or not (live.is_storing(assoc) or is_busy(assoc)):
                    assoc.abort(block=False)
                    aborted[id(assoc)] = assoc
        if signals and _next_signal(0) == signal.SIGINT:
            logger.warning("Receiver %d: second interrupt, aborting every association", os.getpid())
            deadline = 0.0
        live.wait(0.05)
    grace = time.monotonic() + 2.0  # for the A-ABORTs to leave
    while (_leaving(aborted.values()) or any(a.is_alive() for a in aborted_own)) and time.monotonic() < grace:
        live.wait(0.05)


def _leaving(aborted: Collection[Association]) -> bool:
    """True while an A-ABORT given to one of pynetdicom's associations may not have left yet."""
    if not aborted:
        return False
    from node.netcompat import dul_running  # loaded already: they are its associations

    return any(a.is_established or dul_running(a) for a in aborted)


class Receiver:
    """One receiver process, as ``service.py`` holds it."""

    def __init__(self, process: Child, conn: Connection, spawner: _Spawner | None = None, row: int = 0) -> None:
        self.process = process
        self.conn = conn
        self.spawner = spawner
        self.row = row

    @property
    def pid(self) -> int:
        return self.process.pid

    def reload(self) -> None:
        """Reload routes and allowed callers from the config file (SIGHUP)."""
        if self.process.is_alive():
            os.kill(self.pid, signal.SIGHUP)

    def _wait_ready(self, timeout: float) -> None:
        why = await_ready(self.conn, self.process, timeout)
        if why is not None:
            raise ReceiverError(f"receiver process {self.pid} {why}")


#: A receiver that dies is restarted; past this many restarts within RESTART_WINDOW_S the receivers
#: cannot be kept alive, and ``serve`` exits non-zero for its supervisor (systemd) to restart it.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


class _Spawner:
    """What starts a receiver process, kept by the service to restart one: the shared listening socket
    (a duplicate the service holds), the per-address table, the log settings."""

    def __init__(self, config: Config, listener: socket.socket, table: SharedInts) -> None:
        root = logging.getLogger()
        self.config, self.listener, self.table = config, listener.dup(), table
        self.level = root.level
        self.fmt = root.handlers[0].formatter._fmt if root.handlers and root.handlers[0].formatter else None
        self.restarts: list[float] = []

    def spawn(self, row: int) -> Receiver:
        theirs, ours = Pipe(duplex=False)
        process = spawn(_receiver_main, (self.config, self.listener, ours, self.level, self.fmt, os.getpid(),
                                         self.table, row), name=f"medianode-receiver-{row + 1}")
        ours.close()
        return Receiver(process, theirs, self, row)


def start_receivers(config: Config, *, listener: socket.socket | None = None, timeout: float = 60.0) -> list[Receiver]:
    """Start ``config.node.workers`` receiver processes on one listening socket; return once all serve.

    The socket is bound here (``node.host:node.port``), so a port in use fails
    at once with :class:`ReceiverError`; or it is ``listener`` from
    :func:`listen` (tests bind port 0). Either is closed here once the children
    hold it; a duplicate is kept to restart a receiver (:func:`supervise`).
    Processes are spawned, not forked: the caller may already hold SQLite
    connections and threads, which a fork would copy in an unknown state.
    Each child mirrors the caller's root log level and format, and gets
    SIGTERM if the thread that started it dies.
    """
    # The spool and the index exist before the children open them: SQLite cannot switch a new
    # database to WAL from two processes at once ("database is locked").
    try:
        Index(Spool(config.node.data_dir).data_dir / "index.sqlite").close()
    except (OSError, sqlite3.Error) as exc:
        raise ReceiverError(f"cannot use node.data_dir {config.node.data_dir}: {exc}") from None
    receivers: list[Receiver] = []
    table = SharedInts(config.node.workers * ADDRESS_SLOTS)
    with listener or listen(config.node.host, config.node.port) as shared:
        spawner = _Spawner(config, shared, table)  # per-address counts: a row per receiver
        try:
            for n in range(config.node.workers):
                receivers.append(spawner.spawn(n))
            deadline = time.monotonic() + timeout
            for receiver in receivers:
                receiver._wait_ready(max(0.0, deadline - time.monotonic()))
        except BaseException:
            stop_receivers(receivers, force=True)
            spawner.listener.close()
            raise
    return receivers


def supervise(receivers: list[Receiver], *, timeout: float = 60.0) -> None:
    """Log and restart each receiver that died (an out-of-memory kill, a crash), in place.

    :class:`ReceiverError` when one cannot be restarted, or when more than
    :data:`MAX_RESTARTS` were needed within :data:`RESTART_WINDOW_S`: the node
    cannot keep listening, and its own supervisor should restart it.
    """
    for i, receiver in enumerate(receivers):
        if receiver.process.is_alive() or receiver.spawner is None:
            continue
        code = receiver.process.exitcode
        how = f"killed by signal {-code} ({signal.Signals(-code).name})" if code and code < 0 else f"status {code}"
        logger.error("Receiver %d died (%s); restarting it", receiver.pid, how)
        receiver.conn.close()
        spawner = receiver.spawner
        now = time.monotonic()
        spawner.restarts = [t for t in spawner.restarts if now - t < RESTART_WINDOW_S] + [now]
        if len(spawner.restarts) > MAX_RESTARTS:
            raise ReceiverError(f"receivers died {len(spawner.restarts)} times within {RESTART_WINDOW_S:.0f} s; "
                                "stopping so that the service manager restarts the node")
        receivers[i] = spawner.spawn(receiver.row)
        receivers[i]._wait_ready(timeout)
        logger.info("Receiver %d restarted in place of %d", receivers[i].pid, receiver.pid)


def listen(host: str, port: int) -> socket.socket:
    """The listening socket the receivers share; :class:`ReceiverError` when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ReceiverError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def stop_receivers(receivers: list[Receiver], *, force: bool = False, timeout: float = DRAIN_S + 15) -> None:
    """SIGTERM (drain) or, with ``force``, SIGKILL each receiver, and wait for them to exit."""
    for receiver in receivers:
        if receiver.process.is_alive():
            os.kill(receiver.pid, signal.SIGKILL if force else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for receiver in receivers:
        receiver.process.join(max(0.0, deadline - time.monotonic()))
        if receiver.process.is_alive():
            logger.error("Receiver %d did not stop within %.0f s, killing it", receiver.pid, timeout)
            receiver.process.kill()
            receiver.process.join()
        receiver.conn.close()
    for spawner in {id(r.spawner): r.spawner for r in receivers if r.spawner}.values():
        spawner.listener.close()


def _receiver_main(config: Config, listener: socket.socket, conn: Connection, level: int, fmt: str | None,
                   parent: int, table: SharedInts, row: int) -> None:
    """A receiver process's entry point (spawned).

    numpy is marked absent first: pydicom (which pynetdicom loads) imports it when it can, 17 MB of each
    receiver's memory for pixel work a receiver never does; neither is loaded until an association or a data
    set needs it (:class:`Pynetdicom`).
    """
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]
    die_with_parent(parent)
    filemodes.restrict(config.node.group)
    raise_file_limit()
    logging.basicConfig(level=level, format=fmt or logging.BASIC_FORMAT)
    if level > logging.DEBUG:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # a line per association is the SCP's job
    status = 0
    try:
        serve_receivers(config, listener=listener, ready=lambda: conn.send(("ready", "")),
                        counts=AddressCounts(table.values, row))
    except (NodeError, OSError, ssl.SSLError, ValueError) as exc:
        logger.error("Receiver %d: %s", os.getpid(), exc)
        conn.send(("error", str(exc)))
        status = 1
    # Everything is on disk and committed; pynetdicom's DUL threads are not daemons, and
    # one waiting out a dead connection's ACSE timeout must not hold the exit. The audit messages
    # still queued get a moment (os._exit runs no atexit).
    syslog.close_all()
    logging.shutdown()
    os._exit(status)
