"""Data sets that are what they claim, Deflated data sets inflated within bounds, a full disk.

The walk (:func:`node.dcmio.check_complete`) at every cut point of a CT; the receiver refusing what it
finds (0xC002) and a disk that fills mid-transfer (0xA700) against real peers; ``check`` and ``import``
reporting the same files as problems and never sending them.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from node import dcmio, dicom
from node.read.check import check_medium
from node.read.importer import import_medium
from node.receive.instance import UnreadableDataSet, instance_of
from tests.conftest import PEER_ENV, StoreSCP, bundled, ct_series, need, tmpfs
from tests.test_check import CONTENT, build, sample, xorriso
from tests.test_import import big_instance, outcome, to
from tests.test_receive import Node as Receivers
from tests.test_receive import chunked_sends, dataset_bytes, pynetdicom_store, start_node, statuses  # noqa: F401 (fixtures)
from tests.test_serve import Node

#: Python that prints its process's peak resident memory in KiB (VmHWM: ru_maxrss would count pytest's, kept
#: across fork and exec).
PRINT_PEAK = "import re; print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
#: A Deflated data set that inflates to this much (the bomb of the table: 600 MB from about 0.6 MB).
BOMB_BYTES = 600 << 20


def pixel_data_offset(data: bytes) -> int:
    return data.index(b"\xe0\x7f\x10\x00OW")


def deflated_bomb(path: Path, *, inflated: int = BOMB_BYTES) -> Path:
    """A CT whose Pixel Data is ``inflated`` zero bytes, Deflated (PS3.5 A.5), never whole in memory."""
    (source,) = ct_series(path.parent / "bomb-source", 1)
    ds = dcmread(source, stop_before_pixels=True)
    body = dataset_bytes(source)
    header = body[:pixel_data_offset(body)] + b"\xe0\x7f\x10\x00OB\0\0" + inflated.to_bytes(4, "little")
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    with open(path, "wb") as fp:
        fp.write(dcmio.file_meta(CTImageStorage, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian))
        fp.write(z.compress(header))
        for _ in range(inflated >> 20):
            fp.write(z.compress(zeros))
        fp.write(z.flush())
    return path


# -- the walk -------------------------------------------------------------------------------------


def test_every_cut_of_a_ct_is_refused_but_at_element_boundaries(tmp_path: Path) -> None:
    """Before, ``check`` judged 200 of the 898 cut points of this header complete (and sent them); now only
    the element boundaries before Pixel Data pass (a data set may end there: pydicom's own test files
    include images without Pixel Data); the receiver and ``check`` still refuse those that lack a SOP
    Instance UID."""
    (path,) = ct_series(tmp_path, 1)
    data = path.read_bytes()
    assert dcmio.check_complete(path) is None
    pixels = pixel_data_offset(data)
    whole = [cut for cut in [*range(pixels + 12), *range(pixels + 12, len(data), 31)]
             if dcmio.check_complete(io.BytesIO(data[:cut]), cut) is None]
    assert all(cut <= pixels for cut in whole), whole
    assert len(whole) <= 30
    assert dcmio.check_complete(io.BytesIO(data[:-2]), len(data) - 2) == (
        "truncated: the file ends inside a data element")


def test_pixel_data_shorter_than_its_image_and_cut_fragments(tmp_path: Path) -> None:
    (path,) = ct_series(tmp_path, 1)
    data = bytearray(path.read_bytes())
    at = pixel_data_offset(data)
    data[at + 8:at + 12] = (64 * 64 * 2 - 2).to_bytes(4, "little")  # a length that fits, two bytes short
    short = bytes(data[:-2])
    assert dcmio.check_complete(io.BytesIO(short), len(short)) == (
        "truncated: Pixel Data holds 8190 bytes; Rows 64 x Columns 64 x Samples per Pixel 1 x Bits Allocated 16 "
        "x 1 frames need 8192")
    jpeg = Path(bundled("SC_rgb_jpeg_dcmtk.dcm")).read_bytes()
    assert dcmio.check_complete(io.BytesIO(jpeg), len(jpeg)) is None
    for cut in (len(jpeg) - 4, len(jpeg) - 500):  # in the delimiter, in the last fragment
        assert dcmio.check_complete(io.BytesIO(jpeg[:cut]), cut) == "truncated: the file ends inside a data element"


def test_every_bundled_file_that_pydicom_reads_whole_is_whole() -> None:
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "test-SR.dcm",
                 "rtplan.dcm", "waveform_ecg.dcm", "SC_ybr_full_422_uncompressed.dcm", "MR_small_RLE.dcm"):
        assert dcmio.check_complete(bundled(name)) is None, name
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        assert dcmio.check_complete(bundled(name)) == "truncated: the file ends inside a data element", name


def test_a_started_file_reads_as_its_file_and_from_memory_within_its_start(tmp_path: Path) -> None:
    """A receiver checks and reads the header of the data set it has just written from the start it kept in
    memory: the verdicts and the header are the file's whatever the start holds, and a start that covers the
    reads never opens the file."""
    (ct,) = ct_series(tmp_path, 1)
    files = [ct, *(Path(bundled(n)) for n in ("MR_small_implicit.dcm", "image_dfl.dcm", "SC_rgb_jpeg_dcmtk.dcm",
                                                "rtplan_truncated.dcm", "MR_truncated.dcm"))]
    for path in files:
        data = path.read_bytes()
        want = dcmio.check_complete(path), instance_or_why(path, io.BytesIO(data), len(data))
        for kept in (0, 7, 132, 333, 4096, len(data) // 2, len(data) - 1, len(data)):
            with dcmio.StartedFile(path, data[:kept], len(data)) as fp:
                got = dcmio.check_complete(fp, len(data)), instance_or_why(path, fp, len(data))
            assert got == want, (path.name, kept)
    gone = tmp_path / "gone.dcm"  # no file: every read must come from the start
    data = ct.read_bytes()
    with dcmio.StartedFile(gone, data, len(data)) as fp:
        assert dcmio.check_complete(fp, len(data)) is None
        assert instance_of(fp, len(data), gone).sop_instance_uid == dcmread(ct).SOPInstanceUID
    with dcmio.StartedFile(gone, data[:1000], len(data)) as fp, pytest.raises(FileNotFoundError):
        dcmio.check_complete(fp, len(data))


def instance_or_why(path: Path, fp: dcmio.Source, size: int) -> object:
    try:
        return instance_of(fp, size, path)
    except UnreadableDataSet as exc:
        return str(exc)


def test_a_deflated_bomb_is_refused_within_the_bounds(tmp_path: Path) -> None:
    bomb = deflated_bomb(tmp_path / "bomb.dcm")
    assert bomb.stat().st_size < 2 << 20
    code = ("import sys; from node import dcmio; print(dcmio.check_complete(sys.argv[1])); " + PRINT_PEAK)
    run = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, check=True)
    reason, peak_kib = run.stdout.splitlines()
    assert reason.startswith(dcmio.INFLATION_REFUSED + " 116 MiB from 6"), reason  # 200 times the deflated size
    assert int(peak_kib) < 32 << 10  # the interpreter and a few chunks (15 MiB), never the inflated data set
    honest = deflated_bomb(tmp_path / "small.dcm", inflated=8 << 20)  # a thousandfold, but small
    assert dcmio.check_complete(honest) is None


# -- the receiver ---------------------------------------------------------------------------------


def peak_kib(pid: int) -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))  # type: ignore[union-attr]


def test_truncated_data_sets_are_refused_and_removed(start_node: Callable[..., Receivers], tmp_path: Path,
                                                     chunked_sends: None) -> None:
    node = start_node()
    (path,) = ct_series(tmp_path / "ct", 1)
    data = path.read_bytes()
    cuts = {"in a value of the header": 600, "in the Pixel Data header": pixel_data_offset(data) + 6,
            "in the Pixel Data": len(data) - 1000}
    for what, cut in cuts.items():
        sent = tmp_path / f"cut-{cut}.dcm"
        sent.write_bytes(data[:cut])
        assert pynetdicom_store(node.port, sent, CTImageStorage, ExplicitVRLittleEndian) == dicom.CANNOT_PARSE, what
        node.assert_nothing_kept()
    assert pynetdicom_store(node.port, path, CTImageStorage, ExplicitVRLittleEndian) == dicom.SUCCESS


def test_a_deflated_bomb_is_refused_without_inflating_it(start_node: Callable[..., Receivers], tmp_path: Path,
                                                         chunked_sends: None) -> None:
    node = start_node(workers=1)
    (receiver,) = node.receivers
    bomb = deflated_bomb(tmp_path / "bomb.dcm")
    before = peak_kib(receiver.pid)
    assert pynetdicom_store(node.port, bomb, CTImageStorage, DeflatedExplicitVRLittleEndian) == dicom.CANNOT_PARSE
    node.assert_nothing_kept()
    assert peak_kib(receiver.pid) - before < 64 << 10
    fine = deflated_bomb(tmp_path / "fine.dcm", inflated=1 << 20)
    assert pynetdicom_store(node.port, fine, CTImageStorage, DeflatedExplicitVRLittleEndian) == dicom.SUCCESS


# -- media ----------------------------------------------------------------------------------------


def test_check_and_import_report_a_cut_file_and_never_send_it(tmp_path: Path, storescp: StoreSCP) -> None:
    """CT_small cut in its header where check and import took it for complete (and sent it)."""
    root = build(tmp_path / "cd", CONTENT)
    data = sample("CT_small.dcm").read_bytes()
    (root / "DICOM" / "IM1").write_bytes(data[:3000])
    reason = "truncated: the file ends inside a data element"
    for medium in (root, xorriso(root, tmp_path / "cd.iso")):
        report = check_medium(medium)
        assert [(f.path, f.problem) for f in report.problems] == [("DICOM/IM1", reason)]
    imported = import_medium(root, destination=to(storescp))
    assert (imported.sent, imported.failed) == (3, 1)
    assert outcome(imported, "DICOM/IM1").reason == reason
    uid = dcmread(sample("CT_small.dcm"), stop_before_pixels=True).SOPInstanceUID
    assert uid not in {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in storescp.received()}


def test_check_refuses_a_deflated_bomb_without_inflating_it(tmp_path: Path) -> None:
    root = build(tmp_path / "cd", {"IM1": "CT_small.dcm"})
    deflated_bomb(root / "DICOM" / "IM2")
    code = ("import sys; from node.read.check import check_medium; r = check_medium(sys.argv[1]); "
            "print(r.problems[0].problem); " + PRINT_PEAK)
    run = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    problem, peak = run.stdout.splitlines()
    assert problem.startswith(dcmio.INFLATION_REFUSED), problem
    assert int(peak) < 128 << 10  # the interpreter and pydicom; pydicom alone would take 1.2 GB


def test_reading_a_200_mb_instance_from_a_medium_costs_little_memory(tmp_path: Path, storescp: StoreSCP) -> None:
    """``check`` and ``import`` of a 200 MiB CT from an ISO image, against the same of a 128 KiB one:
    each streams the instance, so the peaks differ by a few MiB, not by the instance."""
    code = ("import sys; from node.read.check import check_medium; from node.read.importer import import_medium; "
            "r = check_medium(sys.argv[1]); assert r.ok, r.problems; "
            "i = import_medium(sys.argv[1], destination=(sys.argv[2], '127.0.0.1', int(sys.argv[3]))); "
            "assert (i.sent, i.failed) == (1, 0); " + PRINT_PEAK)
    peaks = {}
    for size in (10240, 256):  # 10240 x 10240 x 2 bytes of Pixel Data: 200 MiB
        src = ct_series(tmp_path / f"src{size}", 1, size=size)[0].parent
        iso = tmp_path / f"ct{size}.iso"
        subprocess.run([sys.executable, "-m", "node", "burn", str(src), "--out", str(iso)], check=True,
                       capture_output=True)
        run = subprocess.run([sys.executable, "-c", code, str(iso), storescp.aet, str(storescp.port)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        peaks[size] = int(run.stdout)
    assert len(storescp.received()) == 2
    assert peaks[10240] - peaks[256] < 16 << 10, peaks  # KiB


# -- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs to hold the node's data_dir."""
    with tmpfs(tmp_path / "var", "16m") as where:
        yield where


def test_a_disk_that_fills_mid_transfer_is_answered_out_of_resources(tmp_path: Path, small_disk: Path) -> None:
    need("echoscu", "storescu")
    big = big_instance(tmp_path / "big" / "mf.dcm", 48, tmp_path / "scratch")  # 24 MiB: more than the disk
    node = Node(tmp_path)
    assert node.data == small_disk
    node.start()
    try:
        def send(path: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["storescu", "-d", "-aec", "MEDIANODE", "-aet", "CT1", "127.0.0.1", str(node.port),
                                   str(path)], capture_output=True, text=True, env=PEER_ENV, timeout=120)

        sent = send(big)
        assert re.findall(r"DIMSE Status\s*: 0x(A70[01])", sent.stdout + sent.stderr, re.I), sent.stdout[-3000:]
        assert "No space left on device" in sent.stdout + sent.stderr  # the Error Comment
        assert list((small_disk / "tmp").iterdir()) == []
        assert "Traceback" not in node.logs()
        assert "No space left on device" in node.logs()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
        again = send(big)
        assert statuses(again) == [dicom.SUCCESS], again.stdout[-3000:]
    finally:
        node.stop(signal.SIGTERM)
    assert "Traceback" not in node.logs()
    os.sync()
