"""Files only the node may read: whatever the caller's umask, ``serve`` and ``burn`` create 0600 files and
0700 folders (0640 / 0750 with ``node.group``), while a USB volume is written for others to read."""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from node import filemodes
from node.media import outputs
from node.media.build import burn
from node.profiles import get_profile
from tests.conftest import StoreSCP, cli, ct_series, need
from tests.test_serve import Node, storescu


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(*roots: Path) -> dict[str, int]:
    """Every folder and file under ``roots`` (the roots included) -> its permission bits."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            found[str(path)] = stat.S_IMODE(path.lstat().st_mode)
    return found


def wrong(found: dict[str, int], folder: int, file: int) -> dict[str, str]:
    return {p: oct(m) for p, m in found.items() if m != (folder if os.path.isdir(p) else file)}


@pytest.mark.parametrize("group", [None, grp.getgrgid(os.getgid()).gr_name], ids=["private", "group"])
def test_serve_creates_everything_private_under_a_permissive_umask(group: str | None, tmp_path: Path,
                                                                    storescp: StoreSCP) -> None:
    """A study received and burned, the disc imported back: spool, index, audit, image, import report."""
    need("echoscu", "storescu")
    inbox = tmp_path / "inbox"
    node = Node(tmp_path, extra=f", group: {group}" if group else "", imports=(
        f"import: {{inbox: {inbox}, mount_roots: [], settle_seconds: 0.3, poll_seconds: 0.2, "
        f"destination: {{ae_title: {storescp.aet}, host: 127.0.0.1, port: {storescp.port}}}}}\n"))
    with umask(0o000):
        node.start()
    try:
        assert storescu(node, ct_series(tmp_path / "ct", 2)).returncode == 0
        node.wait_for(lambda: len(status(node)["volumes_today"]) == 1)
        inbox.mkdir(exist_ok=True)
        shutil.copy(node.images()[0], inbox / "disc.iso.part")
        (inbox / "disc.iso.part").rename(inbox / "disc.iso")
        node.wait_for(lambda: [i["state"] for i in status(node)["imports"]] == ["done"])
    finally:
        assert node.stop() == 0
    found = modes(node.data, node.out)
    names = {Path(p).name for p in found}
    assert {"index.sqlite", "audit.jsonl", "spool", "imports"} <= names, names
    assert any(n.endswith(".iso") for n in names) and any(n.endswith(".dcm") for n in names), names
    assert any("/imports/" in p and p.endswith(".json") for p in found), sorted(found)
    if group:  # set-group-ID folders: what is created beneath takes the group
        assert wrong(found, 0o2750, 0o640) == {}
        assert {os.stat(p).st_gid for p in found} == {grp.getgrnam(group).gr_gid}
    else:
        assert wrong(found, 0o700, 0o600) == {}


def status(node: Node) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(cli("status", "--config", node.config, "--json").out))


def test_serve_keeps_the_index_wal_and_shm_private(tmp_path: Path) -> None:
    need("echoscu")
    node = Node(tmp_path)
    with umask(0o000):
        node.start()
    try:
        node.wait_for(lambda: "medianode serving" in node.logs())  # every receiver holds the index open
        wal, shm = node.data / "index.sqlite-wal", node.data / "index.sqlite-shm"
        assert wal.exists() and shm.exists()
        assert (oct(stat.S_IMODE(wal.stat().st_mode)), oct(stat.S_IMODE(shm.stat().st_mode))) == ("0o600", "0o600")
    finally:
        assert node.stop() == 0, node.logs()


def test_burn_writes_a_private_image_under_a_permissive_umask(tmp_path: Path) -> None:
    ct_series(tmp_path / "src", 2, size=16)
    out = tmp_path / "x.iso"
    run = subprocess.run([sys.executable, "-m", "node", "burn", str(tmp_path / "src"), "--out", str(out)],
                         capture_output=True, text=True, umask=0o000, timeout=300)
    assert run.returncode == 0, run.stderr
    assert oct(stat.S_IMODE(out.stat().st_mode)) == "0o600"
    folder = tmp_path / "tree"
    run = subprocess.run([sys.executable, "-m", "node", "burn", str(tmp_path / "src"), "--out", str(folder),
                          "--profile", "STD-GEN-USB-JPEG"], capture_output=True, text=True, umask=0o000, timeout=300)
    assert run.returncode == 0, run.stderr
    assert wrong(modes(folder), 0o700, 0o600) == {}


def test_a_usb_volume_is_written_for_others_to_read(tmp_path: Path) -> None:
    usb_tree = tmp_path / "TREE"
    burn([str(p) for p in ct_series(tmp_path / "src", 2, size=16)], out=usb_tree,
         profile=get_profile("STD-GEN-USB-JPEG"))
    stick = tmp_path / "stick"
    stick.mkdir()
    stick.chmod(0o755)  # as a stick's root is, whatever this process's umask
    with umask(filemodes.PRIVATE_UMASK):
        outputs.write_usb(stick, usb_tree)
    found = modes(stick)
    assert len(found) > 5
    assert wrong(found, 0o755, 0o644) == {}
