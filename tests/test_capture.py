"""``medianode burn`` with JPEG, PNG, TIFF and PDF sources: Secondary Capture and Encapsulated PDF
(seed Appendix A), checked with dciodvfy, DCMTK and pydicom's FileSet."""

from __future__ import annotations

import gc
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.fileset import FileSet
from pydicom.multival import MultiValue

from node import __version__, dicom
from node.media.capture import ENCAPSULATED_PDF, SECONDARY_CAPTURE, jpeg_frame, patient_age
from tests.conftest import cli, cli_process, ct_series
from tests.test_burn import dciodvfy_errors, extract

RNG = np.random.default_rng(5)
RGB = RNG.integers(0, 256, (24, 40, 3), dtype=np.uint8)
GREY = np.ascontiguousarray(RGB[..., 1])
GREY16 = RNG.integers(0, 65536, (17, 9), dtype=np.uint16)  # odd sizes: odd-length pixel data is padded
RGBA = np.dstack([RGB, GREY])
#: The smallest PDF a reader accepts: a catalogue, an empty page tree, a trailer (ISO 32000-1 7.5).
PDF = (b"%PDF-1.4\n1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
       b"trailer <</Root 1 0 R /Size 3>>\n%%EOF\n")


def write_images(folder: Path) -> dict[str, np.ndarray | bytes]:
    """One file of every kind into ``folder``: name -> the pixels it holds (or the PDF's bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, np.ndarray | bytes]] = {
        "colour.jpg": (imagecodecs.jpeg8_encode(RGB, level=90), RGB),
        "grey.jpg": (imagecodecs.jpeg8_encode(GREY, level=90), GREY),
        "rgb.png": (imagecodecs.png_encode(RGB), RGB),
        "rgba.png": (imagecodecs.png_encode(RGBA), RGB),
        "grey16.png": (imagecodecs.png_encode(GREY16), GREY16),
        "scan.tif": (imagecodecs.tiff_encode(RGB), RGB),
        "letter.pdf": (PDF + b"x", PDF + b"x"),  # odd length: padded, and its length says so
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: content for name, (_, content) in files.items()}


@dataclass
class Leaf:
    """One instance of a medium as its DICOMDIR lists it."""

    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    modality: str
    record_type: str
    path: Path


def leaves(root: Path) -> list[Leaf]:
    """Every leaf record with its patient, study and series, as pydicom's FileSet reads them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fs = FileSet(root / "DICOMDIR")
        found = [Leaf(str(i.PatientID), str(i.PatientName), str(i.StudyInstanceUID), str(i.SeriesInstanceUID),
                      str(i.Modality), str(i.DirectoryRecordType), Path(i.path)) for i in fs]
        del fs
        gc.collect()  # FileSet's staging TemporaryDirectory, cleaned while warnings are caught
    assert [str(w.message) for w in caught if w.filename.endswith("fileset.py")] == []  # it warns when it drops one
    return found


