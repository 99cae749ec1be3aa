"""The errors a user can cause, each with a one-line message and an exit status.

``cli.main`` turns any :class:`NodeError` into its message on stderr and its
``exit_code``; nothing a user does should ever surface as a traceback.
"""

from __future__ import annotations

#: Exit statuses of every command (DESIGN.md, "Command-line contract").
EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2
#: Waiting for a person: an import held for reconciliation (nothing sent yet, nothing lost).
EXIT_HELD = 3

#: Why a medium's entry or a File ID is never opened (``node.read.medium``, ``node.udf``).
ESCAPES_ROOT = "escapes the medium root"
NOT_FOLLOWED = "is a symbolic link; not followed"


class NodeError(Exception):
    """Base class: ``str(err)`` is the one-line, user-facing message."""

    exit_code = EXIT_DATA


class UsageError(NodeError):
    """Bad flags or arguments (an unknown profile, a syntax the profile forbids)."""

    exit_code = EXIT_USAGE


class ConfigError(NodeError):
    """A configuration file that cannot be used: its problems, each naming file, line and key.

    One look at a file reports every problem it can (``str`` joins them with "; ", for a log line);
    ``medianode config check`` prints one line each.
    """

    exit_code = EXIT_USAGE

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class BuildError(NodeError):
    """Media could not be built: nothing valid to write, too big, an unwritable output."""


class MediumError(NodeError):
    """A medium (folder, ISO, device) that cannot be opened or read at all."""


def one_line(message: object) -> str:
    """A message (or an exception) as one line: libraries' messages may carry a whole traceback."""
    text = str(message).strip()
    return text.splitlines()[0] if text else type(message).__name__
