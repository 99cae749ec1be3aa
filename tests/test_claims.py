"""Jobs several stations may build (node.catalogue.claims), against a real PostgreSQL, with each station's
builder in its own process (tests/claimer.py): SKIP LOCKED claims, leases on the database's clock, fencing
tokens checked where the volume is recorded. A station paused past its lease, or killed mid-build, never
publishes a job another station took over; every job is published exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.catalogue import claims, schema
from tests.conftest import until
from tests.pg_kit import Postgres, postgres  # noqa: F401 - the fixture

STATIONS = ["S1", "S2", "S3", "S4"]


@pytest.fixture
def catalogue(postgres: Postgres) -> Postgres:  # noqa: F811
    with postgres.connect(autocommit=True) as db:
        schema.migrate(db)
    return postgres


def offer(pg: Postgres, n: int, stations: list[str]) -> None:
    with pg.connect(autocommit=True) as db, db.transaction():
        for job in range(1, n + 1):
            claims.offer(db, "A", job, stations, created=float(job))


class Claimers:
    def __init__(self, pg: Postgres, out: Path) -> None:
        self.pg, self.out = pg, out
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, station: str, *, lease: float, hold: str = "") -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "tests.claimer", str(self.pg.port), station, str(self.out),
                                 "--lease", str(lease), *(["--hold", hold] if hold else [])],
                                stdout=subprocess.PIPE, text=True)
        self.procs[station] = proc
        return proc

    def finish(self) -> dict[str, list[str]]:
        """Wait for each claimer to end (no job open); its output lines."""
        lines = {}
        for station, proc in self.procs.items():
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode in (0, -signal.SIGKILL), (station, proc.returncode)
            lines[station] = out.splitlines()
        return lines

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def claimers(catalogue: Postgres, tmp_path: Path) -> Iterator[Claimers]:
    out = tmp_path / "out"
    out.mkdir()
    c = Claimers(catalogue, out)
    yield c
    c.kill_all()


def published(pg: Postgres) -> list[str]:
    with pg.connect() as db:
        return [label for (label,) in db.execute("SELECT label FROM volumes ORDER BY label")]


def claim_row(pg: Postgres, job: int) -> tuple[str, int, str]:
    with pg.connect() as db:
        row = db.execute("SELECT holder, token, state FROM claims WHERE station = 'A' AND job_id = %s", (job,)).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_four_stations_claiming_1000_jobs_publish_each_exactly_once(catalogue: Postgres, claimers: Claimers) -> None:
    offer(catalogue, 1000, STATIONS)
    for station in STATIONS:
        claimers.start(station, lease=30)
    lines = claimers.finish()
    claimed = [line.split()[1] for out in lines.values() for line in out if line.startswith("claimed")]
    assert sorted(claimed) == sorted(f"A-{j}" for j in range(1, 1001))  # none claimed twice
    assert published(catalogue) == sorted(f"A-{j}.iso" for j in range(1, 1001))
    assert sorted(p.name for p in claimers.out.iterdir()) == published(catalogue)  # no half-built file left


def test_a_station_paused_past_its_lease_never_publishes_the_job_taken_over(catalogue: Postgres,
                                                                            claimers: Claimers) -> None:
    offer(catalogue, 1000, STATIONS)
    paused = claimers.start("S1", lease=2, hold="A-1")  # the oldest job: S1 takes it first
    until(lambda: claim_row(catalogue, 1)[0] == "S1", "S1 to claim job 1")
    for station in STATIONS[1:]:
        claimers.start(station, lease=2)
    until(lambda: claim_row(catalogue, 1)[2] == "done", "another station to take job 1 over and publish it",
          timeout=120)
    holder, token, _ = claim_row(catalogue, 1)
    assert holder != "S1" and token >= 2
    paused.send_signal(signal.SIGCONT)  # it resumes, its lease long expired
    lines = claimers.finish()
    assert "fenced A-1" in lines["S1"] and "published A-1" not in lines["S1"]
    assert "published A-1" in lines[holder]
    assert published(catalogue) == sorted(f"A-{j}.iso" for j in range(1, 1001))  # each exactly once
    assert sorted(p.name for p in claimers.out.iterdir()) == published(catalogue)  # the paused copy removed


def test_a_station_killed_mid_build_is_taken_over_and_its_half_built_output_never_published(
        catalogue: Postgres, claimers: Claimers) -> None:
    offer(catalogue, 3, ["A", "B"])
    a = claimers.start("A", lease=2, hold="A-1")
    until(lambda: (claimers.out / "A-1.A.part").exists() and claim_row(catalogue, 1)[0] == "A", "A to half-build job 1")
    a.send_signal(signal.SIGKILL)
    claimers.start("B", lease=2)
    lines = claimers.finish()
    assert claim_row(catalogue, 1)[:1] == ("B",) and "published A-1" in lines["B"]
    assert published(catalogue) == ["A-1.iso", "A-2.iso", "A-3.iso"]
    assert (claimers.out / "A-1.A.part").exists()  # the dead station's output stays where it was, unpublished
    with catalogue.connect() as db:
        assert db.execute("SELECT station FROM volumes WHERE label = 'A-1.iso'").fetchall() == [("B",)]
