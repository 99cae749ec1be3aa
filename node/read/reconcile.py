"""Reconciliation of a medium's patients with the local ones (in the manner of IHE Import Reconciliation).

For each distinct patient on the medium (Patient ID, issuer, name, birth date and
sex of its studies' first instances), the worklist is asked first
(:func:`node.read.query.worklist_items`), then the archive
(:func:`node.read.query.archive_patients`); the answers whose demographics
agree by ``import.reconcile.match`` (:func:`node.read.match.agrees`) are the
candidates. One candidate is the patient's local identity; none or several, or
a source that fails, leave the patient to a person: the import is *held*
(``on_no_match``, ``on_several`` may send as it is or refuse instead). The
medium's Patient ID is never asked for nor compared: it is another hospital's.
The archive is also asked which of the medium's studies it holds already
(``on_existing``). Each query is audited (``query``: ATNA Query, PS3.15 A.5.3.10).

:class:`Reconciled` is the outcome, kept with a held import (``to_dict``) so that
a person's choice (:func:`resolved`) is applied to the same patients later.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydicom import dcmread

from node import audit
from node.config import Config, Reconcile
from node.read.check import MediumInstance
from node.read.match import Candidate, Demographics, agrees
from node.read.medium import Medium
from node.read.query import Asked, QueryError, archive_patients, archived_studies, worklist_items

logger = logging.getLogger(__name__)

#: What became of one patient: matched (one candidate), chosen by a person, sent as it is, or not decided.
Outcome = Literal["matched", "chosen", "as-is", "no-match", "several", "failed", "refused"]
#: The outcomes that send the patient's instances.
SENDS = ("matched", "chosen", "as-is")


@dataclass(frozen=True)
class Patient:
    """A patient as the medium names them; ``key`` tells them apart (the same on a held copy)."""

    patient_id: str
    issuer: str
    demographics: Demographics

    @property
    def key(self) -> str:
        d = self.demographics
        return json.dumps([self.patient_id, self.issuer, d.name, d.birth_date, d.sex], ensure_ascii=False)


@dataclass
class Decision:
    """One patient of the medium: its studies and instances, the candidates found, what is done."""

    patient: Patient
    outcome: Outcome
    candidates: list[Candidate] = field(default_factory=list)
    chosen: Candidate | None = None
    reason: str = ""
    studies: list[str] = field(default_factory=list)
    instances: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = self.patient.demographics
        return {"key": self.patient.key, "patient_id": self.patient.patient_id, "issuer": self.patient.issuer,
                "name": d.name, "birth_date": d.birth_date, "sex": d.sex, "studies": self.studies,
                "instances": self.instances, "outcome": self.outcome, "reason": self.reason,
                "candidates": [c.to_dict() for c in self.candidates],
                "chosen": self.chosen.to_dict() if self.chosen else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        patient = Patient(data["patient_id"], data["issuer"], Demographics(data["name"], data["birth_date"], data["sex"]))
        chosen = Candidate.from_dict(data["chosen"]) if data.get("chosen") else None
        return cls(patient, data["outcome"], [Candidate.from_dict(c) for c in data["candidates"]], chosen,
                   data["reason"], list(data["studies"]), int(data["instances"]))


@dataclass
class Reconciled:
    """The decisions of one import, per patient key, and the studies the archive holds already."""

    decisions: dict[str, Decision]
    existing: set[str] = field(default_factory=set)
    #: ``import.reconcile.on_existing``.
    on_existing: str = "send"
    #: Why the import waits for a person ("" when it does not), or why it is refused.
    held: str = ""
    refused: str = ""

    def local(self, patient_key: str) -> Candidate | None:
        """The local identity the patient's instances are sent with (None: as they are)."""
        decision = self.decisions[patient_key]
        return decision.chosen if decision.outcome in ("matched", "chosen") else None

    def to_dict(self) -> dict[str, Any]:
        return {"held": self.held, "refused": self.refused, "existing": sorted(self.existing),
                "on_existing": self.on_existing, "patients": [d.to_dict() for d in self.decisions.values()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reconciled:
        decisions = {d["key"]: Decision.from_dict(d) for d in data["patients"]}
        return cls(decisions, set(data["existing"]), data["on_existing"], data["held"], data["refused"])


#: What :func:`node.read.importer.import_medium` calls with the medium and the instances it would send.
Reconciler = Callable[[Medium, Sequence[MediumInstance]], tuple[Reconciled, dict[str, str]]]


def patients_of(medium: Medium, instances: Sequence[MediumInstance]) -> tuple[dict[str, Decision], dict[str, str]]:
    """The medium's patients (one header read per study) as undecided decisions, and each instance's
    patient key by its path."""
    headers: dict[tuple[str, str], Patient] = {}
    decisions: dict[str, Decision] = {}
    of: dict[str, str] = {}
    for instance in instances:
        group = (instance.patient_id, instance.study_instance_uid)
        if group not in headers:
            headers[group] = _patient(medium, instance)
        patient = headers[group]
        decision = decisions.setdefault(patient.key, Decision(patient, "no-match"))
        if instance.study_instance_uid not in decision.studies:
            decision.studies.append(instance.study_instance_uid)
        decision.instances += 1
        of[instance.path] = patient.key
    return decisions, of


def _patient(medium: Medium, instance: MediumInstance) -> Patient:
    with medium.open(instance.path) as fp:
        fp.seek(instance.offset if not instance.part10 else 0)
        ds = dcmread(fp, stop_before_pixels=True, force=True)

    def text(keyword: str) -> str:
        value = ds.get(keyword)
        return "" if value is None else str(value).strip()

    return Patient(text("PatientID"), text("IssuerOfPatientID"),
                   Demographics(text("PatientName"), text("PatientBirthDate"), text("PatientSex")))


def reconciler(config: Config, *, calling_aet: str, import_id: int | None) -> Reconciler:
    """The reconciliation of ``config.imports.reconcile``, its queries audited as ``import_id``'s."""
    settings = config.imports.reconcile
    assert settings is not None

    def reconcile(medium: Medium, instances: Sequence[MediumInstance]) -> tuple[Reconciled, dict[str, str]]:
        decisions, of = patients_of(medium, instances)
        result = Reconciled(decisions, on_existing=settings.on_existing)
        asked: dict[str, tuple[list[Candidate], str]] = {}  # one query per distinct patient, cached for the import

        def audited(run: Callable[[], tuple[Any, Asked | list[Asked]]], what: str) -> Any:
            try:
                found, done = run()
            except QueryError as exc:
                scp = settings.worklist if what == "worklist" else settings.patients
                where = f"{scp.ae_title}@{scp.host}:{scp.port}" if scp is not None else "?"
                audit.append(config, "query", import_id=import_id, source=what, ok=False, where=where,
                             reason=str(exc))
                raise
            for a in done if isinstance(done, list) else [done]:
                audit.append(config, "query", import_id=import_id, source=what, ok=True, where=a.where,
                             model=a.model, keys=a.keys, answers=a.answers)
            return found

        for decision in decisions.values():
            demo = decision.patient.demographics
            cache = json.dumps([demo.name, demo.birth_date], ensure_ascii=False)
            if cache not in asked:
                asked[cache] = _candidates(settings, demo, calling_aet, audited)
            candidates, failed = asked[cache]
            matching = list({c.key: c for c in candidates if agrees(demo, c.demographics, settings.match)}.values())
            decision.candidates = matching
            if failed:  # never decided on part of the sources: a person sees what the others offered
                decision.outcome, decision.reason = "failed", failed
            elif len(matching) == 1:
                decision.outcome, decision.chosen = "matched", matching[0]
                decision.reason = f"one match in the {'worklist' if matching[0].source == 'worklist' else 'archive'}"
            elif matching:
                decision.outcome = "several"
                decision.reason = f"{len(matching)} local patients match {demo.name!r} born {demo.birth_date or '?'}"
            else:
                decision.outcome, decision.reason = "no-match", f"no local patient matches {demo.name!r} born " \
                                                                f"{demo.birth_date or '?'}"
        if settings.patients is not None and settings.patients.model == "study":
            studies = [s for d in decisions.values() for s in d.studies]
            try:
                result.existing = audited(lambda: archived_studies(settings.patients, studies,  # type: ignore[arg-type]
                                                                   calling_aet=calling_aet), "patients")
            except QueryError as exc:
                result.held = f"the archive could not be asked for the studies: {exc}"
        _settle(result, settings)
        return result, of

    return reconcile


def _candidates(settings: Reconcile, demo: Demographics, calling_aet: str,
                audited: Callable[[Callable[[], tuple[Any, Any]], str], Any]) -> tuple[list[Candidate], str]:
    """The worklist's answers, else the archive's; and why a source failed ("" when none did)."""
    failures = []
    if settings.worklist is not None:
        source = settings.worklist
        try:
            items = audited(lambda: worklist_items(source, demo, calling_aet=calling_aet,
                                                   scheduled_only=settings.scheduled_only), "worklist")
        except QueryError as exc:
            failures.append(f"worklist: {exc}")
        else:
            if any(agrees(demo, c.demographics, settings.match) for c in items):
                return items, ""
    if settings.patients is not None:
        archive = settings.patients
        try:
            return audited(lambda: archive_patients(archive, demo, calling_aet=calling_aet), "patients"), \
                "; ".join(failures)
        except QueryError as exc:
            failures.append(f"archive: {exc}")
    return [], "; ".join(failures)


def _settle(result: Reconciled, settings: Reconcile) -> None:
    """Decide the import: refused when a patient is to be refused, else held when one waits for a person."""
    waiting, refusing = [], []
    for decision in result.decisions.values():
        term = {"no-match": "on_no_match", "several": "on_several"}.get(decision.outcome, "")
        action = getattr(settings, term) if term else "hold" if decision.outcome == "failed" else "send"
        if action == "send" and decision.outcome == "no-match":
            decision.outcome, decision.reason = "as-is", decision.reason + "; sent as it is (on_no_match: send)"
        elif action == "refuse":
            decision.outcome, decision.reason = "refused", decision.reason + f" ({term}: refuse)"
            refusing.append(decision)
        elif action == "hold":
            waiting.append(decision)
    if refusing:
        result.refused = "; ".join(d.reason for d in refusing)
    elif waiting:
        result.held = "; ".join([*(d.reason for d in waiting), *([result.held] if result.held else [])])


def resolved(held: Reconciled, choice: Candidate | Literal["as-is"], *, patient_key: str | None = None) -> Reconciled:
    """``held`` with a person's choice for its waiting patient (``patient_key`` when it has several): a
    local identity, or the medium's own (``as-is``). Raises ``ValueError`` naming what is ambiguous."""
    waiting = [k for k, d in held.decisions.items() if d.outcome not in SENDS]
    if patient_key is None and len(waiting) > 1:
        raise ValueError(f"{len(waiting)} patients wait for a decision: name one with --patient")
    key = patient_key or (waiting[0] if waiting else None)
    if key is None or key not in held.decisions:
        raise ValueError("no patient of this import waits for a decision" if key is None else
                         "no patient of this import has that Patient ID")
    decisions = dict(held.decisions)
    old = decisions[key]
    if choice == "as-is":
        decisions[key] = replace(old, outcome="as-is", chosen=None, reason="sent as it is, by a person's choice")
    else:
        decisions[key] = replace(old, outcome="chosen", chosen=choice, reason="local identity chosen by a person")
    still = [d.reason for d in decisions.values() if d.outcome not in SENDS]
    return Reconciled(decisions, held.existing, held.on_existing, "; ".join(still), "")
