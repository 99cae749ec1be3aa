"""The web console against a running ``medianode serve``: sign-in, sessions, CSRF, roles, the JSON API,
the first start's link, TLS, and the configuration's checks. Real processes on 127.0.0.1, no mocks."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from node import users
from tests.conftest import cli, ct_series, need, until
from tests.console_kit import Client, ConsoleNode, with_index
from tests.test_serve import storescu


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ConsoleNode]:
    need("echoscu", "storescu")
    n = ConsoleNode(tmp_path)
    n.start()
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.stop(signal.SIGKILL)


def audit(node: ConsoleNode) -> list[dict[str, object]]:
    path = node.data / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- configuration ---------------------------------------------------------------------------------------


def test_a_console_on_the_network_without_tls_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nconsole:\n  port: 8443\n  host: 0.0.0.0\n")
    result = cli("config", "check", config)
    assert result.code == 2
    assert result.err.strip().endswith(f"{config}:4 console.host: '0.0.0.0' is not loopback: serving the console "
                                       "to the network needs console.tls ({certificate, key})")


@pytest.mark.parametrize(("text", "message"), [
    ("console: {port: 0}", "console.port: expected an integer from 1 to 65535, got '0'"),
    ("console: {enabled: maybe}", "console.enabled: expected true or false"),
    ("console: {tls: {certificate: /nonexistent.pem, key: /nonexistent.key}}", "console.tls.certificate:"),
    ("console: {web: 1}", "console.web: unknown key (known: host, port, tls, enabled)"),
])
def test_bad_console_settings_name_their_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n{text}\n")
    result = cli("config", "check", config)
    assert result.code == 2 and f"{config}:2 {message}" in result.err, result.err


def test_a_console_port_in_use_stops_serve_with_the_reason(tmp_path: Path) -> None:
    import socket

    need("echoscu")
    node = ConsoleNode(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", node.console_port))
        taken.listen()
        proc = subprocess.run([*serve_argv(node)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"the console cannot listen on 127.0.0.1:{node.console_port}" in proc.stderr


def serve_argv(node: ConsoleNode) -> list[str]:
    import sys

    return [sys.executable, "-m", "node", "serve", "--config", str(node.config)]


# -- first start -----------------------------------------------------------------------------------------


def test_the_first_start_link_makes_one_admin_once_and_never_reaches_the_log(node: ConsoleNode) -> None:
    link_file = node.data / "first-sign-in.url"
    until(link_file.exists, "the first start's link")
    assert stat.S_IMODE(link_file.stat().st_mode) == 0o600
    link = link_file.read_text().strip()
    secret = link.rsplit("/", 1)[1]
    assert link.startswith(node.url + "/first/") and secret not in node.logs()
    path = link[len(node.url):]
    browser = node.client()
    form = browser.get(path)  # a GET spends nothing
    assert form.status == 200 and browser.get(path).status == 200
    made = browser.post(path, {"username": "ann", "password": "a long password", "csrf": form.csrf})
    assert made.status == 303 and made.headers["location"] == "/"
    assert "ann (admin)" in browser.get("/").body
    again = node.client()
    assert again.post(path, {"username": "eve", "password": "another one", "csrf": again.get(path).csrf}).status == 403
    assert [u.name for u in with_index(node.data, users.list_users)] == ["ann"]
    assert secret not in (node.data / "audit.jsonl").read_text()


# -- who may do what -------------------------------------------------------------------------------------


def test_without_a_session_pages_go_to_sign_in_and_the_api_answers_401(node: ConsoleNode) -> None:
    browser = node.client()
    for path in ("/", "/volumes?name=x", "/imports", "/routes", "/audit"):
        answer = browser.get(path)
        assert answer.status == 303 and answer.headers["location"].startswith("/login?next=%2F"), path
    assert browser.get("/?fragment=1").status == 401
    assert browser.post("/jobs/1/retry", {"csrf": "x"}).status == 303
    for path in ("/api/status", "/api/jobs", "/api/volumes", "/api/imports"):
        assert browser.get(path).status == 401
        assert browser.api("GET", path, "nope.nope").status == 401
    answer = browser.request("POST", "/api/jobs/1/retry", body=b"")
    assert answer.status == 401 and answer.headers["www-authenticate"].startswith("Bearer")


def test_sign_in_sets_a_strict_httponly_cookie_and_wrong_passwords_are_slowed_then_audited(node: ConsoleNode) -> None:
    password = node.add_user("bob", "viewer")
    browser = node.client()
    answer = browser.sign_in("bob", password)
    cookie = next(c for c in answer.cookies if c.startswith("medianode_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    intruder = node.client()
    statuses = []
    for _ in range(5):
        statuses.append(intruder.post("/login", {"username": "bob", "password": "guess",
                                                 "csrf": intruder.get("/login").csrf}).status)
    assert statuses[:4] == [401] * 4 and statuses[4] == 429  # the fourth failure makes the name wait
    locked = intruder.post("/login", {"username": "bob", "password": password, "csrf": intruder.get("/login").csrf})
    assert locked.status == 429 and "try again in" in locked.body
    failed = [e for e in audit(node) if e["event"] == "user-sign-in-failed"]
    assert len(failed) == 6 and all(e["user"] == "bob" for e in failed)
    assert "guess" not in (node.data / "audit.jsonl").read_text() and "guess" not in node.logs()


def test_a_post_without_its_csrf_token_is_refused(node: ConsoleNode) -> None:
    password = node.add_user("cleo", "clerk")
    browser = node.client()
    browser.sign_in("cleo", password)
    for form in ({}, {"csrf": "0" * 64}):
        assert browser.post("/jobs/1/retry", form).status == 403
        assert browser.post("/volumes/X/reburn", form).status == 403
        assert browser.post("/logout", form).status == 403
    other = node.client()
    other.sign_in("cleo", password)
    assert browser.post("/jobs/1/retry", {"csrf": other.get("/").csrf}).status == 403  # another session's token
    assert browser.get("/").status == 200  # still signed in


def test_a_removed_users_session_and_token_stop_working(node: ConsoleNode) -> None:
    password = node.add_user("dan", "clerk")
    token = node.token("dan")
    browser = node.client()
    browser.sign_in("dan", password)
    assert browser.get("/").status == 200 and browser.api("GET", "/api/jobs", token).status == 200
    with_index(node.data, lambda index: users.remove(index, "dan"))
    assert browser.get("/").status == 303
    assert browser.api("GET", "/api/jobs", token).status == 401


def test_sign_out_ends_the_session(node: ConsoleNode) -> None:
    password = node.add_user("eve", "viewer")
    browser = node.client()
    browser.sign_in("eve", password)
    cookie = next(c.value for c in browser.jar if c.name == "medianode_session")
    assert browser.post("/logout", {"csrf": browser.get("/").csrf}).status == 303
    stale = node.client()
    stale.jar.set_cookie(_cookie(cookie))
    assert stale.get("/").status == 303
    assert [e["event"] for e in audit(node)][-2:] == ["user-signed-in", "user-signed-out"]


def _cookie(value: str):  # type: ignore[no-untyped-def]
    import http.cookiejar

    return http.cookiejar.Cookie(0, "medianode_session", value, None, False, "127.0.0.1", False, False, "/", True,
                                 False, None, False, None, None, {})


# -- the API ---------------------------------------------------------------------------------------------


def test_the_api_answers_what_the_cli_prints_and_acts_for_clerks_only(node: ConsoleNode, tmp_path: Path) -> None:
    node.add_user("vic", "viewer")
    node.add_user("cal", "clerk")
    viewer, clerk = node.token("vic"), node.token("cal")
    files = ct_series(tmp_path / "ct", 3, patient_id="P7", name="ROE^RICHARD")
    assert storescu(node, files).returncode == 0
    node.wait_for(lambda: len(node.volumes()) == 1)
    api = node.client()
    jobs = api.api("GET", "/api/jobs", viewer).json()
    assert jobs == json.loads(cli("jobs", "--config", node.config, "--json").out)
    volumes = api.api("GET", "/api/volumes?patient=P7", viewer).json()
    assert volumes == json.loads(cli("volumes", "--config", node.config, "--patient", "P7", "--json").out)
    assert len(volumes) == 1 and volumes[0]["studies"][0]["patient_name"] == "ROE^RICHARD"
    status = api.api("GET", "/api/status", viewer).json()
    assert status == json.loads(cli("status", "--config", node.config, "--json").out)
    assert api.api("GET", "/api/imports", viewer).json() == []
    label = volumes[0]["label"]
    refused = api.api("POST", f"/api/volumes/{label}/reburn", viewer, b'{"copies": 2}')
    assert refused.status == 403 and "role viewer" in refused.json()["error"]  # type: ignore[index]
    assert api.api("POST", "/api/jobs/1/retry", viewer).status == 403
    queued = api.api("POST", f"/api/volumes/{label}/reburn", clerk, b'{"copies": 2}')
    assert queued.status == 200, queued.body
    reburn = queued.json()
    assert reburn["volume"] == label and reburn["cannot"] == []  # type: ignore[index]
    node.wait_for(lambda: len(node.images()) == 3)  # the re-burn's two copies
    burned = [e for e in audit(node) if e["event"] == "volume-reburned"]
    assert burned and burned[-1]["user"] == "cal"
    assert api.api("POST", "/api/jobs/999/retry", clerk).status == 400
    assert api.api("POST", f"/api/volumes/{label}/reburn", clerk, b'{"copies": "lots"}').status == 400
    assert api.api("POST", f"/api/volumes/{label}/reburn", clerk, b"[1]").status == 400


# -- TLS -------------------------------------------------------------------------------------------------


def test_the_console_over_tls_has_secure_cookies_and_refuses_tls_1_1(tmp_path: Path) -> None:
    need("echoscu", "storescu", "openssl")
    cert, key = tmp_path / "console.pem", tmp_path / "console.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert], check=True,
                   capture_output=True)
    context = ssl.create_default_context(cafile=str(cert))
    node = ConsoleNode(tmp_path, console=f", tls: {{certificate: {cert}, key: {key}}}", context=context)
    node.start()
    try:
        browser = node.client()
        assert browser.base.startswith("https://")
        password = node.add_user("tess", "viewer")
        answer = browser.sign_in("tess", password)
        cookie = next(c for c in answer.cookies if c.startswith("medianode_session="))
        assert "Secure" in cookie and "HttpOnly" in cookie
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(str(cert))
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(OSError):
            Client(node.url, context=old).get("/login")
    finally:
        node.stop(signal.SIGKILL)


# -- lifecycle ------------------------------------------------------------------------------------------


def test_a_console_that_dies_is_restarted_and_receiving_never_depends_on_it(node: ConsoleNode, tmp_path: Path) -> None:
    assert node.proc is not None
    consoles = [pid for pid in _listening(node.console_port) if pid != node.proc.pid]  # serve keeps the socket too
    assert len(consoles) == 1, consoles
    os.kill(consoles[0], signal.SIGKILL)
    assert storescu(node, ct_series(tmp_path / "ct", 2)).returncode == 0
    until(lambda: node.answers(), "the console restarted")
    assert f"the console (process {consoles[0]}) died (killed by signal 9); restarting it" in node.logs()


def _listening(port: int) -> set[int]:
    """The processes holding a socket listening on ``port`` (ss from iproute2)."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    return {int(p) for p in re.findall(r"pid=(\d+),", out)}


