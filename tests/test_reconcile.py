"""``import.reconcile`` against real DCMTK peers: ``wlmscpfs`` serving worklist files made by ``dump2dcm``,
``dcmqrscp`` as the archive (its index built by ``dcmqridx``), ``storescp`` as the destination.

What arrives is read back from storescp's folder: the local identity in place, the foreign one in Other
Patient IDs Sequence and in a new Original Attributes Sequence item, pixel data and UIDs untouched. A held
import sends nothing, keeps a copy under ``data_dir/held/``, exits 3, and is resolved from the command line.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.multival import MultiValue

from node import holds
from node.config import load_config
from node.errors import EXIT_DATA, EXIT_HELD, EXIT_OK, EXIT_USAGE
from node.index import Index
from node.intake import ImportRunner
from node.read.watcher import Ready
from tests.conftest import PEER_ENV, StoreSCP, cli, ct_series, free_port, need, pki, wait_listening  # noqa: F401 (pki: a fixture)
from tests.test_coerce import medium
from tests.test_import import received, uid_of

FOREIGN = {"patient_id": "EXT-1", "name": "DOE^JANE", "birth": "19700101", "IssuerOfPatientID": "OTHER HOSPITAL"}


@dataclass
class Peer:
    """A DCMTK SCP started by a test, stopped by its PID."""

    proc: subprocess.Popen[bytes]
    port: int
    aet: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _start(argv: Callable[[int], list[str]], what: str, aet: str, started: list[Peer]) -> Peer:
    for attempt in range(3):  # another process may take the free port first
        port = free_port()
        proc = subprocess.Popen(argv(port), env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peer = Peer(proc, port, aet)
        started.append(peer)
        try:
            wait_listening(proc, port, what)
        except AssertionError:
            if proc.poll() is None or attempt == 2:
                raise
            continue
        return peer
    raise AssertionError("unreachable")


def _dump_line(tag: str, vr: str, value: str, charset: str) -> bytes:
    return f"({tag}) {vr} [".encode() + value.encode(charset) + b"]\n"


@pytest.fixture
def worklist(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    """``worklist(item, ...)``: a wlmscpfs (AE WL) serving one file per item, each made by dump2dcm from
    ``{patient_id, issuer, name, birth, sex, accession, charset}``; scheduled today for MEDIANODE, OT."""
    need("wlmscpfs", "dump2dcm")
    started: list[Peer] = []

    def start(*items: dict[str, str]) -> Peer:
        folder = tmp_path / f"worklist-{len(started) + 1}"
        (folder / "WL").mkdir(parents=True)
        (folder / "WL" / "lockfile").touch()
        for n, item in enumerate(items, 1):
            term = item.get("charset", "ISO_IR 100")
            codec = {"ISO_IR 100": "latin-1", "ISO 2022 IR 87": "iso2022_jp"}[term]
            today = f"{date.today():%Y%m%d}"
            lines = [("0008,0005", "CS", ("\\" + term) if term.startswith("ISO 2022") else term),
                     ("0008,0050", "SH", item.get("accession", f"ACC{n}")), ("0010,0010", "PN", item["name"]),
                     ("0010,0020", "LO", item["patient_id"]), ("0010,0021", "LO", item.get("issuer", "HOSP")),
                     ("0010,0030", "DA", item.get("birth", "19700101")), ("0010,0040", "CS", item.get("sex", "F")),
                     ("0020,000d", "UI", f"1.2.826.0.1.3680043.9.7.{n}"), ("0032,1032", "PN", "SMITH"),
                     ("0032,1060", "LO", "Import of outside images")]
            step = [("0008,0060", "CS", "OT"), ("0040,0001", "AE", item.get("station", "MEDIANODE")),
                    ("0040,0002", "DA", today), ("0040,0003", "TM", "080000"), ("0040,0006", "PN", "IMPORT"),
                    ("0040,0007", "LO", "Import"), ("0040,0009", "SH", f"SPS{n}"), ("0040,0010", "SH", "STN"),
                    ("0040,0011", "SH", "LOC")]
            dump = b"".join(_dump_line(t, v, x, codec) for t, v, x in lines)
            dump += b"(0040,0100) SQ\n(fffe,e000) -\n" + b"".join(_dump_line(t, v, x, codec) for t, v, x in step)
            dump += b"(fffe,e00d) -\n(fffe,e0dd) -\n"
            dump += _dump_line("0040,1001", "SH", f"RP{n}", codec) + _dump_line("0040,1003", "SH", "LOW", codec)
            (folder / f"item{n}.dump").write_bytes(dump)
            subprocess.run(["dump2dcm", "-q", str(folder / f"item{n}.dump"), str(folder / "WL" / f"item{n}.wl")],
                           check=True, capture_output=True)
        return _start(lambda port: ["wlmscpfs", "-csk", "-dfp", str(folder), str(port)], "wlmscpfs", "WL", started)

    yield start
    for peer in started:
        peer.stop()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    """``archive(files)``: a dcmqrscp (AE ARCHIVE) whose index holds ``files`` (dcmqridx)."""
    need("dcmqrscp", "dcmqridx")
    started: list[Peer] = []

    def start(files: list[Path]) -> Peer:
        db = tmp_path / f"archive-{len(started) + 1}"
        db.mkdir()
        if files:
            subprocess.run(["dcmqridx", str(db), *map(str, files)], check=True, capture_output=True)

        def argv(port: int) -> list[str]:
            cfg = db / "dcmqrscp.cfg"
            cfg.write_text(f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
                           "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
                           f"AETable BEGIN\nARCHIVE {db} RW (200, 1024mb) ANY\nAETable END\n")
            return ["dcmqrscp", "-c", str(cfg), str(port)]

        return _start(argv, "dcmqrscp", "ARCHIVE", started)

    yield start
    for peer in started:
        peer.stop()


def local_patient(folder: Path, patient_id: str, name: str, birth: str = "19700101", **attrs: str) -> list[Path]:
    """One instance of a local patient, for the archive's index."""
    return ct_series(folder, 1, patient_id=patient_id, name=name, birth=birth, **attrs)


