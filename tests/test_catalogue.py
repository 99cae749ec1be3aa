"""Stations sharing a PostgreSQL catalogue: real ``medianode serve`` processes, a real PostgreSQL (tests/pg_kit.py),
DCMTK's storescu. The catalogue stopped while a station receives delays the catalogue, never a C-STORE."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.catalogue import schema
from tests.conftest import cli, ct_series, need
from tests.pg_kit import Postgres, postgres  # noqa: F401 - the fixture
from node import users
from tests.console_kit import ConsoleNode, with_index
from tests.test_serve import Node, storescu


def catalogue_keys(pg: Postgres, *, station: str, password_file: bool = True) -> str:
    return (f", catalogue: '{pg.url()}', station: {station}"
            + (f", catalogue_password_file: {pg.password_file}" if password_file else ""))


@pytest.fixture
def station(tmp_path: Path, postgres: Postgres) -> Iterator[Node]:  # noqa: F811
    need("echoscu", "storescu")
    n = Node(tmp_path, extra=catalogue_keys(postgres, station="A"))
    n.start()
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.stop(signal.SIGKILL)


class users_at:  # noqa: N801 - reads as what it does
    """A station's users, through its own index."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def add(self, name: str, role: str) -> str:
        with_index(self.node.data, lambda index: users.add(index, name, role, "pass-word-1"))
        return "pass-word-1"

    def names(self) -> list[tuple[str, str]]:
        return list(with_index(self.node.data, lambda index: [(u.name, u.role) for u in users.list_users(index)]))


def rows(pg: Postgres, sql: str) -> list[tuple[object, ...]]:
    with pg.connect() as db:
        return db.execute(sql.encode()).fetchall()


def status(node: Node) -> dict[str, object]:
    result = cli("status", "--config", node.config, "--json")
    assert result.code == 0, result.err
    return dict(json.loads(result.out))


def test_a_password_in_the_url_is_a_configuration_error_that_does_not_repeat_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node:\n  data_dir: ./var\n  catalogue: postgresql://medianode:s3cret@db.example/catalogue\n")
    result = cli("config", "check", bad)
    assert result.code == 2
    assert result.err.strip() == (f"medianode config: {bad}:3 node.catalogue: the URL holds a password: give it in "
                                  "node.catalogue_password_file (or PGPASSWORD, PGPASSFILE), not here")
    assert "s3cret" not in result.err + result.out


@pytest.mark.parametrize(("yaml", "line", "problem"), [
    ("node:\n  catalogue: mysql://db.example/catalogue\n", 2,
     "node.catalogue: the URL is not postgresql://user@host[:port]/database"),
    ("node:\n  catalogue: postgresql://medianode@db.example\n", 2,
     "node.catalogue: the URL is not postgresql://user@host[:port]/database"),
    ("node:\n  catalogue_password_file: {file}\n", 2, "node.catalogue_password_file: is for node.catalogue, "
     "which is not set"),
    ("node:\n  catalogue: postgresql://m@db/c\n  station: 'two words'\n", 3,
     "node.station: 'two words' is not a station name (letters, digits, '.', '_', '-', at most 64)"),
])
def test_catalogue_keys_are_checked(tmp_path: Path, yaml: str, line: int, problem: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.format(file=bad))
    result = cli("config", "check", bad)
    assert (result.code, result.err.strip()) == (2, f"medianode config: {bad}:{line} {problem}")


def test_migrate_runs_once_under_the_lock_and_then_is_up_to_date(tmp_path: Path, postgres: Postgres) -> None:  # noqa: F811
    config = tmp_path / "medianode.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}{catalogue_keys(postgres, station='A')}}}\n")
    errors: list[BaseException] = []

    def migrate() -> None:  # two stations starting together
        try:
            with postgres.connect(autocommit=True) as db:
                schema.migrate(db)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert rows(postgres, "SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(1, schema.SCHEMA_VERSION + 1)]  # each once
    result = cli("catalogue", "migrate", "--config", config)
    assert (result.code, result.out) == (0, f"catalogue 127.0.0.1:{postgres.port}/catalogue: up to date\n")


def test_catalogue_commands_without_a_catalogue_are_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "medianode.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n")
    result = cli("catalogue", "migrate", "--config", config)
    assert (result.code, result.err) == (2, f"medianode catalogue: {config}: node.catalogue is not set: this station "
                                            "has no catalogue\n")


