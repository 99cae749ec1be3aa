"""Media creation requests (PS3.4 Annex S) become jobs: the service loop's side of the Media Creation
Management SCP (:mod:`node.receive.mcm` records the requests in the index).

An initiated request whose referenced instances are all in the spool becomes one job per medium, each a
snapshot of just those instances, built and delivered like any other job; one that still lacks some
waits ``mcm.wait_seconds`` from its Initiate, then fails with NO_INSTANCE. Media are split only between
studies, and only when the request allows it. A request whose jobs have all ended is settled (done or
failed); ``mcm.keep_hours`` later it is forgotten, and its instances are the spool's retention's again.
The builder takes a request's jobs by its Request Priority (:meth:`node.index.Index.claim_job`); a retried job
reopens its request (:meth:`node.index.Index.set_job_state`).
"""

from __future__ import annotations

import logging
from collections import Counter

from node import audit
from node.config import Config, MediaRequests, Match
from node.dicom import CLASS_INSTANCE_CONFLICT, NO_SUCH_OBJECT_INSTANCE
from node.index import Index, MediaRequest
from node.jobs import pack
from node.profiles import SECTOR, compressions, get_profile
from node.routing import RouteSnapshot
from node.syntaxes import Compression
from node.words import counted

logger = logging.getLogger(__name__)

#: The position of a request's route snapshot: no route of the file (:func:`node.index._same_route`).
REQUEST_POSITION = -1
#: Lossy syntaxes a request's Allow Lossy Compression may pick, best first, where its profile allows one.
_LOSSY = ("j2k-lossy", "jpeg-baseline")


class Failure(Exception):
    """Why a request cannot be made: its Execution Status Info, the instances to blame."""

    def __init__(self, info: str, message: str, failed: tuple[tuple[str, str, int], ...] = ()) -> None:
        super().__init__(message)
        self.info, self.message, self.failed = info, message, failed


def schedule(index: Index, config: Config, *, now: float) -> list[int]:
    """Cut the jobs of the initiated requests whose instances are all here, fail those that waited too long,
    settle those whose jobs ended, forget those past ``keep_hours``; return the jobs cut."""
    settings = config.mcm
    if settings is None:
        return []
    made: list[int] = []
    for req in index.media_requests(states=("pending",)):
        if req.jobs:
            _settle(index, config, req, now=now)
            continue
        try:
            planned = plan(index, req, settings, now=now)
        except Failure as f:
            index.finish_media_request(req.uid, state="failed", info=f.info, failed=f.failed, now=now)
            logger.error("media request %s from %s failed: %s %s", req.uid, req.calling_aet, f.info, f.message)
            audit.append(config, "media-request-failed", request=req.uid, calling_aet=req.calling_aet,
                         info=f.info, reason=f.message)
            continue
        if planned is None:
            continue  # waiting for its instances
        jobs = index.cut_request_jobs(req.uid, planned, fileset_id=str(req.request.get("fileset_id", "")))
        if jobs:
            made += jobs
            logger.info("media request %s from %s: %s %s, %s", req.uid, req.calling_aet,
                        "job" if len(jobs) == 1 else "jobs", ", ".join(map(str, jobs)),
                        counted(len(req.refs), "instance"))
    keep = settings.keep_hours * 3600
    for uid in index.forget_media_requests(finished_before=now - keep, created_before=now - keep):
        logger.info("media request %s forgotten (mcm.keep_hours)", uid)
    return made


