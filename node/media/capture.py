"""Non-DICOM files into DICOM: images become Secondary Capture, PDFs Encapsulated PDF.

The seed's Appendix A lists the attributes a conversion to Secondary Capture
creates; we write those that apply to a file on disk, in the Secondary Capture
Image IOD (PS3.3 A.8.1, Conversion Type ``WSD``) or, for a PDF, the
Encapsulated PDF IOD (PS3.3 A.45.1), never a Secondary Capture of a document.

Whose file it is, in order of precedence (the first source that names a patient
wins whole: fields of two sources are never mixed into one patient):

1. a sidecar beside the file, ``NAME.yaml``, ``NAME.yml`` or ``NAME.json`` for ``NAME.jpg``;
2. a ``capture.yaml`` / ``capture.yml`` / ``capture.json`` in the file's folder;
3. the ``burn`` flags (``--patient-id``, ``--patient-name``, ...);
4. the DICOM study of the same burn, when it holds exactly one study.

The General Equipment module names the node that made the instance (:class:`Equipment`: Manufacturer
``medianode``, Software Versions the package's, Institution Name ``burn.institution``, the rest
``node.identity``); what the node was not told is left out where the module is optional (Type 3), never
invented. The seed's Table 7 lists what such a conversion may create; those no file on disk gives a value
to (calibration, spatial resolution, acquisition number, admitting diagnoses, patient comments, pixel
padding, MR and CT acquisition details) are not written, and Patient's Age is derived from the birth and
study dates when both are known. Table 7's (0008,1000) and (0008,1020) are written where PS3.6 puts
those attributes, Device Serial Number (0018,1000) and Software Versions (0018,1020).

A source names a patient with ``patient_id`` and ``patient_name`` (study keys
are optional: without ``study_uid`` the captures of one identity make one new
study); ``study_uid`` alone joins that DICOM study of the burn. Nothing else
is guessed: a file with no patient is a :class:`~node.errors.UsageError`
naming it (exit 2), never an invented patient. Captures join their study in a
new series of their own, one per modality (OT for images, DOC for documents).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, Literal

from node import __version__, dcmio, dicom
from node.errors import UsageError, one_line
from node.media.sources import Scan, SourceInstance, instance, read
from node.tags import ITEM, PIXEL_DATA, SEQUENCE_DELIMITATION_ITEM, SERIES_NUMBER, STUDY_INSTANCE_UID

if TYPE_CHECKING:
    import numpy as np
    from pydicom import Dataset

    from node.config import NodeIdentity

CaptureKind = Literal["jpeg", "png", "tiff", "pdf"]
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # PS3.4 B.5, Secondary Capture Image Storage
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"  # PS3.4 B.5, Encapsulated PDF Storage
#: Magic bytes (the file's first bytes) of each kind we convert.
_MAGIC: tuple[tuple[bytes, CaptureKind], ...] = (
    (b"\xff\xd8\xff", "jpeg"),  # ISO/IEC 10918-1 SOI, then the first marker
    (b"\x89PNG\r\n\x1a\n", "png"),  # ISO/IEC 15948 5.2
    (b"II*\0", "tiff"),  # TIFF 6.0 section 2, little-endian
    (b"MM\0*", "tiff"),  # big-endian
    (b"%PDF-", "pdf"),  # ISO 32000-1 7.5.2
)
_SIDECAR_SUFFIXES = (".yaml", ".yml", ".json")
_FOLDER_SIDECAR = "capture"


class CannotCapture(Exception):
    """A recognised file that cannot be converted (corrupt, or a form we do not take); ``str()`` says why."""


def kind(path: str) -> CaptureKind | None:
    """What ``path`` is by its magic bytes: "jpeg", "png", "tiff", "pdf", or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((k for magic, k in _MAGIC if head.startswith(magic)), None)


# -- values: what a sidecar or a flag may say ----------------------------------------

Rule = Callable[[str], str]


