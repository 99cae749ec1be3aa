"""node.media.compress and the encoders of node.pixels, against real decoders (DCMTK, GDCM, dciodvfy).

Every output is written with pydicom and decoded three ways: by pydicom, and by the reference
tools (``dcmdjpeg``, ``dcmdrle``; ``gdcmconv --raw`` for JPEG 2000, which DCMTK 3.6.7 cannot
decode), read back with pydicom and compared with numpy.
"""

from __future__ import annotations

import copy
import math
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels.processing import apply_color_lut
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from node import dicom, pixels
from node.media.compress import Choice, CompressError, ImageInfo, Policy, choose_syntax, compress, decoded_photometric
from node.profiles import PROFILES
from node.syntaxes import by_uid
from tests.conftest import bundled, ct_series, need
from tests.test_burn import dciodvfy_errors

LOSSLESS = (dicom.JPEG_LOSSLESS_SV1, dicom.JPEG_LOSSLESS_P14, dicom.RLE_LOSSLESS, dicom.J2K_LOSSLESS)
#: The reference decoder of each syntax (DCMTK 3.6.7 has no JPEG 2000 codec).
TOOL = {
    dicom.JPEG_LOSSLESS_SV1: "dcmdjpeg",
    dicom.JPEG_LOSSLESS_P14: "dcmdjpeg",
    dicom.JPEG_BASELINE: "dcmdjpeg",
    dicom.JPEG_EXTENDED: "dcmdjpeg",
    dicom.RLE_LOSSLESS: "dcmdrle",
    dicom.J2K_LOSSLESS: "gdcmconv",
    dicom.J2K: "gdcmconv",
}
AUGMENTED = PROFILES["AUG-GEN-CD"].image_syntaxes
JPEG_PROFILE = PROFILES["STD-GEN-DVD-JPEG"].image_syntaxes
J2K_PROFILE = PROFILES["STD-GEN-DVD-J2K"].image_syntaxes
#: PSNR floors (dB) of lossy output against its source, over the source's bit depth: 12-bit
#: grey at the default JPEG quality and JPEG 2000 ratio measures 54-60 dB on these phantoms,
#: 8-bit ultrasound colour 33-40 dB.
PSNR_GREY = 45.0
PSNR_COLOUR = 30.0


@pytest.fixture(autouse=True, scope="module")
def _imagecodecs_decodes_jpeg() -> None:
    """pydicom reads our JPEG output through node.pixels' plugin (it has no free JPEG decoder of its own)."""
    pixels.register()


# -- inputs -----------------------------------------------------------------------------


def decoded(name: str) -> Dataset:
    """A bundled pydicom file as the burn hands it over: decoded, Explicit VR LE."""
    ds = dcmread(bundled(name))
    pixels.decompress(ds)
    return ds


def phantom(size: int, low: int, high: int) -> np.ndarray:
    """Smooth anatomy-like structure plus a little noise, so that lossy ratios and PSNR mean something."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = 0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y) + 0.2 * ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1)
    img = low + (high - low) * (img - img.min()) / (img.max() - img.min())
    noise = np.random.default_rng(size).normal(0, (high - low) / 400, img.shape)
    return np.clip(img + noise, low, high).round()


def generated(sop_class: str, modality: str, values: np.ndarray, *, bits_stored: int, **attrs: object) -> Dataset:
    """A minimal grey image of ``values`` (signed when the dtype is)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "DOE^J", "P1", generate_uid(), generate_uid()
    ds.Modality, ds.ImageType = modality, ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = values.dtype.itemsize * 8, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(values.dtype.kind == "i")
    ds.PixelData = values.tobytes()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def cr_12bit() -> Dataset:
    return generated(ComputedRadiographyImageStorage, "CR", phantom(256, 0, 4095).astype(np.uint16), bits_stored=12)


def ct_signed_12bit() -> Dataset:
    """A CT whose stored values are signed 12-bit, as many scanners write them."""
    values = phantom(128, -1024, 2047).astype(np.int16)
    return generated(CTImageStorage, "CT", values, bits_stored=12, RescaleIntercept="-1024", RescaleSlope="1",
                     PixelPaddingValue=-2000, SmallestPixelValueInSeries=-1024, LargestPixelValueInSeries=2047)


