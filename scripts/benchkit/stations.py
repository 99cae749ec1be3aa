"""scripts/bench stations: what a shared catalogue costs and how fast stations share jobs, in the same run.

- Receiving: `medianode serve` alone, and the same on a catalogue (its outbox drained into a PostgreSQL
  started for the run), each sent the CT study by DCMTK storescu over 1 and 4 associations (scripts/bench
  receive's machinery), rounds interleaved; the ratio with / without must stay at or above RECEIVE_TARGET.
- Claims: 1, 2 and 4 station builders (tests/claimer.py, each its own process and connection) claiming,
  renewing and publishing a queue of jobs under fencing tokens (node.catalogue.claims): claims per second,
  from the first publication to the last (the processes' start-up left out).
- Stability to start: a burn route with study_stable_seconds 1; from the moment the study has been quiet
  that long to its job's start, alone and on a catalogue; and with a shared spool, 1, 2 and 4 stations
  running ``serve`` whose route lets all of them build the job (its start: the first claim, on the
  catalogue's clock, which is this machine's).

PostgreSQL is Debian's, started in a temporary folder by tests/pg_kit.py (as nobody when run as root).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, closing
from pathlib import Path
from collections.abc import Callable
from typing import Any, TextIO

from benchkit.common import MARK, MEDIANODE, REPO, Failed, Json, bench, fmt, load_average, log
from benchkit.data import ct_study, files_of, warm
from benchkit.procs import HOST, Server, free_port
from benchkit.receive import MODES, Receiver, medianode, storescu, time_receivers

sys.path.insert(0, str(REPO))
from tests.pg_kit import Postgres  # noqa: E402 - the repository's root first


#: Receiving on a catalogue / alone, inst/s: the outbox must not slow receiving down.
RECEIVE_TARGET = 0.95
CLAIMERS = (1, 2, 4)


def on_catalogue(r: Receiver, pg: Postgres, station: str) -> Receiver:
    """``r`` (a medianode receiver not started yet) fed into ``pg`` as ``station``."""
    config_file = Path(r.server.argv[-1])
    config = json.loads(config_file.read_text())
    config["node"] |= {"catalogue": pg.url(), "catalogue_password_file": str(pg.password_file), "station": station}
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    return Receiver(r.key + "-catalogue", r.label + ", on a catalogue", r.server, r.count, r.clear)


def receiving(args: argparse.Namespace, pg: Postgres, root: Path) -> Json:
    spec, src = ct_study(args)
    files = files_of(src)
    nbytes = warm(files)
    alone = medianode(root, 2)
    fed = on_catalogue(medianode(root / "fed", 2), pg, "BENCH")
    log(f"\nreceiving {spec.label}: {len(files)} files, alone and on a catalogue; {args.runs} runs")
    results = time_receivers([alone, fed], files, args.runs, args.warmup)
    rows = {r.key: {m: results[r.key][m].summary(len(files), nbytes) for m in MODES} for r in (alone, fed)}
    ratio = {m: (rows[fed.key][m]["inst_s"] / rows[alone.key][m]["inst_s"]
                 if rows[fed.key][m]["inst_s"] and rows[alone.key][m]["inst_s"] else None) for m in MODES}
    return {"data": {"label": spec.label, "files": len(files), "bytes": nbytes},
            "alone": rows[alone.key], "catalogue": rows[fed.key], "ratio": ratio, "target": RECEIVE_TARGET}


def claiming(args: argparse.Namespace, pg: Postgres, root: Path) -> Json:
    jobs = 300 if args.quick else 2000
    out: Json = {"jobs": jobs}
    for n in CLAIMERS:
        samples = []
        for run in range(args.warmup + args.runs):
            with pg.connect(autocommit=True) as db:
                db.execute("DELETE FROM claims")
                db.execute("DELETE FROM volumes")
                with db.cursor() as cur:
                    cur.executemany("INSERT INTO claims (station, job_id, stations, state, created) "
                                    "VALUES ('A', %s, %s, 'pending', %s)",
                                    [(j, [f"S{i}" for i in range(n)], float(j)) for j in range(jobs)])
            folder = root / f"claims-{n}-{run}"
            folder.mkdir(parents=True)
            procs = [subprocess.Popen([sys.executable, "-m", "tests.claimer", str(pg.port), f"S{i}", str(folder)],
                                      cwd=REPO, stdout=subprocess.DEVNULL) for i in range(n)]
            for p in procs:
                p.wait(timeout=600)
            with pg.connect() as db:  # from the first publication to the last: the processes' start-up left out
                done, seconds = db.execute("SELECT COUNT(DISTINCT label), MAX(created) - MIN(created) "
                                           "FROM volumes").fetchone() or (0, 0.0)
            if done != jobs or any(p.returncode for p in procs):
                raise Failed(f"{n} claimers: {done} of {jobs} published")
            if run >= args.warmup:
                samples.append(seconds)
            log(f"  {n} station(s), {jobs} jobs: {seconds:.2f} s, {jobs / seconds:.0f} claims/s")
        out[str(n)] = {"median_s": statistics.median(samples), "claims_s": jobs / statistics.median(samples)}
    return out


#: The quiet period of the stations the delays are measured on, in seconds: a study is stable that long after
#: its last instance.
STABLE_SECONDS = 1


def station_config(home: Path, port: int, pg: Postgres | None, name: str, stations: list[str] | None = None) -> Path:
    """A station of these runs: its own data folder, output and port, on ``pg`` if given; its burn route built
    by any of ``stations`` (a shared spool) if given, else by the station alone."""
    node: dict[str, Any] = {"ae_title": "MEDIANODE", "host": HOST, "port": port, "data_dir": str(home / "var"),
                            "min_free_mb": 0}
    if pg:
        node |= {"catalogue": pg.url(), "catalogue_password_file": str(pg.password_file), "station": name}
    route: dict[str, Any] = {"match": {"called_aet": "BURN"}, "action": "burn", "profile": "STD-GEN-CD"}
    if stations:
        node["shared_spool"], route["stations"] = True, stations
    home.mkdir(parents=True)
    (home / "medianode.yaml").write_text(json.dumps({  # JSON is YAML
        "node": node, "burn": {"output": str(home / "out"), "study_stable_seconds": STABLE_SECONDS},
        "routes": [route], "console": {"enabled": False}}))
    return home / "medianode.yaml"


def _until(read: Callable[[], tuple[float, float] | None], home: Path, what: str) -> tuple[float, float]:
    """What ``read`` returns once it returns something (within 120 s), else Failed with the station's log."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (found := read()) is not None:
            return found
        time.sleep(0.02)
    raise Failed(f"no job {what}: {(home / 'serve.log').read_text()[-2000:]}")


