"""node.pixels against real reference decoders (GDCM, DCMTK) and uncompressed originals."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.decoders.base import get_decoder

from node import pixels

#: ISO 10918-1 bounds the DCT decoder's accuracy but does not fix its arithmetic, so
#: libjpeg-turbo's SIMD IDCT and upsampling may round 1 off IJG 6b's (DCMTK, GDCM);
#: on every file below the difference is in fact 0.
#: Everything else decodes exactly: lossless syntaxes, JPEG-LS near-lossless (integer
#: arithmetic fixed by ISO 14495-1) and JPEG 2000 (OpenJPEG on both sides).
DCT_TOLERANCE = 1

#: Test file → the DCMTK decoder to hold it against, besides GDCM's `gdcmconv --raw`.
#: DCMTK 3.6.7 has no JPEG 2000 codec, and it cannot parse SC_rgb_jpeg.dcm, whose
#: data set is implicit VR under an explicit VR syntax.
REFERENCE_FILES = {
    # JPEG Baseline (.50): RGB, YBR_FULL, YBR_FULL_422, no JFIF, Adobe APP14, multi-frame
    "SC_rgb_jpeg.dcm": None,
    "SC_rgb_jpeg_dcmtk.dcm": "dcmdjpeg",
    "SC_rgb_dcmtk_+eb+cr.dcm": "dcmdjpeg",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": "dcmdjpeg",
    "SC_rgb_dcmtk_+eb+cy+np.dcm": "dcmdjpeg",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": "dcmdjpeg",
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": "dcmdjpeg",
    "SC_jpeg_no_color_transform.dcm": "dcmdjpeg",
    "SC_jpeg_no_color_transform_2.dcm": "dcmdjpeg",
    "SC_rgb_jpeg_app14_dcmd.dcm": "dcmdjpeg",
    "SC_rgb_jpeg_lossy_gdcm.dcm": "dcmdjpeg",
    "SC_rgb_small_odd_jpeg.dcm": "dcmdjpeg",
    "examples_ybr_color.dcm": "dcmdjpeg",
    # JPEG Extended (.51), 12-bit
    "JPEG-lossy.dcm": "dcmdjpeg",
    "JPGExtended.dcm": "dcmdjpeg",
    # JPEG Lossless SV1 (.70), RGB
    "SC_rgb_jpeg_gdcm.dcm": "dcmdjpeg",
    # JPEG-LS lossless (.80) and near-lossless (.81), line and sample interleaved
    "MR_small_jpeg_ls_lossless.dcm": "dcmdjpls",
    "JPEGLSNearLossless_08.dcm": "dcmdjpls",
    "JPEGLSNearLossless_16.dcm": "dcmdjpls",
    "SC_rgb_jls_lossy_line.dcm": "dcmdjpls",
    "SC_rgb_jls_lossy_sample.dcm": "dcmdjpls",
    # RLE and JPEG 2000 stay with pydicom's own plugins; decompress() must still work
    "MR_small_RLE.dcm": "dcmdrle",
    "rtdose_rle.dcm": "dcmdrle",
    "MR_small_jp2klossless.dcm": None,
    "JPEG2000.dcm": None,
    "examples_jpeg2k.dcm": None,
}
#: pydicom warns, rightly, that this file is implicit VR under an explicit VR syntax.
IMPLICIT_IN_EXPLICIT = pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")


def _testfile(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))  # type: ignore[arg-type]


def _run(*args: str | Path) -> None:
    """Run a DICOM tool, skipping the test when it is not installed."""
    if shutil.which(str(args[0])) is None:
        pytest.skip(f"{args[0]} is not installed")
    subprocess.run([str(a) for a in args], check=True, capture_output=True)


def _decompressed(path: Path) -> Dataset:
    ds = pydicom.dcmread(path)
    pixels.decompress(ds)
    return ds


def _params() -> list[object]:
    out: list[object] = []
    for name, dcmtk in REFERENCE_FILES.items():
        marks = [IMPLICIT_IN_EXPLICIT] if name == "SC_rgb_jpeg.dcm" else []
        for tool in ("gdcmconv", dcmtk):
            if tool:
                out.append(pytest.param(name, tool, marks=marks, id=f"{name}-{tool}"))
    return out


@pytest.mark.parametrize(("name", "tool"), _params())
def test_matches_reference_decoder(name: str, tool: str, tmp_path: Path) -> None:
    src, ref_path = _testfile(name), tmp_path / "ref.dcm"
    _run(tool, *(["--raw"] if tool == "gdcmconv" else []), src, ref_path)
    ours = _decompressed(src)
    ref = pydicom.dcmread(ref_path)

    # GDCM leaves YBR_FULL as it is and pixel_array turns it into RGB; DCMTK converts.
    assert ours.PhotometricInterpretation == "RGB" or ours.SamplesPerPixel == 1
    a, b = ours.pixel_array.astype(np.int64), ref.pixel_array.astype(np.int64)
    assert a.shape == b.shape
    ts = pydicom.dcmread(src, stop_before_pixels=True).file_meta.TransferSyntaxUID
    tolerance = DCT_TOLERANCE if ts in (uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit) else 0
    assert np.abs(a - b).max() <= tolerance


@pytest.mark.parametrize(
    "name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"]
)
def test_lossless_test_file_equals_its_original(name: str) -> None:
    original = pydicom.dcmread(_testfile("MR_small.dcm")).pixel_array
    assert np.array_equal(_decompressed(_testfile(name)).pixel_array, original)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uncompressed sources: signed 16-bit CT spanning the whole range, signed
    12-bit CT, MR_small and an 8-bit RGB image."""
    folder = tmp_path_factory.mktemp("originals")
    ct = pydicom.dcmread(_testfile("CT_small.dcm"))
    ct16 = ct.pixel_array.astype(np.int32) - 1024  # CT_small itself is never negative
    ct16[0, :4] = [-32768, 32767, -1, 0]
    ct.PixelData = ct16.astype("<i2").tobytes()
    ct.save_as(folder / "ct16.dcm")
    ct12 = np.clip(ct16, -2048, 2047)
    ct12[0, :4] = [-2048, 2047, -1, 0]
    ct.BitsStored, ct.HighBit = 12, 11
    ct.PixelData = ct12.astype("<i2").tobytes()
    ct.save_as(folder / "ct12.dcm")
    return {
        "ct16": folder / "ct16.dcm",
        "ct12": folder / "ct12.dcm",
        "mr": _testfile("MR_small.dcm"),
        "rgb": _testfile("examples_rgb_color.dcm"),
    }


