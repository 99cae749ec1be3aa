"""Every transfer syntax medianode knows, one row each (PS3.5 Section 10 and Annex A).

A row says all the code needs to know of a syntax: its ``--compress`` name, how the burn
report names it, whether its Pixel Data is encapsulated and lossy, the Lossy Image
Compression Method it records, its codec family, which of :mod:`node.pixels`' encoders
writes it and which decoder reads it, and whether the seed's Table 6 lists it. Profiles
(:mod:`node.profiles`), compression (:mod:`node.media.compress`), the codecs
(:mod:`node.pixels`) and the conformance statement all read these rows, so adding a codec
is one row here plus one encoder function there.

The order of :data:`SYNTAXES` is the order of the ``--compress`` values in help, errors
and the conformance statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from node import dicom

#: Who encodes a syntax (:mod:`node.pixels`): libjpeg-turbo through imagecodecs, OpenJPEG
#: through pydicom's pylibjpeg plugin, or imagecodecs' PackBits.
Encoder = Literal["libjpeg-turbo", "openjpeg", "packbits"]
#: Who decodes a syntax's Pixel Data: our imagecodecs plugin to pydicom, or pydicom's own plugins.
Decoder = Literal["imagecodecs", "pydicom"]


@dataclass(frozen=True)
class TransferSyntax:
    """What medianode knows of one transfer syntax."""

    uid: str
    #: How the burn report and the conformance statement name it ("JPEG lossless SV1").
    label: str
    #: The ``--compress`` / ``routes[].compress`` value that writes it (None: no such value).
    compress: str | None = None
    #: Pixel Data in fragments (PS3.5 A.4), else native.
    encapsulated: bool = False
    #: True for the lossy processes (JPEG 1, 2 and 4, PS3.5 A.4.1; JPEG-LS near-lossless, A.4.3),
    #: None when a codestream may be either (JPEG 2000 and HTJ2K, A.4.4, A.4.6): Lossy Image
    #: Compression (0028,2110) then tells, and what medianode writes in it is irreversible.
    lossy: bool | None = False
    #: Lossy Image Compression Method (0028,2114) for what is written lossily in it (PS3.3 C.7.6.1.1.5.1).
    method: str | None = None
    #: The codec family: an image one syntax of a family cannot carry falls back to the family's
    #: lossless syntax first (:data:`node.media.compress.FALLBACK`).
    family: str = "native"
    encoder: Encoder | None = None
    #: None for native Pixel Data, which needs no decoder.
    decoder: Decoder | None = None
    #: Listed in the seed's Table 6 (what the augmented profiles keep for images).
    seed_table_6: bool = False

    @property
    def writes_lossy(self) -> bool:
        """Whether what medianode encodes in this syntax loses information."""
        return self.lossy is not False


#: Every syntax known; the ``--compress`` values follow the order of their rows.
SYNTAXES: tuple[TransferSyntax, ...] = (
    TransferSyntax(dicom.EXPLICIT_VR_LE, "uncompressed", seed_table_6=True),
    TransferSyntax(dicom.IMPLICIT_VR_LE, "Implicit VR Little Endian", seed_table_6=True),
    TransferSyntax(dicom.EXPLICIT_VR_BE, "Explicit VR Big Endian"),
    TransferSyntax(dicom.DEFLATED_LE, "Deflated Explicit VR Little Endian"),
    TransferSyntax(dicom.JPEG_LOSSLESS_SV1, "JPEG lossless SV1", "jpeg-lossless", encapsulated=True, family="jpeg",
                   encoder="libjpeg-turbo", decoder="imagecodecs", seed_table_6=True),
    TransferSyntax(dicom.JPEG_LOSSLESS_P14, "JPEG lossless process 14", "jpeg-lossless-p14", encapsulated=True,
                   family="jpeg", encoder="libjpeg-turbo", decoder="imagecodecs", seed_table_6=True),
    TransferSyntax(dicom.JPEG_BASELINE, "JPEG baseline", "jpeg-baseline", encapsulated=True, lossy=True,
                   method="ISO_10918_1", family="jpeg", encoder="libjpeg-turbo", decoder="imagecodecs",
                   seed_table_6=True),
    TransferSyntax(dicom.JPEG_EXTENDED, "JPEG extended", "jpeg-extended", encapsulated=True, lossy=True,
                   method="ISO_10918_1", family="jpeg", encoder="libjpeg-turbo", decoder="imagecodecs",
                   seed_table_6=True),
    TransferSyntax(dicom.J2K_LOSSLESS, "JPEG 2000 lossless", "j2k-lossless", encapsulated=True, family="j2k",
                   encoder="openjpeg", decoder="pydicom", seed_table_6=True),
    TransferSyntax(dicom.J2K, "JPEG 2000", "j2k-lossy", encapsulated=True, lossy=None, method="ISO_15444_1",
                   family="j2k", encoder="openjpeg", decoder="pydicom", seed_table_6=True),
    TransferSyntax(dicom.RLE_LOSSLESS, "RLE lossless", "rle", encapsulated=True, family="rle", encoder="packbits",
                   decoder="pydicom", seed_table_6=True),
    TransferSyntax(dicom.JPEG_LS_LOSSLESS, "JPEG-LS lossless", encapsulated=True, family="jpeg-ls",
                   decoder="imagecodecs"),
    TransferSyntax(dicom.JPEG_LS_NEAR_LOSSLESS, "JPEG-LS near-lossless", encapsulated=True, lossy=True,
                   method="ISO_14495_1", family="jpeg-ls", decoder="imagecodecs"),
    TransferSyntax(dicom.HTJ2K, "High-Throughput JPEG 2000", encapsulated=True, lossy=None, method="ISO_15444_15",
                   family="htj2k", decoder="pydicom"),
)

_BY_UID = {s.uid: s for s in SYNTAXES}
_BY_NAME = {s.compress: s for s in SYNTAXES if s.compress}

#: The ``--compress`` value that keeps what the profile allows and converts the rest to Explicit VR LE.
NO_COMPRESSION = "none"
#: Every ``--compress`` / ``routes[].compress`` value, in the order help and errors list them.
COMPRESS: tuple[str, ...] = (NO_COMPRESSION, *_BY_NAME)
#: Syntaxes whose Pixel Data is native (not encapsulated).
NATIVE = frozenset(s.uid for s in SYNTAXES if not s.encapsulated)
#: Table 6 of the seed: every syntax the augmented profiles allow for image SOP classes.
SEED_TABLE_6 = frozenset(s.uid for s in SYNTAXES if s.seed_table_6)


def get(uid: str) -> TransferSyntax | None:
    """The row of ``uid``, or None for a syntax medianode does not know."""
    return _BY_UID.get(uid)


def by_uid(uid: str) -> TransferSyntax:
    """The row of ``uid``; KeyError for a syntax medianode does not know.

    >>> by_uid("1.2.840.10008.1.2.4.70").label
    'JPEG lossless SV1'
    """
    return _BY_UID[uid]


def by_name(name: str) -> TransferSyntax:
    """The row ``--compress name`` writes; KeyError for :data:`NO_COMPRESSION` and unknown names.

    >>> by_name("j2k-lossy").uid
    '1.2.840.10008.1.2.4.91'
    """
    return _BY_NAME[name]


#: libjpeg quality (1-100) of JPEG processes 1 and 4 when a route gives none, on the IJG scale: 90
#: gave 60 dB PSNR at 4.3:1 on a 12-bit CR phantom. The IHE PDI renditions (:mod:`node.media.pdi`) use it too.
JPEG_QUALITY = 90
#: Compression ratio asked of OpenJPEG for irreversible JPEG 2000 (one quality layer) when a route
#: gives none: 55 dB PSNR on the same phantom.
J2K_RATIO = 10.0
#: The range of each lossy setting (inclusive): ``quality`` on libjpeg's IJG scale; ``ratio`` of the
#: uncompressed to the compressed size; ``psnr`` in dB over the image's range of values (``10 log10((max - min)**2 / MSE)``).
SETTINGS: dict[str, tuple[float, float]] = {"quality": (1, 100), "ratio": (2, 200), "psnr": (30, 100)}
#: The ``--compress`` values each setting applies to (the lossy JPEG processes; irreversible JPEG 2000).
SETTING_OF: dict[str, tuple[str, ...]] = {"quality": ("jpeg-baseline", "jpeg-extended"),
                                          "ratio": ("j2k-lossy",), "psnr": ("j2k-lossy",)}


@dataclass(frozen=True)
class Compression:
    """A ``--compress`` value with the lossy setting given with it (None: the encoder's default).

    >>> str(Compression("j2k-lossy", ratio=15.0)), str(Compression("jpeg-baseline", quality=85))
    ('j2k-lossy (ratio 15)', 'jpeg-baseline (quality 85)')
    >>> Compression("jpeg-lossless", quality=80).problem()
    ('quality', 'applies to jpeg-baseline, jpeg-extended only')
    """

    #: The syntax by its ``--compress`` name (``syntax:`` in YAML).
    name: str = NO_COMPRESSION
    #: JPEG quality, 1-100 (jpeg-baseline, jpeg-extended); none: 90.
    quality: int | None = None
    #: JPEG 2000 compression ratio asked, 2-200 (j2k-lossy); none: 10.
    ratio: float | None = None
    #: JPEG 2000 quality as a PSNR in dB over the image's range of values, 30-100 (j2k-lossy), instead of ratio.
    psnr: float | None = None

    def __str__(self) -> str:
        given = ", ".join(f"{k} {v:g}" for k, v in self.settings().items())
        return f"{self.name} ({given})" if given else self.name

    def settings(self) -> dict[str, float]:
        """The settings given, by name."""
        return {k: v for k, v in (("quality", self.quality), ("ratio", self.ratio), ("psnr", self.psnr))
                if v is not None}

    def problem(self) -> tuple[str, str]:
        """The setting that does not fit the value and why (another syntax's, out of range, ratio with
        psnr), or ``("", "")``."""
        given = self.settings()
        for key, value in given.items():
            if self.name not in SETTING_OF[key]:
                return key, f"applies to {', '.join(SETTING_OF[key])} only"
            low, high = SETTINGS[key]
            if not low <= value <= high:
                return key, f"{value:g} is not within {low:g} to {high:g}"
        if "ratio" in given and "psnr" in given:
            return "psnr", "give ratio or psnr, not both"
        return "", ""

    def as_json(self) -> str | dict[str, object]:
        """The name alone, or ``{"syntax": name, setting: value}`` (:meth:`from_json` reads both)."""
        return {"syntax": self.name, **self.settings()} if self.settings() else self.name

    @classmethod
    def from_json(cls, value: object) -> Compression:
        """Read :meth:`as_json` back; a bare name is what jobs recorded before settings existed.

        >>> c = Compression("j2k-lossy", psnr=45.0)
        >>> Compression.from_json(c.as_json()) == c, Compression.from_json("rle")
        (True, Compression(name='rle', quality=None, ratio=None, psnr=None))
        """
        if not isinstance(value, dict):
            return cls(str(value or NO_COMPRESSION))
        quality, ratio, psnr = value.get("quality"), value.get("ratio"), value.get("psnr")
        return cls(str(value.get("syntax") or NO_COMPRESSION), quality=None if quality is None else int(quality),
                   ratio=None if ratio is None else float(ratio), psnr=None if psnr is None else float(psnr))
