"""``repair: true`` / ``burn --repair``: values PS3.5 forbids corrected on the medium, each recorded in an
Original Attributes Sequence item (reason CORRECT) and in the burn report; without it, nothing changes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from node import dcmio
from node.config import parse_config
from node.jobs import burn_options
from node.routing import RouteSnapshot
from tests.conftest import cli, ct_series
from tests.test_burn import by_uid, dciodvfy_errors, extract
from tests.test_jobs import burn_one_study, make_config, open_index

UID = "1.2.826.0.1.3680043.2.1125.1"  # 28 characters: even, so its correct encoding has no padding
REFERENCED = "1.2.826.0.1.3680043.2.1125.77"  # 29: odd, one NUL of padding
#: tag -> (VR, value as the crafted file holds it, value on a repaired medium, why)
BAD = {
    0x00080008: ("CS", ["ORIGINAL", "primary", "AXIAL"], ["ORIGINAL", "PRIMARY", "AXIAL"], "CS: upper case"),
    0x00180015: ("CS", "L-spine", "L_SPINE", "CS: characters not allowed replaced by _"),
    0x00080023: ("DA", "1998.01.02", "19980102", "DA: ACR-NEMA form"),
    0x00080033: ("TM", "12:30:45", "123045", "TM: ACR-NEMA form"),
    0x00200052: ("UI", UID + "\0\0", UID, "UI: trailing space or NUL trimmed"),
}
MISSING = ("AccessionNumber", "ReferringPhysicianName", "Manufacturer", "KVP", "AcquisitionNumber", "SliceThickness",
           "PositionReferenceIndicator")


def craft(folder: Path) -> Path:
    """A CT image holding each kind of repair: the values of :data:`BAD`, the Type 2 attributes of
    :data:`MISSING` absent, and a referenced UID with a trailing space inside a sequence item."""
    (path,) = ct_series(folder, 1, size=16)
    ds = dcmread(path)
    for keyword in MISSING:
        ds.pop(keyword, None)
    for tag, (vr, value, _, _) in BAD.items():
        ds.add(DataElement(tag, vr, value, validation_mode=0))  # written as it is, as a bad modality would
    ds.ReferencedImageSequence = [Dataset(), Dataset()]
    for item in ds.ReferencedImageSequence:
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", REFERENCED
    ds.save_as(path)
    data = path.read_bytes()
    second = data.rindex(REFERENCED.encode() + b"\0")  # pydicom pads with a NUL; a space instead, in the second item
    path.write_bytes(data[:second] + REFERENCED.encode() + b" " + data[second + len(REFERENCED) + 1:])
    return path


def raw(path: Path) -> dict[int, bytes]:
    """The bytes of each top-level value of the file, as written (pydicom's raw elements, not converted)."""
    ds = dcmread(path, force=True)
    return {int(tag): bytes(ds.get_item(tag).value or b"") for tag in ds.keys() if int(tag) != 0x7FE00010}


def dataset_bytes(path: Path) -> bytes:
    """The file's data set, after its File Meta Information."""
    header = dcmio.read_header(str(path), wanted=frozenset(), vrs={})
    return path.read_bytes()[header.dataset_offset:]


@pytest.fixture(scope="module")
def burned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object], Path]:
    """The crafted instance burned with --repair: (source, file on the medium, JSON report, medium)."""
    tmp = tmp_path_factory.mktemp("repair")
    source = craft(tmp / "src")
    result = cli("burn", tmp / "src", "--out", tmp / "out", "--format", "folder", "--repair", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    (path,) = by_uid(tmp / "out").values()
    return source, path, report, tmp / "out"


def test_each_kind_is_repaired_on_the_medium(burned: tuple[Path, Path, dict[str, object], Path]) -> None:
    _, path, _, _ = burned
    ds = dcmread(path)
    for tag, (_, _, fixed, _) in BAD.items():
        assert ds[tag].value == fixed, Tag(tag)
    assert raw(path)[0x00200052] == UID.encode()  # no trailing NUL left: the value is even
    for keyword in MISSING:
        assert keyword in ds and ds[keyword].is_empty, keyword
    assert ds.ReferencedImageSequence[1].get_item(0x00081155).value == REFERENCED.encode() + b"\0"
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == REFERENCED


def test_each_old_value_is_kept_with_reason_correct(burned: tuple[Path, Path, dict[str, object], Path]) -> None:
    source, path, _, _ = burned
    before = raw(source)
    items = dcmread(path).OriginalAttributesSequence
    assert {item.ReasonForTheAttributeModification for item in items} == {"CORRECT"}
    assert {item.ModifyingSystem for item in items} == {"MEDIANODE"}
    kept = {}
    for item in items:
        for old in item.get("NonconformingModifiedAttributesSequence", []):
            pointer = old.get("SelectorSequencePointer")
            within = () if pointer is None else (int(pointer),)
            kept[(int(old.SelectorAttribute), within)] = bytes(old.NonconformingDataElementValue)
            assert old.SelectorValueNumber == 0  # all values
            changed = item.ModifiedAttributesSequence[0]
            listed = within[0] if within else int(old.SelectorAttribute)
            assert listed in changed and changed[listed].is_empty  # PS3.3 C.12.1.1.9: nonconforming -> no value
    assert kept == {**{(tag, ()): before[tag] for tag in BAD}, (0x00081155, (0x00081140,)): REFERENCED.encode() + b" "}
    added = [item for item in items if "NonconformingModifiedAttributesSequence" not in item]
    assert len(added) == 1
    assert sorted(e.keyword for e in added[0].ModifiedAttributesSequence[0]) == sorted(MISSING)
    assert all(e.is_empty for e in added[0].ModifiedAttributesSequence[0])


def test_each_repair_is_a_report_line(burned: tuple[Path, Path, dict[str, object], Path]) -> None:
    source, _, report, _ = burned
    rows = report["repaired"]
    assert isinstance(rows, list) and {row["path"] for row in rows} == {str(source)}
    lines = [row["repair"] for row in rows]
    assert "ImageType 'ORIGINAL\\\\primary\\\\AXIAL' -> 'ORIGINAL\\\\PRIMARY\\\\AXIAL' (CS: upper case)" in lines
    assert "ContentDate '1998.01.02' -> '19980102' (DA: ACR-NEMA form)" in lines
    assert "ContentTime '12:30:45' -> '123045' (TM: ACR-NEMA form)" in lines
    assert "BodyPartExamined 'L-spine' -> 'L_SPINE' (CS: characters not allowed replaced by _)" in lines
    assert any(line.startswith("FrameOfReferenceUID ") and "(UI: trailing space or NUL trimmed)" in line
               for line in lines)
    assert any(line.startswith("ReferencedImageSequence[1].ReferencedSOPInstanceUID ") for line in lines)
    assert "AccessionNumber (absent) -> '' (Type 2 of the General Study module, added empty)" in lines
    assert "KVP (absent) -> '' (Type 2 of the CT Image module, added empty)" in lines
    assert len(lines) == len(BAD) + len(MISSING) + 1
    assert report["converted"] == []  # a repair is not a conversion


def test_the_text_report_lists_the_repairs(tmp_path: Path) -> None:
    craft(tmp_path / "src")
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "out", "--format", "folder", "--repair")
    assert result.code == 0, result.err
    assert "  repaired: " in result.out and "ContentDate '1998.01.02' -> '19980102'" in result.out