def test_an_action_the_node_refuses_comes_back_to_its_page_with_the_reason(node: ConsoleNode) -> None:
    password = node.add_user("fay", "clerk")
    browser = node.client()
    browser.sign_in("fay", password)
    token = browser.get("/").csrf
    refused = browser.post("/jobs/999/retry", {"csrf": token}, headers={"Referer": "http://elsewhere.invalid/volumes"})
    assert refused.status == 303 and refused.headers["location"] == "/volumes"  # this console's page, never another
    assert "no job 999" in browser.get("/volumes").body
    bad = browser.post("/volumes/MEDIANODE_000001/reburn", {"csrf": token, "copies": "many"})
    assert bad.status == 303 and "copies must be a whole number from 1 to 99" in browser.get("/").body


# -- what the pages show of studies, volumes and jobs ---------------------------------------------------


def test_volumes_are_found_by_study_date_and_accession_number(node: ConsoleNode, tmp_path: Path) -> None:
    node.add_user("vic", "viewer")
    token = node.token("vic")
    studies = {"old": ct_series(tmp_path / "old", 2, patient_id="P1", StudyDate="20250315", AccessionNumber="ACC-1"),
               "new": ct_series(tmp_path / "new", 2, patient_id="P2", StudyDate="20260101", AccessionNumber="ACC-2")}
    for files in studies.values():
        assert storescu(node, files).returncode == 0
    node.wait_for(lambda: len(node.volumes()) == 2)
    by_patient = {v["studies"][0]["patient_id"]: v for v in json.loads(cli("volumes", "--config", node.config,
                                                                            "--json").out)}
    old, new = by_patient["P1"]["label"], by_patient["P2"]["label"]
    assert by_patient["P1"]["studies"][0]["study_date"] == "20250315"
    assert by_patient["P2"]["studies"][0]["accession_number"] == "ACC-2"

    def found(*args: str) -> list[str]:
        result = cli("volumes", "--config", node.config, *args, "--json")
        assert result.code == 0, result.err
        return [v["label"] for v in json.loads(result.out)]

    assert found("--date", "20250315") == [old]
    assert found("--date", "20250101-20251231") == [old]
    assert found("--date", "20251231-") == [new] and found("--date", "-20251231") == [old]
    assert found("--date", "20240101-20261231") == [old, new]
    assert found("--accession", "ACC-2") == [new] and found("--accession", "ACC") == []
    assert found("--accession", "ACC-1", "--date", "20260101") == []
    api = node.client()
    for query, labels in (("date=20250315", [old]), ("accession=ACC-2", [new]), ("date=2026-01-01&patient=P2", [new])):
        answer = api.api("GET", f"/api/volumes?{query}", token)
        assert [v["label"] for v in answer.json()] == labels, query  # type: ignore[attr-defined,index]
    password = node.add_user("ivy", "viewer")
    browser = node.client()
    browser.sign_in("ivy", password)
    page = browser.get("/volumes?date=20250101-20251231")
    assert old in page.body and new not in page.body and "2025-03-15" in page.body
    page = browser.get("/volumes?accession=ACC-2")
    assert new in page.body and old not in page.body
    searches = [e for e in audit(node) if e["event"] == "patient-search"]
    assert searches[-1] == {**searches[-1], "user": "ivy", "accession_number": "ACC-2"}


