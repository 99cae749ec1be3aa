"""Fuzz the node's parsers of outside bytes for minutes at a time.

    scripts/fuzz TARGET --minutes N [--jobs J] [--work DIR] [--timeout S] [--rss-mb M] [--engine atheris|random]

TARGET is one of elements, dicomdir, iso, udf, pdu, commands (``tests/fuzzing.py`` says what each
runs), or ``all``; with ``all``, ``--jobs`` targets run at a time, each for N minutes. Seeds are
real files (pydicom's test files, media made by ``medianode burn`` and by DCMTK ``dcmmkdir`` +
xorriso, PDUs from pynetdicom and DCMTK ``echoscu``), built with the corpus and the findings under
``--work`` (a new temporary folder by default; nothing is written into the repository).

Each target runs in a child process, coverage-guided by atheris (libFuzzer) when it is installed
(``pip install -e '.[fuzz]'``), else by a random mutator. An input that raises anything the
node's callers do not catch (a crash), runs longer than ``--timeout`` seconds (a hang) or takes the
process past ``--rss-mb`` MiB (out of memory) is saved in ``WORK/findings/TARGET/`` with what
happened; the child is then restarted and fuzzing goes on until the minutes are up. The last line
per target says how many inputs were tried and what was found.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("elements", "dicomdir", "iso", "udf", "pdu", "commands")
#: How a random-engine child tells the supervisor about an input that raised (then it goes on).
CRASH_MARK = "medianode-fuzz: crash "


@dataclass
class Tally:
    target: str
    inputs: int = 0
    findings: dict[str, list[str]] = field(default_factory=lambda: {"crash": [], "hang": [], "out of memory": []})

    def line(self, minutes: float) -> str:
        found = ", ".join(f"{len(v)} {k}{'es' if k == 'crash' and len(v) != 1 else 's' if k == 'hang' and len(v) != 1 else ''}"
                          for k, v in self.findings.items())
        return f"{self.target}: {self.inputs} inputs in {minutes:g} min; {found}"


# -- the child -----------------------------------------------------------------------------


def child(target_name: str, work: Path, engine: str, timeout: int, rss_mb: int, flags: list[str]) -> None:
    """Fuzz one target in this process until the time in ``flags`` is up or an input fails."""
    corpus = work / "corpus" / target_name
    findings = work / "findings" / target_name
    corpus.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["node", "pydicom", "pynetdicom", "pycdlib"]):
            import node.media.sources  # noqa: F401  (instrumented before the targets import them)
            import node.read.check  # noqa: F401
            import node.receive.instance  # noqa: F401
            import pycdlib  # noqa: F401
            import pydicom  # noqa: F401
            import pynetdicom  # noqa: F401
            import pynetdicom.dimse_messages  # noqa: F401
            import pynetdicom.pdu  # noqa: F401
    from tests import fuzzing

    target = fuzzing.targets(work / "scratch" / target_name)[target_name]
    if not any(corpus.iterdir()):
        for i, seed in enumerate(target.seeds):
            (corpus / f"seed-{i}").write_bytes(seed)
    if engine == "atheris":
        _atheris(target, corpus, findings, timeout, rss_mb, flags)
    else:
        _random(target, corpus, findings, timeout, rss_mb, flags)


def _mutate(target: object, data: bytes, rng: random.Random) -> bytes:
    from tests import fuzzing

    seeds = target.seeds  # type: ignore[attr-defined]
    if not data or rng.random() < 0.05:
        data = rng.choice(seeds)
    return fuzzing.apply(data, fuzzing.random_ops(rng, rng.randint(1, 4)), hot=target.hot)  # type: ignore[attr-defined]


def _atheris(target: object, corpus: Path, findings: Path, timeout: int, rss_mb: int, flags: list[str]) -> None:
    import atheris

    largest = max(len(s) for s in target.seeds)  # type: ignore[attr-defined]

    def mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.6:
            return _mutate(target, data, rng)[:max_size]
        return atheris.Mutate(data, max_size)  # type: ignore[no-any-return]

    argv = [sys.argv[0], *flags, f"-timeout={timeout}", f"-rss_limit_mb={rss_mb}", f"-max_len={2 * largest}",
            f"-artifact_prefix={findings}/", "-print_final_stats=1", "-reload=0", str(corpus)]
    atheris.Setup(argv, target.run, custom_mutator=mutator)  # type: ignore[attr-defined]
    atheris.Fuzz()


def _random(target: object, corpus: Path, findings: Path, timeout: int, rss_mb: int, flags: list[str]) -> None:
    """The mutator without coverage: a memory limit on the process, a watchdog per input."""
    seconds = next(int(f.split("=", 1)[1]) for f in flags if f.startswith("-max_total_time="))
    resource.setrlimit(resource.RLIMIT_AS, (rss_mb << 20, rss_mb << 20))
    current = findings / "current-input"
    rng = random.Random()
    end, tried = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < end:
            data = _mutate(target, b"", rng)
            current.write_bytes(data)
            faulthandler.dump_traceback_later(timeout, exit=True)  # a hang: the traceback, and exit 1
            try:
                target.run(data)  # type: ignore[attr-defined]
            except MemoryError:
                print(f"{CRASH_MARK}out of memory", file=sys.stderr, flush=True)
                os.replace(current, findings / f"oom-{tried}")
            except Exception:
                traceback.print_exc()
                path = findings / f"crash-{tried}"
                os.replace(current, path)
                print(f"{CRASH_MARK}{path}", file=sys.stderr, flush=True)
            finally:
                faulthandler.cancel_dump_traceback_later()
            tried += 1
    finally:
        print(f"stat::number_of_executed_units: {tried}", file=sys.stderr, flush=True)


# -- the supervisor ------------------------------------------------------------------------


def supervise(target: str, work: Path, minutes: float, engine: str, timeout: int, rss_mb: int) -> Tally:
    """Run ``target``'s child again and again until ``minutes`` are up, counting inputs and findings."""
    tally = Tally(target)
    findings = work / "findings" / target
    end = time.monotonic() + minutes * 60
    while (left := int(end - time.monotonic())) > 5:
        log = work / "logs" / f"{target}-{int(time.time())}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            subprocess.run([sys.executable, __file__, "--child", target, "--work", str(work), "--engine", engine,
                            "--timeout", str(timeout), "--rss-mb", str(rss_mb), "--minutes", str(left / 60)], stderr=out, stdout=out, check=False)
        text = log.read_text(errors="replace")
        units = re.findall(r"stat::number_of_executed_units: (\d+)", text)
        tally.inputs += int(units[-1]) if units else max((int(n) for n in re.findall(r"^#(\d+)", text, re.M)),
                                                         default=0)
        for written in re.findall(r"Test unit written to (\S+)", text):
            kind = ("hang" if "timeout" in Path(written).name else
                    "out of memory" if "oom" in Path(written).name else "crash")
            tally.findings[kind].append(written)
            Path(written + ".txt").write_text(text[-20000:])
        for written in re.findall(rf"^{CRASH_MARK}(\S+)", text, re.M):
            tally.findings["crash"].append(written)
        if engine == "random" and "Timeout (" in text:  # faulthandler's watchdog fired
            hung = findings / f"timeout-{len(tally.findings['hang'])}"
            os.replace(findings / "current-input", hung)
            Path(f"{hung}.txt").write_text(text[-20000:])
            tally.findings["hang"].append(str(hung))
        print(tally.line(minutes), flush=True)
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", choices=(*TARGETS, "all"))
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at a time with 'all' (default 1)")
    parser.add_argument("--work", type=Path, help="corpus, findings and logs (default: a new temporary folder)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--rss-mb", type=int, default=1024, help="memory the process may use, MiB (default 1024)")
    parser.add_argument("--engine", choices=("atheris", "random"), default=None,
                        help="default: atheris when installed, else random")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    engine = args.engine or ("atheris" if _has_atheris() else "random")
    if args.child:
        child(args.child, args.work, engine, args.timeout, args.rss_mb, [f"-max_total_time={int(args.minutes * 60)}"])
        return 0
    if args.target is None:
        parser.error("a TARGET is needed")
    work = args.work or Path(tempfile.mkdtemp(prefix="medianode-fuzz-"))
    targets = TARGETS if args.target == "all" else (args.target,)
    print(f"fuzzing {', '.join(targets)} for {args.minutes:g} min each with {engine}, at most {args.timeout} s "
          f"and {args.rss_mb} MiB per input; findings in {work}/findings", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        tallies = list(pool.map(lambda t: supervise(t, work, args.minutes, engine, args.timeout, args.rss_mb),
                                targets))
    print("\n".join(t.line(args.minutes) for t in tallies))
    return 1 if any(any(t.findings.values()) for t in tallies) else 0


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
