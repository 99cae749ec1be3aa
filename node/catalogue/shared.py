"""Jobs any allowed station builds, when the stations' spools are on a shared file system (``node.shared_spool``).

``serve`` runs :class:`SharedBuilder` in place of its builder. Each round it *offers* the station's new jobs in
the catalogue (:func:`node.catalogue.claims.offer`) with what a builder needs (:class:`Work`: the route, the
spool files, the studies), *settles* its offered jobs from their claims (another station's build shows here as
building, its outcome is recorded in this station's index as if built here: N-GET, ``status`` and the console
read it there), then *claims* the oldest job it may build, its own or another station's, builds and delivers it
while a :class:`Lease` renews the claim, and publishes under the fencing token. A station whose lease was lost
stops waiting, removes what it staged and publishes nothing.

A job whose files are not all in the spool (a late study completed from an earlier volume's image, a re-burn
read back) is offered to its own station only: its other files are in that station's data folder.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from node import audit, jobs
from node.catalogue import claims, link, schema
from node.config import Config
from node.errors import NodeError
from node.index import Index, Job, Volume
from node.media import outputs
from node.media.publisher import label_fields
from node.media.waiting import Interrupted
from node.routing import RouteSnapshot
from node.words import counted

logger = logging.getLogger(__name__)

#: Seconds between rounds when there is nothing to build.
POLL_S = 0.5
#: Seconds between attempts while the catalogue is unreachable.
RETRY_S = 2.0


@dataclass(frozen=True)
class Work:
    """What a station needs to build a job another station cut, as the catalogue keeps it (JSON)."""

    route: str
    label: str
    files: list[str]
    studies: list[list[str]]  # (study UID, patient ID, patient name)
    completes: str
    fileset_id: str
    request: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Work:
        return cls(**json.loads(text))


def work_of(index: Index, job: Job, station: str, spool: Path) -> tuple[Work, list[str]]:
    """A job's :class:`Work`, and the stations that may build it: its route's ``stations`` (default: this one),
    only this one when a file of it lies outside the shared spool."""
    route = RouteSnapshot.from_json(job.route)
    if job.late:
        jobs.complete_from_images(index, job.id, spool.parent / "readback" / str(job.id))
    files = [p for _, p, _ in index.job_files(job.id)]
    work = Work(job.route, jobs.volume_label(route.label, job.id), files,
                [list(s) for s in index.job_studies(job.id)], index.addendum_target(job.id) or "",
                index.requested_fileset_id(job.id), index.job_request(job.id))
    shared = all(Path(p).is_relative_to(spool) for p in files)
    return work, list(route.stations or (station,)) if shared else [station]


def offer_new(index: Index, db: link.Connection, station: str, spool: Path) -> int:
    """Offer this station's pending jobs the catalogue does not hold yet; return how many."""
    pending = {j.id: j for j in index.jobs(states=("pending",), limit=1000)}
    if not pending:
        return 0
    known = {i for (i,) in db.execute("SELECT job_id FROM claims WHERE station = %s AND job_id = ANY(%s)",
                                      (station, list(pending)))}
    new = [j for i, j in sorted(pending.items()) if i not in known]
    for job in new:
        work, stations = work_of(index, job, station, spool)
        claims.offer(db, station, job.id, stations, created=job.created, work=work.to_json())
    return len(new)


