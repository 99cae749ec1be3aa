"""Outputs: a folder of images, an xorriso drive (its ``stdio:`` pseudo-drive), a publisher robot's
hot folder (a simulated robot that consumes job files as the vendors document) and a USB volume.
End to end through ``medianode serve`` and DCMTK's storescu; failures provoked for real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import PublisherOutput, XorrisoOutput, parse_config
from node.errors import BuildError, ConfigError
from node.index import Index
from node.media import outputs, publisher
from node.media.build import burn
from node.profiles import get_profile
from tests.conftest import PEER_ENV, cli, ct_series, need
from tests.test_burn import by_uid, dciodvfy_errors, extract
from tests.test_serve import Node, storescu

DATA = Path(__file__).with_name("data")


class Robot(threading.Thread):
    """A disc-publishing robot as its vendor documents the hot folder: Epson TD Bridge renames
    ``JDF -> RJD -> INP -> DON | ERR`` and writes ``TDBStatus.txt``; Rimage renames ``NWP -> INP ->
    DON | ERR`` with a ``.LOG``. It checks the medium the job names, and fails the first ``fail`` jobs."""

    def __init__(self, hot: Path, vendor: str, *, fail: int = 0) -> None:
        super().__init__(daemon=True)
        self.hot, self.vendor, self.fail = hot, vendor, fail
        self.jobs: list[dict[str, str]] = []
        self.stop = threading.Event()
        hot.mkdir(parents=True, exist_ok=True)

    def run(self) -> None:
        ext = "JDF" if self.vendor == "epson" else "NWP"
        while not self.stop.wait(0.05):
            for job in sorted(self.hot.glob(f"*.{ext}")):
                self.consume(job)

    def consume(self, job: Path) -> None:
        text = job.read_bytes().decode("ascii")
        keys = dict(line.split("=", 1) for line in text.split("\r\n") if line and not line.startswith("#"))
        working = job.rename(job.with_suffix(".RJD" if self.vendor == "epson" else ".INP"))
        medium = Path(keys["DATA" if self.vendor == "epson" else "file"])
        if self.vendor == "epson":
            working = working.rename(working.with_suffix(".INP"))
            keys["medium_ok"] = str((medium / "DICOMDIR").is_file())
        else:
            with open(medium, "rb") as f:
                f.seek(16 * 2048 + 1)
                keys["medium_ok"] = str(f.read(5) == b"CD001")  # ECMA-119 8.4.2: an ISO 9660 volume
        self.jobs.append(keys)
        name = job.stem
        if self.fail:
            self.fail -= 1
            if self.vendor == "epson":
                (self.hot / "TDBStatus.txt").write_text(f"[{name}]\r\nSTATUS=5\r\nERROR=0202\r\n")
            else:
                job.with_suffix(".LOG").write_text("Order failed: no blank media in the input bin\n")
            working.rename(working.with_suffix(".ERR"))
            return
        if self.vendor == "epson":
            (self.hot / "TDBStatus.txt").write_text(f"[{name}]\r\nSTATUS=4\r\nCOMPLETION_NUMBER={keys['COPIES']}\r\n")
        working.rename(working.with_suffix(".DON"))


@pytest.fixture
def robots(tmp_path: Path) -> Iterator[dict[str, Robot]]:
    started = {v: Robot(tmp_path / f"hot-{v}", v) for v in ("epson", "rimage")}
    for r in started.values():
        r.start()
    yield started
    for r in started.values():
        r.stop.set()
        r.join()


def _status(node: Node) -> dict[str, object]:
    return dict(json.loads(cli("status", "--config", node.config, "--json").out))


def _jobs(node: Node) -> dict[str, object]:
    jobs = _status(node)["jobs"]
    assert isinstance(jobs, dict)
    return jobs


def test_each_output_kind_through_serve(tmp_path: Path, robots: dict[str, Robot]) -> None:
    need("echoscu", "storescu")
    drive, stick = tmp_path / "drive.iso", tmp_path / "stick"
    stick.mkdir()
    routes = f"""routes:
  - {{match: {{called_aet: BURN}}, action: burn, copies: 2}}
  - {{match: {{called_aet: DRIVE}}, action: burn, copies: 2,
      output: {{kind: xorriso, device: 'stdio:{drive}', eject: true, retries: 0}}}}
  - {{match: {{called_aet: EPSON}}, action: burn, copies: 3,
      output: {{kind: publisher, vendor: epson, hot_folder: {robots['epson'].hot}, media: cd, poll_seconds: 0.1}}}}
  - {{match: {{called_aet: RIMAGE}}, action: burn, copies: 4,
      output: {{kind: publisher, vendor: rimage, hot_folder: {robots['rimage'].hot}, poll_seconds: 0.1}}}}
  - {{match: {{called_aet: USB}}, action: burn, profile: STD-GEN-USB-JPEG, output: {{kind: usb, mount_point: {stick}}}}}
