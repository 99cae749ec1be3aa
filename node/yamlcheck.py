"""Checking YAML into typed values, with errors that name the file, the line and the key.

The YAML is composed, not loaded: every node keeps its line, and nothing is
constructed until a :data:`Check` has looked at it, so YAML 1.1's ``NO``, ``on``
or ``0123`` stay text where text is expected and a number must be a plain YAML
number. Each problem is one :class:`~node.errors.ConfigError` line,
``{file}:{line} {key path}: {what is wrong}``; unknown and duplicate keys are
errors. :mod:`node.config` builds the medianode schema from these checks;
:func:`load_sidecar` reads the small files that :mod:`node.media.capture` takes.

>>> port = number(1, 65535)
>>> port(compose("port: 104", "x.yaml").value[0][1], At("x.yaml", "node.port"))
104
>>> port(compose("port: '104'", "x.yaml").value[0][1], At("x.yaml", "node.port"))
Traceback (most recent call last):
node.errors.ConfigError: x.yaml:1 node.port: expected an integer from 1 to 65535, got '104' (a quoted string)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from node.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

#: The prefix of YAML's standard tags (``tag:yaml.org,2002:int`` ...).
STD = "tag:yaml.org,2002:"


#: The largest configuration (or sidecar) file read: far above any real one, and refused before parsing,
#: so that a runaway file cannot hold the node for minutes and gigabytes.
MAX_BYTES = 1 << 20
#: The deepest nesting of mappings and lists read: the schema needs five levels; PyYAML's composer
#: recurses once per level, so a deeper file is refused, with its line, before it is composed.
MAX_DEPTH = 32


def read_text(name: str) -> str:
    """A UTF-8 file's text (a BOM allowed) of at most :data:`MAX_BYTES`; :class:`ConfigError` otherwise,
    ``"{name}: cannot read: ..."``, or ``"{name}:{line} ..."`` where a line is to blame."""
    try:
        with open(name, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        line = data.count(b"\n", 0, MAX_BYTES) + 1
        raise ConfigError(f"{name}:{line} the file is larger than {MAX_BYTES >> 20} MiB, "
                          "the most a configuration may be: refused unread")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:  # exc.object is the data after any BOM
        line = exc.object.count(b"\n", 0, exc.start) + 1
        offset = exc.start + len(data) - len(exc.object)
        raise ConfigError(f"{name}:{line} cannot read: not UTF-8 "
                          f"(byte {exc.object[exc.start]:#04x} at offset {offset})") from None


def compose(text: str, source: str) -> Node:
    """The YAML node tree of ``text``: nodes keep their line, nothing is constructed yet.

    >>> compose("a: [[[1]]]", "x.yaml").value[0][0].value
    'a'
    >>> compose("# nothing but a comment", "x.yaml")
    Traceback (most recent call last):
    node.errors.ConfigError: x.yaml:1 the file is empty (or only comments): expected a mapping
    """
    try:
        _check_depth(text, source)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark, problem = exc.problem_mark or exc.context_mark, exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context_mark:
            problem += f" ({exc.context} on line {exc.context_mark.line + 1})"
        raise ConfigError(f"{source}:{mark.line + 1 if mark else 1} YAML syntax error: {collapse_spaces(problem)}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML forbids, e.g. a NUL
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{source}:{line} YAML syntax error: unacceptable character #x{exc.character:04x}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}:1 YAML syntax error: {collapse_spaces(str(exc))}") from None
    if root is None:
        raise ConfigError(f"{source}:1 the file is empty (or only comments): expected a mapping")
    return root


def _check_depth(text: str, source: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH`, at the line where it goes too deep. PyYAML's parser
    keeps its own stack (no recursion), so its events are read before the recursive composer runs."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else 1
                raise ConfigError(f"{source}:{line} YAML syntax error: "
                                  f"nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


@dataclass(frozen=True)
class At:
    """Where a value sits: the file and the key path (``routes[0].match.called_aet``).

    >>> At("x.yaml", "routes").item(0).key("match").path
    'routes[0].match'
    """

    file: str
    path: str

    def key(self, name: str) -> At:
        return At(self.file, f"{self.path}.{name}" if self.path else name)

    def item(self, index: int) -> At:
        return At(self.file, f"{self.path}[{index}]")

    def error(self, node: Node, problem: str) -> ConfigError:
        """``{file}:{line} {path}: {problem}``, the line being ``node``'s."""
        where = f"{self.file}:{node.start_mark.line + 1}"
        return ConfigError(f"{where} {self.path}: {problem}" if self.path else f"{where} {problem}")


#: A check turns one YAML node into a typed value, or raises the ConfigError that says why not.
Check = Callable[[Node, At], Any]


