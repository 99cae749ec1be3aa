"""``import``: media made by DCMTK, by our ``burn`` and by pydicom, C-STOREd into real peers on 127.0.0.1.

Destinations: DCMTK storescp accepting every syntax, only uncompressed ones (its
default), only Implicit VR LE (``+xi``); tests/status_scp.py answering chosen
statuses and dropping an association. Every received instance is compared with
its source, attributes and pixels. Hostile media put FIFOs outside the root:
an importer that opened one would block, so those imports run in a thread that
must finish.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from node import dicom, pixels
from node.errors import MediumError, UsageError
from node.read.check import Finding
from node.read.importer import ImportReport, Outcome, import_medium, parse_destination
from node.read.medium import ESCAPES_ROOT, FolderMedium
from node.read.sender import RETRY_DELAYS, SendTarget, associate, plan_groups
from tests.conftest import (
    StatusSCP,
    StoreSCP,
    bundled,
    cli,
    cli_process,
    ct_series,
    free_port,
)
from tests.test_burn import extract
from tests.test_check import (
    CONTENT,
    build,
    dcmmkdir,
    fifo,
    leaf_index,
    rewrite_dicomdir,
    sample,
    set_offset,
    xorriso,
)

#: Compressed sources: JPEG baseline (YBR), JPEG lossless SV1, JPEG 2000, RLE.
COMPRESSED = ["SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"]
#: The attributes decompression may change (PS3.3 C.7.6.3, C.7.6.1.1.5).
DECODING_CHANGES = {"PixelData", "PhotometricInterpretation", "PlanarConfiguration", "LossyImageCompression"}


# -- helpers -----------------------------------------------------------------------------------


def uid_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)


def received(folder: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for everything a destination wrote."""
    return {uid_of(p): p for p in folder.iterdir() if p.is_file()}


def assert_same(got: Path, source: Path, *, decoded: bool = False) -> None:
    """Every data element equal (File Meta aside), pixels equal; decoded: as ``pixels.decompress`` gives them."""
    pixels.register()  # JPEG and JPEG-LS decode through imagecodecs, as node.pixels does
    a, b = dcmread(got), dcmread(source, force=True)
    if decoded and b.file_meta.TransferSyntaxUID.is_compressed:
        pixels.decompress(b)
        skip = DECODING_CHANGES
    else:
        skip = set()
    for element in b:
        if element.keyword not in skip and element.tag != 0xFFFCFFFC:  # trailing padding: PS3.10 7.2 lets it go
            assert a[element.tag] == element, f"{source.name}: {element.keyword or element.tag} differs"
    assert {e.tag for e in a} - {e.tag for e in b} <= {0x00282110}  # Lossy Image Compression, when lossy
    if "PixelData" in b:
        assert np.array_equal(a.pixel_array, b.pixel_array), f"{source.name}: pixels differ"


def assert_all_arrived(report: ImportReport, folder: Path, sources: dict[str, Path], *, decoded: bool = False) -> None:
    assert (report.ok, report.failed, report.sent) == (True, 0, len(sources)), report.outcomes
    got = received(folder)
    assert set(got) == set(sources)
    for uid, source in sources.items():
        assert_same(got[uid], source, decoded=decoded)


def to(scp: StoreSCP | StatusSCP) -> tuple[str, str, int]:
    return scp.aet, "127.0.0.1", scp.port


def dcmtk_medium(root: Path, sources: list[Path], *profile: str) -> dict[str, Path]:
    """DICOM/IMn copies of ``sources`` with a DCMTK DICOMDIR; SOP Instance UID -> source."""
    (root / "DICOM").mkdir(parents=True)
    for n, source in enumerate(sources, 1):
        shutil.copyfile(source, root / "DICOM" / f"IM{n}")
    dcmmkdir(root, *profile)
    return {uid_of(s): s for s in sources}


