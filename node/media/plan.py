"""What happens to each instance on its way to a medium, decided once, then done on every core.

The parent decides everything from the headers it already read (:mod:`node.media.sources`): the
syntax each image is written in (:func:`node.media.compress.choose_syntax`: the asked compression, a
lossless fallback, or Explicit VR Little Endian), which instances change UIDs, and which others
must be rewritten because they *reference* a changed UID (a presentation state of a lossy image).
The UIDs are known before a single pixel is encoded, so every file on the disc agrees on them:
one :class:`~node.media.uids.UidMap` per burn, derived from a secret salt, carried to the
workers. :func:`run` then hands the tasks to a process pool (or does them here when there are
few), a bounded number in flight, so memory does not grow with the size of the set.
"""

from __future__ import annotations

import importlib
import itertools
import mmap
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from node import dicom, syntaxes
from node.errors import BuildError, UsageError
from node.media.compress import Choice, ImageInfo, Policy, choose_syntax, decoded_photometric
from node.media.sources import SourceInstance, walk
from node.media.transcode import Task, needs_conversion
from node.media.uids import UidMap, new_salt
from node.profiles import Profile, compressions
from node.syntaxes import COMPRESS, NO_COMPRESSION, Compression
from node.tags import (
    BITS_ALLOCATED,
    BITS_STORED,
    COLUMNS,
    LUT_DESCRIPTOR,
    MODALITY,
    MODALITY_LUT_SEQUENCE,
    NUMBER_OF_FRAMES,
    PHOTOMETRIC_INTERPRETATION,
    PIXEL_REPRESENTATION,
    RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
    ROWS,
    SAMPLES_PER_PIXEL,
)

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

#: Below this many files a pool costs more (its start and pydicom's import in each worker) than it saves.
POOL_THRESHOLD = 8
_UID_TEXT = re.compile(rb"[0-9][0-9.]{6,63}")


@dataclass(frozen=True)
class Options:
    """How instances are treated on their way to the medium: ``burn``'s flags, or a route's settings."""

    #: One of :data:`node.syntaxes.COMPRESS` and its lossy setting, for images of every modality not in ``by_modality``.
    compress: Compression = Compression()
    #: (modality, compression) pairs that override ``compress`` for that modality.
    by_modality: tuple[tuple[str, Compression], ...] = ()
    policy: Policy = field(default_factory=Policy)
    #: New Study / Series / SOP Instance UIDs for everything, the originals kept in our private block.
    new_uids: bool = False
    #: PS3.15 Annex E Basic Application Level Confidentiality Profile (implies new UIDs).
    deidentify: bool = False
    #: Let images flagged with Burned In Annotation onto a de-identified disc.
    burned_in: bool = False
    #: Correct what PS3.5 forbids in the values (:mod:`node.media.repair`), each change recorded.
    repair: bool = False

    def compress_for(self, modality: str) -> Compression:
        return dict(self.by_modality).get(modality, self.compress)

    @property
    def rewrites(self) -> bool:
        """Whether these options rewrite instances (compression, new UIDs), which is work for :class:`Workers`."""
        compresses = any(c.name != NO_COMPRESSION for c in (self.compress, *(c for _, c in self.by_modality)))
        return compresses or self.new_uids or self.deidentify or self.repair

    def check(self, profile: Profile) -> None:
        """Raise :class:`UsageError` for a compression ``profile`` does not allow, or a setting that does not fit it."""
        allowed = compressions(profile.name)
        for compression in {self.compress, *(c for _, c in self.by_modality)}:
            value = compression.name
            if value not in COMPRESS:
                raise UsageError(f"--compress {value}: not one of {', '.join(COMPRESS)}")
            if value not in allowed:
                raise UsageError(f"--compress {value} is not allowed by profile {profile.name} "
                                 f"(it allows {', '.join(allowed)})")
            key, problem = compression.problem()
            if problem:
                raise UsageError(f"--{key} with --compress {value}: {problem}")


@dataclass
class Plan:
    """The tasks of one burn, and the UID map they share."""

    uids: UidMap
    #: (index of the instance in the admitted list, its task); instances without a task stay as they are.
    tasks: list[tuple[int, Task]]
    #: (source path, reason) for each image whose compression differs from what was asked.
    fallbacks: list[tuple[str, str]]


