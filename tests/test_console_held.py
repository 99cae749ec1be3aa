"""Held imports at the console, against real peers: ``medianode serve`` with its console, DCMTK ``dcmqrscp``
as the archive (two local patients that both match the medium's), DCMTK ``storescp`` as the destination.

A medium imported with ``medianode import --config`` is held (two candidates); the console lists it, shows
its candidates beside the medium's values, and resolves it for a clerk (never a viewer, never without the
form's CSRF token) with each choice, through the pages and the JSON API. What arrives is read back from
storescp's folder; a choice that does not fit comes back with its reason, and nothing is sent or lost.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread

from node.errors import EXIT_HELD
from tests.conftest import StoreSCP, cli, need
from tests.console_kit import Client, ConsoleNode, with_index
from tests.test_console import flash
from tests.test_import import received
from tests.test_reconcile import Peer, archive, foreign_medium, local_patient  # noqa: F401  (archive: a fixture)


@dataclass
class Clinic:
    """A node with its console whose imports are reconciled against an archive, and the destination."""

    node: ConsoleNode
    storescp: StoreSCP
    tmp: Path

    def hold(self) -> tuple[int, set[str]]:
        """A medium of DOE^JANE (EXT-1 of OTHER HOSPITAL, two instances) imported and held: its import id and
        its SOP Instance UIDs."""
        root, sources = foreign_medium(self.tmp)
        result = cli("import", root, "--to", f"{self.storescp.aet}@127.0.0.1:{self.storescp.port}",
                     "--config", self.node.config, "--json")
        assert result.code == EXIT_HELD, result.out + result.err
        assert json.loads(result.out)["held"] == len(sources)
        import_id = max(int(str(r["id"])) for r in with_index(self.node.data, lambda index: index.held_imports()))
        return import_id, set(sources)

    def candidate(self, import_id: int, patient_id: str) -> int:
        """The number of the candidate with ``patient_id`` (the archive answers in its own order)."""
        manifest = json.loads((self.node.data / "held" / str(import_id) / "held.json").read_text())
        [patient] = manifest["reconciliation"]["patients"]
        return [c["patient_id"] for c in patient["candidates"]].index(patient_id) + 1

    def state(self, import_id: int) -> str:
        return str(with_index(self.node.data, lambda index: index.import_record(import_id))["state"])

    def resolutions(self) -> list[dict[str, object]]:
        path = self.node.data / "audit.jsonl"
        return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == "import-resolved"]

    def signed_in(self, name: str, role: str) -> Client:
        browser = self.node.client()
        browser.sign_in(name, self.node.add_user(name, role))
        return browser


@pytest.fixture
def clinic(tmp_path: Path, archive: Callable[..., Peer], storescp: StoreSCP) -> Iterator[Clinic]:  # noqa: F811
    need("echoscu", "storescu")
    qr = archive(local_patient(tmp_path / "a", "L1", "Doe^Jane")
                 + local_patient(tmp_path / "b", "L2", "DOE^JANE^^", IssuerOfPatientID="HOSP"))
    imports = (f"import:\n  destination: {{ae_title: {storescp.aet}, host: 127.0.0.1, port: {storescp.port}}}\n"
               f"  reconcile:\n    patients: {{ae_title: {qr.aet}, host: 127.0.0.1, port: {qr.port}}}\n")
    node = ConsoleNode(tmp_path, imports=imports)
    node.start()
    yield Clinic(node, storescp, tmp_path)
    if node.proc is not None and node.proc.poll() is None:
        node.stop(signal.SIGKILL)


def nothing_lost(clinic: Clinic, import_id: int, sources: set[str]) -> None:
    """Nothing sent, the import still held, its copy whole."""
    assert clinic.storescp.received() == []
    assert clinic.state(import_id) == "held"
    copies = [p for p in (clinic.node.data / "held" / str(import_id) / "files").rglob("*") if p.is_file()]
    assert {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in copies} == sources


def test_a_viewer_sees_a_held_import_and_its_candidates_but_no_choice_and_no_form_goes_without_its_token(
        clinic: Clinic) -> None:
    import_id, sources = clinic.hold()
    viewer = clinic.signed_in("vera", "viewer")
    listing = viewer.get("/imports")
    assert listing.status == 200 and '<table id="held">' in listing.body
    held_row = listing.body.split('<table id="held">')[1].split("</table>")[0]
    assert f'href="/imports/{import_id}"' in held_row and "2 local patients match" in held_row
    assert "DOE^JANE" in held_row and "2 candidates" in held_row
    page = viewer.get(f"/imports/{import_id}")
    assert page.status == 200 and 'class="candidates"' in page.body
    for value in ("DOE^JANE", "EXT-1", "OTHER HOSPITAL", "1970-01-01", "L1", "L2", "HOSP", "Doe^Jane", "DOE^JANE^^"):
        assert f">{value}<" in page.body, value
    assert 'class="resolve' not in page.body
    refused = viewer.post(f"/imports/{import_id}/resolve", {"choice": "as-is", "csrf": page.csrf})
    assert refused.status == 403 and "Your role (viewer) may not do this; it needs clerk" in refused.body

    clerk = clinic.signed_in("cleo", "clerk")
    page = clerk.get(f"/imports/{import_id}")
    assert page.body.count('<form class="resolve') == 5  # two candidates, a new ID, as it is, refuse
    for csrf in ({}, {"csrf": "0" * 64}, {"csrf": viewer.get("/imports").csrf}):
        assert clerk.post(f"/imports/{import_id}/resolve", {"choice": "as-is", **csrf}).status == 403

    token = clinic.node.token("vera")
    assert viewer.api("POST", f"/api/imports/{import_id}/resolve", token, b'{"choice": "as-is"}').status == 403
    [record] = [r for r in viewer.api("GET", "/api/imports", token).json() if r["id"] == import_id]  # type: ignore[attr-defined]
    assert record["state"] == "held" and "2 local patients match" in record["held_reason"]
    [held] = viewer.api("GET", "/api/imports?held=1", token).json()  # type: ignore[misc]
    assert held["id"] == import_id and held["patients"][0]["waiting"] is True
    assert sorted(c["patient_id"] for c in held["patients"][0]["candidates"]) == ["L1", "L2"]
    nothing_lost(clinic, import_id, sources)
    assert clinic.resolutions() == []


@pytest.mark.parametrize(("how", "expected"), [
    ("candidate", ("L2", "HOSP", "DOE^JANE^^")),
    ("patient-id", ("NEW-9", "NEW HOSP", "DOE^JANE")),
    ("as-is", ("EXT-1", "OTHER HOSPITAL", "DOE^JANE")),
    ("api", ("L1", "", "Doe^Jane")),
])
def test_each_choice_of_a_clerk_sends_the_held_import_with_that_identity(
        clinic: Clinic, how: str, expected: tuple[str, str, str]) -> None:
    import_id, sources = clinic.hold()
    clerk = clinic.signed_in("cleo", "clerk")
    page = clerk.get(f"/imports/{import_id}")
    if how == "api":
        number = clinic.candidate(import_id, "L1")
        body = json.dumps({"choice": "candidate", "candidate": number, "patient": "EXT-1"}).encode()
        answer = clerk.api("POST", f"/api/imports/{import_id}/resolve", clinic.node.token("cleo"), body)
        assert answer.status == 200, answer.body
        assert answer.json() == {"import": import_id, "choice": f"candidate {number}", "state": "done", "sent": 2,
                                 "failed": 0, "held": ""}
    else:
        form = {"choice": how, "csrf": page.csrf, "patient": "EXT-1"}
        if how == "candidate":
            form["candidate"] = str(clinic.candidate(import_id, "L2"))
        if how == "patient-id":
            form |= {"patient_id": "NEW-9", "issuer": "NEW HOSP"}
        answer = clerk.post(f"/imports/{import_id}/resolve", form)
        assert answer.status == 303 and answer.headers["location"] == f"/imports/{import_id}"
        shown = clerk.get(f"/imports/{import_id}")
        assert flash(shown.body).endswith("): 2 sent, 0 failed."), flash(shown.body)
        assert flash(shown.body).startswith(f"Import {import_id} resolved (")
        assert "<dt>State</dt><dd>done" in shown.body and 'class="resolve' not in shown.body
    got = received(clinic.storescp.folder)
    assert set(got) == sources
    for path in got.values():
        ds = dcmread(path)
        assert (ds.PatientID, ds.get("IssuerOfPatientID", ""), str(ds.PatientName)) == expected
        if how != "as-is":
            assert ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID == "EXT-1"
    assert clinic.state(import_id) == "done"
    assert not (clinic.node.data / "held" / str(import_id)).exists()
    [resolved] = clinic.resolutions()
    assert resolved["user"] == "cleo" and resolved["sent"] == 2 and resolved["import_id"] == import_id


@pytest.mark.parametrize(("form", "reason"), [
    ({"choice": "candidate", "candidate": "9"}, "candidate 9: this patient has 2 candidates (1 to 2)"),
    ({"choice": "candidate", "candidate": "two"}, "candidate 'two': the candidate's number (1, 2, ...)"),
    ({"choice": "patient-id", "patient_id": "A\\B"}, "Patient ID 'A\\\\B': a Long String (LO) of printable ASCII"),
    ({"choice": "patient-id", "patient_id": ""}, "Patient ID: empty"),
    ({"choice": "patient-id", "patient_id": "N1", "issuer": "É"}, "issuer 'É': a Long String (LO)"),
    ({"choice": "merge"}, "choice 'merge': one of candidate, patient-id, as-is, refuse"),
    ({"choice": "as-is", "patient": "EXT-2"}, "patient EXT-2: no patient of this import with that Patient ID waits"),
])
def test_a_choice_that_does_not_fit_comes_back_with_its_reason_and_changes_nothing(
        clinic: Clinic, form: dict[str, str], reason: str) -> None:
    import_id, sources = clinic.hold()
    clerk = clinic.signed_in("cleo", "clerk")
    page = clerk.get(f"/imports/{import_id}")
    answer = clerk.post(f"/imports/{import_id}/resolve", {**form, "csrf": page.csrf},
                        headers={"Referer": f"{clinic.node.url}/imports/{import_id}"})
    assert answer.status == 303 and answer.headers["location"] == f"/imports/{import_id}"
    assert reason in flash(clerk.get(f"/imports/{import_id}").body)
    api = clerk.api("POST", f"/api/imports/{import_id}/resolve", clinic.node.token("cleo"), json.dumps(form).encode())
    assert api.status == 400 and reason in api.json()["error"], api.body  # type: ignore[index]
    nothing_lost(clinic, import_id, sources)
    assert clinic.resolutions() == []


def test_refusing_a_held_import_sends_nothing_removes_its_copy_and_is_audited(clinic: Clinic) -> None:
    import_id, _ = clinic.hold()
    clerk = clinic.signed_in("cleo", "clerk")
    answer = clerk.post(f"/imports/{import_id}/resolve", {"choice": "refuse", "csrf": clerk.get("/imports").csrf})
    assert answer.status == 303
    shown = clerk.get(f"/imports/{import_id}")
    assert flash(shown.body) == f"Import {import_id} refused: nothing sent, its held copy removed."
    assert clinic.storescp.received() == [] and clinic.state(import_id) == "failed"
    assert not (clinic.node.data / "held" / str(import_id)).exists()
    [resolved] = clinic.resolutions()
    assert (resolved["choice"], resolved["user"], resolved["sent"]) == ("refuse", "cleo", 0)
    assert '<table id="held">' not in clerk.get("/imports").body
    again = clerk.api("POST", f"/api/imports/{import_id}/resolve", clinic.node.token("cleo"), b'{"choice": "as-is"}')
    assert again.status == 400 and again.json() == {"error": f"import {import_id} is not held (it is failed)"}