def config(tmp_path: Path, scp: StoreSCP, *, wl: Peer | None = None, qr: Peer | None = None, extra: str = "") -> Path:
    sources = ""
    if wl is not None:
        sources += f"    worklist: {{ae_title: {wl.aet}, host: 127.0.0.1, port: {wl.port}}}\n"
    if qr is not None:
        sources += f"    patients: {{ae_title: {qr.aet}, host: 127.0.0.1, port: {qr.port}}}\n"
    path = tmp_path / "node.yaml"
    path.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n"
                    f"import:\n  destination: {{ae_title: {scp.aet}, host: 127.0.0.1, port: {scp.port}}}\n"
                    f"  reconcile:\n{sources}{extra}")
    return path


def run_import(root: Path, cfg: Path, scp: StoreSCP) -> tuple[int, dict[str, object]]:
    result = cli("import", root, "--to", f"{scp.aet}@127.0.0.1:{scp.port}", "--config", cfg, "--json")
    assert result.out, result.err
    return result.code, json.loads(result.out)


def foreign_medium(tmp_path: Path, n: int = 2, **attrs: str) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "medium"
    values = {**FOREIGN, **attrs}
    sources = ct_series(tmp_path / "foreign", n, patient_id=values.pop("patient_id"), name=values.pop("name"),
                        birth=values.pop("birth"), **values)
    return root, medium(root, sources)


