"""The node's intake of media: what happens to a medium the watcher found ready, or
that ``medianode import --config`` was given.

:class:`ImportRunner` knows the medium (its identity), the index (was it
imported before? record this import) and the inbox (file the item into
``done/`` or ``failed/`` beside its report); :mod:`node.read.watcher` only says
*that* a medium is ready, and :func:`node.read.importer.import_medium` only
imports. Every outcome, from the watcher or the command line
(:func:`import_recorded`), is recorded by :func:`record`: an audit line
(``import-done``, ``import-failed``, ``import-skipped``, ``import-held``) and a record in the
index, so ``medianode status`` can answer "what became of the disc I
inserted?"; the watcher also logs it, the command line prints it.

- **The same medium twice**: its identity is the volume identifier
  plus a SHA-256 of the DICOMDIR's bytes, or of the sorted list of files and
  sizes when there is none. A medium with the identity of a finished import is
  skipped with its reason: recorded as an import that sent nothing, with a report
  saying which import it repeats, so the index still answers "imported".
- **Order that survives a crash.** The record is finished before an inbox item
  is moved: a crash in between leaves a finished record and an item still in the
  inbox, which the next start skips as already imported, never sends twice.
  :meth:`ImportRunner.recover` imports again an inbox item whose import a crash
  interrupted, as the same record; an interrupted drive or mount import is marked
  failed and left for the next insertion (the medium may be gone, or be another).
- **Eject** runs only after the import returned, and only when ``import.eject``
  is configured: an argv list with ``{device}`` replaced, never a shell.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node import audit
from node.config import Config
from node.durable import write_atomic
from node.errors import MediumError, NodeError
from node.index import Index

if TYPE_CHECKING:  # the import side (pydicom, pynetdicom, pycdlib, watchdog) is loaded when first used
    from node.read.importer import ImportReport
    from node.read.medium import Medium
    from node.read.reconcile import Reconciler
    from node.read.watcher import Ready, WatchedKind, Watcher

logger = logging.getLogger(__name__)

#: Where a failed identity leaves no identity to compare (an unreadable medium is never "imported").
UNREADABLE = "unreadable"
#: The ``kind`` of an import run by ``medianode import --config`` (the watcher's are inbox, mount, drive).
COMMAND = "command"
EJECT_TIMEOUT_S = 60


class ImportRunner:
    """Handles each :class:`~node.read.watcher.Ready`; one runner, one thread, one import at a time.

    ``index`` must be this thread's own connection (:class:`~node.index.Index`
    is one per thread). ``config_getter`` is read at every medium, so a reload
    changes the destination, ``calling_aet`` and ``eject``; what is watched and
    how often (inbox, mount roots, drives, settle and poll times) is read by
    :meth:`watcher` once. Once ``stop`` is set, no new import starts.
    """

    def __init__(self, index: Index, config_getter: Callable[[], Config], *, stop: threading.Event) -> None:
        self.index = index
        self.config = config_getter
        self.stop = stop

    def run(self, interrupted: list[dict[str, object]] | None = None) -> None:
        """What ``serve``'s watcher thread runs: :meth:`recover`, then watch until ``stop`` is set."""
        self.recover(interrupted)
        self.watcher().run()

    def watcher(self, *, polling: bool = False) -> Watcher:
        """The watcher of the configured inbox, mount roots and drives, calling :meth:`handle`."""
        from node.read.watcher import Watcher

        imports = self.config().imports
        return Watcher(inbox=imports.inbox, mount_roots=imports.mount_roots, drives=imports.drives,
                       settle_s=imports.settle_seconds, poll_s=imports.poll_seconds, on_ready=self.handle,
                       stop=self.stop, polling=polling)

    def handle(self, ready: Ready) -> None:
        """Import one ready medium, or skip it as imported before; never raises."""
        if self.stop.is_set():
            return  # an inbox item stays for the next start; a disc for its next insertion
        if not os.path.lexists(ready.path):
            logger.warning("%s %s went away before its import", ready.kind, ready.path)
            return
        try:
            try:
                identity = medium_identity(ready.path)
            except (MediumError, OSError) as exc:  # unreadable, neither ISO 9660 nor UDF
                self._import(ready, self.index.start_import(str(ready.path), UNREADABLE), failure=str(exc))
                return
            previous = previous_import(self.index, identity)
            if previous is not None:
                self._skip(ready, identity, previous)
            else:
                self._import(ready, self.index.start_import(str(ready.path), identity))
        except Exception:  # a bug or the index/disk failing: logged, and the watcher goes on
            logger.exception("%s %s: the import could not be run", ready.kind, ready.path)

    def recover(self, interrupted: list[dict[str, object]] | None = None) -> None:
        """Finish the imports a crash or a forced stop left ``importing``, without new records.

        ``interrupted``: those records, as ``serve`` found them before it answered anyone; an import that
        ``medianode import --config`` started after that is running, not interrupted.
        """
        if interrupted is None:
            interrupted = self.index.interrupted_imports()
        if not interrupted:
            return
        from node.read.watcher import Ready

        inbox = self.config().imports.inbox
        for record in interrupted:
            import_id, medium = int(str(record["id"])), Path(str(record["medium"]))
            try:
                if medium.parent == inbox and os.path.lexists(medium):
                    logger.warning("start-up: import %d of %s was interrupted; importing it again", import_id, medium)
                    self._import(Ready("inbox", medium), import_id)
                    continue
                kind: WatchedKind = "inbox" if medium.parent == inbox else "mount" if medium.is_dir() else "drive"
                report = unsent_report(medium, problem="interrupted: the service stopped during the import; "
                                                       "insert the medium again to import it")
                self._finish(Ready(kind, medium), import_id, report, after=False)  # no move, no eject
            except Exception:
                logger.exception("start-up: import %d of %s could not be recovered", import_id, medium)

    # -- one medium ----------------------------------------------------------------

    def _import(self, ready: Ready, import_id: int, *, failure: str | None = None) -> None:
        from node.read.importer import import_medium

        config = self.config()
        to = config.imports.destination
        report: ImportReport | dict[str, Any]
        if failure is None and to is not None:
            _started(config, import_id, ready.kind, ready.path, f"{to.ae_title}@{to.host}:{to.port}")
            calling_aet = config.imports.calling_aet or config.node.ae_title
            try:
                report = import_medium(ready.path, destination=(to.ae_title, to.host, to.port),
                                       calling_aet=calling_aet, reports_dir=self._reports(),
                                       coerce=config.imports.coerce, tls=to.tls, **associations(config),
                                       **reconciling(config, import_id, calling_aet))
            except NodeError as exc:  # MediumError: unreadable, not a medium; UsageError: a bad AE title
                report = unsent_report(ready.path, problem=str(exc))
        else:
            report = unsent_report(ready.path, problem=failure or "import.destination is not configured")
        self._finish(ready, import_id, report)

    def _skip(self, ready: Ready, identity: str, previous: dict[str, object]) -> None:
        reason = (f"already imported: the same medium (identity {identity}) was imported as import "
                  f"{previous['id']} on {_when(previous['finished'])}; not sent again")
        report = unsent_report(ready.path, skipped=reason, previous=previous)
        self._finish(ready, self.index.start_import(str(ready.path), identity), report)

    def _finish(self, ready: Ready, import_id: int, report: ImportReport | dict[str, Any], *,
                after: bool = True) -> None:
        """Record, audit, then file the inbox item and eject the disc: in this order (see the module doc)."""
        from node.read.importer import ImportReport
        from node.read.watcher import DONE, FAILED, HELD

        data = report.to_dict() if isinstance(report, ImportReport) else report
        kept = report.report_path if isinstance(report, ImportReport) else None
        kept = kept or str(_write_json(self._reports() / _report_name(ready.path), data))
        entry = record(self.index, self.config(), import_id, data, kind=ready.kind, medium=ready.path, kept=kept)
        log = logger.warning if entry["event"] == "import-failed" else logger.info
        log("%s %d of %s %s: %d sent, %d failed, %d skipped%s; report %s", entry["event"], import_id, ready.kind,
            ready.path, entry["sent"], entry["failed"], entry["skipped"], f" ({entry['reason']})" if entry["reason"]
            else "", kept)
        ok = bool(data["ok"])
        if after and ready.kind == "inbox":
            folder = HELD if data.get("held") else DONE if ok else FAILED
            _file_away(ready.path, ready.path.parent / folder, Path(kept))
        elif after and ready.kind == "drive":
            self._eject(ready.path)

    def _eject(self, device: Path) -> None:
        argv = self.config().imports.eject
        if not argv:
            return
        command = [a.replace("{device}", str(device)) for a in argv]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=EJECT_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("eject %s: %s failed: %s", device, command, exc)
            return
        if done.returncode != 0:
            logger.warning("eject %s: %s exited %d: %s", device, command, done.returncode,
                           " ".join(done.stderr.split())[:200])

    def _reports(self) -> Path:
        return self.config().node.data_dir / "imports"