"""
    node = Node(tmp_path, routes=routes)
    node.start()
    try:
        for aet in ("BURN", "DRIVE", "EPSON", "RIMAGE", "USB"):
            sent = storescu(node, ct_series(tmp_path / aet, 2, size=16, patient_id=f"P-{aet}"), called=aet)
            assert sent.returncode == 0, sent.stderr
        node.wait_for(lambda: _jobs(node)["done_today"] == 5 and not _status(node)["receiving"])
        jobs = _jobs(node)
        assert jobs["failed"] == [] and jobs["waiting"] == []
    finally:
        node.stop()
    assert len(node.images()) == 2  # the folder output: the image and its second copy
    disc = extract(drive, tmp_path / "disc")  # the pseudo-drive holds a readable ISO
    assert len(by_uid(disc)) == 2 and dciodvfy_errors(disc / "DICOMDIR") == set()
    (epson,), (rimage,) = robots["epson"].jobs, robots["rimage"].jobs
    assert (epson["COPIES"], epson["DISC_TYPE"], epson["medium_ok"]) == ("3", "CD", "True")
    assert (rimage["copies"], rimage["filetype"], rimage["medium_ok"]) == ("4", "IMAGE", "True")
    assert rimage["file"].endswith(".iso") and rimage["volume"] in rimage["file"]
    assert cli("check", stick).code == 0  # the USB tree verifies
    assert not list((tmp_path / "var" / "burning").iterdir())  # staged images are gone once written


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs the test mounts (we are root): too small for any medium."""
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_failed_burns_wait_show_in_status_retry_then_fail_keeping_the_study(tmp_path: Path, small_fs: Path) -> None:
    need("echoscu", "storescu", "xorriso")
    routes = f"""routes:
  - {{match: {{called_aet: FULL}}, action: burn, output: {{kind: xorriso, device: 'stdio:/dev/full', retries: 1,
      retry_wait_seconds: 3}}}}
  - {{match: {{called_aet: SMALL}}, action: burn, output: {{kind: xorriso, device: 'stdio:{small_fs}/d.iso',
      retries: 0}}}}
"""
    node = Node(tmp_path, routes=routes)
    node.start()
    try:
        for aet in ("FULL", "SMALL"):
            assert storescu(node, ct_series(tmp_path / aet, 2, size=16), called=aet).returncode == 0
        node.wait_for(lambda: bool(_jobs(node)["waiting"]))
        (waiting,) = _jobs(node)["waiting"]  # type: ignore[misc]
        assert re.fullmatch(r"waiting for a blank disc in stdio:/dev/full \(copy 1 of 1\): xorriso could not write "
                            r"stdio:/dev/full: .*No space left on device", waiting["message"]), waiting
        text = cli("status", "--config", node.config).out
        assert f"job {waiting['id']} waiting for a blank disc in stdio:/dev/full (copy 1 of 1)" in text
        node.wait_for(lambda: len(_jobs(node)["failed"]) == 2)
        failed = {j["id"]: j["error"] for j in _jobs(node)["failed"]}  # type: ignore[attr-defined]
    finally:
        node.stop()
    assert "No space left on device (tried 2 times)" in failed[waiting["id"]]
    (small_error,) = [e for i, e in failed.items() if i != waiting["id"]]
    assert f"xorriso could not write stdio:{small_fs}/d.iso" in small_error and "(tried 1 time)" in small_error
    index = Index(tmp_path / "var" / "index.sqlite")
    try:  # no study lost: every instance of both failed jobs is still spooled, for `medianode jobs retry`
        spooled = [Path(p) for job in failed for _, p, _ in index.job_files(job)]
    finally:
        index.close()
    assert len(spooled) == 4 and all(p.is_file() for p in spooled)
    assert not list((tmp_path / "var" / "burning").iterdir())


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    out = src.parent / "m.iso"
    burn([str(p) for p in ct_series(src, 2, size=16)], out=out, profile=get_profile("STD-GEN-CD"))
    return out


