"""Where a receiver's CPU goes per instance: py-spy samples the whole process tree during one run.

py-spy (pip, the test extras) reads the Python stacks of a running process from outside, children
included, without changing its speed much; idle threads (waiting in recv, sleep, a lock) are not
sampled, so samples are CPU time. Each sample is put in one bucket by the innermost frame that is
not the standard library's (the caller that asked for a syscall, a hash or a copy pays for it), and
the bucket's share of the run's CPU seconds (from /proc) is divided by the instances sent.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchkit.common import Json, log

#: where a frame's file starts (py-spy names it from its sys.path entry on) -> bucket, first match wins;
#: a frame in none of them is the standard library's, and its caller pays
BUCKETS = (("pynetdicom/", "pynetdicom"), ("pydicom/", "pydicom"), ("node/receive/spool.py", "node spool (fsync)"),
           ("node/receive/", "node.receive"), ("node/pdu.py", "node.pdu"), ("node/index.py", "node.index (SQLite)"),
           ("node/durable.py", "node spool (fsync)"), ("node/dcmio.py", "node.dcmio (header)"),
           ("node/", "node (other)"), ("minimal_scp.py", "the minimal SCP's handler"))


def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Profile:
    """py-spy recording one process tree until stopped: ``with Profile(pid, out) as p: ...; p.buckets()``."""

    def __init__(self, pid: int, out: Path, rate: int = 200) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profile:
        exe = py_spy()
        if exe is None:
            log("  py-spy not installed (scripts/install --test): no profile")
            return self
        self.proc = subprocess.Popen([exe, "record", "--pid", str(self.pid), "--subprocesses", "--rate",
                                      str(self.rate), "--format", "raw", "--output", str(self.out), "--nonblocking"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def buckets(self) -> Counter[str]:
        """Samples per bucket (:data:`BUCKETS`, else the innermost frame's file)."""
        found: Counter[str] = Counter()
        if not self.out.is_file():
            return found
        for line in self.out.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            found[bucket(stack.split(";"))] += int(count)
        return found


def bucket(frames: list[str]) -> str:
    """The bucket of one stack (outermost frame first)."""
    for frame in reversed(frames):
        where = frame[frame.rfind("(") + 1:]
        for part, name in BUCKETS:
            if where.startswith(part) or "/" + part in where:
                return name
    return "standard library"


def per_instance(samples: Counter[str], cpu_s: float, instances: int) -> Json:
    """ms of CPU per instance, per bucket, the run's CPU split by the buckets' shares."""
    total = sum(samples.values())
    if not total or not instances:
        return {}
    return {name: round(1000 * cpu_s * n / total / instances, 3) for name, n in samples.most_common()}