def import_unopened(path: Path, fifos: list[Path], **kwargs: Any) -> ImportReport:
    """Import; fail if the importer blocks on one of ``fifos`` (i.e. opened a path outside the root)."""
    result: list[ImportReport] = []
    worker = threading.Thread(target=lambda: result.append(import_medium(path, **kwargs)), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():
        for target in fifos:
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        worker.join(5)
        pytest.fail("the import opened a path outside the medium root")
    return result[0]


def outcome(report: ImportReport, path: str) -> Outcome:
    return next(o for o in report.outcomes if o.path == path)


@pytest.fixture
def medium(tmp_path: Path) -> Path:
    """The clean DCMTK medium of test_check (CT, MR, RGB, ECG waveform), for one test to break."""
    return build(tmp_path / "cd", CONTENT)


@pytest.fixture
def content_uids() -> dict[str, str]:
    return {name: uid_of(sample(source)) for name, source in CONTENT.items()}


# -- whole media into storescp ----------------------------------------------------------------


@pytest.mark.parametrize("form", ["folder", "iso9660", "joliet+rr"])
def test_dcmtk_medium_arrives_whole(tmp_path: Path, storescp: StoreSCP, form: str) -> None:
    series = ct_series(tmp_path / "src", 5, size=128)
    sources = dcmtk_medium(tmp_path / "cd", [*series, *(sample(s) for s in CONTENT.values())])
    target = tmp_path / "cd"
    if form != "folder":
        target = xorriso(tmp_path / "cd", tmp_path / "cd.iso", *(["-J", "-R"] if form == "joliet+rr" else []))
    report = import_medium(target, destination=to(storescp))
    assert_all_arrived(report, storescp.folder, sources)
    assert (report.problems, report.notes, report.skipped) == ([], [], 0)
    assert {o.reason for o in report.outcomes} == {"stored"} and {o.status for o in report.outcomes} == {0}


def test_burned_medium_arrives_whole(tmp_path: Path, storescp: StoreSCP) -> None:
    src = tmp_path / "src"
    series = ct_series(src / "ct", 4)
    for name in ("MR_small.dcm", "rtplan.dcm", "waveform_ecg.dcm", *COMPRESSED):
        shutil.copy(bundled(name), src)
    result = cli("burn", src, "--out", tmp_path / "out.iso", "--profile", "AUG-GEN-CD")
    assert result.code == 0, result.err
    report = import_medium(tmp_path / "out.iso", destination=to(storescp))
    on_disc = extract(tmp_path / "out.iso", tmp_path / "extracted")  # burn may have transcoded
    files = [p for p in on_disc.rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert {uid_of(p) for p in files} == {uid_of(p) for p in [*series, *(p for p in src.iterdir() if p.is_file())]}
    assert_all_arrived(report, storescp.folder, {uid_of(p): p for p in files})
    assert report.problems == []


def test_pydicom_test_file_set_arrives_whole(storescp: StoreSCP) -> None:
    """pydicom's bundled dicomdirtests, as installed (read-only): 31 instances, 50 more under a sub-folder DICOMDIR."""
    root = Path(bundled("DICOMDIR")).parent
    report = import_medium(root, destination=to(storescp))
    expected = {p for p in root.rglob("*") if p.is_file() and p.parent != root and p.name not in ("DICOMDIR", "README")}
    assert_all_arrived(report, storescp.folder, {uid_of(p): p for p in expected})
    assert report.problems == []
    assert Finding("TINY_ALPHA/DICOMDIR", "another DICOMDIR, in a sub-folder: its File IDs are read relative to "
                                          "TINY_ALPHA/") in report.notes
    directories = [f for f in report.notes if "(Media Storage Directory Storage): not an instance" in f.problem]
    assert {f.path for f in directories} == {p.name for p in root.glob("DICOMDIR-*")}  # never sent


# -- destinations that accept less ----------------------------------------------------------------


def test_compressed_instances_are_decompressed_for_an_uncompressed_only_destination(
    tmp_path: Path, storescp_with: Callable[..., StoreSCP]
) -> None:
    plain = storescp_with()  # storescp's default: Explicit / Implicit VR LE and Explicit VR BE only
    sources = [bundled(name) for name in COMPRESSED]
    uids = dcmtk_medium(tmp_path / "dvd", [Path(s) for s in sources], "--general-dvd-jpeg", "-Nxc")
    report = import_medium(tmp_path / "dvd", destination=to(plain))
    assert_all_arrived(report, plain.folder, uids, decoded=True)
    for got in received(plain.folder).values():
        assert dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    reasons = sorted(o.reason for o in report.outcomes)
    assert reasons[0] == "stored after decompressing JPEG 2000 Image Compression, which the destination did not accept"
    assert all(r.startswith("stored after decompressing ") for r in reasons)


def test_implicit_only_destination(tmp_path: Path, storescp_with: Callable[..., StoreSCP]) -> None:
    implicit = storescp_with("+xi")
    series = ct_series(tmp_path / "src", 3)
    uids = dcmtk_medium(tmp_path / "cd", [*series, sample("MR_small.dcm"), Path(bundled("SC_rgb_jpeg_dcmtk.dcm"))],
                        "-Nxc")
    report = import_medium(tmp_path / "cd", destination=to(implicit))
    assert_all_arrived(report, implicit.folder, uids, decoded=True)
    for got in received(implicit.folder).values():
        assert dcmread(got, stop_before_pixels=True).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert sum("re-encoded from Explicit VR Little Endian" in o.reason for o in report.outcomes) == 4


def test_unknown_sop_class_fails_alone(tmp_path: Path, storescp: StoreSCP) -> None:
    """storescp (not promiscuous) rejects a private SOP class: that instance fails, the others arrive."""
    series = ct_series(tmp_path / "cd" / "DICOM", 2)
    ds = dcmread(series[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.8.498.999"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "cd" / "DICOM" / "private.dcm")
    report = import_medium(tmp_path / "cd", destination=to(storescp))
    assert (report.ok, report.sent, report.failed) == (False, 2, 1)
    assert outcome(report, "DICOM/private.dcm").reason == (
        "the destination accepted no presentation context for 1.2.826.0.1.3680043.8.498.999, neither in "
        "Explicit VR Little Endian (1.2.840.10008.1.2.1) nor uncompressed")


def test_many_sop_classes_spread_over_associations(tmp_path: Path, status_scp: Callable[..., StatusSCP]) -> None:
    from pydicom import uid as uids

    classes = sorted({str(u) for name, u in vars(uids).items() if isinstance(u, uids.UID) and name.endswith("Storage")
                      and u.startswith("1.2.840.10008.5.1.4.1.1.")})[:70]
    folder = tmp_path / "usb"
    folder.mkdir()
    for n, sop_class in enumerate(classes):
        ds = dcmread(ct_series(tmp_path / "one", 1)[0])
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f"I{n}.dcm")
    scp = status_scp()
    report = import_medium(folder, destination=to(scp), associations=1)
    assert (report.ok, report.sent) == (True, 70), [o for o in report.outcomes if o.result != "sent"]
    assert len(scp.received()) == 70
    from node.read.check import survey_medium
    from node.read.importer import _item
    from node.read.medium import open_medium

    with open_medium(folder) as opened:
        items = [_item(i) for i in survey_medium(opened).instances]
    assert [len(g.contexts) for g in plan_groups(items)] == [128, 12]  # 64 + 6 classes, 2 contexts each


# -- statuses, drops, an absent destination ------------------------------------------------------------


def test_failure_and_warning_statuses_per_instance(
    tmp_path: Path, status_scp: Callable[..., StatusSCP]
) -> None:
    series = ct_series(tmp_path / "src", 6)
    uids = dcmtk_medium(tmp_path / "cd", series)
    order = sorted(uids, key=lambda u: uids[u].name)
    scp = status_scp(statuses={order[0]: dicom.OUT_OF_RESOURCES, order[1]: dicom.CANNOT_UNDERSTAND, order[2]: 0xB000})
    report = import_medium(tmp_path / "cd", destination=to(scp), reports_dir=tmp_path / "reports")
    assert (report.ok, report.sent, report.failed, report.skipped) == (False, 4, 2, 0)
    by_uid = {o.sop_instance_uid: o for o in report.outcomes}
    assert (by_uid[order[0]].result, by_uid[order[0]].status) == ("failed", 0xA700)
    assert by_uid[order[0]].reason == "refused by the destination: 0xA700 Refused: Out of Resources"
    assert (by_uid[order[1]].result, by_uid[order[1]].status) == ("failed", 0xC000)
    assert by_uid[order[1]].reason == "refused by the destination: 0xC000 Cannot Understand"
    assert (by_uid[order[2]].result, by_uid[order[2]].status) == ("sent", 0xB000)
    assert by_uid[order[2]].reason == "stored, with warning 0xB000 Coercion of Data Elements"
    assert {received_uid for received_uid in (uid_of(p) for p in scp.received())} == set(order[2:])
    kept = json.loads(Path(str(report.report_path)).read_text())
    assert (kept["ok"], kept["sent"], kept["failed"], kept["skipped"], kept["problems"]) == (False, 4, 2, 0, [])
    assert sorted(o["status"] for o in kept["outcomes"]) == [0, 0, 0, 0xA700, 0xB000, 0xC000]


def test_a_dropped_association_is_retried(tmp_path: Path, status_scp: Callable[..., StatusSCP]) -> None:
    series = ct_series(tmp_path / "src", 5)
    uids = dcmtk_medium(tmp_path / "cd", series)
    dropped = sorted(uids)[2]
    scp = status_scp(abort_once=[dropped])
    report = import_medium(tmp_path / "cd", destination=to(scp))
    assert (report.ok, report.sent) == (True, 5)
    assert {uid_of(p) for p in scp.received()} == set(uids)
    again = next(o for o in report.outcomes if o.sop_instance_uid == dropped)
    assert again.reason.startswith("stored (sent again after the association was lost: ")


@pytest.mark.parametrize("garble, why", [
    ("pdv", "aborted"),  # a PDV running past its PDU: no response can be read from it
    ("message_id", "a response that answers no request of ours"),
])
def test_a_response_we_cannot_take_drops_the_association_and_the_instance_is_sent_again(
        tmp_path: Path, status_scp: Callable[..., StatusSCP], garble: str, why: str) -> None:
    uids = dcmtk_medium(tmp_path / "cd", ct_series(tmp_path / "src", 4))
    garbled = sorted(uids)[1]
    scp = status_scp(garble_once={garbled: garble})
    report = import_medium(tmp_path / "cd", destination=to(scp), associations=1)
    assert (report.ok, report.sent) == (True, 4)
    assert {uid_of(p) for p in scp.received()} == set(uids)
    again = next(o for o in report.outcomes if o.sop_instance_uid == garbled)
    assert again.reason == f"stored (sent again after the association was lost: {why})"


class _FailingDisc(io.RawIOBase):
    """A file of a damaged disc: the kernel's EIO once ``good`` bytes were read."""

    def __init__(self, fp: Any, good: int) -> None:
        self.fp, self.good, self.name = fp, good, fp.name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return int(self.fp.tell())

    def readinto(self, buffer: Any) -> int:
        if self.fp.tell() >= self.good:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return int(self.fp.readinto(buffer))

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.fp.seek(offset, whence))

    def close(self) -> None:
        self.fp.close()
        super().close()


def test_a_read_error_mid_instance_fails_it_alone_and_the_destination_keeps_no_part(
        tmp_path: Path, storescp: StoreSCP, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged sector in the middle of an instance (EIO after its first MiB): that instance fails
    with the read error, the association is aborted so that storescp keeps nothing of it, the others
    arrive; it is not sent again as if the destination had dropped it."""
    series = ct_series(tmp_path / "src", 3, size=1024)  # 2 MiB each: the error falls after the first piece
    uids = dcmtk_medium(tmp_path / "cd", series)
    damaged = sorted(uids)[1]
    path = next(f"DICOM/{p.name}" for p in (tmp_path / "cd" / "DICOM").iterdir() if uid_of(p) == damaged)
    opened = FolderMedium.open

    def open_damaged(self: FolderMedium, relpath: str) -> Any:
        fp = opened(self, relpath)
        return io.BufferedReader(_FailingDisc(fp, 1 << 20)) if relpath == path else fp

    monkeypatch.setattr(FolderMedium, "open", open_damaged)
    report = import_medium(tmp_path / "cd", destination=to(storescp))
    assert (report.sent, report.failed) == (2, 1)
    failed = outcome(report, path)
    assert failed.reason.startswith("unreadable: read error: [Errno 5] Input/output error; the association was "
                                    "aborted"), failed.reason
    assert {uid_of(p) for p in storescp.received()} == set(uids) - {damaged}


def test_an_instance_that_always_drops_the_association_fails_alone(
    tmp_path: Path, status_scp: Callable[..., StatusSCP]
) -> None:
    uids = dcmtk_medium(tmp_path / "cd", ct_series(tmp_path / "src", 4))
    poison = sorted(uids)[1]
    scp = status_scp(abort_always=[poison])
    report = import_medium(tmp_path / "cd", destination=to(scp))
    assert (report.ok, report.sent, report.failed) == (False, 3, 1)
    failed = next(o for o in report.outcomes if o.result == "failed")
    assert (failed.sop_instance_uid, failed.status) == (poison, None)
    assert failed.reason == "the association was lost 2 times while sending it (aborted)"
    assert {uid_of(p) for p in scp.received()} == set(uids) - {poison}


def attempts(caplog: pytest.LogCaptureFixture) -> int:
    """How many times an association was tried and failed, by the sender's log."""
    return sum(r.getMessage().startswith("no association with ") for r in caplog.records)


def test_destination_down_fails_every_instance_after_a_few_attempts(
    medium: Path, content_uids: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    with caplog.at_level(logging.INFO, "node.read.sender"):
        report = import_medium(medium, destination=("PACS", "127.0.0.1", port), associations=2)
    assert attempts(caplog) == 1 + len(RETRY_DELAYS)  # for the whole medium, not per instance
    assert (report.ok, report.sent, report.failed) == (False, 0, 4)
    reasons = {o.reason for o in report.outcomes}
    assert reasons == {f"not sent: cannot connect to PACS@127.0.0.1:{port}: [Errno 111] Connection refused"}


def test_wrong_called_ae_title_is_a_permanent_rejection(
    medium: Path, status_scp: Callable[..., StatusSCP], caplog: pytest.LogCaptureFixture
) -> None:
    scp = status_scp()
    with caplog.at_level(logging.INFO, "node.read.sender"):
        report = import_medium(medium, destination=("NOTTHATSCP", "127.0.0.1", scp.port))
    assert attempts(caplog) == 0  # not retried
    assert report.failed == 4
    reason = (f"not sent: NOTTHATSCP@127.0.0.1:{scp.port} rejected the association "
              "(Rejected Permanent, Service User: Called AE title not recognised)")
    assert {o.reason for o in report.outcomes} == {reason}


def test_tcp_nodelay_is_set(storescp: StoreSCP) -> None:
    session = associate(SendTarget(*to(storescp)), [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])  # Verification
    try:
        assert session.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        session.close()


@pytest.mark.parametrize("fork", [True, False], ids=["storescp-fork", "storescp-one-association-at-a-time"])
def test_several_associations(tmp_path: Path, storescp_with: Callable[..., StoreSCP], fork: bool) -> None:
    """Worker processes claim instances once associated: a serial SCP still gets them all, once each."""
    scp = storescp_with("+xa", *(["--fork"] if fork else []))
    series = ct_series(tmp_path / "src", 80, size=32)
    uids = dcmtk_medium(tmp_path / "cd", series)
    report = import_medium(xorriso(tmp_path / "cd", tmp_path / "cd.iso"), destination=to(scp), associations=3)
    assert_all_arrived(report, scp.folder, uids)


def big_instance(path: Path, frames: int, scratch: Path, *, size: int = 512) -> Path:
    """A multi-frame 16-bit instance written piece by piece, never whole in memory (Multi-frame Grayscale Word SC)."""
    ds = dcmread(ct_series(scratch, 1, size=size)[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.NumberOfFrames = frames
    del ds.PixelData
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    frame = np.random.default_rng(frames).integers(-1000, 2000, (size, size), dtype=np.int16).tobytes()
    with open(path, "ab") as fp:  # (7FE0,0010) OW, explicit VR little endian (PS3.5 7.1.2)
        fp.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (len(frame) * frames).to_bytes(4, "little"))
        fp.writelines(frame[n % 7 :] + frame[: n % 7] for n in range(frames))  # every frame differs
    return path


@pytest.mark.parametrize("max_pdu", ["4096", "131072"])
def test_large_instances_are_fragmented_for_storescp(
    tmp_path: Path, storescp_with: Callable[..., StoreSCP], max_pdu: str
) -> None:
    """A 5 MB instance crosses several 1 MiB pieces and many PDUs; the 'last' flag lands on its end."""
    scp = storescp_with("+xa", "--max-pdu", max_pdu)
    sources = {uid_of(p): p for p in (big_instance(tmp_path / "cd" / "BIG", 10, tmp_path / "scratch"), *ct_series(tmp_path / "cd", 2))}
    report = import_medium(tmp_path / "cd", destination=to(scp))
    assert_all_arrived(report, scp.folder, sources)


def test_no_pdu_limit(tmp_path: Path, status_scp: Callable[..., StatusSCP]) -> None:
    scp = status_scp(max_pdu=0)  # PS3.8 D.1: 0, no maximum
    sources = {uid_of(p): p for p in (big_instance(tmp_path / "cd" / "BIG", 10, tmp_path / "scratch"), *ct_series(tmp_path / "cd", 2))}
    report = import_medium(tmp_path / "cd", destination=to(scp))
    assert_all_arrived(report, scp.folder, sources)


@pytest.mark.slow
def test_memory_stays_bounded_for_a_large_medium(tmp_path: Path, storescp: StoreSCP) -> None:
    """A 630 MB instance and 200 more, from a folder and from its ISO: the importing processes stay under 200 MB."""
    big = big_instance(tmp_path / "cd" / "DICOM" / "BIG", 1200, tmp_path / "scratch")
    ct_series(tmp_path / "cd" / "DICOM", 200)
    dcmmkdir(tmp_path / "cd")
    iso = xorriso(tmp_path / "cd", tmp_path / "cd.iso")
    program = (
        "import json, resource, sys\n"
        "from node.read.importer import import_medium\n"
        "r = import_medium(sys.argv[1], destination=('STORESCP', '127.0.0.1', int(sys.argv[2])), associations=3)\n"
        # VmHWM, not RUSAGE_SELF: ru_maxrss survives fork and exec, so it would count pytest's own peak
        "import re; own = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024\n"
        "usage = [own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024]\n"
        "print(json.dumps({'sent': r.sent, 'ok': r.ok, 'rss_mb': usage}))\n"
    )
    for target in (tmp_path / "cd", iso):
        for old in storescp.received():
            old.unlink()
        run = subprocess.run([sys.executable, "-c", program, str(target), str(storescp.port)],
                             capture_output=True, text=True, timeout=600, check=True)
        result = json.loads(run.stdout)
        assert (result["ok"], result["sent"]) == (True, 201), run.stderr
        assert max(result["rss_mb"]) < 200, result
        got = received(storescp.folder)[uid_of(big)]
        assert got.stat().st_size >= big.stat().st_size - 1024  # storescp rewrote only the File Meta


def test_several_associations_from_a_process_with_threads(tmp_path: Path, storescp: StoreSCP) -> None:
    """In ``serve`` other threads run: workers then come from a fork server, never a fork of a threaded process."""
    uids = dcmtk_medium(tmp_path / "cd", ct_series(tmp_path / "src", 60, size=32))
    report = import_unopened(tmp_path / "cd", [], destination=to(storescp), associations=3)  # runs in a thread
    assert_all_arrived(report, storescp.folder, uids)


# -- hostile media -------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_id", [["..", "OUTSIDE"], ["DICOM", "..", "..", "OUTSIDE"], ["/OUTSIDE"]])
def test_file_id_escaping_the_root_is_refused(
    medium: Path, storescp: StoreSCP, content_uids: dict[str, str], file_id: list[str]
) -> None:
    outside = fifo(medium.parent / "OUTSIDE")
    index = leaf_index(medium, "DICOM\\IM2")
    rewrite_dicomdir(medium, lambda ds: setattr(ds.DirectoryRecordSequence[index], "ReferencedFileID", file_id))
    report = import_unopened(medium, [outside], destination=to(storescp))
    refused = outcome(report, "/".join(file_id))
    assert (refused.result, refused.sop_instance_uid, refused.reason) == ("failed", content_uids["IM2"], ESCAPES_ROOT)
    # IM2 is still on the medium, unreferenced: the scan finds and sends it
    assert (report.ok, report.sent, report.failed) == (False, 4, 1)
    assert set(received(storescp.folder)) == set(content_uids.values())


def test_symlink_leading_out_is_refused(medium: Path, storescp: StoreSCP, content_uids: dict[str, str]) -> None:
    outside = fifo(medium.parent / "outside")
    (medium / "DICOM" / "IM2").unlink()
    (medium / "DICOM" / "IM2").symlink_to(outside)
    (medium / "DICOM" / "EXTRA").symlink_to(fifo(medium.parent / "extra"))  # unreferenced, out too
    report = import_unopened(medium, [outside, medium.parent / "extra"], destination=to(storescp))
    assert (report.ok, report.sent, report.failed) == (False, 3, 2)
    assert outcome(report, "DICOM/IM2") == Outcome("DICOM/IM2", content_uids["IM2"], "failed", None, ESCAPES_ROOT)
    assert outcome(report, "DICOM/EXTRA") == Outcome("DICOM/EXTRA", "", "failed", None, ESCAPES_ROOT)
    assert set(received(storescp.folder)) == {content_uids[n] for n in ("IM1", "IM3", "IM4")}


def test_missing_truncated_and_non_dicom_files(medium: Path, storescp: StoreSCP, content_uids: dict[str, str]) -> None:
    (medium / "DICOM" / "IM1").unlink()
    with open(medium / "DICOM" / "IM2", "r+b") as fp:
        fp.truncate(3000)
    (medium / "DICOM" / "IM3").write_bytes(b"\x89PNG\r\n" + bytes(500))
    (medium / "README.TXT").write_text("Images of one study.\r\n")
    report = import_medium(medium, destination=to(storescp))
    assert (report.ok, report.sent, report.failed, report.skipped) == (False, 1, 3, 0)
    assert report.outcomes == [
        Outcome("DICOM/IM1", content_uids["IM1"], "failed", None, "referenced by the DICOMDIR but missing"),
        Outcome("DICOM/IM2", content_uids["IM2"], "failed", None, "truncated: the file ends inside a data element"),
        Outcome("DICOM/IM3", content_uids["IM3"], "failed", None,
                "not a DICOM file: no 'DICM' prefix after the preamble (PS3.10 7.1)"),
        Outcome("DICOM/IM4", content_uids["IM4"], "sent", 0, "stored"),
    ]
    assert Finding("README.TXT", "not DICOM: README") in report.notes
    assert list(received(storescp.folder)) == [content_uids["IM4"]]


def test_no_dicomdir_and_lowercase_names(medium: Path, storescp: StoreSCP, content_uids: dict[str, str]) -> None:
    (medium / "DICOMDIR").unlink()
    (medium / "DICOM").rename(medium / "dicom")
    for name in CONTENT:
        (medium / "dicom" / name).rename(medium / "dicom" / name.lower())
    report = import_medium(medium, destination=to(storescp))
    assert (report.ok, report.sent) == (True, 4)
    assert Finding("DICOMDIR", "no DICOMDIR at the medium root") in report.problems
    assert Finding("dicom/im1", "not referenced by the DICOMDIR") in report.problems
    assert set(received(storescp.folder)) == set(content_uids.values())


def test_version_suffixes_trailing_dots_and_dcm_extensions(
    medium: Path, storescp: StoreSCP, content_uids: dict[str, str]
) -> None:
    index = leaf_index(medium, "DICOM\\IM3")
    rewrite_dicomdir(medium, lambda ds: setattr(ds.DirectoryRecordSequence[index], "ReferencedFileID",
                                                ["DICOM", "IM3.DCM"]))  # in the DICOMDIR only
    (medium / "DICOM" / "IM1").rename(medium / "DICOM" / "IM1.;1")
    (medium / "DICOMDIR").rename(medium / "DICOMDIR;1")
    (medium / "DICOM" / "IM2").rename(medium / "DICOM" / "im2.dcm")  # on disk only
    report = import_medium(medium, destination=to(storescp))
    assert (report.ok, report.sent, report.problems) == (True, 4, [])
    assert Finding("DICOM/im2.dcm", "name on the medium has lowercase letters and a '.dcm' extension; "
                                    "the File ID is DICOM/IM2") in report.notes
    assert Finding("DICOM/IM3", "name on the medium has no '.dcm' extension; the File ID is DICOM/IM3.DCM") in report.notes
    assert set(received(storescp.folder)) == set(content_uids.values())


def test_dicomdir_in_a_sub_folder(tmp_path: Path, storescp: StoreSCP, content_uids: dict[str, str]) -> None:
    build(tmp_path / "disc" / "PATIENT1", CONTENT)
    report = import_medium(tmp_path / "disc", destination=to(storescp))
    assert (report.ok, report.sent) == (True, 4)
    assert report.problems == [Finding("PATIENT1/DICOMDIR", "the DICOMDIR is not at the medium root (PS3.10 8.6): "
                                                            "its File IDs are read relative to PATIENT1/")]
    assert set(received(storescp.folder)) == set(content_uids.values())


def test_broken_offsets_fall_back_to_the_scan(medium: Path, storescp: StoreSCP, content_uids: dict[str, str]) -> None:
    set_offset(medium, 0, "OffsetOfTheNextDirectoryRecord", 12345)
    report = import_medium(medium, destination=to(storescp))
    assert (report.ok, report.sent) == (True, 4)
    assert Finding("DICOMDIR", "record offset 12345 points to no directory record") in report.problems
    assert set(received(storescp.folder)) == set(content_uids.values())


@pytest.mark.parametrize("files", [True, False], ids=["files-beside-it", "nothing-else"])
def test_empty_dicomdir(medium: Path, storescp: StoreSCP, content_uids: dict[str, str], files: bool) -> None:
    ds = dcmread(medium / "DICOMDIR")
    ds.DirectoryRecordSequence = []
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.save_as(medium / "DICOMDIR")
    if not files:
        shutil.rmtree(medium / "DICOM")
    report = import_medium(medium, destination=to(storescp))
    if files:
        assert (report.ok, report.sent) == (True, 4)
        assert set(received(storescp.folder)) == set(content_uids.values())
    else:
        assert (report.ok, report.sent, report.failed, report.outcomes) == (False, 0, 0, [])
        assert report.problems == [Finding(".", "nothing to import: no DICOM instance on the medium")]


def test_files_without_preamble_or_file_meta_are_repaired(medium: Path, storescp: StoreSCP) -> None:
    im1 = medium / "DICOM" / "IM1"
    data = im1.read_bytes()
    ds = dcmread(im1, stop_before_pixels=True)
    meta_end = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
    im1.write_bytes(data[meta_end:])  # the bare Explicit VR LE data set
    shutil.copyfile(bundled("ExplVR_LitEndNoMeta.dcm"), medium / "DICOM" / "BARE")  # unreferenced, too
    report = import_medium(medium, destination=to(storescp))
    assert (report.ok, report.sent) == (True, 5)
    assert outcome(report, "DICOM/IM1").reason == "stored (repaired: File Meta Information rebuilt)"
    assert Finding("DICOM/IM1", "no preamble or File Meta Information (PS3.10 7.1): read as a bare data set in "
                                "Explicit VR Little Endian") in report.problems
    got = received(storescp.folder)
    assert_same(got[str(ds.SOPInstanceUID)], sample("CT_small.dcm"))
    assert_same(got[uid_of(Path(bundled("ExplVR_LitEndNoMeta.dcm")))], Path(bundled("ExplVR_LitEndNoMeta.dcm")))


def test_file_meta_that_lies_about_the_encoding(medium: Path, storescp: StoreSCP, tmp_path: Path) -> None:
    """File Meta saying Explicit VR over an Implicit VR data set: sent in the syntax it is really in."""
    ds = dcmread(ct_series(tmp_path / "src", 1)[0])
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    source = tmp_path / "implicit.dcm"
    ds.save_as(source, enforce_file_format=True)
    meta = dcmread(source, stop_before_pixels=True).file_meta
    start = 132 + 12 + meta.FileMetaInformationGroupLength
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    encoded = DicomBytesIO()
    write_file_meta_info(encoded, meta, enforce_standard=True)
    (medium / "DICOM" / "LIAR").write_bytes(bytes(128) + b"DICM" + encoded.getvalue() + source.read_bytes()[start:])
    report = import_medium(medium, destination=to(storescp))
    assert (report.ok, report.sent) == (True, 5)
    assert outcome(report, "DICOM/LIAR").reason == "stored (repaired: File Meta Information rebuilt)"
    assert Finding("DICOM/LIAR", "the File Meta Information says Explicit VR Little Endian (1.2.840.10008.1.2.1) but "
                                 "the data set is in Implicit VR Little Endian") in report.notes
    assert_same(received(storescp.folder)[str(ds.SOPInstanceUID)], source)


def test_identifiers_that_are_no_uids_fail_alone(medium: Path, storescp: StoreSCP) -> None:
    ds = dcmread(medium / "DICOM" / "IM1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pydicom warns of the 74-character UID: the point
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2." + "3" * 70
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(medium / "DICOM" / "LONG")
    report = import_medium(medium, destination=to(storescp))
    assert (report.ok, report.sent, report.failed) == (False, 4, 1)
    assert outcome(report, "DICOM/LONG").reason.startswith("not sent: SOP Class UID '1.2.3333")
    assert any(f.path == "DICOM/LONG" and f.problem.startswith("pydicom: ") for f in report.notes)


def test_duplicate_sop_instance_uids(medium: Path, storescp: StoreSCP, content_uids: dict[str, str]) -> None:
    shutil.copyfile(medium / "DICOM" / "IM1", medium / "DICOM" / "COPY1")  # the same bytes
    changed = dcmread(medium / "DICOM" / "IM2")
    changed.PatientName = "SOMEONE^ELSE"
    changed.save_as(medium / "DICOM" / "OTHER2")  # the same UID, another data set
    report = import_medium(medium, destination=to(storescp))
    assert (report.ok, report.sent, report.skipped, report.conflicts) == (False, 4, 2, 1)
    assert outcome(report, "DICOM/COPY1").reason == "duplicate of DICOM/IM1: the same data set, sent once"
    conflict = (f"conflict: SOP Instance UID {content_uids['IM2']} is also in DICOM/IM2, with a different data set; "
                "only that one is sent")
    assert outcome(report, "DICOM/OTHER2").reason == conflict
    assert Finding("DICOM/OTHER2", conflict) in report.problems
    assert dcmread(received(storescp.folder)[content_uids["IM2"]]).PatientName == dcmread(medium / "DICOM" / "IM2").PatientName


def test_patient_and_study_filters(tmp_path: Path, storescp_with: Callable[..., StoreSCP]) -> None:
    first = ct_series(tmp_path / "src" / "a", 2, patient_id="P1")
    second = ct_series(tmp_path / "src" / "b", 3, patient_id="P1", name="DOE^JANE")
    third = ct_series(tmp_path / "src" / "c", 2, patient_id="P2", name="ROE^RICHARD")
    dcmtk_medium(tmp_path / "cd", [*first, *second, *third])
    study = str(dcmread(second[0]).StudyInstanceUID)
    cases = [({"patient": "P2"}, third), ({"study": study}, second), ({"patient": "P1", "study": study}, second),
             ({"patient": "P9"}, [])]
    for filters, wanted in cases:
        scp = storescp_with("+xa")
        report = import_medium(tmp_path / "cd", destination=to(scp), **filters)
        assert set(received(scp.folder)) == {uid_of(p) for p in wanted}, filters
        assert (report.sent, report.skipped, report.ok) == (len(wanted), 7 - len(wanted), bool(wanted))
    skipped = [o for o in report.outcomes if o.result == "skipped"]
    assert {o.reason for o in skipped} == {"not of the selected patient: Patient ID P1",
                                           "not of the selected patient: Patient ID P2"}
    assert report.problems[-1] == Finding(".", "nothing to import: no DICOM instance of the selected patient or "
                                               "study on the medium")


# -- the API's edges -----------------------------------------------------------------------------------


def test_usage_and_medium_errors(tmp_path: Path) -> None:
    assert parse_destination("PACS@pacs.example.org:11112") == ("PACS", "pacs.example.org", 11112)
    for bad in ("PACS", "PACS@host", "@host:104", "PACS@host:port", "A_TITLE_LONGER_THAN_16@h:104", "P@h:70000"):
        with pytest.raises(UsageError):
            parse_destination(bad)
    with pytest.raises(MediumError, match="cannot open"):
        import_medium(tmp_path / "nothing", destination=("PACS", "127.0.0.1", 104))
    with pytest.raises(UsageError):
        import_medium(tmp_path, destination=("PACS", "127.0.0.1", 104), calling_aet="BAD\\AET")


def test_command_line(medium: Path, storescp: StoreSCP, tmp_path: Path) -> None:
    """``medianode import``: --json with at least sent, failed, skipped and problems; exit 0, 1, 2; no traceback."""
    to_storescp = f"STORESCP@127.0.0.1:{storescp.port}"
    ok = cli("import", medium, "--to", to_storescp, "--json")
    assert ok.code == 0, ok.err
    printed = json.loads(ok.out)
    assert (printed["ok"], printed["sent"], printed["failed"], printed["skipped"], printed["problems"]) == (
        True, 4, 0, 0, [])
    (medium / "DICOM" / "IM1").unlink()
    broken = cli_process("import", medium, "--to", to_storescp)
    assert broken.code == 1
    assert "failed: DICOM/IM1: referenced by the DICOMDIR but missing" in broken.out
    assert "Traceback" not in broken.err
    assert cli("import", medium, "--to", "STORESCP@nowhere").code == 2
    port = free_port()  # nothing listens there: every instance fails alike, and says so once
    down = cli("import", medium, "--to", f"PACS@127.0.0.1:{port}")
    assert down.code == 1
    refused = [line for line in down.out.splitlines() if "cannot connect" in line]
    assert refused == [f"  failed: DICOM/IM2 and 2 others (--json names each): not sent: cannot connect to "
                       f"PACS@127.0.0.1:{port}: [Errno 111] Connection refused"]
    assert "  failed: DICOM/IM1: referenced by the DICOMDIR but missing" in down.out.splitlines()
    missing = cli_process("import", tmp_path / "nothing", "--to", to_storescp)
    assert (missing.code, missing.out, "Traceback" in missing.err) == (1, "", False)
    assert "nothing" in missing.err and len(missing.err.strip().splitlines()) == 1
