"""The Storage SCP against real peers on 127.0.0.1: DCMTK echoscu / storescu (TCP_NODELAY=1),
DCMTK storescp as the byte-exact witness, and pynetdicom where only it can provoke the case.

Every refusal is checked at the client (its DIMSE status or the association rejection) and
by what the node kept: no spool file, no index row, no temp file.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import signal
import sqlite3
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, _config

from node import dicom, routing, syntaxes
from node.config import TLS, Config, Match, NodeConfig, Route
from node.dcmio import file_meta, read_meta
from node.index import Index
from node.receive import scp
from node.receive.instance import index_orphans, read_instance, routes_digest
from node.receive.spool import Spool, SpoolError
from node.receive.workers import Receiver, ReceiverError, listen, start_receivers, stop_receivers
from tests.conftest import PEER_ENV, StoreSCP, bundled, ct_series, need, pki, until  # noqa: F401 (pki: a fixture)

BURN = Route(Match(called_aet=("BURN",)), "burn", profile="STD-GEN-CD", where="test.yaml:3")
REJECT = Route(Match(calling_aet=("BADMOD",)), "reject", where="test.yaml:5")

#: pydicom's files in the syntaxes we accept, and the storescu flag that proposes each one.
BUNDLED = {
    "CT_small.dcm": "-xe",  # Explicit VR Little Endian
    "MR_small_implicit.dcm": "-xi",  # Implicit VR Little Endian
    "JPEG2000.dcm": "-xw",  # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",  # JPEG baseline
    "JPEG-lossy.dcm": "-xx",  # JPEG extended (12 bit)
    "SC_rgb_rle.dcm": "-xr",  # RLE
    "test-SR.dcm": "-xe",  # Comprehensive SR
    "image_dfl.dcm": "-xd",  # Deflated
}


@dataclass
class Node:
    """Receivers serving ``config`` on ``port``."""

    port: int
    config: Config
    receivers: list[Receiver]

    @property
    def data_dir(self) -> Path:
        return self.config.node.data_dir

    def rows(self) -> list[sqlite3.Row]:
        db = sqlite3.connect(self.data_dir / "index.sqlite")
        db.row_factory = sqlite3.Row
        try:
            return db.execute("SELECT * FROM instances ORDER BY sop_instance_uid").fetchall()
        finally:
            db.close()

    def released(self) -> list[str]:
        with sqlite3.connect(self.data_dir / "index.sqlite") as db:
            return [p for (p,) in db.execute("SELECT path FROM released_files")]

    def spooled(self) -> list[Path]:
        return sorted(p for p in (self.data_dir / "spool").rglob("*") if p.is_file())

    def temp_files(self) -> list[Path]:
        return sorted((self.data_dir / "tmp").iterdir())

    def audit(self) -> list[dict[str, str]]:
        path = self.data_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def assert_nothing_kept(self) -> None:
        assert (self.spooled(), self.rows(), self.temp_files()) == ([], [], [])


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start receivers on a port bound here (port 0, so no race); stop them by PID afterwards."""
    need("echoscu", "storescu", "storescp")
    started: list[Node] = []

    def start(*, routes: tuple[Route, ...] = (BURN, REJECT), workers: int = 2, source: Path | None = None,
              **node: object) -> Node:
        listener = listen("127.0.0.1", 0)
        port = listener.getsockname()[1]
        settings: dict[str, object] = {"host": "127.0.0.1", "port": port, "data_dir": tmp_path / "data",
                                       "workers": workers, "min_free_mb": 1, **node}
        config = Config(node=NodeConfig(**settings), routes=routes, source=source)  # type: ignore[arg-type]
        started.append(Node(port, config, start_receivers(config, listener=listener)))
        return started[-1]

    yield start
    for node in started:
        for receiver in node.receivers:
            if receiver.process.is_alive():
                os.kill(receiver.pid, signal.SIGTERM)
        for receiver in node.receivers:
            receiver.process.join(60)
            assert receiver.process.exitcode == 0, f"receiver {receiver.pid} exited with {receiver.process.exitcode}"
        stop_receivers(node.receivers)  # all exited: closes their pipes and the listener kept to restart one


