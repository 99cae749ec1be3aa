"""Compress the pixels of one image for a medium, with the seed's Appendix B coercion.

Two steps, so that the caller can plan before it encodes:

- :func:`choose_syntax` decides, from header values alone (:class:`ImageInfo`), the syntax
  an image is really written in: the one asked, or a lossless one of the profile
  when the asked one cannot carry the image (the seed's Table 6 syntaxes, PS3.5
  8.2), or Explicit VR Little Endian when no codec of the profile can. It is pure,
  so the burn's parent process can give each lossy image its new SOP Instance UID
  before any worker starts.
- :func:`compress` encodes a decoded data set exactly as chosen and coerces its
  attributes: lossless output changes only Planar Configuration and the Photometric
  Interpretation the syntax needs (seed B.1); lossy output gets all of seed B.2
  (PS3.3 C.7.6.1.1.5, C.7.6.3.1.2, C.11.1).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node import dicom, syntaxes
from node.errors import NodeError, one_line
from node.syntaxes import Compression, by_uid

if TYPE_CHECKING:
    import numpy as np
    from pydicom import Dataset

#: Codec family (:attr:`node.syntaxes.TransferSyntax.family`) -> where a syntax of it that cannot
#: carry an image falls back to, in order of preference: the family's lossless syntax first, then the
#: other lossless ones.
FALLBACK = {
    "jpeg": (dicom.JPEG_LOSSLESS_SV1, dicom.JPEG_LOSSLESS_P14, dicom.J2K_LOSSLESS, dicom.RLE_LOSSLESS),
    "j2k": (dicom.J2K_LOSSLESS, dicom.JPEG_LOSSLESS_SV1, dicom.JPEG_LOSSLESS_P14, dicom.RLE_LOSSLESS),
    "rle": (dicom.RLE_LOSSLESS, dicom.JPEG_LOSSLESS_SV1, dicom.JPEG_LOSSLESS_P14, dicom.J2K_LOSSLESS),
}
#: Mammography SOP classes (PS3.4 B.5): Digital Mammography X-Ray For Presentation and
#: For Processing, Breast Tomosynthesis, Breast Projection X-Ray For Presentation and
#: For Processing. Lossy compression of them needs the route's explicit consent.
MAMMOGRAPHY = frozenset({
    "1.2.840.10008.5.1.4.1.1.1.2",
    "1.2.840.10008.5.1.4.1.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.13.1.3",
    "1.2.840.10008.5.1.4.1.1.13.1.4",
    "1.2.840.10008.5.1.4.1.1.13.1.5",
})
#: Photometric Interpretations the encoders take (PS3.5 Tables 8.2.1-1 to 8.2.4-1).
_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL"})
_PALETTE = ("RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
            "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
            "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
            "SegmentedRedPaletteColorLookupTableData", "SegmentedGreenPaletteColorLookupTableData",
            "SegmentedBluePaletteColorLookupTableData", "PaletteColorLookupTableUID")
#: Dropped from lossy output (seed B.2): the padding no longer marks the new values. Smallest / Largest
#: Image Pixel Value are recomputed from the decoded image (:func:`compress`), the Series ones from the
#: whole series on the medium (:mod:`node.media.series`).
STALE = ("PixelPaddingValue", "PixelPaddingRangeLimit", "SmallestImagePixelValue", "LargestImagePixelValue",
          "SmallestPixelValueInSeries", "LargestPixelValueInSeries")
#: Smallest / Largest Image Pixel Value (PS3.3 C.7.6.3): US or SS as Pixel Representation says.
IMAGE_RANGE = (0x00280106, 0x00280107)
#: OpenJPEG's PSNR target is one layer's, which it can miss (by 7 dB on CT, and a range of targets may give
#: the same stream): each frame is decoded and measured, and encoded again with the target raised by the
#: shortfall plus a margin that doubles each time (0.5, 1, 2 ... dB), this many times at most.
PSNR_TRIES = 6
#: The first line of Derivation Description (0008,2111) says who compressed it (seed B.2).
DERIVATION_PREFIX = "medianode:"


class CompressError(NodeError):
    """The image cannot be compressed as chosen; ``str()`` is the one-line reason."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`choose_syntax` needs to know of an image: plain header values (PS3.3 C.7.6.3)."""

    sop_class_uid: str
    modality: str
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    #: As the decoded data set has it: see :func:`decoded_photometric`.
    photometric: str
    frames: int = 1
    #: Bits per entry (8 or 16, the third LUT Descriptor value) of the palette (PALETTE
    #: COLOR) or of the Modality LUT Sequence's first item, the values lossy compression
    #: encodes once it has applied the table (seed B.1, B.2); 0 when there is no such table.
    lut_bits: int = 0

    @classmethod
    def from_dataset(cls, ds: Dataset) -> ImageInfo:
        """The values of ``ds``'s Image Pixel module (absent ones as their PS3.3 defaults)."""
        lut_bits = 0
        if ds.get("PhotometricInterpretation") == "PALETTE COLOR" and "RedPaletteColorLookupTableDescriptor" in ds:
            lut_bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        elif ds.get("ModalityLUTSequence"):
            lut_bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return cls(
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            modality=str(ds.get("Modality", "")),
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
            bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.get("BitsStored", ds.BitsAllocated)),
            pixel_representation=int(ds.get("PixelRepresentation", 0)),
            photometric=str(ds.get("PhotometricInterpretation", "")),
            frames=int(ds.get("NumberOfFrames") or 1),
            lut_bits=lut_bits,
        )

    @property
    def colour(self) -> bool:
        """Colour once lossy compression has expanded a palette (seed B.1)."""
        return self.samples_per_pixel == 3 or self.photometric == "PALETTE COLOR"


