"""``medianode burn --compress`` / ``--new-uids`` / ``--deidentify`` and burn routes, end to end: one UID map per
disc, references that still resolve, fallbacks reported, the pool and the inline path agreeing, real readers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from node import dicom, pixels
from node.errors import BuildError
from node.index import Index
from node.media.compress import Choice
from node.media.deidentify import action
from node.media.plan import POOL_THRESHOLD, Workers, image_info
from node.media.sources import instance, read
from node.media.transcode import Task, _lossless_as_is, _rewrite
from node.media.uids import PRIVATE_CREATOR, UidMap, original_uids
from tests.conftest import bundled, cli, ct_series, need
from tests.test_burn import by_uid, dciodvfy_errors, extract
from tests.test_serve import Node, storescu

GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
pixels.register()  # pydicom reads JPEG lossless only through our imagecodecs plugin


def presentation_state(folder: Path, image: Dataset) -> Path:
    """A Grayscale Softcopy Presentation State of ``image``'s study, referencing it (PS3.3 C.11.11)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = GSPS, generate_uid()
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, key, image.get(key, ""))
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), "PR", "99", "1"
    ds.ContentLabel, ds.ContentDescription, ds.ContentCreatorName = "PR", "", ""
    ds.PresentationCreationDate, ds.PresentationCreationTime = "20260101", "120000"
    ref_image = Dataset()
    ref_image.ReferencedSOPClassUID, ref_image.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = image.SeriesInstanceUID
    ref_series.ReferencedImageSequence = [ref_image]
    ds.ReferencedSeriesSequence = [ref_series]
    ds.PresentationLUTShape = "IDENTITY"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / "pr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def burned(tmp_path: Path, *args: str) -> tuple[dict[str, object], dict[str, Path]]:
    iso = tmp_path / "out.iso"
    result = cli("burn", *args, "--out", iso, "--json")
    assert result.code == 0, result.err + result.out
    root = extract(iso, tmp_path / "medium")
    return json.loads(result.out), by_uid(root)


