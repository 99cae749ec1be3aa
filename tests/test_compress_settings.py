"""``burn --quality / --ratio / --psnr`` and the seed's Appendix B pixel value bounds, end to end: what is
asked is what the medium holds, measured here with pydicom's decoders, and the bounds are the decoded ones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames

from node import dicom, pixels
from tests.conftest import cli, ct_series
from tests.test_burn import dciodvfy_errors

pixels.register()  # pydicom reads JPEG only through our imagecodecs plugin


def smooth_ct(folder: Path, n: int, *, size: int = 128, bits: int = 12, series: tuple[int, int] | None = None
              ) -> list[Path]:
    """``n`` signed CT images of one series with anatomy-like structure (a noise-only image says little about
    quality), values within ``bits`` bits stored, each image's range different; ``series``: Smallest / Largest
    Pixel Value in Series as the source claims them."""
    paths = ct_series(folder, n, size=size)
    y, x = np.mgrid[:size, :size]
    rng = np.random.default_rng(7)
    for i, path in enumerate(paths):
        ds = dcmread(path)
        body = 900 * np.exp(-((x - size / 2) ** 2 + (y - size / 2) ** 2) / (size * size / 6))
        arr = body - 1000 + 150 * np.sin(x / 5 + i) + rng.normal(0, 15, (size, size)) + 100 * i
        ds.PixelData = np.clip(arr, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1).astype("<i2").tobytes()
        ds.BitsStored, ds.HighBit = bits, bits - 1
        if series is not None:
            ds.add_new(0x00280108, "SS", series[0])
            ds.add_new(0x00280109, "SS", series[1])
        ds.save_as(path)
    return paths


def burn_folder(tmp_path: Path, name: str, sources: list[Path], *args: str) -> dict[str, Dataset]:
    """Burn ``sources`` to a folder; the images on it by their Source Image Sequence's original UID."""
    out = tmp_path / name
    result = cli("burn", *map(str, sources), "--out", out, "--format", "folder", *args, "--json")
    assert result.code == 0, result.err + result.out
    written = [dcmread(p) for p in (out / "DICOM").rglob("*") if p.is_file()]
    return {str(ds.SourceImageSequence[-1].ReferencedSOPInstanceUID): ds for ds in written}


def achieved(ds: Dataset) -> float:
    """Uncompressed Pixel Data bytes over the codestreams' bytes, counted here from the file."""
    frames = list(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))
    return ds.Rows * ds.Columns * ds.BitsAllocated // 8 / sum(len(f) for f in frames)


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """Over the original's range of values, as the psnr setting counts it."""
    mse = float(np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2))
    peak = float(original.max()) - float(original.min())
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def test_jpeg_quality_50_and_95_make_different_sizes_and_the_ratio_written_is_the_one_achieved(tmp_path: Path) -> None:
    [src] = smooth_ct(tmp_path / "ct", 1)
    uid = str(dcmread(src).SOPInstanceUID)
    sizes, errors = {}, {}
    for quality in (50, 95):
        [ds] = burn_folder(tmp_path, f"q{quality}", [src], "--profile", "STD-GEN-DVD-JPEG",
                           "--compress", "jpeg-extended", "--quality", str(quality)).values()
        assert ds.file_meta.TransferSyntaxUID == dicom.JPEG_EXTENDED
        assert float(ds.LossyImageCompressionRatio) == pytest.approx(achieved(ds), abs=0.051)  # one decimal
        sizes[quality] = achieved(ds)
        # the offset JPEG values map back through the rescale to the source's Hounsfield units
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        source = dcmread(src)
        errors[quality] = float(np.abs(hu - (source.pixel_array * 1.0 + float(source.RescaleIntercept))).mean())
        assert str(ds.SourceImageSequence[-1].ReferencedSOPInstanceUID) == uid
    assert sizes[50] > 1.5 * sizes[95], sizes  # quality 50 compresses much more ...
    assert errors[50] > errors[95], errors  # ... and loses more


def test_j2k_ratio_15_is_reached_and_written(tmp_path: Path) -> None:
    [src] = smooth_ct(tmp_path / "ct", 1)
    [ds] = burn_folder(tmp_path, "r15", [src], "--profile", "STD-GEN-DVD-J2K", "--compress", "j2k-lossy",
                       "--ratio", "15").values()
    assert ds.file_meta.TransferSyntaxUID == dicom.J2K
    assert 12 <= achieved(ds) <= 18, achieved(ds)
    assert float(ds.LossyImageCompressionRatio) == pytest.approx(achieved(ds), abs=0.051)