def medium_identity(path: Path) -> str:
    """``VOLUME/dicomdir:SHA256`` or ``VOLUME/files:SHA256``: what makes a medium the same medium.

    VOLUME is the ISO 9660 volume identifier of an image or a disc, and a folder's
    name for a folder (automounters name the mount point after the volume label,
    so a disc read in a drive and the same disc mounted agree). The digest covers
    the root DICOMDIR's bytes (found in any case, with ';1'), or else, when there
    is none or it cannot be read (the import then reports why), every file's path
    and size. Reads through :mod:`node.read.medium`: nothing mounted, nothing
    outside the medium. Raises :class:`MediumError` when the medium cannot be opened.
    """
    from node.read.medium import medium_label, open_medium

    with open_medium(path) as medium:
        volume = medium_label(path)
        volume = "".join(c if c.isprintable() and c != "/" else "?" for c in volume)
        dicomdir = _dicomdir_digest(medium)
        if dicomdir is not None:
            return f"{volume}/dicomdir:{dicomdir}"
        listing = hashlib.sha256()
        for name in medium.files():
            listing.update(f"{name}\0{medium.size(name)}\n".encode("utf-8", "surrogateescape"))
        return f"{volume}/files:{listing.hexdigest()}"


def _dicomdir_digest(medium: Medium) -> str | None:
    try:
        name = medium.resolve(["DICOMDIR"])
        if name is None:
            return None
        digest = hashlib.sha256()
        with medium.open(name) as fp:
            while piece := fp.read(1 << 20):
                digest.update(piece)
        return digest.hexdigest()
    except (MediumError, OSError):  # a DICOMDIR symlinked out of the medium, or unreadable
        return None


