"""Held imports at the console: what the Imports page and a held import's page show, and a form's (or a
JSON body's) choice resolved through :func:`node.holds.resolve`, the command line's own function.

A choice is ``choice`` = ``candidate`` (with ``candidate`` = N, 1-based), ``patient-id`` (with
``patient_id`` and an optional ``issuer``), ``as-is`` or ``refuse``; ``patient`` names the medium's
patient (by its Patient ID) the choice is for, when several of the medium's patients wait.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, cast, get_args

from node import holds
from node.config import Config
from node.console.views import when
from node.errors import UsageError
from node.index import Index
from node.words import counted

if TYPE_CHECKING:
    from node.read.importer import ImportReport

#: The attributes shown side by side: the medium's patient and each candidate (key, label).
ROWS = (("name", "Patient's Name"), ("patient_id", "Patient ID"), ("issuer", "Issuer of Patient ID"),
        ("birth_date", "Birth date"), ("sex", "Sex"))
#: One resolution at a time in the console: a second click while the first sends finds the import no longer held.
_resolving = threading.Lock()


def held_imports(index: Index, config: Config) -> list[dict[str, Any]]:
    """The held imports (``medianode imports --held --json``), oldest first, each patient marked ``waiting``
    when no identity was decided for it yet."""
    from node.read.reconcile import SENDS  # the import side: loaded by the page of held imports, not by the console

    rows = holds.held(index, config)
    for row in rows:
        row["since"] = when(float(row["since"])) if isinstance(row["since"], (int, float)) else "-"
        for patient in row["patients"]:
            patient["waiting"] = patient["outcome"] not in SENDS
    return rows


def held_import(index: Index, config: Config, import_id: int) -> dict[str, Any] | None:
    """One held import as :func:`held_imports` lists it, or None when it is not held."""
    return next((row for row in held_imports(index, config) if row["id"] == import_id), None)


def choice_of(form: dict[str, str]) -> tuple[holds.Choice, str | None]:
    """The choice a form or a JSON body makes, and the medium's patient it is for (None: the only one).

    >>> choice_of({"choice": "candidate", "candidate": "2", "patient": "EXT-1"})
    (Choice(kind='candidate', number=2, patient_id='', issuer=''), 'EXT-1')
    >>> choice_of({"choice": "patient-id", "patient_id": "NEW-9", "issuer": ""})
    (Choice(kind='patient-id', number=0, patient_id='NEW-9', issuer=''), None)
    """
    kind = form.get("choice", "")
    if kind not in get_args(holds.Kind):
        raise UsageError(f"choice {kind[:20]!r}: one of {', '.join(get_args(holds.Kind))}")
    number = form.get("candidate", "").strip() if kind == "candidate" else "0"
    if not number.isdigit():
        raise UsageError(f"candidate {number[:20]!r}: the candidate's number (1, 2, ...)")
    patient_id, issuer = (form.get("patient_id", ""), form.get("issuer", "")) if kind == "patient-id" else ("", "")
    return (holds.Choice(cast(holds.Kind, kind), number=int(number), patient_id=patient_id, issuer=issuer),
            form.get("patient") or None)


def resolve(index: Index, config: Config, import_id: int, form: dict[str, str], *, by: str) -> dict[str, Any]:
    """Resolve held import ``import_id`` with the choice ``form`` makes, for user ``by`` (audited by
    :func:`node.holds.resolve` as ``import-resolved``); the outcome: the import's state after it, what
    was sent and, while it is still held, why."""
    choice, patient = choice_of(form)
    with _resolving:
        report = holds.resolve(index, config, import_id, choice, by=by, patient=patient)
    row = index.import_record(import_id) or {}
    waiting = held_import(index, config, import_id)
    return {"import": import_id, "choice": str(choice), "state": row.get("state"),
            "sent": report.sent if report else 0, "failed": report.failed if report else 0,
            "held": _still(row, report, waiting) if row.get("state") == "held" else ""}


def _still(row: dict[str, object], report: ImportReport | None, waiting: dict[str, Any] | None) -> str:
    """Why an import is still held after a choice: instances not stored, or other patients undecided."""
    if report is not None:
        return str(row.get("held_reason") or "")
    left = [p for p in (waiting or {}).get("patients", []) if p["waiting"]]
    return f"{counted(len(left), 'other patient')} of the medium {'waits' if len(left) == 1 else 'wait'} for a decision"


def message(outcome: dict[str, Any]) -> str:
    """The outcome as the console says it once, on the import's page.

    >>> message({"import": 3, "choice": "candidate 2", "state": "done", "sent": 2, "failed": 0, "held": ""})
    'Import 3 resolved (candidate 2): 2 sent, 0 failed.'
    >>> message({"import": 3, "choice": "refuse", "state": "failed", "sent": 0, "failed": 0, "held": ""})
    'Import 3 refused: nothing sent, its held copy removed.'
    """
    head = f"Import {outcome['import']}"
    if outcome["choice"] == "refuse":
        return f"{head} refused: nothing sent, its held copy removed."
    sent = f"{outcome['sent']} sent, {outcome['failed']} failed"
    if outcome["state"] == "held":
        return f"{head} ({outcome['choice']}): {sent}; still held: {outcome['held']}."
    return f"{head} resolved ({outcome['choice']}): {sent}."
