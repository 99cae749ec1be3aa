"""``node.allowed_peers`` against a running ``medianode serve``: DCMTK's echoscu and storescu call from
127.0.0.1, under AE titles the node takes from that address, from other addresses only, or from anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import PEER_ENV, ct_series, need
from tests.test_serve import Node, index_rows, storescu

#: CT1 may call from 127.0.0.1; CT9 only from 127.0.0.2 and CT6 only from an IPv6 network, so 127.0.0.1 is
#: a wrong address for both; ANY1 from anywhere; every other title is refused.
PEERS = ", allowed_calling_aets: [ANY1], allowed_peers: {CT1: 127.0.0.1, CT9: 127.0.0.2/32, CT6: '2001:db8::/32'}"


def echo(node: Node, calling: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-aet", calling, "-aec", "MEDIANODE", "127.0.0.1", str(node.port)],
                          capture_output=True, text=True, env=PEER_ENV, timeout=120)


def refusals(node: Node) -> list[dict[str, str]]:
    audit = node.data / "audit.jsonl"
    lines = audit.read_text().splitlines() if audit.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == "association-refused"]


def test_a_title_is_taken_only_from_its_addresses(tmp_path: Path) -> None:
    need("echoscu", "storescu")
    node = Node(tmp_path, extra=PEERS)
    node.start()  # echoscu as CT1 from 127.0.0.1: accepted
    try:
        good = ct_series(tmp_path / "good", 2)
        assert storescu(node, good, called="MEDIANODE", calling="CT1").returncode == 0
        assert echo(node, "ANY1").returncode == 0

        sent = ct_series(tmp_path / "refused", 2)
        wrong = storescu(node, sent, called="MEDIANODE", calling="CT9")
        assert wrong.returncode != 0 and "Calling AE Title Not Recognized" in wrong.stderr, wrong.stderr
        v6 = echo(node, "CT6")
        assert v6.returncode != 0 and "Calling AE Title Not Recognized" in v6.stderr, v6.stderr
        stranger = echo(node, "INTRUDER")
        assert stranger.returncode != 0 and "Calling AE Title Not Recognized" in stranger.stderr, stranger.stderr

        seen = refusals(node)
        assert [(e["calling_aet"], e["reason"]) for e in seen] == [
            ("CT9", "wrong address: CT9 may call only from 127.0.0.2/32 (node.allowed_peers)"),
            ("CT6", "wrong address: CT6 may call only from 2001:db8::/32 (node.allowed_peers)"),
            ("INTRUDER", "calling AE title not recognised"),
        ]
        assert all(e["peer"].startswith("127.0.0.1:") and e["called_aet"] == "MEDIANODE" for e in seen)
        for e in seen:
            line = f"Refused association from {e['calling_aet']} ({e['peer']}) to MEDIANODE: {e['reason']}"
            assert node.logs().count(line) == 1, node.logs()

        stored = index_rows(node, "SELECT calling_aet, COUNT(*) FROM instances GROUP BY calling_aet")
        assert stored == [("CT1", 2)]
        assert len(list((node.data / "spool").rglob("*.dcm"))) == 2
    finally:
        assert node.stop() == 0


def test_sighup_moves_a_title_to_its_new_address(tmp_path: Path) -> None:
    need("echoscu")
    node = Node(tmp_path, extra=PEERS)
    node.start()
    try:
        assert echo(node, "CT9").returncode != 0
        assert node.proc is not None
        node.config.write_text(node.config.read_text().replace("CT9: 127.0.0.2/32", "CT9: 127.0.0.0/8"))
        os.kill(node.proc.pid, signal.SIGHUP)
        node.wait_for(lambda: "configuration reloaded" in node.logs())
        deadline = time.monotonic() + 60
        while (moved := echo(node, "CT9")).returncode:  # each receiver process reloads on its own signal
            assert time.monotonic() < deadline, moved.stderr
            time.sleep(0.2)
    finally:
        assert node.stop() == 0