@pytest.mark.parametrize("source", ["ct16", "ct12", "mr", "rgb"])
@pytest.mark.parametrize(
    ("encoder", "syntax"),
    [
        (("dcmcjpeg", "+e1"), uid.JPEGLosslessSV1),
        (("dcmcjpeg", "+el", "+sv", "6"), uid.JPEGLossless),
        (("dcmcjpeg", "+el", "+sv", "7"), uid.JPEGLossless),
        (("dcmcjpls",), uid.JPEGLSLossless),
    ],
    ids=["jpeg-sv1", "jpeg-p14-sv6", "jpeg-p14-sv7", "jpeg-ls"],
)
def test_dcmtk_lossless_round_trip_is_bit_exact(
    originals: dict[str, Path], source: str, encoder: tuple[str, ...], syntax: str, tmp_path: Path
) -> None:
    compressed = tmp_path / "c.dcm"
    _run(*encoder, originals[source], compressed)
    ds = pydicom.dcmread(compressed)
    assert ds.file_meta.TransferSyntaxUID == syntax
    pixels.decompress(ds)
    original = pydicom.dcmread(originals[source]).pixel_array
    assert ds.pixel_array.dtype == original.dtype
    assert np.array_equal(ds.pixel_array, original)
    assert "LossyImageCompression" not in ds


