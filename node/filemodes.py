"""Files only the node may read: the umask it sets itself, and the folders it makes its own.

Everything the node creates (spool, index and its -wal / -shm, held data,
reports, audit log, the images and trees of folder outputs) is created under
the umask :func:`restrict` sets, whatever the caller's: files 0600 and folders
0700, or 0640 and 0750 with ``node.group``. Writers ask for 0666 / 0777 and let
the umask decide, so there is one rule. :func:`own` makes each root the node
writes under (``data_dir``, a folder output) its own: private, or given to the
group with the set-group-ID bit, so that everything created beneath takes the
group (Linux, like BSD, gives a new file its folder's group then).

What goes onto removable media is for others to read: a USB volume is written
0644 / 0755 (:func:`readable`); a disc's modes are the image's own.
"""

from __future__ import annotations

import grp
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: Files 0600, folders 0700: the node's user alone.
PRIVATE_UMASK = 0o077
#: Files 0640, folders 0750: the node's user writes, ``node.group`` reads.
GROUP_UMASK = 0o027


def restrict(group: str | None = None) -> None:
    """Set the process's umask: private, or readable by ``group`` when one is configured."""
    os.umask(GROUP_UMASK if group else PRIVATE_UMASK)


def own(folder: Path, group: str | None) -> None:
    """Create ``folder`` (and its parents) and make it the node's: 0700, or 0750 with the set-group-ID
    bit and ``group`` as its group. A folder the node cannot change (another user's) is logged, not fatal:
    what the node creates inside still follows its umask."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if group:
            os.chown(folder, -1, grp.getgrnam(group).gr_gid)
            os.chmod(folder, 0o2750)
        else:
            os.chmod(folder, 0o700)
    except (OSError, KeyError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else f"no group {group}"
        logger.warning("Cannot make %s the node's own (%s): its files are as private as the umask makes them",
                       folder, why)


def readable(fd_or_path: int | Path, *, folder: bool = False) -> None:
    """Make what was written onto removable media readable by anyone: 0644, folders 0755."""
    mode = 0o755 if folder else 0o644
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)
