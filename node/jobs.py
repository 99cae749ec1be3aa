"""The scheduler and the build worker: a quiet study and a burn route become a job; the
worker claims it, builds the medium from the job's snapshot of spool files, publishes the
images atomically and records the volume.

Both loops wait on a ``threading.Event`` (never a bare sleep), so shutdown is prompt.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from node import audit
from node.config import Config, output_from_settings
from node.errors import NodeError, UsageError
from node.index import Index, Job, StableStudy, Volume
from node.media import build, outputs, pdi
from node.media.compress import Policy
from node.media.plan import Options
from node.media.publisher import label_fields
from node.media.waiting import Interrupted
from node.profiles import SECTOR, get_profile
from node.read import check, medium

logger = logging.getLogger(__name__)

_PER_FILE = 2 * SECTOR  # File Meta and the last sector's rounding, per instance, when packing


def schedule(index: Index, config: Config, *, now: float) -> list[int]:
    """Cut jobs for the studies that have been quiet for ``study_stable_seconds``; return their ids."""
    quiet_since = now - config.burn.study_stable_seconds
    stable = index.stable_studies(quiet_since)
    index.settle([s.study_uid for s in stable if _settings(s.route)["action"] != "burn"])
    groups: dict[tuple[str, str], list[StableStudy]] = {}
    for s in stable:
        settings = _settings(s.route)
        if settings["action"] != "burn":
            continue
        key = (s.patient_id if settings.get("group") == "patient" else s.study_uid, s.route)
        groups.setdefault(key, []).append(s)
    jobs = []
    for (_, route), studies in groups.items():
        volumes = _pack(studies, _settings(route))
        for n, volume in enumerate(volumes, 1):
            # "volume n of m" on a patient's label, when the patient needs several media
            numbered = route if len(volumes) == 1 else json.dumps({**_settings(route), "volume": [n, len(volumes)]},
                                                                  sort_keys=True)
            job = index.cut_job([s.study_uid for s in volume], route=numbered, quiet_since=quiet_since)
            if job is None:
                continue  # an instance arrived meanwhile: the study waits again
            jobs.append(job)
            uids = ", ".join(s.study_uid for s in volume)
            if any(s.jobs for s in volume):
                logger.warning("job %d: late arrival re-burns study %s; its volume supersedes the earlier one if it "
                               "holds all of it, else it is an addendum completing it", job, uids)
            else:
                logger.info("job %d: study %s is stable, %d bytes", job, uids, sum(s.bytes for s in volume))
            for s in volume:
                audit.append(config.node.data_dir, "study-received", job=job, study_uid=s.study_uid,
                             patient_id=s.patient_id, bytes=s.bytes, late=bool(s.jobs))
    return jobs


def _pack(studies: list[StableStudy], settings: dict[str, object]) -> list[list[StableStudy]]:
    """Studies of one patient onto as few volumes as their sizes need (first fit, largest first).

    A study is never split; one larger than the medium gets a volume of its own, whose build
    then fails with the capacity message.
    """
    if settings.get("group") != "patient":
        return [[s] for s in studies]
    capacity = get_profile(str(settings["profile"])).capacity_sectors
    if capacity is None:
        return [studies]
    room = capacity * SECTOR * 0.99  # directories, path tables, DICOMDIR
    bins: list[tuple[float, list[StableStudy]]] = []
    for s in sorted(studies, key=lambda s: s.bytes, reverse=True):
        need = s.bytes + _PER_FILE * max(1, s.bytes // (512 * 1024))
        for i, (used, members) in enumerate(bins):
            if used + need <= room:
                bins[i] = (used + need, [*members, s])
                break
        else:
            bins.append((need, [s]))
    return [members for _, members in bins]


class Worker:
    """Builds one job at a time, from the index's queue."""

    def __init__(self, index: Index, config: Callable[[], Config]) -> None:
        self.index = index
        self.config = config

    def run_pending(self, stop: threading.Event | None = None) -> int:
        """Build every pending job (until ``stop`` is set); return how many were built."""
        done = 0
        while not (stop and stop.is_set()):
            job = self.index.claim_job()
            if job is None:
                break
            self.build(job, stop)
            done += 1
        return done

    def build(self, job: Job, stop: threading.Event | None = None) -> None:
        """Build the job's medium once, then hand it to its output for every copy. A failed copy waits and
        is retried per the output's settings; only then does the job fail, its spool files kept."""
        config = self.config()
        settings = job.settings
        label = volume_label(settings.get("label"), job.id)
        studies = self.index.job_studies(job.id)
        if job.late:
            complete_from_images(self.index, job.id, config.node.data_dir / "readback" / str(job.id))
        completes = self.index.addendum_target(job.id)
        files = self.index.job_files(job.id)
        output = output_from_settings(settings["output"]) if settings.get("output") else config.burn.output
        medium: Path | None = None
        try:
            missing = [p for _, p, _ in files if not os.path.exists(p)]
            if missing:
                raise NodeError(f"the spool no longer holds {len(missing)} of its {len(files)} instance(s)")
            profile = get_profile(str(settings["profile"]))
            suffix = "" if profile.file_system == "folder" else ".iso"
            medium = outputs.build_target(output, name=label, suffix=suffix, data_dir=config.node.data_dir)
            _remove(medium)  # what an interrupted or failed attempt of this job left
            report = build.burn([p for _, p, _ in files], out=medium, profile=profile, label=label,
                                fmt=outputs.build_format(output), options=burn_options(settings),
                                pdi=pdi.for_route(settings, config.burn, profile), volume=_volume(settings),
                                completes=completes or "")
            copies = int(str(settings.get("copies", 1)))
            waiter = _IndexWaiter(self.index, job.id, stop or threading.Event())
            paths = outputs.publish(output, medium, copies=copies, volume_id=report.volume_id,
                                    label=label_fields(report.label), waiter=waiter)
        except Interrupted as exc:
            medium = None  # a robot may still be reading it; the retried job builds it again
            self.index.clear_wait(job.id)
            self.index.set_job_state(job.id, "pending", only_from=("building",))
            logger.warning("job %d: back to the queue, the node is stopping (%s)", job.id, exc)
            return
        except NodeError as exc:
            self.index.finish_job(job.id, error=str(exc))
            logger.error("job %d failed: %s", job.id, exc)
            return
        except Exception as exc:  # a bug must not stop the worker; the job shows it
            logger.exception("job %d failed unexpectedly", job.id)
            self.index.finish_job(job.id, error=f"internal error: {exc!r}")
            return
        finally:
            if medium is not None and not isinstance(output, Path):
                _remove(medium)  # a device's copies are written: the staged image is not a deliverable
        kind = str(settings.get("kind", "archive"))
        volume = Volume(label=label, job_id=job.id, kind=kind, created=time.time(), copies=copies, paths=paths,
                        bytes=report.bytes, superseded_by=None, studies=studies)
        self.index.finish_job(job.id, volumes=[volume] if kind == "archive" else [],
                              error=_left_out(report) or None, uid_map=report.uid_map)
        audit.append(config.node.data_dir, "volume-burned", job=job.id, label=label, kind=kind, paths=volume.paths,
                     studies=[s[0] for s in studies], instances=report.instances, supersedes=job.late,
                     completes=completes)
        logger.info("job %d: volume %s, %d instance(s), %d cop%s to %s", job.id, label, report.instances,
                    copies, "y" if copies == 1 else "ies", paths[0])