def decoded_photometric(photometric: str, transfer_syntax: str) -> str:
    """The Photometric Interpretation an image has once :func:`node.pixels.decompress` has decoded it.

    pydicom turns compressed YBR_FULL, YBR_FULL_422, YBR_ICT and YBR_RCT data into RGB;
    native data keeps its value. For an :class:`ImageInfo` built from a file's header.

    >>> decoded_photometric("YBR_FULL_422", dicom.JPEG_BASELINE), decoded_photometric("YBR_FULL", dicom.EXPLICIT_VR_LE)
    ('RGB', 'YBR_FULL')
    """
    native = transfer_syntax in syntaxes.NATIVE
    return "RGB" if photometric.startswith("YBR") and not native else photometric


#: OpenJPEG's (and pylibjpeg-openjpeg's) 6 DWT resolution levels need 2**5 samples in both
#: directions (ISO 15444-1 B.5): a smaller image cannot be written as JPEG 2000. Here, not in
#: node.pixels, so that planning a burn does not load pydicom and the codecs.
J2K_MIN_SIZE = 32


@dataclass(frozen=True)
class Policy:
    """What a route consents to beyond the defaults."""

    #: Lossy compression of mammography (refused by default: lossless instead).
    lossy_mammography: bool = False
    #: Squeeze more bits than the process takes (>8 into JPEG baseline, >12 into JPEG
    #: extended) by scaling the values, with Rescale Slope / Intercept to match.
    bit_reduction: bool = False


@dataclass(frozen=True)
class Choice:
    """The syntax an image will really be written in (see :func:`choose_syntax`)."""

    transfer_syntax: str
    lossy: bool
    #: One line, when this differs from what was asked; "" otherwise.
    reason: str = ""
    #: The values are scaled into fewer bits than Bits Stored (``Policy.bit_reduction``).
    reduce_bits: bool = False
    #: The quality, ratio or PSNR asked, when the lossy syntax asked is the one chosen.
    setting: Compression = Compression()


