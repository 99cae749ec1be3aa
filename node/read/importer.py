"""``medianode import``: every instance of a medium C-STOREd into a destination, and a report of each.

The instances come from :func:`node.read.check.survey_medium`: the DICOMDIR's
records reconciled with a scan of every file, so what the DICOMDIR names and
what it forgot are both sent, and the difference is among the report's
problems (a fifth of outside discs fail import; few comply fully). What media
in the wild do is tolerated and each repair is reported per file (names in any
case, ';1' and trailing dots, '.dcm' on one side only, a DICOMDIR in a
sub-folder, broken record offsets, files without preamble or File Meta, no
DICOMDIR at all). The DICOMDIR itself is never sent; a File ID or symlink
leading out of the medium is refused, never opened (DESIGN.md invariant 5).

One SOP Instance UID found twice is sent once: the copy whose DICOMDIR record
names that UID in preference, else a referenced one, else a PS3.10 one.
Identical data sets are a note; different ones a conflict (a problem, and the
report is not ok). ``patient`` and ``study`` select part
of a medium. Sending is :mod:`node.read.sender`'s: C-STORE statuses per
PS3.4 B.2.3 (a warning such as 0xB000 counts as sent, with its status; 0xA7xx,
0xA9xx and 0xCxxx are failures), decompression when the destination accepts
only uncompressed syntaxes, retries with back-off when an association drops.

With ``coerce`` (``import.coerce``, off by default), an instance whose Patient
ID or Issuer of Patient ID the coercion changes is re-encoded with the new
values and an Original Attributes Sequence item holding the old ones
(:mod:`node.read.coerce`, PS3.3 C.12.1), in its own transfer syntax when the
destination accepts it; it is never sent as its own bytes. Every change is in
the report: the instance's outcome says what, and ``coercions`` lists each
attribute changed (the old value None when the attribute was absent).

On a medium of at least :data:`~node.read.sender.ITEMS_PER_WORKER` instances
and a single DICOMDIR, sending starts while the medium is surveyed: the
presentation contexts are decided from the DICOMDIR's records (each class with
the syntaxes its records name, and Explicit + Implicit VR LE), and each instance
goes to the sending processes as soon as it is read, when its class and syntax
were proposed, its record names it and no other record names its SOP Instance
UID (the keeper of a UID found twice is decided once every file is read), and
the patient and study selected take it. The rest (a DICOMDIR naming another
class or syntax, a file it does not reference, a UID found twice) go on other
associations once the survey is over. Reconciliation needs every instance
first: with it, nothing is sent before the survey ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from node.durable import fsync_dir, write_atomic
from node.errors import UsageError
from node.read.check import Finding, Listed, MediumInstance, Survey, survey_medium
from node.read.medium import ESCAPES_ROOT, NOT_FOLLOWED, Medium, medium_label, open_medium
from node.read.sender import (
    ITEMS_PER_WORKER,
    MAX_CONTEXTS,
    Item,
    Result,
    SendTarget,
    Stream,
    class_contexts,
    send,
)
from node.words import counted

if TYPE_CHECKING:  # not imported at run time: an import without them starts sooner
    from node.config import ClientTLS, Coercion
    from node.read.coerce import Coercing
    from node.read.reconcile import Reconciled, Reconciler

logger = logging.getLogger(__name__)

#: Parallel associations, one worker process each: one per core, from 2 to 4 (on 2 cores, 2 to 4 measure
#: alike against DCMTK storescp; more would only load the destination).
DEFAULT_ASSOCIATIONS = max(2, min(4, os.cpu_count() or 2))
#: A held import's folder: the instances as they were on the medium, and the manifest (medium, label, decisions).
HELD_FILES, HELD_MANIFEST = "files", "held.json"
#: Where a report is about the medium as a whole.
WHOLE_MEDIUM = "."
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 Table 6.2-1 AE: no backslash, no control
_UID = re.compile(r"^[0-9.]{1,64}$")  # PS3.5 9.1, loosely: leading zeros pass, as SCPs accept them


@dataclass
class Outcome:
    """What became of one instance (or one file that should have held one).

    ``status`` is the C-STORE status the destination answered (PS3.4 B.2.3), or
    None when nothing was sent or no answer came; ``reason`` says why, in words.
    """

    path: str
    sop_instance_uid: str
    result: Literal["sent", "failed", "skipped", "held"]
    status: int | None
    reason: str


@dataclass(frozen=True)
class CoercedAttribute:
    """One attribute an import coercion changed in one instance sent; ``old`` None: it was absent."""

    path: str
    sop_instance_uid: str
    attribute: str
    old: str | None
    new: str


@dataclass
class ImportReport:
    """What ``medianode import`` reports (DESIGN.md, Command-line contract).

    ``problems`` and ``notes`` are the medium's, from ``check``, plus the
    importer's own (conflicts, duplicates, nothing to import).
    """

    medium: str
    destination: str
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    conflicts: int = 0
    seconds: float = 0.0
    report_path: str | None = None
    #: Every change ``import.coerce`` made, in the data sets as they were sent.
    coercions: list[CoercedAttribute] = field(default_factory=list)
    #: The studies sent: ``{study_uid, patient_id, sop_classes: {uid: instances}}``, the Patient ID as on
    #: the medium (for the audit trail, PS3.15 A.5.3).
    studies: list[dict[str, Any]] = field(default_factory=list)
    #: Instances kept for a person to reconcile (copied under ``data_dir/held/``), none sent.
    held: int = 0
    #: What reconciliation decided (:meth:`node.read.reconcile.Reconciled.to_dict`); None without it.
    reconciliation: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Every selected instance was stored: none failed or unreadable, no conflict, not nothing."""
        return self.failed == 0 and self.conflicts == 0 and self.sent > 0

    def to_dict(self) -> dict[str, Any]:
        """The ``import --json`` object: at least ``sent``, ``failed``, ``skipped`` and ``problems``."""
        return {
            "ok": self.ok,
            "medium": self.medium,
            "destination": self.destination,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
            "conflicts": self.conflicts,
            "seconds": round(self.seconds, 3),
            "outcomes": [asdict(o) for o in self.outcomes],
            "problems": [asdict(f) for f in self.problems],
            "notes": [asdict(f) for f in self.notes],
            "coercions": [asdict(c) for c in self.coercions],
            "studies": self.studies,
            "held": self.held,
            "reconciliation": self.reconciliation,
        }