def _text(vr: str, max_len: int, *, multi: bool = False) -> Rule:
    """A text value of ``vr`` (PS3.5 6.2): no control character, at most ``max_len`` long, no backslash
    unless ``multi``-character text (ST) allows one."""

    def rule(text: str) -> str:
        text = text.strip()
        if not text or any(c < " " or "\x7f" <= c < "\xa0" for c in text):
            raise ValueError(f"is not a {vr} value: {'it is empty' if not text else 'it holds a control character'}")
        if len(text) > max_len:
            raise ValueError(f"is longer than {max_len} characters (PS3.5 6.2: {vr})")
        if "\\" in text and not multi:
            raise ValueError(f"holds a backslash, which separates values in {vr} (PS3.5 6.2)")
        return text

    return rule


def _pattern(regex: str, formats: tuple[str, ...], out: str, what: str) -> Rule:
    """A date or time in one of ``formats`` (matching ``regex``), written as ``out`` (DA / TM, PS3.5 6.2)."""

    def rule(text: str) -> str:
        if re.fullmatch(regex, text.strip()):
            for fmt in formats:
                try:
                    return datetime.strptime(text.strip(), fmt).strftime(out)
                except ValueError:
                    continue
        raise ValueError(f"is not {what}")

    return rule


def _choice(*options: str, what: str) -> Rule:
    def rule(text: str) -> str:
        if text.strip().upper() not in options:
            raise ValueError(f"is not {what}")
        return text.strip().upper()

    return rule


def _uid(text: str) -> str:
    from pydicom.uid import UID

    if not UID(text.strip()).is_valid:
        raise ValueError("is not a UID (PS3.5 9.1: digits and dots, at most 64 characters, no leading zeros)")
    return text.strip()


#: The identity keys (sidecar keys and, spelled ``--patient-id``, burn flags) and their checks.
IDENTITY_RULES: dict[str, Rule] = {
    "patient_name": _text("PN", 64),
    "patient_id": _text("LO", 64),
    "birth_date": _pattern(r"\d{8}|\d{4}-\d{2}-\d{2}", ("%Y%m%d", "%Y-%m-%d"), "%Y%m%d", "a date (YYYYMMDD or YYYY-MM-DD)"),
    "sex": _choice("M", "F", "O", what="M, F or O (PS3.3 C.7.1.1)"),
    "study_uid": _uid,
    "study_date": _pattern(r"\d{8}|\d{4}-\d{2}-\d{2}", ("%Y%m%d", "%Y-%m-%d"), "%Y%m%d", "a date (YYYYMMDD or YYYY-MM-DD)"),
    "study_time": _pattern(r"\d{6}|\d{2}:\d{2}(:\d{2})?", ("%H%M%S", "%H:%M:%S", "%H:%M"), "%H%M%S", "a time (HHMMSS or HH:MM[:SS])"),
    "study_description": _text("LO", 64),
    "accession_number": _text("SH", 16),
    "referring_physician": _text("PN", 64),
    "institution": _text("LO", 64),
}
#: What a sidecar may say about its file(s) besides the identity.
SIDECAR_RULES: dict[str, Rule] = IDENTITY_RULES | {
    "document_title": _text("ST", 1024, multi=True),
    "series_description": _text("LO", 64),
    "burned_in_annotation": _choice("YES", "NO", what="YES or NO (PS3.3 C.7.6.1.1.7)"),
}


@dataclass(frozen=True)
class Equipment:
    """The node as the General Equipment (PS3.3 C.7.5.1) and SC Equipment (C.8.6.1) of its captures."""

    #: None: nothing known (a burn without a configuration; the configuration module stays unloaded).
    identity: NodeIdentity | None = None
    #: Institution Name (0008,0080): ``burn.institution``; written when it is a Long String (64 at most).
    institution: str = ""


@dataclass(frozen=True)
class Identity:
    """The patient and study a captured file belongs to (PS3.3 C.7.1.1, C.7.2.1)."""

    patient_name: str
    patient_id: str
    birth_date: str = ""
    sex: str = ""
    #: None: a new study, one per identity.
    study_uid: str | None = None
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    accession_number: str = ""
    referring_physician: str = ""
    institution: str = ""
    study_id: str = ""
    #: Specific Character Set of a joined study's values ("" when they are ours, chosen on writing).
    charset: str = ""


