"""Notice media that are ready to import: an inbox item, a mounted medium, a disc in a drive.

Only *that* a medium is ready is decided here (``on_ready`` is called once for
it); what an import is belongs to :mod:`node.intake`. Nothing on a medium is
executed or mounted (DESIGN.md invariant 5): the watcher lists and stats.

- **Inbox.** An ``.iso`` file or a folder directly in the inbox is ready once its
  signature (files, bytes, newest mtime/ctime) has not changed for ``settle_s``:
  a slow copy is imported once, complete. watchdog's native observer (polling
  without inotify) watches the top level only, so ``done/`` and ``failed/`` are
  never watched; what is there at start is scanned. Other files, dot-names and
  symlinks are ignored, not moved: ``x.iso.part`` or rsync's ``.x.iso.XXXX`` are
  copies in progress that become an ``.iso`` by renaming; a symlink leads anywhere.
- **Mount roots.** A folder appearing under a root, or one level deeper
  (``/run/media/USER/LABEL``), that is a mount point or holds a file (a DICOMDIR
  or any other) is ready after settling. Roots are listed two levels deep each
  poll, not watched: a recursive watch would cover every folder of every disc.
- **Drives.** CDROM_DRIVE_STATUS on a block device, or, for a regular file
  standing in for one (tests), "non-empty". A disc fires once per insertion, and
  again once it was removed (a stand-in file: or replaced) and a disc is loaded.

Media already mounted or loaded at start are left alone, so a disc that made the
service crash is not retried in a loop: insert it again to import it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

logger = logging.getLogger(__name__)

#: linux/cdrom.h: the ioctl, its "current slot" argument, and the answer for a readable disc.
CDROM_DRIVE_STATUS = 0x5326
CDSL_CURRENT = 0x7FFFFFFF
CDS_DISC_OK = 4
#: Inbox sub-folders finished items are filed into (by :mod:`node.intake`); never imported. A held
#: import's item goes to held/ (its instances are kept in the node's data_dir until a person decides).
DONE, FAILED, HELD = "done", "failed", "held"

WatchedKind = Literal["inbox", "mount", "drive"]
#: What changes while a medium is still being written; equal twice ``settle_s`` apart means complete.
Signature = tuple[int, ...]


@dataclass(frozen=True)
class Ready:
    """A medium ready to import: an inbox item, a mounted folder, or a drive's device."""

    kind: WatchedKind
    path: Path


def signature(path: Path) -> Signature | None:
    """(files, bytes, newest mtime or ctime in ns) of a file or folder tree; None when it is gone.

    Symlinks are not followed; a folder vanishing mid-walk is simply skipped (the next look tells).
    """
    try:
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return (1, st.st_size, max(st.st_mtime_ns, st.st_ctime_ns))
    files, size, newest, pending = 0, 0, max(st.st_mtime_ns, st.st_ctime_ns), [path]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    est = entry.stat(follow_symlinks=False)
                    newest = max(newest, est.st_mtime_ns, est.st_ctime_ns)
                    if stat.S_ISDIR(est.st_mode):
                        pending.append(Path(entry.path))
                    else:
                        files, size = files + 1, size + est.st_size
        except OSError:
            continue
    return (files, size, newest)


def disc_loaded(device: Path) -> Signature | None:
    """What is in ``device`` (a signature), or None when no disc is loaded.

    A block device answers CDROM_DRIVE_STATUS on an ``O_NONBLOCK`` descriptor (so
    opening works without a disc); a regular file stands in for a drive holding
    an image while it is non-empty. Raises OSError when the drive cannot be asked.
    """
    try:
        st = os.stat(device)
    except FileNotFoundError:
        return None
    if stat.S_ISREG(st.st_mode):
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) if st.st_size > 0 else None
    if not stat.S_ISBLK(st.st_mode):
        raise OSError(f"{device} is neither a block device nor an image file")
    fd = os.open(device, os.O_RDONLY | os.O_NONBLOCK)
    try:
        status = fcntl.ioctl(fd, CDROM_DRIVE_STATUS, CDSL_CURRENT)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTTY):  # a disk, a loop device: the ioctl is not theirs
            raise OSError(f"{device} is not an optical drive (CDROM_DRIVE_STATUS: {exc.strerror})") from None
        raise
    finally:
        os.close(fd)
    return (st.st_rdev,) if status == CDS_DISC_OK else None


