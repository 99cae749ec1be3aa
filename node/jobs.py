"""The scheduler and the build worker: a quiet study and a burn route become a job; the
worker claims it, builds the medium from the job's snapshot of spool files, publishes the
images atomically and records the volume.

Both loops wait on a ``threading.Event`` (never a bare sleep), so shutdown is prompt.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from node import audit
from node import routing
from node.config import MAX_COPIES, Config
from node.errors import NodeError, UsageError
from node.index import Index, Job, StableStudy, Volume
from node.media import build, outputs, pdi
from node.media.compress import Policy
from node.media.outputs import OutputKind
from node.media.plan import Options
from node.media.publisher import label_fields
from node.media.waiting import Interrupted
from node.profiles import SECTOR, get_profile
from node.receive.instance import digest_of_spooled
from node.routing import RouteSnapshot
from node.words import counted

logger = logging.getLogger(__name__)

T = TypeVar("T")

_PER_FILE = 2 * SECTOR  # File Meta and the last sector's rounding, per instance, when packing


def schedule(index: Index, config: Config, *, now: float) -> list[int]:
    """Cut jobs for the studies that have been quiet for ``study_stable_seconds``; return their ids.

    Each study's routes are decided from what all its instances recorded (:func:`routing.decide`);
    a study with none is settled as stored only. The jobs of one patient's studies under one route
    are packed together when the route says ``group: patient``; the jobs that share a study are cut
    together (in one transaction) or not at all.
    """
    quiet_since = now - config.burn.study_stable_seconds
    stable = {s.study_uid: s for s in index.stable_studies(quiet_since)}
    records = index.study_records(list(stable)) if stable else {}
    decided = {uid: [replace(r, volume=(1, 1)) for r in routing.decide(records.get(uid, []))] for uid in stable}
    index.settle([uid for uid, routes in decided.items() if not routes])
    groups: dict[tuple[str, RouteSnapshot], list[StableStudy]] = {}
    for uid, routes in decided.items():
        s = stable[uid]
        for route in routes:
            groups.setdefault((s.patient_id if route.group == "patient" else uid, route), []).append(s)
    planned: list[tuple[list[StableStudy], RouteSnapshot]] = []
    for (_, route), studies in groups.items():
        volumes = _pack(studies, route)
        # "volume n of m" on a patient's label, when the patient needs several media
        planned += [(volume, replace(route, volume=(n, len(volumes))) if len(volumes) > 1 else route)
                    for n, volume in enumerate(volumes, 1)]
    jobs = []
    for batch in _sharing_studies(planned):
        cut = index.cut_jobs([([s.study_uid for s in v], r.to_json()) for v, r in batch], quiet_since=quiet_since)
        if cut is None:
            continue  # an instance arrived meanwhile: the studies wait again
        for job, (volume, route) in zip(cut, batch):
            jobs.append(job)
            uids = ", ".join(s.study_uid for s in volume)
            if any(s.jobs for s in volume):
                logger.warning("job %d: late arrival re-burns study %s; its volume supersedes the earlier one if it "
                               "holds all of it, else it is an addendum completing it", job, uids)
            else:
                logger.info("job %d: study %s is stable, %d bytes, route at %s (%s)", job, uids,
                            sum(s.bytes for s in volume), route.where or f"routes[{route.position}]", route.profile)
            for s in volume:
                audit.append(config, "study-received", job=job, study_uid=s.study_uid,
                             patient_id=s.patient_id, bytes=s.bytes, late=bool(s.jobs))
    return jobs


_Planned = tuple[list[StableStudy], RouteSnapshot]


def _sharing_studies(planned: list[_Planned]) -> list[list[_Planned]]:
    """The planned jobs in batches that share no study: each batch is cut in one transaction."""
    batches: list[tuple[set[str], list[_Planned]]] = []
    for job in planned:
        uids = {s.study_uid for s in job[0]}
        joined = [b for b in batches if b[0] & uids]
        merged = (uids.union(*(b[0] for b in joined)), [x for b in joined for x in b[1]] + [job])
        batches = [b for b in batches if not b[0] & uids] + [merged]
    return [jobs for _, jobs in batches]


def _pack(studies: list[StableStudy], route: RouteSnapshot) -> list[list[StableStudy]]:
    """Studies of one patient onto as few volumes as their sizes need (:func:`pack`)."""
    if route.group != "patient":
        return [[s] for s in studies]
    return pack(studies, route.profile, size=lambda s: s.bytes)


def pack(items: list[T], profile: str, *, size: Callable[[T], int]) -> list[list[T]]:
    """Studies onto as few media of ``profile`` as their sizes need (first fit, largest first).

    A study is never split; one larger than the medium gets a volume of its own, whose build
    then fails with the capacity message.
    """
    capacity = get_profile(profile).capacity_sectors
    if capacity is None:
        return [items]
    room = capacity * SECTOR * 0.99  # directories, path tables, DICOMDIR
    bins: list[tuple[float, list[T]]] = []
    for s in sorted(items, key=size, reverse=True):
        need = size(s) + _PER_FILE * max(1, size(s) // (512 * 1024))
        for i, (used, members) in enumerate(bins):
            if used + need <= room:
                bins[i] = (used + need, [*members, s])
                break
        else:
            bins.append((need, [s]))
    return [members for _, members in bins]


@dataclass(frozen=True)
class Built:
    """A job whose medium is built and staged, waiting for its output's delivery worker."""

    job: Job
    route: RouteSnapshot
    label: str
    output: OutputKind[Any]
    medium: Path
    report: build.BurnReport
    studies: list[tuple[str, str, str]]
    #: The label of the volume this one completes (an addendum), or "".
    completes: str = ""


