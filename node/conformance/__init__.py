"""Our DICOM Conformance Statement (PS3.2), generated from the code's own tables.

Every table is read from the module that owns the behaviour: identity, statuses, record types and
keys from :mod:`node.dicom`; profiles from :mod:`node.profiles`; what the Storage SCP accepts from
the AE :func:`node.receive.scp.make_ae` builds; what the import SCU proposes from
:mod:`node.read.sender`; configuration keys from :mod:`node.config`'s dataclasses and their ``#:``
comments (:mod:`.tables`). What the media pipeline does to an instance is found by running it on small
samples (:mod:`.probes`). So the statement cannot drift from the code: ``tests/test_conformance.py``
regenerates ``docs/conformance-statement.md`` and compares, and checks the tables against real burns
and captures. Prose that no table holds is written in the section modules.

The layout is PS3.2 Annex A's, one module per section: 1 Overview, 2 Table of Contents and
3 Introduction (:mod:`.front`), 4 Networking, 5 Media Interchange (:mod:`.media_interchange`, its
route options in :mod:`.media_options`), 6 Character Sets, 7 Security, 8 Annexes. A section is one
function returning Markdown whose headings carry no numbers, listed in :data:`SECTIONS`; :func:`render`
numbers the headings and builds the table of contents (:mod:`.markdown`). The output is deterministic:
no dates, tables sorted, the version from ``node.__version__``.
"""

from __future__ import annotations

from collections.abc import Callable

from node import __version__
from node.conformance import annexes, character_sets, front, media_interchange, networking, security
from node.conformance.markdown import numbered

__all__ = ["SECTIONS", "TITLE", "render"]

TITLE = "medianode DICOM Conformance Statement"

#: The sections in order; each returns its Markdown. Add a section by adding its function here.
SECTIONS: list[Callable[[], str]] = [
    front.overview, front.contents, front.introduction, networking.section, media_interchange.section,
    character_sets.section, security.section, annexes.section,
]


def render() -> str:
    """The whole statement, as Markdown."""
    text = "\n".join(section() for section in SECTIONS)
    text = text.replace(front.REFERENCES, front.references(text))
    return f"# {TITLE}\n\nmedianode {__version__}\n\n" + numbered(text)
