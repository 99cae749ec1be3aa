"""What ``medianode status``, ``jobs`` and ``volumes`` print: rows from the index, as
dicts (for ``--json``) and as text for people."""

from __future__ import annotations

import time

from node.config import Config
from node.index import Index, Job, Volume
from node.routing import RouteSnapshot


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def job_row(job: Job) -> dict[str, object]:
    return {
        "id": job.id,
        "state": job.state,
        "profile": RouteSnapshot.from_json(job.route).profile,
        "created": _when(job.created),
        "finished": _when(job.finished),
        "attempts": job.attempts,
        "late": job.late,
        "error": job.error,
    }


def volume_row(v: Volume) -> dict[str, object]:
    return {
        "label": v.label,
        "job": v.job_id,
        "created": _when(v.created),
        "copies": v.copies,
        "bytes": v.bytes,
        "superseded_by": v.superseded_by,
        "paths": v.paths,
        "studies": [{"study_uid": s, "patient_id": p, "patient_name": n} for s, p, n in v.studies],
    }


def status(index: Index, config: Config) -> dict[str, object]:
    """The node's state: studies waiting for their job, jobs by state, volumes written today."""
    midnight = time.mktime(time.localtime()[:3] + (0, 0, 0, 0, 0, -1))
    quiet = config.burn.study_stable_seconds
    receiving = [
        {"study_uid": uid, "patient_id": pid, "instances": n, "last_received": _when(last),
         "burn_in_s": max(0, round(last + quiet - time.time()))}
        for uid, pid, n, last in index.receiving(since=0)
    ]
    jobs = index.jobs(states=("pending", "building", "failed"), limit=1000)
    done_today = [j for j in index.jobs(states=("done",), limit=1000) if (j.finished or 0) >= midnight]
    return {
        "receiving": receiving,
        "jobs": {
            "queued": [job_row(j) for j in jobs if j.state == "pending"],
            "building": [job_row(j) for j in jobs if j.state == "building"],
            "failed": [job_row(j) for j in jobs if j.state == "failed"],
            "waiting": [{"id": job_id, "since": _when(since), "message": message}
                        for job_id, since, message in index.waits()],
            "done_today": len(done_today),
        },
        "volumes_today": [volume_row(v) for v in index.volumes() if v.created >= midnight],
        "imports": [{**i, "started": _when(i["started"]), "finished": _when(i["finished"])}  # type: ignore[arg-type]
                    for i in index.imports(limit=10)],
    }


def format_status(s: dict[str, object]) -> str:
    receiving = s["receiving"]
    jobs = s["jobs"]
    volumes = s["volumes_today"]
    assert isinstance(receiving, list) and isinstance(jobs, dict) and isinstance(volumes, list)
    lines = [f"receiving: {len(receiving)} study(ies)"]
    lines += [f"  {r['study_uid']}  patient {r['patient_id']}  {r['instances']} instance(s), "
              f"last {r['last_received']}, burn in {r['burn_in_s']} s" for r in receiving]
    lines.append(f"jobs: {len(jobs['queued'])} queued, {len(jobs['building'])} building, "
                 f"{len(jobs['failed'])} failed, {jobs['done_today']} done today")
    lines += [f"  job {j['id']} {j['message']} (since {j['since']})" for j in jobs["waiting"]]
    lines += [f"  job {j['id']} failed {j['finished']}: {j['error']}" for j in jobs["failed"]]
    lines.append(f"volumes today: {len(volumes)}")
    lines += [f"  {v['label']}  {len(v['studies'])} study(ies)  {v['copies']} cop(ies)"
              + (f"  superseded by {v['superseded_by']}" if v["superseded_by"] else "") for v in volumes]
    imports = s["imports"]
    assert isinstance(imports, list)
    lines.append(f"recent imports: {len(imports)}")
    lines += [f"  {i['started']}  {i['state']:<9}  {i['medium']}  {i['sent']} sent, {i['failed']} failed, "
              f"{i['skipped']} skipped" for i in imports]
    return "\n".join(lines) + "\n"


def format_jobs(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no jobs\n"
    return "".join(
        f"{r['id']:>6}  {r['state']:<9}  {r['profile']:<16}  created {r['created']}  finished {r['finished']}"
        + ("  late arrival" if r["late"] else "") + (f"  {r['error']}" if r["error"] else "") + "\n"
        for r in rows
    )


def format_volumes(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no volumes\n"
    out = []
    for r in rows:
        studies = r["studies"]
        assert isinstance(studies, list)
        out.append(f"{r['label']}  {r['created']}  {r['copies']} cop(ies)  {r['bytes']:,} bytes"
                   + (f"  superseded by {r['superseded_by']}" if r["superseded_by"] else ""))
        out += [f"  {st['study_uid']}  {st['patient_id']}  {st['patient_name']}" for st in studies]
    return "\n".join(out) + "\n"
