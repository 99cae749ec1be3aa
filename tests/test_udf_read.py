"""node.udf through check and import: UDF images written by genisoimage, pycdlib, mkudffs and our BD writer,
each listing cross-checked with 7-Zip, libudfread or udfinfo; bridges; the Metadata Mirror; hostile images."""

from __future__ import annotations

import binascii
import io
import json
import re
import shutil
import struct
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pycdlib
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from node.errors import ESCAPES_ROOT, BuildError, MediumError
from node.profiles import PROFILES
from node.media.udf import read_listing
from node.read.check import check_medium
from node.read.importer import import_medium
from node.read.medium import medium_label, open_medium
from node.udf import MAX_DEPTH, UdfError, Volume
from tests.conftest import StoreSCP, cli, need
from tests.test_import import assert_all_arrived, received, uid_of
from tests.test_udf import UdfRead

SECTOR = 2048
SOURCES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm")
#: The instances of every medium below (one a source).
INSTANCES = len(SOURCES)


def retag(data: bytearray, pos: int, length: int) -> None:
    """Recompute the CRC (over ``length`` bytes of the descriptor) and the checksum of a tag (ECMA-167 3/7.2)."""
    body = bytes(data[pos + 16 : pos + length])
    data[pos + 8 : pos + 12] = struct.pack("<HH", binascii.crc_hqx(body, 0), len(body))
    data[pos + 4] = 0
    data[pos + 4] = sum(data[pos : pos + 16]) & 0xFF


def udf_only(bridge: Path, out: Path) -> Path:
    """``bridge`` with its ISO 9660 gone: the CD001 descriptors dropped from the Volume Recognition Sequence
    (BEA01, NSR0x, TEA01 moved up to sector 16), the Primary Volume Descriptor and terminator with them."""
    data = bytearray(bridge.read_bytes())
    kept, sector = [], 16
    while data[sector * SECTOR + 6] == 1 and bytes(data[sector * SECTOR + 1 : sector * SECTOR + 6]).isalnum():
        if data[sector * SECTOR + 1 : sector * SECTOR + 6] != b"CD001":
            kept.append(bytes(data[sector * SECTOR : (sector + 1) * SECTOR]))
        sector += 1
    data[16 * SECTOR : sector * SECTOR] = b"".join(kept).ljust((sector - 16) * SECTOR, b"\0")
    out.write_bytes(data)
    return out


def seven_zip(image: Path) -> dict[str, int]:
    """What 7-Zip lists: file path -> size."""
    done = subprocess.run(["7z", "l", "-slt", str(image)], capture_output=True, text=True, check=True)
    assert "Type = Udf" in done.stdout, done.stdout
    files, entry = {}, {}
    for line in [*done.stdout.split("----------", 1)[1].splitlines(), ""]:
        if " = " in line:
            key, value = line.split(" = ", 1)
            entry[key] = value
        elif entry:
            if entry.get("Folder") != "+":
                files[entry["Path"]] = int(entry["Size"])
            entry = {}
    return files


def udfinfo(image: Path) -> dict[str, str]:
    done = subprocess.run(["udfinfo", str(image)], capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line and "," not in line)


def pycdlib_image(out: Path, fileset: Path, *, iso: bool = True, extra: str = "") -> Path:
    """A bridge from pycdlib (``udf="2.60"``) holding ``fileset``: without ``iso`` its ISO 9660 tree holds only a
    README; ``extra`` names a file only its UDF tree holds."""
    image = pycdlib.PyCdlib()
    image.new(udf="2.60", interchange_level=3)
    if not iso:
        image.add_fp(io.BytesIO(b"UDF\n"), 4, "/README.;1")
    for p in sorted(fileset.rglob("*")):
        rel = p.relative_to(fileset).as_posix()
        paths = {"udf_path": f"/{rel}"}
        if iso:
            paths["iso_path"] = f"/{rel.upper()}" + ("" if p.is_dir() else ";1")
        if p.is_dir():
            image.add_directory(**paths)
        else:
            image.add_file(str(p), **paths)
    if extra:
        image.add_fp(io.BytesIO(b"extra\n"), 6, udf_path=f"/{extra}")
    image.write(str(out))
    image.close()
    return out