@pytest.mark.parametrize("date", ["2025-13-01", "yesterday", "20250101-20241231", "-", "2025031"])
def test_a_bad_study_date_is_refused_with_its_reason_and_changes_nothing(node: ConsoleNode, tmp_path: Path,
                                                                         date: str) -> None:
    assert storescu(node, ct_series(tmp_path / "ct", 1)).returncode == 0
    node.wait_for(lambda: len(node.volumes()) == 1)
    before = cli("volumes", "--config", node.config, "--json").out
    result = cli("volumes", "--config", node.config, "--date", date)
    assert result.code == 2 and "study date" in result.err and "Traceback" not in result.err, result.err
    node.add_user("vic", "viewer")
    answer = node.client().api("GET", f"/api/volumes?date={date}", node.token("vic"))
    assert answer.status == 400 and "study date" in answer.json()["error"]  # type: ignore[index]
    browser = node.client()
    browser.sign_in("vic", "pass-word-1")
    page = browser.get(f"/volumes?date={date}")
    assert page.status == 400 and "study date" in page.body
    assert cli("volumes", "--config", node.config, "--json").out == before


def test_a_volumes_label_record_is_kept_and_shown_on_its_page(node: ConsoleNode, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "ct", 2, patient_id="L1", name="LABEL^LENA", StudyDescription="CHEST")
    assert storescu(node, files).returncode == 0
    node.wait_for(lambda: len(node.volumes()) == 1)
    (volume,) = json.loads(cli("volumes", "--config", node.config, "--json").out)
    record = volume["label_record"]
    assert record["patient_name"] == "LABEL LENA" and record["patient_id"] == "L1"
    assert record["study_dates"] == ["2026-01-01"] and record["study_descriptions"] == ["CHEST"]
    assert record["content"] == "DICOM ONLY" and record["volume_text"] == "volume 1 of 1"
    password = node.add_user("vic", "viewer")
    browser = node.client()
    browser.sign_in("vic", password)
    page = browser.get(f"/volumes/{volume['label']}").body
    label_part = page[page.index('id="label-record"'):]
    assert "DICOM ONLY" in label_part and "LABEL LENA" in label_part and "CHEST" in label_part