def choose_syntax(syntax: str, image: ImageInfo, allowed: frozenset[str], policy: Policy,
                  setting: Compression = Compression()) -> Choice:
    """Return the syntax ``image`` is written in when ``syntax`` is asked on a profile allowing ``allowed``.

    Deterministic on its arguments. An image the asked syntax cannot carry falls back
    to the first lossless syntax of :data:`FALLBACK` that ``allowed`` holds and that
    can, else to Explicit VR Little Endian; the reason says why. A lossy choice carries
    ``setting`` (its quality, ratio or PSNR).

    >>> ct = ImageInfo("1.2.840.10008.5.1.4.1.1.2", "CT", 512, 512, 1, 16, 16, 1, "MONOCHROME2")
    >>> jpeg = frozenset({dicom.JPEG_BASELINE, dicom.JPEG_EXTENDED, dicom.JPEG_LOSSLESS_SV1})
    >>> choose_syntax(dicom.JPEG_EXTENDED, ct, jpeg, Policy()).reason
    '16 bits stored exceed the 12 of JPEG extended (bit reduction not enabled): written as JPEG lossless SV1'
    """
    if syntax == dicom.EXPLICIT_VR_LE:
        return Choice(syntax, lossy=False)
    if syntax not in allowed:
        raise CompressError(f"{dicom.syntax_name(syntax)} is not allowed by the profile")
    why, reduce = _cannot_carry(syntax, image, policy)
    row = by_uid(syntax)
    if not why:
        return Choice(syntax, lossy=row.writes_lossy, reduce_bits=reduce,
                      setting=setting if row.writes_lossy else Compression())
    for ts in FALLBACK[row.family]:
        if ts in allowed and not _cannot_carry(ts, image, policy)[0]:
            return Choice(ts, lossy=False, reason=f"{why}: written as {by_uid(ts).label}")
    return Choice(dicom.EXPLICIT_VR_LE, lossy=False, reason=f"{why}: written uncompressed")


def _cannot_carry(ts: str, image: ImageInfo, policy: Policy) -> tuple[str, bool]:
    """Why ``ts`` cannot carry ``image`` ("" if it can), and whether it needs bit reduction."""
    row = by_uid(ts)
    name = row.label
    if image.samples_per_pixel not in (1, 3) or image.photometric not in _PHOTOMETRIC:
        what = image.photometric or "no Photometric Interpretation"
        return f"{image.samples_per_pixel} samples of {what} are not encoded by {name}", False
    if image.bits_allocated not in (8, 16):
        return f"{image.bits_allocated} bits allocated do not fit {name}", False
    if row.family == "j2k" and min(image.rows, image.columns) < J2K_MIN_SIZE:
        return (f"{image.columns}x{image.rows} is smaller than the {J2K_MIN_SIZE}x{J2K_MIN_SIZE} "
                f"that {name}'s resolution levels need"), False
    if not row.writes_lossy:
        if ts in (dicom.JPEG_LOSSLESS_SV1, dicom.JPEG_LOSSLESS_P14) and image.bits_stored < 2:
            return f"{image.bits_stored} bit stored is below {name}'s precision of 2", False
        if image.samples_per_pixel == 3 and image.pixel_representation:
            return f"signed colour is not encoded by {name}", False
        return "", False
    if not policy.lossy_mammography and (image.modality == "MG" or image.sop_class_uid in MAMMOGRAPHY):
        return "lossy compression of mammography is not enabled for this route", False
    bits = image.lut_bits or image.bits_stored
    if ts == dicom.J2K:
        return "", False
    if image.colour:
        if ts == dicom.JPEG_EXTENDED:
            return "colour is not allowed in JPEG extended (seed Appendix B: only baseline)", False
        # A palette's 16-bit entries are display values: their high byte is the 8-bit colour.
        if image.samples_per_pixel == 3 and image.bits_stored > 8:
            return f"{image.bits_stored}-bit colour exceeds the 8 bits of {name}", False
        return "", False
    limit = 8 if ts == dicom.JPEG_BASELINE else 12
    if bits <= limit:
        return "", False
    if policy.bit_reduction:
        return "", True
    return f"{bits} bits stored exceed the {limit} of {name} (bit reduction not enabled)", False