def _delays(args: argparse.Namespace, label: str, run_once: Callable[[int], tuple[float, float]]) -> Json:
    """Medians of ``run_once(run)``'s (event time, last instance's time) minus the quiet period, warm-up runs
    left out."""
    delays = []
    for run in range(args.warmup + args.runs):
        at, last = run_once(run)
        delay = at - (last + STABLE_SECONDS)
        if run >= args.warmup:
            delays.append(delay)
        log(f"  {label}: {delay:.2f} s")
    return {"median_s": statistics.median(delays), "runs_s": [round(d, 3) for d in delays]}


def to_start(args: argparse.Namespace, pg: Postgres | None, root: Path) -> Json:
    """Seconds from a study's stability to its job's start (medians), for one station alone or on ``pg``:
    each run a new station (a new data folder) sent the same four instances."""
    files = files_of(ct_study(args)[1])[:4]

    def run_once(run: int) -> tuple[float, float]:
        home, port = root / f"start-{'catalogue' if pg else 'alone'}-{run}", free_port()
        config = station_config(home, port, pg, f"T{run}")
        with Server("medianode serve", [MEDIANODE, "serve", "--config", config], aet="MEDIANODE", port=port,
                    log=home / "serve.log"):
            storescu("BURN", port, [files])

            def started() -> tuple[float, float] | None:
                with closing(sqlite3.connect(home / "var" / "index.sqlite", timeout=60)) as db:
                    return db.execute("SELECT j.started, s.last_received FROM jobs j JOIN job_studies js "
                                      "ON js.job_id = j.id JOIN studies s USING (study_uid) "
                                      "WHERE j.started IS NOT NULL").fetchone()

            return _until(started, home, "started")

    return _delays(args, f"stable -> started, {'on a catalogue' if pg else 'alone'}", run_once)


