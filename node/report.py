"""What ``medianode status``, ``jobs`` and ``volumes`` print: rows from the index, as
dicts (for ``--json``) and as text for people."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from node.config import Config, load_config, output_settings
from node.durable import write_atomic
from node.media.outputs import output_for
from node.index import Index, Job, Volume
from node.config import Route
from node.routing import CRITERIA, Instance, InstanceRouting, RouteSnapshot, StudyRouting, Trial, explain, unreachable
from node.words import counted


class StudyRow(TypedDict):
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    accession_number: str


class VolumeRow(TypedDict):
    station: NotRequired[str]  # with a catalogue: the station that burned it
    label: str
    job: int
    created: str
    copies: int
    bytes: int
    superseded_by: str | None
    addendum_of: str | None
    paths: list[str]
    studies: list[StudyRow]
    label_record: dict[str, Any] | None


class ReceivingRow(TypedDict):
    study_uid: str
    patient_id: str
    instances: int
    last_received: str
    burn_in_s: int


class WaitRow(TypedDict):
    id: int
    since: str
    message: str


class JobsStatus(TypedDict):
    queued: list[dict[str, object]]
    building: list[dict[str, object]]
    failed: list[dict[str, object]]
    waiting: list[WaitRow]
    done_today: int


class OutputRow(TypedDict):
    output: str
    delivering: int | None
    waiting_for: str | None
    since: str | None
    queued: list[int]


class ServingRow(TypedDict):
    pid: int | None
    address: str
    receivers: int
    listening: int
    since: str | None


class CatalogueRow(TypedDict):
    """How far the station's outbox is behind its catalogue (see :mod:`node.catalogue`)."""

    station: str
    catalogue: str
    behind: int  # changes not in the catalogue yet
    behind_s: int  # seconds since the oldest of them (0 when none waits)
    pushed: str | None  # the last drain that reached it
    error: str | None  # why the last attempt did not
    error_at: str | None
    stations: list[dict[str, Any]]  # every station: up, or silent since when; changes it has not pushed
    waiting: list[dict[str, Any]]  # jobs of any station waiting on their output (a blank disc, the robot)


class Status(TypedDict):
    """``medianode status --json``: the names are a contract with the tools that read it."""

    serving: ServingRow
    receiving: list[ReceivingRow]
    jobs: JobsStatus
    outputs: list[OutputRow]
    volumes_today: list[VolumeRow]
    imports: list[dict[str, object]]
    catalogue: NotRequired[CatalogueRow]  # only for a station with node.catalogue


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def job_row(job: Job) -> dict[str, object]:
    route = RouteSnapshot.from_json(job.route)
    return {
        "id": job.id,
        "state": job.state,
        "profile": route.profile,
        # where its route was written, or "media request UID" for a request's job
        "route": route.where,
        "created": _when(job.created),
        "finished": _when(job.finished),
        "attempts": job.attempts,
        "late": job.late,
        "error": job.error,
    }


def volume_row(v: Volume, *, station: str | None = None) -> VolumeRow:
    """A volume as ``volumes --json`` gives it; with ``station`` (a catalogue's row), the station first."""
    row: VolumeRow = {
        "label": v.label,
        "job": v.job_id,
        "created": _when(v.created),
        "copies": v.copies,
        "bytes": v.bytes,
        "superseded_by": v.superseded_by,
        "addendum_of": v.addendum_of,
        "paths": v.paths,
        "studies": [{"study_uid": s, "patient_id": p, "patient_name": n, "study_date": date,
                     "accession_number": accession}
                    for s, p, n in v.studies for date, accession in [v.study_keys.get(s, ("", ""))]],
        "label_record": v.label_record,
    }
    return row if station is None else {"station": station, **row}


#: What ``serve`` publishes in data_dir of itself and its receivers, for ``status`` to read.
SERVING_FILE = "serving.json"


def publish_serving(config: Config, receivers: list[int], since: float) -> None:
    """Record serve's PID, its address and its receivers' PIDs (called at start and after each
    restart of a receiver); :func:`serving` checks them against the running processes."""
    node = config.node
    record = {"pid": os.getpid(), "address": f"{node.host}:{node.port}", "receivers": receivers,
              "since": since}
    write_atomic(node.data_dir / SERVING_FILE, json.dumps(record).encode())


