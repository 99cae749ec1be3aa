"""``medianode burn`` against real readers: dciodvfy, DCMTK, xorriso, pydicom's FileSet."""

from __future__ import annotations

import gc
import json
import os
import sys
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.fileset import FileSet

from node import dicom, pixels
from node.media import udf
from tests.conftest import PEER_ENV, StoreSCP, bundled, cli, cli_process, ct_series, need, tmpfs

#: pydicom's real-world files, one per SOP Instance UID: CT, MR, RGB, multi-frame, palette,
#: JPEG / J2K / RLE / Deflate / Big Endian / Implicit VR inputs, SR, ECG, RT.
REAL_WORLD = [
    "CT_small.dcm",
    "MR_small_RLE.dcm",
    "rtdose.dcm",
    "rtplan.dcm",
    "rtstruct.dcm",
    "waveform_ecg.dcm",
    "test-SR.dcm",
    "examples_palette.dcm",
    "examples_rgb_color.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "JPEG-lossy.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPEG2000.dcm",
    "image_dfl.dcm",
    "liver_1frame.dcm",
    "ExplVR_BigEnd.dcm",
]
CHARSETS = ["chrGerm.dcm", "chrJapMulti.dcm", "chrKoreanMulti.dcm", "chrGreek.dcm", "chrRuss.dcm", "chrX1.dcm", "chrH31.dcm"]


def extract(iso: Path, dest: Path) -> Path:
    """Unpack an image with xorriso, the way a reader without our code sees it."""
    need("xorriso")
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(dest)],
                   check=True, capture_output=True)
    return dest


def dciodvfy_errors(path: Path) -> set[str]:
    need("dciodvfy")
    p = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, encoding="latin-1")
    return {line.strip() for line in (p.stdout + p.stderr).splitlines() if line.startswith("Error")}


def by_uid(root: Path) -> dict[str, Path]:
    """SOP Instance UID -> file, for every leaf record of a medium's DICOMDIR."""
    records = dcmread(root / "DICOMDIR").DirectoryRecordSequence
    return {r.ReferencedSOPInstanceUIDInFile: root.joinpath(*r.ReferencedFileID) for r in records if "ReferencedFileID" in r}


