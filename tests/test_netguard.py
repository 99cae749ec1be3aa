"""``medianode serve`` treated as a port scanner and a careless peer would treat it (README "Security").

Each attack runs against the real node on loopback, with DCMTK ``echoscu`` / ``storescu`` as the real
peer (from 127.0.0.1) and the attackers on other loopback addresses (127.0.0.2 and up), so that the
per-address cap is what each test chooses it to be. Deadlines are shortened in the node's
configuration, so that every test takes seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from node import netcompat
from tests.conftest import PEER_ENV, cli, ct_series, need, until
from tests.test_serve import Node

CT = "1.2.840.10008.5.1.4.1.1.2"
DEADLINES = ", artim_seconds: 2, pdu_seconds: 2, idle_seconds: 3, max_connections_per_address: 8"
MIB = 1 << 20


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    need("echoscu", "storescu")
    n = Node(tmp_path, extra=DEADLINES)
    n.start()
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.stop()


@pytest.fixture
def patient_node(tmp_path: Path) -> Iterator[Node]:
    """A node with the default deadlines (ARTIM 30 s): idle connections stay for the whole test."""
    need("echoscu", "storescu")
    n = Node(tmp_path, extra=", max_connections_per_address: 8")
    n.start()
    yield n
    if n.proc is not None and n.proc.poll() is None:
        n.stop()


def echo(node: Node) -> bool:
    return subprocess.run(["echoscu", "-to", "5", "-ta", "5", "-td", "5", "-aet", "CT1", "-aec", "MEDIANODE",
                           "127.0.0.1", str(node.port)], capture_output=True, env=PEER_ENV, timeout=30).returncode == 0


def store(node: Node, tmp_path: Path) -> bool:
    files = ct_series(tmp_path / f"ct{time.monotonic_ns()}", 2)
    return subprocess.run(["storescu", "-to", "5", "-ta", "5", "-td", "5", "-aec", "MEDIANODE", "-aet", "CT1",
                           "127.0.0.1", str(node.port), *map(str, files)],
                          capture_output=True, env=PEER_ENV, timeout=60).returncode == 0


def served_within_5_s(node: Node) -> bool:
    """A C-ECHO answered: echoscu's own timeouts (-to 5 -ta 5 -td 5) bound it to the 5 s asked."""
    return echo(node)


def peers_served(node: Node, tmp_path: Path) -> None:
    """A real peer served: DCMTK's echoscu within 5 s, then storescu storing two instances."""
    assert served_within_5_s(node), "echoscu was not answered within 5 s"
    assert store(node, tmp_path), "storescu failed"


class During:
    """Runs an attack in a thread for the ``with`` block, so that peers are tried while it lasts;
    the attack's own failure is raised on leaving."""

    def __init__(self, attack: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(attack,), daemon=True)

    def _run(self, attack: Callable[[], object]) -> None:
        try:
            self.result = attack()
        except BaseException as exc:  # re-raised in the test's thread
            self.error = exc

    def __enter__(self) -> During:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the attack did not end"
        if self.error is not None:
            raise self.error


_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_attackers() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def attacker(node: Node, host: str = "127.0.0.2") -> socket.socket:
    sock = socket.socket()
    _opened.append(sock)
    sock.bind((host, 0))
    sock.connect(("127.0.0.1", node.port))
    return sock


def closed(sock: socket.socket, within: float) -> bytes | None:
    """What the node sent before closing ``sock`` within ``within`` seconds; None if it stayed open."""
    received = b""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 0.2))
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    return None


def group_rss(node: Node) -> int:
    """Resident bytes of serve's process group (the service and its receivers), from /proc."""
    assert node.proc is not None
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != node.proc.pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


class PeakRSS:
    """The largest :func:`group_rss` seen while the ``with`` block runs."""

    def __init__(self, node: Node) -> None:
        self.node, self.peak, self.start = node, 0, group_rss(node)
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, group_rss(self.node))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def threads_of_group(node: Node) -> int:
    assert node.proc is not None
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == node.proc.pid:
                    count += len(list((entry / "task").iterdir()))
            except (OSError, IndexError, ValueError):
                continue
    return count


def associated(node: Node, max_pdu: int = 0) -> object:
    ae = AE("CT1")
    ae.add_requested_context(CT, "1.2.840.10008.1.2.1")
    ae.maximum_pdu_size = max_pdu
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDIANODE")
    assert assoc.is_established
    return assoc


# -- the table's rows ----------------------------------------------------------------------