def audit_events(tmp_path: Path, event: str) -> list[dict[str, object]]:
    lines = (tmp_path / "var" / "audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


# -- one match -----------------------------------------------------------------------------------


def test_a_worklist_item_gives_the_local_identity_and_the_foreign_one_is_kept(
        tmp_path: Path, worklist: Callable[..., Peer], storescp: StoreSCP) -> None:
    """DOE^JANE on the medium, Doe^Jane^^ in the worklist: one match; the instances arrive with the item's
    Patient ID, issuer, accession and spelling, the foreign ID in Other Patient IDs and the Original
    Attributes Sequence, the UIDs and pixel data as they were."""
    wl = worklist({"patient_id": "LOC-7", "issuer": "HOSP", "name": "Doe^Jane^^", "accession": "ACC42"},
                  {"patient_id": "LOC-8", "name": "DOE^JOHN"}, {"patient_id": "LOC-9", "name": "Doe^Jane", "birth": "19800101"})
    root, sources = foreign_medium(tmp_path)
    code, report = run_import(root, config(tmp_path, storescp, wl=wl), storescp)
    assert code == EXIT_OK, report
    assert (report["sent"], report["held"]) == (2, 0)
    [patient] = report["reconciliation"]["patients"]  # type: ignore[index]
    assert patient["outcome"] == "matched" and patient["chosen"]["patient_id"] == "LOC-7"
    got = received(storescp.folder)
    assert set(got) == set(sources)
    for uid, path in got.items():
        ds, before = dcmread(path), dcmread(sources[uid])
        assert (ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber) == ("LOC-7", "HOSP", "ACC42")
        assert str(ds.PatientName) == "Doe^Jane^^"
        other = ds.OtherPatientIDsSequence[-1]
        assert (other.PatientID, other.IssuerOfPatientID) == ("EXT-1", "OTHER HOSPITAL")
        record = ds.OriginalAttributesSequence[-1]
        assert (record.ReasonForTheAttributeModification, record.ModifyingSystem) == ("COERCE", "MEDIANODE")
        assert record.SourceOfPreviousValues == "medium"
        old = record.ModifiedAttributesSequence[0]
        assert (old.PatientID, old.IssuerOfPatientID, old.AccessionNumber, str(old.PatientName)) == (
            "EXT-1", "OTHER HOSPITAL", "A1", "DOE^JANE")
        assert ds.RequestAttributesSequence[-1].RequestedProcedureID == "RP1"
        assert ds.RequestAttributesSequence[-1].AccessionNumber == "ACC42"
        assert (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID) == (
            before.SOPInstanceUID, before.StudyInstanceUID, before.SeriesInstanceUID)
        assert ds.PixelData == before.PixelData
    queries = audit_events(tmp_path, "query")
    assert queries and queries[0]["model"] == "MWL" and queries[0]["keys"] == {"PatientBirthDate": "19700101"}


def test_the_archive_gives_the_identity_when_the_worklist_has_none(
        tmp_path: Path, worklist: Callable[..., Peer], archive: Callable[..., Peer], storescp: StoreSCP) -> None:
    wl = worklist({"patient_id": "LOC-8", "name": "DOE^JOHN"})
    qr = archive(local_patient(tmp_path / "local", "L1", "Doe^Jane", IssuerOfPatientID="HOSP")
                 + local_patient(tmp_path / "local2", "L2", "Roe^Jane"))
    root, sources = foreign_medium(tmp_path)
    code, report = run_import(root, config(tmp_path, storescp, wl=wl, qr=qr), storescp)
    assert code == EXIT_OK, report
    for path in received(storescp.folder).values():
        ds = dcmread(path)
        assert (ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber) == ("L1", "HOSP", "A1")  # no request
        assert "RequestAttributesSequence" not in ds
    models = [q["model"] for q in audit_events(tmp_path, "query")]
    assert models[:2] == ["MWL", "Study Root"]


def test_a_study_the_archive_holds_is_reported_and_skipped_when_asked(
        tmp_path: Path, archive: Callable[..., Peer], storescp: StoreSCP) -> None:
    old = ct_series(tmp_path / "old", 1, patient_id="EXT-1", name="DOE^JANE", IssuerOfPatientID="OTHER HOSPITAL")
    new = ct_series(tmp_path / "new", 1, patient_id="EXT-1", name="DOE^JANE", IssuerOfPatientID="OTHER HOSPITAL")
    study = str(dcmread(old[0]).StudyInstanceUID)  # imported before, and reconciled then: the archive's is L1's
    qr = archive(ct_series(tmp_path / "archived", 1, patient_id="L1", name="Doe^Jane", study_uid=study))
    root = tmp_path / "medium"
    sources = medium(root, old, new)
    cfg = config(tmp_path, storescp, qr=qr, extra="    on_existing: skip\n")
    code, report = run_import(root, cfg, storescp)
    assert report["reconciliation"]["existing"] == [study]  # type: ignore[index]
    assert code == EXIT_OK and (report["sent"], report["skipped"]) == (1, 1), report
    assert set(received(storescp.folder)) == {uid_of(new[0])}
    assert len(sources) == 2


# -- held ----------------------------------------------------------------------------------------


def test_two_local_patients_of_the_same_name_and_birth_date_hold_the_import(
        tmp_path: Path, archive: Callable[..., Peer], storescp: StoreSCP) -> None:
    qr = archive(local_patient(tmp_path / "a", "L1", "Doe^Jane") + local_patient(tmp_path / "b", "L2", "DOE^JANE^^"))
    root, sources = foreign_medium(tmp_path)
    cfg = config(tmp_path, storescp, qr=qr)
    code, report = run_import(root, cfg, storescp)
    assert code == EXIT_HELD and (report["sent"], report["held"]) == (0, 2), report
    assert storescp.received() == []
    listing = cli("imports", "--held", "--json", "--config", cfg)
    [held] = json.loads(listing.out)
    [patient] = held["patients"]
    assert patient["outcome"] == "several"
    assert sorted(c["patient_id"] for c in patient["candidates"]) == ["L1", "L2"]
    copies = sorted(p for p in (tmp_path / "var" / "held" / str(held["id"]) / "files").rglob("*") if p.is_file())
    assert {uid_of(p) for p in copies} == set(sources)
    text = cli("imports", "--held", "--config", cfg).out
    assert "candidate 1 (patients): L1" in text and "candidate 2 (patients): L2" in text
    # resolved with the second candidate: sent, then the held copy removed
    chosen = [c["patient_id"] for c in patient["candidates"]].index("L2") + 1
    done = cli("imports", "resolve", held["id"], "--candidate", chosen, "--config", cfg)
    assert done.code == EXIT_OK, done.out + done.err
    assert {dcmread(p).PatientID for p in received(storescp.folder).values()} == {"L2"}
    assert not (tmp_path / "var" / "held" / str(held["id"])).exists()
    [resolved] = audit_events(tmp_path, "import-resolved")
    assert resolved["choice"] == f"candidate {chosen}" and resolved["user"] and resolved["sent"] == 2


def test_no_local_patient_holds_the_import_and_a_new_id_resolves_it(
        tmp_path: Path, archive: Callable[..., Peer], storescp: StoreSCP) -> None:
    qr = archive(local_patient(tmp_path / "a", "L1", "Roe^Richard"))
    root, sources = foreign_medium(tmp_path)
    cfg = config(tmp_path, storescp, qr=qr)
    code, report = run_import(root, cfg, storescp)
    assert code == EXIT_HELD, report
    assert "no local patient matches" in report["reconciliation"]["held"]  # type: ignore[index]
    import_id = json.loads(cli("imports", "--held", "--json", "--config", cfg).out)[0]["id"]
    bad = cli("imports", "resolve", import_id, "--candidate", "1", "--config", cfg)
    assert bad.code == EXIT_USAGE and "no candidate" in bad.err
    bad = cli("imports", "resolve", import_id, "--patient-id", "A\\B", "--config", cfg)
    assert bad.code == EXIT_USAGE and "backslash" in bad.err
    assert storescp.received() == [] and (tmp_path / "var" / "held" / str(import_id) / "held.json").exists()
    done = cli("imports", "resolve", import_id, "--patient-id", "NEW-9", "--issuer", "HOSP", "--json", "--config", cfg)
    assert done.code == EXIT_OK, done.err
    for path in received(storescp.folder).values():
        ds = dcmread(path)
        assert (ds.PatientID, ds.IssuerOfPatientID, str(ds.PatientName)) == ("NEW-9", "HOSP", "DOE^JANE")
        assert ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientID == "EXT-1"
        assert ds.OriginalAttributesSequence[-1].SourceOfPreviousValues == "medium"  # the medium's, not the copy's
    assert set(received(storescp.folder)) == set(sources)
    again = cli("imports", "resolve", import_id, "--as-is", "--config", cfg)
    assert again.code == EXIT_USAGE and "is not held" in again.err
    with closing(Index(tmp_path / "var" / "index.sqlite")) as index:
        assert index.import_record(import_id)["state"] == "done"  # type: ignore[index]


def test_a_worklist_that_is_down_holds_the_import_with_the_reason(
        tmp_path: Path, worklist: Callable[..., Peer], storescp: StoreSCP) -> None:
    wl = worklist({"patient_id": "LOC-7", "name": "Doe^Jane"})
    cfg = config(tmp_path, storescp, wl=wl)
    wl.stop()
    root, sources = foreign_medium(tmp_path)
    code, report = run_import(root, cfg, storescp)
    assert code == EXIT_HELD, report
    assert "worklist: cannot connect to WL@127.0.0.1" in report["reconciliation"]["held"]  # type: ignore[index]
    assert storescp.received() == []
    [failed] = [q for q in audit_events(tmp_path, "query") if not q["ok"]]
    assert failed["where"] == f"WL@127.0.0.1:{wl.port}"
    held = tmp_path / "var" / "held"
    assert {uid_of(p) for p in held.rglob("*") if p.is_file() and p.name != "held.json"} == set(sources)


class OneAssociation:
    """A relay in front of a real SCP that passes one connection through, then stops listening: the SCP
    as seen by a node whose peer went away between two queries of one import."""

    def __init__(self, peer: Peer) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._relay, args=(peer.port,), daemon=True)
        self.thread.start()

    def _relay(self, target: int) -> None:
        client, _ = self.listener.accept()
        self.listener.close()  # the next association finds nobody
        with client, socket.create_connection(("127.0.0.1", target)) as upstream:
            def pump(a: socket.socket, b: socket.socket) -> None:
                with suppress(OSError):
                    while chunk := a.recv(65536):
                        b.sendall(chunk)
                with suppress(OSError):
                    b.shutdown(socket.SHUT_WR)
            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            pump(client, upstream)
            back.join(30)