def settle(index: Index, db: link.Connection, station: str) -> int:
    """Bring this station's open offered jobs up to their claims: building elsewhere, done (the volume
    recorded here), failed; a failed job retried here is claimable again, one cancelled here is withdrawn.
    Return how many finished."""
    cancelled = [j.id for j in index.jobs(states=("cancelled",), limit=1000)]
    if cancelled:
        claims.withdraw(db, station, cancelled)
    local = {j.id: j for j in index.jobs(states=("pending", "building"), limit=1000)}
    if not local:
        return 0
    finished = 0
    rows = db.execute("SELECT job_id, state, holder, result, error, done, total, finished, waiting, waiting_media "
                      "FROM claims WHERE station = %s AND job_id = ANY(%s)", (station, list(local)))
    waits = {job_id: message for job_id, _, message in index.waits()}
    for job_id, state, holder, result, error, done, total, when, waiting, media in rows.fetchall():
        job = local[job_id]
        if state == "failed" and (error == claims.WITHDRAWN or (job.finished or 0) >= (when or float("inf"))):
            claims.reopen(db, station, job_id)  # retried here after it was cancelled here or failed there
        elif state == "failed":
            index.finish_job(job_id, error=f"{error} (built by station {holder})")
            logger.error("job %d failed at station %s: %s", job_id, holder, error)
            finished += 1
        elif state == "done" and result is not None:
            _record_done(index, job_id, json.loads(result))
            logger.info("job %d: built by station %s", job_id, holder)
            finished += 1
        elif state == "building":
            index.set_job_state(job_id, "building", only_from=("pending",))
            if total:
                index.set_progress(job_id, phase="building", done=done, total=total, started=job.created,
                                   now=time.time())
            where = "" if holder == station else f"at station {holder}, "
            _record_wait(index, job_id, waits.get(job_id), waiting and where + waiting, media)
        elif state == "pending":
            index.set_job_state(job_id, "pending", only_from=("building",))
            _record_wait(index, job_id, waits.get(job_id), None, False)
    return finished


def _record_wait(index: Index, job_id: int, recorded: str | None, message: str | None, media: bool) -> None:
    """Record at the cutting station what the building station's output waits for (its ``status``, console and
    N-GET read it there), when it changed: a round that changes nothing writes nothing."""
    if message == recorded:
        return
    if message is None:
        index.clear_wait(job_id)
    else:
        index.set_wait(job_id, message, media=media)


def _record_done(index: Index, job_id: int, result: dict[str, Any]) -> None:
    """Record in the cutting station's index what the station that built the job published."""
    volume = Volume(label=result["label"], job_id=job_id, kind=result["kind"], created=result["created"],
                    copies=result["copies"], paths=result["paths"], bytes=result["bytes"], superseded_by=None,
                    studies=[(s[0], s[1], s[2]) for s in result["studies"]], label_record=result["label_record"])
    index.finish_job(job_id, volumes=[volume] if volume.kind == "archive" else [], error=result["error"] or None,
                     uid_map=result["uid_map"])
    index.set_request_medium(job_id, fileset_id=result["fileset_id"], fileset_uid=result["fileset_uid"])


