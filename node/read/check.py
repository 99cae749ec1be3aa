"""Check a medium: its DICOMDIR against the files it holds.

The DICOMDIR (PS3.10 8.6, PS3.3 Annex F) is read without pydicom when it is
plain (:mod:`node.read.directory`), else parsed with pydicom; its
directory records are walked here, offset by offset (PS3.3 F.3.2.1-F.3.2.2), so
that a broken offset or a loop is a report row and never a crash. Every
referenced file is walked to its end (:func:`node.dcmio.check_complete`: cut short,
or Deflated past the bounds, which pydicom is then never given), read up to its
pixel data, and checked for agreement with its record and parents (PS3.3 F.5),
and for an executable preamble (PS3.10 7.1, CVE-2019-11687). Every other file is sniffed: a DICOM
file the DICOMDIR does not reference is a problem (and is read like the
others), anything else a note. pydicom warnings become notes; none escapes.

What media in the wild do is tolerated and reported: File IDs whose files carry
(or lack) a '.dcm' extension, a DICOMDIR in a sub-folder (its File IDs are read
relative to it), files without preamble or File Meta (read as bare data sets).
:func:`survey_medium` returns, beside the report, every readable instance with
where its data set starts, and every file that should hold one but cannot be
used: what ``import`` sends and what it reports as failed. A :class:`Listener` hears
of the DICOMDIR's records before any file is read, and of each instance as it is
found, so that an import can send while the survey goes on.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

from node.dcmio import INFLATION_REFUSED, NOT_DICOM, TRUNCATED, check_complete
from node.dicom import (
    DIRECTORY_RECORD_TYPES,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MEDIA_STORAGE_DIRECTORY,
    is_conformant_file_id,
    record_type,
    syntax_name,
    uid_name,
)
from node.errors import one_line
from node.profiles import PDI_ROOT_FILES, PDI_WEB_FOLDER, PROFILES, Profile
from node.read.directory import DirectoryRecord, open_directory
from node.read.header import (
    Attributes,
    ReadAttributes,
    data_set_offset,
    is_dicom,
    plain_attributes,
    read_until_pixels,
)
from node.read.medium import (
    NOT_FOLLOWED,
    Medium,
    RefusedPath,
    normalize_path,
    open_medium,
)

logger = logging.getLogger(__name__)

#: Magic numbers a 128-byte preamble must not start with (PS3.10 7.5, CVE-2019-11687).
_EXECUTABLES = ((b"MZ", "a PE (Windows) executable header"), (b"\x7fELF", "an ELF executable header"))
#: How much of an unreferenced file is read to tell DICOM from the rest.
_SNIFF_BYTES = 64 * 1024
_PROGRAMS = (".EXE", ".DLL", ".SO", ".INF", ".BAT", ".CMD", ".SH", ".JAR")
#: Parent record type -> (attribute, label) compared with each instance (PS3.3 F.5).
_PARENTS = {
    "PATIENT": ("PatientID", "Patient ID"),
    "STUDY": ("StudyInstanceUID", "Study Instance UID"),
    "SERIES": ("SeriesInstanceUID", "Series Instance UID"),
}
#: The syntaxes whose encoding pydicom reports in ``Dataset.original_encoding``.
_NATIVE = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE})
#: Leaf record attribute -> (the instance's own attribute, label) (PS3.3 F.3.2.2).
_REFERENCED = {
    "ReferencedSOPInstanceUIDInFile": ("SOPInstanceUID", "SOP Instance UID"),
    "ReferencedSOPClassUIDInFile": ("SOPClassUID", "SOP Class UID"),
    "ReferencedTransferSyntaxUIDInFile": ("TransferSyntaxUID", "Transfer Syntax UID"),
}


@dataclass(frozen=True, order=True)
class Finding:
    """One report row: a path relative to the medium root and what is wrong or odd there."""

    path: str
    problem: str


@dataclass
class CheckReport:
    """What ``medianode check`` reports (DESIGN.md, Command-line contract).

    ``problems`` break reading or importing; ``notes`` are legitimate or merely
    odd; ``warnings`` are about the medium as a whole (the two trees of a bridge
    disagreeing, metadata read from its mirror). ``medium`` is what it was read
    as ("folder", "ISO 9660", "UDF 2.60"). ``profiles`` names the standard profiles whose File ID and transfer
    syntax rules the readable instances satisfy (only when none was asked for).
    """

    instances: int = 0
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    medium: str = ""
    warnings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The ``check --json`` object."""
        return {
            "ok": self.ok,
            "instances": self.instances,
            "problems": [asdict(f) for f in self.problems],
            "notes": [asdict(f) for f in self.notes],
            "profiles": list(self.profiles),
            "medium": self.medium,
            "warnings": [asdict(f) for f in self.warnings],
        }


