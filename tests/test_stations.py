"""Stations sharing their spool (``node.shared_spool``): real ``medianode serve`` processes with their own data
folders and ports, one PostgreSQL (tests/pg_kit.py). A station holding a job is killed (SIGKILL) or paused
(SIGSTOP) past its lease while its image waits for a blank disc; another allowed station takes the job over and
publishes it, exactly once; the first station never publishes it, and records it as done when it is back."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from tests.conftest import cli, ct_series, need
from tests.pg_kit import Postgres, postgres  # noqa: F401 - the fixture
from tests.console_kit import ConsoleNode
from tests.test_catalogue import catalogue_keys, rows, status
from tests.test_mcm import Requester, request, send, wait_status
from tests.test_serve import Node, storescu

ROUTES = "routes:\n  - {match: {called_aet: BURN}, action: burn, profile: STD-GEN-CD, stations: [A, B]}\n"
#: A drive that never holds a blank disc: the job's image is built and waits there, unpublished.
NO_DISC = "{kind: xorriso, device: 'stdio:/nonexistent/medianode/disc', retries: 99, retry_wait_seconds: 3600}"


def station(root: Path, pg: Postgres, name: str, *, drive: bool = False, kind: type[Node] = Node,
            routes: str = ROUTES) -> Node:
    (root / name).mkdir()
    node = kind(root / name, extra=catalogue_keys(pg, station=name) + ", shared_spool: true, lease_seconds: 2",
                routes=routes)
    if drive:
        node.config.write_text(node.config.read_text().replace(f"output: {node.out},", f"output: {NO_DISC},"))
    return node


@pytest.fixture
def stations(tmp_path: Path, postgres: Postgres) -> Iterator[tuple[Node, Node]]:  # noqa: F811
    need("echoscu", "storescu", "xorriso")
    a, b = station(tmp_path, postgres, "A", drive=True), station(tmp_path, postgres, "B")
    with killed_after(a, b):
        yield a, b


@contextmanager
def killed_after(*nodes: Node) -> Iterator[None]:
    """Kill (by PID, resumed first if paused) each of ``nodes`` still running when the block ends."""
    try:
        yield
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                os.killpg(n.proc.pid, signal.SIGCONT)
                n.stop(signal.SIGKILL)


def claim(pg: Postgres) -> tuple[object, ...]:
    (row,) = rows(pg, "SELECT station, job_id, holder, state, token FROM claims") or [(None,) * 5]
    return row


def a_waits_for_a_disc(a: Node, pg: Postgres, tmp_path: Path) -> int:
    """Send A a study of 3 instances; return the job once A holds it, its image built, waiting for a disc."""
    a.start()
    assert storescu(a, ct_series(tmp_path / "study", 3, patient_id="FAIL1")).returncode == 0
    a.wait_for(lambda: claim(pg)[2:4] == ("A", "building") and "waiting for a blank disc" in a.logs())
    return int(claim(pg)[1])  # type: ignore[call-overload]


def recorded_at(node: Node) -> list[tuple[object, ...]]:
    """(job, state, label of its volume) in the station's own index."""
    with closing(sqlite3.connect(node.data / "index.sqlite")) as db:
        return db.execute("SELECT j.id, j.state, v.label FROM jobs j LEFT JOIN volumes v ON v.job_id = j.id "
                          "ORDER BY j.id").fetchall()


def published_once(pg: Postgres, b: Node, job: int, instances: int = 3) -> str:
    """Exactly one volume in the catalogue, A's job's, its image in B's output and holding every instance."""
    ((station_, label, paths),) = rows(pg, "SELECT station, label, paths FROM volumes")
    assert station_ == "A" and label.endswith(f"_{job:06d}")
    assert json.loads(paths) == [str(b.out / f"{label}.iso")] and b.images() == [b.out / f"{label}.iso"]
    checked = cli("check", b.images()[0], "--json")
    assert checked.code == 0, checked.err
    assert json.loads(checked.out)["instances"] == instances
    return str(label)


