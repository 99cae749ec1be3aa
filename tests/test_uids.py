"""One UID map per disc (media.uids) and the Basic Profile (media.deidentify), on real files written and read back."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import re
import shutil
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from node.media.deidentify import BASIC_PROFILE, BurnedInAnnotation, action, deidentify
from node.media.uids import (
    DICOM_ROOT,
    KIND_TAGS,
    PRIVATE_CREATOR,
    PRIVATE_GROUP,
    UidMap,
    identity,
    keep_original_uids,
    new_salt,
    original_uids,
    remap,
)
from tests.conftest import bundled, ct_series
from tests.test_burn import dciodvfy_errors

GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
VALID_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


# -- a disc: images, a presentation state and a key object referencing them ------------------------


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _sop_ref(image: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    return ref


def _series_refs(image: Dataset, images_key: str) -> Dataset:
    series = Dataset()
    series.SeriesInstanceUID = image.SeriesInstanceUID
    setattr(series, images_key, [_sop_ref(image)])
    return series


def _new_instance(image: Dataset, sop_class: str, modality: str, uid: str) -> Dataset:
    """A new instance of ``sop_class`` in ``image``'s study (its own series), with file meta."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, key, image.get(key, ""))
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = uid + ".1", modality, "99", "1"
    ds.ContentDate, ds.ContentTime = "20260101", "101010"
    return ds


def presentation_state(image: Dataset) -> Dataset:
    """A Grayscale Softcopy Presentation State that shows ``image`` with a text annotation (PS3.3 A.33.1)."""
    pr = _new_instance(image, GSPS, "PR", "1.2.826.0.1.3680043.9.7433.1.1")
    pr.ContentLabel, pr.ContentDescription, pr.ContentCreatorName = "LABEL", "shown to students", "DR^WHO"
    pr.PresentationCreationDate, pr.PresentationCreationTime = "20260101", "101010"
    pr.ReferencedSeriesSequence = [_series_refs(image, "ReferencedImageSequence")]
    text = Dataset()
    text.UnformattedTextValue = "DOE^JANE, left lung"
    text.BoundingBoxAnnotationUnits = "PIXEL"
    text.BoundingBoxTopLeftHandCorner, text.BoundingBoxBottomRightHandCorner = [1.0, 1.0], [20.0, 8.0]
    text.BoundingBoxTextHorizontalJustification = "LEFT"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER"
    annotation.ReferencedImageSequence = [_sop_ref(image)]
    annotation.TextObjectSequence = [text]
    pr.GraphicAnnotationSequence = [annotation]
    return pr


def key_object(image: Dataset) -> Dataset:
    """A Key Object Selection Document naming ``image`` "For Teaching", with a free-text note (PS3.3 A.35.4)."""
    ko = _new_instance(image, KOS, "KO", "1.2.826.0.1.3680043.9.7433.1.2")
    ko.ValueType, ko.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ko.ConceptNameCodeSequence = [_code("113004", "DCM", "For Teaching")]
    evidence = Dataset()
    evidence.StudyInstanceUID = image.StudyInstanceUID
    evidence.ReferencedSeriesSequence = [_series_refs(image, "ReferencedSOPSequence")]
    ko.CurrentRequestedProcedureEvidenceSequence = [evidence]
    note = Dataset()
    note.RelationshipType, note.ValueType = "CONTAINS", "TEXT"
    note.ConceptNameCodeSequence = [_code("113012", "DCM", "Key Object Description")]
    note.TextValue = "Jane Doe, seen by Dr Who"
    shown = Dataset()
    shown.RelationshipType, shown.ValueType = "CONTAINS", "IMAGE"
    shown.ReferencedSOPSequence = [_sop_ref(image)]
    ko.ContentSequence = [note, shown]
    return ko


def lossy_copy(image: Dataset) -> Dataset:
    """``image`` as the burn leaves a lossy-compressed image: a Source Image Sequence item naming its
    uncompressed predecessor (121320, DCM), as PS3.3 C.7.6.1.1.5 asks."""
    source = _sop_ref(image)
    source.PurposeOfReferenceCodeSequence = [_code("121320", "DCM", "Uncompressed predecessor")]
    image.SourceImageSequence = [source]
    image.LossyImageCompression = "01"
    return image


def rewrite(path: Path, uids: UidMap, *, keep: bool = False) -> Dataset:
    """What a burn worker does to one file: read, rename, (keep the originals), write; then read back."""
    ds = dcmread(path)
    originals = identity(ds)
    remap(ds, uids)
    if keep:
        keep_original_uids(ds, originals)
    ds.save_as(path, enforce_file_format=True)
    return dcmread(path)