def test_a_worklist_that_stops_between_two_patients_holds_the_whole_import(
        tmp_path: Path, worklist: Callable[..., Peer], storescp: StoreSCP) -> None:
    """Two patients on the medium, one C-FIND each: the worklist answers the first and is gone for the
    second. Nothing is sent unreconciled, not even the patient that matched; the import is held with the
    reason, every instance kept."""
    wl = worklist({"patient_id": "LOC-7", "name": "Doe^Jane"}, {"patient_id": "LOC-8", "name": "Roe^Rita",
                                                                "birth": "19800202"})
    relay = OneAssociation(wl)
    cfg = config(tmp_path, storescp, wl=Peer(wl.proc, relay.port, wl.aet))
    jane = ct_series(tmp_path / "jane", 2, patient_id="EXT-1", name="DOE^JANE", birth="19700101")
    rita = ct_series(tmp_path / "rita", 2, patient_id="EXT-2", name="ROE^RITA", birth="19800202")
    sources = medium(tmp_path / "medium", jane, rita)
    code, report = run_import(tmp_path / "medium", cfg, storescp)
    assert code == EXIT_HELD, report
    assert f"worklist: cannot connect to WL@127.0.0.1:{relay.port}" in report["reconciliation"]["held"]  # type: ignore[index]
    assert storescp.received() == []
    queries = audit_events(tmp_path, "query")
    assert [q["ok"] for q in queries] == [True, False], queries
    held = tmp_path / "var" / "held"
    assert {uid_of(p) for p in held.rglob("*") if p.is_file() and p.name != "held.json"} == set(sources)


