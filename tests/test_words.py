"""How messages count things (node.words)."""

from __future__ import annotations

import pytest

from node.words import counted


@pytest.mark.parametrize(("n", "noun", "said"), [
    (1, "study", "1 study"), (0, "study", "0 studies"), (2, "study", "2 studies"),
    (1, "copy", "1 copy"), (3, "copy", "3 copies"),
    (1, "instance", "1 instance"), (400, "instance", "400 instances"),
    (2, "day", "2 days"),  # a vowel before the y: only an s
    (2, "re-indexed instance", "2 re-indexed instances"),
])
def test_a_count_takes_its_noun_in_the_number_it_needs(n: int, noun: str, said: str) -> None:
    assert counted(n, noun) == said