def test_a_disc_corrupted_between_write_and_verify_fails_the_verify(tmp_path: Path, iso: Path) -> None:
    drive = XorrisoOutput(device=f"stdio:{tmp_path / 'drive'}")
    outputs.burn_disc(drive, iso)
    outputs.verify_disc(drive, iso)
    with open(tmp_path / "drive", "r+b") as f:
        f.seek(iso.stat().st_size - 3000)
        f.write(b"\xff")
    with pytest.raises(BuildError, match=r"verify failed: the data read back from stdio:.*drive differs from the image"):
        outputs.verify_disc(drive, iso)


class Waits:
    """A waiter that records what the output waits for and does not sleep."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.cleared = 0

    def wait(self, message: str, seconds: float) -> bool:
        self.messages.append(message)
        return True

    def clear(self) -> None:
        self.cleared += 1


def test_a_robot_error_is_reported_and_the_job_submitted_again(tmp_path: Path, iso: Path) -> None:
    for vendor, reason in (("epson", "error code 0202 (TDBStatus.txt)"), ("rimage", "no blank media in the input bin")):
        robot = Robot(tmp_path / vendor, vendor, fail=1)
        robot.start()
        try:
            output = PublisherOutput(vendor, robot.hot, poll_seconds=0.05, retries=1)  # type: ignore[arg-type]
            kind = outputs.output_for(output)
            target = kind.stage(name="DICOM_000007", suffix=".iso", data_dir=tmp_path)
            burn([str(p) for p in ct_series(tmp_path / f"src-{vendor}", 1, size=16)], out=target,
                 profile=get_profile("STD-GEN-CD"), fmt=kind.staging_format())
            waits = Waits()
            done = kind.deliver(target, copies=2, volume_id="DICOM_000007", label={}, waiter=waits)
        finally:
            robot.stop.set()
            robot.join()
        assert [j["medium_ok"] for j in robot.jobs] == ["True", "True"]
        assert any(reason in m and "submitting again" in m for m in waits.messages), waits.messages
        assert done == [str(robot.hot / f"DICOM_000007.{'JDF' if vendor == 'epson' else 'NWP'}")]


def test_job_files_have_the_structure_of_the_documented_samples(tmp_path: Path) -> None:
    for vendor, sample in (("epson", "epson_td_bridge_sample.jdf"), ("rimage", "rimage_nwp_sample.nwp")):
        output = PublisherOutput(vendor, tmp_path, publisher="Publisher 0", label_template="C:\\L\\disc.tdd",  # type: ignore[arg-type]
                                 robot_path="D:\\Order")
        job = publisher.RobotJob("DICOM_000001", tmp_path / "DICOM_000001.iso", 3, "DICOM_000001", {"patient_id": "P1"})
        ours = job_keys(publisher.job_text(output, job))
        documented = job_keys((DATA / sample).read_bytes().decode("ascii"))
        assert list(ours) == [k for k in documented if k in ours]  # documented keys, in the documented order
        assert set(documented) - set(ours) <= {"OUT_STACKER"}  # the stacker is left to the robot's setting
        assert ours["COPIES" if vendor == "epson" else "copies"] == "3"
        assert ours["DATA" if vendor == "epson" else "file"].startswith("D:\\Order\\DICOM_000001")
    assert publisher.merge_text({"patient_id": "P1"}).split("\r\n")[1] == "P1"


def job_keys(text: str) -> dict[str, str]:
    """KEY=value lines (CR LF ends; ``#`` comments) as the vendors' job files use them."""
    assert "\n" not in text.replace("\r\n", "")
    return dict(line.split("=", 1) for line in text.split("\r\n") if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def usb_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("usb-src")
    tree = src.parent / "TREE"
    burn([str(p) for p in ct_series(src, 2, size=16)], out=tree, profile=get_profile("STD-GEN-USB-JPEG"))
    return tree


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_usb_writes_the_tree_with_the_dicomdir_last(tmp_path: Path, usb_tree: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "OTHER.TXT").write_text("the owner's file")
    assert outputs.write_usb(stick, usb_tree) == str(stick)
    assert _snapshot(stick) == {**_snapshot(usb_tree), "OTHER.TXT": b"the owner's file"}
    assert cli("check", stick).code == 0


def test_usb_refuses_a_stick_holding_a_medium_or_without_room(tmp_path: Path, usb_tree: Path, small_fs: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "dicomdir").write_bytes(b"an earlier medium")
    before = _snapshot(stick)
    with pytest.raises(BuildError, match="already holds a DICOMDIR: insert an empty USB stick"):
        outputs.write_usb(stick, usb_tree)
    assert _snapshot(stick) == before
    with pytest.raises(BuildError, match=r"small has [0-9.]+ MB free; the file-set needs [0-9.]+ MB"):
        outputs.write_usb(small_fs, usb_tree)
    assert list(small_fs.iterdir()) == []


@pytest.mark.parametrize(("yaml", "error"), [
    ("burn: {output: {kind: tape}}", "c.yaml:1 burn.output.kind: 'tape' is not one of folder, xorriso, publisher, usb"),
    ("burn: {output: {device: /dev/sr0}}", "c.yaml:1 burn.output.kind: required key is missing"),
    ("burn: {output: {kind: xorriso}}", "c.yaml:1 burn.output.device: required key is missing"),
    ("burn: {output: {kind: xorriso, device: sr0}}", "c.yaml:1 burn.output.device: 'sr0' is not a drive"),
    ("burn: {output: {kind: publisher, vendor: sony, hot_folder: h}}",
     "c.yaml:1 burn.output.vendor: 'sony' is not one of epson, rimage"),
    ("routes:\n  - {action: burn, output: {kind: usb, mount_point: /media/u}}",
     "c.yaml:2 routes[0].output: a usb output needs a USB profile (STD-GEN-USB-*), not STD-GEN-CD"),
    ("burn: {output: {kind: usb, mount_point: /m}}\nroutes:\n  - {action: burn}",
     "c.yaml:3 routes[0]: burn.output: a usb output needs a USB profile"),
])
def test_bad_outputs_are_config_errors_with_file_line_key(yaml: str, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(yaml, source="c.yaml")
    assert str(exc.value).startswith(error), str(exc.value)


def test_an_output_mapping_or_path_round_trips_through_the_route_record() -> None:
    from node.config import output_from_settings, output_settings

    config = parse_config("burn: {output: {kind: folder, path: /o}}\nroutes:\n  - {action: burn, output: "
                          "{kind: publisher, vendor: epson, hot_folder: /h, media: dvd}}", source="c.yaml")
    assert config.burn.output == Path("/o")
    route_output = config.routes[0].output
    assert isinstance(route_output, PublisherOutput) and route_output.media == "DVD"
    assert output_from_settings(json.loads(json.dumps(output_settings(route_output)))) == route_output


def test_a_waiting_drive_holds_only_its_own_output_and_a_reload_reaches_the_receivers(tmp_path: Path) -> None:
    need("echoscu", "storescu", "xorriso")
    routes = """routes:
  - {match: {called_aet: DRIVE}, action: burn, output: {kind: xorriso, device: 'stdio:/dev/full', retries: 99,
      retry_wait_seconds: 3600}}
  - {match: {called_aet: BURN}, action: burn}
"""
    node = Node(tmp_path, routes=routes)
    node.start()
    try:
        assert storescu(node, ct_series(tmp_path / "drive", 2, size=16), called="DRIVE").returncode == 0
        node.wait_for(lambda: bool(_jobs(node)["waiting"]))
        (drive_job,) = [w["id"] for w in _jobs(node)["waiting"]]  # type: ignore[attr-defined]

        assert storescu(node, ct_series(tmp_path / "folder", 2, size=16), called="BURN").returncode == 0
        node.wait_for(lambda: len(node.images()) == 1)  # while the drive's job still waits for a blank disc
        assert [w["id"] for w in _jobs(node)["waiting"]] == [drive_job]  # type: ignore[attr-defined]
        drive = next(o for o in _status(node)["outputs"] if o["output"] == "xorriso stdio:/dev/full")  # type: ignore[attr-defined]
        assert drive["delivering"] == drive_job and drive["waiting_for"].startswith("waiting for a blank disc")
        assert f"xorriso stdio:/dev/full: delivering job {drive_job}, waiting for a blank disc" in cli(
            "status", "--config", node.config).out

        def echo(aet: str) -> bool:
            return subprocess.run(["echoscu", "-aet", "CT1", "-aec", aet, "127.0.0.1", str(node.port)],
                                  capture_output=True, env=PEER_ENV).returncode == 0

        assert not echo("NEWAET")
        node.config.write_text(node.config.read_text() + "  - {match: {called_aet: NEWAET}, action: store}\n")
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGHUP)
        node.wait_for(lambda: echo("NEWAET"))  # the receivers have the new route, the drive still waiting
        assert [w["id"] for w in _jobs(node)["waiting"]] == [drive_job]  # type: ignore[attr-defined]
    finally:
        assert node.stop() == 0
    index = Index(tmp_path / "var" / "index.sqlite")
    try:
        assert index.job(drive_job).state == "pending"  # type: ignore[union-attr]  # back to the queue
    finally:
        index.close()