@pytest.fixture
def tls_in_front(tmp_path: Path, pki: Path) -> Iterator[Callable[[Peer], Peer]]:
    """``tls_in_front(peer)``: Debian's stunnel terminating TLS (the ``server`` certificate of ``pki``) in
    front of a real SCP that has no TLS of its own (DCMTK's wlmscpfs and dcmqrscp have none)."""
    need("stunnel")
    started: list[Peer] = []

    def start(peer: Peer) -> Peer:
        def argv(port: int) -> list[str]:
            conf = tmp_path / f"stunnel-{port}.conf"
            conf.write_text(f"foreground = yes\npid =\n[dicom]\naccept = 127.0.0.1:{port}\n"
                            f"connect = 127.0.0.1:{peer.port}\ncert = {pki / 'server.pem'}\nkey = {pki / 'server.key'}\n")
            return ["stunnel", str(conf)]
        return _start(argv, "stunnel", peer.aet, started)

    yield start
    for peer in started:
        peer.stop()


@pytest.mark.parametrize("ca", ["ca", "other"])
def test_the_worklist_is_asked_over_tls_and_a_wrong_ca_holds_the_import(
        tmp_path: Path, worklist: Callable[..., Peer], tls_in_front: Callable[[Peer], Peer], pki: Path,
        storescp: StoreSCP, ca: str) -> None:
    wl = tls_in_front(worklist({"patient_id": "LOC-7", "name": "Doe^Jane"}))
    path = tmp_path / "node.yaml"
    path.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n"
                    f"import:\n  destination: {{ae_title: {storescp.aet}, host: 127.0.0.1, port: {storescp.port}}}\n"
                    f"  reconcile:\n    worklist: {{ae_title: WL, host: 127.0.0.1, port: {wl.port}, "
                    f"tls: {{ca: {pki / (ca + '.pem')}}}}}\n")
    root, sources = foreign_medium(tmp_path)
    code, report = run_import(root, path, storescp)
    if ca == "ca":
        assert code == EXIT_OK, report
        assert {dcmread(p).PatientID for p in storescp.received()} == {"LOC-7"}
        return
    assert code == EXIT_HELD, report
    assert "certificate verify failed" in report["reconciliation"]["held"], report  # type: ignore[index]
    assert storescp.received() == []
    held = tmp_path / "var" / "held"
    assert {uid_of(p) for p in held.rglob("*") if p.is_file() and p.name != "held.json"} == set(sources)


