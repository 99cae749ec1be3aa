"""What the code says in its own tables: the presentation contexts and storage SOP classes of the AE the
receivers run, and every key of the YAML configuration with its default and meaning."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

from node import config
from node.receive import scp


def scp_contexts() -> dict[tuple[str, ...], list[str]]:
    """The Storage SCP's supported presentation contexts, grouped: transfer syntaxes -> SOP classes.

    Read from the AE the receivers run (default configuration: ``node.extra_sop_classes`` adds more).
    """
    groups: dict[tuple[str, ...], list[str]] = {}
    for cx in scp.make_ae(config.Config()).supported_contexts:
        groups.setdefault(tuple(str(ts) for ts in cx.transfer_syntax), []).append(str(cx.abstract_syntax))
    return {k: sorted(v) for k, v in groups.items()}


def default_storage_classes() -> list[str]:
    """Every storage SOP class the SCP accepts with the default configuration."""
    return scp.storage_classes(config.Config())


@dataclasses.dataclass(frozen=True)
class ConfigKey:
    """One key of the YAML configuration: its path, default and the ``#:`` comment of its field."""

    path: str
    default: str
    meaning: str


#: YAML section -> the dataclass it becomes (node/config.py); keys are the dataclasses' fields.
CONFIG_SECTIONS: tuple[tuple[str, type[Any]], ...] = (
    ("node", config.NodeConfig),
    ("node.tls", config.TLS),
    ("node.identity", config.NodeIdentity),
    ("burn", config.BurnConfig),
    ("routes[]", config.Route),
    ("routes[].match", config.Match),
    ("import", config.ImportConfig),
    ("import.destination", config.Destination),
    ("import.destination.tls", config.ClientTLS),
    ("import.coerce", config.Coercion),
    ("import.reconcile", config.Reconcile),
    ("import.reconcile.worklist", config.Worklist),
    ("import.reconcile.patients", config.PatientQuery),
    ("mcm", config.MediaRequests),
    *((f"output[{kind}]", cls) for kind, (cls, _, _) in config.OUTPUTS.items() if cls is not None),
)
#: Fields that are no YAML key (where a route was written, for logs).
_NOT_KEYS = {(config.Route, "where")}
#: Defaults the loader supplies for fields its dataclass requires (node/config.py ``_route``).
_LOADER_DEFAULTS = {(config.Route, "match"): "(matches every instance)",
                    (config.NodeConfig, "identity"): "(each key empty: unknown)"}


def config_keys() -> list[ConfigKey]:
    """Every key of the YAML configuration, sorted by path."""
    comments = _field_comments(Path(config.__file__).read_text())
    keys = []
    for section, cls in CONFIG_SECTIONS:
        for f in dataclasses.fields(cls):
            if (cls, f.name) in _NOT_KEYS:
                continue
            if (cls, f.name) in _LOADER_DEFAULTS:
                default = _LOADER_DEFAULTS[(cls, f.name)]
            elif f.default is not dataclasses.MISSING:
                default = _shown(f.default)
            else:
                default = "required"
            keys.append(ConfigKey(f"{section}.{f.name}", default, comments.get((cls.__name__, f.name), "")))
    return sorted(keys, key=lambda k: k.path)


def _shown(value: object) -> str:
    if value is None or value == ():
        return "(none)"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, Path):
        return f"./{value}" if not value.is_absolute() else str(value)
    return str(value)


def _field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class, field) -> the ``#:`` comment lines right above the field, joined."""
    lines = source.splitlines()
    found: dict[tuple[str, str], str] = {}
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                above: list[str] = []
                row = stmt.lineno - 2
                while row >= 0 and lines[row].strip().startswith("#:"):
                    above.insert(0, lines[row].strip()[2:].strip())
                    row -= 1
                found[(cls.name, stmt.target.id)] = " ".join(above)
    return found
