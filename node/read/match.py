"""Whether a local patient is the patient of a medium: the rule reconciliation matches by.

A C-FIND SCP matches names literally and with case (DCMTK's worklist and archive
do), so the sources are asked with what they match reliably (the birth date) and
the names are compared here, by :func:`same_name`. Which attributes must agree is
``import.reconcile.match`` (:data:`node.config.MATCH_ATTRIBUTES`); the Patient ID of the medium never
counts: it belongs to another hospital's domain.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Literal

#: Where a candidate identity came from: a worklist item, the archive, or a person (a resolution).
Source = Literal["worklist", "patients", "clerk"]


@dataclass(frozen=True)
class Demographics:
    """A patient as a data set or a C-FIND response names them: Patient's Name as its DICOM text
    (``=`` between the alphabetic, ideographic and phonetic groups), Birth Date (DA), Sex (CS)."""

    name: str = ""
    birth_date: str = ""
    sex: str = ""


def components(group: str, *, accents: bool = True) -> tuple[str, ...]:
    """A name group's components (PS3.5 6.2.1.1), compared as :func:`same_name` says: each stripped of
    spaces, case-folded, Unicode NFKC (full-width letters become ASCII), accents removed when
    ``accents`` (the alphabetic group), trailing empty components dropped.

    >>> components("Doe^Jane^^")
    ('doe', 'jane')
    >>> components("MÜLLER^José ")
    ('muller', 'jose')
    >>> components("^^")
    ()
    """
    folded = []
    for part in group.split("^"):
        text = unicodedata.normalize("NFKC", part).strip(" \u3000").casefold()
        if accents:
            text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
        folded.append(text)
    while folded and not folded[-1]:
        folded.pop()
    return tuple(folded)


def same_name(a: str, b: str) -> bool:
    """Two Patient's Names (DICOM text) are the same name: the alphabetic groups compared when both
    have one, else the ideographic groups when both have one; names with neither in common never agree.

    >>> same_name("DOE^JANE", "Doe^Jane^^")
    True
    >>> same_name("Doe^Jane", "Doe^John")
    False
    >>> same_name("Yamada^Tarou=山田^太郎=やまだ^たろう", "YAMADA^TAROU")
    True
    >>> same_name("=山田^太郎", "Yamada^Tarou=山田^太郎")
    True
    >>> same_name("=山田^太郎", "Yamada^Tarou")
    False
    >>> same_name("", "")
    False
    """
    ga, gb = (name.split("=") for name in (a, b))
    for group, accents in ((0, True), (1, False)):
        ca = components(ga[group], accents=accents) if len(ga) > group else ()
        cb = components(gb[group], accents=accents) if len(gb) > group else ()
        if ca and cb:
            return ca == cb
    return False


def agrees(medium: Demographics, local: Demographics, rules: tuple[str, ...]) -> bool:
    """The local patient is the medium's by ``rules``: the name by :func:`same_name`, the birth date
    equal and known on both sides, the sex equal when both have one.

    >>> from node.config import MATCH_ATTRIBUTES as every
    >>> jane = Demographics("DOE^JANE", "19700101", "F")
    >>> agrees(jane, Demographics("Doe^Jane^^", "19700101", ""), every)
    True
    >>> agrees(jane, Demographics("Doe^Jane", "19700101", "M"), every)
    False
    >>> agrees(jane, Demographics("Doe^Jane", ""), every)
    False
    """
    if "name" in rules and not same_name(medium.name, local.name):
        return False
    if "birth_date" in rules and not (medium.birth_date.strip() and medium.birth_date.strip() == local.birth_date.strip()):
        return False
    sexes = medium.sex.strip().upper(), local.sex.strip().upper()
    return not ("sex" in rules and all(sexes) and sexes[0] != sexes[1])


@dataclass(frozen=True)
class Candidate:
    """A local identity: the patient a source offered (and from a worklist item the request), or the one a
    person chose; an empty name, birth date or sex leaves the medium's as it is."""

    source: Source
    patient_id: str
    issuer: str = ""
    name: str = ""
    birth_date: str = ""
    sex: str = ""
    accession: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    #: The worklist item's Study Instance UID (the request's; the medium's UIDs are never changed).
    study_uid: str = ""
    step_id: str = ""
    step_description: str = ""
    #: Referenced Study Sequence (0008,1110) of the item: (SOP Class UID, SOP Instance UID) pairs.
    referenced_studies: tuple[tuple[str, str], ...] = ()

    @property
    def demographics(self) -> Demographics:
        return Demographics(self.name, self.birth_date, self.sex)

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes two answers one candidate: the patient and, from a worklist, the request."""
        return self.patient_id, self.issuer, self.accession if self.source == "worklist" else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        refs = tuple((str(a), str(b)) for a, b in data.get("referenced_studies", ()))
        return cls(**{**data, "referenced_studies": refs})
