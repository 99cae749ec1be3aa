"""The watcher and the import runner: media found in the inbox, under a mount root, in a drive.

Real peers only: media made by our ``burn``, a DCMTK storescp on 127.0.0.1 as
the destination, watchdog's native and polling observers, the index on disk,
an eject command that is a real process. A regular file stands in for a drive's
block device (the watcher's documented stand-in). Outcomes are awaited with
deadlines, on the index, the inbox and the watcher's poll counter; the only
pauses are the slow copy's own.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers.polling import PollingObserver

from node.config import Config, parse_config
from node.intake import ImportRunner, medium_identity
from node.index import Index
from node.read.watcher import Watcher, disc_loaded
from tests.conftest import StoreSCP, cli, ct_series, until
from tests.test_import import received, uid_of

SETTLE_S, POLL_S = 0.3, 0.1


def burned(tmp_path: Path, name: str, n: int, *, fmt: str = "iso") -> tuple[Path, set[str]]:
    """A medium made by ``medianode burn`` from ``n`` new CT images, and their SOP Instance UIDs."""
    sources = ct_series(tmp_path / f"src-{name}", n, patient_id=f"PID-{name}")
    out = tmp_path / "made" / (f"{name}.iso" if fmt == "iso" else name)
    out.parent.mkdir(exist_ok=True)
    result = cli("burn", str(tmp_path / f"src-{name}"), "--out", str(out), "--format", fmt)
    assert result.code == 0, result.err
    return out, {uid_of(p) for p in sources}


def make_config(tmp_path: Path, scp: StoreSCP, *, eject: list[str] | None = None) -> Config:
    (tmp_path / "mnt").mkdir(exist_ok=True)
    text = f"""\
node: {{ae_title: READER, data_dir: {tmp_path / "var"}}}
import:
  inbox: {tmp_path / "inbox"}
  destination: {{ae_title: {scp.aet}, host: 127.0.0.1, port: {scp.port}}}
  mount_roots: [{tmp_path / "mnt"}]
  drives: [{tmp_path / "sr0"}]
  settle_seconds: {SETTLE_S}
  poll_seconds: {POLL_S}
  eject: {json.dumps(eject) if eject else "~"}