def sources_of(report: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    """Captured file name -> its conversion, from a burn's JSON report."""
    return {Path(row["path"]).name: row["conversion"] for row in report["converted"]}


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray | bytes], dict[str, str], Path]:
    """A CT study and every kind of capture, burned to an AUG-GEN-CD image with no identity flag:
    (sources, what each file holds, file name -> conversion, medium root)."""
    src = tmp_path_factory.mktemp("joined")
    ct_series(src / "ct", 2, size=16, patient_id="PID1", name="DOE^JANE")
    content = write_images(src / "captures")
    iso = src.parent / f"{src.name}.iso"
    result = cli("burn", src, "--out", iso, "--profile", "AUG-GEN-CD", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["skipped"] == [] and report["refused"] == []
    return src, content, sources_of(report), extract(iso, src.parent / f"{src.name}-medium")


def test_captures_join_the_one_dicom_study_in_series_of_their_own(joined: tuple[Path, dict, dict, Path]) -> None:
    _, content, conversions, root = joined
    assert sorted(conversions) == sorted(content)
    assert all("joined the study of the burn's DICOM files" in c for c in conversions.values())
    found = leaves(root)
    assert {(leaf.patient_id, leaf.patient_name) for leaf in found} == {("PID1", "DOE^JANE")}
    assert len({leaf.study_uid for leaf in found}) == 1
    by_modality: dict[str, set[str]] = {}
    for leaf in found:
        by_modality.setdefault(leaf.modality, set()).add(leaf.series_uid)
    assert {m: len(s) for m, s in by_modality.items()} == {"CT": 1, "OT": 1, "DOC": 1}
    kinds = sorted((leaf.modality, leaf.record_type) for leaf in found)
    assert kinds == [("CT", "IMAGE")] * 2 + [("DOC", "ENCAP DOC")] + [("OT", "IMAGE")] * 6


def test_every_capture_passes_dciodvfy(joined: tuple[Path, dict, dict, Path]) -> None:
    _, _, _, root = joined
    assert dciodvfy_errors(root / "DICOMDIR") == set()
    captured = [leaf.path for leaf in leaves(root) if leaf.modality != "CT"]
    assert len(captured) == 7
    for path in captured:
        assert dciodvfy_errors(path) == set(), path


def test_lossless_captures_hold_the_source_pixels(joined: tuple[Path, dict, dict, Path]) -> None:
    _, content, _, root = joined
    datasets = [dcmread(leaf.path) for leaf in leaves(root) if leaf.modality == "OT"]
    native = [ds for ds in datasets if ds.file_meta.TransferSyntaxUID == dicom.EXPLICIT_VR_LE]
    assert len(native) == 4  # rgb.png, rgba.png, grey16.png, scan.tif
    expected = [content[n] for n in ("rgb.png", "rgba.png", "grey16.png", "scan.tif")]
    for ds in native:
        matches = [e for e in expected if isinstance(e, np.ndarray) and e.shape == ds.pixel_array.shape
                   and np.array_equal(e, ds.pixel_array)]
        assert matches, f"{ds.SOPInstanceUID}: pixels match no source"
        assert "LossyImageCompression" not in ds
        assert ds.PhotometricInterpretation == ("RGB" if ds.SamplesPerPixel == 3 else "MONOCHROME2")
        assert ds.ConversionType == "WSD" and list(ds.ImageType) == ["DERIVED", "SECONDARY"]
        assert ds.SOPClassUID == SECONDARY_CAPTURE and ds.Modality == "OT"
    grey16 = next(ds for ds in native if ds.SamplesPerPixel == 1)
    assert (grey16.BitsAllocated, grey16.BitsStored, grey16.HighBit) == (16, 16, 15)


def test_baseline_jpegs_are_wrapped_as_they_are(joined: tuple[Path, dict, dict, Path]) -> None:
    src, _, conversions, root = joined
    assert "wrapped as it is (YBR_FULL_422)" in conversions["colour.jpg"]
    assert "wrapped as it is (MONOCHROME2)" in conversions["grey.jpg"]
    wrapped = {dcmread(leaf.path).PhotometricInterpretation: dcmread(leaf.path) for leaf in leaves(root)
               if leaf.modality == "OT" and dcmread(leaf.path).file_meta.TransferSyntaxUID == dicom.JPEG_BASELINE}
    for photometric, name in (("YBR_FULL_422", "colour.jpg"), ("MONOCHROME2", "grey.jpg")):
        ds = wrapped[photometric]
        data = (src / "captures" / name).read_bytes()
        (fragment,) = generate_frames(ds.PixelData, number_of_frames=1)
        assert fragment.rstrip(b"\0") == data.rstrip(b"\0") and len(fragment) - len(data) in (0, 1)
        assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_10918_1"
        assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (24, 40, 1 if photometric == "MONOCHROME2" else 3)


def test_pdf_becomes_an_encapsulated_pdf(joined: tuple[Path, dict, dict, Path]) -> None:
    _, content, conversions, root = joined
    assert conversions["letter.pdf"].startswith("PDF as Encapsulated PDF")
    (leaf,) = [leaf for leaf in leaves(root) if leaf.modality == "DOC"]
    ds = dcmread(leaf.path)
    pdf = content["letter.pdf"]
    assert isinstance(pdf, bytes) and len(pdf) % 2 == 1
    assert ds.SOPClassUID == ENCAPSULATED_PDF and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.EncapsulatedDocumentLength == len(pdf) and ds.EncapsulatedDocument[: len(pdf)] == pdf
    assert ds.DocumentTitle == "letter" and ds.BurnedInAnnotation == "YES" and ds.ConversionType == "WSD"
    record = next(r for r in dcmread(root / "DICOMDIR").DirectoryRecordSequence if r.DirectoryRecordType == "ENCAP DOC")
    assert (record.DocumentTitle, record.MIMETypeOfEncapsulatedDocument) == ("letter", "application/pdf")


def test_flags_name_a_new_study_and_jpegs_are_decoded_where_the_profile_wants(tmp_path: Path) -> None:
    ct_series(tmp_path / "src" / "ct", 1, size=16, patient_id="PID1")
    write_images(tmp_path / "src" / "photos")
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "out", "--format", "folder", "--json",
                 "--patient-id", "P9", "--patient-name", "Müller^Jörg", "--birth-date", "1961-02-03", "--sex", "m",
                 "--study-description", "Wound photos", "--accession-number", "ACC42")
    assert result.code == 0, result.err
    assert all("patient 'P9' from the burn flags" in c for c in sources_of(json.loads(result.out)).values())
    found = leaves(tmp_path / "out")
    captured = [leaf for leaf in found if leaf.modality != "CT"]
    jpegs = 0
    assert {(leaf.patient_id, leaf.patient_name) for leaf in captured} == {("P9", "Müller^Jörg")}
    assert len({leaf.study_uid for leaf in captured}) == 1
    assert {leaf.study_uid for leaf in captured}.isdisjoint({leaf.study_uid for leaf in found if leaf.modality == "CT"})
    for leaf in captured:
        ds = dcmread(leaf.path)
        assert (ds.PatientBirthDate, ds.PatientSex, ds.StudyDescription, ds.AccessionNumber) == ("19610203", "M",
                                                                                                 "Wound photos", "ACC42")
        assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.file_meta.TransferSyntaxUID == dicom.EXPLICIT_VR_LE
        assert dciodvfy_errors(leaf.path) == set(), leaf.path
        if ds.get("LossyImageCompression") == "01":  # a decoded JPEG: exactly the decoder's pixels, RGB or grey
            name = "grey.jpg" if ds.SamplesPerPixel == 1 else "colour.jpg"
            decoded = imagecodecs.jpeg8_decode((tmp_path / "src" / "photos" / name).read_bytes())
            assert np.array_equal(ds.pixel_array, decoded) and ds.LossyImageCompressionMethod == "ISO_10918_1"
            jpegs += 1
    assert jpegs == 2


