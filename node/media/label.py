"""The label record of one volume: what is printed on the disc and told in its README.TXT.

IHE PDI asks that a medium say, on its outside, whose it is and what it holds: the patient's
name, the media creation date, the originating institution, and "DICOM ONLY" or "DICOM PLUS WEB"
(IHE RAD TF-3 4.47, RAD-47 "Distribute Imaging Information on Media", media identification;
summarised at https://wiki.ihe.net/index.php/Portable_Data_for_Imaging). :func:`make_label`
computes that record from the file-set's tree, with the ID, birth date, studies and modalities a
disc publisher's label fields usually carry and "volume n of m" from the caller (who knows how a
patient's studies were split). ``to_dict()`` is what ``BurnReport.label`` holds for the outputs.

Texts are decoded from each record's Specific Character Set (PS3.5 6.1) with pydicom, so a
Japanese or Greek name reads as such, in UTF-8, on the label and in the README.TXT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

from node.media.directory import Node, Tree
from node.tags import (
    MODALITY,
    PATIENT_BIRTH_DATE,
    PATIENT_ID,
    PATIENT_NAME,
    STUDY_DATE,
    STUDY_DESCRIPTION,
)

#: What the medium holds, in the words IHE PDI uses for the label.
DICOM_ONLY, DICOM_PLUS_WEB = "DICOM ONLY", "DICOM PLUS WEB"
_PN_DELIMITERS = {0x5E, 0x3D}  # '^' and '=' (PS3.5 6.2.1): each component group may switch character set


def key_text(node: Node, tag: int) -> str:
    """A directory record key's value as text, decoded from the record's Specific Character Set.

    The keys are Explicit VR Little Endian elements of short-form VRs (PN, LO, SH, CS, DA, IS),
    so the value starts at byte 8 (PS3.5 7.1.2). Plain ASCII is the default repertoire of every
    character set, so only other bytes need pydicom's decoders (and a CD's burn does not load it).
    """
    raw = node.keys.get(tag)
    if not raw or len(raw) <= 8:
        return ""
    if raw[8:].isascii() and b"\x1b" not in raw[8:]:  # no ISO 2022 escape switching the repertoire
        return raw[8:].decode("ascii").strip(" \0")
    from pydicom.charset import convert_encodings, decode_bytes
    from pydicom.valuerep import TEXT_VR_DELIMS

    terms = node.charset[8:].decode("ascii", "replace").strip(" \0").split("\\") if node.charset else [""]
    encodings = convert_encodings([t.strip() for t in terms])
    vr = raw[4:6]
    delimiters = _PN_DELIMITERS if vr == b"PN" else set(TEXT_VR_DELIMS)
    return decode_bytes(raw[8:], encodings, delimiters).strip(" \0")


def person_name(node: Node, tag: int = PATIENT_NAME) -> str:
    """A PN for people: ``Yamada Tarou (山田 太郎)``, from ``Yamada^Tarou=山田^太郎`` (PS3.5 6.2.1)."""
    groups = [" ".join(p for p in g.split("^") if p) for g in key_text(node, tag).split("=")]
    groups = [g for g in groups if g]
    return f"{groups[0]} ({', '.join(groups[1:])})" if len(groups) > 1 else (groups[0] if groups else "")


def display_date(value: str) -> str:
    """``20260101`` as ``2026-01-01`` (a DA, PS3.5 6.2); anything else as it is."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


@dataclass(frozen=True)
class LabelStudy:
    date: str
    description: str
    modalities: tuple[str, ...]


@dataclass(frozen=True)
class LabelPatient:
    name: str
    id: str
    birth_date: str
    studies: tuple[LabelStudy, ...]


@dataclass(frozen=True)
class Label:
    """One volume's label record. Dates are ISO 8601 (``2026-01-01``); texts are Unicode."""

    patients: tuple[LabelPatient, ...]
    institution: str
    created: str
    content: str
    volume: int
    volumes: int
    #: The label of the volume this one completes (an addendum: what arrived after that one was burned).
    completes: str = ""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(sorted({m for p in self.patients for s in p.studies for m in s.modalities}))

    @property
    def volume_text(self) -> str:
        return f"volume {self.volume} of {self.volumes}" + (f", completes {self.completes}" if self.completes else "")

    def to_dict(self) -> dict[str, object]:
        """The record for outputs (a robot's label fields): the first patient flattened, and all of them.

        A volume holds one patient in the usual case (routes group by study or patient); with
        several, ``patient_name`` names the first and ``patients`` lists each.
        """
        first = self.patients[0] if self.patients else LabelPatient("", "", "", ())
        studies = [s for p in self.patients for s in p.studies]
        return {
            "patient_name": first.name,
            "patient_id": first.id,
            "birth_date": first.birth_date,
            "study_dates": [s.date for s in studies],
            "study_descriptions": [s.description for s in studies],
            "modalities": list(self.modalities),
            "institution": self.institution,
            "created": self.created,
            "content": self.content,
            "volume": self.volume,
            "volumes": self.volumes,
            "volume_text": self.volume_text,
            "completes": self.completes,
            "patients": [asdict(p) for p in self.patients],
        }


def make_label(tree: Tree, *, institution: str, web: bool, volume: int = 1, volumes: int = 1,
               created: date | None = None, completes: str = "") -> Label:
    """The label of the volume holding ``tree``; ``created`` defaults to today; ``completes``: the label of
    the volume this addendum completes."""
    if not 1 <= volume <= volumes:
        raise ValueError(f"volume {volume} of {volumes}")
    patients = tuple(
        LabelPatient(
            name=person_name(p),
            id=key_text(p, PATIENT_ID),
            birth_date=display_date(key_text(p, PATIENT_BIRTH_DATE)),
            studies=tuple(
                LabelStudy(
                    date=display_date(key_text(s, STUDY_DATE)),
                    description=key_text(s, STUDY_DESCRIPTION),
                    modalities=tuple(sorted({key_text(se, MODALITY) for se in s.children} - {""})),
                )
                for s in p.children
            ),
        )
        for p in tree.patients
    )
    return Label(patients, institution, (created or date.today()).isoformat(),
                 DICOM_PLUS_WEB if web else DICOM_ONLY, volume, volumes, completes)

