"""Media creation requests over DICOM (PS3.4 Annex S): pynetdicom, in this process, is the requesting SCU of
a real ``medianode serve``; DCMTK's storescu sends the instances."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.filewriter import write_dataset
from pydicom.filebase import DicomBytesIO
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.status import MEDIA_CREATION_MANAGEMENT_SERVICE_CLASS_STATUS, code_to_category

from node import dicom
from node.index import Index, MediaRequest
from node.media import publisher
from node.receive import mcm
from tests.conftest import cli, ct_series, need, until
from tests.test_burn import by_uid, extract
from tests.test_index import received
from tests.test_outputs import Robot
from tests.test_serve import Node, storescu

MCM = mcm.MEDIA_CREATION_MANAGEMENT


def make_node(tmp_path: Path, settings: str = "wait_seconds: 60") -> Node:
    """A node with ``mcm: {settings}``."""
    need("echoscu", "storescu", "xorriso")
    node = Node(tmp_path, imports=f"mcm: {{{settings}}}\n")
    node.start()
    return node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = make_node(tmp_path)
    yield n
    stop(n)


def stop(n: Node) -> None:
    if n.proc is not None and n.proc.poll() is None:
        n.stop(signal.SIGKILL)


class Requester:
    """One association of a media creation SCU; ``commands`` keeps each response's command set as received."""

    def __init__(self, node: Node) -> None:
        self.commands: list[Dataset] = []
        ae = AE(ae_title="PACS")
        ae.add_requested_context(MCM)
        self.assoc: Association = ae.associate("127.0.0.1", node.port, ae_title="MEDIANODE",
                                               evt_handlers=[(evt.EVT_DIMSE_RECV, self._received)])
        assert self.assoc.is_established

    def _received(self, event: Event) -> None:
        self.commands.append(event.message.command_set)  # type: ignore[attr-defined]

    def __enter__(self) -> Requester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.assoc.release()

    def create(self, ds: Dataset, uid: str | None = None) -> tuple[Dataset, Dataset | None]:
        return self.assoc.send_n_create(ds, MCM, uid)  # type: ignore[return-value]

    def initiate(self, uid: str, **attrs: Any) -> Dataset:
        info = Dataset()
        for k, v in attrs.items():
            setattr(info, k, v)
        # no Action Information at all when there is none (pynetdicom would announce an empty data set and send none)
        return self.assoc.send_n_action(info if attrs else None, 1, MCM, uid)[0]  # type: ignore[return-value, arg-type]

    def cancel(self, uid: str) -> Dataset:
        return self.assoc.send_n_action(None, 2, MCM, uid)[0]  # type: ignore[return-value, arg-type]

    def get(self, uid: str) -> tuple[Dataset, Dataset | None]:
        return self.assoc.send_n_get([], MCM, uid)  # type: ignore[return-value]


def request(files: list[Path], **attrs: Any) -> Dataset:
    """An N-CREATE attribute list referencing ``files`` (SOP Class / Instance UID read from each)."""
    ds = Dataset()
    ds.ReferencedSOPSequence = Sequence()
    for f in files:
        src = dcmread(f, stop_before_pixels=True)
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = src.SOPClassUID, src.SOPInstanceUID
        ds.ReferencedSOPSequence.append(item)
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def send(node: Node, files: list[Path]) -> None:
    sent = storescu(node, files, called="MEDIANODE")
    assert sent.returncode == 0, sent.stderr


def wait_status(node: Node, uid: str, *states: str, info: str | None = None) -> Dataset:
    """N-GET until the Execution Status is one of ``states`` (a new association each time), and its Execution
    Status Info is ``info`` when given."""
    found: list[Dataset] = []

    def reached() -> bool:
        with Requester(node) as r:
            status, reply = r.get(uid)
        assert status.Status == 0, status
        assert reply is not None
        found[:] = [reply]
        return str(reply.ExecutionStatus) in states and info in (None, reply.ExecutionStatusInfo)
    node.wait_for(reached)
    return found[0]


def volumes(node: Node) -> list[dict[str, Any]]:
    return list(json.loads(cli("volumes", "--config", str(node.config), "--json").out))