def make_plan(instances: list[SourceInstance], profile: Profile, options: Options, staging: str) -> Plan:
    """Decide, from the headers alone, what is done to each instance (see the module docstring)."""
    tasks: dict[int, Task] = {}
    fallbacks: list[tuple[str, str]] = []
    lossy: set[str] = set()
    everything = options.new_uids or options.deidentify
    for n, inst in enumerate(instances):
        choice, image = _choice(inst, profile, options, fallbacks) or (None, None)
        if choice is not None and choice.lossy:
            lossy.add(inst.sop_instance_uid)
        if choice is not None or everything or needs_conversion(inst, profile):
            tasks[n] = Task(inst.header.path, os.path.join(staging, f"{n:08d}"), choice=choice,
                            allowed=_allowed(inst, profile), image=image)
    uids = UidMap(new_salt(), changes=frozenset(lossy), everything=everything)
    if lossy and not everything:  # whoever points at a lossy image must be rewritten to point at its new UID
        for n, inst in enumerate(instances):
            if n not in tasks and _mentions(inst.header.path, lossy):
                tasks[n] = Task(inst.header.path, os.path.join(staging, f"{n:08d}"), allowed=_allowed(inst, profile))
    if options.repair:  # every instance is read: only the repair knows what it will find
        for n, inst in enumerate(instances):
            if n not in tasks:
                tasks[n] = Task(inst.header.path, os.path.join(staging, f"{n:08d}"), allowed=_allowed(inst, profile),
                                repair_only=True)
    shared = {"uids": uids, "deidentify": options.deidentify, "burned_in": options.burned_in,
              "keep_originals": options.new_uids and not options.deidentify, "repair": options.repair}
    planned = [(n, t.with_(**shared)) for n, t in sorted(tasks.items())]
    return Plan(uids, planned, fallbacks)


def _allowed(inst: SourceInstance, profile: Profile) -> frozenset[str]:
    """The syntaxes ``inst`` may stay in on a medium of ``profile``."""
    if inst.record_type == "IMAGE":
        return frozenset({dicom.EXPLICIT_VR_LE, *profile.image_syntaxes})
    return frozenset({dicom.EXPLICIT_VR_LE})


def _choice(inst: SourceInstance, profile: Profile, options: Options, fallbacks: list[tuple[str, str]]
            ) -> tuple[Choice, ImageInfo] | None:
    """The compression of an image, and its pixel module (None: it stays as it is, or becomes Explicit VR LE)."""
    asked = options.compress_for(inst.text(MODALITY))
    h = inst.header
    if asked.name == NO_COMPRESSION or inst.record_type != "IMAGE" or not h.has_pixels:
        return None
    if h.transfer_syntax in profile.image_syntaxes and h.transfer_syntax not in syntaxes.NATIVE:
        return None  # already compressed the way the profile allows: never recompressed
    image = image_info(inst)
    choice = choose_syntax(syntaxes.by_name(asked.name).uid, image, profile.image_syntaxes, options.policy, asked)
    if choice.reason:
        fallbacks.append((inst.source, choice.reason))
    return None if choice.transfer_syntax == dicom.EXPLICIT_VR_LE else (choice, image)


def image_info(inst: SourceInstance) -> ImageInfo:
    """The Image Pixel module of an instance, from its header (no pydicom)."""
    h = inst.header

    def us(tag: int, default: int = 0) -> int:
        el = h.elements.get(tag)
        return int.from_bytes(el.value[:2], "little") if el is not None and len(el.value) >= 2 else default

    frames = h.text(NUMBER_OF_FRAMES)
    photometric = h.text(PHOTOMETRIC_INTERPRETATION)
    lut = h.elements.get(RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR) if photometric == "PALETTE COLOR" else None
    if lut is None and (modality_lut := h.elements.get(MODALITY_LUT_SEQUENCE)) and modality_lut.items:
        lut = modality_lut.items[0].get(LUT_DESCRIPTOR)  # of the Modality LUT Sequence's first item
    return ImageInfo(
        sop_class_uid=inst.sop_class_uid,
        modality=inst.text(MODALITY),
        rows=us(ROWS),
        columns=us(COLUMNS),
        samples_per_pixel=us(SAMPLES_PER_PIXEL, 1),
        bits_allocated=us(BITS_ALLOCATED),
        bits_stored=us(BITS_STORED),
        pixel_representation=us(PIXEL_REPRESENTATION),
        photometric=decoded_photometric(photometric, h.transfer_syntax),
        frames=int(frames) if frames.isdigit() else 1,
        lut_bits=int.from_bytes(lut.value[4:6], "little") if lut is not None and len(lut.value) >= 6 else 0,
    )


