"""What ties a child process's life to its parent's: ``serve``'s receivers and its console never
outlive it and never keep its ports, and each tells serve when it is ready (or why it is not)."""

from __future__ import annotations

import ctypes
import os
import signal
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from multiprocessing.process import BaseProcess


def await_ready(conn: Connection, process: BaseProcess, timeout: float) -> str | None:
    """None once the child sent ``("ready", ...)`` on ``conn``; else why not, as the end of a sentence
    that names the child: its own message, its exit, or its silence past ``timeout``."""
    ready = mp_wait([conn, process.sentinel], timeout)
    if conn in ready:
        try:
            kind, message = conn.recv()
        except EOFError:
            kind, message = "error", "it exited"
        return None if kind == "ready" else f"did not start: {message}"
    if ready:
        return f"exited at start-up (status {process.exitcode})"
    return f"did not start within {timeout:.0f} s"


def die_with_parent(parent: int) -> None:
    """Ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG), so no orphan keeps a port.

    Exits at once when ``parent`` died before the request was made.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        raise SystemExit(1)