def test_on_no_match_refuse_sends_nothing_and_exits_1(
        tmp_path: Path, archive: Callable[..., Peer], storescp: StoreSCP) -> None:
    qr = archive([])
    root, _ = foreign_medium(tmp_path, 1)
    code, report = run_import(root, config(tmp_path, storescp, qr=qr, extra="    on_no_match: refuse\n"), storescp)
    assert code == EXIT_DATA and report["failed"] == 1 and report["held"] == 0
    assert storescp.received() == [] and not (tmp_path / "var" / "held").exists()


def test_a_held_copy_is_purged_after_held_days_and_audited(
        tmp_path: Path, archive: Callable[..., Peer], storescp: StoreSCP) -> None:
    qr = archive([])
    root, _ = foreign_medium(tmp_path, 1)
    cfg = config(tmp_path, storescp, qr=qr, extra="    held_days: 2\n")
    assert run_import(root, cfg, storescp)[0] == EXIT_HELD
    node = load_config(cfg)
    with closing(Index(tmp_path / "var" / "index.sqlite")) as index:
        assert holds.purge(index, node, now=time.time() + 86400) == 0
        assert holds.purge(index, node, now=time.time() + 3 * 86400) == 1
        assert index.held_imports() == []
    assert list((tmp_path / "var" / "held").iterdir()) == []
    [purged] = audit_events(tmp_path, "held-purged")
    assert purged["days"] == 2


# -- character sets ------------------------------------------------------------------------------