@pytest.mark.parametrize(
    ("syntax", "encode"),
    [
        (uid.JPEGLosslessSV1, lambda a: imagecodecs.jpeg8_encode(a, lossless=True, predictor=1)),
        (uid.JPEGLSLossless, lambda a: imagecodecs.jpegls_encode(a)),
    ],
    ids=["jpeg-sv1", "jpeg-ls"],
)
def test_8_bit_codestream_in_16_bit_container(syntax: str, encode: Callable[..., bytes]) -> None:
    """Bits Allocated 16, Bits Stored 8 and an 8-bit codestream, as some devices write."""
    ds = pydicom.dcmread(_testfile("MR_small.dcm"))
    original = (ds.pixel_array.astype(np.int64) * 255 // ds.pixel_array.max()).astype(np.uint16)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 7, 0
    ds.PixelData = encapsulate([bytes(encode(original.astype(np.uint8)))])
    ds.file_meta.TransferSyntaxUID = uid.UID(syntax)
    pixels.decompress(ds)
    assert ds.BitsAllocated == 16
    assert np.array_equal(ds.pixel_array, original)


def test_codestream_wider_than_bits_allocated_is_refused() -> None:
    ds = pydicom.dcmread(_testfile("JPEG-lossy.dcm"))  # a 12-bit codestream
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    with pytest.raises(ValueError, match="16-bit samples do not fit .* Bits Allocated 8"):
        pixels.decompress(ds)


def test_planar_configuration_1_on_jpeg_is_ignored() -> None:
    """PS3.5 8.2.1 wants 0; a data set that says 1 still has colour-by-pixel JPEG."""
    expected = _decompressed(_testfile("SC_rgb_jpeg_dcmtk.dcm")).pixel_array
    ds = pydicom.dcmread(_testfile("SC_rgb_jpeg_dcmtk.dcm"))
    ds.PlanarConfiguration = 1
    pixels.decompress(ds)
    assert ds.PlanarConfiguration == 0
    assert np.array_equal(ds.pixel_array, expected)


def test_decompress_ybr_full_422_jpeg_and_write(tmp_path: Path) -> None:
    ds = pydicom.dcmread(_testfile("SC_rgb_dcmtk_+eb+cy+np.dcm"))
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    sop_instance = ds.SOPInstanceUID
    pixels.decompress(ds)
    assert ds.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.PlanarConfiguration == 0
    assert ds.LossyImageCompression == "01"
    assert ds.SOPInstanceUID == sop_instance

    out = tmp_path / "out.dcm"
    ds.save_as(out)
    again = pydicom.dcmread(out)
    assert again.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
    assert np.array_equal(again.pixel_array, ds.pixel_array)
    if shutil.which("dcmdump") is None:
        pytest.skip("dcmdump is not installed")
    dump = subprocess.run(["dcmdump", out], capture_output=True, text=True, check=True)
    assert "LittleEndianExplicit" in dump.stdout
    assert "(7fe0,0010) OB" in dump.stdout
    assert dump.stderr == ""


@pytest.mark.parametrize(
    ("name", "stated", "expected"),
    [
        ("SC_rgb_dcmtk_+eb+cy+np.dcm", None, "01"),  # DCT is lossy even if unsaid
        ("JPEGLSNearLossless_16.dcm", None, "01"),
        ("JPEG2000.dcm", None, "01"),  # may be lossy, nothing says otherwise
        ("examples_jpeg2k.dcm", "00", "00"),  # reversible; relabelled .91 below
        ("MR_small_jpeg_ls_lossless.dcm", None, None),
    ],
)
def test_lossy_image_compression(name: str, stated: str | None, expected: str | None) -> None:
    ds = pydicom.dcmread(_testfile(name))
    if ds.file_meta.TransferSyntaxUID == uid.JPEG2000Lossless:
        ds.file_meta.TransferSyntaxUID = uid.JPEG2000  # .91 may be reversible too
    if stated is None:
        ds.pop("LossyImageCompression", None)
    else:
        ds.LossyImageCompression = stated
    pixels.decompress(ds)
    assert ds.get("LossyImageCompression") == expected


@pytest.mark.parametrize(
    ("syntax", "reason"),
    [
        (uid.MPEG2MPML, "cannot decode MPEG2 Main Profile / Main Level: no decoder exists"),
        ("1.2.826.0.1.3680043.2.1143.99", "cannot decode 1.2.826.0.1.3680043.2.1143.99: "),
        (uid.ExplicitVRBigEndian, "cannot decode Explicit VR Big Endian: byte-swapping"),
    ],
)
def test_undecodable_syntax_is_refused(syntax: str, reason: str) -> None:
    ds = pydicom.dcmread(_testfile("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = uid.UID(syntax)
    assert not pixels.can_decode(syntax)
    with pytest.raises(ValueError, match=f"^{reason}") as err:
        pixels.decompress(ds)
    assert "\n" not in str(err.value)
    assert ds.file_meta.TransferSyntaxUID == syntax


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_truncated_codestream_is_refused(name: str) -> None:
    """libjpeg only warns and fills with grey; dcmdjpeg refuses, and so do we."""
    ds = pydicom.dcmread(_testfile(name))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 2]])
    with pytest.raises(ValueError, match="^cannot decode .*truncated") as err:
        pixels.decompress(ds)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "syntax",
    [uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian, uid.ExplicitVRLittleEndian,
     *pixels.DECODER_DEPENDENCIES, uid.RLELossless, uid.JPEG2000Lossless, uid.JPEG2000],
)
def test_can_decode(syntax: str) -> None:
    assert pixels.can_decode(syntax)


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "image_dfl.dcm"])
def test_native_syntaxes_become_explicit_vr_le(name: str, tmp_path: Path) -> None:
    ds = _decompressed(_testfile(name))
    ds.save_as(tmp_path / "out.dcm")
    again = pydicom.dcmread(tmp_path / "out.dcm")
    assert again.file_meta.TransferSyntaxUID == uid.ExplicitVRLittleEndian
    assert np.array_equal(again.pixel_array, pydicom.dcmread(_testfile(name)).pixel_array)


def test_register_is_idempotent() -> None:
    pixels.register()
    pixels.register()
    for syntax in pixels.DECODER_DEPENDENCIES:
        assert get_decoder(syntax).available_plugins.count(pixels.PLUGIN) == 1


def test_register_while_imagecodecs_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    decoder = get_decoder(uid.JPEGBaseline8Bit)
    pixels.register()
    decoder.remove_plugin(pixels.PLUGIN)
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # import fails
    try:
        pixels.register()
        pixels.register()
        assert decoder.missing_dependencies.count(
            "imagecodecs - requires numpy and imagecodecs>=2024.1.1"
        ) == 1
        assert not pixels.can_decode(uid.JPEGBaseline8Bit)
    finally:
        decoder.remove_plugin(pixels.PLUGIN)
        monkeypatch.undo()
        pixels.register()
    assert pixels.PLUGIN in decoder.available_plugins


def test_imagecodecs_is_imported_lazily() -> None:
    code = "import sys, node.pixels; sys.exit('imagecodecs' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
