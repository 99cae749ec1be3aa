"""How messages count: a number with its noun in the number it takes ("1 study", "3 studies")."""

from __future__ import annotations


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, singular for one, plural otherwise: "1 copy", "0 copies", "2 instances".

    The plural is the noun with an "s", or "ies" for a consonant and "y" (study, copy), which covers every
    noun the node's messages count.
    """
    if n == 1:
        return f"1 {noun}"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return f"{n} {noun[:-1]}ies"
    return f"{n} {noun}s"
