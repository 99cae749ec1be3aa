"""What the code says in its own tables: the presentation contexts and storage SOP classes of the AE the
receivers run, and every key of the YAML configuration with its default and meaning."""

from __future__ import annotations

import ast
import dataclasses
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from node import config, syntaxes
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


#: Where a field's YAML key is not its name.
_YAML_NAMES = {(config.Config, "imports"): "import", (syntaxes.Compression, "name"): "syntax"}
#: Fields that are no YAML key: where the configuration and a route were read from (for logs), the
#: per-modality half of ``compress`` (written inside ``compress``), and the CA of the console, which
#: asks browsers for no certificate.
_NOT_KEYS = {"source", "routes[].where", "routes[].compress_by_modality", "console.tls.ca"}
#: Defaults said in words: the loader's for a field its dataclass requires (node/config.py ``_route``), a section's.
_LOADER_DEFAULTS = {"routes[].match": "(matches every instance)", "node.identity": "(each key empty: unknown)"}
#: The meaning of output keys that no dataclass field holds (a ``folder`` output is a plain path).
_OUTPUT_KEYS = {
    "kind": "Which output the mapping describes: " + ", ".join(config.OUTPUTS) + " (Outputs).",
    "path": "The folder the images (or folder trees) are published into; a plain path says the same.",
}


def config_keys() -> list[ConfigKey]:
    """Every key of the YAML configuration, sorted by path: the fields of :class:`node.config.Config` and of
    the sections it holds, found by walking their types, and the keys of each output kind
    (:data:`node.config.OUTPUTS`, the parser's own tables)."""
    comments = {key: meaning for module in (config, syntaxes)
                for key, meaning in _field_comments(Path(module.__file__ or "").read_text()).items()}
    keys = [ConfigKey(path, _default(path, f), _prose(comments.get((cls.__name__, f.name), "")))
            for path, cls, f in _fields(config.Config, "")]
    keys.append(ConfigKey("output.kind", "required", _OUTPUT_KEYS["kind"]))
    for kind, (cls, checks, required) in config.OUTPUTS.items():
        defaults = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
        for name in checks:
            field = defaults.get(name)
            default = "required" if name in required or field is None else _shown(field.default)
            meaning = _prose(comments.get((cls.__name__, name), "")) if cls else _OUTPUT_KEYS[name]
            keys.append(ConfigKey(f"output[{kind}].{name}", default, meaning))
    return sorted(keys, key=lambda k: k.path)


def _fields(cls: type[Any], prefix: str) -> Iterator[tuple[str, type[Any], dataclasses.Field[Any]]]:
    """(YAML path, dataclass, field) of every key under ``cls``, depth first."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = prefix + _YAML_NAMES.get((cls, f.name), f.name)
        if path in _NOT_KEYS:
            continue
        yield path, cls, f
        inner, many = _section(hints[f.name])
        if inner is not None:
            yield from _fields(inner, path + ("[]." if many else "."))


def _section(hint: Any) -> tuple[type[Any] | None, bool]:
    """The dataclass a field's type holds (``X``, ``X | None``, ``tuple[X, ...]``), and whether it is a list;
    (None, False) for a value, or for a union of several dataclasses (the outputs)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        inner, _ = _section(args[0])
        return inner, inner is not None
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _section(args[0])
    return (hint, False) if isinstance(hint, type) and dataclasses.is_dataclass(hint) else (None, False)


def _default(path: str, f: dataclasses.Field[Any]) -> str:
    if path in _LOADER_DEFAULTS:
        return _LOADER_DEFAULTS[path]
    if f.default is not dataclasses.MISSING:
        return _shown(f.default)
    return "(its keys' defaults)" if f.default_factory is not dataclasses.MISSING else "required"


def _prose(comment: str) -> str:
    """A ``#:`` comment as the statement's Markdown: reST literals and Sphinx roles become code spans,
    and a role's target (a name of the code) is left out.

    >>> _prose("0 means the protocol's own port (:data:`SYSLOG_PORTS`); ``tls`` too.")
    "0 means the protocol's own port; `tls` too."
    """
    return re.sub(r" ?\(:\w+:`[^`]+`\)", "", comment).replace("``", "`")


def _shown(value: object) -> str:
    """A default as YAML would write it.

    >>> [_shown(v) for v in (None, "", True, (Path("/media"), Path("/run/media")), Path("var"))]
    ['(none)', '(none)', 'true', '/media, /run/media', './var']
    """
    if value is None or value == () or value == "":
        return "(none)"
    if isinstance(value, bool):
        return str(value).lower()
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