@pytest.fixture(scope="module")
def real_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """pydicom's real-world files burned once to STD-GEN-CD: (sources, medium root, uid -> source)."""
    src = tmp_path_factory.mktemp("src")
    for name in REAL_WORLD + CHARSETS:
        shutil.copy(bundled(name), src / name)
    (src / "notes.txt").write_text("not DICOM")
    iso = src.parent / "real.iso"
    result = cli("burn", src, "--out", iso, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["refused"] == []
    assert report["skipped"] == [{"path": str(src / "notes.txt"), "reason": "not DICOM (no DICOM preamble or dataset)"}]
    uids = {str(dcmread(src / n, stop_before_pixels=True, force=True).SOPInstanceUID): str(src / n) for n in REAL_WORLD + CHARSETS}
    return src, extract(iso, src.parent / "medium"), uids


def test_every_instance_is_listed_once_by_pydicom(real_world: tuple[Path, Path, dict[str, str]]) -> None:
    _, root, uids = real_world
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = FileSet(root / "DICOMDIR")
        listed = sorted(str(i.SOPInstanceUID) for i in fs)
        del fs
        gc.collect()  # FileSet's staging TemporaryDirectory, cleaned while warnings are caught
    assert [str(w.message) for w in caught if w.filename.endswith("fileset.py")] == []  # it warns when it drops one
    assert listed == sorted(uids)
    found = by_uid(root)
    assert all(dicom.is_conformant_file_id(p.relative_to(root).parts) for p in found.values())


def test_dicomdir_and_files_pass_dciodvfy(real_world: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    """No error in the DICOMDIR; no error in a file that its input did not have.

    dciodvfy cannot read Deflate; such an input is judged by DCMTK's own
    Explicit VR conversion of it (``dcmconv +te``).
    """
    _, root, uids = real_world
    assert dciodvfy_errors(root / "DICOMDIR") == set()
    for uid, out in by_uid(root).items():
        reference = Path(uids[uid])
        if dcmread(reference, stop_before_pixels=True, force=True).file_meta.get("TransferSyntaxUID") == dicom.DEFLATED_LE:
            subprocess.run(["dcmconv", "+te", str(reference), str(tmp_path / "ref.dcm")], check=True)
            reference = tmp_path / "ref.dcm"
        introduced = dciodvfy_errors(out) - dciodvfy_errors(reference)
        assert not introduced, f"{uids[uid]}: {introduced}"


def test_dcmtk_sends_every_instance_from_the_dicomdir(real_world: tuple[Path, Path, dict[str, str]], storescp: StoreSCP) -> None:
    _, root, uids = real_world
    need("dcmsend", "dcmdump")
    subprocess.run(["dcmdump", str(root / "DICOMDIR")], check=True, capture_output=True)
    p = subprocess.run(["dcmsend", "-aec", storescp.aet, "--read-from-dicomdir", "127.0.0.1", str(storescp.port),
                        str(root / "DICOMDIR")], capture_output=True, text=True, env=PEER_ENV, timeout=120)
    assert p.returncode == 0, p.stderr
    received = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in storescp.received()}
    assert received == set(uids)


def test_pixels_and_file_meta_survive(real_world: tuple[Path, Path, dict[str, str]]) -> None:
    _, root, uids = real_world
    pixels.register()
    for uid, out in by_uid(root).items():
        src, dst = dcmread(uids[uid], force=True), dcmread(out)
        assert dst.file_meta.TransferSyntaxUID == dicom.EXPLICIT_VR_LE
        assert dst.file_meta.MediaStorageSOPClassUID == dst.SOPClassUID == src.SOPClassUID
        assert dst.file_meta.MediaStorageSOPInstanceUID == dst.SOPInstanceUID == uid
        assert dst.file_meta.ImplementationClassUID == dicom.MEDIANODE_CLASS_UID
        if "PixelData" in src:
            assert np.array_equal(dst.pixel_array, src.pixel_array), uids[uid]
        if src.file_meta.get("TransferSyntaxUID") == dicom.EXPLICIT_VR_LE and "PixelData" in src:
            assert dst.PixelData == src.PixelData  # kept byte for byte
    lossy = dcmread(next(p for u, p in by_uid(root).items() if uids[u].endswith("SC_rgb_jpeg_dcmtk.dcm")))
    assert (lossy.PhotometricInterpretation, lossy.LossyImageCompression) == ("RGB", "01")


def test_records_carry_their_character_set(real_world: tuple[Path, Path, dict[str, str]]) -> None:
    src, root, _ = real_world
    dicomdir = dcmread(root / "DICOMDIR")
    patients = {str(r.PatientName): r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"}
    for name in CHARSETS:
        ds = dcmread(src / name)
        record = patients[str(ds.PatientName)]  # decoded through the record's own charset
        assert record.get("SpecificCharacterSet") == ds.get("SpecificCharacterSet")
    plain = patients[str(dcmread(src / "CT_small.dcm").PatientName)]
    assert "SpecificCharacterSet" not in plain


def test_leaf_record_types(real_world: tuple[Path, Path, dict[str, str]]) -> None:
    _, root, uids = real_world
    types = {r.ReferencedSOPInstanceUIDInFile: r.DirectoryRecordType
             for r in dcmread(root / "DICOMDIR").DirectoryRecordSequence if "ReferencedSOPInstanceUIDInFile" in r}
    by_name = {Path(uids[u]).name: t for u, t in types.items()}
    assert by_name["waveform_ecg.dcm"] == "WAVEFORM"
    assert by_name["test-SR.dcm"] == "SR DOCUMENT"
    assert by_name["rtplan.dcm"] == "RT PLAN"
    assert by_name["rtdose.dcm"] == "RT DOSE"
    assert by_name["rtstruct.dcm"] == "RT STRUCTURE SET"
    assert by_name["CT_small.dcm"] == "IMAGE"


def test_inventions_are_deterministic_and_reported(tmp_path: Path) -> None:
    ct_series(tmp_path / "a", 3, patient_id="", StudyID="", SeriesNumber="", InstanceNumber="")
    ct_series(tmp_path / "b", 2, patient_id="", name="ROE^RICHARD", birth="19800101")
    reports = []
    for n in (1, 2):
        result = cli("burn", tmp_path / "a", tmp_path / "b", "--out", tmp_path / f"{n}.iso", "--json")
        assert result.code == 0, result.err
        reports.append(json.loads(result.out)["invented"])
    assert reports[0] == reports[1]
    text = "\n".join(reports[0])
    assert len(re.findall(r"Patient ID MN\w+ invented", text)) == 2
    assert "Study ID" in text and "Series Number 1" in text and "Instance Number 1" in text
    root = extract(tmp_path / "1.iso", tmp_path / "m")
    records = dcmread(root / "DICOMDIR").DirectoryRecordSequence
    assert all(r.PatientID.startswith("MN") for r in records if r.DirectoryRecordType == "PATIENT")
    assert dciodvfy_errors(root / "DICOMDIR") == set()


def test_two_patients_sharing_an_id_are_refused_unless_asked(tmp_path: Path) -> None:
    ct_series(tmp_path / "src" / "a", 2, patient_id="123", name="DOE^JANE")
    ct_series(tmp_path / "src" / "b", 2, patient_id="123", name="ROE^RICHARD")
    out = tmp_path / "x.iso"
    refused = cli("burn", tmp_path / "src", "--out", out)
    assert refused.code == 1
    assert "DOE^JANE" in refused.err and "ROE^RICHARD" in refused.err and "--invent-patient-id" in refused.err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]  # no staging or partial output left

    ok = cli("burn", tmp_path / "src", "--out", out, "--invent-patient-id", "--json")
    assert ok.code == 0, ok.err
    root = extract(out, tmp_path / "m")
    ids = {r.PatientID for r in dcmread(root / "DICOMDIR").DirectoryRecordSequence if r.DirectoryRecordType == "PATIENT"}
    assert len(ids) == 2 and "123" in ids
    for path in by_uid(root).values():  # the file agrees with its record
        ds = dcmread(path, stop_before_pixels=True)
        assert ds.PatientID in ids
        if ds.PatientID != "123":
            assert ds.OtherPatientIDsSequence[-1].PatientID == "123"


def test_profiles_keep_allowed_syntaxes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm"):
        shutil.copy(bundled(name), src)
    expectations = {
        "STD-GEN-DVD-JPEG": {"SC_rgb_jpeg_dcmtk.dcm": dicom.JPEG_BASELINE, "MR_small_implicit.dcm": dicom.EXPLICIT_VR_LE,
                             "JPEG2000.dcm": dicom.EXPLICIT_VR_LE},
        "STD-GEN-DVD-J2K": {"SC_rgb_jpeg_dcmtk.dcm": dicom.EXPLICIT_VR_LE, "JPEG2000.dcm": dicom.J2K},
        "AUG-GEN-CD": {"SC_rgb_jpeg_dcmtk.dcm": dicom.JPEG_BASELINE, "MR_small_implicit.dcm": dicom.IMPLICIT_VR_LE,
                       "JPEG2000.dcm": dicom.J2K},
        "STD-GEN-BD": {"SC_rgb_jpeg_dcmtk.dcm": dicom.EXPLICIT_VR_LE, "MR_small_implicit.dcm": dicom.EXPLICIT_VR_LE},
    }
    uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.name for p in src.iterdir()}
    for profile, wanted in expectations.items():
        out = tmp_path / f"{profile}.iso"
        result = cli("burn", src, "--out", out, "--profile", profile)
        assert result.code == 0, result.err
        if profile == "STD-GEN-BD":  # UDF 2.60 (PS3.12 Annex X), read by udftools and our own reader
            need("udfinfo")
            info = subprocess.run(["udfinfo", str(out)], capture_output=True, text=True, check=True).stdout
            assert "udfrev=2.60" in info
            assert len(udf.read_listing(out)) == 1 + len(uids)  # the DICOMDIR and every instance
            continue
        root = extract(out, tmp_path / profile)
        syntaxes = {uids[r.ReferencedSOPInstanceUIDInFile]: r.ReferencedTransferSyntaxUIDInFile
                    for r in dcmread(root / "DICOMDIR").DirectoryRecordSequence if "ReferencedFileID" in r}
        for name, ts in wanted.items():
            assert syntaxes[name] == ts, (profile, name)