def test_a_wrong_password_is_a_clear_error_and_exit_1(tmp_path: Path, postgres: Postgres) -> None:  # noqa: F811
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password\n")
    config = tmp_path / "medianode.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}, catalogue: '{postgres.url()}', "
                      f"catalogue_password_file: {wrong}}}\n")
    result = cli("catalogue", "migrate", "--config", config)
    assert result.code == 1
    assert result.err.startswith(f"medianode catalogue: the catalogue 127.0.0.1:{postgres.port}/catalogue cannot be "
                                 "reached: ")
    assert "password authentication failed" in result.err and "Traceback" not in result.err
    assert "not-the-password" not in result.err


def test_a_station_without_a_catalogue_queues_nothing(tmp_path: Path) -> None:
    need("echoscu", "storescu")
    node = Node(tmp_path)
    node.start()
    try:
        assert storescu(node, ct_series(tmp_path / "s", 2)).returncode == 0
        node.wait_for(lambda: len(node.volumes()) == 1)
        assert "catalogue" not in status(node)
    finally:
        node.stop()
    with sqlite3.connect(node.data / "index.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM catalogue_outbox").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM catalogue_feed").fetchone() == (0,)


def test_the_catalogue_stopped_while_receiving_delays_it_and_loses_nothing(
        tmp_path: Path, postgres: Postgres, station: Node) -> None:  # noqa: F811
    station.wait_for(lambda: bool(rows(postgres, "SELECT name FROM stations")))  # fed once: the schema is there
    postgres.stop()
    studies = [ct_series(tmp_path / f"study{i}", 3, patient_id=f"PID{i}") for i in range(3)]
    for files in studies:
        sent = storescu(station, files)
        assert sent.returncode == 0, sent.stderr  # every C-STORE acknowledged, the catalogue down
    station.wait_for(lambda: len(station.volumes()) == 3)  # and burned
    behind = status(station)["catalogue"]
    assert isinstance(behind, dict)
    assert behind["station"] == "A" and behind["behind"] >= 3 + 3 + 3  # studies, jobs, volumes at least
    assert behind["error"] and "connect" in str(behind["error"]).lower()
    text = cli("status", "--config", station.config).out
    assert f"catalogue {postgres.url()} (station A): behind by {behind['behind']} changes" in text
    postgres.start()
    station.wait_for(lambda: status(station)["catalogue"]["behind"] == 0)  # type: ignore[index]
    assert sorted(r[0] for r in rows(postgres, "SELECT patient_id FROM studies WHERE station = 'A'")) == [
        "PID0", "PID1", "PID2"]
    assert rows(postgres, "SELECT station, state, COUNT(*) FROM jobs GROUP BY station, state") == [("A", "done", 3)]
    labels = sorted(v["label"] for v in station.volumes())
    assert sorted(r[0] for r in rows(postgres, "SELECT label FROM volumes WHERE station = 'A'")) == labels
    assert len(rows(postgres, "SELECT * FROM volume_studies WHERE station = 'A'")) == 3
    assert "up to date" in cli("status", "--config", station.config).out
    assert station.stop() == 0
    assert "catalogue 127.0.0.1" in station.logs() and "reachable again" in station.logs()


