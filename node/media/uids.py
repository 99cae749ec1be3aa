"""One UID map per disc: new UIDs that every worker process derives alike, applied to every reference.

A burn rewrites instances in a pool of worker processes, one file each, that share no state. They
agree on new UIDs because a new UID is a pure function of (a per-burn secret salt, the old UID):
``2.25.`` followed by the integer of an ISO/IEC 9834-8 UUID (version 8, RFC 9562) made from a
SHA-256 of both (PS3.5 B.2). The salt makes the new UIDs unguessable from the old ones, and two
burns with different salts never collide.

Which UIDs change (seed Appendix C):

- lossy compression changes only the SOP Instance UIDs of the images it compresses (PS3.3
  C.7.6.1.1.5: a lossy image is a new instance); the burn knows that set before it starts, and every
  reference on the disc to such an image follows it. The item of the compressed image's Source Image
  Sequence that names its uncompressed predecessor (purpose of reference 121320, DCM "Uncompressed
  predecessor", PS3.16 CID 7202) keeps the original UID on purpose: it names the original, not a
  copy on this disc.
- ``--new-uids`` and ``--deidentify`` change *every* UID that names an instance, series, study, frame
  of reference, or anything else made for this data (``everything``), including references to objects
  not on the disc: the disc becomes an independent copy that can be imported beside its originals
  without one UID in common (seed Appendix C "complete UID uniqueness"; PS3.15 E.1-1 marks all of
  these U). What names a *kind* of thing never changes: SOP Class, Transfer Syntax, coding scheme,
  Implementation Class UIDs and every UID under the DICOM root ``1.2.840.10008``.

With both, a compressed image gets a UID of its own kind (``lossy``), different from the renamed
original's, and its predecessor reference names the renamed original, which a de-identified
uncompressed burn with the same salt would hold.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.dicom import UID_ROOT
from node.tags import IMPLEMENTATION_CLASS_UID, MEDIA_STORAGE_SOP_CLASS_UID, SOP_CLASS_UID, TRANSFER_SYNTAX_UID

if TYPE_CHECKING:
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

#: The DICOM root: every UID defined by the standard itself (PS3.6 Annex A), never renamed.
DICOM_ROOT = "1.2.840.10008."

#: UI attributes that name a kind of thing, not an instance: never renamed whatever their value.
KIND_TAGS = frozenset(
    {
        MEDIA_STORAGE_SOP_CLASS_UID,
        TRANSFER_SYNTAX_UID,
        IMPLEMENTATION_CLASS_UID,
        0x00041510,  # Referenced SOP Class UID in File
        0x00041512,  # Referenced Transfer Syntax UID in File
        SOP_CLASS_UID,
        0x0008001A,  # Related General SOP Class UID
        0x0008001B,  # Original Specialized SOP Class UID
        0x0008010C,  # Coding Scheme UID
        0x0008010D,  # Context Group Extension Creator UID
        0x00080118,  # Mapping Resource UID
        0x00081150,  # Referenced SOP Class UID
        0x0008115A,  # SOP Classes Supported
    }
)

#: The identity of an instance (seed Appendix C Table 8), as our private block keeps it.
IDENTITY = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

#: Purpose of Reference (PS3.16 CID 7202) of a lossy image's uncompressed predecessor.
PREDECESSOR_CODE = ("121320", "DCM")

#: medianode's private block (PS3.5 7.8.1) keeping the original identity under ``--new-uids``.
PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "MEDIANODE ORIGINAL UIDS"


def new_salt() -> str:
    """A fresh secret salt for one burn (128 random bits, hex)."""
    return secrets.token_hex(16)


def derived_uid(salt: str, kind: str, old: str) -> str:
    """``2.25.`` + the integer of a version-8 UUID (RFC 9562 5.8) from SHA-256(salt, kind, old).

    At most 44 characters, digits and dots, no leading zero in a component (PS3.5 9.1, B.2).
    """
    digest = bytearray(hashlib.sha256(f"{salt}\0{kind}\0{old}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8: custom
    digest[8] = (digest[8] & 0x3F) | 0x80  # variant 10: RFC 9562 / ISO/IEC 9834-8
    return f"{UID_ROOT}{int.from_bytes(digest, 'big')}"


@dataclass(frozen=True)
class UidMap:
    """Which UIDs of a disc change and into what; picklable, so every worker gets the same map.

    ``changes``: the SOP Instance UIDs of images that lossy compression turns into new instances.
    ``everything``: rename every instance UID too (``--new-uids``, ``--deidentify``).
    """

    salt: str
    changes: frozenset[str] = frozenset()
    everything: bool = False

    def new(self, old: str) -> str | None:
        """The UID that replaces ``old`` everywhere on the disc, or None when ``old`` stays."""
        if old.startswith(DICOM_ROOT):
            return None
        if old in self.changes:
            return derived_uid(self.salt, "lossy", old)
        return derived_uid(self.salt, "renamed", old) if self.everything else None

    def predecessor(self, old: str) -> str:
        """What a lossy image's reference to its uncompressed original ``old`` becomes."""
        return derived_uid(self.salt, "renamed", old) if self.everything and not old.startswith(DICOM_ROOT) else old

    def pseudonym(self, kind: str, value: str, length: int = 16) -> str:
        """A stable stand-in for an identifier: the same ``value`` gives the same pseudonym on the disc."""
        return hashlib.sha256(f"{self.salt}\0{kind}\0{value}".encode()).hexdigest()[:length].upper()


