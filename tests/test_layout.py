"""The import direction of DESIGN.md and STYLE.md §2, checked on the source with ``ast``.

cli, service and conformance on top; jobs and imports below them; media, read and receive in the middle, never
importing each other; the bottom row (errors, tags, dicom, syntaxes, profiles, dcmio, pixels, config, index,
audit, routing) imports nothing above it. Third-party packages stay in the modules that own them.
"""

from __future__ import annotations

import ast
from pathlib import Path

NODE = Path(__file__).resolve().parents[1] / "node"
BOTTOM = {"errors", "tags", "dicom", "syntaxes", "profiles", "dcmio", "pixels", "config", "index", "audit", "routing",
          "durable", "netcompat", "yamlcheck"}
MIDDLE = {"media", "read", "receive"}
#: third-party package -> the modules allowed to import it
OWNERS = {
    "pynetdicom": {"netcompat", "receive.scp", "receive.workers", "read.sender"},
    "pycdlib": {"media.iso", "read.medium"},
    "watchdog": {"read.watcher"},
    "yaml": {"config", "yamlcheck"},
}


def imports() -> dict[str, set[str]]:
    """module (relative to node, dotted) -> every module it imports, absolute."""
    found: dict[str, set[str]] = {}
    for path in NODE.rglob("*.py"):
        module = ".".join(path.relative_to(NODE).with_suffix("").parts).removesuffix(".__init__")
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
        found[module] = names
    return found


def top(name: str) -> str:
    """node.media.build -> media; node.index -> index; pycdlib.pycdlib -> pycdlib."""
    parts = name.split(".")
    return parts[1] if parts[0] == "node" and len(parts) > 1 else parts[0]


def test_the_bottom_row_imports_nothing_above_it() -> None:
    for module, names in imports().items():
        if top(f"node.{module}") in BOTTOM:
            above = {n for n in names if n.startswith("node.") and top(n) not in BOTTOM}
            assert not above, f"node.{module} imports {above}"


def test_media_read_and_receive_never_import_each_other() -> None:
    for module, names in imports().items():
        room = top(f"node.{module}")
        if room in MIDDLE:
            others = {n for n in names if n.startswith("node.") and top(n) in (MIDDLE - {room}) | {"jobs", "service", "cli", "imports", "conformance"}}
            assert not others, f"node.{module} imports {others}"


def test_only_the_top_imports_the_service_the_cli_and_the_conformance_statement() -> None:
    for module, names in imports().items():
        for upper, allowed in (("service", {"cli"}), ("cli", {"__main__"}), ("conformance", {"cli"})):
            if top(f"node.{module}") != upper and any(top(n) == upper for n in names if n.startswith("node.")):
                assert module in allowed, f"node.{module} imports node.{upper}"


def test_third_party_packages_stay_with_their_owners() -> None:
    for module, names in imports().items():
        for package, owners in OWNERS.items():
            if any(n == package or n.startswith(f"{package}.") for n in names):
                assert module in owners, f"node.{module} imports {package}"