def test_now_shows_the_calling_ae_titles_of_a_study_receiving(tmp_path: Path) -> None:
    need("echoscu", "storescu")
    node = ConsoleNode(tmp_path, stable=3600)  # the study stays receiving
    node.start()
    try:
        files = ct_series(tmp_path / "ct", 4, patient_id="R9", name="RECV^RITA")
        assert storescu(node, files[:2], calling="MODALITY7").returncode == 0
        assert storescu(node, files[2:], calling="CT2").returncode == 0
        password = node.add_user("vic", "viewer")
        browser = node.client()
        browser.sign_in("vic", password)
        live = browser.get("/?fragment=1").body
        row = re.search(r'<tr><td class="patient">RECV\^RITA</td>.*?</tr>', live, re.S)
        assert row, live
        assert "<td>CT2, MODALITY7</td>" in row.group(0) and '<td class="n">4</td>' in row.group(0)
    finally:
        node.stop(signal.SIGKILL)


def test_a_building_jobs_progress_is_recorded_as_its_image_is_written(node: ConsoleNode, tmp_path: Path) -> None:
    """Every progress record seen while the job runs is within its total and never goes back; the last says
    the whole image was written. (A fast machine may write the image between two looks: then only the
    records are checked, not the bar; the bar itself is test_now_shows_a_progress_bar_and_the_time_left's.)"""
    import sqlite3

    files = ct_series(tmp_path / "big", 60, size=512)  # about 31 MB
    password = node.add_user("vic", "viewer")
    browser = node.client()
    browser.sign_in("vic", password)
    assert storescu(node, files).returncode == 0
    db = sqlite3.connect(f"file:{node.data / 'index.sqlite'}?mode=ro", uri=True)
    seen: list[tuple[int, int]] = []
    bars = []

    def built() -> bool:
        row = db.execute("SELECT done, total FROM job_progress").fetchone()
        if row and (not seen or seen[-1] != row):
            seen.append(row)
            if 0 < row[0] < row[1]:
                bars.append(browser.get("/?fragment=1").body)
        return len(node.images()) == 1

    node.wait_for(built, timeout=180)
    final = db.execute("SELECT done, total, phase FROM job_progress").fetchone()
    db.close()
    assert final[0] == final[1] > sum(f.stat().st_size for f in files) * 0.9 and final[2] == "building"
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and all(0 <= d <= t == final[1] for d, t in seen), seen
    for body in bars:  # what Now showed while it was written (when it was seen)
        assert "<progress" in body and "MB written" in body