class _Settling:
    """Paths waiting to stop changing, and the signature each one fired at (so it fires once)."""

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        self.pending: dict[Path, tuple[Signature, float]] = {}
        self.fired: dict[Path, Signature] = {}

    def consider(self, path: Path, now: float) -> None:
        sig = signature(path)
        if sig is not None and path not in self.pending:
            self.pending[path] = (sig, now)

    def forget(self, path: Path) -> None:
        """It went away: when it comes back, it is a new medium."""
        self.pending.pop(path, None)
        self.fired.pop(path, None)

    def due(self, now: float) -> list[Path]:
        """Pending paths unchanged for ``settle_s``; each is fired once per signature."""
        ready = []
        for path, (before, since) in list(self.pending.items()):
            sig = signature(path)
            if sig is None:
                self.forget(path)
            elif sig == self.fired.get(path):  # an event that changed nothing new (a read, an open)
                del self.pending[path]
            elif sig != before:
                self.pending[path] = (sig, now)
            elif now - since >= self.settle_s:
                del self.pending[path]
                self.fired[path] = sig
                ready.append(path)
        return ready


class _Hints(FileSystemEventHandler):
    """watchdog's events, reduced to "look at this path again" (the loop decides what it means)."""

    def __init__(self, note: Callable[[str], None]) -> None:
        self.note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, event.dest_path):
            if raw:
                self.note(os.fsdecode(raw))


@dataclass
class _Drive:
    sig: Signature | None = None
    since: float = 0.0
    fired: bool = False


