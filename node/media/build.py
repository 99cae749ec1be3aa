"""The media room's front door: sources in, a published medium out.

scan -> convert what the profile does not allow -> records -> File IDs ->
DICOMDIR -> capacity check -> write under a temporary name, read back from
the disk and compared as it is written -> rename into place. A failure at any step leaves nothing under the
output path (DESIGN.md invariant 2) and the sources untouched.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Literal

from node import dcmio, dicom
from node.durable import published
from node.errors import BuildError, UsageError
from node.media import folder, readback, series
from node.media.capture import Equipment, capture_sources
from node.media.content import FileSlice, MediaFile, Progress
from node.media.dicomdir import encode_dicomdir
from node.media.directory import Tree, build_tree
from node.media.label import make_label
from node.media.layout import assign_file_ids
from node.media.pdi import Pdi, pdi_files
from node.media.plan import Options, Workers, make_plan, workers_for
from node.media.sources import SourceInstance, scan
from node.tags import SERIES_INSTANCE_UID, STUDY_INSTANCE_UID
from node.media.transcode import CannotConvert, Task, convert, reread
from node.profiles import SECTOR, Profile
from node.words import counted

logger = logging.getLogger(__name__)

Format = Literal["iso", "folder"]
DEFAULT_LABEL = "DICOM"
_BLOCK = 4096  # allocation unit assumed for folder (USB) targets
#: The image writer of each optical file system (PS3.12: ISO 9660 for CD / DVD, UDF 1.50 for DVD-RAM,
#: UDF 2.60 for BD) and the keyword arguments its ``image_sectors`` and ``write_image`` take, imported
#: when used: a CD burn does not load the UDF writer.
IMAGE_WRITERS: dict[str, tuple[str, dict[str, str]]] = {
    "iso9660": ("node.media.iso", {}),
    "udf-1.50": ("node.media.udf", {"revision": "1.50"}),
    "udf-2.60": ("node.media.udf", {"revision": "2.60"}),
}


def image_writer(file_system: str) -> tuple[ModuleType, dict[str, str]]:
    module, options = IMAGE_WRITERS[file_system]
    return importlib.import_module(module), options


@dataclass
class BurnReport:
    """What a burn did, for the terminal and for ``--json``."""

    out: str
    profile: str
    format: str
    volume_id: str = ""
    #: The DICOMDIR's File-set ID (0004,1130) and UID (its Media Storage SOP Instance UID).
    fileset_id: str = ""
    fileset_uid: str = ""
    patients: int = 0
    studies: int = 0
    instances: int = 0
    bytes: int = 0
    sectors: int = 0
    capacity_sectors: int | None = None
    converted: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    duplicates: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    invented: list[str] = field(default_factory=list)
    adjusted: list[str] = field(default_factory=list)
    #: Images whose compression differs from what was asked, and why.
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    #: With ``repair``: each value corrected (:mod:`node.media.repair`), ``{"path", "repair"}``.
    repaired: list[dict[str, str]] = field(default_factory=list)
    #: Old UID -> new UID for every Study, Series and SOP Instance UID this burn changed.
    uid_map: dict[str, str] = field(default_factory=dict)
    #: The volume's label record (node.media.label.Label.to_dict()), for the outputs' label fields.
    label: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def burn(
    sources: Sequence[str],
    *,
    out: str | os.PathLike[str],
    profile: Profile,
    fmt: Format | None = None,
    label: str | None = None,
    invent_patient_id: bool = False,
    options: Options | None = None,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    capture: Mapping[str, str] | None = None,
    pdi: Pdi | None = None,
    volume: tuple[int, int] = (1, 1),
    completes: str = "",
    fileset_id: str = "",
    equipment: Equipment | None = None,
) -> BurnReport:
    """Build one medium of ``profile`` from every DICOM file under ``sources``.

    JPEG, PNG, TIFF and PDF files among them are converted (:mod:`node.media.capture`);
    ``capture`` holds the identity flags that apply to them (``{"patient_id": ...}``), ``equipment`` the
    node that makes them.

    ``total(n)`` is called once with the bytes to write, then ``progress(n)`` as they are written.
    With ``pdi``, the medium is an IHE PDI one (README.TXT, web content, viewer: node.media.pdi);
    ``volume`` is this medium's (n, m) of "volume n of m" on its label; ``completes`` names the volume
    an addendum completes, on its label too. ``fileset_id`` is the File-set ID asked for (a valid CS of at
    most 16 characters); by default the label's first 16 characters.
    """
    target = Path(out)
    fmt = fmt or ("iso" if target.suffix.lower() == ".iso" or profile.file_system != "folder" else "folder")
    if fmt == "iso" and profile.file_system == "folder":
        raise UsageError(f"{profile.name} writes a folder tree, not an image: use --format folder")
    _check_target(target)
    options = options or Options()
    options.check(profile)
    if pdi and not profile.pdi:
        raise UsageError(f"IHE PDI media cannot be made on {profile.name}")
    report = BurnReport(out=str(target), profile=profile.name, format=fmt, capacity_sectors=profile.capacity_sectors)
    staging = tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent)
    try:
        with workers_for(sources, options) as workers:  # they start while the headers are read
            found = scan(sources)
            # Images and PDFs among the sources become instances (Secondary Capture, Encapsulated PDF).
            report.converted = capture_sources(found, staging=staging, flags=capture or {},
                                               keep_jpeg=profile.allows(dicom.JPEG_BASELINE, record_type="IMAGE"),
                                               equipment=equipment)
            report.skipped = [{"path": p, "reason": r} for p, r in found.skipped]
            report.duplicates = [{"path": p, "kept": k} for p, k in found.duplicates]
            report.refused = [{"path": p, "reason": r} for p, r in found.unreadable]
            if not found.instances:
                raise BuildError(f"nothing to write: no DICOM instance among {counted(len(found.skipped), 'file')} "
                                 f"under {', '.join(sources)}")
            instances = found.instances
            del found
            _admit(instances, profile, options, staging, report, workers)
        tree = build_tree(instances, invent_patient_id=invent_patient_id)
        tree = _coerce_patient_ids(tree, instances, staging, invent_patient_id, report)
        report.refused += [{"path": p, "reason": r} for p, r in tree.refused]
        report.invented = tree.inventions
        if not tree.patients:
            every = "the" if len(instances) == 1 else "all"
            raise BuildError(f"nothing to write: {every} {counted(len(instances), 'instance')} refused "
                             f"({report.refused[0]['reason']})")
        volume_id, report.fileset_id = _labels(label or DEFAULT_LABEL, report)
        report.fileset_id = fileset_id or report.fileset_id
        report.fileset_uid = dicom.new_uid()
        files = _files(tree, report.fileset_id, report.fileset_uid)
        record = make_label(tree, institution=pdi.institution if pdi else "", web=bool(pdi and pdi.web),
                            volume=volume[0], volumes=volume[1], completes=completes)
        report.label = record.to_dict()
        extras = pdi_files(tree, pdi, record, profile=profile, staging=staging) if pdi else []
        report.patients = len(tree.patients)
        report.studies = sum(len(p.children) for p in tree.patients)
        report.instances = len(files) - 1
        files += extras
        del instances, tree  # the headers: the image needs only ``files`` (8,200 headers are about 90 MB)
        report.bytes = sum(f.size for f in files)
        _check_capacity(files, profile, target, report)
        if total:
            total(report.bytes)  # what ``progress`` will count up to
        if fmt == "iso":
            _publish_image(files, target, volume_id=volume_id, profile=profile, progress=progress)
        else:
            _publish_folder(files, target, progress=progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("burned %s of %s to %s", counted(report.instances, "instance"), counted(report.studies, "study"),
                target)
    return report


def _check_target(target: Path) -> None:
    if os.path.lexists(target):
        raise BuildError(f"{target} already exists; remove it or choose another output")
    if not target.parent.is_dir():
        raise BuildError(f"cannot write {target}: {target.parent} is not a folder")


def _admit(instances: list[SourceInstance], profile: Profile, options: Options, staging: str, report: BurnReport,
           workers: Workers) -> None:
    """Keep what the profile allows as it is; convert, compress and re-identify the rest (:mod:`node.media.plan`).

    ``instances`` is changed in place, each rewritten instance replacing its original as soon as it is
    written, so that the headers of a large set are held once (DESIGN.md invariant 4).
    """
    private = [i for i in instances if i.record_type == "PRIVATE" and not profile.augmented]
    report.refused += [{"path": i.source, "reason": f"private SOP class {i.sop_class_uid} is not allowed on "
                                                    f"{profile.name}"} for i in private]
    instances[:] = [i for i in instances if i.record_type != "PRIVATE" or profile.augmented]
    plan = make_plan(instances, profile, options, staging)
    report.fallbacks = [{"path": p, "reason": r} for p, r in plan.fallbacks]
    refused: set[int] = set()
    lossy: set[int] = set()

    def done(n: int, task: Task, what: list[str] | Exception) -> None:
        inst = instances[n]
        if isinstance(what, Exception):
            report.refused.append({"path": inst.source, "reason": str(what)})
            refused.add(n)
            return
        if task.choice is not None and task.choice.lossy:
            lossy.add(n)
        report.uid_map |= {old: new for old in _identity_uids(inst) if (new := plan.uids.new(old))}
        instances[n] = reread(inst, task, _take_repairs(inst.source, what, report) if options.repair else what)
        if instances[n].conversion:
            report.converted.append({"path": inst.source, "conversion": instances[n].conversion})

    workers.run(plan.tasks, done)
    kept = [n for n in range(len(instances)) if n not in refused]
    instances[:] = [instances[n] for n in kept]
    if lossy:  # seed B.2: the series bounds of lossy images, from their series as it is on the medium
        series.coerce(instances, {i for i, n in enumerate(kept) if n in lossy}, staging)


def _take_repairs(source: str, what: list[str], report: BurnReport) -> list[str]:
    """Move the repairs among a task's lines into ``report.repaired``; return the other lines."""
    from node.media.repair import PREFIX, is_repair  # pydicom: loaded only by a burn that repairs

    report.repaired += [{"path": source, "repair": line.removeprefix(PREFIX)} for line in what if is_repair(line)]
    return [line for line in what if not is_repair(line)]


