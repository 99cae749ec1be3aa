"""The console's process: spawned by ``serve`` beside the receivers, so that no page or API call ever
takes the GIL or a core from the Storage SCP's path.

``serve`` binds the console's port itself (a port in use fails at start, as the SCP's does) and hands
the socket to a spawned child running uvicorn; the child dies with ``serve`` (PR_SET_PDEATHSIG), is
told of reloads by SIGHUP, and is restarted by :func:`supervise` when it dies.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from multiprocessing.connection import Connection, Pipe
from types import FrameType

from node.config import Config
from node.errors import NodeError
from node.lifeline import Child, await_ready, die_with_parent, spawn

logger = logging.getLogger(__name__)

#: How long a stopping console may take to finish the requests in flight.
STOP_S = 10.0


class ConsoleError(NodeError):
    """The console could not start: its port is taken, its TLS files cannot be used."""


class ConsoleProcess:
    """The console's child process, as ``serve`` holds it: the listening socket is kept to restart it."""

    def __init__(self, config: Config, listener: socket.socket) -> None:
        self.config, self.listener = config, listener
        self.process: Child | None = None
        self.conn: Connection | None = None

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    @property
    def url(self) -> str:
        c = self.config.console
        host = f"[{c.host}]" if ":" in c.host else c.host
        return f"{'https' if c.tls else 'http'}://{host}:{self.listener.getsockname()[1]}"

    def spawn(self) -> None:
        theirs, ours = Pipe(duplex=False)
        root = logging.getLogger()
        fmt = root.handlers[0].formatter._fmt if root.handlers and root.handlers[0].formatter else None
        self.process = spawn(_main, (self.config, self.listener, ours, root.level, fmt, os.getpid()),
                             name="medianode-console")
        ours.close()
        self.conn = theirs

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once the child serves; :class:`ConsoleError` with its reason when it cannot."""
        assert self.process is not None and self.conn is not None
        why = await_ready(self.conn, self.process, timeout)
        if why is not None:
            raise ConsoleError(f"the console {why}")

    def reload(self, config: Config) -> None:
        """Tell the console that serve adopted a new configuration (a restarted console starts with it)."""
        self.config = config
        if self.process is not None and self.process.is_alive():
            os.kill(self.pid, signal.SIGHUP)

    def supervise(self) -> None:
        """Restart the console when it died (logged with how)."""
        if self.process is None or self.process.is_alive():
            return
        code = self.process.exitcode
        how = f"killed by signal {-code}" if code and code < 0 else f"status {code}"
        logger.error("the console (process %d) died (%s); restarting it", self.pid, how)
        if self.conn is not None:
            self.conn.close()
        self.spawn()

    def stop(self) -> None:
        """SIGTERM the child (requests in flight finish), wait, kill it if it will not stop."""
        if self.process is not None:
            if self.process.is_alive():
                os.kill(self.pid, signal.SIGTERM)
            self.process.join(STOP_S)
            if self.process.is_alive():
                logger.error("the console did not stop within %.0f s, killing it", STOP_S)
                self.process.kill()
                self.process.join()
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def start(config: Config) -> ConsoleProcess:
    """Bind ``console.host:console.port`` and spawn the console on it (not waiting: see
    :meth:`ConsoleProcess.wait_ready`)."""
    c = config.console
    family = socket.AF_INET6 if ":" in c.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((c.host, c.port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        raise ConsoleError(f"the console cannot listen on {c.host}:{c.port}: {exc.strerror or exc} "
                           "(console.port; console.enabled: false turns it off)") from None
    console = ConsoleProcess(config, sock)
    console.spawn()
    return console


def _main(config: Config, listener: socket.socket, conn: Connection, level: int, fmt: str | None,
          parent: int) -> None:
    """The console process's entry point (spawned)."""
    die_with_parent(parent)
    logging.basicConfig(level=level, format=fmt or logging.BASIC_FORMAT)
    try:
        import uvicorn

        from node import tls
        from node.console.app import create_app

        app = create_app(config, serve=parent)
        state = app.state.console
        certs = config.console.tls
        server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False,
            ssl_context_factory=(lambda _cfg, _default: tls.server_context(certs.certificate, certs.key))
            if certs else None))
        if certs:
            tls.server_context(certs.certificate, certs.key)  # a bad certificate or key fails here, not per request
    except Exception as exc:  # a bad certificate, a broken install: serve says why and stops
        conn.send(("error", f"{type(exc).__name__}: {exc}" if not isinstance(exc, NodeError) else str(exc)))
        os._exit(1)

    def on_hup(sig: int, frame: FrameType | None) -> None:
        state.reload()

    signal.signal(signal.SIGHUP, on_hup)
    conn.send(("ready", ""))
    conn.close()
    server.run(sockets=[listener])
    logging.shutdown()
    os._exit(0)