def test_sidecars_win_over_flags_file_over_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes(imagecodecs.png_encode(GREY))
    (src / "c.pdf").write_bytes(PDF)
    (src / "a.yaml").write_text("patient_id: '0123'\npatient_name: ROE^ANN\nbirth_date: 19800101\n")
    (src / "capture.yaml").write_text("patient_id: PB\npatient_name: BOE^BEN\nstudy_description: From the folder\n")
    (src / "c.json").write_text('{\n\t"document_title": "Discharge letter",\n\t"burned_in_annotation": "no"\n}\n')
    result = cli("burn", src, "--out", tmp_path / "out", "--format", "folder", "--json",
                 "--patient-id", "PFLAG", "--patient-name", "FLAG^FRED")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert sources_of(report) == {
        "a.png": "PNG as Secondary Capture (MONOCHROME2, 8 bits), patient '0123' from a.yaml",
        "b.png": "PNG as Secondary Capture (MONOCHROME2, 8 bits), patient 'PB' from capture.yaml",
        "c.pdf": "PDF as Encapsulated PDF, patient 'PB' from capture.yaml",
    }
    assert sorted((Path(r["path"]).name, r["reason"]) for r in report["skipped"]) == [
        (name, "identity sidecar of the images and documents beside it") for name in ("a.yaml", "c.json", "capture.yaml")]
    found = {leaf.patient_id: leaf for leaf in leaves(tmp_path / "out") if leaf.modality == "OT"}
    assert sorted(found) == ["0123", "PB"]
    assert dcmread(found["0123"].path).PatientBirthDate == "19800101"
    (doc,) = [leaf for leaf in leaves(tmp_path / "out") if leaf.modality == "DOC"]
    ds = dcmread(doc.path)
    assert (doc.patient_id, doc.study_uid) == ("PB", found["PB"].study_uid)  # one identity, one new study
    assert (ds.DocumentTitle, ds.BurnedInAnnotation, ds.StudyDescription) == ("Discharge letter", "NO", "From the folder")