class Worker:
    """Builds jobs from the index's queue (:meth:`build`) and hands their media to their outputs
    (:meth:`deliver`). ``medianode serve`` runs one builder and one deliverer per output, each with its
    own Worker and index connection; :meth:`run_pending` does both in turn, for one thread."""

    def __init__(self, index: Index, config: Callable[[], Config]) -> None:
        self.index = index
        self.config = config

    def run_pending(self, stop: threading.Event | None = None) -> int:
        """Build and deliver every pending job (until ``stop`` is set); return how many were built."""
        done = 0
        while not (stop and stop.is_set()):
            job = self.index.claim_job()
            if job is None:
                break
            built = self.build(job)
            if built is not None:
                self.deliver(built, stop)
            done += 1
        return done

    def build(self, job: Job) -> Built | None:
        """Build a claimed job's medium once, where its output stages it; None when the job failed."""
        config = self.config()
        route = RouteSnapshot.from_json(job.route)
        label = volume_label(route.label, job.id)
        if job.late:
            complete_from_images(self.index, job.id, config.node.data_dir / "readback" / str(job.id))
        completes = self.index.addendum_target(job.id) or ""
        files = self.index.job_files(job.id)
        output = outputs.output_for(route.output or config.burn.output)
        meter = ProgressRecord(self.index, job.id)
        try:
            medium, report = make_medium(config, route, label, [p for _, p, _ in files], output,
                                         progress=meter.advance, total=meter.start, completes=completes,
                                         fileset_id=self.index.requested_fileset_id(job.id))
        except Exception as exc:
            self._failed(job, exc)
            return None
        meter.finish()
        for row in report.repaired:
            logger.info("job %d: %s: repaired %s", job.id, row["path"], row["repair"])
        self.index.set_built(job.id, output.queue)
        return Built(job, route, label, output, medium, report, self.index.job_studies(job.id), completes)

    def deliver(self, built: Built, stop: threading.Event | None = None) -> None:
        """Hand a built medium to its output for every copy. A failed copy waits and is retried per the
        output's settings; only then does the job fail, its spool files kept. When the node stops while it
        waits, the job goes back to the queue."""
        job, route, label, report = built.job, built.route, built.label, built.report
        config = self.config()
        medium: Path | None = built.medium
        self.index.set_job_state(job.id, "delivering", only_from=("built",))
        try:
            waiter = _IndexWaiter(self.index, job.id, stop or threading.Event(), media=built.output.waits_for_media)
            fields = label_fields(report.label, self.index.job_request(job.id))
            paths = built.output.deliver(built.medium, copies=route.copies, volume_id=report.volume_id,
                                         label=fields, waiter=waiter)
        except Interrupted as exc:
            medium = None  # a robot may still be reading it; the retried job builds it again
            self.index.requeue(job.id, only_from=("delivering",))
            logger.warning("job %d: back to the queue, the node is stopping (%s)", job.id, exc)
            return
        except Exception as exc:
            self._failed(job, exc)
            return
        finally:
            if medium is not None and not built.output.keeps_staged:
                remove(medium)  # a device's copies are written: the staged image is not a deliverable
        volume = Volume(label=label, job_id=job.id, kind=route.kind, created=time.time(), copies=route.copies,
                        paths=paths, bytes=report.bytes, superseded_by=None, studies=built.studies,
                        label_record=report.label)
        self.index.finish_job(job.id, volumes=[volume] if route.kind == "archive" else [],
                              error=left_out(report) or None, uid_map=report.uid_map)
        self.index.set_request_medium(job.id, fileset_id=report.fileset_id, fileset_uid=report.fileset_uid)
        audit.append(config, "volume-burned", job=job.id, label=label, kind=route.kind, profile=route.profile,
                     paths=volume.paths, studies=[s[0] for s in built.studies], patients=built.studies,
                     instances=report.instances, supersedes=job.late, completes=built.completes or None)
        logger.info("job %d: volume %s, %s, %s to %s", job.id, label, counted(report.instances, "instance"),
                    counted(route.copies, "copy"), paths[0])

    def _failed(self, job: Job, exc: Exception) -> None:
        if isinstance(exc, NodeError):
            self.index.finish_job(job.id, error=str(exc))
            logger.error("job %d failed: %s", job.id, exc)
        else:  # a bug must not stop the worker; the job shows it
            logger.error("job %d failed unexpectedly", job.id, exc_info=exc)
            self.index.finish_job(job.id, error=f"internal error: {exc!r}")

    def put_back(self, built: Built) -> None:
        """A built job no delivery will take (the node is stopping): back to the queue, its staged medium
        removed (a folder's too: it is built again, whole, at the next start)."""
        remove(built.medium)
        self.index.requeue(built.job.id, only_from=("built",))
        logger.warning("job %d: back to the queue, the node is stopping", built.job.id)