def parse_destination(text: str) -> tuple[str, str, int]:
    """``AET@HOST:PORT`` -> (AE title, host, port); a :class:`UsageError` naming what is wrong.

    >>> parse_destination("PACS@127.0.0.1:104")
    ('PACS', '127.0.0.1', 104)
    """
    aet, at, rest = text.partition("@")
    host, colon, port = rest.rpartition(":")
    if not (at and colon and host and port.isdigit()):
        raise UsageError(f"--to {text}: expected AET@HOST:PORT, e.g. PACS@127.0.0.1:104")
    return _checked(aet, host.strip("[]"), int(port))


def import_medium(
    path: str | os.PathLike[str],
    *,
    destination: tuple[str, str, int],
    calling_aet: str = "MEDIANODE",
    patient: str | None = None,
    study: str | None = None,
    associations: int = DEFAULT_ASSOCIATIONS,
    reports_dir: str | os.PathLike[str] | None = None,
    coerce: Coercion | None = None,
    tls: ClientTLS | None = None,
    reconcile: Reconciler | None = None,
    hold_to: Path | None = None,
    label: str | None = None,
) -> ImportReport:
    """Import the medium at ``path`` (folder, ``.iso`` or block device) into ``destination`` (AET, host, port),
    over TLS (:func:`node.tls.client_context`) when ``tls`` is given.

    Raises :class:`~node.errors.MediumError` when the medium cannot be opened at
    all and :class:`~node.errors.UsageError` for a bad AE title or port; every
    other failure is in the report. With ``reports_dir``, the report's JSON is
    also written there (``report_path``). ``coerce`` changes what it says in the
    instances it applies to, recording the old values with the medium's label as
    their source (see the module docstring).

    ``reconcile`` gives each patient of the medium its local identity
    (:mod:`node.read.reconcile`); when it holds the import, the instances are copied
    durably into ``hold_to`` and none is sent. ``label`` is the Source of Previous
    Values when not the medium's own label (a held copy's is its original medium's).
    """
    started = time.monotonic()
    aet, host, port = _checked(*destination)
    _checked(calling_aet, host, port)
    if associations < 1:
        raise UsageError(f"associations must be at least 1, not {associations}")
    to = SendTarget(aet, host, port, calling_aet, tls)
    reconciled = None
    wanted = _Selection(patient.strip() if patient else None, study.strip() if study else None)
    streamed = None
    if coerce is not None or reconcile is not None:  # pydicom's: loaded only when instances may be changed
        from node.read.coerce import Coercing
    with open_medium(path) as medium:
        source = medium_label(path) if label is None else label
        coercing = Coercing.start(coerce, source) if coerce is not None and reconcile is None else None
        if reconcile is None:
            streamed = _Streamed(str(path), to, associations, wanted, coercing)
        try:
            survey = survey_medium(medium, listener=streamed)
            plan = _Plan(medium, survey, wanted)
        except BaseException:
            if streamed is not None:
                streamed.results()
            raise
        if reconcile is not None:
            reconciled, patient_of = reconcile(medium, plan.instances)
            plan.reconciled(reconciled, hold_to)
            if reconciled.held and hold_to is not None:  # after the copy: a manifest names a whole copy
                manifest = {"medium": str(path), "label": source, "reconciliation": reconciled.to_dict()}
                write_atomic(hold_to / HELD_MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
            local = {k: reconciled.local(k) for k in reconciled.decisions}
            per_patient = {k: Coercing.start(c, source) for k, c in local.items() if c is not None}
    if streamed is not None:
        results_of = streamed.results()  # then the rest, over associations of their own
        rest = [i for i in plan.instances if i.path not in results_of]
        later = send(str(path), [_item(i, coercing) for i in rest], destination=to, associations=associations)
        results_of.update(zip((i.path for i in rest), later, strict=True))
        results = [results_of[i.path] for i in plan.instances]
    else:
        items = [_item(i, per_patient.get(patient_of[i.path])) for i in plan.instances]
        results = send(str(path), items, destination=to, associations=associations)
    report = plan.report(str(path), str(to), results)
    if reconciled is not None:
        report.reconciliation = reconciled.to_dict()
    report.seconds = time.monotonic() - started
    logger.info("imported %s into %s: %d sent, %d failed, %d skipped in %.1f s",
                path, to, report.sent, report.failed, report.skipped, report.seconds)
    if reports_dir is not None:
        report.report_path = str(_keep(report, Path(reports_dir)))
    return report


@dataclass(frozen=True)
class _Selection:
    """The patient and study an import is limited to (None: any)."""

    patient: str | None
    study: str | None

    def unwanted(self, patient_id: str, study_uid: str, *, known_only: bool = False) -> str:
        """Why the selection leaves an instance out, or "" (unknown values pass with ``known_only``)."""
        if self.patient is not None and patient_id != self.patient and (patient_id or not known_only):
            return f"not of the selected patient: Patient ID {patient_id or '(empty)'}"
        if self.study is not None and study_uid != self.study and (study_uid or not known_only):
            return f"not in the selected study: Study Instance UID {study_uid or '(empty)'}"
        return ""


def _keeper_rank(instance: MediumInstance) -> tuple[bool, bool, bool, str]:
    """Of the copies of one SOP Instance UID, the first by this is sent: the one its record names, a
    referenced one, a PS3.10 one, by path."""
    return not instance.listed, not instance.referenced, not instance.part10, instance.path


def _is_uid(uid: str) -> bool:
    return bool(_UID.match(uid))


class _Streamed:
    """Sends instances while the survey reads the rest (the module docstring says which); a
    :class:`node.read.check.Listener`."""

    def __init__(self, medium: str, to: SendTarget, associations: int, wanted: _Selection,
                 coercing: Coercing | None) -> None:
        self.medium, self.to, self.associations = medium, to, associations
        self.wanted, self.coercing = wanted, coercing
        self.stream: Stream | None = None
        self.proposed: set[tuple[str, str]] = set()
        self.unique: set[str] = set()  # SOP Instance UIDs named by a single record
        self.sent: dict[str, int] = {}  # path -> index among the stream's results
        self.done: dict[str, Result] | None = None

    def records(self, listed: list[Listed]) -> None:
        """Propose what the records name and start the sending processes; not for fewer instances than
        make a sending process worth its cost, nor for more contexts than one association takes."""
        named = [r for r in listed if _is_uid(r.sop_class_uid) and r.transfer_syntax_uid]
        syntaxes: dict[str, set[str]] = {}
        for record in named:
            syntaxes.setdefault(record.sop_class_uid, set()).add(record.transfer_syntax_uid)
        contexts = tuple(c for cls in sorted(syntaxes) for c in class_contexts(cls, syntaxes[cls]))
        if len(named) < ITEMS_PER_WORKER or len(contexts) > MAX_CONTEXTS:
            return
        counts: dict[str, int] = {}
        for record in listed:
            counts[record.sop_instance_uid] = counts.get(record.sop_instance_uid, 0) + 1
        self.unique = {uid for uid, n in counts.items() if n == 1 and uid}
        self.proposed = {(r.sop_class_uid, r.transfer_syntax_uid) for r in named}
        workers = max(1, min(self.associations, -(-len(named) // ITEMS_PER_WORKER)))
        try:
            self.stream = Stream(self.medium, contexts, destination=self.to, workers=workers)
        except OSError as exc:  # no process to be had: everything is sent after the survey
            logger.warning("sending only after the survey: %s", exc)

    def found(self, instance: MediumInstance) -> None:
        """Hand the instance to the sending processes when it may go now."""
        i = instance
        if (self.stream is None or not i.listed or i.sop_instance_uid not in self.unique
                or (i.sop_class_uid, i.transfer_syntax_uid) not in self.proposed
                or not (_is_uid(i.sop_instance_uid) and _is_uid(i.sop_class_uid))
                or self.wanted.unwanted(i.patient_id, i.study_instance_uid)):
            return
        try:
            index = self.stream.put(_item(i, self.coercing))
        except Exception:  # what cannot cross into another process is sent after the survey, by this one
            logger.exception("sending %s after the survey", i.path)
            return
        if index is not None:
            self.sent[i.path] = index

    def results(self) -> dict[str, Result]:
        """What became of each instance sent, by path, once every one is answered (the processes end)."""
        if self.done is None:
            answers = self.stream.finish() if self.stream is not None else []
            self.done = {path: answers[index] for path, index in self.sent.items()}
        return dict(self.done)


class _Plan:
    """Which instances to send, and the outcomes decided before sending (skips, unreadable files)."""

    def __init__(self, medium: Medium, survey: Survey, wanted: _Selection) -> None:
        self.medium = medium
        self.unwanted = wanted.unwanted
        self.survey = survey
        self.instances: list[MediumInstance] = []
        self.decided: list[Outcome] = []
        self.problems: list[Finding] = []
        self.notes: list[Finding] = []
        self.conflicts = 0
        copies: dict[str, list[MediumInstance]] = {}
        for instance in survey.instances:
            copies.setdefault(instance.sop_instance_uid, []).append(instance)
        sent_from: dict[str, str] = {}
        for uid, found in copies.items():
            keeper = min(found, key=_keeper_rank)
            unwanted = self.unwanted(keeper.patient_id, keeper.study_instance_uid)
            if unwanted:
                self.decided += [Outcome(i.path, uid, "skipped", None, unwanted) for i in found]
                continue
            if not (_is_uid(uid) and _is_uid(keeper.sop_class_uid)):
                why = f"not sent: SOP Class UID {keeper.sop_class_uid!r} or Instance UID {uid!r} is no UID (PS3.5 9.1)"
                self.decided += [Outcome(i.path, uid, "failed", None, why) for i in found]
                continue
            self.instances.append(keeper)
            sent_from[uid] = keeper.path
            for other in found:
                if other is not keeper:
                    self.duplicate(keeper, other)
        for bad in survey.unreadable:
            unwanted = self.unwanted(bad.patient_id, bad.study_instance_uid, known_only=True)
            if bad.reason in (ESCAPES_ROOT, NOT_FOLLOWED):  # refused, never opened: whatever else arrived
                self.decided.append(Outcome(bad.path, bad.sop_instance_uid, "failed", None, bad.reason))
            elif bad.sop_instance_uid in sent_from:
                why = f"{bad.reason}; the instance is sent from {sent_from[bad.sop_instance_uid]}"
                self.decided.append(Outcome(bad.path, bad.sop_instance_uid, "skipped", None, why))
            elif unwanted:
                self.decided.append(Outcome(bad.path, bad.sop_instance_uid, "skipped", None, unwanted))
            else:
                self.decided.append(Outcome(bad.path, bad.sop_instance_uid, "failed", None, bad.reason))
        if not self.instances and not any(o.result == "failed" for o in self.decided):
            of = " of the selected patient or study" if wanted.patient or wanted.study else ""
            self.problems.append(Finding(WHOLE_MEDIUM, f"nothing to import: no DICOM instance{of} on the medium"))

    def duplicate(self, keeper: MediumInstance, other: MediumInstance) -> None:
        """A second copy of a SOP Instance UID: a note when identical, a conflict when not."""
        uid = keeper.sop_instance_uid
        try:
            same = _same_data_set(self.medium, keeper, other)
        except OSError as exc:
            same, why = False, f"cannot compare: {exc}"
        else:
            why = "with a different data set" if keeper.transfer_syntax_uid == other.transfer_syntax_uid else (
                "in another transfer syntax")
        if same:
            reason = f"duplicate of {keeper.path}: the same data set, sent once"
            self.notes.append(Finding(other.path, reason))
        else:
            reason = f"conflict: SOP Instance UID {uid} is also in {keeper.path}, {why}; only that one is sent"
            self.problems.append(Finding(other.path, reason))
            self.conflicts += 1
        self.decided.append(Outcome(other.path, uid, "skipped", None, reason))

    def reconciled(self, reconciled: Reconciled, hold_to: Path | None) -> None:
        """Leave out the studies the archive holds (``on_existing: skip``); refuse every instance, or hold
        them (copied into ``hold_to`` before this returns), when reconciliation says so."""
        keep: list[MediumInstance] = []
        for i in self.instances:
            if reconciled.on_existing == "skip" and i.study_instance_uid in reconciled.existing:
                why = f"the archive holds study {i.study_instance_uid} already (on_existing: skip)"
                self.decided.append(Outcome(i.path, i.sop_instance_uid, "skipped", None, why))
            else:
                keep.append(i)
        self.instances = keep
        if reconciled.refused:
            why = f"not sent: refused by reconciliation: {reconciled.refused}"
            self.decided += [Outcome(i.path, i.sop_instance_uid, "failed", None, why) for i in keep]
            self.instances = []
        elif reconciled.held:
            if hold_to is None:
                raise UsageError("reconciliation holds this import, and there is nowhere to keep it")
            copied = _hold(self.medium, keep, hold_to / HELD_FILES)
            why = f"held for reconciliation (copied to {hold_to}): {reconciled.held}"
            self.decided += [Outcome(i.path, i.sop_instance_uid, "held", None, why) for i in keep]
            self.notes.append(Finding(WHOLE_MEDIUM,
                                      f"{counted(copied, 'instance')} kept in {hold_to} until a person decides"))
            self.instances = []

    def report(self, medium: str, destination: str, results: Sequence[Result]) -> ImportReport:
        outcomes = list(self.decided)
        notes = list(self.notes)
        coercions: list[CoercedAttribute] = []
        studies: dict[str, dict[str, Any]] = {}
        for instance, result in zip(self.instances, results, strict=True):
            if result.result == "sent":
                study = studies.setdefault(instance.study_instance_uid, {
                    "study_uid": instance.study_instance_uid, "patient_id": instance.patient_id, "sop_classes": {}})
                study["sop_classes"][instance.sop_class_uid] = study["sop_classes"].get(instance.sop_class_uid, 0) + 1
            reason = result.reason
            if result.result == "sent" and not instance.part10:
                reason += " (repaired: File Meta Information rebuilt)"
            if result.changes:
                reason += f"; coerced: {', '.join(map(str, result.changes))}"
                coercions += [CoercedAttribute(instance.path, instance.sop_instance_uid, c.attribute, c.old, c.new)
                              for c in result.changes]
            outcomes.append(Outcome(instance.path, instance.sop_instance_uid, result.result, result.status, reason))
            notes += [Finding(instance.path, note) for note in result.notes]
        outcomes.sort(key=lambda o: (o.path, o.sop_instance_uid))
        return ImportReport(
            medium=medium,
            destination=destination,
            sent=sum(o.result == "sent" for o in outcomes),
            failed=sum(o.result == "failed" for o in outcomes),
            skipped=sum(o.result == "skipped" for o in outcomes),
            held=sum(o.result == "held" for o in outcomes),
            outcomes=outcomes,
            problems=sorted(set(self.survey.report.problems + self.problems)),
            notes=sorted(set(self.survey.report.notes + notes)),
            conflicts=self.conflicts,
            coercions=sorted(coercions, key=lambda c: (c.path, c.sop_instance_uid)),
            studies=[studies[k] for k in sorted(studies)],
        )


def _item(instance: MediumInstance, coercing: Coercing | None = None) -> Item:
    """What the sender needs; the coercion only where it may change something (its data set decides)."""
    coerce = coercing if coercing is not None and coercing.may_change(instance.patient_id) else None
    return Item(instance.path, instance.sop_class_uid, instance.sop_instance_uid,
                instance.transfer_syntax_uid, instance.offset, instance.part10, coerce)


def _hold(medium: Medium, instances: Sequence[MediumInstance], folder: Path) -> int:
    """Copy each instance's file, as it is, to the same path under ``folder``, durably (each file and its
    folder fsync'd, under its final name only when whole): the medium may be ejected once this returns."""
    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    for instance in instances:
        target = folder.joinpath(*instance.path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")
        with medium.open(instance.path) as src, open(part, "wb") as out:
            while piece := src.read(1 << 20):
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, target)
        fsync_dir(target.parent)
        done += 1
    fsync_dir(folder)
    return done


def _same_data_set(medium: Medium, a: MediumInstance, b: MediumInstance) -> bool:
    """Byte-equal data sets (File Meta aside): sizes first, then SHA-256 read piece by piece."""
    if medium.size(a.path) - a.offset != medium.size(b.path) - b.offset:
        return False
    with medium.open(a.path) as fa, medium.open(b.path) as fb:
        return _digest(fa, a.offset) == _digest(fb, b.offset)


def _digest(fp: BinaryIO, offset: int) -> bytes:
    fp.seek(offset)
    digest = hashlib.sha256()
    while piece := fp.read(1 << 20):
        digest.update(piece)
    return digest.digest()


def _checked(aet: str, host: str, port: int) -> tuple[str, str, int]:
    if not _AE_TITLE.match(aet) or not aet.strip():
        raise UsageError(f"AE title {aet!r}: 1 to 16 printable characters, no backslash (PS3.5 6.2)")
    if not host:
        raise UsageError("the destination has no host")
    if not 0 < port < 65536:
        raise UsageError(f"port {port}: expected 1 to 65535")
    return aet.strip(), host, port


def _keep(report: ImportReport, folder: Path) -> Path:
    """Write the report's JSON under ``folder`` durably, never under a half-written final name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(report.medium).name or "medium")[:64]
    final = folder / f"import-{stamp}-{name}.json"
    return write_atomic(final, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
