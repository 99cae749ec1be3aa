"""The index's schema versions: a fresh index, an index from before versions, a newer one, twice."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from node import index as index_module
from node.errors import NodeError
from node.index import SCHEMA_VERSION, Index, Received, Volume
from tests.conftest import cli

#: The schema as the index was made before it had versions (byte for byte), to build such an index from.
PRE_VERSIONING = """
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
    size INTEGER NOT NULL,
    calling_aet TEXT NOT NULL,
    called_aet TEXT NOT NULL,
    route TEXT NOT NULL,            -- the matched route's settings, JSON
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_by_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    route TEXT NOT NULL,            -- the route of its latest instance
    first_received REAL NOT NULL,
    last_received REAL NOT NULL,
    pending INTEGER NOT NULL,       -- 1: holds instances no job has taken yet
    jobs INTEGER NOT NULL DEFAULT 0 -- jobs cut for it so far (a late arrival supersedes)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    route TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'building', 'done', 'failed', 'cancelled')),
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    late INTEGER NOT NULL DEFAULT 0  -- cut for studies that had been burned before
);
CREATE TABLE IF NOT EXISTS job_studies (job_id INTEGER NOT NULL, study_uid TEXT NOT NULL, PRIMARY KEY (job_id, study_uid));
CREATE TABLE IF NOT EXISTS job_files (
    job_id INTEGER NOT NULL, sop_instance_uid TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (job_id, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS job_files_by_path ON job_files(path);
CREATE TABLE IF NOT EXISTS volumes (
    label TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    copies INTEGER NOT NULL,
    paths TEXT NOT NULL,            -- JSON list of published images
    bytes INTEGER NOT NULL,
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
CREATE TABLE IF NOT EXISTS released_files (path TEXT PRIMARY KEY, released REAL NOT NULL);
CREATE TABLE IF NOT EXISTS imports (
    id INTEGER PRIMARY KEY,
    medium TEXT NOT NULL,           -- what was imported: an inbox path, a drive, a mount point
    identity TEXT NOT NULL,         -- volume identity + DICOMDIR digest: the same disc twice is seen
    state TEXT NOT NULL CHECK (state IN ('importing', 'done', 'failed')),
    started REAL NOT NULL,
    finished REAL,
    sent INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    report TEXT                     -- path of the kept JSON report
);
CREATE INDEX IF NOT EXISTS imports_by_identity ON imports(identity);
CREATE TABLE IF NOT EXISTS job_waits (  -- a building job waiting on its output (a blank disc, the robot)
    job_id INTEGER PRIMARY KEY,
    since REAL NOT NULL,
    message TEXT NOT NULL
);
"""


def received(uid: str, study: str, *, at: float, path: str = "") -> Received:
    return Received(sop_instance_uid=uid, sop_class_uid="1.2.840.10008.5.1.4.1.1.2", study_uid=study,
                    series_uid=study + ".1", patient_id="PID", patient_name="DOE^JANE", modality="CT",
                    transfer_syntax="1.2.840.10008.1.2.1", path=path or f"/spool/{uid}.dcm", size=1000, calling_aet="CT",
                    called_aet="BURN", route='{"action": "burn"}', received_at=at)


def schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


def pre_versioning_index(path: Path) -> None:
    """An index as the code before versions left it: two instances, a job numbered 7, an import."""
    db = sqlite3.connect(path)
    db.executescript(PRE_VERSIONING)
    db.executemany("INSERT INTO instances VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
        ("1.1", "1.2.840.10008.5.1.4.1.1.2", "9.1", "9.1.1", "PID", "DOE^JANE", "CT", "1.2.840.10008.1.2.1",
         "/spool/1.1.dcm", 1000, "CT", "BURN", '{"action": "burn"}', 100.0),
        ("1.2", "1.2.840.10008.5.1.4.1.1.2", "9.1", "9.1.1", "PID", "DOE^JANE", "CT", "1.2.840.10008.1.2.1",
         "/spool/1.2.dcm", 1000, "CT", "BURN", '{"action": "burn"}', 101.0)])
    db.execute("INSERT INTO studies VALUES ('9.1', 'PID', 'DOE^JANE', '{\"action\": \"burn\"}', 100, 101, 0, 1)")
    db.execute("INSERT INTO jobs (id, route, state, created) VALUES (7, '{}', 'done', 102)")
    db.execute("INSERT INTO imports (id, medium, identity, state, started) VALUES (3, '/in/a.iso', 'A/x', 'done', 1)")
    db.commit()
    db.close()


def test_a_fresh_index_is_at_the_latest_version(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="node.index")
    index = Index(tmp_path / "index.sqlite")
    try:
        assert index.version() == SCHEMA_VERSION
        assert index.migrate() == []
    finally:
        index.close()
    # one line says it, not one per version a new index goes through
    assert caplog.messages == [f"index {tmp_path / 'index.sqlite'}: created (schema version {SCHEMA_VERSION})"]


def test_an_older_index_says_each_version_it_is_migrated_to(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "index.sqlite"
    with pytest.MonkeyPatch.context() as mp:  # an index the first version of the code left
        mp.setattr(index_module, "SCHEMA_VERSION", 1)
        Index(path).close()
    caplog.set_level(logging.INFO, logger="node.index")
    Index(path).close()
    assert caplog.messages == [f"index {path}: schema migrated to version {v}" for v in range(2, SCHEMA_VERSION + 1)]


def test_an_index_from_before_versions_is_adopted_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    pre_versioning_index(path)
    Index(tmp_path / "fresh.sqlite").close()
    index = Index(path)
    try:
        assert index.version() == SCHEMA_VERSION
        assert {name for name, _ in schema(path)} == {name for name, _ in schema(tmp_path / "fresh.sqlite")}
        assert index.study_files(["9.1"]) == [("1.1", "/spool/1.1.dcm", 1000), ("1.2", "/spool/1.2.dcm", 1000)]
        assert [(j.id, j.state) for j in index.jobs()] == [(7, "done")]
        assert index.imported("A/x")
        # it goes on as before: a re-sent instance replaces its row and releases its old copy, and new ids
        # follow the largest
        index.add_instance(received("1.2", "9.1", at=200.0, path="/spool/1.2-again.dcm"))
        index.add_instance(received("1.3", "9.1", at=201.0))
        assert [p for _, p, _ in index.study_files(["9.1"])] == ["/spool/1.1.dcm", "/spool/1.2-again.dcm",
                                                                 "/spool/1.3.dcm"]
        assert index.deletable_files(now=1e12, retention_s=0) == ["/spool/1.2.dcm"]
        assert index.enqueue(["9.1"], route="{}") == 8
        assert index.start_import("/in/b.iso", "B/y") == 4
    finally:
        index.close()


def test_an_index_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "index.sqlite"
    path.parent.mkdir()
    Index(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version (version, applied) VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    before = schema(path)
    with pytest.raises(NodeError, match=f"schema version {SCHEMA_VERSION + 1}; this medianode knows versions up "
                                        f"to {SCHEMA_VERSION}"):
        Index(path)
    assert schema(path) == before

    config = tmp_path / "node.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n")
    status = cli("status", "--config", config)
    assert status.code == 1 and status.out == ""
    assert status.err == (f"medianode status: {path} has index schema version {SCHEMA_VERSION + 1}; this medianode "
                          f"knows versions up to {SCHEMA_VERSION}: run a medianode at least as new as the one that "
                          f"wrote it\n")


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    Index(path).close()
    once = schema(path)
    with sqlite3.connect(path) as db:
        stamps = db.execute("SELECT version, applied FROM schema_version").fetchall()
    index = Index(path)
    try:
        assert index.migrate() == []
    finally:
        index.close()
    assert schema(path) == once
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version, applied FROM schema_version").fetchall() == stamps


def test_migrations_run_in_order_each_in_its_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "index.sqlite"
    Index(path).close()
    good = "CREATE TABLE later_good (id INTEGER PRIMARY KEY, state TEXT NOT NULL)"
    bad = "CREATE TABLE later_bad (name TEXT PRIMARY KEY); INSERT INTO no_such_table VALUES (1)"
    monkeypatch.setattr(index_module, "MIGRATIONS", (*index_module.MIGRATIONS, good, bad))
    monkeypatch.setattr(index_module, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        Index(path)
    names = {name for name, _ in schema(path)}
    assert "later_good" in names and "later_bad" not in names  # the failed migration left nothing
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION + 1


def volume_of(job: int, study: str) -> Volume:
    return Volume(label=f"V{job}", job_id=job, kind="archive", created=float(job), copies=1, paths=[], bytes=0,
                  superseded_by=None, studies=[(study, "PID", "DOE^JANE")])


def test_no_volume_is_superseded_by_one_that_lacks_any_of_its_instances(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    for uid in ("1.1", "1.2", "1.3"):
        index.add_instance(received(uid, "9.1", at=100.0))
    first = index.enqueue(["9.1"], route='{"action": "burn"}')
    index.finish_job(first, volumes=[volume_of(first, "9.1")])
    index.forget_files([f"/spool/1.{n}.dcm" for n in (1, 2, 3)])  # the spool let the burned study go

    index.add_instance(received("1.4", "9.1", at=900.0))  # a late arrival, alone in the spool
    late = index.enqueue(["9.1"], route='{"action": "burn"}')
    assert index.addendum_target(late) == "V1"
    index.finish_job(late, volumes=[volume_of(late, "9.1")])
    v1, v2 = index.volumes(study="9.1")
    assert (v1.superseded_by, v1.addendum_of, v2.superseded_by, v2.addendum_of) == (None, None, None, "V1")

    partial = index.enqueue(["9.1"], route='{"action": "burn"}')  # a re-burn of what the spool holds: 1.4
    index.finish_job(partial, volumes=[volume_of(partial, "9.1")])
    assert [v.superseded_by for v in index.volumes(study="9.1")] == [None, "V3", None]  # V3 holds all of V2

    whole = index.enqueue(["9.1"], route='{"action": "burn"}')  # read back from V1's image: everything
    index.add_job_files(whole, [(f"1.{n}", f"/readback/1.{n}.dcm", 1000) for n in (1, 2, 3)])
    assert index.addendum_target(whole) is None
    index.finish_job(whole, volumes=[volume_of(whole, "9.1")])
    assert [(v.label, v.superseded_by) for v in index.volumes(study="9.1")] == [
        ("V1", "V4"), ("V2", "V3"), ("V3", "V4"), ("V4", None)]
    assert index.volumes(label="V4")[0].addendum_of is None


def test_a_job_is_built_then_delivered_and_a_restart_puts_it_back(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    try:
        index.add_instance(received("1.1", "9.1", at=100.0))
        job = index.enqueue(["9.1"], route="{}")
        assert index.claim_job() is not None and index.set_built(job, "xorriso /dev/sr0")
        assert index.deliveries() == [("xorriso /dev/sr0", job, "built")]
        assert index.deletable_files(now=1e12, retention_s=0) == []  # a built job still needs its files
        assert index.set_job_state(job, "delivering", only_from=("built",))
        assert index.deliveries() == [("xorriso /dev/sr0", job, "delivering")]
        assert index.requeue_interrupted() == [job]
        assert index.job(job).state == "pending" and index.deliveries() == []  # type: ignore[union-attr]
    finally:
        index.close()


def test_the_same_instance_again_delays_only_a_study_still_waiting_for_its_job(tmp_path: Path) -> None:
    """A sender resuming after a restart re-sends what it had sent: the study it is still sending waits for
    the rest; a study already taken by a job is left as it is (no job, no volume)."""
    index = Index(tmp_path / "index.sqlite")
    try:
        index.add_instance(received("1.1", "9.1", at=100.0))
        index.add_instance(received("2.1", "9.2", at=100.0))
        index.enqueue(["9.2"], route='{"action": "burn"}')  # 9.2 is burned; 9.1 waits
        assert [s.study_uid for s in index.stable_studies(quiet_since=130.0)] == ["9.1"]
        index.resent("9.1", 135.0)
        index.resent("9.2", 135.0)
        assert index.stable_studies(quiet_since=130.0) == []  # quiet from the re-send, not from 100
        assert [s.study_uid for s in index.stable_studies(quiet_since=135.0)] == ["9.1"]
        index.resent("9.1", 110.0)  # an older re-send never moves the quiet period back
        assert index.stable_studies(quiet_since=134.0) == []
    finally:
        index.close()


def test_a_media_request_holds_its_instances_in_the_spool_while_open_or_preserving(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    for uid, study in (("1.1", "9.1"), ("1.2", "9.2")):
        index.add_instance(received(uid, study, at=0.0, path=f"/spool/{uid}"))
    index.settle(["9.1", "9.2"])  # stored only: the retention's from now on
    refs = [("1.1", "1.2.840.10008.5.1.4.1.1.2", "")]
    for uid, preserve in (("5.1", True), ("5.2", False)):
        assert index.add_media_request(uid, calling_aet="PACS", request={}, preserve=preserve, refs=refs, now=0.0)
    assert not index.add_media_request("5.1", calling_aet="PACS", request={}, preserve=True, refs=refs, now=0.0)
    assert index.deletable_files(now=100.0, retention_s=10) == ["/spool/1.2"]  # 1.1: two open requests
    assert index.initiate_media_request("5.2", copies=1, priority="MED", now=1.0) == "idle"
    assert index.initiate_media_request("5.2", copies=1, priority="MED", now=1.0) == "pending"
    [job] = index.cut_request_jobs("5.2", [(["9.1"], ["1.1"], "{}")]) or []
    assert index.cut_request_jobs("5.2", [(["9.1"], ["1.1"], "{}")]) is None  # cut once
    assert [u for u, _, _ in index.job_files(job)] == ["1.1"]
    assert index.cancel_media_request("5.2", now=2.0) == "cancelled"  # its job was pending: cancelled too
    assert index.job(job).state == "cancelled"  # type: ignore[union-attr]
    assert index.cancel_media_request("5.2", now=2.0) == "refused"
    assert index.cancel_media_request("5.9", now=2.0) is None
    # 5.2 (Preserve NO) ended and holds nothing; 5.1 (Preserve YES) holds 1.1 once ended too, until forgotten
    assert index.cancel_media_request("5.1", now=3.0) == "cancelled"
    assert "/spool/1.1" not in index.deletable_files(now=100.0, retention_s=10)
    assert index.forget_media_requests(finished_before=4.0, created_before=0.0) == ["5.1", "5.2"]
    assert index.media_request("5.1") is None
    assert sorted(index.deletable_files(now=100.0, retention_s=10)) == ["/spool/1.1", "/spool/1.2"]
