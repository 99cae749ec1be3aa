"""How an output waits for the operator (a blank disc, an empty stick) or a robot, and how it stops."""

from __future__ import annotations

from typing import Protocol


class Waiter(Protocol):
    """Supplied by the job worker: records the wait (``medianode status`` shows it) and sleeps."""

    def wait(self, message: str, seconds: float) -> bool:
        """Show ``message`` as the job's state and wait ``seconds``; False when the node is stopping."""

    def clear(self) -> None:
        """The job no longer waits."""


class Interrupted(Exception):
    """The node is stopping while an output waits: the job goes back to the queue, nothing is lost."""