def echoscu(port: int, *, aec: str = "MEDIANODE", aet: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-aet", aet, "-aec", aec, "127.0.0.1", str(port)],
                          env=PEER_ENV, capture_output=True, text=True, timeout=60, check=False)


def storescu(port: int, *files: str | Path, aec: str = "MEDIANODE", aet: str = "STORESCU",
             flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """DCMTK storescu with ``-d``, which prints each response's DIMSE status."""
    return subprocess.run(["storescu", "-d", *flags, "-aet", aet, "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
                          env=PEER_ENV, capture_output=True, text=True, timeout=300, check=False)


def statuses(result: subprocess.CompletedProcess[str]) -> list[int]:
    return [int(s, 16) for s in re.findall(r"DIMSE Status\s*: 0x([0-9a-fA-F]{4})", result.stdout + result.stderr)]


def dataset_bytes(path: str | Path) -> bytes:
    """The data set of a DICOM file, after its File Meta Information."""
    _, offset, _ = read_meta(str(path))
    return Path(path).read_bytes()[offset:]


# -- Association ---------------------------------------------------------------------------


def test_echo_answers_on_our_title_and_each_route_title(start_node: Callable[..., Node]) -> None:
    node = start_node()
    for aec in ("MEDIANODE", "BURN"):
        assert echoscu(node.port, aec=aec).returncode == 0


def test_unknown_called_ae_title_is_rejected_and_audited(start_node: Callable[..., Node]) -> None:
    node = start_node()
    result = storescu(node.port, bundled("CT_small.dcm"), aec="ELSEWHERE")
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.stderr + result.stdout
    node.assert_nothing_kept()
    (entry,) = node.audit()
    assert entry["event"] == "association-refused"
    assert (entry["calling_aet"], entry["called_aet"], entry["reason"]) == (
        "STORESCU", "ELSEWHERE", "called AE title not recognised")
    assert entry["peer"].startswith("127.0.0.1:") and entry["time"]


def test_unknown_calling_ae_title_is_rejected(start_node: Callable[..., Node]) -> None:
    node = start_node(allowed_calling_aets=("CT1", "STORESCU"))
    result = storescu(node.port, bundled("CT_small.dcm"), aet="INTRUDER")
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stderr + result.stdout
    node.assert_nothing_kept()
    assert [e["reason"] for e in node.audit()] == ["calling AE title not recognised"]
    assert echoscu(node.port, aet="CT1").returncode == 0


# -- Storing -------------------------------------------------------------------------------


def test_bundled_files_are_stored_as_sent_and_indexed(start_node: Callable[..., Node],
                                                      storescp_with: Callable[..., StoreSCP]) -> None:
    """Each file arrives in its own syntax, byte for byte what DCMTK storescp (+B) receives too."""
    node = start_node()
    witness = storescp_with("+B", "+xa")
    for name, flag in BUNDLED.items():
        for port_, aec in ((node.port, "BURN"), (witness.port, witness.aet)):
            result = storescu(port_, bundled(name), aec=aec, flags=(flag,))
            assert statuses(result) == [dicom.SUCCESS], (name, result.stdout[-2000:])

    rows = {r["sop_instance_uid"]: r for r in node.rows()}
    assert len(rows) == len(BUNDLED) == len(node.spooled())
    received = {dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in witness.received()}
    for name in BUNDLED:
        source = dcmread(bundled(name))
        row = rows[source.SOPInstanceUID]
        stored = Path(row["path"])
        assert stored.parent == node.data_dir / "spool" / source.StudyInstanceUID
        assert re.fullmatch(re.escape(source.SOPInstanceUID) + r"\.[0-9a-f]{8}\.dcm", stored.name)
        assert dataset_bytes(stored) == dataset_bytes(received[source.SOPInstanceUID]), name
        assert row["size"] == stored.stat().st_size
        assert row["transfer_syntax"] == source.file_meta.TransferSyntaxUID, name
        copy = dcmread(stored)
        assert copy.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        if "PixelData" in source:  # compressed streams are kept as they came: no decoding needed
            assert copy.PixelData == source.PixelData, name
        assert (row["sop_class_uid"], row["study_uid"], row["series_uid"], row["modality"], row["patient_id"]) == (
            source.SOPClassUID, source.StudyInstanceUID, source.SeriesInstanceUID, source.Modality, source.PatientID)
        assert row["patient_name"] == str(source.PatientName)
        assert (row["calling_aet"], row["called_aet"]) == ("STORESCU", "BURN")
        assert routing.snapshots(row["route"]) == [routing.RouteSnapshot.of(BURN, 0)]
    assert node.temp_files() == []


def test_no_route_means_store_only(start_node: Callable[..., Node]) -> None:
    node = start_node()
    assert statuses(storescu(node.port, bundled("CT_small.dcm"))) == [dicom.SUCCESS]
    (row,) = node.rows()
    assert row["route"] == routing.STORE_ONLY and row["called_aet"] == "MEDIANODE"


def test_four_concurrent_associations(start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node()
    series = [ct_series(tmp_path / f"ct{n}", 12, patient_id=f"P{n}") for n in range(4)]
    senders = [subprocess.Popen(["storescu", "-aec", "BURN", "127.0.0.1", str(node.port), *map(str, files)],
                                env=PEER_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for files in series]
    for sender in senders:
        output, _ = sender.communicate(timeout=300)
        assert sender.returncode == 0, output
    rows = node.rows()
    assert len(rows) == 48 == len(node.spooled())
    assert {r["patient_id"] for r in rows} == {"P0", "P1", "P2", "P3"}
    for files in series:
        for path in files:
            uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
            (row,) = [r for r in rows if r["sop_instance_uid"] == uid]
            assert dataset_bytes(row["path"]) == dataset_bytes(path)  # DCMTK re-encodes nothing here


def test_the_same_instance_again_changes_nothing(start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node()
    assert statuses(storescu(node.port, bundled("CT_small.dcm"), aec="BURN")) == [dicom.SUCCESS]
    (first,) = node.rows()
    with sqlite3.connect(node.data_dir / "index.sqlite") as db:
        db.execute("UPDATE studies SET pending = 0")  # as if its job had been cut
    # Another sender, another File Meta, the same data set: acknowledged, and not news.
    assert statuses(storescu(node.port, bundled("CT_small.dcm"), aec="BURN", aet="PACS")) == [dicom.SUCCESS]
    # receiving hashed nothing; the copy sent again had its data set compared with the first's, now recorded
    digest = hashlib.sha256(dataset_bytes(first["path"])).hexdigest()
    assert first["digest"] == "" and [dict(r) for r in node.rows()] == [{**dict(first), "digest": digest}]
    assert [str(p) for p in node.spooled()] == [first["path"]]
    assert node.temp_files() == [] and node.released() == []
    with sqlite3.connect(node.data_dir / "index.sqlite") as db:
        assert db.execute("SELECT pending FROM studies").fetchall() == [(0,)]


def test_a_changed_instance_under_a_known_uid_gets_a_new_file_and_releases_the_old(
        start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node()
    assert statuses(storescu(node.port, bundled("CT_small.dcm"), aec="BURN")) == [dicom.SUCCESS]
    (first,) = node.rows()
    changed = dcmread(bundled("CT_small.dcm"))
    changed.ImageComments = "corrected"
    changed.save_as(tmp_path / "changed.dcm")
    assert statuses(storescu(node.port, tmp_path / "changed.dcm", aec="BURN")) == [dicom.SUCCESS]
    (second,) = node.rows()
    stored_digest = hashlib.sha256(dataset_bytes(second["path"])).hexdigest()
    assert second["path"] != first["path"] and second["digest"] == stored_digest  # hashed: its UID came again
    assert [str(p) for p in node.spooled()] == sorted([first["path"], second["path"]])  # never overwritten
    assert node.released() == [first["path"]]


# -- Refusals ------------------------------------------------------------------------------


def test_missing_study_uid_is_refused(start_node: Callable[..., Node], tmp_path: Path) -> None:
    (path,) = ct_series(tmp_path / "ct", 1)
    ds = dcmread(path)
    del ds.StudyInstanceUID
    ds.save_as(path)
    node = start_node()
    assert statuses(storescu(node.port, path, aec="BURN")) == [dicom.MISSING_UID]
    node.assert_nothing_kept()


def test_reject_route_refuses_with_not_authorized(start_node: Callable[..., Node]) -> None:
    node = start_node()
    assert statuses(storescu(node.port, bundled("CT_small.dcm"), aet="BADMOD")) == [dicom.REFUSED_NOT_AUTHORIZED]
    node.assert_nothing_kept()


def test_disk_floor_refuses_with_out_of_resources(start_node: Callable[..., Node]) -> None:
    node = start_node(min_free_mb=2**40)  # a floor no disk reaches
    assert statuses(storescu(node.port, bundled("CT_small.dcm"))) == [dicom.OUT_OF_RESOURCES]
    node.assert_nothing_kept()


@pytest.fixture
def chunked_sends() -> Iterator[None]:
    """pynetdicom sends a file's bytes as they are, trusting its File Meta (so it can lie)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = old


def pynetdicom_store(port: int, path: Path, sop_class: str, syntax: str = ExplicitVRLittleEndian) -> int:
    """C-STORE a file's data set as it is (with chunked sends pynetdicom trusts its File Meta), in ``syntax``."""
    ae = AE("PYNETDICOM")
    ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDIANODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def lying_file(folder: Path, *, media_class: str, body: bytes | None = None) -> Path:
    """A CT image whose File Meta claims ``media_class``, or whose data set is ``body``."""
    (path,) = ct_series(folder, 1)
    uid = dcmread(path, stop_before_pixels=True).SOPInstanceUID
    path.write_bytes(file_meta(media_class, uid, ExplicitVRLittleEndian) + (body or dataset_bytes(path)))
    return path


def test_sop_class_mismatch_is_refused(start_node: Callable[..., Node], tmp_path: Path, chunked_sends: None) -> None:
    node = start_node()
    path = lying_file(tmp_path / "ct", media_class=MRImageStorage)  # the C-STORE says MR, the data set CT
    assert pynetdicom_store(node.port, path, MRImageStorage) == dicom.DATASET_DOES_NOT_MATCH_SOP_CLASS
    node.assert_nothing_kept()


def test_unparseable_data_set_is_refused(start_node: Callable[..., Node], tmp_path: Path, chunked_sends: None) -> None:
    node = start_node()
    garbage = b"\x08\x00\x05\x00SQ\x00\x00\xff\xff\xff\xff" + b"\x01" * 50  # a sequence of no items
    path = lying_file(tmp_path / "ct", media_class="1.2.840.10008.5.1.4.1.1.2", body=garbage)
    assert pynetdicom_store(node.port, path, "1.2.840.10008.5.1.4.1.1.2") == dicom.CANNOT_PARSE
    node.assert_nothing_kept()


# -- Life cycle ----------------------------------------------------------------------------


def test_sigterm_drains_and_loses_nothing_acknowledged(start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node(workers=1)
    files = ct_series(tmp_path / "ct", 300, size=256)
    sender = subprocess.Popen(["storescu", "-v", "-aec", "BURN", "127.0.0.1", str(node.port), *map(str, files)],
                              env=PEER_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    index = Index(node.data_dir / "index.sqlite")
    try:
        while len(index.study_files([dcmread(files[0], stop_before_pixels=True).StudyInstanceUID])) < 20:
            assert sender.poll() is None, "the send ended before SIGTERM"
            time.sleep(0.01)
    finally:
        index.close()
    (receiver,) = node.receivers
    os.kill(receiver.pid, signal.SIGTERM)
    receiver.process.join(30)
    assert receiver.process.exitcode == 0
    output, _ = sender.communicate(timeout=60)
    acknowledged = output.count("Received Store Response (Success)")
    assert 20 <= acknowledged < 300
    assert len(node.rows()) >= acknowledged  # the one in flight may be stored and not yet answered
    assert {Path(r["path"]) for r in node.rows()} == set(node.spooled())
    assert node.temp_files() == []
    assert echoscu(node.port).returncode != 0  # nobody listens any more


def test_sighup_reloads_routes_and_keeps_them_on_a_bad_file(
    start_node: Callable[..., Node], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "medianode.yaml"
    config.write_text("routes:\n  - {match: {called_aet: BURN}, action: burn}\n")
    caplog.set_level(logging.INFO)  # the receivers log at the level of the process that starts them
    log = tmp_path / "receivers.log"
    with stderr_to(log):  # theirs, read as it grows: capfd's reading truncates, and loses a line written meanwhile
        node = start_node(source=config)
    assert echoscu(node.port, aec="LATE").returncode != 0

    def each_logged(what: str) -> bool:
        """Every receiver logged ``what`` (each waits for its own line: an echo may reach only one of them)."""
        logged = log.read_text(errors="replace")
        return all(f"Receiver {receiver.pid} {what}" in logged for receiver in node.receivers)

    config.write_text("routes:\n  - {match: {called_aet: LATE}, action: burn}\n")
    for receiver in node.receivers:
        receiver.reload()
    until(lambda: each_logged("reloaded"), "every receiver to reload")
    assert all(echoscu(node.port, aec="LATE").returncode == 0 for _ in node.receivers * 2)
    config.write_text("routes: [{match: {called_aet: OTHER}, action: explode}]\n")
    for receiver in node.receivers:
        receiver.reload()
    until(lambda: each_logged("keeps its configuration"), "each receiver to refuse the new configuration")
    assert all(echoscu(node.port, aec="LATE").returncode == 0 for _ in range(4))


@contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """This process's stderr appends to ``path`` (and so does every child started meanwhile, for its life)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = os.dup(2)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def test_a_taken_port_fails_at_start(start_node: Callable[..., Node]) -> None:
    node = start_node()
    with pytest.raises(ReceiverError, match=f"cannot listen on 127.0.0.1:{node.port}"):
        start_receivers(replace(node.config, node=replace(node.config.node, data_dir=node.data_dir / "other")))


# -- TLS -----------------------------------------------------------------------------------


def tls_echo(port: int, pki: Path, *, client_cert: bool) -> bool:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    if client_cert:
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    ae = AE("TLSSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    # pynetdicom leaves a failed TLS socket to the collector, and its error log's traceback (kept
    # by pytest's log capture) would hold it past this function: no log, then collect it here.
    quiet, level = logging.getLogger("pynetdicom"), logging.getLogger("pynetdicom").level
    quiet.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            assoc = ae.associate("127.0.0.1", port, ae_title="MEDIANODE", tls_args=(ctx, "127.0.0.1"))
            echoed = assoc.is_established and int(assoc.send_c_echo().Status) == dicom.SUCCESS
            if assoc.is_established:
                assoc.release()
            assoc.dul.join(10)
            del assoc
            gc.collect()
    finally:
        quiet.setLevel(level)
    return echoed


def test_tls_requires_a_client_certificate_signed_by_the_ca(start_node: Callable[..., Node], pki: Path) -> None:
    node = start_node(tls=TLS(pki / "server.pem", pki / "server.key", pki / "ca.pem"))
    assert tls_echo(node.port, pki, client_cert=True)
    assert not tls_echo(node.port, pki, client_cert=False)
    assert echoscu(node.port).returncode != 0  # plain DICOM gets nowhere


# -- The pieces ----------------------------------------------------------------------------


#: The storage classes of the seed's Table 5, its PET ".12.8" read as the ".128" it means.
SEED_TABLE_5 = [f"1.2.840.10008.5.1.4.1.1.{c}" for c in (
    "1", "1.1", "1.1.1", "1.2", "1.2.1", "1.3", "1.3.1", "2", "4", "5", "6", "6.1", "7", "7.2", "7.3", "7.4",
    "9.1.1", "9.1.2", "9.4.1", "11.1", "12.1", "12.2", "12.3", "128", "13.1.3", "20", "66", "77.1.1", "77.1.2",
    "77.1.3", "77.1.4", "88.67", "104.1")]


def test_every_seed_table_5_class_in_every_syntax() -> None:
    """Table 5's classes, retired ones included (AllStoragePresentationContexts lacks .5, .6 and
    .12.3), and a configured private class, each in all of our transfer syntaxes."""
    ae = scp.make_ae(Config(node=NodeConfig(extra_sop_classes=("1.3.12.2.1107.5.9.1",))))
    supported = {str(cx.abstract_syntax): set(cx.transfer_syntax) for cx in ae.supported_contexts}
    for uid in [*SEED_TABLE_5, "1.3.12.2.1107.5.9.1"]:
        assert supported[uid] == set(scp.TRANSFER_SYNTAXES), uid
    assert syntaxes.SEED_TABLE_6 <= set(scp.TRANSFER_SYNTAXES)
    assert len(supported) > 180


def test_spool_places_durably_under_a_new_name(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "data")
    a, size = spool.place(b"first", study_uid="1.2.3", sop_instance_uid="1.2.3.4")
    b, _ = spool.place(b"second", study_uid="1.2.3", sop_instance_uid="1.2.3.4")
    assert a != b and (a.read_bytes(), b.read_bytes(), size) == (b"first", b"second", 5)
    # A file from another file system (/dev/shm is tmpfs) is copied, then renamed.
    elsewhere = Path("/dev/shm") / f"medianode-test-{os.getpid()}"
    elsewhere.write_bytes(b"moved")
    try:
        c, _ = spool.place(elsewhere, study_uid="1.2.3", sop_instance_uid="1.2.3.5")
    finally:
        leftover = elsewhere.exists()
        elsewhere.unlink(missing_ok=True)
    assert c.read_bytes() == b"moved" and leftover  # copied: the caller's file is the caller's
    for bad in ("../../etc", "1.2.3/4", "", "1." * 40):
        with pytest.raises(SpoolError):
            spool.place(b"x", study_uid=bad, sop_instance_uid="1.2")
    assert spool.orphans() == []
    (spool.tmp / "left-by-a-crash.dcm").write_bytes(b"partial")
    assert spool.cleanup_tmp() == 1 and spool.orphans() == []


def test_spooled_files_record_who_sent_them_to_whom(start_node: Callable[..., Node], tmp_path: Path) -> None:
    node = start_node()
    (sent,) = ct_series(tmp_path / "ct", 1)
    assert statuses(storescu(node.port, sent, aec="BURN", aet="CT1")) == [dicom.SUCCESS]
    (row,) = node.rows()
    meta = dcmread(row["path"], stop_before_pixels=True).file_meta
    assert (meta[0x00020017].value, meta[0x00020018].value) == ("CT1", "BURN")  # PS3.10 7.1
    assert meta[0x00020100].value == dicom.MEDIANODE_CLASS_UID
    assert meta[0x00020102].value == routes_digest(node.config.routes).encode()
    assert dataset_bytes(row["path"]) == dataset_bytes(sent)  # copied unchanged (DCMTK re-encodes nothing here)
    assert row["digest"] == ""  # not hashed: only an instance whose UID comes again is


def lose(node: Node, path: Path, *, calling: str | None, called: str, routes: tuple[Route, ...]) -> Path:
    """Place ``path`` in the spool as a receiver would (with the AE titles, unless ``calling`` is None),
    but without its index commit: what a crash between the two leaves."""
    spool, inst = Spool(node.data_dir), read_instance(path)
    if calling is None:
        lost, _ = spool.place(path.read_bytes(), study_uid=inst.study_uid, sop_instance_uid=inst.sop_instance_uid)
        return lost
    head = inst.spool_head(calling_aet=calling, called_aet=called, routes=routes_digest(routes))
    staged = spool.stage(path, head=head, offset=inst.dataset_offset)
    lost, _ = spool.place(staged, study_uid=inst.study_uid, sop_instance_uid=inst.sop_instance_uid)
    return lost


def reindex(node: Node, routes: tuple[Route, ...]) -> int:
    index = Index(node.data_dir / "index.sqlite")
    try:
        return index_orphans(Spool(node.data_dir), index, known=index.known_paths(), routes=routes)
    finally:
        index.close()


def test_index_orphans_routes_by_the_recorded_ae_titles_with_the_routes_in_force(
        start_node: Callable[..., Node], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A crash between the spool and the index commit: the rebuilt index decides as the receiver did."""
    store = Route(Match(), "store", where="test.yaml:9")
    node = start_node(routes=(BURN, store))
    first, by_titles = ct_series(tmp_path / "ct", 2)
    (untitled,) = ct_series(tmp_path / "other", 1)  # another study
    assert statuses(storescu(node.port, first, aec="MEDIANODE")) == [dicom.SUCCESS]  # the study: store only
    lost = lose(node, by_titles, calling="CT1", called="BURN", routes=node.config.routes)
    old = lose(node, untitled, calling=None, called="", routes=())  # from before the spool recorded them
    assert reindex(node, node.config.routes) == 2
    assert reindex(node, node.config.routes) == 0
    rows = {r["path"]: r for r in node.rows()}
    assert (rows[str(lost)]["route"], rows[str(lost)]["calling_aet"], rows[str(lost)]["called_aet"]) == (
        routing.recorded([routing.RouteSnapshot.of(BURN, 0)]), "CT1", "BURN")
    assert rows[str(old)]["route"] == routing.STORE_ONLY and rows[str(old)]["calling_aet"] == ""  # a new study
    assert "other routes" not in caplog.text

    # Restarted with other routes: they decide, and the log says the routes changed.
    (again,) = ct_series(tmp_path / "again", 1)
    lost = lose(node, again, calling="CT1", called="BURN", routes=node.config.routes)
    with caplog.at_level(logging.WARNING):
        assert reindex(node, (store,)) == 1
    assert next(r for r in node.rows() if r["path"] == str(lost))["route"] == routing.STORE_ONLY
    assert "1 re-indexed instance was received under other routes" in caplog.text


def test_index_orphans_takes_a_copy_sent_again_whose_commit_was_lost(
        start_node: Callable[..., Node], tmp_path: Path) -> None:
    """After a power loss, the index may lack the commit of a copy sent again: the copy written last wins,
    an older one is left alone, an identical one removed."""
    node = start_node()
    (sent,) = ct_series(tmp_path / "ct", 1)
    assert statuses(storescu(node.port, sent, aec="BURN", aet="CT1")) == [dicom.SUCCESS]
    (row,) = node.rows()
    indexed = Path(row["path"])

    def version(name: str, description: str, *, written: float) -> Path:
        """Another copy of the same instance in the spool, without its index commit, written at ``written``."""
        ds = dcmread(sent)
        ds.SeriesDescription = description
        ds.save_as(tmp_path / name)
        lost = lose(node, tmp_path / name, calling="CT1", called="BURN", routes=node.config.routes)
        os.utime(lost, (written, written))
        return lost

    at = indexed.stat().st_mtime
    older = version("older.dcm", "before", written=at - 60)
    newer = version("newer.dcm", "again", written=at + 60)
    assert reindex(node, node.config.routes) == 1
    (row,) = node.rows()
    assert (row["path"], row["sop_instance_uid"]) == (str(newer), read_instance(sent).sop_instance_uid)
    assert str(indexed) in node.released()  # the copy it replaced goes, as when the receiver indexes it
    assert older.exists() and str(older) not in node.released()  # older than the index's copy: left alone

    identical = version("identical.dcm", "again", written=at + 120)  # the same bytes as the indexed copy
    assert reindex(node, node.config.routes) == 0
    assert not identical.exists() and node.rows()[0]["path"] == str(newer)