def plan(index: Index, req: MediaRequest, settings: MediaRequests, *, now: float
         ) -> list[tuple[list[str], list[str], str]] | None:
    """The request's jobs, each (studies, SOP Instance UIDs, route JSON); None while it waits for instances.
    Raises :class:`Failure` when it cannot be made."""
    counts = Counter(u for u, _, _ in req.refs)
    if twice := sorted(u for u, n in counts.items() if n > 1):
        raise Failure("DUPL_REF_INST", f"referenced twice: {', '.join(twice)}")
    held = index.request_instances(counts)
    missing = [(u, c, NO_SUCH_OBJECT_INSTANCE) for u, c, _ in req.refs if u not in held]
    if missing:
        if now < (req.initiated or now) + settings.wait_seconds:
            return None
        raise Failure("NO_INSTANCE", f"{counted(len(missing), 'instance')} not received within mcm.wait_seconds",
                      tuple(missing))
    conflicts = [(u, c, CLASS_INSTANCE_CONFLICT) for u, c, _ in req.refs if held[u][1] != c]
    if conflicts:
        raise Failure("INST_AP_CONFLICT", "an instance is not of the SOP class referenced", tuple(conflicts))
    by_profile: dict[str, dict[str, list[str]]] = {}  # profile -> study -> instances
    profile_of_study: dict[str, str] = {}
    for uid, _, asked in req.refs:
        profile, study = asked or settings.profile, held[uid][0]
        if profile_of_study.setdefault(study, profile) != profile:
            raise Failure("INST_AP_CONFLICT", f"study {study} asked for on {profile_of_study[study]} and {profile}")
        by_profile.setdefault(profile, {}).setdefault(study, []).append(uid)
    splitting = bool(req.request.get("splitting"))
    if len(by_profile) > 1 and not splitting:
        raise Failure("INST_AP_CONFLICT", f"items ask for {', '.join(sorted(by_profile))} and media splitting "
                                          f"is not allowed")
    media: list[tuple[str, list[str]]] = []  # (profile, studies)
    for profile, studies in by_profile.items():
        size = {s: sum(held[u][2] for u in uids) for s, uids in studies.items()}
        capacity = get_profile(profile).capacity_sectors
        if capacity is not None and (big := [s for s, n in size.items() if n > capacity * SECTOR]):
            raise Failure("INST_OVERSIZED", f"study {big[0]} is larger than a {profile} medium")
        groups = pack(list(studies), profile, size=size.__getitem__) if splitting else [list(studies)]
        if not splitting and capacity is not None and sum(size.values()) > capacity * SECTOR * 0.99:
            raise Failure("SET_OVERSIZED", f"the instances exceed a {profile} medium and splitting is not allowed")
        media += [(profile, sorted(g)) for g in groups]
    jobs = []
    for n, (profile, members) in enumerate(media, 1):
        route = _route(req, settings, profile, volume=(n, len(media)) if len(media) > 1 else (1, 1))
        jobs.append((members, [u for s in members for u in by_profile[profile][s]], route.to_json()))
    return jobs


def _route(req: MediaRequest, settings: MediaRequests, profile: str, *, volume: tuple[int, int]) -> RouteSnapshot:
    """The route snapshot of a request's medium: its profile, copies, PDI and viewer, lossy or not,
    de-identified or not."""
    wanted = req.request
    pdi_asked = str(wanted.get("non_dicom", ""))
    pdi = None if not pdi_asked else pdi_asked.startswith("FOR_") and get_profile(profile).pdi
    lossy = [c for c in _LOSSY if c in compressions(profile)] if wanted.get("lossy") else []
    return RouteSnapshot(
        Match(), "burn", profile=profile, copies=req.copies or settings.copies, output=settings.output,
        compress=Compression(lossy[0] if lossy else "none"), deidentify=bool(wanted.get("deidentify")), pdi=pdi,
        web=bool(pdi),
        viewer=settings.viewer if wanted.get("display_application") and get_profile(profile).pdi else None,
        label="REQUEST", where=f"media request {req.uid}", position=REQUEST_POSITION, volume=volume,
        stations=settings.stations)


def _settle(index: Index, config: Config, req: MediaRequest, *, now: float) -> None:
    """A request whose jobs have all ended: done when each made its medium, else failed (or cancelled)."""
    states = {j[1] for j in req.jobs}
    if states & {"pending", "building", "built", "delivering"}:
        return
    if states == {"done"}:
        index.finish_media_request(req.uid, state="done", now=now)
        audit.append(config, "media-request-done", request=req.uid, calling_aet=req.calling_aet,
                     jobs=[j[0] for j in req.jobs])
        return
    errors = "; ".join(str(j[4]) for j in req.jobs if j[4])
    state, info = ("failed", "PROC_FAILURE") if "failed" in states else ("cancelled", "UNKNOWN")
    index.finish_media_request(req.uid, state=state, info=info, now=now)
    logger.error("media request %s from %s %s: %s", req.uid, req.calling_aet, state, errors or "its job was cancelled")
    audit.append(config, "media-request-failed", request=req.uid, calling_aet=req.calling_aet, info=info,
                 reason=errors or "cancelled")
