"""``check``: media built by DCMTK and mastered by xorriso, then broken one way at a time.

Real peers only: dcmmkdir writes the DICOMDIR, xorriso the ISO images, pydicom
edits records. Paths escaping the root point at FIFOs, so a reader that opened
one would block; the check runs in a thread that must finish.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID

from node.errors import MediumError
from node.profiles import PROFILES
from node.read.check import CheckReport, Finding, check_medium
from node.read.medium import ESCAPES_ROOT, NOT_FOLLOWED, RefusedPath, open_medium

#: The clean medium: ISO-safe File ID -> pydicom test file (all Explicit VR Little Endian).
CONTENT = {
    "IM1": "CT_small.dcm",
    "IM2": "MR_small.dcm",
    "IM3": "SC_rgb_small_odd.dcm",
    "IM4": "waveform_ecg.dcm",  # no pixel data; a 280 KiB Waveform Sequence
}
CT_UID = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"  # SOP Instance UID of CT_small.dcm
#: The DICOMDIR attributes holding record offsets (PS3.3 F.3.2.1, F.3.2.2).
OFFSETS = (
    "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity",
    "OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity",
    "OffsetOfTheNextDirectoryRecord",
    "OffsetOfReferencedLowerLevelDirectoryEntity",
)


def sample(name: str) -> Path:
    found = get_testdata_file(name, download=False)
    assert found, f"pydicom test file {name} is not installed"
    return Path(str(found))


def dcmmkdir(root: Path, *profile: str) -> None:
    """Write root/DICOMDIR for root/DICOM with DCMTK (General Purpose CD-R by default)."""
    args = list(profile) or ["--general-purpose"]
    subprocess.run(
        ["dcmmkdir", *args, "+r", "+I", "+id", str(root), "+D", str(root / "DICOMDIR"), "DICOM"],
        check=True,
        capture_output=True,
    )


def build(root: Path, content: dict[str, str], *profile: str) -> Path:
    (root / "DICOM").mkdir(parents=True)
    for name, source in content.items():
        shutil.copyfile(sample(source), root / "DICOM" / name)
    dcmmkdir(root, *profile)
    return root


def xorriso(folder: Path, iso: Path, *options: str) -> Path:
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-iso-level", "1", *options, "-o", str(iso), str(folder)],
        check=True,
        capture_output=True,
    )
    return iso


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("pristine") / "cd", CONTENT)


@pytest.fixture
def medium(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean medium, for one test to break."""
    return Path(shutil.copytree(pristine, tmp_path / "cd", symlinks=True))


def records(root: Path) -> list[Dataset]:
    return list(dcmread(root / "DICOMDIR").DirectoryRecordSequence)


def leaf_index(root: Path, file_id: str) -> int:
    return next(
        i for i, r in enumerate(records(root)) if "\\".join(r.get("ReferencedFileID", [])) == file_id
    )


def rewrite_dicomdir(root: Path, edit: Callable[[Dataset], None]) -> None:
    """Edit the DICOMDIR with pydicom, then re-point every record offset at its moved record."""
    path = root / "DICOMDIR"
    ds = dcmread(path)
    before = [item.seq_item_tell for item in ds.DirectoryRecordSequence]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # hostile values are the point
        edit(ds)
    ds.save_as(path)
    after = [item.seq_item_tell for item in dcmread(path).DirectoryRecordSequence]
    moved = dict(zip(before, after, strict=True)) | {0: 0}
    for item in [ds, *ds.DirectoryRecordSequence]:
        for keyword in OFFSETS:
            if keyword in item:
                setattr(item, keyword, moved[getattr(item, keyword)])
    ds.save_as(path)


