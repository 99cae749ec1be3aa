"""DVD-RAM media (STD-GEN-DVD-RAM, AUG-GEN-DVD-RAM): UDF 1.50 images (PS3.12 Annex J) burned by
``medianode burn`` and ``serve``, judged by udfinfo, 7-Zip, libudfread, dciodvfy and dcmmkdir, and
written by xorriso to a ``stdio:`` pseudo-drive (an overwriteable medium, as DVD-RAM is)."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from node import dicom
from node.config import XorrisoOutput, parse_config
from node.errors import ConfigError
from node.media import outputs, udf
from node.profiles import DVD_RAM_SECTORS, PROFILES
from tests.conftest import bundled, cli, ct_series, need
from tests.test_burn import by_uid, dciodvfy_errors
from tests.test_serve import Node, storescu
from tests.test_udf import UdfRead

#: Explicit VR (CT), Implicit VR (MR), JPEG Baseline (SC) and JPEG 2000 (MR) images of one patient.
SOURCES = ("MR_small_implicit.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm")


def udfinfo(image: Path) -> dict[str, str]:
    need("udfinfo")
    done = subprocess.run(["udfinfo", str(image)], capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line and "," not in line)


def seven_zip(image: Path, dest: Path) -> dict[str, int]:
    """Every file 7-Zip lists in ``image`` with its size, after extracting them all to ``dest``."""
    need("7z")
    listing = subprocess.run(["7z", "l", "-slt", str(image)], capture_output=True, text=True, check=True).stdout
    assert "Type = Udf" in listing and "Version = 1.50" in listing
    assert "Warnings" not in listing and "ERRORS" not in listing
    blocks = [dict(line.split(" = ", 1) for line in b.splitlines() if " = " in line) for b in listing.split("\n\n")]
    subprocess.run(["7z", "x", f"-o{dest}", str(image)], capture_output=True, check=True)
    return {b["Path"]: int(b["Size"]) for b in blocks if "Path" in b and b.get("Folder") == "-"}


def read_all(image: Path) -> dict[str, bytes]:
    """Every file's bytes as our own read-back finds them: "DICOM/..." -> content."""
    with open(image, "rb") as fp:
        return {name.removeprefix("/"): b"".join(os.pread(fp.fileno(), n, at) for at, n in runs)
                for name, (runs, _) in udf.read_listing(image).items()}  # fmt: skip


def sources(folder: Path) -> dict[str, Path]:
    """SOP Instance UID -> source file of a CT series plus :data:`SOURCES`."""
    ct_series(folder, 3, size=32, patient_id="PID1", name="DOE^JANE")
    for name in SOURCES:
        shutil.copy(bundled(name), folder / name)
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in folder.iterdir()}


def test_std_gen_dvd_ram_is_a_udf_150_image_every_reader_agrees_on(tmp_path: Path) -> None:
    src = sources(tmp_path / "src")
    image = tmp_path / "ram.iso"
    done = cli("burn", tmp_path / "src", "--out", image, "--profile", "STD-GEN-DVD-RAM", "--json")
    assert done.code == 0, done.err
    report = json.loads(done.out)
    assert report["capacity_sectors"] == DVD_RAM_SECTORS == 2_236_704  # one side of a 4.7 GB DVD-RAM (ECMA-330)
    assert report["sectors"] * 2048 == image.stat().st_size and report["instances"] == len(src)

    info = udfinfo(image)
    assert (info["udfrev"], info["udfwriterev"], info["integrity"]) == ("1.50", "1.50", "closed")
    assert (info["accesstype"], info["freeblocks"]) == ("overwritable", "0")  # its bitmap: nothing free

    ours = read_all(image)
    listed = seven_zip(image, tmp_path / "x")
    assert listed == {name: len(data) for name, data in ours.items()}  # every file, with its size
    with UdfRead(image) as lib:
        for name, data in ours.items():
            assert (tmp_path / "x" / name).read_bytes() == data == b"".join(lib.read(f"/{name}")), name

    root = tmp_path / "x"
    assert dciodvfy_errors(root / "DICOMDIR") == set()
    need("dcmmkdir")  # DCMTK re-reads the DICOMDIR and every file against STD-GEN-CD/DVD-RAM's rules (on a copy:
    judge = shutil.copytree(root, tmp_path / "judge")  # an update it does not write leaves no DICOMDIR behind)
    judged = subprocess.run(["dcmmkdir", "--general-purpose", "+U", "-w", "-nb", "+r", "+id", str(judge),
                             "+D", str(judge / "DICOMDIR"), "DICOM"], capture_output=True, text=True)  # fmt: skip
    assert judged.returncode == 0 and "E:" not in judged.stderr, judged.stderr
    for uid, path in by_uid(root).items():  # Explicit VR Little Endian only (PS3.11 Annex D), same UIDs
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == dicom.EXPLICIT_VR_LE and uid in src
        assert ds.Rows == dcmread(src[uid]).Rows
    assert {c["path"] for c in report["converted"]} == {str(src[u]) for u in src if src[u].name in SOURCES}


