"""Application profiles (PS3.11): what a medium may hold and how much.

A profile decides, per instance, which transfer syntaxes may stay as they are
(everything else is converted to Explicit VR Little Endian), which file system
the medium carries (PS3.12) and its capacity in 2048-byte sectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from node import dicom, syntaxes
from node.errors import UsageError
from node.syntaxes import COMPRESS, NO_COMPRESSION

#: What a medium carries (PS3.12): an ISO 9660 image, a UDF image of that revision, or a folder tree.
FileSystem = Literal["iso9660", "udf-1.50", "udf-2.60", "folder"]

#: Bytes in a logical sector (and block) of every medium: ISO 9660 (ECMA-119 6.1.2) and UDF (2.2.4.2).
SECTOR = 2048
#: The files an IHE PDI medium's root may hold besides folders (IHE RAD TF-3 4.47: the DICOMDIR,
#: README.TXT, and INDEX.HTM with the Web Content Option), and the web content's folder.
PDI_ROOT_FILES = frozenset({"DICOMDIR", "README.TXT", "INDEX.HTM"})
PDI_WEB_FOLDER = "IHE_PDI"
#: Capacities in 2048-byte sectors (PS3.12 Annexes: 80 min CD-R, DVD±R SL, one side of a 4.7 GB DVD-RAM
#: (ECMA-330), BD-R SL).
CD_R_SECTORS = 360_000
DVD_R_SECTORS = 2_295_104
DVD_RAM_SECTORS = 2_236_704
BD_R_SECTORS = 12_219_392


def _rows(*uids: str) -> frozenset[str]:
    """The syntaxes a profile allows, each a row of :data:`node.syntaxes.SYNTAXES` (KeyError otherwise)."""
    return frozenset(syntaxes.by_uid(uid).uid for uid in uids)


#: The compressed profiles (PS3.11 Annexes R, V and X): JPEG processes 1, 2 & 4 and 14 SV1, or JPEG 2000.
_JPEG = _rows(dicom.JPEG_BASELINE, dicom.JPEG_EXTENDED, dicom.JPEG_LOSSLESS_SV1)
_J2K = _rows(dicom.J2K_LOSSLESS, dicom.J2K)


@dataclass(frozen=True)
class Profile:
    """One PS3.11 application profile (or one of our augmented ones)."""

    name: str
    #: Syntaxes allowed for IMAGE records, besides Explicit VR Little Endian.
    image_syntaxes: frozenset[str]
    file_system: FileSystem
    #: Capacity in 2048-byte sectors; None means the free space of the target (USB).
    capacity_sectors: int | None
    #: Augmented profiles take private SOP classes as PRIVATE records.
    augmented: bool = False
    #: IHE PDI media may be made on it (IHE RAD TF-1 15: CD, and the DVD and USB options with the
    #: PS3.11 compressed profiles); never on an augmented, DVD-RAM or BD profile.
    pdi: bool = False

    def allows(self, transfer_syntax: str, *, record_type: str) -> bool:
        """True when an instance may go onto the medium in ``transfer_syntax`` unchanged."""
        if transfer_syntax == dicom.EXPLICIT_VR_LE:
            return True
        return record_type == "IMAGE" and transfer_syntax in self.image_syntaxes


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        # PS3.11 Annex D: General Purpose CD-R Interchange.
        Profile("STD-GEN-CD", frozenset(), "iso9660", CD_R_SECTORS, pdi=True),
        # PS3.11 Annex R: General Purpose DVD with compression (JPEG / JPEG 2000).
        Profile("STD-GEN-DVD-JPEG", _JPEG, "iso9660", DVD_R_SECTORS, pdi=True),
        Profile("STD-GEN-DVD-J2K", _J2K, "iso9660", DVD_R_SECTORS, pdi=True),
        # PS3.11 Annex V: General Purpose USB and Flash Memory with compression.
        Profile("STD-GEN-USB-JPEG", _JPEG, "folder", None, pdi=True),
        Profile("STD-GEN-USB-J2K", _J2K, "folder", None, pdi=True),
        # PS3.11 Annex D: General Purpose DVD-RAM Interchange, Explicit VR Little Endian only
        # (UDF 1.50, PS3.12 Annex J).
        Profile("STD-GEN-DVD-RAM", frozenset(), "udf-1.50", DVD_RAM_SECTORS),
        # PS3.11 Annex X: General Purpose BD Interchange (UDF 2.60, PS3.12 Annex Y).
        Profile("STD-GEN-BD", frozenset(), "udf-2.60", BD_R_SECTORS),
        Profile("STD-GEN-BD-JPEG", _JPEG, "udf-2.60", BD_R_SECTORS),
        Profile("STD-GEN-BD-J2K", _J2K, "udf-2.60", BD_R_SECTORS),
        # Ours, after the seed's AUG-GEN-DRS-CD / -DVD-RAM: image classes in any
        # syntax of the seed's Table 6, other classes Explicit VR Little Endian.
        Profile("AUG-GEN-CD", syntaxes.SEED_TABLE_6, "iso9660", CD_R_SECTORS, augmented=True),
        Profile("AUG-GEN-DVD", syntaxes.SEED_TABLE_6, "iso9660", DVD_R_SECTORS, augmented=True),
        Profile("AUG-GEN-DVD-RAM", syntaxes.SEED_TABLE_6, "udf-1.50", DVD_RAM_SECTORS, augmented=True),
    )
}

DEFAULT_PROFILE = "STD-GEN-CD"

def compressions(profile: str) -> tuple[str, ...]:
    """The ``compress`` values (:data:`node.syntaxes.COMPRESS`) a profile allows: those whose syntax it
    may hold for images.

    >>> compressions("STD-GEN-DVD-J2K")
    ('none', 'j2k-lossless', 'j2k-lossy')
    """
    allowed = PROFILES[profile].image_syntaxes
    return tuple(name for name in COMPRESS if name == NO_COMPRESSION or syntaxes.by_name(name).uid in allowed)


def get_profile(name: str) -> Profile:
    """Return the profile called ``name`` (case-insensitive) or raise :class:`UsageError`."""
    try:
        return PROFILES[name.upper()]
    except KeyError:
        raise UsageError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
