"""Servers the benchmarks start (stopped by PID), and what a process tree costs, read from /proc.

CPU: utime + stime + cutime + cstime of every process in the tree, zombies included (a zombie keeps
its times until its parent reaps it, which moves them into the parent's cutime), so the sum taken
before and after a run counts processes that came and went meanwhile (`storescp --fork`'s children).
Peak RSS: VmHWM of each process in the tree, sampled every PeakRss.interval seconds; reset() writes 5
to /proc/PID/clear_refs so that the peak is the run's, not the process's since it started.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from benchkit.common import NODELAY, Failed, env_with, tail

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str   # "Z" for a zombie
    ticks: int   # utime + stime + cutime + cstime


def _stat(pid: int) -> Proc | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return Proc(pid, int(fields[1]), fields[0], sum(int(v) for v in fields[11:15]))


def process_tree(root: int) -> list[Proc]:
    """root and all its descendants, zombies included; empty when root is gone."""
    procs = [p for name in os.listdir("/proc") if name.isdigit() and (p := _stat(int(name))) is not None]
    children: defaultdict[int, list[Proc]] = defaultdict(list)
    for p in procs:
        children[p.ppid].append(p)
    tree = [p for p in procs if p.pid == root]
    for p in tree:  # grows while it is walked
        tree.extend(children[p.pid])
    return tree


def cpu_seconds(tree: Sequence[Proc]) -> float:
    return sum(p.ticks for p in tree) / CLK_TCK


def wait_children_done(root: int, before: set[int], timeout: float = 10.0) -> None:
    """Wait until the processes of root's tree that were not in `before` have exited (or are zombies)."""
    deadline = time.monotonic() + timeout
    while any(p.pid not in before and p.state != "Z" for p in process_tree(root)):
        if time.monotonic() > deadline:
            return
        time.sleep(0.02)


def proc_kb(pid: int, file: str, field: str) -> int | None:
    """A kB figure of /proc/PID/FILE (``VmHWM:`` of status, ``Pss:`` of smaps_rollup); None when the process is
    gone, or a zombie (no memory any more)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _vm_hwm_kb(pid: int) -> int | None:
    return proc_kb(pid, "status", "VmHWM:")


class PeakRss:
    """Peak RSS of a process tree: a thread samples the VmHWM of each of its processes."""

    interval = 0.1

    def __init__(self, root: int) -> None:
        self.root = root
        self.peaks: dict[int, int] = {}  # pid -> VmHWM kB, since the last reset()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"rss-{root}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> tuple[int, int]:
        """Sample now; return (max over processes, sum over processes) of their peaks, in kB."""
        with self._lock:
            for p in process_tree(self.root):
                if (kb := _vm_hwm_kb(p.pid)) is not None:
                    self.peaks[p.pid] = max(kb, self.peaks.get(p.pid, 0))
            return max(self.peaks.values(), default=0), sum(self.peaks.values())

    def reset(self) -> None:
        """Forget the peaks so far, and reset the high-water marks of the processes alive now."""
        with self._lock:
            self.peaks.clear()
            for p in process_tree(self.root):
                try:
                    Path(f"/proc/{p.pid}/clear_refs").write_text("5")
                except OSError:  # not ours to reset (or gone): its peak since it started will count
                    pass


def free_port() -> int:
    """A TCP port free on the loopback interface now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def echo(aet: str, port: int) -> bool:
    """Does a C-ECHO to aet@127.0.0.1:port succeed?"""
    argv = ["echoscu", "-aet", "BENCH", "-aec", aet, "-to", "5", HOST, str(port)]
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=env_with(NODELAY), check=False, timeout=30).returncode == 0


class Server:
    """A DICOM server process on 127.0.0.1:port, output in `log`; use it as a context manager.

    It runs in a session of its own; stop() sends SIGTERM to its PID and, if it is still there after
    `grace` seconds, SIGKILL to that session (which holds only what it started, e.g. forked children).
    """

    def __init__(self, name: str, argv: Sequence[str | Path | int], *, aet: str, port: int, log: Path,
                 env: Mapping[str, str] | None = None, grace: float = 20.0) -> None:
        self.name, self.aet, self.port, self.log, self.grace = name, aet, port, log, grace
        self.argv = [str(a) for a in argv]
        self.env = env_with(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not started"
        return self.proc.pid

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and return once it answers C-ECHO (polled, no fixed wait)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not echo(self.aet, self.port):
            if self.proc.poll() is not None:
                raise Failed(f"{self.name} exited {self.proc.returncode} at start: {self.output()}")
            if time.monotonic() > deadline:
                raise Failed(f"{self.name} did not answer C-ECHO within {timeout:.0f} s: {self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return tail(self.log.read_bytes()) if self.log.is_file() else "(no output)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session we created for it
            proc.wait()
