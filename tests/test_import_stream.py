"""``import`` sending while the medium is surveyed: what the DICOMDIR's records propose goes at once,
the rest after the survey, and the report is what it would be without the overlap.

Media of more than :data:`node.read.sender.ITEMS_PER_WORKER` instances (below that, nothing is sent
before the survey ends), made by DCMTK and then broken the way outside discs are, imported into real
DCMTK storescp processes on 127.0.0.1.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from node.config import Coercion
from node.read.check import Listed, MediumInstance, survey_medium
from node.read.header import data_set_offset
from node.read.importer import import_medium
from node.read.medium import open_medium
from node.read.sender import ITEMS_PER_WORKER, Item, SendTarget, Stream, class_contexts
from tests.conftest import StatusSCP, StoreSCP, bundled, ct_series, free_port
from tests.test_check import leaf_index, rewrite_dicomdir, sample
from tests.test_import import assert_all_arrived, dcmtk_medium, outcome, received, to, uid_of

#: Enough instances for the import to send while it surveys.
COUNT = ITEMS_PER_WORKER + 6


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return ct_series(tmp_path / "src", COUNT, size=16)


class Heard:
    """A survey listener that writes down what it is told, in order."""

    def __init__(self) -> None:
        self.told: list[str] = []
        self.listed: list[Listed] = []
        self.instances: list[MediumInstance] = []

    def records(self, listed: list[Listed]) -> None:
        self.told.append("records")
        self.listed += listed

    def found(self, instance: MediumInstance) -> None:
        self.told.append("found")
        self.instances.append(instance)


def test_the_survey_tells_its_listener_the_records_first_then_each_instance(tmp_path: Path, series: list[Path]) -> None:
    uids = dcmtk_medium(tmp_path / "cd", series)
    heard = Heard()
    with open_medium(tmp_path / "cd") as medium:
        survey = survey_medium(medium, listener=heard)
    assert heard.told == ["records"] + ["found"] * COUNT
    assert {r.sop_instance_uid for r in heard.listed} == set(uids)
    assert {(r.sop_class_uid, r.transfer_syntax_uid) for r in heard.listed} == {(CTImageStorage, ExplicitVRLittleEndian)}
    assert sorted(heard.instances, key=lambda i: i.path) == survey.instances
    assert all(i.listed and i.referenced for i in heard.instances)


def test_a_second_dicomdir_keeps_the_records_from_the_listener(tmp_path: Path, series: list[Path]) -> None:
    """Several DICOMDIRs may name one instance twice: nothing is proposed before every file is read."""
    dcmtk_medium(tmp_path / "cd", series)
    (tmp_path / "cd" / "MORE").mkdir()
    shutil.copyfile(tmp_path / "cd" / "DICOMDIR", tmp_path / "cd" / "MORE" / "DICOMDIR")
    heard = Heard()
    with open_medium(tmp_path / "cd") as medium:
        survey_medium(medium, listener=heard)
    assert heard.told == []


def test_records_naming_another_class_and_syntax(tmp_path: Path, series: list[Path], storescp: StoreSCP) -> None:
    """An MR and a JPEG instance whose records say CT in Explicit VR LE: neither was proposed up front;
    both go after the survey, each in its own syntax, and the records' lies are problems."""
    mr, jpeg = sample("MR_small.dcm"), Path(bundled("SC_rgb_jpeg_dcmtk.dcm"))
    sources = dcmtk_medium(tmp_path / "cd", [*series, mr, jpeg], "-Nxc")
    names = {uid_of(mr): f"IM{COUNT + 1}", uid_of(jpeg): f"IM{COUNT + 2}"}

    def lie(ds: Dataset) -> None:
        for name in names.values():
            record = ds.DirectoryRecordSequence[leaf_index(tmp_path / "cd", f"DICOM\\{name}")]
            record.ReferencedSOPClassUIDInFile = CTImageStorage
            record.ReferencedTransferSyntaxUIDInFile = ExplicitVRLittleEndian

    rewrite_dicomdir(tmp_path / "cd", lie)
    report = import_medium(tmp_path / "cd", destination=to(storescp))
    assert_all_arrived(report, storescp.folder, sources)
    for name in names.values():
        assert outcome(report, f"DICOM/{name}").reason == "stored"
        assert any(f.path == f"DICOM/{name}" and f.problem.startswith("SOP Class UID ") for f in report.problems)
    got = received(storescp.folder)
    jpeg_syntax = dcmread(jpeg, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert dcmread(got[uid_of(jpeg)], stop_before_pixels=True).file_meta.TransferSyntaxUID == jpeg_syntax


def test_a_uid_found_twice_is_sent_once(tmp_path: Path, series: list[Path], storescp: StoreSCP) -> None:
    """An unreferenced copy of a referenced instance: the referenced one is sent, the copy is a note."""
    sources = dcmtk_medium(tmp_path / "cd", series)
    shutil.copyfile(tmp_path / "cd" / "DICOM" / "IM3", tmp_path / "cd" / "DICOM" / "COPY3")
    report = import_medium(tmp_path / "cd", destination=to(storescp))
    assert (report.sent, report.skipped, report.failed, report.conflicts) == (COUNT, 1, 0, 0)
    assert outcome(report, "DICOM/COPY3").reason == "duplicate of DICOM/IM3: the same data set, sent once"
    assert outcome(report, "DICOM/IM3").result == "sent"
    assert set(received(storescp.folder)) == set(sources)


def test_a_record_naming_another_instance_loses_to_the_one_it_names(
    tmp_path: Path, series: list[Path], storescp: StoreSCP
) -> None:
    """Two referenced files with one SOP Instance UID, one of them under another's record: the file whose
    record names it is the one sent (it may be sent before the other is read)."""
    sources = dcmtk_medium(tmp_path / "cd", series)
    shutil.copyfile(tmp_path / "cd" / "DICOM" / "IM5", tmp_path / "cd" / "DICOM" / "IM1")  # IM1's record lies now
    del sources[uid_of(series[0])]
    report = import_medium(tmp_path / "cd", destination=to(storescp))
    assert (report.sent, report.skipped, report.conflicts) == (COUNT - 1, 1, 0)
    assert outcome(report, "DICOM/IM5").result == "sent"
    assert outcome(report, "DICOM/IM1").reason == "duplicate of DICOM/IM5: the same data set, sent once"
    assert set(received(storescp.folder)) == set(sources)


def test_an_unreferenced_file_goes_after_the_survey(tmp_path: Path, series: list[Path], storescp: StoreSCP) -> None:
    sources = dcmtk_medium(tmp_path / "cd", series)
    extra = ct_series(tmp_path / "more", 1, patient_id="PID1")[0]
    shutil.copyfile(extra, tmp_path / "cd" / "DICOM" / "EXTRA")
    report = import_medium(tmp_path / "cd", destination=to(storescp))
    assert_all_arrived(report, storescp.folder, {**sources, uid_of(extra): extra})
    assert outcome(report, "DICOM/EXTRA").reason == "stored"
    assert any(f.path == "DICOM/EXTRA" and f.problem == "not referenced by the DICOMDIR" for f in report.problems)


def test_the_selection_applies_to_each_instance(tmp_path: Path, storescp_with: Callable[..., StoreSCP]) -> None:
    wanted = ct_series(tmp_path / "src" / "a", COUNT, patient_id="P1", size=16)
    other = ct_series(tmp_path / "src" / "b", 5, patient_id="P2", name="ROE^RICHARD", size=16)
    dcmtk_medium(tmp_path / "cd", [*wanted, *other])
    scp = storescp_with("+xa")
    report = import_medium(tmp_path / "cd", destination=to(scp), patient="P1")
    assert set(received(scp.folder)) == {uid_of(p) for p in wanted}
    assert (report.ok, report.sent, report.skipped) == (True, COUNT, 5)
    assert {o.reason for o in report.outcomes if o.result == "skipped"} == {"not of the selected patient: Patient ID P2"}


def test_a_destination_down_fails_every_instance_and_nothing_hangs(tmp_path: Path, series: list[Path]) -> None:
    """The sending processes give up; what was handed to them and what the survey finds after are failed."""
    dcmtk_medium(tmp_path / "cd", series)
    port = free_port()  # nothing listens there
    report = import_medium(tmp_path / "cd", destination=("PACS", "127.0.0.1", port), associations=2)
    assert (report.ok, report.sent, report.failed) == (False, 0, COUNT)
    assert {o.reason for o in report.outcomes} == {
        f"not sent: cannot connect to PACS@127.0.0.1:{port}: [Errno 111] Connection refused"}


def test_a_stream_sends_what_it_is_given_in_order(series: list[Path], tmp_path: Path, storescp: StoreSCP) -> None:
    folder = tmp_path / "flat"
    folder.mkdir()
    items = []
    for n, source in enumerate(series[:3]):
        shutil.copyfile(source, folder / f"F{n}")
        with open(source, "rb") as fp:
            offset = data_set_offset(fp)
        items.append(Item(f"F{n}", CTImageStorage, uid_of(source), ExplicitVRLittleEndian, offset, True))
    stream = Stream(str(folder), tuple(class_contexts(CTImageStorage, {ExplicitVRLittleEndian})),
                    destination=SendTarget(*to(storescp)), workers=2)
    assert [stream.put(item) for item in items] == [0, 1, 2]
    results = stream.finish()
    assert [(r.index, r.result, r.reason) for r in results] == [(n, "sent", "stored") for n in range(3)]
    assert set(received(storescp.folder)) == {i.sop_instance_uid for i in items}



def test_coercion_applies_to_the_instances_sent_while_surveying(
    tmp_path: Path, series: list[Path], storescp: StoreSCP
) -> None:
    """The coercion crosses into the sending processes with each instance, and its changes come back."""
    dcmtk_medium(tmp_path / "cd", series)
    report = import_medium(tmp_path / "cd", destination=to(storescp), coerce=Coercion(patient_id_prefix="EXT-"))
    assert (report.ok, report.sent) == (True, COUNT)
    assert {(c.attribute, c.old, c.new) for c in report.coercions} == {("PatientID", "PID1", "EXT-PID1")}
    assert len(report.coercions) == COUNT
    assert {str(dcmread(p, stop_before_pixels=True).PatientID) for p in received(storescp.folder).values()} == {
        "EXT-PID1"}


def test_an_association_dropped_while_surveying_is_made_again(
    tmp_path: Path, series: list[Path], status_scp: Callable[..., StatusSCP]
) -> None:
    """The instance being sent and the one read ahead go on the next association; the survey goes on feeding."""
    uids = dcmtk_medium(tmp_path / "cd", series)
    dropped = uid_of(series[3])
    scp = status_scp(abort_once=[dropped])
    report = import_medium(tmp_path / "cd", destination=to(scp))
    assert (report.ok, report.sent) == (True, COUNT)
    assert {uid_of(p) for p in scp.received()} == set(uids)
    again = next(o for o in report.outcomes if o.sop_instance_uid == dropped)
    assert again.reason.startswith("stored (sent again after the association was lost: ")
