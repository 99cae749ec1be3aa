"""TLS where the node connects: imports into DCMTK ``storescp +tls`` on 127.0.0.1 (PS3.15 B.9, BCP 195).

The certificates are made with the ``openssl`` command in each test's tmp_path: a CA, a server
certificate for 127.0.0.1, one for ``localhost``, a client certificate, an expired server
certificate (``openssl ca`` with dates in the past) and a second, unrelated CA. A refused
connection must name the destination and the reason, send nothing and mark nothing imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from node.config import ClientTLS, parse_config
from node.errors import ConfigError
from node.intake import medium_identity
from node.read.importer import import_medium
from tests.conftest import StoreSCP, cli, openssl, pki, until  # noqa: F401 (pki: a fixture)
from tests.test_import import received
from tests.test_watcher import burned, make_config, watching


@pytest.fixture
def tls_storescp(storescp_with: Callable[..., StoreSCP], pki: Path) -> Callable[..., StoreSCP]:
    """storescp +tls with ``server`` (or another) certificate, requiring a client certificate from our CA."""
    def start(server: str = "server", *options: str, env: dict[str, str] | None = None) -> StoreSCP:
        return storescp_with("+tls", str(pki / f"{server}.key"), str(pki / f"{server}.pem"), "+cf", str(pki / "ca.pem"),
                             *options, env=env)

    return start


def ours(pki: Path, ca: str = "ca", *, with_certificate: bool = True) -> ClientTLS:
    return ClientTLS(pki / f"{ca}.pem", pki / "client.pem" if with_certificate else None,
                     pki / "client.key" if with_certificate else None)


def refused(report_reason: str, scp: StoreSCP, host: str = "127.0.0.1") -> str:
    """The reason after "TLS with DEST refused: ", checked to name the destination."""
    prefix = f"not sent: TLS with {scp.aet}@{host}:{scp.port} refused: "
    assert report_reason.startswith(prefix), report_reason
    return report_reason.removeprefix(prefix)


# -- an import over TLS --------------------------------------------------------------------------


def test_an_import_over_tls_arrives_whole(tmp_path: Path, pki: Path, tls_storescp: Callable[..., StoreSCP]) -> None:
    folder, uids = burned(tmp_path, "tls", 3, fmt="folder")
    scp = tls_storescp()
    report = import_medium(folder, destination=(scp.aet, "127.0.0.1", scp.port), tls=ours(pki))
    assert (report.ok, report.sent, report.failed) == (True, 3, 0)
    assert set(received(scp.folder)) == uids


def test_a_name_is_checked_against_the_certificate(tmp_path: Path, pki: Path,
                                                    tls_storescp: Callable[..., StoreSCP]) -> None:
    """Configured by name, the destination must be the one its certificate names; by address, the chain suffices."""
    folder, uids = burned(tmp_path, "named", 2, fmt="folder")
    by_address = tls_storescp("named")  # its certificate names localhost, not 127.0.0.1
    report = import_medium(folder, destination=(by_address.aet, "127.0.0.1", by_address.port), tls=ours(pki))
    assert report.ok and set(received(by_address.folder)) == uids

    wrong_name = tls_storescp("server")  # names 127.0.0.1 only
    report = import_medium(folder, destination=(wrong_name.aet, "localhost", wrong_name.port), tls=ours(pki))
    assert (report.sent, report.failed) == (0, 2)
    assert {refused(o.reason, wrong_name, "localhost") for o in report.outcomes} == {
        "certificate verify failed: Hostname mismatch, certificate is not valid for 'localhost'"}
    assert not received(wrong_name.folder)


@pytest.mark.parametrize(("server", "ca", "reason"), [
    ("server", "other", "certificate verify failed: self-signed certificate in certificate chain"),
    ("expired", "ca", "certificate verify failed: certificate has expired"),
], ids=["wrong CA", "expired server certificate"])
def test_an_unverified_destination_is_refused_and_nothing_sent(
    tmp_path: Path, pki: Path, tls_storescp: Callable[..., StoreSCP], server: str, ca: str, reason: str
) -> None:
    folder, _ = burned(tmp_path, "refused", 2, fmt="folder")
    scp = tls_storescp(server)
    report = import_medium(folder, destination=(scp.aet, "127.0.0.1", scp.port), tls=ours(pki, ca))
    assert (report.ok, report.sent, report.failed) == (False, 0, 2)
    assert {refused(o.reason, scp) for o in report.outcomes} == {reason}
    assert not received(scp.folder)


def test_a_destination_asking_for_our_certificate_says_so(tmp_path: Path, pki: Path,
                                                          tls_storescp: Callable[..., StoreSCP]) -> None:
    folder, _ = burned(tmp_path, "anonymous", 1, fmt="folder")
    scp = tls_storescp()  # storescp requires a client certificate (its -rc default)
    report = import_medium(folder, destination=(scp.aet, "127.0.0.1", scp.port), tls=ours(pki, with_certificate=False))
    assert [refused(o.reason, scp) for o in report.outcomes] == [
        "tlsv13 alert certificate required (the peer requires our certificate (tls.certificate, tls.key))"]
    assert not received(scp.folder)


# TLS 1.1, or TLS 1.2 with a suite outside BCP 195: DCMTK's retired AES profile (+pa: TLS_RSA_WITH_AES_128_CBC_SHA,
# no forward secrecy), its OpenSSL held to TLS 1.1 by a configuration file for the first case.
TLS11 = "openssl_conf = c\n[c]\nssl_conf = s\n[s]\nsystem_default = d\n[d]\nMaxProtocol = TLSv1.1\n" \
        "CipherString = DEFAULT@SECLEVEL=0\n"


@pytest.mark.parametrize("version", ["tls1_1", "tls1_2"], ids=["TLS 1.1", "TLS 1.2 AES128-SHA"])
def test_a_destination_weaker_than_bcp195_is_refused(tmp_path: Path, pki: Path,
                                                     tls_storescp: Callable[..., StoreSCP], version: str) -> None:
    env = {}
    if version == "tls1_1":
        (tmp_path / "tls11.cnf").write_text(TLS11)
        env["OPENSSL_CONF"] = str(tmp_path / "tls11.cnf")
    scp = tls_storescp("server", "+pa", env=env)
    # The server does speak that weaker TLS: openssl's own client, allowed it, completes the handshake.
    hello = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{scp.port}", f"-{version}", "-cipher",
                            "AES128-SHA@SECLEVEL=0", "-cert", pki / "client.pem", "-key", pki / "client.key"],
                           input="", capture_output=True, text=True, timeout=60)
    assert "Cipher is AES128-SHA" in hello.stdout, hello.stdout + hello.stderr

    folder, _ = burned(tmp_path, "weak", 1, fmt="folder")
    report = import_medium(folder, destination=(scp.aet, "127.0.0.1", scp.port), tls=ours(pki))
    [outcome] = report.outcomes
    assert refused(outcome.reason, scp).endswith(
        "(no TLS version or cipher suite in common: we offer TLS 1.2 or later with BCP 195's suites)")
    assert not received(scp.folder)


def test_tls_to_a_plain_port_says_so(tmp_path: Path, pki: Path, storescp: StoreSCP) -> None:
    """storescp without +tls reads our ClientHello as a PDU it does not know and resets the connection."""
    folder, _ = burned(tmp_path, "mixed", 1, fmt="folder")
    report = import_medium(folder, destination=(storescp.aet, "127.0.0.1", storescp.port), tls=ours(pki))
    assert report.outcomes[0].reason == (
        f"not sent: cannot connect to {storescp.aet}@127.0.0.1:{storescp.port}: [Errno 104] Connection reset by peer "
        "(during the TLS handshake: does the destination speak TLS on this port?)")
    assert not received(storescp.folder)


# -- the command line and the watcher ----------------------------------------------------------------


def test_import_command_over_tls(tmp_path: Path, pki: Path, tls_storescp: Callable[..., StoreSCP]) -> None:
    folder, uids = burned(tmp_path, "cli", 2, fmt="folder")
    scp = tls_storescp()
    to = f"{scp.aet}@127.0.0.1:{scp.port}"
    flags = ["--tls-certificate", pki / "client.pem", "--tls-key", pki / "client.key"]
    result = cli("import", folder, "--to", to, "--tls-ca", pki / "other.pem", *flags, "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["sent"] == 0
    assert {refused(o["reason"], scp) for o in report["outcomes"]} == {
        "certificate verify failed: self-signed certificate in certificate chain"}
    assert not received(scp.folder)

    result = cli("import", folder, "--to", to, "--tls-ca", pki / "ca.pem", *flags)
    assert result.code == 0, result.out + result.err
    assert set(received(scp.folder)) == uids


@pytest.mark.parametrize(("flags", "message"), [
    (["--tls-certificate", "client.pem", "--tls-key", "client.key"],
     "--tls-certificate and --tls-key need --tls-ca (the CA the destination is verified against)"),
    (["--tls-ca", "ca.pem", "--tls-certificate", "client.pem"],
     "--tls-certificate {pki}/client.pem: needs key too (our certificate and its key, or neither)"),
    (["--tls-ca", "client.key"], "--tls-ca {pki}/client.key: is not a PEM CA certificate (no certificate or crl found)"),
    (["--tls-ca", "ca.pem", "--tls-certificate", "client.pem", "--tls-key", "server.key"],
     "--tls-certificate {pki}/client.pem: is not a PEM certificate with its unencrypted PEM key "
     "(key values mismatch)"),
], ids=["no CA", "no key", "CA not a certificate", "key of another certificate"])
def test_bad_tls_flags_are_usage_errors(tmp_path: Path, pki: Path, flags: list[str], message: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pki)
    result = cli("import", tmp_path, "--to", "PACS@127.0.0.1:104", *flags)
    assert (result.code, result.out) == (2, "")
    assert message.format(pki=pki) in result.err


def test_the_watcher_reports_a_refused_tls_destination_and_keeps_the_medium(
    tmp_path: Path, pki: Path, tls_storescp: Callable[..., StoreSCP]
) -> None:
    iso, _ = burned(tmp_path, "watched", 2)
    scp = tls_storescp()
    plain = make_config(tmp_path, scp)
    text = (f"node: {{ae_title: READER, data_dir: {plain.node.data_dir}}}\nimport:\n  inbox: {plain.imports.inbox}\n"
            f"  destination:\n    ae_title: {scp.aet}\n    host: 127.0.0.1\n    port: {scp.port}\n"
            f"    tls: {{ca: {pki / 'other.pem'}, certificate: {pki / 'client.pem'}, key: {pki / 'client.key'}}}\n"
            f"  mount_roots: []\n  settle_seconds: 0.3\n  poll_seconds: 0.1\n")
    config = parse_config(text, source=str(tmp_path / "medianode.yaml"))
    inbox = config.imports.inbox
    with watching(config) as node:
        shutil.copy(iso, inbox / "watched.iso")
        [record] = node.finished(inbox / "watched.iso", 1)
        assert (record["state"], record["sent"], record["failed"]) == ("failed", 0, 2)
        started, event = node.audit()
        assert (started["event"], event["event"]) == ("import-started", "import-failed")
        assert f"TLS with {scp.aet}@127.0.0.1:{scp.port} refused: certificate verify failed" in event["reason"]
        assert "association was lost" not in event["reason"]
        kept = inbox / "failed" / "watched.iso"
        until(kept.exists, "watched.iso in failed/")  # filed after its record
        assert kept.read_bytes() == iso.read_bytes() and not received(scp.folder)
        assert not node.index.imported(medium_identity(kept))  # inserted again once fixed, it is imported


# -- configuration --------------------------------------------------------------------------------------


def destination_tls(tls: str) -> str:
    return f"import:\n  destination:\n    ae_title: PACS\n    host: 127.0.0.1\n    port: 104\n    tls: {tls}\n"


def test_destination_tls_is_read(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pki)
    config = parse_config(destination_tls("{ca: ca.pem, certificate: client.pem, key: client.key}"), source="c.yaml")
    assert config.imports.destination is not None
    assert config.imports.destination.tls == ClientTLS(pki / "ca.pem", pki / "client.pem", pki / "client.key")
    only_ca = parse_config(destination_tls("{ca: ca.pem}"), source="c.yaml").imports.destination
    assert only_ca is not None and only_ca.tls == ClientTLS(pki / "ca.pem")


@pytest.mark.parametrize(("tls", "message"), [
    ("{certificate: client.pem, key: client.key}", "c.yaml:6 import.destination.tls.ca: required key is missing"),
    ("{ca: ca.pem, key: client.key}",
     "c.yaml:6 import.destination.tls.key: needs certificate too (our certificate and its key, or neither)"),
    ("{ca: nothere.pem}", "c.yaml:6 import.destination.tls.ca: no such readable file: {pki}/nothere.pem"),
    ("{ca: client.key}",
     "c.yaml:6 import.destination.tls.ca: is not a PEM CA certificate (no certificate or crl found)"),
    ("{ca: ca.pem, certificate: client.pem, key: server.key}",
     "c.yaml:6 import.destination.tls.certificate: is not a PEM certificate with its unencrypted PEM key "
     "(key values mismatch)"),
    ("{ca: ca.pem, cert: client.pem}", "c.yaml:6 import.destination.tls.cert: unknown key (known: ca, certificate, key)"),
    ("yes", "c.yaml:6 import.destination.tls: expected a mapping of keys (ca, certificate, key), got 'yes'"),
], ids=["no ca", "key alone", "missing file", "not a certificate", "mismatched key", "unknown key", "not a mapping"])
def test_bad_destination_tls_names_its_line(pki: Path, monkeypatch: pytest.MonkeyPatch, tls: str, message: str) -> None:
    monkeypatch.chdir(pki)
    with pytest.raises(ConfigError) as caught:
        parse_config(destination_tls(tls), source="c.yaml")
    assert str(caught.value).startswith(message.format(pki=pki))


def test_an_encrypted_key_is_refused_not_prompted_for(pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenSSL would ask on the terminal for the pass phrase; a service has none, so it is an error."""
    monkeypatch.chdir(pki)
    openssl("rsa", "-in", "client.key", "-aes256", "-passout", "pass:secret", "-out", "locked.key", cwd=pki)
    with pytest.raises(ConfigError, match=r"tls\.certificate: is not a PEM certificate with its unencrypted PEM key"):
        parse_config(destination_tls("{ca: ca.pem, certificate: client.pem, key: locked.key}"), source="c.yaml")