def test_now_shows_a_progress_bar_and_the_time_left(tmp_path: Path) -> None:
    """The live part of Now rendered from an index holding a building job with a progress record."""
    from node.config import Match, load_config
    from node.console import views, web
    from node.index import Index, Received
    from node.jobs import ProgressRecord
    from node.routing import RouteSnapshot
    from node.users import User

    config_path = tmp_path / "node.yaml"
    config_path.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n")
    config = load_config(config_path)
    config.node.data_dir.mkdir(parents=True)
    index = Index(config.node.data_dir / "index.sqlite")
    route = RouteSnapshot(Match(("BURN",)), "burn", profile="STD-GEN-CD").to_json()
    try:
        index.add_instance(Received("1.2.3.1", "1.2.840.10008.5.1.4.1.1.2", "1.2.3", "1.2.3.0", "P", "N", "CT",
                                    "1.2.840.10008.1.2.1", str(tmp_path / "x.dcm"), 10, "CT1", "BURN", route, 0.0))
        job_id = index.enqueue(["1.2.3"], route=route)
        assert index.claim_job() is not None
        times = iter([1000.0, 1000.4, 1010.0, 1010.5])
        meter = ProgressRecord(index, job_id, clock=lambda: next(times))
        meter.start(200_000_000)
        meter.advance(10_000_000)  # 0.4 s later: not recorded (at most one record a second)
        assert index.progress([job_id])[job_id][1] == 0
        meter.advance(40_000_000)  # 10 s after the start: 50 MB of 200
        html = web._env.get_template("now_live.html").render(user=User("vic", "viewer"), csrf="",
                                                               **views.now(index, config))
    finally:
        index.close()
    row = re.search(rf'<tr id="building-{job_id}">.*?</tr>', html, re.S)
    assert row, html
    assert '<progress max="200.0" value="50.0">25 %</progress>' in row.group(0)
    assert "50.0 of 200.0 MB written, about 30 s left" in row.group(0)