class _IndexWaiter:
    """An output's wait, recorded in the index for ``medianode status``, interrupted by the node's stop."""

    def __init__(self, index: Index, job_id: int, stop: threading.Event) -> None:
        self.index, self.job_id, self.stop = index, job_id, stop

    def wait(self, message: str, seconds: float) -> bool:
        self.index.set_wait(self.job_id, message)
        return not self.stop.wait(seconds)

    def clear(self) -> None:
        self.index.clear_wait(self.job_id)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def burn_options(settings: dict[str, object]) -> Options:
    """A route's compression and UID settings, as recorded with its job (absent keys: the defaults)."""
    by_modality = settings.get("compress_by_modality") or {}
    assert isinstance(by_modality, dict)
    return Options(
        compress=str(settings.get("compress") or "none"),
        by_modality=tuple((str(k), str(v)) for k, v in by_modality.items()),
        policy=Policy(lossy_mammography=bool(settings.get("lossy_mammography")),
                      bit_reduction=bool(settings.get("bit_reduction"))),
        new_uids=bool(settings.get("new_uids")),
        deidentify=bool(settings.get("deidentify")),
        burned_in=bool(settings.get("burned_in_annotation")),
    )


def volume_label(label: object, job_id: int) -> str:
    """A Volume Identifier (d-characters, <= 32) unique to the job: ``<LABEL>_<job>``."""
    base = re.sub(r"[^A-Z0-9_]", "_", str(label or "MEDIANODE").upper())[:24]
    return f"{base}_{job_id:06d}"