def test_usb_profile_writes_a_folder(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 3)
    out = tmp_path / "stick"
    result = cli("burn", tmp_path / "src", "--out", out, "--profile", "STD-GEN-USB-JPEG")
    assert result.code == 0, result.err
    assert (out / "DICOMDIR").is_file() and len(by_uid(out)) == 3
    assert cli("burn", tmp_path / "src", "--out", tmp_path / "s.iso", "--profile", "STD-GEN-USB-J2K").code == 2


def storage_reads() -> int:
    """Bytes this process has had read from storage (``/proc/self/io``, Linux), not from the page cache."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["read_bytes"])


@pytest.mark.parametrize("profile", ["STD-GEN-CD", "STD-GEN-DVD-RAM"])
def test_the_image_is_read_back_from_the_disk(tmp_path: Path, profile: str) -> None:
    """The read-back verify reads what the disk returns, not the page cache the image was written into:
    this process reads from storage at least the instances compared (the sources, just written, are
    cached; a UDF image's unwritten sectors are holes, never read)."""
    ct_series(tmp_path / "src", 4)
    instances = sum(p.stat().st_size for p in (tmp_path / "src").iterdir())
    before = storage_reads()
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "disc.iso", "--profile", profile)
    assert result.code == 0, result.err
    assert storage_reads() - before >= instances