def set_offset(root: Path, index: int | None, keyword: str, value: int) -> None:
    """Overwrite one offset in place (UP values keep their size, so nothing else moves)."""
    rewrite_dicomdir(root, lambda ds: None)  # pydicom's layout, so the next save keeps offsets
    path = root / "DICOMDIR"
    ds = dcmread(path)
    target = ds if index is None else ds.DirectoryRecordSequence[index]
    setattr(target, keyword, value)
    ds.save_as(path)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def check_unopened(path: Path, fifos: list[Path]) -> CheckReport:
    """Check ``path``; fail if the reader blocks on one of ``fifos`` (i.e. opened it)."""
    result: list[CheckReport] = []
    worker = threading.Thread(target=lambda: result.append(check_medium(path)), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        for target in fifos:  # let a blocked reader go, then fail
            try:
                os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        worker.join(5)
        pytest.fail("the check opened a path outside the medium root")
    return result[0]


# -- clean media ---------------------------------------------------------------------


def test_clean_folder_is_ok(medium: Path) -> None:
    report = check_medium(medium)
    assert (report.ok, report.instances, report.problems, report.notes) == (True, 4, [], [])
    assert "STD-GEN-CD" in report.profiles
    assert json.loads(json.dumps(report.to_dict())) == {
        "ok": True, "instances": 4, "problems": [], "notes": [], "profiles": report.profiles,
        "medium": "folder", "warnings": [],
    }


@pytest.mark.parametrize(
    "options", [(), ("-J",), ("-R",), ("-J", "-R")], ids=["iso9660", "joliet", "rr", "joliet+rr"]
)
def test_clean_iso_is_ok(medium: Path, tmp_path: Path, options: tuple[str, ...]) -> None:
    iso = xorriso(medium, tmp_path / "x.iso", *options)
    report = check_medium(iso)
    assert (report.ok, report.instances, report.problems, report.notes) == (True, 4, [], [])
    with open_medium(iso) as opened:
        assert opened.files() == ["DICOM/IM1", "DICOM/IM2", "DICOM/IM3", "DICOM/IM4", "DICOMDIR"]


def test_plain_iso_names_carry_versions_that_are_stripped(medium: Path, tmp_path: Path) -> None:
    iso = xorriso(medium, tmp_path / "x.iso")
    listing = subprocess.run(["isoinfo", "-f", "-i", str(iso)], check=True, capture_output=True, text=True)
    assert "/DICOM/IM1.;1" in listing.stdout.split()
    with open_medium(iso) as opened:
        assert opened.resolve(["DICOM", "IM1"]) == "DICOM/IM1"
        with opened.open("DICOM/IM4") as fp:  # streamed from the image
            fp.seek(128)
            assert fp.read(4) == b"DICM"
        assert opened.size("DICOM/IM4") == sample("waveform_ecg.dcm").stat().st_size


def test_profile_rules(medium: Path, tmp_path: Path) -> None:
    assert check_medium(medium, profile=PROFILES["STD-GEN-CD"]).ok
    jpeg = build(tmp_path / "dvd", {"IM1": "SC_rgb_jpeg_dcmtk.dcm"}, "--general-dvd-jpeg")
    assert check_medium(jpeg).profiles == ["STD-GEN-DVD-JPEG", "STD-GEN-USB-JPEG", "STD-GEN-BD-JPEG"]
    assert check_medium(jpeg, profile=PROFILES["STD-GEN-CD"]).problems == [
        Finding(
            "DICOM/IM1",
            "transfer syntax JPEG Baseline (Process 1) (1.2.840.10008.1.2.4.50) "
            "is not allowed by STD-GEN-CD for IMAGE records",
        )
    ]
    assert check_medium(jpeg, profile=PROFILES["STD-GEN-DVD-JPEG"]).ok


def test_non_conformant_file_id(medium: Path) -> None:
    (medium / "DICOM" / "IM1").rename(medium / "DICOM" / "IM1.DCM")
    index = leaf_index(medium, "DICOM\\IM1")
    rewrite_dicomdir(
        medium, lambda ds: setattr(ds.DirectoryRecordSequence[index], "ReferencedFileID", ["DICOM", "IM1.DCM"])
    )
    plain = check_medium(medium)
    assert (plain.ok, plain.profiles) == (True, [])
    assert check_medium(medium, profile=PROFILES["STD-GEN-CD"]).problems == [
        Finding(
            "DICOM/IM1.DCM",
            "File ID DICOM/IM1.DCM does not conform to PS3.10 8.2 "
            "(at most 8 components of 1-8 characters A-Z, 0-9, _)",
        )
    ]


# -- notes: legitimate or merely odd -------------------------------------------------


def test_non_dicom_files_are_notes(medium: Path) -> None:
    (medium / "README.TXT").write_text("Images of one study.\r\n")
    (medium / "INDEX.HTM").write_text("<html></html>")
    (medium / "IHE_PDI").mkdir()
    (medium / "IHE_PDI" / "INDEX.HTM").write_text("<html></html>")
    (medium / "IHE_PDI" / "STYLE.CSS").write_text("body {}")
    (medium / "VIEWER").mkdir()
    (medium / "VIEWER" / "VIEWER.EXE").write_bytes(b"MZ\x90\x00" + bytes(300))
    report = check_medium(medium)
    assert (report.ok, report.instances, report.problems) == (True, 4, [])
    assert report.notes == [
        Finding("IHE_PDI/", "2 files, not DICOM: IHE PDI content"),
        Finding("INDEX.HTM", "not DICOM: IHE PDI index page"),
        Finding("README.TXT", "not DICOM: README"),
        Finding("VIEWER/VIEWER.EXE", "not DICOM: viewer or program (never run)"),
    ]


def test_lowercase_names_are_notes(medium: Path) -> None:
    (medium / "DICOM").rename(medium / "dicom")
    (medium / "dicom" / "IM1").rename(medium / "dicom" / "im1")
    (medium / "DICOMDIR").rename(medium / "dicomdir")
    report = check_medium(medium)
    assert (report.ok, report.instances, report.problems) == (True, 4, [])
    assert report.notes == [
        Finding("dicom/IM2", "name on the medium has lowercase letters; the File ID is DICOM/IM2"),
        Finding("dicom/IM3", "name on the medium has lowercase letters; the File ID is DICOM/IM3"),
        Finding("dicom/IM4", "name on the medium has lowercase letters; the File ID is DICOM/IM4"),
        Finding("dicom/im1", "name on the medium has lowercase letters; the File ID is DICOM/IM1"),
        Finding("dicomdir", "name on the medium has lowercase letters; the File ID is DICOMDIR"),
    ]


def test_version_suffixes_are_notes(medium: Path) -> None:
    (medium / "DICOM" / "IM1").rename(medium / "DICOM" / "IM1.;1")
    (medium / "DICOMDIR").rename(medium / "DICOMDIR;1")
    report = check_medium(medium)
    assert (report.ok, report.instances) == (True, 4)
    assert report.notes == [
        Finding(
            "DICOM/IM1.;1",
            "name on the medium has a ';1' version suffix and a trailing '.'; the File ID is DICOM/IM1",
        ),
        Finding("DICOMDIR;1", "name on the medium has a ';1' version suffix; the File ID is DICOMDIR"),
    ]


def test_pydicom_warnings_become_notes(medium: Path) -> None:
    long_id = "P" * 70  # LO allows 64 characters (PS3.5 6.2): pydicom warns when it reads it
    ds = dcmread(medium / "DICOM" / "IM1")
    index = next(i for i, r in enumerate(records(medium)) if r.get("PatientID") == ds.PatientID)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.PatientID = long_id
        ds.save_as(medium / "DICOM" / "IM1")
    rewrite_dicomdir(medium, lambda dd: setattr(dd.DirectoryRecordSequence[index], "PatientID", long_id))
    report = check_medium(medium)  # pytest's filterwarnings=error: nothing may escape
    warning = "pydicom: The value length (70) exceeds the maximum length of 64 allowed for VR LO."
    assert (report.ok, report.notes) == (True, [Finding("DICOM/IM1", warning), Finding("DICOMDIR", warning)])


# -- problems: what breaks reading or importing -----------------------------------------


def test_missing_referenced_file(medium: Path) -> None:
    (medium / "DICOM" / "IM2").unlink()
    report = check_medium(medium)
    assert (report.ok, report.instances) == (False, 3)
    assert report.problems == [Finding("DICOM/IM2", "referenced by the DICOMDIR but missing")]


def test_missing_dicomdir(medium: Path) -> None:
    (medium / "DICOMDIR").unlink()
    report = check_medium(medium)
    assert (report.ok, report.instances, report.profiles) == (False, 0, [])
    unreferenced = [Finding(f"DICOM/{name}", "not referenced by the DICOMDIR") for name in CONTENT]
    assert report.problems == [*unreferenced, Finding("DICOMDIR", "no DICOMDIR at the medium root")]


@pytest.mark.parametrize("file_id", [["..", "OUTSIDE"], ["DICOM", "..", "..", "OUTSIDE"], ["/OUTSIDE"]])
def test_file_id_escaping_the_root_is_refused(medium: Path, file_id: list[str]) -> None:
    outside = fifo(medium.parent / "OUTSIDE")
    index = leaf_index(medium, "DICOM\\IM2")
    rewrite_dicomdir(medium, lambda ds: setattr(ds.DirectoryRecordSequence[index], "ReferencedFileID", file_id))
    report = check_unopened(medium, [outside])
    assert report.instances == 3
    assert report.problems == [
        Finding("/".join(file_id), "escapes the medium root"),
        Finding("DICOM/IM2", "not referenced by the DICOMDIR"),
    ]
    with open_medium(medium) as opened, pytest.raises(RefusedPath):
        opened.resolve(file_id)


def test_symlink_to_a_file_outside_is_refused(medium: Path) -> None:
    outside = fifo(medium.parent / "outside")
    (medium / "DICOM" / "IM2").unlink()
    (medium / "DICOM" / "IM2").symlink_to(outside)
    report = check_unopened(medium, [outside])
    assert (report.instances, report.problems) == (3, [Finding("DICOM/IM2", ESCAPES_ROOT)])
    with open_medium(medium) as opened:
        assert "DICOM/IM2" not in opened.files()
        assert opened.refused() == {"DICOM/IM2": ESCAPES_ROOT}


def test_symlink_to_a_folder_outside_is_refused(medium: Path) -> None:
    elsewhere = medium.parent / "elsewhere"
    elsewhere.mkdir()
    fifos = [fifo(elsewhere / name) for name in CONTENT]
    shutil.rmtree(medium / "DICOM")
    (medium / "DICOM").symlink_to(elsewhere, target_is_directory=True)
    report = check_unopened(medium, fifos)
    assert report.instances == 0
    assert report.problems == [Finding("DICOM", ESCAPES_ROOT)] + [
        Finding(f"DICOM/{name}", ESCAPES_ROOT) for name in CONTENT
    ]


def test_rock_ridge_symlink_is_not_followed(medium: Path, tmp_path: Path) -> None:
    (medium / "DICOM" / "IM2").unlink()
    (medium / "DICOM" / "IM2").symlink_to("/etc/passwd")
    iso = xorriso(medium, tmp_path / "x.iso", "-R")
    report = check_medium(iso)
    assert (report.instances, report.problems) == (3, [Finding("DICOM/IM2", NOT_FOLLOWED)])


@pytest.mark.parametrize(
    ("name", "size"),
    [("IM1", 20_000), ("IM1", 1_000), ("IM4", 100_000)],
    ids=["in-pixel-data", "in-header", "in-a-sequence"],
)
def test_truncated_file(medium: Path, name: str, size: int) -> None:
    with open(medium / "DICOM" / name, "r+b") as fp:
        fp.truncate(size)
    report = check_medium(medium)
    assert report.instances == 3
    assert report.problems == [Finding(f"DICOM/{name}", "truncated: the file ends inside a data element")]


def test_truncated_inside_a_large_value(tmp_path: Path) -> None:
    ds = dcmread(sample("MR_small.dcm"))
    ds.private_block(0x0009, "MEDIANODE TEST", create=True).add_new(0x01, "OB", bytes(200_000))
    (tmp_path / "cd" / "DICOM").mkdir(parents=True)
    ds.save_as(tmp_path / "cd" / "DICOM" / "IM1")
    dcmmkdir(tmp_path / "cd")
    assert check_medium(tmp_path / "cd").ok  # the large value is skipped, not read
    with open(tmp_path / "cd" / "DICOM" / "IM1", "r+b") as fp:
        fp.truncate(100_000)
    assert check_medium(tmp_path / "cd").problems == [
        Finding("DICOM/IM1", "truncated: the file ends inside a data element")
    ]


def test_truncated_encapsulated_pixel_data(tmp_path: Path) -> None:
    root = build(tmp_path / "dvd", {"IM1": "SC_rgb_jpeg_dcmtk.dcm"}, "--general-dvd-jpeg")
    path = root / "DICOM" / "IM1"
    path.write_bytes(path.read_bytes()[:-500])
    assert check_medium(root).problems == [Finding("DICOM/IM1", "truncated: the file ends inside a data element")]


def test_file_that_is_not_dicom(medium: Path) -> None:
    path = medium / "DICOM" / "IM3"
    data = bytearray(path.read_bytes())
    data[128:132] = b"XXXX"
    path.write_bytes(bytes(data))
    report = check_medium(medium)
    assert report.problems == [
        Finding("DICOM/IM3", "not a DICOM file: no 'DICM' prefix after the preamble (PS3.10 7.1)")
    ]


def test_record_sop_instance_uid_mismatch(medium: Path) -> None:
    index = leaf_index(medium, "DICOM\\IM1")
    rewrite_dicomdir(
        medium, lambda ds: setattr(ds.DirectoryRecordSequence[index], "ReferencedSOPInstanceUIDInFile", "1.2.3.4")
    )
    report = check_medium(medium)
    assert report.instances == 4
    assert report.problems == [
        Finding("DICOM/IM1", f"SOP Instance UID {CT_UID} in the file differs from 1.2.3.4 in its DICOMDIR record")
    ]


def test_parent_record_patient_id_mismatch(medium: Path) -> None:
    index = next(i for i, r in enumerate(records(medium)) if r.get("PatientID") == "1CT1")
    rewrite_dicomdir(medium, lambda ds: setattr(ds.DirectoryRecordSequence[index], "PatientID", "SOMEONE"))
    assert check_medium(medium).problems == [
        Finding("DICOM/IM1", "Patient ID 1CT1 in the file differs from SOMEONE in its PATIENT record")
    ]


@pytest.mark.parametrize("source", ["rtplan.dcm", "ExplVR_LitEndNoMeta.dcm"], ids=["part10", "bare-data-set"])
def test_unreferenced_dicom_file(medium: Path, source: str) -> None:
    shutil.copyfile(sample(source), medium / "DICOM" / "IM9")
    report = check_medium(medium)
    assert (report.instances, report.problems) == (4, [Finding("DICOM/IM9", "not referenced by the DICOMDIR")])


def test_broken_next_offset(medium: Path) -> None:
    set_offset(medium, 0, "OffsetOfTheNextDirectoryRecord", 12345)
    report = check_medium(medium)
    assert Finding("DICOMDIR", "record offset 12345 points to no directory record") in report.problems
    assert report.instances == 1  # only the first patient's instance is still reached
    assert Finding("DICOMDIR", "12 directory records are not reachable from the root") in report.notes


def test_offset_loop(medium: Path) -> None:
    rewrite_dicomdir(medium, lambda ds: None)
    root = dcmread(medium / "DICOMDIR").OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity
    set_offset(medium, leaf_index(medium, "DICOM\\IM1"), "OffsetOfReferencedLowerLevelDirectoryEntity", root)
    report = check_medium(medium)
    assert report.problems == [
        Finding("DICOMDIR", f"directory record at offset {root} is reached twice (an offset loop)")
    ]
    assert report.instances == 4


def test_root_offset_pointing_nowhere(medium: Path) -> None:
    set_offset(medium, None, "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity", 7)
    report = check_medium(medium)
    assert Finding("DICOMDIR", "record offset 7 points to no directory record") in report.problems
    assert report.instances == 0


@pytest.mark.parametrize(
    ("name", "magic", "what"),
    [("DICOM/IM1", b"MZ", "a PE (Windows) executable header"), ("DICOMDIR", b"\x7fELF", "an ELF executable header")],
)
def test_executable_preamble(medium: Path, name: str, magic: bytes, what: str) -> None:
    with open(medium / name, "r+b") as fp:
        fp.write(magic)
    report = check_medium(medium)
    assert report.problems == [Finding(name, f"the preamble holds {what} (CVE-2019-11687)")]


def test_dicomdir_that_is_an_image(medium: Path) -> None:
    shutil.copyfile(sample("CT_small.dcm"), medium / "DICOMDIR")
    assert Finding(
        "DICOMDIR", "not a DICOMDIR: its Media Storage SOP Class is not 1.2.840.10008.1.3.10"
    ) in check_medium(medium).problems


def test_truncated_dicomdir(medium: Path) -> None:
    with open(medium / "DICOMDIR", "r+b") as fp:
        fp.truncate(1000)  # inside the Directory Record Sequence
    report = check_medium(medium)
    assert Finding("DICOMDIR", "truncated: the file ends inside a data element") in report.problems
    assert report.instances == 0


def test_undecodable_directory_record(medium: Path) -> None:
    first = dcmread(medium / "DICOMDIR").OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity
    data = bytearray((medium / "DICOMDIR").read_bytes())
    record_type = data.index(b"\x04\x00\x30\x14", first)  # (0004,1430) of the first record
    data[record_type + 4 : record_type + 6] = b"ZZ"  # an unknown VR
    (medium / "DICOMDIR").write_bytes(bytes(data))
    report = check_medium(medium)
    assert [f for f in report.problems if f.path == "DICOMDIR"] == [
        Finding("DICOMDIR", f"malformed: no valid VR in (0004,1430) at byte {record_type}"),
        Finding(
            "DICOMDIR",
            f"unreadable directory record at offset {first}: "
            "Unknown Value Representation 'ZZ' in tag (0004,1430)",
        ),
    ]


def test_medium_resolves_tolerantly_and_refuses_escapes(medium: Path) -> None:
    (medium / "DICOM" / "IM1").rename(medium / "DICOM" / "im1.;1")
    with open_medium(medium) as opened:
        assert opened.resolve(["DICOM", "IM1"]) == "DICOM/im1.;1"
        assert opened.resolve(["DICOM", "IM9"]) is None
        for hostile in (["..", "x"], ["/etc", "passwd"], ["DICOM", ""], ["C:", "x"], ["a\\..\\..\\x"]):
            with pytest.raises(RefusedPath, match="escapes the medium root"):
                opened.resolve(hostile)
        outside = fifo(medium.parent / "outside")
        (medium / "DICOM" / "IM2").unlink()
        (medium / "DICOM" / "IM2").symlink_to(outside)  # swapped after the listing
        with pytest.raises(RefusedPath, match="DICOM/IM2: escapes the medium root"):
            opened.open("DICOM/IM2")


# -- media that cannot be opened at all -------------------------------------------------


def test_a_udf_recognition_sequence_without_a_volume_is_refused(tmp_path: Path) -> None:
    image = bytearray(40 * 2048)
    for sector, identifier in ((16, b"BEA01"), (17, b"NSR03"), (18, b"TEA01")):  # ECMA-167 2/9.1
        image[sector * 2048 : sector * 2048 + 7] = b"\x00" + identifier + b"\x01"
    (tmp_path / "bd.iso").write_bytes(bytes(image))
    with pytest.raises(MediumError, match="UDF medium not read: no Anchor Volume Descriptor Pointer"):
        check_medium(tmp_path / "bd.iso")


def test_iso_with_a_bogus_volume_descriptor(medium: Path, tmp_path: Path) -> None:
    iso = xorriso(medium, tmp_path / "x.iso")
    with open(iso, "r+b") as fp:
        fp.seek(16 * 2048 + 1)
        fp.write(b"XXXXX")
    with pytest.raises(MediumError, match="not a readable ISO 9660 image"):
        check_medium(iso)


def test_paths_that_are_no_medium(tmp_path: Path) -> None:
    with pytest.raises(MediumError, match="cannot open .*nothing: No such file or directory"):
        check_medium(tmp_path / "nothing")
    (tmp_path / "notes.iso").write_text("not an image")
    with pytest.raises(MediumError, match="notes.iso: not a readable ISO 9660 image"):
        check_medium(tmp_path / "notes.iso")
    with pytest.raises(MediumError, match="is neither a folder, an ISO image nor a block device"):
        check_medium(fifo(tmp_path / "pipe"))


# -- many files --------------------------------------------------------------------------


@pytest.mark.slow
def test_400_files_on_a_folder_and_on_an_iso(tmp_path: Path) -> None:
    """Every instance counted, no problem, on both kinds of medium (how fast: ``scripts/bench import``)."""
    root = tmp_path / "cd"
    (root / "DICOM").mkdir(parents=True)
    ds = dcmread(sample("MR_small.dcm"))
    for n in range(400):
        uid = UID(f"1.2.826.0.1.3680043.8.498.{n + 1}")
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.save_as(root / "DICOM" / f"IM{n}")
    dcmmkdir(root)
    iso = xorriso(root, tmp_path / "x.iso")
    for target in (root, iso):
        report = check_medium(target)
        assert (report.ok, report.instances, report.problems) == (True, 400, []), target.name
