"""The console in a real browser: Debian's chromium, headless, driven by Selenium through Debian's
chromedriver (nothing is downloaded: both paths are given, so Selenium Manager never runs).

A clerk signs in, a study sent by DCMTK storescu appears on Now (with its calling AE title) without a
reload and becomes a volume, a failed job is retried, a patient searched by name and study date, a
volume's label record shown and the volume re-burned, a held import resolved by choosing one of its
two candidates; a viewer sees no button and gets 403 from the API; a patient named ``<script>alert(1)</script>`` is shown as text. With
``MEDIANODE_SCREENSHOTS=DIR`` each page is saved as a PNG in DIR (the README's are made so).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ct_series, need, until
from tests.console_kit import ConsoleNode
from tests.test_console_held import Clinic, clinic  # noqa: F401  (clinic: a fixture)
from tests.test_import import received
from tests.test_reconcile import archive  # noqa: F401  (the clinic fixture's)
from tests.test_serve import storescu

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
XSS = "<script>alert(1)</script>"


@pytest.fixture
def browser() -> Iterator[object]:
    need("chromium", "chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,760",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ConsoleNode]:
    need("echoscu", "storescu")
    blocked = tmp_path / "blocked"
    routes = ("routes:\n"
              "  - {match: {called_aet: BURN}, action: burn, profile: STD-GEN-CD}\n"
              f"  - {{match: {{called_aet: FAIL}}, action: burn, profile: STD-GEN-CD, output: {blocked}}}\n")
    n = ConsoleNode(tmp_path, stable=3.0, routes=routes)
    with n.config.open("a") as config:  # media dropped into the inbox are imported into the node itself
        config.write(f"import: {{inbox: {tmp_path / 'inbox'}, settle_seconds: 1, poll_seconds: 0.5, destination: "
                     f"{{ae_title: MEDIANODE, host: 127.0.0.1, port: {n.port}}}}}\n")
    n.start()
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.stop(signal.SIGKILL)


def node_study(node: ConsoleNode, patient_id: str) -> str:
    """The Study Instance UID of a patient's study in the node's index."""
    rows = node.client().api("GET", f"/api/volumes?patient={patient_id}", node.token("cleo")).json()
    return str(rows[0]["studies"][0]["study_uid"])  # type: ignore[index]


def shot(driver: object, name: str) -> None:
    """Save the page as DIR/name.png when MEDIANODE_SCREENSHOTS=DIR."""
    folder = os.environ.get("MEDIANODE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))  # type: ignore[attr-defined]


def sign_in_as(d: object, node: ConsoleNode, name: str, password: str) -> None:
    """Sign in at the console's sign-in page, where a visit to Now without a session leads."""
    from selenium.webdriver.common.by import By

    d.get(node.url + "/")  # type: ignore[attr-defined]
    assert "/login" in d.current_url  # type: ignore[attr-defined]
    shot(d, "sign-in")
    d.find_element(By.NAME, "username").send_keys(name)  # type: ignore[attr-defined]
    d.find_element(By.NAME, "password").send_keys(password)  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "form.signin button").click()  # type: ignore[attr-defined]
    until(lambda: f"{name} (" in text_of(d, "header"), "signed in")


