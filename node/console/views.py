"""What each page shows, read from the index, the import reports and the audit log: plain data for the
templates (and, where the CLI has the same, :mod:`node.report`'s very rows)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node import audit, report
from node.config import Config, output_settings
from node.errors import UsageError
from node.index import Index, fold

logger = logging.getLogger(__name__)

#: The audit log's tail the Audit page reads (the newest events; older ones stay in the file).
AUDIT_TAIL_BYTES = 16 << 20
#: Rows the Volumes and Audit pages show at most.
MAX_ROWS = 200


def day(value: str) -> str:
    """A DA (``20260101``) as ``2026-01-01``; anything else as it is.

    >>> day("20260101"), day("")
    ('2026-01-01', '')
    """
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value


def duration(seconds: int) -> str:
    """A time left for people: ``45 s``, ``3 min``, ``1 h 05 min``.

    >>> duration(45), duration(170), duration(3900)
    ('45 s', '3 min', '1 h 05 min')
    """
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def now(index: Index, config: Config) -> dict[str, Any]:
    """The Now page: studies receiving, jobs per state with what the building ones take, failed jobs,
    outputs and what they wait for, today's volumes (``status --json`` plus the receiving studies'
    names and senders)."""
    status = report.status(index, config)
    quiet = config.burn.study_stable_seconds
    receiving = [{"study_uid": uid, "patient_id": pid, "patient_name": name, "calling_aets": ", ".join(sorted(set((aets or "").split(",")) - {""})),
                  "instances": n, "mb": round((size or 0) / 1e6, 1), "last_received": when(last),
                  "burn_in_s": max(0, round(last + quiet - time.time()))}
                 for uid, pid, name, aets, n, size, last in index.receiving_studies()]
    building = status["jobs"]["building"]
    ids = [int(str(j["id"])) for j in building]
    sizes, progress = index.job_bytes(ids), index.progress(ids)
    started = {j.id: j.started for j in index.jobs(states=("building",), limit=1000)}
    for j, job_id in zip(building, ids):
        j["mb"] = round(sizes.get(job_id, 0) / 1e6, 1)
        j["started"] = when(started.get(job_id))
        j["progress"] = progress_row(*progress[job_id][1:]) if job_id in progress else None
    return {"node": status, "receiving": receiving}


def progress_row(done: int, total: int, started: float, updated: float) -> dict[str, object]:
    """A job's progress as Now shows it: MB written of MB in all, the percentage, and the time left at the
    rate so far (None until a rate is known).

    >>> progress_row(50_000_000, 200_000_000, 100.0, 110.0)
    {'mb_done': 50.0, 'mb_total': 200.0, 'percent': 25, 'left_s': 30}
    """
    rate = done / (updated - started) if done and updated > started else 0.0
    return {"mb_done": round(done / 1e6, 1), "mb_total": round(total / 1e6, 1),
            "percent": min(100, int(100 * done / total)) if total else 0,
            "left_s": round((total - done) / rate) if rate else None}


def volumes(index: Index, config: Config, *, name: str = "", patient_id: str = "", study: str = "", label: str = "",
            date: str = "", accession: str = "", limit: int = MAX_ROWS) -> list[report.VolumeRow]:
    """Volumes found by patient name (case and carets ignored), patient ID, study, Study Date
    (``YYYYMMDD[-YYYYMMDD]``), Accession Number or label, newest first: every station's, each with its
    station, when the station has a catalogue that answers; else this station's."""
    if config.node.catalogue:
        from node.catalogue import link  # psycopg: loaded only for a station with a catalogue
        from node.catalogue import views as catalogue

        try:
            with catalogue.reading(config.node) as db:
                return [report.volume_row(v, station=station) for station, v in catalogue.volumes(
                    db, name=name, patient=patient_id, study=study, label=label, date=date, accession=accession,
                    newest=limit)]
        except link.CatalogueUnreachable as exc:
            logger.warning("volumes: %s; this station's only", exc)
    return [report.volume_row(v) for v in index.find_volumes(name=name, patient_id=patient_id, study=study,
                                                              label=label, date=date, accession=accession,
                                                              limit=limit)]