@pytest.mark.parametrize(("on_medium", "charset", "in_worklist", "wl_charset", "stored_charset"), [
    ("Müller^Jürgen", "ISO_IR 100", "MULLER^JURGEN", "ISO_IR 100", "ISO_IR 100"),
    ("Yamada^Tarou=山田^太郎", "\\ISO 2022 IR 87", "YAMADA^TAROU=山田^太郎", "ISO 2022 IR 87", "\\ISO 2022 IR 87"),
    ("=山田^太郎", "\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎", "ISO 2022 IR 87", "\\ISO 2022 IR 87"),
    ("Yamada^Tarou", "", "Yamada^Tarou=山田^太郎", "ISO 2022 IR 87", "ISO_IR 192"),
])
def test_names_in_other_character_sets_are_matched_and_written_in_a_set_that_holds_them(
        tmp_path: Path, worklist: Callable[..., Peer], storescp: StoreSCP, on_medium: str, charset: str,
        in_worklist: str, wl_charset: str, stored_charset: str) -> None:
    wl = worklist({"patient_id": "LOC-7", "name": in_worklist, "charset": wl_charset},
                  {"patient_id": "LOC-8", "name": "Other^Name"})
    attrs = {"SpecificCharacterSet": charset} if charset else {}
    root, _ = foreign_medium(tmp_path, 1, name=on_medium, **attrs)
    code, report = run_import(root, config(tmp_path, storescp, wl=wl), storescp)
    assert code == EXIT_OK, report
    [path] = received(storescp.folder).values()
    ds = dcmread(path)
    assert ds.PatientID == "LOC-7" and str(ds.PatientName) == in_worklist
    value = ds.SpecificCharacterSet
    assert ("\\".join(value) if isinstance(value, MultiValue) else value) == stored_charset
    assert str(ds.OriginalAttributesSequence[-1].ModifiedAttributesSequence[0].PatientName) == on_medium


# -- configuration -------------------------------------------------------------------------------


def test_reconcile_with_coerce_is_a_configuration_error(tmp_path: Path, storescp: StoreSCP) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("import:\n  coerce: {issuer_of_patient_id: HOSP}\n  reconcile:\n"
                   "    patients: {ae_title: ARCHIVE, host: 127.0.0.1, port: 104}\n")
    root, _ = foreign_medium(tmp_path, 1)
    result = cli("import", root, "--to", f"STORESCP@127.0.0.1:{storescp.port}", "--config", cfg)
    assert result.code == EXIT_USAGE
    assert f"{cfg}:4 import.reconcile: cannot be used with import.coerce" in result.err
    assert storescp.received() == []


# -- serve's watcher -----------------------------------------------------------------------------


def test_serve_holds_an_inbox_disc_copies_it_and_files_it_into_held(
        tmp_path: Path, archive: Callable[..., Peer], storescp: StoreSCP) -> None:
    """The watcher's import of an ISO: held (the instances copied out of the image before the item is filed
    into inbox/held/), recorded as held in the index, then sent as it is by a person's choice."""
    qr = archive([])
    series = ct_series(tmp_path / "src", 2, patient_id="EXT-1")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    assert cli("burn", tmp_path / "src", "--out", inbox / "disc.iso", "--label", "OUTSIDE1").code == 0
    cfg = tmp_path / "node.yaml"
    cfg.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\nimport:\n  inbox: {inbox}\n"
                   f"  destination: {{ae_title: {storescp.aet}, host: 127.0.0.1, port: {storescp.port}}}\n"
                   f"  reconcile:\n    patients: {{ae_title: ARCHIVE, host: 127.0.0.1, port: {qr.port}}}\n")
    node = load_config(cfg)
    node.node.data_dir.mkdir()
    with closing(Index(node.node.data_dir / "index.sqlite")) as index:
        ImportRunner(index, lambda: node, stop=threading.Event()).handle(Ready("inbox", inbox / "disc.iso"))
        [record] = index.imports()
    assert record["state"] == "held" and "no local patient matches" in str(record["held_reason"])
    assert storescp.received() == []
    assert (inbox / "held" / "disc.iso").is_file() and not (inbox / "disc.iso").exists()
    copies = [p for p in (tmp_path / "var" / "held" / str(record["id"]) / "files").rglob("*") if p.is_file()]
    assert {uid_of(p) for p in copies} == {uid_of(p) for p in series}
    [event] = audit_events(tmp_path, "import-held")
    assert event["import_id"] == record["id"]
    done = cli("imports", "resolve", record["id"], "--as-is", "--config", cfg)
    assert done.code == EXIT_OK, done.err
    assert {dcmread(p).PatientID for p in received(storescp.folder).values()} == {"EXT-1"}
    assert "OriginalAttributesSequence" not in dcmread(next(iter(received(storescp.folder).values())))
