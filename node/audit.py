"""The audit log: one JSON line per received study, burned volume and refused association
(who, what, when), appended to ``data_dir/audit.jsonl``. Each line is one ``write`` on an
``O_APPEND`` descriptor, so the receiver processes and the service never interleave."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FILE = "audit.jsonl"


def append(data_dir: Path, event: str, **fields: object) -> None:
    """Append one event to the audit log."""
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **fields}, sort_keys=True)
    fd = os.open(data_dir / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