def held_folder(config: Config, import_id: int) -> Path:
    """Where a held import's instances and manifest are kept: ``data_dir/held/<import>/``."""
    return config.node.data_dir / "held" / str(import_id)


def associations(config: Config | None, given: int | None = None) -> dict[str, Any]:
    """:func:`import_medium`'s ``associations``: ``given`` (``--associations``), else ``import.associations``,
    else none (its default)."""
    chosen = given if given is not None or config is None else config.imports.associations
    return {} if chosen is None else {"associations": chosen}


def reconciling(config: Config, import_id: int, calling_aet: str) -> dict[str, Any]:
    """:func:`import_medium`'s ``reconcile`` and ``hold_to`` for import ``import_id``; none without
    ``import.reconcile``."""
    from node.read.reconcile import reconciler

    if config.imports.reconcile is None:
        return {}
    reconcile: Reconciler = reconciler(config, calling_aet=calling_aet, import_id=import_id)
    return {"reconcile": reconcile, "hold_to": held_folder(config, import_id)}


def import_recorded(medium: Path, config: Config, *, force: bool, send: Callable[[int], ImportReport],
                    destination: str) -> ImportReport | dict[str, Any]:
    """``medianode import --config``: import as the node does, recorded in its index and audit log.

    A medium imported before is skipped (unless ``force``), and recorded as an
    import that sent nothing, as the watcher records it; the skip's report is
    returned instead of an :class:`ImportReport`. An unreadable medium, or an
    import ``send`` (given the import's id) could not finish, is recorded as failed and its error raised. ``destination``
    (``AET@HOST:PORT``) is where ``send`` sends, for the audit.
    """
    data_dir = config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    index = Index(data_dir / "index.sqlite")

    def finish(import_id: int, report: dict[str, Any], kept: str | None = None) -> None:
        record(index, config, import_id, report, kind=COMMAND, medium=medium, kept=kept)

    try:
        try:
            identity = medium_identity(medium)
        except (MediumError, OSError) as exc:
            error = exc if isinstance(exc, MediumError) else MediumError(f"{medium}: cannot read: {exc.strerror or exc}")
            finish(index.start_import(str(medium), UNREADABLE), unsent_report(medium, problem=str(error)))
            raise error from None
        previous = previous_import(index, identity)
        import_id = index.start_import(str(medium), identity)
        if previous is not None and not force:
            skip = unsent_report(medium, skipped=f"already imported (identity {identity}); --force imports it again",
                                 previous=previous)
            finish(import_id, skip)
            return skip
        _started(config, import_id, COMMAND, medium, destination)
        try:
            report = send(import_id)
        except BaseException as exc:
            finish(import_id, unsent_report(medium, problem=str(exc) or type(exc).__name__))
            raise
        finish(import_id, report.to_dict(), report.report_path)
        return report
    finally:
        index.close()