def _mentions(path: str, uids: set[str]) -> bool:
    """True when the file holds any of ``uids`` as a value (a reference to it)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return any(u.group().decode("ascii") in uids for u in _UID_TEXT.finditer(m))


Done = Callable[[int, Task, "list[str] | Exception"], None]


def worker_count() -> int:
    """``MEDIANODE_WORKERS`` from the environment, else one worker per core."""
    return int(os.environ.get("MEDIANODE_WORKERS") or 0) or os.cpu_count() or 1


def workers_for(sources: Sequence[str], options: Options) -> Workers:
    """Workers for a burn: a pool when ``options`` rewrite at least :data:`POOL_THRESHOLD` files, else none."""
    many = sum(1 for _ in itertools.islice(walk(sources), POOL_THRESHOLD)) >= POOL_THRESHOLD
    return Workers(worker_count() if options.rewrites and many else 1)


class Workers:
    """The burn's worker processes, started before the headers are scanned so that their start-up
    (an interpreter, pydicom, numpy, the codecs: about 0.3 s each) overlaps the scan. One worker
    means none: the tasks then run in the burn's own process."""

    def __init__(self, count: int) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.count = count
        if count > 1:
            import multiprocessing  # loaded by a burn with a pool only
            from concurrent.futures import ProcessPoolExecutor

            # forkserver: the service has threads, and a forked copy of their locks can deadlock a worker.
            context = multiprocessing.get_context("forkserver")
            # Imported once in the fork server, the workers share those pages (when it is already running,
            # for the importer's senders, the preload does not apply and each worker imports in _warm).
            context.set_forkserver_preload(list(_WORKER_MODULES))
            self.pool = ProcessPoolExecutor(count, mp_context=context, initializer=_warm)
            for _ in range(count):
                self.pool.submit(int)  # each submission starts a process while none is idle

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def run(self, tasks: list[tuple[int, Task]], done: Done) -> None:
        """Carry out ``tasks``, calling ``done(n, task, what_or_error)`` in this process as each finishes."""
        if self.pool is None:
            for n, task in tasks:
                done(n, task, _attempt(task))
            return
        from concurrent.futures.process import BrokenProcessPool

        try:
            for n, task, result in _bounded(self.pool, tasks, window=4 * self.count):
                done(n, task, result)
        except BrokenProcessPool as exc:  # a codec crashed its process: the burn stops, nothing is published
            raise BuildError(f"a worker process died while rewriting instances ({exc}); nothing was written") from None


#: What every task needs: pydicom, numpy and the codecs, under our modules.
_WORKER_MODULES = ("node.media.transcode", "node.media.compress", "node.media.deidentify", "node.media.repair",
                   "node.pixels")


def _warm() -> None:
    """A worker's start: import what every task needs, once."""
    for name in _WORKER_MODULES:
        importlib.import_module(name)


def _bounded(pool: ProcessPoolExecutor, tasks: Iterable[tuple[int, Task]], *, window: int
             ) -> Iterator[tuple[int, Task, list[str] | Exception]]:
    """Submit ``tasks`` keeping at most ``window`` in flight; yield results in submission order."""
    pending: list[tuple[int, Task, Future[list[str] | Exception]]] = []
    for n, task in tasks:
        pending.append((n, task, pool.submit(_attempt, task)))
        if len(pending) >= window:
            first = pending.pop(0)
            yield first[0], first[1], first[2].result()
    for n, task, future in pending:
        yield n, task, future.result()


def _attempt(task: Task) -> list[str] | Exception:
    """Run one task, returning its exception instead of raising it (it refuses one instance, not the burn)."""
    try:
        return task.run()
    except Exception as exc:  # noqa: BLE001 - reported per instance by the caller
        return exc