def us_rgb_frames() -> Dataset:
    """pydicom's 30-frame YBR_FULL_422 JPEG ultrasound, decoded to RGB and cut to 3 frames."""
    ds = decoded("examples_ybr_color.dcm")
    frame = ds.Rows * ds.Columns * 3
    ds.NumberOfFrames, ds.PixelData = 3, ds.PixelData[: 3 * frame]
    return ds


#: Lossless inputs, each made in a test's tmp_path.
INPUTS: dict[str, Callable[[Path], Dataset]] = {
    "CT signed": lambda _: decoded("CT_small.dcm"),
    "CT signed generated": lambda tmp: dcmread(ct_series(tmp / "ct", 1, size=64)[0]),
    "CT signed 12-bit": lambda _: ct_signed_12bit(),
    "MR": lambda _: decoded("MR_small.dcm"),
    "CR 12-bit": lambda _: cr_12bit(),
    "US RGB multi-frame": lambda _: us_rgb_frames(),
    "US palette": lambda _: decoded("examples_palette.dcm"),
}


# -- helpers ----------------------------------------------------------------------------


def run(ds: Dataset, syntax: str, allowed: frozenset[str] = AUGMENTED, policy: Policy | None = None) -> tuple[Choice, list[str]]:
    """choose_syntax() then compress(), with a new UID for lossy output as the burn's parent gives it."""
    choice = choose_syntax(syntax, ImageInfo.from_dataset(ds), allowed, policy or Policy())
    return choice, compress(ds, choice, new_sop_uid=dicom.new_uid() if choice.lossy else None)


