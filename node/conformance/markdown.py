"""The Markdown of the statement: table cells and tables, the names of UIDs and tags, and the heading
numbers, table of contents and anchor links that :func:`numbered` puts on the assembled sections.

A section writes its headings without numbers (``##`` a section, ``###`` a subsection, ...), links to
another heading by its bare title (``[Compression](#compression)``), and marks where the table of
contents goes with :data:`CONTENTS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.uid import UID

CONTENTS = "\x00contents\x00"  # where the table of contents goes, once the headings are numbered
_HEADING = re.compile(r"^(#{2,6}) (.+)$", re.MULTILINE)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def table(head: Sequence[str], rows: Iterable[Sequence[object]], *, sort: bool = True) -> str:
    """A Markdown table; rows sorted unless their order means something."""
    cells = [[_cell(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in (sorted(cells) if sort else cells)]
    return "\n".join(lines) + "\n"


def uid_name(uid: str) -> str:
    """pydicom's name for a UID, or the UID itself for one it does not know (a private class)."""
    return str(UID(uid).name)


def syntaxes(uids: Iterable[str]) -> str:
    """Transfer syntaxes as one cell: ``Name `uid` `` per line, in the order given."""
    return "<br>".join(f"{uid_name(u)} `{u}`" for u in uids)


def tag(value: int) -> str:
    """A tag as PS3.5 writes it: ``(gggg,eeee)``."""
    return f"({value >> 16:04X},{value & 0xFFFF:04X})"


def tag_name(value: int) -> str:
    """The PS3.6 name of a tag."""
    return str(dictionary_description(value))


def tag_name_of(keyword: str) -> str:
    """The PS3.6 name of a keyword, or the keyword itself for one pydicom does not know."""
    found = tag_for_keyword(keyword)
    return str(dictionary_description(found)) if found is not None else keyword


def slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def numbered(text: str) -> str:
    """``text`` with its headings numbered (1, 1.1, ...), its links pointed at the numbered headings and
    the table of contents (sections and subsections) put where :data:`CONTENTS` is."""
    counters = [0] * 5
    entries: list[str] = []

    def number(match: re.Match[str]) -> str:
        level = len(match.group(1)) - 2
        counters[level] += 1
        counters[level + 1:] = [0] * (len(counters) - level - 1)
        title = ".".join(str(c) for c in counters[: level + 1]) + " " + match.group(2)
        if level < 2:
            entries.append(f"{'  ' * level}- [{title}](#{slug(title)})")
        return f"{match.group(1)} {title}"

    text = _link_anchors(_HEADING.sub(number, text))
    return text.replace(CONTENTS, "\n".join(entries) + "\n")


def _link_anchors(text: str) -> str:
    """Point ``](#title)`` links at the numbered heading whose title it is."""
    anchors: dict[str, list[str]] = {}
    for m in _HEADING.finditer(text):
        anchors.setdefault(slug(m.group(2).split(" ", 1)[1]), []).append(slug(m.group(2)))

    def fix(match: re.Match[str]) -> str:
        targets = anchors.get(match.group(1), [])
        if len(targets) != 1:
            raise ValueError(f"a link to #{match.group(1)} must name exactly one heading, not {len(targets)}")
        return f"](#{targets[0]})"

    return re.sub(r"\]\(#([\w-]+)\)", fix, text)
