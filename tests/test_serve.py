"""``medianode serve`` end to end: DCMTK clients send, the node burns, readers check the disc."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from node import pixels
from tests.conftest import PEER_ENV, StoreSCP, bundled, cli, ct_series, free_port, need, until
from tests.test_burn import by_uid, dciodvfy_errors, extract

#: A mix of SOP classes and transfer syntaxes, as a PACS would send them.
MIX = ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "test-SR.dcm",
       "waveform_ecg.dcm", "rtdose.dcm", "examples_palette.dcm"]


class Node:
    """A ``medianode serve`` process (and its receivers) on 127.0.0.1."""

    def __init__(self, tmp_path: Path, *, stable: float = 1.0, extra: str = "", routes: str | None = None,
                 imports: str = "", console: str | None = None) -> None:
        """``console``: the console section's keys besides its port (a free one), e.g. ``""``; None turns
        the console off (most tests need only the SCP)."""
        self.port = free_port()
        self.console_port = free_port()
        self.root = tmp_path
        self.data = tmp_path / "var"
        self.out = tmp_path / "out"
        self.config = tmp_path / "medianode.yaml"
        self.config.write_text(
            f"node: {{ae_title: MEDIANODE, host: 127.0.0.1, port: {self.port}, data_dir: {self.data}, "
            f"workers: 2, min_free_mb: 0{extra}}}\n"
            f"burn: {{output: {self.out}, study_stable_seconds: {stable}}}\n"
            + ("console: {enabled: false}\n" if console is None
               else f"console: {{host: 127.0.0.1, port: {self.console_port}{console}}}\n")
            + (routes or "routes:\n  - {match: {called_aet: BURN}, action: burn, profile: STD-GEN-CD}\n")
            + imports
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = open(self.root / f"serve-{time.monotonic_ns()}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "node", "serve", "--config", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        try:
            while subprocess.run(["echoscu", "-aet", "CT1", "-aec", "MEDIANODE", "127.0.0.1", str(self.port)],
                                 capture_output=True, env=PEER_ENV).returncode:
                assert self.proc.poll() is None, self.logs()
                assert time.monotonic() < deadline, "medianode serve did not answer C-ECHO"
                time.sleep(0.1)
        except BaseException:
            self.stop(signal.SIGKILL)  # never leave a node behind
            raise

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the whole process group (the service and its receivers) and wait."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        code = self.proc.wait(timeout=60)
        self.log.close()
        return code

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("serve-*.log")))

    def images(self) -> list[Path]:
        return sorted(self.out.glob("*.iso")) if self.out.exists() else []

    def volumes(self) -> list[dict[str, object]]:
        """``medianode volumes --json``: the volumes the index records (an image is published before its
        volume is recorded, so a test that reads the index waits on this, not on :meth:`images`)."""
        return list(json.loads(cli("volumes", "--config", self.config, "--json").out))

    def wait_for(self, what: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            assert self.proc is None or self.proc.poll() is None, self.logs()
            assert time.monotonic() < deadline, f"timed out\n{self.logs()}"
            time.sleep(0.1)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    need("echoscu", "storescu")
    n = Node(tmp_path)
    n.start()
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.stop(signal.SIGKILL)


def test_serve_runs_its_receivers_and_console_and_no_other_process(tmp_path: Path) -> None:
    """No multiprocessing resource tracker beside them: it would be one more interpreter for the node's life."""
    need("echoscu")
    node = Node(tmp_path, console="")
    node.start()
    try:
        assert node.proc is not None
        until(lambda: "console at" in node.logs(), "the console serving")  # a stop before would be a failed start
        pids = subprocess.run(["pgrep", "-P", str(node.proc.pid)], capture_output=True, text=True).stdout.split()
        names = sorted(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode() for pid in pids)
        assert names == ["medianode-console", "medianode-receiver-1", "medianode-receiver-2"]
    finally:
        assert node.stop() == 0