def test_a_compression_the_profile_does_not_allow_is_a_usage_error(tmp_path: Path) -> None:
    src = ct_series(tmp_path / "src", 1)
    for profile, value in (("STD-GEN-CD", "jpeg-lossless"), ("STD-GEN-DVD-JPEG", "j2k-lossless"),
                           ("STD-GEN-DVD-J2K", "rle"), ("STD-GEN-DVD-JPEG", "zip")):
        result = cli("burn", *map(str, src), "--out", tmp_path / "x.iso", "--profile", profile, "--compress", value)
        assert result.code == 2, result
        assert value in result.err and "Traceback" not in result.err
    assert not (tmp_path / "x.iso").exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_lossy_images_get_new_uids_and_the_presentation_state_follows(tmp_path: Path, workers: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIANODE_WORKERS", workers)  # 1: inline; 2: the process pool (10 tasks)
    src = ct_series(tmp_path / "src", 9, BitsStored=12, HighBit=11)
    image = dcmread(src[0])
    pr = presentation_state(tmp_path / "src", image)
    report, files = burned(tmp_path, str(tmp_path / "src"), "--profile", "STD-GEN-DVD-JPEG", "--compress", "jpeg-extended")
    uid_map = report["uid_map"]
    assert isinstance(uid_map, dict)
    new_uid = uid_map[image.SOPInstanceUID]
    assert new_uid.startswith(dicom.UID_ROOT) and image.SOPInstanceUID not in files
    lossy = dcmread(files[new_uid])
    assert lossy.file_meta.TransferSyntaxUID == dicom.JPEG_EXTENDED and lossy.LossyImageCompression == "01"
    assert lossy.SourceImageSequence[-1].ReferencedSOPInstanceUID == image.SOPInstanceUID  # its predecessor
    pr_uid = dcmread(pr).SOPInstanceUID
    assert pr_uid not in uid_map, "the presentation state itself is not lossy: it keeps its UID"
    ref = dcmread(files[pr_uid]).ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == image.SeriesInstanceUID
    assert ref.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_uid in files
    for path in files.values():
        assert not dciodvfy_errors(path) - dciodvfy_errors(src[0]) - dciodvfy_errors(pr), path


def test_lossless_keeps_uids_and_pixels(tmp_path: Path) -> None:
    src = ct_series(tmp_path / "src", 3)
    report, files = burned(tmp_path, str(tmp_path / "src"), "--profile", "STD-GEN-DVD-J2K", "--compress", "j2k-lossless")
    assert report["uid_map"] == {} and report["fallbacks"] == []
    for path in src:
        before = dcmread(path)
        after = dcmread(files[before.SOPInstanceUID])
        assert after.file_meta.TransferSyntaxUID == dicom.J2K_LOSSLESS
        assert np.array_equal(after.pixel_array, before.pixel_array)


def test_an_image_the_lossy_syntax_cannot_carry_falls_back_and_is_reported(tmp_path: Path) -> None:
    src = ct_series(tmp_path / "src", 1)  # 16 bits stored: more than JPEG Baseline's 8
    report, files = burned(tmp_path, str(src[0]), "--profile", "STD-GEN-DVD-JPEG", "--compress", "jpeg-baseline")
    (fallback,) = report["fallbacks"]  # type: ignore[misc]
    assert fallback["path"] == str(src[0]) and fallback["reason"]
    after = dcmread(files[dcmread(src[0]).SOPInstanceUID])
    assert after.file_meta.TransferSyntaxUID == dicom.JPEG_LOSSLESS_SV1
    assert np.array_equal(after.pixel_array, dcmread(src[0]).pixel_array)


def test_already_compressed_images_are_not_recompressed(tmp_path: Path) -> None:
    report, files = burned(tmp_path, bundled("JPEG2000.dcm"), bundled("CT_small.dcm"), "--profile", "STD-GEN-DVD-J2K",
                           "--compress", "j2k-lossy")
    j2k = dcmread(bundled("JPEG2000.dcm"))
    assert files[j2k.SOPInstanceUID].read_bytes()[-1000:] == Path(bundled("JPEG2000.dcm")).read_bytes()[-1000:]
    assert set(report["uid_map"]) == {dcmread(bundled("CT_small.dcm")).SOPInstanceUID}  # type: ignore[arg-type]


def test_new_uids_rename_study_series_and_instances_and_keep_the_originals(tmp_path: Path) -> None:
    src = ct_series(tmp_path / "src", 2)
    report, files = burned(tmp_path, str(tmp_path / "src"), "--new-uids")
    uid_map = report["uid_map"]
    assert isinstance(uid_map, dict)
    first, second = (dcmread(p) for p in src)
    a, b = (dcmread(files[uid_map[ds.SOPInstanceUID]]) for ds in (first, second))
    assert a.StudyInstanceUID == b.StudyInstanceUID == uid_map[first.StudyInstanceUID]
    assert a.SeriesInstanceUID == b.SeriesInstanceUID == uid_map[first.SeriesInstanceUID]
    assert original_uids(a) == {"StudyInstanceUID": first.StudyInstanceUID,
                                "SeriesInstanceUID": first.SeriesInstanceUID, "SOPInstanceUID": first.SOPInstanceUID}
    assert np.array_equal(a.pixel_array, first.pixel_array)


def test_deidentify_removes_identity_and_refuses_burned_in_annotation(tmp_path: Path) -> None:
    src = ct_series(tmp_path / "src", 2, name="SECRET^NAME", patient_id="SECRET-ID", InstitutionName="SECRET HOSPITAL",
                    OperatorsName="SECRET^OPERATOR", PatientAddress="SECRET STREET 1")
    shutil.copy(bundled("MR_small.dcm"), tmp_path / "src")  # real-world: many attributes the profile names
    flagged = ct_series(tmp_path / "flagged", 1, name="SECRET^NAME", patient_id="SECRET-ID", BurnedInAnnotation="YES")
    iso = tmp_path / "deid.iso"
    result = cli("burn", tmp_path / "src", tmp_path / "flagged", "--out", iso, "--deidentify", "--json")
    assert result.code == 1, result.err  # the flagged image is refused, the others are written
    report = json.loads(result.out)
    assert [r["path"] for r in report["refused"]] == [str(flagged[0])]
    root = extract(iso, tmp_path / "medium")
    originals = {str(dcmread(p).PatientName) for p in [*src, tmp_path / "src" / "MR_small.dcm"]}
    for path in by_uid(root).values():
        raw = path.read_bytes()
        assert b"SECRET" not in raw, path
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and PRIVATE_CREATOR.encode() not in raw
        assert str(ds.PatientName) not in originals
        removed = [e.keyword or str(e.tag) for e in ds.iterall() if action(e.tag) == "X" or e.tag.is_private]
        assert removed == [], f"{path}: the Basic Profile removes {removed}"
    assert b"SECRET" not in (root / "DICOMDIR").read_bytes()
    allowed = cli("burn", tmp_path / "flagged", "--out", tmp_path / "ok.iso", "--deidentify", "--allow-burned-in")
    assert allowed.code == 0, allowed.err


def test_a_route_compresses_per_modality_and_records_the_uid_map(tmp_path: Path) -> None:
    routes = ("routes:\n  - {match: {called_aet: BURN}, action: burn, profile: STD-GEN-DVD-J2K,\n"
              "     compress: {default: j2k-lossless, CT: {syntax: j2k-lossy, ratio: 15}}}\n")
    node = Node(tmp_path, routes=routes)
    src = ct_series(tmp_path / "ct", 2, size=64)
    mr = tmp_path / "mr.dcm"
    ds = dcmread(bundled("MR_small.dcm"))
    ds.PatientID, ds.PatientName, ds.StudyInstanceUID = "PID1", "DOE^JANE", dcmread(src[0]).StudyInstanceUID
    ds.save_as(mr)
    node.start()
    try:
        assert storescu(node, [*src, mr]).returncode == 0
        node.wait_for(lambda: len(node.images()) == 1)
    finally:
        node.stop()
    (iso,) = node.images()
    files = by_uid(extract(iso, tmp_path / "medium"))
    syntaxes = {str(dcmread(p).Modality): str(dcmread(p).file_meta.TransferSyntaxUID) for p in files.values()}
    assert syntaxes == {"CT": dicom.J2K, "MR": dicom.J2K_LOSSLESS}
    ratios = [float(dcmread(p).LossyImageCompressionRatio) for p in files.values() if dcmread(p).Modality == "CT"]
    assert len(ratios) == 2 and all(12 <= r <= 18 for r in ratios), ratios  # the route's ratio, through its job
    index = Index(node.data / "index.sqlite")
    try:
        (job,) = index.jobs()
        uid_map = index.job_uid_map(job.id)
    finally:
        index.close()
    assert set(uid_map) == {dcmread(p).SOPInstanceUID for p in src}
    assert set(uid_map.values()) <= set(files)


@dataclass(frozen=True)
class _Dies(Task):
    """A task whose worker process dies, as a crashing codec would take it down."""

    def run(self) -> list[str]:
        os._exit(3)


def test_a_worker_process_that_dies_stops_the_burn_with_a_clear_error() -> None:
    tasks = [(n, _Dies(f"/nonexistent/{n}", f"/nonexistent/out{n}")) for n in range(POOL_THRESHOLD)]
    with pytest.raises(BuildError, match="a worker process died while rewriting instances"):
        with Workers(2) as workers:
            workers.run(tasks, lambda n, task, what: None)


def test_many_files_with_one_outcome_make_one_line_and_json_lists_each(tmp_path: Path) -> None:
    src = ct_series(tmp_path / "src", 7)
    text = cli("burn", tmp_path / "src", "--out", tmp_path / "a.iso", "--profile", "STD-GEN-DVD-J2K",
               "--compress", "j2k-lossless")
    assert text.code == 0, text.err
    assert f"  converted: 7 files: JPEG 2000 lossless (first: {src[0]})\n" in text.out
    report, _ = burned(tmp_path, str(tmp_path / "src"), "--profile", "STD-GEN-DVD-J2K", "--compress", "j2k-lossless")
    assert sorted(r["path"] for r in report["converted"]) == sorted(map(str, src))  # type: ignore[union-attr]


def test_a_burn_that_changes_nothing_never_loads_pydicom(tmp_path: Path) -> None:
    """The README's promise: files already in an allowed syntax are copied by our own reader, in ~50 ms of start-up."""
    ct_series(tmp_path / "src", 2)
    code = ("import sys; from node.cli import main; code = main(['burn', sys.argv[1], '--out', sys.argv[2]]); "
            "sys.exit(code or 10 * ('pydicom' in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "src"), str(tmp_path / "a.iso")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr or "pydicom was imported"


@pytest.mark.parametrize("syntax", [dicom.JPEG_LOSSLESS_SV1, dicom.RLE_LOSSLESS])
def test_lossless_without_pydicom_writes_what_the_general_path_writes(tmp_path: Path, syntax: str) -> None:
    """The fast path (data set bytes kept, Pixel Data encapsulated) against pydicom's rewrite, decoded by DCMTK."""
    need("dcmdjpeg", "dcmdrle")
    src = ct_series(tmp_path / "src", 1, size=64, BitsStored=12, HighBit=11)[0]
    inst = instance(read(str(src)), source=str(src))
    assert inst is not None
    task = Task(str(src), str(tmp_path / "fast.dcm"), choice=Choice(syntax, lossy=False), image=image_info(inst))
    assert _lossless_as_is(task) is not None
    slow = task.with_(dest=str(tmp_path / "slow.dcm"))
    _rewrite(slow)
    fast_ds, slow_ds = dcmread(task.dest), dcmread(slow.dest)
    assert fast_ds.file_meta.TransferSyntaxUID == slow_ds.file_meta.TransferSyntaxUID == syntax
    assert fast_ds == slow_ds  # every element, Pixel Data's encoded bytes included
    plain = tmp_path / "plain.dcm"
    tool = "dcmdjpeg" if syntax == dicom.JPEG_LOSSLESS_SV1 else "dcmdrle"
    subprocess.run([tool, task.dest, str(plain)], check=True, capture_output=True)
    assert np.array_equal(dcmread(plain).pixel_array, dcmread(src).pixel_array)


def test_lossless_without_pydicom_is_only_for_what_it_can_do(tmp_path: Path) -> None:
    ct = ct_series(tmp_path / "src", 1, size=64)[0]
    inst = instance(read(str(ct)), source=str(ct))
    assert inst is not None
    task = Task(str(ct), str(tmp_path / "out.dcm"), choice=Choice(dicom.JPEG_LOSSLESS_SV1, lossy=False),
                image=image_info(inst))
    for other in (task.with_(choice=Choice(dicom.JPEG_EXTENDED, lossy=True)), task.with_(deidentify=True),
                  task.with_(patient_id="X"), task.with_(uids=UidMap("salt", everything=True)),
                  task.with_(image=None)):
        assert _lossless_as_is(other) is None
    rgb = bundled("SC_rgb_small_odd.dcm")  # colour: Planar Configuration may change, pydicom's path does it
    rgb_inst = instance(read(rgb), source=rgb)
    assert rgb_inst is not None
    assert _lossless_as_is(task.with_(source=rgb, image=image_info(rgb_inst))) is None
