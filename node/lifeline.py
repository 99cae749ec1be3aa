"""What ties a child process's life to its parent's: ``serve``'s receivers and its console never
outlive it and never keep its ports."""

from __future__ import annotations

import ctypes
import os
import signal


def die_with_parent(parent: int) -> None:
    """Ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG), so no orphan keeps a port.

    Exits at once when ``parent`` died before the request was made.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl
        raise SystemExit(1)
