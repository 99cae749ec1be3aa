"""IHE ATNA audit: the node's events reach Debian's rsyslog (UDP, RFC 5426; TLS, RFC 5425), each message
valid against the RELAX NG schema of PS3.15 A.5.1 (``jing``); a collector that is down costs no C-STORE."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from node import audit
from node.config import parse_config
from tests.conftest import StoreSCP, cli, ct_series, free_port, need, pki, until  # noqa: F401 (pki: a fixture)
from tests.test_receive import pki  # noqa: F401  (a fixture: a CA and certificates for 127.0.0.1)
from tests.test_serve import Node, storescu

SCHEMA = Path(__file__).parent / "data" / "dicom-audit-message.rnc"


class Rsyslog:
    """``rsyslogd -n`` on 127.0.0.1, writing each medianode message's RFC 5424 text as one line."""

    def __init__(self, root: Path, protocol: str, pki: Path | None = None) -> None:
        self.root, self.protocol, self.port, self.pki = root, protocol, free_port(), pki
        self.out = root / "received.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        d = self.root
        if self.protocol == "udp":
            inputs = f'module(load="imudp")\ninput(type="imudp" address="127.0.0.1" port="{self.port}")\n'
            tls = ""
        else:
            assert self.pki is not None
            inputs = ('module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")\n'
                      f'input(type="imtcp" address="127.0.0.1" port="{self.port}")\n')
            tls = (f' defaultNetstreamDriver="ossl" defaultNetstreamDriverCAFile="{self.pki}/ca.pem"'
                   f' defaultNetstreamDriverCertFile="{self.pki}/server.pem"'
                   f' defaultNetstreamDriverKeyFile="{self.pki}/server.key"')
        (d / "rsyslog.conf").write_text(
            f'global(workDirectory="{d}" maxMessageSize="256k"{tls})\n' + inputs
            + 'template(name="raw" type="list") { property(name="rawmsg") constant(value="\\n") }\n'
            + f'if $app-name == "medianode" then {{ action(type="omfile" file="{self.out}" template="raw") }}\n')
        self.log = open(d / "rsyslogd.log", "ab")
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(d / "rsyslog.conf"), "-i", str(d / "rsyslogd.pid")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        until(lambda: self.proc is not None and (self.proc.poll() is not None or _listening(self.port, self.protocol)),
              "rsyslogd listening")
        assert self.proc.poll() is None, (d / "rsyslogd.log").read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()

    def messages(self) -> list[str]:
        """The XML of each message received, its RFC 5424 header checked on the way."""
        found = []
        for line in self.out.read_text(encoding="utf-8").splitlines() if self.out.exists() else []:
            pri, ts, host, app, procid, msgid, sd, msg = line.split(" ", 7)
            assert pri in ("<85>1", "<84>1") and app == "medianode" and msgid == "IHE+RFC-3881" and sd == "-", line
            assert msg.startswith("\ufeff<?xml"), line  # RFC 5424 6.4: UTF-8 after its BOM
            found.append(msg[1:])
        return found


def _listening(port: int, protocol: str) -> bool:
    """Whether a socket of 127.0.0.1 is bound to ``port`` (/proc/net: no probe message sent)."""
    table = Path("/proc/net/udp" if protocol == "udp" else "/proc/net/tcp").read_text()
    return f"0100007F:{port:04X}" in table


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Callable[..., Rsyslog]]:
    need("rsyslogd", "jing")
    started: list[Rsyslog] = []

    def start(protocol: str = "udp", pki: Path | None = None) -> Rsyslog:
        root = tmp_path / f"rsyslog-{len(started)}"
        root.mkdir()
        started.append(Rsyslog(root, protocol, pki))
        started[-1].start()
        return started[-1]

    yield start
    for r in started:
        r.stop()


