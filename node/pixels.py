"""Decode compressed *Pixel Data* to Explicit VR Little Endian, and encode it again.

pydicom 3 decodes JPEG (PS3.5 A.4.1) and JPEG-LS (PS3.5 A.4.3) only through
pylibjpeg-libjpeg (GPL-3.0), GDCM or Pillow. :func:`register` adds an
``"imagecodecs"`` plugin (libjpeg-turbo 3 and CharLS, both BSD) the way pydicom
registers its own: ``Decoder.add_plugin`` with a lazy import path, plus this
module's ``DECODER_DEPENDENCIES`` and ``is_available``. ``Dataset.decompress()``
and ``Dataset.pixel_array`` then keep pydicom's own handling of colour space,
planar configuration and sign. RLE and JPEG 2000 stay with pydicom's plugins.

The encoders (:func:`encode_frame`, :func:`encapsulate`) work on one native frame
as a numpy array: JPEG processes 1, 4 and 14 through imagecodecs' libjpeg-turbo 3,
which pydicom 3.0 cannot encode; RLE with imagecodecs' PackBits; JPEG 2000 through
pydicom's own encoder and its pylibjpeg-openjpeg plugin. Which syntax an
image gets, and the attributes that go with it, is :mod:`node.media.compress`'s job.

imagecodecs is imported inside the functions, so that the CLI starts fast.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Protocol

from pydicom import uid

from node import syntaxes

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset
    from pydicom.pixels.decoders.base import DecodeRunner

#: The plugin's label in pydicom's decoder registry.
PLUGIN = "imagecodecs"

#: What the plugin needs, per transfer syntax whose row names it the decoder (pydicom's plugin contract).
DECODER_DEPENDENCIES = {
    s.uid: ("numpy", "imagecodecs>=2024.1.1") for s in syntaxes.SYNTAXES if s.decoder == PLUGIN
}


def is_available(transfer_syntax_uid: str) -> bool:
    """Return whether imagecodecs can decode the syntax here (pydicom's plugin contract)."""
    try:
        import imagecodecs
    except ImportError:
        return False
    if transfer_syntax_uid in uid.JPEGLSTransferSyntaxes:
        return bool(imagecodecs.JPEGLS.available)
    # 12-bit (process 4) and 2- to 16-bit lossless (process 14) need libjpeg-turbo 3
    # built with all precisions; imagecodecs itself probes it this way.
    jpeg8 = imagecodecs.JPEG8
    return bool(jpeg8.available and getattr(jpeg8, "all_precisions", False))


def _decode_frame(src: bytes, runner: DecodeRunner) -> bytes:
    """Return one decoded frame the way pydicom expects it from a plugin.

    That is: the samples as encoded, with no colour transform (pydicom itself turns
    YBR_FULL and YBR_FULL_422 into RGB when ``as_rgb``, the default), colour-by-pixel
    (PS3.5 8.2.1 and 8.2.3: Planar Configuration 0, whatever the data set says),
    little endian, in the dataset's *Bits Allocated* container: ``Dataset.decompress``
    reads every frame with that item size, so an 8-bit codestream in a 16-bit
    container is widened here.
    """
    import imagecodecs

    # libjpeg only warns about a truncated stream, and imagecodecs drops the warning:
    # it would return grey where the data ends. DCMTK's dcmdjpeg refuses such a stream.
    if not src.rstrip(b"\x00\xff").endswith(b"\xff\xd9"):  # padding, then EOI
        raise ValueError("the codestream is truncated (no EOI marker)")
    if runner.transfer_syntax in uid.JPEGLSTransferSyntaxes:
        arr = imagecodecs.jpegls_decode(src)
    else:
        # The same colour space in and out: libjpeg copies the components as stored.
        space = "YCbCr" if runner.samples_per_pixel == 3 else None
        arr = imagecodecs.jpeg8_decode(src, colorspace=space, outcolorspace=space)

    if arr.itemsize * 8 > runner.bits_allocated:
        raise ValueError(
            f"{arr.itemsize * 8}-bit samples do not fit (0028,0100) Bits Allocated "
            f"{runner.bits_allocated}"
        )
    # Both codecs return colour-by-pixel, whatever the codestream's interleave.
    runner.set_option("planar_configuration", 0)
    return arr.astype(f"<u{runner.bits_allocated // 8}", copy=False).tobytes()


def register() -> None:
    """Add the ``"imagecodecs"`` plugin to pydicom's JPEG and JPEG-LS decoders, once."""
    from pydicom.pixels.decoders.base import get_decoder

    for ts in DECODER_DEPENDENCIES:
        decoder = get_decoder(ts)
        known = PLUGIN in decoder.available_plugins or any(
            s.startswith(f"{PLUGIN} - ") for s in decoder.missing_dependencies
        )
        if not known:
            decoder.add_plugin(PLUGIN, (__name__, "_decode_frame"))


def _why_not(ts: uid.UID) -> str:
    """Return why :func:`decompress` cannot handle `ts`, or "" if it can."""
    from pydicom.pixels.decoders.base import get_decoder

    if ts == uid.ExplicitVRBigEndian:
        return "byte-swapping the retired big endian syntax (PS3.5 A.3) is not supported"
    register()
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return "no decoder exists for this transfer syntax"
    if not decoder.is_available:
        return "; ".join(decoder.missing_dependencies)
    return ""


def can_decode(transfer_syntax_uid: str) -> bool:
    """Return whether :func:`decompress` can turn this syntax into Explicit VR LE."""
    return not _why_not(uid.UID(transfer_syntax_uid))


def decompress(ds: Dataset) -> None:
    """Rewrite `ds` in place as Explicit VR Little Endian, decoding its *Pixel Data*.

    ``Dataset.decompress`` sets the Transfer Syntax, Photometric Interpretation
    (YBR_FULL_422 and YBR_FULL become RGB) and Planar Configuration 0. The SOP
    Instance UID is kept: an image decompressed for transfer stays the same
    instance, and one that went through lossy compression keeps or gains Lossy
    Image Compression "01", which is never reset (PS3.3 C.7.6.1.1.5 and its Note).

    Raises
    ------
    ValueError
        With a one-line message, if the syntax or the data cannot be decoded.
    """
    ts = uid.UID(ds.file_meta.TransferSyntaxUID)
    if why := _why_not(ts):
        raise ValueError(f"cannot decode {ts.name}: {why}")
    if not ts.is_compressed or "PixelData" not in ds:
        # pydicom re-encodes the data set on writing; native pixels need no work.
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
        return

    # A syntax that may be either (JPEG 2000, HTJ2K) is taken as lossy unless the data set says "00".
    row = syntaxes.get(ts)
    lossy = row is not None and (row.lossy or (row.lossy is None and ds.get("LossyImageCompression") != "00"))
    # Our plugin even if Pillow or GDCM is installed: the same bytes on every node.
    plugin = PLUGIN if ts in DECODER_DEPENDENCIES else ""
    try:
        ds.decompress(decoding_plugin=plugin, generate_instance_uid=False)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"cannot decode {ts.name}: {' '.join(str(exc).split())}") from exc
    if lossy:
        ds.LossyImageCompression = "01"