def _left_out(report: build.BurnReport) -> str:
    if not report.refused:
        return ""
    first = report.refused[0]
    return f"{len(report.refused)} instance(s) left out, e.g. {first['path']}: {first['reason']}"


def _volume(settings: dict[str, object]) -> tuple[int, int]:
    """This job's (n, m) of its patient's volumes (see :func:`schedule`); (1, 1) for most."""
    volume = settings.get("volume") or (1, 1)
    assert isinstance(volume, (list, tuple)) and len(volume) == 2
    return int(volume[0]), int(volume[1])


def _settings(route: str) -> dict[str, object]:
    return dict(json.loads(route))


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
            logger.info("job %d: %d of %d instance(s) of %s are neither in the spool nor on its image: the new "
                        "volume completes it as an addendum", job_id, len(missing - set(found)), len(theirs),
                        volume.label)
            continue
        index.add_job_files(job_id, [(u, path, size) for u, (path, size) in found.items()])
        mine |= missing
        added += len(found)
        logger.info("job %d: %d instance(s) of %s read back from %s", job_id, len(found), volume.label, volume.paths[0])
    return added


def read_back(volume: Volume, wanted: set[str], uid_map: dict[str, str], folder: Path) -> dict[str, tuple[str, int]]:
    """Copy the instances of ``wanted`` (original SOP Instance UIDs) from the volume's image, when one of its
    published paths is still readable, into ``folder``; return original UID -> (path, size) of those found."""
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


def reburn(index: Index, label: str, data_dir: Path) -> tuple[int, list[str]]:
    """Queue a new job burning again what an archive volume holds (a lost disc); return its id and the
    original SOP Instance UIDs it cannot hold.

    It combines what it can: the spool's copies, then what can be read back from
    the volume's image. A re-burn that lacks any instance never supersedes the
    volume (:meth:`Index.finish_job`); one that could hold nothing is refused.
    """
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
        raise NodeError(f"neither the spool nor an image holds any of the {len(burned)} instance(s) of {label}: "
                        f"it cannot be re-burned")
    original = index.job(volume.job_id)
    assert original is not None  # a volume is recorded with its job
    job = index.enqueue(studies, route=original.route)
    index.add_job_files(job, [(u, path, size) for u, (path, size) in read.items()])
    return job, cannot


def clean_spool(index: Index, config: Config, *, now: float) -> int:
    """Delete spool files no job needs any more (released copies; studies past the retention)."""
    paths = index.deletable_files(now=now, retention_s=config.burn.retention_hours * 3600)
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    if paths:
        index.forget_files(paths)
        logger.info("spool: %d file(s) removed", len(paths))
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