def writing(node: Node, folder: Path) -> list[Path]:
    """The files under ``folder`` a process of the node's group holds open for writing (/proc/PID/fd, fdinfo)."""
    assert node.proc is not None
    found = []
    for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            if os.getpgid(pid) != node.proc.pid:
                continue
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = Path(os.readlink(fd))
                flags = int(Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text().split("flags:")[1].split()[0], 8)
                if target.is_relative_to(folder) and flags & (os.O_WRONLY | os.O_RDWR):
                    found.append(target)
        except (OSError, IndexError):  # the process or the descriptor is gone meanwhile
            continue
    return found


@contextmanager
def held_open(path: Path) -> Iterator[list[int]]:
    """Hold a write lease on ``path`` (fcntl F_SETLEASE): another process's open() of it blocks in the kernel
    until the lease is given up. Yields the list that each lease break (SIGIO) appends to."""
    breaks: list[int] = []
    previous = signal.signal(signal.SIGIO, lambda signum, frame: breaks.append(signum))
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        yield breaks
    finally:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(fd)
        signal.signal(signal.SIGIO, previous)


def test_a_station_killed_while_it_writes_the_image_is_taken_over_and_its_half_image_never_published(
        tmp_path: Path, postgres: Postgres) -> None:  # noqa: F811
    need("echoscu", "storescu", "xorriso")
    viewer = tmp_path / "viewer"  # copied onto the medium after the study's instances
    viewer.mkdir()
    (viewer / "VIEWER.EXE").write_bytes(b"viewer" * 100_000)
    routes = ROUTES.replace("stations: [A, B]", f"stations: [A, B], viewer: {viewer}")
    a, b = station(tmp_path, postgres, "A", routes=routes), station(tmp_path, postgres, "B", routes=routes)
    with killed_after(a, b):
        with held_open(viewer / "VIEWER.EXE") as breaks:  # A's build blocks when it opens the viewer to copy it
            a.start()
            assert storescu(a, ct_series(tmp_path / "study", 3, patient_id="MIDWRITE")).returncode == 0
            a.wait_for(lambda: bool(breaks))
            job = int(claim(postgres)[1])  # type: ignore[call-overload]
            assert claim(postgres)[2:4] == ("A", "building")
            (staged,) = writing(a, a.out)  # its image open for writing under a temporary name, part written
            a.wait_for(lambda: rows(postgres, "SELECT done > 0 FROM claims") == [(True,)])  # A's renewal says so
            a.stop(signal.SIGKILL)
        assert staged.name.startswith(".MEDIANODE_") and ".iso.part-" in staged.name and staged.stat().st_size > 0
        ((done, total),) = rows(postgres, "SELECT done, total FROM claims")
        assert done < total  # part of the image written
        b.start()
        b.wait_for(lambda: claim(postgres)[2:4] == ("B", "done"))
        label = published_once(postgres, b, job)
        assert rows(postgres, "SELECT token FROM claims") == [(2,)]  # A's claim, then B's
        assert str(staged) not in json.dumps(rows(postgres, "SELECT paths FROM volumes"))
        a.start()  # it comes back: the job is done, by B; A records it and publishes nothing of its own
        a.wait_for(lambda: recorded_at(a) == [(job, "done", label)])
        assert list(a.out.iterdir()) == [] and rows(postgres, "SELECT COUNT(*) FROM volumes") == [(1,)]
        assert a.stop() == 0 and b.stop() == 0  # the half image removed at A's start, never published