def test_dciodvfy_finds_fewer_errors_after_the_repair(burned: tuple[Path, Path, dict[str, object], Path]) -> None:
    source, path, _, root = burned
    before, after = dciodvfy_errors(source), dciodvfy_errors(path)
    assert after < before, after - before  # a strict subset: nothing new
    for name in ("Image Type", "Content Date", "Content Time", "Body Part Examined", "AccessionNumber",
                 "ReferringPhysicianName", "Manufacturer", "KVP"):
        assert any(name in line for line in before), name
        assert not any(name in line for line in after), name
    assert dciodvfy_errors(root / "DICOMDIR") == set()


def test_without_repair_the_instance_is_burned_unchanged(burned: tuple[Path, Path, dict[str, object], Path],
                                                         tmp_path: Path) -> None:
    source, _, _, _ = burned
    result = cli("burn", source, "--out", tmp_path / "out", "--format", "folder", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["repaired"] == []
    (path,) = by_uid(tmp_path / "out").values()
    assert raw(path) == raw(source)
    assert dataset_bytes(path) == dataset_bytes(source)
    assert "OriginalAttributesSequence" not in dcmread(path)


def test_an_instance_with_nothing_to_repair_is_copied_as_it_is(tmp_path: Path) -> None:
    (source,) = ct_series(tmp_path / "src", 1, size=16, Manufacturer="ACME", KVP="120", AcquisitionNumber="1",
                          SliceThickness="1", PositionReferenceIndicator="", FrameOfReferenceUID=UID)
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "out", "--format", "folder", "--repair", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["repaired"] == []
    (path,) = by_uid(tmp_path / "out").values()
    assert dataset_bytes(path) == dataset_bytes(source)


def test_an_unknown_sop_class_gets_only_the_patient_and_study_type_2(tmp_path: Path) -> None:
    """A private SOP class on an augmented profile: its modules are not known, only those of every IOD."""
    (source,) = ct_series(tmp_path / "src", 1, size=16, SOPClassUID="1.2.826.0.1.3680043.2.1125.9.1")
    ds = dcmread(source)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    del ds.AccessionNumber, ds.SeriesNumber
    ds.save_as(source)
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "out", "--format", "folder", "--profile", "AUG-GEN-CD",
                 "--repair", "--json")
    assert result.code == 0, result.err
    lines = [row["repair"] for row in json.loads(result.out)["repaired"]]
    assert lines == ["AccessionNumber (absent) -> '' (Type 2 of the General Study module, added empty)"]


def test_a_route_asks_for_repair(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``repair: true`` read from YAML, kept with the job, done by the worker, each change logged."""
    text = "routes:\n  - {match: {called_aet: BURN}, action: burn, repair: true}\n  - {action: burn}\n"
    routes = parse_config(text, source="c.yaml").routes
    assert [burn_options(RouteSnapshot.from_json(RouteSnapshot.of(r, n).to_json())).repair
            for n, r in enumerate(routes)] == [True, False]
    config = make_config(tmp_path, repair=True)
    index = open_index(tmp_path)
    with caplog.at_level(logging.INFO, logger="node.jobs"):
        burn_one_study(config, index, [craft(tmp_path / "spool")])
    [volume] = index.volumes()
    (path,) = by_uid(extract(Path(volume.paths[0]), tmp_path / "medium")).values()
    ds = dcmread(path)
    assert (ds.ContentDate, ds.BodyPartExamined) == ("19980102", "L_SPINE")
    assert {item.ReasonForTheAttributeModification for item in ds.OriginalAttributesSequence} == {"CORRECT"}
    assert any("repaired ContentDate '1998.01.02' -> '19980102'" in r.getMessage() for r in caplog.records)