def identity(ds: Dataset) -> dict[str, str]:
    """Study, Series and SOP Instance UIDs of ``ds`` (those it has), before renaming: for the job record."""
    return {key: str(ds[key].value) for key in IDENTITY if key in ds and ds[key].value}


def remap(ds: Dataset, uids: UidMap) -> int:
    """Rewrite every UI value of ``ds`` (and its sequences) that ``uids`` changes; file meta follows.

    Returns the number of values rewritten. Private elements are left alone (their meaning is their
    creator's), and so is the predecessor reference of a lossy image (see the module docstring).
    """
    count = 0
    for elem, predecessor in _ui_elements(ds):
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        renamed = [_renamed(str(v), uids, predecessor) if v else v for v in values]
        if renamed != values:
            count += sum(a != b for a, b in zip(renamed, values))
            elem.value = renamed if elem.VM > 1 else renamed[0]
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("MediaStorageSOPInstanceUID"):
        old = str(meta.MediaStorageSOPInstanceUID)
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID if "SOPInstanceUID" in ds else uids.new(old) or old
    return count


def keep_original_uids(ds: Dataset, originals: dict[str, str]) -> None:
    """Keep ``originals`` (from :func:`identity`) in our private block, so a reader can trace the copy.

    (0009,xx10..12) UI: original Study, Series and SOP Instance UIDs, in the block that the Private
    Creator (0009,00xx) "MEDIANODE ORIGINAL UIDS" reserves (PS3.5 7.8.1). A block that already holds
    originals keeps them: a copy of a copy still names the very first instance. Never used by
    ``--deidentify``: it would undo it.
    """
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    for offset, key in enumerate(IDENTITY, start=0x10):
        if key in originals and offset not in block:
            block.add_new(offset, "UI", originals[key])


def original_uids(ds: Dataset) -> dict[str, str]:
    """What :func:`keep_original_uids` kept in ``ds``, or an empty dict."""
    try:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return {}
    return {key: str(block[offset].value) for offset, key in enumerate(IDENTITY, start=0x10) if offset in block}


def _renamed(old: str, uids: UidMap, predecessor: bool) -> str:
    if predecessor:
        return uids.predecessor(old)
    return uids.new(old) or old


def _ui_elements(ds: Dataset, predecessor: bool = False) -> Iterator[tuple[DataElement, bool]]:
    """Every public UI element of ``ds``, recursively, with whether it names a lossy image's predecessor."""
    for elem in ds:
        if elem.tag.is_private or elem.tag in KIND_TAGS:
            continue
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _ui_elements(item, _names_predecessor(item))
        elif elem.VR == "UI" and elem.value:
            yield elem, predecessor and elem.tag == 0x00081155  # Referenced SOP Instance UID


def _names_predecessor(item: Dataset) -> bool:
    """True for a Source Image Sequence item whose purpose is "uncompressed predecessor" (121320, DCM)."""
    codes = item.get("PurposeOfReferenceCodeSequence") or []
    return any((c.get("CodeValue"), c.get("CodingSchemeDesignator")) == PREDECESSOR_CODE for c in codes)