def serving(config: Config) -> ServingRow:
    """Whether the node listens: serve alive, and how many of its receivers are (a receiver is its
    child: a PID reused by another process does not count). No file, or serve gone: none listens."""
    node = config.node
    row: ServingRow = {"pid": None, "address": f"{node.host}:{node.port}", "receivers": 0, "listening": 0,
                       "since": None}
    try:
        record = json.loads((node.data_dir / SERVING_FILE).read_bytes())
        pid, pids, since = int(record["pid"]), [int(p) for p in record["receivers"]], float(record["since"])
    except (OSError, ValueError, KeyError, TypeError):
        return row
    if _parent(pid) is None or not _serves(pid):
        return row
    return {"pid": pid, "address": str(record.get("address", row["address"])), "receivers": len(pids),
            "listening": sum(_parent(p) == pid for p in pids), "since": _when(since)}


def _parent(pid: int) -> int | None:
    """The parent PID of a running process (Linux /proc), None when it is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return None if fields[0] == "Z" else int(fields[1])


def _serves(pid: int) -> bool:
    """Whether ``pid`` is still a ``serve`` (after a SIGKILL, its PID may have gone to another program)."""
    try:
        return b"serve" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def format_serving(s: ServingRow) -> str:
    if s["pid"] is None:
        return f"serving: no receiver listens on {s['address']}: medianode serve is not running"
    if not s["listening"]:
        return (f"serving: no receiver listens on {s['address']} (serve {s['pid']} has 0 of {s['receivers']} "
                "receivers; restarting them)")
    return (f"serving: {s['listening']} of {s['receivers']} receivers listening on {s['address']} "
            f"(serve {s['pid']}, since {s['since']})")


def status(index: Index, config: Config) -> Status:
    """The node's state: whether it listens, studies waiting for their job, jobs by state, volumes
    written today."""
    midnight = time.mktime(time.localtime()[:3] + (0, 0, 0, 0, 0, -1))
    quiet = config.burn.study_stable_seconds
    receiving: list[ReceivingRow] = [
        {"study_uid": uid, "patient_id": pid, "instances": n, "last_received": _when(last),
         "burn_in_s": max(0, round(last + quiet - time.time()))}
        for uid, pid, n, last in index.receiving(since=0)
    ]
    jobs = index.jobs(states=("pending", "building", "failed"), limit=1000)
    done_today = [j for j in index.jobs(states=("done",), limit=1000) if (j.finished or 0) >= midnight]
    status: Status = {
        "serving": serving(config),
        "receiving": receiving,
        "jobs": {
            "queued": [job_row(j) for j in jobs if j.state == "pending"],
            "building": [job_row(j) for j in jobs if j.state == "building"],
            "failed": [job_row(j) for j in jobs if j.state == "failed"],
            "waiting": [{"id": job_id, "since": _when(since), "message": message}
                        for job_id, since, message in index.waits()],
            "done_today": len(done_today),
        },
        "outputs": outputs(index, config),
        "volumes_today": [volume_row(v) for v in index.volumes(since=midnight)],
        "imports": [{**i, "started": _when(_time(i["started"])), "finished": _when(_time(i["finished"]))}
                    for i in index.imports(limit=10)],
    }
    feed = index.feed_state() if config.node.catalogue else None
    if feed is not None:
        status["catalogue"] = catalogue_row(feed, config)
    return status


def catalogue_row(feed: dict[str, Any], config: Config) -> CatalogueRow:
    """:meth:`Index.feed_state` as ``status`` and the console show it."""
    from node.catalogue import link, views  # psycopg: loaded only for a station with a catalogue

    oldest = feed["oldest"]
    row: CatalogueRow = {
        "station": feed["station"], "catalogue": config.node.catalogue or "", "behind": feed["behind"],
        "behind_s": max(0, round(time.time() - oldest)) if oldest else 0, "pushed": _when(feed["pushed"]),
        "error": feed["error"], "error_at": _when(feed["error_at"]), "stations": [], "waiting": []}
    try:
        with views.reading(config.node) as db:
            row["stations"] = [{**s, "heartbeat": _when(s["heartbeat"]), "behind_since": _when(s["behind_since"])}
                               for s in views.stations(db)]
            row["waiting"] = [{**w, "since": _when(w["since"])} for w in views.waiting(db)]
    except link.CatalogueUnreachable:
        pass  # what the outbox says is all there is to say
    return row


def listed_jobs(index: Index, config: Config) -> tuple[list[dict[str, object]], str]:
    """What ``jobs`` lists: this station's jobs, or with a catalogue every station's, each with its station;
    and a warning when the catalogue could not be read (then this station's only)."""
    if not config.node.catalogue:
        return [job_row(j) for j in index.jobs()], ""
    from node.catalogue import link, views

    try:
        with views.reading(config.node) as db:
            return [{"station": station, **job_row(j)} for station, j in views.jobs(db)], ""
    except link.CatalogueUnreachable as exc:
        return [{"station": config.node.station_name, **job_row(j)} for j in index.jobs()], _alone(exc)


def listed_volumes(index: Index, config: Config, *, study: str | None, patient: str | None, date: str,
                   accession: str) -> tuple[list[VolumeRow], str]:
    """What ``volumes`` lists (as :func:`listed_jobs`)."""
    if not config.node.catalogue:
        return [volume_row(v) for v in index.volumes(study=study, patient=patient, date=date,
                                                     accession=accession)], ""
    from node.catalogue import link, views

    try:
        with views.reading(config.node) as db:
            found = views.volumes(db, study=study, patient=patient, date=date, accession=accession)
            return [volume_row(v, station=station) for station, v in found], ""
    except link.CatalogueUnreachable as exc:
        return [volume_row(v, station=config.node.station_name)
                for v in index.volumes(study=study, patient=patient, date=date, accession=accession)], _alone(exc)


def _alone(exc: Exception) -> str:
    return f"{exc}; this station's rows only"


def _time(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def outputs(index: Index, config: Config) -> list[OutputRow]:
    """Each output (configured, or holding jobs) and its queue: the job being delivered and what it
    waits for (a blank disc, an empty stick, the robot), the jobs built and waiting their turn."""
    configured = [config.burn.output, *(r.output for r in config.routes if r.output)]
    delivering: dict[str, int] = {}
    queued: dict[str, list[int]] = {output_for(o).queue: [] for o in configured}
    for name, job_id, state in index.deliveries():
        if state == "delivering":
            delivering[name] = job_id
        queued.setdefault(name, []).extend([job_id] if state == "built" else [])
    waits = {job_id: (since, message) for job_id, since, message in index.waits()}
    rows: list[OutputRow] = []
    for name, jobs in queued.items():
        job = delivering.get(name)
        since, message = waits.get(job, (None, None)) if job is not None else (None, None)
        rows.append({"output": name, "delivering": job, "waiting_for": message,
                     "since": _when(since) if since else None, "queued": jobs})
    return rows


def format_status(s: Status) -> str:
    receiving, jobs, volumes = s["receiving"], s["jobs"], s["volumes_today"]
    lines = [format_serving(s["serving"]), f"receiving: {counted(len(receiving), 'study')}"]
    lines += [f"  {r['study_uid']}  patient {r['patient_id']}  {counted(r['instances'], 'instance')}, "
              f"last {r['last_received']}, burn in {r['burn_in_s']} s" for r in receiving]
    lines.append(f"jobs: {len(jobs['queued'])} queued, {len(jobs['building'])} building, "
                 f"{len(jobs['failed'])} failed, {jobs['done_today']} done today")
    lines += [f"  job {j['id']} {j['message']} (since {j['since']})" for j in jobs["waiting"]]
    lines += [f"  job {j['id']} failed {j['finished']}: {j['error']}" for j in jobs["failed"]]
    outs = s["outputs"]
    lines.append("outputs:" if outs else "outputs: none")
    for o in outs:
        doing = (f"delivering job {o['delivering']}" + (f", {o['waiting_for']} (since {o['since']})"
                                                        if o["waiting_for"] else "")) if o["delivering"] else "idle"
        queued = o["queued"]
        lines.append(f"  {o['output']}: {doing}" + (f"; jobs {', '.join(map(str, queued))} waiting their turn"
                                                    if queued else ""))
    lines.append(f"volumes today: {len(volumes)}")
    lines += [f"  {v['label']}  {counted(len(v['studies']), 'study')}  {counted(v['copies'], 'copy')}"
              + (f"  superseded by {v['superseded_by']}" if v["superseded_by"] else "") for v in volumes]
    imports = s["imports"]
    lines.append(f"recent imports: {len(imports)}")
    lines += [f"  {i['started']}  {i['state']:<9}  {i['medium']}  {i['sent']} sent, {i['failed']} failed, "
              f"{i['skipped']} skipped" for i in imports]
    if "catalogue" in s:
        lines.append(format_catalogue(s["catalogue"]))
    return "\n".join(lines) + "\n"


def format_catalogue(c: CatalogueRow) -> str:
    """Up to date, or how far behind and why; then each station, up or down, and the jobs waiting anywhere."""
    where = f"catalogue {c['catalogue']} (station {c['station']}): "
    why = f"; unreachable since {c['error_at']}: {c['error']}" if c["error"] else ""
    lines = [where + (f"behind by {counted(c['behind'], 'change')}, the oldest {c['behind_s']} s ago{why}"
                      if c["behind"]
                      else "up to date" + (f", last push {c['pushed']}" if c["pushed"] else ""))]
    lines += [f"  station {st['station']} ({st['ae_title']}): "
              + ("up" if st["up"] else f"DOWN, silent since {st['heartbeat']}")
              + (f", {counted(st['behind'], 'change')} not pushed" if st["behind"] else "") for st in c["stations"]]
    lines += [f"  station {w['station']} job {w['id']}: {w['message']} (since {w['since']})" for w in c["waiting"]]
    return "\n".join(lines)


def format_jobs(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no jobs\n"
    return "".join(
        (f"{r['station']:<12}  " if "station" in r else "") + f"{r['id']:>6}  {r['state']:<9}  {r['profile']:<16}  created {r['created']}  finished {r['finished']}"
        + ("  late arrival" if r["late"] else "")
        + (f"  for {r['route']}" if str(r.get("route", "")).startswith("media request") else "")
        + (f"  {r['error']}" if r["error"] else "") + "\n"
        for r in rows
    )


def format_volumes(rows: list[VolumeRow]) -> str:
    if not rows:
        return "no volumes\n"
    out = []
    for r in rows:
        studies = r["studies"]
        out.append((f"{r['station']:<12}  " if "station" in r else "")
                   + f"{r['label']}  {r['created']}  {counted(r['copies'], 'copy')}  {r['bytes']:,} bytes"
                   + (f"  addendum, completes {r['addendum_of']}" if r.get("addendum_of") else "")
                   + (f"  superseded by {r['superseded_by']}" if r["superseded_by"] else ""))
        out += [f"  {st['study_uid']}  {st['patient_id']}  {st['patient_name']}" for st in studies]
    return "\n".join(out) + "\n"


# -- routes explain ------------------------------------------------------------------


def config_check(path: str | os.PathLike[str]) -> tuple[Config, list[str]]:
    """What ``medianode config check FILE`` says of the file as it is now: the configuration it makes and its
    warnings (``file:line routes[i]: warning: ...``, a route no instance can reach); a file that cannot
    serve raises its :class:`~node.errors.ConfigError` (``file:line key: reason``)."""
    config = load_config(path)
    return config, [f"{config.routes[i].where} routes[{i}]: warning: no instance can reach this route: {why}"
                    for i, _, why in unreachable(config.routes)]


def _rule(trial: Trial) -> dict[str, object]:
    outcome = "matched" if trial.matched else ("not tried" if not trial.tried else "did not match")
    return {"index": trial.position, "where": trial.route.where, "action": trial.route.action,
            "match": _match(trial), "outcome": outcome, **({"why": trial.failed} if trial.failed else {})}


def _match(trial: Trial) -> dict[str, list[str]]:
    m = trial.route.match
    return {k: list(getattr(m, k)) for k in CRITERIA if getattr(m, k)}


def _output(route: RouteSnapshot) -> str | dict[str, object]:
    return "burn.output" if route.output is None else output_settings(route.output)


def _job(route: RouteSnapshot) -> dict[str, object]:
    return {"route": route.position, "where": route.where, "profile": route.profile, "compress": str(route.compress),
            "compress_by_modality": {k: str(v) for k, v in route.compress_by_modality}, "copies": route.copies,
            "output": _output(route), "group": route.group, "label": route.label or "MEDIANODE", "kind": route.kind,
            "also": route.also}


def _outcome(r: InstanceRouting) -> str:
    return "refused" if r.refused_by is not None else ("burn" if r.recorded else "store")


def study_routing(index: Index, routes: tuple[Route, ...], study_uid: str
                  ) -> tuple[list[InstanceRouting], list[StudyRouting]] | None:
    """The routes tried on each instance of a study of the index, and the jobs it would make (None when
    the index holds no instance of it)."""
    rows = index.study_instances(study_uid)
    if not rows:
        return None
    return explain(routes, [Instance(path, study_uid, sop, modality, sop_class, called, calling)
                            for path, sop, modality, sop_class, called, calling in rows])


def format_requests(requests: dict[str, int], *, burned: bool) -> str:
    """The media creation requests that reference a study's instances (``routes explain --study``): their
    media are made besides what the routes burn, so where a burn route matches too, both happen."""
    also = "; a burn route matches it too: both make media" if burned else ""
    return "".join(f"media request {uid}: references {counted(n, 'instance')} of this study{also}\n"
                   for uid, n in requests.items())


def explanation(instances: list[InstanceRouting], studies: list[StudyRouting]) -> dict[str, object]:
    """``routes explain --json``: per instance every rule tried (matched, or the criterion that failed,
    or not tried after a store / reject), and per study the jobs it would make."""
    return {
        "instances": [{
            "source": r.instance.source, "study_uid": r.instance.study_uid,
            "sop_instance_uid": r.instance.sop_instance_uid, "modality": r.instance.modality,
            "sop_class": r.instance.sop_class, "called_aet": r.instance.called_aet,
            "calling_aet": r.instance.calling_aet, "outcome": _outcome(r),
            "recorded": [s.position for s in r.recorded], "rules": [_rule(t) for t in r.trials]} for r in instances],
        "studies": [{"study_uid": s.study_uid, "instances": s.instances, "jobs": [_job(j) for j in s.jobs]}
                    for s in studies],
    }


def format_explanation(instances: list[InstanceRouting], studies: list[StudyRouting]) -> str:
    """``routes explain`` for people: the same as :func:`explanation`, a line per rule and per job."""
    lines = []
    for r in instances:
        i = r.instance
        lines.append(f"{i.source}: {i.modality or '(no modality)'} {i.sop_class}, called {i.called_aet or '-'}, "
                     f"calling {i.calling_aet or '-'}, study {i.study_uid}")
        for t in r.trials:
            match = ", ".join(f"{k}: {' | '.join(v)}" for k, v in _match(t).items()) or "everything"
            where = f" ({t.route.where})" if t.route.where else ""
            rule = _rule(t)
            lines.append(f"  routes[{t.position}] {t.route.action} {{{match}}}{where}: {rule['outcome']}"
                         + (f": {t.failed}" if t.failed else ""))
        recorded = ", ".join(f"routes[{s.position}]" for s in r.recorded)
        lines.append(f"  -> {_outcome(r)}" + (f" (records {recorded})" if recorded else ""))
    for s in studies:
        lines.append(f"study {s.study_uid} ({counted(s.instances, 'instance')}): "
                     + (counted(len(s.jobs), "job") if s.jobs else "stored only, no job"))
        for j in s.jobs:
            where = "burn.output" if j.output is None else output_for(j.output).queue
            lines.append(f"  job by routes[{j.position}]{' (also)' if j.also else ''}: {j.profile}, compress "
                         f"{j.compress}, {counted(j.copies, 'copy')} to {where}, group {j.group}, label "
                         f"{j.label or 'MEDIANODE'}, {j.kind}")
    return "\n".join(lines) + "\n"
