"""scripts/bench soak: kill -9 mid-send and restart, N cycles; nothing acknowledged may be missing.

Each cycle sends a new study (small CT images) with DCMTK storescu to a `medianode serve` burning to a
folder of ISO images, kills the service and its receivers with SIGKILL once about a third of the study
is in the spool, restarts it and sends the whole study again (a sender's retry: the instances the node
already holds are the same instance again). The cycle ends with the volume holding the whole study; its
image is read back (node.read) and every instance storescu saw acknowledged before the kill must be on
it. After the node's last stop it counts what it left in data_dir/tmp and in the output folder, and how
many volumes were burned (one per study when a recovered study waits for its sender to resume).
Everything goes to 127.0.0.1; each cycle has deadlines, and the node is stopped by PID at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TextIO, TypeVar

from benchkit.common import MEDIANODE, NODELAY, Failed, Json, bench, env_with, log
from benchkit.procs import HOST, Server, free_port

STABLE_S = 2.0  # burn.study_stable_seconds of the node under test
CYCLE_TIMEOUT_S = 300.0
T = TypeVar("T")


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cycles", type=int, default=20, help="kill -9 and restart cycles (default: %(default)s)")
    p.add_argument("--instances", type=int, default=150, help="instances per study (default: %(default)s)")


def write_study(folder: Path, n: int, cycle: int) -> list[Path]:
    """n small CT images (64x64) of a new study."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(cycle)
    paths = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"SOAK^{cycle:03d}", f"SOAK{cycle}", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.StudyID, ds.AccessionNumber = study, series, "1", ""
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20260101", "101010", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", "1", str(i + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.PixelData = rng.integers(0, 4096, (64, 64), dtype=np.uint16).tobytes()
        path = folder / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(port: int, files: list[Path]) -> subprocess.Popen[str]:
    return subprocess.Popen(["storescu", "-v", "-aet", "SOAK", "-aec", "BURN", HOST, str(port), *map(str, files)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env_with(NODELAY))


def acknowledged(output: str, uids: dict[str, str]) -> set[str]:
    """SOP Instance UIDs storescu saw answered with Success (its -v log names each file, then its response)."""
    done, current = set(), None
    for line in output.splitlines():
        if "Sending file:" in line:
            current = uids.get(line.split("Sending file:", 1)[1].strip())
        elif "Received Store Response (Success)" in line and current is not None:
            done.add(current)
            current = None
    return done


def until(what: str, deadline: float, server: Server, check: Callable[[], T | None]) -> T:
    """Poll ``check`` until it is truthy; fail when the node exits or at ``deadline``."""
    while not (value := check()):
        if server.proc is None or server.proc.poll() is not None:
            raise Failed(f"the node exited while waiting for {what}: {server.output()}")
        if time.monotonic() > deadline:
            raise Failed(f"timed out waiting for {what}: {server.output()}")
        time.sleep(0.1)
    return value


def volume_holding(index: Path, sop_uids: set[str]) -> list[str] | None:
    """The image paths of a volume whose job took every one of ``sop_uids``."""
    with closing(sqlite3.connect(index, timeout=60)) as db:
        for job, paths in db.execute("SELECT job_id, paths FROM volumes ORDER BY created DESC").fetchall():
            taken = {u for (u,) in db.execute("SELECT sop_instance_uid FROM job_files WHERE job_id = ?", (job,))}
            if sop_uids <= taken:
                return list(json.loads(paths))
    return None


def on_volume(image: Path) -> set[str]:
    """The SOP Instance UIDs of the files on a burned image, read back without mounting it."""
    from pydicom import dcmread

    from node.read.medium import open_medium

    found = set()
    with open_medium(image) as medium:
        for rel in medium.files():
            if rel.upper().startswith("DICOM/"):
                with medium.open(rel) as fp:
                    found.add(str(dcmread(fp, stop_before_pixels=True).SOPInstanceUID))
    return found


def one_cycle(server: Server, home: Path, cycle: int, n: int) -> Json:
    from pydicom import dcmread

    started = time.monotonic()
    deadline = started + CYCLE_TIMEOUT_S
    files = write_study(home / "studies" / f"{cycle:03d}", n, cycle)

    uids = {str(f): str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    spool = home / "var" / "spool" / study
    sender = send(server.port, files)
    until("a third of the study in the spool", deadline, server,
          lambda: sender.poll() is not None or (spool.is_dir() and sum(1 for _ in spool.iterdir()) >= n // 3))
    assert server.proc is not None
    os.killpg(server.proc.pid, signal.SIGKILL)  # the service and every receiver, mid-send
    server.proc.wait()
    server.proc = None
    output, _ = sender.communicate(timeout=60)
    acked = acknowledged(output, uids)
    server.start()
    resent = send(server.port, files)
    if resent.wait(timeout=max(1.0, deadline - time.monotonic())) != 0:
        raise Failed(f"storescu after the restart exited {resent.returncode}: {resent.communicate()[0][-2000:]}")
    paths = until("the volume holding the whole study", deadline, server,
                  lambda: volume_holding(home / "var" / "index.sqlite", set(uids.values())))
    burned = on_volume(Path(paths[0]))
    return {"acknowledged_before_kill": len(acked), "missing": len(acked - burned),
            "incomplete": len(set(uids.values()) - burned), "seconds": round(time.monotonic() - started, 2)}


def leftovers(home: Path) -> tuple[int, int, int]:
    """(temp files in data_dir/tmp, partial files in the output folder, volumes burned)."""
    tmp = home / "var" / "tmp"
    out = home / "out"
    with closing(sqlite3.connect(home / "var" / "index.sqlite")) as db:
        volumes = int(db.execute("SELECT COUNT(*) FROM volumes").fetchone()[0])
    return (sum(1 for _ in tmp.iterdir()) if tmp.is_dir() else 0,
            sum(1 for p in out.iterdir() if p.name.startswith(".")) if out.is_dir() else 0, volumes)


def print_table(res: Json, out: TextIO) -> None:
    c = res["cycles"]
    print(f"\nsoak: {len(c)} cycles of kill -9 mid-send and restart, {res['instances']} instances a study, "
          f"study_stable_seconds {STABLE_S}", file=out)
    print(f"  acknowledged before the kill: {sum(x['acknowledged_before_kill'] for x in c)}; missing from the "
          f"final volumes: {res['missing']} (must be 0); studies not complete on their volume: {res['incomplete']}",
          file=out)
    print(f"  volumes burned: {res['volumes']} for {len(c)} studies; leftover temp files: {res['temp_files']}; "
          f"partial output files: {res['partial_outputs']}", file=out)
    if c:
        print(f"  cycle time: median {statistics.median(x['seconds'] for x in c):.1f} s, "
              f"max {max(x['seconds'] for x in c):.1f} s", file=out)


@bench("soak", "kill -9 mid-send and restart, N cycles: acknowledged instances missing from the final volumes",
       add_args, runs=1)
def run_soak(args: argparse.Namespace) -> Json:
    if args.cycles < 1 or args.instances < 3:
        raise Failed("--cycles must be at least 1 and --instances at least 3")
    home = args.data / "out" / "soak"
    shutil.rmtree(home, ignore_errors=True)
    port = free_port()
    config = {  # JSON is YAML
        "node": {"ae_title": "MEDIANODE", "host": HOST, "port": port, "data_dir": str(home / "var"),
                 "workers": 2, "min_free_mb": 0},
        "burn": {"output": str(home / "out"), "study_stable_seconds": STABLE_S},
        "routes": [{"match": {"called_aet": "BURN"}, "action": "burn", "profile": "STD-GEN-CD"}],
        "console": {"enabled": False},
    }
    home.mkdir(parents=True)
    (home / "medianode.yaml").write_text(json.dumps(config, indent=2) + "\n")
    server = Server("medianode serve", [MEDIANODE, "serve", "--config", home / "medianode.yaml"],
                    aet="MEDIANODE", port=port, log=home / "serve.log", grace=120.0)
    cycles: list[Json] = []
    with server:
        for cycle in range(args.cycles):
            result = one_cycle(server, home, cycle, args.instances)
            cycles.append(result)
            log(f"  cycle {cycle + 1}/{args.cycles}: {result['acknowledged_before_kill']} acknowledged before the "
                f"kill, {result['missing']} missing, {result['incomplete']} not on the volume, {result['seconds']} s")
    temp_files, partial, volumes = leftovers(home)
    res: Json = {"instances": args.instances, "cycles": cycles, "missing": sum(c["missing"] for c in cycles),
                 "incomplete": sum(c["incomplete"] for c in cycles), "temp_files": temp_files,
                 "partial_outputs": partial, "volumes": volumes}
    print_table(res, sys.stderr if args.json else sys.stdout)
    if res["missing"] or res["incomplete"] or temp_files:
        raise Failed(f"{res['missing']} acknowledged instance(s) missing, {res['incomplete']} not on their volume, "
                     f"{temp_files} temp file(s) left")
    return res