class Lease:
    """Renews a claim in a thread of its own (its own connection) every third of the lease, with the build's
    progress; :attr:`halt` is set when the lease is lost (:attr:`lost`) or the node stops."""

    def __init__(self, config: Config, held: claims.Claim, stop: threading.Event) -> None:
        self.config, self.held, self.stop = config, held, stop
        self.halt, self.lost, self._ended = threading.Event(), threading.Event(), threading.Event()
        self.progress = (0, 0)
        self.waiting: tuple[str, bool] | None = None  # what the output waits for, whether a blank medium
        self._thread = threading.Thread(target=self._run, name="medianode-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        lease_s = self.config.node.lease_seconds
        renewed = time.monotonic()
        db: link.Connection | None = None
        try:
            while not self._ended.wait(min(1.0, lease_s / 3)):
                if self.stop.is_set():
                    self.halt.set()
                try:
                    db = db or link.connect(self.config.node, autocommit=True)
                    if not claims.renew(db, self.held, lease_s=lease_s, progress=self.progress,
                                        waiting=self.waiting):
                        self._lose("taken over by another station")
                        return
                    renewed = time.monotonic()
                except (link.CatalogueUnreachable, link.Error) as exc:
                    if db is not None:
                        db.close()
                        db = None
                    if time.monotonic() - renewed > lease_s:  # it may have been taken over: never publish
                        self._lose(f"not renewed for {lease_s:.0f} s: {exc}")
                        return
        finally:
            if db is not None:
                db.close()

    def _lose(self, why: str) -> None:
        logger.warning("job %d of station %s: lease lost (%s): it will not be published here", self.held.job_id,
                       self.held.station, why)
        self.lost.set()
        self.halt.set()

    def check(self) -> None:
        """Raise :class:`Interrupted` once the lease is lost or the node stops (a build's progress calls it)."""
        if self.halt.is_set():
            raise Interrupted("lease lost" if self.lost.is_set() else "the node is stopping")

    def end(self) -> None:
        self._ended.set()
        self._thread.join()


class _LeaseWaiter:
    """An output's wait, carried by the lease's renewals to the catalogue (``media``: the output waits for a
    blank medium), interrupted by the node's stop or the loss of the lease."""

    def __init__(self, lease: Lease, *, media: bool) -> None:
        self.lease, self.media = lease, media

    def wait(self, message: str, seconds: float) -> bool:
        self.lease.waiting = (message, self.media)
        return not self.lease.halt.wait(seconds)

    def clear(self) -> None:
        self.lease.waiting = None


class SharedBuilder:
    """``serve``'s builder with a shared spool: a clerk thread offers and settles this station's jobs, while
    this one claims, builds, delivers and publishes (one job at a time, its own or another station's)."""

    def __init__(self, index: Index, config: Callable[[], Config], stop: threading.Event,
                 scheduled: threading.Event) -> None:
        self.index, self.config, self.stop, self.scheduled = index, config, stop, scheduled
        self.offered = threading.Event()

    def run(self) -> None:
        clerk = threading.Thread(target=self._loop, args=(self._clerk, Index(self.index.path), self.scheduled),
                                 name="medianode-offers")
        clerk.start()
        try:
            self._loop(self._claim, self.index, self.offered)
        finally:
            clerk.join()

    def _clerk(self, index: Index, db: link.Connection) -> bool:
        """Offer this station's new jobs, settle those others built; True when there may be more to do."""
        node = self.config().node
        if offer_new(index, db, node.station_name, node.data_dir / "spool"):
            self.offered.set()
        settle(index, db, node.station_name)
        return False

    def _claim(self, index: Index, db: link.Connection) -> bool:
        """Build one job this station may build, if one waits; True when it did."""
        held = claims.claim(db, self.config().node.station_name, lease_s=self.config().node.lease_seconds)
        if held is not None:
            self.build(db, held)
        return held is not None

    def _loop(self, step: Callable[[Index, link.Connection], bool], index: Index, wake: threading.Event) -> None:
        """Run ``step`` with a catalogue connection until the node stops: again at once when it did something,
        else after :data:`POLL_S` or ``wake``; after :data:`RETRY_S` while the catalogue is unreachable."""
        db: link.Connection | None = None
        try:
            while not self.stop.is_set():
                node = self.config().node
                try:
                    if db is None:
                        db = link.connect(node, autocommit=True)
                        schema.migrate(db)
                        if step == self._claim and (released := claims.release_all(db, node.station_name)):
                            logger.warning("catalogue: %s this station held before it stopped %s claimable again",
                                           counted(released, "job"), "is" if released == 1 else "are")
                    if step(index, db):
                        continue
                    wait = POLL_S
                except (link.CatalogueUnreachable, link.Error) as exc:
                    logger.warning("shared spool: the catalogue %s: %s", link.where(node), exc)
                    if db is not None:
                        db.close()
                        db = None
                    wait = RETRY_S
                if wake.wait(wait):
                    wake.clear()
        finally:
            if db is not None:
                db.close()
            if index is not self.index:
                index.close()

    def build(self, db: link.Connection, held: claims.Claim) -> None:
        """Build, deliver and publish one claimed job under its fencing token."""
        config = self.config()
        row = db.execute("SELECT work FROM claims WHERE station = %s AND job_id = %s",
                         (held.station, held.job_id)).fetchone()
        name = f"job {held.job_id} of station {held.station}"
        if row is None or row[0] is None:
            claims.release(db, held, error="offered without what a builder needs")
            return
        work = Work.from_json(row[0])
        route = RouteSnapshot.from_json(work.route)
        output = outputs.output_for(route.output or config.burn.output)
        lease = Lease(config, held, self.stop)
        medium: Path | None = None
        logger.info("%s: claimed (token %d)", name, held.token)
        try:
            def advance(n: int) -> None:
                lease.check()
                lease.progress = (lease.progress[0] + n, lease.progress[1])

            def total(n: int) -> None:
                lease.progress = (0, n)

            medium, report = jobs.make_medium(config, route, work.label, work.files, output, progress=advance,
                                              total=total, completes=work.completes, fileset_id=work.fileset_id)
            lease.check()
            paths = output.deliver(medium, copies=route.copies, volume_id=report.volume_id,
                                   label=label_fields(report.label, work.request), waiter=_LeaseWaiter(lease, media=output.waits_for_media))
        except Interrupted:
            if medium is not None:
                jobs.remove(medium)
            lease.end()
            if not lease.lost.is_set():
                claims.release(db, held)  # the node stops: claimable again at once
            logger.warning("%s: not published here (%s)", name,
                           "its lease was lost" if lease.lost.is_set() else "the node is stopping")
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the builder; the job shows it
            lease.end()
            error = str(exc) if isinstance(exc, NodeError) else f"internal error: {exc!r}"
            logger.error("%s failed: %s", name, error, exc_info=None if isinstance(exc, NodeError) else exc)
            claims.release(db, held, error=error)
            return
        finally:
            if medium is not None and not output.keeps_staged:
                jobs.remove(medium)
        lease.end()
        result = {"label": work.label, "kind": route.kind, "created": time.time(), "copies": route.copies,
                  "paths": paths, "bytes": report.bytes, "studies": work.studies, "label_record": report.label,
                  "error": jobs.left_out(report), "uid_map": report.uid_map, "fileset_id": report.fileset_id,
                  "fileset_uid": report.fileset_uid}
        try:
            published = claims.publish(db, held, work.label, finished=time.time(),
                                        record=lambda tx: _publish(tx, held, result))
        except link.Error:  # committed or not, we cannot tell: keep what was delivered rather than lose it
            logger.error("%s: the catalogue was lost while it was published; %s kept (the catalogue's volumes say "
                         "whether it counts)", name, ", ".join(paths))
            raise
        if not published:
            if output.keeps_staged:
                for path in paths:
                    jobs.remove(Path(path))
            logger.error("%s: taken over by another station while delivered here: not published, %s removed",
                         name, ", ".join(paths) if output.keeps_staged else "nothing")
            return
        audit.append(config, "volume-burned", job=held.job_id, station=held.station, label=work.label,
                     kind=route.kind, profile=route.profile, paths=paths, studies=[s[0] for s in work.studies],
                     patients=work.studies, instances=report.instances, supersedes=bool(work.completes) or None)
        logger.info("%s: volume %s, %s to %s", name, work.label, counted(report.instances, "instance"), paths[0])


def _publish(db: link.Connection, held: claims.Claim, result: dict[str, Any]) -> None:
    """The volume, in the transaction that checked the fencing token: recorded under the cutting station's
    name, as its own index will push it."""
    db.execute("UPDATE claims SET result = %s, done = total WHERE station = %s AND job_id = %s",
               (json.dumps(result), held.station, held.job_id))
    if result["kind"] != "archive":
        return
    db.execute("INSERT INTO volumes (station, label, job_id, kind, created, copies, paths, bytes, label_record) "
               "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (station, label) DO NOTHING",
               (held.station, result["label"], held.job_id, result["kind"], result["created"], result["copies"],
                json.dumps(result["paths"]), result["bytes"], json.dumps(result["label_record"])))
    with db.cursor() as cur:
        cur.executemany("INSERT INTO volume_studies (station, label, study_uid, patient_id, patient_name) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        [(held.station, result["label"], *s) for s in result["studies"]])