def collapse_spaces(text: str) -> str:
    return " ".join(text.split())


def short(text: str) -> str:
    """``text`` quoted for a message: one line, at most about 40 characters."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def describe(node: Node) -> str:
    """What a node is, for "got ...": ``a list``, ``'yes' (a boolean)``, ``'104' (a quoted string)``."""
    if not isinstance(node, ScalarNode):
        return "a mapping" if isinstance(node, MappingNode) else "a list"
    if node.tag == STD + "null":
        return "an empty value" if node.value in ("", "~") else f"{short(node.value)} (null)"
    kind = " (a boolean)" if node.tag == STD + "bool" else " (a quoted string)" if node.style in ("'", '"') else ""
    return short(node.value) + kind


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == STD + "null"


def scalar(node: Node, at: At, expected: str) -> ScalarNode:
    if not isinstance(node, ScalarNode) or is_null(node):
        raise at.error(node, f"expected {expected}, got {describe(node)}")
    if not node.tag.startswith(STD):
        raise at.error(node, f"unsupported tag {short(node.tag)}")
    return node


def number(lo: float, hi: float | None = None, *, integer: bool = True, above: bool = False, zero: str = "") -> Check:
    """A plain YAML int (or float, unless ``integer``) from ``lo`` (exclusive if ``above``) to ``hi``;
    with ``zero``, 0 as well, meaning ``zero``. Never a bool, a string or a non-finite float."""
    word = "an integer" if integer else "a number"
    if hi is not None:
        expected = f"{word} from {lo} to {hi}"
    else:
        expected = f"{word} above {lo:g}" if above else f"{word} of {lo:g} or more"
    if zero:
        expected = f"0 ({zero}) or {expected}"
    kinds = {STD + "int"} if integer else {STD + "int", STD + "float"}

    def check(node: Node, at: At) -> Any:
        if scalar(node, at, expected).tag in kinds:
            try:
                v = yaml.constructor.SafeConstructor().construct_object(node)
                v = v if integer else float(v)
            except (ValueError, OverflowError, yaml.YAMLError):  # "0x_" has no digit, 10**400 is no float
                v = math.nan
            in_range = (v > lo if above else v >= lo) and (hi is None or v <= hi)
            if (in_range or (zero and v == 0)) and not (isinstance(v, float) and math.isinf(v)):
                return v
        raise at.error(node, f"expected {expected}, got {describe(node)}")

    return check


def string(expected: str = "a string", rule: Callable[[str], Any] | None = None, *, max_len: int = 0) -> Check:
    """Any scalar, as written: not empty, no control characters, at most ``max_len`` long, then ``rule``.

    ``rule`` returns the value to keep (text, or what it parsed the text into), or raises ``ValueError("is not ...")`` to refuse it.
    """

    def check(node: Node, at: At) -> Any:
        value = scalar(node, at, expected).value
        try:
            if not value or any(c < " " or "\x7f" <= c < "\xa0" for c in value):
                raise ValueError(f"is not {expected}: {'it is empty' if not value else 'it holds a control character'}")
            if max_len and len(value) > max_len:
                raise ValueError(f"is longer than {max_len} characters")
            return rule(value) if rule else value
        except ValueError as exc:
            raise at.error(node, f"{short(value)} {exc}") from None

    return check


def absolute(value: str, at: At, node: Node) -> Path:
    try:
        return Path(os.path.abspath(value))
    except OSError as exc:  # the working directory is gone
        raise at.error(node, f"cannot resolve {short(value)}: {exc.strerror}") from None


def path(node: Node, at: At) -> Path:
    """A path, made absolute against the working directory at load time."""
    return absolute(string("a path")(node, at), at, node)


def folder(node: Node, at: At) -> Path:
    """A path to an existing folder (a viewer copied onto every medium)."""
    found = path(node, at)
    if not os.path.isdir(found):
        raise at.error(node, f"no such folder: {found}")
    return found


def file(node: Node, at: At) -> Path:
    """A path to an existing, readable file (TLS certificates and keys are read at start-up)."""
    found = path(node, at)
    if not os.path.isfile(found) or not os.access(found, os.R_OK):
        raise at.error(node, f"no such readable file: {found}")
    return found


def choice(*options: str, upper: bool = False) -> Check:
    """One of ``options``, case-insensitive, stored in the options' case."""
    listed = ", ".join(options)

    def check(node: Node, at: At) -> str:
        written: str = string(f"one of {listed}")(node, at)
        value = written.upper() if upper else written.lower()
        if value not in options:
            raise at.error(node, f"{short(written)} is not one of {listed}")
        return value

    return check