def assert_valid(messages: list[str], folder: Path) -> None:
    """Every message valid against PS3.15 A.5.1's schema (jing exits 0, or names each error)."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i, xml in enumerate(messages):
        paths.append(folder / f"m{i}.xml")
        paths[-1].write_text(xml, encoding="utf-8")
    done = subprocess.run(["jing", "-c", str(SCHEMA), *map(str, paths)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def event_ids(messages: list[str]) -> list[str]:
    return [m.split('<EventID csd-code="', 1)[1].split('"', 1)[0] for m in messages]


def syslog_config(collector: Rsyslog, tls: str = "") -> str:
    return (f"audit: {{syslog: {{host: 127.0.0.1, port: {collector.port}, protocol: {collector.protocol}"
            f"{tls}}}}}\n")


def test_the_nodes_events_reach_rsyslog_as_valid_dicom_audit_messages(
        tmp_path: Path, rsyslog: Callable[..., Rsyslog], storescp: StoreSCP) -> None:
    collector = rsyslog("udp")
    inbox = tmp_path / "inbox"
    node = Node(tmp_path, extra="", imports=(
        f"import: {{inbox: {inbox}, mount_roots: [], settle_seconds: 0.3, poll_seconds: 0.2, "
        f"destination: {{ae_title: {storescp.aet}, host: 127.0.0.1, port: {storescp.port}}}}}\n"
        + syslog_config(collector)))
    node.config.write_text(node.config.read_text().replace("study_stable_seconds: 1.0",
                                                           "study_stable_seconds: 1.0, retention_hours: 0"))
    try:
        node.start()
        assert storescu(node, ct_series(tmp_path / "ct", 2)).returncode == 0
        node.wait_for(lambda: len(node.images()) == 1)
        refused = subprocess.run(["echoscu", "-aet", "CT1", "-aec", "NOBODY", "127.0.0.1", str(node.port)],
                                 capture_output=True)
        assert refused.returncode != 0
        assert node.proc is not None
        os.kill(node.proc.pid, signal.SIGHUP)
        node.wait_for(lambda: "configuration reloaded" in node.logs())
        inbox.mkdir(exist_ok=True)
        shutil.copy(node.images()[0], inbox / "disc.iso")
        node.wait_for(lambda: (inbox / "done" / "disc.iso").exists())
        assert node.stop() == 0
        node.start()  # the first housekeeping deletes the burned study (retention 0)
        node.wait_for(lambda: "spool: " in node.logs())
        assert cli("audit", "--config", node.config).code == 0
    finally:
        node.stop()
    expected = {"110100": 4, "110104": 2, "110106": 1, "110107": 1, "110102": 1, "110105": 1, "110113": 2,
                "110101": 1}
    messages = until(lambda: (m := collector.messages()) and all(event_ids(m).count(k) >= n
                                                                 for k, n in expected.items()) and m,
                     "every audit message at rsyslog")
    assert_valid(messages, tmp_path / "xml")
    received = next(m for m in messages if '"110104"' in m and 'originalText="Source Role ID"' in m
                    and "AETITLES=CT1" in m)
    assert 'NumberOfInstances="2"' in received and "DOE^JANE" in received and 'NetworkAccessPointID="127.0.0.1"' in received
    events = [json.loads(line)["event"] for line in (node.data / "audit.jsonl").read_text().splitlines()]
    assert {"instances-received", "study-received", "volume-burned", "association-refused", "config-reloaded",
            "import-started", "import-done", "study-deleted", "node-started", "node-stopped",
            "audit-log-read"} <= set(events)  # the JSON lines stay


def test_tls_to_rsyslog_and_a_reconnect_after_the_collector_restarts(
        tmp_path: Path, rsyslog: Callable[..., Rsyslog], pki: Path) -> None:  # noqa: F811
    collector = rsyslog("tls", pki)
    node = Node(tmp_path, imports=syslog_config(collector, f", tls: {{ca: {pki}/ca.pem}}"))

    def refuse() -> None:
        assert subprocess.run(["echoscu", "-aet", "CT1", "-aec", "NOBODY", "127.0.0.1", str(node.port)],
                              capture_output=True).returncode != 0
    try:
        node.start()
        refuse()
        until(lambda: event_ids(collector.messages()).count("110113") == 1, "the alert over TLS")
        collector.stop()
        collector.start()  # the same port: the node's connection is closed, and opened again
        refuse()
        refuse()  # the first may be lost to the closed connection (RFC 5425 has no acknowledgement)
        until(lambda: event_ids(collector.messages()).count("110113") >= 2, "an alert after the restart")
    finally:
        node.stop()
    assert_valid(collector.messages(), tmp_path / "xml")


def test_a_collector_that_never_answers_costs_no_c_store(tmp_path: Path, pki: Path) -> None:
    """A TCP port that accepts and never speaks TLS: the worst collector. Every C-STORE is answered, the
    node runs on, the lost messages are logged."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    ca = pki / "ca.pem"
    node = Node(tmp_path, imports=(f"audit: {{syslog: {{host: 127.0.0.1, port: {silent.getsockname()[1]}, "
                                   f"protocol: tls, tls: {{ca: {ca}}}}}}}\n"))
    try:
        node.start()
        files = ct_series(tmp_path / "ct", 3)
        for f in files:
            sent = storescu(node, [f])
            assert sent.returncode == 0, sent.stderr
        until(lambda: len(list((node.data / "spool").rglob("*.dcm"))) == 3, "three instances stored")
        node.wait_for(lambda: "audit: a message to tls://127.0.0.1" in node.logs())
        assert node.proc is not None and node.proc.poll() is None
    finally:
        assert node.stop() == 0
        silent.close()


