"""Encode the DICOMDIR: a Basic Directory IOD in Explicit VR Little Endian (PS3.3 F.3, PS3.10 8).

Records are written depth first (patient, its studies, their series, their
instances, then the next patient), each a defined-length item. Offsets count
from the first byte of the file (the preamble). Each record's encoding does not
depend on the offsets it holds (UL, fixed length), so records are encoded once
and the offsets patched in place.
"""

from __future__ import annotations

import struct

from node import dcmio, dicom, tags
from node.media.directory import Node, Tree

_NEXT_AT, _LOWER_AT = 16, 38  # value offsets of (0004,1400) and (0004,1420) within an item
_UL = struct.Struct("<L")


def encode_dicomdir(tree: Tree, file_ids: dict[int, tuple[str, ...]], *, fileset_id: str, fileset_uid: str) -> bytes:
    """Return the whole DICOMDIR file for ``tree`` (``fileset_id`` already a valid CS)."""
    items: list[bytearray] = []
    index: dict[int, int] = {}  # id(node) -> its item's position in ``items``

    def visit(node: Node) -> None:
        index[id(node)] = len(items)
        items.append(bytearray(_item(node, file_ids.get(id(node)))))
        for child in node.children:
            visit(child)

    for patient in tree.patients:
        visit(patient)

    head = dcmio.file_meta(dicom.MEDIA_STORAGE_DIRECTORY, fileset_uid, dicom.EXPLICIT_VR_LE)
    fileset = dcmio.encode(0x00041130, "CS", fileset_id)  # File-set ID
    start = len(head) + len(fileset) + 12 + 12 + 10 + 12  # the three root keys, the SQ header
    offsets = []
    for item in items:
        offsets.append(start)
        start += len(item)

    def link(siblings: list[Node]) -> None:
        for node, following in zip(siblings, siblings[1:]):
            _UL.pack_into(items[index[id(node)]], _NEXT_AT, offsets[index[id(following)]])
        for node in siblings:
            if node.children:
                _UL.pack_into(items[index[id(node)]], _LOWER_AT, offsets[index[id(node.children[0])]])
                link(node.children)

    link(tree.patients)
    root = b"".join(
        (
            fileset,
            dcmio.encode(0x00041200, "UL", _UL.pack(offsets[index[id(tree.patients[0])]])),  # first root record
            dcmio.encode(0x00041202, "UL", _UL.pack(offsets[index[id(tree.patients[-1])]])),  # last root record
            dcmio.encode(0x00041212, "US", b"\0\0"),  # File-set Consistency Flag: none known
            b"\x04\x00\x20\x12SQ\0\0" + _UL.pack(sum(len(i) for i in items)),  # Directory Record Sequence
        )
    )
    return head + root + b"".join(items)


def _item(node: Node, file_id: tuple[str, ...] | None) -> bytes:
    """Encode one record as a defined-length item, with zero offsets (PS3.3 F.3.2.2)."""
    elements = {
        0x00041400: dcmio.encode(0x00041400, "UL", b"\0\0\0\0"),  # Offset of the Next Directory Record
        0x00041410: dcmio.encode(0x00041410, "US", b"\xff\xff"),  # Record In-use Flag
        0x00041420: dcmio.encode(0x00041420, "UL", b"\0\0\0\0"),  # Offset of Referenced Lower-Level Entity
        0x00041430: dcmio.encode(0x00041430, "CS", node.record_type),
    }
    inst = node.instance
    if inst is not None and file_id is not None:
        values = ("\\".join(file_id), inst.sop_class_uid, inst.sop_instance_uid, inst.header.transfer_syntax,
                  inst.sop_instance_uid)
        for key, value in zip(dicom.LEAF_KEYS, values, strict=True):
            elements[key.tag] = dcmio.encode(key.tag, key.vr, value)
        if node.record_type == "PRIVATE":
            key = dicom.PRIVATE_RECORD_UID
            elements[key.tag] = dcmio.encode(key.tag, key.vr, inst.sop_class_uid)
    if node.charset:
        elements[tags.SPECIFIC_CHARACTER_SET] = node.charset
    elements.update(node.keys)
    body = b"".join(e for _, e in sorted(elements.items()))
    return b"\xfe\xff\x00\xe0" + _UL.pack(len(body)) + body