@dataclass(frozen=True)
class MediumInstance:
    """A readable instance on the medium, reached through a DICOMDIR record or by the scan.

    ``offset`` is where its data set starts, after the preamble and File Meta
    (PS3.10 7.1). ``part10`` is true for a conformant PS3.10 file whose File Meta
    names this instance and the syntax its data set is really encoded in: its
    bytes from ``offset`` on can be sent as they are. ``transfer_syntax_uid`` is
    that actual syntax, even when the File Meta is missing or says otherwise.
    """

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str
    study_instance_uid: str
    offset: int
    part10: bool
    referenced: bool
    #: Referenced by a record whose Referenced SOP Instance UID in File is this instance's own.
    listed: bool = False


class Listed(NamedTuple):
    """What a DICOMDIR record says of the file it references (PS3.3 F.3.2.2); "" where it says nothing."""

    sop_class_uid: str
    transfer_syntax_uid: str
    sop_instance_uid: str


class Listener(Protocol):
    """Told what a survey finds while it runs: of a lone DICOMDIR's records before their files are
    read, then of each readable instance. It must not raise."""

    def records(self, listed: list[Listed]) -> None: ...

    def found(self, instance: MediumInstance) -> None: ...


@dataclass(frozen=True)
class UnreadableFile:
    """A file that should hold an instance but cannot be used (missing, refused, cut short, corrupt).

    What is known of the instance comes from its header or its directory record.
    """

    path: str
    reason: str
    sop_instance_uid: str = ""
    patient_id: str = ""
    study_instance_uid: str = ""


@dataclass
class Survey:
    """A check's report, and what an importer needs: the instances and the unusable files."""

    report: CheckReport
    instances: list[MediumInstance]
    unreadable: list[UnreadableFile]


def check_medium(path: str | os.PathLike[str], *, profile: Profile | None = None) -> CheckReport:
    """Check the medium at ``path`` (a folder, an ``.iso`` or a block device).

    With ``profile``, non-conformant File IDs (PS3.10 8.2) and transfer syntaxes
    the profile does not allow are problems. Raises
    :class:`~node.errors.MediumError` when the medium cannot be opened at all.
    """
    with open_medium(path) as medium:
        report = survey_medium(medium, profile=profile).report
    logger.info("checked %s: %d instances, %d problems", path, report.instances, len(report.problems))
    return report


def survey_medium(medium: Medium, *, profile: Profile | None = None, listener: Listener | None = None) -> Survey:
    """Check an open medium and list its instances: DICOMDIR records reconciled with a scan of every file.

    ``listener`` hears of the records only when the medium has a single DICOMDIR.
    """
    return _Checker(medium, profile, listener).run()


class _Header(NamedTuple):
    """A file read up to its pixel data."""

    attributes: Attributes
    has_pixels: bool
    offset: int  # where the data set starts
    preamble: bool  # 128 bytes and 'DICM' (PS3.10 7.1)