def test_study_uid_picks_one_of_several_dicom_studies(tmp_path: Path) -> None:
    ct_series(tmp_path / "src" / "one", 1, size=16, patient_id="P1", study_uid="1.2.3.1")
    ct_series(tmp_path / "src" / "two", 1, size=16, patient_id="P2", name="ROE^RICHARD", study_uid="1.2.3.2")
    (tmp_path / "src" / "photo.png").write_bytes(imagecodecs.png_encode(RGB))
    refused = cli_process("burn", tmp_path / "src", "--out", tmp_path / "a.iso")
    assert refused.code == 2 and "Traceback" not in refused.err
    assert str(tmp_path / "src" / "photo.png") in refused.err and "give --study-uid" in refused.err
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "out", "--format", "folder", "--study-uid", "1.2.3.2")
    assert result.code == 0, result.err
    (photo,) = [leaf for leaf in leaves(tmp_path / "out") if leaf.modality == "OT"]
    assert (photo.patient_id, photo.patient_name, photo.study_uid) == ("P2", "ROE^RICHARD", "1.2.3.2")
    assert dcmread(photo.path).SeriesNumber == 4  # after the CT's series 3


def test_a_jpeg_nobody_owns_is_a_usage_error_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "photo.jpg").write_bytes(imagecodecs.jpeg8_encode(RGB))
    result = cli_process("burn", tmp_path / "src", "--out", tmp_path / "x.iso")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.count("\n") == 1 and str(tmp_path / "src" / "photo.jpg") in result.err
    assert "no patient is invented" in result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.parametrize(("args", "sidecar", "message"), [
    (["--patient-id", "P9"], None, "--patient-name missing"),
    (["--study-description", "X"], None, "--study-description given without a patient"),
    (["--patient-id", "P9", "--patient-name", "A^B", "--sex", "X"], None, "--sex: 'X' is not M, F or O"),
    (["--study-uid", "1.2.999"], None, "study 1.2.999 is not among the DICOM files of this burn"),
    ([], "patient_id: P1\npatient_name: A^B\nbirth_date: 1970-13-01\n", "photo.yaml:3 birth_date: '1970-13-01' is not a date"),
    ([], "patient_id: P1\npatient_nam: A^B\n", "photo.yaml:2 patient_nam: unknown key"),
    ([], '{"patient_id": "P1",\n "patient_name": A^B}', "photo.json:2 JSON syntax error"),
])
def test_bad_identities_are_usage_errors(tmp_path: Path, args: list[str], sidecar: str | None, message: str) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "photo.png").write_bytes(imagecodecs.png_encode(GREY))
    if sidecar:
        (tmp_path / "src" / f"photo.{'json' if sidecar.startswith('{') else 'yaml'}").write_text(sidecar)
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "x.iso", *args)
    assert result.code == 2 and message in result.err, result.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_corrupt_image_is_refused_and_the_rest_burned(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "good.png").write_bytes(imagecodecs.png_encode(RGB))
    (tmp_path / "src" / "bad.png").write_bytes(imagecodecs.png_encode(RGB)[:60])  # cut inside the image data
    (tmp_path / "src" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(20))
    (tmp_path / "src" / "bad.pdf").write_bytes(PDF[:40])  # no %%EOF: cut short
    (tmp_path / "src" / "fax.tif").write_bytes(imagecodecs.tiff_encode(GREY > 128))  # bilevel: black or white?
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "out", "--format", "folder", "--json",
                 "--patient-id", "P9", "--patient-name", "DOE^JOHN")
    assert result.code == 1, result.err
    report = json.loads(result.out)
    reasons = {Path(r["path"]).name: r["reason"] for r in report["refused"]}
    assert sorted(reasons) == ["bad.jpg", "bad.pdf", "bad.png", "fax.tif"]
    assert reasons["fax.tif"] == "TIFF samples of type bool: only 8- and 16-bit unsigned are converted"
    assert reasons["bad.png"].startswith("cannot decode the PNG image")
    assert reasons["bad.jpg"].startswith("damaged JPEG")
    assert reasons["bad.pdf"].startswith("truncated PDF")
    (good,) = leaves(tmp_path / "out")
    assert np.array_equal(dcmread(good.path).pixel_array, RGB)
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]  # no staging left behind