def test_an_a_associate_rq_trickled_byte_by_byte_is_cut_at_artim(node: Node, tmp_path: Path) -> None:
    sock = attacker(node)
    request = b"\x01\x00" + struct.pack(">L", 200) + bytes(200)

    def trickle() -> bool:
        try:
            for sent in range(30):  # 30 bytes at one every 0.5 s: 15 s, far past ARTIM (2 s), far short of 200
                sock.send(request[sent:sent + 1])
                if closed(sock, 0.5) is not None:
                    return True
        except (BrokenPipeError, ConnectionResetError):
            return True
        return False

    with During(trickle) as attack:
        peers_served(node, tmp_path)
    assert attack.result, "the trickle was never cut (node.artim_seconds 2)"
    peers_served(node, tmp_path)
    assert "no whole A-ASSOCIATE-RQ within 2 s" in node.logs()
    assert "127.0.0.2:" in node.logs()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pynetdicom drops the aborted socket
def test_a_pdu_trickled_after_association_is_cut_at_its_deadline(node: Node, tmp_path: Path) -> None:
    assoc = associated(node)
    raw = netcompat.raw_socket(assoc)  # type: ignore[arg-type]
    assert raw is not None
    _opened.append(raw)  # pynetdicom leaves an aborted requestor's socket for the garbage collector

    def trickle() -> None:
        raw.send(b"\x04\x00" + struct.pack(">L", 1000))  # a P-DATA-TF header, then a byte a second
        try:
            for _ in range(10):
                raw.send(b"\x00")
                if not assoc.is_established:  # type: ignore[attr-defined]
                    return
                time.sleep(1)  # the trickle's pace, not a wait for the node
        except OSError:
            return

    with During(trickle):
        peers_served(node, tmp_path)
    until(lambda: not assoc.is_established, "the association to be aborted", timeout=10)  # type: ignore[attr-defined]
    assert assoc.is_aborted  # type: ignore[attr-defined]
    assert "PDU not whole within 2 s" in node.logs()
    peers_served(node, tmp_path)


def test_an_idle_association_is_released_and_its_peer_named(node: Node, tmp_path: Path) -> None:
    assoc = associated(node)
    port = assoc.requestor.port  # type: ignore[attr-defined]
    until(lambda: not assoc.is_established, "the idle association to be ended (idle_seconds 3)",  # type: ignore[attr-defined]
          timeout=30)
    until(lambda: f"Connection from 127.0.0.1:{port} refused or aborted: idle for 3 s, released" in node.logs(),
          "the idle line naming the peer")
    assert "Network timeout reached" not in node.logs()
    peers_served(node, tmp_path)


def test_a_huge_a_associate_rq_is_aborted_unread(node: Node, tmp_path: Path) -> None:
    sock = attacker(node)

    def flood() -> bytes | None:
        sock.send(b"\x01\x00" + struct.pack(">L", 2**32 - 1))
        chunk = os.urandom(MIB)
        try:
            for _ in range(250):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return closed(sock, 1.0)

    with PeakRSS(node) as rss, During(flood) as attack:
        peers_served(node, tmp_path)
    answer = attack.result
    assert isinstance(answer, bytes) and answer.startswith(netcompat.a_abort(netcompat.INVALID_PARAMETER))
    assert rss.growth < 64 * MIB
    peers_served(node, tmp_path)
    assert "A-ASSOCIATE-RQ declaring 4294967295 bytes" in node.logs()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_huge_p_data_tf_is_aborted_unread(node: Node, tmp_path: Path) -> None:
    assoc = associated(node)
    raw = netcompat.raw_socket(assoc)  # type: ignore[arg-type]
    assert raw is not None
    _opened.append(raw)

    def flood() -> None:
        raw.send(b"\x04\x00" + struct.pack(">L", 2**31))
        chunk = bytes(MIB)
        try:
            for _ in range(300):
                raw.sendall(chunk)
        except OSError:
            pass

    with PeakRSS(node) as rss, During(flood):
        peers_served(node, tmp_path)
        until(lambda: not assoc.is_established, "the association to be aborted", timeout=10)  # type: ignore[attr-defined]
    assert rss.growth < 64 * MIB
    assert "PDU type 0x04 of 2147483648 bytes" in node.logs()
    peers_served(node, tmp_path)


def test_idle_connections_cost_no_thread_and_lock_no_one_out(patient_node: Node, tmp_path: Path) -> None:
    node = patient_node
    before = threads_of_group(node)
    socks = [attacker(node, f"127.0.1.{1 + i // 6}") for i in range(300)]  # 6 per address, under the cap
    try:
        peers_served(node, tmp_path)
        assert threads_of_group(node) < before + 10
        assert all(closed(s, 0.01) is None for s in socks)  # all still waiting, none refused
    finally:
        for s in socks:
            s.close()
    peers_served(node, tmp_path)


