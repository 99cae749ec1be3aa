"""Held imports: the media reconciliation left to a person, listed, resolved and, when forgotten, purged.

An import is held when a patient of its medium matched no local patient, or
several, or a source could not be asked (:mod:`node.read.reconcile`): its
instances were copied into ``data_dir/held/<import>/files`` and the decisions
into ``held.json`` beside them, and nothing was sent. :func:`resolve` is what
the command line (``medianode imports resolve``) and the console call: it
sends the held copy with the identity a person chose (a candidate, a Patient ID
given, the medium's own) or refuses it, audits who chose what
(``import-resolved``), and removes the copy only once every instance was
stored. :func:`purge` removes what stayed longer than
``import.reconcile.held_days`` (``held-purged``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from node import audit
from node.config import Config
from node.durable import write_atomic
from node.errors import ConfigError, UsageError
from node.index import Index
from node.intake import held_folder, record
from node.words import counted

if TYPE_CHECKING:  # the import side (pydicom, pynetdicom) is loaded when a held import is looked at, not by serve
    from node.read.importer import ImportReport
    from node.read.match import Candidate
    from node.read.reconcile import Reconciled

logger = logging.getLogger(__name__)

Kind = Literal["candidate", "patient-id", "as-is", "refuse"]


@dataclass(frozen=True)
class Choice:
    """What a person decided for a held patient: candidate ``number`` (1-based), a ``patient_id`` (and
    ``issuer``) of our domain, the medium's identity as it is, or refusing the import."""

    kind: Kind
    number: int = 0
    patient_id: str = ""
    issuer: str = ""

    def __str__(self) -> str:
        if self.kind == "candidate":
            return f"candidate {self.number}"
        if self.kind == "patient-id":
            return f"Patient ID {self.patient_id}" + (f" (issuer {self.issuer})" if self.issuer else "")
        return self.kind


def held(index: Index, config: Config) -> list[dict[str, Any]]:
    """Every held import with its decisions (the manifest's), oldest first."""
    found = []
    for row in index.held_imports():
        manifest = _manifest(config, int(str(row["id"])))
        found.append({"id": row["id"], "medium": row["medium"], "since": row["finished"], "reason": row["held_reason"],
                      "folder": str(held_folder(config, int(str(row["id"])))),
                      "patients": (manifest or {}).get("reconciliation", {}).get("patients", [])})
    return found


def resolve(index: Index, config: Config, import_id: int, choice: Choice, *, by: str,
            patient: str | None = None) -> ImportReport | None:
    """Apply ``choice`` to held import ``import_id`` (to its waiting patient whose medium Patient ID is
    ``patient``, when several wait); return the report of the instances sent, or None when nothing was
    sent (refused, or another patient still waits). Raises :class:`UsageError` for an import that is not
    held or a choice that does not fit it."""
    row = index.import_record(import_id)
    if row is None or row["state"] != "held":
        raise UsageError(f"import {import_id} is not held" + (f" (it is {row['state']})" if row else " (no such import)"))
    manifest = _manifest(config, import_id)
    if manifest is None:
        raise UsageError(f"import {import_id}: its held copy {held_folder(config, import_id)} is missing or unreadable")
    from node.read.reconcile import Reconciled, resolved

    reconciled = Reconciled.from_dict(manifest["reconciliation"])
    key = _patient_key(reconciled, patient)
    if choice.kind == "refuse":
        shutil.rmtree(held_folder(config, import_id))
        index.finish_import(import_id, ok=False, sent=0, failed=0, skipped=int(str(row["skipped"] or 0)),
                            report=str(row["report"]) if row["report"] else None)
        audit.append(config, "import-resolved", import_id=import_id, choice=str(choice), user=by, sent=0, failed=0)
        logger.info("held import %d refused by %s; its copy removed", import_id, by)
        return None
    try:
        decided = resolved(reconciled, _local(reconciled, key, choice), patient_key=key)
    except ValueError as exc:
        raise UsageError(f"import {import_id}: {exc}") from None
    if decided.held:  # another patient of the medium still waits: keep the choice, send nothing yet
        manifest["reconciliation"] = decided.to_dict()
        _write_manifest(config, import_id, manifest)
        audit.append(config, "import-resolved", import_id=import_id, choice=str(choice), user=by, sent=0, failed=0,
                     waiting=decided.held)
        return None
    report = _send(config, import_id, manifest, decided)
    audit.append(config, "import-resolved", import_id=import_id, choice=str(choice), user=by, sent=report.sent,
                 failed=report.failed)
    record(index, config, import_id, report.to_dict(), kind="resolution", medium=Path(str(row["medium"])),
           kept=report.report_path)
    if report.ok:
        shutil.rmtree(held_folder(config, import_id))
        logger.info("held import %d resolved by %s (%s): %d sent; its copy removed", import_id, by, choice, report.sent)
    else:  # the copy stays until every instance is stored: the same choice can be made again
        index.hold_import(import_id, reason=f"resolved ({choice}) but {counted(report.failed, 'instance')} not stored: "
                                            "the held copy is kept; resolve again", skipped=report.skipped,
                          report=report.report_path)
    return report