def make_medium(config: Config, route: RouteSnapshot, label: str, files: list[str], output: OutputKind[Any], *,
                progress: Callable[[int], None], total: Callable[[int], None], completes: str,
                fileset_id: str) -> tuple[Path, build.BurnReport]:
    """Build a job's medium from its spool ``files`` where ``output`` stages it (what an earlier attempt left
    there removed); the station that builds it need not be the one that cut it (a shared spool)."""
    missing = [p for p in files if not os.path.exists(p)]
    if missing:
        raise NodeError(f"the spool no longer holds {len(missing)} of its {counted(len(files), 'instance')}")
    profile = get_profile(route.profile)
    suffix = "" if profile.file_system == "folder" else ".iso"
    medium = output.stage(name=label, suffix=suffix, data_dir=config.node.data_dir)
    remove(medium)  # what an interrupted or failed attempt of this job left
    report = build.burn(files, out=medium, profile=profile, label=label, progress=progress, total=total,
                        fmt=output.staging_format(), options=burn_options(route),
                        pdi=pdi.for_route(config.burn, profile, pdi=route.pdi, web=route.web, viewer=route.viewer),
                        volume=route.volume, completes=completes, fileset_id=fileset_id)
    return medium, report


class ProgressRecord:
    """How far a job's medium is written, recorded in the index for the console's Now: the bytes written
    so far of those to write, at most once every ``every_s`` seconds (never per piece), and at the end."""

    def __init__(self, index: Index, job_id: int, *, every_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.index, self.job_id, self.every_s, self.clock = index, job_id, every_s, clock
        self.done = self.total = self.recorded = 0
        self.started = self.written = 0.0

    def start(self, total: int) -> None:
        """The medium's bytes to write are known (:func:`node.media.build.burn`'s ``total``)."""
        self.done, self.total = 0, total
        self.started = self.clock()
        self._record(self.started)

    def advance(self, n: int) -> None:
        """``n`` more bytes written (``burn``'s ``progress``)."""
        self.done += n
        now = self.clock()
        if now - self.written >= self.every_s or self.recorded < self.total <= self.done:
            self._record(now)

    def finish(self) -> None:
        """The medium is built: record where the count ended, if that is not recorded yet."""
        if self.total and self.recorded != self.done:
            self._record(self.clock())

    def _record(self, now: float) -> None:
        self.written, self.recorded = now, self.done
        self.index.set_progress(self.job_id, phase="building", done=self.done, total=self.total,
                                started=self.started, now=now)


class _IndexWaiter:
    """An output's wait, recorded in the index for ``medianode status`` (``media``: the output waits for a blank
    medium), interrupted by the node's stop."""

    def __init__(self, index: Index, job_id: int, stop: threading.Event, *, media: bool = False) -> None:
        self.index, self.job_id, self.stop, self.media = index, job_id, stop, media

    def wait(self, message: str, seconds: float) -> bool:
        self.index.set_wait(self.job_id, message, media=self.media)
        return not self.stop.wait(seconds)

    def clear(self) -> None:
        self.index.clear_wait(self.job_id)


def remove(path: Path) -> None:
    """A staged or published medium, a file or a folder tree."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def burn_options(route: RouteSnapshot) -> Options:
    """A route's compression and UID settings, as recorded with its job."""
    return Options(
        compress=route.compress,
        by_modality=route.compress_by_modality,
        policy=Policy(lossy_mammography=route.lossy_mammography, bit_reduction=route.bit_reduction),
        new_uids=route.new_uids,
        deidentify=route.deidentify,
        burned_in=route.burned_in_annotation,
        repair=route.repair,
    )


def volume_label(label: str | None, job_id: int) -> str:
    """A Volume Identifier (d-characters, <= 32) unique to the job: ``<LABEL>_<job>``."""
    base = re.sub(r"[^A-Z0-9_]", "_", (label or "MEDIANODE").upper())[:24]
    return f"{base}_{job_id:06d}"


def left_out(report: build.BurnReport) -> str:
    """What the build refused, for the job's error (empty when it refused nothing)."""
    if not report.refused:
        return ""
    first = report.refused[0]
    return f"{counted(len(report.refused), 'instance')} left out, e.g. {first['path']}: {first['reason']}"


#: ``medianode jobs retry|cancel``: the state each moves a job to, and the states it may leave.
MOVES: dict[str, tuple[str, tuple[str, ...]]] = {
    "retry": ("pending", ("failed", "cancelled")),
    "cancel": ("cancelled", ("pending", "failed")),
}


def move_job(index: Index, job_id: int, action: str) -> tuple[str, str]:
    """Retry or cancel a job (see :data:`MOVES`); return its state before and after.

    A job in another state is left as it is, with a :class:`NodeError` saying why.
    """
    job = index.job(job_id)
    if job is None:
        raise UsageError(f"no job {job_id}")
    state, allowed = MOVES[action]
    if not index.set_job_state(job_id, state, only_from=allowed):
        raise NodeError(f"job {job_id} is {job.state}; {action} needs one of {', '.join(allowed)}")
    return job.state, state


def complete_from_images(index: Index, job_id: int, folder: Path) -> int:
    """Make a late job hold every instance of the earlier volumes it would supersede, where it can: what
    the spool no longer holds is read back from an earlier volume's image while it is still in its output
    folder, matched by original SOP Instance UID (the volume's UID map recognises renamed copies).
    A volume is completed whole or not at all; return how many instances were read back."""
    mine = {u for u, _, _ in index.job_files(job_id)}
    added = 0
    for volume, theirs in index.earlier_volumes(job_id):
        missing = theirs - mine
        if not missing:
            continue
        found = read_back(volume, missing, index.job_uid_map(volume.job_id), folder)
        if set(found) != missing:
            lacking = len(missing - set(found))
            logger.info("job %d: %d of the %s of %s %s neither in the spool nor on its image: the new volume "
                        "completes it as an addendum", job_id, lacking, counted(len(theirs), "instance"), volume.label,
                        "is" if lacking == 1 else "are")
            continue
        index.add_job_files(job_id, [(u, path, size) for u, (path, size) in found.items()])
        mine |= missing
        added += len(found)
        logger.info("job %d: %s of %s read back from %s", job_id, counted(len(found), "instance"), volume.label,
                    volume.paths[0])
    return added


def read_back(volume: Volume, wanted: set[str], uid_map: dict[str, str], folder: Path) -> dict[str, tuple[str, int]]:
    """Copy the instances of ``wanted`` (original SOP Instance UIDs) from the volume's image, when one of its
    published paths is still readable, into ``folder``; return original UID -> (path, size) of those found."""
    from node.read import check, medium  # pydicom and pycdlib: loaded by a reburn only, not by every serve

    original = {new: old for old, new in uid_map.items()}
    found: dict[str, tuple[str, int]] = {}
    for image in (Path(p) for p in volume.paths):
        if not image.exists():
            continue
        try:
            with medium.open_medium(image) as m:
                for inst in check.survey_medium(m).instances:
                    uid = original.get(inst.sop_instance_uid, inst.sop_instance_uid)
                    if uid not in wanted or uid in found:
                        continue
                    folder.mkdir(parents=True, exist_ok=True)
                    target = folder / f"{uid}.dcm"
                    with m.open(inst.path) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    found[uid] = (str(target), target.stat().st_size)
        except (NodeError, OSError) as exc:
            logger.warning("volume %s: cannot read back %s: %s", volume.label, image, exc)
            continue
        if len(found) == len(wanted):
            break
    return found


def reburn(index: Index, label: str, data_dir: Path, *, copies: int | None = None) -> tuple[int, list[str]]:
    """Queue a new job burning again what an archive volume holds (a lost disc), ``copies`` times (default:
    as many as its route asks for); return its id and the original SOP Instance UIDs it cannot hold.

    It combines what it can: the spool's copies, then what can be read back from
    the volume's image. A re-burn that lacks any instance never supersedes the
    volume (:meth:`Index.finish_job`); one that could hold nothing is refused.
    """
    if copies is not None and not 1 <= copies <= MAX_COPIES:
        raise UsageError(f"copies must be 1 to {MAX_COPIES}, not {copies}")
    found = index.volumes(label=label)
    if not found:
        raise UsageError(f"no archive volume {label!r}")
    volume = found[0]
    studies = [s[0] for s in volume.studies]
    burned = index.volume_instances(label)
    held = {u for u, path, _ in index.study_files(studies) if os.path.exists(path)} & burned
    folder = data_dir / "readback" / f"reburn-{label}-{time.time_ns()}"
    read = read_back(volume, burned - held, index.job_uid_map(volume.job_id), folder) if burned - held else {}
    cannot = sorted(burned - held - set(read))
    if not held and not read:
        raise NodeError(f"neither the spool nor an image holds any of the {counted(len(burned), 'instance')} of "
                        f"{label}: "
                        f"it cannot be re-burned")
    original = index.job(volume.job_id)
    if original is None:
        raise NodeError(f"the job that made {label} is no longer in the index: its route is unknown")
    route = original.route
    if copies is not None:
        route = replace(RouteSnapshot.from_json(route), copies=copies).to_json()
    job = index.enqueue(studies, route=route,
                        read_back=[(u, path, size) for u, (path, size) in read.items()])
    return job, cannot


def clean_spool(index: Index, config: Config, *, now: float) -> int:
    """Delete spool files no job needs any more (released copies; studies past the retention); each study
    whose instances go is audited (``study-deleted``). A file's data set digest is recorded first where it was
    never computed, so that the same instance sent again is still known for what it is."""
    paths = index.deletable_files(now=now, retention_s=config.burn.retention_hours * 3600)
    studies = index.studies_of(paths) if paths else []
    for uid, path in index.undigested(paths):  # what tells a copy sent again after the file is gone
        if digest := digest_of_spooled(path):
            index.record_digest(uid, path, digest)
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    if paths:
        index.forget_files(paths)
        logger.info("spool: %s removed", counted(len(paths), "file"))
    for study in studies:
        try:
            audit.append(config, "study-deleted", **study)
        except OSError as exc:
            logger.error("Cannot write the audit log in %s: %s", config.node.data_dir, exc)
    return len(paths)


def clean_partial_outputs(folders: list[Path]) -> None:
    """Remove what a crash left half-written in the output folders (``.NAME.part-*``, staging)."""
    for folder in folders:
        if not folder.is_dir():
            continue
        for leftover in folder.glob(".*.part-*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        for leftover in folder.glob(".*.staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