def check_flags(flags: Mapping[str, str]) -> dict[str, str]:
    """Check the identity flags of ``burn`` (keys of :data:`IDENTITY_RULES`); a bad one is a UsageError."""
    checked = {}
    for key, value in flags.items():
        try:
            checked[key] = IDENTITY_RULES[key](value)
        except ValueError as exc:
            raise UsageError(f"{_flag(key)}: {value!r} {exc}") from None
    return checked


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


# -- the burn's side: which files, whose, in which series ------------------------------


@dataclass
class _Plan:
    path: str
    kind: CaptureKind
    identity: Identity
    #: Sidecar values about the file itself (document_title, series_description, burned_in_annotation).
    extras: dict[str, str]
    #: Where the identity came from, for the report.
    origin: str


def capture_sources(found: Scan, *, staging: str, flags: Mapping[str, str], keep_jpeg: bool,
                    equipment: Equipment | None = None) -> list[dict[str, str]]:
    """Turn the images and PDFs among ``found.skipped`` into instances, in place.

    Each converted file is written to ``staging`` and read back like any source;
    ``found.instances`` gains it, a file that cannot be converted moves to
    ``found.unreadable`` with its reason, and the sidecars used are reported as
    such. Every file's patient is resolved before anything is written, so a
    missing identity (UsageError) stops the burn at once. Returns the report's
    ``converted`` rows. ``keep_jpeg``: the profile allows JPEG Baseline, so a
    baseline JPEG is wrapped as it is.
    """
    given = check_flags(flags)
    targets = [(path, k) for path, _ in found.skipped if (k := kind(path))]
    if not targets:
        return []
    studies: dict[str, SourceInstance] = {}
    for inst in found.instances:
        studies.setdefault(inst.text(STUDY_INSTANCE_UID), inst)
    from_flags = _identity(given, "the burn flags", _flag, studies)
    sidecars: dict[str, dict[str, str]] = {}
    plans = [_plan(path, k, from_flags, studies, sidecars) for path, k in targets]
    now = datetime.now()
    placed = _place(plans, found.instances, now)

    converted = []
    for n, (plan, (series_uid, series_number, number)) in enumerate(zip(plans, placed)):
        dest = os.path.join(staging, f"C{n:07d}")
        try:
            what = capture(plan.path, dest, plan.identity, series_uid=series_uid, series_number=series_number,
                           instance_number=number, keep_jpeg=keep_jpeg, extras=plan.extras, now=now,
                           equipment=equipment)
        except CannotCapture as exc:
            found.unreadable.append((plan.path, str(exc)))
            continue
        captured = instance(read(dest), source=plan.path)
        if captured is None:  # capture() writes both UIDs: this would be a defect, reported as such
            found.unreadable.append((plan.path, "the captured file lacks its SOP Instance or Study Instance UID"))
            continue
        captured.conversion = f"{what}, {plan.origin}"
        found.instances.append(captured)
        converted.append({"path": plan.path, "conversion": captured.conversion})
    done = {p.path for p in plans}
    used = {s for s, fields in sidecars.items() if fields}
    found.skipped = [(p, "identity sidecar of the images and documents beside it" if p in used else r)
                     for p, r in found.skipped if p not in done]
    return converted


