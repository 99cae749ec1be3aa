"""The SQLite index: instances, studies, jobs, volumes. The only state the receiving
side and the building side share, so either can crash and restart alone.

Every query lives here. Writers take ``BEGIN IMMEDIATE`` so that the receiver
processes, the scheduler and the job worker serialise on the database lock; the
journal is WAL, at ``synchronous=NORMAL``: a commit survives a crash of the process
(what ``kill -9`` tests) at once, and a power loss once the WAL is next flushed. The
receivers' commits are no exception, though each precedes an acknowledgement: the
spool, whose files and folders are fsync'd before any commit, holds what a lost
commit said, and is re-indexed at start-up before anyone is answered
(:func:`node.receive.instance.index_orphans`). A flush per commit would cost the
disk a third more flushes per instance received.

The schema has a version (the ``schema_version`` table) and grows by
:data:`MIGRATIONS`, applied in order when an index is opened, each in one
transaction with the row that records it. The SQL is what PostgreSQL also
accepts (``ON CONFLICT`` upserts, ids assigned in the writing transaction, no
``rowid``, ``DOUBLE PRECISION`` times), so that a shared catalogue can reuse it;
only the connection set-up (the ``PRAGMA`` lines, ``BEGIN IMMEDIATE``) and the triggers that fill the
outbox of a shared catalogue (:data:`_VERSION_9`, the station's own) are SQLite's.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from node.errors import NodeError, UsageError
from node.routing import RouteSnapshot

logger = logging.getLogger(__name__)

#: Version 1, the schema from before versions were recorded. ``IF NOT EXISTS`` lets it adopt an index
#: that schema made (its tables kept, with their rows); later migrations do not need it. Times are
#: seconds since the epoch: ``DOUBLE PRECISION`` (a REAL column in SQLite, 8 bytes in PostgreSQL too).
_VERSION_1 = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    modality TEXT NOT NULL,
    transfer_syntax TEXT NOT NULL,
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    calling_aet TEXT NOT NULL,
    called_aet TEXT NOT NULL,
    route TEXT NOT NULL,            -- the matched route's settings, JSON
    received_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    route TEXT NOT NULL,            -- the route of its latest instance
    first_received DOUBLE PRECISION NOT NULL,
    last_received DOUBLE PRECISION NOT NULL,
    pending INTEGER NOT NULL,       -- 1: holds instances no job has taken yet
    jobs INTEGER NOT NULL DEFAULT 0 -- jobs cut for it so far (a late arrival supersedes)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    route TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'building', 'done', 'failed', 'cancelled')),
    created DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    late INTEGER NOT NULL DEFAULT 0  -- cut for studies that had been burned before
);
CREATE TABLE IF NOT EXISTS job_studies (job_id INTEGER NOT NULL, study_uid TEXT NOT NULL, PRIMARY KEY (job_id, study_uid));
CREATE TABLE IF NOT EXISTS job_files (
    job_id INTEGER NOT NULL, sop_instance_uid TEXT NOT NULL, path TEXT NOT NULL, size BIGINT NOT NULL,
    PRIMARY KEY (job_id, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS job_files_by_path ON job_files(path);
CREATE TABLE IF NOT EXISTS volumes (
    label TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    copies INTEGER NOT NULL,
    paths TEXT NOT NULL,            -- JSON list of published images
    bytes BIGINT NOT NULL,
    superseded_by TEXT
);
CREATE TABLE IF NOT EXISTS volume_studies (
    label TEXT NOT NULL, study_uid TEXT NOT NULL, patient_id TEXT NOT NULL, patient_name TEXT NOT NULL,
    PRIMARY KEY (label, study_uid)
);
-- Old -> new UID for each Study, Series and SOP Instance UID a job's medium changed (lossy compression,
-- new UIDs, de-identification), so that what is on a disc can be traced to what was received.
CREATE TABLE IF NOT EXISTS job_uids (job_id INTEGER NOT NULL, old_uid TEXT NOT NULL, new_uid TEXT NOT NULL,
                                     PRIMARY KEY (job_id, old_uid));
CREATE TABLE IF NOT EXISTS released_files (path TEXT PRIMARY KEY, released DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS imports (
    id INTEGER PRIMARY KEY,
    medium TEXT NOT NULL,           -- what was imported: an inbox path, a drive, a mount point
    identity TEXT NOT NULL,         -- volume identity + DICOMDIR digest: the same disc twice is seen
    state TEXT NOT NULL CHECK (state IN ('importing', 'done', 'failed')),
    started DOUBLE PRECISION NOT NULL,
    finished DOUBLE PRECISION,
    sent INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    report TEXT                     -- path of the kept JSON report
);
CREATE INDEX IF NOT EXISTS imports_by_identity ON imports(identity);
CREATE TABLE IF NOT EXISTS job_waits (  -- a building job waiting on its output (a blank disc, the robot)
    job_id INTEGER PRIMARY KEY,
    since DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL
);
"""

#: Version 2: what tells "the same instance again" from a late arrival, when a recovered study may be cut,
#: and which volume an addendum completes.
#: (No comment on an ADD COLUMN line: SQLite copies that text into the CREATE TABLE; no ";" in a comment.)
_VERSION_2 = """
-- SHA-256 of the data set bytes after the File Meta, in the index and as each job took it
ALTER TABLE instances ADD COLUMN digest TEXT;
ALTER TABLE job_files ADD COLUMN digest TEXT;
-- a study's quiet period counts from here (a restart), not from an arrival before it
ALTER TABLE studies ADD COLUMN quiet_from DOUBLE PRECISION;
-- the label of the volume whose study this one completes
ALTER TABLE volumes ADD COLUMN addendum_of TEXT;
-- the same instance again, once the spool let it go: found by its UID, not by a scan of every job
CREATE INDEX job_files_by_instance ON job_files(sop_instance_uid, job_id)
"""

#: Version 3: a job is built, then delivered by its output's worker; ``built`` (waiting in its output's
#: queue) and ``delivering`` are states of their own, and ``output`` names that queue. A CHECK constraint
#: cannot change in place in SQLite: the table is made anew and its rows copied.
_VERSION_3 = """
CREATE TABLE jobs_v3 (
    id INTEGER PRIMARY KEY,
    route TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'building', 'built', 'delivering', 'done', 'failed',
                                         'cancelled')),
    created DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    late INTEGER NOT NULL DEFAULT 0,
    output TEXT                     -- the delivery queue of a built job: its output's device or folder
);
INSERT INTO jobs_v3 (id, route, state, created, started, finished, attempts, error, late)
    SELECT id, route, state, created, started, finished, attempts, error, late FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v3 RENAME TO jobs;
"""

#: Version 4: the people who use the console and the API. Passwords are argon2id hashes; API tokens,
#: session ids and one-time sign-in links are random and only their SHA-256 is kept, so a copy of the index
#: lets no one in. ``sign_in_failures`` is what slows down and locks a name after failed sign-ins.
_VERSION_4 = """
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'clerk', 'admin')),
    password TEXT NOT NULL,         -- argon2id, in its encoded form (parameters and salt included)
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE user_tokens (
    id TEXT PRIMARY KEY,            -- the public part of the token, "<id>.<secret>"
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    last_used DOUBLE PRECISION
);
CREATE INDEX user_tokens_by_name ON user_tokens(name);
CREATE TABLE user_sessions (
    id_sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL
);
CREATE INDEX user_sessions_by_name ON user_sessions(name);
CREATE TABLE sign_in_failures (
    name TEXT PRIMARY KEY,          -- a name tried, known or not
    failures INTEGER NOT NULL,
    last_failed DOUBLE PRECISION NOT NULL,
    locked_until DOUBLE PRECISION NOT NULL
);
CREATE TABLE sign_in_links (
    secret_sha256 TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL,
    used DOUBLE PRECISION
);
"""

#: Version 5: what the console shows of studies and volumes besides the patient. A study's Study Date and
#: Accession Number (as its instances' headers give them: the Volumes page and ``medianode volumes`` search
#: by them); a volume's label record (:class:`node.media.label.Label`, made at its burn); and each job's
#: progress while its medium is written (at most one row update a second, the last at ``done = total``).
_VERSION_5 = """
ALTER TABLE studies ADD COLUMN study_date TEXT;
ALTER TABLE studies ADD COLUMN accession_number TEXT;
CREATE INDEX studies_by_date ON studies(study_date);
CREATE INDEX studies_by_accession ON studies(accession_number);
ALTER TABLE volumes ADD COLUMN label_record TEXT;
CREATE TABLE job_progress (
    job_id INTEGER PRIMARY KEY,
    phase TEXT NOT NULL,            -- 'building': the image is written
    done BIGINT NOT NULL,           -- bytes written so far
    total BIGINT NOT NULL,          -- bytes to write
    started DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL
)
"""

#: Version 6: an import may be *held* for a person to reconcile (its instances kept under ``data_dir/held/``),
#: with the reason it waits. The CHECK constraint changes, so the table is made anew and its rows copied.
_VERSION_6 = """
CREATE TABLE imports_v6 (
    id INTEGER PRIMARY KEY,
    medium TEXT NOT NULL,
    identity TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('importing', 'done', 'failed', 'held')),
    started DOUBLE PRECISION NOT NULL,
    finished DOUBLE PRECISION,
    sent INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    report TEXT,
    held_reason TEXT                -- why a held import waits for a person
);
INSERT INTO imports_v6 (id, medium, identity, state, started, finished, sent, failed, skipped, report)
    SELECT id, medium, identity, state, started, finished, sent, failed, skipped, report FROM imports;
DROP TABLE imports;
ALTER TABLE imports_v6 RENAME TO imports;
CREATE INDEX imports_by_identity ON imports(identity);
CREATE INDEX imports_by_state ON imports(state);
"""

