"""Decode compressed *Pixel Data* to Explicit VR Little Endian for media.

pydicom 3 decodes JPEG (PS3.5 A.4.1) and JPEG-LS (PS3.5 A.4.3) only through
pylibjpeg-libjpeg (GPL-3.0), GDCM or Pillow. :func:`register` adds an
``"imagecodecs"`` plugin (libjpeg-turbo 3 and CharLS, both BSD) the way pydicom
registers its own: ``Decoder.add_plugin`` with a lazy import path, plus this
module's ``DECODER_DEPENDENCIES`` and ``is_available``. ``Dataset.decompress()``
and ``Dataset.pixel_array`` then keep pydicom's own handling of colour space,
planar configuration and sign. RLE and JPEG 2000 stay with pydicom's plugins.

imagecodecs is imported inside the functions, so that the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom import uid

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pydicom.pixels.decoders.base import DecodeRunner

#: The plugin's label in pydicom's decoder registry.
PLUGIN = "imagecodecs"

#: What the plugin needs, per transfer syntax (pydicom's plugin contract).
DECODER_DEPENDENCIES = {
    ts: ("numpy", "imagecodecs>=2024.1.1")
    for ts in (*uid.JPEGTransferSyntaxes, *uid.JPEGLSTransferSyntaxes)
}

#: Lossy by definition: the DCT processes 1, 2 and 4 (PS3.5 A.4.1) and JPEG-LS
#: near-lossless (PS3.5 A.4.3).
LOSSY = frozenset({uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLSNearLossless})
#: Lossy or reversible (PS3.5 A.4.4, A.4.6): taken as lossy unless the dataset
#: itself says (0028,2110) "00".
MAYBE_LOSSY = frozenset({uid.JPEG2000, uid.HTJ2K})


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

    lossy = ts in LOSSY or (ts in MAYBE_LOSSY and ds.get("LossyImageCompression") != "00")
    # Our plugin even if Pillow or GDCM is installed: the same bytes on every node.
    plugin = PLUGIN if ts in DECODER_DEPENDENCIES else ""
    try:
        ds.decompress(decoding_plugin=plugin, generate_instance_uid=False)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"cannot decode {ts.name}: {' '.join(str(exc).split())}") from exc
    if lossy:
        ds.LossyImageCompression = "01"