def _plan(path: str, k: CaptureKind, from_flags: tuple[Identity, str] | None, studies: dict[str, SourceInstance],
          sidecars: dict[str, dict[str, str]]) -> _Plan:
    """Find whose ``path`` is, in the order of precedence of the module docstring."""
    folder, name = os.path.split(path)
    stem = os.path.splitext(name)[0]
    extras: dict[str, str] = {}
    identity: tuple[Identity, str] | None = None
    for base in (stem, _FOLDER_SIDECAR):
        sidecar = next((p for s in _SIDECAR_SUFFIXES if os.path.isfile(p := os.path.join(folder, base + s))), None)
        if sidecar is None:
            continue
        if sidecar not in sidecars:
            from node.yamlcheck import load_sidecar  # YAML loads only when a sidecar is there

            sidecars[sidecar] = load_sidecar(sidecar, SIDECAR_RULES)
        fields = sidecars[sidecar]
        extras = {k: v for k, v in fields.items() if k not in IDENTITY_RULES} | extras
        identity = identity or _identity(fields, sidecar, lambda key: key, studies)
    identity = identity or from_flags
    if identity is None and len(studies) == 1:
        identity = _joined(next(iter(studies.values()))), "joined the study of the burn's DICOM files"
    if identity is None:
        held = f" (the burn holds {len(studies)} studies: give --study-uid)" if studies else ""
        raise UsageError(
            f"{path}: whose {k.upper()} is this? Give --patient-id and --patient-name, a sidecar {stem}.yaml "
            f"beside it, or burn it with the one DICOM study it belongs to{held}; no patient is invented"
        )
    return _Plan(path, k, identity[0], extras, identity[1])


def _identity(fields: Mapping[str, str], where: str, spell: Callable[[str], str],
              studies: dict[str, SourceInstance]) -> tuple[Identity, str] | None:
    """The identity ``fields`` name, None when they name none; half a patient is a UsageError."""
    named = {k: v for k, v in fields.items() if k in IDENTITY_RULES}
    if not named:
        return None
    source = where if where == "the burn flags" else os.path.basename(where)
    if "patient_id" in named or "patient_name" in named:
        missing = [spell(k) for k in ("patient_id", "patient_name") if k not in named]
        if missing:
            raise UsageError(f"{where}: {' and '.join(missing)} missing: a patient is named by ID and name together")
        return Identity(**named), f"patient {named['patient_id']!r} from {source}"
    if set(named) == {"study_uid"}:
        ref = studies.get(named["study_uid"])
        if ref is None:
            raise UsageError(f"{where}: study {named['study_uid']} is not among the DICOM files of this burn; "
                             f"name the patient too ({spell('patient_id')}, {spell('patient_name')})")
        return _joined(ref), f"joined study {named['study_uid']} ({source})"
    keys = ", ".join(spell(k) for k in named)
    raise UsageError(f"{where}: {keys} given without a patient ({spell('patient_id')} and {spell('patient_name')})")


def _joined(ref: SourceInstance) -> Identity:
    """The identity of the DICOM study ``ref`` belongs to, decoded in its own character set."""
    from pydicom import dcmread

    fields = {"patient_name": "PatientName", "patient_id": "PatientID", "birth_date": "PatientBirthDate",
              "sex": "PatientSex", "study_uid": "StudyInstanceUID", "study_date": "StudyDate", "study_time": "StudyTime",
              "study_description": "StudyDescription", "accession_number": "AccessionNumber",
              "referring_physician": "ReferringPhysicianName", "institution": "InstitutionName", "study_id": "StudyID"}
    ds = dcmread(ref.header.path, stop_before_pixels=True, force=True,
                 specific_tags=[*fields.values(), "SpecificCharacterSet"])
    charset = ds.get("SpecificCharacterSet") or ""
    return Identity(**{key: str(ds.get(keyword) or "") for key, keyword in fields.items()},
                    charset=charset if isinstance(charset, str) else "\\".join(charset))


def _place(plans: list[_Plan], instances: list[SourceInstance], now: datetime) -> list[tuple[str, int, int]]:
    """(Series Instance UID, Series Number, Instance Number) of each plan; new studies get their UID here.

    One new study per identity without a Study Instance UID, dated now (and its Study
    ID, which directory records need, the minute of its making); one new
    series per study and modality, numbered after the study's series in the burn.
    """
    new_studies: dict[Identity, Identity] = {}
    for plan in plans:
        if plan.identity.study_uid is None:
            plan.identity = new_studies.setdefault(plan.identity, replace(
                plan.identity, study_uid=dicom.new_uid(), study_date=plan.identity.study_date or now.strftime("%Y%m%d"),
                study_time=plan.identity.study_time or now.strftime("%H%M%S"), study_id=now.strftime("%Y%m%d%H%M")))
    numbers: dict[str, int] = {}
    for inst in instances:
        study, number = inst.text(STUDY_INSTANCE_UID), inst.text(SERIES_NUMBER)
        if number.isdigit():
            numbers[study] = max(numbers.get(study, 0), int(number))
    series: dict[tuple[str, str], _Series] = {}
    placed = []
    for plan in plans:
        study = plan.identity.study_uid or ""
        key = (study, "DOC" if plan.kind == "pdf" else "OT")
        if key not in series:
            numbers[study] = numbers.get(study, 0) + 1
            series[key] = _Series(dicom.new_uid(), numbers[study])
        one = series[key]
        one.count += 1
        placed.append((one.uid, one.number, one.count))
    return placed


