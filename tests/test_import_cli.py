"""``medianode import`` as users run it: exit codes, one-line errors, the JSON contract."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from pydicom import dcmread

from node.config import parse_config
from node.intake import ImportRunner
from node.index import Index
from node.read.watcher import Ready
from tests.conftest import StoreSCP, cli, cli_process, ct_series, free_port


def test_import_a_burned_disc_into_storescp(tmp_path: Path, storescp: StoreSCP) -> None:
    ct_series(tmp_path / "src", 5)
    assert cli("burn", tmp_path / "src", "--out", tmp_path / "disc.iso").code == 0
    result = cli_process("import", tmp_path / "disc.iso", "--to", f"{storescp.aet}@127.0.0.1:{storescp.port}",
                         "--json", "--reports", tmp_path / "reports")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert (report["sent"], report["failed"], report["skipped"], report["problems"]) == (5, 0, 0, [])
    sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (tmp_path / "src").iterdir()}
    assert {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in storescp.received()} == sent
    assert len(list((tmp_path / "reports").iterdir())) == 1


def test_a_destination_that_is_down_fails_every_instance(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 2)
    assert cli("burn", tmp_path / "src", "--out", tmp_path / "disc", "--format", "folder").code == 0
    result = cli_process("import", tmp_path / "disc", "--to", f"PACS@127.0.0.1:{free_port()}", "--json")
    assert result.code == 1
    report = json.loads(result.out)
    assert report["sent"] == 0 and report["failed"] == 2
    assert "Traceback" not in result.err


def test_bad_destination_and_missing_medium_are_one_line_errors(tmp_path: Path) -> None:
    bad = cli_process("import", tmp_path, "--to", "PACS-127.0.0.1")
    assert bad.code == 2 and "AET@HOST:PORT" in bad.err and len(bad.err.strip().splitlines()) == 1
    missing = cli_process("import", tmp_path / "nowhere.iso", "--to", "PACS@127.0.0.1:104")
    assert missing.code == 1 and len(missing.err.strip().splitlines()) == 1 and "Traceback" not in missing.err
    none = cli_process("import", tmp_path, "--to", "PACS@127.0.0.1:104", "--associations", "0")
    assert (none.code, none.err.strip()) == (2, "medianode import: associations must be at least 1, not 0")


def test_associations_from_the_command_line_and_the_configuration(tmp_path: Path, storescp: StoreSCP) -> None:
    """``--associations`` wins over ``import.associations``; either way every instance arrives, once."""
    ct_series(tmp_path / "src", 6)
    assert cli("burn", tmp_path / "src", "--out", tmp_path / "disc.iso").code == 0
    to = f"{storescp.aet}@127.0.0.1:{storescp.port}"
    config = tmp_path / "medianode.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'data'}}}\nimport: {{associations: 3}}\n")
    by_config = cli_process("import", tmp_path / "disc.iso", "--to", to, "--config", config, "--json")
    assert by_config.code == 0, by_config.err
    assert json.loads(by_config.out)["sent"] == 6
    given = cli_process("import", tmp_path / "disc.iso", "--to", to, "--associations", "1", "--json")
    assert given.code == 0, given.err
    assert json.loads(given.out)["sent"] == 6
    assert len(storescp.received()) == 6  # the same six instances, stored twice under the same names


def test_the_same_medium_twice_is_skipped_unless_forced(tmp_path: Path, storescp: StoreSCP) -> None:
    ct_series(tmp_path / "src", 2)
    assert cli("burn", tmp_path / "src", "--out", tmp_path / "disc.iso").code == 0
    config = tmp_path / "node.yaml"
    config.write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n")
    to = f"{storescp.aet}@127.0.0.1:{storescp.port}"
    first = cli_process("import", tmp_path / "disc.iso", "--to", to, "--config", config, "--json")
    assert first.code == 0 and json.loads(first.out)["sent"] == 2
    received = {p: p.stat().st_mtime_ns for p in storescp.received()}

    again = cli_process("import", tmp_path / "disc.iso", "--to", to, "--config", config, "--json")
    report = json.loads(again.out)
    assert again.code == 0 and report["sent"] == 0 and "already imported" in report["skipped_medium"]
    assert {p: p.stat().st_mtime_ns for p in storescp.received()} == received  # nothing sent again

    forced = cli_process("import", tmp_path / "disc.iso", "--to", to, "--config", config, "--force", "--json")
    assert forced.code == 0 and json.loads(forced.out)["sent"] == 2
    status = json.loads(cli("status", "--config", config, "--json").out)
    # newest first; the skip is recorded, as the watcher records it, as an import that sent nothing
    assert [(i["state"], i["sent"]) for i in status["imports"]] == [("done", 2), ("done", 0), ("done", 2)]
    assert report["previous_import"] == status["imports"][2]["id"]
    events = [json.loads(line)["event"] for line in (tmp_path / "var" / "audit.jsonl").read_text().splitlines()]
    assert events == ["import-started", "import-done", "import-skipped", "import-started", "import-done"]


def test_import_with_config_is_audited_as_the_watcher_audits(tmp_path: Path, storescp: StoreSCP) -> None:
    """One record of an import for the command line and the watcher: the same audit event, the same keys."""
    ct_series(tmp_path / "a", 2, patient_id="PID-A")
    ct_series(tmp_path / "b", 3, patient_id="PID-B")
    (tmp_path / "inbox").mkdir()
    assert cli("burn", tmp_path / "a", "--out", tmp_path / "a.iso").code == 0
    assert cli("burn", tmp_path / "b", "--out", tmp_path / "inbox" / "b.iso").code == 0
    text = f"""\