def test_pynetdicom_is_loaded_by_the_first_association_that_needs_it(node: Node, tmp_path: Path) -> None:
    """C-ECHO (the node's start) and C-STORE (DCMTK's storescu) run on our own path: no receiver loads pynetdicom
    for them. A media creation association is pynetdicom's: the receiver that takes it loads it then, and says so
    once; it is served as before, and drained as before (SIGTERM aborts its association, idle)."""
    send(node, ct_series(tmp_path, 3))
    assert "loading pynetdicom" not in node.logs()
    r = Requester(node)
    assert r.get("1.2.3.4")[0].Status == mcm.NO_SUCH_SOP_INSTANCE
    lines = [line for line in node.logs().splitlines() if "loading pynetdicom" in line]
    assert len(lines) == 1, lines
    assert "loading pynetdicom for an association from 127.0.0.1:" in lines[0] and f"with SOP class {MCM}" in lines[0]
    assert node.stop() == 0
    until(lambda: r.assoc.is_aborted, "the drained association aborted")


def test_instances_sent_before_and_after_the_n_create_make_one_medium(node: Node, tmp_path: Path) -> None:
    before = ct_series(tmp_path / "a", 2)
    after = ct_series(tmp_path / "b", 2, patient_id="PID2")
    send(node, before)
    with Requester(node) as r:
        status, _ = r.create(request(before + after, StorageMediaFileSetID="CLINIC_42", LabelText="For Dr House",
                                     MediaDisposition="mail to the patient"))
        # recorded and returned, but a folder of images prints no label: said in the warning
        assert status.Status == 0x0116 and status.ErrorComment == "label text, style, barcode: no label printed here"
        uid = str(r.commands[-1].AffectedSOPInstanceUID)  # ours: the SCU gave none
        assert uid.startswith("2.25.")
        assert r.initiate(uid, NumberOfCopies=1, RequestPriority="HIGH").Status == 0
        status, reply = r.get(uid)
        # the responses' command sets as PS3.7 9.3 / 10.3 define them: N-CREATE-RSP 0x8140 with the Affected
        # SOP Class and Instance UID, N-ACTION-RSP 0x8130 with the Action Type ID, N-GET-RSP 0x8110
        created, initiated, got = r.commands
        assert (created.CommandField, created.AffectedSOPClassUID) == (0x8140, MCM)
        assert (initiated.CommandField, initiated.ActionTypeID, initiated.AffectedSOPInstanceUID) == (0x8130, 1, uid)
        assert (got.CommandField, got.AffectedSOPInstanceUID, got.CommandDataSetType != 0x0101) == (0x8110, uid, True)
        assert (reply.ExecutionStatus, reply.ExecutionStatusInfo) == ("PENDING", "QUEUED")  # type: ignore[union-attr]
    send(node, after)
    reply = wait_status(node, uid, "DONE", "FAILURE")
    assert (reply.ExecutionStatus, reply.ExecutionStatusInfo) == ("DONE", "NORMAL")
    assert reply.TotalNumberOfPiecesOfMediaCreated == 1 and "FailedSOPSequence" not in reply
    assert reply.LabelText == "For Dr House" and reply.MediaDisposition == "mail to the patient"
    [medium] = reply.ReferencedStorageMediaSequence
    [iso] = node.images()
    root = extract(iso, tmp_path / "disc")
    dicomdir = dcmread(root / "DICOMDIR")
    assert medium.StorageMediaFileSetID == dicomdir.FileSetID == "CLINIC_42"
    assert medium.StorageMediaFileSetUID == dicomdir.file_meta.MediaStorageSOPInstanceUID
    assert set(by_uid(root)) == {dcmread(f).SOPInstanceUID for f in before + after}
    # a job like any other: jobs, volumes
    [volume] = volumes(node)
    assert volume["paths"] == [str(iso)]
    listed = json.loads(cli("jobs", "--config", str(node.config), "--json").out)
    assert [(j["state"], j["route"]) for j in listed] == [("done", f"media request {uid}")]
    assert f"for media request {uid}" in cli("jobs", "--config", str(node.config)).out
    assert node.stop() == 0


def test_two_copies(node: Node, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "a", 1)
    send(node, files)
    with Requester(node) as r:
        uid = "1.2.826.0.1.3680043.8.498.4242"
        assert r.create(request(files), uid)[0].Status == 0
        assert r.initiate(uid, NumberOfCopies=2).Status == 0
    reply = wait_status(node, uid, "DONE", "FAILURE")
    assert reply.ExecutionStatus == "DONE" and reply.TotalNumberOfPiecesOfMediaCreated == 2
    assert len(node.images()) == 2