# -- the admin's pages -----------------------------------------------------------------------------------


def flash(answer_page: str) -> str:
    found = re.search(r'<p class="flash" role="status">(.*?)</p>', answer_page, re.S)
    return html.unescape(found.group(1)) if found else ""


def test_only_an_admin_sees_and_uses_the_users_and_configuration_pages(node: ConsoleNode) -> None:
    node.add_user("ann", "admin")
    for name, role in (("cleo", "clerk"), ("vera", "viewer")):
        browser = node.client()
        browser.sign_in(name, node.add_user(name, role))
        home = browser.get("/")
        assert 'href="/users"' not in home.body and 'href="/config"' not in home.body, role
        token = home.csrf
        for path in ("/users", "/users/ann", "/config"):
            answer = browser.get(path)
            assert answer.status == 403 and f"Your role ({role}) may not do this; it needs admin" in answer.body
        for path, form in (("/users", {"username": "mal", "role": "admin", "password": "x"}),
                           ("/users/ann/remove", {}), ("/users/ann/password", {"password": "mine now"}),
                           ("/users/ann/tokens", {}), ("/config/check", {}), ("/config/reload", {})):
            assert browser.post(path, {**form, "csrf": token}).status == 403, path
    assert [(u.name, u.role) for u in with_index(node.data, users.list_users)] == [
        ("ann", "admin"), ("cleo", "clerk"), ("vera", "viewer")]
    assert with_index(node.data, lambda index: users.tokens(index, "ann")) == []
    assert not [e for e in audit(node) if e["event"] in ("user-added", "token-created", "config-reload-asked")]
    admin = node.client()
    admin.sign_in("ann", "pass-word-1")
    home = admin.get("/")
    assert 'href="/users"' in home.body and 'href="/config"' in home.body


def test_every_admin_form_without_its_csrf_token_is_refused(node: ConsoleNode) -> None:
    node.add_user("ann", "admin")
    node.add_user("cal", "clerk")
    token_id = with_index(node.data, lambda index: users.new_token(index, "cal")[0])
    browser = node.client()
    browser.sign_in("ann", "pass-word-1")
    for path, form in (("/users", {"username": "mal", "role": "admin", "password": "x"}),
                       ("/users/cal/remove", {}), ("/users/cal/password", {"password": "other"}),
                       ("/users/cal/tokens", {}), (f"/users/cal/tokens/{token_id}/revoke", {}),
                       ("/config/check", {}), ("/config/reload", {})):
        for csrf in ({}, {"csrf": "0" * 64}):
            assert browser.post(path, {**form, **csrf}).status == 403, path
    assert [u.name for u in with_index(node.data, users.list_users)] == ["ann", "cal"]
    assert [t["id"] for t in with_index(node.data, lambda index: users.tokens(index, "cal"))] == [token_id]
    node.client().sign_in("cal", "pass-word-1")  # the password is unchanged
    assert not [e for e in audit(node) if e["event"].startswith(("user-", "token-", "config-reload"))  # type: ignore[union-attr]
                and e["event"] not in ("user-signed-in",)]