def _started(config: Config, import_id: int, kind: str, medium: Path, destination: str) -> None:
    """Audit an import about to send to ``destination`` (``import-started``: Begin Transferring DICOM Instances)."""
    audit.append(config, "import-started", import_id=import_id, kind=kind, medium=str(medium),
                 destination=destination)


def record(index: Index, config: Config, import_id: int, report: dict[str, Any], *, kind: str, medium: Path,
           kept: str | None) -> dict[str, Any]:
    """Finish an import's record in the index and append its audit line; return the line's fields.

    The one way every import is recorded, from the watcher (``kind`` inbox, mount,
    drive) or the command line (:data:`COMMAND`): the audit event is
    ``import-skipped`` for a medium imported before (the report has
    ``skipped_medium``), else ``import-done`` or ``import-failed``; the reason is the
    medium's problems, then the distinct reasons instances failed, three at most.
    """
    counts = {k: int(report[k]) for k in ("sent", "failed", "skipped")}
    held = str((report.get("reconciliation") or {}).get("held") or "") if report.get("held") else ""
    if held:
        index.hold_import(import_id, reason=held, skipped=counts["skipped"], report=kept)
    else:
        index.finish_import(import_id, ok=bool(report["ok"]), report=kept, **counts)
    skipped = str(report.get("skipped_medium") or "")
    event = "import-skipped" if skipped else "import-held" if held else "import-done" if report["ok"] else "import-failed"
    problems = [p["problem"] if p["path"] == "." else f"{p['path']}: {p['problem']}" for p in report["problems"]]
    # then why instances failed, each reason once: a destination refused (TLS, rejection) fails them all alike
    refusals = dict.fromkeys(o["reason"] for o in report.get("outcomes", ()) if o["result"] == "failed")
    why = skipped or held or "; ".join([*problems, *refusals][:3])
    fields = {"import_id": import_id, "kind": kind, "medium": str(medium), "report": kept, "reason": why, **counts,
              "destination": report.get("destination"), "studies": report.get("studies", [])}
    audit.append(config, event, **fields)
    return {"event": event, **fields}


def previous_import(index: Index, identity: str) -> dict[str, object] | None:
    """The finished import of a medium with this identity, or None when there is none."""
    if not index.imported(identity):
        return None
    unknown: dict[str, object] = {"id": "?", "finished": None}  # older than the last 1000 imports
    return next((i for i in index.imports(limit=1000) if i["identity"] == identity and i["state"] == "done"),
                unknown)


def unsent_report(medium: Path, *, problem: str = "", skipped: str = "",
                  previous: dict[str, object] | None = None) -> dict[str, Any]:
    """The report of an import that sent nothing, shaped as ``import --json``'s.

    Either it could not start (``problem``), or the medium was imported before
    (``skipped``, naming the ``previous`` import).

    >>> unsent_report(Path("a.iso"), problem="unreadable")["problems"]
    [{'path': '.', 'problem': 'unreadable'}]
    >>> unsent_report(Path("a.iso"), skipped="imported before", previous={"id": 3})["previous_import"]
    3
    """
    report: dict[str, Any] = {"ok": not problem, "medium": str(medium), "sent": 0, "failed": 0, "skipped": 0}
    if skipped:
        report |= {"skipped_medium": skipped, "previous_import": (previous or {}).get("id")}
    return report | {"problems": [{"path": ".", "problem": problem}] if problem else [], "notes": [],
                     "coercions": []}


def _file_away(item: Path, folder: Path, report: Path) -> None:
    """Move an inbox item into ``folder`` (a free name), its report beside it as ``NAME.report.json``."""
    try:
        folder.mkdir(exist_ok=True)
        target, n = folder / item.name, 1
        while os.path.lexists(target) or os.path.lexists(f"{target}.report.json"):
            n += 1
            target = folder / (f"{item.stem}-{n}{item.suffix}" if item.is_file() else f"{item.name}-{n}")
        write_atomic(Path(f"{target}.report.json"), report.read_bytes())
        os.rename(item, target)
    except OSError as exc:
        logger.error("inbox %s could not be moved to %s/: %s; it stays, and is not imported again until it "
                     "changes", item, folder.name, exc)
    else:
        logger.info("inbox %s moved to %s", item.name, target)


def _write_json(path: Path, data: dict[str, Any]) -> Path:
    return write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def _report_name(medium: Path) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"import-{stamp}-{re.sub(r'[^A-Za-z0-9._-]+', '_', medium.name or 'medium')[:64]}.json"


def _when(finished: object) -> str:
    if not isinstance(finished, (int, float)):
        return "an earlier date"
    return datetime.fromtimestamp(finished, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