def test_copy_moves_a_station_s_history_into_the_catalogue(tmp_path: Path, postgres: Postgres) -> None:  # noqa: F811
    need("echoscu", "storescu")
    node = Node(tmp_path)
    node.start()
    try:
        assert storescu(node, ct_series(tmp_path / "s", 2, patient_id="OLD1")).returncode == 0
        node.wait_for(lambda: len(node.volumes()) == 1)
    finally:
        node.stop()
    alone = node.config.read_text()
    node.config.write_text(alone.replace("min_free_mb: 0", "min_free_mb: 0" + catalogue_keys(postgres,
                                                                                            station="FILMS")))
    result = cli("catalogue", "copy", "--config", node.config)
    assert result.code == 0, result.err
    assert result.out == f"catalogue 127.0.0.1:{postgres.port}/catalogue: 3 records of station FILMS copied\n"
    assert rows(postgres, "SELECT station, patient_id FROM studies") == [("FILMS", "OLD1")]
    assert rows(postgres, "SELECT station, label FROM volumes") == [("FILMS", node.volumes()[0]["label"])]
    again = cli("catalogue", "copy", "--config", node.config)  # twice: nothing twice
    assert again.code == 0 and len(rows(postgres, "SELECT * FROM volumes")) == 1


def test_a_study_burned_by_a_is_listed_by_b_and_b_sees_a_go_down(tmp_path: Path, postgres: Postgres) -> None:  # noqa: F811
    need("echoscu", "storescu")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Node(tmp_path / "a", extra=catalogue_keys(postgres, station="RADIOLOGY"))
    b = ConsoleNode(tmp_path / "b", extra=catalogue_keys(postgres, station="FILMS"))
    a.start()
    try:
        b.start()
        files = ct_series(tmp_path / "study", 2, patient_id="SHARED1")
        assert storescu(a, files).returncode == 0
        a.wait_for(lambda: len(a.volumes()) == 1)
        label = a.volumes()[0]["label"]

        def listed_by_b() -> list[dict[str, object]]:
            result = cli("volumes", "--config", b.config, "--patient", "SHARED1", "--json")
            assert result.code == 0 and result.err == "", result.err
            return list(json.loads(result.out))

        b.wait_for(lambda: bool(listed_by_b()))
        (row,) = listed_by_b()
        assert (row["station"], row["label"]) == ("RADIOLOGY", label)
        assert f"RADIOLOGY     {label}" in cli("volumes", "--config", b.config).out
        viewer = b.client()
        viewer.sign_in("viewer", b.add_user("viewer", "viewer"))
        found = viewer.get("/volumes?patient=SHARED1&name=doe").body  # the console at B finds A's disc
        assert '<td class="station">RADIOLOGY</td>' in found and label in found
        assert f'href="/volumes/{label}"' not in found  # its record is A's: no link to a page B does not have
        jobs = json.loads(cli("jobs", "--config", b.config, "--json").out)
        assert [(j["station"], j["state"]) for j in jobs] == [("RADIOLOGY", "done")]
        b.wait_for(lambda: [(s["station"], s["up"]) for s in status(b)["catalogue"]["stations"]]  # type: ignore[index]
                   == [("FILMS", True), ("RADIOLOGY", True)])
        password = users_at(a).add("clerk-a", "clerk")  # users are global: made at A, signs in at B
        b.wait_for(lambda: ("clerk-a", "clerk") in users_at(b).names())
        assert b.client().sign_in("clerk-a", password).status == 303
        with_index(a.data, lambda index: users.remove(index, "clerk-a"))  # and removed everywhere
        b.wait_for(lambda: ("clerk-a", "clerk") not in users_at(b).names())
        refused = b.client()
        form = {"username": "clerk-a", "password": password, "csrf": refused.get("/login").csrf, "next": "/"}
        assert refused.post("/login", form).status != 303
        a.stop(signal.SIGKILL)  # its heartbeat stops
        b.wait_for(lambda: not status(b)["catalogue"]["stations"][1]["up"], timeout=120)  # type: ignore[index]
        assert "station RADIOLOGY (MEDIANODE): DOWN, silent since" in cli("status", "--config", b.config).out
        page = viewer.get("/").body
        assert 'id="station-RADIOLOGY"' in page and "down since" in page
        assert b.stop() == 0
    finally:
        for n in (a, b):
            if n.proc is not None and n.proc.poll() is None:
                n.stop(signal.SIGKILL)
