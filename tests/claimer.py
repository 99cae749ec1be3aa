"""A station's builder reduced to the claim protocol, in its own process (tests/test_claims.py, scripts/bench
stations): claim a job, "build" it (a half-built file under its own name), renew the lease, publish under
the fencing token, then move the file to its final name; a fenced publication removes the half-built file.

    python -m tests.claimer PORT STATION OUT [--lease S] [--hold STATION:JOB]

``--hold``: stop itself (SIGSTOP) once that job is half built, so that a test can pause or kill it
mid-build. One line on stdout per event: ``claimed``, ``published`` or ``fenced``, with the
job. Ends when no job is open.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import psycopg

from node.catalogue import claims
from tests.pg_kit import PASSWORD, USER


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("station")
    p.add_argument("out", type=Path)
    p.add_argument("--lease", type=float, default=claims.LEASE_S)
    p.add_argument("--hold", default="")
    args = p.parse_args()
    db = psycopg.connect(host="127.0.0.1", port=args.port, user=USER, password=PASSWORD, dbname="catalogue",
                         autocommit=True)
    while True:
        held = claims.claim(db, args.station, lease_s=args.lease)
        if held is None:
            if db.execute("SELECT COUNT(*) FROM claims WHERE state IN ('pending', 'building')").fetchone() == (0,):
                return 0
            time.sleep(0.02)  # another station holds the last jobs: one may be taken over yet
            continue
        name = f"{held.station}-{held.job_id}"
        print(f"claimed {name} {held.token}", flush=True)
        part = args.out / f"{name}.{args.station}.part"
        part.write_bytes(name.encode())
        if args.hold == name:
            os.kill(os.getpid(), signal.SIGSTOP)
        claims.renew(db, held, lease_s=args.lease)
        label = f"{name}.iso"

        def record(tx: psycopg.Connection[object], label: str = label) -> None:
            tx.execute("INSERT INTO volumes (station, label, job_id, kind, created, copies, paths, bytes) "
                       "VALUES (%s, %s, %s, 'archive', extract(epoch FROM clock_timestamp()), 1, '[]', 0)", (args.station, label, held.job_id))

        if claims.publish(db, held, label, finished=time.time(), record=record):
            part.replace(args.out / label)
            print(f"published {name}", flush=True)
        else:
            part.unlink()
            print(f"fenced {name}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
