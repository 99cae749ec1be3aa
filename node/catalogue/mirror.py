"""What each kind of the outbox is, in the station's index and in the catalogue, and one drain of the outbox.

A kind is a row of the index (a study, a job with what it waits for, a volume, an import, a media request, a
user) and the rows that hang from it (a job's studies, a volume's studies). Draining reads the waiting keys
and their rows in one snapshot of the index, writes them to the catalogue in one transaction (an upsert, or a
delete when the row is gone), and only then unqueues them: a crash or a lost connection in between pushes
them again, which changes nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.catalogue.link import Connection
from node.index import Index


@dataclass(frozen=True)
class Child:
    """Rows that hang from a kind's row: replaced whole whenever it changes."""

    table: str
    #: The column that holds the parent's key.
    parent: str
    columns: tuple[str, ...]
    #: Their rows in the index, by the parent's key, as ``columns``.
    local: str


@dataclass(frozen=True)
class Kind:
    table: str
    #: The catalogue's columns, the key first (after ``station`` when the rows are a station's).
    columns: tuple[str, ...]
    #: The row in the index, by key, as ``columns``.
    local: str
    #: The key is a number in the index (the outbox keeps it as text).
    numeric: bool = False
    #: Rows of one station (keyed by station and key); else one set for every station (users).
    scoped: bool = True
    children: tuple[Child, ...] = ()

    def read(self, db: sqlite3.Connection, key: str) -> tuple[tuple[Any, ...] | None, list[list[tuple[Any, ...]]]]:
        """The row (None when it is gone) and its children's rows."""
        k: Any = int(key) if self.numeric else key
        row = db.execute(self.local, (k,)).fetchone()
        return row, [list(db.execute(c.local, (k,))) if row else [] for c in self.children]

    def write(self, db: Connection, station: str, key: str, row: tuple[Any, ...] | None,
              children: Sequence[list[tuple[Any, ...]]]) -> None:
        k: Any = int(key) if self.numeric else key
        scope = ("station",) if self.scoped else ()
        args = (station, k) if self.scoped else (k,)
        for child in self.children:
            db.execute(f"DELETE FROM {child.table} WHERE {_where((*scope, child.parent))}".encode(), args)
        if row is None:
            db.execute(f"DELETE FROM {self.table} WHERE {_where((*scope, self.columns[0]))}".encode(), args)
            return
        columns = (*scope, *self.columns) if self.scoped else (*self.columns, "station")
        values = (station, *row) if self.scoped else (*row, station)
        conflict = ", ".join((*scope, self.columns[0]))
        update = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in (*scope, self.columns[0]))
        db.execute(f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
                   f"ON CONFLICT ({conflict}) DO UPDATE SET {update}".encode(), values)
        for child, rows in zip(self.children, children):
            names = (*scope, child.parent, *child.columns)
            with db.cursor() as cur:
                cur.executemany(f"INSERT INTO {child.table} ({', '.join(names)}) "
                                f"VALUES ({', '.join(['%s'] * len(names))})".encode(), [(*args, *r) for r in rows])


def _where(columns: Sequence[str]) -> str:
    return " AND ".join(f"{c} = %s" for c in columns)


KINDS: dict[str, Kind] = {
    "study": Kind("studies", ("study_uid", "patient_id", "patient_name", "study_date", "accession_number",
                              "first_received", "last_received"),
                  "SELECT study_uid, patient_id, patient_name, study_date, accession_number, first_received, "
                  "last_received FROM studies WHERE study_uid = ?"),
    "job": Kind("jobs", ("id", "route", "state", "created", "started", "finished", "attempts", "error", "late",
                         "output", "waiting", "waiting_since", "waiting_media"),
                "SELECT j.id, j.route, j.state, j.created, j.started, j.finished, j.attempts, j.error, j.late, "
                "j.output, w.message, w.since, COALESCE(w.media, 0) FROM jobs j LEFT JOIN job_waits w "
                "ON w.job_id = j.id WHERE j.id = ?", numeric=True,
                children=(Child("job_studies", "job_id", ("study_uid",), "SELECT study_uid FROM job_studies WHERE job_id = ?"),)),
    "volume": Kind("volumes", ("label", "job_id", "kind", "created", "copies", "paths", "bytes", "superseded_by",
                               "addendum_of", "label_record"),
                   "SELECT label, job_id, kind, created, copies, paths, bytes, superseded_by, addendum_of, "
                   "label_record FROM volumes WHERE label = ?",
                   children=(Child("volume_studies", "label", ("study_uid", "patient_id", "patient_name"),
                                   "SELECT study_uid, patient_id, patient_name FROM volume_studies WHERE label = ?"),)),
    "import": Kind("imports", ("id", "medium", "identity", "state", "started", "finished", "sent", "failed",
                               "skipped", "report", "held_reason"),
                   "SELECT id, medium, identity, state, started, finished, sent, failed, skipped, report, "
                   "held_reason FROM imports WHERE id = ?", numeric=True),
    "request": Kind("media_requests", ("uid", "calling_aet", "created", "state", "info", "initiated", "copies",
                                       "priority", "finished"),
                    "SELECT uid, calling_aet, created, state, info, initiated, copies, priority, finished "
                    "FROM media_requests WHERE uid = ?"),
    "user": Kind("users", ("name", "role", "password", "created"),
                 "SELECT name, role, password, created FROM users WHERE name = ?", scoped=False),
}


def drain(index: Index, db: Connection, station: str, *, limit: int = 500) -> int:
    """Push the oldest ``limit`` changes waiting in the outbox to the catalogue; return how many were pushed.

    Raises :data:`node.catalogue.link.Error` when the catalogue is lost meanwhile: nothing is unqueued then.
    """
    with index.snapshot() as local:
        waiting = index.outbox(limit=limit)
        rows = [KINDS[kind].read(local, key) for kind, key, _ in waiting]
    if not waiting:
        return 0
    with db.transaction():
        for (kind, key, _), (row, children) in zip(waiting, rows):
            KINDS[kind].write(db, station, key, row, children)
    index.outbox_done(waiting, now=time.time())
    return len(waiting)


def adopt_users(index: Index, db: Connection) -> int:
    """Take the catalogue's users into the station's index (:meth:`Index.adopt_users`): a user added, changed or
    removed at any station is so here; returns how many changed."""
    shared = [(str(n), str(r), str(p), float(c)) for n, r, p, c in
              db.execute("SELECT name, role, password, created FROM users")]
    return index.adopt_users(shared)
