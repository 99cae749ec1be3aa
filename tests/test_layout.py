"""The import direction of DESIGN.md and STYLE.md §2, checked on the source with ``ast``.

cli, service and conformance on top, with the console beside cli (only service starts it); actions, jobs and intake below them; media, read and receive in the middle, never
importing each other, each entered only through its front door (its ``__init__``'s ``__all__``); the bottom row
(errors, tags, dicom, syntaxes, profiles, dcmio, pixels, config, index, audit, atna, syslog, routing, users, udf,
lifeline, original, pdu, extents) imports nothing above it;
no import cycle anywhere. Third-party packages stay in the modules that own them.

Every import statement counts, at the top of a module or inside a function (and under ``TYPE_CHECKING``): an
import inside a function defers loading (pydicom, pynetdicom, a signal mask set first) but is as much a
dependency as one at the top. Two modules that import each other, one of them from inside a function, still
cannot be read or tested alone, and moving that import to the top one day would fail at start-up.
"""

from __future__ import annotations

import ast
from pathlib import Path

NODE = Path(__file__).resolve().parents[1] / "node"
BOTTOM = {"errors", "tags", "dicom", "syntaxes", "profiles", "dcmio", "pixels", "config", "index", "audit", "routing",
          "durable", "netcompat", "tls", "yamlcheck", "atna", "syslog", "filemodes", "users", "lifeline",
          "original", "udf", "pdu", "extents", "words"}
MIDDLE = {"media", "read", "receive"}
#: third-party package -> the modules allowed to import it
OWNERS = {
    "pynetdicom": {"netcompat", "receive.scp", "receive.workers", "receive.accept", "receive.storer", "read.sender",
                   "read.query"},
    "pycdlib": {"media.iso", "read.medium"},
    "watchdog": {"read.watcher"},
    "yaml": {"config", "yamlcheck"},
    "argon2": {"users"},
    "starlette": {"console.app", "console.auth", "console.web", "console.pages", "console.signin", "console.admin"},
    "uvicorn": {"console.process"},
    "jinja2": {"console.web"},
    "psycopg": {"catalogue.link"},
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


def module_of(name: str, modules: set[str]) -> str | None:
    """The node module an imported name lives in: node.media.build.burn -> media.build; numpy -> None."""
    parts = name.split(".")
    if parts[0] != "node":
        return None
    for end in range(len(parts), 1, -1):
        if ".".join(parts[1:end]) in modules:
            return ".".join(parts[1:end])
    return None


def front_door(room: str) -> set[str]:
    """The modules a room's ``__init__`` names in ``__all__``, read without importing it."""
    for node in ast.parse((NODE / room / "__init__.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


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
            upper = {"jobs", "actions", "service", "cli", "intake", "conformance", "console", "media_requests"}
            others = {n for n in names if n.startswith("node.") and top(n) in (MIDDLE - {room}) | upper}
            assert not others, f"node.{module} imports {others}"


def test_only_the_top_imports_the_service_the_cli_and_the_conformance_statement() -> None:
    for module, names in imports().items():
        for upper, allowed in (("service", {"cli"}), ("cli", {"__main__"}), ("conformance", {"cli"}),
                               ("console", {"service"})):
            if top(f"node.{module}") != upper and any(top(n) == upper for n in names if n.startswith("node.")):
                assert module in allowed, f"node.{module} imports node.{upper}"


def test_third_party_packages_stay_with_their_owners() -> None:
    for module, names in imports().items():
        for package, owners in OWNERS.items():
            if any(n == package or n.startswith(f"{package}.") for n in names):
                assert module in owners, f"node.{module} imports {package}"


def test_other_rooms_enter_media_read_and_receive_only_through_the_front_door() -> None:
    """A module of another room imports only a module the room names in ``__all__``, and no private name of it."""
    for module, names in imports().items():
        for name in names:
            room = top(name)
            if not name.startswith("node.") or room not in MIDDLE or top(f"node.{module}") == room:
                continue
            parts = name.split(".")
            assert len(parts) == 2 or parts[2] in front_door(room), f"node.{module} imports {name}, not in its __all__"
            assert not any(p.startswith("_") for p in parts[3:]), f"node.{module} imports the private {name}"


def test_each_front_door_names_modules_of_its_room_and_imports_nothing() -> None:
    """An import in an ``__init__`` would load with the room: a burn of files in an allowed syntax must not load
    pydicom (tests/test_burn_compress.py), so the door names modules and each loads when first used."""
    found = imports()
    for room in MIDDLE:
        door = front_door(room)
        assert door and all((NODE / room / f"{m}.py").is_file() for m in door), f"node.{room}.__all__ = {door}"
        assert not found[room], f"node/{room}/__init__.py imports {found[room]}"


def test_no_import_cycle_between_node_modules() -> None:
    found = imports()
    # ``from node.conformance import front`` in the package's own __init__ names the package itself: not a cycle
    graph = {module: {m for n in names if (m := module_of(n, set(found))) and m != module}
             for module, names in found.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module not in done:
            for imported in sorted(graph[module]):
                visit(imported, path + [module])
            done.add(module)

    for module in sorted(graph):
        visit(module, [])
