"""node.media.udf: UDF 2.60 (BD) and 1.50 (DVD-RAM) images read back by udfinfo, 7-Zip, libudfread, the
Linux kernel and read_listing."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest

from node.errors import BuildError
from node.media.content import FileSlice, MediaFile, PieceReader
from node.media.udf import SECTOR, Revision, image_sectors, read_listing, verify_image, write_image
from tests.conftest import need

VOLUME = "MEDIANODE_UDF_TEST_0123456789ABC"  # 32 d-characters, the most a caller gives
SERIES = ("DICOM", "PA000000", "ST000000", "SE000000")


def chunks(f: MediaFile, size: int = 1 << 24) -> Iterator[bytes]:
    """A file's pieces, re-read from their sources in chunks."""
    reader = PieceReader(f)
    try:
        while n := reader.readinto(memoryview(buf := bytearray(size))):
            yield bytes(buf[:n])
    finally:
        reader.close()


def content(f: MediaFile) -> bytes:
    return b"".join(chunks(f))


def digest(chunks: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def file_set(folder: Path) -> list[MediaFile]:
    """Every shape a medium has: nested and deep directories, a big one, empty / 2048-byte / mixed-piece files."""
    src = folder / "src.bin"
    src.write_bytes(os.urandom(300_000))
    s = str(src)
    files = [
        MediaFile(("DICOMDIR",), [b"\0" * 128 + b"DICM" + os.urandom(3000)]),
        MediaFile(("README",), [b"plain bytes only\n"]),
        MediaFile(("EMPTY",), []),
        MediaFile(("SECTOR",), [FileSlice(s, 1, SECTOR)]),
        MediaFile(("MIXED",), [b"head", FileSlice(s, 10, 5000), b"", b"mid", FileSlice(s, 0, 0), FileSlice(s, 7, 41)]),
        MediaFile(("D1", "D2", "D3", "D4", "D5", "D6", "D7", "DEEPEST"), [b"eight levels", FileSlice(s, 100, 777)]),
        MediaFile(("D1", "SIDE"), [FileSlice(s, 0, 300_000)]),
        MediaFile(("D1", "D2", "Z_LAST"), [b"z"]),
        MediaFile(("D1", "D2", "A0"), [b"a"]),
    ]
    # 150 FIDs of 48 bytes after the parent's 40: the directory spans 4 sectors, FIDs straddling their ends
    for i in reversed(range(150)):
        files.append(MediaFile((*SERIES, f"IM{i:06d}"), [b"DICM", FileSlice(s, i, 1000 + i * 7)]))
    return files


def directories(files: list[MediaFile]) -> set[str]:
    """Every directory of the set as "/A/B", the root as ""."""
    return {"/" + "/".join(f.components[:n]) if n else "" for f in files for n in range(len(f.components))}


@dataclass
class Image:
    path: Path
    files: list[MediaFile]
    revision: Revision

    @property
    def entry_tag(self) -> bytes:
        """The first bytes of its file entries: 266, Extended File Entry (2.60); 261, File Entry (1.50)."""
        return b"\x0a\x01" if self.revision == "2.60" else b"\x05\x01"


@pytest.fixture(scope="module", params=["2.60", "1.50"])
def image(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Image:
    revision: Revision = request.param
    folder = tmp_path_factory.mktemp("udf")
    files = file_set(folder)
    path = folder / "medium.img"
    written: list[int] = []
    with open(path, "wb+") as out:
        write_image(files, out, volume_id=VOLUME, progress=written.append, revision=revision)
    assert sum(written) == sum(f.size for f in files)  # progress counts file data, every byte once
    return Image(path, files, revision)


def test_image_sectors_is_the_size_written(image: Image) -> None:
    size = image.path.stat().st_size
    assert size % SECTOR == 0
    assert image_sectors(image.files, revision=image.revision) == size // SECTOR


def test_udfinfo_reads_a_closed_volume_of_its_revision(image: Image) -> None:
    need("udfinfo")
    done = subprocess.run(["udfinfo", str(image.path)], capture_output=True, text=True, check=True)
    assert done.stderr == ""  # no warning: anchors, both sequences and the integrity descriptor are found
    info = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line and "," not in line)
    assert info["udfrev"] == info["udfwriterev"] == image.revision  # from the LVID (UDF 2.2.6.4)
    assert info["label"] == info["lvid"] == VOLUME  # the logical volume identifier, a dstring[128]
    assert info["vid"] == info["fsid"] == VOLUME[:30]  # dstring[32]s: the compression ID and 30 characters
    access = "readonly" if image.revision == "2.60" else "overwritable"  # BD-R; DVD-RAM, its bitmap read
    assert (info["blocksize"], info["integrity"], info["accesstype"]) == ("2048", "closed", access)
    if image.revision == "1.50":  # the Unallocated Space Bitmap: every block of the partition is in use
        assert info["freeblocks"] == "0" and int(info["usedblocks"]) == int(info["blocks"]) - 288 - 1
    assert int(info["blocks"]) == image_sectors(image.files, revision=image.revision)
    assert int(info["numfiles"]) == len(image.files)
    assert int(info["numdirs"]) == len(directories(image.files))
    assert "start=256, blocks=1, type=ANCHOR" in done.stdout
    assert f"start={int(info['blocks']) - 1}, blocks=1, type=ANCHOR" in done.stdout


def test_7zip_lists_and_extracts_every_file(image: Image, tmp_path: Path) -> None:
    need("7z")
    listing = subprocess.run(["7z", "l", "-slt", str(image.path)], capture_output=True, text=True, check=True)
    assert "Type = Udf" in listing.stdout and f"Version = {image.revision}" in listing.stdout
    assert "Warnings" not in listing.stdout and "ERRORS" not in listing.stdout  # e.g. data after the end anchor
    out = tmp_path / "x"
    subprocess.run(["7z", "x", f"-o{out}", str(image.path)], capture_output=True, check=True)
    found = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert found == {f.relpath for f in image.files}
    for f in image.files:
        assert (out / f.relpath).read_bytes() == content(f), f.relpath


class Dirent(ctypes.Structure):
    """struct udfread_dirent."""

    _fields_ = [("d_type", ctypes.c_uint), ("d_name", ctypes.c_char_p)]


class UdfRead:
    """libudfread (the UDF reader of libbluray, VLC, Kodi) through ctypes; a context manager."""

    def __init__(self, path: Path) -> None:
        name = ctypes.util.find_library("udfread")
        assert name, "missing peer libudfread0: run scripts/test as root to install it"
        lib = self.lib = ctypes.CDLL(name)
        p, c = ctypes.c_void_p, ctypes.c_char_p
        for fn, res, args in [
            ("udfread_init", p, []), ("udfread_open", ctypes.c_int, [p, c]), ("udfread_close", None, [p]),
            ("udfread_get_volume_id", c, [p]), ("udfread_opendir", p, [p, c]), ("udfread_closedir", None, [p]),
            ("udfread_readdir", p, [p, p]), ("udfread_file_open", p, [p, c]), ("udfread_file_close", None, [p]),
            ("udfread_file_size", ctypes.c_int64, [p]),
            ("udfread_file_read", ctypes.c_ssize_t, [p, p, ctypes.c_size_t]),
        ]:  # fmt: skip
            getattr(lib, fn).restype, getattr(lib, fn).argtypes = res, args
        self.udf = lib.udfread_init()
        assert lib.udfread_open(self.udf, os.fsencode(path)) == 0, f"libudfread cannot open {path}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.udfread_close(self.udf)

    def files(self, path: str = "") -> Iterator[str]:
        """Every file below ``path``, as "/A/B"."""
        d, entry, children = self.lib.udfread_opendir(self.udf, path.encode() or b"/"), Dirent(), []
        assert d, f"libudfread cannot open the directory {path or '/'}"
        while self.lib.udfread_readdir(d, ctypes.byref(entry)):
            children.append((entry.d_type, entry.d_name.decode()))
        self.lib.udfread_closedir(d)
        for kind, name in children:
            if name not in (".", ".."):
                yield from self.files(f"{path}/{name}") if kind == 1 else [f"{path}/{name}"]  # 1: UDF_DT_DIR

    def read(self, path: str) -> Iterator[bytes]:
        f = self.lib.udfread_file_open(self.udf, path.encode())
        assert f, f"libudfread cannot open {path}"
        try:
            size, buf, done = self.lib.udfread_file_size(f), ctypes.create_string_buffer(1 << 20), 0
            while n := self.lib.udfread_file_read(f, buf, len(buf)):
                assert n > 0, f"libudfread fails to read {path} at byte {done}"
                done += n
                yield buf.raw[:n]
            assert done == size
        finally:
            self.lib.udfread_file_close(f)


def test_libudfread_reads_every_file(image: Image) -> None:
    with UdfRead(image.path) as udf:
        assert udf.lib.udfread_get_volume_id(udf.udf).decode() == VOLUME[:30]  # the PVD's volume identifier
        assert set(udf.files()) == {f"/{f.relpath}" for f in image.files}
        for f in image.files:
            assert b"".join(udf.read(f"/{f.relpath}")) == content(f), f.relpath


@pytest.mark.parametrize("image", ["2.60"], indirect=True)
def test_the_metadata_mirror_stands_in_for_a_lost_metadata_file(image: Image, tmp_path: Path) -> None:
    """Blank the Metadata File's entry (UDF 2.2.13.1, file type 250): libudfread falls back to the mirror."""
    damaged = tmp_path / "damaged.img"
    data = bytearray(image.path.read_bytes())
    entries = [s for s in range(0, len(data), SECTOR) if data[s : s + 2] == b"\x0a\x01" and data[s + 27] in (250, 251)]
    assert [data[s + 27] for s in entries] == [250, 251]
    data[entries[0] : entries[0] + SECTOR] = bytes(SECTOR)
    damaged.write_bytes(data)
    with UdfRead(damaged) as udf:
        assert set(udf.files()) == {f"/{f.relpath}" for f in image.files}
        for f in image.files:
            assert b"".join(udf.read(f"/{f.relpath}")) == content(f), f.relpath


@pytest.mark.parametrize("image", ["1.50"], indirect=True)
def test_udf_150_has_no_metadata_partition_and_file_entries_only(image: Image) -> None:
    """PS3.12 Annex J: UDF 1.50, ECMA-167 2nd edition (NSR02, tag version 2), one Type 1 partition map."""
    data = image.path.read_bytes()
    assert data[17 * SECTOR + 1 : 17 * SECTOR + 6] == b"NSR02"
    files = {offset // SECTOR + n for runs, _ in read_listing(image.path).values() for offset, length in runs
             for n in range(-(-length // SECTOR))}  # fmt: skip
    tags = {s: struct.unpack_from("<HH", data, s) for s in range(0, len(data), SECTOR)  # tags: 3/7.2.3's checksum
            if s // SECTOR not in files and any(data[s : s + 16]) and sum(data[s : s + 16]) - 2 * data[s + 4] & 255 == 0}
    assert {version for _, version in tags.values()} == {2}
    idents = [ident for ident, _ in tags.values()]
    assert 266 not in idents and idents.count(261) == len(image.files) + len(directories(image.files))
    lvd = data[35 * SECTOR : 36 * SECTOR]  # the Main VDS's fourth descriptor
    assert struct.unpack_from("<H", lvd)[0] == 6 and struct.unpack_from("<II", lvd, 264) == (6, 1)  # one map


def test_linux_mounts_it_read_only(image: Image, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    if not Path("/dev/loop-control").exists():
        pytest.skip("no /dev/loop-control: this sandbox has no loop devices")
    probe = subprocess.run(["losetup", "--find"], check=False, capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"losetup finds no free loop device: {probe.stderr.strip()}")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount = ["mount", "-o", "loop,ro", "-t", "udf", str(image.path), str(mnt)]
    done = subprocess.run(mount, check=False, capture_output=True, text=True)
    if done.returncode and "udf" not in Path("/proc/filesystems").read_text().split():
        pytest.skip(f"this kernel has no UDF driver, built in or loadable: {done.stderr.splitlines()[0]}")
    assert done.returncode == 0, f"the kernel refuses the image: {done.stderr.strip()}"
    try:
        found = {p.relative_to(mnt).as_posix() for p in mnt.rglob("*") if p.is_file()}
        assert found == {f.relpath for f in image.files}
        for f in image.files:
            assert (mnt / f.relpath).read_bytes() == content(f), f.relpath
    finally:
        subprocess.run(["umount", mnt], check=True)


def test_read_listing_finds_every_file_where_its_bytes_are(image: Image) -> None:
    listing = read_listing(image.path)
    assert listing.keys() == {f"/{f.relpath}" for f in image.files}
    with open(image.path, "rb") as img:
        for f in image.files:
            runs, size = listing[f"/{f.relpath}"]
            assert size == f.size
            assert len(runs) == (1 if f.size else 0)  # contiguous, and an empty file has no extent
            assert all(offset % SECTOR == 0 for offset, _ in runs)
            assert b"".join(os.pread(img.fileno(), n, offset) for offset, n in runs) == content(f)


def test_read_listing_rejects_a_damaged_entry(image: Image, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.img"
    data = bytearray(image.path.read_bytes())
    entries = [s for s in range(0, len(data), SECTOR) if data[s : s + 2] == image.entry_tag and data[s + 27] == 5]
    data[entries[0] + 60] ^= 1  # a bit of the first file entry's information length
    damaged.write_bytes(data)
    with pytest.raises(BuildError, match="fails its CRC"):
        read_listing(damaged)


@pytest.mark.slow
@pytest.mark.parametrize("revision", ["2.60", "1.50"])
def test_a_file_over_1_gib_is_split_into_extents_readers_follow(tmp_path: Path, revision: Revision) -> None:
    """4/14.14.1.1: an extent is below 2^30 bytes; a longer file has several, which every reader joins."""
    need("7z")
    src = tmp_path / "big.src"
    size = 2**30 + 5 * SECTOR + 123
    with open(src, "wb") as fp:  # sparse, with data where a wrong extent would show: start, 1 GiB, end
        for at in (0, 2**30 - 4096, size - 4096):
            fp.seek(at)
            fp.write(os.urandom(4096))
    files = [MediaFile(("BIG",), [b"HEAD", FileSlice(str(src), 0, size)]), MediaFile(("SMALL",), [b"small"])]
    path = tmp_path / "big.img"
    with open(path, "wb+") as out:
        write_image(files, out, volume_id=VOLUME, revision=revision)
    assert path.stat().st_size == image_sectors(files, revision=revision) * SECTOR
    expected = digest(chunks(files[0]))
    (runs, got) = read_listing(path)["/BIG"]
    assert got == size + 4 and sum(n for _, n in runs) == got
    with open(path, "rb") as img:
        assert digest(os.pread(img.fileno(), min(1 << 24, start + n - at), at)
                      for start, n in runs for at in range(start, start + n, 1 << 24)) == expected  # fmt: skip
    with UdfRead(path) as udf:
        assert digest(udf.read("/BIG")) == expected
    subprocess.run(["7z", "x", f"-o{tmp_path / 'x'}", str(path), "BIG"], capture_output=True, check=True)
    with open(tmp_path / "x" / "BIG", "rb") as fp:
        assert digest(iter(lambda: fp.read(1 << 24), b"")) == expected


def test_a_sparse_file_over_4_gib_counts_its_sectors(tmp_path: Path) -> None:
    """No 4 GiB limit in UDF: image_sectors takes a 5 GiB source (not written here)."""
    src = tmp_path / "huge.src"
    size = 5 * 2**30 + 1
    with open(src, "wb") as fp:
        fp.truncate(size)
    small = image_sectors([MediaFile(("HUGE",), [b"x"])])
    assert image_sectors([MediaFile(("HUGE",), [FileSlice(str(src), 0, size)])]) == small - 1 + -(-size // SECTOR)


@pytest.mark.parametrize(
    ("components", "message"),
    [
        ([("A",), ("A",)], "twice"),
        ([("A",), ("A", "B")], "is a file, it cannot be a directory too"),
        ([("A", "B"), ("A",)], "is a directory, it cannot be a file too"),
        ([("CAFÉ",)], "cannot be a UDF file identifier"),
        ([("",)], "cannot be a UDF file identifier"),
    ],
)
def test_a_set_udf_cannot_hold_is_refused_before_writing(
    tmp_path: Path, components: list[tuple[str, ...]], message: str
) -> None:
    files = [MediaFile(c, [b"x"]) for c in components]
    with pytest.raises(BuildError, match=message):
        image_sectors(files)
    path = tmp_path / "never.img"
    with open(path, "wb+") as out, pytest.raises(BuildError, match=message):
        write_image(files, out, volume_id=VOLUME)
    assert path.stat().st_size == 0


def test_a_source_shorter_than_its_slice_is_a_build_error(tmp_path: Path) -> None:
    src = tmp_path / "short.src"
    src.write_bytes(b"12345")
    with open(tmp_path / "x.img", "wb+") as out, pytest.raises(BuildError, match="shorter than expected"):
        write_image([MediaFile(("F",), [FileSlice(str(src), 0, 10)])], out, volume_id=VOLUME)


def test_verify_image_catches_a_flipped_byte_and_a_missing_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(50_000))
    files = [MediaFile(("DICOMDIR",), [b"dir"]), MediaFile((*SERIES, "IM000000"), [b"meta", FileSlice(str(src), 0, 50_000)])]
    path = tmp_path / "v.img"
    with open(path, "wb+") as out:
        write_image(files, out, volume_id=VOLUME)
    verify_image(path, files)
    with pytest.raises(BuildError, match="NEW is missing"):
        verify_image(path, [*files, MediaFile(("NEW",), [b"x"])])
    (runs, _) = read_listing(path)["/" + "/".join((*SERIES, "IM000000"))]
    with open(path, "r+b") as fp:
        fp.seek(runs[0][0] + 1000)
        byte = fp.read(1)
        fp.seek(-1, os.SEEK_CUR)
        fp.write(bytes([byte[0] ^ 0x80]))
    with pytest.raises(BuildError, match="IM000000 differs from its source"):
        verify_image(path, files)
