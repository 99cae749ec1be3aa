"""What goes onto a medium: files described as pieces, never held in memory whole.

A file on a medium is usually a new File Meta header (a few hundred bytes)
followed by the dataset bytes of the source file, untouched. Describing it as
``[b"<new header>", FileSlice(src, offset, length)]`` lets the writers stream it
straight from the source into the image (``os.copy_file_range``), keeping memory
bounded whatever the size of the set (DESIGN.md invariant 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class FileSlice(NamedTuple):
    """``length`` bytes of the file at ``path``, from ``offset``."""

    path: str
    offset: int
    length: int


Piece = bytes | FileSlice


@dataclass
class MediaFile:
    """One file of the medium: its File ID components and its content, in pieces.

    ``components`` are the upper-case path components as written, e.g.
    ``("DICOM", "P0000001", "S0000001", "I0000001")`` or ``("DICOMDIR",)``.
    """

    components: tuple[str, ...]
    pieces: list[Piece] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Length of the file in bytes."""
        return sum(len(p) if isinstance(p, bytes) else p.length for p in self.pieces)

    @property
    def relpath(self) -> str:
        """The path below the medium root, with ``/`` separators."""
        return "/".join(self.components)
