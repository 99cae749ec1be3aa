"""A medium opened read-only: a folder (a mounted disc, a USB stick), an ISO 9660 or a UDF image or device.

Nothing is mounted, nothing is executed, and nothing that leads outside the
medium's root is ever opened (DESIGN.md invariant 5). An image or a block device
is read with pycdlib when it holds ISO 9660 (its files' bytes straight from their
extents), else with the node's UDF reader (:mod:`node.udf`: every Blu-ray, most
DVDs, DVD-RAM); a folder with the standard library. A bridge medium (both file
systems) is read through the tree in which its DICOMDIR's File IDs resolve, ISO
9660 first, and any disagreement between the two trees is a warning of the medium.

DICOMDIR File IDs (PS3.10 8.2, PS3.3 F.3.2.2) are upper-case components, but real
media carry lower-case copies, ISO 9660 version suffixes (``IM1;1``) and trailing
dots (``IM1.``); :meth:`Medium.resolve` tolerates all three.

>>> normalize_path("dicom/im1.;1")
'DICOM/IM1'
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, cast

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from node.errors import ESCAPES_ROOT as ESCAPES_ROOT  # why resolve() refuses, re-exported for its callers
from node.errors import NOT_FOLLOWED as NOT_FOLLOWED
from node.dcmio import check_complete
from node.errors import MediumError
from node.extents import Extents
from node.profiles import SECTOR
from node.read.directory import open_directory
from node.udf import NSR, UdfError, Volume, vrs_identifiers


_VERSION_SUFFIX = re.compile(r";\d*$")


class RefusedPath(MediumError):
    """A File ID or entry that is never opened: it escapes the root, is an ISO symlink, or lies past the image's end.

    ``reason`` is :data:`ESCAPES_ROOT`, :data:`NOT_FOLLOWED` or why an ISO file is not whole (:class:`IsoMedium`).
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def normalize_path(relpath: str) -> str:
    """Fold a path as File IDs compare: upper case, no ``;1`` suffixes, no trailing dots."""
    return "/".join(_VERSION_SUFFIX.sub("", part).rstrip(".").upper() for part in relpath.split("/"))


class Medium(ABC):
    """Read-only access to the files of one medium, addressed by relative POSIX paths.

    Subclasses fill ``_files`` (path -> size) and ``_refused`` (path -> reason)
    when they are created, so a medium that cannot be listed fails at open.
    """

    #: what the medium is read as, shown by ``check``: "folder", "ISO 9660", "UDF 2.60"
    kind = "folder"

    def __init__(self, name: str) -> None:
        self.name = name
        #: (path, text): what is odd about the medium as a whole (a bridge whose trees disagree)
        self.warnings: list[tuple[str, str]] = []
        self._files: dict[str, int] = {}
        self._refused: dict[str, str] = {}
        self._by_key: dict[str, str] = {}
        self._refused_by_key: dict[str, str] = {}

    def _index(self) -> None:
        """Build the case-, ``;1``- and dot-tolerant lookup used by :meth:`resolve`."""
        for path in sorted(self._files):
            self._by_key.setdefault(normalize_path(path), path)
        self._refused_by_key = {normalize_path(p): r for p, r in self._refused.items()}

    def files(self) -> list[str]:
        """Every regular file, as relative POSIX paths spelled as on the medium."""
        return sorted(self._files)

    def refused(self) -> dict[str, str]:
        """Entries never opened (symlinks leading out of the root, ISO symlinks, ISO files past the end) -> reason."""
        return dict(self._refused)

    def size(self, relpath: str) -> int:
        """Size in bytes of a file listed by :meth:`files`."""
        try:
            return self._files[relpath]
        except KeyError:
            raise MediumError(f"{relpath}: no such file on the medium") from None

    def resolve(self, components: Sequence[str]) -> str | None:
        """Map Referenced File ID components (PS3.3 F.3.2.2) to a file of :meth:`files`.

        Letter case, ``;1`` suffixes and trailing dots are tolerated; an exact
        match wins. Returns ``None`` when no such file exists. Raises
        :class:`RefusedPath` for a File ID that is absolute, has an empty,
        ``.`` or ``..`` component or a separator inside a component, or that
        leads through a refused entry (a symlink out of the root).
        """
        shown = "/".join(components)
        if not components or any(
            c in ("", ".", "..") or "/" in c or "\\" in c or "\0" in c or ":" in c for c in components
        ):
            raise RefusedPath(shown, ESCAPES_ROOT)
        if shown in self._files:
            return shown
        key = normalize_path(shown)
        parts = key.split("/")
        for depth in range(1, len(parts) + 1):
            reason = self._refused_by_key.get("/".join(parts[:depth]))
            if reason:
                raise RefusedPath(shown, reason)
        return self._by_key.get(key)

    @abstractmethod
    def open(self, relpath: str) -> BinaryIO:
        """Open a file of :meth:`files` for reading; the caller closes it."""

    def close(self) -> None:
        """Release the medium (the image file of an ISO)."""

    def __enter__(self) -> Medium:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class FolderMedium(Medium):
    """A folder: a mounted medium's root or any directory holding a file-set.

    Symlinks whose target resolves outside the root are refused, as pydicom's
    ``RecordNode.file_id_path`` does; symlinked directories are never descended.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self._root = root
        self._real_root = root.resolve()

        def fail(err: OSError) -> None:
            raise MediumError(f"cannot read {err.filename}: {err.strerror}")

        for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=False):
            here = Path(dirpath)
            entries = [(name, False) for name in dirnames] + [(name, True) for name in filenames]
            for name, listed_as_file in entries:
                full = here / name
                rel = full.relative_to(root).as_posix()
                if full.is_symlink() and not self._inside(full):
                    self._refused[rel] = ESCAPES_ROOT
                elif listed_as_file:
                    try:
                        st = full.stat()
                    except OSError:
                        continue  # a dangling symlink: nothing to read
                    if stat.S_ISREG(st.st_mode):  # never a FIFO or a device
                        self._files[rel] = st.st_size
        self._index()

    def _inside(self, full: Path) -> bool:
        try:
            return full.resolve().is_relative_to(self._real_root)
        except (OSError, RuntimeError):  # a symlink loop
            return False

    def open(self, relpath: str) -> BinaryIO:
        """Open a listed file read-only, re-checking that it still stays inside the root."""
        if relpath not in self._files:
            raise MediumError(f"{relpath}: no such file on the medium")
        full = self._root / relpath
        if not self._inside(full):  # replaced by an escaping symlink since it was listed
            raise RefusedPath(relpath, ESCAPES_ROOT)
        try:
            return open(full, "rb")
        except OSError as exc:
            raise MediumError(f"cannot read {relpath}: {exc.strerror}") from None


def _open_image(path: Path) -> BinaryIO:
    """An image file or block device opened for reading; :class:`MediumError` saying why not."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise MediumError(f"cannot read {path}: {exc.strerror}") from None