@dataclass
class _Series:
    uid: str
    number: int
    count: int = 0


# -- one file ----------------------------------------------------------------------------


def capture(path: str, dest: str, identity: Identity, *, series_uid: str, series_number: int = 1,
            instance_number: int = 1, keep_jpeg: bool = False, extras: Mapping[str, str] | None = None,
            now: datetime | None = None, equipment: Equipment | None = None) -> str:
    """Write ``path`` (JPEG, PNG, TIFF or PDF) to ``dest`` as a DICOM Part 10 file; return what was done.

    ``identity.study_uid`` must be set. Images become Secondary Capture
    (MONOCHROME2 or RGB; alpha dropped; 16-bit grey kept); a baseline JPEG is
    wrapped as it is when ``keep_jpeg``, else decoded. A PDF becomes Encapsulated
    PDF. ``extras`` are a sidecar's document_title, series_description and
    burned_in_annotation; ``equipment`` names the node (none: only what the package knows).
    Raises :class:`CannotCapture` with the reason.
    """
    assert identity.study_uid, "capture() needs a Study Instance UID"
    extras = extras or {}
    now = now or datetime.now()
    equipment = equipment or Equipment()
    what = kind(path)
    if what is None:
        raise CannotCapture("not a JPEG, PNG, TIFF or PDF file")
    try:
        content = datetime.fromtimestamp(os.stat(path).st_mtime)
        with open(path, "rb") as src:
            if what == "pdf":
                return _write_pdf(src, dest, identity, series_uid, series_number, instance_number, extras, now, content,
                                  equipment)
            return _write_image(src, what, dest, identity, series_uid, series_number, instance_number, keep_jpeg,
                                extras, now, content, equipment)
    except CannotCapture:
        raise
    except OSError as exc:
        raise CannotCapture(f"cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - the codecs raise many kinds on damaged data; each refuses the file
        raise CannotCapture(f"cannot decode the {what.upper()} image: {one_line(exc)}") from None


def _dataset(identity: Identity, *, sop_class: str, modality: str, series_uid: str, series_number: int,
             instance_number: int, series_description: str, now: datetime, content: datetime,
             equipment: Equipment) -> Dataset:
    """The modules both IODs share: Patient, General Study, the series, General and SC Equipment
    (Conversion Type WSD, PS3.3 C.8.6.1), SOP Common, and the content's date and number."""
    from pydicom import Dataset

    ds = Dataset()
    if identity.charset:
        ds.SpecificCharacterSet = identity.charset.split("\\")
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, dicom.new_uid()
    ds.StudyDate, ds.StudyTime = identity.study_date, identity.study_time
    ds.ContentDate, ds.ContentTime = content.strftime("%Y%m%d"), content.strftime("%H%M%S")
    ds.AccessionNumber = identity.accession_number
    ds.Modality = modality
    ds.ConversionType = "WSD"  # workstation (PS3.3 C.8.6.1)
    _equipment(ds, equipment, identity.institution)
    ds.ReferringPhysicianName = identity.referring_physician
    if identity.study_description:
        ds.StudyDescription = identity.study_description
    ds.SeriesDescription = series_description
    ds.PatientName, ds.PatientID = identity.patient_name, identity.patient_id
    ds.PatientBirthDate, ds.PatientSex = identity.birth_date, identity.sex
    if age := patient_age(identity.birth_date, identity.study_date):
        ds.PatientAge = age
    ds.StudyInstanceUID, ds.SeriesInstanceUID = identity.study_uid, series_uid
    ds.StudyID = identity.study_id
    ds.SeriesNumber, ds.InstanceNumber = series_number, instance_number
    return ds


def _equipment(ds: Dataset, equipment: Equipment, institution: str) -> None:
    """General Equipment (PS3.3 C.7.5.1) and SC Equipment (C.8.6.1): the node; Type 3 values only when known.
    Institution Name is ``burn.institution``, else the one the patient's source named (``institution``)."""
    from node.config import NodeIdentity

    node = equipment.identity or NodeIdentity()
    ds.Manufacturer = "medianode"
    known = {
        "InstitutionName": equipment.institution if _long_string(equipment.institution) else institution,
        "InstitutionAddress": node.institution_address,
        "StationName": node.station_name,
        "InstitutionalDepartmentName": node.department,
        "ManufacturerModelName": node.manufacturer_model_name,
        "DeviceSerialNumber": node.device_serial_number,
        "SecondaryCaptureDeviceID": node.station_name,
    }
    for keyword, value in known.items():
        if value:
            setattr(ds, keyword, value)
    ds.SoftwareVersions = __version__
    ds.SecondaryCaptureDeviceManufacturer = "medianode"
    ds.SecondaryCaptureDeviceManufacturerModelName = node.manufacturer_model_name or "medianode"
    ds.SecondaryCaptureDeviceSoftwareVersions = __version__


def _long_string(text: str) -> bool:
    """Whether ``text`` is a value of LO (PS3.5 Table 6.2-1): 1 to 64 characters, no backslash."""
    return 0 < len(text) <= 64 and "\\" not in text


def patient_age(birth_date: str, study_date: str) -> str:
    """Patient's Age (0010,1010, AS: PS3.5 6.2) at the study, from two DA values; "" when either is unknown.

    Whole years from the second birthday, else months from the first month, else days.

    >>> patient_age("19610203", "20260202"), patient_age("20250101", "20250315"), patient_age("20250101", "")
    ('064Y', '002M', '')
    """
    try:
        born, seen = datetime.strptime(birth_date, "%Y%m%d"), datetime.strptime(study_date, "%Y%m%d")
    except ValueError:
        return ""
    if seen < born:
        return ""
    months = (seen.year - born.year) * 12 + seen.month - born.month - (seen.day < born.day)
    if months >= 24:
        return f"{months // 12:03d}Y"
    if months >= 1:
        return f"{months:03d}M"
    return f"{(seen - born).days:03d}D"


_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})