class Watcher:
    """Calls ``on_ready(Ready)`` from :meth:`run`'s thread, one medium at a time, until ``stop`` is set.

    ``started`` is set once the inbox is scanned and what is already mounted or
    loaded is known (media that appear later are new); ``polls`` counts the looks
    since. Tests wait on both instead of sleeping. ``polling`` forces watchdog's
    polling observer.
    """

    def __init__(self, *, inbox: Path, mount_roots: Sequence[Path], drives: Sequence[Path], settle_s: float,
                 poll_s: float, on_ready: Callable[[Ready], None], stop: threading.Event,
                 polling: bool = False) -> None:
        self.inbox = inbox
        self.mount_roots = tuple(mount_roots)
        self.poll_s = poll_s
        self.on_ready = on_ready
        self.stop = stop
        self.polling = polling
        self.started = threading.Event()
        self.polls = 0
        self.observer: BaseObserver | None = None
        self._inbox = _Settling(settle_s)
        self._mounts = _Settling(settle_s)
        self._mounted: set[Path] = set()
        self._drives = {drive: _Drive() for drive in drives}
        self._settle_s = settle_s
        self._hints: set[Path] = set()
        self._lock = threading.Lock()
        # One log line per ignored inbox entry or failing drive, not one per poll.
        self._ignored: set[Path] = set()
        self._failing: set[Path] = set()

    def run(self) -> None:
        """Watch until ``stop`` is set; never raises for what the file system or ``on_ready`` does."""
        now = time.monotonic()
        self.observer = self._observe()
        for entry in _entries(self.inbox):
            if self._wanted(entry):
                self._inbox.consider(entry, now)
        self._mounted = self._media()
        for drive, state in self._drives.items():
            state.sig = self._loaded(drive)
            state.fired = state.sig is not None  # already loaded: left for the next insertion
        self.started.set()
        logger.info("watching inbox %s (%s), mount roots %s, drives %s", self.inbox,
                    type(self.observer).__name__ if self.observer else "not watched",
                    [str(r) for r in self.mount_roots], [str(d) for d in self._drives])
        try:
            while not self.stop.wait(self.poll_s):
                self._tick()
                self.polls += 1
        finally:
            if self.observer is not None:
                self.observer.stop()
                self.observer.join()

    def _tick(self) -> None:
        with self._lock:
            hints, self._hints = self._hints, set()
        now = time.monotonic()
        for path in hints:
            if self._wanted(path):
                self._inbox.consider(path, now)
        for path in [p for p in self._inbox.fired if not os.path.lexists(p)]:
            self._inbox.forget(path)
        self._ignored = {p for p in self._ignored if os.path.lexists(p)}
        for path in self._inbox.due(now):
            self._fire(Ready("inbox", path))
        media = self._media()
        for path in media - self._mounted:
            self._mounts.consider(path, time.monotonic())
        for path in self._mounted - media:
            self._mounts.forget(path)
        self._mounted = media
        for path in self._mounts.due(time.monotonic()):
            self._fire(Ready("mount", path))
        for drive, state in self._drives.items():
            self._poll_drive(drive, state, time.monotonic())

    def _fire(self, ready: Ready) -> None:
        if self.stop.is_set():
            return
        logger.info("%s ready: %s", ready.kind, ready.path)
        try:
            self.on_ready(ready)
        except Exception:  # a bug in on_ready must not stop the watching
            logger.exception("handling %s %s failed", ready.kind, ready.path)

    # -- inbox -------------------------------------------------------------------

    def _observe(self) -> BaseObserver | None:
        """watchdog on the inbox: the native observer, else polling (no inotify, or its limits reached)."""
        try:
            self.inbox.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.error("inbox %s cannot be created (%s): it is not watched", self.inbox, exc.strerror)
            return None
        kinds: list[Callable[..., BaseObserver]] = [PollingObserver] if self.polling else [Observer, PollingObserver]
        for kind in kinds:
            try:
                observer = kind(timeout=self.poll_s)
                observer.schedule(_Hints(self._note), str(self.inbox), recursive=False)
                observer.start()
                return observer
            except OSError as exc:
                logger.warning("inbox %s: %s unavailable (%s)", self.inbox, getattr(kind, "__name__", kind), exc)
        logger.error("inbox %s is not watched", self.inbox)
        return None

    def _note(self, raw: str) -> None:
        """An event's path -> the inbox entry it belongs to (runs on watchdog's thread)."""
        try:
            relative = Path(raw).relative_to(self.inbox)
        except ValueError:
            return
        if relative.parts:
            with self._lock:
                self._hints.add(self.inbox / relative.parts[0])

    def _wanted(self, path: Path) -> bool:
        """An ``.iso`` file or a folder, not hidden, not done/, failed/ or held/, not a symlink."""
        if path.name in (DONE, FAILED, HELD) or path.name.startswith("."):
            return False
        try:
            mode = path.lstat().st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) or (stat.S_ISREG(mode) and path.suffix.lower() == ".iso"):
            return True
        if path not in self._ignored:
            self._ignored.add(path)
            logger.info("inbox: %s ignored: only .iso files and folders are imported", path)
        return False

    # -- mount roots and drives ----------------------------------------------------

    def _media(self) -> set[Path]:
        """Folders under a mount root, or one level deeper, that are mount points or hold a file."""
        found = set()
        for root in self.mount_roots:
            for first in _folders(root):
                if _is_medium(first):
                    found.add(first)
                else:
                    found.update(second for second in _folders(first) if _is_medium(second))
        return found

    def _loaded(self, drive: Path) -> Signature | None:
        try:
            sig = disc_loaded(drive)
        except OSError as exc:
            if drive not in self._failing:
                self._failing.add(drive)
                logger.warning("drive %s cannot be asked for its disc: %s", drive, exc.strerror or exc)
            return None
        self._failing.discard(drive)
        return sig

    def _poll_drive(self, drive: Path, state: _Drive, now: float) -> None:
        sig = self._loaded(drive)
        if sig is None:
            state.sig, state.fired = None, False  # removed: the next disc is a new insertion
        elif sig != state.sig:
            state.sig, state.since, state.fired = sig, now, False
        elif not state.fired and now - state.since >= self._settle_s:
            state.fired = True
            self._fire(Ready("drive", drive))


def _entries(path: Path) -> list[Path]:
    try:
        return sorted(path.iterdir())
    except OSError:
        return []


def _folders(path: Path) -> list[Path]:
    """Sub-folders (not symlinks, not hidden); none when ``path`` is missing or unreadable."""
    try:
        with os.scandir(path) as entries:
            return sorted(Path(e.path) for e in entries
                          if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except OSError:
        return []


def _is_medium(folder: Path) -> bool:
    """A mount point, or a folder holding a file (a DICOMDIR, in any case, or anything else)."""
    try:
        with os.scandir(folder) as entries:
            return os.path.ismount(folder) or any(e.is_file(follow_symlinks=False) for e in entries)
    except OSError:
        return False
