"""scripts/bench receive: DCMTK storescu sends the CT study to each receiver, in the same run.

Receivers: DCMTK `storescp --fork`, Orthanc (installed from Debian when missing and we are root: a private
instance with its own configuration on a free port, the packaged system one stopped), a minimal raw-write pynetdicom
SCP (minimal_scp.py: the ceiling of one pynetdicom process) and `medianode serve` (fsync and indexing on,
a `store` route so that no burn competes) with node.workers 2 and 4. Each is started once, answers C-ECHO
before it is used, and is stopped by PID at the end. Each run sends the study over one association, and
over four in parallel (the files split in four); the rounds are interleaved over the receivers so that
drift of the machine spreads over all of them. A receiver's storage is emptied between runs (medianode:
its spool and its index's rows of what it received, so that each run stores every instance as a first send
does: the same instance again would be acknowledged without being stored). Every ratio is between figures of
the same run; nothing is quoted. After the timed runs, one more run per medianode configuration and the
minimal SCP is profiled with py-spy (benchkit.profile): CPU ms per instance, per part of the code.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from benchkit.common import MARK, MB, MEDIANODE, NODELAY, Failed, Json, bench, env_with, fmt, load_average, log, tail
from benchkit.data import ct_study, files_of, warm
from benchkit.procs import HOST, PeakRss, Server, cpu_seconds, free_port, proc_kb, process_tree, wait_children_done
from benchkit.profile import Profile, per_instance

MODES = (1, 4)  # associations in parallel
#: Ratios each medianode configuration is held to, against the peers of the same run; RSS: serve and its
#: children, their peaks added (an upper bound of the tree's peak).
TARGETS = {"vs_orthanc_1": 1.2, "vs_orthanc_4": 1.2, "vs_storescp_1": 0.5, "vs_storescp_4": 0.5,
           "max_rss_mb": 150.0}
#: The web console (its own process) may cost receiving at most this: with it / without it, inst/s.
CONSOLE_TARGET = 0.95
WORKERS = (2, 4)  # node.workers of the medianode configurations
SEND_TIMEOUT_S = 600.0


@dataclass
class Receiver:
    key: str
    label: str
    server: Server
    count: Callable[[], int]   # instances in its storage
    clear: Callable[[], None]  # empty its storage


def empty_dir(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def count_files(folder: Path, pattern: str) -> int:
    return sum(1 for p in folder.glob(pattern) if p.is_file())


def storescp(root: Path) -> Receiver:
    store, port = root / "storescp", free_port()
    store.mkdir(parents=True)
    server = Server("storescp", ["storescp", "--fork", "-aet", "STORESCP", "-od", store, port],
                    aet="STORESCP", port=port, log=root / "storescp.log", env=NODELAY)
    return Receiver("storescp", "DCMTK storescp --fork", server, lambda: count_files(store, "[!.]*"),
                    lambda: empty_dir(store))


def minimal(root: Path) -> Receiver:
    store, port = root / "minimal", free_port()
    script = Path(__file__).with_name("minimal_scp.py")
    server = Server("minimal SCP", [sys.executable, script, "--port", port, "--out", store, "--aet", "MINSCP"],
                    aet="MINSCP", port=port, log=root / "minimal.log")
    return Receiver("minimal", "minimal pynetdicom SCP", server, lambda: count_files(store, "*.dcm"),
                    lambda: empty_dir(store))


def medianode(root: Path, workers: int, *, console: bool = False) -> Receiver:
    """``medianode serve`` with ``workers`` receivers; ``console``: with its web console (in its own process)."""
    key = f"medianode-w{workers}" + ("-console" if console else "")
    home, port = root / key, free_port()
    config = {  # JSON is YAML
        "node": {"ae_title": "MEDIANODE", "host": HOST, "port": port, "data_dir": str(home / "var"),
                 "workers": workers, "min_free_mb": 0},
        "burn": {"output": str(home / "out"), "study_stable_seconds": 3600},
        "routes": [{"match": {"called_aet": "STORE"}, "action": "store"}],
        "console": {"host": HOST, "port": free_port()} if console else {"enabled": False},
    }
    home.mkdir(parents=True)
    (home / "medianode.yaml").write_text(json.dumps(config, indent=2) + "\n")
    spool, index = home / "var" / "spool", home / "var" / "index.sqlite"
    server = Server(f"medianode serve (workers {workers}{', console' if console else ''})",
                    [MEDIANODE, "serve", "--config", home / "medianode.yaml"],
                    aet="STORE", port=port, log=home / "serve.log")

    def clear() -> None:
        if spool.is_dir():
            empty_dir(spool)
        if index.exists():
            with closing(sqlite3.connect(index, timeout=60)) as db, db:
                for table in ("instances", "studies", "released_files"):
                    db.execute(f"DELETE FROM {table}")

    return Receiver(key, f"medianode serve, {workers} workers" + (", console" if console else ""), server,
                    lambda: count_files(spool, "*/*.dcm") if spool.is_dir() else 0, clear)


def install_orthanc() -> str | None:
    """The Orthanc executable; installed from Debian (``apt-get install orthanc``) when missing and we are root.

    The package starts a system instance (port 4242, its own index under /var/lib/orthanc): it is
    stopped and disabled, so that only the bench's private instance runs, on its own free port.
    """
    exe = shutil.which("Orthanc") or (p if Path(p := "/usr/sbin/Orthanc").exists() else None)
    if exe is None and os.geteuid() == 0:
        log("  Orthanc: installing the Debian package (apt-get install orthanc)")
        env = env_with({"DEBIAN_FRONTEND": "noninteractive"})
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "orthanc"],
                              stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False)
        if done.returncode != 0:  # an old package list: update it once, then try again
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "orthanc"],
                                  stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False)
        if done.returncode != 0:
            log(f"  Orthanc: apt-get install failed: {tail(done.stderr)}")
        exe = shutil.which("Orthanc") or (p if Path(p := "/usr/sbin/Orthanc").exists() else None)
    if exe is not None and os.geteuid() == 0:
        for argv in (["systemctl", "disable", "--now", "orthanc"], ["service", "orthanc", "stop"]):
            if shutil.which(argv[0]):
                subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    return exe


def orthanc(root: Path) -> Receiver | None:
    """A private Orthanc (SQLite index, no plugins, TCP_NODELAY), None when it cannot be had."""
    exe = install_orthanc()
    if exe is None:
        return None
    home, port, http = root / "orthanc", free_port(), free_port()
    home.mkdir(parents=True)
    config = {"Name": "bench", "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http,
              "StorageDirectory": str(home / "db"), "IndexDirectory": str(home / "db"),
              "DicomCheckCalledAet": False, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "StorageCompression": False, "Plugins": []}
    (home / "orthanc.json").write_text(json.dumps(config))
    api = f"http://{HOST}:{http}"

    def rest(method: str, path: str) -> Any:
        with urllib.request.urlopen(urllib.request.Request(api + path, method=method), timeout=60) as r:
            body = r.read()
        return json.loads(body) if body else None

    def clear() -> None:
        for patient in rest("GET", "/patients"):
            rest("DELETE", f"/patients/{patient}")

    def count() -> int:
        return int(rest("GET", "/statistics")["CountInstances"])

    server = Server("Orthanc", [exe, home / "orthanc.json"], aet="ORTHANC", port=port,
                    log=home / "orthanc.log", env=NODELAY)
    return Receiver("orthanc", "Orthanc (SQLite index)", server, count, clear)

# --------------------------------------------------------------------------- one run


@dataclass
class Sample:
    seconds: float
    cpu_s: float
    rss_max_kb: int  # the largest process's peak
    rss_sum_kb: int  # the processes' peaks added up (an upper bound of the tree's peak)
    pss_sum_kb: int  # the processes' PSS at the end of the run, added (shared pages counted once)
    peaks: dict[str, int]  # each process's peak (kB), by what it is


def pss_kb(pid: int) -> int:
    """The process's proportional set size (its private pages, and its share of those it shares), 0 when gone."""
    return proc_kb(pid, "smaps_rollup", "Pss:") or 0