class IsoMedium(Medium):
    """An ISO 9660 image or block device, read with pycdlib and never mounted.

    Names come from Rock Ridge when present, else Joliet, else the ISO 9660
    names without their ``;1`` version and trailing dot. A file whose directory
    record claims bytes past the end of the image (a cut image, a forged length)
    is refused, never read: pycdlib silently shortens it to what the image holds,
    so the record's own Data Length (ECMA-119 9.1.4) is read again to tell.
    """

    kind = "ISO 9660"

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self._fp = _open_image(path)
        self._image_size = self._fp.seek(0, os.SEEK_END)
        self._iso = pycdlib.PyCdlib()
        try:
            self._iso.open_fp(self._fp)
        except Exception as exc:  # pycdlib may raise anything on hostile bytes
            self._fp.close()
            raise MediumError(f"{path}: not a readable ISO 9660 image ({exc})") from None
        if self._iso.has_rock_ridge():
            self._kind, self._encoding = "rr_path", "utf-8"
        elif self._iso.has_joliet():
            self._kind, self._encoding = "joliet_path", "utf-16_be"
        else:
            self._kind, self._encoding = "iso_path", "utf-8"
        #: relative path -> the path pycdlib knows it by
        self._iso_paths: dict[str, str] = {}
        #: relative path -> (byte offset, length) of its data on the image, where pycdlib found one extent
        self._extents: dict[str, tuple[int, int]] = {}
        try:
            self._walk()
        except Exception as exc:  # a damaged directory tree
            self.close()
            raise MediumError(f"{path}: damaged ISO 9660 directory tree ({exc})") from None
        self._index()

    def _walk(self) -> None:
        pending = [("", "/")]
        while pending:
            rel_dir, iso_dir = pending.pop()
            for child in self._iso.list_children(**{self._kind: iso_dir}):
                if child is None or child.is_dot() or child.is_dotdot():
                    continue
                if self._kind == "rr_path" and child.rock_ridge is not None:
                    raw = child.rock_ridge.name()
                else:
                    raw = child.file_identifier()
                on_iso = raw.decode(self._encoding, errors="replace")
                shown = on_iso
                if self._kind == "iso_path":
                    shown = _VERSION_SUFFIX.sub("", on_iso).rstrip(".")
                rel = f"{rel_dir}{shown}"
                iso_path = f"{iso_dir.rstrip('/')}/{on_iso}"
                if child.is_symlink():
                    self._refused[rel] = NOT_FOLLOWED
                elif child.is_dir():
                    pending.append((f"{rel}/", iso_path))
                elif past_end := self._past_end(child):
                    self._refused[rel] = past_end
                else:
                    self._files[rel] = child.get_data_length()
                    self._iso_paths[rel] = iso_path
                    ino = child.inode
                    if ino is not None and ino.original_data_location == ino.DATA_ON_ORIGINAL_ISO:
                        self._extents[rel] = (ino.orig_extent_loc * self._iso.logical_block_size, ino.data_length)

    def _past_end(self, child: Any) -> str:
        """Why a file's extent runs past the end of the image, or "" when it lies inside.

        pycdlib shortens such a record's length to end exactly at the image's end,
        so only a file ending there is looked up again, in its directory's sectors
        (a record never spans two, ECMA-119 6.8.1.1), for the length it claims.
        """
        block = self._iso.logical_block_size
        extent = child.extent_location()
        if extent * block + child.get_data_length() < self._image_size:
            return ""
        directory = child.parent
        start, sectors = directory.extent_location() * block, -(-directory.get_data_length() // block)
        identifier = child.file_identifier()
        for sector in range(sectors):
            self._fp.seek(start + sector * block)
            data, pos = self._fp.read(block), 0
            while pos + 33 <= len(data) and data[pos]:  # ECMA-119 9.1: a zero length ends the sector's records
                name = data[pos + 33 : pos + 33 + data[pos + 32]]
                if name == identifier and struct.unpack_from("<I", data, pos + 2)[0] == extent:
                    claimed = int(struct.unpack_from("<I", data, pos + 10)[0])
                    if extent * block + claimed <= self._image_size:
                        return ""
                    return (f"its ISO 9660 directory record claims {claimed} bytes from sector {extent}, past the "
                            f"end of the image ({self._image_size} bytes): the image is cut short or the record is "
                            "damaged; not read")
                pos += data[pos]
        return ""

    def open(self, relpath: str) -> BinaryIO:
        """Open ``relpath`` as a streaming, seekable file object (nothing read up front).

        A file's bytes are read straight from its extent (where pycdlib reads them, as
        pycdlib's own stream does, without its per-read Python layers and seeks of the shared
        image file).
        """
        if relpath not in self._iso_paths:
            raise MediumError(f"{relpath}: no such file on the medium")
        if relpath in self._extents:
            start, length = self._extents[relpath]
            return cast(BinaryIO, Extents(self._fp.fileno(), [(start, length)], length))
        try:
            handle = self._iso.open_file_from_iso(**{self._kind: self._iso_paths[relpath]})
            # Entering positions the stream on the file's extent; closing it releases it.
            return cast(BinaryIO, handle.__enter__())  # type: ignore[no-untyped-call]
        except PyCdlibException as exc:
            raise MediumError(f"cannot read {relpath}: {exc}") from None

    def close(self) -> None:
        """Close the image."""
        try:
            self._iso.close()
        finally:
            self._fp.close()


class UdfMedium(Medium):
    """A UDF image or block device (OSTA UDF 1.02 to 2.60), read with :mod:`node.udf` and never mounted.

    Entries the reader refuses (a name that is not a plain file identifier, a
    symbolic link, a file whose extents leave the image) are :meth:`refused`;
    a file read from the Metadata Mirror is a warning.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self._fp = _open_image(path)
        try:
            self._volume = Volume(self._fp)
        except UdfError as exc:
            self._fp.close()
            raise type(exc)(f"{path}: UDF medium not read: {exc}") from None
        self.kind = f"UDF {self._volume.revision}"
        self._files = {name: f.size for name, f in self._volume.files.items()}
        self._refused = dict(self._volume.refused)
        self.warnings = [(".", note) for note in self._volume.notes]
        self._index()

    def open(self, relpath: str) -> BinaryIO:
        """Open ``relpath`` as a streaming, seekable file object (nothing read up front)."""
        return self._volume.open(relpath)

    def close(self) -> None:
        """Close the image."""
        self._fp.close()


def _unresolved(medium: Medium) -> int:
    """How many Referenced File IDs of the root DICOMDIR lead nowhere on ``medium``; -1 without a whole one
    (walked first, as ``check`` walks it, so a hostile one is never given to pydicom)."""
    try:
        found = medium.resolve(["DICOMDIR"])
        if found is None:
            return -1
        with warnings.catch_warnings(), medium.open(found) as fp:
            size = medium.size(found)
            if check_complete(fp, size):
                return -1
            warnings.simplefilter("ignore")
            records = open_directory(fp, size, force=True).records() or {}
            ids = [r.get("ReferencedFileID") for r in records.values()]
    except Exception:  # a damaged DICOMDIR: check reports it; here it resolves nothing
        return -1
    missing = 0
    for file_id in filter(None, ids):
        components = [file_id] if isinstance(file_id, str) else [str(c) for c in file_id]
        try:
            missing += medium.resolve(components) is None
        except RefusedPath:
            missing += 1
    return missing


def _disagreements(read: Medium, other: Medium) -> list[tuple[str, str]]:
    """Files of a bridge's two trees that are in one and not the other, or of different sizes."""
    ours = {normalize_path(p): p for p in read.files()}
    theirs = {normalize_path(p): p for p in other.files()}
    found = [(ours[k], f"only in the {read.kind} tree, not in the {other.kind} tree")
             for k in ours.keys() - theirs.keys()]
    found += [(theirs[k], f"only in the {other.kind} tree (not read), not in the {read.kind} tree")
              for k in theirs.keys() - ours.keys()]  # fmt: skip
    found += [(ours[k], f"{read.size(ours[k])} bytes in the {read.kind} tree, {other.size(theirs[k])} in the "
                        f"{other.kind} tree") for k in ours.keys() & theirs.keys()
              if read.size(ours[k]) != other.size(theirs[k])]  # fmt: skip
    return sorted(found)


def _bridge(iso: IsoMedium, path: Path) -> Medium:
    """A medium with both ISO 9660 and UDF: the tree the DICOMDIR resolves in (ISO 9660 unless UDF does better)."""
    try:
        udf = UdfMedium(path)
    except MediumError as exc:
        iso.warnings.append((".", f"its UDF file system is not read ({exc}); ISO 9660 read"))
        return iso
    iso_missing, udf_missing = _unresolved(iso), _unresolved(udf)
    better = udf_missing >= 0 and (iso_missing < 0 or udf_missing < iso_missing)
    read, other = (udf, iso) if better else (iso, udf)
    read.kind = f"{read.kind} (bridge with {other.kind})"
    read.warnings += _disagreements(read, other)
    other.close()
    return read


def medium_label(path: str | os.PathLike[str]) -> str:
    """What a medium calls itself: a folder's name, an image's or a disc's ISO 9660 Volume Identifier, else its
    UDF Logical Volume Identifier.

    The Volume Identifier is the Primary Volume Descriptor's bytes 40-71 (ECMA-119
    8.4.5, sector 16), read without pycdlib's full parse; the UDF one is read from
    the volume structure alone (3/10.6.4); "" when there is none.
    Automounters name the mount point after the volume label, so a disc read in a
    drive and the same disc mounted agree. Raises :class:`MediumError` when unreadable.
    """
    target = Path(path)
    if target.is_dir():
        return target.name
    try:
        with open(target, "rb") as fp:
            fp.seek(16 * SECTOR)
            pvd = fp.read(72)
            if pvd[:6] == b"\x01CD001":
                return pvd[40:72].decode("ascii", "replace").strip()
            return Volume(fp, listing=False).label
    except OSError as exc:
        raise MediumError(f"cannot read {target}: {exc.strerror}") from None
    except UdfError:
        return ""


def open_medium(path: str | os.PathLike[str]) -> Medium:
    """Open a folder, an image (ISO 9660, UDF or both) or a block device read-only.

    Raises :class:`MediumError` with a one-line reason when it cannot be read.
    """
    target = Path(path)
    try:
        mode = target.stat().st_mode
    except OSError as exc:
        raise MediumError(f"cannot open {target}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        return FolderMedium(target)
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        try:
            with open(target, "rb") as fp:
                identifiers = vrs_identifiers(fp)
        except (OSError, UdfError) as exc:
            raise MediumError(f"cannot read {target}: {exc}") from None
        udf = bool(identifiers & NSR)
        if b"CD001" not in identifiers and udf:
            return UdfMedium(target)
        try:
            iso = IsoMedium(target)
        except MediumError as exc:
            if not udf:
                raise
            medium: Medium = UdfMedium(target)
            medium.warnings.append((".", f"its ISO 9660 file system is not read ({exc}); UDF read"))
            return medium
        return _bridge(iso, target) if udf else iso
    raise MediumError(f"{target} is neither a folder, an ISO image nor a block device")