def test_two_studies_split_across_two_media_and_never_without_splitting(node: Node, tmp_path: Path) -> None:
    a, b = ct_series(tmp_path / "a", 1), ct_series(tmp_path / "b", 1, patient_id="PID2")
    send(node, a + b)

    def asking(split: str) -> Dataset:
        ds = request(a + b, AllowMediaSplitting=split)
        ds.ReferencedSOPSequence[0].RequestedMediaApplicationProfile = "STD-GEN-CD"
        ds.ReferencedSOPSequence[1].RequestedMediaApplicationProfile = "STD-GEN-DVD-JPEG"
        return ds
    with Requester(node) as r:
        assert r.create(asking("NO"), "1.2.3.1")[0].Status == 0
        assert r.initiate("1.2.3.1").Status == 0
        assert r.create(asking("YES"), "1.2.3.2")[0].Status == 0
        assert r.initiate("1.2.3.2").Status == 0
    refused = wait_status(node, "1.2.3.1", "DONE", "FAILURE")
    assert (refused.ExecutionStatus, refused.ExecutionStatusInfo) == ("FAILURE", "INST_AP_CONFLICT")
    split = wait_status(node, "1.2.3.2", "DONE", "FAILURE")
    assert split.ExecutionStatus == "DONE" and split.TotalNumberOfPiecesOfMediaCreated == 2
    media = {m.StorageMediaFileSetUID for m in split.ReferencedStorageMediaSequence}
    assert len(media) == 2
    held = [set(by_uid(extract(iso, tmp_path / iso.stem))) for iso in node.images()]
    assert sorted(map(len, held)) == [1, 1]  # each study whole on a medium of its own
    assert set.union(*held) == {dcmread(f).SOPInstanceUID for f in a + b}


def test_instances_a_burn_route_matches_too_make_both_media(node: Node, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "a", 1)
    sent = storescu(node, files, called="BURN")
    assert sent.returncode == 0, sent.stderr
    with Requester(node) as r:
        assert r.create(request(files), "1.2.3.20")[0].Status == 0
        assert r.initiate("1.2.3.20").Status == 0
    assert wait_status(node, "1.2.3.20", "DONE", "FAILURE").ExecutionStatus == "DONE"
    node.wait_for(lambda: len(volumes(node)) == 2)  # the route's volume and the request's
    explained = cli("routes", "explain", "--config", str(node.config), "--study", dcmread(files[0]).StudyInstanceUID)
    assert "media request 1.2.3.20: references 1 instance of this study; a burn route matches it too" in explained.out
    as_json = json.loads(cli("routes", "explain", "--config", str(node.config), "--study",
                             dcmread(files[0]).StudyInstanceUID, "--json").out)
    assert as_json["media_requests"] == {"1.2.3.20": 1}


def test_a_missing_instance_fails_with_no_instance_and_its_uid(tmp_path: Path) -> None:
    node = make_node(tmp_path, "wait_seconds: 1")
    try:
        here = ct_series(tmp_path / "a", 1)
        never = ct_series(tmp_path / "never", 1)
        send(node, here)
        with Requester(node) as r:
            assert r.create(request(here + never), "1.2.3.3")[0].Status == 0
            assert r.initiate("1.2.3.3").Status == 0
        reply = wait_status(node, "1.2.3.3", "DONE", "FAILURE")
        assert (reply.ExecutionStatus, reply.ExecutionStatusInfo) == ("FAILURE", "NO_INSTANCE")
        [failed] = reply.FailedSOPSequence
        assert failed.ReferencedSOPInstanceUID == dcmread(never[0]).SOPInstanceUID
        assert failed.FailureReason == dicom.NO_SUCH_OBJECT_INSTANCE
        assert node.images() == [] and reply.TotalNumberOfPiecesOfMediaCreated == 0
        # the instance that was here is kept, and the request is named with its study
        explained = cli("routes", "explain", "--config", str(node.config), "--study", dcmread(here[0]).StudyInstanceUID)
        assert dcmread(here[0]).SOPInstanceUID in explained.out
        assert "media request 1.2.3.3: references 1 instance of this study\n" in explained.out
    finally:
        stop(node)