#: Version 7: media creation requests received over DICOM (PS3.4 Annex S): each request as its N-CREATE
#: gave it, the instances it references (held in the spool while the request is open or preserves them),
#: and the jobs cut for it with each medium's File-set ID and UID. ``state`` is what the service decided
#: (idle: created; pending: initiated; done, failed, cancelled); CREATING is read from its jobs.
_VERSION_7 = """
CREATE TABLE media_requests (
    uid TEXT PRIMARY KEY,           -- the SOP Instance UID of the Media Creation Management instance
    calling_aet TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    request TEXT NOT NULL,          -- the N-CREATE's attributes we act on, JSON
    preserve INTEGER NOT NULL,      -- 1: its instances stay in the spool until the request is forgotten
    state TEXT NOT NULL CHECK (state IN ('idle', 'pending', 'done', 'failed', 'cancelled')),
    info TEXT,                      -- Execution Status Info of a failure
    failed TEXT,                    -- JSON list of [SOP Instance UID, SOP Class UID, Failure Reason]
    initiated DOUBLE PRECISION,
    copies INTEGER,
    priority TEXT,
    finished DOUBLE PRECISION
);
CREATE TABLE media_request_refs (
    request_uid TEXT NOT NULL, position INTEGER NOT NULL, sop_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL, profile TEXT NOT NULL,
    PRIMARY KEY (request_uid, position)
);
CREATE INDEX media_request_refs_by_instance ON media_request_refs(sop_instance_uid);
CREATE TABLE media_request_jobs (
    request_uid TEXT NOT NULL, job_id INTEGER NOT NULL, fileset_id TEXT, fileset_uid TEXT,
    PRIMARY KEY (request_uid, job_id)
);
CREATE INDEX media_request_jobs_by_job ON media_request_jobs(job_id)
"""

#: Version 8: whether a waiting job waits for a blank medium (a disc in a drive, an empty USB volume) rather
#: than for a robot at work; a media request whose job waits for one reads OUT_OF_SUPPLIES.
_VERSION_8 = """
ALTER TABLE job_waits ADD COLUMN media INTEGER NOT NULL DEFAULT 0
"""

#: Version 9: the outbox that feeds a shared catalogue (:mod:`node.catalogue`). While ``catalogue_feed`` holds
#: this station's row (``node.catalogue`` is set), a trigger on each shared table queues the key of every row
#: written or deleted, in the writer's own transaction: nothing committed is missed, and nothing waits on the
#: network. A key waiting already is counted again (``seq``), so that the drainer removes it only when what
#: it pushed is still the latest. Triggers are SQLite's own syntax: the outbox is the station's, never shared.
_VERSION_9 = """
CREATE TABLE catalogue_feed (
    station TEXT PRIMARY KEY,       -- the station's name in the catalogue; no row: no catalogue, nothing queued
    since DOUBLE PRECISION NOT NULL,
    pushed DOUBLE PRECISION,        -- the last drain that reached the catalogue
    error TEXT,                     -- why the last attempt did not (NULL once one does)
    error_at DOUBLE PRECISION
);
CREATE TABLE catalogue_outbox (
    kind TEXT NOT NULL, key TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    queued DOUBLE PRECISION NOT NULL,  -- the first change not in the catalogue yet
    PRIMARY KEY (kind, key)
);
""" + "".join(
    f"CREATE TRIGGER catalogue_{table}_{event.lower()} AFTER {event} ON {table} "
    f"WHEN EXISTS (SELECT 1 FROM catalogue_feed) BEGIN "
    f"INSERT INTO catalogue_outbox (kind, key, queued) VALUES ('{kind}', {'OLD' if event == 'DELETE' else 'NEW'}.{key}, "
    f"(julianday('now') - 2440587.5) * 86400.0) ON CONFLICT (kind, key) DO UPDATE SET seq = seq + 1; END;\n"
    for table, kind, key in (("studies", "study", "study_uid"), ("jobs", "job", "id"), ("job_waits", "job", "job_id"),
                             ("volumes", "volume", "label"), ("imports", "import", "id"),
                             ("media_requests", "request", "uid"), ("users", "user", "name"))
    for event in ("INSERT", "UPDATE", "DELETE"))

#: The schema's history, oldest first: migration ``n`` (1-based) takes an index from version n-1 to n.
#: Append a migration for every change (a table, a column, an index); never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (_VERSION_1, _VERSION_2, _VERSION_3, _VERSION_4, _VERSION_5, _VERSION_6,
                                   _VERSION_7, _VERSION_8, _VERSION_9)

#: The version this code reads and writes.
SCHEMA_VERSION = len(MIGRATIONS)