"""
    config = parse_config(text, source=str(tmp_path / "medianode.yaml"))
    config.node.data_dir.mkdir(parents=True, exist_ok=True)
    return config


@dataclass
class Node:
    """A running watcher and runner, and a separate index connection to look at the records with."""

    config: Config
    watcher: Watcher
    index: Index

    def records(self, medium: Path) -> list[dict[str, Any]]:
        return [r for r in reversed(self.index.imports(limit=1000)) if r["medium"] == str(medium)]

    def finished(self, medium: Path, count: int) -> list[dict[str, Any]]:
        """Wait until ``medium`` has ``count`` finished import records; return them, oldest first."""
        def check() -> list[dict[str, Any]] | None:
            records = self.records(medium)
            return records if sum(r["state"] != "importing" for r in records) >= count else None

        return until(check, f"{count} finished import(s) of {medium}")

    def wait_polls(self, n: int) -> None:
        start = self.watcher.polls
        until(lambda: self.watcher.polls >= start + n, f"{n} more polls")

    def audit(self) -> list[dict[str, Any]]:
        lines = (self.config.node.data_dir / "audit.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


@contextmanager
def watching(config: Config, *, polling: bool = False) -> Iterator[Node]:
    """Recover, then watch in a thread, as ``serve`` does; stop and join on the way out."""
    stop = threading.Event()
    own = Index(config.node.data_dir / "index.sqlite")
    runner = ImportRunner(own, lambda: config, stop=stop)
    runner.recover()
    watcher = runner.watcher(polling=polling)
    thread = threading.Thread(target=watcher.run, name="watcher")
    thread.start()
    look = Index(config.node.data_dir / "index.sqlite")
    try:
        assert watcher.started.wait(60), "the watcher did not start"
        yield Node(config, watcher, look)
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the watcher did not stop"
        look.close()
        own.close()


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """What a storescp wrote: name -> (size, mtime): a resend would add or rewrite a file."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def slow_copy(source: Path, target: Path, *, chunks: int = 40, pause: float = 0.04) -> float:
    """Write ``source`` into ``target`` in pieces with pauses; returns when it finished (time.time())."""
    data = source.read_bytes()
    step = -(-len(data) // chunks)
    with open(target, "wb") as out:
        for i in range(0, len(data), step):
            out.write(data[i:i + step])
            out.flush()
            time.sleep(pause)  # the copy's own pacing, shorter than SETTLE_S
    return time.time()


# -- inbox ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("polling", [False, True], ids=["native", "polling"])
def test_iso_copied_slowly_is_imported_once_complete_and_again_is_skipped(
    tmp_path: Path, storescp: StoreSCP, polling: bool
) -> None:
    iso, uids = burned(tmp_path, "study", 5)
    config = make_config(tmp_path, storescp)
    inbox = config.imports.inbox
    with watching(config, polling=polling) as node:
        assert isinstance(node.watcher.observer, PollingObserver) is polling
        began, copied = time.time(), []
        copier = threading.Thread(target=lambda: copied.append(slow_copy(iso, inbox / "study.iso")))
        copier.start()
        while copier.is_alive():  # meanwhile, the half-written image is left alone
            assert node.index.imports() == []
            node.wait_polls(1)
        copier.join()
        assert copied[0] - began > 3 * SETTLE_S  # the copy took several settle times
        [record] = node.finished(inbox / "study.iso", 1)
        assert record["state"] == "done" and record["sent"] == 5 and record["failed"] == 0
        assert record["started"] >= copied[0], "the import started before the copy was complete"
        until(lambda: set(received(storescp.folder)) == uids, "every instance at the storescp")

        done = inbox / "done"
        until(lambda: (done / "study.iso").exists(), "study.iso in done/")  # filed after its record
        assert (done / "study.iso").read_bytes() == iso.read_bytes()
        report = json.loads((done / "study.iso.report.json").read_text())
        assert (report["ok"], report["sent"], report["failed"]) == (True, 5, 0)
        assert Path(str(record["report"])).read_text() == (done / "study.iso.report.json").read_text()
        assert not (inbox / "study.iso").exists()

        # The same ISO again, dropped whole: skipped, nothing sent, recorded, filed beside the first.
        before = snapshot(storescp.folder)
        shutil.copy(iso, inbox / "study.iso")
        first, again = node.finished(inbox / "study.iso", 2)
        assert first == record
        assert (again["state"], again["sent"], again["identity"]) == ("done", 0, record["identity"])
        assert snapshot(storescp.folder) == before
        until(lambda: (done / "study-2.iso").exists(), "the second copy in done/")  # filed after its record
        skip = json.loads((done / "study-2.iso.report.json").read_text())
        assert skip["skipped_medium"].startswith(f"already imported: the same medium (identity {record['identity']}) "
                                                 f"was imported as import {record['id']} on ")
        assert (done / "study-2.iso").exists() and not (inbox / "study.iso").exists()
        events = [(e["event"], e["import_id"]) for e in node.audit()]
        assert events == [("import-started", record["id"]), ("import-done", record["id"]),
                          ("import-skipped", again["id"])]
        assert not (inbox / "failed").exists()


def test_other_files_are_ignored_and_a_renamed_copy_is_imported(tmp_path: Path, storescp: StoreSCP) -> None:
    """Only ``.iso`` files and folders are media: a note, a hidden in-progress copy and a symlink stay."""
    iso, uids = burned(tmp_path, "b", 2)
    config = make_config(tmp_path, storescp)
    inbox = config.imports.inbox
    with watching(config) as node:
        (inbox / "notes.txt").write_text("not a medium\n")
        (inbox / "link.iso").symlink_to(iso)
        shutil.copy(iso, inbox / ".b.iso.partial")  # as rsync and many copy tools write
        node.wait_polls(round(3 * SETTLE_S / POLL_S))
        assert node.index.imports() == []
        os.rename(inbox / ".b.iso.partial", inbox / "b.iso")
        [record] = node.finished(inbox / "b.iso", 1)
        assert record["state"] == "done" and set(received(storescp.folder)) == uids
        until(lambda: (inbox / "done" / "b.iso").exists(), "b.iso in done/")
        assert sorted(p.name for p in inbox.iterdir()) == ["done", "link.iso", "notes.txt"]
        assert len(node.index.imports()) == 1


def test_unreadable_iso_goes_to_failed_with_its_reason(tmp_path: Path, storescp: StoreSCP) -> None:
    config = make_config(tmp_path, storescp)
    inbox = config.imports.inbox
    with watching(config) as node:
        (inbox / "garbage.iso").write_bytes(b"\x00" * 40000 + b"no ISO 9660 here")
        [record] = node.finished(inbox / "garbage.iso", 1)
        assert (record["state"], record["identity"], record["sent"]) == ("failed", "unreadable", 0)
        kept = inbox / "failed" / "garbage.iso.report.json"
        until(kept.exists, "the report in failed/")
        report = json.loads(kept.read_text())
        assert report["ok"] is False
        [problem] = report["problems"]
        assert problem["problem"].startswith(f"{inbox / 'garbage.iso'}: not a readable ISO 9660 image")
        assert [e["event"] for e in node.audit()] == ["import-failed"]
        assert list(storescp.folder.iterdir()) == []


# -- mount roots -----------------------------------------------------------------------------------


def test_folder_appearing_under_a_mount_root_is_imported(tmp_path: Path, storescp: StoreSCP) -> None:
    stick, uids = burned(tmp_path, "STICK", 3, fmt="folder")
    old, _ = burned(tmp_path, "OLD", 1, fmt="folder")
    config = make_config(tmp_path, storescp)
    mnt = config.imports.mount_roots[0]
    shutil.copytree(old, mnt / "OLD")  # mounted before the start: left alone
    (mnt / "user").mkdir()  # /run/media/USER: a folder of mount points, not a medium
    with watching(config) as node:
        shutil.copytree(stick, mnt / "user" / "STICK")  # written while the watcher looks
        [record] = node.finished(mnt / "user" / "STICK", 1)
        assert (record["state"], record["sent"]) == ("done", 3)
        assert record["identity"] == medium_identity(mnt / "user" / "STICK")
        assert record["identity"].startswith("STICK/dicomdir:")
        until(lambda: set(received(storescp.folder)) == uids, "every instance of the stick")
        node.wait_polls(round(3 * SETTLE_S / POLL_S))
        assert [r["medium"] for r in node.index.imports()] == [str(mnt / "user" / "STICK")]
        assert (mnt / "user" / "STICK" / "DICOMDIR").exists()  # a mounted medium is read, never moved


# -- drives ------------------------------------------------------------------------------------------


def test_drive_imports_once_per_insertion_and_skips_the_same_disc(tmp_path: Path, storescp: StoreSCP) -> None:
    disc_a, uids_a = burned(tmp_path, "A", 2)
    disc_b, uids_b = burned(tmp_path, "B", 3)
    ejected = tmp_path / "ejected.log"
    eject = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')", str(ejected),
             "{device}"]
    config = make_config(tmp_path, storescp, eject=eject)
    drive = config.imports.drives[0]

    def insert(disc: Path) -> None:
        shutil.copy(disc, tmp_path / "loading")
        os.replace(tmp_path / "loading", drive)

    with watching(config) as node:
        insert(disc_a)
        [first] = node.finished(drive, 1)
        assert (first["state"], first["sent"]) == ("done", 2)
        assert until(lambda: ejected.exists() and ejected.read_text(), "eject") == f"{drive}\n"
        assert ejected.stat().st_mtime >= float(first["finished"]) - 0.01  # ejected after the import finished
        node.wait_polls(round(3 * SETTLE_S / POLL_S))
        assert len(node.records(drive)) == 1  # still loaded: imported once

        drive.unlink()  # the tray opens
        node.wait_polls(2)
        before = snapshot(storescp.folder)
        insert(disc_a)  # the same disc again
        second = node.finished(drive, 2)[1]
        assert (second["state"], second["sent"], second["identity"]) == ("done", 0, first["identity"])
        assert "already imported" in json.loads(Path(str(second["report"])).read_text())["skipped_medium"]
        assert snapshot(storescp.folder) == before

        drive.unlink()
        node.wait_polls(2)
        insert(disc_b)  # another disc
        third = node.finished(drive, 3)[2]
        assert (third["state"], third["sent"]) == ("done", 3) and third["identity"] != first["identity"]
        until(lambda: set(received(storescp.folder)) == uids_a | uids_b, "both discs at the storescp")
        until(lambda: ejected.read_text().count("\n") == 3, "an eject after each disc")
        assert [e["event"] for e in node.audit()] == ["import-started", "import-done", "import-skipped",
                                                      "import-started", "import-done"]