def test_the_catalogue_lost_while_a_job_is_built_and_another_waits_to_be_offered(
        stations: tuple[Node, Node], postgres: Postgres, tmp_path: Path) -> None:  # noqa: F811
    a, _ = stations
    drive = tmp_path / "A-drive"  # no disc in A's drive until the test puts one there
    a.config.write_text(a.config.read_text().replace(
        NO_DISC, f"{{kind: xorriso, device: 'stdio:{drive}/disc', retry_wait_seconds: 1, retries: 99}}"))
    a_waits_for_a_disc(a, postgres, tmp_path)  # job 1 claimed by A, its image waiting for a disc
    postgres.stop()
    assert storescu(a, ct_series(tmp_path / "second", 2, patient_id="OUTAGE")).returncode == 0  # still received
    a.wait_for(lambda: [j[:2] for j in recorded_at(a)][1:] == [(2, "pending")])  # job 2 cut, not offered yet
    a.wait_for(lambda: "job 1 of station A: lease lost (not renewed for 2 s" in a.logs())
    a.wait_for(lambda: "job 1 of station A: not published here (its lease was lost)" in a.logs())
    drive.mkdir()  # a disc, while the catalogue is away: A, its lease lost, does not burn it
    postgres.start()
    a.wait_for(lambda: [j[1] for j in recorded_at(a)] == ["done", "done"], timeout=120)
    assert rows(postgres, "SELECT job_id, state FROM claims ORDER BY job_id") == [(1, "done"), (2, "done")]
    assert rows(postgres, "SELECT job_id FROM volumes ORDER BY job_id") == [(1,), (2,)]
    assert [a.logs().count(f"job {j} of station A: volume") for j in (1, 2)] == [1, 1]  # each built once
    assert (drive / "disc").stat().st_size > 0
    checked = cli("check", str(drive / "disc"), "--json")  # the last disc burned: job 2's, whole
    assert checked.code == 0 and json.loads(checked.out)["instances"] == 2, checked.err
    assert a.stop() == 0


def test_a_station_paused_past_its_lease_never_publishes_the_job_taken_over(
        stations: tuple[Node, Node], postgres: Postgres, tmp_path: Path) -> None:  # noqa: F811
    a, b = stations
    assert a.proc is None
    job = a_waits_for_a_disc(a, postgres, tmp_path)
    assert a.proc is not None
    os.killpg(a.proc.pid, signal.SIGSTOP)  # a pause: its lease runs out, its connection stays
    b.start()
    b.wait_for(lambda: claim(postgres)[2:4] == ("B", "done"))
    os.killpg(a.proc.pid, signal.SIGCONT)
    a.wait_for(lambda: "lease lost (taken over by another station)" in a.logs())
    a.wait_for(lambda: "job 1 of station A: not published here" in a.logs())
    label = published_once(postgres, b, job)
    a.wait_for(lambda: recorded_at(a) == [(job, "done", label)])  # recorded at A as B published it
    assert not list((a.data / "burning").glob("*.iso"))  # what A staged is gone
    assert a.stop() == 0 and b.stop() == 0
    assert rows(postgres, "SELECT COUNT(*) FROM volumes") == [(1,)]


@pytest.mark.parametrize(("yaml", "line", "problem"), [
    ("node:\n  shared_spool: true\n", 2, "node.shared_spool: needs node.catalogue: the stations share their jobs "
     "through it"),
    ("routes:\n  - {action: burn, stations: [A, B]}\n", 2, "routes[0].stations: needs node.shared_spool: true "
     "(without a shared spool only the station that holds a study can build it)"),
    ("node:\n  catalogue: postgresql://m@db/c\n  shared_spool: true\nroutes:\n  - {action: burn, stations: [A, 'b c']}\n",
     5, "routes[0].stations[1]: 'b c' is not a station name (letters, digits, '.', '_', '-', at most 64)"),
])
def test_shared_spool_keys_are_checked(tmp_path: Path, yaml: str, line: int, problem: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml)
    result = cli("config", "check", bad)
    assert (result.code, result.err.strip()) == (2, f"medianode config: {bad}:{line} {problem}")