# -- Encoding ----------------------------------------------------------------------

#: Process 14 (.57) predictor. Selection value 1 has its own syntax (.70), so .57 should
#: earn its place with a 2-D predictor: 5 (Ra + (Rb - Rc) / 2, ISO 10918-1 Table H.1) gave
#: the smallest codestreams on pydicom's real CT_small and MR_small (6 % and 3.5 % below
#: SV1; 7 wins only on our noise-dominated phantoms), and DCMTK and libjpeg-turbo decode it.
P14_PREDICTOR = 5
#: No setting given: the defaults of :mod:`node.syntaxes`.
_DEFAULT = syntaxes.Compression()


def encode_frame(frame: np.ndarray, transfer_syntax: str, *, bits_stored: int, photometric: str,
                 setting: syntaxes.Compression = _DEFAULT) -> bytes:
    """Return one codestream of ``frame`` in ``transfer_syntax``, by the encoder its row names
    (:attr:`node.syntaxes.TransferSyntax.encoder`), lossy ones with ``setting``'s quality, ratio or
    PSNR (else :data:`node.syntaxes.JPEG_QUALITY`, :data:`node.syntaxes.J2K_RATIO`).

    ``frame`` is one native frame as ``Dataset.pixel_array`` gives it: (rows, columns)
    or (rows, columns, 3) colour-by-pixel, signed dtype for Pixel Representation 1,
    values within ``bits_stored``. ``photometric`` is the Photometric Interpretation
    the *encoded* data will have (PS3.5 8.2), which decides the colour transform:

    - ``YBR_FULL_422`` (JPEG baseline, RGB in): YCbCr with 4:2:2 chroma subsampling,
      said explicitly because libjpeg's default is 4:2:0, which PS3.3 C.7.6.3.1.2 has
      no Photometric Interpretation for.
    - ``YBR_RCT`` / ``YBR_ICT`` (JPEG 2000, RGB in): the reversible / irreversible
      multi-component transform (PS3.5 A.4.4).
    - anything else: the samples as they are (JPEG lossless RGB keeps RGB).

    JPEG carries no sign: signed samples go in as their two's complement in
    ``bits_stored`` bits (libjpeg-turbo takes the unsigned view; decoders sign-extend
    by Pixel Representation). OpenJPEG and RLE take signed data as it is.
    """
    ts = uid.UID(transfer_syntax)
    row = syntaxes.get(ts)
    if row is None or row.encoder is None:
        raise ValueError(f"no encoder for {ts.name}")
    return _ENCODERS[row.encoder](frame, ts, bits_stored=bits_stored, photometric=photometric, setting=setting)