def test_jpeg_frame_reads_sampling_and_colour_transform() -> None:
    assert jpeg_frame(imagecodecs.jpeg8_encode(RGB, subsampling=(1, 1))).photometric == "YBR_FULL"
    assert jpeg_frame(imagecodecs.jpeg8_encode(RGB, subsampling=(2, 1))).photometric == "YBR_FULL_422"
    frame = jpeg_frame(imagecodecs.jpeg8_encode(RGB, level=90))
    assert (frame.rows, frame.columns, frame.precision, frame.baseline) == (24, 40, 8, True)
    sof2 = bytes.fromhex("ffd8" "ffc2000b08001000100101" "1100" "ffd9")  # progressive (SOF2), one component
    assert not jpeg_frame(sof2).baseline


def test_check_reads_the_captures_back(joined: tuple[Path, dict, dict, Path]) -> None:
    _, _, _, root = joined
    result = cli("check", root, "--profile", "AUG-GEN-CD", "--json")
    report = json.loads(result.out)
    assert result.code == 0 and report["ok"] and report["instances"] == 9, report["problems"]


IDENTITY = """\
node:
  identity:
    station_name: CDROBOT1
    manufacturer_model_name: Media Station 3
    device_serial_number: SN-0042
    department: Radiology
    institution_address: 1 Main Street, Springfield
burn:
  institution: Springfield General
"""
#: Seed Table 7, tag as the seed gives it -> (where PS3.6 puts it, the value a PNG captured with IDENTITY and
#: the burn flags of the test holds; None: not written, no file on disk gives it a value).
TABLE_7: dict[int, tuple[int, str | None]] = {
    0x00080008: (0x00080008, "DERIVED\\SECONDARY"), 0x00080060: (0x00080060, "OT"),
    0x00080064: (0x00080064, "WSD"), 0x00080070: (0x00080070, "medianode"),
    0x00080080: (0x00080080, "Springfield General"), 0x00080081: (0x00080081, "1 Main Street, Springfield"),
    0x00080090: (0x00080090, ""), 0x00081000: (0x00181000, "SN-0042"), 0x00081010: (0x00081010, "CDROBOT1"),
    0x00081020: (0x00181020, __version__), 0x00081030: (0x00081030, "Wound photos"),
    0x0008103E: (0x0008103E, "Secondary Capture"), 0x00081040: (0x00081040, "Radiology"),
    0x00081050: (0x00181050, None), 0x00081080: (0x00081080, None), 0x00081090: (0x00081090, "Media Station 3"),
    0x00081200: (0x00181200, None), 0x00081201: (0x00181201, None),
    0x00100010: (0x00100010, "DOE^JANE"), 0x00100020: (0x00100020, "P9"), 0x00100030: (0x00100030, "19610203"),
    0x00100040: (0x00100040, "F"), 0x00104000: (0x00104000, None), 0x00180022: (0x00180022, None),
    0x00180023: (0x00180023, None), 0x00181000: (0x00181000, "SN-0042"), 0x00181010: (0x00181010, "CDROBOT1"),
    0x00181016: (0x00181016, "medianode"), 0x00181018: (0x00181018, "Media Station 3"),
    0x00181019: (0x00181019, __version__), 0x00200011: (0x00200011, "1"), 0x00200012: (0x00200012, None),
    0x00200013: (0x00200013, "1"), 0x00280120: (0x00280120, None),
}
#: Table 7's attributes whose value is the capture's own: new UIDs, its dates and times, the new study's ID, the age.
MADE = (0x00080016, 0x00080018, 0x00080020, 0x00080023, 0x00080030, 0x00080033, 0x00101010, 0x00181012, 0x00181014,
        0x0020000D, 0x0020000E, 0x00200010)