def test_bad_requests_are_refused_with_their_status_and_nothing_is_recorded(node: Node, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "a", 1)
    unsupported = request(files)
    unsupported.ReferencedSOPSequence[0].RequestedMediaApplicationProfile = "STD-XABC-CD"
    with Requester(node) as r:
        status, _ = r.create(unsupported, "1.2.3.4")
        assert status.Status == 0x0106 and "STD-XABC-CD" in status.ErrorComment
        assert r.get("1.2.3.4")[0].Status == 0x0112  # nothing recorded
        assert r.create(request([], LabelText="no references"), "1.2.3.5")[0].Status == 0x0121
        no_sequence = Dataset()
        no_sequence.LabelText = "no references"
        assert r.create(no_sequence, "1.2.3.5")[0].Status == 0x0120
        status, _ = r.create(request(files, IncludeNonDICOMObjects="FOR_RESEARCH"), "1.2.3.5")
        assert status.Status == 0x0106 and "de-identification" in status.ErrorComment
        assert r.create(request(files, AllowMediaSplitting="MAYBE"), "1.2.3.5")[0].Status == 0x0106
        assert r.get("1.2.3.5")[0].Status == 0x0112
        # a value we cannot honour, replaced by our default: warning, with the reason
        status, _ = r.create(request(files, IncludeDisplayApplication="YES"), "1.2.3.6")
        assert status.Status == 0x0116 and "viewer" in status.ErrorComment
        assert r.create(request(files), "1.2.3.6")[0].Status == 0x0111  # that UID is taken now
        assert r.initiate("1.2.3.9").Status == 0x0112
        assert r.initiate("1.2.3.6", NumberOfCopies=0).Status == 0x0106
        assert r.assoc.send_n_action(None, 7, MCM, "1.2.3.6")[0].Status == 0x0123  # type: ignore[arg-type]
        assert all(len(str(c.get("ErrorComment", ""))) <= 64 for c in r.commands)


def test_a_second_initiate_is_refused(node: Node, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "a", 1)
    with Requester(node) as r:
        assert r.create(request(files), "1.2.3.7")[0].Status == 0
        assert r.initiate("1.2.3.7").Status == 0
        status = r.initiate("1.2.3.7")
        assert status.Status == 0xA510 and status.ErrorComment
        assert r.get("1.2.3.7")[1].ExecutionStatus == "PENDING"  # type: ignore[union-attr]


def test_cancel_before_the_burn_then_during_it(tmp_path: Path) -> None:
    hot = tmp_path / "robot"
    hot.mkdir()
    node = make_node(tmp_path, f"output: {{kind: publisher, vendor: rimage, hot_folder: {hot}}}")
    try:
        files = ct_series(tmp_path / "a", 1)
        with Requester(node) as r:
            assert r.create(request(files), "1.2.3.8")[0].Status == 0
            assert r.cancel("1.2.3.8").Status == 0  # idle: cancelled
            assert r.cancel("1.2.3.8").Status == 0xC203
            assert r.create(request(files), "1.2.3.9")[0].Status == 0
            assert r.initiate("1.2.3.9").Status == 0
            assert r.cancel("1.2.3.9").Status == 0  # waiting for its instance: cancelled
            assert r.get("1.2.3.9")[1].ExecutionStatus == "FAILURE"  # type: ignore[union-attr]
            assert r.initiate("1.2.3.9").Status == 0xA510
            status, _ = r.create(request(files, BarcodeValue="12345"), "1.2.3.10")
            assert status.Status == 0x0116 and "no label" in status.ErrorComment  # a publisher without a label design
            assert r.initiate("1.2.3.10").Status == 0
        send(node, files)
        wait_status(node, "1.2.3.10", "CREATING")
        node.wait_for(lambda: any(hot.glob("*.NWP")))  # the robot has the order: the disc is being written
        with Requester(node) as r:
            assert r.cancel("1.2.3.10").Status == 0xC202
            assert r.get("1.2.3.10")[1].ExecutionStatus == "CREATING"  # type: ignore[union-attr]
        jobs = json.loads(cli("jobs", "--config", str(node.config), "--json").out)
        assert [j["state"] for j in jobs] == ["delivering"]  # the cancelled requests made no job
    finally:
        stop(node)