def written(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def reference_decode(path: Path, syntax: str) -> Dataset:
    """``path`` decoded by DCMTK or GDCM into Explicit VR LE, read back with pydicom."""
    tool = TOOL[syntax]
    need(tool)
    out = path.with_suffix(".ref.dcm")
    command = [tool, "--raw", str(path), str(out)] if tool == "gdcmconv" else [tool, str(path), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{tool}: {done.stderr or done.stdout}"
    ref = dcmread(out)
    assert not ref.file_meta.TransferSyntaxUID.is_compressed
    return ref


def psnr(decoded: np.ndarray, source: np.ndarray, bits: int) -> float:
    mse = float(np.mean((decoded.astype(np.float64) - source.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10((2**bits - 1) ** 2 / mse)


def code(item: Dataset) -> tuple[str, str, str]:
    return item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning


def context(item: Dataset) -> tuple[str, str, str, str]:
    """Context Identifier, Mapping Resource, Context Group Version, Context Group Extension Flag (PS3.3 8.6)."""
    return item.ContextIdentifier, item.MappingResource, item.ContextGroupVersion, item.ContextGroupExtensionFlag


# -- lossless ---------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", LOSSLESS, ids=[by_uid(ts).label for ts in LOSSLESS])
@pytest.mark.parametrize("name", list(INPUTS))
def test_lossless_round_trips_bit_exact_in_pydicom_and_the_reference_decoder(name: str, syntax: str, tmp_path: Path) -> None:
    ds = INPUTS[name](tmp_path)
    source, before = ds.pixel_array.copy(), copy.deepcopy(ds)
    choice, notes = run(ds, syntax)
    assert choice == Choice(syntax, lossy=False) and notes == [by_uid(syntax).label]

    path = written(ds, tmp_path / "out.dcm")
    out = dcmread(path)
    assert out.file_meta.TransferSyntaxUID == syntax
    assert np.array_equal(out.pixel_array, source)
    assert np.array_equal(reference_decode(path, syntax).pixel_array, source)

    # seed B.1 for lossless output: only Planar Configuration and the Photometric Interpretation change
    assert out.SOPInstanceUID == before.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID
    colour = before.SamplesPerPixel == 3
    expected = "YBR_RCT" if colour and syntax == dicom.J2K_LOSSLESS else before.PhotometricInterpretation
    assert out.PhotometricInterpretation == expected
    assert out.get("PlanarConfiguration") == (0 if colour else before.get("PlanarConfiguration"))
    for keyword in ("PixelRepresentation", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel",
                    "RedPaletteColorLookupTableData", "RedPaletteColorLookupTableDescriptor", "RescaleIntercept",
                    "ImageType", "LossyImageCompression", "DerivationDescription", "SourceImageSequence"):
        assert out.get(keyword) == before.get(keyword), keyword


def test_jpeg_lossless_process_14_uses_the_documented_predictor(tmp_path: Path) -> None:
    """The SOS marker's Ss field is the predictor (ISO 10918-1 H.1.2.1): 1 for .70, P14_PREDICTOR for .57."""
    for syntax, predictor in ((dicom.JPEG_LOSSLESS_SV1, 1), (dicom.JPEG_LOSSLESS_P14, pixels.P14_PREDICTOR)):
        ds = decoded("CT_small.dcm")
        run(ds, syntax)
        stream = next(generate_frames(ds.PixelData, number_of_frames=1))
        sos = stream.index(b"\xff\xda")
        components = stream[sos + 4]
        assert stream[sos + 5 + 2 * components] == predictor


# -- lossy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "syntax", "floor"),
    [
        (cr_12bit, dicom.JPEG_EXTENDED, PSNR_GREY),
        (cr_12bit, dicom.J2K, PSNR_GREY),
        (us_rgb_frames, dicom.JPEG_BASELINE, PSNR_COLOUR),
        (us_rgb_frames, dicom.J2K, PSNR_COLOUR),
        (lambda: decoded("examples_rgb_color.dcm"), dicom.JPEG_BASELINE, PSNR_COLOUR),
    ],
    ids=["CR extended", "CR j2k", "US RGB baseline", "US RGB j2k", "RGB baseline"],
)
def test_lossy_output_decodes_above_the_psnr_floor_in_pydicom_and_the_reference_decoder(
    make: Callable[[], Dataset], syntax: str, floor: float, tmp_path: Path
) -> None:
    ds = make()
    source, bits = ds.pixel_array.copy(), ds.BitsStored
    choice, notes = run(ds, syntax)
    assert choice.lossy and choice.transfer_syntax == syntax
    assert notes[0].startswith(f"lossy {by_uid(syntax).label}, ratio ")
    path = written(ds, tmp_path / "lossy.dcm")
    for result in (dcmread(path).pixel_array, reference_decode(path, syntax).pixel_array):
        assert result.shape == source.shape
        assert psnr(result, source, bits) > floor


@pytest.mark.parametrize("syntax", [dicom.JPEG_BASELINE, dicom.J2K], ids=["baseline", "j2k"])
def test_a_palette_is_expanded_to_rgb_before_lossy_compression(syntax: str, tmp_path: Path) -> None:
    """Seed B.1: PALETTE COLOR becomes RGB. This palette has 16-bit entries (PS3.3 C.7.6.3.1.5):
    JPEG baseline takes their high byte, JPEG 2000 keeps all 16 bits."""
    ds = decoded("examples_palette.dcm")
    assert ds.RedPaletteColorLookupTableDescriptor[2] == 16
    rgb = apply_color_lut(ds.pixel_array, ds)
    bits = 8 if syntax == dicom.JPEG_BASELINE else 16
    expected = rgb >> 8 if bits == 8 else rgb
    run(ds, syntax)
    assert (ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored) == (3, bits, bits)
    path = written(ds, tmp_path / "palette.dcm")
    for result in (dcmread(path).pixel_array, reference_decode(path, syntax).pixel_array):
        assert psnr(result, expected, bits) > PSNR_COLOUR


def test_lossy_jpeg_colour_is_ybr_full_422_with_a_4_2_2_codestream() -> None:
    """PS3.3 C.7.6.3.1.2: YBR_FULL_422 means chroma halved horizontally only. The SOF0 marker
    (ISO 10918-1 B.2.2) must give Y sampling factors H=2, V=1 and Cb, Cr H=1, V=1 (not libjpeg's 4:2:0)."""
    ds = us_rgb_frames()
    run(ds, dicom.JPEG_BASELINE)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    for stream in generate_frames(ds.PixelData, number_of_frames=ds.NumberOfFrames):
        sof = stream.index(b"\xff\xc0")  # baseline
        precision, components = stream[sof + 4], stream[sof + 9]
        factors = [stream[sof + 10 + 3 * i + 1] for i in range(components)]
        assert (precision, components) == (8, 3)
        assert [(f >> 4, f & 15) for f in factors] == [(2, 1), (1, 1), (1, 1)]


def test_lossy_coerces_every_appendix_b_attribute() -> None:
    """Seed Appendix B.1 and B.2, one attribute at a time, on a palette image with a lossy history."""
    ds = decoded("examples_palette.dcm")
    ds.DerivationDescription = "cropped"
    ds.LossyImageCompression, ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod = "01", "5", "ISO_10918_1"
    ds.PixelPaddingValue, ds.SmallestPixelValueInSeries, ds.LargestPixelValueInSeries = 0, 0, 255
    old_class, old_uid = ds.SOPClassUID, ds.SOPInstanceUID
    choice = choose_syntax(dicom.JPEG_BASELINE, ImageInfo.from_dataset(ds), JPEG_PROFILE, Policy())
    new_uid = dicom.new_uid()
    notes = compress(ds, choice, new_sop_uid=new_uid)

    assert ds.file_meta.TransferSyntaxUID == dicom.JPEG_BASELINE
    ratio = ds.LossyImageCompressionRatio[-1]
    assert re.fullmatch(rf"lossy JPEG baseline, ratio {re.escape(str(ratio))}:1, PSNR \d+\.\d dB, new SOP Instance UID",
                        notes[0])
    # B.1
    assert ds.SamplesPerPixel == 3
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert ds.PlanarConfiguration == 0
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (8, 8, 7)
    assert ds.PixelRepresentation == 0
    for keyword in ("Red", "Green", "Blue"):
        assert f"{keyword}PaletteColorLookupTableDescriptor" not in ds
        assert f"{keyword}PaletteColorLookupTableData" not in ds
    # B.2
    assert ds.ImageType[0] == "DERIVED"
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == new_uid
    assert new_uid.startswith(dicom.UID_ROOT)
    first, rest = ds.DerivationDescription.split("\n", 1)
    assert first == f"medianode: lossy JPEG baseline compression, ratio {ratio}:1" and rest == "cropped"
    source = ds.SourceImageSequence[-1]
    assert (source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID) == (old_class, old_uid)
    assert code(source.PurposeOfReferenceCodeSequence[0]) == ("121320", "DCM", "Uncompressed predecessor")
    assert code(ds.DerivationCodeSequence[-1]) == ("113040", "DCM", "Lossy Compression")
    # the context attributes the seed lists for both items
    assert context(source.PurposeOfReferenceCodeSequence[0]) == ("7202", "DCMR", "20020904", "N")
    assert context(ds.DerivationCodeSequence[-1]) == ("7203", "DCMR", "20020904", "N")
    assert ds.LossyImageCompression == "01"
    assert list(ds.LossyImageCompressionRatio) == ["5", ratio] and float(ratio) > 1
    assert list(ds.LossyImageCompressionMethod) == ["ISO_10918_1", "ISO_10918_1"]
    for keyword in ("PixelPaddingValue", "SmallestPixelValueInSeries", "LargestPixelValueInSeries"):
        assert keyword not in ds


def test_j2k_lossy_colour_is_ybr_ict_and_names_its_method() -> None:
    ds = decoded("examples_rgb_color.dcm")
    run(ds, dicom.J2K)
    assert ds.PhotometricInterpretation == "YBR_ICT" and ds.PlanarConfiguration == 0
    assert ds.LossyImageCompressionMethod == "ISO_15444_1" and ds.LossyImageCompressionRatio
    assert ds.DerivationDescription == f"medianode: lossy JPEG 2000 compression, ratio {ds.LossyImageCompressionRatio}:1"


def test_signed_ct_through_lossy_jpeg_keeps_its_hounsfield_values(tmp_path: Path) -> None:
    """JPEG is unsigned (seed B.1): the values are offset by 2**11 and Rescale Intercept by -2048, so
    the Modality LUT output (PS3.3 C.11.1.1.2) stays within the lossy error of the source's."""
    ds = ct_signed_12bit()
    hounsfield = ds.pixel_array * 1.0 - 1024
    choice, _ = run(ds, dicom.JPEG_EXTENDED, JPEG_PROFILE)
    assert choice == Choice(dicom.JPEG_EXTENDED, lossy=True)
    path = written(ds, tmp_path / "ct.dcm")
    out = dcmread(path)
    assert (out.PixelRepresentation, out.BitsAllocated, out.BitsStored, out.HighBit) == (0, 16, 12, 11)
    assert (out.RescaleSlope, out.RescaleIntercept) == (1, -1024 - 2048)
    for result in (out.pixel_array, reference_decode(path, dicom.JPEG_EXTENDED).pixel_array):
        values = result * float(out.RescaleSlope) + float(out.RescaleIntercept)
        assert np.abs(values - hounsfield).mean() < 4
        assert psnr(values, hounsfield, 12) > PSNR_GREY


def test_modality_lut_sequence_is_applied_and_removed() -> None:
    """Seed B.2: the LUT's output is what gets compressed; the sequence goes. Its entries are 8 or
    16 bits (PS3.3 C.11.1.1.1), which the output's Bits Stored follows."""
    values = phantom(64, 0, 1023).astype(np.uint16)
    lut = Dataset()
    lut.LUTDescriptor, lut.ModalityLUTType = [1024, 0, 16], "US"
    lut.LUTData = list(range(0, 4096, 4))
    ds = generated(ComputedRadiographyImageStorage, "CR", values, bits_stored=10, ModalityLUTSequence=[lut])
    expected = values * 4.0
    choice, _ = run(ds, dicom.J2K)
    assert choice.lossy and "ModalityLUTSequence" not in ds and "RescaleIntercept" not in ds
    assert (ds.BitsStored, ds.PixelRepresentation) == (16, 0)
    assert psnr(ds.pixel_array, expected, 12) > PSNR_GREY


def test_bit_reduction_only_on_opt_in_and_the_rescale_keeps_the_values() -> None:
    """16-bit signed CT into 8-bit JPEG baseline: scaled by an integer step, with Rescale Slope = step."""
    values = phantom(128, -1000, 3000).astype(np.int16)
    def make() -> Dataset:
        return generated(CTImageStorage, "CT", values, bits_stored=16, RescaleIntercept="-1024", RescaleSlope="1")

    assert not run(make(), dicom.JPEG_BASELINE, JPEG_PROFILE)[0].lossy
    ds = make()
    choice, _ = run(ds, dicom.JPEG_BASELINE, JPEG_PROFILE, Policy(bit_reduction=True))
    assert choice == Choice(dicom.JPEG_BASELINE, lossy=True, reduce_bits=True)
    step = math.ceil(4001 / 256)
    assert (ds.BitsStored, ds.PixelRepresentation, ds.RescaleSlope, ds.RescaleIntercept) == (8, 0, step, -1024 - 1000)
    restored = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.abs(restored - (values - 1024.0)).mean() < step


# -- fallbacks --------------------------------------------------------------------------


def grey_info(bits: int, *, size: int = 64, sop_class: str = CTImageStorage, modality: str = "CT", samples: int = 1) -> ImageInfo:
    photometric = "RGB" if samples == 3 else "MONOCHROME2"
    return ImageInfo(sop_class, modality, size, size, samples, 8 if bits <= 8 else 16, bits, 0, photometric)


@pytest.mark.parametrize(
    ("asked", "image", "allowed", "policy", "expected", "reason"),
    [
        (dicom.JPEG_BASELINE, grey_info(13), JPEG_PROFILE, Policy(), dicom.JPEG_LOSSLESS_SV1,
         "13 bits stored exceed the 8 of JPEG baseline (bit reduction not enabled): written as JPEG lossless SV1"),
        (dicom.JPEG_EXTENDED, grey_info(8, samples=3), JPEG_PROFILE, Policy(), dicom.JPEG_LOSSLESS_SV1,
         "colour is not allowed in JPEG extended (seed Appendix B: only baseline): written as JPEG lossless SV1"),
        (dicom.J2K, grey_info(12, size=16), J2K_PROFILE, Policy(), dicom.EXPLICIT_VR_LE,
         "16x16 is smaller than the 32x32 that JPEG 2000's resolution levels need: written uncompressed"),
        (dicom.J2K, grey_info(12, size=16), AUGMENTED, Policy(), dicom.JPEG_LOSSLESS_SV1,
         "16x16 is smaller than the 32x32 that JPEG 2000's resolution levels need: written as JPEG lossless SV1"),
        (dicom.J2K, grey_info(12, sop_class=DigitalMammographyXRayImageStorageForPresentation, modality="MG"),
         J2K_PROFILE, Policy(), dicom.J2K_LOSSLESS,
         "lossy compression of mammography is not enabled for this route: written as JPEG 2000 lossless"),
        (dicom.JPEG_LOSSLESS_SV1, ImageInfo(CTImageStorage, "RTDOSE", 10, 10, 1, 32, 32, 0, "MONOCHROME2"),
         JPEG_PROFILE, Policy(), dicom.EXPLICIT_VR_LE,
         "32 bits allocated do not fit JPEG lossless SV1: written uncompressed"),
    ],
    ids=["13-bit to baseline", "colour to extended", "tiny to J2K profile", "tiny to augmented", "MG", "32-bit"],
)
def test_choose_falls_back_with_a_reason(asked: str, image: ImageInfo, allowed: frozenset[str], policy: Policy,
                                         expected: str, reason: str) -> None:
    assert choose_syntax(asked, image, allowed, policy) == Choice(expected, lossy=False, reason=reason)


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "examples_jpeg2k.dcm", "SC_rgb_dcmtk_+eb+cy+n1.dcm",
                                  "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm", "CT_small.dcm"])
def test_image_info_from_the_header_matches_the_decoded_dataset(name: str) -> None:
    """The burn plans from the source's header, the worker encodes the decoded data set: both must agree."""
    header = dcmread(bundled(name), stop_before_pixels=True)
    planned = ImageInfo(
        header.SOPClassUID, header.Modality, header.Rows, header.Columns, header.SamplesPerPixel,
        header.BitsAllocated, header.BitsStored, header.PixelRepresentation,
        decoded_photometric(header.PhotometricInterpretation, header.file_meta.TransferSyntaxUID),
        int(header.get("NumberOfFrames") or 1),
        header.RedPaletteColorLookupTableDescriptor[2] if "RedPaletteColorLookupTableDescriptor" in header else 0,
    )
    assert planned == ImageInfo.from_dataset(decoded(name))


def test_native_ybr_full_422_is_left_uncompressed() -> None:
    """Uncompressed YBR_FULL_422 holds subsampled chroma (PS3.3 C.7.6.3.1.2) that no encoder here takes."""
    ds = decoded("SC_ybr_full_422_uncompressed.dcm")
    choice = choose_syntax(dicom.JPEG_LOSSLESS_SV1, ImageInfo.from_dataset(ds), JPEG_PROFILE, Policy())
    assert choice == Choice(dicom.EXPLICIT_VR_LE, lossy=False,
                            reason="3 samples of YBR_FULL_422 are not encoded by JPEG lossless SV1: written uncompressed")


def test_mammography_is_lossy_only_with_the_routes_consent() -> None:
    mg = grey_info(12, sop_class=DigitalMammographyXRayImageStorageForPresentation, modality="MG")
    assert choose_syntax(dicom.J2K, mg, J2K_PROFILE, Policy(lossy_mammography=True)) == Choice(dicom.J2K, lossy=True)
    by_modality = grey_info(12, modality="MG")
    chosen = choose_syntax(dicom.JPEG_EXTENDED, by_modality, JPEG_PROFILE, Policy())
    assert chosen.transfer_syntax == dicom.JPEG_LOSSLESS_SV1


def test_a_fallback_is_written_losslessly_and_reported(tmp_path: Path) -> None:
    """Nothing is lost: a mammogram asked lossy is written bit-exact, the report says why, the UID stays."""
    values = phantom(64, 0, 4095).astype(np.uint16)
    ds = generated(DigitalMammographyXRayImageStorageForPresentation, "MG", values, bits_stored=12)
    uid = ds.SOPInstanceUID
    choice, notes = run(ds, dicom.JPEG_BASELINE, JPEG_PROFILE)
    assert notes == ["JPEG lossless SV1"] and "mammography" in choice.reason
    out = dcmread(written(ds, tmp_path / "mg.dcm"))
    assert np.array_equal(out.pixel_array, values) and out.SOPInstanceUID == uid and "LossyImageCompression" not in out


def test_a_choice_of_explicit_vr_leaves_the_pixels_alone() -> None:
    ds = decoded("rtdose.dcm")
    data = ds.PixelData
    choice = choose_syntax(dicom.J2K_LOSSLESS, ImageInfo.from_dataset(ds), AUGMENTED, Policy())
    assert choice.transfer_syntax == dicom.EXPLICIT_VR_LE
    assert compress(ds, choice, new_sop_uid=None) == []
    assert ds.PixelData is data and ds.file_meta.TransferSyntaxUID == dicom.EXPLICIT_VR_LE


# -- refusals ---------------------------------------------------------------------------


def test_a_syntax_the_profile_forbids_is_refused() -> None:
    with pytest.raises(CompressError, match=r"^JPEG 2000 .* is not allowed by the profile$"):
        choose_syntax(dicom.J2K, grey_info(12), JPEG_PROFILE, Policy())


@pytest.mark.parametrize(
    ("choice", "uid", "message"),
    [
        (Choice(dicom.J2K, lossy=True), None, "lossy compression needs a new SOP Instance UID from the caller"),
        (Choice(dicom.JPEG_EXTENDED, lossy=True), "2.25.1", "16 bits do not fit JPEG extended and the choice did not reduce them"),
        (Choice(dicom.J2K_LOSSLESS, lossy=False), None, "cannot encode as JPEG 2000 lossless: "),
    ],
    ids=["no new UID", "inconsistent choice", "codec failure"],
)
def test_compress_refuses_with_one_line_and_leaves_the_dataset_as_it_was(choice: Choice, uid: str | None, message: str) -> None:
    """A choice the image cannot honour (here a 16x16 16-bit CT) raises before anything changes."""
    ds = generated(CTImageStorage, "CT", phantom(16, -1000, 3000).astype(np.int16), bits_stored=16)
    before = copy.deepcopy(ds)
    with pytest.raises(CompressError) as raised:
        compress(ds, choice, new_sop_uid=uid)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert ds == before and ds.file_meta == before.file_meta


# -- conformance ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "syntax"),
    [
        (lambda: decoded("CT_small.dcm"), dicom.J2K),
        (ct_signed_12bit, dicom.JPEG_EXTENDED),
        (lambda: decoded("examples_palette.dcm"), dicom.JPEG_BASELINE),
        (lambda: decoded("examples_rgb_color.dcm"), dicom.J2K),
    ],
    ids=["CT j2k", "signed CT extended", "palette baseline", "RGB j2k"],
)
def test_dciodvfy_finds_no_error_that_the_input_did_not_have(make: Callable[[], Dataset], syntax: str,
                                                             tmp_path: Path) -> None:
    source = written(make(), tmp_path / "source.dcm")
    ds = dcmread(source)
    assert run(ds, syntax)[0].lossy
    introduced = dciodvfy_errors(written(ds, tmp_path / "lossy.dcm")) - dciodvfy_errors(source)
    assert not introduced
