"""The systemd units under systemd/, checked by systemd's own ``systemd-analyze`` (offline: no running systemd).

``verify`` loads a unit as systemd would and refuses unknown keys, bad values and an ExecStart that is not
an executable; the unit's ExecStart names where the node is installed in production, so a copy is
verified with the medianode this test runs (the console script of the same installation) in its place.
``security --offline=true`` scores the sandbox; the README states the score and it stays at 3.0 or below.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "medianode.service"
INSTALLED = "/opt/medianode/bin/medianode"
MAX_EXPOSURE = 3.0

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze is absent: this system has no systemd to check units against")


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *map(str, args)], capture_output=True, text=True, timeout=120)


def medianode() -> Path:
    """The ``medianode`` console script installed beside this interpreter."""
    script = Path(sys.executable).parent / "medianode"
    assert script.is_file(), f"no medianode beside {sys.executable}: run scripts/install"
    return script


def test_the_service_unit_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} serve" in text
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED, str(medianode())))
    done = analyze("verify", unit)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_verify_refuses_what_it_should(tmp_path: Path) -> None:
    """The check can fail: the unit as shipped names a binary this machine lacks, and a misspelt key is refused."""
    if Path(INSTALLED).exists():
        pytest.skip(f"{INSTALLED} is installed here")
    done = analyze("verify", UNIT)
    assert done.returncode != 0 and f"Command {INSTALLED} is not executable" in done.stderr
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED, str(medianode())).replace("ProtectHome=", "ProtectHomes="))
    assert "Unknown key 'ProtectHomes' in section [Service]" in analyze("verify", unit).stderr  # exit 0: a warning


def test_the_usb_mount_unit_verifies(tmp_path: Path) -> None:
    instance = tmp_path / "medianode-usb@sdb1.service"  # as the udev rule starts it, for partition sdb1
    instance.write_text((ROOT / "systemd" / "medianode-usb@.service").read_text())
    done = analyze("verify", instance)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    rule = (ROOT / "systemd" / "90-medianode-usb.rules").read_text()
    assert 'ENV{SYSTEMD_WANTS}+="medianode-usb@%k.service"' in rule


def exposure(unit: Path) -> float:
    done = analyze("security", "--offline=true", unit)
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout[-2000:]
    return float(found.group(1))


def test_the_exposure_score_is_at_most_3_and_the_readme_states_it() -> None:
    score = exposure(UNIT)
    assert score <= MAX_EXPOSURE
    stated = re.search(r"exposure level is \*\*(\d+\.\d+)\*\*\s+\(`systemd-analyze security`, systemd (\d+)\)",
                       (ROOT / "README.md").read_text())
    assert stated, "README's 'The service unit' states the exposure level"
    assert float(stated.group(1)) <= MAX_EXPOSURE
    version = re.match(r"systemd (\d+)", analyze("--version").stdout)
    if version and version.group(1) == stated.group(2):  # another systemd weighs the settings its own way
        assert float(stated.group(1)) == score


def test_the_score_would_notice_a_weaker_unit(tmp_path: Path) -> None:
    """Without its sandbox the same unit scores far above the limit: the measure is not a constant."""
    bare = tmp_path / UNIT.name
    kept = ("[", "Description", "Type", "User", "Group", "ExecStart", "WantedBy")
    bare.write_text("\n".join(line for line in UNIT.read_text().splitlines() if line.startswith(kept)) + "\n")
    assert exposure(bare) > MAX_EXPOSURE