def test_a_restart_mid_request_resumes_it(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    try:
        files = ct_series(tmp_path / "a", 2)
        send(node, files[:1])
        with Requester(node) as r:
            assert r.create(request(files), "1.2.3.11")[0].Status == 0
            assert r.initiate("1.2.3.11", NumberOfCopies=1).Status == 0
        assert node.stop() == 0
        node.start()
        send(node, files[1:])
        reply = wait_status(node, "1.2.3.11", "DONE", "FAILURE")
        assert reply.ExecutionStatus == "DONE"
        [iso] = node.images()
        assert len(by_uid(extract(iso, tmp_path / "disc"))) == 2
    finally:
        stop(node)


def test_n_get_after_completion_then_forgotten_after_keep_hours(tmp_path: Path) -> None:
    node = make_node(tmp_path, "keep_hours: 0.002")  # 7.2 s
    try:
        files = ct_series(tmp_path / "a", 1)
        send(node, files)
        with Requester(node) as r:
            assert r.create(request(files), "1.2.3.12")[0].Status == 0
            assert r.initiate("1.2.3.12").Status == 0
        assert wait_status(node, "1.2.3.12", "DONE", "FAILURE").ExecutionStatus == "DONE"

        def forgotten() -> bool:
            with Requester(node) as r:
                return int(r.get("1.2.3.12")[0].Status) == 0x0112
        node.wait_for(forgotten)
        assert "media request 1.2.3.12 forgotten" in node.logs()
        assert len(volumes(node)) == 1  # the volume stays
    finally:
        stop(node)


# -- the messages, against PS3.7 and PS3.4 Annex S --------------------------------------


def test_each_status_is_of_the_category_ps3_7_and_annex_s_give_it() -> None:
    for code, (_, meaning, _) in mcm.STATUSES.items():
        assert code in MEDIA_CREATION_MANAGEMENT_SERVICE_CLASS_STATUS, hex(code)
        category = code_to_category(code)
        assert meaning.startswith({"Success": "Success", "Warning": "Warning", "Failure": "Failure"}[category]), hex(code)


def test_the_n_get_reply_encodes_each_attribute_with_its_ps3_6_vr_and_annex_s_values() -> None:
    req = MediaRequest("1.2.3", "PACS", 0.0, {"label_text": "x", "fileset_id": "F"}, "failed", "NO_INSTANCE",
                       [("1.2.4", "1.2.840.10008.5.1.4.1.1.2", 0x0112)], 1.0, 2, "MED", 2.0,
                       [("1.2.4", "1.2.840.10008.5.1.4.1.1.2", "")],
                       [(1, "done", "F", "1.2.5", None, "")])
    reply = mcm.describe(req)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True  # the syntax we accept the service in first
    write_dataset(fp, reply)
    for element in reply.iterall():
        assert element.VR == dictionary_VR(element.tag), keyword_for_tag(element.tag)
    assert reply.ExecutionStatus in mcm.EXECUTION_STATUS
    assert reply.ExecutionStatusInfo in mcm.EXECUTION_STATUS_INFO
    assert reply.FailedSOPSequence[0].FailureReason == 0x0112
    assert reply.ReferencedStorageMediaSequence[0].StorageMediaFileSetUID == "1.2.5"
    assert reply.TotalNumberOfPiecesOfMediaCreated == 2  # one medium, two copies
    only = mcm.describe(req, [0x21000020])
    assert [e.keyword for e in only] == ["ExecutionStatus"]


# -- priority, labels, de-identification, waiting outputs, retries -----------------------


def test_jobs_are_claimed_by_their_requests_priority_then_oldest_first(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    try:
        for n in range(4):
            index.add_instance(received(f"1.{n}", f"9.{n}", at=0.0))
        plain = index.enqueue(["9.0"], route="{}")  # a route's job: MED
        made = {}
        for n, priority in ((1, "LOW"), (2, "HIGH"), (3, "MED")):
            uid = f"5.{n}"
            assert index.add_media_request(uid, calling_aet="PACS", request={}, preserve=True,
                                           refs=[(f"1.{n}", "1.2.840.10008.5.1.4.1.1.2", "")], now=0.0)
            index.initiate_media_request(uid, copies=1, priority=priority, now=1.0)
            [made[priority]] = index.cut_request_jobs(uid, [([f"9.{n}"], [f"1.{n}"], "{}")]) or []
        claimed = []
        while (job := index.claim_job()) is not None:
            claimed.append(job.id)
        assert claimed == [made["HIGH"], plain, made["MED"], made["LOW"]]
    finally:
        index.close()


def test_a_retried_job_reopens_its_failed_request_in_the_index(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    try:
        index.add_instance(received("1.1", "9.1", at=0.0))
        index.add_media_request("5.1", calling_aet="PACS", request={}, preserve=True,
                                refs=[("1.1", "1.2.840.10008.5.1.4.1.1.2", "")], now=0.0)
        index.initiate_media_request("5.1", copies=1, priority="MED", now=1.0)
        [job] = index.cut_request_jobs("5.1", [(["9.1"], ["1.1"], "{}")]) or []
        assert index.claim_job() is not None
        index.finish_job(job, error="the robot failed")
        index.finish_media_request("5.1", state="failed", info="PROC_FAILURE", now=2.0)
        assert index.set_job_state(job, "pending", only_from=("failed", "cancelled"))
        req = index.media_request("5.1")
        assert req is not None and (req.state, req.info, req.failed, req.finished) == ("pending", None, [], None)
        assert mcm.execution(req) == ("PENDING", "QUEUED")
    finally:
        index.close()


def wait_info(node: Node, uid: str, info: str) -> Dataset:
    """N-GET until the Execution Status Info is ``info``."""
    found: list[Dataset] = []

    def reached() -> bool:
        with Requester(node) as r:
            reply = r.get(uid)[1]
        assert reply is not None
        found[:] = [reply]
        return str(reply.ExecutionStatusInfo) == info
    node.wait_for(reached)
    return found[0]


def test_label_text_and_barcode_reach_a_publishers_merge_file(tmp_path: Path) -> None:
    hot = tmp_path / "robot"
    robot = Robot(hot, "rimage")
    robot.start()
    node = make_node(tmp_path, f"output: {{kind: publisher, vendor: rimage, hot_folder: {hot}, "
                               r"label_template: 'C:\labels\medianode.btw'}")
    try:
        files = ct_series(tmp_path / "a", 1)
        send(node, files)
        with Requester(node) as r:
            status, _ = r.create(request(files, LabelText="For Dr House", LabelStyleSelection="TEACHING",
                                         BarcodeValue="ACC-0042", BarcodeSymbology="CODE128"), "1.2.3.30")
            assert status.Status == 0 and "ErrorComment" not in status
            assert r.initiate("1.2.3.30").Status == 0
        assert wait_status(node, "1.2.3.30", "DONE", "FAILURE").ExecutionStatus == "DONE"
        [merge] = hot.glob("*_LABEL.TXT")
        lines = merge.read_bytes().decode("ascii").split("\r\n")
        fields = dict(zip(publisher.LABEL_FIELDS, lines))
        assert fields["patient_name"] == "DOE JANE"  # the label record's, first
        assert (fields["label_text"], fields["label_style"], fields["barcode_value"], fields["barcode_symbology"]) == (
            "For Dr House", "TEACHING", "ACC-0042", "CODE128")
        [order] = robot.jobs
        assert order["merge"] == str(merge) and order["label"] == r"C:\labels\medianode.btw"
    finally:
        robot.stop.set()
        robot.join()
        stop(node)


def test_teaching_media_are_made_de_identified_with_mcm_deidentify(tmp_path: Path) -> None:
    node = make_node(tmp_path, "deidentify: true")
    try:
        files = ct_series(tmp_path / "a", 2, name="HOUSE^GREGORY", patient_id="PID-HOUSE")
        send(node, files)
        with Requester(node) as r:
            assert r.create(request(files, IncludeNonDICOMObjects="FOR_TEACHING"), "1.2.3.31")[0].Status == 0
            assert r.initiate("1.2.3.31").Status == 0
        assert wait_status(node, "1.2.3.31", "DONE", "FAILURE").ExecutionStatus == "DONE"
        [iso] = node.images()
        root = extract(iso, tmp_path / "disc")
        on_disc = by_uid(root)
        assert len(on_disc) == 2 and not set(on_disc) & {dcmread(f).SOPInstanceUID for f in files}
        for path in on_disc.values():
            ds = dcmread(path)
            assert ds.PatientIdentityRemoved == "YES" and "HOUSE" not in str(ds.PatientName)
        # nowhere on the medium (DICOM files, DICOMDIR, the PDI web content and README), nor on its label; the
        # index keeps which study of whom the volume holds, as for a route's de-identified media
        assert (root / "IHE_PDI").is_dir()
        assert not [p for p in root.rglob("*") if p.is_file() and b"HOUSE" in p.read_bytes().upper()]
        [volume] = volumes(node)
        assert "HOUSE" not in json.dumps(volume["label_record"]).upper()
        assert volume["studies"][0]["patient_id"] == "PID-HOUSE"
    finally:
        stop(node)


def test_a_request_waiting_for_a_blank_disc_reads_out_of_supplies_and_the_next_mcd_busy(tmp_path: Path) -> None:
    node = make_node(tmp_path, "output: {kind: xorriso, device: 'stdio:/dev/full', retries: 99, "
                               "retry_wait_seconds: 3600}")
    try:
        first, second = ct_series(tmp_path / "a", 1), ct_series(tmp_path / "b", 1, patient_id="PID2")
        send(node, first + second)
        with Requester(node) as r:
            for uid, files in (("1.2.3.32", first), ("1.2.3.33", second)):
                assert r.create(request(files), uid)[0].Status == 0
                assert r.initiate(uid).Status == 0
        assert wait_info(node, "1.2.3.32", "OUT_OF_SUPPLIES").ExecutionStatus == "PENDING"
        # the second one's medium is built and waits for the drive the first one occupies
        assert wait_info(node, "1.2.3.33", "MCD_BUSY").ExecutionStatus == "PENDING"
        status = json.loads(cli("status", "--config", str(node.config), "--json").out)
        [waiting] = status["jobs"]["waiting"]
        assert waiting["message"].startswith("waiting for a blank disc in stdio:/dev/full")
        with Requester(node) as r:  # it is being written: not cancelled
            assert r.cancel("1.2.3.32").Status == 0xC202
    finally:
        stop(node)


def test_jobs_retry_of_a_failed_requests_job_makes_the_request_done(tmp_path: Path) -> None:
    hot = tmp_path / "robot"
    robot = Robot(hot, "rimage", fail=1)  # no blank media in its input bin, once
    robot.start()
    node = make_node(tmp_path, f"output: {{kind: publisher, vendor: rimage, hot_folder: {hot}, retries: 0}}")
    try:
        files = ct_series(tmp_path / "a", 1)
        send(node, files)
        with Requester(node) as r:
            assert r.create(request(files), "1.2.3.34")[0].Status == 0
            assert r.initiate("1.2.3.34").Status == 0
        failed = wait_status(node, "1.2.3.34", "DONE", "FAILURE")
        assert (failed.ExecutionStatus, failed.ExecutionStatusInfo) == ("FAILURE", "PROC_FAILURE")
        robot.stop.set()
        robot.join()  # the robot is away while the job is retried
        [job] = json.loads(cli("jobs", "--config", str(node.config), "--json").out)
        assert job["state"] == "failed" and "no blank media in the input bin" in job["error"]
        retried = cli("jobs", "retry", str(job["id"]), "--config", str(node.config))
        assert retried.out == f"job {job['id']}: failed -> pending\n"
        with Requester(node) as r:
            assert r.get("1.2.3.34")[1].ExecutionStatus in ("PENDING", "CREATING")  # type: ignore[union-attr]
        node.wait_for(lambda: any(hot.glob("*.NWP")))  # submitted again: the robot is back
        robot = Robot(hot, "rimage")
        robot.start()
        done = wait_status(node, "1.2.3.34", "DONE", "FAILURE")
        assert (done.ExecutionStatus, done.ExecutionStatusInfo, done.TotalNumberOfPiecesOfMediaCreated) == (
            "DONE", "NORMAL", 1)
        [medium] = done.ReferencedStorageMediaSequence
        [volume] = volumes(node)
        assert volume["job"] == job["id"] and medium.StorageMediaFileSetUID
    finally:
        robot.stop.set()
        robot.join()
        stop(node)
