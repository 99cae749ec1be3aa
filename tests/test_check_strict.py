"""``check`` as strict as DCMTK's readers and dciodvfy: media broken where those tools find a fault.

Each broken medium starts as the clean DCMTK one of test_check: pydicom edits its
DICOMDIR records, bytes are patched where pydicom would not write the fault (a
length past the end), xorriso masters the ISO images. The same bytes go to the
peers (dciodvfy, dcmdump, isoinfo), which must find the fault too, and then to
``import`` into DCMTK storescp: what arrives is exactly the intact instances.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from node.read.check import Finding, check_medium
from node.read.importer import import_medium
from tests.conftest import StoreSCP, cli_process, need
from tests.test_check import CONTENT, build, dcmmkdir, leaf_index, records, rewrite_dicomdir, sample, xorriso
from tests.test_import import assert_same, received, to, uid_of

#: The records' Type 1C references to the file they name (PS3.3 F.3.2.2) and how they are called.
REFERENCES = {
    "ReferencedSOPClassUIDInFile": "Referenced SOP Class UID in File",
    "ReferencedSOPInstanceUIDInFile": "Referenced SOP Instance UID in File",
    "ReferencedTransferSyntaxUIDInFile": "Referenced Transfer Syntax UID in File",
}


@pytest.fixture
def medium(tmp_path: Path) -> Path:
    return build(tmp_path / "cd", CONTENT)


def sources(*names: str) -> dict[str, Path]:
    """SOP Instance UID -> pydicom source file, for these File ID names of CONTENT."""
    return {uid_of(sample(CONTENT[n])): sample(CONTENT[n]) for n in names}


def assert_arrived_intact(scp: StoreSCP, expected: dict[str, Path]) -> None:
    got = received(scp.folder)
    assert set(got) == set(expected)
    for uid, source in expected.items():
        assert_same(got[uid], source)


def dciodvfy(path: Path) -> str:
    need("dciodvfy")
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


# -- the DICOMDIR's records --------------------------------------------------------------


@pytest.mark.parametrize("keyword", list(REFERENCES))
def test_record_without_a_reference_to_its_file(medium: Path, storescp: StoreSCP, keyword: str) -> None:
    index = leaf_index(medium, "DICOM\\IM1")
    rewrite_dicomdir(medium, lambda ds: delattr(ds.DirectoryRecordSequence[index], keyword))
    assert f"Missing attribute Type 1C Conditional Element=<{keyword}>" in dciodvfy(medium / "DICOMDIR")
    problem = Finding("DICOM/IM1", f"its DICOMDIR record has no {REFERENCES[keyword]} (PS3.3 F.3.2.2: "
                                   "required in every record that references a file)")
    report = check_medium(medium)
    assert (report.ok, report.instances, report.problems) == (False, 4, [problem])
    imported = import_medium(medium, destination=to(storescp))
    assert (imported.sent, imported.failed, imported.problems) == (4, 0, [problem])
    assert_arrived_intact(storescp, sources(*CONTENT))  # the file itself is whole: sent as it is


def test_unknown_directory_record_type(medium: Path, storescp: StoreSCP) -> None:
    index = leaf_index(medium, "DICOM\\IM2")
    rewrite_dicomdir(medium, lambda ds: setattr(ds.DirectoryRecordSequence[index], "DirectoryRecordType", "BOGUS"))
    assert "Unrecognized enumerated value <BOGUS> for value 1 of attribute <Directory Record Type>" in dciodvfy(
        medium / "DICOMDIR")
    offset = next(r.seq_item_tell for r in records(medium) if r.DirectoryRecordType == "BOGUS")
    problem = Finding("DICOMDIR", f"directory record at offset {offset} has an unknown Directory Record Type "
                                  "'BOGUS' (PS3.3 F.5 defines the types; PRIVATE is the one for private content)")
    report = check_medium(medium)
    assert (report.ok, report.instances, report.problems) == (False, 4, [problem])
    imported = import_medium(medium, destination=to(storescp))
    assert (imported.sent, imported.failed, imported.problems) == (4, 0, [problem])
    assert_arrived_intact(storescp, sources(*CONTENT))


def test_record_without_a_type(medium: Path) -> None:
    index = leaf_index(medium, "DICOM\\IM2")
    rewrite_dicomdir(medium, lambda ds: delattr(ds.DirectoryRecordSequence[index], "DirectoryRecordType"))
    offset = records(medium)[index].seq_item_tell
    assert check_medium(medium).problems == [Finding(
        "DICOMDIR", f"directory record at offset {offset} has no Directory Record Type (PS3.3 F.5 defines the "
                    "types; PRIVATE is the one for private content)")]


@pytest.mark.parametrize("kind", ["PRIVATE", "MRDR"], ids=["private", "retired"])
def test_private_and_retired_record_types_are_known(medium: Path, kind: str) -> None:
    index = leaf_index(medium, "DICOM\\IM2")

    def edit(ds: Dataset) -> None:
        ds.DirectoryRecordSequence[index].DirectoryRecordType = kind
        ds.DirectoryRecordSequence[index].PrivateRecordUID = "1.2.826.0.1.3680043.2.1143.1"

    rewrite_dicomdir(medium, edit)
    report = check_medium(medium)
    assert (report.ok, report.instances, report.problems) == (True, 4, [])


# -- lengths past the end ------------------------------------------------------------------


def test_element_length_past_the_end_of_the_dicomdir(medium: Path, storescp: StoreSCP) -> None:
    path = medium / "DICOMDIR"
    data = bytearray(path.read_bytes())
    at = data.rindex(b"\x20\x00\x13\x00IS")  # the last record's Instance Number, the last element of the file
    data[at + 6 : at + 8] = struct.pack("<H", 0x100)  # 256 bytes where 2 are left
    path.write_bytes(bytes(data))
    need("dcmdump")
    dump = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=False)
    assert dump.returncode != 0
    assert "InstanceNumber (0020,0013) larger (256) than remaining bytes" in dump.stderr
    problem = Finding("DICOMDIR", f"malformed: (0020,0013) at byte {at} runs past the end of its item")
    report = check_medium(medium)
    assert (report.ok, report.instances, report.problems) == (False, 4, [problem])
    imported = import_medium(medium, destination=to(storescp))
    assert (imported.sent, imported.failed, imported.problems) == (4, 0, [problem])
    assert_arrived_intact(storescp, sources(*CONTENT))


def iso_record(image: bytes, identifier: bytes) -> tuple[int, int, int]:
    """(where, extent, data length) of the one ISO 9660 directory record with this identifier (ECMA-119 9.1)."""
    where = image.index(bytes([len(identifier)]) + identifier) - 32
    return where, *struct.unpack_from("<I", image, where + 2), *struct.unpack_from("<I", image, where + 10)


def image_with_im4_last(medium: Path, iso: Path, *options: str) -> tuple[bytes, int, int]:
    """An unpadded image whose last file is DICOM/IM4; its bytes, and IM4's extent and length."""
    xorriso(medium, iso, "-no-pad", "--sort-weight", "100", "/DICOMDIR", *options)
    image = iso.read_bytes()
    _, extent, length = iso_record(image, b"IM4.;1")
    assert -(-(extent * 2048 + length) // 2048) * 2048 == len(image)  # nothing after it
    return image, extent, length


def past_the_end(claimed: int, extent: int, size: int) -> str:
    return (f"its ISO 9660 directory record claims {claimed} bytes from sector {extent}, past the end of the "
            f"image ({size} bytes): the image is cut short or the record is damaged; not read")


def isoinfo_extract(iso: Path, name: str) -> str:
    need("isoinfo")
    done = subprocess.run(["isoinfo", "-i", str(iso), "-x", name], capture_output=True, check=False)
    return done.stderr.decode(errors="replace")


@pytest.mark.parametrize("options", [(), ("-J", "-R")], ids=["iso9660", "joliet+rr"])
def test_image_cut_short(medium: Path, tmp_path: Path, storescp: StoreSCP, options: tuple[str, ...]) -> None:
    iso = tmp_path / "cut.iso"
    image, extent, length = image_with_im4_last(medium, iso, *options)
    iso.write_bytes(image[: extent * 2048 + length // 2])  # a download or a copy that stopped half-way
    assert "Short read" in isoinfo_extract(iso, "/DICOM/IM4.;1")
    problem = Finding("DICOM/IM4", past_the_end(length, extent, iso.stat().st_size))
    report = check_medium(iso)
    assert (report.ok, report.instances, report.problems) == (False, 3, [problem])
    imported = import_medium(iso, destination=to(storescp))
    assert (imported.sent, imported.failed, imported.problems) == (3, 1, [problem])
    assert [(o.result, o.reason) for o in imported.outcomes if o.path == "DICOM/IM4"] == [("failed", problem.problem)]
    assert_arrived_intact(storescp, sources("IM1", "IM2", "IM3"))


def test_directory_record_claiming_more_than_the_image(medium: Path, tmp_path: Path, storescp: StoreSCP) -> None:
    iso = tmp_path / "forged.iso"
    mastered, extent, length = image_with_im4_last(medium, iso)
    image = bytearray(mastered)
    where, _, _ = iso_record(mastered, b"IM4.;1")
    claimed = length + 100_000
    struct.pack_into("<I", image, where + 10, claimed)  # ECMA-119 9.1.4: both byte orders
    struct.pack_into(">I", image, where + 14, claimed)
    iso.write_bytes(bytes(image))
    assert "Short read" in isoinfo_extract(iso, "/DICOM/IM4.;1")
    problem = Finding("DICOM/IM4", past_the_end(claimed, extent, len(image)))
    report = check_medium(iso)
    assert (report.ok, report.instances, report.problems) == (False, 3, [problem])
    imported = import_medium(iso, destination=to(storescp))
    assert (imported.sent, imported.failed, imported.problems) == (3, 1, [problem])
    assert_arrived_intact(storescp, sources("IM1", "IM2", "IM3"))  # nothing of what follows IM4 was sent


def test_forged_length_over_the_padding_sends_nothing_of_it(tmp_path: Path, storescp: StoreSCP) -> None:
    """Implicit VR data followed by zeros reads as whole ((0000,0000) elements of length 0): a length reaching
    over the sector's padding and past the end must not send those zeros as part of the instance."""
    root, source = tmp_path / "cd", sample("MR_small.dcm")
    (root / "DICOM").mkdir(parents=True)
    ds = dcmread(source)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    for size in (0, 2, 4, 6):  # the file's size a multiple of 8, so its padding is whole zero elements
        ds.add_new(0x00091010, "LO", "A" * size)
        ds.save_as(root / "DICOM" / "IM1", enforce_file_format=True)
        if (root / "DICOM" / "IM1").stat().st_size % 8 == 0:
            break
    assert (root / "DICOM" / "IM1").stat().st_size % 2048 != 0
    dcmmkdir(root, "--general-purpose", "-Nxc")  # -Nxc: DCMTK lets Implicit VR in, with a warning
    iso = xorriso(root, tmp_path / "x.iso", "-no-pad", "--sort-weight", "100", "/DICOMDIR")
    image = bytearray(iso.read_bytes())
    where, extent, length = iso_record(bytes(image), b"IM1.;1")
    assert -(-(extent * 2048 + length) // 2048) * 2048 == len(image)  # the padding, then the image's end
    claimed = length + 100_000
    struct.pack_into("<I", image, where + 10, claimed)
    struct.pack_into(">I", image, where + 14, claimed)
    iso.write_bytes(bytes(image))
    problem = Finding("DICOM/IM1", past_the_end(claimed, extent, len(image)))
    assert check_medium(iso).problems == [problem]
    imported = import_medium(iso, destination=to(storescp))
    assert (imported.sent, imported.failed, imported.problems) == (0, 1, [problem])
    assert received(storescp.folder) == {}


# -- a medium that cannot be opened ------------------------------------------------------------


@pytest.mark.parametrize("what", ["missing", "not-an-image"])
def test_check_json_when_the_medium_cannot_be_opened(tmp_path: Path, what: str) -> None:
    path = tmp_path / "medium.iso"
    if what == "not-an-image":
        path.write_bytes(b"not ISO 9660" * 40_000)
    reason = (f"cannot open {path}: No such file or directory" if what == "missing" else
              f"{path}: not a readable ISO 9660 image (Valid ISO9660 filesystems must have at least one PVD)")
    done = cli_process("check", "--json", path)
    assert (done.code, done.err) == (1, "")
    assert json.loads(done.out) == {
        "ok": False, "instances": 0, "problems": [{"path": ".", "problem": reason}], "notes": [], "profiles": [],
        "medium": "", "warnings": [],
    }
    plain = cli_process("check", path)  # without --json: one line on stderr, as every command
    assert (plain.code, plain.out, plain.err) == (1, "", f"medianode check: {reason}\n")