def purge(index: Index, config: Config, *, now: float | None = None) -> int:
    """Remove the held copies older than ``import.reconcile.held_days``; the imports become failed. Audited."""
    settings = config.imports.reconcile
    if settings is None:
        return 0
    now = time.time() if now is None else now
    purged = 0
    for row in index.held_imports():
        since = float(str(row["finished"] or row["started"]))
        if now - since < settings.held_days * 86400:
            continue
        import_id = int(str(row["id"]))
        shutil.rmtree(held_folder(config, import_id), ignore_errors=True)
        index.finish_import(import_id, ok=False, sent=0, failed=0, skipped=0,
                            report=str(row["report"]) if row["report"] else None)
        audit.append(config, "held-purged", import_id=import_id, medium=row["medium"], days=settings.held_days,
                     reason=row["held_reason"])
        logger.warning("held import %d of %s purged: unresolved for %g days", import_id, row["medium"],
                       settings.held_days)
        purged += 1
    return purged


def _patient_key(reconciled: Reconciled, patient: str | None) -> str | None:
    """The decision key of the waiting patient whose medium Patient ID is ``patient`` (None: the only one)."""
    from node.read.reconcile import SENDS

    if patient is None:
        return None
    keys = [k for k, d in reconciled.decisions.items() if d.patient.patient_id == patient and d.outcome not in SENDS]
    if not keys:
        raise UsageError(f"patient {patient}: no patient of this import with that Patient ID waits for a decision")
    return keys[0]


def _local(reconciled: Reconciled, key: str | None, choice: Choice) -> Candidate | Literal["as-is"]:
    """The identity ``choice`` names, checked: a candidate that exists, a Patient ID that is a Long String."""
    from node.read.match import Candidate
    from node.read.reconcile import SENDS

    if choice.kind == "as-is":
        return "as-is"
    if choice.kind == "patient-id":
        for what, value in (("Patient ID", choice.patient_id), ("issuer", choice.issuer)):
            if len(value) > 64 or "\\" in value or any(not " " <= c <= "~" for c in value) or value != value.strip():
                raise UsageError(f"{what} {value!r}: a Long String (LO) of printable ASCII, at most 64 characters, "
                                 "no backslash, no leading or trailing space")
        if not choice.patient_id:
            raise UsageError("Patient ID: empty")
        return Candidate("clerk", choice.patient_id, choice.issuer)
    waiting = [d for k, d in reconciled.decisions.items() if d.outcome not in SENDS and (key is None or k == key)]
    if len(waiting) != 1:
        raise UsageError(f"{len(waiting)} patients wait for a decision: name one with --patient" if waiting else
                         "no patient of this import waits for a decision")
    candidates = waiting[0].candidates
    if not 1 <= choice.number <= len(candidates):
        has = f"{counted(len(candidates), 'candidate')} (1 to {len(candidates)})" if candidates else "no candidate"
        raise UsageError(f"candidate {choice.number}: this patient has {has}")
    return candidates[choice.number - 1]


def _send(config: Config, import_id: int, manifest: dict[str, Any], decided: Reconciled) -> ImportReport:
    """The held copy sent to ``import.destination`` with the decided identities."""
    from node.read.importer import HELD_FILES, import_medium
    from node.read.reconcile import patients_of

    to = config.imports.destination
    if to is None:
        raise ConfigError("import.destination is not configured: the held instances would go nowhere")
    folder = held_folder(config, import_id)
    calling_aet = config.imports.calling_aet or config.node.ae_title
    return import_medium(folder / HELD_FILES, destination=(to.ae_title, to.host, to.port), calling_aet=calling_aet,
                         reports_dir=config.node.data_dir / "imports", tls=to.tls, label=str(manifest["label"]),
                         reconcile=lambda medium, instances: (decided, patients_of(medium, instances)[1]))


def _manifest(config: Config, import_id: int) -> dict[str, Any] | None:
    from node.read.importer import HELD_MANIFEST

    try:
        data = json.loads((held_folder(config, import_id) / HELD_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_manifest(config: Config, import_id: int, manifest: dict[str, Any]) -> None:
    from node.read.importer import HELD_MANIFEST

    write_atomic(held_folder(config, import_id) / HELD_MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
