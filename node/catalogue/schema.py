"""The catalogue's schema, versioned as the index's is (:data:`node.index.MIGRATIONS`): a migration per change,
applied in order, each in one transaction with the row that records it. Every station runs them at start-up
(and ``medianode catalogue migrate`` does), under a PostgreSQL advisory lock: two stations starting together
never apply one twice.

Each station's rows carry its name (``station``) beside their key in that station's index; users are one
set for every station. Times are seconds since the epoch, as in the index, except the heartbeat, which is the
database's own clock (``now()``): leases and liveness are judged on one clock, not on each station's.
"""

from __future__ import annotations

import logging

from node.catalogue.link import Connection
from node.errors import NodeError

logger = logging.getLogger(__name__)

#: The advisory lock every migration holds (any constant the stations agree on: "medianod" in ASCII).
LOCK = 0x6D656469616E6F64

_VERSION_1 = """
CREATE TABLE stations (
    name TEXT PRIMARY KEY,
    ae_title TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL,      -- its serve's start
    heartbeat TIMESTAMPTZ NOT NULL,         -- the database's clock at its last beat
    behind INTEGER NOT NULL DEFAULT 0,      -- changes waiting in its outbox at its last beat
    behind_since DOUBLE PRECISION           -- the oldest of them
);
CREATE TABLE studies (
    station TEXT NOT NULL, study_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL, patient_name TEXT NOT NULL, study_date TEXT, accession_number TEXT,
    first_received DOUBLE PRECISION NOT NULL, last_received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (station, study_uid)
);
CREATE INDEX studies_by_uid ON studies(study_uid);
CREATE INDEX studies_by_patient ON studies(patient_id);
CREATE TABLE jobs (
    station TEXT NOT NULL, id BIGINT NOT NULL,
    route TEXT NOT NULL, state TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION, finished DOUBLE PRECISION,
    attempts INTEGER NOT NULL, error TEXT, late INTEGER NOT NULL, output TEXT,
    waiting TEXT, waiting_since DOUBLE PRECISION, waiting_media INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (station, id)
);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE TABLE job_studies (station TEXT NOT NULL, job_id BIGINT NOT NULL, study_uid TEXT NOT NULL,
                          PRIMARY KEY (station, job_id, study_uid));
CREATE TABLE volumes (
    station TEXT NOT NULL, label TEXT NOT NULL,
    job_id BIGINT NOT NULL, kind TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, copies INTEGER NOT NULL,
    paths TEXT NOT NULL, bytes BIGINT NOT NULL, superseded_by TEXT, addendum_of TEXT, label_record TEXT,
    PRIMARY KEY (station, label)
);
CREATE TABLE volume_studies (
    station TEXT NOT NULL, label TEXT NOT NULL, study_uid TEXT NOT NULL,
    patient_id TEXT NOT NULL, patient_name TEXT NOT NULL,
    PRIMARY KEY (station, label, study_uid)
);
CREATE INDEX volume_studies_by_study ON volume_studies(study_uid);
CREATE INDEX volume_studies_by_patient ON volume_studies(patient_id);
CREATE TABLE imports (
    station TEXT NOT NULL, id BIGINT NOT NULL,
    medium TEXT NOT NULL, identity TEXT NOT NULL, state TEXT NOT NULL,
    started DOUBLE PRECISION NOT NULL, finished DOUBLE PRECISION,
    sent INTEGER NOT NULL, failed INTEGER NOT NULL, skipped INTEGER NOT NULL, report TEXT, held_reason TEXT,
    PRIMARY KEY (station, id)
);
CREATE TABLE media_requests (
    station TEXT NOT NULL, uid TEXT NOT NULL,
    calling_aet TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, info TEXT,
    initiated DOUBLE PRECISION, copies INTEGER, priority TEXT, finished DOUBLE PRECISION,
    PRIMARY KEY (station, uid)
);
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('viewer', 'clerk', 'admin')),
    password TEXT NOT NULL,                 -- argon2id, encoded, as the station's index keeps it
    created DOUBLE PRECISION NOT NULL,
    station TEXT NOT NULL                   -- where it was last changed
)
"""

#: Version 2: jobs any of several stations may build (a shared spool): who may take each one, who holds it,
#: until when (the database's clock), and the fencing token each claim increments.
_VERSION_2 = """
CREATE TABLE claims (
    station TEXT NOT NULL, job_id BIGINT NOT NULL,  -- the job, as the station that cut it numbers it
    stations TEXT[] NOT NULL,               -- the stations that may build it
    state TEXT NOT NULL CHECK (state IN ('pending', 'building', 'done', 'failed')),
    created DOUBLE PRECISION NOT NULL,
    holder TEXT,                            -- the station building it
    token BIGINT NOT NULL DEFAULT 0,        -- incremented by every claim: the fencing token
    lease_until TIMESTAMPTZ,                -- the holder's lease, on the database's clock
    volume TEXT,                            -- the label published
    finished DOUBLE PRECISION,
    PRIMARY KEY (station, job_id)
);
CREATE INDEX claims_open ON claims(created) WHERE state IN ('pending', 'building')
"""

#: Version 3: what a station needs to build another's job (its route, files and studies, as JSON), when it
#: was last claimed, the builder's progress (bytes written of all), and the outcome the station that cut the
#: job records.
_VERSION_3 = """
ALTER TABLE claims ADD COLUMN work TEXT;
ALTER TABLE claims ADD COLUMN claimed DOUBLE PRECISION;
ALTER TABLE claims ADD COLUMN done BIGINT NOT NULL DEFAULT 0;
ALTER TABLE claims ADD COLUMN total BIGINT NOT NULL DEFAULT 0;
ALTER TABLE claims ADD COLUMN result TEXT;
ALTER TABLE claims ADD COLUMN error TEXT
"""

#: Version 4: what the builder's output waits for (a blank disc, the robot), and whether it is a blank medium:
#: the station that cut the job shows it in its ``status``, console and a media request's N-GET.
_VERSION_4 = """
ALTER TABLE claims ADD COLUMN waiting TEXT;
ALTER TABLE claims ADD COLUMN waiting_media BOOLEAN NOT NULL DEFAULT false
"""

#: The catalogue's history, oldest first; append, never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (_VERSION_1, _VERSION_2, _VERSION_3, _VERSION_4)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: Connection) -> list[int]:
    """Bring the catalogue to :data:`SCHEMA_VERSION` under :data:`LOCK`; return the versions applied.

    A catalogue of a newer version is a :class:`NodeError`: this code could misread it.
    """
    applied: list[int] = []
    db.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
    try:
        db.commit()
        with db.transaction():
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                       "applied DOUBLE PRECISION NOT NULL)")
        while (version := current(db)) < SCHEMA_VERSION:
            with db.transaction():
                for statement in (s.strip() for s in MIGRATIONS[version].split(";")):
                    if statement:
                        db.execute(statement.encode())
                db.execute("INSERT INTO schema_version (version, applied) "
                           "VALUES (%s, extract(epoch FROM now()))", (version + 1,))
            applied.append(version + 1)
            logger.info("catalogue: schema migrated to version %d", version + 1)
        if version > SCHEMA_VERSION:
            raise NodeError(f"the catalogue has schema version {version}; this medianode knows versions up to "
                            f"{SCHEMA_VERSION}: run a medianode at least as new as the newest station's")
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
        db.commit()
    return applied


def current(db: Connection) -> int:
    """The catalogue's schema version (0 before any migration)."""
    row = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0
