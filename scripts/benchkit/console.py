"""scripts/bench console: how fast the web console answers with a large index, and what it costs receiving.

An index is generated with 10,000 archive volumes (one study each, 2,000 patients, one every 2 minutes up to now) and 1,000 jobs (900
done, 50 failed, 50 queued); `medianode serve` runs on it with its console, and the Now page, its live
part, a Volumes search by patient name and the whole Volumes list, and `/api/status` are each asked for
`--requests` times (after one warm-up) by a signed-in client; the median and the worst answer times
are put beside the 200 ms target. Then the CT study of `receive` is sent by storescu to `medianode serve`
with and without its console (2 workers, 1 and 4 associations, interleaved), as `scripts/bench receive` does.
"""
from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import TextIO

from benchkit.common import MARK, MEDIANODE, Json, bench, fmt, load_average, log
from benchkit.data import ct_study, files_of, warm
from benchkit.procs import HOST, Server, free_port
from benchkit.receive import MODES, console_cost, medianode, time_receivers

VOLUMES, JOBS, PATIENTS = 10_000, 1_000, 2_000
TARGET_MS = 200.0
PAGES = {"Now": "/", "Now, live part": "/?fragment=1", "Volumes, name search": "/volumes?name=patient%5E0042",
         "Volumes, newest": "/volumes", "API status": "/api/status"}


def make_index(data_dir: Path) -> None:
    """An index holding VOLUMES volumes and JOBS jobs (generated rows, as the node writes them)."""
    from node.config import Match, Route
    from node.index import Index
    from node.routing import RouteSnapshot

    data_dir.mkdir(parents=True)
    index = Index(data_dir / "index.sqlite")
    route = RouteSnapshot.of(Route(match=Match(), action="burn"), 0).to_json()
    now = time.time()
    with index.transaction() as db:
        states = ["done"] * (JOBS - 100) + ["failed"] * 50 + ["pending"] * 50
        db.executemany("INSERT INTO jobs (id, route, state, created, finished, attempts, error) VALUES (?, ?, ?, ?, ?, 1, ?)",
                       [(j + 1, route, s, now - 3600, now - 60 if s != "pending" else None,
                         "xorriso could not write /dev/sr0" if s == "failed" else None) for j, s in enumerate(states)])
        db.executemany("INSERT INTO volumes (label, job_id, kind, created, copies, paths, bytes) "
                       "VALUES (?, ?, 'archive', ?, 1, ?, ?)",
                       [(f"MEDIANODE_{v:06d}", v % JOBS + 1, now - (VOLUMES - v) * 120, json.dumps([f"/out/{v}.iso"]),
                         600_000_000) for v in range(VOLUMES)])
        db.executemany("INSERT INTO volume_studies (label, study_uid, patient_id, patient_name) VALUES (?, ?, ?, ?)",
                       [(f"MEDIANODE_{v:06d}", f"1.2.3.{v}", f"P{v % PATIENTS:05d}", f"PATIENT^{v % PATIENTS:04d}")
                        for v in range(VOLUMES)])
    index.close()


def sign_in(data_dir: Path) -> tuple[str, str]:
    """A session cookie and an API token of a viewer made for the bench."""
    from node import users
    from node.index import Index

    index = Index(data_dir / "index.sqlite")
    try:
        user = users.add(index, "bench", "viewer", "bench-password")
        return users.open_session(index, user), users.new_token(index, "bench")[1]
    finally:
        index.close()


def answer_times(port: int, path: str, headers: dict[str, str], n: int) -> list[float]:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    times = []
    try:
        for i in range(n + 1):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: {response.status}")
            if i:  # the first is a warm-up
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
    return times


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=20, help="requests per page (default 20)")


@bench("console", "the console's answer times on 10,000 volumes and 1,000 jobs; receive with and without it",
       add_args, runs=3)
def run_console(args: argparse.Namespace) -> Json:
    root = args.data / "out" / "console"
    shutil.rmtree(root, ignore_errors=True)
    load_before = load_average()
    log(f"\nindex of {VOLUMES} volumes and {JOBS} jobs; {args.requests} requests a page")
    make_index(root / "var")
    session, token = sign_in(root / "var")
    port, console = free_port(), free_port()
    config = {"node": {"ae_title": "MEDIANODE", "host": HOST, "port": port, "data_dir": str(root / "var"),
                       "workers": 1, "min_free_mb": 0},
              "burn": {"output": str(root / "out"), "study_stable_seconds": 3600},
              "routes": [{"match": {"called_aet": "STORE"}, "action": "store"}],
              "console": {"host": HOST, "port": console}}
    (root / "medianode.yaml").write_text(json.dumps(config, indent=2) + "\n")
    pages: Json = {}
    with Server("medianode serve (console)", [MEDIANODE, "serve", "--config", root / "medianode.yaml"],
                aet="MEDIANODE", port=port, log=root / "serve.log"):
        for name, path in PAGES.items():
            headers = ({"Authorization": f"Bearer {token}"} if path.startswith("/api/")
                       else {"Cookie": f"medianode_session={session}"})
            times = answer_times(console, path, headers, args.requests)
            med, worst = statistics.median(times), max(times)
            pages[name] = {"path": path, "median_ms": med, "max_ms": worst, "met": med <= TARGET_MS}
            log(f"  {name}: median {med:.0f} ms, worst {worst:.0f} ms")
    shutil.rmtree(root, ignore_errors=True)

    spec, src = ct_study(args)
    files = files_of(src)
    nbytes = warm(files)
    recv_root = args.data / "out" / "console-receive"
    shutil.rmtree(recv_root, ignore_errors=True)
    recv_root.mkdir(parents=True)
    receivers = [medianode(recv_root, 2), medianode(recv_root, 2, console=True)]
    log(f"\n{spec.label}: {len(files)} files; receive with and without the console, {args.runs} runs")
    try:
        results = time_receivers(receivers, files, args.runs, args.warmup)
    finally:
        shutil.rmtree(recv_root, ignore_errors=True)
    rec = {r.key: {"label": r.label, "modes": {m: s.summary(len(files), nbytes) for m, s in results[r.key].items()}}
           for r in receivers}
    res: Json = {"index": {"volumes": VOLUMES, "jobs": JOBS}, "target_ms": TARGET_MS, "pages": pages,
                 "receive": rec, "console_cost": console_cost(rec), "load_before": load_before,
                 "load_after": load_average()}
    print_table(res, sys.stderr if args.json else sys.stdout)
    return res


def print_table(res: Json, out: TextIO) -> None:
    def line(text: str = "") -> None:
        print(text, file=out)

    line(f"\nconsole on an index of {res['index']['volumes']:,} volumes and {res['index']['jobs']:,} jobs "
         f"(load average before {res['load_before']}, after {res['load_after']})")
    for name, p in res["pages"].items():
        line(f"  {name:24} {p['path']:32} median {p['median_ms']:6.0f} ms, worst {p['max_ms']:6.0f} ms "
             f"(target <= {res['target_ms']:.0f} ms) {MARK[p['met']]}")
    for key, r in res["receive"].items():
        cells = ", ".join(f"{fmt(r['modes'][m]['inst_s'], '.0f')} inst/s ({m} assoc.)" for m in MODES)
        line(f"  {r['label']:40} {cells}")
    c = res["console_cost"]
    if c:
        v, ok = c["with_over_without"], c["met"]
        line(f"  receive with the console / without: {fmt(v[1], '.2f')}x (1 assoc.) {MARK[ok[1]]}, "
             f"{fmt(v[4], '.2f')}x (4 assoc.) {MARK[ok[4]]} (target >= {c['target']}x)")
