"""The subcommand registry, running and timing whole processes, and main()."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
MEDIANODE = Path(os.environ.get("MEDIANODE", REPO / ".venv" / "bin" / "medianode"))  # env: another build
TIME = "/usr/bin/time"  # GNU time (Debian package "time"), for the peak RSS of a whole process
MB = 1e6
NODELAY = {"TCP_NODELAY": "1"}  # DCMTK leaves Nagle on without it (../shared/BENCHMARKS.md)
Json = dict[str, Any]

# --------------------------------------------------------------------------- subcommand registry

RunFn = Callable[[argparse.Namespace], Json]
ArgsFn = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Bench:
    help: str
    run: RunFn
    add_args: ArgsFn
    runs: int  # default --runs


BENCHES: dict[str, Bench] = {}


def bench(name: str, help: str, add_args: ArgsFn = lambda p: None, runs: int = 5) -> Callable[[RunFn], RunFn]:
    """Register a subcommand: `scripts/bench NAME` calls the function, which returns its results."""
    def register(fn: RunFn) -> RunFn:
        BENCHES[name] = Bench(help, fn, add_args, runs)
        return fn
    return register


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


MARK = {True: "ok", False: "MISSED", None: "n/a"}


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())

# --------------------------------------------------------------------------- whole processes


class Failed(Exception):
    """A pipeline failed; the message says why (stderr of the failing command)."""


@dataclass
class Run:
    seconds: float
    peak_rss_kb: int | None = None  # max over the process and the descendants it waited for
    cpu_s: float | None = None      # user + system, the same processes


def env_with(extra: Mapping[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def run_process(cmd: Sequence[str | Path], cwd: Path | None = None, rss: bool = False,
                env: Mapping[str, str] | None = None) -> Run:
    """Run cmd as a whole process; return its wall time and, with rss, its peak RSS and CPU time.

    The child's own ru_maxrss (os.wait4) is no use: Linux carries the parent's high-water RSS
    over the exec, so it would report this bench's memory. /usr/bin/time forks from a small process.
    """
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as peak:
        if rss and Path(TIME).is_file():
            argv = [TIME, "-f", "%M %U %S", "-o", peak.name, *argv]
        t0 = time.perf_counter()
        proc = subprocess.run(argv, check=False, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=err, env=env_with(env or {}))
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise Failed(f"{Path(cmd[0]).name} exited {proc.returncode}: {tail(err.read())}")
        words = (peak.read().strip().splitlines() or [""])[-1].split()
    if len(words) == 3 and words[0].isdigit():
        return Run(seconds, int(words[0]), float(words[1]) + float(words[2]))
    return Run(seconds)


def tail(output: bytes, chars: int = 2000) -> str:
    return output.decode(errors="replace").strip()[-chars:] or "(no output)"


@dataclass
class Result:
    runs: list[Run] = field(default_factory=list)
    error: str | None = None

    def summary(self, nbytes: int, instances: int | None = None) -> Json:
        """Median seconds, MB/s (and inst/s), median CPU s, peak RSS (MB, max over runs), each run."""
        ok = bool(self.runs) and not self.error
        med = statistics.median(r.seconds for r in self.runs) if ok else None
        rss = [r.peak_rss_kb for r in self.runs if r.peak_rss_kb is not None]
        cpu = [r.cpu_s for r in self.runs if r.cpu_s is not None]
        out: Json = {"median_s": med, "mb_s": nbytes / MB / med if med else None}
        if instances is not None:
            out["inst_s"] = instances / med if med else None
        return out | {"cpu_s": statistics.median(cpu) if ok and cpu else None,
                      "peak_rss_mb": max(rss) * 1024 / MB if ok and rss else None,
                      "runs_s": [round(r.seconds, 4) for r in self.runs], "error": self.error}

# --------------------------------------------------------------------------- main


def compile_package() -> None:
    """Compile medianode's modules to bytecode, as an installed package has them (pip compiles at install).
    With PYTHONDONTWRITEBYTECODE set, as on the reference machine, a development tree has none, and every
    process would compile every module it imports first (0.05-0.1 s of a 0.5 s burn or a 1 s import),
    which no installed node pays."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "node")], check=True,
                   stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None, doc: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, b in BENCHES.items():
        p = sub.add_parser(name, help=b.help, description=b.help)
        p.add_argument("--data", type=Path, default=REPO / "bench-data",
                       help="where generated data is cached and outputs are written (default: %(default)s)")
        p.add_argument("--runs", type=int, default=b.runs, help="timed runs, median shown (default: %(default)s)")
        p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
        p.add_argument("--quick", action="store_true", help="small data sets, for a smoke run")
        p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
        b.add_args(p)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1, --warmup at least 0")
    args.data = args.data.resolve()
    if not MEDIANODE.exists():
        log(f"note: {MEDIANODE} is missing (run scripts/install)")
    if not Path(TIME).is_file():
        log(f"note: {TIME} is missing: no peak RSS of whole processes (apt install time)")
    compile_package()
    try:
        result = BENCHES[args.bench].run(args)
    except Failed as e:
        log(f"scripts/bench {args.bench}: {e}")
        return 1
    if args.json:
        meta = {"bench": args.bench, "runs": args.runs, "warmup": args.warmup, "quick": args.quick,
                "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        json.dump(meta | result, sys.stdout, indent=2)
        print()
    return 0