def to_start_shared(args: argparse.Namespace, pg: Postgres, root: Path, n: int) -> Json:
    """Seconds from a study's stability at the station that received it to the first claim of its job, with
    ``n`` stations sharing their spool (each run new stations, so that the same instances are a new study)."""
    files = files_of(ct_study(args)[1])[:4]

    def run_once(run: int) -> tuple[float, float]:
        names = [f"N{n}R{run}S{i}" for i in range(n)]
        homes = [root / f"shared-{name}" for name in names]
        ports = [free_port() for _ in names]
        with ExitStack() as running:
            for name, home, port in zip(names, homes, ports):
                config = station_config(home, port, pg, name, names)
                running.enter_context(Server(f"medianode serve {name}", [MEDIANODE, "serve", "--config", config],
                                             aet="MEDIANODE", port=port, log=home / "serve.log"))
            storescu("BURN", ports[0], [files])

            def claimed() -> tuple[float, float] | None:
                with pg.connect() as db:
                    row = db.execute("SELECT claimed FROM claims WHERE station = %s AND claimed IS NOT NULL",
                                     (names[0],)).fetchone()
                if not row:
                    return None
                with closing(sqlite3.connect(homes[0] / "var" / "index.sqlite", timeout=60)) as local:
                    return row[0], local.execute("SELECT MAX(last_received) FROM studies").fetchone()[0]

            return _until(claimed, homes[0], "claimed")

    return _delays(args, f"stable -> claimed, {n} station(s) sharing their spool", run_once)


def print_table(res: Json, out: TextIO) -> None:
    def print(text: str) -> None:
        out.write(text + "\n")

    r = res["receiving"]
    print(f"\nreceiving {r['data']['label']}, {r['data']['files']} files: medianode serve (2 workers) alone and on a "
          f"catalogue, median of {res['runs']} runs; load {res['load_before']} -> {res['load_after']}")
    for m in MODES:
        a, c, v = r["alone"][m]["inst_s"], r["catalogue"][m]["inst_s"], r["ratio"][m]
        ok = None if v is None else v >= RECEIVE_TARGET
        print(f"  {m} assoc.: alone {fmt(a, '.0f')} inst/s, on a catalogue {fmt(c, '.0f')} inst/s: "
              f"{fmt(v, '.2f')}x (target >= {RECEIVE_TARGET}x) {MARK[ok]}")
    c = res["claims"]
    print(f"claims ({c['jobs']} jobs, claim + renew + publish under the fencing token, each station its own process):")
    for n in CLAIMERS:
        print(f"  {n} station(s): {c[str(n)]['claims_s']:.0f} claims/s ({c[str(n)]['median_s']:.2f} s)")
    s = res["stability_to_start"]
    print(f"study stable -> its job started: alone {s['alone']['median_s']:.2f} s, on a catalogue "
          f"{s['catalogue']['median_s']:.2f} s; sharing the spool, "
          + ", ".join(f"{n} station(s) {s['shared'][str(n)]['median_s']:.2f} s" for n in CLAIMERS))


@bench("stations", "a station alone vs on a shared catalogue; claims per second with 1, 2 and 4 stations", runs=3)
def run_stations(args: argparse.Namespace) -> Json:
    root = args.data / "out" / "stations"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    root.mkdir(parents=True)
    load_before = load_average()
    pg = Postgres()
    try:
        pg.start()
        pg.create_database()
        res: Json = {"runs": args.runs, "load_before": load_before}
        res["receiving"] = receiving(args, pg, root)
        res["claims"] = claiming(args, pg, root)
        res["stability_to_start"] = {"alone": to_start(args, None, root), "catalogue": to_start(args, pg, root),
                                     "shared": {str(n): to_start_shared(args, pg, root, n) for n in CLAIMERS}}
        res["load_after"] = load_average()
    finally:
        pg.remove()
        subprocess.run(["rm", "-rf", str(root)], check=True)
    print_table(res, sys.stderr if args.json else sys.stdout)
    return res