def test_an_address_holds_at_most_max_connections_per_address(node: Node, tmp_path: Path) -> None:
    socks = [attacker(node, "127.0.0.3") for _ in range(12)]
    try:
        def refused() -> list[socket.socket] | None:  # once the 4 past the cap are closed, not before
            found = [s for s in socks if closed(s, 0.05) is not None]
            return found if len(found) >= 4 else None

        assert len(until(refused, "connections past the cap refused", timeout=10)) == 4
        peers_served(node, tmp_path)
        assert "(node.max_connections_per_address 8)" in node.logs()
    finally:
        for s in socks:
            s.close()
    peers_served(node, tmp_path)


def test_garbage_is_answered_within_a_second_and_the_node_serves_throughout(node: Node, tmp_path: Path) -> None:
    def garbage() -> int:
        answered_late = 0
        for batch in range(20):  # 1000 connections, 50 at a time, from 50 addresses
            socks = [attacker(node, f"127.0.2.{1 + i}") for i in range(50)]
            for s in socks:
                s.send(os.urandom(1024 + batch * 50))
            answered_late += sum(1 for s in socks if closed(s, 1.0) is None)
            for s in socks:
                s.close()
        return answered_late

    with During(garbage) as attack:
        while attack.thread.is_alive():
            peers_served(node, tmp_path)
    assert isinstance(attack.result, int)
    assert attack.result <= 2  # a random first byte 0x01 with a small random length waits for ARTIM
    peers_served(node, tmp_path)


def test_a_200_mb_instance_from_pynetdicom_costs_little_memory(node: Node, tmp_path: Path) -> None:
    files = ct_series(tmp_path / "big", 1, size=10240)  # 10240 x 10240 x 2 bytes: 200 MiB of Pixel Data
    assoc = associated(node)
    with PeakRSS(node) as rss, During(lambda: assoc.send_c_store(files[0])) as big:  # type: ignore[attr-defined]
        peers_served(node, tmp_path)
    assoc.release()  # type: ignore[attr-defined]
    assert int(big.result.Status) == 0  # type: ignore[attr-defined]
    assert rss.growth < 64 * MIB, f"+{rss.growth >> 20} MiB"
    peers_served(node, tmp_path)


# -- supervision ---------------------------------------------------------------------------


def receiver_pids(node: Node) -> list[int]:
    assert node.proc is not None
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(node.proc.pid), "-f", "medianode-receiver-"],
                                           capture_output=True, text=True).stdout.split()]


def test_a_killed_receiver_is_logged_and_restarted(node: Node, tmp_path: Path) -> None:
    until(lambda: "serving MEDIANODE" in node.logs(), "both receivers started")
    first = receiver_pids(node)
    assert len(first) == 2
    for pid in first:
        os.kill(pid, 9)  # as the out-of-memory killer would
    until(lambda: len(set(receiver_pids(node)) - set(first)) == 2 or None, "both receivers restarted", timeout=60)
    assert node.logs().count("died (killed by signal 9 (SIGKILL)); restarting it") == 2
    until(lambda: served_within_5_s(node), "a real peer served again", timeout=30)
    assert store(node, tmp_path)


def serving(node: Node) -> dict[str, object]:
    return dict(json.loads(cli("status", "--config", node.config, "--json").out)["serving"])


def test_status_says_when_no_receiver_listens(node: Node) -> None:
    assert node.proc is not None
    until(lambda: serving(node)["listening"] == 2, "status to see both receivers")
    assert serving(node)["pid"] == node.proc.pid
    first = receiver_pids(node)
    os.kill(node.proc.pid, signal.SIGSTOP)  # serve cannot restart them while it is stopped
    try:
        for pid in first:
            os.kill(pid, 9)
        until(lambda: serving(node)["listening"] == 0, "status to see no receiver")
        text = cli("status", "--config", node.config).out
        assert f"serving: no receiver listens on 127.0.0.1:{node.port} (serve {node.proc.pid} has 0 of 2" in text
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    until(lambda: serving(node)["listening"] == 2, "status to see both receivers again", timeout=60)
    assert not set(receiver_pids(node)) & set(first)
    assert node.stop() == 0
    assert serving(node)["pid"] is None
    assert "medianode serve is not running" in cli("status", "--config", node.config).out


def test_receivers_that_keep_dying_stop_serve_non_zero(node: Node) -> None:
    assert node.proc is not None
    killed: set[int] = set()

    def kill_new_receivers_until_serve_exits() -> bool:
        for pid in set(receiver_pids(node)) - killed:
            os.kill(pid, 9)
            killed.add(pid)
        return node.proc is not None and node.proc.poll() is not None

    until(kill_new_receivers_until_serve_exits, "serve to give up on its receivers", timeout=120)
    assert node.stop() != 0
    last = node.logs().strip().splitlines()[-1]  # killed in its restart, or too often: either way, said why
    assert last.startswith("medianode serve: receiver"), last