_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"""


@dataclass(frozen=True)
class Received:
    """One stored instance, as the receiver indexes it."""

    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    patient_name: str
    modality: str
    transfer_syntax: str
    path: str
    size: int
    calling_aet: str
    called_aet: str
    route: str  # JSON
    received_at: float
    digest: str = ""  # SHA-256 of the data set bytes, hex ("" when not known)
    study_date: str = ""  # (0008,0020) Study Date, YYYYMMDD as received ("" when absent)
    accession_number: str = ""  # (0008,0050)


@dataclass(frozen=True)
class StableStudy:
    study_uid: str
    patient_id: str
    route: str
    jobs: int
    bytes: int


@dataclass(frozen=True)
class Job:
    id: int
    route: str
    state: str
    created: float
    started: float | None
    finished: float | None
    attempts: int
    error: str | None
    late: bool


@dataclass(frozen=True)
class Volume:
    label: str
    job_id: int
    kind: str
    created: float
    copies: int
    paths: list[str]
    bytes: int
    superseded_by: str | None
    studies: list[tuple[str, str, str]]  # (study UID, patient ID, patient name)
    #: The label of the volume this one completes: it holds what arrived after that one was burned,
    #: and lacks some of that one's instances (set by :meth:`Index.finish_job`).
    addendum_of: str | None = None
    #: Study UID -> (Study Date, Accession Number) of its studies, as the index recorded them at receipt.
    study_keys: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: The volume's label record (:meth:`node.media.label.Label.to_dict`), as its burn made it; None for a
    #: volume recorded before the index kept it.
    label_record: dict[str, Any] | None = None


@dataclass(frozen=True)
class MediaRequest:
    """A media creation request (:data:`_VERSION_7`), with its jobs: (job id, job state, File-set ID, File-set
    UID, job error, what holds it up) each; what holds a job up: 'media' (its output waits for a blank
    medium), 'busy' (built, while another job is written on its device) or ''."""

    uid: str
    calling_aet: str
    created: float
    request: dict[str, Any]
    state: str
    info: str | None
    failed: list[tuple[str, str, int]]
    initiated: float | None
    copies: int | None
    priority: str | None
    finished: float | None
    refs: list[tuple[str, str, str]]  # (SOP Instance UID, SOP Class UID, requested profile or "")
    jobs: list[tuple[int, str, str | None, str | None, str | None, str]] = field(default_factory=list)


class Index:
    """A connection to ``data_dir/index.sqlite`` (one per process and thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=60000")
        try:
            self.migrate()
        except BaseException:
            self.db.close()
            raise

    def migrate(self) -> list[int]:
        """Bring the index to :data:`SCHEMA_VERSION`; return the versions applied (none when it is there).

        Raises :class:`NodeError` for an index of a newer version, which this code
        could misread or damage.
        """
        applied: list[int] = []
        while True:
            with self.transaction() as db:  # one migration per transaction; another process may run them too
                db.execute(_VERSIONS)
                version = self.version()
                if version > SCHEMA_VERSION:
                    raise NodeError(f"{self.path} has index schema version {version}; this medianode knows "
                                    f"versions up to {SCHEMA_VERSION}: run a medianode at least as new as the "
                                    f"one that wrote it")
                if version == SCHEMA_VERSION:
                    if applied[:1] == [1]:  # a new index: one line, not one per version it went through
                        logger.info("index %s: created (schema version %d)", self.path, SCHEMA_VERSION)
                    return applied
                for statement in _statements(MIGRATIONS[version]):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?)", (version + 1, time.time()))
            applied.append(version + 1)
            if applied[0] > 1:
                logger.info("index %s: schema migrated to version %d", self.path, version + 1)

    def version(self) -> int:
        """The schema version of the index (0 before any migration)."""
        return int(self.db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database lock from its start."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- receiving -------------------------------------------------------------

    def add_instance(self, r: Received) -> bool:
        """Index a stored instance; a copy it replaces is released for deletion.

        The same instance again (its digest, when known, that of the index's copy: :meth:`copy_of`, as
        another association may have stored it meanwhile) changes nothing and returns False: its file is the
        caller's to remove.
        """
        with self.transaction() as db:
            copy = self._copy(db, r.sop_instance_uid)
            if r.digest and copy is not None and copy[1] == r.digest:
                return False
            old = db.execute("SELECT path FROM instances WHERE sop_instance_uid = ?", (r.sop_instance_uid,)).fetchone()
            if old and old[0] != r.path:
                db.execute("INSERT INTO released_files (path, released) VALUES (?, ?) "
                           "ON CONFLICT (path) DO UPDATE SET released = excluded.released", (old[0], r.received_at))
            db.execute(_UPSERT_INSTANCE, tuple(getattr(r, c) for c in _INSTANCE_COLUMNS))
            db.execute(
                """INSERT INTO studies (study_uid, patient_id, patient_name, route, first_received, last_received,
                                       pending, jobs, study_date, accession_number)
                   VALUES (?, ?, ?, ?, ?, ?, 1, 0, ?, ?)
                   ON CONFLICT (study_uid) DO UPDATE SET last_received = excluded.last_received,
                   route = excluded.route, pending = 1,
                   study_date = COALESCE(NULLIF(excluded.study_date, ''), studies.study_date),
                   accession_number = COALESCE(NULLIF(excluded.accession_number, ''), studies.accession_number)""",
                (r.study_uid, r.patient_id, r.patient_name, r.route, r.received_at, r.received_at, r.study_date,
                 r.accession_number))
        return True

    def resent(self, study_uid: str, at: float) -> None:
        """The same instance of a study again: a study still waiting for its job (pending) counts its quiet
        period from ``at``; any other study is left as it is (no job, no volume)."""
        with self.transaction() as db:
            db.execute("UPDATE studies SET quiet_from = ? WHERE study_uid = ? AND pending = 1 "
                       "AND COALESCE(quiet_from, 0) < ?", (at, study_uid, at))

    def copy_of(self, sop_instance_uid: str) -> tuple[str, str] | None:
        """The index's copy of an instance: its path and data set digest ("" until it is computed, as receiving
        does not hash); the copy in ``instances``, else (once the spool let it go) the one the latest job took.
        None for an instance never seen."""
        return self._copy(self.db, sop_instance_uid)

    @staticmethod
    def _copy(db: sqlite3.Connection, sop_instance_uid: str) -> tuple[str, str] | None:
        row = db.execute("SELECT path, digest FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)).fetchone()
        if row is None:
            row = db.execute("SELECT path, digest FROM job_files WHERE sop_instance_uid = ? ORDER BY job_id DESC LIMIT 1",
                             (sop_instance_uid,)).fetchone()
        return None if row is None else (row[0], row[1] or "")

    def record_digest(self, sop_instance_uid: str, path: str, digest: str) -> None:
        """The data set digest of the copy at ``path``, computed when first needed; the jobs that took it too."""
        with self.transaction() as db:
            for table in ("instances", "job_files"):
                db.execute(f"UPDATE {table} SET digest = ? WHERE sop_instance_uid = ? AND path = ? "
                           "AND COALESCE(digest, '') = ''", (digest, sop_instance_uid, path))

    def undigested(self, paths: Iterable[str]) -> list[tuple[str, str]]:
        """(SOP Instance UID, path) of the spool files at ``paths`` whose digest was never computed."""
        listed, found = list(paths), []
        for chunk in (listed[i:i + 500] for i in range(0, len(listed), 500)):  # under SQLite's bound variables
            found += self.db.execute(f"SELECT sop_instance_uid, path FROM instances WHERE COALESCE(digest, '') = '' "
                                     f"AND path IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        return [(uid, path) for uid, path in found]


    def study_route(self, study_uid: str) -> str | None:
        """The route recorded for a study (of its latest instance), or None for a study not seen."""
        row = self.db.execute("SELECT route FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
        return str(row[0]) if row else None

    def quiet_from(self, now: float) -> int:
        """Count the quiet period of every pending study from ``now`` (a restart: the sender that was cut
        off resumes); return how many."""
        with self.transaction() as db:
            return int(db.execute("UPDATE studies SET quiet_from = ? WHERE pending = 1", (now,)).rowcount)

    def study_instances(self, study_uid: str) -> list[tuple[str, str, str, str, str, str]]:
        """(path, SOP Instance UID, modality, SOP Class UID, called AE title, calling AE title) of the
        instances of a study the index holds, in order of arrival (``medianode routes explain --study``)."""
        return list(self.db.execute(
            "SELECT path, sop_instance_uid, modality, sop_class_uid, called_aet, calling_aet FROM instances "
            "WHERE study_uid = ? ORDER BY received_at, sop_instance_uid", (study_uid,)))

    def known_paths(self) -> set[str]:
        """Every spool file the index points at, current or waiting in a job."""
        rows = self.db.execute("SELECT path FROM instances UNION SELECT path FROM job_files")
        return {p for (p,) in rows}

    # -- scheduling ------------------------------------------------------------

    def stable_studies(self, quiet_since: float) -> list[StableStudy]:
        """Studies holding instances no job has taken, and quiet since ``quiet_since`` (and their restart)."""
        rows = self.db.execute(
            """SELECT s.study_uid, s.patient_id, s.route, s.jobs, COALESCE(SUM(i.size), 0)
               FROM studies s JOIN instances i USING (study_uid)
               WHERE s.pending = 1 AND s.last_received <= ? AND COALESCE(s.quiet_from, 0) <= ?
               GROUP BY s.study_uid ORDER BY s.first_received""",
            (quiet_since, quiet_since))
        return [StableStudy(*row) for row in rows]

    def settle(self, study_uids: Iterable[str]) -> None:
        """Mark studies whose route makes no job (store) as taken care of."""
        with self.transaction() as db:
            db.executemany("UPDATE studies SET pending = 0 WHERE study_uid = ?", [(u,) for u in study_uids])

    def study_records(self, study_uids: Sequence[str]) -> dict[str, list[str]]:
        """Study UID -> the routes its instances recorded (JSON, oldest first), then those of the jobs
        cut for it before, which stand in for instances the spool has let go."""
        marks = ",".join("?" * len(study_uids))
        rows = self.db.execute(
            f"""SELECT study_uid, route FROM (
                    SELECT study_uid, route, 1 AS part, received_at AS at FROM instances WHERE study_uid IN ({marks})
                    UNION ALL
                    SELECT js.study_uid, '[' || j.route || ']', 0, j.created FROM job_studies js
                    JOIN jobs j ON j.id = js.job_id WHERE js.study_uid IN ({marks}) AND j.route LIKE '{{%'
                    AND j.id NOT IN (SELECT job_id FROM media_request_jobs)
                ) AS r ORDER BY part, at""", (*study_uids, *study_uids))
        found: dict[str, list[str]] = {}
        for uid, route in rows:
            found.setdefault(uid, []).append(route)
        return found

    def cut_jobs(self, jobs: Sequence[tuple[list[str], str]], *, quiet_since: float) -> list[int] | None:
        """Make every job of these (studies, route) pairs in one transaction, each of a snapshot of its
        studies' instances, unless one of the studies got a new arrival meanwhile (then none: the studies
        wait again). A study burned by two routes (``also``) gets both jobs or neither."""
        study_uids = sorted({u for uids, _ in jobs for u in uids})
        with self.transaction() as db:
            marks = ",".join("?" * len(study_uids))
            fresh = db.execute(
                f"SELECT COUNT(*) FROM studies WHERE study_uid IN ({marks}) AND pending = 1 AND last_received <= ? "
                f"AND COALESCE(quiet_from, 0) <= ?", (*study_uids, quiet_since, quiet_since)).fetchone()[0]
            if fresh != len(study_uids):
                return None
            late = [bool(db.execute(f"SELECT MAX(jobs) FROM studies WHERE study_uid IN ({','.join('?' * len(u))})",
                                    u).fetchone()[0]) for u, _ in jobs]
            return [self._insert_job(db, uids, route, late=was_late) for (uids, route), was_late in zip(jobs, late)]

    def enqueue(self, study_uids: list[str], *, route: str, read_back: Iterable[tuple[str, str, int]] = ()) -> int:
        """Make a job of what the spool holds of these studies now (a re-burn of a lost disc), with the
        files ``read_back`` from an earlier image, in one transaction: no builder sees the job without them."""
        with self.transaction() as db:
            job = self._insert_job(db, study_uids, route)
            _add_job_files(db, job, read_back)
            return job

    @staticmethod
    def _insert_job(db: sqlite3.Connection, study_uids: list[str], route: str, *, late: bool | None = None) -> int:
        marks = ",".join("?" * len(study_uids))
        if late is None:
            late = bool(db.execute(f"SELECT MAX(jobs) FROM studies WHERE study_uid IN ({marks})",
                                   study_uids).fetchone()[0])
        job = _next_id(db, "jobs")
        db.execute("INSERT INTO jobs (id, route, state, created, late) VALUES (?, ?, 'pending', ?, ?)",
                   (job, route, time.time(), 1 if late else 0))
        db.executemany("INSERT INTO job_studies (job_id, study_uid) VALUES (?, ?)", [(job, u) for u in study_uids])
        db.execute(f"""INSERT INTO job_files (job_id, sop_instance_uid, path, size, digest)
                       SELECT ?, sop_instance_uid, path, size, digest FROM instances WHERE study_uid IN ({marks})""",
                   (job, *study_uids))
        db.execute(f"UPDATE studies SET pending = 0, jobs = jobs + 1 WHERE study_uid IN ({marks})", study_uids)
        return job

    def claim_job(self) -> Job | None:
        """Take the next pending job (pending -> building): a media request's by its Request Priority (HIGH,
        MED, LOW; any other job counts as MED), then the oldest."""
        with self.transaction() as db:
            row = db.execute("SELECT j.id FROM jobs j LEFT JOIN media_request_jobs r ON r.job_id = j.id "
                             "LEFT JOIN media_requests m ON m.uid = r.request_uid WHERE j.state = 'pending' "
                             "ORDER BY CASE m.priority WHEN 'HIGH' THEN 0 WHEN 'LOW' THEN 2 ELSE 1 END, j.id "
                             "LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM job_progress WHERE job_id = ?", (row[0],))  # an earlier attempt's
            db.execute("UPDATE jobs SET state = 'building', started = ?, attempts = attempts + 1, error = NULL "
                       "WHERE id = ?", (time.time(), row[0]))
        return self.job(row[0])

    def job(self, job_id: int) -> Job | None:
        row = self.db.execute("SELECT id, route, state, created, started, finished, attempts, error, late "
                              "FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, *, states: Iterable[str] = ("pending", "building", "built", "delivering", "done", "failed",
                                               "cancelled"),
             limit: int = 100) -> list[Job]:
        states = tuple(states)
        rows = self.db.execute(
            f"SELECT id, route, state, created, started, finished, attempts, error, late FROM jobs "
            f"WHERE state IN ({','.join('?' * len(states))}) ORDER BY id DESC LIMIT ?", (*states, limit))
        return [_job(r) for r in rows]

    def job_files(self, job_id: int) -> list[tuple[str, str, int]]:
        """(SOP Instance UID, spool path, size) of a job's snapshot."""
        return list(self.db.execute("SELECT sop_instance_uid, path, size FROM job_files WHERE job_id = ? "
                                    "ORDER BY path", (job_id,)))

    def job_studies(self, job_id: int) -> list[tuple[str, str, str]]:
        """(study UID, patient ID, patient name) of a job."""
        return list(self.db.execute(
            "SELECT s.study_uid, s.patient_id, s.patient_name FROM job_studies j JOIN studies s USING (study_uid) "
            "WHERE j.job_id = ? ORDER BY s.study_uid", (job_id,)))

    def finish_job(self, job_id: int, *, volumes: Sequence[Volume] = (), error: str | None = None,
                   uid_map: Mapping[str, str] | None = None) -> None:
        """Record a job's outcome, its volumes, which earlier volumes they supersede, and the UIDs it changed."""
        with self.transaction() as db:
            job_route = str(db.execute("SELECT route FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
            db.execute("UPDATE jobs SET state = ?, finished = ?, error = ? WHERE id = ?",
                       ("failed" if error else "done", time.time(), error, job_id))
            db.execute("DELETE FROM job_waits WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM job_uids WHERE job_id = ?", (job_id,))
            db.executemany("INSERT INTO job_uids (job_id, old_uid, new_uid) VALUES (?, ?, ?)",
                           [(job_id, *p) for p in (uid_map or {}).items()])
            for v in volumes:
                supersedes, addendum_of = _decide(db, job_id, [s[0] for s in v.studies], job_route)
                db.execute(f"INSERT INTO volumes ({', '.join(_VOLUME_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                           (v.label, job_id, v.kind, v.created, v.copies, json.dumps(v.paths), v.bytes, addendum_of,
                            None if v.label_record is None else json.dumps(v.label_record)))
                db.executemany("INSERT INTO volume_studies (label, study_uid, patient_id, patient_name) "
                               "VALUES (?, ?, ?, ?)", [(v.label, *s) for s in v.studies])
                db.executemany("UPDATE volumes SET superseded_by = ? WHERE label = ?",
                               [(v.label, label) for label in supersedes])

    def addendum_target(self, job_id: int) -> str | None:
        """The label of the volume this job's volume would complete (see :meth:`finish_job`), or None."""
        studies = [u for (u,) in self.db.execute("SELECT study_uid FROM job_studies WHERE job_id = ?", (job_id,))]
        route = str(self.db.execute("SELECT route FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
        return _decide(self.db, job_id, studies, route)[1]

    def earlier_volumes(self, job_id: int) -> list[tuple[Volume, set[str]]]:
        """The volumes not superseded that hold a study of this job (made by other jobs), oldest first, each with
        the original SOP Instance UIDs it holds."""
        studies = [u for (u,) in self.db.execute("SELECT study_uid FROM job_studies WHERE job_id = ?", (job_id,))]
        return [(v, self.volume_instances(v.label)) for v in self.volumes()
                if v.job_id != job_id and v.superseded_by is None and {s[0] for s in v.studies} & set(studies)]

    def volume_instances(self, label: str) -> set[str]:
        """The original SOP Instance UIDs a volume holds (its job's snapshot; ``job_uids`` maps them to the
        UIDs on the medium when the medium changed them)."""
        return _job_uids(self.db, label)

    def add_job_files(self, job_id: int, files: Iterable[tuple[str, str, int]]) -> None:
        """Add (original SOP Instance UID, path, size) of files read back from an earlier volume to a job's
        snapshot (in place of a spool file that is gone); they are released, so housekeeping deletes them once no open job needs them."""
        with self.transaction() as db:
            _add_job_files(db, job_id, files)

    def set_built(self, job_id: int, output: str) -> bool:
        """A building job's medium is built: it waits in the queue of ``output`` (building -> built)."""
        with self.transaction() as db:
            cur = db.execute("UPDATE jobs SET state = 'built', output = ? WHERE id = ? AND state = 'building'",
                             (output, job_id))
            return cur.rowcount == 1

    def requeue(self, job_id: int, *, only_from: tuple[str, ...]) -> bool:
        """Back to 'pending' (the node is stopping): its medium is built again at the next start."""
        with self.transaction() as db:
            db.execute("DELETE FROM job_waits WHERE job_id = ?", (job_id,))
            cur = db.execute(f"UPDATE jobs SET state = 'pending', output = NULL WHERE id = ? AND state IN "
                             f"({','.join('?' * len(only_from))})", (job_id, *only_from))
            return cur.rowcount == 1

    def deliveries(self) -> list[tuple[str, int, str]]:
        """(output, job id, state) of the jobs built and waiting for, or being delivered to, an output."""
        return list(self.db.execute("SELECT output, id, state FROM jobs WHERE state IN ('built', 'delivering') "
                                    "ORDER BY output, id"))

    def set_wait(self, job_id: int, message: str, *, media: bool = False) -> None:
        """Record what a building job waits for (``medianode status`` shows it), ``media`` when it is a blank
        medium; ``since`` is the first wait."""
        with self.transaction() as db:
            db.execute("""INSERT INTO job_waits (job_id, since, message, media) VALUES (?, ?, ?, ?)
                          ON CONFLICT (job_id) DO UPDATE SET message = excluded.message, media = excluded.media""",
                       (job_id, time.time(), message, int(media)))

    def clear_wait(self, job_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM job_waits WHERE job_id = ?", (job_id,))

    def set_progress(self, job_id: int, *, phase: str, done: int, total: int, started: float, now: float) -> None:
        """Record how far a job's medium is written (``done`` of ``total`` bytes since ``started``): the
        builder calls it at most about once a second, and once at the end."""
        with self.transaction() as db:
            db.execute("""INSERT INTO job_progress (job_id, phase, done, total, started, updated) VALUES (?, ?, ?, ?, ?, ?)
                          ON CONFLICT (job_id) DO UPDATE SET phase = excluded.phase, done = excluded.done,
                          total = excluded.total, started = excluded.started, updated = excluded.updated""",
                       (job_id, phase, done, total, started, now))

    def progress(self, job_ids: Iterable[int]) -> dict[int, tuple[str, int, int, float, float]]:
        """Job id -> (phase, bytes done, bytes in all, started, last update) of these jobs' progress records."""
        ids = tuple(job_ids)
        rows = self.db.execute(f"SELECT job_id, phase, done, total, started, updated FROM job_progress "
                               f"WHERE job_id IN ({','.join('?' * len(ids))})", ids) if ids else []
        return {int(r[0]): (str(r[1]), int(r[2]), int(r[3]), float(r[4]), float(r[5])) for r in rows}

    def waits(self) -> list[tuple[int, float, str]]:
        """(job id, waiting since, what for) of the jobs waiting on their output."""
        return list(self.db.execute("SELECT job_id, since, message FROM job_waits ORDER BY job_id"))

    def job_uid_map(self, job_id: int) -> dict[str, str]:
        """Old -> new UID of everything the job's medium changed (empty when it changed nothing)."""
        rows = self.db.execute("SELECT old_uid, new_uid FROM job_uids WHERE job_id = ?", (job_id,))
        return dict(rows.fetchall())

    def set_job_state(self, job_id: int, state: str, *, only_from: tuple[str, ...]) -> bool:
        """Move a job to ``state`` if it is in one of ``only_from``; say whether it moved. A job moved back to
        'pending' (retried) reopens the media request it was cut for, if that failed or was cancelled: the
        request is pending again, and done once its jobs are."""
        with self.transaction() as db:
            cur = db.execute(f"UPDATE jobs SET state = ? WHERE id = ? AND state IN ({','.join('?' * len(only_from))})",
                             (state, job_id, *only_from))
            if cur.rowcount == 1 and state == "pending":
                db.execute("UPDATE media_requests SET state = 'pending', info = NULL, failed = NULL, finished = NULL "
                           "WHERE state IN ('failed', 'cancelled') AND uid IN "
                           "(SELECT request_uid FROM media_request_jobs WHERE job_id = ?)", (job_id,))
            return cur.rowcount == 1

    def requeue_interrupted(self) -> list[int]:
        """Jobs a crash left building, built or delivering go back to 'pending' (at start-up)."""
        with self.transaction() as db:
            ids = [i for (i,) in db.execute(f"SELECT id FROM jobs WHERE state IN {_UNDER_WAY}")]
            db.execute(f"UPDATE jobs SET state = 'pending', output = NULL WHERE state IN {_UNDER_WAY}")
            db.execute("DELETE FROM job_waits")
        return ids

    # -- media creation requests (PS3.4 Annex S) ---------------------------------

    def add_media_request(self, uid: str, *, calling_aet: str, request: Mapping[str, Any], preserve: bool,
                          refs: Sequence[tuple[str, str, str]], now: float) -> bool:
        """Record an N-CREATE's request (state idle) and the instances it references; False when the UID is taken."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM media_requests WHERE uid = ?", (uid,)).fetchone():
                return False
            db.execute("INSERT INTO media_requests (uid, calling_aet, created, request, preserve, state) "
                       "VALUES (?, ?, ?, ?, ?, 'idle')", (uid, calling_aet, now, json.dumps(request), int(preserve)))
            db.executemany("INSERT INTO media_request_refs (request_uid, position, sop_instance_uid, sop_class_uid, "
                           "profile) VALUES (?, ?, ?, ?, ?)", [(uid, i, *r) for i, r in enumerate(refs)])
        return True

    def media_request(self, uid: str) -> MediaRequest | None:
        row = self.db.execute(f"SELECT {_REQUEST_COLUMNS} FROM media_requests WHERE uid = ?", (uid,)).fetchone()
        return self._media_request(row) if row else None

    def media_requests(self, *, states: Iterable[str] = ("idle", "pending", "done", "failed", "cancelled")
                       ) -> list[MediaRequest]:
        """The requests in these states, oldest first."""
        states = tuple(states)
        rows = self.db.execute(f"SELECT {_REQUEST_COLUMNS} FROM media_requests WHERE state IN "
                               f"({','.join('?' * len(states))}) ORDER BY created", states).fetchall()
        return [self._media_request(r) for r in rows]

    def _media_request(self, row: Sequence[Any]) -> MediaRequest:
        uid = str(row[0])
        refs = self.db.execute("SELECT sop_instance_uid, sop_class_uid, profile FROM media_request_refs "
                               "WHERE request_uid = ? ORDER BY position", (uid,)).fetchall()
        jobs = self.db.execute(
            "SELECT r.job_id, j.state, r.fileset_id, r.fileset_uid, j.error, CASE WHEN w.media = 1 THEN 'media' "
            "WHEN j.state = 'built' AND EXISTS (SELECT 1 FROM jobs o WHERE o.output = j.output AND o.state = "
            "'delivering') THEN 'busy' ELSE '' END FROM media_request_jobs r JOIN jobs j ON j.id = r.job_id "
            "LEFT JOIN job_waits w ON w.job_id = j.id WHERE r.request_uid = ? ORDER BY r.job_id", (uid,)).fetchall()
        return MediaRequest(uid, row[1], row[2], json.loads(row[3]), row[4], row[5],
                            [(str(u), str(c), int(r)) for u, c, r in json.loads(row[6] or "[]")], row[7], row[8],
                            row[9], row[10], [tuple(r) for r in refs], [tuple(j) for j in jobs])

    def initiate_media_request(self, uid: str, *, copies: int, priority: str, now: float) -> str | None:
        """Initiate a request (idle -> pending); return the state it was in (None: no such request)."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM media_requests WHERE uid = ?", (uid,)).fetchone()
            if row and row[0] == "idle":
                db.execute("UPDATE media_requests SET state = 'pending', initiated = ?, copies = ?, priority = ? "
                           "WHERE uid = ?", (now, copies, priority, uid))
            return str(row[0]) if row else None

    def cancel_media_request(self, uid: str, *, now: float) -> str | None:
        """Cancel a request not yet written: 'cancelled' (its pending jobs too); else why not: 'completed',
        'writing' (a job is building or delivering), 'refused' (failed or cancelled already); None: no such
        request."""
        with self.transaction() as db:
            row = db.execute("SELECT state FROM media_requests WHERE uid = ?", (uid,)).fetchone()
            if row is None:
                return None
            states = {s for (s,) in db.execute("SELECT j.state FROM media_request_jobs r JOIN jobs j ON j.id = r.job_id "
                                              "WHERE r.request_uid = ?", (uid,))}
            if row[0] == "done" or (states and states == {"done"}):
                return "completed"
            if row[0] in ("failed", "cancelled"):
                return "refused"
            if states & {"building", "built", "delivering"}:
                return "writing"
            db.execute("UPDATE jobs SET state = 'cancelled', finished = ? WHERE state IN ('pending', 'failed') AND id IN "
                       "(SELECT job_id FROM media_request_jobs WHERE request_uid = ?)", (now, uid))
            db.execute("UPDATE media_requests SET state = 'cancelled', finished = ? WHERE uid = ?", (now, uid))
            return "cancelled"

    def request_instances(self, sop_instance_uids: Iterable[str]) -> dict[str, tuple[str, str, int]]:
        """SOP Instance UID -> (Study Instance UID, SOP Class UID, size) of those the spool holds."""
        found: dict[str, tuple[str, str, int]] = {}
        listed = list(sop_instance_uids)
        for chunk in (listed[i:i + 500] for i in range(0, len(listed), 500)):
            for uid, study, sop_class, size in self.db.execute(
                    f"SELECT sop_instance_uid, study_uid, sop_class_uid, size FROM instances "
                    f"WHERE sop_instance_uid IN ({','.join('?' * len(chunk))})", chunk):
                found[uid] = (study, sop_class, size)
        return found

    def cut_request_jobs(self, uid: str, jobs: Sequence[tuple[list[str], list[str], str]], *,
                         fileset_id: str = "") -> list[int] | None:
        """Make a pending request's jobs, each (study UIDs, SOP Instance UIDs, route JSON) of a snapshot of just
        those instances, in one transaction; None when the request is no longer waiting (cancelled meanwhile).
        The studies' own lifecycle is left alone: a request's job is no burn of theirs."""
        with self.transaction() as db:
            waiting = db.execute("SELECT 1 FROM media_requests WHERE uid = ? AND state = 'pending' AND NOT EXISTS "
                                 "(SELECT 1 FROM media_request_jobs WHERE request_uid = ?)", (uid, uid)).fetchone()
            if not waiting:
                return None
            made = []
            for studies, instances, route in jobs:
                job = _next_id(db, "jobs")
                db.execute("INSERT INTO jobs (id, route, state, created, late) VALUES (?, ?, 'pending', ?, 0)",
                           (job, route, time.time()))
                db.executemany("INSERT INTO job_studies (job_id, study_uid) VALUES (?, ?)", [(job, u) for u in studies])
                db.executemany("INSERT INTO job_files (job_id, sop_instance_uid, path, size, digest) SELECT ?, "
                               "sop_instance_uid, path, size, digest FROM instances WHERE sop_instance_uid = ?",
                               [(job, u) for u in instances])
                db.execute("INSERT INTO media_request_jobs (request_uid, job_id, fileset_id) VALUES (?, ?, ?)",
                           (uid, job, fileset_id or None))
                made.append(job)
            return made

    def finish_media_request(self, uid: str, *, state: str, now: float, info: str | None = None,
                             failed: Sequence[tuple[str, str, int]] = ()) -> None:
        """A request's outcome: done, or failed with its Execution Status Info and Failed SOP Sequence."""
        with self.transaction() as db:
            db.execute("UPDATE media_requests SET state = ?, info = ?, failed = ?, finished = ? WHERE uid = ? "
                       "AND state = 'pending'", (state, info, json.dumps(list(failed)), now, uid))

    def study_requests(self, study_uid: str) -> dict[str, int]:
        """Media request UID -> how many instances of this study it references (``routes explain --study``)."""
        rows = self.db.execute("SELECT r.request_uid, COUNT(*) FROM media_request_refs r JOIN instances i USING "
                               "(sop_instance_uid) WHERE i.study_uid = ? GROUP BY r.request_uid ORDER BY r.request_uid",
                               (study_uid,))
        return {str(u): int(n) for u, n in rows}

    def requested_fileset_id(self, job_id: int) -> str:
        """The File-set ID a media request asked for its job's medium ("" for any other job, or when none)."""
        row = self.db.execute("SELECT fileset_id FROM media_request_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return str(row[0] or "") if row else ""

    def job_request(self, job_id: int) -> dict[str, Any]:
        """The attributes of the media request a job was cut for, as its N-CREATE gave them ({} for any other
        job, or once the request is forgotten)."""
        row = self.db.execute("SELECT m.request FROM media_request_jobs r JOIN media_requests m ON m.uid = "
                              "r.request_uid WHERE r.job_id = ?", (job_id,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def set_request_medium(self, job_id: int, *, fileset_id: str, fileset_uid: str) -> None:
        """The File-set ID and UID of a request's medium, once delivered (no-op for any other job)."""
        with self.transaction() as db:
            db.execute("UPDATE media_request_jobs SET fileset_id = ?, fileset_uid = ? WHERE job_id = ?",
                       (fileset_id, fileset_uid, job_id))

    def forget_media_requests(self, *, finished_before: float, created_before: float) -> list[str]:
        """Forget the requests finished before ``finished_before`` and those never initiated since
        ``created_before``; return their UIDs (their instances are the spool's retention's again)."""
        with self.transaction() as db:
            uids = [u for (u,) in db.execute(
                "SELECT uid FROM media_requests WHERE (finished IS NOT NULL AND finished < ?) "
                "OR (state = 'idle' AND created < ?)", (finished_before, created_before))]
            for table, key in (("media_request_refs", "request_uid"), ("media_request_jobs", "request_uid"),
                               ("media_requests", "uid")):
                db.executemany(f"DELETE FROM {table} WHERE {key} = ?", [(u,) for u in uids])
        return uids

    # -- volumes ---------------------------------------------------------------

    def volumes(self, *, study: str | None = None, patient: str | None = None, label: str | None = None,
                since: float | None = None, date: str = "", accession: str = "") -> list[Volume]:
        """Archive volumes, oldest first: holding ``study``, of ``patient``, named ``label``, made at ``since``
        or later, holding a study of ``date`` (``YYYYMMDD[-YYYYMMDD]``, :func:`date_range`) or of Accession
        Number ``accession`` (each given)."""
        where, args = _study_filters(date=date, accession=accession)
        if since is not None:
            where.append("created >= ?")
            args.append(since)
        if study:
            where.append("label IN (SELECT label FROM volume_studies WHERE study_uid = ?)")
            args.append(study)
        if patient:
            where.append("label IN (SELECT label FROM volume_studies WHERE patient_id = ?)")
            args.append(patient)
        if label:
            where.append("label = ?")
            args.append(label)
        sql = f"SELECT {', '.join(_VOLUME_COLUMNS)} FROM volumes" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created"
        return [self._volume(row) for row in self.db.execute(sql, args).fetchall()]

    def _volume(self, row: Sequence[Any]) -> Volume:
        studies = self.db.execute(
            "SELECT v.study_uid, v.patient_id, v.patient_name, COALESCE(s.study_date, ''), "
            "COALESCE(s.accession_number, '') FROM volume_studies v LEFT JOIN studies s USING (study_uid) "
            "WHERE v.label = ? ORDER BY v.study_uid", (row[0],)).fetchall()
        return Volume(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7],
                      [(u, p, n) for u, p, n, _, _ in studies], row[8],
                      study_keys={u: (d, a) for u, _, _, d, a in studies},
                      label_record=json.loads(row[9]) if row[9] else None)

    def study_files(self, study_uids: Iterable[str]) -> list[tuple[str, str, int]]:
        """(SOP Instance UID, path, size) currently spooled for these studies."""
        uids = tuple(study_uids)
        return list(self.db.execute(f"SELECT sop_instance_uid, path, size FROM instances WHERE study_uid IN "
                                    f"({','.join('?' * len(uids))}) ORDER BY path", uids))

    # -- housekeeping ----------------------------------------------------------

    def deletable_files(self, *, now: float, retention_s: float) -> list[str]:
        """Spool files no open job needs: released copies, and studies burned longer ago than the retention."""
        open_jobs = f"SELECT path FROM job_files f JOIN jobs j ON j.id = f.job_id WHERE j.state IN {_OPEN}"
        released = [p for (p,) in self.db.execute(f"SELECT path FROM released_files WHERE path NOT IN ({open_jobs})")]
        expired = [p for (p,) in self.db.execute(
            f"""SELECT i.path FROM instances i JOIN studies s USING (study_uid)
                WHERE s.pending = 0 AND s.last_received <= ? AND i.path NOT IN ({open_jobs})
                AND i.sop_instance_uid NOT IN ({_REQUESTED})
                AND NOT EXISTS (SELECT 1 FROM job_studies js JOIN jobs j ON j.id = js.job_id
                                WHERE js.study_uid = s.study_uid AND j.state IN {_OPEN_OR_FAILED})""",
            (now - retention_s,))]
        return released + expired

    def studies_of(self, paths: Iterable[str]) -> list[dict[str, Any]]:
        """The studies the spool files at ``paths`` hold: UID, patient, and instances per SOP class."""
        found: dict[str, dict[str, Any]] = {}
        listed = list(paths)
        for chunk in (listed[i:i + 500] for i in range(0, len(listed), 500)):  # under SQLite's bound variables
            rows = self.db.execute(
                f"SELECT study_uid, patient_id, patient_name, sop_class_uid, COUNT(*) FROM instances "
                f"WHERE path IN ({','.join('?' * len(chunk))}) GROUP BY study_uid, sop_class_uid", chunk)
            for study, patient_id, patient_name, sop_class, count in rows:
                s = found.setdefault(study, {"study_uid": study, "patient_id": patient_id,
                                             "patient_name": patient_name, "sop_classes": {}})
                s["sop_classes"][sop_class] = s["sop_classes"].get(sop_class, 0) + count
        return [found[k] for k in sorted(found)]

    def forget_files(self, paths: Iterable[str]) -> None:
        """Drop deleted spool files from the index (their studies and volumes stay recorded)."""
        rows = [(p,) for p in paths]
        with self.transaction() as db:
            db.executemany("DELETE FROM released_files WHERE path = ?", rows)
            db.executemany("DELETE FROM instances WHERE path = ?", rows)

    # -- imports ---------------------------------------------------------------

    def start_import(self, medium: str, identity: str) -> int:
        with self.transaction() as db:
            import_id = _next_id(db, "imports")
            db.execute("INSERT INTO imports (id, medium, identity, state, started) VALUES (?, ?, ?, 'importing', ?)",
                       (import_id, medium, identity, time.time()))
        return import_id

    def finish_import(self, import_id: int, *, ok: bool, sent: int, failed: int, skipped: int,
                      report: str | None) -> None:
        with self.transaction() as db:
            db.execute("UPDATE imports SET state = ?, finished = ?, sent = ?, failed = ?, skipped = ?, report = ? "
                       "WHERE id = ?", ("done" if ok else "failed", time.time(), sent, failed, skipped, report,
                                        import_id))

    def hold_import(self, import_id: int, *, reason: str, skipped: int, report: str | None) -> None:
        """An import that waits for a person: nothing sent, its instances kept (``state`` held)."""
        with self.transaction() as db:
            db.execute("UPDATE imports SET state = 'held', finished = ?, sent = 0, failed = 0, skipped = ?, "
                       "report = ?, held_reason = ? WHERE id = ?", (time.time(), skipped, report, reason, import_id))

    def held_imports(self) -> list[dict[str, object]]:
        """Every import waiting for a person, oldest first."""
        cols = ("id", "medium", "identity", "state", "started", "finished", "report", "held_reason")
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM imports WHERE state = 'held' ORDER BY id")
        return [dict(zip(cols, row)) for row in rows]

    def import_record(self, import_id: int) -> dict[str, object] | None:
        cols = ("id", "medium", "identity", "state", "started", "finished", "sent", "failed", "skipped", "report",
                "held_reason")
        row = self.db.execute(f"SELECT {', '.join(cols)} FROM imports WHERE id = ?", (import_id,)).fetchone()
        return None if row is None else dict(zip(cols, row))

    def imported(self, identity: str) -> bool:
        """True when a medium with this identity was imported completely before."""
        return self.db.execute("SELECT 1 FROM imports WHERE identity = ? AND state = 'done' LIMIT 1",
                               (identity,)).fetchone() is not None

    def imports(self, *, limit: int = 20) -> list[dict[str, object]]:
        """The most recent imports, newest first."""
        cols = ("id", "medium", "identity", "state", "started", "finished", "sent", "failed", "skipped", "report",
                "held_reason")
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM imports ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(zip(cols, row)) for row in rows]

    def interrupted_imports(self) -> list[dict[str, object]]:
        """Imports a crash left 'importing' (to be finished at start-up)."""
        return [i for i in self.imports(limit=1000) if i["state"] == "importing"]

    # -- status ----------------------------------------------------------------

    def receiving(self, *, since: float) -> list[tuple[str, str, int, float]]:
        """(study UID, patient ID, instances, last arrival) of studies still waiting for their job."""
        return list(self.db.execute(
            """SELECT s.study_uid, s.patient_id, COUNT(i.sop_instance_uid), s.last_received
               FROM studies s JOIN instances i USING (study_uid) WHERE s.pending = 1 AND s.last_received >= ?
               GROUP BY s.study_uid ORDER BY s.last_received""", (since,)))

    # -- the console -----------------------------------------------------------

    def receiving_studies(self) -> list[tuple[str, str, str, str, int, int, float]]:
        """(study UID, patient ID, patient name, calling AE titles (comma-separated), instances, bytes, last arrival) of the
        studies waiting for their job, the latest first: what the console shows as receiving."""
        return list(self.db.execute(
            """SELECT s.study_uid, s.patient_id, s.patient_name, GROUP_CONCAT(DISTINCT i.calling_aet),
                      COUNT(i.sop_instance_uid), SUM(i.size), s.last_received
               FROM studies s JOIN instances i USING (study_uid) WHERE s.pending = 1
               GROUP BY s.study_uid ORDER BY s.last_received DESC"""))

    def job_bytes(self, job_ids: Iterable[int]) -> dict[int, int]:
        """The bytes of the instances each job takes."""
        ids = tuple(job_ids)
        return {j: int(n) for j, n in self.db.execute(
            f"SELECT job_id, SUM(size) FROM job_files WHERE job_id IN ({','.join('?' * len(ids))}) GROUP BY job_id",
            ids)} if ids else {}

    def find_volumes(self, *, name: str = "", patient_id: str = "", study: str = "", label: str = "",
                     date: str = "", accession: str = "", limit: int = 100) -> list[Volume]:
        """Volumes holding a study of a patient whose name holds ``name`` (compared as :func:`fold` makes
        it: case and carets ignored), of ``patient_id``, holding ``study``, of Study Date ``date``
        (``YYYYMMDD[-YYYYMMDD]``, :func:`date_range`), of Accession Number ``accession``, or whose label
        holds ``label``; the newest first, at most ``limit``."""
        self.db.create_function("fold", 1, fold, deterministic=True)
        where, args = _study_filters(date=date, accession=accession)
        for column, value in (("fold(patient_name)", fold(name)), ("patient_id", patient_id.strip()),
                              ("study_uid", study.strip())):
            if value:
                exact = column != "fold(patient_name)"
                where.append(f"label IN (SELECT label FROM volume_studies WHERE {column} "
                             + ("= ?)" if exact else "LIKE ? ESCAPE '\\')"))
                args.append(value if exact else f"%{like(value)}%")
        if label.strip():
            where.append("label LIKE ? ESCAPE '\\'")
            args.append(f"%{like(label.strip().upper())}%")
        sql = (f"SELECT {', '.join(_VOLUME_COLUMNS)} FROM volumes" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY created DESC LIMIT ?")
        return [self._volume(row) for row in self.db.execute(sql, (*args, limit)).fetchall()]

    # -- users -----------------------------------------------------------------
    # Storage only: node.users hashes, compares and decides; no secret reaches this module in the clear.

    def add_user(self, name: str, role: str, password_hash: str, *, now: float) -> bool:
        """Record a user; False when the name is taken."""
        with self.transaction() as db:
            cur = db.execute("INSERT INTO users (name, role, password, created) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (name) DO NOTHING", (name, role, password_hash, now))
            return cur.rowcount == 1

    def remove_user(self, name: str) -> bool:
        """Forget a user with its tokens, sessions and failed sign-ins; False when there was none."""
        with self.transaction() as db:
            for table in ("user_tokens", "user_sessions", "sign_in_failures"):
                db.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
            return db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 1

    def set_password(self, name: str, password_hash: str) -> bool:
        """Replace a user's password hash and end the user's sessions; False when there is no such user."""
        with self.transaction() as db:
            db.execute("DELETE FROM user_sessions WHERE name = ?", (name,))
            return db.execute("UPDATE users SET password = ? WHERE name = ?", (password_hash, name)).rowcount == 1

    def rehash_password(self, name: str, old_hash: str, new_hash: str) -> None:
        """The same password under stronger parameters, unless it was changed meanwhile (sessions kept)."""
        with self.transaction() as db:
            db.execute("UPDATE users SET password = ? WHERE name = ? AND password = ?", (new_hash, name, old_hash))

    def users(self) -> list[tuple[str, str]]:
        """(name, role) of every user, by name."""
        return list(self.db.execute("SELECT name, role FROM users ORDER BY name"))

    def user(self, name: str) -> tuple[str, str] | None:
        """(role, password hash) of a user, or None."""
        row = self.db.execute("SELECT role, password FROM users WHERE name = ?", (name,)).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def locked_until(self, name: str) -> float:
        """Until when sign-ins of ``name`` are refused (0 when never)."""
        row = self.db.execute("SELECT locked_until FROM sign_in_failures WHERE name = ?", (name,)).fetchone()
        return float(row[0]) if row else 0.0

    def count_sign_in_failure(self, name: str, *, now: float, forget_before: float,
                              lock: Callable[[int], float]) -> tuple[int, float]:
        """One more failed sign-in of ``name`` (the count starts again after a failure before
        ``forget_before``); lock the name for ``lock(failures)`` seconds. Return (failures, locked until).
        Names not tried for a day are forgotten on the way."""
        with self.transaction() as db:
            db.execute("DELETE FROM sign_in_failures WHERE last_failed < ? AND locked_until < ?",
                       (now - 86400, now))
            db.execute("""INSERT INTO sign_in_failures (name, failures, last_failed, locked_until) VALUES (?, 1, ?, 0)
                          ON CONFLICT (name) DO UPDATE SET last_failed = excluded.last_failed,
                          failures = CASE WHEN sign_in_failures.last_failed < ? THEN 1
                                          ELSE sign_in_failures.failures + 1 END""", (name, now, forget_before))
            failures = int(db.execute("SELECT failures FROM sign_in_failures WHERE name = ?", (name,)).fetchone()[0])
            until = now + lock(failures)
            db.execute("UPDATE sign_in_failures SET locked_until = ? WHERE name = ?", (until, name))
        return failures, until

    def clear_sign_in_failures(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM sign_in_failures WHERE name = ?", (name,))

    def add_token(self, token_id: str, name: str, secret_sha256: str, *, now: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO user_tokens (id, name, secret_sha256, created) VALUES (?, ?, ?, ?)",
                       (token_id, name, secret_sha256, now))

    def user_tokens(self, name: str) -> list[tuple[str, float, float | None]]:
        """(id, created, last used) of a user's tokens, oldest first."""
        return list(self.db.execute("SELECT id, created, last_used FROM user_tokens WHERE name = ? "
                                    "ORDER BY created, id", (name,)))

    def remove_token(self, name: str, token_id: str) -> bool:
        with self.transaction() as db:
            return db.execute("DELETE FROM user_tokens WHERE name = ? AND id = ?", (name, token_id)).rowcount == 1

    def token(self, token_id: str) -> tuple[str, str, str, float | None] | None:
        """(user name, role, secret SHA-256, last used) of a token whose user exists, or None."""
        row = self.db.execute("SELECT u.name, u.role, t.secret_sha256, t.last_used FROM user_tokens t "
                              "JOIN users u ON u.name = t.name WHERE t.id = ?", (token_id,)).fetchone()
        return (str(row[0]), str(row[1]), str(row[2]), row[3]) if row else None

    def touch_token(self, token_id: str, *, now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE user_tokens SET last_used = ? WHERE id = ?", (now, token_id))

    def add_session(self, id_sha256: str, name: str, *, now: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO user_sessions (id_sha256, name, created, last_seen) VALUES (?, ?, ?, ?)",
                       (id_sha256, name, now, now))

    def session(self, id_sha256: str) -> tuple[str, str, float] | None:
        """(user name, role, last seen) of a session whose user exists, or None."""
        row = self.db.execute("SELECT u.name, u.role, s.last_seen FROM user_sessions s JOIN users u ON u.name = s.name "
                              "WHERE s.id_sha256 = ?", (id_sha256,)).fetchone()
        return (str(row[0]), str(row[1]), float(row[2])) if row else None

    def touch_session(self, id_sha256: str, *, now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE user_sessions SET last_seen = ? WHERE id_sha256 = ?", (now, id_sha256))

    def remove_session(self, id_sha256: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM user_sessions WHERE id_sha256 = ?", (id_sha256,))

    def replace_sign_in_link(self, secret_sha256: str, *, now: float, expires: float) -> None:
        """The one sign-in link in force (any earlier one stops working)."""
        with self.transaction() as db:
            db.execute("DELETE FROM sign_in_links")
            db.execute("INSERT INTO sign_in_links (secret_sha256, created, expires) VALUES (?, ?, ?)",
                       (secret_sha256, now, expires))

    def use_sign_in_link(self, secret_sha256: str, *, now: float) -> bool:
        """Mark the link used if it is unused and not expired at ``now``; say whether it was."""
        with self.transaction() as db:
            return db.execute("UPDATE sign_in_links SET used = ? WHERE secret_sha256 = ? AND used IS NULL "
                              "AND expires >= ?", (now, secret_sha256, now)).rowcount == 1

    # -- the catalogue's outbox (:data:`_VERSION_9`) -----------------------------

    def feed(self, station: str | None, *, history: bool = False) -> int:
        """Queue changes for a catalogue as ``station`` (None: stop, and forget what waits). A station that
        starts feeding, or feeds under a new name, or is asked for its ``history``, queues its whole history
        too; returns how many keys that added."""
        with self.transaction() as db:
            row = db.execute("SELECT station FROM catalogue_feed").fetchone()
            if row is not None and row[0] == station and not history:
                return 0
            if row is None or row[0] != station:
                db.execute("DELETE FROM catalogue_feed")
                db.execute("DELETE FROM catalogue_outbox")
                if station is None:
                    return 0
                db.execute("INSERT INTO catalogue_feed (station, since) VALUES (?, ?)", (station, time.time()))
            queued = 0
            for kind, select in _HISTORY:
                queued += db.execute(f"INSERT INTO catalogue_outbox (kind, key, queued) SELECT '{kind}', k, ? "
                                     f"FROM ({select}) AS h WHERE true ON CONFLICT (kind, key) DO NOTHING",
                                     (time.time(),)).rowcount
            return queued

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query in it sees the same committed state, whatever writers do meanwhile."""
        self.db.execute("BEGIN")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")

    def outbox(self, *, limit: int) -> list[tuple[str, str, int]]:
        """(kind, key, seq) of the oldest changes waiting for the catalogue."""
        return list(self.db.execute("SELECT kind, key, seq FROM catalogue_outbox ORDER BY queued, kind, key LIMIT ?",
                                    (limit,)))

    def outbox_done(self, rows: Iterable[tuple[str, str, int]], *, now: float) -> None:
        """These changes are in the catalogue: unqueue each one not changed again since it was read."""
        with self.transaction() as db:
            db.executemany("DELETE FROM catalogue_outbox WHERE kind = ? AND key = ? AND seq = ?", list(rows))
            db.execute("UPDATE catalogue_feed SET pushed = ?, error = NULL, error_at = NULL", (now,))

    def outbox_failed(self, error: str, *, now: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE catalogue_feed SET error = ?, error_at = ?", (error, now))

    def adopt_users(self, shared: Sequence[tuple[str, str, str, float]]) -> int:
        """Make this station's users those of the catalogue, (name, role, password hash, created) each: added,
        changed (a new password ends the user's sessions here too) or removed (with its tokens and sessions),
        except a name whose own change waits in the outbox: that one is the newer. Returns how many changed."""
        changed: list[str] = []
        with self.transaction() as db:
            waiting = {k for (k,) in db.execute("SELECT key FROM catalogue_outbox WHERE kind = 'user'")}
            mine = {n: (r, p) for n, r, p in db.execute("SELECT name, role, password FROM users")}
            theirs = {name: (role, password, created) for name, role, password, created in shared}
            for name, (role, password, created) in theirs.items():
                if name in waiting or mine.get(name) == (role, password):
                    continue
                if name in mine and mine[name][1] != password:
                    db.execute("DELETE FROM user_sessions WHERE name = ?", (name,))
                db.execute("INSERT INTO users (name, role, password, created) VALUES (?, ?, ?, ?) ON CONFLICT (name) "
                           "DO UPDATE SET role = excluded.role, password = excluded.password", (name, role, password,
                                                                                              created))
                changed.append(name)
            for name in mine.keys() - theirs.keys() - waiting:
                for table in ("user_tokens", "user_sessions", "sign_in_failures", "users"):
                    db.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
                changed.append(name)
            # what came from the catalogue is not news for it: pushed back, it could undo a later change there
            db.executemany("DELETE FROM catalogue_outbox WHERE kind = 'user' AND key = ?", [(n,) for n in changed])
        return len(changed)

    def feed_state(self) -> dict[str, Any] | None:
        """The feed (``station``, ``since``, ``pushed``, ``error``, ``error_at``) with what waits (``behind``: keys,
        ``oldest``: the first change's time), or None when the station feeds no catalogue."""
        row = self.db.execute("SELECT station, since, pushed, error, error_at FROM catalogue_feed").fetchone()
        if row is None:
            return None
        behind, oldest = self.db.execute("SELECT COUNT(*), MIN(queued) FROM catalogue_outbox").fetchone()
        return dict(zip(("station", "since", "pushed", "error", "error_at"), row)) | {"behind": behind,
                                                                                      "oldest": oldest}


_INSTANCE_COLUMNS = ("sop_instance_uid", "sop_class_uid", "study_uid", "series_uid", "patient_id", "patient_name",
                     "modality", "transfer_syntax", "path", "size", "calling_aet", "called_aet", "route", "received_at",
                     "digest")
_UPSERT_INSTANCE = (f"INSERT INTO instances ({', '.join(_INSTANCE_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(_INSTANCE_COLUMNS))}) ON CONFLICT (sop_instance_uid) DO UPDATE SET "
                    + ", ".join(f"{c} = excluded.{c}" for c in _INSTANCE_COLUMNS[1:]))
#: Job states whose spool files are still needed; those a crash interrupts.
_UNDER_WAY = "('building', 'built', 'delivering')"
_REQUEST_COLUMNS = "uid, calling_aet, created, request, state, info, failed, initiated, copies, priority, finished"
#: The instances a media request holds in the spool: it is open, or it preserves them until it is forgotten.
_REQUESTED = ("SELECT r.sop_instance_uid FROM media_request_refs r JOIN media_requests m ON m.uid = r.request_uid "
              "WHERE m.preserve = 1 OR m.state IN ('idle', 'pending')")
_OPEN = "('pending', 'building', 'built', 'delivering')"
_OPEN_OR_FAILED = "('pending', 'building', 'built', 'delivering', 'failed')"
#: (outbox kind, the query of every key of it) of what a station that starts feeding a catalogue queues.
_HISTORY = (("study", "SELECT study_uid AS k FROM studies"), ("job", "SELECT id AS k FROM jobs"),
            ("volume", "SELECT label AS k FROM volumes"), ("import", "SELECT id AS k FROM imports"),
            ("request", "SELECT uid AS k FROM media_requests"), ("user", "SELECT name AS k FROM users"))
_VOLUME_COLUMNS = ("label", "job_id", "kind", "created", "copies", "paths", "bytes", "superseded_by", "addendum_of",
                   "label_record")


def fold(text: str | None) -> str:
    """A person's name as searches compare it: carets (PS3.5 6.2 PN component separators) as spaces,
    case folded, runs of spaces as one.

    >>> fold("Smith^John^^Dr") == fold("  SMITH john dr")
    True
    """
    return " ".join((text or "").replace("^", " ").casefold().split())


def date_range(text: str) -> tuple[str, str]:
    """A Study Date search, ``YYYYMMDD``, ``YYYY-MM-DD`` or a range ``YYYYMMDD-YYYYMMDD`` (either end may be
    left open, as in DICOM range matching, PS3.4 C.2.2.2.5), as (first, last) day, YYYYMMDD ('' when open).

    >>> date_range("20260101"), date_range("2026-01-31"), date_range("20260101-"), date_range("-20260131")
    (('20260101', '20260101'), ('20260131', '20260131'), ('20260101', ''), ('', '20260131'))
    """
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text = text.replace("-", "")
    first, dash, last = text.partition("-")
    last = last if dash else first
    for day in (first, last):
        if day and not _is_day(day):
            raise UsageError(f"a study date is YYYYMMDD or a range YYYYMMDD-YYYYMMDD, not {text[:40]!r}")
    if not first and not last:
        raise UsageError("a study date range needs at least one end: YYYYMMDD-YYYYMMDD")
    if first and last and first > last:
        raise UsageError(f"the study date range {text!r} ends before it starts")
    return first, last


def _is_day(text: str) -> bool:
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return len(text) == 8


def _study_filters(*, date: str, accession: str) -> tuple[list[str], list[object]]:
    """The WHERE terms (on ``volumes``) of a search by the Study Date and Accession Number of its studies."""
    where: list[str] = []
    args: list[object] = []
    if date.strip():
        first, last = date_range(date)
        terms = [t for t, v in (("s.study_date >= ?", first), ("s.study_date <= ?", last)) if v]
        where.append("label IN (SELECT v.label FROM volume_studies v JOIN studies s USING (study_uid) "
                     f"WHERE s.study_date <> '' AND {' AND '.join(terms)})")
        args += [v for v in (first, last) if v]
    if accession.strip():
        where.append("label IN (SELECT v.label FROM volume_studies v JOIN studies s USING (study_uid) "
                     "WHERE s.accession_number = ?)")
        args.append(accession.strip())
    return where, args


def like(text: str) -> str:
    """``text`` as a LIKE pattern's literal part (``ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _next_id(db: sqlite3.Connection, table: str) -> int:
    """The id of a new row of ``jobs`` or ``imports``: one more than the largest, as SQLite's rowid would be.

    Assigned in the writing transaction (which holds the database lock), in SQL
    that PostgreSQL runs too, where ``INTEGER PRIMARY KEY`` does not number rows.
    """
    return int(db.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}").fetchone()[0])


def _add_job_files(db: sqlite3.Connection, job_id: int, files: Iterable[tuple[str, str, int]]) -> None:
    """See :meth:`Index.add_job_files`."""
    rows = list(files)
    db.executemany("INSERT INTO job_files (job_id, sop_instance_uid, path, size) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (job_id, sop_instance_uid) DO UPDATE SET path = excluded.path, "
                   "size = excluded.size, digest = NULL", [(job_id, *r) for r in rows])
    db.executemany("INSERT INTO released_files (path, released) VALUES (?, ?) ON CONFLICT (path) DO NOTHING",
                   [(r[1], time.time()) for r in rows])


def _job_uids(db: sqlite3.Connection, label: str) -> set[str]:
    """The original SOP Instance UIDs of the volume ``label`` (its job's snapshot)."""
    return {u for (u,) in db.execute("SELECT f.sop_instance_uid FROM job_files f JOIN volumes v ON v.job_id = f.job_id "
                                     "WHERE v.label = ?", (label,))}


def _decide(db: sqlite3.Connection, job_id: int, studies: Sequence[str], route: str) -> tuple[list[str], str | None]:
    """Which earlier volumes of these studies a volume of ``job_id`` supersedes, and which one it completes.

    The invariant: a volume supersedes an earlier one only when it holds every
    instance of it (by original SOP Instance UID). One that lacks some of an
    earlier volume's instances, and holds instances that volume lacks, is an
    addendum of it (of the volume an earlier addendum completes, when it is one). Only volumes of the same
    route count (:func:`_same_route`): a study's ``also`` disc is neither superseded nor completed by the other.
    """
    marks = ",".join("?" * len(studies))
    earlier = [(label, completes) for label, completes, theirs in db.execute(
        f"""SELECT v.label, v.addendum_of, j.route FROM volumes v JOIN jobs j ON j.id = v.job_id
            WHERE v.superseded_by IS NULL AND v.job_id <> ?
            AND v.label IN (SELECT label FROM volume_studies WHERE study_uid IN ({marks})) ORDER BY v.created""",
        (job_id, *studies)).fetchall() if _same_route(theirs, route)]
    mine = {u for (u,) in db.execute("SELECT sop_instance_uid FROM job_files WHERE job_id = ?", (job_id,))}
    supersedes, addendum_of = [], None
    for label, completes in earlier:
        theirs = _job_uids(db, label)
        if theirs <= mine:
            supersedes.append(str(label))
        elif addendum_of is None and mine - theirs:
            addendum_of = str(completes or label)
    return supersedes, addendum_of


def _same_route(a: str, b: str) -> bool:
    """Whether two jobs were cut for the same route (its position in the file): a volume supersedes only
    one of its own route, never the one a study's ``also`` route made beside it. A media request's job (position
    -1) is of no route: its volume neither supersedes nor completes another."""
    position = RouteSnapshot.from_json(a).position
    return position >= 0 and position == RouteSnapshot.from_json(b).position


def _job(row: tuple[Any, ...]) -> Job:
    id_, route, state, created, started, finished, attempts, error, late = row
    return Job(id_, route, state, created, started, finished, attempts, error, bool(late))


def _statements(script: str) -> list[str]:
    """The statements of a migration: split at each ";" that ends one (a trigger's body holds several)."""
    found, part = [], ""
    for piece in script.split(";"):
        part += piece + ";"
        if sqlite3.complete_statement(part):
            if part.strip(" \n;"):
                found.append(part.strip())
            part = ""
    return found