def test_label_is_adjusted_and_reported(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 1)
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "x.iso", "--label", "Knee MRI 2024/05 for Dr. Who and friends", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["volume_id"] == "KNEE_MRI_2024_05_FOR_DR__WHO_AND"
    assert any("File-set ID" in a for a in report["adjusted"])
    p = subprocess.run(["isoinfo", "-d", "-i", str(tmp_path / "x.iso")], capture_output=True, text=True, check=True)
    assert "Volume id: KNEE_MRI_2024_05_FOR_DR__WHO_AND" in p.stdout
    assert dcmread(extract(tmp_path / "x.iso", tmp_path / "m") / "DICOMDIR").FileSetID == "KNEE_MRI_2024_05"


# -- bad input: one line, the exit code of DESIGN.md, nothing half-written ---------------------


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 1)
    result = cli_process("burn", tmp_path / "src", "--out", tmp_path / "x.iso", "--profile", "STD-GEN-BR")
    assert result.code == 2
    _no_traceback(result.err)
    assert "STD-GEN-BR" in result.err and "STD-GEN-CD" in result.err
    assert not (tmp_path / "x.iso").exists()


def test_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    result = cli_process("burn", tmp_path / "nowhere", "--out", tmp_path / "x.iso")
    assert result.code == 2
    _no_traceback(result.err)


