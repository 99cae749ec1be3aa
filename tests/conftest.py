"""Shared fixtures: pydicom's bundled files, generated studies, real DCMTK peers on 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import settings
from pydicom import Dataset
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from node.cli import main

PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}  # DCMTK leaves Nagle on otherwise (BENCHMARKS.md)


def bundled(name: str) -> str:
    """A file bundled with pydicom (never downloaded)."""
    path = get_testdata_file(name, download=False) or next(iter(get_charset_files(name)), None)
    assert path, f"pydicom does not bundle {name}"
    return str(path)


def need(*tools: str) -> None:
    """Fail (not skip) when a peer is missing: scripts/test installs them."""
    missing = [t for t in tools if shutil.which(t) is None]
    assert not missing, f"missing peers {missing}: run scripts/test as root to install them"


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(*args: str) -> Result:
    """Run ``medianode`` in-process and capture what it prints."""
    out, err = io.StringIO(), io.StringIO()
    umask = os.umask(0o077)  # main() sets the node's own; the tests' process keeps its
    try:
        with redirect_stderr(err):
            code = main([str(a) for a in args], out=out)
    finally:
        os.umask(umask)
    return Result(code, out.getvalue(), err.getvalue())


def cli_process(*args: str) -> Result:
    """Run ``medianode`` as a real process (start-up, exit status, stderr as users see it)."""
    p = subprocess.run([sys.executable, "-m", "node", *map(str, args)], capture_output=True, text=True, timeout=300)
    return Result(p.returncode, p.stdout, p.stderr)


def ct_series(
    folder: Path,
    n: int,
    *,
    patient_id: str = "PID1",
    name: str = "DOE^JANE",
    birth: str = "19700101",
    study_uid: str | None = None,
    size: int = 64,
    **attrs: str,
) -> list[Path]:
    """Write ``n`` CT images (signed 16-bit, realistic range) of one series to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    rng = np.random.default_rng(n)
    paths = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, patient_id, birth, "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "101010", "1", "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", "3", str(i + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        ds.PixelData = rng.integers(-1000, 2000, (size, size), dtype=np.int16).tobytes()
        for key, value in attrs.items():
            setattr(ds, key, value)
        path = folder / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# Property tests draw the same examples on every run: the suite must pass twice in a row on a fresh machine.
# HYPOTHESIS_PROFILE=explore draws new ones each run, to look for inputs worth keeping as explicit examples.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

T = TypeVar("T")