def compress(ds: Dataset, choice: Choice, *, new_sop_uid: str | None) -> list[str]:
    """Encode ``ds``'s Pixel Data in place as ``choice`` says; return what was done, for the report
    (why the choice differs from what was asked is :attr:`Choice.reason`, reported by the caller).

    ``ds`` is decoded (native Pixel Data, Explicit VR Little Endian, ``file_meta``
    present). Lossy output becomes a new instance with ``new_sop_uid`` (required then;
    the caller assigns it so that references on the medium can be rewritten). ``ds`` is
    changed only once every frame is encoded: on :class:`CompressError` it is as it was.
    """
    from pydicom.uid import UID

    from node import pixels

    ts = choice.transfer_syntax
    if ts == dicom.EXPLICIT_VR_LE:
        ds.file_meta.TransferSyntaxUID = UID(ts)
        return []
    if choice.lossy and not new_sop_uid:
        raise CompressError("lossy compression needs a new SOP Instance UID from the caller")
    try:
        raw = pixels.native_frames(ds)
        before = raw.nbytes
        arr, pixel_module, rescale = _lossy_pixels(ds, raw, choice) if choice.lossy else (raw, _lossless(ds, ts), None)
        bits = int(str(pixel_module.get("BitsStored", ds.BitsStored)))
        photometric = str(pixel_module.get("PhotometricInterpretation", ds.PhotometricInterpretation))
        if choice.lossy:
            frames, kept = _encode_lossy(arr, ts, bits=bits, photometric=photometric, setting=choice.setting)
        else:
            frames = [pixels.encode_frame(frame, ts, bits_stored=bits, photometric=photometric) for frame in arr]
    except CompressError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy, pydicom and the codecs raise many kinds; each refuses the image
        raise CompressError(f"cannot encode as {by_uid(ts).label}: {one_line(exc)}") from None
    for keyword, value in pixel_module.items():
        if value is None:
            ds.pop(keyword, None)
        else:
            setattr(ds, keyword, value)
    pixels.encapsulate(ds, frames, ts)
    if not choice.lossy:
        return [by_uid(ts).label]
    ratio = before / sum(len(f) + len(f) % 2 for f in frames)  # the bytes stored: each fragment of even length
    _coerce_lossy(ds, ts, ratio=ratio, new_sop_uid=str(new_sop_uid), rescale=rescale)
    if kept.low is not None and kept.high is not None and int(ds.get("SamplesPerPixel", 1)) == 1:
        vr = "SS" if ds.PixelRepresentation == 1 else "US"
        for tag, value in zip(IMAGE_RANGE, (kept.low, kept.high)):
            ds.add_new(tag, vr, value)
    given = ", ".join(f"{k} {v:g}" for k, v in choice.setting.settings().items())
    return [f"lossy {by_uid(ts).label}{f' ({given})' if given else ''}, ratio {_ratio(ratio)}:1, "
            f"PSNR {kept.psnr:.1f} dB, new SOP Instance UID"]


@dataclass(frozen=True)
class Kept:
    """What lossy encoding kept, measured on the decoded frames: their PSNR (PS3.3 has no attribute
    for it; the burn report gives it) over the image's range of values, and their smallest and largest values."""

    psnr: float
    low: int | None
    high: int | None


def _encode_lossy(arr: np.ndarray, ts: str, *, bits: int, photometric: str, setting: Compression
                  ) -> tuple[list[bytes], Kept]:
    """Encode each frame of ``arr`` lossily with ``setting``, decode it again, and measure it.

    With a PSNR asked, a frame that misses it is encoded again with a higher target
    (:data:`PSNR_TRIES` times at most); it never goes onto the medium below it. The PSNR's peak
    is the image's own range of values, not Bits Stored's: CT holds 12 bits of values in 16,
    and a peak of 65535 would flatter it by 24 dB (OpenJPEG's own target uses that peak).
    """
    import numpy as np

    from node import pixels

    peak = max(1, int(arr.max()) - int(arr.min()))
    frames: list[bytes] = []
    squared, count, low, high = 0.0, 0, None, None
    for frame in arr:
        target = setting
        for attempt in range(PSNR_TRIES):
            encoded = pixels.encode_frame(frame, ts, bits_stored=bits, photometric=photometric, setting=target)
            decoded = pixels.decode_frame(encoded, ts)
            error = float(np.sum((frame.astype(np.float64) - decoded.reshape(frame.shape)) ** 2))
            got = psnr(error / frame.size, peak)
            if setting.psnr is None or got >= setting.psnr:
                break
            target = dataclasses.replace(target, psnr=float(target.psnr or 0) + setting.psnr - got + 0.5 * 2**attempt)
        else:
            raise CompressError(f"PSNR {setting.psnr:g} dB not reached ({got:.1f} dB after {PSNR_TRIES} tries)")
        frames.append(encoded)
        squared, count = squared + error, count + frame.size
        low = int(decoded.min()) if low is None else min(low, int(decoded.min()))
        high = int(decoded.max()) if high is None else max(high, int(decoded.max()))
    return frames, Kept(psnr(squared / count, peak), low, high)