def test_no_dicom_input_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("hello")
    result = cli_process("burn", tmp_path / "src", "--out", tmp_path / "x.iso")
    assert result.code == 1
    _no_traceback(result.err)
    assert "no DICOM instance" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_undecodable_instance_is_refused_and_listed(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 2)
    bad = dcmread(bundled("MR_small.dcm"))
    bad.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
    bad.PixelData = encapsulate([b"\0\0\1\xb3 not really MPEG"])
    bad["PixelData"].VR = "OB"
    bad.save_as(tmp_path / "src" / "mpeg.dcm")
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "x.iso", "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert [r["path"] for r in report["refused"]] == [str(tmp_path / "src" / "mpeg.dcm")]
    assert "cannot be decoded" in report["refused"][0]["reason"]
    assert report["instances"] == 2 and (tmp_path / "x.iso").exists()


def test_set_too_big_for_the_medium_is_refused(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 1)
    big = tmp_path / "src" / "big.dcm"
    ds = dcmread(next((tmp_path / "src").iterdir()))
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.8"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = b""
    ds.save_as(big)
    with open(big, "r+b") as f:  # a sparse 800 MB Pixel Data: bigger than a CD, cheap to make
        f.seek(-4, 2)
        f.write((800_000_000).to_bytes(4, "little"))
        f.truncate(f.tell() + 800_000_000)
    result = cli_process("burn", tmp_path / "src", "--out", tmp_path / "x.iso")
    assert result.code == 1
    _no_traceback(result.err)
    assert "360,000" in result.err and "STD-GEN-CD" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_output_under_a_regular_file_cannot_be_written(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 1)
    (tmp_path / "file").write_text("x")
    result = cli_process("burn", tmp_path / "src", "--out", tmp_path / "file" / "x.iso")
    assert result.code == 1
    _no_traceback(result.err)


def test_existing_output_is_never_overwritten(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 1)
    (tmp_path / "x.iso").write_bytes(b"precious")
    result = cli_process("burn", tmp_path / "src", "--out", tmp_path / "x.iso")
    assert result.code == 1
    _no_traceback(result.err)
    assert (tmp_path / "x.iso").read_bytes() == b"precious"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs."""
    with tmpfs(tmp_path / "small", "2m") as mnt:
        yield mnt


@pytest.mark.parametrize("fmt", ["iso", "folder"])
def test_full_disk_leaves_nothing_behind(tmp_path: Path, small_fs: Path, fmt: str) -> None:
    ct_series(tmp_path / "src", 20, size=256)  # 2.6 MB: more than the 2 MB file system holds
    shutil.copy(tmp_path / "src" / "ct0000.dcm", small_fs / "keep.dcm")
    out = small_fs / ("x.iso" if fmt == "iso" else "x")
    result = cli_process("burn", tmp_path / "src", "--out", out, "--format", fmt)
    assert result.code == 1
    _no_traceback(result.err)
    assert sorted(p.name for p in small_fs.iterdir()) == ["keep.dcm"]


@pytest.mark.parametrize("fmt", ["iso", "folder"])
def test_check_says_ok_on_what_burn_made(real_world: tuple[Path, Path, dict[str, str]], tmp_path: Path, fmt: str) -> None:
    src, _, uids = real_world
    out = tmp_path / ("x.iso" if fmt == "iso" else "x")
    assert cli("burn", src, "--out", out, "--format", fmt).code == 0
    result = cli("check", out, "--json", "--profile", "STD-GEN-CD")
    report = json.loads(result.out)
    assert result.code == 0 and report["ok"] is True, report["problems"]
    assert report["instances"] == len(uids)
    plain = json.loads(cli("check", out, "--json").out)
    assert "STD-GEN-CD" in plain["profiles"]


def test_a_terminal_shows_a_progress_bar(tmp_path: Path) -> None:
    """On a tty, stderr shows the bar up to 100 %; elsewhere it stays quiet (the one-line tests above)."""
    import pty

    ct_series(tmp_path / "src", 3)
    pid, fd = pty.fork()
    if pid == 0:  # the child: medianode on a pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-m", "node", "burn", str(tmp_path / "src"), "--out", str(tmp_path / "x.iso")])
    seen = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(fd)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert b"] 100%" in seen and (tmp_path / "x.iso").exists()