@pytest.fixture
def disc(tmp_path: Path) -> dict[str, Path]:
    """CT_small (lossy), a second CT of its series, a presentation state and a key object, as files."""
    ct = lossy_copy(dcmread(bundled("CT_small.dcm")))
    second = dcmread(bundled("CT_small.dcm"))
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID + ".2"
    files = {"ct": ct, "second": second, "pr": presentation_state(ct), "ko": key_object(ct)}
    for name, ds in files.items():
        ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
    return {name: tmp_path / f"{name}.dcm" for name in files}


def _all_uids(ds: Dataset) -> Iterator[tuple[int, str]]:
    """(tag, value) of every public UI value of ``ds``, recursively, file meta included."""
    meta = getattr(ds, "file_meta", None)
    for elem in [*(meta or []), *ds]:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _all_uids(item)
        elif elem.VR == "UI" and elem.value and not elem.tag.is_private:
            yield from ((int(elem.tag), str(v)) for v in (elem.value if elem.VM > 1 else [elem.value]))


# -- lossy compression: only the compressed images' SOP Instance UIDs change --------------------------------


def test_references_follow_a_lossy_image_and_its_predecessor_keeps_the_original(disc: dict[str, Path]) -> None:
    old = dcmread(disc["ct"])
    uids = UidMap(new_salt(), changes=frozenset({old.SOPInstanceUID}))
    ct, second, pr, ko = (rewrite(disc[name], uids) for name in ("ct", "second", "pr", "ko"))

    new = ct.SOPInstanceUID
    assert new != old.SOPInstanceUID and new.startswith("2.25.")
    assert ct.file_meta.MediaStorageSOPInstanceUID == new
    assert ct.SourceImageSequence[0].ReferencedSOPInstanceUID == old.SOPInstanceUID  # the original, on purpose
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == new
    assert pr.GraphicAnnotationSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == new
    evidence = ko.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == new
    assert ko.ContentSequence[1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == new
    # nothing else changed: study, series, the other image, the PR and KO themselves, SOP classes
    assert (ct.StudyInstanceUID, ct.SeriesInstanceUID) == (old.StudyInstanceUID, old.SeriesInstanceUID)
    assert second.SOPInstanceUID == old.SOPInstanceUID + ".2"
    assert pr.ReferencedSeriesSequence[0].SeriesInstanceUID == old.SeriesInstanceUID
    assert pr.SOPInstanceUID == presentation_state(old).SOPInstanceUID
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPClassUID == old.SOPClassUID
    assert remap(dcmread(disc["pr"]), uids) == 0  # applying the map twice changes nothing more


# -- --new-uids: every instance, series and study renamed alike in every worker ----------------------------


def test_new_uids_rename_every_instance_consistently_and_keep_the_originals(disc: dict[str, Path]) -> None:
    before = {name: dcmread(path) for name, path in disc.items()}
    uids = UidMap(new_salt(), everything=True)
    after = {name: rewrite(path, uids, keep=True) for name, path in disc.items()}

    ct, second, pr, ko = (after[n] for n in ("ct", "second", "pr", "ko"))
    for name, ds in after.items():
        old = before[name]
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert ds[key].value != old[key].value, (name, key)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == old.SOPClassUID
        assert original_uids(ds) == identity(old)  # read back from the written file
        assert ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR).block_start >= 0x1000  # a reserved block
        old_uids = {v for tag, v in _all_uids(old) if tag not in KIND_TAGS and not v.startswith(DICOM_ROOT)}
        assert not old_uids & {v for _, v in _all_uids(ds)}, name  # no old UID left (the predecessor is renamed)
    assert ct.SeriesInstanceUID == second.SeriesInstanceUID  # one series stays one series
    assert ct.StudyInstanceUID == second.StudyInstanceUID == pr.StudyInstanceUID == ko.StudyInstanceUID
    assert ct.FrameOfReferenceUID == second.FrameOfReferenceUID != before["ct"].FrameOfReferenceUID
    assert pr.ReferencedSeriesSequence[0].SeriesInstanceUID == ct.SeriesInstanceUID
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert ko.ContentSequence[1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert ko.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == ct.StudyInstanceUID
    copy_of_copy = rewrite(disc["ct"], UidMap(new_salt(), everything=True), keep=True)
    assert copy_of_copy.SOPInstanceUID != ct.SOPInstanceUID
    assert original_uids(copy_of_copy) == identity(before["ct"])  # still names the very first instance


def test_worker_processes_agree_on_new_uids_without_sharing_state(disc: dict[str, Path], tmp_path: Path) -> None:
    """The burn's pool: each file rewritten in its own fresh process, from the pickled map alone."""
    uids = UidMap(new_salt(), everything=True)
    assert pickle.loads(pickle.dumps(uids)) == uids
    copies = {name: shutil.copy(path, tmp_path / f"copy-{name}.dcm") for name, path in disc.items()}
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        in_workers = dict(zip(disc, pool.map(rewrite, disc.values(), [uids] * len(disc))))
    here = {name: rewrite(Path(path), uids) for name, path in copies.items()}
    for name in disc:
        assert in_workers[name] == here[name], name
    ct, pr = in_workers["ct"], in_workers["pr"]
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID


def test_new_uids_are_valid_deterministic_per_salt_and_differ_between_salts(tmp_path: Path) -> None:
    paths = ct_series(tmp_path / "a", 2)
    salt = new_salt()

    def renamed(uids: UidMap) -> list[dict[str, str]]:
        out = []
        for path in paths:
            ds = dcmread(path)
            remap(ds, uids)
            out.append(identity(ds))
        return out

    first, again, other = renamed(UidMap(salt, everything=True)), renamed(UidMap(salt, everything=True)), \
        renamed(UidMap(new_salt(), everything=True))
    assert first == again
    assert all(a[k] != b[k] for a, b in zip(first, other) for k in a)
    for uid in {v for ident in first + other for v in ident.values()}:
        assert len(uid) <= 64 and VALID_UID.match(uid), uid
        assert uid.startswith("2.25.")
        as_uuid = uuid.UUID(int=int(uid[5:]))  # an ISO/IEC 9834-8 UUID: version 8, RFC variant
        assert (as_uuid.version, as_uuid.variant) == (8, uuid.RFC_4122)


def test_a_lossy_image_on_a_renamed_disc_differs_from_its_renamed_original(disc: dict[str, Path]) -> None:
    old = dcmread(disc["ct"]).SOPInstanceUID
    uids = UidMap(new_salt(), changes=frozenset({old}), everything=True)
    ct, pr = rewrite(disc["ct"], uids), rewrite(disc["pr"], uids)
    predecessor = ct.SourceImageSequence[0].ReferencedSOPInstanceUID
    assert predecessor == uids.predecessor(old) != old
    assert ct.SOPInstanceUID not in (old, predecessor)
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID


def test_well_known_uids_never_change() -> None:
    uids = UidMap(new_salt(), changes=frozenset({"1.2.840.10008.1.2.1"}), everything=True)
    assert uids.new("1.2.840.10008.1.2.1") is None
    assert uids.new("1.2.3") is not None
    ds = dcmread(bundled("CT_small.dcm"))
    ds.CodingSchemeIdentificationSequence = [Dataset()]
    ds.CodingSchemeIdentificationSequence[0].CodingSchemeUID = "2.16.840.1.113883.6.96"  # SNOMED CT
    remap(ds, uids)
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeUID == "2.16.840.1.113883.6.96"
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


# -- --deidentify: the Basic Profile ---------------------------------------------------------------------

#: CT_small carries GE private groups; chrSQEncoding has no SOP Instance UID but in its file meta.
DEIDENTIFIED = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "chrH31.dcm", "chrSQEncoding.dcm"]