def test_an_admin_adds_a_user_sets_its_password_makes_and_revokes_tokens_and_removes_it(node: ConsoleNode) -> None:
    node.add_user("ann", "admin")
    admin = node.client()
    admin.sign_in("ann", "pass-word-1")
    token = admin.get("/users").csrf
    added = admin.post("/users", {"username": "cal", "role": "clerk", "password": "first pass", "csrf": token})
    assert added.status == 303 and added.headers["location"] == "/users"
    page = admin.get("/users").body
    assert flash(page) == "User cal added, role clerk."
    assert re.search(r'<a href="/users/cal">cal</a></td><td class="role">clerk</td>', page)
    clerk = node.client()
    clerk.sign_in("cal", "first pass")

    # A new password: the user's sessions end; the new one signs in, the old one does not.
    assert admin.post("/users/cal/password", {"password": "second pass", "csrf": token}).headers["location"] == "/users/cal"
    assert flash(admin.get("/users/cal").body) == "Password of cal changed; their sessions ended."
    assert clerk.get("/").status == 303
    assert node.client().post("/login", {"username": "cal", "password": "first pass",
                                          "csrf": node.client().get("/login").csrf}).status in (401, 403)
    clerk.sign_in("cal", "second pass")

    # A token, shown once; it works on the API, is listed, and stops working once revoked.
    made = admin.post("/users/cal/tokens", {"csrf": token})
    assert made.status == 200
    secret = re.search(r'<code id="new-token">([^<]+)</code>', made.body).group(1)  # type: ignore[union-attr]
    token_id = secret.split(".")[0]
    assert node.client().api("GET", "/api/jobs", secret).status == 200
    listed = admin.get("/users/cal").body
    assert f'<td class="uid">{token_id}</td>' in listed and secret not in listed and 'id="new-token"' not in listed
    revoked = admin.post(f"/users/cal/tokens/{token_id}/revoke", {"csrf": token})
    assert revoked.status == 303 and flash(admin.get("/users/cal").body) == f"Token {token_id} of cal revoked."
    assert node.client().api("GET", "/api/jobs", secret).status == 401

    # Removed: the session that was signed in stops working at once.
    assert clerk.get("/").status == 200
    removed = admin.post("/users/cal/remove", {"csrf": token})
    assert removed.status == 303 and "User cal removed" in flash(admin.get("/users").body)
    assert clerk.get("/").status == 303 and clerk.get("/").headers["location"].startswith("/login")
    assert [u.name for u in with_index(node.data, users.list_users)] == ["ann"]

    done = [(e["event"], e.get("name"), e["user"]) for e in audit(node)
            if e["event"] in ("user-added", "user-password-changed", "token-created", "token-revoked", "user-removed")]
    assert done == [("user-added", "cal", "ann"), ("user-password-changed", "cal", "ann"), ("token-created", "cal", "ann"),
                    ("token-revoked", "cal", "ann"), ("user-removed", "cal", "ann")]
    log = (node.data / "audit.jsonl").read_text() + node.logs()
    assert secret.split(".")[1] not in log and "first pass" not in log and "second pass" not in log


@pytest.mark.parametrize(("form", "message"), [
    ({"username": "a b", "role": "clerk", "password": "pw"}, "bad user name 'a b': 1 to 64 letters, digits,"),
    ({"username": "ann", "role": "clerk", "password": "pw"}, "user 'ann' exists"),
    ({"username": "bo", "role": "boss", "password": "pw"}, "unknown role 'boss': one of viewer, clerk, admin"),
    ({"username": "bo", "role": "clerk", "password": ""}, "the password is empty"),
])
def test_a_user_the_node_refuses_comes_back_to_the_users_page_with_the_reason(
        node: ConsoleNode, form: dict[str, str], message: str) -> None:
    node.add_user("ann", "admin")
    admin = node.client()
    admin.sign_in("ann", "pass-word-1")
    page = admin.get("/users")
    refused = admin.post("/users", {**form, "csrf": page.csrf}, headers={"Referer": f"{node.url}/users"})
    assert refused.status == 303 and refused.headers["location"] == "/users"
    assert flash(admin.get("/users").body).startswith(message)
    assert [(u.name, u.role) for u in with_index(node.data, users.list_users)] == [("ann", "admin")]
    assert not [e for e in audit(node) if e["event"] == "user-added"]


