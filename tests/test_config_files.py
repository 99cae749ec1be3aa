"""A configuration file is bounded, and each refusal names its line: ``config check`` and ``serve`` alike
exit 2 with ``file:line reason`` and no traceback, before anything is parsed or bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import load_config
from node.errors import ConfigError
from node.yamlcheck import MAX_BYTES
from tests.conftest import cli, cli_process

FILES: dict[str, tuple[bytes, str]] = {
    # 1.1 MiB of a valid YAML list: refused unread, at the line where the bound is crossed
    "too big": (b"routes:\n" + b"  - {action: store}\n" * 60_000,
                ":52430 the file is larger than 1 MiB, the most a configuration may be: refused unread"),
    "not UTF-8": (b"node:\n  ae_title: MEDIANODE\n  host: caf\xe9\n",
                  ":3 cannot read: not UTF-8 (byte 0xe9 at offset 39)"),
    "empty": (b"", ":1 the file is empty (or only comments): expected a mapping"),
    "only comments": (b"# node:\n#   port: 104\n", ":1 the file is empty (or only comments): expected a mapping"),
    "nested too deep": (b"node:\n  extra_sop_classes: " + b"[" * 50_000 + b"\n",
                        ":2 YAML syntax error: nested more than 32 levels deep"),
    "host a command": (b"node:\n  port: 104\n  host: 'not a host; rm -rf /'\n",
                       ":3 node.host: 'not a host; rm -rf /' is not an IP address or a host name "
                       "(RFC 1123: letters, digits, hyphens and dots)"),
    "host unresolved": (b"node: {host: no-such-host.invalid}\n",
                        ":1 node.host: 'no-such-host.invalid' does not resolve to an address: Name or service not known"),
}


def test_the_size_bound_is_above_any_real_configuration() -> None:
    shipped = Path(__file__).resolve().parent.parent / "config" / "medianode.yaml"
    assert 1 << 20 == MAX_BYTES > 100 * shipped.stat().st_size


def test_a_file_just_under_the_bound_is_read(tmp_path: Path) -> None:
    text = b"# " + b"x" * (MAX_BYTES - 100) + b"\nnode: {port: 104}\n"
    assert len(text) <= MAX_BYTES
    (tmp_path / "big.yaml").write_bytes(text)
    assert cli("config", "check", tmp_path / "big.yaml").code == 0


@pytest.mark.parametrize("content, message", list(FILES.values()), ids=list(FILES))
def test_config_check_refuses_with_the_line(content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "medianode.yaml"
    path.write_bytes(content)
    result = cli("config", "check", path)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"medianode config: {path}{message}\n"
    assert path.read_bytes() == content


@pytest.mark.parametrize("name", ["too big", "not UTF-8", "nested too deep", "host a command"])
def test_serve_refuses_with_exit_2_and_binds_nothing(name: str, tmp_path: Path) -> None:
    content, message = FILES[name]
    path = tmp_path / "medianode.yaml"
    path.write_bytes(content.replace(b"node:\n", f"node:\n  data_dir: {tmp_path / 'var'}\n".encode(), 1))
    result = cli_process("serve", "--config", path)
    assert result.code == 2, result.err
    line = int(message[1:].split(" ")[0]) + (1 if name != "too big" else 0)
    assert result.err.startswith(f"medianode serve: {path}:{line} "), result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "var").exists()


NODE_KEYS = ("data_dir, allowed_calling_aets, allowed_peers, extra_sop_classes, workers, max_associations, min_free_mb, "
             "max_pdu, idle_seconds, artim_seconds, pdu_seconds, max_connections_per_address, tls, group, identity, "
             "catalogue, catalogue_password_file, station, shared_spool, lease_seconds")


def test_config_check_names_every_problem_of_the_file_in_its_order(tmp_path: Path) -> None:
    """One look at a file reports all it can: a line each from ``config check``, one line joined for a log."""
    path = tmp_path / "medianode.yaml"
    content = ("node:\n  port: 99999\n  ae_titel: X\n"
               "routes:\n  - match: {modality: CT}\n    action: brun\n  - action: store\n    copies: 2\n"
               "  - {}\n")
    path.write_text(content)
    result = cli("config", "check", path)
    problems = [
        f"{path}:2 node.port: expected an integer from 1 to 65535, got '99999'",
        f"{path}:3 node.ae_titel: unknown key (known: ae_title, host, port, {NODE_KEYS})",
        f"{path}:6 routes[0].action: 'brun' is not one of burn, store, reject",
        f"{path}:8 routes[1].copies: only for action: burn (this route's action is store)",
        f"{path}:9 routes[2].action: required key is missing",
    ]
    assert (result.code, result.out) == (2, "")
    assert result.err == "".join(f"medianode config: {p}\n" for p in problems)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == tuple(problems) and str(raised.value) == "; ".join(problems)
    assert path.read_text() == content
