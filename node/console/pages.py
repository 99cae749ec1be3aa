"""The console's pages: Now, Volumes, Imports, Routes, Audit, and the forms behind their buttons.

Every handler is wrapped by :func:`node.console.web.page` with the least role that may use it; the
actions are :mod:`node.actions`' (the CLI's own), audited there with the user's name.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import Response

from node import actions, audit, report
from node.console import holding, views
from node.console.web import Call, NotFound
from node.words import counted


def now(call: Call) -> Response:
    """Now: receiving, jobs, waits, failures, today's volumes; ``?fragment=1`` is its live part alone."""
    data = views.now(call.console.index(), call.console.config)
    return call.render("now_live.html" if call.param("fragment") else "now.html", **data)


def volumes(call: Call) -> Response:
    """Volumes: search by patient name, patient ID, study, Study Date, Accession Number, label; a search
    that may find a patient (by name, ID, accession) is audited (a Query)."""
    name, patient_id, study, date, accession, label = (call.param(k) for k in ("name", "patient", "study", "date",
                                                                               "accession", "label"))
    searched = any((name, patient_id, study, date, accession, label))
    if name or patient_id or accession:
        audit.append(call.console.config, "patient-search", user=call.user.name,
                     address=call.request.client.host if call.request.client else None,
                     **{k: v for k, v in (("patient_name", name), ("patient_id", patient_id),
                                          ("accession_number", accession)) if v})
    rows = views.volumes(call.console.index(), call.console.config, name=name, patient_id=patient_id, study=study, date=date,
                         accession=accession, label=label)
    return call.render("volumes.html", rows=rows, here=call.console.config.node.station_name, searched=searched, name=name, patient=patient_id, study=study,
                       date=date, accession=accession, label=label, limit=views.MAX_ROWS)


def volume(call: Call) -> Response:
    label = call.request.path_params["label"]
    found = views.volume(call.console.index(), label)
    if found is None:
        raise NotFound(f"no archive volume {label!r}")
    return call.render("volume.html", **found)


def reburn(call: Call) -> Response:
    label = call.request.path_params["label"]
    job, cannot = actions.reburn(call.console.index(), call.console.config, label, copies=views.copies(call.form.get("copies", "")),
                                 by=call.user.name)
    message = f"Volume {label}: re-burn queued as job {job}."
    if cannot:
        verb = "is" if len(cannot) == 1 else "are"
        message += (f" {counted(len(cannot), 'instance')} {verb} neither in the spool nor on an image and cannot be "
                    "re-burned.")
    return call.back(f"/volumes/{quote(label, safe='')}", message)


def retry(call: Call) -> Response:
    job_id = int(call.request.path_params["job"])
    actions.retry(call.console.index(), call.console.config, job_id, by=call.user.name)
    return call.back("/", f"Job {job_id} goes back to the queue.")


def cancel(call: Call) -> Response:
    job_id = int(call.request.path_params["job"])
    actions.cancel(call.console.index(), call.console.config, job_id, by=call.user.name)
    return call.back("/", f"Job {job_id} is cancelled.")


def imports(call: Call) -> Response:
    """Imports: those held for a person first (medium, since when, why, the medium's patients), then all."""
    index, config = call.console.index(), call.console.config
    return call.render("imports.html", held=holding.held_imports(index, config), rows=views.imports(index))


def import_detail(call: Call) -> Response:
    """An import's record; a held one also shows each waiting patient beside its candidates, and the choices."""
    import_id = int(call.request.path_params["id"])
    index = call.console.index()
    record = views.import_record(index, import_id)
    if record is None:
        raise NotFound(f"no import {import_id}")
    held = holding.held_import(index, call.console.config, import_id) if record["state"] == "held" else None
    return call.render("import.html", record=record, held=held, rows=holding.ROWS)


def resolve_import(call: Call) -> Response:
    """A clerk's choice for a held import (:func:`node.holds.resolve`, audited with the clerk's name)."""
    import_id = int(call.request.path_params["id"])
    outcome = holding.resolve(call.console.index(), call.console.config, import_id, call.form, by=call.user.name)
    return call.back(f"/imports/{import_id}", holding.message(outcome))


def routes(call: Call) -> Response:
    """Routes: the rules as a table; with ``?study=UID``, how the rules decide that study of the spool."""
    config = call.console.config
    study = call.param("study")
    explained = None
    if study:
        found = report.study_routing(call.console.index(), config.routes, study)
        if found is None:
            raise NotFound(f"the index holds no instance of study {study}")
        explained = report.explanation(*found)
    return call.render("routes.html", routes=views.routes(config), study=study, explained=explained,
                       source=str(config.source or ""))


def audit_log(call: Call) -> Response:
    keep = views.AuditFilter(**{k: call.param(k) for k in ("day", "user", "patient", "study")})
    events = views.audit_events(call.console.data_dir, keep)
    return call.render("audit.html", events=events, filters=keep, limit=views.MAX_ROWS)
