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
from node.config import Config
from node.durable import fsync_dir
from node.errors import NodeError
from node.index import Index, Job, StableStudy, Volume
from node.media import build, pdi
from node.profiles import SECTOR, get_profile

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
        for volume in _pack(studies, _settings(route)):
            job = index.cut_job([s.study_uid for s in volume], route=route, quiet_since=quiet_since)
            if job is None:
                continue  # an instance arrived meanwhile: the study waits again
            jobs.append(job)
            uids = ", ".join(s.study_uid for s in volume)
            if any(s.jobs for s in volume):
                logger.warning("job %d: late arrival re-burns study %s; its volume will supersede the earlier one", job, uids)
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
            self.build(job)
            done += 1
        return done

    def build(self, job: Job) -> None:
        config = self.config()
        settings = job.settings
        label = volume_label(settings.get("label"), job.id)
        studies = self.index.job_studies(job.id)
        files = self.index.job_files(job.id)
        try:
            missing = [p for _, p, _ in files if not os.path.exists(p)]
            if missing:
                raise NodeError(f"the spool no longer holds {len(missing)} of its {len(files)} instance(s)")
            profile = get_profile(str(settings["profile"]))
            out_dir = Path(str(settings.get("output") or config.burn.output))
            out_dir.mkdir(parents=True, exist_ok=True)
            suffix = "" if profile.file_system == "folder" else ".iso"
            first = out_dir / f"{label}{suffix}"
            report = build.burn([p for _, p, _ in files], out=first, profile=profile, label=label,
                                pdi=pdi.for_route(settings, config.burn, profile))
            copies = int(str(settings.get("copies", 1)))
            paths = [first, *(_publish_copy(first, out_dir / f"{label}_{n}{suffix}") for n in range(2, copies + 1))]
        except NodeError as exc:
            self.index.finish_job(job.id, error=str(exc))
            logger.error("job %d failed: %s", job.id, exc)
            return
        except Exception as exc:  # a bug must not stop the worker; the job shows it
            logger.exception("job %d failed unexpectedly", job.id)
            self.index.finish_job(job.id, error=f"internal error: {exc!r}")
            return
        kind = str(settings.get("kind", "archive"))
        volume = Volume(label, job.id, kind, time.time(), len(paths), [str(p) for p in paths], report.bytes, None, studies)
        self.index.finish_job(job.id, volumes=[volume] if kind == "archive" else [],
                              error=_left_out(report) or None)
        audit.append(config.node.data_dir, "volume-burned", job=job.id, label=label, kind=kind, paths=volume.paths,
                     studies=[s[0] for s in studies], instances=report.instances, supersedes=job.late)
        logger.info("job %d: volume %s, %d instance(s), %d cop%s in %s", job.id, label, report.instances,
                    len(paths), "y" if len(paths) == 1 else "ies", paths[0].parent)


def volume_label(label: object, job_id: int) -> str:
    """A Volume Identifier (d-characters, <= 32) unique to the job: ``<LABEL>_<job>``."""
    base = re.sub(r"[^A-Z0-9_]", "_", str(label or "MEDIANODE").upper())[:24]
    return f"{base}_{job_id:06d}"


def _left_out(report: build.BurnReport) -> str:
    if not report.refused:
        return ""
    first = report.refused[0]
    return f"{len(report.refused)} instance(s) left out, e.g. {first['path']}: {first['reason']}"


def _publish_copy(src: Path, dst: Path) -> Path:
    """Another copy of a published image (or folder), under a temporary name until complete."""
    tmp = dst.with_name(f".{dst.name}.part-{os.getpid()}")
    try:
        if src.is_dir():
            shutil.copytree(src, tmp)
        else:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.rename(tmp, dst)
        fsync_dir(dst.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    return dst


def _settings(route: str) -> dict[str, object]:
    return dict(json.loads(route))


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