def test_aug_gen_dvd_ram_keeps_table_6_syntaxes_and_private_classes(tmp_path: Path) -> None:
    src = sources(tmp_path / "src")
    private = dcmread(bundled("MR_small.dcm"))
    private.SOPClassUID = private.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.8.498.77"
    private.SOPInstanceUID = private.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    del private.PixelData  # a private class with no pixels: a PRIVATE record (with pixels it is an IMAGE)
    private.save_as(tmp_path / "src" / "private.dcm")
    kept = {str(private.SOPInstanceUID): private.file_meta.TransferSyntaxUID}
    kept |= {uid: str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for uid, p in src.items()}

    std = cli("burn", tmp_path / "src", "--out", tmp_path / "std.iso", "--profile", "STD-GEN-DVD-RAM", "--json")
    assert std.code == 1  # an instance refused; the others are on the medium
    assert [r["path"] for r in json.loads(std.out)["refused"]] == [str(tmp_path / "src" / "private.dcm")]
    assert len(udf.read_listing(tmp_path / "std.iso")) == 1 + len(src)

    aug = cli("burn", tmp_path / "src", "--out", tmp_path / "aug.iso", "--profile", "AUG-GEN-DVD-RAM", "--json")
    assert aug.code == 0, aug.err
    assert json.loads(aug.out)["refused"] == [] and udfinfo(tmp_path / "aug.iso")["udfrev"] == "1.50"
    root = tmp_path / "x"
    assert len(seven_zip(tmp_path / "aug.iso", root)) == 1 + len(kept)
    records = dcmread(root / "DICOMDIR").DirectoryRecordSequence
    syntaxes = {r.ReferencedSOPInstanceUIDInFile: r.ReferencedTransferSyntaxUIDInFile for r in records
                if "ReferencedFileID" in r}  # fmt: skip
    assert syntaxes == kept  # Implicit VR, JPEG and JPEG 2000 as they came (the seed's Table 6)
    assert [r.DirectoryRecordType for r in records if r.get("ReferencedSOPInstanceUIDInFile") == private.SOPInstanceUID] == ["PRIVATE"]
    assert dciodvfy_errors(root / "DICOMDIR") == set()


def sparse_ct(folder: Path, n: int, side: int) -> None:
    """``n`` CT instances of ``side`` x ``side`` 16-bit pixels whose Pixel Data is a hole in a sparse file."""
    for path in ct_series(folder, n, size=2):
        ds = dcmread(path)
        del ds.PixelData
        ds.Rows = ds.Columns = side
        ds.save_as(path, enforce_file_format=True)
        with open(path, "ab") as fp:
            fp.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, side * side * 2))
            fp.truncate(fp.tell() + side * side * 2)