def psnr(mse: float, peak: float) -> float:
    """Peak signal-to-noise ratio in dB of a mean squared error; inf when exact.

    >>> round(psnr(1.0, 255), 2)
    48.13
    """
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


def _lossless(ds: Dataset, ts: str) -> dict[str, object]:
    """Seed B.1 for lossless output: colour-by-pixel, and YBR_RCT for JPEG 2000's reversible transform."""
    if int(ds.get("SamplesPerPixel", 1)) != 3:
        return {}
    photometric = "YBR_RCT" if ts == dicom.J2K_LOSSLESS and ds.PhotometricInterpretation == "RGB" else None
    return {"PlanarConfiguration": 0, **({"PhotometricInterpretation": photometric} if photometric else {})}


def _lossy_pixels(ds: Dataset, arr: np.ndarray, choice: Choice) -> tuple[np.ndarray, dict[str, object], tuple[float, float] | None]:
    """The values lossy ``choice.transfer_syntax`` encodes, the Image Pixel attributes that go with
    them (None: remove), and the new Rescale Slope and Intercept if they change (seed B.1, B.2).

    A palette is expanded to RGB, a Modality LUT Sequence applied; JPEG takes unsigned
    values of 8 or 12 bits, so signed values are offset by 2**(bits-1) and, with bit
    reduction, scaled by an integer step; Rescale Slope / Intercept then map the new
    values to the same Modality LUT output (PS3.3 C.11.1.1.2).
    """
    import numpy as np
    from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, convert_color_space

    ts = choice.transfer_syntax
    module: dict[str, object] = {}
    photometric = str(ds.PhotometricInterpretation)
    bits, signed = int(ds.BitsStored), ds.get("PixelRepresentation", 0) == 1
    if photometric == "PALETTE COLOR":
        arr, bits = apply_color_lut(arr, ds), int(ds.RedPaletteColorLookupTableDescriptor[2])
        module.update(dict.fromkeys(_PALETTE), SamplesPerPixel=3, PhotometricInterpretation="RGB")
        photometric = "RGB"
    elif photometric == "YBR_FULL":
        arr, photometric = convert_color_space(arr, "YBR_FULL", "RGB"), "RGB"
    elif ds.get("ModalityLUTSequence"):
        arr, bits, signed = apply_modality_lut(arr, ds), int(ds.ModalityLUTSequence[0].LUTDescriptor[2]), False
        module["ModalityLUTSequence"] = None
    colour = photometric == "RGB"
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    rescale = None
    if ts == dicom.J2K:
        module["PhotometricInterpretation"] = "YBR_ICT" if colour else photometric
    elif colour:
        if bits > 8:  # 16-bit palette entries: their high byte is the 8-bit colour
            arr, bits = arr >> (bits - 8), 8
        module["PhotometricInterpretation"] = "YBR_FULL_422"
    else:
        limit = 8 if ts == dicom.JPEG_BASELINE or bits <= 8 else 12
        if bits > limit:
            if not choice.reduce_bits:
                raise CompressError(f"{bits} bits do not fit {by_uid(ts).label} and the choice did not reduce them")
            low, high = int(arr.min()), int(arr.max())
            step = max(1, math.ceil((high - low + 1) / 2**limit))
            arr = np.minimum(np.rint((arr - low) / step), 2**limit - 1)
            rescale = (slope * step, intercept + slope * low)
        elif signed:
            arr = arr.astype(np.int32) + 2 ** (bits - 1)
            rescale = (slope, intercept - slope * 2 ** (bits - 1))
        bits, signed = limit, False
    container = 8 if bits <= 8 else 16
    arr = arr.astype(f"{'i' if signed else 'u'}{container // 8}", copy=False)
    module.update(BitsAllocated=container, BitsStored=bits, HighBit=bits - 1, PixelRepresentation=int(signed))
    if colour:
        module["PlanarConfiguration"] = 0
    return arr, module, rescale