def what(pid: int, root: int) -> str:
    """A process of a receiver's tree, named for the table: the root, or its child's name in its command line."""
    if pid == root:
        return "main"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    name = argv[-2] if len(argv) > 1 and not argv[-1] else argv[-1]
    return name.decode(errors="replace").removeprefix("medianode-") if b"medianode-" in name else f"pid {pid}"


def storescu(aet: str, port: int, chunks: list[list[Path]]) -> float:
    """Send each chunk over its own association, all at once; return the wall time until all are done."""
    with ExitStack() as stack:
        errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in chunks]
        t0 = time.perf_counter()
        procs = [subprocess.Popen(["storescu", "-aet", "BENCH", "-aec", aet, HOST, str(port), *map(str, chunk)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                  env=env_with(NODELAY)) for chunk, err in zip(chunks, errs)]
        # A plain wait() blocks in waitpid; with a timeout, Popen polls every 50 ms, and every figure would be
        # rounded up to the next poll. The timer kills what is still running at the limit.
        def kill_the_rest() -> None:
            for p in procs:
                if p.poll() is None:
                    p.kill()

        timer = threading.Timer(SEND_TIMEOUT_S, kill_the_rest)
        timer.start()
        try:
            for p in procs:
                p.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - t0
        if seconds >= SEND_TIMEOUT_S:
            raise Failed(f"storescu still running after {SEND_TIMEOUT_S:.0f} s")
        for p, err in zip(procs, errs):
            if p.returncode != 0:
                err.seek(0)
                raise Failed(f"storescu exited {p.returncode}: {tail(err.read())}")
    return seconds


def receive_once(r: Receiver, rss: PeakRss, chunks: list[list[Path]]) -> Sample:
    r.clear()
    subprocess.run(["sync"], check=True)  # no write-back of a previous run during this one
    pid = r.server.pid
    before = process_tree(pid)
    rss.reset()
    seconds = storescu(r.server.aet, r.server.port, chunks)
    wait_children_done(pid, {p.pid for p in before})  # storescp --fork: the children finish their release
    cpu = cpu_seconds(process_tree(pid)) - cpu_seconds(before)
    rss_max, rss_sum = rss.sample()
    tree = process_tree(pid)
    pss = sum(pss_kb(p.pid) for p in tree)
    peaks = {what(p.pid, pid): rss.peaks[p.pid] for p in tree if p.pid in rss.peaks}
    want = sum(map(len, chunks))
    if (got := r.count()) != want:
        raise Failed(f"{got} instances stored of {want} sent: {r.server.output()}")
    return Sample(seconds, cpu, rss_max, rss_sum, pss, peaks)


@dataclass
class Samples:
    runs: list[Sample] = field(default_factory=list)
    error: str | None = None

    def summary(self, instances: int, nbytes: int) -> Json:
        ok = bool(self.runs) and not self.error
        med = statistics.median(s.seconds for s in self.runs) if ok else None
        return {"median_s": med, "inst_s": instances / med if med else None,
                "mb_s": nbytes / MB / med if med else None,
                "cpu_s": statistics.median(s.cpu_s for s in self.runs) if ok else None,
                "peak_rss_mb": max(s.rss_max_kb for s in self.runs) * 1024 / MB if ok else None,
                "sum_rss_mb": max(s.rss_sum_kb for s in self.runs) * 1024 / MB if ok else None,
                "sum_pss_mb": max(s.pss_sum_kb for s in self.runs) * 1024 / MB if ok else None,
                "processes_mb": {k: v * 1024 / MB for k, v in max(self.runs, key=lambda s: s.rss_sum_kb).peaks.items()}
                if ok else None,
                "runs_s": [round(s.seconds, 4) for s in self.runs], "error": self.error}


def split(files: list[Path], n: int) -> list[list[Path]]:
    size = -(-len(files) // n)
    return [files[i:i + size] for i in range(0, len(files), size)]


def time_receivers(receivers: list[Receiver], files: list[Path], runs: int, warmup: int) -> dict[str, dict[int, Samples]]:
    results = {r.key: {m: Samples() for m in MODES} for r in receivers}
    with ExitStack() as stack:
        rss: dict[str, PeakRss] = {}
        for r in receivers:
            try:
                stack.enter_context(r.server)
                rss[r.key] = stack.enter_context(PeakRss(r.server.pid))
                log(f"  {r.label}: ready (pid {r.server.pid}, port {r.server.port})")
            except Failed as e:
                for s in results[r.key].values():
                    s.error = str(e)
                log(f"  {r.label} failed to start, reported as n/a:\n    " + str(e).replace("\n", "\n    "))
        for n in range(warmup + runs):
            what = f"run {n - warmup + 1}/{runs}" if n >= warmup else "warm-up"
            for r in receivers:
                for mode in MODES:
                    res = results[r.key][mode]
                    if res.error:
                        continue
                    try:
                        sample = receive_once(r, rss[r.key], split(files, mode))
                    except (Failed, OSError) as e:
                        res.error = str(e)
                        log(f"  {r.label}, {mode} assoc. failed, reported as n/a:\n    "
                            + str(e).replace("\n", "\n    "))
                        continue
                    if n >= warmup:
                        res.runs.append(sample)
                    log(f"  {what} {r.label}, {mode} assoc.: {sample.seconds:.3f} s, {len(files) / sample.seconds:.0f}"
                        f" inst/s, CPU {sample.cpu_s:.2f} s, RSS {sample.rss_max_kb / 1024:.0f} MB")
    return results

# --------------------------------------------------------------------------- ratios and table


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def inst_s(rec: Json, key: str, mode: int) -> float | None:
    r = rec.get(key, {})
    return None if r.get("absent") else r["modes"][mode]["inst_s"]


def ratios(rec: Json) -> Json:
    """Per medianode configuration: its ratios to the peers of the same run, and whether each target is met."""
    out: Json = {"medianode": {}}
    for key, r in rec.items():
        if not key.startswith("medianode"):
            continue
        vals = {f"vs_{peer}_{m}": ratio(inst_s(rec, key, m), inst_s(rec, peer, m))
                for peer in ("orthanc", "storescp", "minimal") for m in MODES}
        modes = [r["modes"][m] for m in MODES]
        rss = max((m["peak_rss_mb"] for m in modes if m["peak_rss_mb"] is not None), default=None)
        tree = max((m["sum_rss_mb"] for m in modes if m["sum_rss_mb"] is not None), default=None)
        met = {k: None if (v := vals[k]) is None else v >= t for k, t in TARGETS.items() if k in vals}
        met["max_rss_mb"] = None if tree is None else tree <= TARGETS["max_rss_mb"]
        pss = max((m["sum_pss_mb"] for m in modes if m["sum_pss_mb"] is not None), default=None)
        worst = max((m for m in modes if m["sum_rss_mb"] is not None), key=lambda m: m["sum_rss_mb"], default=None)
        out["medianode"][key] = {"ratios": vals, "peak_rss_mb": rss, "tree_rss_mb": tree, "tree_pss_mb": pss,
                                 "processes_mb": worst["processes_mb"] if worst else None, "targets_met": met}
    out["console"] = console_cost(rec)
    return out


def console_cost(rec: Json) -> Json:
    """Receive speed with the console over without it, per number of associations (same workers)."""
    with_key = next((k for k in rec if k.endswith("-console")), None)
    if with_key is None or with_key.removesuffix("-console") not in rec:
        return {}
    plain, console = rec[with_key.removesuffix("-console")]["modes"], rec[with_key]["modes"]
    vals = {m: ratio(console[m]["inst_s"], plain[m]["inst_s"]) for m in MODES}
    return {"with_over_without": vals, "target": CONSOLE_TARGET,
            "met": {m: None if v is None else v >= CONSOLE_TARGET for m, v in vals.items()}}


def print_table(res: Json, out: TextIO) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    d = res["data"]
    line(f"\n{d['label']}: {d['files']} files, {d['bytes'] / MB:.1f} MB; DCMTK storescu (TCP_NODELAY=1) on "
         f"{HOST} -> each receiver; median of {res['runs']} runs")
    line(f"  load average (1/5/15 min) before: {res['load_before']}, after: {res['load_after']}")
    head = f"{'inst/s':>7} {'MB/s':>6} {'CPU s':>6} {'RSS MB':>7} {'(sum)':>6}"
    line(f"  {'':32} {'1 association':^36}   {'4 associations (files split in 4)':^36}")
    line(f"  {'receiver':32} {head}   {head}")
    for key, r in res["receivers"].items():
        if r.get("absent"):
            line(f"  {r['label']:32} not installed")
            continue
        cells = []
        for m in MODES:
            s = r["modes"][m]
            cells.append(f"{fmt(s['inst_s'], '.0f'):>7} {fmt(s['mb_s'], '.0f'):>6} {fmt(s['cpu_s'], '.2f'):>6} "
                         f"{fmt(s['peak_rss_mb'], '.0f'):>7} {fmt(s['sum_rss_mb'], '.0f'):>6}")
        line(f"  {r['label']:32} {cells[0]}   {cells[1]}")
        for m in MODES:
            if r["modes"][m]["error"]:
                line(f"    {m} assoc. failed: {r['modes'][m]['error'].splitlines()[0][:150]}")
    line("  CPU s: receiver process tree (children included), median; RSS MB: largest process's peak during a run,"
         " (sum): all its processes' peaks added")
    rt = res["ratios"]
    c = rt.get("console")
    if c:
        v, ok = c["with_over_without"], c["met"]
        line(f"  the console's cost: receive with it / without it {fmt(v[1], '.2f')}x (1 assoc.) {MARK[ok[1]]}, "
             f"{fmt(v[4], '.2f')}x (4 assoc.) {MARK[ok[4]]} (target >= {c['target']}x)")
    t = TARGETS
    for key, m in rt["medianode"].items():
        v, ok, label = m["ratios"], m["targets_met"], res["receivers"][key]["label"]
        line(f"  {label}, against the peers of this run:")
        for mode in MODES:
            line(f"    {mode} assoc.: {fmt(v[f'vs_orthanc_{mode}'], '.2f')}x Orthanc (target >= "
                 f"{t[f'vs_orthanc_{mode}']}x) {MARK[ok[f'vs_orthanc_{mode}']]}, "
                 f"{fmt(v[f'vs_storescp_{mode}'], '.2f')}x DCMTK storescp (moonshot >= {t[f'vs_storescp_{mode}']}x) "
                 f"{MARK[ok[f'vs_storescp_{mode}']]}, {fmt(v[f'vs_minimal_{mode}'], '.2f')}x the minimal SCP")
        line(f"    peak RSS, serve and its children added: {fmt(m['tree_rss_mb'], '.0f')} MB "
             f"(target <= {t['max_rss_mb']:.0f}) {MARK[ok['max_rss_mb']]}; "
             f"largest process {fmt(m['peak_rss_mb'], '.0f')} MB; PSS added {fmt(m['tree_pss_mb'], '.0f')} MB")
        if m["processes_mb"]:
            line("      each process's peak: " + ", ".join(f"{name} {mb:.0f}" for name, mb in m["processes_mb"].items())
                 + " MB")
    if f := res.get("fsync"):
        line(f"  durability per instance on this disk: write + rename {f['plain_ms']:.2f} ms; with the file's and the "
             f"folder's fsync {f['fsync_ms']:.2f} ms")
    for key, prof in res.get("profile", {}).items():
        line(f"  profile of {res['receivers'][key]['label']}, 1 assoc. (py-spy; CPU ms per instance, "
             f"{fmt(prof['cpu_ms_per_instance'], '.2f')} in all):")
        line("    " + ", ".join(f"{name} {ms:.2f}" for name, ms in list(prof["ms"].items())[:8]))


def fsync_cost(root: Path, files: list[Path]) -> Json:
    """What durability costs per instance on this disk: each file written, fsync'd, renamed, its folder fsync'd
    (what the spool does), against the same without the two fsyncs; ms per instance, medians."""
    folder = root / "fsync"
    folder.mkdir()
    out: Json = {}
    for durable in (False, True):
        times = []
        for i, src in enumerate(files):
            data = src.read_bytes()
            t0 = time.perf_counter()
            tmp = folder / f"{i}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, data)
            if durable:
                os.fsync(fd)
            os.close(fd)
            os.rename(tmp, folder / f"{i}.dcm")
            if durable:
                dfd = os.open(folder, os.O_RDONLY)
                os.fsync(dfd)
                os.close(dfd)
            times.append(time.perf_counter() - t0)
        out["fsync_ms" if durable else "plain_ms"] = 1000 * statistics.median(times)
        empty_dir(folder)
    return out


def profile_runs(receivers: list[Receiver], files: list[Path], root: Path) -> Json:
    """One more 1-association run of medianode (the first configuration) and the minimal SCP under py-spy."""
    out: Json = {}
    picks = [r for r in receivers if r.key == "minimal"] + [r for r in receivers if r.key.startswith("medianode")][:1]
    for r in picks:
        with r.server, PeakRss(r.server.pid) as rss:
            receive_once(r, rss, [files])  # warm: imports, the index, the page cache
            with Profile(r.server.pid, root / f"{r.key}.spy") as prof:
                sample = receive_once(r, rss, [files])
            samples = prof.buckets()
        out[r.key] = {"cpu_ms_per_instance": 1000 * sample.cpu_s / len(files),
                      "ms": per_instance(samples, sample.cpu_s, len(files)), "samples": sum(samples.values())}
        log(f"  profiled {r.label}: {sum(samples.values())} samples")
    return out


@bench("receive", "storescu -> DCMTK storescp, Orthanc, a minimal pynetdicom SCP and medianode serve", runs=3)
def run_receive(args: argparse.Namespace) -> Json:
    spec, src = ct_study(args)
    files = files_of(src)
    nbytes = warm(files)
    root = args.data / "out" / "receive"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    load_before = load_average()
    receivers = [storescp(root), orthanc(root), minimal(root), *(medianode(root, w) for w in WORKERS),
                 medianode(root, WORKERS[0], console=True)]
    present = [r for r in receivers if r is not None]
    log(f"\n{spec.label}: {len(files)} files; {args.runs} runs (+{args.warmup} warm-up) per receiver, "
        f"1 and 4 associations; load average {load_before}")
    if receivers[1] is None:
        log("  Orthanc: not installed, and it could not be installed (not root, or apt-get failed)")
    try:
        results = time_receivers(present, files, args.runs, args.warmup)
        profile = profile_runs(present, files, root)
        durability = fsync_cost(root, files)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rec: Json = {}
    for r in present:
        rec[r.key] = {"label": r.label, "modes": {m: s.summary(len(files), nbytes) for m, s in results[r.key].items()}}
    if receivers[1] is None:
        rec = {"storescp": rec["storescp"], "orthanc": {"label": "Orthanc", "absent": True},
               **{k: v for k, v in rec.items() if k != "storescp"}}
    res: Json = {"data": {"label": spec.label, "files": len(files), "bytes": nbytes}, "runs": args.runs,
                 "load_before": load_before, "load_after": load_average(), "receivers": rec}
    res["ratios"] = ratios(rec)
    res["targets"] = TARGETS
    res["profile"] = profile
    res["fsync"] = durability
    print_table(res, sys.stderr if args.json else sys.stdout)
    return res
