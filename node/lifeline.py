"""What ties a child process's life to its parent's: ``serve``'s receivers and its console are started
here, never outlive it and never keep its ports, and each tells serve when it is ready (or why it is not).

Children are started as fresh interpreters (:func:`spawn`), as multiprocessing's "spawn" starts them
(``serve`` holds SQLite connections and threads that a fork would copy in an unknown state), but
without its resource tracker: that is one more interpreter (12 MB) kept for the node's life, for
semaphores and shared memory names a receiver never makes. What a child is given travels pickled on
its stdin; the sockets, pipes and shared tables among it are passed as file descriptors.
"""

from __future__ import annotations

import ctypes
import importlib
import io
import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, MutableSequence
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as mp_wait
from typing import Any, cast


class Child:
    """A spawned child process: its pid, whether it lives, its exit status (negative: the signal that
    ended it)."""

    def __init__(self, popen: subprocess.Popen[bytes], name: str) -> None:
        self.popen, self.name = popen, name

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Wait for the exit, at most ``timeout`` seconds."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        if self.is_alive():
            self.popen.kill()


class SharedInts:
    """A table of C ints in an anonymous memory file that spawned children map too: what
    multiprocessing's ``RawArray`` gives, without its resource tracker. Lives as long as a process maps it."""

    def __init__(self, size: int, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("medianode-shared")
            os.ftruncate(fd, size * ctypes.sizeof(ctypes.c_int))
        self.fd, self.size = fd, size
        self._map = mmap.mmap(fd, size * ctypes.sizeof(ctypes.c_int))
        self.values = cast(MutableSequence[int], memoryview(self._map).cast("i"))

    def __reduce__(self) -> tuple[Any, ...]:
        return SharedInts, (self.size, self.fd)


class _Pickler(pickle.Pickler):
    """Pickles what a child is given, noting each file descriptor it must inherit."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.fds: list[int] = []

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, socket.socket):
            self.fds.append(obj.fileno())
            return socket.socket, (obj.family, obj.type, obj.proto, obj.fileno())
        if isinstance(obj, Connection):
            self.fds.append(obj.fileno())
            return Connection, (obj.fileno(), obj.readable, obj.writable)
        if isinstance(obj, SharedInts):
            self.fds.append(obj.fd)
        return NotImplemented


def spawn(target: Callable[..., None], args: tuple[Any, ...], *, name: str) -> Child:
    """Run ``target(*args)`` (a module-level function) in a fresh interpreter; the sockets, pipes and
    :class:`SharedInts` among ``args`` are inherited, at the same descriptor numbers."""
    payload = io.BytesIO()
    pickler = _Pickler(payload)
    pickler.dump((target.__module__, target.__qualname__, args))
    popen = subprocess.Popen([sys.executable, "-c", _BOOT, name], stdin=subprocess.PIPE, pass_fds=pickler.fds)
    assert popen.stdin is not None
    popen.stdin.write(pickle.dumps(sys.path) + payload.getvalue())
    popen.stdin.close()
    return Child(popen, name)


#: A child's first words: the parent's module search path (as multiprocessing's spawn passes it), then :func:`_main`.
_BOOT = "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); from node.lifeline import _main; _main()"


def _main() -> None:
    """A spawned child: read the target and its arguments from stdin, and run it."""
    module, qualname, args = pickle.load(sys.stdin.buffer)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    getattr(importlib.import_module(module), qualname)(*args)


def await_ready(conn: Connection, process: Child, timeout: float) -> str | None:
    """None once the child sent ``("ready", ...)`` on ``conn``; else why not, as the end of a sentence
    that names the child: its own message, its exit, or its silence past ``timeout``."""
    try:
        exited = os.pidfd_open(process.pid)  # readable once the child has exited
    except ProcessLookupError:  # exited, and already waited for
        exited = os.open(os.devnull, os.O_RDONLY)
    try:
        ready = mp_wait([conn, exited], timeout)
    finally:
        os.close(exited)
    if conn in ready:
        try:
            kind, message = conn.recv()
        except EOFError:
            kind, message = "error", "it exited"
        return None if kind == "ready" else f"did not start: {message}"
    if ready:
        process.join()
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