def _coerce_lossy(ds: Dataset, ts: str, *, ratio: float, new_sop_uid: str, rescale: tuple[float, float] | None) -> None:
    """Seed Appendix B.2 on an image just compressed lossily (PS3.3 C.7.6.1.1.5, C.7.6.1.1.3)."""
    from pydicom import Dataset as Item
    from pydicom.uid import UID
    from pydicom.valuerep import format_number_as_ds

    old_class, old_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    image_type = list(ds.get("ImageType") or ["DERIVED", "PRIMARY"])
    ds.ImageType = ["DERIVED", *image_type[1:]]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(new_sop_uid)
    row = by_uid(ts)
    what = f"{DERIVATION_PREFIX} lossy {row.label} compression, ratio {_ratio(ratio)}:1"
    old = str(ds.get("DerivationDescription") or "")
    ds.DerivationDescription = (f"{what}\n{old}" if old else what)[:1024]  # ST, at most 1024 characters
    source = Item()
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = old_class, old_uid
    source.PurposeOfReferenceCodeSequence = [_code("121320", "Uncompressed predecessor")]
    ds.SourceImageSequence = [*ds.get("SourceImageSequence", []), source]
    ds.DerivationCodeSequence = [*ds.get("DerivationCodeSequence", []), _code("113040", "Lossy Compression")]
    ds.LossyImageCompression = "01"
    # Ratio and Method are parallel lists (C.7.6.1.1.5.1): one value each, always as a pair.
    ds.LossyImageCompressionRatio = [*_values(ds, "LossyImageCompressionRatio"), _ratio(ratio)]
    ds.LossyImageCompressionMethod = [*_values(ds, "LossyImageCompressionMethod"), row.method]
    for keyword in STALE:
        ds.pop(keyword, None)
    if rescale is not None:
        if "RescaleIntercept" not in ds and ds.get("Modality") != "CT":
            ds.RescaleType = "US"  # C.11.1: required with Rescale Intercept; "US" is unspecified
        slope, intercept = rescale
        ds.RescaleSlope = str(int(slope)) if slope.is_integer() else format_number_as_ds(slope)
        ds.RescaleIntercept = str(int(intercept)) if intercept.is_integer() else format_number_as_ds(intercept)


def _ratio(ratio: float) -> str:
    """A compression ratio as a short DS: "9.3", or "0.41" when the codestream outgrew a tiny image."""
    return f"{ratio:.1f}" if ratio >= 1 else f"{ratio:.2g}"


#: The context group of each code (seed Appendix B.2): Purpose of Reference (CID 7202) and
#: Derivation (CID 7203) in the DICOM Content Mapping Resource, version 20020904, not extended.
CONTEXT = {"121320": "7202", "113040": "7203"}


def _code(value: str, meaning: str) -> Dataset:
    """A DCM code sequence item with the context attributes the seed lists (PS3.3 8.6, Table 8.8-1)."""
    from pydicom import Dataset as Item

    item = Item()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    item.ContextIdentifier, item.MappingResource = CONTEXT[value], "DCMR"
    item.ContextGroupVersion, item.ContextGroupExtensionFlag = "20020904", "N"
    return item


def _values(ds: Dataset, keyword: str) -> list[str]:
    """A possibly multi-valued attribute as a list of strings (none if absent)."""
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return [str(v) for v in value] if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__") else [str(value)]