def _save(ds: Dataset, dest: str, transfer_syntax: str, tail: Callable[[BinaryIO], None] | None = None) -> None:
    """Write File Meta (:func:`node.dcmio.file_meta`) and ``ds`` in Explicit VR Little Endian, then ``tail``'s
    elements, which must sort after every element of ``ds`` (streamed bulk data)."""
    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    if not ds.get("SpecificCharacterSet") and any(e.VR in _TEXT_VRS and not str(e.value).isascii() for e in ds):
        ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8 (PS3.3 C.12.1.1.2), for values beyond ASCII
    with open(dest, "wb") as f:
        f.write(dcmio.file_meta(ds.SOPClassUID, ds.SOPInstanceUID, transfer_syntax))
        fp = DicomFileLike(f)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
        if tail:
            tail(f)


def _copy(src: BinaryIO, dst: BinaryIO) -> int:
    """Stream ``src`` from its start into ``dst`` (DESIGN.md invariant 4); return the bytes copied."""
    src.seek(0)
    n = 0
    while chunk := src.read(1 << 20):
        dst.write(chunk)
        n += len(chunk)
    return n


# -- Encapsulated PDF (PS3.3 A.45.1, C.24.2) ---------------------------------------------------

MIME_TYPE, ENCAPSULATED_DOCUMENT, DOCUMENT_LENGTH = 0x00420012, 0x00420011, 0x00420015


