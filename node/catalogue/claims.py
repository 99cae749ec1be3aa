"""Jobs that any of several stations may build: claims, leases on the database's clock, fencing tokens.

The station that cut a job *offers* it with the stations that may build it. A station *claims* the oldest
job it may build, pending or whose holder's lease has expired, in one transaction (``SELECT ... FOR UPDATE
SKIP LOCKED``: claimers never wait for each other, and never take the same row); each claim increments the
job's fencing token. The holder *renews* its lease while it builds. It *publishes* in one transaction that
locks the row, checks that the token is still its own, and records the volume: a station whose lease
expired (a pause, a hung file system) and whose job was taken over can never publish it, and the
half-built output it leaves is never published. Leases are timed by ``now()`` of the database, so that the
stations' clocks do not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.catalogue.link import Connection

#: Seconds a claim holds without being renewed (renew at least three times as often).
LEASE_S = 30.0


@dataclass(frozen=True)
class Claim:
    """A job held by ``holder`` under fencing ``token``."""

    station: str  # the station that cut it
    job_id: int
    holder: str
    token: int


def offer(db: Connection, station: str, job_id: int, stations: Sequence[str], *, created: float,
          work: str | None = None) -> None:
    """Make a job of ``station`` claimable by ``stations``, with the ``work`` a builder needs (again: nothing
    changes)."""
    db.execute("INSERT INTO claims (station, job_id, stations, state, created, work) "
               "VALUES (%s, %s, %s, 'pending', %s, %s) ON CONFLICT (station, job_id) DO NOTHING",
               (station, job_id, list(stations), created, work))


def claim(db: Connection, me: str, *, lease_s: float = LEASE_S) -> Claim | None:
    """Take the oldest job ``me`` may build that nobody holds (pending, or its holder's lease expired)."""
    with db.transaction():
        row = db.execute("SELECT station, job_id FROM claims WHERE %s = ANY(stations) AND (state = 'pending' OR "
                         "(state = 'building' AND lease_until < now())) ORDER BY created, station, job_id "
                         "LIMIT 1 FOR UPDATE SKIP LOCKED", (me,)).fetchone()
        if row is None:
            return None
        token = db.execute("UPDATE claims SET state = 'building', holder = %s, token = token + 1, "
                           "claimed = extract(epoch FROM now()), waiting = NULL, waiting_media = false, "
                           "lease_until = now() + make_interval(secs => %s) WHERE station = %s AND job_id = %s "
                           "RETURNING token", (me, lease_s, row[0], row[1])).fetchone()
    assert token is not None
    return Claim(row[0], row[1], me, token[0])


def renew(db: Connection, held: Claim, *, lease_s: float = LEASE_S, progress: tuple[int, int] | None = None,
          waiting: tuple[str, bool] | None = None) -> bool:
    """Extend the lease, and record ``progress`` (bytes written, of all) and what the output ``waiting`` for
    (its message, whether a blank medium; None: it does not wait); False when the job was taken over (stop
    building it: it will not be published)."""
    done, total = progress or (0, 0)
    message, media = waiting or (None, False)
    with db.transaction():
        cur = db.execute("UPDATE claims SET lease_until = now() + make_interval(secs => %s), "
                         "done = CASE WHEN %s THEN %s ELSE done END, total = CASE WHEN %s THEN %s ELSE total END, "
                         "waiting = %s, waiting_media = %s "
                         "WHERE station = %s AND job_id = %s AND token = %s AND state = 'building'",
                         (lease_s, progress is not None, done, progress is not None, total, message, media,
                          held.station, held.job_id, held.token))
    return cur.rowcount == 1


def publish(db: Connection, held: Claim, volume: str, *, finished: float,
            record: Callable[[Connection], None] = lambda db: None) -> bool:
    """Record the job done with ``volume``, and what ``record`` writes, in one transaction, only if ``held``
    still holds it (its token unchanged); False (nothing recorded) when another station took it over."""
    with db.transaction():
        row = db.execute("SELECT token, state FROM claims WHERE station = %s AND job_id = %s FOR UPDATE",
                         (held.station, held.job_id)).fetchone()
        if row is None or row[0] != held.token or row[1] != "building":
            return False
        record(db)
        db.execute("UPDATE claims SET state = 'done', volume = %s, finished = %s, lease_until = NULL "
                   "WHERE station = %s AND job_id = %s", (volume, finished, held.station, held.job_id))
    return True


def release(db: Connection, held: Claim, *, error: str | None = None) -> None:
    """Give a held job back (the station is stopping: pending again), or mark it failed with ``error``."""
    with db.transaction():
        db.execute("UPDATE claims SET state = %s, lease_until = NULL, holder = CASE WHEN %s THEN holder END, "
                   "error = %s, finished = CASE WHEN %s THEN extract(epoch FROM now()) END "
                   "WHERE station = %s AND job_id = %s AND token = %s AND state = 'building'",
                   ("failed" if error else "pending", error is not None, error, error is not None, held.station,
                    held.job_id, held.token))


def release_all(db: Connection, me: str) -> int:
    """Give back every job ``me`` holds (at start-up: the process that held them is gone); return how many."""
    with db.transaction():
        cur = db.execute("UPDATE claims SET state = 'pending', holder = NULL, lease_until = NULL "
                         "WHERE holder = %s AND state = 'building'", (me,))
    return cur.rowcount


#: The error of a job withdrawn (:func:`withdraw`).
WITHDRAWN = "cancelled at its station"


def withdraw(db: Connection, station: str, job_ids: Sequence[int]) -> int:
    """Jobs cancelled at the station that cut them: no longer claimable (one being built is left to finish)."""
    cur = db.execute("UPDATE claims SET state = 'failed', error = %s, finished = extract(epoch FROM now()) "
                     "WHERE station = %s AND job_id = ANY(%s) AND state = 'pending'", (WITHDRAWN, station, list(job_ids)))
    return cur.rowcount


def reopen(db: Connection, station: str, job_id: int) -> None:
    """A failed job retried at the station that cut it: claimable again."""
    db.execute("UPDATE claims SET state = 'pending', error = NULL, finished = NULL, result = NULL, done = 0, "
               "total = 0 WHERE station = %s AND job_id = %s AND state = 'failed'", (station, job_id))