class _Problems:
    """The problems of a value's parts, gathered so that one look at a file reports them all."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, exc: ConfigError) -> None:
        self.found.extend(exc.problems)

    def raise_any(self) -> None:
        if self.found:
            raise ConfigError(*self.found)


def items(node: SequenceNode, at: At, check: Check) -> tuple[Any, ...]:
    """``check`` on each item of a list, as a tuple; the problems of every item, not only the first's."""
    problems, values = _Problems(), []
    for i, item in enumerate(node.value):
        try:
            values.append(check(item, at.item(i)))
        except ConfigError as exc:
            problems.add(exc)
    problems.raise_any()
    return tuple(values)


def many(item: Check) -> Check:
    """One value or a list of them, as a tuple."""
    return lambda node, at: items(node, at, item) if isinstance(node, SequenceNode) else (item(node, at),)


def optional(check: Check) -> Check:
    """``check``, or None for an empty value (``tls: ~``)."""
    return lambda node, at: None if is_null(node) else check(node, at)


_BOOLS = {"yes": True, "true": True, "on": True, "no": False, "false": False, "off": False}  # YAML 1.1 booleans


def boolean(node: Node, at: At) -> bool:
    """A YAML boolean (``true``, ``false``, and YAML 1.1's ``yes``, ``no``, ``on``, ``off``)."""
    value = _BOOLS.get(scalar(node, at, "true or false").value.lower())
    if node.tag != STD + "bool" or value is None:  # "!!bool maybe" is tagged, but no boolean
        raise at.error(node, f"expected true or false, got {describe(node)}")
    return value


def fields(node: Node, at: At, table: Mapping[str, Check], *, required: tuple[str, ...] = (),
           what: str = "keys") -> tuple[dict[str, Any], dict[str, Node]]:
    """Check a mapping against ``table``: its values and value nodes by key. An empty value is an empty mapping."""
    if not isinstance(node, MappingNode) and not is_null(node):
        raise at.error(node, f"expected a mapping of {what} ({', '.join(table)}), got {describe(node)}")
    values: dict[str, Any] = {}
    keys: dict[str, Node] = {}
    nodes: dict[str, Node] = {}
    problems = _Problems()
    for key, value in node.value if isinstance(node, MappingNode) else ():
        name = key.value if isinstance(key, ScalarNode) else ""
        if name not in table:
            label = name if re.fullmatch(r"[\w-]{1,40}", name, re.ASCII) else short(name) if name else f"<{describe(key)}>"
            problems.add(at.key(label).error(key, f"unknown key (known: {', '.join(table)})"))
        elif name in keys:
            problems.add(at.key(name).error(key, f"duplicate key (first on line {keys[name].start_mark.line + 1})"))
        else:
            keys[name], nodes[name] = key, value
            try:
                values[name] = table[name](value, at.key(name))
            except ConfigError as exc:
                problems.add(exc)
    for name in required:
        if name not in keys:
            problems.add(at.key(name).error(node, "required key is missing"))
    problems.raise_any()
    return values, nodes


def build(cls: type[T], values: dict[str, Any]) -> T:
    """``cls(**values)``, the relative Path defaults of absent keys made absolute as well."""
    for f in dataclass_fields(cls):
        if f.name not in values and isinstance(f.default, Path):
            values[f.name] = Path(os.path.abspath(f.default))
    return cls(**values)


def section(cls: type[Any], table: Mapping[str, Check], *, required: tuple[str, ...] = ()) -> Check:
    """A mapping checked against ``table`` into the dataclass ``cls``."""
    return lambda node, at: build(cls, fields(node, at, table, required=required)[0])


def load_sidecar(path: str | os.PathLike[str], rules: Mapping[str, Callable[[str], str]]) -> dict[str, str]:
    """Read a sidecar file of text values, ``{key: value}``, each checked by ``rules[key]``.

    A sidecar gives what a non-DICOM file does not carry (the patient and study of a
    photo, :mod:`node.media.capture`). YAML and JSON alike (a ``.json`` file is
    checked as JSON first, then read as the YAML it also is, so that errors name
    lines too). Values are taken as written (``0123`` stays ``0123``); a rule raises
    ``ValueError("is not ...")`` to refuse one. Errors are :class:`ConfigError`
    lines ``{path}:{line} {key}: {what is wrong}``, unknown keys included.
    """
    name = os.fspath(path)
    content = read_text(name)
    if name.lower().endswith(".json"):
        import json

        try:
            json.loads(content)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{exc.lineno} JSON syntax error: {exc.msg}") from None
        content = content.replace("\t", " ")  # JSON whitespace, never inside a JSON string; YAML refuses tabs
    table = {key: string(f"a value for {key}", rule) for key, rule in rules.items()}
    values, _ = fields(compose(content, name), At(name, ""), table)
    return values