node: {{data_dir: {tmp_path / 'var'}}}
import:
  inbox: {tmp_path / 'inbox'}
  destination: {{ae_title: {storescp.aet}, host: 127.0.0.1, port: {storescp.port}}}
"""
    (tmp_path / "node.yaml").write_text(text)
    to = f"{storescp.aet}@127.0.0.1:{storescp.port}"
    assert cli_process("import", tmp_path / "a.iso", "--to", to, "--config", tmp_path / "node.yaml").code == 0
    config = parse_config(text, source=str(tmp_path / "node.yaml"))
    index = Index(config.node.data_dir / "index.sqlite")
    try:
        ImportRunner(index, lambda: config, stop=threading.Event()).handle(Ready("inbox", tmp_path / "inbox" / "b.iso"))
    finally:
        index.close()

    lines = [json.loads(line) for line in (tmp_path / "var" / "audit.jsonl").read_text().splitlines()]
    started = [e for e in lines if e["event"] == "import-started"]
    command, watcher = (e for e in lines if e["event"] != "import-started")
    assert [(e["kind"], e["destination"]) for e in started] == [("command", to), ("inbox", to)]
    assert command.keys() == watcher.keys()
    assert (command["event"], command["kind"], command["sent"]) == ("import-done", "command", 2)
    assert (watcher["event"], watcher["kind"], watcher["sent"]) == ("import-done", "inbox", 3)
    assert command["medium"] == str(tmp_path / "a.iso") and command["import_id"] != watcher["import_id"]


def test_an_unreadable_medium_with_config_is_recorded_as_failed(tmp_path: Path) -> None:
    (tmp_path / "garbage.iso").write_bytes(b"\x00" * 40000)
    (tmp_path / "node.yaml").write_text(f"node: {{data_dir: {tmp_path / 'var'}}}\n")
    fails = cli_process("import", tmp_path / "garbage.iso", "--to", f"PACS@127.0.0.1:{free_port()}",
                        "--config", tmp_path / "node.yaml")
    assert fails.code == 1 and len(fails.err.strip().splitlines()) == 1 and "Traceback" not in fails.err
    status = json.loads(cli("status", "--config", tmp_path / "node.yaml", "--json").out)
    assert [(i["state"], i["identity"]) for i in status["imports"]] == [("failed", "unreadable")]
    (event,) = (json.loads(line) for line in (tmp_path / "var" / "audit.jsonl").read_text().splitlines())
    assert (event["event"], event["kind"]) == ("import-failed", "command")
    assert event["reason"] == fails.err.strip().removeprefix("medianode import: ")