def _write_pdf(src: BinaryIO, dest: str, identity: Identity, series_uid: str, series_number: int,
               instance_number: int, extras: Mapping[str, str], now: datetime, content: datetime,
               equipment: Equipment) -> str:
    size = os.fstat(src.fileno()).st_size
    src.seek(max(0, size - 1024))
    if b"%%EOF" not in src.read():
        raise CannotCapture("truncated PDF: no %%EOF marker at its end (ISO 32000-1 7.5.5)")
    ds = _dataset(identity, sop_class=ENCAPSULATED_PDF, modality="DOC", series_uid=series_uid,
                  series_number=series_number, instance_number=instance_number,
                  series_description=extras.get("series_description", "Documents"), now=now, content=content,
                  equipment=equipment)
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = extras.get("burned_in_annotation", "YES")
    ds.DocumentTitle = extras.get("document_title") or os.path.splitext(os.path.basename(src.name))[0][:1024]
    ds.ConceptNameCodeSequence = []

    def tail(f: BinaryIO) -> None:
        f.write(dcmio.long_header(ENCAPSULATED_DOCUMENT, "OB", size + size % 2))
        if _copy(src, f) != size:
            raise CannotCapture("the PDF changed while it was read")
        f.write(b"\0" * (size % 2))  # OB padding (PS3.5 7.1.1); its length says where the PDF ends
        f.write(dcmio.encode(MIME_TYPE, "LO", "application/pdf"))
        f.write(dcmio.encode(DOCUMENT_LENGTH, "UL", struct.pack("<L", size)))

    _save(ds, dest, dicom.EXPLICIT_VR_LE, tail)
    return "PDF as Encapsulated PDF"


# -- Secondary Capture (PS3.3 A.8.1) ----------------------------------------------------------



def _write_image(src: BinaryIO, what: CaptureKind, dest: str, identity: Identity, series_uid: str, series_number: int,
                 instance_number: int, keep_jpeg: bool, extras: Mapping[str, str], now: datetime,
                 content: datetime, equipment: Equipment) -> str:
    import imagecodecs

    ds = _dataset(identity, sop_class=SECONDARY_CAPTURE, modality="OT", series_uid=series_uid,
                  series_number=series_number, instance_number=instance_number,
                  series_description=extras.get("series_description", "Secondary Capture"), now=now, content=content,
                  equipment=equipment)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.Laterality = ds.PatientOrientation = ""  # Type 2C (PS3.3 C.7.3.1, C.7.6.1): unknown for a file on disk
    ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.BurnedInAnnotation = extras.get("burned_in_annotation", "YES")
    ds.DigitalImageFormatAcquired = what.upper()
    data = src.read()
    frame = jpeg_frame(data) if what == "jpeg" else None
    if frame is not None and len(frame.components) not in (1, 3):
        raise CannotCapture(f"JPEG of {len(frame.components)} components (CMYK?): only grey and colour are converted")
    decode = {"jpeg": imagecodecs.jpeg8_decode, "png": imagecodecs.png_decode, "tiff": imagecodecs.tiff_decode}[what]
    pixels = decode(data)  # a wrapped JPEG is decoded too: a file no decoder reads is refused, not burned
    if frame is not None:
        ds.LossyImageCompression = "01"  # PS3.3 C.7.6.1.1.5: the source was lossy, whatever we do now
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.LossyImageCompressionRatio = f"{pixels.nbytes / len(data):.2f}"[:16]
    if frame is not None and keep_jpeg and frame.baseline:
        _image_pixel(ds, frame.rows, frame.columns, frame.photometric, 8, 8)

        def tail(f: BinaryIO) -> None:  # PS3.5 A.4: one fragment, the JPEG file as it is
            f.write(dcmio.long_header(PIXEL_DATA, "OB", dcmio.UNDEFINED))
            f.write(dcmio.item_header(ITEM, 0))  # empty Basic Offset Table
            f.write(dcmio.item_header(ITEM, len(data) + len(data) % 2) + data + b"\0" * (len(data) % 2))
            f.write(dcmio.item_header(SEQUENCE_DELIMITATION_ITEM, 0))

        _save(ds, dest, dicom.JPEG_BASELINE, tail)
        return f"JPEG as Secondary Capture, wrapped as it is ({frame.photometric})"
    pixels = _samples(pixels, what)
    photometric = "MONOCHROME2" if pixels.ndim == 2 else "RGB"
    bits = 8 * pixels.itemsize
    _image_pixel(ds, pixels.shape[0], pixels.shape[1], photometric, bits, frame.precision if frame else bits)
    raw = pixels.astype(f"<u{pixels.itemsize}").tobytes()
    ds.PixelData = raw + b"\0" * (len(raw) % 2)
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"
    _save(ds, dest, dicom.EXPLICIT_VR_LE)
    decoded = ", decoded" if frame is not None else ""
    return f"{what.upper()} as Secondary Capture{decoded} ({photometric}, {bits} bits)"