def test_serve_and_the_console_start_without_the_dicom_and_media_libraries() -> None:
    """They are loaded by what needs them (a build, a reburn, a held import, a medium), not at start."""
    code = ("import sys, node.service, node.console.app; "
            "print(' '.join(m for m in ('pydicom', 'pynetdicom', 'numpy', 'pycdlib', 'watchdog') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""


def storescu(node: Node, files: list[Path], *, called: str = "BURN", calling: str = "CT1",
             args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["storescu", "-R", "-aec", called, "-aet", calling, *args, "127.0.0.1", str(node.port),
                           *map(str, files)], capture_output=True, text=True, env=PEER_ENV, timeout=300)


def test_a_study_sent_to_burn_becomes_a_disc(node: Node, tmp_path: Path) -> None:
    src = tmp_path / "mix"
    src.mkdir()
    for name in MIX:
        shutil.copy(bundled(name), src / name)
    # storescu proposes one compressed syntax per run (besides the uncompressed ones)
    proposal = {"1.2.840.10008.1.2.4.91": "-xw", "1.2.840.10008.1.2.5": "-xr", "1.2.840.10008.1.2.4.50": "-xy"}
    for path in sorted(src.iterdir()):
        ts = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        sent = storescu(node, [path], args=(proposal[ts],) if ts in proposal else ())
        assert sent.returncode == 0, sent.stderr
    node.wait_for(lambda: len(node.images()) == len({dcmread(p, stop_before_pixels=True).StudyInstanceUID
                                                      for p in src.iterdir()}))
    root_uids: dict[str, Path] = {}
    for i, iso in enumerate(node.images()):
        root_uids |= by_uid(extract(iso, tmp_path / f"disc{i}"))
        assert dciodvfy_errors(tmp_path / f"disc{i}" / "DICOMDIR") == set()
    pixels.register()
    for p in src.iterdir():
        ds = dcmread(p)
        burned = dcmread(root_uids[ds.SOPInstanceUID])
        if "PixelData" in ds:
            assert np.array_equal(burned.pixel_array, ds.pixel_array), p.name
    status = json.loads(cli("status", "--config", node.config, "--json").out)
    assert status["receiving"] == [] and status["jobs"]["failed"] == []
    assert len(status["volumes_today"]) == len(node.images())
    assert node.stop() == 0


def test_four_concurrent_associations_make_one_study(node: Node, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "ct", 40)
    senders = [subprocess.Popen(["storescu", "-aec", "BURN", "-aet", f"CT{i}", "127.0.0.1", str(node.port),
                                 *map(str, files[i::4])], env=PEER_ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for i in range(4)]
    assert all(s.wait(timeout=120) == 0 for s in senders)
    node.wait_for(lambda: len(node.images()) == 1)
    assert len(by_uid(extract(node.images()[0], tmp_path / "disc"))) == 40


def test_kill_9_mid_send_loses_nothing_acknowledged(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    need("storescu")
    node = Node(tmp_path, stable=2.0)
    request.addfinalizer(lambda: node.proc and node.proc.poll() is None and node.stop(signal.SIGKILL))
    node.start()
    files = ct_series(tmp_path / "ct", 500, size=128)
    sender = subprocess.Popen(["storescu", "-v", "-aec", "BURN", "-aet", "CT1", "127.0.0.1", str(node.port),
                               *map(str, files)], env=PEER_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    spool = node.data / "spool"
    node.wait_for(lambda: sum(1 for _ in spool.rglob("*.dcm")) >= 150 if spool.exists() else False)
    node.stop(signal.SIGKILL)  # the service and every receiver, mid-send
    output, _ = sender.communicate(timeout=60)
    acknowledged = _acknowledged(output, files)
    assert 150 <= len(acknowledged) < 500

    node.start()  # restart: what was acknowledged must still be there; send the rest
    rest = [f for f in files if f not in acknowledged]
    assert storescu(node, rest).returncode == 0
    sent = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    # The volume that holds everything (a slow restart may let a partial one be burned first).
    label = until(lambda: volume_holding(node, sent), "the volume holding every instance", timeout=180)
    volume = next(v for v in json.loads(cli("volumes", "--config", node.config, "--json").out) if v["label"] == label)
    assert sent <= set(by_uid(extract(Path(volume["paths"][0]), tmp_path / "disc")))
    assert node.stop() == 0
    assert list((node.data / "tmp").iterdir()) == []


def volume_holding(node: Node, sop_uids: set[str]) -> str | None:
    """The label of a volume whose job took every one of ``sop_uids``, once there is one."""
    assert node.proc is not None and node.proc.poll() is None, node.logs()
    for label, job in index_rows(node, "SELECT label, job_id FROM volumes ORDER BY created"):
        taken = {u for (u,) in index_rows(node, f"SELECT sop_instance_uid FROM job_files WHERE job_id = {job}")}
        if sop_uids <= taken:
            return str(label)
    return None


def _acknowledged(output: str, files: list[Path]) -> set[Path]:
    """The files storescu saw answered with Success (its -v log names each file, then its response)."""
    done, current = set(), None
    by_name = {str(f): f for f in files}
    for line in output.splitlines():
        if "Sending file:" in line:
            current = by_name.get(line.split("Sending file:", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            done.add(current)
            current = None
    return done


def test_late_instance_makes_a_superseding_volume(node: Node, tmp_path: Path) -> None:
    first = ct_series(tmp_path / "a", 3)
    study = str(dcmread(first[0]).StudyInstanceUID)
    assert storescu(node, first).returncode == 0
    node.wait_for(lambda: len(node.images()) == 1)
    late = ct_series(tmp_path / "late", 1, study_uid=study)
    assert storescu(node, late).returncode == 0
    node.wait_for(lambda: len(node.images()) == 2)
    volumes = json.loads(cli("volumes", "--config", node.config, "--study", study, "--json").out)
    assert len(volumes) == 2 and volumes[0]["superseded_by"] == volumes[1]["label"]
    assert len(by_uid(extract(Path(volumes[1]["paths"][0]), tmp_path / "new"))) == 4


def test_the_same_study_sent_again_is_not_news_and_a_changed_instance_is(node: Node, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "ct", 3)
    assert storescu(node, files).returncode == 0
    node.wait_for(lambda: len(node.images()) == 1)
    assert storescu(node, files, calling="PACS").returncode == 0  # a re-push: every instance identical
    # Each C-STORE is answered once the index has decided: the study is not pending again (so no job can
    # follow), and no temp file is left.
    assert index_rows(node, "SELECT pending FROM studies") == [(0,)]
    assert list((node.data / "tmp").iterdir()) == []
    changed = dcmread(files[1])
    changed.ImageComments = "corrected"
    changed.save_as(files[1])
    assert storescu(node, files).returncode == 0  # one instance differs: a late arrival
    node.wait_for(lambda: len(node.images()) == 2)
    assert index_rows(node, "SELECT COUNT(*) FROM jobs") == [(2,)]
    newest = json.loads(cli("volumes", "--config", node.config, "--json").out)[-1]
    burned = by_uid(extract(Path(newest["paths"][0]), tmp_path / "new"))
    assert len(burned) == 3 and dcmread(burned[str(changed.SOPInstanceUID)]).ImageComments == "corrected"


def index_rows(node: Node, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(node.data / "index.sqlite") as db:
        return db.execute(sql).fetchall()


def test_refusals_store_nothing(tmp_path: Path) -> None:
    need("storescu")
    node = Node(tmp_path, extra=", allowed_calling_aets: [CT1, CT2]", routes=(
        "routes:\n"
        "  - {match: {called_aet: BURN}, action: burn}\n"
        "  - {match: {called_aet: BURN2, calling_aet: CT2}, action: reject}\n"))
    try:
        node.start()
        files = ct_series(tmp_path / "ct", 1)
        unknown_called = storescu(node, files, called="NOBODY")
        assert unknown_called.returncode != 0 and "Called AE Title Not Recognized" in unknown_called.stderr
        unknown_calling = storescu(node, files, calling="INTRUDER")
        assert unknown_calling.returncode != 0 and "Calling AE Title Not Recognized" in unknown_calling.stderr
        rejected = storescu(node, files, called="BURN2", calling="CT2", args=("-v",))
        assert "Received Store Response (Unknown Status: 0x124)" in rejected.stderr, rejected.stderr
        no_study = dcmread(files[0])
        del no_study.StudyInstanceUID
        no_study.save_as(tmp_path / "nostudy.dcm")
        missing = storescu(node, [tmp_path / "nostudy.dcm"], args=("-v",))
        assert "Received Store Response (Error: CannotUnderstand)" in missing.stderr, missing.stderr  # 0xCxxx
        assert not list((node.data / "spool").rglob("*.dcm"))
        audit = (node.data / "audit.jsonl").read_text()
        assert audit.count("association-refused") == 2
    finally:
        node.stop()


def test_bad_configuration_is_exit_2_with_file_line_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("node:\n  port: 11112\nroutes:\n  - {match: {called_aet: BURN}, action: burn, profile: STD-GEN-BR}\n")
    p = subprocess.run([sys.executable, "-m", "node", "serve", "--config", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().startswith(f"medianode serve: {bad}:4 routes[0].profile: 'STD-GEN-BR' is not one of")
    assert "Traceback" not in p.stderr
    assert cli("config", "check", bad).code == 2


def test_sighup_reloads_routes_and_keeps_the_running_config_when_the_new_one_is_bad(node: Node, tmp_path: Path) -> None:
    assert node.proc is not None
    good = node.config.read_text()
    node.config.write_text(good + "  - {match: {called_aet: BURN3}, action: burn, profile: STD-GEN-BR}\n")
    os.kill(node.proc.pid, signal.SIGHUP)
    node.wait_for(lambda: "configuration not reloaded" in node.logs())
    files = ct_series(tmp_path / "ct", 1)
    assert storescu(node, files, called="BURN3").returncode != 0  # still the old routes: BURN3 is unknown

    node.config.write_text(good + "  - {match: {called_aet: BURN3}, action: reject}\n")
    os.kill(node.proc.pid, signal.SIGHUP)
    node.wait_for(lambda: "configuration reloaded" in node.logs())
    deadline = time.monotonic() + 30
    while "0x124" not in (refused := storescu(node, files, called="BURN3", args=("-v",))).stderr:
        assert time.monotonic() < deadline, refused.stderr  # each receiver process reloads on its own signal
        time.sleep(0.2)
    assert not list((node.data / "spool").rglob("*.dcm"))


def test_an_iso_dropped_into_the_inbox_is_imported(tmp_path: Path, storescp: StoreSCP) -> None:
    ct_series(tmp_path / "src", 3)
    assert cli("burn", tmp_path / "src", "--out", tmp_path / "disc.iso").code == 0
    inbox = tmp_path / "inbox"
    node = Node(tmp_path, imports=(
        f"import: {{inbox: {inbox}, mount_roots: [], settle_seconds: 0.3, poll_seconds: 0.2, "
        f"destination: {{ae_title: {storescp.aet}, host: 127.0.0.1, port: {storescp.port}}}}}\n"))
    try:
        node.start()
        inbox.mkdir(exist_ok=True)
        shutil.copy(tmp_path / "disc.iso", inbox / "disc.iso.part")
        (inbox / "disc.iso.part").rename(inbox / "disc.iso")
        node.wait_for(lambda: (inbox / "done" / "disc.iso").exists())
        assert len(storescp.received()) == 3
        status = json.loads(cli("status", "--config", node.config, "--json").out)
        assert [(i["state"], i["sent"]) for i in status["imports"]] == [("done", 3)]
    finally:
        node.stop()