def test_j2k_psnr_45_is_met_on_the_decoded_image(tmp_path: Path) -> None:
    """OpenJPEG alone falls short of a low PSNR target: the burn measures and encodes again until it is met."""
    sources = smooth_ct(tmp_path / "ct", 2, bits=16)
    result = cli("burn", *map(str, sources), "--out", tmp_path / "p45", "--format", "folder", "--profile",
                 "STD-GEN-DVD-J2K", "--compress", "j2k-lossy", "--psnr", "45", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    for converted in report["converted"]:
        assert "j2k-lossy" not in converted["conversion"] and "(psnr 45)" in converted["conversion"]
    images = burn_folder(tmp_path, "again", sources, "--profile", "STD-GEN-DVD-J2K", "--compress", "j2k-lossy",
                         "--psnr", "45")
    for src in sources:
        original = dcmread(src)
        ds = images[str(original.SOPInstanceUID)]
        measured = psnr(original.pixel_array, ds.pixel_array)
        assert 45 <= measured < 55, measured  # met, and not by falling back to near-lossless
        assert achieved(ds) > 2
        assert float(ds.LossyImageCompressionRatio) == pytest.approx(achieved(ds), abs=0.051)


def test_smallest_and_largest_image_pixel_value_are_the_decoded_image_s(tmp_path: Path) -> None:
    """Values that were wrong, and values that were absent, become the compressed image's own bounds."""
    wrong, absent = smooth_ct(tmp_path / "ct", 2)
    ds = dcmread(wrong)
    ds.add_new(0x00280106, "SS", -5000)
    ds.add_new(0x00280107, "SS", 9999)
    ds.save_as(wrong)
    for syntax, profile, vr in (("jpeg-extended", "STD-GEN-DVD-JPEG", "US"), ("j2k-lossy", "STD-GEN-DVD-J2K", "SS")):
        images = burn_folder(tmp_path, syntax, [wrong, absent], "--profile", profile, "--compress", syntax)
        for written in images.values():
            decoded = written.pixel_array
            assert (written.SmallestImagePixelValue, written.LargestImagePixelValue) == (decoded.min(), decoded.max())
            # JPEG has made the values unsigned (offset, with the rescale to match); JPEG 2000 keeps them signed
            assert written.PixelRepresentation == (vr == "SS")
            assert written[0x00280106].VR == written[0x00280107].VR == vr


def test_the_series_bounds_are_computed_over_the_whole_series_on_the_medium(tmp_path: Path) -> None:
    sources = smooth_ct(tmp_path / "ct", 3, series=(0, 1))
    for syntax, profile, vr in (("j2k-lossy", "STD-GEN-DVD-J2K", "SS"), ("jpeg-extended", "STD-GEN-DVD-JPEG", "US")):
        images = burn_folder(tmp_path, syntax, sources, "--profile", profile, "--compress", syntax)
        assert len(images) == 3
        low = min(int(ds.pixel_array.min()) for ds in images.values())
        high = max(int(ds.pixel_array.max()) for ds in images.values())
        lows = {int(ds.SmallestImagePixelValue) for ds in images.values()}
        assert len(lows) == 3, "each image has its own bounds"
        for ds in images.values():
            assert (ds.SmallestPixelValueInSeries, ds.LargestPixelValueInSeries) == (low, high)
            assert ds[0x00280108].VR == ds[0x00280109].VR == vr


def test_series_bounds_that_cannot_be_computed_are_dropped(tmp_path: Path) -> None:
    """Bit reduction scales each image by its own step: no common stored scale, so no series bounds (seed B.2)."""
    sources = smooth_ct(tmp_path / "ct", 2, bits=16, series=(-1000, 900))
    images = burn_folder(tmp_path, "reduced", sources, "--profile", "STD-GEN-DVD-JPEG", "--compress", "jpeg-baseline",
                         "--allow-bit-reduction")
    assert len({str(ds.RescaleSlope) + str(ds.RescaleIntercept) for ds in images.values()}) == 2
    for ds in images.values():
        assert "SmallestPixelValueInSeries" not in ds and "LargestPixelValueInSeries" not in ds
        assert (ds.SmallestImagePixelValue, ds.LargestImagePixelValue) == (ds.pixel_array.min(), ds.pixel_array.max())


def test_dciodvfy_finds_no_error_the_source_did_not_have_in_a_lossy_series(tmp_path: Path) -> None:
    """The Appendix B items with their context attributes, and the bounds as US or SS, as a validator reads them."""
    sources = smooth_ct(tmp_path / "ct", 2)
    for syntax, profile in (("j2k-lossy", "STD-GEN-DVD-J2K"), ("jpeg-extended", "STD-GEN-DVD-JPEG")):
        out = tmp_path / syntax
        result = cli("burn", *map(str, sources), "--out", out, "--format", "folder", "--profile", profile,
                     "--compress", syntax)
        assert result.code == 0, result.err
        written = [p for p in (out / "DICOM").rglob("*") if p.is_file()]
        assert len(written) == 2
        for path in written:
            ds = dcmread(path)
            item = ds.SourceImageSequence[-1].PurposeOfReferenceCodeSequence[0]
            assert (item.ContextIdentifier, item.MappingResource, item.ContextGroupVersion,
                    item.ContextGroupExtensionFlag) == ("7202", "DCMR", "20020904", "N")
            derivation = ds.DerivationCodeSequence[-1]
            assert (derivation.ContextIdentifier, derivation.MappingResource, derivation.ContextGroupVersion,
                    derivation.ContextGroupExtensionFlag) == ("7203", "DCMR", "20020904", "N")
            assert dciodvfy_errors(path) - dciodvfy_errors(sources[0]) == set(), path


@pytest.mark.parametrize(("args", "message"), [
    (("--compress", "jpeg-extended", "--quality", "0"), "--quality with --compress jpeg-extended: 0 is not within 1 to 100"),
    (("--compress", "jpeg-baseline", "--quality", "101"), "--quality with --compress jpeg-baseline: 101 is not within 1 to 100"),
    (("--compress", "j2k-lossy", "--quality", "80"), "--quality with --compress j2k-lossy: applies to jpeg-baseline, "
                                                     "jpeg-extended only"),
    (("--compress", "j2k-lossy", "--ratio", "1.5"), "--ratio with --compress j2k-lossy: 1.5 is not within 2 to 200"),
    (("--compress", "j2k-lossy", "--psnr", "120"), "--psnr with --compress j2k-lossy: 120 is not within 30 to 100"),
    (("--compress", "j2k-lossy", "--ratio", "10", "--psnr", "45"), "--psnr with --compress j2k-lossy: give ratio or "
                                                                   "psnr, not both"),
    (("--ratio", "10",), "--ratio with --compress none: applies to j2k-lossy only"),
    (("--compress", "j2k-lossy", "--ratio", "nan"), "--ratio with --compress j2k-lossy: nan is not within 2 to 200"),
])
def test_a_setting_out_of_range_or_of_another_syntax_is_a_usage_error_and_writes_nothing(
        tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    [src] = ct_series(tmp_path / "ct", 1)
    result = cli("burn", src, "--out", tmp_path / "x.iso", "--profile", "AUG-GEN-DVD", *args)
    assert result.code == 2, result
    assert message in result.err and "Traceback" not in result.err
    assert not (tmp_path / "x.iso").exists() and src.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["ct"]  # no staging folder left either


def test_a_quality_that_is_not_a_number_is_a_usage_error(tmp_path: Path) -> None:
    [src] = ct_series(tmp_path / "ct", 1)
    result = cli("burn", src, "--out", tmp_path / "x.iso", "--compress", "jpeg-baseline", "--quality", "high")
    assert result.code == 2 and "--quality" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "x.iso").exists()


def test_a_psnr_that_cannot_be_met_refuses_the_image_with_the_reason_and_writes_nothing(tmp_path: Path) -> None:
    """Irreversible JPEG 2000 cannot keep 100 dB: the image is refused (never written below the PSNR asked)."""
    sources = smooth_ct(tmp_path / "ct", 1, bits=16)
    before = sources[0].read_bytes()
    result = cli("burn", *map(str, sources), "--out", tmp_path / "out", "--format", "folder", "--profile",
                 "STD-GEN-DVD-J2K", "--compress", "j2k-lossy", "--psnr", "100")
    assert result.code == 1, result
    assert "PSNR 100 dB not reached (" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "out").exists() and sources[0].read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ct"]
