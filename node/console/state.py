"""What every request of the console shares: the configuration (reloaded on SIGHUP), an index
connection per thread, the key its CSRF tokens are made with, and the ``serve`` it runs under."""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from pathlib import Path

from node.config import Config, load_config
from node.errors import ConfigError
from node.index import Index

logger = logging.getLogger(__name__)

#: The console's secret key in data_dir: CSRF tokens are HMACs under it (made once, readable by the node only).
KEY_FILE = "console.key"


class Console:
    """The console's state in its process."""

    def __init__(self, config: Config, *, serve: int | None = None) -> None:
        """``serve``: the process id of the ``medianode serve`` this console is a child of (None: none)."""
        self.config = config
        self.key = _key(config.node.data_dir / KEY_FILE)
        self._local = threading.local()
        self._serve = serve
        #: When the configuration was last read, and how many times it was read again since the start.
        self.loaded = time.time()
        self.reloads = 0

    @property
    def serve(self) -> int | None:
        """The process id of the ``serve`` this console runs under, while it is still its parent."""
        return self._serve if self._serve is not None and os.getppid() == self._serve else None

    @property
    def data_dir(self) -> Path:
        return self.config.node.data_dir

    @property
    def secure(self) -> bool:
        """Served over TLS: cookies are then Secure."""
        return self.config.console.tls is not None

    def index(self) -> Index:
        """This thread's connection to the index (the request handlers run on a pool of threads)."""
        index: Index | None = getattr(self._local, "index", None)
        if index is None:
            index = self._local.index = Index(self.data_dir / "index.sqlite")
        return index

    def reload(self) -> None:
        """Read the configuration file again (``serve`` adopted it); keep the running one if it fails."""
        if self.config.source is None:
            return
        try:
            self.config = load_config(self.config.source)
            self.loaded = time.time()
        except ConfigError as exc:
            logger.error("console: configuration not reloaded: %s", exc)
        finally:
            self.reloads += 1


def _key(path: Path) -> bytes:
    """The key in ``path``, made (32 random bytes, mode 0600) when there is none."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    key = secrets.token_bytes(32)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key