def _image_pixel(ds: Dataset, rows: int, columns: int, photometric: str, bits: int, stored: int) -> None:
    """The Image Pixel module (PS3.3 C.7.6.3) of one frame, unsigned, colour-by-pixel (12-bit JPEG: ``stored`` 12)."""
    ds.SamplesPerPixel = 1 if photometric == "MONOCHROME2" else 3
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, stored, stored - 1, 0


def _samples(pixels: np.ndarray, what: str) -> np.ndarray:
    """Grey (rows, columns) or RGB (rows, columns, 3) samples of 8 or 16 bits; alpha dropped."""
    import numpy as np

    if pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        pixels = pixels[..., :-1]  # grey + alpha, RGB + alpha
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise CannotCapture(f"{what.upper()} image of shape {pixels.shape}: only grey and RGB images are converted")
    if pixels.dtype.kind != "u" or pixels.itemsize not in (1, 2):  # bilevel, signed, float: refused, not guessed
        raise CannotCapture(f"{what.upper()} samples of type {pixels.dtype}: only 8- and 16-bit unsigned are converted")
    return np.ascontiguousarray(pixels)


@dataclass(frozen=True)
class JpegFrame:
    """What a JPEG's frame header (SOFn, ISO/IEC 10918-1 B.2.2) and APP markers say."""

    marker: int
    precision: int
    rows: int
    columns: int
    #: (component id, horizontal, vertical sampling factor) per component.
    components: tuple[tuple[int, int, int], ...]
    #: Adobe APP14 colour transform (0: none, RGB), or None without the marker.
    adobe_transform: int | None

    @property
    def baseline(self) -> bool:
        """Process 1 (PS3.5 A.4.1, JPEG Baseline .50): SOF0, 8 bits, grey or three components, rows known."""
        return self.marker == 0xC0 and self.precision == 8 and len(self.components) in (1, 3) and self.rows > 0

    @property
    def photometric(self) -> str:
        """PS3.5 8.2.1: MONOCHROME2; RGB for untransformed components; YBR_FULL_422 when the
        chrominance is subsampled, else YBR_FULL."""
        if len(self.components) == 1:
            return "MONOCHROME2"
        if self.adobe_transform == 0 or bytes(c[0] for c in self.components) == b"RGB":
            return "RGB"
        return "YBR_FULL" if len({c[1:] for c in self.components}) == 1 else "YBR_FULL_422"


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length (B.1.1.3)


def jpeg_frame(data: bytes) -> JpegFrame:
    """Read the marker segments of a JPEG up to its frame header (ISO/IEC 10918-1 B.1.1, B.2.2)."""
    if not data.startswith(b"\xff\xd8"):
        raise CannotCapture("not a JPEG: no SOI marker")
    pos, adobe = 2, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise CannotCapture(f"damaged JPEG: no marker at offset {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        body = data[pos + 4:pos + 2 + length]
        if marker in _SOF and len(body) >= 6:
            count = body[5]
            comps = tuple((body[6 + 3 * i], body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(count)
                          if len(body) >= 9 + 3 * i)
            if len(comps) != count:
                raise CannotCapture("damaged JPEG: a short frame header")
            rows, columns = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            return JpegFrame(marker, body[0], rows, columns, comps, adobe)
        if marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        if marker in (0xD9, 0xDA):
            break
        pos += 2 + length
    raise CannotCapture("damaged JPEG: no frame header (SOF) before the image data")
