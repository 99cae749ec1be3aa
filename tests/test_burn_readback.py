"""node.media.readback: an image read back from the disk while it is written; what the compare covers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from node.errors import BuildError
from node.media import build, iso, readback, udf
from node.media.content import FileSlice, MediaFile
from node.profiles import get_profile
from tests.conftest import ct_series

WRITERS = [pytest.param(iso, {}, id="iso9660"), pytest.param(udf, {"revision": "2.60"}, id="udf-2.60"),
           pytest.param(udf, {"revision": "1.50"}, id="udf-1.50")]


def big_set(tmp_path: Path) -> list[MediaFile]:
    """Files over more than two read-back steps, small ones sharing memory pages with their neighbours."""
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * readback.STEP // 2))
    files = [MediaFile(("DICOMDIR",), [b"\0" * 128 + b"DICM" + os.urandom(3000)]), MediaFile(("EMPTY",), [])]
    for i in range(5):
        files.append(MediaFile(("DICOM", f"I{i:07d}"), [b"head", FileSlice(str(src), i, readback.STEP // 2 + i)]))
        files.append(MediaFile(("DICOM", f"S{i:07d}"), [bytes([i]) * 100]))  # 2048 bytes on the image: half a page
    return files


def flip_when_written(image: Path, placed: readback.Placement, victim: str) -> Callable[[int], None]:
    """A progress callback flipping a byte of ``victim`` in ``image`` as soon as the writer reports its last byte."""
    ends, total = {}, 0
    for f, at in placed:
        if f.size:
            total += f.size
            ends[total] = (f, at)
    written = [0]

    def progress(n: int) -> None:
        written[0] += n
        if (done := ends.get(written[0])) and done[0].relpath == victim:
            f, at = done
            with open(image, "r+b") as out:
                out.seek(at + f.size - 1)
                last = out.read(1)[0]
                out.seek(at + f.size - 1)
                out.write(bytes([last ^ 0x10]))

    return progress


@pytest.mark.parametrize(("writer", "options"), WRITERS)
def test_a_whole_set_is_written_compared_and_found(tmp_path: Path, writer: ModuleType, options: dict[str, str]) -> None:
    files = big_set(tmp_path)
    counted: list[int] = []
    readback.write_verified(tmp_path / "out.img", files, writer=writer, volume_id="V", progress=counted.append,
                            **options)
    assert sum(counted) == sum(f.size for f in files)
    writer.verify_image(tmp_path / "out.img", files)  # the whole image compared again, after the fact


@pytest.mark.parametrize(("writer", "options"), WRITERS)
@pytest.mark.parametrize("victim", ["DICOMDIR", "DICOM/I0000001", "DICOM/S0000004"])
def test_a_file_changed_after_the_writer_wrote_it_is_caught(tmp_path: Path, writer: ModuleType,
                                                             options: dict[str, str], victim: str) -> None:
    """The compare happens after the writer has reported a file's last byte: a change made to the image then
    (here through the page cache, which is written back before the compare reads the disk) is seen, in the
    first step, a middle one (a file of two steps) and the last (a file sharing a page with its neighbour)."""
    files = big_set(tmp_path)
    image = tmp_path / "out.img"
    progress = flip_when_written(image, writer.placement(files, **options), victim)
    with pytest.raises(BuildError, match=f"^{victim} differs from its source in bytes"):
        readback.write_verified(image, files, writer=writer, volume_id="V", progress=progress, **options)


def test_a_burn_with_a_file_changed_after_it_was_written_publishes_nothing(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 3)
    target = tmp_path / "disc.iso"
    temporary = tmp_path / f".disc.iso.part-{os.getpid()}"
    first = [True]

    def progress(n: int) -> None:  # the DICOMDIR is the image's first file, reported in one call
        if first[0]:
            first[0] = False
            data = temporary.read_bytes()
            at = next(p for p in range(128, len(data), 2048) if data[p : p + 4] == b"DICM")
            with open(temporary, "r+b") as out:
                out.seek(at + 40)
                out.write(b"\xff")

    with pytest.raises(BuildError, match="^DICOMDIR differs from its source"):
        build.burn([str(tmp_path / "src")], out=target, profile=get_profile("STD-GEN-CD"), progress=progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_writer_that_fails_stops_the_reader(tmp_path: Path) -> None:
    src = tmp_path / "short"
    src.write_bytes(os.urandom(1000))
    files = [MediaFile(("A",), [b"a" * 5000]), MediaFile(("SHORT",), [FileSlice(str(src), 0, 5000)])]
    with pytest.raises(BuildError, match="shorter than expected"):
        readback.write_verified(tmp_path / "out.iso", files, writer=iso, volume_id="V")


def test_the_reader_s_extents_must_be_where_the_bytes_were_compared(tmp_path: Path) -> None:
    files = [MediaFile(("A",), [b"a" * 3000]), MediaFile(("B",), [b"b"]), MediaFile(("EMPTY",), [])]
    placed = iso.placement(files)
    found = {"A": [(placed[0][1], 2048), (placed[0][1] + 2048, 952)], "B": [(placed[1][1], 1)], "EMPTY": []}
    readback.check_placement(files, placed, found)  # runs end to end are one extent
    with pytest.raises(BuildError, match=r"^B is at \[\(\d+, 1\)\] on the image, written at byte \d+ \(1 bytes\)"):
        readback.check_placement(files, placed, found | {"B": [(placed[0][1], 1)]})
    with pytest.raises(BuildError, match="^A is at"):
        readback.check_placement(files, placed, found | {"A": [(placed[0][1], 2048)]})
    with pytest.raises(BuildError, match="^EMPTY is missing from the image"):
        readback.check_placement(files, placed, {k: v for k, v in found.items() if k != "EMPTY"})
    with pytest.raises(BuildError, match="^C is on the image but not in the file-set"):
        readback.check_placement(files, placed, found | {"C": []})