def until(condition: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Poll ``condition`` until it is truthy, failing with ``what`` at the deadline (generous: a loaded
    machine is slow, never wrong)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StoreSCP:
    """A DCMTK storescp listening on 127.0.0.1."""

    port: int
    folder: Path
    aet: str = "STORESCP"

    def received(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file())


@pytest.fixture
def storescp(storescp_with: Callable[..., StoreSCP]) -> StoreSCP:
    """A DCMTK storescp accepting every syntax it knows (``+xa``)."""
    return storescp_with("+xa")


def _storescp_has_bind() -> bool:
    help_text = subprocess.run(["storescp", "--help"], capture_output=True, text=True).stdout
    return "--bind-to" in help_text


# -- import destinations -----------------------------------------------------------------


def wait_listening(proc: subprocess.Popen[bytes], port: int, what: str) -> None:
    """Wait until ``proc`` accepts connections on ``port``; fail at once if it exits."""
    def listening() -> bool:
        assert proc.poll() is None, f"{what} exited at start-up"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    until(listening, f"{what} to listen on port {port}")


@pytest.fixture
def storescp_with(tmp_path: Path) -> Iterator[Callable[..., StoreSCP]]:
    """Start more DCMTK storescps with chosen options: ``storescp_with("+xi")`` accepts only
    Implicit VR LE, ``storescp_with()`` (storescp's default ``+x=``) only uncompressed syntaxes;
    ``env`` adds to its environment (``OPENSSL_CONF``)."""
    need("storescp")
    started: list[subprocess.Popen[bytes]] = []

    def start(*options: str, env: dict[str, str] | None = None) -> StoreSCP:
        folder = tmp_path / f"received-{len(started) + 1}"
        folder.mkdir()
        bind = ["--bind-to", "127.0.0.1"] if _storescp_has_bind() else []
        for attempt in range(3):  # another process may take the free port before storescp binds it
            port = free_port()
            proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "-od", str(folder), *options, *bind, str(port)],
                                    env={**PEER_ENV, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started.append(proc)
            try:
                wait_listening(proc, port, "storescp")
            except AssertionError:
                if proc.poll() is None or attempt == 2:
                    raise
                continue
            return StoreSCP(port, folder)
        raise AssertionError("unreachable: the last attempt returns or raises")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class StatusSCP:
    """tests/status_scp.py: a pynetdicom Storage SCP answering configured statuses, in its own process."""

    port: int
    folder: Path
    aet: str = "STATUSSCP"

    def received(self) -> list[Path]:
        return sorted(self.folder.glob("*.dcm"))


@pytest.fixture
def status_scp(tmp_path: Path) -> Iterator[Callable[..., StatusSCP]]:
    """``status_scp(statuses={uid: 0xA700}, abort_once=[uid], abort_always=[uid], garble_once={uid: "pdv"},
    max_pdu=0)`` starts one."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, statuses: dict[str, int] | None = None, abort_once: list[str] | None = None,
              abort_always: list[str] | None = None, garble_once: dict[str, str] | None = None,
              max_pdu: int = 16382) -> StatusSCP:
        folder = tmp_path / f"status-scp-{len(started) + 1}"
        folder.mkdir()
        config = folder.with_suffix(".json")
        config.write_text(json.dumps({"statuses": statuses or {}, "abort_once": abort_once or [],
                                      "abort_always": abort_always or [], "garble_once": garble_once or {},
                                      "max_pdu": max_pdu}))
        port = free_port()
        script = Path(__file__).with_name("status_scp.py")
        proc = subprocess.Popen([sys.executable, str(script), str(port), str(folder), str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        wait_listening(proc, port, "status_scp.py")
        return StatusSCP(port, folder)

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


# -- test certificates ------------------------------------------------------------------------


def openssl(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, cwd=cwd)


def certificate(d: Path, name: str, san: str, *, ca: str = "ca", expired: bool = False) -> None:
    """``name.pem`` and ``name.key`` for ``san``, signed by ``ca``; valid for a day, or expired in 2020."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", d / f"{name}.key",
            "-out", d / f"{name}.csr")
    (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
    if not expired:
        openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / f"{ca}.pem", "-CAkey", d / f"{ca}.key",
                "-CAcreateserial", "-days", "1", "-extfile", d / f"{name}.ext", "-out", d / f"{name}.pem")
        return
    (d / "ca.cnf").write_text("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n"
                              "default_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n")
    (d / "index.txt").write_text("")
    (d / "serial").write_text("01\n")
    openssl("ca", "-batch", "-config", "ca.cnf", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
            "-in", f"{name}.csr", "-out", f"{name}.pem", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key", "-notext",
            "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """Two CAs (``ca``, ``other``); certificates signed by ``ca``: ``server`` and ``client`` for 127.0.0.1,
    ``named`` for localhost, ``expired`` (2020). ``NAME.pem`` and ``NAME.key`` each."""
    need("openssl")
    d = tmp_path / "pki"
    d.mkdir()
    for ca in ("ca", "other"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca} CA",
                "-keyout", d / f"{ca}.key", "-out", d / f"{ca}.pem")
    certificate(d, "server", "IP:127.0.0.1")
    certificate(d, "named", "DNS:localhost")
    certificate(d, "client", "IP:127.0.0.1")
    certificate(d, "expired", "IP:127.0.0.1", expired=True)
    return d


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on the new folder ``where`` for the block (tests run as root, as CI does):
    a disk that fills up."""
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]).returncode:
        pytest.fail("cannot mount a tmpfs: the tests need root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)