def text_of(d: object, css: str) -> str:
    """The text of what ``css`` finds, '' while the page it was on is being replaced by the next one."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(d.find_element(By.CSS_SELECTOR, css).text)  # type: ignore[attr-defined]
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_a_clerk_and_a_viewer_at_the_console(browser: object, node: ConsoleNode, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    d = browser  # a selenium WebDriver
    clerk, viewer = node.add_user("cleo", "clerk"), node.add_user("vera", "viewer")

    def texts(css: str) -> list[str]:
        return [e.text for e in d.find_elements(By.CSS_SELECTOR, css)]  # type: ignore[attr-defined]

    def click(css: str) -> None:
        """Click what ``css`` finds; again if a live update replaced it in between."""
        def attempt() -> bool:
            try:
                d.find_element(By.CSS_SELECTOR, css).click()  # type: ignore[attr-defined]
            except StaleElementReferenceException:
                return False
            return True
        until(attempt, f"a click on {css}")

    def sign_in(name: str, password: str) -> None:
        sign_in_as(d, node, name, password)

    sign_in("cleo", clerk)
    d.execute_script("window.notReloaded = true")  # type: ignore[attr-defined]

    # A study arrives: Now shows it receiving, then its volume, without a reload; the name is text.
    assert storescu(node, ct_series(tmp_path / "xss", 4, patient_id="X1", name=XSS)).returncode == 0
    until(lambda: XSS in texts("#receiving td.patient"), "the study on Now, receiving")
    # who sends it: the calling AE title, after the patient and the ID (#live itself is never replaced)
    until(lambda: f"{XSS} X1 CT1" in d.find_element(By.ID, "live").text, "the calling AE on Now")  # type: ignore[attr-defined]
    shot(d, "now-receiving")
    until(lambda: XSS in " ".join(texts("#today td.patient")), "its volume on Now", timeout=120)
    assert d.execute_script("return window.notReloaded") is True  # type: ignore[attr-defined]
    with pytest.raises(NoAlertPresentException):
        d.switch_to.alert  # type: ignore[attr-defined]  # noqa: B018

    # A job fails (its output is a file, not a folder); it is retried once the output is fixed.
    (tmp_path / "blocked").rmdir()  # serve made the folder output at start
    (tmp_path / "blocked").write_text("not a folder")
    assert storescu(node, ct_series(tmp_path / "roe", 3, patient_id="R1", name="ROE^RICHARD"),
                    called="FAIL").returncode == 0
    until(lambda: d.find_elements(By.CSS_SELECTOR, "#failed button[name=retry]"), "a failed job with Retry",  # type: ignore[attr-defined]
          timeout=120)
    shot(d, "now")
    (tmp_path / "blocked").unlink()
    click("#failed button[name=retry]")
    until(lambda: "goes back to the queue" in " ".join(texts(".flash")), "the retry's message")
    until(lambda: len(node.images()) == 1 and any((tmp_path / "blocked").glob("*.iso")), "the retried job's volume",
          timeout=120)
    events = (node.data / "audit.jsonl").read_text()
    assert '"event": "job-retried"' in events and '"user": "cleo"' in events

    # A patient is searched by name, case and carets ignored; one of their volumes is re-burned twice over.
    d.get(node.url + "/volumes")  # type: ignore[attr-defined]
    d.find_element(By.NAME, "name").send_keys("roe richard")  # type: ignore[attr-defined]
    d.find_element(By.NAME, "date").send_keys("20251231-20260101")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "form.search button").click()  # type: ignore[attr-defined]
    until(lambda: texts("table.volumes td.patient") == ["ROE^RICHARD"], "the search's one volume")
    shot(d, "volumes")
    d.find_element(By.CSS_SELECTOR, "table.volumes td a").click()  # type: ignore[attr-defined]
    until(lambda: d.find_elements(By.CSS_SELECTOR, "form.reburn"), "the volume's page")  # type: ignore[attr-defined]
    record = d.find_element(By.ID, "label-record").text + d.find_element(By.ID, "label-patients").text  # type: ignore[attr-defined]
    assert "DICOM ONLY" in record and "ROE RICHARD" in record and "2026-01-01" in record
    shot(d, "volume")
    d.find_element(By.NAME, "copies").send_keys("2")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "form.reburn button").click()  # type: ignore[attr-defined]
    until(lambda: "re-burn queued as job" in " ".join(texts(".flash")), "the re-burn's message")
    until(lambda: len(list((tmp_path / "blocked").glob("*.iso"))) == 3, "the re-burn's two copies", timeout=120)

    # The first disc dropped into the inbox is imported (into the node itself); the import and its detail.
    shutil.copy(node.images()[0], tmp_path / "inbox" / "disc.iso")

    def imported() -> bool:
        d.get(node.url + "/imports")  # type: ignore[attr-defined]  # this page has no live part: load it again
        return "done" in texts("#imports td")

    until(imported, "the import on Imports", timeout=120)
    shot(d, "imports")
    d.find_element(By.CSS_SELECTOR, "#imports td a").click()  # type: ignore[attr-defined]
    until(lambda: len(texts("#outcomes tr.sent")) == 4, "the import's four instances")
    shot(d, "import")
    d.get(node.url + "/routes")  # type: ignore[attr-defined]
    assert "FAIL" in d.find_element(By.CSS_SELECTOR, "#rules").text  # type: ignore[attr-defined]
    d.find_element(By.NAME, "study").send_keys(node_study(node, "R1"))  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "form.search button").click()  # type: ignore[attr-defined]
    until(lambda: "job by routes[1]" in text_of(d, "main"), "the study's routes explained")  # the page is replaced
    shot(d, "routes")
    d.get(node.url + "/audit?user=cleo")  # type: ignore[attr-defined]
    assert {"job-retried", "volume-reburned", "patient-search"} <= set(texts("#events td:nth-child(2)"))
    shot(d, "audit")
    d.find_element(By.CSS_SELECTOR, "form.who button").click()  # type: ignore[attr-defined]
    until(lambda: "/login" in d.current_url, "signed out")  # type: ignore[attr-defined]

    # A viewer: the same pages, no button; the API refuses the actions with 403.
    sign_in("vera", viewer)
    d.get(node.url + "/")  # type: ignore[attr-defined]
    assert not d.find_elements(By.CSS_SELECTOR, "button[name=retry], button[name=cancel]")  # type: ignore[attr-defined]
    click("#today td a")
    until(lambda: "Volume " in d.find_element(By.TAG_NAME, "h1").text, "a volume's page")  # type: ignore[attr-defined]
    assert not d.find_elements(By.CSS_SELECTOR, "form.reburn")  # type: ignore[attr-defined]
    api = node.client()
    token = node.token("vera")
    assert api.api("POST", "/api/jobs/1/retry", token).status == 403
    assert api.api("POST", "/api/volumes/MEDIANODE_000001/reburn", token).status == 403
    assert api.api("GET", "/api/volumes?patient=R1", token).status == 200


def test_an_admin_adds_a_clerk_who_then_signs_in_without_the_admin_pages(browser: object, node: ConsoleNode) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser  # a selenium WebDriver
    sign_in_as(d, node, "ann", node.add_user("ann", "admin"))
    node.add_user("vera", "viewer")
    d.find_element(By.LINK_TEXT, "Users").click()  # type: ignore[attr-defined]
    until(lambda: text_of(d, "#users"), "the Users page")
    d.find_element(By.NAME, "username").send_keys("cleo")  # type: ignore[attr-defined]
    Select(d.find_element(By.NAME, "role")).select_by_value("clerk")  # type: ignore[attr-defined]
    d.find_element(By.NAME, "password").send_keys("a clerk's password")  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "form.adduser button").click()  # type: ignore[attr-defined]
    until(lambda: "User cleo added, role clerk." in text_of(d, ".flash"), "the new user's message")
    rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#users tr")]  # type: ignore[attr-defined]
    assert any(r.startswith("cleo clerk") for r in rows), rows
    shot(d, "users")
    d.find_element(By.LINK_TEXT, "Configuration").click()  # type: ignore[attr-defined]
    until(lambda: text_of(d, "#source"), "the Configuration page")
    d.find_element(By.CSS_SELECTOR, "button[name=check]").click()  # type: ignore[attr-defined]
    until(lambda: f"{node.config}: ok, 2 routes" in text_of(d, "#check"), "the configuration checked")
    shot(d, "config")
    d.find_element(By.CSS_SELECTOR, "form.who button").click()  # type: ignore[attr-defined]
    until(lambda: "/login" in d.current_url, "signed out")  # type: ignore[attr-defined]

    sign_in_as(d, node, "cleo", "a clerk's password")
    nav = d.find_element(By.TAG_NAME, "nav").text  # type: ignore[attr-defined]
    assert "Now" in nav and "Users" not in nav and "Configuration" not in nav
    d.get(node.url + "/users")  # type: ignore[attr-defined]
    assert "it needs admin" in d.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    events = (node.data / "audit.jsonl").read_text()
    assert '"event": "user-added"' in events and '"name": "cleo"' in events and '"user": "ann"' in events


def test_a_clerk_resolves_a_held_import_by_choosing_one_of_two_candidates(browser: object, clinic: Clinic) -> None:
    """A medium whose patient matches two local patients is held; the clerk sees both candidates beside the
    medium's values and sends the instances as the second one: they arrive in storescp with that identity."""
    from pydicom import dcmread
    from selenium.webdriver.common.by import By

    d = browser  # a selenium WebDriver
    import_id, sources = clinic.hold()
    sign_in_as(d, clinic.node, "cleo", clinic.node.add_user("cleo", "clerk"))
    d.find_element(By.LINK_TEXT, "Imports").click()  # type: ignore[attr-defined]
    until(lambda: text_of(d, "#held"), "the held imports on Imports")
    assert "DOE^JANE (EXT-1, 1970-01-01): several, 2 candidates" in text_of(d, "#held")
    d.find_element(By.CSS_SELECTOR, "#held td a").click()  # type: ignore[attr-defined]
    until(lambda: text_of(d, "table.candidates"), "the held import's candidates")
    header = text_of(d, "table.candidates tr:first-child")
    assert "On the medium" in header and "Candidate 1" in header and "Candidate 2" in header
    assert "Patient ID EXT-1 L" in text_of(d, "table.candidates")  # the medium's ID, then the candidates'
    d.execute_script("document.querySelector('p.waiting').scrollIntoView()")  # type: ignore[attr-defined]
    shot(d, "held")
    number = clinic.candidate(import_id, "L2")
    d.find_element(By.CSS_SELECTOR, f"button[name=candidate-{number}]").click()  # type: ignore[attr-defined]
    until(lambda: f"Import {import_id} resolved (candidate {number}): 2 sent, 0 failed." in text_of(d, ".flash"),
          "the resolution's outcome")
    got = received(clinic.storescp.folder)
    assert set(got) == sources
    assert {(dcmread(p).PatientID, dcmread(p).IssuerOfPatientID) for p in got.values()} == {("L2", "HOSP")}
    assert not d.find_elements(By.CSS_SELECTOR, "form.resolve")  # type: ignore[attr-defined]
