"""``serve``'s import side: what happens to a medium the watcher found ready.

:class:`ImportRunner` knows the medium (its identity), the index (was it
imported before? record this import) and the inbox (file the item into
``done/`` or ``failed/`` beside its report); :mod:`node.read.watcher` only says
*that* a medium is ready, and :func:`node.read.importer.import_medium` only
imports. Every outcome is a log line, an audit line (``import-done``,
``import-failed``, ``import-skipped``) and a record in the index, so
``medianode status`` can answer "what became of the disc I inserted?".

- **The same medium twice** (issue 4): its identity is the volume identifier
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
from typing import Any

from node import audit
from node.config import Config
from node.durable import write_atomic
from node.errors import MediumError, NodeError
from node.index import Index
from node.read.importer import ImportReport, import_medium
from node.read.medium import Medium, medium_label, open_medium
from node.read.watcher import DONE, FAILED, Ready, WatchedKind, Watcher

logger = logging.getLogger(__name__)

#: Where a failed identity leaves no identity to compare (an unreadable medium is never "imported").
UNREADABLE = "unreadable"
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

    def run(self) -> None:
        """What ``serve``'s watcher thread runs: :meth:`recover`, then watch until ``stop`` is set."""
        self.recover()
        self.watcher().run()

    def watcher(self, *, polling: bool = False) -> Watcher:
        """The watcher of the configured inbox, mount roots and drives, calling :meth:`handle`."""
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
            except (MediumError, OSError) as exc:  # unreadable, not ISO 9660, UDF-only
                self._import(ready, self.index.start_import(str(ready.path), UNREADABLE), failure=str(exc))
                return
            previous = self._previous(identity)
            if previous is not None:
                self._skip(ready, identity, previous)
            else:
                self._import(ready, self.index.start_import(str(ready.path), identity))
        except Exception:  # a bug or the index/disk failing: logged, and the watcher goes on
            logger.exception("%s %s: the import could not be run", ready.kind, ready.path)

    def recover(self) -> None:
        """Finish the imports a crash or a forced stop left ``importing``, without new records."""
        inbox = self.config().imports.inbox
        for record in self.index.interrupted_imports():
            import_id, medium = int(str(record["id"])), Path(str(record["medium"]))
            try:
                if medium.parent == inbox and os.path.lexists(medium):
                    logger.warning("start-up: import %d of %s was interrupted; importing it again", import_id, medium)
                    self._import(Ready("inbox", medium), import_id)
                    continue
                kind: WatchedKind = "inbox" if medium.parent == inbox else "mount" if medium.is_dir() else "drive"
                report = _failure_report(medium, "interrupted: the service stopped during the import; "
                                                 "insert the medium again to import it")
                self._finish(Ready(kind, medium), import_id, report, after=False)  # no move, no eject
            except Exception:
                logger.exception("start-up: import %d of %s could not be recovered", import_id, medium)

    # -- one medium ----------------------------------------------------------------

    def _import(self, ready: Ready, import_id: int, *, failure: str | None = None) -> None:
        config = self.config()
        to = config.imports.destination
        report: ImportReport | dict[str, Any]
        if failure is None and to is not None:
            try:
                report = import_medium(ready.path, destination=(to.ae_title, to.host, to.port),
                                       calling_aet=config.imports.calling_aet or config.node.ae_title,
                                       reports_dir=self._reports(), coerce=config.imports.coerce)
            except NodeError as exc:  # MediumError: unreadable, UDF-only; UsageError: a bad AE title
                report = _failure_report(ready.path, str(exc))
        else:
            report = _failure_report(ready.path, failure or "import.destination is not configured")
        self._finish(ready, import_id, report)

    def _skip(self, ready: Ready, identity: str, previous: dict[str, object]) -> None:
        reason = (f"already imported: the same medium (identity {identity}) was imported as import "
                  f"{previous['id']} on {_when(previous['finished'])}; not sent again")
        report = {"ok": True, "medium": str(ready.path), "sent": 0, "failed": 0, "skipped": 0,
                  "skipped_medium": reason, "previous_import": previous["id"], "problems": [], "notes": [],
                  "coercions": []}
        self._finish(ready, self.index.start_import(str(ready.path), identity), report, skipped=reason)

    def _finish(self, ready: Ready, import_id: int, report: ImportReport | dict[str, Any], *,
                skipped: str = "", after: bool = True) -> None:
        """Record, audit, then file the inbox item and eject the disc: in this order (see the module doc)."""
        data = report.to_dict() if isinstance(report, ImportReport) else report
        kept = report.report_path if isinstance(report, ImportReport) else None
        kept = kept or str(_write_json(self._reports() / _report_name(ready.path), data))
        ok = bool(data["ok"])
        counts = {k: int(data[k]) for k in ("sent", "failed", "skipped")}
        self.index.finish_import(import_id, ok=ok, report=kept, **counts)
        event = "import-skipped" if skipped else "import-done" if ok else "import-failed"
        why = skipped or "; ".join(p["problem"] if p["path"] == "." else f"{p['path']}: {p['problem']}"
                                   for p in data["problems"][:3])
        audit.append(self.config().node.data_dir, event, import_id=import_id, kind=ready.kind,
                     medium=str(ready.path), report=kept, reason=why, **counts)
        log = logger.warning if event == "import-failed" else logger.info
        log("%s %d of %s %s: %d sent, %d failed, %d skipped%s; report %s", event, import_id, ready.kind, ready.path,
            counts["sent"], counts["failed"], counts["skipped"], f" ({why})" if why else "", kept)
        if after and ready.kind == "inbox":
            _file_away(ready.path, ready.path.parent / (DONE if ok else FAILED), Path(kept))
        elif after and ready.kind == "drive":
            self._eject(ready.path)

    def _previous(self, identity: str) -> dict[str, object] | None:
        if not self.index.imported(identity):
            return None
        unknown: dict[str, object] = {"id": "?", "finished": None}  # older than the last 1000 imports
        return next((i for i in self.index.imports(limit=1000) if i["identity"] == identity and i["state"] == "done"),
                    unknown)

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


def _failure_report(medium: Path, problem: str) -> dict[str, Any]:
    """The report of an import that could not start, shaped as ``import --json``'s."""
    return {"ok": False, "medium": str(medium), "sent": 0, "failed": 0, "skipped": 0,
            "problems": [{"path": ".", "problem": problem}], "notes": [], "coercions": []}


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