def test_a_study_larger_than_one_side_is_refused_whole(tmp_path: Path) -> None:
    """Two 2.3 GB images: more than the 2,236,704 sectors of a side (less than a DVD-R's), nothing written."""
    sparse_ct(tmp_path / "src", 2, 34_000)
    out = tmp_path / "big.iso"
    done = cli("burn", tmp_path / "src", "--out", out, "--profile", "STD-GEN-DVD-RAM")
    assert done.code == 1
    assert "the set needs 2,258,257 sectors (4,624.9 MB) but a STD-GEN-DVD-RAM medium holds 2,236,704" in done.err
    assert "no study is split" in done.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no image, no staging left
    assert PROFILES["AUG-GEN-DVD-RAM"].capacity_sectors == DVD_RAM_SECTORS


def test_serve_delivers_dvd_ram_images_to_a_folder_and_through_xorriso(tmp_path: Path) -> None:
    need("echoscu", "storescu", "xorriso")
    drive = tmp_path / "drive.bin"
    drive.write_bytes(b"an old DVD-RAM's content " * 100_000)  # overwriteable: xorriso writes over it
    routes = f"""routes:
  - {{match: {{called_aet: BURN}}, action: burn, profile: STD-GEN-DVD-RAM}}
  - {{match: {{called_aet: DRIVE}}, action: burn, profile: AUG-GEN-DVD-RAM,
      output: {{kind: xorriso, device: 'stdio:{drive}', retries: 0}}}}
"""
    node = Node(tmp_path, routes=routes)
    node.start()
    try:
        for aet in ("BURN", "DRIVE"):
            sent = storescu(node, ct_series(tmp_path / aet, 2, size=16, patient_id=f"P-{aet}"), called=aet)
            assert sent.returncode == 0, sent.stderr
        node.wait_for(lambda: len(node.volumes()) == 2)
    finally:
        node.stop()
    (image,) = node.images()
    for medium in (image, drive):  # the folder's image; the pseudo-drive, written over from its first block
        assert udfinfo(medium)["udfrev"] == "1.50"
        assert len(udf.read_listing(medium)) == 1 + 2  # the DICOMDIR and both instances
    assert not list((tmp_path / "var" / "burning").iterdir())  # the drive's staged image is gone once written


def test_xorriso_writes_and_verifies_a_dvd_ram_image(tmp_path: Path) -> None:
    need("xorriso")
    ct_series(tmp_path / "src", 2, size=16)
    image = tmp_path / "ram.iso"
    assert cli("burn", tmp_path / "src", "--out", image, "--profile", "STD-GEN-DVD-RAM").code == 0
    drive = XorrisoOutput(device=f"stdio:{tmp_path / 'drive'}")
    outputs.burn_disc(drive, image)
    outputs.verify_disc(drive, image)
    assert (tmp_path / "drive").read_bytes()[: image.stat().st_size] == image.read_bytes()
    assert udfinfo(tmp_path / "drive")["udfrev"] == "1.50"


def test_a_publisher_robot_is_no_output_for_dvd_ram(tmp_path: Path) -> None:
    """The robots burn CD, DVD and BD (and an Epson masters ISO 9660 itself): a DVD-RAM route needs a drive."""
    yaml = f"routes:\n  - {{action: burn, profile: STD-GEN-DVD-RAM,\n     output: {{kind: publisher, vendor: rimage, hot_folder: {tmp_path}}}}}\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml, source="c.yaml")
    assert str(exc.value).startswith("c.yaml:3 routes[0].output: STD-GEN-DVD-RAM is a DVD-RAM profile: a publisher "
                                     "robot burns CD, DVD and BD, not DVD-RAM"), str(exc.value)
    drive = "routes:\n  - {action: burn, profile: AUG-GEN-DVD-RAM, output: {kind: xorriso, device: /dev/sr0}}\n"
    assert parse_config(drive, source="c.yaml").routes[0].profile == "AUG-GEN-DVD-RAM"