@pytest.fixture(scope="module")
def fileset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file-set burnt as a folder: the content every image below carries."""
    folder = tmp_path_factory.mktemp("udfread")
    sources = [str(get_testdata_file(name)) for name in SOURCES]
    result = cli("burn", "--no-pdi", "--format", "folder", "--profile", "STD-GEN-BD-J2K", "--out", folder / "fs",
                 *sources)  # fmt: skip
    assert result.code == 0, result.err
    return folder / "fs"


@pytest.fixture(scope="module")
def images(fileset: Path) -> dict[str, Path]:
    """Name -> image, every one holding the file-set ("bd" our own burn of the same sources)."""
    need("genisoimage")
    folder = fileset.parent
    found = {"genisoimage-1.02-bridge": folder / "gen.iso"}
    subprocess.run(["genisoimage", "-quiet", "-udf", "-o", str(found["genisoimage-1.02-bridge"]), str(fileset)],
                   check=True)  # fmt: skip
    found["pycdlib-bridge"] = pycdlib_image(folder / "pycdlib.iso", fileset)
    found["genisoimage-udf-only"] = udf_only(found["genisoimage-1.02-bridge"], folder / "gen-udf.iso")
    found["pycdlib-udf-only"] = udf_only(found["pycdlib-bridge"], folder / "pycdlib-udf.iso")
    result = cli("burn", "--no-pdi", "--profile", "STD-GEN-BD-J2K", "--out", folder / "bd.iso",
                 *(str(get_testdata_file(name)) for name in SOURCES))  # fmt: skip
    assert result.code == 0, result.err
    found["bd"] = folder / "bd.iso"
    result = cli("burn", "--no-pdi", "--profile", "STD-GEN-DVD-J2K", "--out", folder / "dvd.iso",
                 *(str(get_testdata_file(name)) for name in SOURCES))  # fmt: skip
    assert result.code == 0, result.err
    found["bd-as-iso"] = folder / "dvd.iso"  # the same instances on ISO 9660
    return found


UDF_ONLY = ["genisoimage-udf-only", "pycdlib-udf-only", "bd"]


@pytest.mark.parametrize("name", ["genisoimage-1.02-bridge", "pycdlib-bridge", *UDF_ONLY])
def test_every_image_lists_and_reads_as_7zip_and_libudfread_do(images: dict[str, Path], name: str) -> None:
    need("7z")
    image = images[name]
    with open(image, "rb") as fp:
        volume = Volume(fp)
        ours = {path: f.size for path, f in volume.files.items()}
        assert (volume.refused, volume.notes) == ({}, [])
        assert ours == seven_zip(image)
        with UdfRead(image) as udf:
            assert {p.lstrip("/") for p in udf.files()} == ours.keys()
            for path in ours:
                with volume.open(path) as f:
                    assert f.read() == b"".join(udf.read(f"/{path}")), path
    assert len(ours) == 1 + INSTANCES


@pytest.mark.parametrize("name", ["genisoimage-1.02-bridge", "pycdlib-bridge"])
def test_a_bridge_is_read_as_iso_9660_and_its_trees_agree(images: dict[str, Path], fileset: Path, name: str) -> None:
    with open_medium(images[name]) as medium:
        assert medium.kind.startswith("ISO 9660 (bridge with UDF ")
        assert medium.warnings == []
        assert {p.upper() for p in medium.files()} == {
            p.relative_to(fileset).as_posix().upper() for p in fileset.rglob("*") if p.is_file()
        }


@pytest.mark.parametrize("name", UDF_ONLY)
def test_check_reads_a_udf_only_image_as_its_iso_9660_equivalent(images: dict[str, Path], name: str) -> None:
    udf = check_medium(images[name])
    iso = check_medium(images["genisoimage-1.02-bridge"])
    assert udf.medium.startswith("UDF ") and iso.medium.startswith("ISO 9660")
    assert (udf.ok, udf.instances, udf.problems, udf.notes, udf.profiles, udf.warnings) == (
        iso.ok, iso.instances, iso.problems, iso.notes, iso.profiles, iso.warnings)  # fmt: skip
    assert udf.instances == INSTANCES
    result = cli("check", images[name])
    assert result.code == 0 and f"  medium: {udf.medium}\n" in result.out


@pytest.mark.parametrize("name", UDF_ONLY)
def test_import_of_a_udf_only_image_delivers_every_instance_whole(
    images: dict[str, Path], tmp_path: Path, storescp_with: Callable[..., StoreSCP], name: str
) -> None:
    """Every instance arrives equal to its file on the medium, and byte for byte as from the ISO 9660 image."""
    udf, iso = storescp_with("+xa"), storescp_with("+xa")
    report = import_medium(images[name], destination=(udf.aet, "127.0.0.1", udf.port))
    sources = {}
    with open_medium(images[name]) as medium:
        for n, path in enumerate(p for p in medium.files() if p != "DICOMDIR"):
            copy = tmp_path / f"on-medium-{n}"
            with medium.open(path) as f:
                copy.write_bytes(f.read())
            sources[uid_of(copy)] = copy
    assert_all_arrived(report, udf.folder, sources)
    reference = images["bd-as-iso" if name == "bd" else "genisoimage-1.02-bridge"]
    assert import_medium(reference, destination=(iso.aet, "127.0.0.1", iso.port)).ok
    assert {uid: p.read_bytes() for uid, p in received(udf.folder).items()} == {
        uid: p.read_bytes() for uid, p in received(iso.folder).items()}


# -- bridges whose trees differ ----------------------------------------------------------------


def test_a_file_only_in_the_udf_tree_is_a_warning(fileset: Path, tmp_path: Path) -> None:
    image = pycdlib_image(tmp_path / "extra.iso", fileset, extra="EXTRA.TXT")
    report = check_medium(image)
    assert report.ok and report.instances == INSTANCES
    assert [(w.path, w.problem) for w in report.warnings] == [
        ("EXTRA.TXT", "only in the UDF 1.02 tree (not read), not in the ISO 9660 (bridge with UDF 1.02) tree")]
    result = cli("check", image, "--json")
    assert json.loads(result.out)["warnings"] == [{"path": w.path, "problem": w.problem} for w in report.warnings]
    assert "  warning: EXTRA.TXT: only in the UDF 1.02 tree" in cli("check", image).out


def test_a_bridge_whose_dicomdir_resolves_only_in_udf_is_read_through_udf(fileset: Path, tmp_path: Path) -> None:
    image = pycdlib_image(tmp_path / "stub.iso", fileset, iso=False)
    report = check_medium(image)
    assert report.medium == "UDF 1.02 (bridge with ISO 9660)"
    assert (report.ok, report.instances) == (True, INSTANCES)
    assert ("README", "only in the ISO 9660 tree (not read), not in the UDF 1.02 (bridge with ISO 9660) tree") in [
        (w.path, w.problem) for w in report.warnings]


# -- layouts from mkudffs: virtual (VAT), sparable, plain; UDF 1.50 to 2.60 ----------------------


@pytest.mark.parametrize(("media", "revision", "maps"), [
    ("cdr", "0x0150", ["_Partition", "_Virtual"]),  # the VAT's 1.50 form
    ("cdr", "0x0201", ["_Partition", "_Virtual"]),  # the VAT's 2.00+ form (file type 248)
    ("bdr", "0x0250", ["_Partition", "_Virtual"]),
    ("cdrw", "0x0150", ["_Sparable"]),
    ("cdrw", "0x0201", ["_Sparable"]),
    ("dvdram", "0x0150", ["_Partition"]),  # the DVD-RAM form: UDF 1.50, a Type 1 partition
])  # fmt: skip
def test_mkudffs_layouts_read_as_udfinfo_reads_them(tmp_path: Path, media: str, revision: str, maps: list[str]) -> None:
    need("mkudffs", "udfinfo")
    image = tmp_path / "mk.img"
    with open(image, "wb") as fp:
        fp.truncate(32 * 2**20)
    subprocess.run(["mkudffs", f"--media-type={media}", f"--udfrev={revision}", "--blocksize=2048",
                    f"--label=MK{media.upper()}", str(image)], check=True, capture_output=True)  # fmt: skip
    data = image.read_bytes()  # a recorded disc ends where writing ended: its VAT is its last block
    end = len(data) // SECTOR
    while not any(data[(end - 1) * SECTOR : end * SECTOR]):
        end -= 1
    image.write_bytes(data[: end * SECTOR])
    info = udfinfo(image)
    with open(image, "rb") as fp:
        volume = Volume(fp)
    assert [type(m).__name__ for m in volume.maps] == maps
    assert volume.label == info["label"] == f"MK{media.upper()}"
    assert len(volume.files) == int(info["numfiles"])  # 1.50 sparable: mkudffs's "Non-Allocatable Space"
    assert volume.revision == f"{int(revision, 16) >> 8:x}.{int(revision, 16) & 0xFF:02x}"
    report = check_medium(image)
    assert report.instances == 0 and report.medium == f"UDF {volume.revision}"


def udfclient(image: Path, *commands: str, write: bool = False) -> str:
    """Run Debian's udfclient (a user-space UDF reader and writer, not ours) on ``image``; its output."""
    script = "".join(f"{c}\n" for c in (*commands, "quit"))
    done = subprocess.run(["udfclient", *(["-W"] if write else []), "-b", str(SECTOR), str(image)], input=script,
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


@pytest.mark.parametrize("layout", ["mkudffs-cdrw-0x0150", "mkudffs-cdrw-0x0201", "newfs_udf"])
def test_a_medium_written_by_udfclient_is_checked_and_imported_whole(
    fileset: Path, images: dict[str, Path], tmp_path: Path, storescp_with: Callable[..., StoreSCP], layout: str
) -> None:
    """Another writer's files on sparable layouts (mkudffs's CD-RW, UDF 1.50 and 2.01) and on newfs_udf's
    Type 1 partition: read back as udfclient reads them, checked as the ISO 9660 equivalent, imported whole."""
    need("udfclient", "newfs_udf", "mkudffs")
    image = tmp_path / "written.img"
    if layout == "newfs_udf":
        subprocess.run(["newfs_udf", "-b", str(SECTOR), "-s", "32768", "-L", "WRITTEN", str(image)], check=True,
                       capture_output=True)  # fmt: skip
    else:
        with open(image, "wb") as fp:
            fp.truncate(64 * 2**20)
        revision = layout.rsplit("-", 1)[1]
        subprocess.run(["mkudffs", "--media-type=cdrw", f"--udfrev={revision}", f"--blocksize={SECTOR}",
                        "--label=WRITTEN", str(image)], check=True, capture_output=True)  # fmt: skip
    root = next(line.split()[-1] for line in udfclient(image, "ls").splitlines() if line.startswith("d"))
    top = sorted(p.name for p in fileset.iterdir())
    udfclient(image, f"lcd {fileset}", f"cd {root}", *(f"put {name}" for name in top), write=True)
    with open(image, "rb") as fp:
        volume = Volume(fp)
    if layout.startswith("mkudffs"):
        assert [type(m).__name__ for m in volume.maps] == ["_Sparable"]
    written = {p.relative_to(fileset).as_posix(): p.read_bytes() for p in fileset.rglob("*") if p.is_file()}
    read = {}
    with open_medium(image) as medium:
        for path in medium.files():
            with medium.open(path) as f:
                read[path] = f.read()
    assert {p: data for p, data in read.items() if p in written} == written
    back = tmp_path / "back"
    back.mkdir()
    folder, name = max(p for p in written if "/" in p).rsplit("/", 1)
    udfclient(image, f"lcd {back}", f"cd {root}/{folder}", f"get {name}")
    assert (back / name).read_bytes() == written[f"{folder}/{name}"]  # udfclient reads what we read

    report, iso = check_medium(image), check_medium(images["genisoimage-1.02-bridge"])
    assert report.medium == f"UDF {volume.revision}"
    assert (report.ok, report.instances, report.problems, report.profiles) == (
        iso.ok, iso.instances, iso.problems, iso.profiles)  # fmt: skip
    scp = storescp_with("+xa")
    imported = import_medium(image, destination=(scp.aet, "127.0.0.1", scp.port))
    sources = {}
    for n, (path, data) in enumerate(p for p in written.items() if p[0] != "DICOMDIR"):
        copy = tmp_path / f"on-medium-{n}"
        copy.write_bytes(data)
        sources[uid_of(copy)] = copy
    assert_all_arrived(imported, scp.folder, sources)


# -- the Metadata Mirror -----------------------------------------------------------------------


def metadata_extent(image: bytes) -> tuple[int, int]:
    """(first sector, sectors) of the main Metadata File's extent, from its entry (UDF 2.2.13.1, file type 250)."""
    for s in range(0, len(image), SECTOR):
        if image[s : s + 2] == b"\x0a\x01" and image[s + 27] == 250:
            partition = s // SECTOR - struct.unpack_from("<I", image, s + 12)[0]
            length, block = struct.unpack_from("<II", image, s + 216 + struct.unpack_from("<I", image, s + 208)[0])
            return partition + block, length // SECTOR
    raise AssertionError("no Metadata File entry")


def test_a_damaged_metadata_file_is_read_through_its_mirror(images: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(images["bd"].read_bytes())
    first, count = metadata_extent(bytes(data))
    data[first * SECTOR : (first + count) * SECTOR] = b"\xa5" * (count * SECTOR)  # every directory and entry
    damaged = tmp_path / "damaged.iso"
    damaged.write_bytes(data)
    report = check_medium(damaged)
    expected = check_medium(images["bd"])
    assert (report.ok, report.instances, report.problems) == (True, expected.instances, [])
    assert report.warnings and all("read from the Metadata Mirror" in w.problem for w in report.warnings)
    with pytest.raises(BuildError, match="no descriptor tag"):  # the burn's read-back wants both copies whole
        read_listing(damaged)
    assert read_listing(damaged, metadata="mirror") == read_listing(images["bd"])


def test_a_lost_metadata_file_entry_is_replaced_by_the_mirrors(images: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(images["bd"].read_bytes())
    [entry] = [s for s in range(0, len(data), SECTOR) if data[s : s + 2] == b"\x0a\x01" and data[s + 27] == 250]
    data[entry : entry + SECTOR] = bytes(SECTOR)
    (tmp_path / "lost.iso").write_bytes(data)
    report = check_medium(tmp_path / "lost.iso")
    assert (report.ok, report.instances) == (True, INSTANCES)
    assert [w.problem.split(" (")[0] for w in report.warnings] == ["the Metadata File is damaged"]


# -- hostile images ----------------------------------------------------------------------------


def fids(data: bytes, name: str) -> list[int]:
    """Where the File Identifier Descriptors naming ``name`` start (8-bit CS0, no implementation use)."""
    found, at = [], 0
    while (at := data.find(b"\x08" + name.encode(), at + 1)) > 0:
        pos = at - 38
        if data[pos : pos + 2] == b"\x01\x01" and data[pos + 19] == 1 + len(name):
            found.append(pos)
    return found


def entries(data: bytes, block: int) -> list[int]:
    """Where the Extended File Entries recorded at metadata ``block`` start (the main copy and the mirror)."""
    return [s for s in range(0, len(data), SECTOR)
            if data[s : s + 2] == b"\x0a\x01" and struct.unpack_from("<I", data, s + 12)[0] == block]  # fmt: skip


def icb(data: bytes, fid: int) -> int:
    return int(struct.unpack_from("<I", data, fid + 24)[0])


def hostile(images: dict[str, Path], tmp_path: Path, how: str) -> Path:
    """Our BD image with one thing changed, in both metadata copies, every tag made valid again."""
    data = bytearray(images["bd"].read_bytes())
    with open(images["bd"], "rb") as fp:
        first_instance = sorted(Volume(fp).files)[0].split("/")
    if how == "loop":  # a series' directory entry points at its study: the walk would go round forever
        [study_fid, *_] = fids(data, first_instance[2])
        for pos in fids(data, first_instance[3]):
            data[pos + 24 : pos + 28] = struct.pack("<I", icb(data, study_fid))
            retag(data, pos, 48)
    elif how == "self":  # a study's directory entry points at itself
        for pos in fids(data, first_instance[2]):
            data[pos + 24 : pos + 28] = struct.pack("<I", icb(data, fids(data, first_instance[1])[0]))
            retag(data, pos, 48)
    elif how == "directory":  # a patient's directory claims 1 TiB
        for s in entries(data, icb(data, fids(data, first_instance[1])[0])):
            data[s + 56 : s + 64] = struct.pack("<Q", 2**40)
            retag(data, s, 16 + struct.unpack_from("<H", data, s + 10)[0])
    elif how in ("extent", "size"):
        for s in entries(data, icb(data, fids(data, first_instance[4])[0])):
            if how == "extent":  # its data extent runs 1 GiB from the partition's last blocks
                data[s + 216 : s + 224] = struct.pack("<II", 2**30 - SECTOR, len(data) // SECTOR - 290)
            else:  # it claims 2^62 bytes
                data[s + 56 : s + 64] = struct.pack("<Q", 2**62)
            retag(data, s, 16 + struct.unpack_from("<H", data, s + 10)[0])
    elif how in ("dotdot", "slash"):
        first = icb(data, fids(data, first_instance[4])[0])
        for pos in [p for p in fids(data, first_instance[4]) if icb(data, p) == first]:  # main and mirror
            if how == "slash":
                data[pos + 38 : pos + 47] = b"\x08../../IM"
            else:  # the name ".." (3 bytes), the FID kept 48 bytes long by 6 bytes of implementation use
                data[pos + 19], data[pos + 36 : pos + 38] = 3, struct.pack("<H", 6)
                data[pos + 38 : pos + 48] = bytes(6) + b"\x08..\0"
            retag(data, pos, 48)
    out = tmp_path / f"{how}.iso"
    out.write_bytes(data)
    return out


def bounded(image: Path) -> None:
    """Reading ``image`` never holds more than the image itself, and a few MiB, in memory."""
    tracemalloc.start()
    try:
        try:
            with open(image, "rb") as fp:
                Volume(fp)
        except UdfError:
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < image.stat().st_size + 4 * 2**20


@pytest.mark.parametrize(("how", "reason"), [
    ("loop", "a directory loop (its entry is reached again)"),
    ("self", "a directory loop (its entry is reached again)"),
    ("directory", "the directories claim more bytes than the image holds"),
])  # fmt: skip
def test_a_directory_loop_or_an_absurd_directory_is_refused(
    images: dict[str, Path], tmp_path: Path, how: str, reason: str
) -> None:
    image = hostile(images, tmp_path, how)
    with pytest.raises(MediumError, match=f"UDF medium not read: .*{re.escape(reason)}"):
        check_medium(image)
    assert json.loads(cli("check", image, "--json").out)["problems"][0]["problem"].endswith(reason)
    bounded(image)


@pytest.mark.parametrize(("how", "reason"), [
    ("extent", "is past the end of partition 0"),
    ("size", "its UDF entry claims 4611686018427387904 bytes, more than the whole image"),
    ("slash", ESCAPES_ROOT),
    ("dotdot", ESCAPES_ROOT),
])  # fmt: skip
def test_a_hostile_entry_is_refused_and_the_rest_read(
    images: dict[str, Path], tmp_path: Path, how: str, reason: str
) -> None:
    image = hostile(images, tmp_path, how)
    with open_medium(image) as medium:
        [(path, why)] = medium.refused().items()
        assert reason in why
    report = check_medium(image)
    assert report.instances == INSTANCES - 1 and not report.ok
    assert report.problems, "the instance the DICOMDIR references and the medium lacks is a problem"
    bounded(image)


def test_directories_deeper_than_the_bound_are_refused(tmp_path: Path) -> None:
    need("genisoimage")
    deep = tmp_path / "deep"
    folder = deep.joinpath(*["D"] * (MAX_DEPTH + 1))
    folder.mkdir(parents=True)
    (folder / "F").write_bytes(b"x")
    subprocess.run(["genisoimage", "-quiet", "-udf", "-D", "-o", str(tmp_path / "bridge.iso"), str(deep)],
                   check=True, capture_output=True)  # fmt: skip
    image = udf_only(tmp_path / "bridge.iso", tmp_path / "deep.iso")
    with pytest.raises(MediumError, match=f"directories nested deeper than {MAX_DEPTH} levels"):
        check_medium(image)


def test_a_cut_image_is_refused_clearly(images: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.iso"
    shutil.copyfile(images["bd"], cut)
    with open(cut, "r+b") as fp:
        fp.truncate(300 * SECTOR)  # the anchor at 256 and the volume descriptors stay, the metadata goes
    with pytest.raises(MediumError, match="UDF medium not read"):
        check_medium(cut)


@pytest.mark.parametrize("profile", ["STD-GEN-CD", "STD-GEN-BD"])
def test_a_large_element_before_the_pixels_is_read_from_the_image_itself(
    tmp_path: Path, storescp_with: Callable[..., StoreSCP], profile: str
) -> None:
    """A header value pydicom defers (here 1 MiB) is read back from the medium's file object, not by
    opening the file's name on the medium as a path of this machine."""
    source = tmp_path / "big.dcm"
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    block = ds.private_block(0x0029, "MEDIANODE TEST", create=True)
    block.add_new(0x01, "OB", bytes(range(256)) * 4096)
    ds.save_as(source)
    image = tmp_path / "medium.iso"
    result = cli("burn", "--no-pdi", "--profile", profile, "--out", image, source)
    assert result.code == 0, result.err
    report = check_medium(image)
    assert (report.ok, report.instances, report.problems) == (True, 1, [])
    scp = storescp_with("+xa")
    assert import_medium(image, destination=(scp.aet, "127.0.0.1", scp.port)).ok
    arrived = dcmread(next(iter(received(scp.folder).values())))
    assert arrived.private_block(0x0029, "MEDIANODE TEST")[0x01].value == bytes(range(256)) * 4096


@pytest.mark.parametrize("file_system", sorted({p.file_system for p in PROFILES.values()}))
def test_every_file_system_a_profile_writes_is_read_by_check(tmp_path: Path, file_system: str) -> None:
    """The medium of every profile, burnt by us, is checked whole: ISO 9660, UDF and folder."""
    profile = next(p for p in PROFILES.values() if p.file_system == file_system)
    out = tmp_path / ("medium" if file_system == "folder" else "medium.iso")
    result = cli("burn", "--no-pdi", "--profile", profile.name, "--out", out,
                 *(str(get_testdata_file(name)) for name in SOURCES[:2]))  # fmt: skip
    assert result.code == 0, result.err
    report = check_medium(out)
    assert (report.ok, report.instances, report.problems) == (True, 2, [])
    assert report.medium == {"iso9660": "ISO 9660", "udf-1.50": "UDF 1.50", "udf-2.60": "UDF 2.60",
                             "folder": "folder"}[file_system]


@pytest.mark.parametrize("name", UDF_ONLY)
def test_a_udf_only_medium_is_labelled_as_udfinfo_names_it(images: dict[str, Path], name: str) -> None:
    need("udfinfo")
    assert medium_label(images[name]) == udfinfo(images[name])["label"] != ""


# -- sparing tables and allocation extents, on real layouts ---------------------------------------


def test_a_spared_packet_is_read_where_the_sparing_table_moved_it(tmp_path: Path) -> None:
    """UDF 2.2.12: mkudffs's CD-RW layout, the packet holding the root directory moved to the spare area."""
    need("mkudffs")
    image = tmp_path / "cdrw.img"
    with open(image, "wb") as fp:
        fp.truncate(32 * 2**20)
    subprocess.run(["mkudffs", "--media-type=cdrw", "--udfrev=0x0201", "--blocksize=2048", "--label=SPARED",
                    str(image)], check=True, capture_output=True)  # fmt: skip
    data = bytearray(image.read_bytes())
    with open(image, "rb") as fp:
        volume = Volume(fp)
    [part] = volume.maps
    root = next(s // SECTOR for s in range(0, len(data), SECTOR)
                if data[s : s + 2] == b"\x0a\x01" and data[s + 27] == 4)  # fmt: skip
    packet = (root - part.start) // part.packet * part.packet
    tables = [s for s in range(0, len(data), SECTOR) if data[s + 17 : s + 35] == b"*UDF Sparing Table"]
    spare = struct.unpack_from("<I", data, tables[0] + 60)[0]  # the first map entry's mapped location
    size = part.packet * SECTOR
    moved = part.start + packet
    data[spare * SECTOR : spare * SECTOR + size] = data[moved * SECTOR : moved * SECTOR + size]
    data[moved * SECTOR : moved * SECTOR + size] = bytes(size)
    unmapped = tmp_path / "unmapped.img"
    unmapped.write_bytes(data)
    for table in tables:
        data[table + 56 : table + 60] = struct.pack("<I", packet)
        retag(data, table, 16 + struct.unpack_from("<H", data, table + 10)[0])
    image.write_bytes(data)
    with open(image, "rb") as fp:
        assert (Volume(fp).label, Volume(fp).files) == ("SPARED", {})
    with open(unmapped, "rb") as fp, pytest.raises(UdfError, match="no descriptor tag"):
        Volume(fp)  # without the table's entry the root directory is gone


def continued(images: dict[str, Path], tmp_path: Path, *, loop: bool) -> tuple[Path, str]:
    """Our BD image with a file's allocation descriptor moved into an Allocation Extent Descriptor (4/14.5) in a
    free metadata block; with ``loop``, that extent continues in itself."""
    data = bytearray(images["bd"].read_bytes())
    with open(images["bd"], "rb") as fp:
        path = sorted(Volume(fp).files)[0]
    first, count = metadata_extent(bytes(data))
    spare = count - 1  # the metadata extent is whole 32-block units: its last block is free
    assert not any(data[(first + spare) * SECTOR : (first + spare + 1) * SECTOR])
    entry_block = icb(data, fids(data, path.split("/")[-1])[0])
    for s in entries(data, entry_block):
        ad = bytes(data[s + 216 : s + 232])
        data[s + 216 : s + 232] = struct.pack("<IIH6x", 3 << 30 | SECTOR, spare, 1)  # type 3: continued there
        retag(data, s, 16 + struct.unpack_from("<H", data, s + 10)[0])
        aed = s + (spare - entry_block) * SECTOR
        inner = struct.pack("<IIH6x", 3 << 30 | SECTOR, spare, 1) if loop else ad
        data[aed : aed + SECTOR] = bytes(SECTOR)
        data[aed : aed + 40] = struct.pack("<HHBBHHHIII", 258, 3, 0, 0, 0, 0, 0, spare, 0, 16) + inner
        retag(data, aed, 40)
    out = tmp_path / "continued.iso"
    out.write_bytes(data)
    return out, path


def test_allocation_descriptors_continued_in_an_extent_are_followed(images: dict[str, Path], tmp_path: Path) -> None:
    image, path = continued(images, tmp_path, loop=False)
    with open(image, "rb") as fp, open(images["bd"], "rb") as original:
        assert Volume(fp).open(path).read() == Volume(original).open(path).read()
    assert check_medium(image).ok


def test_allocation_extents_in_a_loop_are_refused(images: dict[str, Path], tmp_path: Path) -> None:
    image, path = continued(images, tmp_path, loop=True)
    with open_medium(image) as medium:
        [(refused, why)] = medium.refused().items()
        assert refused == path and "its allocation extents loop at block" in why
    bounded(image)


def test_names_in_8_and_16_bit_cs0_read_as_7zip_reads_them(tmp_path: Path) -> None:
    """UDF 2.1.1: genisoimage records "café" with 8 bits a character and "Ωmega.txt" with 16."""
    need("genisoimage", "7z")
    (tmp_path / "src" / "DIR").mkdir(parents=True)
    (tmp_path / "src" / "Ωmega.txt").write_bytes(b"omega")
    (tmp_path / "src" / "DIR" / "café").write_bytes(b"cafe")
    subprocess.run(["genisoimage", "-quiet", "-input-charset", "utf-8", "-udf", "-o", str(tmp_path / "b.iso"),
                    str(tmp_path / "src")], check=True, capture_output=True)  # fmt: skip
    image = udf_only(tmp_path / "b.iso", tmp_path / "names.iso")
    with open(image, "rb") as fp:
        volume = Volume(fp)
        assert {p: f.size for p, f in volume.files.items()} == seven_zip(image) == {"Ωmega.txt": 5, "DIR/café": 4}
        assert volume.open("Ωmega.txt").read() == b"omega"
    data = image.read_bytes()
    assert b"\x10\x03\xa9\x00m" in data and b"\x08caf\xe9" in data  # both compressions are on the image


def test_an_indirect_entry_is_followed(images: dict[str, Path], tmp_path: Path) -> None:
    """4/14.7: a file's ICB is an Indirect Entry naming where its File Entry now is (strategy 4096's way)."""
    data = bytearray(images["bd"].read_bytes())
    with open(images["bd"], "rb") as fp:
        volume = Volume(fp)
        path = sorted(volume.files)[0]
        expected = volume.open(path).read()
    _, count = metadata_extent(bytes(data))
    moved = count - 1  # a free block of the metadata extent
    entry_block = icb(data, fids(data, path.split("/")[-1])[0])
    for s in entries(data, entry_block):
        to = s + (moved - entry_block) * SECTOR
        data[to : to + SECTOR] = data[s : s + SECTOR]
        data[to + 12 : to + 16] = struct.pack("<I", moved)
        retag(data, to, 16 + struct.unpack_from("<H", data, to + 10)[0])
        icb_tag = struct.pack("<IHHHBB6sH", 0, 4096, 0, 2, 0, 3, bytes(6), 0)  # 4/14.6: strategy 4096, type 3
        data[s : s + SECTOR] = bytes(SECTOR)
        data[s : s + 52] = struct.pack("<HHBBHHHI", 259, 3, 0, 0, 0, 0, 0, entry_block) + icb_tag + struct.pack(
            "<IIH6x", SECTOR, moved, 1)  # fmt: skip
        retag(data, s, 52)
    image = tmp_path / "indirect.iso"
    image.write_bytes(data)
    with open(image, "rb") as fp:
        assert Volume(fp).open(path).read() == expected