def test_every_mapping_makes_a_valid_message_whatever_the_refusal_reason(tmp_path: Path) -> None:
    """Each event's messages, with the fields its site writes, and a refusal reason no table lists."""
    need("jing")
    config = parse_config("node: {ae_title: NODE}\naudit: {syslog: {host: 127.0.0.1}}", source="x.yaml")
    study = {"study_uid": "1.2.3", "patient_id": "P1", "patient_name": "DOE^JANE", "sop_classes": {"1.2.840.1": 2}}
    samples = {
        "node-started": {}, "node-stopped": {},
        "instances-received": {"calling_aet": "CT1", "called_aet": "BURN", "peer": "10.0.0.7:4000", "studies": [study]},
        "import-started": {"medium": "/inbox/a.iso", "destination": "PACS@10.0.0.9:104", "kind": "inbox"},
        "import-done": {"medium": "/dev/sr0", "destination": "PACS@pacs:104", "kind": "drive", "sent": 2,
                        "failed": 0, "studies": [study]},
        "import-failed": {"medium": "/media/usb", "destination": None, "kind": "mount", "sent": 0, "failed": 0,
                          "reason": "unreadable", "studies": []},
        "volume-burned": {"label": "MN0001", "profile": "STD-GEN-USB-JPEG", "paths": ["/out/MN0001"],
                          "patients": [["1.2.3", "P1", "DOE^JANE"]]},
        "study-deleted": study,
        "association-refused": {"calling_aet": "CT1", "called_aet": "NODE", "peer": "[::1]:5000",
                                "reason": "calling AE title CT1 from a wrong address <10.9.9.9>"},
        "config-reloaded": {"source": "/etc/medianode.yaml", "ok": False, "reason": "x.yaml:3 node.port: bad"},
        "audit-log-read": {"path": "/var/lib/medianode/audit.jsonl"},
        "user-signed-in": {"user": "ann", "role": "clerk", "address": "10.0.0.8"},
        "user-sign-in-failed": {"user": "<bob>", "reason": "wrong name or password", "address": "::1"},
        "user-signed-out": {"user": "ann", "address": None},
        "patient-search": {"user": "ann", "address": "10.0.0.8", "patient_name": "doe^j&ne"},
        "query": {"source": "worklist", "ok": True, "where": "WL@10.0.0.8:104", "model": "MWL",
                  "keys": {"PatientBirthDate": "19700101"}, "answers": 1},
    }
    assert set(samples) == set(audit.MESSAGES)
    messages = [audit.atna.message(e, when="2026-01-02T03:04:05.123+01:00", source_id="NODE").decode()
                for name, fields in samples.items() for e in audit.MESSAGES[name](config, fields)]
    assert_valid(messages, tmp_path / "xml")
    assert "wrong address &lt;10.9.9.9&gt;" in next(m for m in messages if '"110126"' in m)
    failed = next(m for m in messages if '"110114"' in m and 'EventOutcomeIndicator="4"' in m)
    assert 'UserID="&lt;bob&gt;"' in failed and "wrong name or password" in failed and '"110122"' in failed
    assert 'ParticipantObjectID="/volumes?patient_name=doe^j&amp;ne"' in next(m for m in messages if '"110112"' in m)


@pytest.mark.parametrize(("audit_section", "error"), [
    ("{syslog: {host: h, protocol: tls}}", "x.yaml:1 audit.syslog.protocol: tls needs audit.syslog.tls"),
    ("{syslog: {host: h, protocol: udp, tls: {ca: CA}}}", "x.yaml:1 audit.syslog.tls: is used only with"),
    ("{syslog: {host: h, protocol: tls, tls: {ca: x.yaml}}}", "x.yaml:1 audit.syslog.tls.ca: is not a PEM CA certificate"),
    ("{syslog: {host: h, protocol: tcp}}", "x.yaml:1 audit.syslog.protocol: 'tcp' is not one of udp, tls"),
    ("{syslog: {port: 514}}", "x.yaml:1 audit.syslog.host: required key is missing"),
])
def test_audit_syslog_errors_name_the_line_and_key(tmp_path: Path, audit_section: str, error: str, pki: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text(f"audit: {audit_section.replace('CA', str(pki / 'ca.pem'))}\n")
    checked = cli("config", "check", "x.yaml")
    assert checked.code == 2 and error in checked.err, checked.err