def decode_frame(codestream: bytes, transfer_syntax: str) -> np.ndarray:
    """One codestream of :func:`encode_frame`'s decoded again, by the decoders the node reads with
    (libjpeg-turbo; OpenJPEG), so that lossy output is measured on what a reader will see. Colour
    JPEG comes back as RGB, the other samples as encoded.
    """
    if syntaxes.by_uid(transfer_syntax).family == "j2k":
        from openjpeg.utils import decode

        return decode(codestream)
    import imagecodecs

    return imagecodecs.jpeg8_decode(codestream)


def _encode_jpeg(frame: np.ndarray, ts: uid.UID, *, bits_stored: int, photometric: str,
                 setting: syntaxes.Compression) -> bytes:
    """JPEG processes 1, 4 and 14 through imagecodecs' libjpeg-turbo 3 (pydicom 3.0 has no JPEG encoder)."""
    import imagecodecs
    import numpy as np

    container = np.uint8 if bits_stored <= 8 else np.uint16
    if frame.dtype.kind == "i":
        frame = frame.view(frame.dtype.str.replace("i", "u"))
        if bits_stored < frame.dtype.itemsize * 8:
            frame = frame & ((1 << bits_stored) - 1)
    if frame.dtype != container:
        frame = frame.astype(container)
    colour = frame.ndim == 3
    if ts in (uid.JPEGLosslessSV1, uid.JPEGLossless):
        space = ("RGB" if photometric == "RGB" else "YCbCr") if colour else None
        predictor = 1 if ts == uid.JPEGLosslessSV1 else P14_PREDICTOR
        return bytes(imagecodecs.jpeg8_encode(frame, lossless=True, predictor=predictor, bitspersample=bits_stored,
                                              colorspace=space, outcolorspace=space))
    quality = setting.quality or syntaxes.JPEG_QUALITY
    if colour:  # only baseline takes colour (seed Appendix B); RGB in, YCbCr 4:2:2 out
        return bytes(imagecodecs.jpeg8_encode(frame, level=quality, colorspace="RGB", outcolorspace="YCbCr",
                                              subsampling="422"))
    precision = 8 if bits_stored <= 8 else 12
    return bytes(imagecodecs.jpeg8_encode(frame, level=quality, bitspersample=precision))


def _encode_rle(frame: np.ndarray, ts: uid.UID, *, bits_stored: int, photometric: str,
                setting: syntaxes.Compression) -> bytes:
    """DICOM RLE (PS3.5 Annex G): one segment per byte of each sample, most significant first
    (G.2), each a PackBits run of its byte plane, row by row (G.3.1), padded to even length (G.5),
    after the 64-byte header of segment offsets (G.4).

    imagecodecs' PackBits (the TIFF scheme, the same byte code as G.3.1) encodes each row of a 2-D
    array on its own, 4.5 times as fast on a 2500 x 2048 CR as pylibjpeg-rle, which pydicom uses.
    Signed samples go in as their two's complement bytes, as DCMTK and pydicom write them.
    The other arguments, the encoders' common signature, make no difference to RLE.
    """
    import imagecodecs
    import numpy as np

    rows, columns = frame.shape[:2]
    width = frame.dtype.itemsize
    little = frame.astype(frame.dtype.newbyteorder("<"), copy=False)
    planes = np.ascontiguousarray(little).view(np.uint8).reshape(rows, columns, -1, width)
    segments = []
    for sample in range(planes.shape[2]):
        for byte in reversed(range(width)):
            segment = imagecodecs.packbits_encode(np.ascontiguousarray(planes[:, :, sample, byte]))
            segments.append(segment + b"\0" * (len(segment) % 2))
    offsets, at = [], 64
    for segment in segments:
        offsets.append(at)
        at += len(segment)
    header = struct.pack("<16L", len(segments), *offsets, *[0] * (15 - len(segments)))
    return header + b"".join(segments)