def _identity_uids(inst: SourceInstance) -> tuple[str, str, str]:
    return inst.text(STUDY_INSTANCE_UID), inst.text(SERIES_INSTANCE_UID), inst.sop_instance_uid


def _coerce_patient_ids(tree: Tree, instances: list[SourceInstance], staging: str, invent: bool,
                        report: BurnReport) -> Tree:
    """Write an invented Patient ID into the files of a patient whose ID another patient has."""
    if not tree.coerced:
        return tree
    redone = []
    for n, inst in enumerate(instances):
        new_id = tree.coerced.get(inst.sop_instance_uid)
        if new_id is not None:
            task = Task(inst.header.path, os.path.join(staging, f"P{n:07d}"), patient_id=new_id,
                        allowed=frozenset({inst.header.transfer_syntax}))
            try:
                inst = convert(inst, task)
            except CannotConvert as exc:
                raise BuildError(f"cannot write the invented Patient ID into {inst.source}: {exc}") from None
            report.converted.append({"path": inst.source, "conversion": inst.conversion})
        redone.append(inst)
    again = build_tree(redone, invent_patient_id=invent)
    again.inventions = tree.inventions + [i for i in again.inventions if i not in tree.inventions]
    return again


_D_CHARS = re.compile(r"[^A-Z0-9_]")