class _Checker:
    def __init__(self, medium: Medium, profile: Profile | None, listener: Listener | None = None) -> None:
        self.medium = medium
        self.profile = profile
        self.listener = listener
        self.report = CheckReport(medium=medium.kind, warnings=[Finding(p, t) for p, t in medium.warnings])
        self.referenced: set[str] = set()  # files reached through the DICOMDIR
        self.refused_ids: set[str] = set()  # File IDs refused, normalized
        self.syntaxes: set[tuple[str, str]] = set()  # (transfer syntax, record type)
        self.conformant = True
        self.instances: list[MediumInstance] = []
        self.unreadable: list[UnreadableFile] = []

    def problem(self, path: str, text: str) -> None:
        self.report.problems.append(Finding(path, text))

    def note(self, path: str, text: str) -> None:
        self.report.notes.append(Finding(path, text))

    def unusable(
        self, path: str, reason: str, *, ds: Attributes | None = None, record: DirectoryRecord | None = None,
        parents: dict[str, str] | None = None,
    ) -> None:
        """A problem on a file that should hold an instance; what is known of it comes along."""
        self.problem(path, reason)
        known: tuple[object, object, object]
        try:
            if ds is not None:
                known = (ds.get("SOPInstanceUID"), ds.get("PatientID"), ds.get("StudyInstanceUID"))
            elif record is not None:
                parents = parents or {}
                known = (record.get("ReferencedSOPInstanceUIDInFile"), parents.get("PATIENT"), parents.get("STUDY"))
            else:
                known = (None, None, None)
        except Exception:  # a malformed value: the path and the reason are enough
            known = (None, None, None)
        uid, patient, study = (str(value or "").strip() for value in known)
        self.unreadable.append(UnreadableFile(path, reason, uid, patient, study))

    @contextmanager
    def warnings_noted(self, path: str) -> Iterator[None]:
        """Turn pydicom's warnings into notes on ``path`` (STYLE.md 3.8)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for warning in caught:
                    self.note(path, f"pydicom: {one_line(warning.message)}")

    def run(self) -> Survey:
        dicomdirs = self.find_dicomdirs()
        if len(dicomdirs) != 1:  # several: an instance may be named again in another one's records
            self.listener = None
        for path, base in dicomdirs:
            self.check_dicomdir(path, base)
        self.scan_unreferenced({path for path, _ in dicomdirs})
        if self.profile is None and self.report.instances and self.conformant:
            standard = [p for name, p in PROFILES.items() if name.startswith("STD-GEN-")]
            fits = [p.name for p in standard if all(p.allows(ts, record_type=rt) for ts, rt in self.syntaxes)]
            self.report.profiles = fits
        self.report.problems = sorted(set(self.report.problems))
        self.report.notes = sorted(set(self.report.notes))
        return Survey(self.report, sorted(self.instances, key=lambda i: i.path),
                      sorted(set(self.unreadable), key=lambda u: u.path))

    # -- the DICOMDIR ----------------------------------------------------------

    def find_dicomdirs(self) -> list[tuple[str, str]]:
        """(path, folder its File IDs are relative to): the root DICOMDIR first, then any in sub-folders."""
        found: list[tuple[str, str]] = []
        try:
            root = self.medium.resolve(["DICOMDIR"])
        except RefusedPath as exc:
            self.problem("DICOMDIR", exc.reason)
            return []
        if root is not None:
            self.name_note(root, "DICOMDIR")
            found.append((root, ""))
        nested = [p for p in self.medium.files() if "/" in p and normalize_path(p).endswith("/DICOMDIR")]
        for path in sorted(nested, key=lambda p: (p.count("/"), p)):
            base = path.rsplit("/", 1)[0]
            self.name_note(path, f"{base}/DICOMDIR")
            if root is not None:
                self.note(path, f"another DICOMDIR, in a sub-folder: its File IDs are read relative to {base}/")
            else:
                self.problem(path, f"the DICOMDIR is not at the medium root (PS3.10 8.6): "
                                   f"its File IDs are read relative to {base}/")
            found.append((path, base))
        if not found:
            self.problem("DICOMDIR", "no DICOMDIR at the medium root")
        return found

    def check_dicomdir(self, path: str, base: str) -> None:
        with self.warnings_noted(path):
            try:
                with self.medium.open(path) as fp:
                    self.preamble(path, fp.read(132))
                    size = self.medium.size(path)
                    broken = check_complete(fp, size)  # every length, as DCMTK reads it
                    directory = open_directory(fp, size, plain=broken is None)  # a broken one: as pydicom reads it
                if broken:  # reported; a malformed DICOMDIR is walked as pydicom reads it, one cut short is not
                    self.problem(path, broken)
                if broken and broken.startswith(TRUNCATED):
                    return  # its files are found by the scan
                if directory.sop_class() != MEDIA_STORAGE_DIRECTORY:
                    self.problem(path, "not a DICOMDIR: its Media Storage SOP Class is not 1.2.840.10008.1.3.10")
                elif (records := directory.records()) is None:
                    self.problem(path, "the DICOMDIR has no Directory Record Sequence")
                else:
                    self.walk(path, records, directory.first(), base)
            except Exception as exc:  # pydicom raises many kinds of error on hostile bytes
                self.problem(path, f"unreadable DICOMDIR: {one_line(exc)}")

    def walk(self, path: str, records: dict[int, DirectoryRecord], first: int, base: str) -> None:
        """Follow the record offsets (``records`` by offset) from the root entity's ``first`` (PS3.3 F.3.2.1);
        report breaks."""
        visited: set[int] = set()
        leaves: list[tuple[list[str], DirectoryRecord, dict[str, str]]] = []
        pending: list[tuple[int, dict[str, str]]] = [(first, {})]
        while pending:
            offset, parents = pending.pop()
            while offset:
                record = records.get(offset)
                if record is None:
                    self.problem(path, f"record offset {offset} points to no directory record")
                    break
                if offset in visited:
                    self.problem(path, f"directory record at offset {offset} is reached twice (an offset loop)")
                    break
                visited.add(offset)
                try:
                    kind, here, file_id, lower, following = _visit(record, parents)
                except Exception as exc:  # a malformed value in a hostile record
                    self.problem(path, f"unreadable directory record at offset {offset}: {one_line(exc)}")
                    break
                if kind is not None and kind not in DIRECTORY_RECORD_TYPES:
                    what = f"an unknown Directory Record Type {kind!r}" if kind else "no Directory Record Type"
                    self.problem(path, f"directory record at offset {offset} has {what} (PS3.3 F.5 defines the "
                                       "types; PRIVATE is the one for private content)")
                if file_id == []:
                    self.problem(path, f"directory record at offset {offset} has an empty Referenced File ID")
                elif file_id is not None:
                    leaves.append((file_id, record, here))
                if lower:
                    pending.append((lower, here))
                offset = following
        if len(records) > len(visited):
            self.note(path, f"{len(records) - len(visited)} directory records are not reachable from the root")
        if self.listener is not None:
            self.listener.records([_listed(record) for _, record, _ in leaves])
        for file_id, record, parents in leaves:
            self.check_leaf([*base.split("/"), *file_id] if base else file_id, record, parents)

    # -- one referenced instance ------------------------------------------------

    def check_leaf(self, file_id: list[str], record: DirectoryRecord, parents: dict[str, str]) -> None:
        """Resolve, read and compare one instance a leaf record references (File ID from the medium root)."""
        shown = "/".join(file_id)
        try:
            found = self.resolve(file_id)
        except RefusedPath as exc:
            self.refused_ids.add(normalize_path(shown))
            self.unusable(shown, exc.reason, record=record, parents=parents)
            return
        if found is None:
            self.unusable(shown, "referenced by the DICOMDIR but missing", record=record, parents=parents)
            return
        if found in self.referenced:
            self.problem(found, "referenced by more than one directory record")
            return
        self.referenced.add(found)
        self.name_note(found, shown.upper())
        with self.warnings_noted(found):
            header = self.read_header(found, record=record, parents=parents)
            if header is None:
                return
            ds, has_pixels = header.attributes, header.has_pixels
            self.report.instances += 1
            try:
                self.compare(found, ds, record, parents)
                transfer_syntax = ds.meta("TransferSyntaxUID")
                kind = record_type(ds.get("SOPClassUID"), has_pixels=has_pixels)
                self.found(found, header, referenced=True, listed=_listed(record).sop_instance_uid)
            except Exception as exc:  # a malformed value in a hostile file or record
                self.unusable(found, f"unreadable: {one_line(exc)}", record=record, parents=parents)
                return
        self.syntaxes.add((transfer_syntax, kind))
        conformant = is_conformant_file_id(file_id)
        self.conformant &= conformant
        if self.profile is None:
            return
        if not conformant:
            self.problem(found, f"File ID {shown} does not conform to PS3.10 8.2 "
                                "(at most 8 components of 1-8 characters A-Z, 0-9, _)")
        if not self.profile.allows(transfer_syntax, record_type=kind):
            self.problem(found, f"transfer syntax {syntax_name(transfer_syntax)} is not allowed by "
                                f"{self.profile.name} for {kind} records")

    def resolve(self, file_id: list[str]) -> str | None:
        """The file a File ID names, also when one of them has a '.dcm' extension the other lacks."""
        found = self.medium.resolve(file_id)
        if found is None:
            last = file_id[-1]
            other = last[:-4] if last.upper().endswith(".DCM") and len(last) > 4 else f"{last}.DCM"
            found = self.medium.resolve([*file_id[:-1], other])
        return found

    def read_header(
        self, path: str, *, record: DirectoryRecord | None = None, parents: dict[str, str] | None = None
    ) -> _Header | None:
        """Read a file up to its pixel data; None (and a problem) when unusable.

        A PS3.10 file, or a bare data set without preamble or File Meta, which is
        read all the same (PS3.10 7.1 requires both; some writers omit them). A whole
        plain PS3.10 file is read without pydicom (:func:`node.read.header.plain_attributes`).
        """
        ds: Attributes | None = None
        try:
            with self.medium.open(path) as fp:
                head = fp.read(132)
                self.preamble(path, head)
                preamble = head[128:132] == b"DICM"
                if not preamble:
                    fp.seek(0)
                    if not is_dicom(fp.read(_SNIFF_BYTES)):
                        raise _NotDicomFile
                size = self.medium.size(path)
                whole = check_complete(fp, size)
                if whole is not None and whole.startswith(INFLATION_REFUSED):
                    self.unusable(path, whole, record=record, parents=parents)
                    return None
                plain = plain_attributes(fp, size) if preamble and whole is None else None
                if plain is not None:
                    ds, has_pixels, offset = plain
                    complete = True
                else:
                    fp.seek(0)
                    read, has_pixels, complete = read_until_pixels(fp, size, force=not preamble)
                    ds = None if read is None else ReadAttributes(read)
                    offset = data_set_offset(fp)
                # pydicom decodes a value when it is first read: a malformed one raises here, not below.
                directory = ds is not None and ds.meta("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY
                named = ds is not None and bool(ds.get("SOPInstanceUID"))
        except _NotDicomFile:
            self.unusable(path, "not a DICOM file: no 'DICM' prefix after the preamble (PS3.10 7.1)",
                          record=record, parents=parents)
            return None
        except Exception as exc:  # pydicom raises many kinds of error on hostile bytes
            self.unusable(path, f"unreadable: {one_line(exc)}", ds=ds, record=record, parents=parents)
            return None
        if ds is None or not complete:
            self.unusable(path, "truncated: the file ends inside a data element", ds=ds, record=record, parents=parents)
        elif directory:
            return _Header(ds, has_pixels, offset, preamble)  # another DICOMDIR: the caller decides
        elif whole is not None and not whole.startswith(NOT_DICOM):  # pydicom's force reads more
            self.unusable(path, whole, ds=ds, record=record, parents=parents)
        elif not named:
            self.unusable(path, "not a DICOM instance: no SOP Instance UID", ds=ds, record=record, parents=parents)
        else:
            return _Header(ds, has_pixels, offset, preamble)
        return None

    def found(self, path: str, header: _Header, *, referenced: bool, listed: str = "") -> None:
        """Record a readable instance, noting what an importer has to repair (``listed``: the Instance UID
        its record names)."""
        ds = header.attributes
        declared = ds.meta("TransferSyntaxUID")
        actual = ds.encoding()
        syntax = declared if declared and (declared not in _NATIVE or declared == actual) else actual
        uid = ds.get("SOPInstanceUID")
        names_it = (ds.meta("MediaStorageSOPInstanceUID") == uid
                    and ds.meta("MediaStorageSOPClassUID") == ds.get("SOPClassUID"))
        if not header.preamble:
            text = (f"no preamble or File Meta Information (PS3.10 7.1): read as a bare data set "
                    f"in {uid_name(syntax)}")
            (self.problem if referenced else self.note)(path, text)
        elif syntax != declared:
            self.note(path, f"the File Meta Information says {syntax_name(declared) if declared else 'no transfer syntax'}"
                            f" but the data set is in {uid_name(syntax)}")
        elif not names_it:
            self.note(path, "the File Meta Information does not name this instance's SOP Class and Instance UIDs")
        instance = MediumInstance(
            path=path,
            sop_class_uid=ds.get("SOPClassUID"),
            sop_instance_uid=uid,
            transfer_syntax_uid=syntax,
            patient_id=ds.get("PatientID").strip(),
            study_instance_uid=ds.get("StudyInstanceUID").strip(),
            offset=header.offset,
            part10=header.preamble and syntax == declared and names_it,
            referenced=referenced,
            listed=listed == uid,
        )
        self.instances.append(instance)
        if self.listener is not None:
            self.listener.found(instance)

    def compare(self, path: str, ds: Attributes, record: DirectoryRecord, parents: dict[str, str]) -> None:
        """The file against its record (PS3.3 F.3.2.2) and its parent records (F.5)."""
        for keyword, (own, label) in _REFERENCED.items():
            in_record = record.get(keyword)
            in_file = ds.meta(own) if own == "TransferSyntaxUID" else ds.get(own)
            if not in_record:
                self.problem(path, f"its DICOMDIR record has no Referenced {label} in File (PS3.3 F.3.2.2: "
                                   "required in every record that references a file)")
            elif in_file != str(in_record):
                self.problem(path, f"{label} {in_file or '(none)'} in the file differs from "
                                   f"{in_record} in its DICOMDIR record")
        for kind, expected in parents.items():
            own, label = _PARENTS[kind]
            in_file = ds.get(own).strip()
            if not in_file:
                self.note(path, f"{label} is empty in the file; its {kind} record has {expected}")
            elif in_file != expected.strip():
                self.problem(path, f"{label} {in_file} in the file differs from {expected} in its {kind} record")

    def preamble(self, path: str, head: bytes) -> None:
        """An executable header in a DICOM file's preamble is a problem (CVE-2019-11687)."""
        if head[128:132] != b"DICM":
            return
        for magic, what in _EXECUTABLES:
            if head.startswith(magic):
                self.problem(path, f"the preamble holds {what} (CVE-2019-11687)")

    def name_note(self, found: str, expected: str) -> None:
        """Note a name that differs from the upper-case File ID (PS3.10 8.2)."""
        odd = ["lowercase letters"] if found != found.upper() else []
        odd += ["a ';1' version suffix"] if ";" in found else []
        odd += ["a trailing '.'"] if any(p.split(";")[0].endswith(".") for p in found.split("/")) else []
        has_extension, wants_extension = normalize_path(found).endswith(".DCM"), expected.endswith(".DCM")
        odd += ["a '.dcm' extension"] if has_extension and not wants_extension else []
        odd += ["no '.dcm' extension"] if wants_extension and not has_extension else []
        if found != expected:
            self.note(found, f"name on the medium has {' and '.join(odd) or 'another spelling'}; "
                             f"the File ID is {expected}")

    # -- everything else on the medium ---------------------------------------------

    def scan_unreferenced(self, dicomdirs: set[str]) -> None:
        """Every file not reached through a DICOMDIR: DICOM ones are problems (and read), others notes."""
        others: dict[str, list[tuple[str, str]]] = {}  # top folder -> [(path, what)]
        dicom_folders = {p.split("/")[0] for p in self.referenced}
        for path in self.medium.files():
            if path in dicomdirs or path in self.referenced:
                continue
            try:
                with self.medium.open(path) as fp:
                    head = fp.read(_SNIFF_BYTES)
            except Exception as exc:  # an I/O error on a damaged medium
                self.problem(path, f"unreadable: {one_line(exc)}")
                continue
            if is_dicom(head):
                dicom_folders.add(path.split("/")[0])
                self.scanned(path)
            else:
                folder = path.split("/")[0] + "/" if "/" in path else path
                others.setdefault(folder, []).append((path, _what(path, head)))
        pdi = self.is_pdi()
        for folder, found in others.items():
            if len(found) == 1 or folder.rstrip("/") in dicom_folders:
                for path, what in found:
                    self.note(path, f"not DICOM: {what}" + (_NOT_PDI_ROOT if pdi and _unexpected_in_pdi_root(path) else ""))
            else:
                kinds = ", ".join(sorted({what for _, what in found}))
                self.note(folder, f"{len(found)} files, not DICOM: {kinds}")
        for path, reason in self.medium.refused().items():
            if normalize_path(path) not in self.refused_ids:
                if reason == NOT_FOLLOWED:
                    self.note(path, reason)
                else:  # leads out of the medium, or lies past its end
                    self.unusable(path, reason)

    def is_pdi(self) -> bool:
        """A medium is taken for an IHE PDI one when its root holds README.TXT or IHE_PDI/."""
        return any(normalize_path(p) == "README.TXT" or normalize_path(p).startswith(f"{PDI_WEB_FOLDER}/")
                   for p in self.medium.files())

    def scanned(self, path: str) -> None:
        """A DICOM file no DICOMDIR references: read it like a referenced one."""
        with self.warnings_noted(path):
            header = self.read_header(path)
            if header is None:
                return
            if header.attributes.meta("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
                self.note(path, "another DICOMDIR (Media Storage Directory Storage): not an instance")
                return
            self.problem(path, "not referenced by the DICOMDIR")
            try:
                self.found(path, header, referenced=False)
            except Exception as exc:  # a malformed value in a hostile file
                self.unusable(path, f"unreadable: {one_line(exc)}")


class _NotDicomFile(Exception):
    """A file without 'DICM' that is no bare data set either."""


def _listed(record: DirectoryRecord) -> Listed:
    """The Referenced SOP Class, Transfer Syntax and SOP Instance UIDs in File of a record; "" when
    absent or unreadable."""
    values = []
    for keyword in ("ReferencedSOPClassUIDInFile", "ReferencedTransferSyntaxUIDInFile",
                    "ReferencedSOPInstanceUIDInFile"):
        try:
            values.append(str(record.get(keyword, "") or "").strip())
        except Exception:  # a malformed value in a hostile record: compare() reports it
            values.append("")
    return Listed(*values)


def _visit(
    record: DirectoryRecord, parents: dict[str, str]
) -> tuple[str | None, dict[str, str], list[str] | None, int, int]:
    """Decode one directory record (PS3.3 F.3.2.2).

    Returns its Directory Record Type (None for an inactive record), the parent
    values its children inherit, its Referenced File ID (None when it has none),
    and the offsets of its lower level and of the next record.
    """
    following = int(record.get("OffsetOfTheNextDirectoryRecord") or 0)
    if record.get("RecordInUseFlag", 0xFFFF) == 0:  # an inactive record
        return None, parents, None, 0, following
    kind = str(record.get("DirectoryRecordType", "")).strip()
    if kind in _PARENTS:
        parents = {**parents, kind: str(record.get(_PARENTS[kind][0], ""))}
    file_id = None
    if "ReferencedFileID" in record:  # CS, VM 1-8: a str or a MultiValue (a list)
        value = record.get("ReferencedFileID") or []
        file_id = [value] if isinstance(value, str) else [str(c) for c in value]
    return kind, parents, file_id, int(record.get("OffsetOfReferencedLowerLevelDirectoryEntity") or 0), following


#: Said of a file that IHE PDI does not allow in the root (IHE RAD TF-3 4.47). A note, not a problem:
#: it does not stop the DICOM content from being read or imported (DESIGN.md), but whoever made the
#: medium should hear that it is not the PDI medium it claims to be.
_NOT_PDI_ROOT = "; unexpected in the root of an IHE PDI medium, which holds only DICOMDIR, README.TXT, INDEX.HTM and folders"


def _unexpected_in_pdi_root(path: str) -> bool:
    name = normalize_path(path)
    return "/" not in name and name not in PDI_ROOT_FILES


def _what(path: str, head: bytes) -> str:
    """A short label for a non-DICOM file: what IHE PDI and viewer media legitimately carry."""
    name = normalize_path(path)
    base = name.rsplit("/", 1)[-1]
    labels = (
        ("IHE PDI content", name.startswith("IHE_PDI/")),
        ("README", base.startswith("README")),
        ("IHE PDI index page", base in ("INDEX.HTM", "INDEX.HTML")),
        ("viewer or program (never run)", head.startswith((b"MZ", b"\x7fELF")) or base.endswith(_PROGRAMS)),
    )
    return next((label for label, match in labels if match), "other file")
