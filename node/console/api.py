"""The JSON API under ``/api/``, for scripts: the same JSON as the CLI's ``--json`` (the very functions
of :mod:`node.report`), the same actions as the CLI's (:mod:`node.actions`)."""

from __future__ import annotations

from node import actions, report
from node.console import holding, views
from node.console.web import Call


def status(call: Call) -> object:
    """``GET /api/status``: ``medianode status --json``."""
    return report.status(call.console.index(), call.console.config)


def jobs(call: Call) -> object:
    """``GET /api/jobs``: ``medianode jobs --json``."""
    return [report.job_row(j) for j in call.console.index().jobs()]


def volumes(call: Call) -> object:
    """``GET /api/volumes?study=&patient=&date=&accession=``: ``medianode volumes [--study UID] [--patient ID]
    [--date YYYYMMDD[-YYYYMMDD]] [--accession A] --json``."""
    return [report.volume_row(v) for v in call.console.index().volumes(
        study=call.param("study") or None, patient=call.param("patient") or None, date=call.param("date"),
        accession=call.param("accession"))]


def imports(call: Call) -> object:
    """``GET /api/imports``: the import records (``status --json``'s recent imports), each with its report;
    ``?held=1``: the held ones with their patients and candidates (``medianode imports --held --json``)."""
    if call.param("held") not in ("", "0"):
        return holding.held_imports(call.console.index(), call.console.config)
    return views.imports(call.console.index())


def resolve(call: Call) -> object:
    """``POST /api/imports/ID/resolve``, body ``{"choice": "candidate", "candidate": N}``, ``{"choice":
    "patient-id", "patient_id": ID, "issuer": I}``, ``{"choice": "as-is"}`` or ``{"choice": "refuse"}``
    (and ``"patient"``: the medium's Patient ID, when several wait)."""
    import_id = int(call.request.path_params["id"])
    return holding.resolve(call.console.index(), call.console.config, import_id, call.form, by=call.user.name)


def retry(call: Call) -> object:
    job_id = int(call.request.path_params["job"])
    actions.retry(call.console.index(), call.console.config, job_id, by=call.user.name)
    return {"job": job_id, "state": "pending"}


def cancel(call: Call) -> object:
    job_id = int(call.request.path_params["job"])
    actions.cancel(call.console.index(), call.console.config, job_id, by=call.user.name)
    return {"job": job_id, "state": "cancelled"}


def reburn(call: Call) -> object:
    """``POST /api/volumes/LABEL/reburn`` with an optional ``{"copies": N}``."""
    label = call.request.path_params["label"]
    job, cannot = actions.reburn(call.console.index(), call.console.config, label,
                                 copies=views.copies(call.form.get("copies", "") or call.param("copies")),
                                 by=call.user.name)
    return {"volume": label, "job": job, "cannot": cannot}