def test_an_admin_cannot_remove_itself_nor_act_on_a_user_that_is_not(node: ConsoleNode) -> None:
    node.add_user("ann", "admin")
    admin = node.client()
    admin.sign_in("ann", "pass-word-1")
    token = admin.get("/users/ann").csrf
    assert admin.post("/users/ann/remove", {"csrf": token}, headers={"Referer": f"{node.url}/users"}).status == 303
    assert flash(admin.get("/users").body) == "you cannot remove yourself: another admin can, or medianode users remove"
    assert admin.get("/users/nobody").status == 404
    admin.post("/users/nobody/tokens", {"csrf": token}, headers={"Referer": f"{node.url}/users"})
    assert flash(admin.get("/users").body) == "no user 'nobody'"
    admin.post("/users/ann/tokens/feedbeef/revoke", {"csrf": token}, headers={"Referer": f"{node.url}/users/ann"})
    assert flash(admin.get("/users/ann").body) == "user 'ann' has no token 'feedbeef'"
    assert [u.name for u in with_index(node.data, users.list_users)] == ["ann"]
    assert admin.get("/").status == 200


def _write(path: Path, text: str) -> None:
    """Replace a configuration file at once (serve, watching it, never reads half of it)."""
    temp = path.with_name(path.name + ".new")
    temp.write_text(text)
    os.replace(temp, path)


def test_an_admin_checks_the_file_on_disk_and_a_reload_keeps_the_running_routes_on_a_bad_one(node: ConsoleNode) -> None:
    node.add_user("ann", "admin")
    admin = node.client()
    admin.sign_in("ann", "pass-word-1")
    page = admin.get("/config")
    assert f'<code id="source">{node.config}</code>' in page.body
    checked = admin.post("/config/check", {"csrf": page.csrf})
    assert checked.status == 200 and f"{node.config}: ok, 1 route, data in {node.data}" in checked.body

    # A bad file: the check shows its file:line problems, as the CLI's; a reload keeps the running routes.
    good = node.config.read_text()
    lines = good.count("\n")
    _write(node.config, good + "  - {match: {called_aet: ARCHIVE}, action: burn, profile: STD-GEN-XX, copies: 0}\n")
    errors = [line.removeprefix("medianode config: ") for line in cli("config", "check", node.config).err.splitlines()]
    assert [e.split(": ")[0] for e in errors] == [f"{node.config}:{lines + 1} routes[1].profile",
                                                   f"{node.config}:{lines + 1} routes[1].copies"]
    checked = admin.post("/config/check", {"csrf": page.csrf})
    shown = re.search(r'<ul class="error" id="check-error">(.*?)</ul>', checked.body).group(1)  # type: ignore[union-attr]
    assert [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", shown)] == errors
    asked = admin.post("/config/reload", {"csrf": page.csrf})
    assert asked.status == 303 and asked.headers["location"] == "/config"
    message = flash(admin.get("/config").body)
    assert message.startswith("Not reloaded; the running configuration is kept: ") and f"{node.config}:{lines + 1}" in message
    routes = admin.get("/routes").body
    assert "BURN" in routes and "ARCHIVE" not in routes
    assert storescu(node, ct_series(node.root / "ct", 2)).returncode == 0  # the running routes still burn
    node.wait_for(lambda: len(node.images()) == 1)

    # A good file with a route no instance can reach: the check warns; a reload adopts it.
    _write(node.config, good + "  - {match: {called_aet: ARCHIVE}, action: burn, profile: STD-GEN-CD}\n"
                               "  - {match: {called_aet: BURN}, action: burn, profile: STD-GEN-DVD-J2K}\n")
    checked = admin.post("/config/check", {"csrf": page.csrf}).body
    assert f"{node.config}: ok, 3 routes" in checked
    warning = cli("config", "check", node.config).err.strip()
    assert f"{node.config}:{lines + 2} routes[2]: warning: no instance can reach this route" in warning
    assert f"<li>{warning}</li>" in html.unescape(checked)
    admin.post("/config/reload", {"csrf": page.csrf})
    assert flash(admin.get("/config").body) == f"Reloaded from {node.config}: 3 routes in use."
    assert "ARCHIVE" in admin.get("/routes").body

    events = [e for e in audit(node) if e["event"] in ("config-reload-asked", "config-reloaded")]
    asked_by = [e["user"] for e in events if e["event"] == "config-reload-asked"]
    assert asked_by == ["ann", "ann"]
    assert [e["ok"] for e in events if e["event"] == "config-reloaded"][-1] is True
    assert any(e["event"] == "config-reloaded" and e["ok"] is False for e in events)