def test_a_request_answered_by_a_is_built_by_b_and_n_get_at_a_follows_b(
        tmp_path: Path, postgres: Postgres) -> None:  # noqa: F811
    need("echoscu", "storescu", "xorriso")
    a, b = station(tmp_path, postgres, "A", drive=True, kind=ConsoleNode), station(tmp_path, postgres, "B")
    assert isinstance(a, ConsoleNode)
    a.config.write_text(a.config.read_text() + "mcm: {wait_seconds: 60, stations: [A, B]}\n")
    b_drive = tmp_path / "B-drive"  # no disc in B's drive until the test puts one there
    b.config.write_text(b.config.read_text().replace(
        f"output: {b.out},", f"output: {{kind: xorriso, device: 'stdio:{b_drive}/disc', retry_wait_seconds: 1, "
                             "retries: 99},"))
    with killed_after(a, b):
        a_waits_for_a_disc(a, postgres, tmp_path)  # A is busy with job 1
        b.start()
        files = ct_series(tmp_path / "requested", 2, patient_id="REQ1")
        send(a, files)
        with Requester(a) as r:
            r.create(request(files))
            uid = str(r.commands[-1].AffectedSOPInstanceUID)
            assert r.initiate(uid, NumberOfCopies=1).Status == 0
        b.wait_for(lambda: rows(postgres, "SELECT holder, state FROM claims WHERE job_id = 2") == [("B", "building")]
                   and "waiting for a blank disc" in b.logs())
        reply = wait_status(a, uid, "PENDING", info="OUT_OF_SUPPLIES")  # A answers: B's drive waits for a disc
        assert reply.TotalNumberOfPiecesOfMediaCreated == 0
        waiting = {w["id"]: w["message"] for w in status(a)["jobs"]["waiting"]}  # type: ignore[index]
        assert waiting[1].startswith("waiting for a blank disc in stdio:/nonexistent/medianode/disc")  # A's own
        assert waiting[2].startswith(f"at station B, waiting for a blank disc in stdio:{b_drive}/disc")
        assert "job 2 at station B, waiting for a blank disc" in cli("status", "--config", a.config).out
        clerk = a.client()
        clerk.sign_in("clerk", a.add_user("clerk", "clerk"))
        assert 'id="wait-2">Job 2 is waiting: at station B, waiting for a blank disc' in clerk.get("/").body
        b_drive.mkdir()  # a disc in B's drive
        reply = wait_status(a, uid, "DONE", "FAILURE")
        assert (reply.ExecutionStatus, reply.TotalNumberOfPiecesOfMediaCreated) == ("DONE", 1)
        assert [w["id"] for w in status(a)["jobs"]["waiting"]] == [1]  # type: ignore[index]
        [medium] = reply.ReferencedStorageMediaSequence
        ((result,),) = rows(postgres, "SELECT result FROM claims WHERE job_id = 2")
        assert medium.StorageMediaFileSetUID == json.loads(str(result))["fileset_uid"]
        assert (b_drive / "disc").stat().st_size > 0
        assert rows(postgres, "SELECT station, job_id FROM volumes") == [("A", 2)]


def test_a_job_cancelled_where_it_was_cut_is_withdrawn_and_offered_again_when_retried(
        stations: tuple[Node, Node], postgres: Postgres, tmp_path: Path) -> None:  # noqa: F811
    a, _ = stations
    a_waits_for_a_disc(a, postgres, tmp_path)  # A is busy with job 1: job 2 waits in the catalogue
    assert storescu(a, ct_series(tmp_path / "second", 2, patient_id="LATER")).returncode == 0

    def job2() -> list[tuple[object, ...]]:
        return rows(postgres, "SELECT state, error FROM claims WHERE job_id = 2")

    a.wait_for(lambda: job2() == [("pending", None)])
    assert cli("jobs", "cancel", "2", "--config", a.config).code == 0
    a.wait_for(lambda: job2() == [("failed", "cancelled at its station")])  # no station may claim it now
    assert cli("jobs", "retry", "2", "--config", a.config).code == 0
    a.wait_for(lambda: job2() == [("pending", None)])
    assert recorded_at(a)[1][:2] == (2, "pending")


def test_mcm_stations_need_a_shared_spool(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("mcm: {stations: [A, B]}\n")
    result = cli("config", "check", bad)
    assert (result.code, result.err.strip()) == (2, f"medianode config: {bad} mcm.stations: needs node.shared_spool: "
                                                    "true")