def test_every_table_7_attribute_with_a_value_is_written(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "wound.png").write_bytes(imagecodecs.png_encode(RGB))
    (tmp_path / "node.yaml").write_text(IDENTITY)
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "out", "--format", "folder", "--config",
                 tmp_path / "node.yaml", "--patient-id", "P9", "--patient-name", "DOE^JANE", "--birth-date", "19610203",
                 "--sex", "F", "--study-description", "Wound photos")
    assert result.code == 0, result.err
    (leaf,) = leaves(tmp_path / "out")
    ds = dcmread(leaf.path)
    assert (ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID) == (  # (0002,0002/3)
        SECONDARY_CAPTURE, ds.SOPInstanceUID)
    for seed, (tag, value) in TABLE_7.items():
        if value is None:
            assert tag not in ds, f"{seed:08X}"
        else:
            written = ds[tag].value
            text = "\\".join(written) if isinstance(written, MultiValue) else str(written if written is not None else "")
            assert text == value, f"{seed:08X}"
    for tag in MADE:
        assert ds[tag].value, f"{tag:08X}"
    assert ds.PatientAge == patient_age("19610203", ds.StudyDate) and ds.PatientAge.endswith("Y")
    assert dciodvfy_errors(leaf.path) == set()


def test_without_a_configuration_the_node_names_only_itself(joined: tuple[Path, dict, dict, Path]) -> None:
    _, _, _, root = joined
    for leaf in leaves(root):
        if leaf.modality == "CT":
            continue
        ds = dcmread(leaf.path)
        assert (ds.Manufacturer, ds.SoftwareVersions) == ("medianode", __version__)
        assert not {"StationName", "InstitutionAddress", "InstitutionalDepartmentName", "ManufacturerModelName",
                    "DeviceSerialNumber", "SecondaryCaptureDeviceID"} & set(ds.dir())


def test_a_bad_configuration_stops_the_burn_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "wound.png").write_bytes(imagecodecs.png_encode(RGB))
    (tmp_path / "node.yaml").write_text("node:\n  identity:\n    station: CDROBOT1\n")
    result = cli("burn", tmp_path / "src", "--out", tmp_path / "out", "--format", "folder", "--config",
                 tmp_path / "node.yaml", "--patient-id", "P9", "--patient-name", "DOE^JANE")
    assert result.code == 2
    assert result.err.strip().endswith(f"{tmp_path / 'node.yaml'}:3 node.identity.station: unknown key (known: "
                                       "station_name, manufacturer_model_name, device_serial_number, department, "
                                       "institution_address)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.yaml", "src"]