def volume(index: Index, label: str) -> dict[str, Any] | None:
    """One volume's record: its row, what superseded it, its addenda, the volumes it completes."""
    found = index.volumes(label=label)
    if not found:
        return None
    row = report.volume_row(found[0])
    studies = [s["study_uid"] for s in row["studies"]]
    related = [report.volume_row(v) for uid in studies for v in index.volumes(study=uid) if v.label != label]
    return {"volume": row, "related": list({r["label"]: r for r in related}.values())}


def copies(text: str) -> int | None:
    """A re-burn's number of copies as a form or a JSON body gives it; '' is the route's own.

    >>> copies("3"), copies("")
    (3, None)
    """
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 99:
        raise UsageError(f"copies must be a whole number from 1 to 99, not {text[:20]!r}")
    return int(text)


def imports(index: Index, *, limit: int = 50) -> list[dict[str, object]]:
    """The import records, newest first, as ``status --json`` shows them (``report``: the kept report's
    path), each with that report's content (``report_content``, None when it is gone)."""
    return [{**i, "started": when(_time(i["started"])), "finished": when(_time(i["finished"])),
             "report_content": read_report(i.get("report"))} for i in index.imports(limit=limit)]


def import_record(index: Index, import_id: int) -> dict[str, object] | None:
    for record in imports(index, limit=100000):
        if record["id"] == import_id:
            return record
    return None


def read_report(path: object) -> dict[str, Any] | None:
    """An import's kept JSON report, or None when it is gone or unreadable."""
    if not isinstance(path, str):
        return None
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _time(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


@dataclass(frozen=True)
class AuditFilter:
    """The Audit page's filters: a day (YYYY-MM-DD), a user, a patient (ID or name), a study UID."""

    day: str = ""
    user: str = ""
    patient: str = ""
    study: str = ""

    def keeps(self, event: dict[str, Any]) -> bool:
        if self.day and not str(event.get("time", "")).startswith(self.day):
            return False
        if self.user and str(event.get("user", "")) != self.user:
            return False
        if self.patient:
            wanted = fold(self.patient)
            values = [str(event.get(k, "")) for k in ("patient_id", "patient", "patient_name")]
            if not any(wanted and (wanted == fold(v) or wanted in fold(v)) for v in values if v):
                return False
        if self.study:
            studies = event.get("studies")
            if event.get("study_uid") != self.study and not (isinstance(studies, list) and self.study in studies):
                return False
        return True


def audit_events(data_dir: Path, keep: AuditFilter, *, limit: int = MAX_ROWS) -> list[dict[str, Any]]:
    """The newest events of ``data_dir/audit.jsonl`` that ``keep`` keeps, newest first."""
    path = data_dir / audit.FILE
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - AUDIT_TAIL_BYTES))
            lines = f.read().splitlines()[1 if size > AUDIT_TAIL_BYTES else 0:]
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and keep.keeps(event):
            out.append(event)
            if len(out) >= limit:
                break
    return out


def audit_end(data_dir: Path) -> int:
    """Where the audit log ends now: the events appended from now on start there (0: no log yet)."""
    try:
        return (data_dir / audit.FILE).stat().st_size
    except OSError:
        return 0


def audit_event_after(data_dir: Path, offset: int, event: str) -> dict[str, Any] | None:
    """The first ``event`` appended to the audit log after ``offset`` (:func:`audit_end`), or None yet."""
    try:
        with (data_dir / audit.FILE).open("rb") as f:
            f.seek(offset)
            lines = f.read(AUDIT_TAIL_BYTES).splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            found = json.loads(line)
        except ValueError:
            continue  # a line being written: read again on the next look
        if isinstance(found, dict) and found.get("event") == event:
            return found
    return None


def routes(config: Config) -> list[dict[str, object]]:
    """The rules as a table, in the file's order."""
    rows = []
    for i, r in enumerate(config.routes):
        m = r.match
        match = {k: list(v) for k, v in (("called_aet", m.called_aet), ("calling_aet", m.calling_aet),
                                         ("modality", m.modality), ("sop_class", m.sop_class)) if v}
        output = "burn.output" if r.output is None else output_settings(r.output)
        rows.append({"index": i, "where": r.where, "action": r.action, "match": match, "also": r.also,
                     "profile": r.profile if r.action == "burn" else "", "compress": str(r.compress),
                     "copies": r.copies, "group": r.group, "kind": r.kind, "output": output,
                     "label": r.label or "MEDIANODE"})
    return rows
