"""node.media.iso: images read back by isoinfo, isovfy, xorriso and pycdlib; verify_image catches damage."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pycdlib
import pytest

from node.errors import BuildError
from node.media.content import FileSlice, MediaFile
from node.media.iso import SECTOR, image_sectors, verify_image, write_image

DEEP = ("D1", "D2", "D3", "D4", "D5", "D6", "D7")  # 7 directories below the root: ECMA-119 level 8


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def source(tmp_path: Path, name: str, size: int) -> str:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return str(path)


def file_set(tmp_path: Path) -> list[MediaFile]:
    """Every shape a medium has: a big directory, nested ones, empty / 2048-byte / mixed-piece files."""
    src = source(tmp_path, "src.bin", 300_000)
    files = [
        MediaFile(("DICOMDIR",), [b"\0" * 128 + b"DICM" + os.urandom(3000)]),
        MediaFile(("README",), [b"plain bytes only\n"]),
        MediaFile(("EMPTY",), []),
        MediaFile(("SECTOR",), [FileSlice(src, 1, SECTOR)]),
        MediaFile(("MIXED",), [b"head", FileSlice(src, 10, 5000), b"", b"mid", FileSlice(src, 0, 0), FileSlice(src, 7, 2041)]),
        MediaFile(DEEP + ("DEEPEST",), [b"eight levels", FileSlice(src, 100, 777)]),
        MediaFile(("D1", "SIDE"), [FileSlice(src, 0, 300_000)]),
        MediaFile(("D1", "D2", "Z_LAST"), [b"z"]),
        MediaFile(("D1", "D2", "A0"), [b"a"]),
    ]
    # 150 records of 44 bytes: the directory spans 4 sectors; shuffled names must come out sorted
    for i in reversed(range(150)):
        files.append(MediaFile(("DICOM", "P0000001", "S0000001", f"I{i:07d}"), [b"DICM", FileSlice(src, i, 1000 + i * 7)]))
    return files


def content(f: MediaFile) -> bytes:
    parts = []
    for p in f.pieces:
        if isinstance(p, bytes):
            parts.append(p)
        else:
            with open(p.path, "rb") as fh:
                fh.seek(p.offset)
                parts.append(fh.read(p.length))
    return b"".join(parts)


def build(tmp_path: Path, files: list[MediaFile], name: str = "out.iso") -> Path:
    img = tmp_path / name
    with open(img, "wb+") as out:
        write_image(files, out, volume_id="MEDIANODE_TEST")
    return img


def test_image_sectors_is_the_written_size(tmp_path: Path) -> None:
    for files in (file_set(tmp_path), [MediaFile(("ONE",), [b"x"])], []):
        img = build(tmp_path, files)
        assert os.path.getsize(img) % SECTOR == 0
        assert image_sectors(files) == os.path.getsize(img) // SECTOR
        verify_image(img, files)


@pytest.mark.parametrize(("n_files", "dir_sectors"), [(45, 1), (46, 2)])
def test_a_directory_that_fills_its_sector_exactly(tmp_path: Path, n_files: int, dir_sectors: int) -> None:
    """"." + ".." (68 bytes) + 45 records of 44 bytes = 2048: the 46th record starts a new sector."""
    files = [MediaFile(("DIR", f"I{i:07d}"), [b"%d" % i]) for i in range(n_files)]
    img = build(tmp_path, files)
    assert image_sectors(files) == os.path.getsize(img) // SECTOR
    assert "No errors found" in run("isovfy", str(img))
    assert re.search(rf"^d.* {dir_sectors * SECTOR} .*\]  DIR $", run("isoinfo", "-l", "-i", str(img)), re.M)
    verify_image(img, files)


def test_iso9660_read_back_by_isoinfo_isovfy_and_xorriso(tmp_path: Path) -> None:
    files = file_set(tmp_path)
    img = build(tmp_path, files)

    assert "No errors found" in run("isovfy", str(img))
    info = run("isoinfo", "-d", "-i", str(img))
    assert "Volume id: MEDIANODE_TEST" in info
    assert "Publisher id: MEDIANODE" in info and "Application id: MEDIANODE" in info
    assert f"Volume size is: {os.path.getsize(img) // SECTOR}" in info

    # isoinfo -f: every file as NAME.;1 (ECMA-119 7.5.1), every directory without a version
    listed = set(run("isoinfo", "-f", "-i", str(img)).split())
    dirs = {"/" + "/".join(f.components[:i]) for f in files for i in range(1, len(f.components))}
    assert listed == {f"/{f.relpath}.;1" for f in files} | dirs

    # isoinfo -l: sizes, and records sorted by name in each directory (ECMA-119 9.3)
    sizes: dict[str, int] = {}
    for block in run("isoinfo", "-l", "-i", str(img)).split("Directory listing of ")[1:]:
        here, *lines = block.strip().splitlines()
        names = [line.split()[-1] for line in lines]
        assert names[:2] == [".", ".."] and names[2:] == sorted(names[2:])
        for line in lines:
            sizes[here + line.split()[-1]] = int(line.split()[4])
    for f in files:
        assert sizes[f"/{f.relpath}.;1"] == f.size
    assert sizes["/DICOM/P0000001/S0000001/."] == 4 * SECTOR

    # xorriso: sizes, then the bytes of every file
    lsdl = run("xorriso", "-indev", str(img), "-find", "/", "-type", "f", "-exec", "lsdl")
    found = {m[2]: int(m[1]) for m in re.finditer(r"^-\S+\s+\d+\s+\d+\s+\d+\s+(\d+)\s.*'(/[^']+)'$", lsdl, re.M)}
    assert found == {f"/{f.relpath}": f.size for f in files}
    out = tmp_path / "extracted"
    run("xorriso", "-osirrox", "on", "-indev", str(img), "-extract", "/", str(out))
    for f in files:
        assert (out / f.relpath).read_bytes() == content(f), f.relpath


def test_iso9660_structures(tmp_path: Path) -> None:
    """Path tables (ECMA-119 9.4), records within sectors (6.8.1.1), UTC dates (8.4.26.1)."""
    files = file_set(tmp_path)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    data = build(tmp_path, files).read_bytes()
    pvd = data[16 * SECTOR : 17 * SECTOR]
    assert pvd[:7] == b"\x01CD001\x01" and data[17 * SECTOR : 17 * SECTOR + 7] == b"\xffCD001\x01"
    assert not any(data[: 16 * SECTOR])
    created = datetime.strptime(pvd[813:827].decode(), "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    assert before <= created <= datetime.now(timezone.utc) and pvd[829] == 0
    assert struct.unpack("<I", pvd[80:84]) == struct.unpack(">I", pvd[84:88]) == (len(data) // SECTOR,)

    size, = struct.unpack("<I", pvd[132:136])
    l_at, = struct.unpack("<I", pvd[140:144])
    m_at, = struct.unpack(">I", pvd[148:152])

    def table(at: int, order: str) -> list[tuple[int, int, bytes]]:
        raw, rows, pos = data[at * SECTOR : at * SECTOR + size], [], 0
        while pos < size:
            n, _, extent, parent = struct.unpack(order + "BBIH", raw[pos : pos + 8])
            rows.append((extent, parent, raw[pos + 8 : pos + 8 + n]))
            pos += 8 + n + n % 2
        return rows

    rows = table(l_at, "<")
    assert rows == table(m_at, ">")
    level = {1: 1}
    for number, (_, parent, _) in enumerate(rows[1:], 2):
        level[number] = level[parent] + 1
    keys = [(level[n], parent, name) for n, (_, parent, name) in enumerate(rows, 1)]
    assert keys == sorted(keys) and max(level.values()) == 8 and len(rows) == 11

    for extent, _, _ in rows:  # each directory: records never cross a sector, "." is first
        length, = struct.unpack("<I", data[extent * SECTOR + 10 : extent * SECTOR + 14])
        assert data[extent * SECTOR + 33] == 0
        for sector in range(extent, extent + length // SECTOR):
            pos = 0
            while pos < SECTOR and data[sector * SECTOR + pos]:
                pos += data[sector * SECTOR + pos]
            assert pos <= SECTOR


def test_verify_catches_a_flipped_byte(tmp_path: Path) -> None:
    files = file_set(tmp_path)
    img = build(tmp_path, files)
    verify_image(img, files)
    iso = pycdlib.PyCdlib()
    iso.open(str(img))
    (start, length), = iso.get_file_byte_extents(iso_path="/D1/SIDE.;1")
    iso.close()
    with open(img, "r+b") as fh:
        fh.seek(start + length - 1)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([last[0] ^ 1]))
    with pytest.raises(BuildError, match="D1/SIDE differs from its source"):
        verify_image(img, files)


def test_verify_catches_a_truncated_image(tmp_path: Path) -> None:
    files = file_set(tmp_path)
    img = build(tmp_path, files)
    os.truncate(img, os.path.getsize(img) - 3 * SECTOR)
    with pytest.raises(BuildError):
        verify_image(img, files)
    os.truncate(img, 10 * SECTOR)
    with pytest.raises(BuildError, match="cannot read back"):
        verify_image(img, files)


def test_verify_catches_missing_extra_and_changed_files(tmp_path: Path) -> None:
    files = file_set(tmp_path)
    img = build(tmp_path, files)
    with pytest.raises(BuildError, match="README.* is on the image but not in the file-set"):
        verify_image(img, [f for f in files if f.relpath != "README"])
    with pytest.raises(BuildError, match="NEW.* is missing from the image"):
        verify_image(img, [*files, MediaFile(("NEW",), [b"new"])])
    changed = [MediaFile(f.components, [b"readme, other bytes\n"]) if f.relpath == "README" else f for f in files]
    with pytest.raises(BuildError, match="README is 17 bytes on the image, 20 in the file-set"):
        verify_image(img, changed)


def test_a_file_of_4_gib_is_refused_before_writing(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as fh:
        fh.truncate(2**32)
    files = [MediaFile(("SMALL",), [b"x"]), MediaFile(("HUGE",), [b"hdr", FileSlice(str(sparse), 3, 2**32 - 3)])]
    with pytest.raises(BuildError, match="HUGE .*4 GiB"):
        image_sectors(files)
    img = tmp_path / "out.iso"
    with open(img, "wb+") as out, pytest.raises(BuildError, match="HUGE"):
        write_image(files, out, volume_id="V")
    assert os.path.getsize(img) == 0


def test_the_largest_level_1_file_is_counted_exactly(tmp_path: Path) -> None:
    big = [MediaFile(("BIG",), [FileSlice("/nonexistent", 0, 2**32 - 1)])]
    # 16 system + PVD + terminator + 2 path tables + root directory, then 2**21 sectors of data
    assert image_sectors(big) == 16 + 1 + 1 + 2 + 1 + 2**21


def test_a_source_shorter_than_its_slice_is_an_error(tmp_path: Path) -> None:
    src = source(tmp_path, "short", 1000)
    files = [MediaFile(("SHORT",), [FileSlice(src, 0, 5000)])]
    with open(tmp_path / "out.iso", "wb+") as out, pytest.raises(BuildError, match="shorter than expected"):
        write_image(files, out, volume_id="V")
    missing = [MediaFile(("GONE",), [FileSlice(str(tmp_path / "gone"), 0, 10)])]
    with open(tmp_path / "out.iso", "wb+") as out, pytest.raises(BuildError, match="gone"):
        write_image(missing, out, volume_id="V")


def test_conflicting_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="twice"):
        image_sectors([MediaFile(("A",), [b"1"]), MediaFile(("A",), [b"2"])])
    with pytest.raises(BuildError, match="A is a file"):
        image_sectors([MediaFile(("A",), [b"1"]), MediaFile(("A", "B"), [b"2"])])


def test_progress_counts_file_bytes_with_one_source_open_at_a_time(tmp_path: Path) -> None:
    files = [MediaFile((f"F{i}",), [b"h", FileSlice(source(tmp_path, f"s{i}", 3000), 0, 3000)]) for i in range(300)]
    baseline = len(os.listdir("/proc/self/fd"))
    calls: list[int] = []
    fds: list[int] = []

    def progress(n: int) -> None:
        calls.append(n)
        fds.append(len(os.listdir("/proc/self/fd")))

    with open(tmp_path / "out.iso", "wb+") as out:
        write_image(files, out, volume_id="V", progress=progress)
    assert sum(calls) == sum(f.size for f in files)
    assert max(fds) <= baseline + 3  # the image, one source, and listdir's own fd
    verify_image(tmp_path / "out.iso", files)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs a tmpfs at /dev/shm")
def test_copy_falls_back_to_read_write_across_file_systems(tmp_path: Path) -> None:
    """copy_file_range fails with EXDEV from tmpfs to another file system: the data must still arrive."""
    shm = Path("/dev/shm") / f"medianode-test-{os.getpid()}"
    shm.write_bytes(os.urandom(20_000))
    try:
        if os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("tmp_path is on /dev/shm too")
        files = [MediaFile(("FROMSHM",), [b"head", FileSlice(str(shm), 5, 19_000)])]
        img = build(tmp_path, files)
        verify_image(img, files)
    finally:
        shm.unlink()


def test_more_directories_than_a_path_table_can_number_are_refused() -> None:
    files = [MediaFile((f"D{i:05d}", "F"), []) for i in range(0xFFFF)]  # 65535 + the root
    with pytest.raises(BuildError, match="65536 directories"):
        image_sectors(files)
    assert image_sectors(files[1:]) > 0


def test_stale_bytes_in_out_do_not_leak_into_the_padding(tmp_path: Path) -> None:
    files = [MediaFile(("README",), [b"plain bytes only\n"]), MediaFile(("OTHER",), [b"x" * 3000])]
    img = tmp_path / "out.iso"
    with open(img, "wb+") as out:
        out.write(b"\xff" * (3 << 20))
        write_image(files, out, volume_id="V")
    assert os.path.getsize(img) == image_sectors(files) * SECTOR
    iso = pycdlib.PyCdlib()
    iso.open(str(img))
    (start, length), = iso.get_file_byte_extents(iso_path="/README.;1")
    iso.close()
    data = img.read_bytes()
    assert data[start : start + length] == b"plain bytes only\n"
    assert data[start + length : start + SECTOR] == bytes(SECTOR - length)