def _encode_pydicom(frame: np.ndarray, ts: uid.UID, *, bits_stored: int, photometric: str,
                    setting: syntaxes.Compression) -> bytes:
    """JPEG 2000 through pydicom's encoder with the pylibjpeg plugin.

    pydicom picks no colour transform itself: its plugin turns MCT off for RGB and
    OpenJPEG turns it on only for YBR_RCT / YBR_ICT, so ``photometric`` decides.
    OpenJPEG's rate counts ``bits_stored`` bits a sample; the ratio asked counts the
    container's (Bits Allocated), as Lossy Image Compression Ratio does, so it is scaled.
    A PSNR is OpenJPEG's target for the layer, which it may miss: the caller measures it.
    """
    from pydicom.pixels.encoders.base import get_encoder

    options: dict[str, Any] = {}
    if ts == uid.JPEG2000 and setting.psnr is not None:
        options["j2k_psnr"] = [setting.psnr]
    elif ts == uid.JPEG2000:
        ratio = setting.ratio or syntaxes.J2K_RATIO
        options["j2k_cr"] = [ratio * bits_stored / (frame.dtype.itemsize * 8)]
    return get_encoder(ts).encode(
        frame,
        encoding_plugin="pylibjpeg",
        validate=False,  # the caller checked the image; the checks cost a pass over the data
        rows=frame.shape[0],
        columns=frame.shape[1],
        samples_per_pixel=frame.shape[2] if frame.ndim == 3 else 1,
        number_of_frames=1,
        bits_allocated=frame.dtype.itemsize * 8,
        bits_stored=bits_stored,
        pixel_representation=int(frame.dtype.kind == "i"),
        photometric_interpretation=photometric,
        planar_configuration=0,
        **options,
    )


class _Encoder(Protocol):
    def __call__(self, frame: np.ndarray, ts: uid.UID, *, bits_stored: int, photometric: str,
                 setting: syntaxes.Compression) -> bytes: ...


#: :attr:`node.syntaxes.TransferSyntax.encoder` -> the function that writes one frame.
_ENCODERS: dict[syntaxes.Encoder, _Encoder] = {
    "libjpeg-turbo": _encode_jpeg,
    "openjpeg": _encode_pydicom,
    "packbits": _encode_rle,
}


def encapsulate(ds: Dataset, frames: list[bytes], transfer_syntax: str) -> None:
    """Put encoded ``frames`` into ``ds`` as encapsulated Pixel Data (PS3.5 A.4).

    OB of undefined length with a Basic Offset Table; the Extended Offset Table
    (PS3.3 C.7.6.3.1.8) when the offsets would not fit 32 bits. Sets the Transfer
    Syntax UID of ``ds.file_meta``.
    """
    from pydicom.encaps import encapsulate as items
    from pydicom.encaps import encapsulate_extended

    for stale in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        ds.pop(stale, None)
    if sum(len(f) + 8 for f in frames[:-1]) > 2**32 - 1:
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        ds.PixelData = items(frames, has_bot=True)
    elem = ds["PixelData"]
    elem.VR, elem.is_undefined_length = "OB", True
    ds.file_meta.TransferSyntaxUID = uid.UID(transfer_syntax)


def native_frames(ds: Dataset) -> np.ndarray:
    """Native Pixel Data as (frames, rows, columns[, samples]), colour-by-pixel.

    The values ``pixel_array`` gives (unused high bits masked, signed data sign-extended
    from Bits Stored), but without its colour conversion, so lossless encoding keeps
    YBR_FULL samples as they are; a view of the bytes when nothing needs changing.
    """
    return native_array(ds.PixelData, rows=int(ds.Rows), columns=int(ds.Columns),
                        samples=int(ds.get("SamplesPerPixel", 1)), frames=int(ds.get("NumberOfFrames") or 1),
                        allocated=int(ds.BitsAllocated), stored=int(ds.BitsStored),
                        signed=ds.get("PixelRepresentation", 0) == 1, planar=ds.get("PlanarConfiguration", 0) == 1)


def native_array(data: bytes | memoryview, *, rows: int, columns: int, samples: int, frames: int, allocated: int, stored: int,
                 signed: bool, planar: bool) -> np.ndarray:
    """:func:`native_frames` of Pixel Data bytes described by the Image Pixel module's values."""
    import numpy as np

    if allocated not in (8, 16, 32):
        raise ValueError(f"Bits Allocated {allocated} is not supported for compression")
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    count = frames * rows * columns * samples
    if len(data) < count * dtype.itemsize:
        raise ValueError(f"Pixel Data holds {len(data)} bytes, {count * dtype.itemsize} expected")
    arr = np.frombuffer(data, dtype, count=count)
    if samples == 1:
        arr = arr.reshape(frames, rows, columns)
    elif planar:
        arr = np.ascontiguousarray(arr.reshape(frames, samples, rows, columns).transpose(0, 2, 3, 1))
    else:
        arr = arr.reshape(frames, rows, columns, samples)
    if stored < allocated:
        unused = allocated - stored
        arr = (arr << unused) >> unused if signed else arr & ((1 << stored) - 1)
    return arr