def _labels(label: str, report: BurnReport) -> tuple[str, str]:
    """Volume Identifier (d-characters, <= 32, ECMA-119 7.4.1) and File-set ID (CS, <= 16)."""
    volume_id = _D_CHARS.sub("_", label.upper())[:32].strip("_") or DEFAULT_LABEL
    fileset_id = volume_id[:16].rstrip("_") or DEFAULT_LABEL
    if volume_id != label:
        report.adjusted.append(f"label {label!r} written as volume identifier {volume_id!r}")
    if fileset_id != volume_id:
        report.adjusted.append(f"File-set ID shortened to {fileset_id!r} (CS, at most 16 characters)")
    report.volume_id = volume_id
    return volume_id, fileset_id


def _files(tree: Tree, fileset_id: str, fileset_uid: str) -> list[MediaFile]:
    """The medium's files: the DICOMDIR, then each instance as new File Meta + its dataset bytes."""
    file_ids = assign_file_ids(tree)
    files = [MediaFile(("DICOMDIR",), [encode_dicomdir(tree, file_ids, fileset_id=fileset_id, fileset_uid=fileset_uid)])]
    for leaf, inst in tree.instances():
        h = inst.header
        meta = dcmio.file_meta(inst.sop_class_uid, inst.sop_instance_uid, h.transfer_syntax)
        files.append(MediaFile(file_ids[id(leaf)], [meta, FileSlice(h.path, h.dataset_offset, h.size - h.dataset_offset)]))
    return files


def _check_capacity(files: list[MediaFile], profile: Profile, target: Path, report: BurnReport) -> None:
    if profile.file_system == "folder":
        needed = sum(-(-f.size // _BLOCK) * _BLOCK for f in files)
        st = os.statvfs(target.parent)
        free = st.f_bavail * st.f_frsize
        report.sectors = -(-needed // SECTOR)
        if needed > free:
            raise BuildError(f"the set needs {_mb(needed)} but {target.parent} has {_mb(free)} free")
        return
    writer, options = image_writer(profile.file_system)
    report.sectors = writer.image_sectors(files, **options)
    capacity = profile.capacity_sectors
    if capacity is not None and report.sectors > capacity:
        raise BuildError(
            f"the set needs {report.sectors:,} sectors ({_mb(report.sectors * SECTOR)}) but a {profile.name} "
            f"medium holds {capacity:,} ({_mb(capacity * SECTOR)}); no study is split: burn fewer studies"
        )


def _publish_image(files: list[MediaFile], target: Path, *, volume_id: str, profile: Profile, progress: Progress | None) -> None:
    """Write the image under a temporary name, reading it back from the disk as it is written
    (:mod:`node.media.readback`), and rename it into place."""
    writer, options = image_writer(profile.file_system)
    with published(target) as tmp:
        readback.write_verified(tmp, files, writer=writer, volume_id=volume_id, progress=progress, **options)


def _publish_folder(files: list[MediaFile], target: Path, *, progress: Progress | None) -> None:
    with published(target) as tmp:
        folder.write_tree(files, tmp, progress=progress)
        folder.verify_tree(tmp, files)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