# -- recovery ----------------------------------------------------------------------------------------


def test_recover_finishes_an_interrupted_inbox_import_as_the_same_record(tmp_path: Path, storescp: StoreSCP) -> None:
    iso, uids = burned(tmp_path, "crash", 3)
    ejected = tmp_path / "ejected.log"
    config = make_config(tmp_path, storescp, eject=[sys.executable, "-c", f"open({str(ejected)!r}, 'a').write('x')"])
    inbox = config.imports.inbox
    inbox.mkdir(parents=True)
    shutil.copy(iso, inbox / "crash.iso")
    drive = config.imports.drives[0]
    shutil.copy(iso, drive)  # a disc whose import was cut short too
    index = Index(config.node.data_dir / "index.sqlite")
    try:  # what a crash mid-import leaves: records started, never finished
        interrupted = index.start_import(str(inbox / "crash.iso"), medium_identity(inbox / "crash.iso"))
        in_drive = index.start_import(str(drive), medium_identity(drive))
    finally:
        index.close()

    stop = threading.Event()
    own = Index(config.node.data_dir / "index.sqlite")
    runner = ImportRunner(own, lambda: config, stop=stop)
    thread = threading.Thread(target=runner.run, name="watcher")  # as serve runs it: recover, then watch
    thread.start()
    look = Index(config.node.data_dir / "index.sqlite")
    try:
        until(lambda: (inbox / "done" / "crash.iso").exists(), "the interrupted item in done/")
        records = {int(str(r["id"])): r for r in look.imports()}
        assert sorted(records) == [interrupted, in_drive]  # no new record
        assert (records[interrupted]["state"], records[interrupted]["sent"]) == ("done", 3)
        until(lambda: set(received(storescp.folder)) == uids, "every instance")
        assert records[in_drive]["state"] == "failed"
        report = json.loads(Path(str(records[in_drive]["report"])).read_text())
        assert report["problems"][0]["problem"].startswith("interrupted: the service stopped during the import")
    finally:
        stop.set()
        thread.join(60)
        look.close()
        own.close()
    assert not ejected.exists()  # a disc already in the drive at start-up is left for its next insertion


def test_what_counts_as_a_loaded_disc(tmp_path: Path) -> None:
    """A stand-in file: loaded while non-empty, another disc when replaced. A character device is refused
    with its reason (the watcher logs it once and goes on)."""
    stand_in = tmp_path / "sr0"
    assert disc_loaded(stand_in) is None
    stand_in.write_bytes(b"")
    assert disc_loaded(stand_in) is None
    stand_in.write_bytes(b"disc")
    first = disc_loaded(stand_in)
    (tmp_path / "other").write_bytes(b"disc")
    os.replace(tmp_path / "other", stand_in)
    assert first is not None and disc_loaded(stand_in) not in (None, first)
    with pytest.raises(OSError, match="^/dev/null is neither a block device nor an image file$"):
        disc_loaded(Path("/dev/null"))


def test_a_block_device_that_is_not_an_optical_drive_is_refused() -> None:
    loop = next((p for p in sorted(Path("/dev").glob("loop[0-9]*")) if os.access(p, os.R_OK)), None)
    if loop is None:
        pytest.skip("no readable loop device to stand for a block device that is not an optical drive")
    with pytest.raises(OSError, match=rf"^{loop} is not an optical drive \(CDROM_DRIVE_STATUS: "):
        disc_loaded(loop)
