"""ISO-safe File IDs for the instances of a file-set (PS3.10 8.2, PS3.12 F.3).

Every File ID is ``DICOM/PAnnnnnn/STnnnnnn/SEnnnnnn/IMnnnnnn``: five components
of at most eight characters from ``A-Z 0-9 _``, no extension, which ISO 9660
level 1, Joliet-less readers and FAT all accept.
"""

from __future__ import annotations

from node import dicom
from node.media.directory import Tree

ROOT = "DICOM"


def assign_file_ids(tree: Tree) -> dict[int, tuple[str, ...]]:
    """Map each leaf node (by ``id()``) to its File ID components, in tree order."""
    ids: dict[int, tuple[str, ...]] = {}
    for p, patient in enumerate(tree.patients):
        for s, study in enumerate(patient.children):
            for e, series in enumerate(study.children):
                for i, leaf in enumerate(series.children):
                    ids[id(leaf)] = (ROOT, f"PA{p:06d}", f"ST{s:06d}", f"SE{e:06d}", f"IM{i:06d}")
    assert all(dicom.is_conformant_file_id(c) for c in ids.values())
    return ids