def _values(ds: Dataset) -> Iterator[tuple[int, object]]:
    """(tag, value) of every non-sequence element of ``ds``, recursively, private ones included."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _values(item)
        else:
            yield int(elem.tag), elem.value


def _private(ds: Dataset) -> list[int]:
    found = [int(e.tag) for e in ds if e.tag.is_private]
    return found + [t for e in ds if e.VR == "SQ" for item in e.value for t in _private(item)]


@pytest.mark.parametrize("name", DEIDENTIFIED)
def test_deidentified_file_keeps_no_value_the_profile_removes(name: str, tmp_path: Path) -> None:
    src = tmp_path / name
    shutil.copy(bundled(name), src)
    original = dcmread(src)
    ds = dcmread(src)
    screen_capture = name.startswith("chr")  # pydicom's charset files are Secondary Captures, no burned-in flag
    changed = deidentify(ds, UidMap(new_salt()), allow_burned_in=screen_capture)
    out = tmp_path / f"deid-{name}"
    ds.save_as(out, enforce_file_format=True)
    result = dcmread(out)

    marked = {(tag, str(v)) for tag, v in _values(original) if action(tag) not in (None, "U") and v not in (None, "")}
    assert marked, "the file has attributes the profile acts on"
    kept = marked & {(tag, str(v)) for tag, v in _values(result)}
    assert not kept, f"{name} keeps {kept}"
    old_uids = {v for tag, v in _all_uids(original) if tag not in KIND_TAGS and not v.startswith(DICOM_ROOT)}
    assert not old_uids & {v for _, v in _all_uids(result)}
    assert not _private(result)
    assert result.PatientIdentityRemoved == "YES"
    assert result.DeidentificationMethod.startswith("PS3.15")
    code = result.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert "PatientName" in changed and "PatientID" in changed
    assert result.get("SOPClassUID") == original.get("SOPClassUID")
    assert dciodvfy_errors(out) - dciodvfy_errors(src) == set()


def test_one_patient_keeps_one_pseudonym_across_the_disc(tmp_path: Path) -> None:
    jane = ct_series(tmp_path / "jane", 2, patient_id="PID1", name="DOE^JANE")
    john = ct_series(tmp_path / "john", 1, patient_id="PID2", name="DOE^JOHN")
    uids = UidMap(new_salt())
    out = []
    for path in [*jane, *john]:
        ds = dcmread(path)
        deidentify(ds, uids, allow_burned_in=False)
        out.append(ds)
    assert out[0].PatientID == out[1].PatientID != out[2].PatientID
    assert out[0].PatientName == out[1].PatientName != out[2].PatientName
    assert out[0].StudyInstanceUID == out[1].StudyInstanceUID and out[0].SeriesInstanceUID == out[1].SeriesInstanceUID
    assert "PID1" not in {out[0].PatientID, str(out[0].PatientName)}
    assert out[0].StudyDate and out[0].StudyID  # the DICOMDIR's STUDY record needs them: a dummy, not the date
    assert out[0].StudyDate != "20260101"


def test_a_deidentified_key_object_and_presentation_state_still_resolve(disc: dict[str, Path]) -> None:
    uids = UidMap(new_salt())
    done = {}
    for name in ("ct", "pr", "ko"):
        ds = dcmread(disc[name])
        deidentify(ds, uids, allow_burned_in=False)
        done[name] = ds
    ct, pr, ko = done["ct"], done["pr"], done["ko"]
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    annotation = pr.GraphicAnnotationSequence[0]
    assert annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert "DOE" not in annotation.TextObjectSequence[0].UnformattedTextValue
    assert [item.ValueType for item in ko.ContentSequence] == ["IMAGE"]  # the free-text note is gone
    assert ko.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert "ContentCreatorName" in pr and pr.ContentCreatorName != "DR^WHO"


def test_curves_and_whole_overlays_are_removed() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    ds.add_new(0x60000010, "US", 2)  # Overlay Rows
    ds.add_new(0x60000011, "US", 2)  # Overlay Columns
    ds.add_new(0x60003000, "OW", b"\xff\xff")  # Overlay Data
    ds.add_new(0x50000005, "US", 1)  # Curve Dimensions
    deidentify(ds, UidMap(new_salt()), allow_burned_in=False)
    assert not [e for e in ds if e.tag.group in (0x5000, 0x6000)]


@pytest.mark.parametrize(("sop_class", "flag"), [("1.2.840.10008.5.1.4.1.1.2", "YES"), (SECONDARY_CAPTURE, None)])
def test_burned_in_annotation_is_refused_unless_allowed(sop_class: str, flag: str | None) -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    ds.SOPClassUID = sop_class
    if flag:
        ds.BurnedInAnnotation = flag
    before = copy.deepcopy(ds)
    with pytest.raises(BurnedInAnnotation, match=r"pixels may show the patient's identity.*allow burned-in"):
        deidentify(ds, UidMap(new_salt()), allow_burned_in=False)
    assert ds == before and ds.PatientName == "CompressedSamples^CT1"  # refused before anything changed
    assert deidentify(ds, UidMap(new_salt()), allow_burned_in=True)
    assert ds.PatientIdentityRemoved == "YES"


def test_secondary_capture_flagged_no_is_accepted() -> None:
    ds = dcmread(bundled("CT_small.dcm"))
    ds.SOPClassUID, ds.BurnedInAnnotation = SECONDARY_CAPTURE, "NO"
    deidentify(ds, UidMap(new_salt()), allow_burned_in=False)
    assert ds.PatientIdentityRemoved == "YES"


def test_the_table_is_the_basic_profile() -> None:
    """Spot checks against PS3.15 Table E.1-1 (Basic Profile column)."""
    assert len(BASIC_PROFILE) > 600
    assert set(BASIC_PROFILE.values()) == {"X", "Z", "D", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}
    expected = {0x00100010: "Z", 0x00100020: "Z/D", 0x00100030: "Z", 0x00080080: "X/Z/D", 0x0020000D: "U",
                0x00080018: "U", 0x00081140: "X/Z/U*", 0x00200052: "U", 0x00081030: "X", 0x00080050: "Z"}
    assert {tag: BASIC_PROFILE[tag] for tag in expected} == expected
    assert action(0x60023000) == action(0x50100020) == "X" and action(0x60000010) is None
    assert action(0x00080016) is None  # SOP Class UID is kept
